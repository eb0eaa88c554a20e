//! Moving bytes: from transports into connections (within the fairness
//! budgets), the steps connections report handed to the service, and
//! output from connections back into transports.

use super::room::{LoopRoom, Outbox};

use super::*;
use crate::app::{Answer, Response};
use crate::engine::connection::Step;
use crate::engine::forwarded;
use crate::engine::http::{self, Request};
use crate::transport::tls::{NOT_TLS_RESPONSE, TlsFailure};
use std::fmt;

impl<S: Service> Server<S> {
    // ----- reading ---------------------------------------------------------

    pub(super) fn read_ready(&mut self, t: usize) {
        let mut messages = 0;
        if let Some(stash) = self.stashes.remove(&t) {
            // Input left over when the last turn's budget ran out comes first.
            self.feed(t, &stash, &mut messages);
            self.settle();
            if self.backlog_if_stashed(t) {
                return;
            }
        }
        let mut buffer = std::mem::take(&mut self.read_buffer);
        let mut budget = READ_BUDGET;
        let pause_at = self.read_pause_threshold();
        while let Some(slot) = self.conns.get_mut(t) {
            if !slot.conn.wants_input() {
                break;
            }
            if slot.conn.is_open() && slot.pending() >= pause_at {
                // Backpressure: a peer that does not read its output stops
                // being read, so its own requests (echoes, pongs, errors)
                // cannot pile up; TCP flow control holds the rest.
                slot.read_paused = true;
                break;
            }
            match slot.transport.read(&mut buffer) {
                Ok(0) => {
                    if slot.transport.abandoned_handshake() {
                        self.metrics.rejected("tls");
                        info!("refused {}: TLS handshake abandoned", slot.addr);
                    }
                    if slot.conn.on_eof() {
                        let reason = slot.conn.take_close_reason();
                        self.drop_connection(t, reason.as_deref().unwrap_or("closed"));
                    }
                    break;
                }
                Ok(n) => {
                    self.metrics.bytes_received += n as u64;
                    self.feed(t, &buffer[..n], &mut messages);
                    if self.backlog_if_stashed(t) {
                        break;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.push_backlog(t);
                        break;
                    }
                }
                Err(e) if would_block(&e) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(failure) = TlsFailure::of(&e) {
                        // Reading goes on: the transport now only drains.
                        self.refuse_tls(t, failure);
                        continue;
                    }
                    self.drop_connection(t, &format!("read error: {e}"));
                    break;
                }
            }
        }
        self.read_buffer = buffer;
        // TLS handshake replies the kernel did not take at once: flushing
        // registers WRITABLE for them.
        if let Some(slot) = self.conns.get(t)
            && !slot.dirty
            && slot.transport.pending_bytes() > 0
        {
            self.mark_dirty(t);
        }
        self.settle();
    }

    /// A TLS connection that failed (PROTOCOL section 10): plain text on
    /// the TLS port gets the unencrypted 400, a failed handshake only its
    /// alert; either ends like a refused request (written, FIN, drained).
    fn refuse_tls(&mut self, t: usize, failure: &TlsFailure) {
        let now = self.now;
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        self.metrics.rejected("tls");
        let why = failure.to_string();
        info!("refused {}: {why}", slot.addr);
        let response: &[u8] = match failure {
            TlsFailure::NotTls => NOT_TLS_RESPONSE,
            TlsFailure::Rejected(_) => b"",
        };
        slot.conn.respond(response, &why, now, &self.limits);
        self.mark_dirty(t);
        self.schedule(t);
    }

    /// Puts a connection whose message budget ran out mid-read on the
    /// backlog; true if it did.
    fn backlog_if_stashed(&mut self, t: usize) -> bool {
        let stashed = self.stashes.contains_key(&t);
        if stashed {
            self.push_backlog(t);
        }
        stashed
    }

    /// Schedules a connection to be read again next turn (once).
    pub(super) fn push_backlog(&mut self, t: usize) {
        if let Some(slot) = self.conns.get_mut(t)
            && !slot.in_backlog
        {
            slot.in_backlog = true;
            self.backlog.push(t);
        }
    }

    /// Hands bytes to the connection and acts on every step it reports.
    fn feed(&mut self, t: usize, data: &[u8], messages: &mut u16) {
        let mut input = data;
        loop {
            let now = self.now;
            let Some(slot) = self.conns.get_mut(t) else {
                return;
            };
            match slot.conn.step(&mut input, now, &self.limits) {
                Step::NeedMore => break,
                Step::Head(head) => self.on_head(t, &head),
                Step::Refused { status, reason } => {
                    let response = refusal(status, "head_too_large", reason);
                    self.respond(t, response, "");
                }
                Step::Body(body) => self.on_body(t, &body),
                Step::Message { binary } => {
                    let payload = slot.conn.take_message();
                    self.with_service(|service, room| {
                        service.on_message(t, binary, &payload, room)
                    });
                    if let Some(slot) = self.conns.get_mut(t) {
                        slot.conn.give_back(payload);
                    }
                    self.settle();
                    // Fairness: a chat message costs a write to every
                    // listener, so one connection gets a bounded number per
                    // turn; the rest of its input waits its turn.
                    *messages += 1;
                    if *messages >= MESSAGE_BUDGET
                        && !input.is_empty()
                        && self.conns.get(t).is_some_and(|s| s.conn.is_open())
                    {
                        self.stashes.insert(t, input.to_vec());
                        break;
                    }
                }
                Step::Left { code } => {
                    self.metrics.close_sent(code);
                    self.leave(t);
                }
                Step::Done => {
                    // The close handshake is complete: with TLS, close_notify
                    // goes before the socket closes (best effort, it is tiny).
                    slot.transport.shutdown_write();
                    let _ = slot.transport.flush_pending();
                    let reason = slot.conn.take_close_reason();
                    self.drop_connection(t, reason.as_deref().unwrap_or("closed"));
                    return;
                }
            }
        }
        self.after_input(t);
    }

    /// After input: output to write, a deadline to watch, buffers to trim.
    fn after_input(&mut self, t: usize) {
        if let Some(slot) = self.conns.get_mut(t)
            && !slot.conn.output().is_empty()
        {
            self.mark_dirty(t);
        }
        self.schedule(t);
    }

    // ----- answering a request ---------------------------------------------

    fn on_head(&mut self, t: usize, head: &[u8]) {
        let Some(peer) = self.conns.get(t).map(|s| s.addr) else {
            return;
        };
        let request = match Request::parse(head) {
            Ok(request) => request,
            Err(e) => {
                self.respond(t, refusal(400, "bad_request", e.0), "");
                return;
            }
        };
        let addr = self.client_addr(t, peer, &request);
        let answer = self.with_service(|service, room| service.on_request(t, &request, addr, room));
        match answer {
            Answer::Respond(response) => self.respond(t, response, request.path),
            Answer::ReadBody {
                length,
                send_continue,
                pending,
            } => {
                if let Some(slot) = self.conns.get_mut(t) {
                    slot.app = Some(pending);
                    // A `100 Continue` is written with the rest after input.
                    slot.conn.expect_body(length, send_continue);
                }
            }
            Answer::Upgrade {
                accept,
                subprotocol,
                peer,
                app,
            } => {
                let now = self.now;
                let Some(slot) = self.conns.get_mut(t) else {
                    return;
                };
                slot.conn.swap_empty_output(&mut self.spare_output);
                slot.conn.open(&accept, subprotocol, now, &self.limits);
                slot.app = Some(peer);
                info!("open {} {} ({app})", Shown(addr), request.path);
                self.with_service(|service, room| service.on_open(t, room));
                self.greet(t);
            }
        }
    }

    /// The client's address: the TCP peer, or with `--trusted-proxy` the
    /// one a trusted proxy's `X-Forwarded-For` names. It replaces the
    /// peer's in the slot (no field more per connection), with port 0: the
    /// client's port is not known.
    fn client_addr(&mut self, t: usize, peer: SocketAddr, request: &Request<'_>) -> SocketAddr {
        if self.config.trusted_proxies.is_empty() {
            return peer;
        }
        let ip = forwarded::client_addr(
            peer.ip(),
            request.headers("x-forwarded-for"),
            &self.config.trusted_proxies,
        );
        if ip == peer.ip() {
            return peer;
        }
        let client = SocketAddr::new(ip, 0);
        debug!("{peer} is a trusted proxy for {ip}");
        if let Some(slot) = self.conns.get_mut(t) {
            slot.addr = client;
        }
        client
    }

    /// Writes the `101` and the greeting at once, from the buffer lent for
    /// it: a connection that then stays idle keeps no output buffer at all.
    fn greet(&mut self, t: usize) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        match slot.write_out() {
            Ok(written) => {
                self.metrics.bytes_sent += written as u64;
                slot.conn.swap_empty_output(&mut self.spare_output);
                slot.conn.release_output();
                self.after_write(t);
            }
            Err(e) => self.drop_connection(t, &format!("write error: {e}")),
        }
    }

    fn on_body(&mut self, t: usize, body: &[u8]) {
        let Some(pending) = self.conns.get_mut(t).and_then(|s| s.app.take()) else {
            return;
        };
        let response = self.with_service(|service, room| service.on_body(t, pending, body, room));
        self.respond(t, response, "");
    }

    /// Queues a plain response; the connection ends once it is written.
    fn respond(&mut self, t: usize, response: Response, path: &str) {
        let now = self.now;
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        let reason = match response.refusal {
            Some(refusal) => {
                self.metrics.rejected(refusal.metric);
                info!(
                    "refused {} with {}: {}",
                    Shown(slot.addr),
                    response.status,
                    refusal.why
                );
                refusal.why
            }
            None => {
                debug!("{path} {} to {}", response.status, Shown(slot.addr));
                "plain HTTP"
            }
        };
        slot.conn
            .respond(&response.bytes, reason, now, &self.limits);
        self.mark_dirty(t);
    }

    // ----- closing ---------------------------------------------------------

    /// Starts the server's side of the close handshake with `code`.
    pub(super) fn close(&mut self, t: usize, code: CloseCode, reason: &str) {
        let deadline = self
            .shutdown_deadline
            .unwrap_or(self.now + self.config.close_timeout);
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        if !slot.conn.close(code, reason, deadline) {
            return;
        }
        info!("closing {} with {}: {reason}", Shown(slot.addr), code.0);
        self.metrics.close_sent(code.0);
        self.mark_dirty(t);
        self.schedule(t);
        self.leave(t);
    }

    /// The connection stops being an application connection: the service
    /// hears of it once.
    pub(super) fn leave(&mut self, t: usize) {
        if let Some(peer) = self.conns.get_mut(t).and_then(|s| s.app.take()) {
            self.with_service(|service, room| service.on_leave(t, peer, room));
        }
    }

    /// Removes a connection now (its socket closes when dropped); one log
    /// line says why.
    pub(super) fn drop_connection(&mut self, t: usize, reason: &str) {
        if !self.conns.contains(t) {
            return;
        }
        self.leave(t);
        let mut slot = self.conns.remove(t);
        self.stashes.remove(&t);
        if slot.wants_write {
            self.blocked -= 1;
        }
        let _ = self.poll.registry().deregister(slot.transport.source());
        if slot.conn.was_websocket() {
            info!("closed {} ({reason})", Shown(slot.addr));
        } else {
            debug!("closed {} ({reason})", Shown(slot.addr));
        }
    }

    /// Works off everything an event left to do: slow consumers to close
    /// and closes the service asked for (which may in turn find more).
    pub(super) fn settle(&mut self) {
        loop {
            if let Some(t) = self.slow.pop() {
                if self.conns.get(t).is_some_and(|s| s.conn.is_open()) {
                    self.metrics.slow_consumers_dropped += 1;
                    self.close(t, CloseCode::POLICY_VIOLATION, "too much unread output");
                }
            } else if let Some((t, code, reason)) = self.closes.pop() {
                self.close(t, code, &reason);
            } else {
                return;
            }
        }
    }

    // ----- writing ---------------------------------------------------------

    pub(super) fn mark_dirty(&mut self, t: usize) {
        if let Some(slot) = self.conns.get_mut(t)
            && !slot.dirty
        {
            slot.dirty = true;
            self.dirty.push_back(t);
        }
    }

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
            slot.dirty = false;
            match slot.write_out() {
                Ok(written) => {
                    self.metrics.bytes_sent += written as u64;
                    self.after_write(t);
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

    pub(super) fn after_write(&mut self, t: usize) {
        let now = self.now;
        let pause_at = self.read_pause_threshold();
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        if slot.pending() == 0 && slot.conn.on_drained(now, &self.limits) {
            // A finished exchange: shut the write side (TLS: close_notify,
            // then the FIN once it is flushed; the interest below covers a
            // close_notify the kernel did not take).
            slot.transport.shutdown_write();
            if let Err(e) = slot.transport.flush_pending() {
                self.drop_connection(t, &format!("write error: {e}"));
                return;
            }
        }
        let pending = slot.pending();
        let want_write = pending > 0;
        if want_write != slot.wants_write {
            let interest = if want_write {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(e) =
                self.poll
                    .registry()
                    .reregister(slot.transport.source(), Token(t), interest)
            {
                self.drop_connection(t, &format!("reregister failed: {e}"));
                return;
            }
            slot.wants_write = want_write;
            if want_write {
                self.blocked += 1;
            } else {
                self.blocked -= 1;
            }
        }
        // Output drained below the threshold: read the peer again.
        let resume = slot.read_paused && pending < pause_at;
        if resume {
            slot.read_paused = false;
        }
        if !want_write && slot.conn.is_done() {
            let reason = slot.conn.take_close_reason();
            self.drop_connection(t, reason.as_deref().unwrap_or("done"));
            return;
        }
        self.schedule(t);
        if resume {
            self.push_backlog(t);
        }
    }

    // ----- the service -----------------------------------------------------

    /// Calls the service with the loop's parts it may touch.
    pub(super) fn with_service<R>(
        &mut self,
        call: impl FnOnce(&mut S, &mut LoopRoom<'_, S::Peer>) -> R,
    ) -> R {
        let mut room = LoopRoom {
            conns: &mut self.conns,
            out: Outbox {
                dirty: &mut self.dirty,
                slow: &mut self.slow,
                metrics: &mut self.metrics,
                max_output: self.config.max_output_bytes,
            },
            closes: &mut self.closes,
            now: self.now,
            fd_capacity: self.fd_capacity,
        };
        call(&mut self.service, &mut room)
    }
}

/// A plain refusal made by the loop itself (malformed or oversized head).
fn refusal(status: u16, metric: &'static str, why: &'static str) -> Response {
    let mut bytes = Vec::new();
    http::write_error(&mut bytes, status, &[], false);
    Response {
        bytes,
        status,
        refusal: Some(crate::app::Refusal { metric, why }),
    }
}

/// A connection's address in log lines: one taken from `X-Forwarded-For`
/// has no port (stored as 0) and is shown without one.
pub(super) struct Shown(pub(super) SocketAddr);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.port() == 0 {
            write!(f, "{}", self.0.ip())
        } else {
            write!(f, "{}", self.0)
        }
    }
}
