//! The client side of RFC 6455, written for the load generator: the opening
//! handshake (request, and a response check that verifies
//! `Sec-WebSocket-Accept`), a masked frame writer and an unmasked frame reader.
//!
//! Kept apart from the server's engine on purpose: a benchmark that shared the
//! server's codec could not catch a bug the two agree on.

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// RFC 6455 section 1.3: the GUID appended to the key before hashing.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// The largest frame payload the generator accepts from a server. Nothing the
/// benchmarks provoke comes close; the bound keeps a broken peer from making
/// the generator allocate without limit.
pub const MAX_PAYLOAD: u64 = 16 << 20;

/// A small, fast, non-cryptographic generator (xorshift64*) for handshake
/// keys and masking keys. RFC 6455 wants masking keys unpredictable to
/// intermediaries; on loopback there are none, so speed wins here.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The `Sec-WebSocket-Accept` value a server must answer `key` with.
pub fn accept_for(key: &str) -> String {
    let mut h = Sha1::new();
    h.update(key.as_bytes());
    h.update(GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(h.finalize())
}

/// A fresh `Sec-WebSocket-Key`: base64 of 16 random bytes.
pub fn new_key(rng: &mut Rng) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    raw[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// The opening handshake request for `path` on `host_port`.
pub fn handshake_request(host_port: &str, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Why a handshake response was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The head is over 16 KiB without an end.
    TooLong,
    /// The status line is not `101`; carries the status line.
    Status(String),
    /// A required header is missing or wrong; carries its name.
    Header(&'static str),
    /// `Sec-WebSocket-Accept` does not match the key.
    BadAccept,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::TooLong => write!(f, "response head over 16 KiB"),
            HandshakeError::Status(s) => write!(f, "status {s:?}, not 101"),
            HandshakeError::Header(h) => write!(f, "missing or wrong {h} header"),
            HandshakeError::BadAccept => write!(f, "Sec-WebSocket-Accept does not match the key"),
        }
    }
}

/// Checks a handshake response. `Ok(None)`: the head is not complete yet.
/// `Ok(Some(n))`: valid, the head is `n` bytes long and anything after it is
/// already WebSocket data.
pub fn check_response(buf: &[u8], expected_accept: &str) -> Result<Option<usize>, HandshakeError> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 16 * 1024 {
            Err(HandshakeError::TooLong)
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.split(' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") || code != "101" {
        return Err(HandshakeError::Status(status.to_string()));
    }
    let (mut upgrade, mut connection, mut accept) = (false, false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            connection = value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            if value != expected_accept {
                return Err(HandshakeError::BadAccept);
            }
            accept = true;
        }
    }
    if !upgrade {
        return Err(HandshakeError::Header("Upgrade"));
    }
    if !connection {
        return Err(HandshakeError::Header("Connection"));
    }
    if !accept {
        return Err(HandshakeError::Header("Sec-WebSocket-Accept"));
    }
    Ok(Some(end + 4))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Appends one masked client frame (FIN set) to `out`. RFC 6455 section 5.3:
/// "The masking key is a 32-bit value chosen at random by the client".
pub fn write_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: u32) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let key = mask.to_be_bytes();
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
}

/// XORs `data` with the repeating 4-byte `key`, eight bytes at a time where
/// possible (plain safe chunking, no alignment assumptions).
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ wide).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// One decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    pub opcode: u8,
    /// Bytes of header before the payload.
    pub header_len: usize,
    pub payload_len: usize,
}

/// Why a server frame is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// RFC 6455 section 5.1: "A client MUST close a connection if it detects a
    /// masked frame."
    Masked,
    /// Reserved bits set (no extension was negotiated).
    Reserved,
    /// Payload over [`MAX_PAYLOAD`].
    TooBig,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Masked => write!(f, "masked frame from the server"),
            FrameError::Reserved => write!(f, "reserved bits set"),
            FrameError::TooBig => write!(f, "frame over {MAX_PAYLOAD} bytes"),
        }
    }
}

/// Parses a server frame header at the start of `buf`. `Ok(None)`: more bytes
/// needed (the header or the payload is incomplete); nothing is consumed.
pub fn parse_frame(buf: &[u8]) -> Result<Option<Header>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    if b1 & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, header_len) = match b1 & 0x7F {
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
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooBig);
    }
    let payload_len = len as usize;
    if buf.len() < header_len + payload_len {
        return Ok(None);
    }
    Ok(Some(Header {
        fin: b0 & 0x80 != 0,
        opcode: b0 & 0x0F,
        header_len,
        payload_len,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_matches_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn response_checks() {
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        let acc = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert_eq!(check_response(ok, acc), Ok(Some(ok.len() - 4)));
        assert_eq!(check_response(&ok[..20], acc), Ok(None));
        assert_eq!(check_response(ok, "x"), Err(HandshakeError::BadAccept));
        let bad = b"HTTP/1.1 503 Service Unavailable\r\n\r\n";
        assert!(matches!(
            check_response(bad, acc),
            Err(HandshakeError::Status(_))
        ));
    }

    #[test]
    fn frame_roundtrip_through_mask() {
        let mut out = Vec::new();
        write_frame(&mut out, OP_TEXT, b"Hello", 0x37fa213d);
        // RFC 6455 section 5.7 example: a masked "Hello".
        assert_eq!(
            out,
            [
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58
            ]
        );
        let mut long = vec![7u8; 300];
        apply_mask(&mut long, [1, 2, 3, 4]);
        apply_mask(&mut long, [1, 2, 3, 4]);
        assert!(long.iter().all(|&b| b == 7));
    }

    #[test]
    fn parse_server_frames() {
        assert_eq!(parse_frame(&[0x81]), Ok(None));
        assert_eq!(
            parse_frame(&[0x81, 0x02, b'h', b'i']),
            Ok(Some(Header {
                fin: true,
                opcode: 1,
                header_len: 2,
                payload_len: 2
            }))
        );
        assert_eq!(parse_frame(&[0x81, 0x02, b'h']), Ok(None));
        assert_eq!(
            parse_frame(&[0x81, 0x82, 0, 0, 0, 0]),
            Err(FrameError::Masked)
        );
        assert_eq!(parse_frame(&[0xC1, 0x00]), Err(FrameError::Reserved));
        let mut big = vec![0x82, 126, 0x01, 0x00];
        big.extend(std::iter::repeat_n(0u8, 256));
        assert_eq!(
            parse_frame(&big).map(|h| h.map(|h| h.payload_len)),
            Ok(Some(256))
        );
        assert_eq!(
            parse_frame(&[0x82, 127, 0xff, 0, 0, 0, 0, 0, 0, 0]),
            Err(FrameError::TooBig)
        );
    }
}
