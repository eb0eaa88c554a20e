//! The chat application: several connections sending arbitrary messages,
//! opening and leaving, with a clock the input moves forward.
//!
//! Input layout: lines separated by `\n`. The first byte of a line is a
//! command, the rest its argument:
//! - `A`-`D`: connection 0-3 opens (`on_open`; nothing if already open);
//! - `w`-`z`: connection 0-3 leaves (its name is freed, `on_leave`);
//! - `t`: the clock moves forward by the argument's first byte * 10 ms;
//! - `a`-`d`: the argument is a message from connection 0-3;
//! - any other byte `c`: the whole line is a message from connection `c % 4`.
//!
//! If the first line starts with `!`, its next two bytes set the rate limit
//! (`% 4`, 0 = off) and `--max-chat-chars` (`% 40 + 1`); otherwise the rate
//! limit is off and the limit is 10 characters. Connections use slots
//! 0, 1, 7 and 1000 (slots are slab keys, not dense).
//!
//! Invariants beyond "no panic":
//! - every frame the chat queues is one unmasked, final text frame whose
//!   payload is a JSON object with a known `type`, and is sent to an open
//!   connection;
//! - names are unique ignoring case, 1-32 characters without controls, and
//!   `named_count` matches the connections holding a name;
//! - a rejected message changes nothing: the sender gets one `error`,
//!   nobody else gets anything, its name and colour stay;
//! - a `usermsg` text is trimmed, non-empty and within the limit; colours
//!   are six upper-case hex digits; broadcasts carry an `id`, private
//!   lines none;
//! - an opened connection gets `users` then `history` (kept: broadcast
//!   lines only, each with its id), and nobody else hears of it;
//! - the only close the chat asks for is 1008 (flooding).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};
use wschat::app::chat::{Chat, ChatPeer, MAX_NAME_CHARS, Room};
use wschat::app::history::History;
use wschat::engine::close::CloseCode;
use wschat::engine::frame::{Decoder, Event};

const SLOTS: [usize; 4] = [0, 1, 7, 1000];

#[derive(Default)]
struct FuzzRoom {
    peers: BTreeMap<usize, ChatPeer>,
    /// What each slot received during the current operation.
    inbox: BTreeMap<usize, Vec<Value>>,
    /// Closes the chat asked for during the current operation.
    closes: Vec<(usize, u16)>,
    max_chars: usize,
}

/// Checks a frame the chat built and returns its JSON payload.
fn decode(frame: &[u8], max_chars: usize) -> Value {
    assert!(frame.len() >= 2);
    assert_eq!(frame[0], 0x81, "not a final text frame");
    assert_eq!(frame[1] & 0x80, 0, "server frames are not masked");
    // The server's frames must be readable by a client: decode it with the
    // engine's own decoder after masking it with a zero key.
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
    let payload = match decoder.next_event(&mut input) {
        Ok(Some(Event::Text(t))) => t.to_vec(),
        other => panic!("frame does not decode to one text message: {other:?}"),
    };
    assert!(input.is_empty(), "bytes after the frame");
    let value: Value = serde_json::from_slice(&payload).expect("payload is not JSON");
    let object = value.as_object().expect("payload is not a JSON object");
    let kind = object.get("type").and_then(Value::as_str).expect("no type");
    match kind {
        "usermsg" => {
            let message = object["message"].as_str().expect("message");
            assert!(!message.is_empty() && message.trim() == message);
            assert!(message.chars().count() <= max_chars);
            check_color(&object["color"]);
            check_name(&object["name"]);
            assert!(object["ts"].is_u64());
            // Broadcasts carry an id, private lines none (section 9).
            assert_eq!(object.contains_key("id"), !object.contains_key("toname"));
        }
        "history" => {
            for kept in object["messages"].as_array().expect("messages") {
                assert_eq!(kept["type"], "usermsg", "{kept}");
                assert!(kept["id"].is_string() && kept.get("toname").is_none());
            }
        }
        "system" => {
            let event = object["event"].as_str().expect("event");
            assert!(matches!(event, "join" | "leave" | "rename"), "{event}");
            check_name(&object["name"]);
        }
        "users" => {
            for user in object["users"].as_array().expect("users") {
                check_name(&user["name"]);
                check_color(&user["color"]);
            }
        }
        "error" => {
            let code = object["code"].as_str().expect("code");
            assert!(
                matches!(
                    code,
                    "rate_limited"
                        | "bad_json"
                        | "bad_request"
                        | "invalid_name"
                        | "name_taken"
                        | "not_joined"
                        | "too_long"
                        | "unknown_user"
                ),
                "{code}"
            );
        }
        other => panic!("unknown type {other}"),
    }
    value
}

fn check_name(name: &Value) {
    let name = name.as_str().expect("name is a string");
    let chars = name.chars().count();
    assert!((1..=MAX_NAME_CHARS).contains(&chars), "name {name:?}");
    assert!(!name.chars().any(char::is_control), "name {name:?}");
    assert_eq!(name.trim(), name, "untrimmed name {name:?}");
}

fn check_color(color: &Value) {
    let color = color.as_str().expect("color is a string");
    assert!(
        color.len() == 6
            && color
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b)),
        "colour {color:?}"
    );
}

impl Room for FuzzRoom {
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer> {
        self.peers.get_mut(&slot)
    }
    fn send(&mut self, slot: usize, frame: &[u8]) {
        assert!(self.peers.contains_key(&slot), "send to closed slot {slot}");
        let value = decode(frame, self.max_chars);
        self.inbox.entry(slot).or_default().push(value);
    }
    fn broadcast(&mut self, frame: &[u8]) {
        let value = decode(frame, self.max_chars);
        for slot in self.peers.keys() {
            self.inbox.entry(*slot).or_default().push(value.clone());
        }
    }
    fn close(&mut self, slot: usize, code: CloseCode, _reason: &str) {
        assert!(
            self.peers.contains_key(&slot),
            "close of closed slot {slot}"
        );
        assert_eq!(code, CloseCode::POLICY_VIOLATION);
        self.closes.push((slot, code.0));
    }
}

/// A connection leaves: what the server does when it stops being a chat connection.
fn leave(chat: &mut Chat, room: &mut FuzzRoom, slot: usize) {
    if let Some(peer) = room.peers.remove(&slot) {
        chat.on_leave(room, peer);
    }
}

fn check_names(chat: &Chat, room: &FuzzRoom) {
    let mut seen = HashSet::new();
    for peer in room.peers.values() {
        if let Some(name) = &peer.name {
            assert!(seen.insert(name.to_lowercase()), "name {name:?} held twice");
            check_name(&Value::String(name.to_string()));
        }
        check_color(&Value::String(
            peer.color.as_str().to_string(),
        ));
    }
    assert_eq!(chat.named_count(), seen.len(), "named_count");
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n').peekable();
    let (rate, max_chars) = match lines.peek() {
        Some([b'!', rate, max, ..]) => (u32::from(*rate % 4), usize::from(*max % 40) + 1),
        _ => (0, 10),
    };
    let mut chat = Chat::new(max_chars, rate, History::new(5, 4096));
    let mut room = FuzzRoom {
        max_chars,
        ..FuzzRoom::default()
    };
    let mut now = Instant::now();

    for line in lines {
        let Some((&command, argument)) = line.split_first() else {
            continue;
        };
        room.inbox.clear();
        match command {
            b'!' => {}
            b'A'..=b'D' => {
                let slot = SLOTS[usize::from(command - b'A')];
                if let Entry::Vacant(entry) = room.peers.entry(slot) {
                    entry.insert(chat.new_peer(slot, now));
                    chat.on_open(&mut room, slot);
                    let got = room.inbox.remove(&slot).unwrap_or_default();
                    assert_eq!(got.len(), 2);
                    assert_eq!(got[0]["type"], "users");
                    assert_eq!(got[1]["type"], "history");
                    assert!(room.inbox.is_empty(), "others told of an unnamed open");
                }
            }
            b'w'..=b'z' => leave(&mut chat, &mut room, SLOTS[usize::from(command - b'w')]),
            b't' => {
                let ms = argument.first().copied().unwrap_or(0);
                now += Duration::from_millis(u64::from(ms) * 10);
            }
            _ => {
                let (slot, text) = match command {
                    b'a'..=b'd' => (SLOTS[usize::from(command - b'a')], argument),
                    _ => (SLOTS[usize::from(command % 4)], line),
                };
                let Some(before) = room.peers.get(&slot).map(|p| (p.name.clone(), p.color)) else {
                    continue;
                };
                chat.on_message(&mut room, slot, text, now);
                let mine = room.inbox.get(&slot).cloned().unwrap_or_default();
                let rejected = mine.last().is_some_and(|m| m["type"] == "error");
                if rejected {
                    // Atomic rejection: one error, to the sender only.
                    assert_eq!(room.inbox.len(), 1, "a rejected message reached others");
                    let after = room.peers.get(&slot).map(|p| (p.name.clone(), p.color));
                    assert_eq!(after, Some(before), "a rejected message changed state");
                    if room.closes.is_empty() {
                        assert_eq!(mine.len(), 1);
                    }
                } else if !mine.is_empty()
                    && mine.iter().all(|m| m["type"] == "users" || m["type"] == "history")
                {
                    assert_eq!(room.inbox.len(), 1, "a users or history reply reached others");
                }
                // Closes asked for are carried out after the message, as the
                // server's `settle` does.
                for (slot, _) in std::mem::take(&mut room.closes) {
                    leave(&mut chat, &mut room, slot);
                }
            }
        }
        check_names(&chat, &room);
    }
});
