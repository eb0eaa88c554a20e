//! The echo application at `/echo` (PROTOCOL section 6).

mod common;

use common::client::{Client, Got};
use common::raw::{self, BINARY, CONT, PING, PONG, TEXT, frame};
use common::server::TestServer;
use std::time::Duration;
use tungstenite::Message;

fn echo_server() -> TestServer {
    TestServer::with(|c| c.echo = true)
}

#[test]
fn text_and_binary_are_echoed_with_the_same_opcode() {
    let server = echo_server();
    let mut raw = raw::ws(server.addr, "/echo");
    // No chat snapshot on the echo application: a ping is answered first.
    raw.send(&frame(true, PING, b"first"));
    let pong = raw.read_frame();
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"first"[..])
    );

    raw.send(&frame(true, TEXT, "hello, échos".as_bytes()));
    let f = raw.read_frame();
    assert!(f.fin);
    assert_eq!(f.opcode, TEXT);
    assert_eq!(f.payload, "hello, échos".as_bytes());

    let binary = [0u8, 1, 2, 0xfe, 0xff];
    raw.send(&frame(true, BINARY, &binary));
    let f = raw.read_frame();
    assert!(f.fin);
    assert_eq!(f.opcode, BINARY);
    assert_eq!(f.payload, binary);

    // No chat rules: anything goes.
    raw.send(&frame(true, TEXT, b"not json {"));
    assert_eq!(raw.read_frame().payload, b"not json {");
    raw.send(&frame(true, TEXT, b""));
    let f = raw.read_frame();
    assert_eq!((f.opcode, f.payload.len()), (TEXT, 0));
}

#[test]
fn fragmented_messages_come_back_as_one_frame() {
    let server = echo_server();
    let mut raw = raw::ws(server.addr, "/echo");
    raw.send(&frame(false, TEXT, b"one "));
    raw.send(&frame(false, CONT, b"two "));
    raw.send(&frame(true, CONT, b"three"));
    let f = raw.read_frame();
    assert!(f.fin, "echo must be unfragmented");
    assert_eq!(f.opcode, TEXT);
    assert_eq!(f.payload, b"one two three");

    raw.send(&frame(false, BINARY, &[1, 2]));
    raw.send(&frame(true, PING, b"p"));
    raw.send(&frame(true, CONT, &[3]));
    let pong = raw.read_frame();
    assert_eq!(pong.opcode, PONG);
    let f = raw.read_frame();
    assert!(f.fin);
    assert_eq!((f.opcode, f.payload.as_slice()), (BINARY, &[1u8, 2, 3][..]));
}

#[test]
fn large_message_is_echoed_whole() {
    let server = TestServer::with(|c| {
        c.echo = true;
        c.max_message_bytes = 300_000;
    });
    let mut client = Client::connect(server.addr, "/echo");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    client.send_binary(&data);
    match client.next_within(Duration::from_secs(5)) {
        Got::Msg(Message::Binary(echo)) => assert!(echo[..] == data[..], "echo differs"),
        other => panic!("expected the binary echo, got {other:?}"),
    }
    let text = "ü".repeat(70_000);
    client.send_text(&text);
    match client.next_within(Duration::from_secs(5)) {
        Got::Msg(Message::Text(echo)) => assert!(echo.as_str() == text, "echo differs"),
        other => panic!("expected the text echo, got {other:?}"),
    }
}

#[test]
fn max_message_bytes_applies_to_echo() {
    let server = TestServer::with(|c| {
        c.echo = true;
        c.max_message_bytes = 1024;
    });
    let mut raw = raw::ws(server.addr, "/echo");
    raw.send(&frame(true, BINARY, &[7u8; 1024]));
    let f = raw.read_frame();
    assert_eq!(f.payload.len(), 1024);
    raw.send(&frame(true, BINARY, &[7u8; 1025]));
    raw.expect_close(Some(1009));
}

#[test]
fn invalid_utf8_on_echo_is_1007() {
    let server = echo_server();
    let mut raw = raw::ws(server.addr, "/echo");
    raw.send(&frame(true, TEXT, b"ok\xff"));
    let before = raw.expect_close(Some(1007));
    assert!(before.is_empty(), "invalid text was echoed: {before:?}");
}

#[test]
fn echo_has_no_rate_limit() {
    let server = TestServer::with(|c| {
        c.echo = true;
        c.rate_limit = 1;
    });
    let mut client = Client::connect(server.addr, "/echo");
    for i in 0..40 {
        client.send_text(&format!("m{i}"));
    }
    for i in 0..40 {
        match client.next_within(Duration::from_secs(3)) {
            Got::Msg(Message::Text(t)) => assert_eq!(t.as_str(), format!("m{i}")),
            other => panic!("echo {i}: got {other:?}"),
        }
    }
}

#[test]
fn other_paths_are_still_chat_with_echo_on() {
    let server = echo_server();
    let (mut chat, users) = Client::chat_at(server.addr, "/");
    assert_eq!(users["type"], "users");
    chat.send_binary(b"x");
    assert_eq!(chat.expect_close(), Some(1003));
    // The query string does not change the route.
    let mut raw = raw::ws(server.addr, "/echo?debug=1");
    raw.send(&frame(true, TEXT, b"q"));
    let f = raw.read_frame();
    assert_eq!((f.opcode, f.payload.as_slice()), (TEXT, &b"q"[..]));
}

#[test]
fn without_echo_flag_echo_path_is_chat() {
    let server = TestServer::new();
    let (mut client, users) = Client::chat_at(server.addr, "/echo");
    assert_eq!(users["type"], "users");
    client.send_text("not json");
    client.expect_error("bad_json");
    client.send_binary(b"bin");
    assert_eq!(client.expect_close(), Some(1003));
}

#[test]
fn echo_uses_each_length_encoding_correctly() {
    let server = TestServer::with(|c| {
        c.echo = true;
        c.max_message_bytes = 200_000;
    });
    let mut raw = raw::ws(server.addr, "/echo");
    // 7-bit, 16-bit and 64-bit lengths at their edges; the raw reader
    // rejects non-minimal encodings.
    for len in [0usize, 125, 126, 65535, 65536, 100_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        raw.send(&frame(true, BINARY, &payload));
        let f = raw.read_frame();
        assert!(f.fin);
        assert_eq!(f.opcode, BINARY);
        assert!(f.payload == payload, "echo of {len} bytes differs");
    }
}

#[test]
fn empty_fragments_are_fine() {
    let server = echo_server();
    let mut raw = raw::ws(server.addr, "/echo");
    raw.send(&frame(false, TEXT, b""));
    raw.send(&frame(false, CONT, b"ab"));
    raw.send(&frame(false, CONT, b""));
    raw.send(&frame(true, CONT, b""));
    let f = raw.read_frame();
    assert!(f.fin);
    assert_eq!((f.opcode, f.payload.as_slice()), (TEXT, &b"ab"[..]));
}
