//! The opening handshake decision: PROTOCOL section 2, checks 4 to 9, in
//! that order, and the `101 Switching Protocols` response.

use super::http::Request;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// RFC 6455 section 1.3: the GUID appended to the client's key.
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// What to do with a complete request head.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a handshake attempt: serve it from the plain route table.
    Plain { head_only: bool },
    /// Upgrade: send [`accept_response`] and switch to WebSocket.
    Upgrade {
        accept: String,
        subprotocol: Option<&'static str>,
    },
    /// Refuse with this status (and close).
    Reject(Rejection),
}

/// Why a request was refused; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Method,
    BadRequest,
    Version,
    Origin,
}

impl Rejection {
    pub fn status(self) -> u16 {
        match self {
            Rejection::Method => 405,
            Rejection::BadRequest => 400,
            Rejection::Version => 426,
            Rejection::Origin => 403,
        }
    }

    /// The label used in `wschat_connections_rejected_total{reason=...}`.
    pub fn metric_reason(self) -> &'static str {
        match self {
            Rejection::Method => "bad_request",
            Rejection::BadRequest => "bad_request",
            Rejection::Version => "version",
            Rejection::Origin => "origin",
        }
    }

    /// Headers the status requires.
    pub fn extra_headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Rejection::Method => &[("Allow", "GET, HEAD")],
            Rejection::Version => &[("Sec-WebSocket-Version", "13")],
            _ => &[],
        }
    }
}

/// Decides a parsed request. `allowed_origins` is lower-case; empty allows all.
pub fn decide(request: &Request<'_>, allowed_origins: &[String]) -> Decision {
    let is_get = request.method == "GET";
    if !is_get && request.method != "HEAD" {
        return Decision::Reject(Rejection::Method);
    }
    if !is_attempt(request) {
        return Decision::Plain { head_only: !is_get };
    }
    let key = request.header("Sec-WebSocket-Key").unwrap_or_default();
    if request.version < (1, 1)
        || request.header("Host").is_none()
        || !request.has_token("Upgrade", "websocket")
        || !request.has_token("Connection", "upgrade")
        || !is_valid_key(key)
    {
        return Decision::Reject(Rejection::BadRequest);
    }
    if request.header("Sec-WebSocket-Version") != Some("13") {
        return Decision::Reject(Rejection::Version);
    }
    if let Some(origin) = request.header("Origin")
        && !allowed_origins.is_empty()
        && !allowed_origins
            .iter()
            .any(|o| o.eq_ignore_ascii_case(origin))
    {
        return Decision::Reject(Rejection::Origin);
    }
    let subprotocol = request
        .headers("Sec-WebSocket-Protocol")
        .flat_map(|v| v.split(','))
        .any(|p| p.trim_matches([' ', '\t']) == "chat")
        .then_some("chat");
    Decision::Upgrade {
        accept: accept_key(key),
        subprotocol,
    }
}

/// A handshake attempt (section 2): GET with an `Upgrade` or a
/// `Sec-WebSocket-Key` header. Everything else is plain HTTP.
pub fn is_attempt(request: &Request<'_>) -> bool {
    request.method == "GET"
        && (request.header("Upgrade").is_some() || request.header("Sec-WebSocket-Key").is_some())
}

/// "a base64-encoded value that, when decoded, is 16 bytes in length".
fn is_valid_key(key: &str) -> bool {
    key.len() == 24 && STANDARD.decode(key).is_ok_and(|k| k.len() == 16)
}

/// `Sec-WebSocket-Accept` for a client key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    STANDARD.encode(sha.finalize())
}

/// Appends the `101 Switching Protocols` response.
pub fn accept_response(out: &mut Vec<u8>, accept: &str, subprotocol: Option<&str>) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept.as_bytes());
    if let Some(p) = subprotocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";

    fn decide_text(head: &str, origins: &[&str]) -> Decision {
        let head = format!("{head}\r\n");
        let origins: Vec<String> = origins.iter().map(|s| s.to_string()).collect();
        decide(&Request::parse(head.as_bytes()).unwrap(), &origins)
    }

    #[test]
    fn rfc_sample_key() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_eq!(
            decide_text(GOOD, &[]),
            Decision::Upgrade {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                subprotocol: None
            }
        );
    }

    #[test]
    fn plain_requests() {
        assert_eq!(
            decide_text("GET / HTTP/1.1\r\nHost: x\r\n", &[]),
            Decision::Plain { head_only: false }
        );
        // HEAD with Upgrade is not a handshake attempt.
        assert_eq!(
            decide_text("HEAD / HTTP/1.0\r\nUpgrade: websocket\r\n", &[]),
            Decision::Plain { head_only: true }
        );
        assert_eq!(
            decide_text("POST / HTTP/1.1\r\nHost: x\r\n", &[]),
            Decision::Reject(Rejection::Method)
        );
    }

    #[test]
    fn each_bad_request_cause() {
        let cases = [
            GOOD.replace("HTTP/1.1", "HTTP/1.0"),
            GOOD.replace("Host: server.example.com\r\n", ""),
            GOOD.replace("Upgrade: websocket\r\n", ""),
            GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
            GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
            GOOD.replace("Connection: Upgrade\r\n", ""),
            GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!"),
            GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
            GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
        ];
        for head in cases {
            assert_eq!(
                decide_text(&head, &[]),
                Decision::Reject(Rejection::BadRequest),
                "{head}"
            );
        }
    }

    #[test]
    fn version_then_origin() {
        let v8 = GOOD.replace("Version: 13", "Version: 8");
        assert_eq!(decide_text(&v8, &[]), Decision::Reject(Rejection::Version));
        let none = GOOD.replace("Sec-WebSocket-Version: 13\r\n", "");
        assert_eq!(
            decide_text(&none, &[]),
            Decision::Reject(Rejection::Version)
        );
        let with_origin = format!("{GOOD}Origin: https://Evil.example\r\n");
        assert_eq!(
            decide_text(&with_origin, &["https://good.example"]),
            Decision::Reject(Rejection::Origin)
        );
        assert!(matches!(
            decide_text(&with_origin, &["https://evil.example"]),
            Decision::Upgrade { .. }
        ));
        // No Origin header: a non-browser client, allowed.
        assert!(matches!(
            decide_text(GOOD, &["https://good.example"]),
            Decision::Upgrade { .. }
        ));
    }

    #[test]
    fn tolerant_header_forms_and_subprotocol() {
        let head = "GET /daemon.php HTTP/1.1\r\nhost:x\r\nupgrade:  WebSocket \r\nconnection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\nSec-WebSocket-Protocol: superchat, chat\r\n";
        assert_eq!(
            decide_text(head, &[]),
            Decision::Upgrade {
                accept: "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".into(),
                subprotocol: Some("chat")
            }
        );
    }
}
