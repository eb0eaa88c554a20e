//! The input side of the loop: reading sockets within the fairness
//! budgets, the request head, frames, and the events they carry.

use super::*;

impl Server {
    // ----- reading ---------------------------------------------------------

    pub(super) fn read_ready(&mut self, t: usize) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        slot.conn.turn_messages = 0;
        if !slot.conn.stash.is_empty() {
            // Input left over when the last turn's budget ran out comes first.
            let stash = std::mem::take(&mut slot.conn.stash);
            self.on_bytes(t, &stash);
            self.settle();
            if self.backlog_if_stashed(t) {
                return;
            }
        }
        let mut buffer = std::mem::take(&mut self.read_buffer);
        let mut budget = READ_BUDGET;
        let pause_at = self.read_pause_threshold();
        while let Some(slot) = self.conns.get_mut(t) {
            if slot.conn.eof_seen {
                break;
            }
            if slot.conn.is_open() && slot.conn.out.len() >= pause_at {
                // Backpressure: a peer that does not read its output stops
                // being read, so its own requests (echoes, pongs, errors)
                // cannot pile up; TCP flow control holds the rest.
                slot.conn.read_paused = true;
                break;
            }
            match slot.conn.socket.read(&mut buffer) {
                Ok(0) => {
                    self.on_eof(t);
                    break;
                }
                Ok(n) => {
                    self.metrics.bytes_received += n as u64;
                    slot.conn.active = true;
                    self.on_bytes(t, &buffer[..n]);
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
                    self.drop_connection(t, &format!("read error: {e}"));
                    break;
                }
            }
        }
        self.read_buffer = buffer;
        self.settle();
    }

    /// Puts a connection whose message budget ran out mid-read on the
    /// backlog; true if it did.
    pub(super) fn backlog_if_stashed(&mut self, t: usize) -> bool {
        let stashed = self.conns.get(t).is_some_and(|s| !s.conn.stash.is_empty());
        if stashed {
            self.push_backlog(t);
        }
        stashed
    }

    /// Schedules a connection to be read again next turn (once).
    pub(super) fn push_backlog(&mut self, t: usize) {
        if let Some(slot) = self.conns.get_mut(t)
            && !slot.conn.in_backlog
        {
            slot.conn.in_backlog = true;
            self.backlog.push(t);
        }
    }

    pub(super) fn on_bytes(&mut self, t: usize, data: &[u8]) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        match slot.conn.phase {
            Phase::AwaitingHandshake { .. } => self.on_head_bytes(t, data),
            Phase::Open | Phase::Closing { discard: false } => self.on_frame_bytes(t, data),
            Phase::Closing { discard: true } | Phase::Finishing | Phase::Lingering => {}
        }
    }

    pub(super) fn on_eof(&mut self, t: usize) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        slot.conn.eof_seen = true;
        match slot.conn.phase {
            // The peer may have shut only its write side: finish the
            // response, then close (see flush_dirty).
            Phase::Finishing => {}
            Phase::AwaitingHandshake { .. } => {
                self.drop_connection(t, "closed before the handshake")
            }
            Phase::Open => self.drop_connection(t, "connection dropped by peer"),
            Phase::Closing { .. } | Phase::Lingering => {
                let reason = slot.conn.close_reason.take();
                self.drop_connection(t, reason.as_deref().unwrap_or("closed"));
            }
        }
    }

    // ----- the request head ------------------------------------------------

    pub(super) fn on_head_bytes(&mut self, t: usize, data: &[u8]) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        let Phase::AwaitingHandshake { head } = &mut slot.conn.phase else {
            return;
        };
        if head.is_empty() {
            // The usual case: the whole head in one read, parsed where it
            // lies, so a handshake allocates no head buffer.
            match http::find_head_end(data, 0) {
                Some(end) if end <= MAX_HEAD_BYTES => {
                    self.on_complete_head(t, &data[..end], &data[end..]);
                }
                None if data.len() <= MAX_HEAD_BYTES => head.extend_from_slice(data),
                _ => self.head_too_large(t),
            }
            return;
        }
        let searched = head.len();
        head.extend_from_slice(data);
        match http::find_head_end(head, searched) {
            Some(end) if end <= MAX_HEAD_BYTES => {
                let whole = std::mem::take(head);
                let (head, rest) = whole.split_at(end);
                self.on_complete_head(t, head, rest);
            }
            None if head.len() <= MAX_HEAD_BYTES => {}
            _ => self.head_too_large(t),
        }
    }

    pub(super) fn head_too_large(&mut self, t: usize) {
        self.metrics.rejected("head_too_large");
        self.respond_error(t, 431, &[], "request head over 8192 bytes");
    }

    /// Answers a complete request head; `rest` is what followed it in the
    /// same read (a client may send its first frame at once).
    pub(super) fn on_complete_head(&mut self, t: usize, head: &[u8], rest: &[u8]) {
        let request = match Request::parse(head) {
            Ok(request) => request,
            Err(e) => {
                self.metrics.rejected("bad_request");
                self.respond_error(t, 400, &[], e.0);
                return;
            }
        };
        match handshake::decide(&request, &self.config.allowed_origins) {
            Decision::Plain { head_only } => self.serve_plain(t, &request, head_only),
            Decision::Reject(rejection) => {
                self.metrics.rejected(rejection.metric_reason());
                let why = reject_reason(rejection);
                self.respond_error(t, rejection.status(), rejection.extra_headers(), why);
            }
            Decision::Upgrade {
                accept,
                subprotocol,
            } => {
                self.open_websocket(t, request.path, &accept, subprotocol);
                if !rest.is_empty() {
                    self.on_frame_bytes(t, rest);
                }
            }
        }
    }

    pub(super) fn serve_plain(&mut self, t: usize, request: &Request<'_>, head_only: bool) {
        if let Some(slot) = self.conns.get_mut(t) {
            // Counted as plain HTTP already in the metrics it may be serving.
            slot.conn.is_http = true;
        }
        let mut out = Vec::new();
        let status = match request.path {
            "/" | "/index.html" => {
                http::write_response(
                    &mut out,
                    200,
                    "text/html; charset=utf-8",
                    &[],
                    &self.index_html,
                    head_only,
                );
                200
            }
            "/healthz" => {
                http::write_response(
                    &mut out,
                    200,
                    "text/plain; charset=utf-8",
                    &[],
                    b"ok\n",
                    head_only,
                );
                200
            }
            "/metrics" => {
                let body = self.metrics.render(&self.gauges());
                http::write_response(
                    &mut out,
                    200,
                    "text/plain; version=0.0.4",
                    &[],
                    body.as_bytes(),
                    head_only,
                );
                200
            }
            _ => {
                http::write_error(&mut out, 404, &[], head_only);
                404
            }
        };
        if let Some(slot) = self.conns.get_mut(t) {
            debug!(
                "{} {} {} from {}",
                request.method, request.path, status, slot.conn.peer
            );
        }
        self.finish_with(t, &out, "plain HTTP");
    }

    pub(super) fn respond_error(
        &mut self,
        t: usize,
        status: u16,
        headers: &[(&str, &str)],
        why: &str,
    ) {
        let mut out = Vec::new();
        http::write_error(&mut out, status, headers, false);
        if let Some(slot) = self.conns.get(t) {
            info!("refused {} with {status}: {why}", slot.conn.peer);
        }
        self.finish_with(t, &out, why);
    }

    /// Queues a last response; the connection closes once it is written.
    pub(super) fn finish_with(&mut self, t: usize, response: &[u8], reason: &str) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        slot.conn.out.extend_from_slice(response);
        slot.conn.phase = Phase::Finishing;
        slot.conn.is_http = true;
        slot.conn.deadline = self.now + self.config.close_timeout;
        slot.conn.close_reason = Some(reason.into());
        self.mark_dirty(t);
    }

    pub(super) fn open_websocket(
        &mut self,
        t: usize,
        path: &str,
        accept: &str,
        subprotocol: Option<&str>,
    ) {
        let now = self.now;
        let idle = self.idle_deadline();
        let echo = self.config.echo && path == "/echo";
        // The 101 and, for chat, the user list go out in one direct write
        // from a reused buffer: a connection that then stays idle never
        // allocates an output buffer at all.
        let mut greeting = std::mem::take(&mut self.greeting);
        greeting.clear();
        handshake::accept_response(&mut greeting, accept, subprotocol);
        let app = if echo {
            AppState::Echo
        } else {
            let mut room = room!(self);
            greeting.extend_from_slice(self.chat.users_frame(&mut room));
            self.metrics.messages_sent[AppLabel::Chat as usize] += 1;
            AppState::Chat(self.chat.new_peer(now))
        };
        if let Some(slot) = self.conns.get_mut(t) {
            slot.conn.phase = Phase::Open;
            slot.conn.deadline = idle;
            slot.app = app;
            info!(
                "open {} {} ({})",
                slot.conn.peer,
                path,
                if echo { "echo" } else { "chat" }
            );
            match slot.conn.socket.write(&greeting) {
                Ok(written) => {
                    self.metrics.bytes_sent += written as u64;
                    if let Some(unsent) = greeting.get(written..)
                        && !unsent.is_empty()
                    {
                        slot.conn.out.extend_from_slice(unsent);
                        self.mark_dirty(t);
                    }
                }
                Err(e) if would_block(&e) || e.kind() == io::ErrorKind::Interrupted => {
                    slot.conn.out.extend_from_slice(&greeting);
                    self.mark_dirty(t);
                }
                Err(e) => self.drop_connection(t, &format!("write error: {e}")),
            }
        }
        self.greeting = greeting;
    }

    pub(super) fn idle_deadline(&self) -> Instant {
        if self.config.idle_timeout.is_zero() {
            // Far enough never to matter, near enough not to overflow.
            self.now + Duration::from_secs(100 * 365 * 24 * 3600)
        } else {
            self.now + self.config.idle_timeout
        }
    }

    // ----- frames ----------------------------------------------------------

    pub(super) fn on_frame_bytes(&mut self, t: usize, data: &[u8]) {
        let idle = self.idle_deadline();
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        slot.conn.ping_sent = false;
        if slot.conn.is_open() {
            slot.conn.deadline = idle;
        }
        // The decoder is taken out so that events borrowing it can be
        // handled with the whole server at hand.
        let mut decoder = std::mem::replace(&mut slot.conn.decoder, Decoder::new(0));
        let mut input = data;
        loop {
            let Some(slot) = self.conns.get_mut(t) else {
                return;
            };
            let closing = matches!(slot.conn.phase, Phase::Closing { .. });
            if closing && !decoder.is_closing() {
                decoder.enter_closing();
            }
            match decoder.next_event(&mut input) {
                Ok(None) => break,
                Ok(Some(event)) => {
                    let is_message = matches!(event, Event::Text(_) | Event::Binary(_));
                    if !self.on_event(t, event) {
                        break;
                    }
                    if is_message && !input.is_empty() {
                        // Fairness: a chat message costs a write to every
                        // listener, so one connection gets a bounded number
                        // per turn; the rest of its input waits its turn.
                        let Some(slot) = self.conns.get_mut(t) else {
                            return;
                        };
                        slot.conn.turn_messages += 1;
                        if slot.conn.turn_messages >= MESSAGE_BUDGET && slot.conn.is_open() {
                            slot.conn.stash.extend_from_slice(input);
                            break;
                        }
                    }
                }
                Err(e) => {
                    if closing {
                        slot.conn.phase = Phase::Closing { discard: true };
                        break;
                    }
                    debug!("{}: {} ({})", slot.conn.peer, e.reason, e.code.0);
                    self.fail(t, e.code, e.reason);
                    decoder.enter_closing();
                }
            }
            self.settle();
        }
        if let Some(slot) = self.conns.get_mut(t) {
            if matches!(slot.conn.phase, Phase::Closing { .. }) {
                decoder.enter_closing();
            }
            slot.conn.decoder = decoder;
        }
    }

    /// Handles one event; false when the connection takes no more input.
    pub(super) fn on_event(&mut self, t: usize, event: Event<'_>) -> bool {
        let Some(slot) = self.conns.get_mut(t) else {
            return false;
        };
        if let Phase::Closing { .. } = slot.conn.phase {
            // Only the peer's close reply gets here: the exchange is complete.
            if let Event::Close(..) = event {
                let reason = slot.conn.close_reason.take();
                let _ = slot.conn.flush();
                self.drop_connection(t, reason.as_deref().unwrap_or("closed"));
                return false;
            }
            return true;
        }
        match event {
            Event::Text(text) => match slot.app {
                AppState::Chat(_) => {
                    self.metrics.messages_received[AppLabel::Chat as usize] += 1;
                    let now = self.now;
                    let mut room = room!(self);
                    self.chat.on_message(&mut room, t, text, now);
                }
                AppState::Echo => self.echo(t, false, text),
                AppState::None => {}
            },
            Event::Binary(data) => match slot.app {
                AppState::Chat(_) => {
                    self.metrics.messages_received[AppLabel::Chat as usize] += 1;
                    self.fail(t, CloseCode::UNSUPPORTED_DATA, "binary data on the chat");
                }
                AppState::Echo => self.echo(t, true, data),
                AppState::None => {}
            },
            Event::Ping(payload) => {
                self.queue_frame(t, payload.len(), |out| {
                    encode_frame(out, Opcode::Pong, payload)
                });
            }
            Event::Pong(_) => {}
            Event::Close(code, _reason) => {
                // "the endpoint typically echos the status code it received".
                let code = code.unwrap_or(CloseCode::NORMAL.0);
                let mut frame = Vec::with_capacity(4);
                encode_close(&mut frame, code, "");
                self.metrics.close_sent(code);
                self.leave_app(t);
                self.finish_with(t, &frame, &format!("client closed with {code}"));
                return false;
            }
        }
        true
    }

    pub(super) fn echo(&mut self, t: usize, binary: bool, payload: &[u8]) {
        self.metrics.messages_received[AppLabel::Echo as usize] += 1;
        if self.queue_frame(t, payload.len(), |out| echo::reply(out, binary, payload)) {
            self.metrics.messages_sent[AppLabel::Echo as usize] += 1;
        }
    }

    /// Queues one frame with a payload of `payload_len` bytes, encoded by
    /// `encode` straight into an open connection's output, within its cap.
    pub(super) fn queue_frame(
        &mut self,
        t: usize,
        payload_len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        let Some(slot) = self.conns.get_mut(t) else {
            return false;
        };
        queue_with(
            t,
            slot,
            header_len_for(payload_len) + payload_len,
            self.config.max_output_bytes,
            &mut self.dirty,
            &mut self.slow,
            &mut self.metrics.bytes_sent,
            encode,
        )
    }

    pub(super) fn mark_dirty(&mut self, t: usize) {
        if let Some(slot) = self.conns.get_mut(t)
            && !slot.conn.dirty
        {
            slot.conn.dirty = true;
            self.dirty.push_back(t);
        }
    }
}

fn reject_reason(rejection: Rejection) -> &'static str {
    match rejection {
        Rejection::Method => "method not allowed",
        Rejection::BadRequest => "bad handshake",
        Rejection::Version => "unsupported WebSocket version",
        Rejection::Origin => "origin not allowed",
    }
}
