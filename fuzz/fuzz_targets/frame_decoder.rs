//! The streaming frame decoder with its fragmentation and UTF-8 state, fed
//! the way the poll loop feeds it.
//!
//! Input layout: byte 0 sets `--max-message-bytes` (`byte * 8`, 0 to 2040,
//! so 1009 is easy to reach); byte 1 low 3 bits = how many split points
//! follow (0 to 7), each one byte: the length of the next read (0 = 1 byte).
//! The rest is the client's byte stream, cut into reads at those lengths
//! (whatever is left is the last read).
//!
//! Each read is passed to `next_event` until `Ok(None)`. After an error the
//! harness does what the server does: `enter_closing` and carry on; a
//! second error while closing ends the stream (the server then discards).
//!
//! Invariants beyond "no panic":
//! - `Ok(None)` means the read was consumed entirely;
//! - every call makes progress (no endless loop on a read);
//! - Text events are valid UTF-8 and no larger than the limit, Binary
//!   events no larger than the limit, control payloads at most 125 bytes,
//!   close codes valid and close reasons at most 123 bytes;
//! - after `enter_closing` only Close events come out;
//! - the events and errors do not depend on how the stream is cut into
//!   reads: the fuzzer's cuts, one read, and one byte per read all agree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wschat::engine::close::CloseCode;
use wschat::engine::frame::{Decoder, Event};

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
    Error(u16, &'static str),
}

fn check(event: &Event<'_>, max: usize, closing: bool) {
    if closing {
        assert!(
            matches!(event, Event::Close(..)),
            "{event:?} after enter_closing"
        );
    }
    match event {
        Event::Text(t) => {
            assert!(std::str::from_utf8(t).is_ok(), "Text event is not UTF-8");
            assert!(t.len() <= max, "Text of {} bytes over max {max}", t.len());
        }
        Event::Binary(b) => assert!(b.len() <= max, "Binary of {} bytes over max {max}", b.len()),
        Event::Ping(p) | Event::Pong(p) => assert!(p.len() <= 125),
        Event::Close(code, reason) => {
            if let Some(code) = code {
                assert!(CloseCode::is_valid_from_peer(*code), "close code {code}");
            }
            assert!(reason.len() <= 123);
        }
    }
}

fn own(event: Event<'_>) -> Out {
    match event {
        Event::Text(t) => Out::Text(t.to_vec()),
        Event::Binary(b) => Out::Binary(b.to_vec()),
        Event::Ping(p) => Out::Ping(p.to_vec()),
        Event::Pong(p) => Out::Pong(p.to_vec()),
        Event::Close(code, reason) => Out::Close(code, reason.to_string()),
    }
}

/// Runs the decoder over `reads` as the server would; returns what came out.
fn run<'a>(max: usize, reads: impl Iterator<Item = &'a [u8]>) -> Vec<Out> {
    let mut decoder = Decoder::new(max);
    let mut out = Vec::new();
    for read in reads {
        let mut input = read;
        // Every event or error consumes at least one byte, except the one
        // error that puts the decoder into closing mode.
        let mut budget = read.len() + 2;
        loop {
            assert!(budget > 0, "no progress on a read of {} bytes", read.len());
            budget -= 1;
            let closing = decoder.is_closing();
            match decoder.next_event(&mut input) {
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) with {} bytes left", input.len());
                    break;
                }
                Ok(Some(event)) => {
                    check(&event, max, closing);
                    out.push(own(event));
                }
                Err(e) => {
                    out.push(Out::Error(e.code.0, e.reason));
                    if closing {
                        // The server discards everything from here on.
                        return out;
                    }
                    assert!(
                        matches!(e.code.0, 1002 | 1007 | 1009),
                        "close code {}",
                        e.code.0
                    );
                    decoder.enter_closing();
                    assert!(decoder.is_closing());
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [max_byte, splits, rest @ ..] = data else {
        return;
    };
    let max = usize::from(*max_byte) * 8;
    let count = usize::from(splits & 7).min(rest.len());
    let (cuts, stream) = rest.split_at(count);

    let mut reads = Vec::new();
    let mut left = stream;
    for &cut in cuts {
        let n = usize::from(cut).max(1).min(left.len());
        let (read, tail) = left.split_at(n);
        reads.push(read);
        left = tail;
    }
    reads.push(left);

    let cut = run(max, reads.iter().copied());
    let whole = run(max, std::iter::once(stream));
    assert_eq!(cut, whole, "fuzzer's cuts vs one read");
    let bytewise = run(max, stream.chunks(1));
    assert_eq!(bytewise, whole, "one byte per read vs one read");
});
