//! Micro-benchmarks of the hot codec paths: unmasking (against `memcpy`,
//! its ceiling), frame header parsing, whole-frame decoding, and the chat's
//! JSON parse of a typical message.
//!
//! `cargo bench --bench codec` prints throughput for each.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::Instant;
use wschat::app::chat::{Chat, ChatPeer, Room};
use wschat::app::history::History;
use wschat::engine::close::CloseCode;
use wschat::engine::frame::{Decoder, Event, decode_header};
use wschat::engine::mask::unmask;

fn masking(c: &mut Criterion) {
    let mut group = c.benchmark_group("unmask");
    for size in [100usize, 1500, 65536] {
        let source = vec![0x5Au8; size];
        let mut target = vec![0u8; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("memcpy", size), &size, |b, _| {
            b.iter(|| {
                target.copy_from_slice(black_box(&source));
                black_box(&target);
            })
        });
        group.bench_with_input(BenchmarkId::new("unmask", size), &size, |b, _| {
            b.iter(|| {
                unmask(black_box(&mut target), [1, 2, 3, 4], black_box(1));
            })
        });
    }
    group.finish();
}

fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => frame.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

fn headers_and_frames(c: &mut Criterion) {
    let message = br#"{"name":"alice","message":"a typical chat line of about a hundred bytes, give or take a few","color":"007AFF"}"#;
    let frame = masked_frame(0x1, message);
    c.bench_function("decode_header", |b| {
        b.iter(|| black_box(decode_header(black_box(&frame))))
    });
    // 64 KiB of back-to-back frames, as one read delivers them.
    let mut stream = Vec::new();
    while stream.len() < 65536 {
        stream.extend_from_slice(&frame);
    }
    let mut group = c.benchmark_group("decode_stream");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("100-byte text frames", |b| {
        let mut decoder = Decoder::new(1 << 20);
        b.iter(|| {
            let mut input = &stream[..];
            let mut n = 0;
            while let Ok(Some(event)) = decoder.next_event(&mut input) {
                if let Event::Text(t) = event {
                    n += t.len();
                }
            }
            black_box(n)
        })
    });
    group.finish();
}

/// A room of one connection that only counts what it is sent.
struct CountingRoom {
    peer: ChatPeer,
    sent: usize,
}

impl Room for CountingRoom {
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer> {
        (slot == 0).then_some(&mut self.peer)
    }
    fn send(&mut self, _: usize, frame: &[u8]) {
        self.sent += frame.len();
    }
    fn broadcast(&mut self, frame: &[u8]) {
        self.sent += frame.len();
    }
    fn close(&mut self, _: usize, _: CloseCode, _: &str) {}
}

fn chat_message(c: &mut Criterion) {
    let message = br#"{"name":"alice","message":"a typical chat line of about a hundred bytes, give or take a few","color":"007AFF"}"#;
    let now = Instant::now();
    // The default history: every broadcast line is also kept.
    let mut chat = Chat::new(2000, 0, History::new(100, 1 << 20));
    let mut room = CountingRoom {
        peer: chat.new_peer(0, now),
        sent: 0,
    };
    chat.on_message(&mut room, 0, message, now);
    c.bench_function("chat_message_parse_and_frame", |b| {
        b.iter(|| {
            chat.on_message(&mut room, 0, black_box(message), now);
        })
    });
    black_box(room.sent);
}

/// Issue 5 asks whether a broadcast should be copied into every
/// recipient's buffer or shared (one reference-counted frame, queued by
/// pointer and written with `writev`). Queueing: 1000 recipients.
fn fanout_queueing(c: &mut Criterion) {
    use std::collections::VecDeque;
    use std::rc::Rc;
    const RECIPIENTS: usize = 1000;
    const PER_FLUSH: usize = 8;
    let frame = vec![b'f'; 130];
    let mut group = c.benchmark_group("fanout_queue_8_frames_x_1000");
    group.throughput(Throughput::Elements((RECIPIENTS * PER_FLUSH) as u64));
    let mut copied: Vec<Vec<u8>> = (0..RECIPIENTS).map(|_| Vec::with_capacity(2048)).collect();
    group.bench_function("memcpy_into_each_buffer", |b| {
        b.iter(|| {
            for _ in 0..PER_FLUSH {
                for out in copied.iter_mut() {
                    out.extend_from_slice(black_box(&frame));
                }
            }
            for out in copied.iter_mut() {
                black_box(out.len());
                out.clear();
            }
        })
    });
    let mut shared: Vec<VecDeque<Rc<[u8]>>> = (0..RECIPIENTS)
        .map(|_| VecDeque::with_capacity(16))
        .collect();
    group.bench_function("shared_rc_per_recipient", |b| {
        b.iter(|| {
            for _ in 0..PER_FLUSH {
                let one: Rc<[u8]> = Rc::from(black_box(&frame[..]));
                for queue in shared.iter_mut() {
                    queue.push_back(Rc::clone(&one));
                }
            }
            for queue in shared.iter_mut() {
                black_box(queue.len());
                queue.clear();
            }
        })
    });
    group.finish();
}

/// The write side of the same question: one `write` of a contiguous buffer
/// against one `writev` of eight separate frames, into a socket pair.
fn write_versus_writev(c: &mut Criterion) {
    use std::io::{IoSlice, Read, Write};
    use std::os::unix::net::UnixStream;
    let (mut tx, mut rx) = UnixStream::pair().expect("socket pair");
    let frame = vec![b'f'; 130];
    let contiguous: Vec<u8> = frame.repeat(8);
    let mut sink = vec![0u8; 4096];
    let mut group = c.benchmark_group("flush_8_frames");
    group.throughput(Throughput::Elements(8));
    group.bench_function("write_contiguous", |b| {
        b.iter(|| {
            tx.write_all(black_box(&contiguous)).expect("write");
            rx.read_exact(&mut sink[..contiguous.len()]).expect("read");
        })
    });
    group.bench_function("writev_eight_slices", |b| {
        let slices: Vec<IoSlice<'_>> = (0..8).map(|_| IoSlice::new(&frame)).collect();
        b.iter(|| {
            let n = tx.write_vectored(black_box(&slices)).expect("writev");
            assert_eq!(n, contiguous.len());
            rx.read_exact(&mut sink[..n]).expect("read");
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    masking,
    headers_and_frames,
    chat_message,
    fanout_queueing,
    write_versus_writev
);
criterion_main!(benches);
