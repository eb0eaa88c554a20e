//! Unit tests of the parent module.

use super::*;

/// A masked client frame, built independently of the decoder.
fn client_frame(first: u8, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut f = vec![first];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&key);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    f
}

const KEY: [u8; 4] = [0xA1, 0x02, 0x7F, 0x33];

#[derive(Debug, PartialEq)]
enum Owned {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

/// Feeds `bytes` in pieces of `step` and collects events or the error.
fn decode(bytes: &[u8], step: usize, max: usize) -> Result<Vec<Owned>, FrameError> {
    let mut d = Decoder::new(max);
    let mut events = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        let mut input = piece;
        while let Some(e) = d.next_event(&mut input)? {
            events.push(match e {
                Event::Text(t) => Owned::Text(String::from_utf8(t.to_vec()).unwrap()),
                Event::Binary(b) => Owned::Binary(b.to_vec()),
                Event::Ping(p) => Owned::Ping(p.to_vec()),
                Event::Pong(p) => Owned::Pong(p.to_vec()),
                Event::Close(c, r) => Owned::Close(c, r.to_string()),
            });
        }
        assert!(input.is_empty(), "decoder left input unconsumed");
    }
    Ok(events)
}

#[test]
fn rfc_single_frame_masked_text() {
    // RFC 6455 section 5.7.
    let bytes = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    for step in 1..=bytes.len() {
        assert_eq!(
            decode(&bytes, step, 100).unwrap(),
            vec![Owned::Text("Hello".into())]
        );
    }
}

#[test]
fn lengths_7_16_and_64_bit() {
    for len in [0usize, 125, 126, 65535, 65536, 70000] {
        let payload = vec![b'x'; len];
        let frame = client_frame(0x82, &payload, KEY);
        let events = decode(&frame, 4096, 1 << 20).unwrap();
        assert_eq!(events, vec![Owned::Binary(payload)], "len {len}");
    }
}

#[test]
fn fragments_with_a_ping_between_them() {
    let mut bytes = client_frame(0x01, b"Hel", KEY);
    bytes.extend(client_frame(0x89, b"are you there", KEY));
    bytes.extend(client_frame(0x00, b"lo, ", KEY));
    bytes.extend(client_frame(0x80, b"world", KEY));
    for step in [1, 3, 7, 1000] {
        assert_eq!(
            decode(&bytes, step, 100).unwrap(),
            vec![
                Owned::Ping(b"are you there".to_vec()),
                Owned::Text("Hello, world".into())
            ]
        );
    }
}

#[test]
fn code_point_split_across_fragments_is_valid() {
    let euro = "€".as_bytes();
    let mut bytes = client_frame(0x01, &euro[..1], KEY);
    bytes.extend(client_frame(0x00, &euro[1..2], KEY));
    bytes.extend(client_frame(0x80, &euro[2..], KEY));
    assert_eq!(
        decode(&bytes, 2, 100).unwrap(),
        vec![Owned::Text("€".into())]
    );
}

#[test]
fn invalid_utf8_fails_with_1007_before_the_message_ends() {
    let mut bytes = client_frame(0x01, b"ok\xff", KEY);
    // Never finished: the error must come from the first fragment.
    bytes.truncate(bytes.len());
    assert_eq!(decode(&bytes, 100, 100).unwrap_err().code, CloseCode(1007));
    let bytes = client_frame(0x81, b"\xe2\x82", KEY);
    assert_eq!(decode(&bytes, 100, 100).unwrap_err().code, CloseCode(1007));
}

#[test]
fn protocol_errors_are_1002() {
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unmasked", vec![0x81, 0x01, b'a']),
        ("rsv1", client_frame(0xC1, b"a", KEY)),
        ("rsv3", client_frame(0x91, b"a", KEY)),
        ("opcode 3", client_frame(0x83, b"", KEY)),
        ("opcode 11", client_frame(0x8B, b"", KEY)),
        ("fragmented ping", client_frame(0x09, b"", KEY)),
        ("big ping", client_frame(0x89, &[0; 126], KEY)),
        ("lone continuation", client_frame(0x80, b"a", KEY)),
        ("close 1 byte", client_frame(0x88, &[3], KEY)),
        (
            "close 1005",
            client_frame(0x88, &1005u16.to_be_bytes(), KEY),
        ),
        ("close 999", client_frame(0x88, &999u16.to_be_bytes(), KEY)),
        (
            "close 5000",
            client_frame(0x88, &5000u16.to_be_bytes(), KEY),
        ),
        ("text in text", {
            let mut b = client_frame(0x01, b"a", KEY);
            b.extend(client_frame(0x81, b"b", KEY));
            b
        }),
        (
            "64-bit top bit",
            vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4],
        ),
    ];
    for (name, bytes) in cases {
        let err = decode(&bytes, 1, 1 << 20).unwrap_err();
        assert_eq!(err.code, CloseCode(1002), "{name}");
    }
}

#[test]
fn close_frames() {
    let mut payload = 4001u16.to_be_bytes().to_vec();
    payload.extend_from_slice("bye ✓".as_bytes());
    assert_eq!(
        decode(&client_frame(0x88, &payload, KEY), 3, 10).unwrap(),
        vec![Owned::Close(Some(4001), "bye ✓".into())]
    );
    assert_eq!(
        decode(&client_frame(0x88, b"", KEY), 3, 10).unwrap(),
        vec![Owned::Close(None, String::new())]
    );
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.push(0xff);
    assert_eq!(
        decode(&client_frame(0x88, &bad_reason, KEY), 3, 10)
            .unwrap_err()
            .code,
        CloseCode(1007)
    );
}

#[test]
fn too_big_is_judged_from_the_header_alone() {
    // Only the header of a 1 MiB frame: no payload sent yet.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 20).to_be_bytes());
    header.extend_from_slice(&KEY);
    assert_eq!(
        decode(&header, 100, 65536).unwrap_err().code,
        CloseCode(1009)
    );
    // Fragments adding up past the limit.
    let mut bytes = client_frame(0x02, &[0; 60], KEY);
    bytes.extend(client_frame(0x80, &[0; 41], KEY));
    assert_eq!(decode(&bytes, 100, 100).unwrap_err().code, CloseCode(1009));
    // Exactly at the limit is fine.
    let mut bytes = client_frame(0x02, &[0; 60], KEY);
    bytes.extend(client_frame(0x80, &[0; 40], KEY));
    assert_eq!(decode(&bytes, 100, 100).unwrap().len(), 1);
}

#[test]
fn empty_text_message_and_consecutive_messages() {
    let mut bytes = client_frame(0x81, b"", KEY);
    bytes.extend(client_frame(0x81, b"second", KEY));
    assert_eq!(
        decode(&bytes, 5, 100).unwrap(),
        vec![Owned::Text(String::new()), Owned::Text("second".into())]
    );
}

#[test]
fn closing_mode_steps_over_a_failed_message_to_the_close_reply() {
    let mut d = Decoder::new(100);
    let mut bytes = client_frame(0x81, b"bad \xff utf8 and more", KEY);
    bytes.extend(client_frame(0x82, &[7; 500], KEY));
    bytes.extend(client_frame(0x89, b"ping", KEY));
    bytes.extend(client_frame(0x88, &1000u16.to_be_bytes(), KEY));
    let mut input = &bytes[..];
    assert_eq!(d.next_event(&mut input).unwrap_err().code, CloseCode(1007));
    d.enter_closing();
    assert_eq!(
        d.next_event(&mut input).unwrap(),
        Some(Event::Close(None, ""))
    );
    // Too big: the header alone fails, and its payload is stepped over.
    let mut d = Decoder::new(10);
    let mut bytes = client_frame(0x82, &[1; 300], KEY);
    bytes.extend(client_frame(0x88, b"", KEY));
    let mut input = &bytes[..];
    assert_eq!(d.next_event(&mut input).unwrap_err().code, CloseCode(1009));
    d.enter_closing();
    for piece in input.chunks(7) {
        let mut p = piece;
        if let Some(event) = d.next_event(&mut p).unwrap() {
            assert_eq!(event, Event::Close(None, ""));
            return;
        }
    }
    panic!("close reply not seen");
}

#[test]
fn closing_mode_steps_over_frames_with_reserved_opcodes_and_bits() {
    for first in [0x83u8, 0xC1, 0x8B] {
        let mut d = Decoder::new(100);
        let mut bytes = client_frame(first, b"xyz", KEY);
        bytes.extend(client_frame(0x89, &[0; 126], KEY));
        bytes.extend(client_frame(0x88, &1002u16.to_be_bytes(), KEY));
        let mut input = &bytes[..];
        assert_eq!(d.next_event(&mut input).unwrap_err().code, CloseCode(1002));
        d.enter_closing();
        assert_eq!(
            d.next_event(&mut input).unwrap(),
            Some(Event::Close(None, ""))
        );
        assert!(input.is_empty());
    }
}

#[test]
fn trim_keeps_a_message_in_progress_and_frees_the_rest() {
    let mut d = Decoder::new(1000);
    let mut bytes = client_frame(0x81, &[b'a'; 300], KEY);
    bytes.extend(client_frame(0x01, b"half", KEY));
    let mut input = &bytes[..];
    assert!(matches!(d.next_event(&mut input), Ok(Some(Event::Text(_)))));
    assert_eq!(d.next_event(&mut input), Ok(None));
    d.trim();
    assert_eq!(d.message, b"half");
    let rest = client_frame(0x80, b" done", KEY);
    let mut input = &rest[..];
    assert_eq!(
        d.next_event(&mut input),
        Ok(Some(Event::Text(b"half done")))
    );
    d.trim();
    assert_eq!(d.buffered_bytes(), 0);
}

#[test]
fn encoder_writes_the_three_length_forms() {
    for (len, header) in [(5usize, 2usize), (126, 4), (65535, 4), (65536, 10)] {
        let mut out = Vec::new();
        encode_frame(&mut out, Opcode::Text, &vec![b'a'; len]);
        assert_eq!(out.len(), header + len);
        assert_eq!(out[0], 0x81);
        assert_eq!(header_len_for(len), header);
    }
    let mut out = Vec::new();
    encode_close(&mut out, 1001, "");
    assert_eq!(out, vec![0x88, 0x02, 0x03, 0xE9]);
}
