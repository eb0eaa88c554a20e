//! Rate limit, flooding, slow consumers and keepalive (PROTOCOL sections 5,
//! 7 and 8).

mod common;

use common::client::{Client, Got, assert_fields};
use common::metrics;
use common::raw::{self, Next, PING, PONG, Raw, TEXT, frame};
use common::server::TestServer;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use tungstenite::Message;

/// Several text messages in one write, so the server handles them back to
/// back (the bucket cannot refill in between).
fn burst(texts: &[&str]) -> Vec<u8> {
    texts
        .iter()
        .flat_map(|t| frame(true, TEXT, t.as_bytes()))
        .collect()
}

#[test]
fn token_bucket_capacity_is_twice_the_rate_and_refills() {
    let server = TestServer::with(|c| c.rate_limit = 2);
    let mut c = raw::chat(server.addr);
    // Capacity 4: the join and three messages pass, the fifth is limited.
    c.send(&burst(&[
        r#"{"type":"join","name":"alice"}"#,
        r#"{"message":"m0"}"#,
        r#"{"message":"m1"}"#,
        r#"{"message":"m2"}"#,
        r#"{"message":"one too many"}"#,
    ]));
    assert_fields(&c.read_json(), &json!({"event": "join", "name": "alice"}));
    for i in 0..3 {
        assert_fields(
            &c.read_json(),
            &json!({"type": "usermsg", "message": format!("m{i}")}),
        );
    }
    assert_fields(
        &c.read_json(),
        &json!({"type": "error", "code": "rate_limited"}),
    );
    // 2 tokens per second: after 600 ms one message passes again.
    thread::sleep(Duration::from_millis(600));
    c.send(&burst(&[
        r#"{"message":"refilled"}"#,
        r#"{"message":"empty again"}"#,
    ]));
    assert_fields(
        &c.read_json(),
        &json!({"type": "usermsg", "message": "refilled"}),
    );
    assert_fields(
        &c.read_json(),
        &json!({"type": "error", "code": "rate_limited"}),
    );
}

#[test]
fn every_text_message_costs_a_token_and_rate_limited_is_checked_first() {
    let server = TestServer::with(|c| c.rate_limit = 1);
    let mut c = raw::chat(server.addr);
    c.send(&burst(&[
        "garbage",
        r#"{"type": "nonsense"}"#,
        // The bucket (capacity 2) is empty now: the rate check comes first.
        "garbage",
        r#"{"type": "users"}"#,
    ]));
    for code in ["bad_json", "bad_request", "rate_limited", "rate_limited"] {
        assert_fields(&c.read_json(), &json!({"type": "error", "code": code}));
    }
}

#[test]
fn rate_limit_zero_turns_limiting_off() {
    let server = TestServer::with(|c| c.rate_limit = 0);
    let mut c = Client::named(server.addr, "fast");
    for i in 0..100 {
        c.send(json!({"message": format!("m{i}")}));
    }
    for i in 0..100 {
        assert_fields(
            &c.recv(),
            &json!({"type": "usermsg", "message": format!("m{i}")}),
        );
    }
}

#[test]
fn ten_times_the_rate_rejected_is_tolerated() {
    let server = TestServer::with(|c| c.rate_limit = 1);
    let mut raw = raw::chat(server.addr);
    // 2 pass (capacity), 10 rejected: not more than ten times the rate.
    let mut burst = Vec::new();
    for _ in 0..12 {
        burst.extend(frame(true, TEXT, br#"{"type":"users"}"#));
    }
    burst.extend(frame(true, PING, b"alive?"));
    raw.send(&burst);
    for i in 0..12 {
        let msg = raw.read_json();
        if i < 2 {
            assert_eq!(msg["type"], "users", "{msg}");
        } else {
            assert_eq!(msg["code"], "rate_limited", "{msg}");
        }
    }
    let pong = raw.read_frame();
    assert_eq!(pong.opcode, PONG, "connection must stay open: {pong:?}");
}

#[test]
fn flooding_closes_1008() {
    let server = TestServer::with(|c| c.rate_limit = 1);
    let mut observer = Client::chat(server.addr);
    let mut raw = raw::chat_named(server.addr, "flood");
    assert_fields(&observer.recv(), &json!({"event": "join", "name": "flood"}));
    // The join used one token; one more passes; then 11 rejections.
    let mut burst = Vec::new();
    for _ in 0..12 {
        burst.extend(frame(true, TEXT, br#"{"message":"spam"}"#));
    }
    raw.send(&burst);
    let before = raw.expect_close(Some(1008));
    let limited = before
        .iter()
        .filter(|f| f.json()["code"] == "rate_limited")
        .count();
    assert!(
        (10..=11).contains(&limited),
        "expected 10 or 11 rate_limited errors before the close, got {limited}: {before:?}"
    );
    assert_eq!(before[0].json()["type"], "usermsg");
    raw.reply_close(1008);
    raw.expect_tcp_closed(Duration::from_secs(1));
    // The observer saw exactly one spam line, then the leave.
    assert_fields(
        &observer.recv(),
        &json!({"type": "usermsg", "message": "spam"}),
    );
    assert_fields(
        &observer.recv(),
        &json!({"event": "leave", "name": "flood"}),
    );
}

#[test]
fn slow_consumer_is_dropped_1008() {
    let server = TestServer::with(|c| {
        c.max_output_bytes = 256 * 1024;
        c.max_chat_chars = 10_000;
    });
    let mut slow = raw::chat_named(server.addr, "slow");
    let mut flood = raw::chat_named(server.addr, "flood");

    // A reader drains the flooder's own copies and watches for slow's leave.
    let saw_leave = Arc::new(AtomicBool::new(false));
    let reader_stream = flood.stream.try_clone().unwrap();
    let reader_flag = saw_leave.clone();
    let reader = thread::spawn(move || {
        let mut reader = Raw {
            stream: reader_stream,
            buf: Vec::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match reader.next_within(Duration::from_secs(2)) {
                Next::Frame(f) if f.opcode == TEXT => {
                    let msg = f.json();
                    if msg["event"] == "leave" && msg["name"] == "slow" {
                        reader_flag.store(true, Ordering::SeqCst);
                        return;
                    }
                }
                Next::Frame(f) if f.opcode == raw::CLOSE => {
                    panic!("the flooder, which reads everything, was closed: {f:?}")
                }
                Next::Frame(_) | Next::Timeout => {}
                Next::Eof | Next::Reset => return,
            }
        }
    });

    // Small messages, so that the flooder (who reads everything) never has
    // much queued, while the slow reader's kernel buffers fill up.
    let line = format!(r#"{{"message":"{}"}}"#, "x".repeat(4_000));
    let start = Instant::now();
    let mut sent = 0;
    while !saw_leave.load(Ordering::SeqCst)
        && sent < 10_000
        && start.elapsed() < Duration::from_secs(15)
    {
        flood.send_text(&line);
        sent += 1;
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !saw_leave.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    if let Err(panic) = reader.join() {
        // The reader's own failure (e.g. the flooder was closed) says more.
        std::panic::resume_unwind(panic);
    }
    assert!(
        saw_leave.load(Ordering::SeqCst),
        "slow consumer not dropped after {sent} messages of 4 kB with --max-output-bytes 256 KiB"
    );

    // Slow finally reads: whatever was queued, then a 1008 close.
    let deadline = Instant::now() + Duration::from_secs(5);
    let code = loop {
        assert!(
            Instant::now() < deadline,
            "no close frame for the slow consumer"
        );
        match slow.next_within(Duration::from_secs(2)) {
            Next::Frame(f) if f.opcode == raw::CLOSE => break f.close_code(),
            Next::Frame(_) => {}
            other => panic!("slow consumer: expected a 1008 close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));

    let m = metrics::scrape(server.addr);
    assert_eq!(
        m.get("wschat_slow_consumers_dropped_total"),
        1.0,
        "{}",
        m.text
    );
    assert_eq!(
        m.get(r#"wschat_closes_total{code="1008"}"#),
        1.0,
        "{}",
        m.text
    );
}

#[test]
fn idle_peer_is_pinged_then_dropped_without_close() {
    let server = TestServer::with(|c| c.idle_timeout = Duration::from_secs(1));
    let mut observer = Client::chat(server.addr);
    let mut raw = raw::chat_named(server.addr, "sleepy");
    let start = Instant::now();
    assert_fields(
        &observer.recv(),
        &json!({"event": "join", "name": "sleepy"}),
    );
    // The observer keeps reading (tungstenite answers pings while it reads)
    // until it sees sleepy leave.
    let watcher = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(6);
        while Instant::now() < deadline {
            match observer.next_within(Duration::from_millis(200)) {
                Got::Msg(Message::Text(t)) => {
                    let msg: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                    if msg["event"] == "leave" && msg["name"] == "sleepy" {
                        return true;
                    }
                    panic!("observer got unexpected {msg}");
                }
                Got::Msg(_) | Got::Timeout => {}
                Got::Closed(e) => panic!("observer was dropped although it answers pings: {e}"),
            }
        }
        false
    });
    let ping = match raw.next_within(Duration::from_secs(3)) {
        Next::Frame(f) => f,
        other => panic!("expected a ping after 1 s of silence, got {other:?}"),
    };
    let pinged = start.elapsed();
    assert_eq!(ping.opcode, PING, "{ping:?}");
    assert!(
        pinged >= Duration::from_millis(700) && pinged <= Duration::from_millis(2500),
        "pinged after {pinged:?} with --idle-timeout 1"
    );
    // Stay silent: dropped without a close frame after about 1 s more.
    match raw.next_within(Duration::from_secs(3)) {
        Next::Eof | Next::Reset => {}
        other => panic!("expected the connection to be dropped, got {other:?}"),
    }
    let dropped = start.elapsed() - pinged;
    assert!(
        dropped >= Duration::from_millis(600) && dropped <= Duration::from_millis(2500),
        "dropped {dropped:?} after the ping"
    );
    assert!(
        watcher.join().expect("observer thread"),
        "no leave event for the dropped peer"
    );
}

#[test]
fn peer_answering_pings_stays_connected() {
    let server = TestServer::with(|c| c.idle_timeout = Duration::from_secs(1));
    let mut raw = raw::chat(server.addr);
    let start = Instant::now();
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(3500) {
        match raw.next_within(Duration::from_millis(200)) {
            Next::Frame(f) if f.opcode == PING => {
                pings += 1;
                raw.send(&frame(true, PONG, &f.payload));
            }
            Next::Timeout => {}
            other => panic!("unexpected {other:?} while answering pings"),
        }
    }
    assert!(pings >= 1, "no ping in 3.5 s with --idle-timeout 1");
    raw.send_json(&json!({"type": "users"}));
    assert_eq!(raw.read_json()["type"], "users");
}

#[test]
fn idle_timeout_zero_turns_keepalive_off() {
    let server = TestServer::with(|c| c.idle_timeout = Duration::ZERO);
    let mut raw = raw::chat(server.addr);
    match raw.next_within(Duration::from_millis(1500)) {
        Next::Timeout => {}
        other => panic!("expected silence with --idle-timeout 0, got {other:?}"),
    }
    raw.send_json(&json!({"type": "users"}));
    assert_eq!(raw.read_json()["type"], "users");
}

#[test]
fn library_shutdown_sends_1001_and_run_returns() {
    let mut server = TestServer::with(|c| c.shutdown_timeout = Duration::from_secs(1));
    let mut a = raw::chat_named(server.addr, "a");
    let mut b = raw::chat(server.addr);
    let mut pending_http = Raw::connect(server.addr);
    pending_http.send(b"GET /healthz HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let handle = server.handle();
    let start = Instant::now();
    handle.shutdown();
    // 1001 goes to everyone at once: nothing before it (no leave for "a"
    // reaches b), nothing after it.
    let before_a = a.expect_close(Some(1001));
    let before_b = b.expect_close(Some(1001));
    assert!(before_a.is_empty(), "{before_a:?}");
    assert!(before_b.is_empty(), "{before_b:?}");
    a.reply_close(1001);
    b.reply_close(1001);
    a.expect_tcp_closed(Duration::from_secs(2));
    b.expect_tcp_closed(Duration::from_secs(2));
    // Plain HTTP connections are closed.
    match pending_http.next_within(Duration::from_secs(2)) {
        Next::Eof | Next::Reset => {}
        other => panic!("plain connection not closed at shutdown: {other:?}"),
    }
    let result = server
        .shutdown(Duration::from_secs(3))
        .expect("run did not return after shutdown");
    result.expect("run returned an error");
    assert!(start.elapsed() < Duration::from_secs(3));
    // Nothing listens any more.
    assert!(std::net::TcpStream::connect(server.addr).is_err());
}

#[test]
fn shutdown_waits_at_most_shutdown_timeout_for_replies() {
    let mut server = TestServer::with(|c| c.shutdown_timeout = Duration::from_secs(1));
    let mut silent = raw::chat(server.addr);
    let start = Instant::now();
    server.handle().shutdown();
    silent.expect_close(Some(1001));
    // We never reply; the server must still finish within about 1 s.
    server
        .shutdown(Duration::from_secs(3))
        .expect("run did not return within 3 s")
        .expect("run returned an error");
    let took = start.elapsed();
    assert!(
        took <= Duration::from_millis(2500),
        "shutdown took {took:?}"
    );
}

#[test]
fn each_connection_has_its_own_bucket() {
    let server = TestServer::with(|c| c.rate_limit = 1);
    let mut a = raw::chat(server.addr);
    let mut b = raw::chat(server.addr);
    a.send(&burst(&[
        r#"{"type":"users"}"#,
        r#"{"type":"users"}"#,
        r#"{"type":"users"}"#,
    ]));
    assert_eq!(a.read_json()["type"], "users");
    assert_eq!(a.read_json()["type"], "users");
    assert_fields(&a.read_json(), &json!({"code": "rate_limited"}));
    // b's bucket is still full.
    b.send(&burst(&[r#"{"type":"users"}"#, r#"{"type":"users"}"#]));
    assert_eq!(b.read_json()["type"], "users");
    assert_eq!(b.read_json()["type"], "users");
}

#[test]
fn a_chatty_peer_is_never_pinged() {
    let server = TestServer::with(|c| c.idle_timeout = Duration::from_secs(1));
    let mut raw = raw::chat(server.addr);
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        raw.send_json(&json!({"type": "users"}));
        let f = raw.read_frame();
        assert_eq!(f.opcode, TEXT, "a peer that talks is not silent: {f:?}");
        assert_eq!(f.json()["type"], "users");
        thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn handshake_timeout_does_not_apply_once_open() {
    let server = TestServer::with(|c| c.handshake_timeout = Duration::from_secs(1));
    let mut raw = raw::chat(server.addr);
    match raw.next_within(Duration::from_millis(1600)) {
        Next::Timeout => {}
        other => panic!("open WebSocket disturbed after the handshake timeout: {other:?}"),
    }
    raw.send_json(&json!({"type": "users"}));
    assert_eq!(raw.read_json()["type"], "users");
}

#[test]
fn a_message_trickled_in_is_closed_when_its_time_is_up() {
    // Issue 9: one payload byte now and then must not hold a partial
    // message forever. A message gets --idle-timeout from its first byte.
    let server = TestServer::with(|c| c.idle_timeout = Duration::from_secs(1));
    let mut raw = raw::chat(server.addr);
    let whole = frame(true, TEXT, &[b'x'; 100]);
    // Header, mask and a first byte; then a byte every 300 ms, which keeps
    // the connection from looking idle.
    raw.send(&whole[..9]);
    let start = Instant::now();
    let mut sent = 9;
    let code = loop {
        match raw.next_within(Duration::from_millis(300)) {
            Next::Frame(f) => break f.close_code(),
            Next::Timeout => {
                assert!(start.elapsed() < Duration::from_secs(4), "never closed");
                raw.send(&whole[sent..sent + 1]);
                sent += 1;
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, Some(1008));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    // A message that arrives in time is fine, however slowly it starts.
    let mut ok = raw::chat_named(server.addr, "slow");
    let line = serde_json::to_vec(&json!({"message": "made it"})).unwrap();
    let whole = frame(true, TEXT, &line);
    let (a, b) = whole.split_at(10);
    ok.send(a);
    thread::sleep(Duration::from_millis(500));
    ok.send(b);
    assert_eq!(ok.read_json()["message"], "made it");
}
