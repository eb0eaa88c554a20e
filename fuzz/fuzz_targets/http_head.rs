//! The request-head path of a new connection: `find_head_end` on a growing
//! buffer, `Request::parse` on the head, then `handshake::decide`.
//!
//! The input is the raw bytes a client sends. How the bytes arrive (the
//! size of each read) and which `--allowed-origin` list is in force are
//! derived from the input's length, so that seeds are plain request heads.
//!
//! Invariants beyond "no panic":
//! - `find_head_end` agrees with a naive search, whether called once or
//!   incrementally with `searched` = the previous buffer length;
//! - a parsed request has an alphabetic method and a path without `?`/`#`;
//! - `decide` follows PROTOCOL section 2: only GET upgrades, an upgrade has
//!   a key, a Host, HTTP/1.1+, version 13, a 28-character accept; an origin
//!   refusal only happens with a non-empty allow list; the 101 response is
//!   a complete head.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::engine::handshake::{self, Decision, Rejection};
use wschat::engine::http::{self, Request};

fn naive_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

fuzz_target!(|data: &[u8]| {
    let expected = naive_head_end(data);
    assert_eq!(http::find_head_end(data, 0), expected);

    // The server searches again after every read, passing how far it got.
    let step = 1 + data.len() % 13;
    let mut searched = 0;
    let mut found = None;
    while searched < data.len() {
        let len = (searched + step).min(data.len());
        if let Some(end) = http::find_head_end(&data[..len], searched) {
            found = Some(end);
            break;
        }
        searched = len;
    }
    assert_eq!(found, expected, "incremental search (step {step})");
    // A `searched` past the end must not panic either.
    let _ = http::find_head_end(data, data.len() + 3);

    // The server parses the head only (without the bytes behind it).
    let head = match expected {
        Some(end) => &data[..end],
        None => data,
    };
    let Ok(request) = Request::parse(head) else {
        return;
    };
    assert!(!request.method.is_empty());
    assert!(request.method.bytes().all(|b| b.is_ascii_alphabetic()));
    assert!(!request.path.contains(['?', '#']));
    assert_eq!(request.header("Host"), request.headers("host").next());

    let origins: Vec<String> = match (data.len() / 13) % 3 {
        0 => Vec::new(),
        1 => vec!["http://localhost:9000".to_string()],
        _ => vec![
            "https://chat.example.com".to_string(),
            "http://127.0.0.1:9000".to_string(),
        ],
    };
    match handshake::decide(&request, &origins) {
        Decision::Plain { head_only } => {
            assert!(request.method == "GET" || request.method == "HEAD");
            assert_eq!(head_only, request.method == "HEAD");
        }
        Decision::Upgrade {
            accept,
            subprotocol,
        } => {
            assert_eq!(request.method, "GET");
            assert!(request.version >= (1, 1));
            assert!(request.header("Host").is_some());
            assert_eq!(request.header("Sec-WebSocket-Version"), Some("13"));
            let key = request
                .header("Sec-WebSocket-Key")
                .expect("upgrade without key");
            assert_eq!(key.len(), 24);
            assert_eq!(accept, handshake::accept_key(key));
            assert_eq!(accept.len(), 28);
            assert!(subprotocol.is_none() || subprotocol == Some("chat"));
            if let Some(origin) = request.header("Origin") {
                assert!(
                    origins.is_empty() || origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
                );
            }
            let mut out = Vec::new();
            handshake::accept_response(&mut out, &accept, subprotocol);
            assert!(out.starts_with(b"HTTP/1.1 101 "));
            assert_eq!(naive_head_end(&out), Some(out.len()));
        }
        Decision::Reject(rejection) => {
            if rejection == Rejection::Origin {
                assert!(!origins.is_empty());
            }
            if rejection == Rejection::Method {
                assert!(request.method != "GET" && request.method != "HEAD");
            }
            let status = rejection.status();
            assert!(matches!(status, 400 | 403 | 405 | 426));
            let mut out = Vec::new();
            http::write_error(&mut out, status, rejection.extra_headers(), false);
            assert_eq!(naive_head_end(&out).map(|_| ()), Some(()));
        }
    }
});
