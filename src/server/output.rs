//! The output side of the loop: closing connections (and the leave
//! announcements that follow), and the once-per-turn flush of everything
//! queued.

use super::*;

impl Server {
    // ----- closing ---------------------------------------------------------

    /// Starts the server's side of the close handshake with `code`.
    pub(super) fn fail(&mut self, t: usize, code: CloseCode, reason: &str) {
        let deadline = match self.shutdown_deadline {
            Some(d) => d,
            None => self.now + self.config.close_timeout,
        };
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        if !slot.conn.is_open() {
            return;
        }
        info!("closing {} with {}: {reason}", slot.conn.peer, code.0);
        encode_close(&mut slot.conn.out, code.0, reason);
        slot.conn.phase = Phase::Closing { discard: false };
        slot.conn.decoder.enter_closing();
        slot.conn.deadline = deadline;
        slot.conn.close_reason = Some(format!("closed with {} ({reason})", code.0).into());
        self.metrics.close_sent(code.0);
        self.mark_dirty(t);
        self.leave_app(t);
    }

    /// The connection stops being a chat user: its name is free at once,
    /// and the `leave` goes out when the current message is settled.
    pub(super) fn leave_app(&mut self, t: usize) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        if let AppState::Chat(peer) = std::mem::replace(&mut slot.app, AppState::None)
            && let Some(name) = peer.name
        {
            self.chat.forget(&name);
            self.leaving.push(name);
        }
    }

    /// Removes a connection now (its socket closes when dropped).
    pub(super) fn drop_connection(&mut self, t: usize, reason: &str) {
        if !self.conns.contains(t) {
            return;
        }
        self.leave_app(t);
        let mut slot = self.conns.remove(t);
        let _ = self.poll.registry().deregister(&mut slot.conn.socket);
        if slot.conn.is_http {
            debug!("closed {} ({reason})", slot.conn.peer);
        } else {
            info!("closed {} ({reason})", slot.conn.peer);
        }
    }

    /// Works off everything a message left to do: slow consumers to drop,
    /// closes the chat asked for, and `leave` announcements (which may in
    /// turn find more slow consumers).
    pub(super) fn settle(&mut self) {
        loop {
            if let Some(t) = self.slow.pop() {
                if self.conns.get(t).is_some_and(|s| s.conn.is_open()) {
                    self.metrics.slow_consumers_dropped += 1;
                    self.fail(t, CloseCode::POLICY_VIOLATION, "too much unread output");
                }
            } else if let Some((t, code, reason)) = self.closes.pop() {
                self.fail(t, code, reason);
            } else if let Some(name) = self.leaving.pop() {
                if self.shutdown_deadline.is_none() {
                    let mut room = room!(self);
                    self.chat.on_leave(&mut room, &name);
                }
            } else {
                return;
            }
        }
    }

    // ----- writing ---------------------------------------------------------

    /// Writes out up to `limit` connections with queued output, oldest
    /// first; the rest wait for the next turn.
    pub(super) fn flush_dirty(&mut self, limit: usize) {
        let mut flushed = 0;
        while flushed < limit
            && let Some(t) = self.dirty.pop_front()
        {
            flushed += 1;
            let Some(slot) = self.conns.get_mut(t) else {
                continue;
            };
            slot.conn.dirty = false;
            match slot.conn.flush() {
                Ok((flushed, written)) => {
                    self.metrics.bytes_sent += written as u64;
                    self.after_flush(t, flushed);
                }
                Err(e) => {
                    self.drop_connection(t, &format!("write error: {e}"));
                    self.settle();
                }
            }
        }
    }

    /// Output above which a connection's input is no longer read.
    pub(super) fn read_pause_threshold(&self) -> usize {
        (self.config.max_output_bytes / 2).max(1)
    }

    pub(super) fn after_flush(&mut self, t: usize, flushed: Flushed) {
        let linger = self.now + self.config.close_timeout;
        let pause_at = self.read_pause_threshold();
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        let want_write = flushed == Flushed::Blocked;
        if want_write != slot.conn.wants_write {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(&mut slot.conn.socket, Token(t), interest)
            {
                self.drop_connection(t, &format!("reregister failed: {e}"));
                return;
            }
            slot.conn.wants_write = want_write;
        }
        // Output drained below the threshold: read the peer again.
        let resume = slot.conn.read_paused && slot.conn.out.len() < pause_at;
        if resume {
            slot.conn.read_paused = false;
        }
        if !want_write && matches!(slot.conn.phase, Phase::Finishing) {
            let _ = slot.conn.socket.shutdown(Shutdown::Write);
            if slot.conn.eof_seen {
                let reason = slot.conn.close_reason.take();
                self.drop_connection(t, reason.as_deref().unwrap_or("done"));
            } else {
                slot.conn.phase = Phase::Lingering;
                slot.conn.deadline = linger;
            }
        }
        if resume {
            self.push_backlog(t);
        }
    }
}
