//! Limits that protect the server as a whole rather than one connection:
//! the 503 at the door (PROTOCOL section 2, check 1) and the server-wide
//! output budget.

use super::*;

impl<S: Service> Server<S> {
    /// PROTOCOL section 2, check 1: at the limit, 503 at once, unread.
    /// With TLS (section 10) the socket is closed at once instead: a 503
    /// would need a handshake, which is what the limit saves.
    pub(super) fn refuse_at_door(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        self.metrics.rejected("limit");
        debug!("refused {peer}: {} connections open", self.conns.len());
        if self.tls.is_some() {
            return;
        }
        let mut response = Vec::new();
        http::write_error(&mut response, 503, &[], false);
        // A fresh socket's send buffer takes a short response whole.
        let _ = socket.write(&response);
        let _ = socket.shutdown(Shutdown::Write);
        if self.door_rejects.len() >= MAX_DOOR_REJECTS {
            self.door_rejects.pop_front();
        }
        self.door_rejects
            .push_back((socket, self.now + DOOR_LINGER));
    }

    pub(super) fn drain_door_rejects(&mut self) {
        let now = self.now;
        let buffer = &mut self.read_buffer;
        self.door_rejects.retain_mut(|(socket, deadline)| {
            if now >= *deadline {
                return false;
            }
            loop {
                match socket.read(buffer) {
                    Ok(0) => return false,
                    Ok(_) => {}
                    Err(e) if would_block(&e) => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
        });
    }

    /// Holds all unsent output to `--max-total-output-bytes`. The cap per
    /// connection alone would let many stalled readers hold the cap each;
    /// past the budget the largest backlogs the kernel refused go first,
    /// reset at once (their buffers freed now, not after a close handshake
    /// they would never read). Checked each tick while any output is
    /// blocked, so it may be overshot by one tick's worth of traffic.
    pub(super) fn enforce_output_budget(&mut self) {
        let budget = self.config.max_total_output_bytes;
        let mut total: usize = 0;
        let mut backlogs = Vec::new();
        for (t, slot) in self.conns.iter() {
            let pending = slot.pending();
            total = total.saturating_add(pending);
            if slot.wants_write && pending >= BUDGET_MIN_BACKLOG {
                backlogs.push((pending, t));
            }
        }
        if total <= budget {
            return;
        }
        backlogs.sort_unstable_by(|a, b| b.cmp(a));
        for (pending, t) in backlogs {
            if total <= budget {
                break;
            }
            total = total.saturating_sub(pending);
            if let Some(slot) = self.conns.get(t) {
                // Reset rather than FIN: the kernel would otherwise keep
                // retrying the unread bytes it holds for this peer.
                slot.transport.reset_on_close();
            }
            self.metrics.slow_consumers_dropped += 1;
            warn!(
                "dropping a connection with {pending} bytes unsent: all connections together are over --max-total-output-bytes ({budget})"
            );
            self.drop_connection(
                t,
                "too much unread output while the server was over its output budget",
            );
        }
        self.settle();
    }
}
