//! Unit tests of the parent module.

use super::*;

fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_secs(5),
        max_message_bytes: 1024,
    }
}

fn masked(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [1, 2, 3, 4];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

fn opened(now: Instant) -> Connection {
    let mut c = Connection::new(now, &limits());
    c.open("x", None, now, &limits());
    let n = c.output().len();
    c.consumed(n);
    c
}

#[test]
fn head_split_across_reads_keeps_what_follows() {
    let now = Instant::now();
    let mut c = Connection::new(now, &limits());
    let mut a: &[u8] = b"GET / HTTP/1.1\r\nHo";
    assert_eq!(c.step(&mut a, now, &limits()), Step::NeedMore);
    let mut b: &[u8] = b"st: x\r\n\r\nrest";
    let Step::Head(head) = c.step(&mut b, now, &limits()) else {
        panic!("head expected");
    };
    assert_eq!(&*head, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(b, b"rest");
}

#[test]
fn oversized_head_is_refused_with_431() {
    let now = Instant::now();
    let mut c = Connection::new(now, &limits());
    let big = vec![b'a'; 5000];
    let mut a: &[u8] = &big;
    assert_eq!(c.step(&mut a, now, &limits()), Step::NeedMore);
    let mut b: &[u8] = &big;
    assert!(matches!(
        c.step(&mut b, now, &limits()),
        Step::Refused { status: 431, .. }
    ));
}

#[test]
fn ping_gets_pong_and_close_is_echoed() {
    let now = Instant::now();
    let mut c = opened(now);
    let mut input_bytes = masked(0x9, b"hi");
    input_bytes.extend(masked(0x8, &[0x03, 0xE8]));
    let mut input: &[u8] = &input_bytes;
    assert_eq!(
        c.step(&mut input, now, &limits()),
        Step::Left { code: 1000 }
    );
    assert_eq!(c.output(), b"\x8a\x02hi\x88\x02\x03\xe8");
    assert_eq!(
        c.state(),
        State::Closing,
        "a WebSocket close is not plain HTTP"
    );
    assert!(
        !c.on_drained(now, &limits()),
        "the reply is not written yet"
    );
    let n = c.output().len();
    c.consumed(n);
    assert!(c.on_drained(now, &limits()), "FIN after the close reply");
}

#[test]
fn protocol_error_fails_at_once_and_half_closes() {
    let now = Instant::now();
    let mut c = opened(now);
    let mut input: &[u8] = b"\x81\x02hi"; // unmasked
    assert_eq!(
        c.step(&mut input, now, &limits()),
        Step::Left { code: 1002 }
    );
    let n = c.output().len();
    c.consumed(n);
    assert!(
        c.on_drained(now, &limits()),
        "FIN follows the close frame at once"
    );
    assert!(c.on_eof());
}

#[test]
fn too_big_waits_for_the_close_reply() {
    let now = Instant::now();
    let mut c = opened(now);
    let mut input: &[u8] = &[0x82, 0xFE, 0x10, 0x00, 1, 2, 3, 4];
    assert_eq!(
        c.step(&mut input, now, &limits()),
        Step::Left { code: 1009 }
    );
    let n = c.output().len();
    c.consumed(n);
    assert!(!c.on_drained(now, &limits()));
    // The refused frame's payload is stepped over; the reply behind it
    // ends the exchange.
    let mut rest = vec![0u8; 4096];
    rest.extend(masked(0x8, &[0x03, 0xE8]));
    let mut input: &[u8] = &rest;
    assert_eq!(c.step(&mut input, now, &limits()), Step::Done);
}

#[test]
fn keepalive_pings_then_drops() {
    let now = Instant::now();
    let mut c = opened(now);
    assert_eq!(c.on_deadline(now, &limits()), Expiry::NotYet);
    let later = now + Duration::from_secs(30);
    assert_eq!(c.on_deadline(later, &limits()), Expiry::Pinged);
    assert_eq!(c.output(), b"\x89\x00");
    let gone = later + Duration::from_secs(30);
    assert!(matches!(c.on_deadline(gone, &limits()), Expiry::Drop(_)));
}

#[test]
fn any_frame_answers_the_keepalive() {
    let now = Instant::now();
    let mut c = opened(now);
    let later = now + Duration::from_secs(30);
    assert_eq!(c.on_deadline(later, &limits()), Expiry::Pinged);
    let pong = masked(0xA, b"");
    let mut input: &[u8] = &pong;
    assert_eq!(c.step(&mut input, later, &limits()), Step::NeedMore);
    assert_eq!(
        c.on_deadline(later + Duration::from_secs(30), &limits()),
        Expiry::Pinged
    );
}

#[test]
fn expect_continue_queues_100_before_the_body() {
    let now = Instant::now();
    let mut c = Connection::new(now, &limits());
    let mut input: &[u8] = b"POST /api/x HTTP/1.1\r\nContent-Length: 2\r\n\r\n";
    assert!(matches!(c.step(&mut input, now, &limits()), Step::Head(_)));
    c.expect_body(2, true);
    assert_eq!(c.output(), b"HTTP/1.1 100 Continue\r\n\r\n");
    let mut body: &[u8] = b"{}";
    assert_eq!(
        c.step(&mut body, now, &limits()),
        Step::Body(b"{}".to_vec())
    );
    // An empty body needs no invitation.
    let mut c = Connection::new(now, &limits());
    let mut input: &[u8] = b"POST /api/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    assert!(matches!(c.step(&mut input, now, &limits()), Step::Head(_)));
    c.expect_body(0, true);
    assert!(c.output().is_empty());
    let mut none: &[u8] = b"";
    assert_eq!(c.step(&mut none, now, &limits()), Step::Body(Vec::new()));
}

#[test]
fn body_is_collected_then_the_rest_ignored() {
    let now = Instant::now();
    let mut c = Connection::new(now, &limits());
    let mut input: &[u8] = b"POST /api/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel";
    assert!(matches!(c.step(&mut input, now, &limits()), Step::Head(_)));
    c.expect_body(5, false);
    assert!(c.output().is_empty());
    assert_eq!(c.step(&mut input, now, &limits()), Step::NeedMore);
    let mut more: &[u8] = b"lo and more";
    assert_eq!(
        c.step(&mut more, now, &limits()),
        Step::Body(b"hello".to_vec())
    );
    assert_eq!(c.state(), State::Http);
    let deadline = now + limits().handshake_timeout;
    assert_eq!(
        c.on_deadline(deadline, &limits()),
        Expiry::Drop("done".into())
    );
}
