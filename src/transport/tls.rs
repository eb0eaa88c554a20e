//! TLS as a transport: a rustls server session beside a non-blocking socket
//! (PROTOCOL section 10). The certificate and key it is built from live in
//! `settings.rs`; one pass over the rustls session is in `session.rs`, the
//! connection's buffers and the thread's scratch pair in `buffers.rs`.
//!
//! The session is rustls' *unbuffered* API: rustls keeps only its session
//! state (keys) and this module owns every buffer. Ciphertext is read into,
//! and records are encrypted into, one scratch pair per thread; a
//! connection keeps only what cannot be finished at once (a partial record,
//! bytes the kernel did not take, plaintext not yet handed out) and gives
//! those buffers back as soon as they are empty. So an idle wss connection
//! holds its session and nothing else, and a handshake leaves no buffer
//! behind to fragment the heap; rustls' buffered API keeps a 4 KiB receive
//! buffer per connection for its whole life.
//!
//! Sending: plaintext is *staged* here and encrypted when the loop calls
//! [`TlsTransport::flush_pending`] (or once a full record's worth is
//! staged), in one `encrypt` call, so one loop turn's frames become as few
//! TLS records as possible instead of one record per frame.
//!
//! Receiving: every complete record read is processed at once; decrypted
//! plaintext waits in a queue that [`TlsTransport::read`] empties before it
//! reads the socket again. Nothing else adds plaintext, so the loop's
//! read-until-`WouldBlock` never leaves any behind.
//!
//! Output accounting ([`TlsTransport::pending_bytes`]) is exact: staged
//! plaintext plus encrypted bytes the kernel has not taken yet.

mod buffers;
mod session;
mod settings;

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;

use buffers::{Buffers, NO_BUFFERS, Scratch, with_scratch};
pub use settings::TlsSettings;

/// The first byte of every TLS connection: a handshake record (RFC 8446
/// section 5.1, `ContentType.handshake`).
pub const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// The only ALPN protocol offered: everything inside the TLS stream is
/// HTTP/1.1 and WebSocket (PROTOCOL section 10).
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// The most plaintext plus ciphertext one connection keeps inside the
/// transport. `write` takes no more once this is reached, so the
/// connection's own output buffer (counted against `--max-output-bytes`)
/// is where a slow reader's backlog grows. Four full records: enough to
/// keep the kernel busy, small against the default 1 MiB output budget.
pub const INSIDE_LIMIT: usize = 4 * MAX_RECORD_PLAINTEXT;

/// Plaintext in one TLS record (RFC 8446 section 5.1: 2^14). Staging this
/// much is worth encrypting at once without waiting for the flush.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// The unencrypted answer to a client that speaks plain HTTP to the TLS port
/// (PROTOCOL section 10).
pub const NOT_TLS_RESPONSE: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
Content-Type: text/plain\r\n\
Content-Length: 62\r\n\
Connection: close\r\n\
\r\n\
This port speaks TLS: use https:// or wss:// to connect here.\n";

/// Why a TLS connection failed; carried inside the `io::Error` that
/// [`TlsTransport::read`] returns (see [`TlsFailure::of`]). Both count as
/// `rejected_total{reason="tls"}`.
#[derive(Debug)]
pub enum TlsFailure {
    /// The first byte was not a TLS handshake record: the caller writes
    /// [`NOT_TLS_RESPONSE`] through this transport (which then sends it
    /// unencrypted) and closes.
    NotTls,
    /// rustls refused the peer (garbage, bad ClientHello, no common version,
    /// ALPN without `http/1.1`, ...). The alert, if any, is already sent or
    /// pending; the caller flushes and closes without an HTTP response.
    Rejected(rustls::Error),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::NotTls => f.write_str("not a TLS handshake (plain text on the TLS port)"),
            TlsFailure::Rejected(err) => write!(f, "TLS error: {err}"),
        }
    }
}

impl std::error::Error for TlsFailure {}

impl TlsFailure {
    /// The TLS failure inside an error from [`TlsTransport::read`], if it
    /// is one (other errors are plain socket errors).
    pub fn of(err: &io::Error) -> Option<&TlsFailure> {
        err.get_ref()?.downcast_ref::<TlsFailure>()
    }

    fn into_io(self) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, self)
    }
}

/// Where the connection stands with respect to the first-byte check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Nothing read yet: the first byte decides.
    Unchecked,
    /// TLS: everything goes through rustls.
    Tls,
    /// Plain text on the TLS port: `write` passes bytes through unencrypted
    /// so that the 400 can be sent; `read` yields nothing more.
    NotTls,
}

/// Ciphertext read from the socket at a time: one full record (2^14
/// plaintext plus the largest overhead rustls accepts).
const READ_CHUNK: usize = MAX_RECORD_PLAINTEXT + 2048 + 5;

/// The most unprocessed ciphertext held: a handshake message may span
/// records up to 64 KiB (rustls' own cap), plus one record. A peer that
/// fills this without completing anything is refused.
const INCOMING_LIMIT: usize = 0xffff + READ_CHUNK;

/// One TLS server connection: a socket, its rustls session and the buffers
/// the session reads from and writes into.
pub struct TlsTransport {
    socket: TcpStream,
    session: UnbufferedServerConnection,
    mode: Mode,
    /// The connection's own buffers, only while something is in them:
    /// dropped as soon as they are empty (at the end of `read` and
    /// `flush_pending`).
    buffers: Option<Box<Buffers>>,
    /// `shutdown_write` was called: close_notify follows the staged bytes,
    /// and the FIN follows the last byte of `out`.
    fin_wanted: bool,
    close_notify_sent: bool,
    fin_sent: bool,
    /// The peer's TCP EOF, or its close_notify, has been seen: `read`
    /// returns 0 once the plaintext before it is handed out.
    peer_eof: bool,
    /// Some ciphertext arrived: an EOF now abandons a started handshake.
    received: bool,
    /// A [`TlsFailure`] was reported: from now on `read` only drains the
    /// socket and `shutdown_write` sends no close_notify.
    failed: bool,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("mode", &self.mode)
            .field("handshaking", &self.session.is_handshaking())
            .field("pending_bytes", &self.pending_bytes())
            .finish()
    }
}

impl TlsTransport {
    /// Wraps an accepted socket with a new session using `config` (taken
    /// from [`TlsSettings::config`] at accept time, so that a reload only
    /// affects later connections).
    pub fn new(socket: TcpStream, config: Arc<ServerConfig>) -> io::Result<TlsTransport> {
        let session = UnbufferedServerConnection::new(config)
            .map_err(|err| io::Error::other(format!("TLS session: {err}")))?;
        Ok(TlsTransport {
            socket,
            session,
            mode: Mode::Unchecked,
            buffers: None,
            fin_wanted: false,
            close_notify_sent: false,
            fin_sent: false,
            peer_eof: false,
            received: false,
            failed: false,
        })
    }

    /// The connection's buffers, made when first needed.
    fn bufs(&mut self) -> &mut Buffers {
        self.buffers.get_or_insert_with(Box::default)
    }

    /// The connection's buffers, or empty ones, for looking.
    fn view(&self) -> &Buffers {
        self.buffers.as_deref().unwrap_or(&NO_BUFFERS)
    }

    /// The socket, for `mio` registration.
    pub fn socket(&mut self) -> &mut TcpStream {
        &mut self.socket
    }

    /// The socket, for socket options.
    pub fn socket_ref(&self) -> &TcpStream {
        &self.socket
    }

    /// True until the TLS handshake has completed (the handshake timeout
    /// covers this and the request head together).
    pub fn is_handshaking(&self) -> bool {
        self.mode != Mode::Tls || self.session.is_handshaking()
    }

    /// The ALPN protocol agreed on, if the client offered ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session.alpn_protocol()
    }

    /// The TLS version agreed on, once the handshake is far enough.
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.session.protocol_version()
    }

    /// Reads plaintext into `buf`. `WouldBlock` when nothing is available,
    /// `Ok(0)` at the peer's EOF (close_notify or TCP FIN). Errors carrying a
    /// [`TlsFailure`] reject the connection; the caller must then call
    /// `flush_pending` (the alert, or the 400 it writes for `NotTls`) and
    /// close. During the handshake this also answers the client and tries
    /// to send the answer; what the kernel does not take is pending.
    ///
    /// After a failure was reported, `read` drains the socket (the bytes are
    /// not plaintext; the caller discards them while its refusal goes out),
    /// so that the close is a FIN and not a reset that could destroy the
    /// 400 or the alert in flight.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let result = self.read_plaintext(buf);
        self.drop_empty_buffers();
        result
    }

    fn read_plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return self.socket.read(buf);
        }
        if self.mode == Mode::Unchecked {
            self.check_first_byte()?;
        }
        if self.mode == Mode::NotTls {
            self.failed = true;
            return Err(TlsFailure::NotTls.into_io());
        }
        loop {
            if !self.view().plaintext_in.is_empty() {
                let plaintext = &mut self.bufs().plaintext_in;
                let n = buf.len().min(plaintext.len());
                if let (Some(target), Some(source)) = (buf.get_mut(..n), plaintext.bytes().get(..n))
                {
                    target.copy_from_slice(source);
                }
                plaintext.consume(n);
                plaintext.release_if_empty();
                return Ok(n);
            }
            if self.peer_eof {
                return Ok(0);
            }
            with_scratch(|scratch| self.receive(scratch))?;
        }
    }

    /// Reads ciphertext once and processes it: decrypted plaintext goes to
    /// `plaintext_in`, handshake answers to the socket.
    fn receive(&mut self, scratch: &mut Scratch) -> io::Result<()> {
        if self.view().incoming.len() >= INCOMING_LIMIT {
            let refusal = rustls::Error::General("message buffer full".into());
            self.failed = true;
            return Err(TlsFailure::Rejected(refusal).into_io());
        }
        scratch.incoming.consume(usize::MAX);
        match self.socket.read(scratch.incoming.room(READ_CHUNK)) {
            // TCP EOF without close_notify: an EOF all the same to the
            // loop (a truncation attack cannot hurt a chat line that was
            // never completed).
            Ok(0) => self.peer_eof = true,
            Ok(n) => {
                scratch.incoming.commit(n);
                self.received = true;
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(err) => return Err(err),
        }
        // Usually nothing is left over from the last read, and the records
        // are processed where they were read.
        let from_scratch = self.view().incoming.is_empty();
        let mut input = if from_scratch {
            std::mem::take(&mut scratch.incoming)
        } else {
            let own = &mut self.bufs().incoming;
            own.extend(scratch.incoming.bytes());
            std::mem::take(own)
        };
        scratch.out.consume(usize::MAX);
        let processed = self.process(&mut input, &mut scratch.out, 0);
        if let Err(err) = processed {
            // rustls has queued the alert that explains the refusal.
            self.encode_alerts(&mut input, &mut scratch.out);
            let _ = self.push_out(scratch.out.bytes());
            self.failed = true;
            if from_scratch {
                input.consume(usize::MAX);
                scratch.incoming = input;
            }
            return Err(TlsFailure::Rejected(err).into_io());
        }
        if from_scratch {
            if !input.is_empty() {
                self.bufs().incoming.extend(input.bytes());
                input.consume(usize::MAX);
            }
            scratch.incoming = input;
        } else {
            input.release_if_empty();
            self.bufs().incoming = input;
        }
        self.push_out(scratch.out.bytes())
    }

    /// Peeks at the first byte without consuming it, so that rustls still
    /// sees the whole ClientHello.
    fn check_first_byte(&mut self) -> io::Result<()> {
        let mut first = [0u8; 1];
        let n = self.socket.peek(&mut first)?;
        if n == 0 {
            // EOF before anything: nothing to reject, the read says EOF.
            self.mode = Mode::Tls;
            self.peer_eof = true;
            return Ok(());
        }
        self.mode = if first[0] == TLS_HANDSHAKE_RECORD {
            Mode::Tls
        } else {
            Mode::NotTls
        };
        Ok(())
    }

    /// Takes plaintext to send; returns how much was taken (`WouldBlock` if
    /// none: the transport already holds [`INSIDE_LIMIT`] bytes and the
    /// kernel takes no more). The bytes are encrypted by `flush_pending`, so
    /// call it once the turn's output has been written. In the plain-text
    /// (`NotTls`) case the bytes go out unencrypted.
    pub fn write(&mut self, plaintext: &[u8]) -> io::Result<usize> {
        if plaintext.is_empty() {
            return Ok(0);
        }
        if self.pending_bytes() >= INSIDE_LIMIT {
            self.flush_pending()?;
        }
        let room = INSIDE_LIMIT.saturating_sub(self.pending_bytes());
        if room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let take = plaintext.len().min(room);
        let taken = plaintext.get(..take).unwrap_or_default();
        if self.mode == Mode::NotTls {
            self.bufs().out.extend(taken);
        } else {
            let staged = &mut self.bufs().staged;
            staged.extend(taken);
            if staged.len() >= MAX_RECORD_PLAINTEXT {
                // Full records are ready: no point waiting for the flush.
                // The remainder waits, so it can still fill a record.
                let whole = staged.len() - staged.len() % MAX_RECORD_PLAINTEXT;
                self.encrypt(whole)?;
            }
        }
        Ok(take)
    }

    /// Encrypts what was staged and pushes everything the transport holds
    /// to the kernel. `Ok(true)` when nothing is left inside (and, after
    /// `shutdown_write`, the FIN has been sent); `Ok(false)` when the kernel
    /// would block (register for writable).
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        let result = self.flush_all();
        self.drop_empty_buffers();
        result
    }

    fn flush_all(&mut self) -> io::Result<bool> {
        self.encrypt(self.view().staged.len())?;
        if !self.send_out()? {
            return Ok(false);
        }
        if !self.view().staged.is_empty() {
            // Still handshaking: the plaintext waits for the keys.
            return Ok(false);
        }
        if self.fin_wanted && !self.fin_sent {
            self.fin_sent = true;
            match self.socket.shutdown(Shutdown::Write) {
                Ok(()) => {}
                // The peer may already be gone; the FIN is moot then.
                Err(err) if err.kind() == io::ErrorKind::NotConnected => {}
                Err(err) => return Err(err),
            }
        }
        Ok(true)
    }

    /// Bytes inside the transport the kernel has not taken: staged
    /// plaintext plus encrypted (or plain 400) bytes not yet written. The
    /// ~22-byte record overhead of staged plaintext is not counted until
    /// it is encrypted.
    pub fn pending_bytes(&self) -> usize {
        let buffers = self.view();
        buffers.staged.len().saturating_add(buffers.out.len())
    }

    /// Ends the sending side: encrypts everything written so far and
    /// close_notify behind it, handing to the kernel what it takes; the TCP
    /// FIN follows once `flush_pending` has pushed the last byte (call it
    /// until it returns `Ok(true)`). Never call it for a connection dropped
    /// without a close handshake (PROTOCOL section 10): just drop the
    /// transport.
    pub fn shutdown_write(&mut self) {
        if self.fin_wanted {
            return;
        }
        self.fin_wanted = true;
        // An error here leaves close_notify unsent; the FIN still follows.
        let _ = self.encrypt(self.view().staged.len());
    }

    /// True when the peer sent part of a TLS handshake and the handshake
    /// never completed: at its EOF, a failed handshake (`reason="tls"`),
    /// unlike a connection that closes without sending anything.
    pub fn abandoned_handshake(&self) -> bool {
        !self.failed && self.mode == Mode::Tls && self.received && self.session.is_handshaking()
    }

    /// True when the loop should keep readable interest (after a failure
    /// too: the socket is drained until the peer's EOF).
    pub fn wants_read(&self) -> bool {
        !self.peer_eof
    }

    /// True when bytes are waiting for the kernel (register writable).
    pub fn wants_write(&self) -> bool {
        self.pending_bytes() > 0 || (self.fin_wanted && !self.fin_sent)
    }

    /// Gives back every buffer that is empty, for connections that go idle:
    /// afterwards an idle connection holds only rustls' session state (its
    /// keys).
    pub fn trim_idle(&mut self) {
        self.drop_empty_buffers();
    }

    /// Gives the buffers back as soon as nothing is in them: a box that
    /// outlived its call would leave a hole in the heap between the
    /// sessions made meanwhile.
    fn drop_empty_buffers(&mut self) {
        if self.view().are_empty() {
            self.buffers = None;
        }
    }

    /// Whether this transport's buffers hold memory (for the loop's
    /// decision to arm a trim timer).
    pub fn holds_buffers(&self) -> bool {
        self.buffers.is_some()
    }

    /// Encrypts the first `len` staged bytes once the keys exist (and, after
    /// `shutdown_write`, close_notify behind the last of them) and hands
    /// the records to the kernel.
    fn encrypt(&mut self, len: usize) -> io::Result<()> {
        let close_due = self.fin_wanted && !self.close_notify_sent;
        if self.mode != Mode::Tls || self.failed || (len == 0 && !close_due) {
            return Ok(());
        }
        with_scratch(|scratch| {
            scratch.out.consume(usize::MAX);
            let mut input = std::mem::take(&mut self.bufs().incoming);
            let processed = self.process(&mut input, &mut scratch.out, len);
            self.bufs().incoming = input;
            processed.map_err(|err| io::Error::other(format!("TLS: {err}")))?;
            self.bufs().staged.release_if_empty();
            self.push_out(scratch.out.bytes())
        })
    }

    /// Sends freshly made records: straight to the kernel when nothing is
    /// queued before them; what the kernel does not take is kept in `out`.
    fn push_out(&mut self, records: &[u8]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        if !self.view().out.is_empty() {
            self.bufs().out.extend(records);
            return self.send_out().map(|_| ());
        }
        let mut sent = 0;
        while let Some(rest) = records.get(sent..).filter(|rest| !rest.is_empty()) {
            match self.socket.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        if let Some(rest) = records.get(sent..).filter(|rest| !rest.is_empty()) {
            self.bufs().out.extend(rest);
        }
        Ok(())
    }

    /// Writes `out` to the socket; true when all of it went (and its memory
    /// is given back).
    fn send_out(&mut self) -> io::Result<bool> {
        let Some(buffers) = self.buffers.as_deref_mut() else {
            return Ok(true);
        };
        let out = &mut buffers.out;
        while !out.is_empty() {
            match self.socket.write(out.bytes()) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => out.consume(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        out.release_if_empty();
        Ok(true)
    }
}
