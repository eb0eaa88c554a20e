//! `/metrics` counters change as the traffic says (PROTOCOL section 8).
//! Every test has its own server, so the numbers are exact.

mod common;

use common::client::{Client, assert_fields};
use common::metrics::{Metrics, scrape};
use common::raw::{self, Next, Raw, close_frame, frame, new_key, request, upgrade_request};
use common::server::TestServer;
use serde_json::json;
use std::time::Duration;

fn diff(after: &Metrics, before: &Metrics, key: &str) -> f64 {
    after.get(key) - before.get(key)
}

#[test]
fn accepted_and_rejected_by_reason() {
    let server = TestServer::with(|c| c.allowed_origins = vec!["https://ok.example".into()]);
    let m0 = scrape(server.addr);
    let key_line = format!("Sec-WebSocket-Key: {}", new_key());
    // bad_request: no Host.
    let r = raw::http(
        server.addr,
        &request(
            "GET / HTTP/1.1",
            &[
                "Upgrade: websocket",
                "Connection: Upgrade",
                &key_line,
                "Sec-WebSocket-Version: 13",
            ],
        ),
    );
    assert_eq!(r.status, 400);
    // version
    let r = raw::http(
        server.addr,
        &request(
            "GET / HTTP/1.1",
            &[
                "Host: x",
                "Upgrade: websocket",
                "Connection: Upgrade",
                &key_line,
            ],
        ),
    );
    assert_eq!(r.status, 426);
    // origin
    let key = new_key();
    let r = raw::http(
        server.addr,
        &upgrade_request("/", &key, &["Origin: https://evil.example"]),
    );
    assert_eq!(r.status, 403);
    // head_too_large
    let r = raw::http(
        server.addr,
        &format!("GET / HTTP/1.1\r\nX-Pad: {}", "p".repeat(8200)),
    );
    assert_eq!(r.status, 431);
    // Accepted, not rejected: a plain 200, a 404 and a WebSocket.
    assert_eq!(raw::get(server.addr, "/healthz").status, 200);
    assert_eq!(raw::get(server.addr, "/nope").status, 404);
    let _ws = raw::chat(server.addr);

    let m1 = scrape(server.addr);
    // Seven connections in between plus the second scrape itself.
    assert_eq!(
        diff(&m1, &m0, "wschat_connections_accepted_total"),
        8.0,
        "{}",
        m1.text
    );
    for (reason, n) in [
        ("bad_request", 1.0),
        ("version", 1.0),
        ("origin", 1.0),
        ("head_too_large", 1.0),
        ("limit", 0.0),
        ("timeout", 0.0),
    ] {
        let key = format!("wschat_connections_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(diff(&m1, &m0, &key), n, "{key}\n{}", m1.text);
    }
    assert_eq!(
        m1.get(r#"wschat_connections_open{state="open"}"#),
        1.0,
        "{}",
        m1.text
    );
}

#[test]
fn limit_and_timeout_rejections_are_counted() {
    let server = TestServer::with(|c| {
        c.max_connections = 2;
        c.handshake_timeout = Duration::from_secs(1);
    });
    let m0 = scrape(server.addr);
    let mut a = Raw::connect(server.addr);
    let mut b = Raw::connect(server.addr);
    b.send(b"GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Raw::connect(server.addr);
    assert_eq!(c.read_response().status, 503);
    for raw in [&mut a, &mut b] {
        match raw.next_within(Duration::from_secs(3)) {
            Next::Eof | Next::Reset => {}
            other => panic!("expected the handshake timeout to close, got {other:?}"),
        }
    }
    let m1 = scrape(server.addr);
    assert_eq!(
        diff(
            &m1,
            &m0,
            r#"wschat_connections_rejected_total{reason="limit"}"#
        ),
        1.0,
        "{}",
        m1.text
    );
    assert_eq!(
        diff(
            &m1,
            &m0,
            r#"wschat_connections_rejected_total{reason="timeout"}"#
        ),
        2.0,
        "{}",
        m1.text
    );
    // The 503 connection counts as accepted too.
    assert_eq!(
        diff(&m1, &m0, "wschat_connections_accepted_total"),
        4.0,
        "{}",
        m1.text
    );
}

#[test]
fn closes_are_counted_by_code() {
    let server = TestServer::new();
    let m0 = scrape(server.addr);
    // Client close without payload: server sends 1000.
    let mut r = raw::chat(server.addr);
    r.send(&close_frame(None, b""));
    r.expect_close(Some(1000));
    r.expect_tcp_closed(Duration::from_secs(1));
    // Client close 4000: echoed.
    let mut r = raw::chat(server.addr);
    r.send(&close_frame(Some(4000), b""));
    r.expect_close(Some(4000));
    r.expect_tcp_closed(Duration::from_secs(1));
    // Protocol error twice (unmasked frames): 1002.
    for _ in 0..2 {
        let mut r = raw::chat(server.addr);
        r.send(&raw::frame_with(true, 0, raw::TEXT, b"{}", None));
        r.expect_close(Some(1002));
        r.reply_close(1002);
        r.expect_tcp_closed(Duration::from_secs(1));
    }
    // Binary on chat: 1003.
    let mut r = raw::chat(server.addr);
    r.send(&frame(true, raw::BINARY, b"b"));
    r.expect_close(Some(1003));
    r.reply_close(1003);
    r.expect_tcp_closed(Duration::from_secs(1));

    let m1 = scrape(server.addr);
    for (code, n) in [("1000", 1.0), ("4000", 1.0), ("1002", 2.0), ("1003", 1.0)] {
        let key = format!("wschat_closes_total{{code=\"{code}\"}}");
        assert_eq!(diff(&m1, &m0, &key), n, "{key}\n{}", m1.text);
    }
}

#[test]
fn users_named_follows_joins_and_leaves() {
    let server = TestServer::new();
    assert_eq!(scrape(server.addr).get("wschat_users_named"), 0.0);
    let mut observer = Client::chat(server.addr);
    let alice = Client::named(server.addr, "alice");
    let _bob = Client::named(server.addr, "bob");
    assert_fields(&observer.recv(), &json!({"event": "join", "name": "alice"}));
    assert_fields(&observer.recv(), &json!({"event": "join", "name": "bob"}));
    let m = scrape(server.addr);
    assert_eq!(m.get("wschat_users_named"), 2.0, "{}", m.text);
    assert_eq!(
        m.get(r#"wschat_connections_open{state="open"}"#),
        3.0,
        "{}",
        m.text
    );
    drop(alice);
    assert_fields(
        &observer.recv(),
        &json!({"event": "leave", "name": "alice"}),
    );
    let m = scrape(server.addr);
    assert_eq!(m.get("wschat_users_named"), 1.0, "{}", m.text);
}

#[test]
fn message_byte_and_rate_counters_grow() {
    let server = TestServer::with(|c| {
        c.echo = true;
        c.rate_limit = 1;
    });
    let m0 = scrape(server.addr);
    let mut chat = Client::named(server.addr, "alice");
    chat.send(json!({"message": "hi"}));
    assert_fields(&chat.recv(), &json!({"type": "usermsg", "message": "hi"}));
    // Capacity 2 is used up: this one is rate limited.
    chat.send(json!({"message": "too fast"}));
    chat.expect_error("rate_limited");
    let mut echo = Raw::connect(server.addr);
    let key = new_key();
    echo.send(upgrade_request("/echo", &key, &[]).as_bytes());
    raw::assert_switching(&echo.read_head(), &key);
    for _ in 0..3 {
        echo.send_text("e");
        assert_eq!(echo.read_frame().payload, b"e");
    }
    let m1 = scrape(server.addr);
    let grew = |key: &str, at_least: f64| {
        let d = diff(&m1, &m0, key);
        assert!(
            d >= at_least,
            "{key} grew by {d}, expected at least {at_least}\n{}",
            m1.text
        );
    };
    grew(r#"wschat_messages_received_total{app="chat"}"#, 2.0);
    grew(r#"wschat_messages_sent_total{app="chat"}"#, 3.0);
    grew(r#"wschat_messages_received_total{app="echo"}"#, 3.0);
    grew(r#"wschat_messages_sent_total{app="echo"}"#, 3.0);
    grew("wschat_bytes_received_total", 50.0);
    grew("wschat_bytes_sent_total", 50.0);
    assert_eq!(
        diff(&m1, &m0, "wschat_rate_limited_total"),
        1.0,
        "{}",
        m1.text
    );
    // Echo traffic does not count as chat and vice versa.
    assert!(diff(&m1, &m0, r#"wschat_messages_received_total{app="echo"}"#) <= 3.0);
    assert!(diff(&m1, &m0, r#"wschat_messages_received_total{app="chat"}"#) <= 3.0);
}

#[test]
fn closing_state_is_visible_while_the_server_waits_for_a_reply() {
    let server = TestServer::with(|c| c.close_timeout = Duration::from_secs(5));
    let mut r = raw::chat(server.addr);
    r.send(&frame(true, raw::BINARY, b"b"));
    r.expect_close(Some(1003));
    // We do not reply: the connection is closing until we do.
    let m = scrape(server.addr);
    assert_eq!(
        m.get(r#"wschat_connections_open{state="closing"}"#),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get(r#"wschat_connections_open{state="open"}"#),
        0.0,
        "{}",
        m.text
    );
    r.reply_close(1003);
    r.expect_tcp_closed(Duration::from_secs(1));
    let m = scrape(server.addr);
    assert_eq!(
        m.get(r#"wschat_connections_open{state="closing"}"#),
        0.0,
        "{}",
        m.text
    );
}

#[test]
fn a_websocket_closed_by_its_client_counts_as_closing_not_http() {
    let server = TestServer::with(|c| c.close_timeout = Duration::from_secs(5));
    let mut raw = raw::chat(server.addr);
    raw.send(&close_frame(Some(1000), b""));
    raw.expect_close(Some(1000));
    // The server lingers until our EOF, which we do not send yet.
    let m = scrape(server.addr);
    assert_eq!(
        m.get(r#"wschat_connections_open{state="closing"}"#),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get(r#"wschat_connections_open{state="http"}"#),
        1.0,
        "only the scrape: {}",
        m.text
    );
    raw.shutdown_write();
    assert!(matches!(
        raw.next_within(Duration::from_secs(2)),
        Next::Eof | Next::Reset
    ));
}
