//! The chat's side of a cluster (PROTOCOL section 12): it turns the chat's
//! [`Proposal`]s into the cluster link's, and the link's notices back into
//! events applied with [`Chat::apply`], so every node applies the same
//! events in Redis's order.
//!
//! One connection, one proposal in flight. A client message is checked
//! against the state its earlier messages left behind (a join, then a line
//! without a name; a name claimed twice), and that state only exists once
//! the earlier proposal came back from Redis. So while a connection has a
//! proposal in flight, its further messages wait here, in order, and are
//! handled when the proposal is applied or rejected. This also keeps
//! section 5's order for the connection's own errors: an error is only ever
//! produced when nothing of its earlier messages is still on the way. A
//! connection that closes meanwhile keeps its state here until its queue is
//! worked off; then its leave is proposed.
//!
//! Names held in Redis and names in the chat's index agree except after
//! Redis lost its data: a claim that reached the new Redis first wins
//! there, and the index learns it when that join is applied; the loser's
//! `leave` is delivered at that point, on every node alike.

use super::{Chat, ChatEvent, ChatPeer, Color, Origin, Proposal, Room};
use crate::cluster::{self, Claim, ClusterLink, ClusterStats, Notice, Release};
use crate::engine::close::CloseCode;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Messages one connection may have waiting behind its proposal in flight;
/// more is a flood (closed with 1008, as for the rate limit).
const MAX_QUEUED: usize = 1024;
/// Bytes of such messages, at most.
const MAX_QUEUED_BYTES: usize = 1 << 20;

/// The cluster link and what the chat keeps for it.
pub struct ChatCluster {
    link: Option<ClusterLink>,
    /// This node's id as a number: [`Origin::node`] of its connections.
    node: u64,
    next_ticket: u64,
    /// Proposals in flight that came from a client message.
    tickets: HashMap<u64, Ticket>,
    /// Connections (by uid) with a proposal in flight.
    waiting: HashMap<u64, Waiting>,
    /// The index was seeded from Redis (on the first `Connected`).
    seeded: bool,
    available: bool,
    node_timeout: Duration,
    /// After Redis lost its data: when to give up on the nodes that have
    /// not shown up in the new stream, and those that have.
    roll_call: Option<(Instant, HashSet<u64>)>,
}

impl std::fmt::Debug for ChatCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatCluster")
            .field("node", &self.node)
            .field("available", &self.available)
            .field("in_flight", &self.tickets.len())
            .finish()
    }
}

#[derive(Debug)]
struct Ticket {
    uid: u64,
    /// The name (as spelled) and colour the proposal claims, if any.
    claimed: Option<(String, Color)>,
}

#[derive(Debug)]
struct Waiting {
    slot: usize,
    in_flight: Option<u64>,
    queue: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The connection closed; its state waits here for its queue.
    departed: Option<ChatPeer>,
}

impl ChatCluster {
    /// Starts the link (its threads connect in the background) and puts
    /// the chat on the outbox path, unavailable until Redis answers.
    pub fn start(
        chat: &mut Chat,
        url: &str,
        cluster_name: &str,
        node_timeout: Duration,
        history_len: usize,
        waker: std::sync::Arc<mio::Waker>,
    ) -> ChatCluster {
        let link = ClusterLink::start(url, cluster_name, node_timeout, history_len, waker);
        let node = node_number(link.node_id());
        chat.use_outbox(node);
        chat.unavailable = true;
        ChatCluster {
            link: Some(link),
            node,
            next_ticket: 1,
            tickets: HashMap::new(),
            waiting: HashMap::new(),
            seeded: false,
            available: false,
            node_timeout,
            roll_call: None,
        }
    }

    /// False while the node cannot reach Redis (and before it first did):
    /// `/healthz` says 503, handshakes and `/api/...` get 503.
    pub fn is_available(&self) -> bool {
        self.available
    }

    pub fn stats(&self) -> ClusterStats {
        self.link.as_ref().map(|l| l.stats()).unwrap_or_default()
    }

    /// The five metrics of section 12, in the exposition format.
    pub fn metrics_text(&self) -> String {
        let s = self.stats();
        let mut out = String::new();
        for (name, kind, help, value) in [
            (
                "wschat_cluster_connected",
                "gauge",
                "1 while this node reaches Redis.",
                u64::from(s.connected),
            ),
            (
                "wschat_cluster_nodes",
                "gauge",
                "Nodes this node sees alive, itself included.",
                s.nodes_alive as u64,
            ),
            (
                "wschat_cluster_events_published_total",
                "counter",
                "Events this node published to Redis.",
                s.events_published,
            ),
            (
                "wschat_cluster_events_received_total",
                "counter",
                "Events this node read from Redis.",
                s.events_received,
            ),
            (
                "wschat_cluster_reconnects_total",
                "counter",
                "Times this node reconnected to Redis.",
                s.reconnects,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {value}");
        }
        out
    }

    /// The shared history as events, oldest first, with their ids: what a
    /// node's history starts from when it connects.
    pub fn history(&self) -> Vec<ChatEvent> {
        let Some(link) = &self.link else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for entry in link.history() {
            let Ok(events) = serde_json::from_str::<Vec<ChatEvent>>(&entry.json) else {
                continue;
            };
            out.extend(
                events
                    .into_iter()
                    .filter_map(|mut e| set_id(&mut e, &entry.id).then_some(e)),
            );
        }
        out
    }

    /// A complete text message from `slot`: handled now, or queued behind
    /// the connection's proposal in flight.
    pub fn on_message(
        &mut self,
        chat: &mut Chat,
        room: &mut impl Room,
        slot: usize,
        text: &[u8],
        now: Instant,
    ) {
        let Some(uid) = room.peer(slot).map(|p| p.uid()) else {
            return;
        };
        if let Some(w) = self.waiting.get_mut(&uid) {
            if w.queue.len() >= MAX_QUEUED || w.bytes.saturating_add(text.len()) > MAX_QUEUED_BYTES
            {
                room.close(slot, CloseCode::POLICY_VIOLATION, "flooding");
                return;
            }
            w.bytes += text.len();
            w.queue.push_back(text.to_vec());
            return;
        }
        chat.on_message(room, slot, text, now);
        self.flush(chat, Some((uid, slot)));
    }

    /// A chat connection left: its leave is proposed now, or once its
    /// proposal in flight and its queued messages are done.
    pub fn on_leave(&mut self, chat: &mut Chat, room: &mut impl Room, peer: ChatPeer) {
        if let Some(w) = self.waiting.get_mut(&peer.uid()) {
            w.departed = Some(peer);
            return;
        }
        chat.on_leave(room, peer);
        self.flush(chat, None);
    }

    /// Sends what the chat queued to the link. `from` is the connection
    /// whose message was just handled: its proposal is now in flight.
    pub fn flush(&mut self, chat: &mut Chat, from: Option<(u64, usize)>) {
        let Some(link) = &self.link else {
            return;
        };
        for proposal in chat.take_outbox() {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let (bridged, claimed, by) = bridge(chat, &proposal, ticket, self.node);
            let Some(bridged) = bridged else {
                continue;
            };
            if let (Some((uid, slot)), Some(by)) = (from, by)
                && by.conn == uid
                && !matches!(proposal.events.first(), Some(ChatEvent::Leave { .. }))
            {
                self.tickets.insert(ticket, Ticket { uid, claimed });
                let w = self.waiting.entry(uid).or_insert_with(|| Waiting {
                    slot,
                    in_flight: None,
                    queue: VecDeque::new(),
                    bytes: 0,
                    departed: None,
                });
                w.in_flight = Some(ticket);
            }
            link.propose(bridged);
        }
    }

    /// Works off the link's notices (after the waker fired, and on every
    /// tick in case a wake was merged with another).
    pub fn poll(&mut self, chat: &mut Chat, room: &mut impl Room, now: Instant) {
        while let Some(notice) = self.link.as_ref().and_then(|l| l.poll()) {
            match notice {
                Notice::Event { id, json, ticket } => {
                    match serde_json::from_str::<Vec<ChatEvent>>(&json) {
                        Ok(events) => {
                            for mut event in events {
                                set_id(&mut event, &id);
                                self.present(origin(&event).map(|o| o.node));
                                self.apply(chat, room, event);
                            }
                        }
                        Err(e) => log::warn!("cluster: unreadable event {id}: {e}"),
                    }
                    if let Some(ticket) = ticket {
                        self.done(chat, room, ticket, true, now);
                    }
                }
                Notice::Rejected { ticket, .. } => self.done(chat, room, ticket, false, now),
                Notice::Freed { name, .. } => {
                    if let Some((by, name, _)) = chat.holder(&name.to_lowercase()) {
                        let name = name.to_string();
                        chat.apply(room, ChatEvent::Leave { by, name });
                    }
                }
                Notice::NameLost { conn, name } => self.name_lost(chat, room, conn, &name),
                Notice::Registered { holder } => {
                    let by = Origin {
                        node: node_number(&holder.node),
                        conn: holder.conn,
                    };
                    self.present(Some(by.node));
                    let key = holder.name.to_lowercase();
                    if chat.holder(&key).map(|h| h.0) != Some(by) {
                        let color = Color::parse(&holder.color).unwrap_or(Color(*b"000000"));
                        let name = holder.name;
                        self.apply(chat, room, ChatEvent::Join { by, name, color });
                    }
                }
                Notice::Connected => {
                    if !self.seeded {
                        self.seed(chat);
                    }
                    self.available = true;
                    chat.unavailable = false;
                }
                Notice::Disconnected => {
                    self.available = false;
                    chat.unavailable = true;
                }
                Notice::NodesAlive(_) => {}
                Notice::NewEpoch => {
                    // Redis's history is gone too; the new stream's
                    // broadcasts, replayed next, start it again.
                    chat.reset_history(Vec::new());
                    let mut seen = HashSet::new();
                    seen.insert(self.node);
                    self.roll_call = Some((now + self.node_timeout, seen));
                }
            }
        }
        self.call_the_roll(chat, room, now);
        self.flush(chat, None);
    }

    /// Notes a node that showed up in the new stream.
    fn present(&mut self, node: Option<u64>) {
        if let (Some((_, seen)), Some(node)) = (&mut self.roll_call, node) {
            seen.insert(node);
        }
    }

    /// A node timeout after Redis came back empty, names of nodes that
    /// never registered again are given up: their holders died while Redis
    /// was away, and no lease of theirs is left to lapse. Every node
    /// proposes the leaves; the first one applied frees the name, the
    /// others find it gone and deliver nothing.
    fn call_the_roll(&mut self, chat: &mut Chat, room: &mut impl Room, now: Instant) {
        let Some((at, seen)) = &self.roll_call else {
            return;
        };
        if now < *at || !self.available {
            return;
        }
        let gone: Vec<(Origin, String)> = chat
            .holders()
            .filter(|(by, _)| !seen.contains(&by.node))
            .map(|(by, name)| (by, name.to_string()))
            .collect();
        self.roll_call = None;
        for (by, name) in gone {
            log::info!("cluster: {name} was held by a node that did not come back");
            chat.submit(room, vec![ChatEvent::Leave { by, name }]);
        }
    }

    /// Stops the link: the leaves already proposed and those of connections
    /// still waiting go out, then this node's names are freed; at most
    /// `bound`.
    pub fn stop(&mut self, chat: &mut Chat, room: &mut impl Room, bound: Duration) {
        let waiting: Vec<u64> = self.waiting.keys().copied().collect();
        for uid in waiting {
            if let Some(peer) = self.waiting.remove(&uid).and_then(|w| w.departed) {
                chat.on_leave(room, peer);
            }
        }
        self.flush(chat, None);
        if let Some(link) = self.link.take() {
            link.shutdown(Vec::new(), bound);
        }
    }

    /// First contact: the index becomes Redis's names hash. The node has
    /// no chat connection yet (handshakes were refused), so nobody is told.
    fn seed(&mut self, chat: &mut Chat) {
        let Some(link) = &self.link else {
            return;
        };
        chat.reset_names(link.holders().into_iter().map(|h| {
            let color = Color::parse(&h.color).unwrap_or(Color(*b"000000"));
            let by = Origin {
                node: node_number(&h.node),
                conn: h.conn,
            };
            (h.name, color, by)
        }));
        chat.reset_history(self.history());
        self.seeded = true;
    }

    /// Applies one event of the cluster's order. A claim of a name that the
    /// index gives to somebody else can only have won in a Redis that lost
    /// its data: the old holder's leave is delivered first.
    fn apply(&mut self, chat: &mut Chat, room: &mut impl Room, event: ChatEvent) {
        let by = match &event {
            ChatEvent::Join { by, .. } | ChatEvent::Rename { by, .. } => Some(*by),
            _ => None,
        };
        if let (Some(key), Some(by)) = (event.claimed_name(), by)
            && let Some((holder, name, _)) = chat.holder(&key)
            && holder != by
        {
            let name = name.to_string();
            chat.apply(room, ChatEvent::Leave { by: holder, name });
        }
        chat.apply(room, event);
    }

    /// The proposal with `ticket` came back: the connection's next queued
    /// message may be handled.
    fn done(
        &mut self,
        chat: &mut Chat,
        room: &mut impl Room,
        ticket: u64,
        accepted: bool,
        now: Instant,
    ) {
        let Some(t) = self.tickets.remove(&ticket) else {
            return;
        };
        let Some(w) = self.waiting.get_mut(&t.uid) else {
            return;
        };
        w.in_flight = None;
        match (&mut w.departed, accepted) {
            // Applying the event could not reach a closed connection's state.
            (Some(peer), true) => {
                if let Some((name, color)) = t.claimed {
                    peer.name = Some(name.into());
                    peer.color = color;
                }
            }
            (Some(_), false) => {}
            (None, true) => {}
            (None, false) => {
                let by = Origin {
                    node: self.node,
                    conn: t.uid,
                };
                let name = t.claimed.map(|c| c.0).unwrap_or_default();
                chat.on_rejected(
                    room,
                    by,
                    "name_taken",
                    &format!("the name {name} is in use"),
                );
            }
        }
        self.resume(chat, room, t.uid, now);
    }

    /// Handles a waiting connection's queued messages until one is in
    /// flight again or none is left (then a closed one's leave goes out).
    fn resume(&mut self, chat: &mut Chat, room: &mut impl Room, uid: u64, now: Instant) {
        loop {
            let Some(w) = self.waiting.get_mut(&uid) else {
                return;
            };
            if w.in_flight.is_some() {
                return;
            }
            let Some(text) = w.queue.pop_front() else {
                if let Some(peer) = self.waiting.remove(&uid).and_then(|w| w.departed) {
                    chat.on_leave(room, peer);
                    self.flush(chat, None);
                }
                return;
            };
            w.bytes -= text.len();
            let slot = w.slot;
            match w.departed.take() {
                Some(mut peer) => {
                    let mut gone = Departed {
                        room: &mut *room,
                        slot,
                        peer: &mut peer,
                    };
                    chat.on_message(&mut gone, slot, &text, now);
                    if let Some(w) = self.waiting.get_mut(&uid) {
                        w.departed = Some(peer);
                    }
                }
                None => {
                    if room.peer(slot).map(|p| p.uid()) != Some(uid) {
                        self.waiting.remove(&uid);
                        return;
                    }
                    chat.on_message(room, slot, &text, now);
                }
            }
            self.flush(chat, Some((uid, slot)));
        }
    }

    /// After Redis restarted empty, another node's claim of `name` got
    /// there first: this connection is told and keeps no name (its leave
    /// is delivered when that claim is applied, see [`Self::apply`]).
    fn name_lost(&mut self, chat: &mut Chat, room: &mut impl Room, conn: u64, name: &str) {
        let by = Origin {
            node: self.node,
            conn,
        };
        let message = format!("the name {name} is in use");
        chat.on_rejected(room, by, "name_taken", &message);
        let slot = (conn & 0xFFFF_FFFF) as usize;
        if let Some(peer) = room.peer(slot)
            && peer.uid() == conn
        {
            peer.name = None;
        }
        if let Some(peer) = self
            .waiting
            .get_mut(&conn)
            .and_then(|w| w.departed.as_mut())
        {
            peer.name = None;
        }
    }
}

mod convert;
use convert::{Departed, bridge, node_number, origin, set_id};

#[cfg(test)]
mod tests;
