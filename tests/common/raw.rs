//! A tiny, independent HTTP/1.1 and RFC 6455 client on a raw `TcpStream`.
//!
//! Client frames are built by hand (masked unless a test says otherwise);
//! server frames are parsed by hand and must be unmasked. Nothing here uses
//! the server's code.

use base64::Engine as _;
use serde_json::Value;
use sha1::{Digest, Sha1};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::READ_TIMEOUT;

pub const CONT: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The magic GUID of RFC 6455 section 1.3.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a key, computed independently of the server.
pub fn accept_for(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}

/// A fresh random `Sec-WebSocket-Key` (base64 of 16 bytes).
pub fn new_key() -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&next_random().to_le_bytes());
    bytes[8..].copy_from_slice(&next_random().to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A masking key that is never all zeros, so unmasking really matters.
pub fn new_mask() -> [u8; 4] {
    let mut m = (next_random() as u32).to_le_bytes();
    if m == [0; 4] {
        m = [0x37, 0xfa, 0x21, 0x3d];
    }
    m
}

/// The header bytes of a frame (with the mask key if any).
pub fn frame_header(fin: bool, rsv: u8, opcode: u8, len: u64, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(14);
    out.push(if fin { 0x80 } else { 0 } | (rsv & 0x7) << 4 | (opcode & 0xF));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xFFFF {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(m) = mask {
        out.extend_from_slice(&m);
    }
    out
}

/// A complete frame; `mask: None` builds an (illegal) unmasked client frame.
pub fn frame_with(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = frame_header(fin, rsv, opcode, payload.len() as u64, mask);
    match mask {
        Some(m) => out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4])),
        None => out.extend_from_slice(payload),
    }
    out
}

/// A legal masked client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(fin, 0, opcode, payload, Some(new_mask()))
}

/// A masked close frame payload: code (if any) then reason bytes.
pub fn close_frame(code: Option<u16>, reason: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    if let Some(code) = code {
        payload.extend_from_slice(&code.to_be_bytes());
    }
    payload.extend_from_slice(reason);
    frame(true, CLOSE, &payload)
}

/// A frame as the server sent it.
#[derive(Clone, Debug)]
pub struct Frame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame (`None` for an empty payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        assert_ne!(self.payload.len(), 1, "server sent a 1-byte close payload");
        if self.payload.len() >= 2 {
            Some(u16::from_be_bytes([self.payload[0], self.payload[1]]))
        } else {
            None
        }
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.payload).expect("server sent a text frame that is not UTF-8")
    }

    pub fn json(&self) -> Value {
        assert_eq!(self.opcode, TEXT, "expected a text frame, got {self:?}");
        assert!(self.fin, "chat messages are expected unfragmented");
        serde_json::from_str(self.text())
            .unwrap_or_else(|e| panic!("server sent invalid JSON {:?}: {e}", self.text()))
    }
}

/// Parses one server frame from the front of `buf`: `Ok(None)` if more
/// bytes are needed.
fn parse_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, String> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let rsv = (buf[0] >> 4) & 0x7;
    let opcode = buf[0] & 0xF;
    if buf[1] & 0x80 != 0 {
        return Err("server sent a masked frame (RFC 6455 5.1 forbids it)".into());
    }
    let (len, mut pos) = match buf[1] & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    // RFC 6455 5.2: minimal length encoding, 64-bit length MSB clear.
    let minimal = match buf[1] & 0x7F {
        126 => len >= 126,
        127 => len > 0xFFFF && len >> 63 == 0,
        _ => true,
    };
    if !minimal {
        return Err(format!(
            "server used a non-minimal length encoding ({len} bytes)"
        ));
    }
    if rsv != 0 {
        return Err(format!(
            "server set reserved bits {rsv:#b} without an extension"
        ));
    }
    if !matches!(opcode, CONT | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(format!("server used reserved opcode {opcode:#x}"));
    }
    if opcode >= CLOSE && (!fin || len > 125) {
        return Err(format!(
            "server sent a fragmented or oversized control frame (opcode {opcode:#x}, {len} bytes)"
        ));
    }
    let len = usize::try_from(len).map_err(|_| "absurd frame length".to_string())?;
    if buf.len() < pos + len {
        return Ok(None);
    }
    let payload = buf[pos..pos + len].to_vec();
    pos += len;
    Ok(Some((
        Frame {
            fin,
            rsv,
            opcode,
            payload,
        },
        pos,
    )))
}

/// What the next read produced.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// Orderly end of the TCP stream.
    Eof,
    /// The connection was reset (also "the peer is gone").
    Reset,
    Timeout,
}

/// A parsed HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header with this name.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn parse_head(head: &[u8]) -> Response {
    let text = std::str::from_utf8(head).expect("response head is not UTF-8");
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_string();
    assert!(
        version.starts_with("HTTP/1."),
        "bad status line {status_line:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let reason = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .unwrap_or_else(|| panic!("bad header line {line:?}"));
        headers.push((name.to_string(), value.trim().to_string()));
    }
    Response {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
    }
}

/// A raw connection with its read buffer.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

enum Fill {
    Data,
    Eof,
    Reset,
    Timeout,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect_timeout(&addr, READ_TIMEOUT).expect("connect");
        stream.set_nodelay(true).unwrap();
        stream.set_write_timeout(Some(READ_TIMEOUT)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes all bytes (panics on error).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Writes all bytes, reporting errors (the server may already be gone).
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads once into the buffer, waiting at most until `deadline`.
    fn fill(&mut self, deadline: Instant) -> Fill {
        let now = Instant::now();
        if now >= deadline {
            return Fill::Timeout;
        }
        let wait = (deadline - now).max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.stream.read(&mut chunk) {
            Ok(0) => Fill::Eof,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Fill::Data
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Fill::Timeout
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Fill::Data,
            Err(_) => Fill::Reset,
        }
    }

    /// Reads an HTTP response head; any bytes after it stay in the buffer.
    pub fn read_head(&mut self) -> Response {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return parse_head(&head[..end]);
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Eof => panic!(
                    "connection closed before a complete response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Fill::Reset => panic!(
                    "connection reset before a complete response head; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
                Fill::Timeout => panic!(
                    "no complete response head within {READ_TIMEOUT:?}; got {:?}",
                    String::from_utf8_lossy(&self.buf)
                ),
            }
        }
    }

    /// Reads until the server closes the connection; returns everything
    /// read (including what was buffered). Panics if it stays open.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Eof | Fill::Reset => return std::mem::take(&mut self.buf),
                Fill::Timeout => panic!(
                    "server did not close the connection within {READ_TIMEOUT:?} (has {} bytes)",
                    self.buf.len()
                ),
            }
        }
    }

    /// Reads a whole plain HTTP response: the head, then the body up to the
    /// server's close (every plain response carries `Connection: close`).
    pub fn read_response(&mut self) -> Response {
        let mut response = self.read_head();
        response.body = self.read_to_eof();
        response
    }

    /// Waits for the next server frame, EOF, reset or `timeout`.
    pub fn next_within(&mut self, timeout: Duration) -> Next {
        let deadline = Instant::now() + timeout;
        loop {
            match parse_frame(&self.buf) {
                Err(e) => panic!("{e}"),
                Ok(Some((frame, used))) => {
                    self.buf.drain(..used);
                    return Next::Frame(frame);
                }
                Ok(None) => {}
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Eof => {
                    assert!(
                        self.buf.is_empty(),
                        "EOF in the middle of a frame ({} bytes buffered)",
                        self.buf.len()
                    );
                    return Next::Eof;
                }
                Fill::Reset => return Next::Reset,
                Fill::Timeout => return Next::Timeout,
            }
        }
    }

    /// The next server frame; panics on EOF, reset or timeout.
    pub fn read_frame(&mut self) -> Frame {
        match self.next_within(READ_TIMEOUT) {
            Next::Frame(f) => f,
            other => panic!("expected a frame from the server, got {other:?}"),
        }
    }

    /// The next frame must be a text frame holding JSON.
    pub fn read_json(&mut self) -> Value {
        let frame = self.read_frame();
        frame.json()
    }

    /// Reads frames until a close frame, which must carry `code`
    /// (`None`: empty payload). Data frames before it (e.g. the chat
    /// `users` snapshot) are returned; pings are skipped.
    pub fn expect_close(&mut self, code: Option<u16>) -> Vec<Frame> {
        let mut before = Vec::new();
        loop {
            let frame = match self.next_within(READ_TIMEOUT) {
                Next::Frame(f) => f,
                other => panic!(
                    "expected a close frame with code {code:?}, got {other:?} after {before:?}"
                ),
            };
            assert!(frame.fin, "control or data frame with FIN clear: {frame:?}");
            assert_eq!(frame.rsv, 0, "server set reserved bits: {frame:?}");
            match frame.opcode {
                CLOSE => {
                    assert_eq!(
                        frame.close_code(),
                        code,
                        "wrong close code (payload {:?})",
                        String::from_utf8_lossy(&frame.payload)
                    );
                    if frame.payload.len() > 2 {
                        assert!(
                            std::str::from_utf8(&frame.payload[2..]).is_ok(),
                            "close reason is not UTF-8"
                        );
                    }
                    return before;
                }
                PING | PONG => {}
                _ => before.push(frame),
            }
        }
    }

    /// After a close exchange: the server must close TCP within `timeout`.
    /// Returns how long it took. Any frame arriving first fails.
    pub fn expect_tcp_closed(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        match self.next_within(timeout) {
            Next::Eof | Next::Reset => start.elapsed(),
            other => panic!("expected the server to close TCP, got {other:?}"),
        }
    }

    /// Reply to a server-initiated close (politely, ignoring errors).
    pub fn reply_close(&mut self, code: u16) {
        let _ = self.try_send(&close_frame(Some(code), b""));
    }

    /// Sends one masked frame.
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send(&frame(fin, opcode, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, TEXT, text.as_bytes());
    }

    pub fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A request head from a request line and header lines.
pub fn request(request_line: &str, headers: &[&str]) -> String {
    let mut out = format!("{request_line}\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

/// A correct upgrade request for `path` with `key`, plus extra headers.
pub fn upgrade_request(path: &str, key: &str, extra: &[&str]) -> String {
    let key_line = format!("Sec-WebSocket-Key: {key}");
    let mut headers = vec![
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        key_line.as_str(),
        "Sec-WebSocket-Version: 13",
    ];
    headers.extend_from_slice(extra);
    request(&format!("GET {path} HTTP/1.1"), &headers)
}

/// Sends one request on a new connection and reads the whole response.
pub fn http(addr: SocketAddr, request: &str) -> Response {
    let mut raw = Raw::connect(addr);
    raw.send(request.as_bytes());
    raw.read_response()
}

/// Sends one request head on a new connection and reads the response head.
pub fn http_head_only(addr: SocketAddr, request: &str) -> (Raw, Response) {
    let mut raw = Raw::connect(addr);
    raw.send(request.as_bytes());
    let response = raw.read_head();
    (raw, response)
}

/// `GET path` as plain HTTP/1.1.
pub fn get(addr: SocketAddr, path: &str) -> Response {
    http(
        addr,
        &request(&format!("GET {path} HTTP/1.1"), &["Host: 127.0.0.1"]),
    )
}

/// Asserts a `101` with the right accept for `key`.
pub fn assert_switching(response: &Response, key: &str) {
    assert_eq!(response.status, 101, "expected 101, got {response:?}");
    let upgrade = response.header("Upgrade").expect("101 without Upgrade");
    assert!(upgrade.eq_ignore_ascii_case("websocket"), "{response:?}");
    let connection = response
        .header("Connection")
        .expect("101 without Connection");
    assert!(
        connection
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
        "{response:?}"
    );
    assert_eq!(
        response.header("Sec-WebSocket-Accept"),
        Some(accept_for(key).as_str()),
        "wrong accept for key {key:?}"
    );
}

/// Opens a WebSocket at `path` (raw), asserting the 101.
pub fn ws(addr: SocketAddr, path: &str) -> Raw {
    let key = new_key();
    let mut raw = Raw::connect(addr);
    raw.send(upgrade_request(path, &key, &[]).as_bytes());
    let response = raw.read_head();
    assert_switching(&response, &key);
    raw
}

/// Opens a chat WebSocket (raw) and consumes the greeting: the `users`
/// snapshot, then the `history` message (section 9, on by default).
pub fn chat(addr: SocketAddr) -> Raw {
    let mut raw = ws(addr, "/");
    let users = raw.read_json();
    assert_eq!(users["type"], "users", "first chat message: {users}");
    let history = raw.read_json();
    assert_eq!(history["type"], "history", "second chat message: {history}");
    assert!(history["messages"].is_array(), "{history}");
    raw
}

/// Opens a chat WebSocket (raw) and claims `name`, consuming the snapshot
/// and the own `join` event.
pub fn chat_named(addr: SocketAddr, name: &str) -> Raw {
    let mut raw = chat(addr);
    raw.send_json(&serde_json::json!({"type": "join", "name": name}));
    let join = raw.read_json();
    assert_eq!(join["type"], "system", "{join}");
    assert_eq!(join["event"], "join", "{join}");
    assert_eq!(join["name"], name, "{join}");
    raw
}
