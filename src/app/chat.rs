//! The chat application: PROTOCOL sections 3 to 5.
//!
//! It sees one complete text message at a time, in the order the poll loop
//! processes them, and talks to the connections through the [`Room`] trait
//! the server implements over its slab. Per-connection chat state
//! ([`ChatPeer`]: name, colour, rate bucket) lives in the slab entries; this
//! module keeps only the index from lower-cased name to slot, so private
//! messages and name checks are O(1).
//!
//! Every outgoing message is serialised and framed once, into scratch
//! buffers owned by [`Chat`], and the same bytes go to every recipient.

use crate::engine::close::CloseCode;
use crate::engine::frame::{Opcode, encode_frame};
use serde_json::{Map, Value};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Longest name in Unicode scalar values (after trimming).
pub const MAX_NAME_CHARS: usize = 32;
/// The sliding window of the flood rule.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);

/// What the server does to connections on the chat's behalf.
pub trait Room {
    /// The chat state of an open chat connection.
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer>;
    /// Queues a framed message to one open chat connection.
    fn send(&mut self, slot: usize, frame: &[u8]);
    /// Queues a framed message to every open chat connection.
    fn broadcast(&mut self, frame: &[u8]);
    /// Ends a connection with a close code (it leaves the chat).
    fn close(&mut self, slot: usize, code: CloseCode, reason: &'static str);
}

/// One connection's chat state, stored in its slab entry.
#[derive(Debug)]
pub struct ChatPeer {
    /// The registered name, as the user spelled it.
    pub name: Option<Box<str>>,
    /// Six upper-case hex digits.
    pub color: [u8; 6],
    /// Tokens left in the rate bucket.
    tokens: f64,
    /// When the bucket was last refilled.
    refilled: Instant,
    /// Times of recent rate-limit rejections (none, unallocated, for
    /// clients that behave). Boxed: 8 bytes in every slab entry instead of
    /// 32, for a deque that only flooders ever need.
    #[allow(clippy::box_collection)]
    rejections: Option<Box<VecDeque<Instant>>>,
}

impl ChatPeer {
    /// The state of a new connection: no name, an assigned colour, a full
    /// bucket.
    pub fn new(color: [u8; 6], rate: u32, now: Instant) -> ChatPeer {
        ChatPeer {
            name: None,
            color,
            tokens: 2.0 * f64::from(rate),
            refilled: now,
            rejections: None,
        }
    }
}

/// A rejected message: the error code and its human-readable text.
struct Rejection {
    code: &'static str,
    message: String,
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// What a client message asks for, once its fields are checked.
enum Request {
    Chat {
        name: Option<String>,
        message: String,
        color: Option<[u8; 6]>,
        toname: Option<String>,
    },
    Join {
        name: String,
        color: Option<[u8; 6]>,
    },
    Users,
}

/// The chat room: the name index and the settings.
#[derive(Debug)]
pub struct Chat {
    /// Lower-cased name → slot of the connection holding it.
    names: HashMap<String, usize>,
    max_chat_chars: usize,
    rate: u32,
    /// Scratch: the JSON being built, then its frame.
    json: Vec<u8>,
    frame: Vec<u8>,
    /// Counter for assigned colours.
    next_color: usize,
    /// Messages refused with `rate_limited` (for `/metrics`).
    pub rate_limited_total: u64,
}

/// Colours handed to connections that never chose one: readable on light
/// and dark backgrounds.
const PALETTE: [&[u8; 6]; 12] = [
    b"E6194B", b"3CB44B", b"4363D8", b"F58231", b"911EB4", b"42D4F4", b"F032E6", b"9A6324",
    b"469990", b"800000", b"808000", b"000075",
];

impl Chat {
    pub fn new(max_chat_chars: usize, rate: u32) -> Chat {
        Chat {
            names: HashMap::new(),
            max_chat_chars,
            rate,
            json: Vec::with_capacity(512),
            frame: Vec::with_capacity(512),
            next_color: 0,
            rate_limited_total: 0,
        }
    }

    /// How many connections hold a name.
    pub fn named_count(&self) -> usize {
        self.names.len()
    }

    /// State for a connection that just opened.
    pub fn new_peer(&mut self, now: Instant) -> ChatPeer {
        let color = *PALETTE[self.next_color % PALETTE.len()];
        self.next_color = self.next_color.wrapping_add(1);
        ChatPeer::new(color, self.rate, now)
    }

    /// A connection opened: it receives the current user list.
    pub fn on_open(&mut self, room: &mut impl Room, slot: usize) {
        self.build_users(room);
        room.send(slot, &self.frame);
    }

    /// The framed user list, for a caller that sends it itself.
    pub fn users_frame(&mut self, room: &mut impl Room) -> &[u8] {
        self.build_users(room);
        &self.frame
    }

    /// Frees a name at once (the `leave` may be announced a moment later).
    pub fn forget(&mut self, name: &str) {
        self.names.remove(&name.to_lowercase());
    }

    /// A connection left (closed, failed or dropped) holding `name`: free
    /// the name at once and tell everyone.
    pub fn on_leave(&mut self, room: &mut impl Room, name: &str) {
        self.names.remove(&name.to_lowercase());
        self.build_system("leave", name, None, &format!("{name} left"));
        room.broadcast(&self.frame);
    }

    /// One complete text message from `slot`.
    pub fn on_message(&mut self, room: &mut impl Room, slot: usize, text: &[u8], now: Instant) {
        match self.handle(room, slot, text, now) {
            Ok(()) => {}
            Err(rejection) => {
                self.build_error(&rejection);
                room.send(slot, &self.frame);
            }
        }
    }

    fn handle(
        &mut self,
        room: &mut impl Room,
        slot: usize,
        text: &[u8],
        now: Instant,
    ) -> Result<(), Rejection> {
        // 1. Rate, before anything is parsed: every message costs a token.
        if self.rate > 0 {
            let Some(peer) = room.peer(slot) else {
                return Ok(());
            };
            if !take_token(peer, self.rate, now) {
                self.rate_limited_total += 1;
                if is_flooding(peer, self.rate, now) {
                    self.build_error(&reject(
                        "rate_limited",
                        "too many messages: closing the connection",
                    ));
                    room.send(slot, &self.frame);
                    room.close(slot, CloseCode::POLICY_VIOLATION, "flooding");
                    return Ok(());
                }
                return Err(reject("rate_limited", "slow down: too many messages"));
            }
        }
        // 2. JSON. serde_json refuses lone surrogate escapes such as "\ud800".
        let value: Value = serde_json::from_slice(text)
            .map_err(|_| reject("bad_json", "the message is not a JSON object"))?;
        let Value::Object(object) = value else {
            return Err(reject("bad_json", "the message is not a JSON object"));
        };
        // 3. Field types.
        let request = parse_request(object)?;
        match request {
            Request::Users => {
                self.build_users(room);
                room.send(slot, &self.frame);
                Ok(())
            }
            Request::Join { name, color } => {
                let name = self.check_name(slot, &name)?;
                self.apply(room, slot, color, Some(name));
                Ok(())
            }
            Request::Chat {
                name,
                message,
                color,
                toname,
            } => {
                // 4, 5. The claimed name.
                let name = match name {
                    Some(n) => Some(self.check_name(slot, &n)?),
                    None => None,
                };
                // 6. Somebody must be speaking.
                let has_name = room.peer(slot).is_some_and(|p| p.name.is_some());
                if name.is_none() && !has_name {
                    return Err(reject("not_joined", "choose a name first"));
                }
                // 7. The text.
                let message = message.trim();
                let chars = message.chars().count();
                if chars > self.max_chat_chars {
                    return Err(reject(
                        "too_long",
                        format!("messages are limited to {} characters", self.max_chat_chars),
                    ));
                }
                if chars == 0 {
                    return Err(reject("bad_request", "the message is empty"));
                }
                // 8. The recipient.
                let recipient =
                    match &toname {
                        Some(to) => Some(*self.names.get(&to.to_lowercase()).ok_or_else(|| {
                            reject("unknown_user", format!("nobody is called {to}"))
                        })?),
                        None => None,
                    };
                // Accepted: everything below takes effect.
                self.apply(room, slot, color, name);
                self.deliver(room, slot, message, recipient);
                Ok(())
            }
        }
    }

    /// Checks a claimed name (rules 4 and 5) and returns it trimmed.
    fn check_name(&self, slot: usize, name: &str) -> Result<String, Rejection> {
        let name = name.trim();
        let chars = name.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS || name.chars().any(char::is_control) {
            return Err(reject(
                "invalid_name",
                format!("a name is 1 to {MAX_NAME_CHARS} characters, without control characters"),
            ));
        }
        match self.names.get(&name.to_lowercase()) {
            Some(&holder) if holder != slot => {
                Err(reject("name_taken", format!("the name {name} is in use")))
            }
            _ => Ok(name.to_string()),
        }
    }

    /// Applies an accepted message's colour and name claim, announcing a
    /// join or rename before anything else the message causes.
    fn apply(
        &mut self,
        room: &mut impl Room,
        slot: usize,
        color: Option<[u8; 6]>,
        name: Option<String>,
    ) {
        let Some(peer) = room.peer(slot) else {
            return;
        };
        if let Some(color) = color {
            peer.color = color;
        }
        let Some(name) = name else {
            return;
        };
        let previous = peer.name.replace(name.clone().into_boxed_str());
        match previous {
            Some(old) if *old == *name => {}
            Some(old) => {
                self.names.remove(&old.to_lowercase());
                self.names.insert(name.to_lowercase(), slot);
                self.build_system("rename", &name, Some(&old), &format!("{old} is now {name}"));
                room.broadcast(&self.frame);
            }
            None => {
                self.names.insert(name.to_lowercase(), slot);
                self.build_system("join", &name, None, &format!("{name} joined"));
                room.broadcast(&self.frame);
            }
        }
    }

    /// Sends an accepted chat line to everyone, or privately.
    fn deliver(
        &mut self,
        room: &mut impl Room,
        slot: usize,
        message: &str,
        recipient: Option<usize>,
    ) {
        use std::io::Write;
        // The recipient must still be there (it was looked up moments ago).
        if recipient.is_some_and(|r| room.peer(r).is_none_or(|p| p.name.is_none())) {
            return;
        }
        let Some(peer) = room.peer(slot) else {
            return;
        };
        let json = &mut self.json;
        json.clear();
        json.extend_from_slice(b"{\"type\":\"usermsg\",\"name\":");
        push_json_str(json, peer.name.as_deref().unwrap_or_default());
        json.extend_from_slice(b",\"message\":");
        push_json_str(json, message);
        json.extend_from_slice(b",\"color\":\"");
        json.extend_from_slice(&peer.color);
        // Writing a number into a Vec cannot fail.
        let _ = write!(json, "\",\"ts\":{}", unix_millis());
        if let Some(to) = recipient
            .and_then(|r| room.peer(r))
            .and_then(|p| p.name.as_deref())
        {
            json.extend_from_slice(b",\"toname\":");
            push_json_str(json, to);
            json.extend_from_slice(b",\"private\":true");
        }
        self.json.push(b'}');
        self.seal();
        match recipient {
            None => room.broadcast(&self.frame),
            Some(r) => {
                room.send(r, &self.frame);
                if r != slot {
                    room.send(slot, &self.frame);
                }
            }
        }
    }

    /// Frames the JSON in `self.json` into `self.frame`.
    fn seal(&mut self) {
        self.frame.clear();
        encode_frame(&mut self.frame, Opcode::Text, &self.json);
    }

    /// The user list, walked through the name index: its cost grows with
    /// the named users, not with every connection open.
    fn build_users(&mut self, room: &mut impl Room) {
        let json = &mut self.json;
        json.clear();
        json.extend_from_slice(b"{\"type\":\"users\",\"users\":[");
        let mut first = true;
        for &slot in self.names.values() {
            let Some(peer) = room.peer(slot) else {
                continue;
            };
            let Some(name) = &peer.name else {
                continue;
            };
            if !first {
                json.push(b',');
            }
            first = false;
            json.extend_from_slice(b"{\"name\":");
            push_json_str(json, name);
            json.extend_from_slice(b",\"color\":\"");
            json.extend_from_slice(&peer.color);
            json.extend_from_slice(b"\"}");
        }
        json.extend_from_slice(b"]}");
        self.seal();
    }

    fn build_system(&mut self, event: &str, name: &str, from: Option<&str>, message: &str) {
        self.json.clear();
        self.json
            .extend_from_slice(b"{\"type\":\"system\",\"event\":");
        push_json_str(&mut self.json, event);
        self.json.extend_from_slice(b",\"name\":");
        push_json_str(&mut self.json, name);
        if let Some(from) = from {
            self.json.extend_from_slice(b",\"from\":");
            push_json_str(&mut self.json, from);
        }
        self.json.extend_from_slice(b",\"message\":");
        push_json_str(&mut self.json, message);
        self.json.push(b'}');
        self.seal();
    }

    fn build_error(&mut self, rejection: &Rejection) {
        self.json.clear();
        self.json
            .extend_from_slice(b"{\"type\":\"error\",\"code\":");
        push_json_str(&mut self.json, rejection.code);
        self.json.extend_from_slice(b",\"message\":");
        push_json_str(&mut self.json, &rejection.message);
        self.json.push(b'}');
        self.seal();
    }
}

/// Checks field types (rule 3) and turns the object into a [`Request`].
fn parse_request(mut object: Map<String, Value>) -> Result<Request, Rejection> {
    let kind = match object.get("type") {
        None => "message".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(reject("bad_request", "type must be a string")),
    };
    let color = object.get("color").and_then(parse_color);
    let name = match object.remove("name") {
        None => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(reject("bad_request", "name must be a string")),
    };
    match kind.as_str() {
        "message" => {
            let message = match object.remove("message") {
                Some(Value::String(s)) => s,
                Some(_) => return Err(reject("bad_request", "message must be a string")),
                None => return Err(reject("bad_request", "message is required")),
            };
            let toname = match object.remove("toname") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => {
                    let trimmed = s.trim();
                    (!trimmed.is_empty()).then(|| trimmed.to_string())
                }
                Some(_) => return Err(reject("bad_request", "toname must be a string")),
            };
            Ok(Request::Chat {
                name,
                message,
                color,
                toname,
            })
        }
        "join" => match name {
            Some(name) => Ok(Request::Join { name, color }),
            None => Err(reject("bad_request", "join needs a name")),
        },
        "users" => Ok(Request::Users),
        _ => Err(reject("bad_request", "unknown message type")),
    }
}

/// Six hex digits, with or without `#`, as upper case; anything else is
/// ignored (`None`).
fn parse_color(value: &Value) -> Option<[u8; 6]> {
    let text = value.as_str()?;
    let digits = text.strip_prefix('#').unwrap_or(text).as_bytes();
    let digits: &[u8; 6] = digits.try_into().ok()?;
    if !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    Some(digits.map(|d| d.to_ascii_uppercase()))
}

/// Refills the bucket (rate per second, capacity twice that) and takes one
/// token if there is one.
fn take_token(peer: &mut ChatPeer, rate: u32, now: Instant) -> bool {
    let rate = f64::from(rate);
    let elapsed = now.saturating_duration_since(peer.refilled).as_secs_f64();
    peer.tokens = (peer.tokens + elapsed * rate).min(2.0 * rate);
    peer.refilled = now;
    if peer.tokens >= 1.0 {
        peer.tokens -= 1.0;
        true
    } else {
        false
    }
}

/// Records a rejection; true when more than ten times the rate were
/// rejected within the last ten seconds.
fn is_flooding(peer: &mut ChatPeer, rate: u32, now: Instant) -> bool {
    let rejections = peer.rejections.get_or_insert_with(Box::default);
    while rejections
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= FLOOD_WINDOW)
    {
        rejections.pop_front();
    }
    rejections.push_back(now);
    rejections.len() > 10 * rate as usize
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Appends `s` as a JSON string literal.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

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
        fn close(&mut self, slot: usize, code: CloseCode, _: &'static str) {
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
            Fixture {
                chat: Chat::new(10, rate),
                room: TestRoom::default(),
                now: Instant::now(),
            }
        }
        fn open(&mut self, slot: usize) {
            let peer = self.chat.new_peer(self.now);
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
        assert_eq!(&f.room.peers[&1].color, b"FF7000");
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
        f.chat.on_leave(&mut f.room, &peer.name.unwrap());
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
    fn colours() {
        assert_eq!(parse_color(&Value::from("#a1b2c3")), Some(*b"A1B2C3"));
        assert_eq!(parse_color(&Value::from("A1B2C3")), Some(*b"A1B2C3"));
        for bad in [
            Value::from("#a1b2c"),
            Value::from("ggggggg"),
            Value::from("##a1b2c3"),
            Value::Null,
            Value::from(5),
        ] {
            assert_eq!(parse_color(&bad), None, "{bad}");
        }
    }
}
