//! Frame-level rules and the close codes of PROTOCOL section 7, with
//! hand-built frames on a raw socket.

mod common;

use common::raw::{
    self, BINARY, CLOSE, CONT, Next, PING, PONG, Raw, TEXT, close_frame, frame, frame_header,
    frame_with, new_mask,
};
use common::server::TestServer;
use serde_json::json;
use std::time::{Duration, Instant};

/// The server must close with `code`; we answer its close and it must
/// close TCP promptly.
fn expect_error_close(raw: &mut Raw, code: u16) {
    raw.expect_close(Some(code));
    raw.reply_close(code);
    raw.expect_tcp_closed(Duration::from_secs(1));
}

/// For violations in a frame header: the server must close with 1002; we
/// then end our side (EOF) and the server must close TCP promptly. (After a
/// header-level error the server may treat the rest of the stream as
/// unparseable, so a close reply is not used here; see
/// `server_close_then_client_reply_closes_tcp_promptly` for that.)
fn expect_1002_then_eof_closes(raw: &mut Raw) {
    raw.expect_close(Some(1002));
    raw.shutdown_write();
    raw.expect_tcp_closed(Duration::from_secs(1));
}

#[test]
fn empty_close_is_answered_with_1000() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&close_frame(None, b""));
    let frames = raw.expect_close(Some(1000));
    assert!(frames.is_empty(), "{frames:?}");
    raw.expect_tcp_closed(Duration::from_secs(1));
}

#[test]
fn valid_close_codes_are_echoed() {
    let server = TestServer::new();
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000,
        4999,
    ] {
        let mut raw = raw::chat(server.addr);
        raw.send(&close_frame(Some(code), b"bye"));
        raw.expect_close(Some(code));
        raw.expect_tcp_closed(Duration::from_secs(1));
    }
}

#[test]
fn invalid_close_codes_are_1002() {
    let server = TestServer::new();
    for code in [
        0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut raw = raw::chat(server.addr);
        raw.send(&close_frame(Some(code), b""));
        raw.expect_close(Some(1002));
        raw.reply_close(1002);
        raw.expect_tcp_closed(Duration::from_secs(1));
    }
}

#[test]
fn one_byte_close_payload_is_1002() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&frame(true, CLOSE, &[0x03]));
    raw.expect_close(Some(1002));
    raw.reply_close(1002);
    raw.expect_tcp_closed(Duration::from_secs(1));
}

#[test]
fn close_reason_that_is_not_utf8_is_1007() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&close_frame(Some(1000), &[b'o', b'k', 0xff, 0xfe]));
    raw.expect_close(Some(1007));
    raw.reply_close(1007);
    raw.expect_tcp_closed(Duration::from_secs(1));
}

#[test]
fn close_reason_in_utf8_is_fine() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&close_frame(Some(4001), "au revoir, élodie 👋".as_bytes()));
    raw.expect_close(Some(4001));
}

#[test]
fn unmasked_client_frame_is_1002() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&frame_with(true, 0, TEXT, br#"{"type":"users"}"#, None));
    let before = raw.expect_close(Some(1002));
    assert!(
        before.is_empty(),
        "the unmasked frame was processed: {before:?}"
    );
    raw.reply_close(1002);
    raw.expect_tcp_closed(Duration::from_secs(1));
}

#[test]
fn reserved_bits_are_1002() {
    let server = TestServer::new();
    for rsv in [1u8, 2, 4, 7] {
        let mut raw = raw::chat(server.addr);
        raw.send(&frame_with(
            true,
            rsv,
            TEXT,
            br#"{"type":"users"}"#,
            Some(new_mask()),
        ));
        let before = raw.expect_close(Some(1002));
        assert!(before.is_empty(), "rsv {rsv}: frame was processed");
        raw.shutdown_write();
        raw.expect_tcp_closed(Duration::from_secs(1));
    }
}

#[test]
fn reserved_opcodes_are_1002() {
    let server = TestServer::new();
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let mut raw = raw::chat(server.addr);
        raw.send(&frame(true, opcode, b"x"));
        expect_1002_then_eof_closes(&mut raw);
    }
}

#[test]
fn fragmented_control_frames_are_1002() {
    let server = TestServer::new();
    for opcode in [PING, PONG, CLOSE] {
        let mut raw = raw::chat(server.addr);
        raw.send(&frame(false, opcode, b""));
        expect_1002_then_eof_closes(&mut raw);
    }
}

#[test]
fn control_frames_over_125_bytes_are_1002() {
    let server = TestServer::new();
    for opcode in [PING, PONG] {
        let mut raw = raw::chat(server.addr);
        raw.send(&frame(true, opcode, &[b'p'; 126]));
        expect_1002_then_eof_closes(&mut raw);
    }
    let mut raw = raw::chat(server.addr);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[b'r'; 124]);
    raw.send(&frame(true, CLOSE, &payload));
    expect_1002_then_eof_closes(&mut raw);
}

#[test]
fn ping_of_125_bytes_gets_an_identical_pong() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    let payload: Vec<u8> = (0..125u8).collect();
    raw.send(&frame(true, PING, &payload));
    let pong = raw.read_frame();
    assert_eq!(pong.opcode, PONG, "{pong:?}");
    assert!(pong.fin);
    assert_eq!(pong.payload, payload);
    // An empty ping too.
    raw.send(&frame(true, PING, b""));
    let pong = raw.read_frame();
    assert_eq!((pong.opcode, pong.payload.len()), (PONG, 0));
}

#[test]
fn unsolicited_pong_is_ignored() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&frame(true, PONG, b"unasked"));
    raw.send_json(&json!({"type": "users"}));
    assert_eq!(raw.read_json()["type"], "users");
}

#[test]
fn continuation_without_a_started_message_is_1002() {
    let server = TestServer::new();
    for fin in [true, false] {
        let mut raw = raw::chat(server.addr);
        raw.send(&frame(fin, CONT, br#"{"type":"users"}"#));
        let before = raw.expect_close(Some(1002));
        assert!(before.is_empty(), "{before:?}");
        raw.reply_close(1002);
        raw.expect_tcp_closed(Duration::from_secs(1));
    }
}

#[test]
fn new_data_frame_inside_a_fragmented_message_is_1002() {
    let server = TestServer::new();
    for second in [TEXT, BINARY] {
        let mut raw = raw::chat(server.addr);
        raw.send(&frame(false, TEXT, br#"{"type":"#));
        raw.send(&frame(true, second, br#"{"type":"users"}"#));
        let before = raw.expect_close(Some(1002));
        assert!(before.is_empty(), "{before:?}");
        raw.reply_close(1002);
        raw.expect_tcp_closed(Duration::from_secs(1));
    }
}

#[test]
fn invalid_utf8_text_is_1007() {
    let server = TestServer::new();
    let cases: [&[u8]; 6] = [
        b"\xff",
        b"{\"message\":\"\xc0\xaf\"}",         // overlong
        b"{\"message\":\"\xed\xa0\x80\"}",     // UTF-16 surrogate
        b"{\"message\":\"\xf4\x90\x80\x80\"}", // above U+10FFFF
        b"{\"message\":\"\xe2\x82\"}",         // truncated sequence
        b"{\"message\":\"ok\"}\x80",           // stray continuation byte
    ];
    for payload in cases {
        let mut raw = raw::chat(server.addr);
        raw.send(&frame(true, TEXT, payload));
        let before = raw.expect_close(Some(1007));
        assert!(before.is_empty(), "{payload:?} -> {before:?}");
        raw.reply_close(1007);
        raw.expect_tcp_closed(Duration::from_secs(1));
    }
}

#[test]
fn invalid_utf8_across_fragments_is_1007() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&frame(false, TEXT, b"{\"type\":\"users\",\"x\":\"\xce"));
    raw.send(&frame(true, CONT, b"A\"}"));
    raw.expect_close(Some(1007));
    raw.reply_close(1007);
    raw.expect_tcp_closed(Duration::from_secs(1));
}

#[test]
fn utf8_code_points_split_across_fragments_are_valid() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    let text = "{\"type\":\"join\",\"name\":\"é😀\"}".as_bytes();
    // Split inside "é" (2 bytes) and twice inside "😀" (4 bytes).
    let e = raw::find(text, "é".as_bytes()).unwrap();
    let cuts = [0, e + 1, e + 3, e + 5, text.len()];
    for i in 0..cuts.len() - 1 {
        let opcode = if i == 0 { TEXT } else { CONT };
        let fin = i == cuts.len() - 2;
        raw.send(&frame(fin, opcode, &text[cuts[i]..cuts[i + 1]]));
    }
    let join = raw.read_json();
    assert_eq!(join["event"], "join", "{join}");
    assert_eq!(join["name"], "é😀");
}

#[test]
fn fragmented_message_with_an_interleaved_ping() {
    let server = TestServer::new();
    let mut observer = raw::chat(server.addr);
    let mut raw = raw::chat_named(server.addr, "frag");
    assert_eq!(observer.read_json()["event"], "join");
    raw.send(&frame(false, TEXT, br#"{"message":"#));
    raw.send(&frame(true, PING, b"mid-message"));
    raw.send(&frame(false, CONT, br#""hello "#));
    raw.send(&frame(true, CONT, br#"world"}"#));
    let pong = raw.read_frame();
    assert_eq!(pong.opcode, PONG, "the pong comes first: {pong:?}");
    assert_eq!(pong.payload, b"mid-message");
    let msg = raw.read_json();
    assert_eq!(msg["type"], "usermsg", "{msg}");
    assert_eq!(msg["message"], "hello world");
    let msg = observer.read_json();
    assert_eq!(msg["message"], "hello world");
}

#[test]
fn close_inside_a_fragmented_message_is_answered_normally() {
    let server = TestServer::new();
    let mut observer = raw::chat(server.addr);
    let mut raw = raw::chat_named(server.addr, "halfway");
    assert_eq!(observer.read_json()["event"], "join");
    raw.send(&frame(false, TEXT, br#"{"message":"never "#));
    raw.send(&close_frame(Some(1000), b""));
    let before = raw.expect_close(Some(1000));
    assert!(before.is_empty(), "{before:?}");
    raw.expect_tcp_closed(Duration::from_secs(1));
    // The unfinished message was discarded: the observer sees the leave.
    let next = observer.read_json();
    assert_eq!(next["type"], "system", "{next}");
    assert_eq!(next["event"], "leave", "{next}");
}

#[test]
fn frame_header_announcing_too_much_is_1009_before_the_payload() {
    let server = TestServer::with(|c| c.max_message_bytes = 1024);
    let mut raw = raw::chat(server.addr);
    // Only the header: 2000 bytes announced, none sent.
    raw.send(&frame_header(true, 0, TEXT, 2000, Some(new_mask())));
    raw.expect_close(Some(1009));
    // We cannot send a parsable close now; end our side instead.
    raw.shutdown_write();
    raw.expect_tcp_closed(Duration::from_secs(1));

    // A 64-bit length far beyond the limit.
    let mut raw = raw::chat(server.addr);
    raw.send(&frame_header(true, 0, BINARY, 1 << 40, Some(new_mask())));
    raw.expect_close(Some(1009));
}

#[test]
fn fragments_adding_up_to_too_much_are_1009() {
    let server = TestServer::with(|c| c.max_message_bytes = 1024);
    let mut raw = raw::chat(server.addr);
    raw.send(&frame(false, TEXT, &[b' '; 600]));
    raw.send(&frame_header(false, 0, CONT, 600, Some(new_mask())));
    raw.expect_close(Some(1009));
}

#[test]
fn message_of_exactly_max_message_bytes_is_accepted() {
    let server = TestServer::with(|c| c.max_message_bytes = 1024);
    let mut raw = raw::chat_named(server.addr, "big");
    let shell = r#"{"message":""}"#.len();
    let text = format!(r#"{{"message":"{}"}}"#, "m".repeat(1024 - shell));
    assert_eq!(text.len(), 1024);
    // Sent in two fragments to check the reassembled size counts.
    raw.send(&frame(false, TEXT, &text.as_bytes()[..500]));
    raw.send(&frame(true, CONT, &text.as_bytes()[500..]));
    let msg = raw.read_json();
    assert_eq!(msg["type"], "usermsg", "{msg}");
    assert_eq!(msg["message"].as_str().unwrap().len(), 1024 - shell);
}

#[test]
fn server_close_then_client_reply_closes_tcp_promptly() {
    let server = TestServer::with(|c| c.close_timeout = Duration::from_secs(5));
    let mut raw = raw::chat(server.addr);
    raw.send(&frame(true, 0x3, b""));
    raw.expect_close(Some(1002));
    // Frames after the server's close are read and discarded.
    raw.send_json(&json!({"type": "users"}));
    raw.send(&frame(true, PING, b"ignored?"));
    let start = Instant::now();
    raw.send(&close_frame(Some(1002), b""));
    match raw.next_within(Duration::from_secs(2)) {
        Next::Eof | Next::Reset => {}
        other => panic!("expected TCP close after our close reply, got {other:?}"),
    }
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn close_timeout_drops_a_peer_that_never_replies() {
    let server = TestServer::with(|c| c.close_timeout = Duration::from_secs(1));
    let mut raw = raw::chat(server.addr);
    // Binary data on the chat: 1003, after which the server waits for the
    // peer's close reply (PROTOCOL section 7).
    raw.send(&frame(true, BINARY, b"x"));
    raw.expect_close(Some(1003));
    let start = Instant::now();
    match raw.next_within(Duration::from_secs(4)) {
        Next::Eof | Next::Reset => {}
        other => panic!("expected TCP close after the close timeout, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(700),
        "closed after {waited:?}, before the 1 s close timeout"
    );
    assert!(
        waited <= Duration::from_millis(2500),
        "closed after {waited:?}"
    );
}

#[test]
fn binary_on_chat_is_1003_raw() {
    let server = TestServer::new();
    let mut raw = raw::chat(server.addr);
    raw.send(&frame(true, BINARY, b"\x01\x02"));
    expect_error_close(&mut raw, 1003);
}

#[test]
fn close_timeout_holds_even_while_the_peer_keeps_talking() {
    let server = TestServer::with(|c| c.close_timeout = Duration::from_secs(1));
    let mut raw = raw::chat(server.addr);
    raw.send(&frame(true, BINARY, b"x"));
    raw.expect_close(Some(1003));
    // Keep sending frames, never a close: they are discarded and do not
    // extend the deadline.
    let start = Instant::now();
    let closed = loop {
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "server kept the connection open while the peer kept sending"
        );
        if raw.try_send(&frame(true, PING, b"still here")).is_err() {
            break start.elapsed();
        }
        match raw.next_within(Duration::from_millis(100)) {
            Next::Timeout => {}
            Next::Eof | Next::Reset => break start.elapsed(),
            Next::Frame(f) => panic!("frame after the server's close: {f:?}"),
        }
    };
    assert!(
        closed >= Duration::from_millis(700) && closed <= Duration::from_millis(2500),
        "closed after {closed:?} with --close-timeout 1"
    );
}

#[test]
fn failing_the_connection_half_closes_at_once() {
    // PROTOCOL v2 section 7 / RFC 6455 7.1.7: after 1002 or 1007 the FIN
    // follows the close frame without waiting for the peer's reply.
    let server = TestServer::with(|c| c.close_timeout = Duration::from_secs(3));
    for (bad, code) in [
        (frame(true, 0x3, b""), 1002),
        (frame(true, TEXT, b"\xff"), 1007),
    ] {
        let mut raw = raw::chat(server.addr);
        raw.send(&bad);
        raw.expect_close(Some(code));
        let start = Instant::now();
        match raw.next_within(Duration::from_secs(2)) {
            Next::Eof => {}
            other => panic!("expected our FIN right after the close frame, got {other:?}"),
        }
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "FIN took {:?}",
            start.elapsed()
        );
    }
}
