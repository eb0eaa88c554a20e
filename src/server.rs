//! The poll loop: one `mio::Poll`, one thread, a `slab` of connections.
//!
//! Each turn: wait for readiness (the timeout is the next timer tick, or
//! zero when a connection still has unread input), accept until
//! `WouldBlock`, read each ready connection through one shared read buffer
//! and feed the bytes to its state machine, then flush every connection
//! that received output during the turn, once. Broadcasts therefore only
//! append to write buffers; a connection that got fifty messages this turn
//! costs one `write`, not fifty.
//!
//! Fairness: a connection may read at most [`READ_BUDGET`] bytes per turn.
//! mio is edge-triggered, so one that still has input goes on a backlog
//! list and is read again next turn, after everyone else had theirs.
//!
//! Timers need no thread: every [`TICK`] the loop sweeps the slab for
//! handshake, keepalive, close and linger deadlines.
//!
//! Closing is never done from inside a broadcast: connections found over
//! their output cap, closes asked for by the chat, and names to announce as
//! gone are put on lists and settled after the message that caused them.

use crate::app::chat::{Chat, ChatPeer, Room};
use crate::app::echo;
use crate::config::Config;
use crate::engine::close::CloseCode;
use crate::engine::connection::{Connection, Flushed, Phase};
use crate::engine::frame::{Decoder, Event, Opcode, encode_close, encode_frame};
use crate::engine::handshake::{self, Decision, Rejection};
use crate::engine::http::{self, MAX_HEAD_BYTES, Request};
use crate::metrics::{AppLabel, Gauges, Metrics};
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);

/// Connections the kernel may queue before `accept` (capped at somaxconn).
const LISTEN_BACKLOG: i32 = 65535;
/// While accept keeps failing for lack of descriptors, warn this seldom.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);
/// Every this many ticks (about a second), connections that were quiet
/// since the last time give their buffers back.
const TRIM_EVERY_TICKS: u64 = 10;
/// Timer resolution: deadlines are checked this often.
pub const TICK: Duration = Duration::from_millis(100);
/// The loop's one read buffer; idle connections own no input buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Bytes one connection may read per loop turn before others get a turn.
pub const READ_BUDGET: usize = 4 * READ_BUFFER;
/// Complete messages one connection may have handled per loop turn.
pub const MESSAGE_BUDGET: u16 = 64;
/// Sockets refused with 503 that are drained before closing, at most.
const MAX_DOOR_REJECTS: usize = 1024;
/// How long a 503'd socket is drained so the response is not reset away.
const DOOR_LINGER: Duration = Duration::from_secs(1);

/// The web client, with limits substituted when the server starts.
const INDEX_HTML: &str = include_str!("../web/index.html");

/// The chat's view of the server (a macro, so that `self.chat` stays
/// borrowable beside it).
macro_rules! room {
    ($server:ident) => {
        ServerRoom {
            conns: &mut $server.conns,
            dirty: &mut $server.dirty,
            slow: &mut $server.slow,
            closes: &mut $server.closes,
            metrics: &mut $server.metrics,
            max_output: $server.config.max_output_bytes,
        }
    };
}

/// The application state of a slab entry, beside the engine's connection.
#[derive(Debug)]
enum AppState {
    /// Not (yet, or any more) a WebSocket application.
    None,
    Chat(ChatPeer),
    Echo,
}

#[derive(Debug)]
struct Slot {
    conn: Connection,
    app: AppState,
}

/// Stops a running server from another thread, as SIGTERM would.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown: close 1001 to everyone, then `run` returns.
    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        if let Err(e) = self.waker.wake() {
            warn!("could not wake the poll loop for shutdown: {e}");
        }
    }
}

/// A bound server, ready to [`run`](Server::run).
pub struct Server {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    conns: Slab<Slot>,
    chat: Chat,
    metrics: Metrics,
    /// Connections with output queued this turn.
    dirty: Vec<usize>,
    /// Connections that stopped reading on their budget, not on `WouldBlock`.
    backlog: Vec<usize>,
    /// Connections found over `--max-output-bytes` while queueing.
    slow: Vec<usize>,
    /// Closes the chat asked for.
    closes: Vec<(usize, CloseCode, &'static str)>,
    /// Names freed whose `leave` is still to be sent.
    leaving: Vec<Box<str>>,
    read_buffer: Vec<u8>,
    /// Reused for the 101 response and first user list of each handshake.
    greeting: Vec<u8>,
    /// Sockets answered 503 at the door, drained until EOF or their deadline.
    door_rejects: VecDeque<(TcpStream, Instant)>,
    shutdown_requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<UnixStream>,
    /// Set once shutdown began: when `run` gives up waiting.
    shutdown_deadline: Option<Instant>,
    /// `accept` failed for lack of descriptors; retried every tick.
    accept_paused: bool,
    /// When the last "out of descriptors" warning was logged (one a burst).
    accept_warned: Option<Instant>,
    accept_failures: u64,
    index_html: Vec<u8>,
    fd_capacity: u64,
    /// The time of the current loop turn.
    now: Instant,
    /// Timer ticks so far (idle buffers are trimmed every few).
    ticks: u64,
}

impl Server {
    /// Binds the listening socket (port 0 picks a free one) and prepares the
    /// loop. Also raises the soft open-file limit to the hard limit.
    pub fn bind(config: Config) -> io::Result<Server> {
        let fd_capacity = raise_fd_limit();
        let addr = resolve(&config.host, config.port)?;
        let mut listener = TcpListener::bind(addr)?;
        // mio listens with a backlog of 128; a crowd connecting at once
        // overflows that in a millisecond and waits a second for the SYN
        // retry. Listening again raises it (the kernel caps it at somaxconn).
        rustix::net::listen(&listener, LISTEN_BACKLOG)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let index_html = INDEX_HTML
            .replace(
                "__WSCHAT_MAX_CHAT_CHARS__",
                &config.max_chat_chars.to_string(),
            )
            .replace("__WSCHAT_RATE_LIMIT__", &config.rate_limit.to_string())
            .into_bytes();
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            chat: Chat::new(config.max_chat_chars, config.rate_limit),
            config,
            conns: Slab::new(),
            metrics: Metrics::default(),
            dirty: Vec::new(),
            backlog: Vec::new(),
            slow: Vec::new(),
            closes: Vec::new(),
            leaving: Vec::new(),
            read_buffer: vec![0; READ_BUFFER],
            greeting: Vec::new(),
            door_rejects: VecDeque::new(),
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            shutdown_deadline: None,
            accept_paused: false,
            accept_warned: None,
            accept_failures: 0,
            index_html,
            fd_capacity,
            now: Instant::now(),
            ticks: 0,
        })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many file descriptors the process may open (after raising).
    pub fn fd_capacity(&self) -> u64 {
        self.fd_capacity
    }

    /// A handle that stops `run` gracefully from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::clone(&self.shutdown_requested),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Routes SIGINT and SIGTERM into the loop as a graceful shutdown (a
    /// second signal during shutdown stops at once). signal-hook writes a
    /// byte to a socket pair from the handler, which is async-signal-safe;
    /// the loop polls the other end like any connection.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let (read_end, write_end) = std::os::unix::net::UnixStream::pair()?;
        read_end.set_nonblocking(true)?;
        write_end.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(
            signal_hook::consts::SIGTERM,
            write_end.try_clone()?,
        )?;
        signal_hook::low_level::pipe::register(signal_hook::consts::SIGINT, write_end)?;
        let mut read_end = UnixStream::from_std(read_end);
        self.poll
            .registry()
            .register(&mut read_end, SIGNALS, Interest::READABLE)?;
        self.signals = Some(read_end);
        Ok(())
    }

    /// Runs the loop until a shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        loop {
            let timeout = if self.backlog.is_empty() {
                next_tick.saturating_duration_since(Instant::now())
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            let backlog = std::mem::take(&mut self.backlog);
            for t in backlog {
                if let Some(slot) = self.conns.get_mut(t) {
                    slot.conn.in_backlog = false;
                    self.read_ready(t);
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(),
                    WAKER => {
                        if self.shutdown_requested.load(Ordering::SeqCst) {
                            self.begin_shutdown();
                        }
                    }
                    SIGNALS => {
                        if self.drain_signals() {
                            info!("second signal during shutdown: exiting now");
                            return Ok(());
                        }
                    }
                    Token(t) => {
                        if event.is_writable() {
                            self.mark_dirty(t);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read_ready(t);
                        }
                    }
                }
            }
            self.flush_dirty();
            if self.now >= next_tick {
                self.sweep();
                self.flush_dirty();
                next_tick = self.now + TICK;
            }
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || self.now >= deadline)
            {
                info!(
                    "shutdown complete ({} connection(s) did not answer in time)",
                    self.conns.len()
                );
                return Ok(());
            }
        }
    }

    // ----- accepting -------------------------------------------------------

    fn accept_all(&mut self) {
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            match listener.accept() {
                Ok((socket, peer)) => {
                    if self.accept_paused {
                        info!(
                            "accepting again ({} accept failures so far)",
                            self.accept_failures
                        );
                        self.accept_paused = false;
                    }
                    self.metrics.accepted_total += 1;
                    if self.conns.len() >= self.config.max_connections {
                        self.refuse_at_door(socket, peer);
                        continue;
                    }
                    self.admit(socket, peer);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_descriptors(&e) => {
                    // The pending connection stays in the kernel's queue;
                    // the tick retries, so there is no busy loop.
                    self.accept_failures += 1;
                    let quiet = self.accept_warned.is_some_and(|at| {
                        self.now.saturating_duration_since(at) < ACCEPT_WARN_EVERY
                    });
                    if !quiet {
                        warn!(
                            "accept failed ({e}) with {} connections open: pausing accept until descriptors free up",
                            self.conns.len()
                        );
                        self.accept_warned = Some(self.now);
                    }
                    self.accept_paused = true;
                    return;
                }
                Err(e) => debug!("accept failed: {e}"),
            }
        }
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        // Chat lines are small and latency matters more than packet count;
        // batching already happens in the write buffers.
        let _ = socket.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let t = entry.key();
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(t), Interest::READABLE)
        {
            warn!("cannot register connection from {peer}: {e}");
            return;
        }
        debug!("accepted {peer}");
        let deadline = self.now + self.config.handshake_timeout;
        entry.insert(Slot {
            conn: Connection::new(socket, peer, deadline, self.config.max_message_bytes),
            app: AppState::None,
        });
    }

    /// PROTOCOL section 2, check 1: at the limit, 503 at once, unread.
    fn refuse_at_door(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        self.metrics.rejected("limit");
        debug!("refused {peer}: {} connections open", self.conns.len());
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

    // ----- reading ---------------------------------------------------------

    fn read_ready(&mut self, t: usize) {
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
                        if let Some(slot) = self.conns.get_mut(t)
                            && !slot.conn.in_backlog
                        {
                            slot.conn.in_backlog = true;
                            self.backlog.push(t);
                        }
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
    fn backlog_if_stashed(&mut self, t: usize) -> bool {
        match self.conns.get_mut(t) {
            Some(slot) if !slot.conn.stash.is_empty() => {
                if !slot.conn.in_backlog {
                    slot.conn.in_backlog = true;
                    self.backlog.push(t);
                }
                true
            }
            _ => false,
        }
    }

    fn on_bytes(&mut self, t: usize, data: &[u8]) {
        let Some(slot) = self.conns.get_mut(t) else {
            return;
        };
        match slot.conn.phase {
            Phase::AwaitingHandshake { .. } => self.on_head_bytes(t, data),
            Phase::Open | Phase::Closing { discard: false } => self.on_frame_bytes(t, data),
            Phase::Closing { discard: true } | Phase::Finishing | Phase::Lingering => {}
        }
    }

    fn on_eof(&mut self, t: usize) {
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

    fn on_head_bytes(&mut self, t: usize, data: &[u8]) {
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

    fn head_too_large(&mut self, t: usize) {
        self.metrics.rejected("head_too_large");
        self.respond_error(t, 431, &[], "request head over 8192 bytes");
    }

    /// Answers a complete request head; `rest` is what followed it in the
    /// same read (a client may send its first frame at once).
    fn on_complete_head(&mut self, t: usize, head: &[u8], rest: &[u8]) {
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

    fn serve_plain(&mut self, t: usize, request: &Request<'_>, head_only: bool) {
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

    fn respond_error(&mut self, t: usize, status: u16, headers: &[(&str, &str)], why: &str) {
        let mut out = Vec::new();
        http::write_error(&mut out, status, headers, false);
        if let Some(slot) = self.conns.get(t) {
            info!("refused {} with {status}: {why}", slot.conn.peer);
        }
        self.finish_with(t, &out, why);
    }

    /// Queues a last response; the connection closes once it is written.
    fn finish_with(&mut self, t: usize, response: &[u8], reason: &str) {
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

    fn open_websocket(&mut self, t: usize, path: &str, accept: &str, subprotocol: Option<&str>) {
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

    fn idle_deadline(&self) -> Instant {
        if self.config.idle_timeout.is_zero() {
            // Far enough never to matter, near enough not to overflow.
            self.now + Duration::from_secs(100 * 365 * 24 * 3600)
        } else {
            self.now + self.config.idle_timeout
        }
    }

    // ----- frames ----------------------------------------------------------

    fn on_frame_bytes(&mut self, t: usize, data: &[u8]) {
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
    fn on_event(&mut self, t: usize, event: Event<'_>) -> bool {
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
                let mut frame = Vec::with_capacity(2 + payload.len());
                encode_frame(&mut frame, Opcode::Pong, payload);
                self.queue(t, &frame);
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

    fn echo(&mut self, t: usize, binary: bool, payload: &[u8]) {
        self.metrics.messages_received[AppLabel::Echo as usize] += 1;
        let mut frame = Vec::with_capacity(10 + payload.len());
        echo::reply(&mut frame, binary, payload);
        if self.queue(t, &frame) {
            self.metrics.messages_sent[AppLabel::Echo as usize] += 1;
        }
    }

    /// Queues bytes to an open connection, within its output cap.
    fn queue(&mut self, t: usize, bytes: &[u8]) -> bool {
        let Some(slot) = self.conns.get_mut(t) else {
            return false;
        };
        queue_on(
            t,
            slot,
            bytes,
            self.config.max_output_bytes,
            &mut self.dirty,
            &mut self.slow,
            &mut self.metrics.bytes_sent,
        )
    }

    fn mark_dirty(&mut self, t: usize) {
        if let Some(slot) = self.conns.get_mut(t)
            && !slot.conn.dirty
        {
            slot.conn.dirty = true;
            self.dirty.push(t);
        }
    }

    // ----- closing ---------------------------------------------------------

    /// Starts the server's side of the close handshake with `code`.
    fn fail(&mut self, t: usize, code: CloseCode, reason: &str) {
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
    fn leave_app(&mut self, t: usize) {
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
    fn drop_connection(&mut self, t: usize, reason: &str) {
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
    fn settle(&mut self) {
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

    fn flush_dirty(&mut self) {
        while let Some(t) = self.dirty.pop() {
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
    fn read_pause_threshold(&self) -> usize {
        (self.config.max_output_bytes / 2).max(1)
    }

    fn after_flush(&mut self, t: usize, flushed: Flushed) {
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
        if slot.conn.read_paused && slot.conn.out.len() < pause_at {
            slot.conn.read_paused = false;
            if !slot.conn.in_backlog {
                slot.conn.in_backlog = true;
                self.backlog.push(t);
            }
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
    }

    // ----- timers ----------------------------------------------------------

    fn sweep(&mut self) {
        let now = self.now;
        let mut expired = Vec::new();
        for (t, slot) in self.conns.iter() {
            if now >= slot.conn.deadline {
                expired.push(t);
            }
        }
        for t in expired {
            let Some(slot) = self.conns.get_mut(t) else {
                continue;
            };
            match slot.conn.phase {
                Phase::AwaitingHandshake { .. } => {
                    self.metrics.rejected("timeout");
                    self.drop_connection(t, "no request head within the handshake timeout");
                }
                Phase::Open if !slot.conn.ping_sent => {
                    slot.conn.ping_sent = true;
                    slot.conn.deadline = now + self.config.idle_timeout;
                    let mut ping = Vec::with_capacity(2);
                    encode_frame(&mut ping, Opcode::Ping, b"");
                    self.queue(t, &ping);
                }
                Phase::Open => self.drop_connection(t, "idle: no answer to ping"),
                Phase::Closing { .. } => self.drop_connection(t, "no close reply in time"),
                Phase::Finishing | Phase::Lingering => {
                    let reason = slot.conn.close_reason.take();
                    self.drop_connection(t, reason.as_deref().unwrap_or("done"));
                }
            }
        }
        self.settle();
        self.drain_door_rejects();
        if self.accept_paused {
            self.accept_all();
        }
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks.is_multiple_of(TRIM_EVERY_TICKS) {
            for (_, slot) in self.conns.iter_mut() {
                slot.conn.trim_if_idle();
            }
        }
    }

    fn drain_door_rejects(&mut self) {
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

    // ----- shutdown --------------------------------------------------------

    /// Returns true when a signal arrived while already shutting down.
    fn drain_signals(&mut self) -> bool {
        let mut got = false;
        if let Some(signals) = &mut self.signals {
            let mut buf = [0u8; 16];
            loop {
                match signals.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => got = true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        if !got {
            return false;
        }
        if self.shutdown_deadline.is_some() {
            return true;
        }
        self.begin_shutdown();
        false
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        info!(
            "shutting down: stop accepting, close 1001 to {} connection(s)",
            self.conns.len()
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.shutdown_deadline = Some(self.now + self.config.shutdown_timeout);
        let slots: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        for t in slots {
            let Some(slot) = self.conns.get(t) else {
                continue;
            };
            match slot.conn.phase {
                Phase::Open => self.fail(t, CloseCode::GOING_AWAY, "server shutting down"),
                Phase::Closing { .. } => {}
                _ => self.drop_connection(t, "server shutting down"),
            }
        }
        self.leaving.clear();
        self.settle();
        self.door_rejects.clear();
    }

    fn gauges(&self) -> Gauges {
        let mut g = Gauges {
            users_named: self.chat.named_count(),
            rate_limited_total: self.chat.rate_limited_total,
            fd_capacity: self.fd_capacity,
            ..Gauges::default()
        };
        for (_, slot) in &self.conns {
            match slot.conn.phase {
                _ if slot.conn.is_http => g.http += 1,
                Phase::AwaitingHandshake { .. } => g.handshake += 1,
                Phase::Open => g.open += 1,
                Phase::Closing { .. } | Phase::Finishing | Phase::Lingering => g.closing += 1,
            }
        }
        g
    }
}

/// Appends to one connection's output if it is open and under its cap;
/// over the cap it is put on the `slow` list instead.
fn queue_on(
    t: usize,
    slot: &mut Slot,
    bytes: &[u8],
    max_output: usize,
    dirty: &mut Vec<usize>,
    slow: &mut Vec<usize>,
    bytes_sent: &mut u64,
) -> bool {
    let conn = &mut slot.conn;
    if !conn.is_open() {
        return false;
    }
    if conn.out.len().saturating_add(bytes.len()) > max_output && !conn.out.is_empty() {
        // Output queued this turn has not met the socket yet: only what the
        // kernel refuses counts as pending, so write now before judging.
        if let Ok((_, written)) = conn.flush() {
            *bytes_sent += written as u64;
        }
        // One message always fits an empty buffer, so a message larger than
        // the cap (an echo of a big message) is not mistaken for a slow
        // reader; memory stays bounded by the cap plus one message.
        if !conn.out.is_empty() && conn.out.len().saturating_add(bytes.len()) > max_output {
            slow.push(t);
            return false;
        }
    }
    conn.out.extend_from_slice(bytes);
    conn.active = true;
    if !conn.dirty {
        conn.dirty = true;
        dirty.push(t);
    }
    true
}

/// The chat's view of the server's connections.
struct ServerRoom<'a> {
    conns: &'a mut Slab<Slot>,
    dirty: &'a mut Vec<usize>,
    slow: &'a mut Vec<usize>,
    closes: &'a mut Vec<(usize, CloseCode, &'static str)>,
    metrics: &'a mut Metrics,
    max_output: usize,
}

impl Room for ServerRoom<'_> {
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer> {
        match self.conns.get_mut(slot) {
            Some(Slot {
                conn,
                app: AppState::Chat(peer),
            }) if conn.is_open() => Some(peer),
            _ => None,
        }
    }

    fn for_each_peer(&self, f: &mut dyn FnMut(&ChatPeer)) {
        for (_, slot) in self.conns.iter() {
            if let AppState::Chat(peer) = &slot.app
                && slot.conn.is_open()
            {
                f(peer);
            }
        }
    }

    fn send(&mut self, t: usize, frame: &[u8]) {
        if let Some(slot) = self.conns.get_mut(t)
            && matches!(slot.app, AppState::Chat(_))
            && queue_on(
                t,
                slot,
                frame,
                self.max_output,
                self.dirty,
                self.slow,
                &mut self.metrics.bytes_sent,
            )
        {
            self.metrics.messages_sent[AppLabel::Chat as usize] += 1;
        }
    }

    fn broadcast(&mut self, frame: &[u8]) {
        let mut sent = 0;
        for (t, slot) in self.conns.iter_mut() {
            if matches!(slot.app, AppState::Chat(_))
                && queue_on(
                    t,
                    slot,
                    frame,
                    self.max_output,
                    self.dirty,
                    self.slow,
                    &mut self.metrics.bytes_sent,
                )
            {
                sent += 1;
            }
        }
        self.metrics.messages_sent[AppLabel::Chat as usize] += sent;
    }

    fn close(&mut self, t: usize, code: CloseCode, reason: &'static str) {
        self.closes.push((t, code, reason));
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

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

/// EMFILE, ENFILE, ENOBUFS, ENOMEM: the process or system is out of
/// descriptors or memory for sockets; retrying at once would spin.
fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port).to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot resolve {host}"),
        )
    })
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the result.
fn raise_fd_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let mut raised = limit;
    raised.current = limit.maximum;
    if raised.current != limit.current && setrlimit(Resource::Nofile, raised).is_ok() {
        return raised.current.unwrap_or(u64::MAX);
    }
    limit.current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    /// An idle connection costs its slab entry plus a name: keep the entry
    /// small (issue 5 asks for a few hundred bytes a connection).
    #[test]
    fn a_slab_entry_stays_small() {
        let size = std::mem::size_of::<super::Slot>();
        eprintln!("Slot is {size} bytes");
        assert!(size <= 360, "Slot grew to {size} bytes");
    }
}
