//! The chat history of PROTOCOL section 9 and the ids that broadcasts carry.
//!
//! [`History`] keeps the last N broadcast objects (`usermsg` without
//! `toname`, `announce`) as the exact JSON bytes that were delivered, and
//! the framed `{"type":"history","messages":[...]}` text frame built from
//! them. The frame is built once and reused for every new connection until
//! the history changes: a burst of connections after a restart costs one
//! serialisation, not one per connection (STYLE: no serialisation per
//! recipient).
//!
//! Memory is bounded twice: at most N messages (N <= 1000) and at most half
//! of `--max-output-bytes` of JSON in total, so that the `history` frame
//! always fits a new connection's output budget beside the `users` frame.
//!
//! [`IdGenerator`] makes the `id` of a single node. A cluster uses the ids
//! of its ordered path (Redis stream ids) instead, which is why the two are
//! separate.

use crate::engine::frame::{Opcode, encode_frame};
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest accepted `--history` (PROTOCOL section 9).
pub const MAX_HISTORY: usize = 1000;
/// Default `--history`.
pub const DEFAULT_HISTORY: usize = 100;

const HEAD: &[u8] = b"{\"type\":\"history\",\"messages\":[";
const TAIL: &[u8] = b"]}";

/// The last broadcasts, oldest first, and the cached `history` frame.
#[derive(Debug)]
pub struct History {
    /// `--history`; 0 turns the history off (nothing kept, no frame).
    limit: usize,
    /// Half of `--max-output-bytes`: the JSON kept never exceeds it.
    max_bytes: usize,
    messages: VecDeque<Box<[u8]>>,
    /// Sum of the lengths in `messages`, for the cap and for `/metrics`.
    bytes: usize,
    /// The framed `history` message; valid while `stale` is false.
    frame: Vec<u8>,
    stale: bool,
}

impl History {
    /// A history of at most `limit` messages (`--history`, clamped to
    /// [`MAX_HISTORY`]) whose JSON together stays within half of
    /// `max_output_bytes`.
    pub fn new(limit: usize, max_output_bytes: usize) -> History {
        History {
            limit: limit.min(MAX_HISTORY),
            max_bytes: max_output_bytes / 2,
            messages: VecDeque::new(),
            bytes: 0,
            frame: Vec::new(),
            stale: true,
        }
    }

    /// False with `--history 0`: no `history` message is ever sent and a
    /// `{"type":"history"}` request is ignored.
    pub fn is_enabled(&self) -> bool {
        self.limit > 0
    }

    /// Keeps one broadcast, given as the JSON object exactly as it was
    /// delivered (the payload of its frame, `id` and `ts` included).
    ///
    /// The oldest messages go first when there would be more than N or more
    /// than the byte cap. A single message larger than the cap on its own
    /// empties the history: what is kept is always the most recent run of
    /// broadcasts, never older ones with a gap before the present.
    pub fn push(&mut self, json: &[u8]) {
        if !self.is_enabled() {
            return;
        }
        self.stale = true;
        if json.len() > self.max_bytes {
            self.clear();
            return;
        }
        while self.messages.len() >= self.limit
            || self.bytes.saturating_add(json.len()) > self.max_bytes
        {
            let Some(old) = self.messages.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(old.len());
        }
        self.bytes = self.bytes.saturating_add(json.len());
        self.messages.push_back(json.into());
    }

    /// Forgets everything (a cluster reloading the shared history).
    pub fn clear(&mut self) {
        self.messages.clear();
        self.bytes = 0;
        self.stale = true;
    }

    /// Messages kept (`wschat_history_messages`).
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True when nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes of JSON kept (`wschat_history_bytes`).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The kept messages, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = &[u8]> {
        self.messages.iter().map(|m| &m[..])
    }

    /// The complete `history` text frame, oldest first, rebuilt only if a
    /// message came or went since the last call. `None` with `--history 0`.
    pub fn frame(&mut self) -> Option<&[u8]> {
        if !self.is_enabled() {
            return None;
        }
        if self.stale {
            let mut json =
                Vec::with_capacity(HEAD.len() + self.bytes + self.messages.len() + TAIL.len());
            json.extend_from_slice(HEAD);
            for (i, message) in self.messages.iter().enumerate() {
                if i > 0 {
                    json.push(b',');
                }
                json.extend_from_slice(message);
            }
            json.extend_from_slice(TAIL);
            self.frame.clear();
            encode_frame(&mut self.frame, Opcode::Text, &json);
            // A burst of history once held at the cap should not pin its
            // capacity after the history shrank.
            self.frame.shrink_to(self.frame.len().saturating_mul(2));
            self.stale = false;
        }
        Some(&self.frame)
    }

    /// Appends the two history gauges in the Prometheus text format.
    pub fn render_metrics(&self, out: &mut String) {
        // Writing into a String cannot fail.
        let _ = writeln!(
            out,
            "# HELP wschat_history_messages Broadcasts kept for the history message.\n\
             # TYPE wschat_history_messages gauge\n\
             wschat_history_messages {}\n\
             # HELP wschat_history_bytes Bytes of JSON kept for the history message.\n\
             # TYPE wschat_history_bytes gauge\n\
             wschat_history_bytes {}",
            self.len(),
            self.bytes()
        );
    }
}

/// Ids for broadcasts of a single node, unique across its restarts.
///
/// An id is `PREFIX-COUNTER`: the prefix is made once per process from the
/// start time in milliseconds and 30 bits from the standard library's
/// OS-seeded hasher keys (14 base-36 digits); the counter counts up from 0
/// in base 36. Two runs would share a prefix only if they started in the
/// same millisecond and drew the same 30 random bits (one in a billion).
/// Ids hold only `[a-z0-9-]` and stay under 30 characters (PROTOCOL
/// section 9 allows 1-64 of `[A-Za-z0-9_-]`); typically 16-18, since every
/// broadcast frame carries one to every recipient.
#[derive(Debug)]
pub struct IdGenerator {
    prefix: String,
    next: u64,
}

impl IdGenerator {
    /// A generator with a fresh prefix for this process.
    pub fn new() -> IdGenerator {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        // RandomState's keys come from the OS random source, once per
        // process and then incremented: good enough to tell runs apart
        // without a random-number crate.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        // The start time (8 base-36 digits until 2059) and 30 random bits
        // in 6 fixed-width digits tell processes apart; the counter after
        // the dash tells messages apart. Short on purpose: every broadcast
        // frame carries its id to every recipient.
        let mut prefix = String::new();
        push_base36(&mut prefix, millis);
        let mut tail = String::new();
        push_base36(&mut tail, (random & 0x3FFF_FFFF) + 36u64.pow(6));
        prefix.push_str(tail.get(1..).unwrap_or("0"));
        IdGenerator { prefix, next: 0 }
    }

    /// The next id.
    pub fn next_id(&mut self) -> String {
        let mut id = String::with_capacity(self.prefix.len() + 14);
        id.push_str(&self.prefix);
        id.push('-');
        push_base36(&mut id, self.next);
        self.next = self.next.wrapping_add(1);
        id
    }
}

impl Default for IdGenerator {
    fn default() -> IdGenerator {
        IdGenerator::new()
    }
}

fn push_base36(out: &mut String, mut n: u64) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = [0u8; 13];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = DIGITS[(n % 36) as usize];
        n /= 36;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::frame::{Decoder, Event};
    use serde_json::Value;
    use std::collections::HashSet;

    /// Decodes a server frame with the engine's decoder (masked with a zero
    /// key, as a client would see it) and parses its JSON.
    fn payload(frame: &[u8]) -> Value {
        let mut masked = frame.to_vec();
        masked[1] |= 0x80;
        let header_len = match frame[1] & 0x7F {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        masked.splice(header_len..header_len, [0u8; 4]);
        let mut decoder = Decoder::new(usize::MAX);
        let mut input = masked.as_slice();
        match decoder.next_event(&mut input) {
            Ok(Some(Event::Text(t))) => serde_json::from_slice(t).unwrap(),
            other => panic!("not one text frame: {other:?}"),
        }
    }

    fn messages(history: &mut History) -> Vec<Value> {
        let value = payload(history.frame().unwrap());
        assert_eq!(value["type"], "history");
        value["messages"].as_array().unwrap().clone()
    }

    fn msg(i: usize) -> Vec<u8> {
        format!("{{\"type\":\"usermsg\",\"name\":\"a\",\"message\":\"m{i}\",\"id\":\"x-{i}\"}}")
            .into_bytes()
    }

    #[test]
    fn empty_history_is_an_empty_array() {
        let mut h = History::new(100, 1 << 20);
        assert!(h.is_enabled() && h.is_empty());
        assert_eq!(
            h.frame().unwrap(),
            b"\x81\x20{\"type\":\"history\",\"messages\":[]}"
        );
        assert_eq!((h.len(), h.bytes()), (0, 0));
    }

    #[test]
    fn keeps_the_last_n_oldest_first_as_delivered() {
        let mut h = History::new(3, 1 << 20);
        for i in 0..5 {
            h.push(&msg(i));
        }
        let got = messages(&mut h);
        let texts: Vec<&str> = got.iter().map(|m| m["message"].as_str().unwrap()).collect();
        assert_eq!(texts, ["m2", "m3", "m4"]);
        assert_eq!(h.len(), 3);
        assert_eq!(h.bytes(), msg(2).len() + msg(3).len() + msg(4).len());
        let kept: Vec<&[u8]> = h.messages().collect();
        assert_eq!(kept, [&msg(2)[..], &msg(3)[..], &msg(4)[..]]);
    }

    #[test]
    fn history_zero_keeps_nothing_and_has_no_frame() {
        let mut h = History::new(0, 1 << 20);
        h.push(&msg(1));
        assert!(!h.is_enabled());
        assert_eq!((h.len(), h.bytes()), (0, 0));
        assert!(h.frame().is_none());
    }

    #[test]
    fn limit_is_clamped_to_1000() {
        let mut h = History::new(5000, usize::MAX);
        for i in 0..1200 {
            h.push(&msg(i));
        }
        assert_eq!(h.len(), MAX_HISTORY);
        assert_eq!(messages(&mut h)[0]["message"], "m200");
    }

    #[test]
    fn byte_cap_is_half_the_output_budget() {
        let one = msg(0).len();
        // Room for exactly two messages in half of the budget.
        let mut h = History::new(100, 2 * (2 * one + 1));
        for i in 0..5 {
            h.push(&msg(i));
            assert!(h.bytes() <= 2 * one + 1);
        }
        assert_eq!(h.len(), 2);
        let got = messages(&mut h);
        assert_eq!(got[0]["message"], "m3");
        assert_eq!(got[1]["message"], "m4");
    }

    #[test]
    fn a_message_over_the_cap_empties_the_history() {
        let mut h = History::new(100, 400);
        h.push(&msg(1));
        let big = format!("{{\"message\":\"{}\"}}", "x".repeat(300));
        h.push(big.as_bytes());
        assert!(h.is_empty());
        assert_eq!(h.bytes(), 0);
        assert!(messages(&mut h).is_empty());
        h.push(&msg(2));
        assert_eq!(messages(&mut h)[0]["message"], "m2");
    }

    #[test]
    fn frame_is_rebuilt_only_when_the_history_changed() {
        let mut h = History::new(10, 1 << 20);
        h.push(&msg(1));
        let first = h.frame().unwrap().as_ptr();
        assert!(!h.stale);
        // Unchanged: the same bytes, not rebuilt.
        assert_eq!(h.frame().unwrap().as_ptr(), first);
        assert!(!h.stale);
        h.push(&msg(2));
        assert!(h.stale);
        assert_eq!(messages(&mut h).len(), 2);
        h.clear();
        assert!(messages(&mut h).is_empty());
    }

    #[test]
    fn large_history_uses_a_64_bit_length() {
        let mut h = History::new(1000, 1 << 22);
        let padded = format!("{{\"message\":\"{}\"}}", "x".repeat(100));
        for _ in 0..1000 {
            h.push(padded.as_bytes());
        }
        assert_eq!(h.bytes(), 1000 * padded.len());
        let frame = h.frame().unwrap().to_vec();
        assert_eq!(frame[1], 127);
        assert_eq!(messages(&mut h).len(), 1000);
    }

    #[test]
    fn metrics_lines() {
        let mut h = History::new(10, 1 << 20);
        h.push(b"{}");
        let mut out = String::new();
        h.render_metrics(&mut out);
        assert!(out.contains("\nwschat_history_messages 1\n"));
        assert!(out.ends_with("\nwschat_history_bytes 2\n"));
        assert!(out.contains("# TYPE wschat_history_bytes gauge\n"));
    }

    fn valid_id(id: &str) -> bool {
        (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    #[test]
    fn ids_are_valid_and_unique() {
        let mut ids = IdGenerator::new();
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next_id();
            assert!(valid_id(&id), "{id}");
            assert!(id.len() < 40, "{id}");
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn generators_started_together_do_not_collide() {
        // Same process, same millisecond most likely: only the random part
        // tells them apart, as for two runs reusing a pid.
        let mut a = IdGenerator::new();
        let mut b = IdGenerator::new();
        assert_ne!(a.prefix, b.prefix);
        assert_ne!(a.next_id(), b.next_id());
    }

    /// Two runs of this very test binary stand for two runs of the server
    /// (a restart): their ids never meet.
    #[test]
    fn ids_differ_across_processes() {
        const NAME: &str = "app::history::tests::ids_differ_across_processes";
        if std::env::var_os("WSCHAT_TEST_PRINT_IDS").is_some() {
            let mut ids = IdGenerator::new();
            for _ in 0..100 {
                println!("ID {}", ids.next_id());
            }
            return;
        }
        let run = || -> HashSet<String> {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env("WSCHAT_TEST_PRINT_IDS", "1")
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                // libtest may print its own text before ours on a line.
                .filter_map(|l| l.rsplit_once("ID ").map(|(_, id)| id))
                .map(str::to_string)
                .collect()
        };
        let first = run();
        let second = run();
        assert_eq!((first.len(), second.len()), (100, 100));
        assert!(first.is_disjoint(&second));
    }

    #[test]
    fn ids_at_the_counter_limit_stay_valid() {
        let mut ids = IdGenerator::new();
        ids.next = u64::MAX;
        let id = ids.next_id();
        assert!(valid_id(&id) && id.ends_with("-3w5e11264sgsf"), "{id}");
    }

    #[test]
    fn base36() {
        let s = |n| {
            let mut out = String::new();
            push_base36(&mut out, n);
            out
        };
        assert_eq!(s(0), "0");
        assert_eq!(s(35), "z");
        assert_eq!(s(36), "10");
        assert_eq!(s(u64::MAX), "3w5e11264sgsf");
    }
}
