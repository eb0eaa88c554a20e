//! TLS as a transport: a `rustls` server session beside a non-blocking socket
//! (PROTOCOL section 10), plus the certificate/key settings it is built from.
//!
//! The session is sans-IO: on readable the transport moves ciphertext from
//! the socket into rustls (`read_tls`, `process_new_packets`) and hands out
//! plaintext; to send, plaintext is *staged* here and encrypted only when the
//! loop calls [`TlsTransport::flush_pending`] (or when a full record's worth
//! has been staged). That is what turns one loop turn's frames into as few
//! TLS records as possible instead of one record per frame: rustls turns each
//! `writer().write` call into at least one record.
//!
//! Output accounting ([`TlsTransport::pending_bytes`]) is exact: rustls'
//! outgoing records are drained at once into a buffer this type owns, so
//! "inside the transport" is the staged plaintext plus the encrypted bytes the
//! kernel has not taken yet. rustls itself holds no outgoing bytes between
//! calls (its own buffer limit is set as a safety net, see [`INSIDE_LIMIT`]).

use std::fmt;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ServerConnection;
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, crypto::CryptoProvider};

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
    /// ALPN without `http/1.1`, ...). The alert, if any, is already queued;
    /// the caller closes without an HTTP response.
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

/// One TLS server connection: a socket and its rustls session.
pub struct TlsTransport {
    socket: TcpStream,
    session: ServerConnection,
    mode: Mode,
    /// Plaintext taken by `write`, not yet encrypted: encrypting at flush
    /// time is what coalesces frames into records.
    staged: Vec<u8>,
    /// Ciphertext (or, in `NotTls` mode, the plain 400) not yet taken by
    /// the kernel; `out[out_sent..]` is what is left.
    out: Vec<u8>,
    out_sent: usize,
    /// `shutdown_write` was called: the FIN follows the last byte of `out`.
    fin_wanted: bool,
    fin_sent: bool,
    /// The peer's EOF (or close_notify) has been seen: `read` returns 0.
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
        let mut session = ServerConnection::new(config)
            .map_err(|err| io::Error::other(format!("TLS session: {err}")))?;
        // Safety net only: `flush_pending` drains rustls' outgoing records
        // at once, so this limit is never the one that bites.
        session.set_buffer_limit(Some(INSIDE_LIMIT));
        Ok(TlsTransport {
            socket,
            session,
            mode: Mode::Unchecked,
            staged: Vec::new(),
            out: Vec::new(),
            out_sent: 0,
            fin_wanted: false,
            fin_sent: false,
            peer_eof: false,
            received: false,
            failed: false,
        })
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
    /// close. During the handshake this also queues rustls' answers and
    /// tries to send them; if the kernel does not take them all,
    /// `wants_write()` says so.
    ///
    /// After a failure was reported, `read` drains the socket (the bytes are
    /// not plaintext; the caller discards them while its refusal goes out),
    /// so that the close is a FIN and not a reset that could destroy the
    /// 400 or the alert in flight.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
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
            match self.session.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
                // TCP EOF without close_notify: an EOF all the same to the
                // loop (a truncation attack cannot hurt a chat line that was
                // never completed).
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(err) => return Err(err),
            }
            if self.peer_eof {
                return Ok(0);
            }
            match self.session.read_tls(&mut self.socket) {
                Ok(0) => self.peer_eof = true,
                Ok(_) => self.received = true,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
            if let Err(err) = self.session.process_new_packets() {
                // rustls has queued the alert that explains the refusal.
                self.drain_session();
                let _ = self.send_out();
                self.failed = true;
                return Err(TlsFailure::Rejected(err).into_io());
            }
            if self.session.wants_write() {
                self.drain_session();
                self.send_out()?;
            }
        }
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
            self.out.extend_from_slice(taken);
        } else {
            self.staged.extend_from_slice(taken);
            if self.staged.len() >= MAX_RECORD_PLAINTEXT {
                // Full records are ready: no point waiting for the flush.
                // The remainder waits, so it can still fill a record.
                let whole = self.staged.len() - self.staged.len() % MAX_RECORD_PLAINTEXT;
                self.encrypt_staged(whole);
            }
        }
        Ok(take)
    }

    /// Encrypts what was staged and pushes everything the transport holds
    /// to the kernel. `Ok(true)` when nothing is left inside (and, after
    /// `shutdown_write`, the FIN has been sent); `Ok(false)` when the kernel
    /// would block (register for writable).
    pub fn flush_pending(&mut self) -> io::Result<bool> {
        self.encrypt_staged(self.staged.len());
        self.drain_session();
        if !self.send_out()? {
            return Ok(false);
        }
        if !self.staged.is_empty() {
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
        self.staged
            .len()
            .saturating_add(self.out.len().saturating_sub(self.out_sent))
    }

    /// Ends the sending side: queues close_notify after everything written
    /// so far; the TCP FIN follows once `flush_pending` has pushed the last
    /// byte (call it until it returns `Ok(true)`). Does not flush by
    /// itself. Never call it for a connection dropped without a close
    /// handshake (PROTOCOL section 10): just drop the transport.
    pub fn shutdown_write(&mut self) {
        if self.fin_wanted {
            return;
        }
        self.fin_wanted = true;
        if self.mode == Mode::Tls && !self.failed {
            self.encrypt_staged(self.staged.len());
            self.session.send_close_notify();
            self.drain_session();
        }
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
        self.pending_bytes() > 0
            || self.session.wants_write()
            || (self.fin_wanted && !self.fin_sent)
    }

    /// Gives back the transport's own buffers when they are empty, for
    /// connections that go idle. rustls shrinks its receive buffer by itself
    /// once no partial record is in it; its session state (keys, a few
    /// hundred bytes) stays.
    pub fn trim_idle(&mut self) {
        if self.staged.is_empty() {
            self.staged = Vec::new();
        }
        if self.out_sent >= self.out.len() {
            self.out = Vec::new();
            self.out_sent = 0;
        }
    }

    /// Whether this transport's own buffers hold memory (for the loop's
    /// decision to arm a trim timer).
    pub fn holds_buffers(&self) -> bool {
        self.staged.capacity() > 0 || self.out.capacity() > 0
    }

    /// Moves the first `len` staged bytes into rustls once the keys exist;
    /// in one `write` call, so rustls cuts them into full records, not one
    /// per frame.
    fn encrypt_staged(&mut self, len: usize) {
        if self.mode != Mode::Tls || self.session.is_handshaking() || self.staged.is_empty() {
            return;
        }
        let len = len.min(self.staged.len());
        let mut start = 0;
        while start < len {
            let rest = self.staged.get(start..len).unwrap_or_default();
            match self.session.writer().write(rest) {
                Ok(0) | Err(_) => {
                    // rustls' own limit: move its records out and go on.
                    if !self.drain_session() {
                        break;
                    }
                }
                Ok(n) => {
                    start += n;
                    self.drain_session();
                }
            }
        }
        self.staged.drain(..start.min(len));
    }

    /// Moves every record rustls has queued into `out`; true if any moved.
    fn drain_session(&mut self) -> bool {
        let mut moved = false;
        while self.session.wants_write() {
            if self.out_sent > 0 && self.out_sent >= self.out.len() {
                self.out.clear();
                self.out_sent = 0;
            }
            match self.session.write_tls(&mut self.out) {
                Ok(0) | Err(_) => break,
                Ok(_) => moved = true,
            }
        }
        moved
    }

    /// Writes `out` to the socket; true when all of it went.
    fn send_out(&mut self) -> io::Result<bool> {
        while self.out_sent < self.out.len() {
            let rest = self.out.get(self.out_sent..).unwrap_or_default();
            match self.socket.write(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_sent += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err),
            }
        }
        self.out.clear();
        self.out_sent = 0;
        Ok(true)
    }
}

/// The crypto provider: ring (see README for why not aws-lc-rs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate and key files and the server config built from them;
/// reloaded on SIGHUP.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    cert_path: PathBuf,
    key_path: PathBuf,
    config: Arc<ServerConfig>,
}

impl TlsSettings {
    /// Reads and checks `--tls-cert` and `--tls-key`. The error is one line
    /// naming the flag and the file (the caller prints it and exits 2).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsSettings, String> {
        let config = build_config(cert_path, key_path)?;
        Ok(TlsSettings {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            config,
        })
    }

    /// The config for a new connection ([`TlsTransport::new`]).
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// Reads both files again (SIGHUP). On success later connections use
    /// the new pair; on error nothing changes. Open connections hold their
    /// own `Arc` and are never touched.
    pub fn reload(&mut self) -> Result<(), String> {
        self.config = build_config(&self.cert_path, &self.key_path)?;
        Ok(())
    }

    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    pub fn key_path(&self) -> &Path {
        &self.key_path
    }
}

fn build_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let provider = provider();
    let signing_key = provider.key_provider.load_private_key(key).map_err(|err| {
        format!(
            "--tls-key {}: unusable private key: {err}",
            key_path.display()
        )
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        // The provider cannot tell for this key type; rustls accepts that.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(err) => {
            return Err(format!(
                "--tls-key {}: does not match the certificate in {}: {err}",
                key_path.display(),
                cert_path.display()
            ));
        }
    }
    let resolver = Arc::new(rustls::sign::SingleCertAndKey::from(certified));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|err| format!("TLS configuration: {err}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    // rustls refuses (alert no_application_protocol) a client whose ALPN
    // list lacks every protocol here, as PROTOCOL section 10 asks.
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("{flag} {}: {err}", path.display()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file("--tls-cert", path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| format!("--tls-cert {}: bad PEM: {err}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no PEM certificate in the file",
            path.display()
        ));
    }
    // Parse the end-entity certificate now, so a corrupt one fails at start
    // and not at the first handshake.
    if let Some(first) = certs.first() {
        rustls::server::ParsedCertificate::try_from(first)
            .map_err(|err| format!("--tls-cert {}: invalid certificate: {err}", path.display()))?;
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file("--tls-key", path)?;
    // PKCS#8, PKCS#1 (RSA) and SEC1 (EC) sections are all accepted.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|err| {
        format!(
            "--tls-key {}: no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {err}",
            path.display()
        )
    })
}
