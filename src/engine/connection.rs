//! One connection's protocol state machine, without any I/O.
//!
//! Bytes go in ([`Connection::step`]), decisions come out as [`Step`]s, and
//! bytes to send pile up in an output buffer the caller drains
//! ([`Connection::output`], [`Connection::consumed`]). Time is a value the
//! caller passes in, so every deadline (handshake, keepalive, close,
//! linger) is decided here and merely waited for by the loop
//! ([`Connection::deadline`], [`Connection::on_deadline`]).
//!
//! The life of a connection (PROTOCOL sections 2 and 7):
//!
//! ```text
//! AwaitingHandshake ─head─▶ (the router decides)
//!    ├─ plain response / refusal ─────────────────▶ Finishing
//!    ├─ request body wanted ─▶ ReadingBody ─body─▶ (router) ─▶ Finishing
//!    └─ 101 ─▶ Open ─┬─ peer's close: reply ─────▶ Finishing
//!                    ├─ 1002/1007 (failing, 7.1.7) ─▶ Finishing
//!                    └─ our close (1001/1003/1008/1009) ─▶ Closing
//! Finishing ─output written, FIN─▶ Lingering ─EOF or timeout─▶ done
//! Closing ─peer's close or EOF or timeout─▶ done
//! ```
//!
//! Every RFC 6455 rule lives here or in [`super::frame`]: the loop never
//! looks inside a frame.

use super::close::CloseCode;
use super::frame::{Decoder, Event, Opcode, encode_close, encode_frame, header_len_for};
use super::handshake;
use super::http;
use std::borrow::Cow;
use std::time::{Duration, Instant};

/// The engine's timeouts and limits (PROTOCOL sections 2, 7 and 8).
#[derive(Debug, Clone)]
pub struct Limits {
    /// From accept to a complete request head (and body, for the admin API).
    pub handshake_timeout: Duration,
    /// Silence before a ping, and as long again before the peer is dropped;
    /// zero turns keepalive off.
    pub idle_timeout: Duration,
    /// How long a close reply, or the peer's EOF after ours, is awaited.
    pub close_timeout: Duration,
    /// Largest reassembled message (1009 above it).
    pub max_message_bytes: usize,
}

/// Far enough never to matter, near enough not to overflow `Instant`.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// An output buffer that grew past this for a burst is released once drained.
const KEEP_OUTPUT_CAPACITY: usize = 16 * 1024;

#[derive(Debug)]
enum Phase {
    /// Bytes of a request head received so far (empty while none are held).
    AwaitingHandshake {
        head: Vec<u8>,
    },
    /// A complete head awaits the router's answer.
    Requested,
    /// A plain request whose body is being read.
    /// Boxed: a rare state should not widen every connection.
    ReadingBody(Box<Body>),
    Open,
    /// We sent a close frame and await the peer's. `discard`: the stream
    /// can no longer be parsed, so bytes are skipped unread.
    Closing {
        discard: bool,
    },
    /// A last response or close frame is queued; once it is written the
    /// write side is shut.
    Finishing,
    /// Write side shut; input is drained until EOF so that unread bytes do
    /// not turn the close into a reset destroying the response in flight.
    Lingering,
}

/// A request body being read.
#[derive(Debug)]
struct Body {
    bytes: Vec<u8>,
    length: usize,
}

/// What a connection is, for `wschat_connections_open{state=...}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Handshake,
    Open,
    Closing,
    Http,
}

/// What [`Connection::step`] found in the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'i> {
    /// All input consumed; nothing to decide.
    NeedMore,
    /// A complete request head. Answer it with [`Connection::respond`],
    /// [`Connection::expect_body`] or [`Connection::open`]; bytes after the
    /// head stay in the input.
    Head(Cow<'i, [u8]>),
    /// The head was refused here (431) and the refusal queued.
    Refused { status: u16, reason: &'static str },
    /// The body asked for with [`Connection::expect_body`] is complete.
    Body(Vec<u8>),
    /// A complete data message; [`Connection::take_message`] hands it out.
    Message { binary: bool },
    /// The WebSocket stopped being open: the peer closed (our reply is
    /// queued) or broke the protocol (our close frame is queued). `code` is
    /// the code of the close frame we queued.
    Left { code: u16 },
    /// Nothing more will happen on this connection: drop it.
    Done,
}

/// What a deadline meant, from [`Connection::on_deadline`].
#[derive(Debug, PartialEq, Eq)]
pub enum Expiry {
    /// The deadline moved on since it was scheduled.
    NotYet,
    /// A keepalive ping was queued.
    Pinged,
    /// The request head (or body) did not arrive in time: drop, no response.
    HandshakeTimeout,
    /// A close frame was queued (a message not completed in time).
    Closed { code: u16 },
    /// Drop the connection now (a peer presumed gone, or a close finished).
    Drop(Cow<'static, str>),
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Connection {
    phase: Phase,
    decoder: Decoder,
    /// Bytes to send, in order.
    out: Vec<u8>,
    /// When the current phase next needs attention.
    deadline: Instant,
    /// A message is partly received and `deadline` is when it must be
    /// complete: a peer trickling a byte now and then cannot hold a partial
    /// message forever.
    partial: bool,
    /// Why the connection is ending, for the log line when it is dropped.
    close_reason: Option<Box<str>>,
    /// A keepalive ping is outstanding (cleared by any input).
    ping_sent: bool,
    /// Reached `Open` once: a close is a WebSocket close, not plain HTTP.
    websocket: bool,
    /// The peer shut its write side.
    eof: bool,
    /// Bytes moved since the last [`Connection::take_activity`].
    active: bool,
}

impl Connection {
    pub fn new(now: Instant, limits: &Limits) -> Connection {
        Connection {
            phase: Phase::AwaitingHandshake { head: Vec::new() },
            decoder: Decoder::new(limits.max_message_bytes),
            out: Vec::new(),
            deadline: now + limits.handshake_timeout,
            partial: false,
            close_reason: None,
            ping_sent: false,
            websocket: false,
            eof: false,
            active: true,
        }
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open)
    }

    pub fn state(&self) -> State {
        match self.phase {
            Phase::AwaitingHandshake { .. } => State::Handshake,
            Phase::Open => State::Open,
            Phase::Closing { .. } => State::Closing,
            Phase::Requested | Phase::ReadingBody(_) => State::Http,
            Phase::Finishing | Phase::Lingering if self.websocket => State::Closing,
            Phase::Finishing | Phase::Lingering => State::Http,
        }
    }

    /// True once the connection is a WebSocket (for the log level of its end).
    pub fn was_websocket(&self) -> bool {
        self.websocket
    }

    /// Whether input still matters: false once the peer's EOF was seen.
    pub fn wants_input(&self) -> bool {
        !self.eof
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Why the connection ended, for its log line.
    pub fn take_close_reason(&mut self) -> Option<Box<str>> {
        self.close_reason.take()
    }

    // ----- input -----------------------------------------------------------

    /// Consumes `input` until something needs deciding (returned) or it is
    /// used up ([`Step::NeedMore`]).
    pub fn step<'i>(&mut self, input: &mut &'i [u8], now: Instant, limits: &Limits) -> Step<'i> {
        if !input.is_empty() {
            self.active = true;
        }
        match &mut self.phase {
            Phase::AwaitingHandshake { head } => {
                if input.is_empty() {
                    return Step::NeedMore;
                }
                let step = read_head(head, input);
                if let Step::Head(_) = step {
                    self.phase = Phase::Requested;
                }
                step
            }
            Phase::Requested => Step::NeedMore,
            Phase::ReadingBody(reading) => {
                let Body { bytes, length } = &mut **reading;
                let wanted = length.saturating_sub(bytes.len()).min(input.len());
                let (chunk, rest) = input.split_at(wanted);
                bytes.extend_from_slice(chunk);
                *input = rest;
                if bytes.len() < *length {
                    return Step::NeedMore;
                }
                let body = std::mem::take(bytes);
                // Anything after the body is not read: the response ends
                // the exchange.
                *input = &[];
                self.phase = Phase::Finishing;
                Step::Body(body)
            }
            Phase::Open | Phase::Closing { discard: false } => self.step_frames(input, now, limits),
            Phase::Closing { discard: true } | Phase::Finishing | Phase::Lingering => {
                *input = &[];
                Step::NeedMore
            }
        }
    }

    fn step_frames(&mut self, input: &mut &[u8], now: Instant, limits: &Limits) -> Step<'static> {
        let open = self.is_open();
        if open && !input.is_empty() {
            self.ping_sent = false;
            if !self.partial {
                self.deadline = idle_deadline(now, limits);
            }
        }
        loop {
            match self.decoder.next_event(input) {
                Ok(None) => {
                    if open {
                        self.watch_partial_message(now, limits);
                    }
                    return Step::NeedMore;
                }
                Ok(Some(Event::Text(_))) => return self.message_done(false, now, limits),
                Ok(Some(Event::Binary(_))) => return self.message_done(true, now, limits),
                Ok(Some(Event::Ping(payload))) => {
                    // "Upon receipt of a Ping frame, an endpoint MUST send a
                    // Pong frame in response ... the same Application data".
                    if open {
                        encode_frame(&mut self.out, Opcode::Pong, payload);
                    }
                }
                Ok(Some(Event::Pong(_))) => {}
                Ok(Some(Event::Close(code, _))) => {
                    if !open {
                        // The reply to our close: the exchange is complete.
                        *input = &[];
                        return Step::Done;
                    }
                    // "the endpoint typically echos the status code it received".
                    let code = code.unwrap_or(CloseCode::NORMAL.0);
                    encode_close(&mut self.out, code, "");
                    self.finish(format!("client closed with {code}"), now, limits);
                    *input = &[];
                    return Step::Left { code };
                }
                Err(e) => {
                    if !open {
                        self.phase = Phase::Closing { discard: true };
                        *input = &[];
                        return Step::NeedMore;
                    }
                    self.close(e.code, e.reason, now + limits.close_timeout);
                    *input = &[];
                    return Step::Left { code: e.code.0 };
                }
            }
        }
    }

    /// A message is complete: the next one gets a fresh deadline.
    fn message_done(&mut self, binary: bool, now: Instant, limits: &Limits) -> Step<'static> {
        if self.partial {
            self.partial = false;
            self.deadline = idle_deadline(now, limits);
        }
        Step::Message { binary }
    }

    /// Input ran out in the middle of a message: from the first such
    /// moment, the message must be complete within its window.
    fn watch_partial_message(&mut self, now: Instant, limits: &Limits) {
        if !self.decoder.is_mid_message() {
            self.partial = false;
        } else if !self.partial {
            self.partial = true;
            self.deadline = now + message_window(limits);
        }
    }

    /// The message of the last [`Step::Message`], taken out so that it can
    /// be handed to an application while the connection is borrowed again;
    /// return it with [`Connection::give_back`].
    pub fn take_message(&mut self) -> Vec<u8> {
        self.decoder.take_message()
    }

    pub fn give_back(&mut self, message: Vec<u8>) {
        self.decoder.give_back(message);
    }

    /// The peer shut its write side. Returns whether the connection is done.
    pub fn on_eof(&mut self) -> bool {
        self.eof = true;
        match self.phase {
            // The response still goes out; the drain ends it.
            Phase::Finishing => false,
            Phase::AwaitingHandshake { .. } | Phase::Requested | Phase::ReadingBody(_) => {
                self.set_reason("closed before the request was complete");
                true
            }
            Phase::Open => {
                self.set_reason("connection dropped by peer");
                true
            }
            Phase::Closing { .. } | Phase::Lingering => {
                if self.close_reason.is_none() {
                    self.set_reason("closed");
                }
                true
            }
        }
    }

    // ----- answers to a request head ---------------------------------------

    /// Queues a last response; the connection ends once it is written.
    pub fn respond(&mut self, response: &[u8], reason: &str, now: Instant, limits: &Limits) {
        self.out.extend_from_slice(response);
        self.finish(reason.to_string(), now, limits);
    }

    /// Reads a request body of `length` bytes before answering; the
    /// handshake timeout keeps running. With `send_continue` (the request
    /// said `Expect: 100-continue`) a `100 Continue` is queued first.
    pub fn expect_body(&mut self, length: usize, send_continue: bool) {
        if let Phase::Requested = self.phase {
            if send_continue && length > 0 {
                self.out.extend_from_slice(http::CONTINUE);
            }
            self.phase = Phase::ReadingBody(Box::new(Body {
                bytes: Vec::with_capacity(length.min(64 * 1024)),
                length,
            }));
        }
    }

    /// Queues the `101` and opens the WebSocket.
    pub fn open(&mut self, accept: &str, subprotocol: Option<&str>, now: Instant, limits: &Limits) {
        handshake::accept_response(&mut self.out, accept, subprotocol);
        self.phase = Phase::Open;
        self.websocket = true;
        self.deadline = idle_deadline(now, limits);
    }

    /// Closes an open WebSocket with `code`: a close frame, then (failing
    /// the connection, 1002 and 1007, RFC 6455 7.1.7) a half-close at once,
    /// or (every other code) a wait for the peer's close until `deadline`.
    /// Returns false when the connection was not open.
    pub fn close(&mut self, code: CloseCode, reason: &str, deadline: Instant) -> bool {
        if !self.is_open() {
            return false;
        }
        encode_close(&mut self.out, code.0, reason);
        self.decoder.enter_closing();
        self.close_reason = Some(format!("closed with {} ({reason})", code.0).into());
        self.deadline = deadline;
        if matches!(code, CloseCode::PROTOCOL_ERROR | CloseCode::INVALID_PAYLOAD) {
            self.phase = Phase::Finishing;
        } else {
            self.phase = Phase::Closing { discard: false };
        }
        true
    }

    fn finish(&mut self, reason: String, now: Instant, limits: &Limits) {
        self.phase = Phase::Finishing;
        self.deadline = now + limits.close_timeout;
        self.close_reason = Some(reason.into());
    }

    fn set_reason(&mut self, reason: &str) {
        self.close_reason = Some(reason.into());
    }

    // ----- output ----------------------------------------------------------

    /// Queues bytes written by `write` (`len` of them, for the caller's
    /// accounting) on an open WebSocket; false when it is not open.
    pub fn queue_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> bool {
        if !self.is_open() {
            return false;
        }
        write(&mut self.out);
        self.active = true;
        true
    }

    /// Queues one frame on an open WebSocket, encoded in place.
    pub fn queue_frame(&mut self, opcode: Opcode, payload: &[u8]) -> bool {
        self.queue_with(|out| encode_frame(out, opcode, payload))
    }

    /// Bytes a frame with this payload length takes on the wire.
    pub fn frame_len(payload_len: usize) -> usize {
        header_len_for(payload_len) + payload_len
    }

    /// Bytes waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.out
    }

    /// The first `n` bytes of [`Connection::output`] were sent.
    pub fn consumed(&mut self, n: usize) {
        if n >= self.out.len() {
            if self.out.capacity() > KEEP_OUTPUT_CAPACITY {
                self.out = Vec::new();
            } else {
                self.out.clear();
            }
        } else {
            self.out.drain(..n);
        }
    }

    /// Exchanges an empty output buffer with `spare` (also empty): the loop
    /// lends one reused buffer for each greeting, so a handshake allocates
    /// no output buffer of its own. Does nothing if either holds bytes.
    pub fn swap_empty_output(&mut self, spare: &mut Vec<u8>) {
        if self.out.is_empty() && spare.is_empty() {
            std::mem::swap(&mut self.out, spare);
        }
    }

    /// Gives the output buffer back to the allocator if it is empty: a
    /// connection that was greeted and then stays idle holds no buffer.
    pub fn release_output(&mut self) {
        if self.out.is_empty() {
            self.out = Vec::new();
        }
    }

    /// Everything queued was sent. Returns true when the write side should
    /// now be shut (a finished exchange); the connection then lingers until
    /// the peer's EOF, or is done at once if that was already seen
    /// ([`Connection::is_done`]).
    pub fn on_drained(&mut self, now: Instant, limits: &Limits) -> bool {
        if !matches!(self.phase, Phase::Finishing) || !self.out.is_empty() {
            return false;
        }
        self.phase = Phase::Lingering;
        self.deadline = self.deadline.min(now + limits.close_timeout);
        true
    }

    /// Lingering after a seen EOF: nothing is left to do.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Lingering) && self.eof
    }

    // ----- time ------------------------------------------------------------

    /// The deadline may have passed: act on it.
    pub fn on_deadline(&mut self, now: Instant, limits: &Limits) -> Expiry {
        if now < self.deadline {
            return Expiry::NotYet;
        }
        match self.phase {
            Phase::AwaitingHandshake { .. } | Phase::Requested | Phase::ReadingBody(_) => {
                Expiry::HandshakeTimeout
            }
            Phase::Open if self.partial => {
                let code = CloseCode::POLICY_VIOLATION;
                self.close(
                    code,
                    "message not completed in time",
                    now + limits.close_timeout,
                );
                Expiry::Closed { code: code.0 }
            }
            Phase::Open if !self.ping_sent => {
                self.ping_sent = true;
                self.deadline = idle_deadline(now, limits);
                encode_frame(&mut self.out, Opcode::Ping, b"");
                Expiry::Pinged
            }
            Phase::Open => Expiry::Drop("idle: no answer to ping".into()),
            Phase::Closing { .. } => Expiry::Drop("no close reply in time".into()),
            Phase::Finishing | Phase::Lingering => Expiry::Drop(
                self.close_reason
                    .take()
                    .map_or(Cow::Borrowed("done"), |r| Cow::Owned(r.into())),
            ),
        }
    }

    /// Whether bytes moved since the last call (for giving buffers back).
    pub fn take_activity(&mut self) -> bool {
        std::mem::replace(&mut self.active, false)
    }

    /// Whether the connection holds heap buffers that [`Connection::trim`]
    /// might give back.
    pub fn holds_buffers(&self) -> bool {
        let head = match &self.phase {
            Phase::AwaitingHandshake { head } => head.capacity(),
            _ => 0,
        };
        self.out.capacity() + self.decoder.buffered_bytes() + head > 0
    }

    /// Gives back buffers not holding anything in progress.
    pub fn trim(&mut self) {
        self.release_output();
        self.decoder.trim();
        if let Phase::AwaitingHandshake { head } = &mut self.phase
            && head.is_empty()
        {
            *head = Vec::new();
        }
    }
}

/// How long one message may take to arrive, from its first byte: the
/// keepalive interval, or the handshake timeout when keepalive is off.
fn message_window(limits: &Limits) -> Duration {
    if limits.idle_timeout.is_zero() {
        limits.handshake_timeout
    } else {
        limits.idle_timeout
    }
}

fn idle_deadline(now: Instant, limits: &Limits) -> Instant {
    if limits.idle_timeout.is_zero() {
        now + NEVER
    } else {
        now + limits.idle_timeout
    }
}

mod head;
use head::read_head;

#[cfg(test)]
mod tests;
