//! Unit tests of the parent module.

use super::*;
use crate::app::history::History;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// A room of plain structs, recording what each slot received.
#[derive(Default)]
struct TestRoom {
    peers: BTreeMap<usize, ChatPeer>,
    inbox: BTreeMap<usize, Vec<Value>>,
    closed: Vec<(usize, u16)>,
}

fn payload(frame: &[u8]) -> Value {
    // Frames in these tests are short (7-bit or 16-bit length).
    let start = if frame[1] == 126 { 4 } else { 2 };
    serde_json::from_slice(&frame[start..]).unwrap()
}

impl Room for TestRoom {
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer> {
        self.peers.get_mut(&slot)
    }
    fn send(&mut self, slot: usize, frame: &[u8]) {
        self.inbox.entry(slot).or_default().push(payload(frame));
    }
    fn broadcast(&mut self, frame: &[u8]) {
        for slot in self.peers.keys() {
            self.inbox.entry(*slot).or_default().push(payload(frame));
        }
    }
    fn close(&mut self, slot: usize, code: CloseCode, _: &str) {
        self.closed.push((slot, code.0));
    }
}

struct Fixture {
    chat: Chat,
    room: TestRoom,
    now: Instant,
}

impl Fixture {
    fn new(rate: u32) -> Fixture {
        Fixture::with_history(rate, 3)
    }
    fn with_history(rate: u32, history: usize) -> Fixture {
        Fixture {
            chat: Chat::new(10, rate, History::new(history, 1 << 20)),
            room: TestRoom::default(),
            now: Instant::now(),
        }
    }
    fn open(&mut self, slot: usize) {
        let peer = self.chat.new_peer(slot, self.now);
        self.room.peers.insert(slot, peer);
        self.chat.on_open(&mut self.room, slot);
    }
    fn say(&mut self, slot: usize, text: &str) {
        self.chat
            .on_message(&mut self.room, slot, text.as_bytes(), self.now);
    }
    fn take(&mut self, slot: usize) -> Vec<Value> {
        self.room.inbox.remove(&slot).unwrap_or_default()
    }
    fn last_error(&mut self, slot: usize) -> String {
        let msgs = self.take(slot);
        let last = msgs.last().expect("a reply");
        assert_eq!(last["type"], "error", "{last}");
        last["code"].as_str().unwrap().to_string()
    }
}

#[test]
fn error_codes_in_protocol_order() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.open(2);
    f.say(2, r#"{"type":"join","name":"Bob"}"#);
    f.take(1);
    f.take(2);
    let cases = [
        ("[1,2]", "bad_json"),
        (r#""\ud800""#, "bad_json"),
        (r#"{"message":"\ud800"}"#, "bad_json"),
        (r#"{"type":7}"#, "bad_request"),
        (r#"{"type":"dance"}"#, "bad_request"),
        (r#"{"name":null,"message":"x"}"#, "bad_request"),
        (r#"{"name":"a"}"#, "bad_request"),
        (r#"{"name":"a","message":5}"#, "bad_request"),
        (r#"{"name":"a","message":"x","toname":5}"#, "bad_request"),
        // A wrong type wins over a bad name.
        (r#"{"name":"","message":5}"#, "bad_request"),
        (r#"{"name":"  ","message":"x"}"#, "invalid_name"),
        (r#"{"name":"a\u0007","message":"x"}"#, "invalid_name"),
        (
            r#"{"name":"123456789012345678901234567890123","message":"x"}"#,
            "invalid_name",
        ),
        (r#"{"name":"BOB","message":"x"}"#, "name_taken"),
        (r#"{"message":"x"}"#, "not_joined"),
        (r#"{"message":"x","toname":"bob"}"#, "not_joined"),
        (r#"{"name":"al","message":"12345678901"}"#, "too_long"),
        (r#"{"name":"al","message":"   "}"#, "bad_request"),
        (
            r#"{"name":"al","message":"x","toname":"carol"}"#,
            "unknown_user",
        ),
    ];
    for (text, code) in cases {
        f.say(1, text);
        assert_eq!(f.last_error(1), code, "{text}");
    }
    // Nothing of the rejected messages took effect.
    assert_eq!(f.room.peers[&1].name, None);
    assert!(f.take(2).is_empty());
    assert_eq!(f.chat.named_count(), 1);
}

#[test]
fn thirty_two_characters_is_a_valid_name() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.say(
        1,
        r#"{"type":"join","name":"  12345678901234567890123456789ü12  "}"#,
    );
    assert_eq!(
        f.room.peers[&1].name.as_deref(),
        Some("12345678901234567890123456789ü12")
    );
}

#[test]
fn join_rename_and_messages_in_order() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.open(2);
    f.take(1);
    f.take(2);
    f.say(
        1,
        r##"{"name":"alice","message":" hello ","color":"#ff7000"}"##,
    );
    let seen = f.take(2);
    assert_eq!(seen[0]["event"], "join");
    assert_eq!(seen[0]["message"], "alice joined");
    assert_eq!(seen[1]["type"], "usermsg");
    assert_eq!(seen[1]["message"], "hello");
    assert_eq!(seen[1]["color"], "FF7000");
    assert!(seen[1]["ts"].as_u64().unwrap() > 1_600_000_000_000);
    assert_eq!(f.take(1), seen, "the sender gets the same lines");
    // Case-only change is a rename; exactly the same name is nothing.
    f.say(1, r#"{"type":"join","name":"Alice"}"#);
    let seen = f.take(2);
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["event"], "rename");
    assert_eq!(seen[0]["from"], "alice");
    assert_eq!(seen[0]["message"], "alice is now Alice");
    f.say(1, r#"{"type":"join","name":"Alice","color":"bogus"}"#);
    assert!(f.take(2).is_empty());
    assert_eq!(f.room.peers[&1].color, Color(*b"FF7000"));
}

#[test]
fn private_messages_reach_recipient_and_sender_only() {
    let mut f = Fixture::new(0);
    for slot in 1..=3 {
        f.open(slot);
    }
    f.say(1, r#"{"type":"join","name":"alice"}"#);
    f.say(2, r#"{"type":"join","name":"Bob"}"#);
    for slot in 1..=3 {
        f.take(slot);
    }
    f.say(1, r#"{"message":"psst","toname":" BOB "}"#);
    let to_bob = f.take(2);
    assert_eq!(to_bob.len(), 1);
    assert_eq!(to_bob[0]["toname"], "Bob");
    assert_eq!(to_bob[0]["private"], true);
    assert_eq!(f.take(1), to_bob);
    assert!(f.take(3).is_empty());
    // To oneself: once.
    f.say(1, r#"{"message":"note","toname":"alice"}"#);
    assert_eq!(f.take(1).len(), 1);
    // Empty toname is a broadcast.
    f.say(1, r#"{"message":"all","toname":"  "}"#);
    assert_eq!(f.take(3).len(), 1);
}

#[test]
fn users_snapshot_lists_named_connections_only() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.say(1, r#"{"type":"join","name":"alice","color":"00aa00"}"#);
    f.open(2);
    let hello = f.take(2);
    assert_eq!(hello[0]["type"], "users");
    assert_eq!(
        hello[0]["users"],
        serde_json::json!([{"name":"alice","color":"00AA00"}])
    );
    f.say(2, r#"{"type":"users"}"#);
    assert_eq!(f.take(2)[0]["users"].as_array().unwrap().len(), 1);
}

#[test]
fn leave_frees_the_name() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.open(2);
    f.say(1, r#"{"type":"join","name":"alice"}"#);
    let peer = f.room.peers.remove(&1).unwrap();
    f.chat.on_leave(&mut f.room, peer);
    let seen = f.take(2);
    assert_eq!(seen.last().unwrap()["event"], "leave");
    f.say(2, r#"{"type":"join","name":"ALICE"}"#);
    assert_eq!(f.room.peers[&2].name.as_deref(), Some("ALICE"));
}

#[test]
fn rate_limit_then_flood_close() {
    let mut f = Fixture::new(2);
    f.open(1);
    f.take(1);
    // Capacity is twice the rate: 4 messages pass, the 5th does not.
    for _ in 0..4 {
        f.say(1, r#"{"type":"users"}"#);
    }
    assert_eq!(f.take(1).len(), 4);
    f.say(1, "not even json");
    assert_eq!(f.last_error(1), "rate_limited");
    // 10 x rate = 20 rejections are tolerated within 10 s; the 21st closes.
    for _ in 0..19 {
        f.say(1, "x");
    }
    assert!(f.room.closed.is_empty());
    f.say(1, "x");
    assert_eq!(f.room.closed, vec![(1, 1008)]);
    // Tokens come back with time.
    f.room.closed.clear();
    f.now += Duration::from_secs(1);
    f.take(1);
    f.say(1, r#"{"type":"users"}"#);
    assert_eq!(f.take(1)[0]["type"], "users");
}

#[test]
fn a_stale_leave_does_not_free_a_name_held_by_someone_else() {
    // Issue 9's first bug: a name freed at close, claimed again before the
    // leave was applied, lost its new holder's index entry.
    let mut f = Fixture::new(0);
    f.open(1);
    f.open(2);
    f.say(1, r#"{"type":"join","name":"alice"}"#);
    let old = f.room.peers.remove(&1).unwrap();
    let stale_leave = ChatEvent::Leave {
        by: Origin {
            node: 0,
            conn: old.uid,
        },
        name: "alice".into(),
    };
    f.chat.on_leave(&mut f.room, old);
    f.say(2, r#"{"type":"join","name":"ALICE"}"#);
    assert_eq!(f.room.peers[&2].name.as_deref(), Some("ALICE"));
    f.take(2);
    // The same leave applied again (late, or twice) changes nothing.
    f.chat.apply(&mut f.room, stale_leave);
    assert!(f.take(2).is_empty(), "no second leave announced");
    assert_eq!(f.chat.named_count(), 1);
    f.open(3);
    f.say(3, r#"{"type":"join","name":"alice"}"#);
    assert_eq!(f.last_error(3), "name_taken");
}

#[test]
fn join_and_rename_carry_the_colour_and_users_follow_it() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.open(2);
    f.take(2);
    f.say(1, r##"{"type":"join","name":"alice","color":"#00aa00"}"##);
    let seen = f.take(2);
    assert_eq!(seen[0]["event"], "join");
    assert_eq!(seen[0]["color"], "00AA00");
    f.say(1, r#"{"name":"alicia","message":"hi","color":"112233"}"#);
    let seen = f.take(2);
    assert_eq!(seen[0]["event"], "rename");
    assert_eq!(seen[0]["color"], "112233", "the colour after the message");
    assert_eq!(seen[1]["color"], "112233");
    // A colour change alone sends nothing, but the user list shows it.
    f.say(1, r#"{"type":"join","name":"alicia","color":"445566"}"#);
    assert!(f.take(2).is_empty());
    f.say(2, r#"{"type":"users"}"#);
    let users = f.take(2);
    assert_eq!(
        users[0]["users"],
        serde_json::json!([{"name":"alicia","color":"445566"}])
    );
    f.say(1, r#"{"message":"x","color":"778899"}"#);
    f.take(2);
    f.say(2, r#"{"type":"users"}"#);
    assert_eq!(f.take(2)[0]["users"][0]["color"], "778899");
}

#[test]
fn users_and_history_requests_ignore_other_fields() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.take(1);
    f.say(1, r#"{"type":"users","name":5,"message":[]}"#);
    assert_eq!(f.take(1)[0]["type"], "users");
    f.say(1, r#"{"type":"history","name":5}"#);
    assert_eq!(f.take(1)[0]["type"], "history");
}

#[test]
fn the_users_frame_is_built_once_per_presence_change() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.say(1, r#"{"type":"join","name":"alice"}"#);
    f.chat.users_frame();
    let builds = f.chat.users_builds;
    for slot in 2..20 {
        f.open(slot);
        f.say(slot, r#"{"type":"users"}"#);
    }
    assert_eq!(
        f.chat.users_builds, builds,
        "greetings and requests reuse it"
    );
    f.say(2, r#"{"type":"join","name":"bob"}"#);
    f.say(3, r#"{"type":"users"}"#);
    assert_eq!(f.chat.users_builds, builds + 1, "rebuilt once after a join");
    let users = f.take(3);
    assert_eq!(users.last().unwrap()["users"].as_array().unwrap().len(), 2);
}

#[test]
fn broadcasts_get_ids_and_are_kept_private_lines_and_events_are_not() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.open(2);
    assert_eq!(
        f.take(1)[1],
        serde_json::json!({"type": "history", "messages": []})
    );
    f.say(1, r#"{"name":"alice","message":"one"}"#);
    f.say(2, r#"{"name":"bob","message":"psst","toname":"ALICE"}"#);
    let msgs = f.take(1);
    let line = msgs.iter().find(|m| m["message"] == "one").unwrap();
    let private = msgs.iter().find(|m| m["message"] == "psst").unwrap();
    assert!(line["id"].is_string(), "{line}");
    assert!(private.get("id").is_none(), "{private}");
    let id = f.chat.announce(&mut f.room, "note".into(), None).unwrap();
    assert!(id.is_some());
    assert_eq!(
        f.chat
            .announce(&mut f.room, "only you".into(), Some("Bob".into())),
        Ok(None)
    );
    assert_eq!(
        f.chat
            .announce(&mut f.room, "x".into(), Some("carol".into())),
        Err(UnknownUser)
    );
    f.take(1);
    f.say(1, r#"{"type":"history"}"#);
    let history = f.take(1).remove(0);
    let kept = history["messages"].as_array().unwrap();
    // Exactly what was delivered: the line, then the announcement.
    assert_eq!(kept[0], *line);
    assert_eq!(kept[1]["event"], "announce");
    assert_eq!(kept[1]["id"], serde_json::json!(id));
    assert_eq!(kept.len(), 2);
    assert_ne!(kept[0]["id"], kept[1]["id"]);
}

#[test]
fn history_limit_and_history_zero() {
    let mut f = Fixture::new(0);
    f.open(1);
    for i in 0..5 {
        f.say(1, &format!(r#"{{"name":"a","message":"m{i}"}}"#));
    }
    f.take(1);
    f.open(2);
    let greeting = f.take(2);
    let texts: Vec<&str> = greeting[1]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["message"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m2", "m3", "m4"]);

    let mut f = Fixture::with_history(0, 0);
    f.open(1);
    assert_eq!(f.take(1).len(), 1, "users only");
    f.say(1, r#"{"type":"history"}"#);
    assert!(f.take(1).is_empty());
}

#[test]
fn kicks_close_the_holder_or_name_nobody() {
    let mut f = Fixture::new(0);
    f.open(1);
    f.say(1, r#"{"type":"join","name":"Eve"}"#);
    assert_eq!(
        f.chat.kick(&mut f.room, "nobody", "kicked".into()),
        Err(UnknownUser)
    );
    assert!(f.room.closed.is_empty());
    assert_eq!(f.chat.kick(&mut f.room, "EVE", "kicked".into()), Ok(()));
    assert_eq!(f.room.closed, [(1, 1008)]);
}
