//! One client connection: a non-blocking socket, its state from TCP connect
//! through the opening handshake to close, and its buffers. The modes own a
//! `Vec<Conn>` indexed by `mio` token and feed it readiness events.

use crate::ws::{self, FrameError, HandshakeError, Rng};
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP connect in progress.
    Connecting,
    /// Request sent, waiting for `101`.
    Handshaking,
    Open,
    /// We sent a close frame and wait for the reply or EOF.
    Closing,
    Closed,
}

/// Why a connection ended (or failed to start).
#[derive(Debug)]
pub enum ConnError {
    Io(io::Error),
    Handshake(HandshakeError),
    Frame(FrameError),
    /// An opcode RFC 6455 reserves.
    Opcode(u8),
    /// A continuation frame with no message started, or a data frame inside one.
    Fragmentation,
    /// The server closed TCP without a close frame.
    Eof,
    /// The server sent a close frame; carries its code (1005 when absent).
    ClosedByServer(u16),
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => write!(f, "{e}"),
            ConnError::Handshake(e) => write!(f, "handshake: {e}"),
            ConnError::Frame(e) => write!(f, "frame: {e}"),
            ConnError::Opcode(op) => write!(f, "reserved opcode {op:#x}"),
            ConnError::Fragmentation => write!(f, "bad fragmentation"),
            ConnError::Eof => write!(f, "EOF without close frame"),
            ConnError::ClosedByServer(c) => write!(f, "closed by server with {c}"),
        }
    }
}

impl ConnError {
    /// A short fixed label to count errors by kind in reports.
    pub fn kind(&self) -> String {
        match self {
            ConnError::Io(e) => match e.raw_os_error() {
                Some(n) => format!("os error {n}"),
                None => format!("{:?}", e.kind()),
            },
            ConnError::Handshake(HandshakeError::Status(s)) => {
                format!("HTTP {}", s.split(' ').nth(1).unwrap_or("?"))
            }
            ConnError::ClosedByServer(c) => format!("close {c}"),
            other => other.to_string(),
        }
    }
}

/// What reading produced, handed to the mode's callback.
pub enum Incoming<'a> {
    /// The handshake completed.
    Open,
    /// A complete text (`OP_TEXT`) or binary message.
    Message(u8, &'a [u8]),
}

pub struct Conn {
    pub stream: TcpStream,
    pub state: State,
    /// The `Sec-WebSocket-Accept` the server must answer with.
    accept: String,
    /// The request, written once TCP connects.
    request: Vec<u8>,
    /// Received bytes not yet parsed (a partial frame or head).
    rbuf: Vec<u8>,
    /// Queued output and how much of it is already written: queued frames are
    /// never dropped, so a slow server shows as growing `pending_out`.
    wbuf: Vec<u8>,
    wpos: usize,
    /// A fragmented message being reassembled: its opcode and bytes so far.
    frag: Option<(u8, Vec<u8>)>,
    rng: Rng,
    /// The TLS session with `--tls`: `wbuf` holds plaintext, handed to it
    /// only once it has sent what it holds, so `pending_out` still shows a
    /// slow server.
    tls: Option<Box<rustls::ClientConnection>>,
}

impl Conn {
    /// Starts connecting to `dst`, from `src` when given, and registers the
    /// socket for reads and writes under `token` (edge-triggered).
    pub fn connect(
        registry: &Registry,
        token: Token,
        dst: SocketAddrV4,
        src: Option<Ipv4Addr>,
        path: &str,
        seed: u64,
        tls: Option<&Arc<rustls::ClientConfig>>,
    ) -> io::Result<Conn> {
        let tls = match tls {
            None => None,
            Some(config) => {
                let name = rustls::pki_types::ServerName::IpAddress((*dst.ip()).into());
                let session = rustls::ClientConnection::new(Arc::clone(config), name)
                    .map_err(io::Error::other)?;
                Some(Box::new(session))
            }
        };
        let mut stream = match src {
            None => TcpStream::connect(SocketAddr::V4(dst))?,
            Some(ip) => TcpStream::from_std(crate::sys::connect_from(ip, dst)?),
        };
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        let mut rng = Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        let key = ws::new_key(&mut rng);
        Ok(Conn {
            stream,
            state: State::Connecting,
            accept: ws::accept_for(&key),
            request: ws::handshake_request(&dst.to_string(), path, &key),
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            frag: None,
            rng,
            tls,
        })
    }

    /// Bytes queued but not yet accepted by the kernel.
    pub fn pending_out(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    pub fn is_open(&self) -> bool {
        self.state == State::Open
    }

    /// Queues one masked text frame (written by the next `flush`).
    pub fn queue_text(&mut self, payload: &[u8]) {
        let mask = self.rng.next_u64() as u32;
        ws::write_frame(&mut self.wbuf, ws::OP_TEXT, payload, mask);
    }

    /// Queues a close frame with `code` and waits for the server's reply.
    pub fn close(&mut self, code: u16) {
        if matches!(self.state, State::Open) {
            let mask = self.rng.next_u64() as u32;
            ws::write_frame(&mut self.wbuf, ws::OP_CLOSE, &code.to_be_bytes(), mask);
            self.state = State::Closing;
        }
    }

    /// Handles a writable event: completes the TCP connect, then writes.
    pub fn on_writable(&mut self) -> Result<(), ConnError> {
        if self.state == State::Connecting {
            if let Some(e) = self.stream.take_error().map_err(ConnError::Io)? {
                return Err(ConnError::Io(e));
            }
            match self.stream.peer_addr() {
                Ok(_) => {}
                // Not connected yet: a spurious wake-up.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(ConnError::Io(e)),
            }
            // Small frames at a fixed schedule: send each at once.
            let _ = self.stream.set_nodelay(true);
            let req = std::mem::take(&mut self.request);
            self.wbuf.splice(0..0, req);
            self.state = State::Handshaking;
        }
        self.flush()
    }

    /// Writes queued output until the kernel pushes back.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        if self.state == State::Connecting {
            return Ok(());
        }
        if self.tls.is_some() {
            self.flush_tls().map_err(ConnError::Io)?;
        }
        while self.tls.is_none() && self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => return Err(ConnError::Eof),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        if self.wpos == self.wbuf.len() {
            self.wbuf.clear();
            self.wpos = 0;
        } else if self.wpos > 64 * 1024 && self.wpos * 2 > self.wbuf.len() {
            self.wbuf.drain(..self.wpos);
            self.wpos = 0;
        }
        Ok(())
    }

    /// Sends what the TLS session holds; only then gives it the next part
    /// of `wbuf` (at most its buffer limit).
    fn flush_tls(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        loop {
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.wpos == self.wbuf.len() {
                return Ok(());
            }
            // Before the handshake ends this only buffers (the request);
            // a full buffer takes nothing and waits for the keys.
            let n = tls.writer().write(&self.wbuf[self.wpos..])?;
            if n == 0 {
                return Ok(());
            }
            self.wpos += n;
        }
    }

    /// Reads plaintext: from the socket, or through the TLS session (which
    /// answers the handshake on the way). `Ok(0)` is EOF.
    fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(tls) = self.tls.as_mut() else {
            return self.stream.read(buf);
        };
        loop {
            match tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            if tls.read_tls(&mut self.stream)? == 0 {
                return Ok(0);
            }
            tls.process_new_packets().map_err(io::Error::other)?;
            while tls.wants_write() {
                match tls.write_tls(&mut self.stream) {
                    Ok(_) => {}
                    // The WRITABLE edge finishes it (`flush`).
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }

    /// Handles a readable event: reads until the socket would block, hands
    /// every complete message to `on_msg`, answers pings and close frames.
    /// `Ok(())` while the connection lives; an error when it ended (a close we
    /// started and the server answered ends as `ClosedByServer`, too).
    pub fn on_readable<F: FnMut(Incoming<'_>)>(
        &mut self,
        scratch: &mut [u8],
        on_msg: F,
    ) -> Result<(), ConnError> {
        self.read_some(scratch, usize::MAX, on_msg).map(|_| ())
    }

    /// Like `on_readable`, but stops after about `budget` bytes so that one
    /// flooded connection cannot hold up the send schedule. `Ok(true)`: it
    /// stopped on the budget and more input may be waiting (no new edge
    /// will say so: the caller must come back).
    pub fn read_some<F: FnMut(Incoming<'_>)>(
        &mut self,
        scratch: &mut [u8],
        budget: usize,
        mut on_msg: F,
    ) -> Result<bool, ConnError> {
        if self.state == State::Connecting {
            return Ok(false);
        }
        let mut total = 0usize;
        loop {
            let n = match self.read_plain(scratch) {
                Ok(0) => return Err(ConnError::Eof),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ConnError::Io(e)),
            };
            let res = if self.rbuf.is_empty() {
                // The common case: parse straight from the read buffer and
                // keep only a trailing partial frame.
                let (used, res) = self.process(&scratch[..n], &mut on_msg);
                self.rbuf.extend_from_slice(&scratch[used..n]);
                res
            } else {
                self.rbuf.extend_from_slice(&scratch[..n]);
                let buf = std::mem::take(&mut self.rbuf);
                let (used, res) = self.process(&buf, &mut on_msg);
                self.rbuf = buf;
                self.rbuf.drain(..used);
                res
            };
            if let Err(e) = res {
                // Best effort: the close reply, if one was queued.
                let _ = self.flush();
                self.state = State::Closed;
                return Err(e);
            }
            // A short read emptied the receive queue: bytes arriving later
            // raise a new edge, so the read that would only say WouldBlock
            // is skipped. It halves the system calls when frames trickle in.
            // (Not with TLS: a record's worth of plaintext says nothing
            // about the socket.)
            if n < scratch.len() && self.tls.is_none() {
                break;
            }
            total += n;
            if total >= budget {
                self.flush()?;
                return Ok(true);
            }
        }
        self.flush().map(|()| false)
    }

    /// Parses as much of `data` as is complete; returns the bytes used.
    fn process<F: FnMut(Incoming<'_>)>(
        &mut self,
        data: &[u8],
        on_msg: &mut F,
    ) -> (usize, Result<(), ConnError>) {
        let mut pos = 0;
        if self.state == State::Handshaking {
            match ws::check_response(data, &self.accept) {
                Ok(None) => return (0, Ok(())),
                Ok(Some(n)) => {
                    pos = n;
                    self.state = State::Open;
                    on_msg(Incoming::Open);
                }
                Err(e) => return (0, Err(ConnError::Handshake(e))),
            }
        }
        loop {
            let h = match ws::parse_frame(&data[pos..]) {
                Ok(Some(h)) => h,
                Ok(None) => return (pos, Ok(())),
                Err(e) => return (pos, Err(ConnError::Frame(e))),
            };
            let payload = &data[pos + h.header_len..pos + h.header_len + h.payload_len];
            pos += h.header_len + h.payload_len;
            if let Err(e) = self.frame(h, payload, on_msg) {
                return (pos, Err(e));
            }
        }
    }

    fn frame<F: FnMut(Incoming<'_>)>(
        &mut self,
        h: ws::Header,
        payload: &[u8],
        on_msg: &mut F,
    ) -> Result<(), ConnError> {
        match h.opcode {
            ws::OP_TEXT | ws::OP_BINARY => {
                if self.frag.is_some() {
                    return Err(ConnError::Fragmentation);
                }
                if h.fin {
                    on_msg(Incoming::Message(h.opcode, payload));
                } else {
                    self.frag = Some((h.opcode, payload.to_vec()));
                }
            }
            ws::OP_CONT => {
                let Some((op, buf)) = self.frag.as_mut() else {
                    return Err(ConnError::Fragmentation);
                };
                buf.extend_from_slice(payload);
                if h.fin {
                    let op = *op;
                    if let Some((_, buf)) = self.frag.take() {
                        on_msg(Incoming::Message(op, &buf));
                    }
                }
            }
            ws::OP_PING => {
                let mask = self.rng.next_u64() as u32;
                ws::write_frame(&mut self.wbuf, ws::OP_PONG, payload, mask);
            }
            ws::OP_PONG => {}
            ws::OP_CLOSE => {
                let code = if payload.len() >= 2 {
                    u16::from_be_bytes([payload[0], payload[1]])
                } else {
                    1005
                };
                if self.state == State::Open {
                    // RFC 6455 section 5.5.1: answer with a close frame,
                    // echoing the status code.
                    let mask = self.rng.next_u64() as u32;
                    let echo: &[u8] = if payload.len() >= 2 {
                        &payload[..2]
                    } else {
                        &[]
                    };
                    ws::write_frame(&mut self.wbuf, ws::OP_CLOSE, echo, mask);
                }
                return Err(ConnError::ClosedByServer(code));
            }
            op => return Err(ConnError::Opcode(op)),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    /// A one-connection server on a thread: answers the handshake (with the
    /// right accept value, or a wrong one), sends `frames`, then reads what
    /// the client sends back until EOF and returns it.
    fn serve(
        frames: Vec<u8>,
        good_accept: bool,
    ) -> (SocketAddrV4, std::thread::JoinHandle<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = match listener.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            other => panic!("not v4: {other}"),
        };
        let t = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                s.read_exact(&mut b).unwrap();
                head.push(b[0]);
            }
            let head = String::from_utf8(head).unwrap();
            let key = head
                .lines()
                .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                .unwrap()
                .trim()
                .to_string();
            let accept = if good_accept {
                ws::accept_for(&key)
            } else {
                ws::accept_for("other")
            };
            let mut out = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {accept}\r\n\r\n"
            )
            .into_bytes();
            out.extend_from_slice(&frames);
            s.write_all(&out).unwrap();
            let mut back = Vec::new();
            let _ = s.read_to_end(&mut back);
            back
        });
        (addr, t)
    }

    /// Drives one client until it ends; returns its messages and the error.
    fn drive(addr: SocketAddrV4) -> (Vec<(u8, Vec<u8>)>, ConnError) {
        let mut poll = Poll::new().unwrap();
        let mut events = Events::with_capacity(16);
        let mut c = Conn::connect(poll.registry(), Token(0), addr, None, "/x", 1, None).unwrap();
        let mut got = Vec::new();
        let mut scratch = vec![0u8; 4096];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            poll.poll(&mut events, Some(Duration::from_millis(50)))
                .unwrap();
            for ev in events.iter() {
                if ev.is_writable()
                    && let Err(e) = c.on_writable()
                {
                    return (got, e);
                }
                if ev.is_readable() {
                    let res = c.on_readable(&mut scratch, |inc| {
                        if let Incoming::Message(op, p) = inc {
                            got.push((op, p.to_vec()));
                        }
                    });
                    if let Err(e) = res {
                        return (got, e);
                    }
                }
            }
        }
        panic!("client did not finish");
    }

    /// Unmasks the client frames a test server received.
    fn client_frames(mut buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while buf.len() >= 6 {
            assert_ne!(buf[1] & 0x80, 0, "client frames are masked");
            let len = (buf[1] & 0x7F) as usize;
            assert!(len < 126);
            let key = [buf[2], buf[3], buf[4], buf[5]];
            let mut p = buf[6..6 + len].to_vec();
            ws::apply_mask(&mut p, key);
            out.push((buf[0] & 0x0F, p));
            buf = &buf[6 + len..];
        }
        out
    }

    #[test]
    fn handshake_fragments_ping_and_close() {
        let mut frames = Vec::new();
        frames.extend_from_slice(&[0x01, 0x02, b'h', b'e']); // text, not final
        frames.extend_from_slice(&[0x89, 0x01, b'p']); // ping between fragments
        frames.extend_from_slice(&[0x80, 0x03, b'l', b'l', b'o']); // final continuation
        frames.extend_from_slice(&[0x82, 0x01, 7]); // binary
        frames.extend_from_slice(&[0x88, 0x02, 0x03, 0xE8]); // close 1000
        let (addr, server) = serve(frames, true);
        let (got, end) = drive(addr);
        assert_eq!(
            got,
            vec![(ws::OP_TEXT, b"hello".to_vec()), (ws::OP_BINARY, vec![7])]
        );
        assert!(matches!(end, ConnError::ClosedByServer(1000)), "{end}");
        let back = client_frames(&server.join().unwrap());
        assert_eq!(
            back,
            vec![
                (ws::OP_PONG, b"p".to_vec()),
                (ws::OP_CLOSE, vec![0x03, 0xE8])
            ]
        );
    }

    #[test]
    fn wrong_accept_is_refused() {
        let (addr, server) = serve(Vec::new(), false);
        let (got, end) = drive(addr);
        assert!(got.is_empty());
        assert!(
            matches!(end, ConnError::Handshake(HandshakeError::BadAccept)),
            "{end}"
        );
        drop(server);
    }

    #[test]
    fn masked_server_frame_is_refused() {
        let (addr, _server) = serve(vec![0x81, 0x81, 1, 2, 3, 4, b'x' ^ 1], true);
        let (_, end) = drive(addr);
        assert!(matches!(end, ConnError::Frame(FrameError::Masked)), "{end}");
    }
}
