//! The poll loop: one `mio::Poll`, one thread, a `slab` of connections.
//!
//! The loop moves bytes and nothing else. It accepts sockets, reads each
//! ready one through one shared read buffer into its [`Connection`] (the
//! engine's sans-IO state machine, which knows RFC 6455), hands what the
//! connection reports to the [`Service`] (which knows the routes and the
//! chat), and writes every connection that got output once per turn.
//! Broadcasts therefore only append to write buffers; a connection that
//! got fifty messages this turn costs one `write`, not fifty.
//!
//! Fairness: a connection may read at most `READ_BUDGET` bytes and handle
//! `MESSAGE_BUDGET` messages per turn. mio is edge-triggered, so one that
//! still has input goes on a backlog list and is read again next turn,
//! after everyone else had theirs.
//!
//! Timers need no thread and no sweep: each connection's deadline sits in
//! a heap (`timers.rs`), so a turn touches only what is due.
//!
//! Closing is never done from inside a broadcast: connections found over
//! their output cap and closes asked for by the service are put on lists
//! and settled after the event that caused them.
//!
//! This file holds the loop itself, accepting, the server-wide budgets and
//! shutdown; `pump.rs` moves bytes and steps, `room.rs` is the service's view
//! of the slab, `timers.rs` the deadline heap, `guard.rs` the limits of the server as a
//! whole, `listen.rs` the listening socket, `signals.rs` SIGINT, SIGTERM and
//! SIGHUP.

use crate::app::{Service, Wschat};
use crate::config::Config;
use crate::console::Console;
use crate::engine::close::CloseCode;
use crate::engine::connection::{Connection, Limits};
use crate::engine::http;
use crate::metrics::Metrics;
use crate::transport::Transport;
use crate::transport::tls::{TlsSettings, TlsTransport};
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod guard;
mod listen;
mod pump;
mod room;
mod signals;
mod timers;

pub use listen::raise_fd_limit;
use listen::{current_fd_limit, listen_reuse_port, resolve};
use timers::Timers;

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
/// SIGHUP: reload the TLS certificate and key.
const RELOAD: Token = Token(usize::MAX - 4);

/// Connections the kernel may queue before `accept` (capped at somaxconn).
const LISTEN_BACKLOG: i32 = 65535;
/// While accept keeps failing for lack of descriptors, warn this seldom.
const ACCEPT_WARN_EVERY: Duration = Duration::from_secs(10);
/// How often the server-wide checks run while there is something to check
/// (blocked output, 503'd sockets to drain, a paused accept).
const TICK: Duration = Duration::from_millis(100);
/// How often the service's own timers run.
const SERVICE_TICK: Duration = Duration::from_secs(1);
/// The loop's one read buffer; idle connections own no input buffer.
const READ_BUFFER: usize = 64 * 1024;
/// Bytes one connection may read per loop turn before others get a turn.
const READ_BUDGET: usize = 4 * READ_BUFFER;
/// Connections flushed per loop turn. A turn that finds more dirty ones
/// polls for input (without waiting) before going on, so messages that
/// arrive during a long flush join the buffers not yet written: lower
/// latency for the late ones and more frames per write. 64 rather than 512:
/// at 1 000 clients and 1M frames/s it cut p99 from 4.3-6.5 ms to 3.0-4.7 ms
/// and p50 from 2.3 to 1.6 ms for one extra `epoll_wait` per 64 writes
/// (docs/benchmarks.md, "Flush chunk").
const FLUSH_CHUNK: usize = 64;
/// Complete messages one connection may have handled per loop turn.
const MESSAGE_BUDGET: u16 = 64;
/// A connection with less unsent output than this is never dropped for the
/// server-wide output budget: it is keeping up, whatever the others do.
/// Neither is one whose last write the kernel took whole: its backlog is
/// the server being behind (overload), not the peer failing to read.
const BUDGET_MIN_BACKLOG: usize = 64 * 1024;
/// Sockets refused with 503 that are drained before closing, at most.
const MAX_DOOR_REJECTS: usize = 1024;
/// How long a 503'd socket is drained so the response is not reset away.
const DOOR_LINGER: Duration = Duration::from_secs(1);

/// One slab entry: the engine's connection, the transport under it, and
/// the service's state of it.
#[derive(Debug)]
pub(crate) struct Slot<P> {
    conn: Connection,
    transport: Transport,
    addr: SocketAddr,
    app: Option<P>,
    /// The key of this slot's live deadline entry in the timer heap.
    timer_at: timers::Millis,
    /// On the loop's list of connections to flush this turn.
    dirty: bool,
    /// WRITABLE interest is registered (output the kernel refused).
    wants_write: bool,
    /// On the loop's list of connections with unread input.
    in_backlog: bool,
    /// Input is not read until the output backlog shrinks.
    read_paused: bool,
    /// A trim timer entry is pending.
    trim_armed: bool,
}

impl<P> Slot<P> {
    /// Bytes not yet taken by the kernel: the connection's output and what
    /// the transport holds.
    fn pending(&self) -> usize {
        self.conn
            .output()
            .len()
            .saturating_add(self.transport.pending_bytes())
    }

    /// Writes queued output until done or the socket would block; returns
    /// the bytes the transport took.
    fn write_out(&mut self) -> io::Result<usize> {
        let mut written = 0;
        let result = loop {
            let Some(rest) = self.conn.output().get(written..) else {
                break Ok(());
            };
            if rest.is_empty() {
                break Ok(());
            }
            match self.transport.write(rest) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => written += n,
                Err(e) if would_block(&e) => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // One shift of the buffer per flush, not one per partial write.
        self.conn.consumed(written);
        result?;
        self.transport.flush_pending()?;
        Ok(written)
    }
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
pub struct Server<S: Service = Wschat> {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    config: Config,
    limits: Limits,
    conns: Slab<Slot<S::Peer>>,
    service: S,
    metrics: Metrics,
    timers: Timers,
    /// Connections with output queued this turn.
    dirty: VecDeque<usize>,
    /// Connections that stopped reading on their budget, not on `WouldBlock`.
    backlog: Vec<usize>,
    /// Input read but not yet handled because the message budget ran out;
    /// only connections that flood have one.
    stashes: HashMap<usize, Vec<u8>>,
    /// Connections found over `--max-output-bytes` while queueing.
    slow: Vec<usize>,
    /// Closes the service asked for.
    closes: Vec<(usize, CloseCode, String)>,
    /// Connections whose output the kernel refused (WRITABLE registered).
    blocked: usize,
    read_buffer: Vec<u8>,
    /// Lent to each new WebSocket for its greeting (see `greet`).
    spare_output: Vec<u8>,
    /// Sockets answered 503 at the door, drained until EOF or their deadline.
    door_rejects: VecDeque<(TcpStream, Instant)>,
    shutdown_requested: Arc<AtomicBool>,
    waker: Arc<Waker>,
    signals: Option<UnixStream>,
    /// The read end SIGHUP writes to.
    reload_signals: Option<UnixStream>,
    /// The certificate and key when the port speaks TLS (section 10).
    tls: Option<TlsSettings>,
    /// Set once shutdown began: when `run` gives up waiting.
    shutdown_deadline: Option<Instant>,
    /// `accept` failed for lack of descriptors; retried every tick.
    accept_paused: bool,
    /// When the last "out of descriptors" warning was logged (one a burst).
    accept_warned: Option<Instant>,
    accept_failures: u64,
    fd_capacity: u64,
    /// The time of the current loop turn.
    now: Instant,
    next_check: Instant,
    next_service_tick: Instant,
}

impl Server<Wschat> {
    /// Binds the listening socket (port 0 picks a free one) and prepares
    /// the loop with the chat service.
    pub fn bind(config: Config) -> io::Result<Server<Wschat>> {
        let service = Wschat::new(&config);
        let mut server = Server::bind_service(config, service)?;
        let waker = server.waker();
        server.service.start_cluster(&server.config, waker);
        Ok(server)
    }

    /// With `--console`: starts reading standard input on its own thread,
    /// which wakes the loop (PROTOCOL section 11). Without it, nothing.
    pub fn start_console(&mut self) -> io::Result<()> {
        if self.config.console {
            let console = Console::stdin(self.config.max_chat_chars, self.waker())?;
            self.service.attach_console(console);
        }
        Ok(())
    }
}

impl<S: Service> Server<S> {
    /// Binds the listening socket and prepares the loop for `service`.
    pub fn bind_service(config: Config, service: S) -> io::Result<Server<S>> {
        let addr = resolve(&config.host, config.port)?;
        let mut listener = if config.reuse_port {
            listen_reuse_port(addr)?
        } else {
            TcpListener::bind(addr)?
        };
        // mio listens with a backlog of 128; a crowd connecting at once
        // overflows that in a millisecond and waits a second for the SYN
        // retry. Listening again raises it (the kernel caps it at somaxconn).
        rustix::net::listen(&listener, LISTEN_BACKLOG)?;
        let local_addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let limits = Limits {
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            close_timeout: config.close_timeout,
            max_message_bytes: config.max_message_bytes,
        };
        let now = Instant::now();
        let max_connections = config.max_connections;
        Ok(Server {
            poll,
            listener: Some(listener),
            local_addr,
            config,
            limits,
            conns: Slab::new(),
            service,
            metrics: Metrics::default(),
            timers: Timers::new(now, max_connections),
            dirty: VecDeque::new(),
            backlog: Vec::new(),
            stashes: HashMap::new(),
            slow: Vec::new(),
            closes: Vec::new(),
            blocked: 0,
            read_buffer: vec![0; READ_BUFFER],
            spare_output: Vec::with_capacity(4096),
            door_rejects: VecDeque::new(),
            shutdown_requested: Arc::new(AtomicBool::new(false)),
            waker,
            signals: None,
            reload_signals: None,
            tls: None,
            shutdown_deadline: None,
            accept_paused: false,
            accept_warned: None,
            accept_failures: 0,
            fd_capacity: current_fd_limit(),
            now,
            next_check: now + TICK,
            next_service_tick: now + SERVICE_TICK,
        })
    }

    /// Makes the port speak TLS with these files (loaded by the caller,
    /// which turns a load error into exit status 2).
    pub fn use_tls(&mut self, settings: TlsSettings) {
        self.tls = Some(settings);
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many file descriptors the process may open.
    pub fn fd_capacity(&self) -> u64 {
        self.fd_capacity
    }

    /// The loop's waker, for threads that hand work to the service.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// A handle that stops `run` gracefully from another thread.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle {
            requested: Arc::clone(&self.shutdown_requested),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Runs the loop until a shutdown completes.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = if self.backlog.is_empty() && self.dirty.is_empty() {
                self.next_wakeup().saturating_duration_since(Instant::now())
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
                    slot.in_backlog = false;
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
                        self.with_service(|service, room| service.on_wake(room));
                        self.settle();
                    }
                    SIGNALS => {
                        if self.drain_signals() {
                            info!("second signal during shutdown: exiting now");
                            return Ok(());
                        }
                    }
                    RELOAD => self.reload_tls(),
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
            self.run_timers();
            self.periodic_checks();
            self.flush_dirty(FLUSH_CHUNK);
            if let Some(deadline) = self.shutdown_deadline
                && (self.conns.is_empty() || self.now >= deadline)
            {
                info!(
                    "shutdown complete ({} connection(s) did not answer in time)",
                    self.conns.len()
                );
                // One second past the close wait, so SIGTERM to exit stays
                // within --shutdown-timeout + 1 s.
                let until = deadline.max(self.now) + Duration::from_secs(1);
                self.with_service(|service, room| service.on_stop(room, until));
                return Ok(());
            }
        }
    }

    /// When the loop must wake even if no socket is ready.
    fn next_wakeup(&self) -> Instant {
        let mut at = self.next_service_tick;
        if let Some(timer) = self.timers.next() {
            at = at.min(timer);
        }
        if self.needs_checks() {
            at = at.min(self.next_check);
        }
        if let Some(deadline) = self.shutdown_deadline {
            at = at.min(deadline);
        }
        at
    }

    /// Whether the server-wide checks have anything to look at: while
    /// idle they cost nothing.
    fn needs_checks(&self) -> bool {
        self.blocked > 0 || !self.door_rejects.is_empty() || self.accept_paused
    }

    fn periodic_checks(&mut self) {
        if self.now >= self.next_check {
            self.next_check = self.now + TICK;
            if self.blocked > 0 {
                self.enforce_output_budget();
            }
            self.drain_door_rejects();
            if self.accept_paused {
                self.accept_all();
            }
        }
        if self.now >= self.next_service_tick {
            self.next_service_tick = self.now + SERVICE_TICK;
            self.with_service(|service, room| service.on_tick(room));
            self.settle();
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
                    // the periodic check retries, so there is no busy loop.
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

    fn admit(&mut self, mut socket: TcpStream, addr: SocketAddr) {
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
            warn!("cannot register connection from {addr}: {e}");
            return;
        }
        let transport = match &self.tls {
            None => Transport::Plain(socket),
            Some(tls) => match TlsTransport::new(socket, tls.config()) {
                Ok(tls) => Transport::Tls(Box::new(tls)),
                Err(e) => {
                    warn!("cannot start TLS for {addr}: {e}");
                    return;
                }
            },
        };
        debug!("accepted {addr}");
        entry.insert(Slot {
            conn: Connection::new(self.now, &self.limits),
            transport,
            addr,
            app: None,
            timer_at: timers::NONE,
            dirty: false,
            wants_write: false,
            in_backlog: false,
            read_paused: false,
            trim_armed: false,
        });
        self.schedule(t);
    }

    // ----- shutdown --------------------------------------------------------

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
        let deadline = self.now + self.config.shutdown_timeout;
        self.shutdown_deadline = Some(deadline);
        // Every WebSocket is closed before any leaves the service: nobody
        // is sent a `leave` between their peers' and their own close frame.
        let slots: Vec<usize> = self.conns.iter().map(|(t, _)| t).collect();
        let mut leaving = Vec::new();
        for &t in &slots {
            let Some(slot) = self.conns.get_mut(t) else {
                continue;
            };
            if slot
                .conn
                .close(CloseCode::GOING_AWAY, "server shutting down", deadline)
            {
                self.metrics.close_sent(CloseCode::GOING_AWAY.0);
                self.mark_dirty(t);
                self.schedule(t);
                leaving.push(t);
            } else if !matches!(slot.conn.state(), crate::engine::connection::State::Closing) {
                self.drop_connection(t, "server shutting down");
            }
        }
        for t in leaving {
            self.leave(t);
        }
        self.settle();
        self.door_rejects.clear();
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

#[cfg(test)]
mod tests {
    /// An idle connection costs its slab entry plus a name: keep the entry
    /// small (issue 5 asks for a few hundred bytes a connection).
    #[test]
    fn a_slab_entry_stays_small() {
        let size = std::mem::size_of::<super::Slot<crate::app::Peer>>();
        eprintln!("Slot is {size} bytes");
        assert!(size <= 360, "Slot grew to {size} bytes");
    }
}
