//! The opening handshake and the check table of PROTOCOL section 2.

mod common;

use common::raw::{self, Next, Raw, Response, new_key, request, upgrade_request};
use common::server::TestServer;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

/// Sends `req` on a new connection; the response must have `status` and the
/// server must close the connection after it.
fn expect_status(addr: SocketAddr, req: &str, status: u16) -> Response {
    let response = raw::http(addr, req);
    assert_eq!(
        response.status, status,
        "request {req:?} got {} {}",
        response.status, response.reason
    );
    response
}

/// An upgrade request whose headers are exactly `headers`.
fn attempt(headers: &[&str]) -> String {
    request("GET /chat HTTP/1.1", headers)
}

#[test]
fn rfc6455_sample_key_gets_the_sample_accept() {
    let server = TestServer::new();
    let (_raw, response) = raw::http_head_only(
        server.addr,
        &upgrade_request("/", "dGhlIHNhbXBsZSBub25jZQ==", &[]),
    );
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(
        response.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(
        response
            .header("Upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{response:?}"
    );
    assert!(
        response
            .header("Connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{response:?}"
    );
    assert_eq!(
        response.header("Sec-WebSocket-Protocol"),
        None,
        "no subprotocol was offered"
    );
}

#[test]
fn random_keys_get_the_sha1_accept() {
    let server = TestServer::new();
    for _ in 0..3 {
        let key = new_key();
        let (_raw, response) = raw::http_head_only(server.addr, &upgrade_request("/", &key, &[]));
        raw::assert_switching(&response, &key);
    }
}

#[test]
fn header_names_are_case_insensitive_with_optional_whitespace_and_token_lists() {
    let server = TestServer::new();
    let key = new_key();
    let key_line = format!("sec-websocket-KEY:\t  {key}  \t");
    let req = attempt(&[
        "hOST: 127.0.0.1",
        "upgrade:WebSocket",
        "CONNECTION:   keep-alive, Upgrade ",
        &key_line,
        "Sec-Websocket-Version:13",
    ]);
    let (_raw, response) = raw::http_head_only(server.addr, &req);
    raw::assert_switching(&response, &key);

    // Token lists in both headers, odd spacing around commas.
    let key = new_key();
    let key_line = format!("Sec-WebSocket-Key: {key}");
    let req = attempt(&[
        "Host: 127.0.0.1",
        "Upgrade: foo/1 ,websocket",
        "Connection: keep-alive,UPGRADE",
        &key_line,
        "Sec-WebSocket-Version: 13",
    ]);
    let (_raw, response) = raw::http_head_only(server.addr, &req);
    raw::assert_switching(&response, &key);
}

#[test]
fn query_string_and_any_path_upgrade_to_chat() {
    let server = TestServer::new();
    for path in [
        "/?room=1",
        "/daemon.php",
        "/demo/shout.php",
        "/anything/else",
    ] {
        let key = new_key();
        let (mut raw, response) =
            raw::http_head_only(server.addr, &upgrade_request(path, &key, &[]));
        raw::assert_switching(&response, &key);
        let users = raw.read_json();
        assert_eq!(users["type"], "users", "path {path}: {users}");
    }
}

#[test]
fn subprotocol_chat_is_selected_when_offered() {
    let server = TestServer::new();
    let key = new_key();
    let (_raw, response) = raw::http_head_only(
        server.addr,
        &upgrade_request("/", &key, &["Sec-WebSocket-Protocol: superchat, chat"]),
    );
    raw::assert_switching(&response, &key);
    assert_eq!(response.header("Sec-WebSocket-Protocol"), Some("chat"));

    let key = new_key();
    let (_raw, response) = raw::http_head_only(
        server.addr,
        &upgrade_request("/", &key, &["Sec-WebSocket-Protocol: chat"]),
    );
    raw::assert_switching(&response, &key);
    assert_eq!(response.header("Sec-WebSocket-Protocol"), Some("chat"));
}

#[test]
fn no_subprotocol_is_selected_when_chat_is_not_offered() {
    let server = TestServer::new();
    let key = new_key();
    let (_raw, response) = raw::http_head_only(
        server.addr,
        &upgrade_request("/", &key, &["Sec-WebSocket-Protocol: superchat, xmpp"]),
    );
    raw::assert_switching(&response, &key);
    assert_eq!(response.header("Sec-WebSocket-Protocol"), None);
}

#[test]
fn permessage_deflate_offer_is_ignored() {
    let server = TestServer::new();
    let key = new_key();
    let (mut raw, response) = raw::http_head_only(
        server.addr,
        &upgrade_request(
            "/",
            &key,
            &["Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
        ),
    );
    raw::assert_switching(&response, &key);
    assert_eq!(response.header("Sec-WebSocket-Extensions"), None);
    // Frames stay uncompressed: no RSV1, plain JSON.
    let frame = raw.read_frame();
    assert_eq!(frame.rsv, 0, "{frame:?}");
    assert_eq!(frame.json()["type"], "users");
}

#[test]
fn handshake_and_first_frame_in_one_write() {
    let server = TestServer::new();
    let key = new_key();
    let mut bytes = upgrade_request("/", &key, &[]).into_bytes();
    bytes.extend(raw::frame(
        true,
        raw::TEXT,
        br#"{"type":"join","name":"early"}"#,
    ));
    let mut raw = Raw::connect(server.addr);
    raw.send(&bytes);
    let response = raw.read_head();
    raw::assert_switching(&response, &key);
    let users = raw.read_json();
    assert_eq!(users["type"], "users", "{users}");
    assert_eq!(raw.read_json()["type"], "history");
    let join = raw.read_json();
    assert_eq!(join["event"], "join", "{join}");
    assert_eq!(join["name"], "early", "{join}");
}

#[test]
fn http_1_0_handshake_is_400() {
    let server = TestServer::new();
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    let req = request(
        "GET / HTTP/1.0",
        &[
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &key_line,
            "Sec-WebSocket-Version: 13",
        ],
    );
    expect_status(server.addr, &req, 400);
}

#[test]
fn missing_host_is_400() {
    let server = TestServer::new();
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    let req = attempt(&[
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line,
        "Sec-WebSocket-Version: 13",
    ]);
    expect_status(server.addr, &req, 400);
}

#[test]
fn missing_or_wrong_upgrade_is_400() {
    let server = TestServer::new();
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    // No Upgrade header at all: still a handshake attempt (it has a key).
    let req = attempt(&[
        "Host: 127.0.0.1",
        "Connection: Upgrade",
        &key_line,
        "Sec-WebSocket-Version: 13",
    ]);
    expect_status(server.addr, &req, 400);
    for upgrade in ["Upgrade: h2c", "Upgrade: websockets", "Upgrade: "] {
        let req = attempt(&[
            "Host: 127.0.0.1",
            upgrade,
            "Connection: Upgrade",
            &key_line,
            "Sec-WebSocket-Version: 13",
        ]);
        expect_status(server.addr, &req, 400);
    }
}

#[test]
fn missing_or_wrong_connection_is_400() {
    let server = TestServer::new();
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    let req = attempt(&[
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        &key_line,
        "Sec-WebSocket-Version: 13",
    ]);
    expect_status(server.addr, &req, 400);
    for connection in [
        "Connection: keep-alive",
        "Connection: close",
        "Connection: upgrades",
    ] {
        let req = attempt(&[
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            connection,
            &key_line,
            "Sec-WebSocket-Version: 13",
        ]);
        expect_status(server.addr, &req, 400);
    }
}

#[test]
fn bad_keys_are_400() {
    let server = TestServer::new();
    let keys = [
        "not base64 at all!",
        // 15 bytes
        "AAAAAAAAAAAAAAAAAAAA",
        // 17 bytes
        "AAAAAAAAAAAAAAAAAAAAAAA=",
        // 24 characters, but not base64
        "AAAAAAAAAAAAAAAAAAAAA*==",
        "",
    ];
    for key in keys {
        let key_line = format!("Sec-WebSocket-Key: {key}");
        let req = attempt(&[
            "Host: 127.0.0.1",
            "Upgrade: websocket",
            "Connection: Upgrade",
            &key_line,
            "Sec-WebSocket-Version: 13",
        ]);
        let response = raw::http(server.addr, &req);
        assert_eq!(response.status, 400, "key {key:?}: {response:?}");
    }
    // No key at all (but an Upgrade header: a handshake attempt).
    let req = attempt(&[
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Version: 13",
    ]);
    expect_status(server.addr, &req, 400);
}

#[test]
fn missing_or_wrong_version_is_426_with_version_header() {
    let server = TestServer::new();
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    let base = [
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        key_line.as_str(),
    ];
    let mut variants: Vec<Vec<&str>> = vec![base.to_vec()];
    for version in [
        "Sec-WebSocket-Version: 8",
        "Sec-WebSocket-Version: 14",
        "Sec-WebSocket-Version: 130",
    ] {
        let mut headers = base.to_vec();
        headers.push(version);
        variants.push(headers);
    }
    for headers in variants {
        let response = expect_status(server.addr, &attempt(&headers), 426);
        assert_eq!(
            response.header("Sec-WebSocket-Version"),
            Some("13"),
            "{response:?}"
        );
    }
}

#[test]
fn checks_run_in_order_400_before_426_before_403() {
    let server = TestServer::with(|c| c.allowed_origins = vec!["https://good.example".into()]);
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    // No Host (400) and a wrong version (426) and a bad origin (403): 400.
    let req = attempt(&[
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line,
        "Sec-WebSocket-Version: 8",
        "Origin: https://evil.example",
    ]);
    expect_status(server.addr, &req, 400);
    // Wrong version and a bad origin: 426.
    let req = attempt(&[
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line,
        "Sec-WebSocket-Version: 8",
        "Origin: https://evil.example",
    ]);
    expect_status(server.addr, &req, 426);
}

#[test]
fn method_other_than_get_or_head_is_405() {
    let server = TestServer::new();
    for method in ["POST", "PUT", "DELETE", "OPTIONS"] {
        let req = request(
            &format!("{method} /healthz HTTP/1.1"),
            &["Host: 127.0.0.1", "Content-Length: 0"],
        );
        let response = expect_status(server.addr, &req, 405);
        assert_eq!(response.header("Allow"), Some("GET, HEAD"), "{method}");
    }
    // 405 comes before the handshake checks (check 4 before 6).
    let key = new_key();
    let req = upgrade_request("/", &key, &[]).replacen("GET", "POST", 1);
    let response = expect_status(server.addr, &req, 405);
    assert_eq!(response.header("Allow"), Some("GET, HEAD"));
}

#[test]
fn head_over_8192_bytes_is_431_and_8192_is_fine() {
    let server = TestServer::new();
    // Exactly 8192 bytes including the final CRLFCRLF: accepted.
    let prefix = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ";
    let pad = 8192 - prefix.len() - 4;
    let req = format!("{prefix}{}\r\n\r\n", "a".repeat(pad));
    assert_eq!(req.len(), 8192);
    let response = expect_status(server.addr, &req, 200);
    assert_eq!(response.body, b"ok\n");

    // 8193 bytes and no end of head yet: 431, whatever comes after.
    let req = format!("{prefix}{}", "a".repeat(8193 - prefix.len()));
    assert_eq!(req.len(), 8193);
    expect_status(server.addr, &req, 431);

    // A complete head of 8193 bytes: 431.
    let req = format!("{prefix}{}\r\n\r\n", "a".repeat(pad + 1));
    assert_eq!(req.len(), 8193);
    expect_status(server.addr, &req, 431);
}

#[test]
fn head_too_large_is_checked_before_the_method() {
    let server = TestServer::new();
    let prefix = "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ";
    let req = format!("{prefix}{}", "a".repeat(8200 - prefix.len()));
    expect_status(server.addr, &req, 431);
}

#[test]
fn origin_checks() {
    let server = TestServer::with(|c| {
        c.allowed_origins = vec![
            "https://chat.example.com:8443".into(),
            "http://localhost:9000".into(),
        ]
    });
    for origin in [
        "https://chat.example.com:8443",
        "HTTPS://Chat.Example.COM:8443",
        "http://localhost:9000",
    ] {
        let key = new_key();
        let origin_line = format!("Origin: {origin}");
        let (_raw, response) =
            raw::http_head_only(server.addr, &upgrade_request("/", &key, &[&origin_line]));
        assert_eq!(response.status, 101, "origin {origin}: {response:?}");
    }
    for origin in [
        "https://evil.example",
        "https://chat.example.com",
        "https://chat.example.com:8443/",
        "null",
    ] {
        let key = new_key();
        let origin_line = format!("Origin: {origin}");
        let response = raw::http(server.addr, &upgrade_request("/", &key, &[&origin_line]));
        assert_eq!(response.status, 403, "origin {origin}: {response:?}");
    }
    // No Origin (a non-browser client): allowed.
    let key = new_key();
    let (_raw, response) = raw::http_head_only(server.addr, &upgrade_request("/", &key, &[]));
    raw::assert_switching(&response, &key);
    // Plain HTTP is not checked.
    let req = request(
        "GET /healthz HTTP/1.1",
        &["Host: 127.0.0.1", "Origin: https://evil.example"],
    );
    expect_status(server.addr, &req, 200);
}

#[test]
fn any_origin_is_allowed_without_allowed_origin() {
    let server = TestServer::new();
    let key = new_key();
    let (_raw, response) = raw::http_head_only(
        server.addr,
        &upgrade_request("/", &key, &["Origin: https://anything.example"]),
    );
    raw::assert_switching(&response, &key);
}

#[test]
fn handshake_attempt_is_get_with_upgrade_or_key_only() {
    let server = TestServer::new();
    // HEAD with upgrade headers is plain HTTP: 200, no body.
    let key = new_key();
    let req = upgrade_request("/healthz", &key, &[]).replacen("GET", "HEAD", 1);
    let response = expect_status(server.addr, &req, 200);
    assert!(response.body.is_empty(), "HEAD got a body");
    // GET with only a key (no Upgrade, no Connection) is an attempt: 400,
    // even on a plain route.
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    let req = request(
        "GET /healthz HTTP/1.1",
        &["Host: 127.0.0.1", &key_line, "Sec-WebSocket-Version: 13"],
    );
    expect_status(server.addr, &req, 400);
    // GET with only an Upgrade header is an attempt: 400.
    let req = request(
        "GET /healthz HTTP/1.1",
        &["Host: 127.0.0.1", "Upgrade: websocket"],
    );
    expect_status(server.addr, &req, 400);
}

#[test]
fn handshake_timeout_closes_without_a_response() {
    let server = TestServer::with(|c| c.handshake_timeout = Duration::from_secs(1));
    let mut raw = Raw::connect(server.addr);
    let start = Instant::now();
    // Keep trickling bytes: the timeout is total, not per read.
    let head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
    raw.send(head);
    let mut closed = None;
    while start.elapsed() < Duration::from_secs(4) {
        // A failed write means the server is gone; the read below tells.
        let _ = raw.try_send(b"a");
        match raw.next_within(Duration::from_millis(200)) {
            Next::Timeout => continue,
            Next::Eof | Next::Reset => {
                closed = Some(start.elapsed());
                break;
            }
            Next::Frame(f) => panic!("server sent bytes before closing: {f:?}"),
        }
    }
    let elapsed = closed.expect("connection still open 4 s after accept");
    assert!(raw.buf.is_empty(), "server sent {:?}", raw.buf);
    assert!(
        elapsed >= Duration::from_millis(800),
        "closed after {elapsed:?}, before the 1 s timeout"
    );
    assert!(
        elapsed <= Duration::from_millis(2500),
        "closed after {elapsed:?}; the timeout is total, not per read"
    );
}

#[test]
fn max_connections_gets_503_without_reading_the_request() {
    let server = TestServer::with(|c| c.max_connections = 2);
    // One WebSocket and one plain connection that has not finished its head.
    let ws = raw::chat(server.addr);
    let mut pending = Raw::connect(server.addr);
    pending.send(b"GET /healthz HTTP/1.1\r\n");
    thread::sleep(Duration::from_millis(100));

    // The third connection sends nothing and still gets the 503.
    let mut third = Raw::connect(server.addr);
    let response = third.read_response();
    assert_eq!(response.status, 503, "{response:?}");

    // Freeing a slot lets a new connection in.
    drop(ws);
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let response = raw::get(server.addr, "/healthz");
        if response.status == 200 {
            assert_eq!(response.body, b"ok\n");
            break;
        }
        assert_eq!(response.status, 503, "{response:?}");
        assert!(
            Instant::now() < deadline,
            "slot not freed 2 s after the client closed"
        );
        thread::sleep(Duration::from_millis(50));
    }
    // The pending plain connection still works (it was never dropped).
    pending.send(b"Host: 127.0.0.1\r\n\r\n");
    let response = pending.read_response();
    assert_eq!(response.status, 200);
}

#[test]
fn error_responses_close_the_connection() {
    let server = TestServer::new();
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    let req = attempt(&[
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        &key_line,
    ]);
    // read_response panics unless the server closes after the response.
    let response = raw::http(server.addr, &req);
    assert_eq!(response.status, 426);
}

#[test]
fn frames_after_the_head_do_not_count_toward_the_head_limit() {
    let server = TestServer::new();
    let key = new_key();
    let mut bytes = upgrade_request("/", &key, &[]).into_bytes();
    bytes.extend(raw::frame(
        true,
        raw::TEXT,
        br#"{"type":"join","name":"bulk"}"#,
    ));
    let line = format!(r#"{{"message":"{}"}}"#, "b".repeat(1900));
    for _ in 0..6 {
        bytes.extend(raw::frame(true, raw::TEXT, line.as_bytes()));
    }
    assert!(bytes.len() > 8192 + 2000);
    let mut raw = Raw::connect(server.addr);
    raw.send(&bytes);
    let response = raw.read_head();
    raw::assert_switching(&response, &key);
    assert_eq!(raw.read_json()["type"], "users");
    assert_eq!(raw.read_json()["type"], "history");
    assert_eq!(raw.read_json()["event"], "join");
    for _ in 0..6 {
        let msg = raw.read_json();
        assert_eq!(msg["type"], "usermsg", "{msg}");
        assert_eq!(msg["message"].as_str().map(str::len), Some(1900));
    }
}

#[test]
fn head_and_frames_may_arrive_one_byte_at_a_time() {
    let server = TestServer::new();
    let key = new_key();
    let mut bytes = upgrade_request("/", &key, &[]).into_bytes();
    bytes.extend(raw::frame(
        true,
        raw::TEXT,
        br#"{"type":"join","name":"slowpoke"}"#,
    ));
    let mut raw = Raw::connect(server.addr);
    for b in &bytes {
        raw.send(std::slice::from_ref(b));
        thread::sleep(Duration::from_micros(300));
    }
    let response = raw.read_head();
    raw::assert_switching(&response, &key);
    assert_eq!(raw.read_json()["type"], "users");
    assert_eq!(raw.read_json()["type"], "history");
    let join = raw.read_json();
    assert_eq!(join["event"], "join", "{join}");
    assert_eq!(join["name"], "slowpoke");
}
