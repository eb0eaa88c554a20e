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
//!
//! This file holds the loop itself, accepting, timers and shutdown;
//! `input.rs` reads and interprets what clients send, `output.rs` closes
//! connections and flushes, `room.rs` is the chat's view of the slab.

use crate::app::chat::{Chat, ChatPeer};
use crate::app::echo;
use crate::config::Config;
use crate::engine::close::CloseCode;
use crate::engine::connection::{Connection, Flushed, Phase};
use crate::engine::frame::{Decoder, Event, Opcode, encode_close, encode_frame, header_len_for};
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
/// Connections flushed per loop turn. A turn that finds more dirty ones
/// polls for input (without waiting) before going on, so messages that
/// arrive during a long flush join the buffers not yet written: lower
/// latency for the late ones and more frames per write. 64 rather than 512:
/// at 1 000 clients and 1M frames/s it cut p99 from 4.3-6.5 ms to 3.0-4.7 ms
/// and p50 from 2.3 to 1.6 ms for one extra `epoll_wait` per 64 writes
/// (docs/benchmarks.md, "Flush chunk").
const FLUSH_CHUNK: usize = 64;
/// Complete messages one connection may have handled per loop turn.
pub const MESSAGE_BUDGET: u16 = 64;
/// A connection with less unsent output than this is never dropped for the
/// server-wide output budget: it is keeping up, whatever the others do.
/// Neither is one whose last write the kernel took whole: its backlog is
/// the server being behind (overload), not the peer failing to read.
const BUDGET_MIN_BACKLOG: usize = 64 * 1024;
/// Sockets refused with 503 that are drained before closing, at most.
const MAX_DOOR_REJECTS: usize = 1024;
/// How long a 503'd socket is drained so the response is not reset away.
const DOOR_LINGER: Duration = Duration::from_secs(1);

/// The web client, with limits substituted when the server starts.
const INDEX_HTML: &str = include_str!("../../web/index.html");

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

mod input;
mod output;
mod room;

use room::{ServerRoom, queue_with};

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
    dirty: VecDeque<usize>,
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
            dirty: VecDeque::new(),
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
            let timeout = if self.backlog.is_empty() && self.dirty.is_empty() {
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
            self.flush_dirty(FLUSH_CHUNK);
            if self.now >= next_tick {
                self.sweep();
                self.flush_dirty(FLUSH_CHUNK);
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
                    self.queue_frame(t, 0, |out| encode_frame(out, Opcode::Ping, b""));
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
        self.enforce_output_budget();
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

    /// Holds all unsent output to `--max-total-output-bytes`. The cap per
    /// connection alone would let many stalled readers hold the cap each;
    /// past the budget the largest backlogs the kernel refused go first,
    /// reset at once (their buffers freed now, not after a close handshake
    /// they would never read). Checked each tick, so it may be overshot by
    /// one tick's worth of traffic.
    fn enforce_output_budget(&mut self) {
        let budget = self.config.max_total_output_bytes;
        let mut total: usize = 0;
        let mut backlogs = Vec::new();
        for (t, slot) in self.conns.iter() {
            let pending = slot.conn.out.len();
            total = total.saturating_add(pending);
            if slot.conn.wants_write && pending >= BUDGET_MIN_BACKLOG {
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
                let _ = rustix::net::sockopt::set_socket_linger(
                    &slot.conn.socket,
                    Some(Duration::ZERO),
                );
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
