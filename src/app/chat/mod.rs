//! The chat application: PROTOCOL sections 3 to 5, and the chat's side of
//! sections 9, 11 and 12.
//!
//! A client message is checked in section 4's order against the current
//! state ([`Chat::on_message`]); an accepted one becomes one or two
//! [`ChatEvent`]s (a join or rename, then the line), handed to the event
//! path as one [`Proposal`]. Every change to chat state and every delivery
//! happens when an event is applied ([`Chat::apply`]), in the path's order:
//! on one node at once, in the same turn; in a cluster when the event comes
//! back from Redis, on every node alike.
//!
//! Per-connection state ([`ChatPeer`]: name, colour, rate bucket) lives in
//! the loop's slab entries, reached through the [`Room`] trait. The chat
//! keeps the index from lower-cased name to holder: every named user of the
//! cluster, with colour, so the user list and name checks need no slab walk.
//! Outgoing messages are serialised and framed once (`wire::Wire`) and
//! the same bytes go to every recipient.

mod apply;
pub mod cluster;
pub mod event;
mod request;
mod wire;

pub use event::{ChatEvent, Color, Origin};
pub use request::MAX_NAME_CHARS;

use super::history::{History, IdGenerator};
use crate::engine::close::CloseCode;
use request::{RateBucket, Rejection, Request, reject, valid_name};
use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use wire::Wire;

/// What the server does to connections on the chat's behalf.
pub trait Room {
    /// The chat state of an open chat connection.
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer>;
    /// Queues a framed message to one open chat connection.
    fn send(&mut self, slot: usize, frame: &[u8]);
    /// Queues a framed message to every open chat connection.
    fn broadcast(&mut self, frame: &[u8]);
    /// Ends a connection with a close code (it leaves the chat).
    fn close(&mut self, slot: usize, code: CloseCode, reason: &str);
}

/// One connection's chat state, stored in its slab entry.
#[derive(Debug)]
pub struct ChatPeer {
    /// Unique for the life of the process: the slot in the low half, a
    /// counter in the high half (slots are reused, uids are not).
    uid: u64,
    /// The registered name, as the user spelled it.
    pub name: Option<Box<str>>,
    pub color: Color,
    bucket: RateBucket,
}

/// Who holds a name, anywhere in the cluster.
#[derive(Debug)]
struct Holder {
    name: Box<str>,
    color: Color,
    by: Origin,
}

/// Accepted events, in order, that must be applied together or not at
/// all (a name claim and the line that came with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub events: Vec<ChatEvent>,
}

/// Where accepted events go before they are applied.
#[derive(Debug)]
pub enum EventPath {
    /// One node: each proposal is applied at once, in the order accepted.
    Local,
    /// A cluster: proposals wait here for the cluster link, which
    /// publishes them; they are applied when they come back in the
    /// cluster's order ([`Chat::apply`]).
    Outbox(Vec<Proposal>),
}

/// Colours handed to connections that never chose one: readable on light
/// and dark backgrounds.
const PALETTE: [&[u8; 6]; 12] = [
    b"E6194B", b"3CB44B", b"4363D8", b"F58231", b"911EB4", b"42D4F4", b"F032E6", b"9A6324",
    b"469990", b"800000", b"808000", b"000075",
];

/// The chat room: the name index, the settings and the event path.
#[derive(Debug)]
pub struct Chat {
    /// Lower-cased name → holder.
    names: HashMap<String, Holder>,
    max_chat_chars: usize,
    rate: u32,
    /// This node's id in [`Origin`]s (0 on a single node).
    node: u64,
    path: EventPath,
    /// The node has lost its cluster: well-formed requests get
    /// `unavailable` (section 4, check 3a).
    pub unavailable: bool,
    wire: Wire,
    /// The last broadcasts, for newcomers and `{"type":"history"}`.
    history: History,
    /// Ids of broadcast lines and announcements (section 9).
    ids: IdGenerator,
    /// The framed user list, kept until presence changes.
    users_frame: Vec<u8>,
    users_valid: bool,
    /// How often the user list was built (it should be rarely).
    users_builds: u64,
    /// The chat's clock for rate buckets.
    epoch: Instant,
    /// Counter for uids and assigned colours.
    opened: u64,
    /// Messages refused with `rate_limited` (for `/metrics`).
    pub rate_limited_total: u64,
}

impl ChatPeer {
    /// The connection's uid ([`Origin::conn`]).
    pub fn uid(&self) -> u64 {
        self.uid
    }
}
/// An announcement's `toname` or a kick's `name` names nobody connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownUser;

impl Chat {
    pub fn new(max_chat_chars: usize, rate: u32, history: History) -> Chat {
        Chat {
            names: HashMap::new(),
            max_chat_chars,
            rate,
            node: 0,
            path: EventPath::Local,
            unavailable: false,
            wire: Wire::new(),
            history,
            ids: IdGenerator::new(),
            users_frame: Vec::new(),
            users_valid: false,
            users_builds: 0,
            epoch: Instant::now(),
            opened: 0,
            rate_limited_total: 0,
        }
    }

    /// Joins a cluster: this node's id, and proposals queue for the link.
    pub fn use_outbox(&mut self, node: u64) {
        self.node = node;
        self.path = EventPath::Outbox(Vec::new());
    }

    /// Proposals waiting for the cluster link.
    pub fn take_outbox(&mut self) -> Vec<Proposal> {
        match &mut self.path {
            EventPath::Local => Vec::new(),
            EventPath::Outbox(queue) => std::mem::take(queue),
        }
    }

    /// How many users hold a name (cluster-wide in a cluster).
    pub fn named_count(&self) -> usize {
        self.names.len()
    }

    /// Who holds `key` (a lower-cased name), as the index says.
    pub fn holder(&self, key: &str) -> Option<(Origin, &str, Color)> {
        self.names.get(key).map(|h| (h.by, &*h.name, h.color))
    }

    /// Replaces the whole index (a cluster node seeding it from Redis when
    /// it first connects); nobody is told.
    pub fn reset_names(&mut self, holders: impl IntoIterator<Item = (String, Color, Origin)>) {
        self.names = holders
            .into_iter()
            .map(|(name, color, by)| {
                let holder = Holder {
                    name: name.as_str().into(),
                    color,
                    by,
                };
                (name.to_lowercase(), holder)
            })
            .collect();
        self.users_valid = false;
    }

    /// Replaces the history with these events' broadcasts, oldest first (a
    /// cluster node taking the shared history from Redis); nobody is told.
    pub fn reset_history(&mut self, events: impl IntoIterator<Item = ChatEvent>) {
        self.history.clear();
        for event in events {
            match event {
                ChatEvent::Message {
                    name,
                    color,
                    text,
                    ts,
                    id,
                    to: None,
                    ..
                } => {
                    self.wire
                        .usermsg(&name, &text, color, ts, id.as_deref(), None);
                }
                ChatEvent::Announce {
                    text,
                    ts,
                    id,
                    to: None,
                } => {
                    self.wire.announce(&text, ts, id.as_deref());
                }
                _ => continue,
            }
            self.history.push(self.wire.json());
        }
    }

    /// Every name with its holder.
    pub fn holders(&self) -> impl Iterator<Item = (Origin, &str)> {
        self.names.values().map(|h| (h.by, &*h.name))
    }

    /// Every named user with colour (for `GET /api/users`).
    pub fn users(&self) -> impl Iterator<Item = (&str, Color)> {
        self.names.values().map(|h| (&*h.name, h.color))
    }

    /// The history kept (for its gauges).
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Whether somebody holds `name` (case-insensitively).
    pub fn is_named(&self, name: &str) -> bool {
        self.names.contains_key(&name.to_lowercase())
    }

    /// State for a connection that just opened in `slot`.
    pub fn new_peer(&mut self, slot: usize, now: Instant) -> ChatPeer {
        let color = Color(*PALETTE[(self.opened % PALETTE.len() as u64) as usize]);
        self.opened = self.opened.wrapping_add(1);
        ChatPeer {
            uid: (self.opened << 32) | (slot as u64 & 0xFFFF_FFFF),
            name: None,
            color,
            bucket: RateBucket::new(self.rate, self.millis(now)),
        }
    }

    /// A connection opened: it receives the current user list, then the
    /// history (unless `--history 0`).
    pub fn on_open(&mut self, room: &mut impl Room, slot: usize) {
        let frame = self.users_frame();
        room.send(slot, frame);
        if let Some(frame) = self.history.frame() {
            room.send(slot, frame);
        }
    }

    /// An operator's announcement (section 11): to everyone, with a fresh
    /// id that is returned, or privately to `to` without one.
    pub fn announce(
        &mut self,
        room: &mut impl Room,
        text: String,
        to: Option<String>,
    ) -> Result<Option<String>, UnknownUser> {
        if to.as_deref().is_some_and(|to| !self.is_named(to)) {
            return Err(UnknownUser);
        }
        let id = to.is_none().then(|| self.ids.next_id());
        let event = ChatEvent::Announce {
            text,
            ts: unix_millis(),
            id: id.clone(),
            to,
        };
        self.submit(room, vec![event]);
        Ok(id)
    }

    /// An operator removes the holder of `name` (section 11) with the
    /// close reason `reason`; its leave follows as for any close.
    pub fn kick(
        &mut self,
        room: &mut impl Room,
        name: &str,
        reason: String,
    ) -> Result<(), UnknownUser> {
        if !self.is_named(name) {
            return Err(UnknownUser);
        }
        let event = ChatEvent::Kick {
            name: name.to_string(),
            reason,
        };
        self.submit(room, vec![event]);
        Ok(())
    }

    /// The framed user list, rebuilt only after presence changed.
    pub fn users_frame(&mut self) -> &[u8] {
        if !self.users_valid {
            let frame = self
                .wire
                .users(self.names.values().map(|h| (&*h.name, h.color)));
            self.users_frame.clear();
            self.users_frame.extend_from_slice(frame);
            self.users_valid = true;
            self.users_builds += 1;
        }
        &self.users_frame
    }

    /// A connection left (closed, failed, dropped or kicked): if it held a
    /// name, the name is freed and everyone told, through the event path.
    pub fn on_leave(&mut self, room: &mut impl Room, peer: ChatPeer) {
        if let Some(name) = peer.name {
            let by = self.origin(&peer.uid);
            self.submit(
                room,
                vec![ChatEvent::Leave {
                    by,
                    name: name.into(),
                }],
            );
        }
    }

    /// One complete text message from `slot`.
    pub fn on_message(&mut self, room: &mut impl Room, slot: usize, text: &[u8], now: Instant) {
        if let Err(rejection) = self.handle(room, slot, text, now) {
            let frame = self.wire.error(rejection.code, &rejection.message);
            room.send(slot, frame);
        }
    }

    /// `now` on the chat's clock (milliseconds, wrapping).
    fn millis(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.epoch).as_millis() as u32
    }

    fn origin(&self, uid: &u64) -> Origin {
        Origin {
            node: self.node,
            conn: *uid,
        }
    }

    fn handle(
        &mut self,
        room: &mut impl Room,
        slot: usize,
        text: &[u8],
        now: Instant,
    ) -> Result<(), Rejection> {
        let Some(peer) = room.peer(slot) else {
            return Ok(());
        };
        // 1. Rate, before anything is parsed: every message costs a token.
        let now_ms = self.millis(now);
        if self.rate > 0 && !peer.bucket.take(self.rate, now_ms) {
            self.rate_limited_total += 1;
            if peer.bucket.is_flooding(self.rate, now) {
                let frame = self
                    .wire
                    .error("rate_limited", "too many messages: closing the connection");
                room.send(slot, frame);
                room.close(slot, CloseCode::POLICY_VIOLATION, "flooding");
                return Ok(());
            }
            return Err(reject("rate_limited", "slow down: too many messages"));
        }
        // 2, 3. JSON and field types.
        let request = request::parse(text)?;
        // 3a. A node cut off from its cluster cannot decide anything.
        if self.unavailable {
            return Err(reject(
                "unavailable",
                "the server has lost its cluster; try again shortly",
            ));
        }
        let Some(peer) = room.peer(slot) else {
            return Ok(());
        };
        let by = self.origin(&peer.uid);
        let held = peer.name.clone();
        let current_color = peer.color;
        match request {
            Request::Users => {
                let frame = self.users_frame();
                room.send(slot, frame);
                Ok(())
            }
            Request::History => {
                // With `--history 0` the request is ignored (section 9).
                if let Some(frame) = self.history.frame() {
                    room.send(slot, frame);
                }
                Ok(())
            }
            Request::Join { name, color } => {
                let name = self.check_name(by, &name)?;
                let color = color.unwrap_or(current_color);
                if let Some(event) = name_event(by, held.as_deref(), name, color, current_color) {
                    self.submit(room, vec![event]);
                }
                Ok(())
            }
            Request::Chat {
                name,
                message,
                color,
                toname,
            } => {
                // 4, 5. The claimed name.
                let name = match &name {
                    Some(n) => Some(self.check_name(by, n)?),
                    None => None,
                };
                // 6. Somebody must be speaking.
                let Some(speaker) = name.or(held.as_deref()).map(str::to_string) else {
                    return Err(reject("not_joined", "choose a name first"));
                };
                // 7. The text.
                let text = message.trim();
                let chars = text.chars().count();
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
                if let Some(to) = &toname
                    && !self.is_named(to)
                {
                    return Err(reject("unknown_user", format!("nobody is called {to}")));
                }
                // Accepted: the name claim first, then the line.
                let color = color.unwrap_or(current_color);
                let mut events = Vec::with_capacity(2);
                if name.is_some() {
                    events.extend(name_event(by, held.as_deref(), &speaker, color, color));
                }
                events.push(ChatEvent::Message {
                    by,
                    name: speaker,
                    color,
                    text: text.to_string(),
                    ts: unix_millis(),
                    // Broadcasts carry an id, private lines none (section 9).
                    id: toname.is_none().then(|| self.ids.next_id()),
                    to: toname,
                });
                self.submit(room, events);
                Ok(())
            }
        }
    }

    /// Checks a claimed name (rules 4 and 5) and returns it trimmed.
    fn check_name<'n>(&self, by: Origin, name: &'n str) -> Result<&'n str, Rejection> {
        let name = valid_name(name)?;
        match self.names.get(&name.to_lowercase()) {
            Some(holder) if holder.by != by => {
                Err(reject("name_taken", format!("the name {name} is in use")))
            }
            _ => Ok(name),
        }
    }

    /// Hands accepted events to the event path.
    pub fn submit(&mut self, room: &mut impl Room, events: Vec<ChatEvent>) {
        match &mut self.path {
            EventPath::Local => {
                for event in events {
                    self.apply(room, event);
                }
            }
            EventPath::Outbox(queue) => queue.push(Proposal { events }),
        }
    }

    /// The event path rejected a proposal from one of this node's
    /// connections (a name another node claimed first).
    pub fn on_rejected(
        &mut self,
        room: &mut impl Room,
        by: Origin,
        code: &'static str,
        message: &str,
    ) {
        if let Some(slot) = self.local_slot(room, by) {
            let frame = self.wire.error(code, message);
            room.send(slot, frame);
        }
    }

    /// The slot of a connection of this node, if it is still there.
    fn local_slot(&self, room: &mut impl Room, by: Origin) -> Option<usize> {
        if by.node != self.node {
            return None;
        }
        let slot = (by.conn & 0xFFFF_FFFF) as usize;
        room.peer(slot)
            .is_some_and(|p| p.uid == by.conn)
            .then_some(slot)
    }
}

/// The event a name claim causes, if any: a join, a rename (a change of
/// case included), or for exactly the held name only a colour change.
fn name_event(
    by: Origin,
    held: Option<&str>,
    name: &str,
    color: Color,
    current_color: Color,
) -> Option<ChatEvent> {
    match held {
        Some(old) if old == name => (color != current_color).then(|| ChatEvent::Recolor {
            by,
            name: name.to_string(),
            color,
        }),
        Some(old) => Some(ChatEvent::Rename {
            by,
            from: old.to_string(),
            name: name.to_string(),
            color,
        }),
        None => Some(ChatEvent::Join {
            by,
            name: name.to_string(),
            color,
        }),
    }
}

fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
