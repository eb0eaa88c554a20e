//! Converting between the chat's proposals and events and the cluster
//! link's proposals and notices.

use super::*;

/// The link's proposal for one of the chat's, the name and colour it
/// claims, and the connection it came from. Leaves release the name; joins
/// and renames claim it (a rename also releases the old one); a colour
/// change re-claims the held name so Redis's copy has the new colour.
pub(super) fn bridge(
    chat: &Chat,
    proposal: &Proposal,
    ticket: u64,
    node: u64,
) -> (
    Option<cluster::Proposal>,
    Option<(String, Color)>,
    Option<Origin>,
) {
    let event = match serde_json::to_string(&proposal.events) {
        Ok(json) => json,
        Err(e) => {
            log::error!("cluster: cannot serialise an event: {e}");
            return (None, None, None);
        }
    };
    let mut claim = None;
    let mut release = None;
    let mut claimed = None;
    let mut by = None;
    let mut history = false;
    let claim_of = |name: &str, color: Color, by: Origin| Claim {
        key: name.to_lowercase(),
        name: name.to_string(),
        color: color.as_str().to_string(),
        conn: by.conn,
    };
    for e in &proposal.events {
        match e {
            ChatEvent::Join { by: b, name, color } | ChatEvent::Recolor { by: b, name, color } => {
                by = Some(*b);
                claim = Some(claim_of(name, *color, *b));
                claimed = Some((name.clone(), *color));
            }
            ChatEvent::Rename {
                by: b,
                from,
                name,
                color,
            } => {
                by = Some(*b);
                claim = Some(claim_of(name, *color, *b));
                claimed = Some((name.clone(), *color));
                release = Some(Release {
                    key: from.to_lowercase(),
                    conn: b.conn,
                });
            }
            ChatEvent::Message {
                by: b,
                name,
                color,
                to,
                ..
            } => {
                by = Some(*b);
                history |= to.is_none();
                let key = name.to_lowercase();
                if claim.is_none() && chat.holder(&key).is_some_and(|h| h.2 != *color) {
                    claim = Some(claim_of(name, *color, *b));
                    claimed = Some((name.clone(), *color));
                }
            }
            ChatEvent::Leave { by: b, name } => {
                by = Some(*b);
                // Another node's name (one that did not come back) is not
                // in Redis: nothing to release.
                release = (b.node == node).then(|| Release {
                    key: name.to_lowercase(),
                    conn: b.conn,
                });
            }
            ChatEvent::Announce { to, .. } => history |= to.is_none(),
            ChatEvent::Kick { .. } => {}
        }
    }
    let bridged = cluster::Proposal {
        ticket,
        event,
        history,
        claim,
        release,
    };
    (Some(bridged), claimed, by)
}

/// The connection of the node that published an event, if that is known
/// (a leave may be published by another node for a node that is gone).
pub(super) fn origin(event: &ChatEvent) -> Option<Origin> {
    match event {
        ChatEvent::Join { by, .. }
        | ChatEvent::Rename { by, .. }
        | ChatEvent::Recolor { by, .. }
        | ChatEvent::Message { by, .. } => Some(*by),
        ChatEvent::Leave { .. } | ChatEvent::Announce { .. } | ChatEvent::Kick { .. } => None,
    }
}

/// Gives a broadcast line or announcement without an id the id of its
/// stream entry (section 9: unique across the cluster and its restarts);
/// one the proposing node already gave an id (unique across processes too,
/// and already returned by `POST /api/publish`) keeps it. True if the
/// event carries an id.
pub(super) fn set_id(event: &mut ChatEvent, stream_id: &str) -> bool {
    match event {
        ChatEvent::Message { id, to: None, .. } | ChatEvent::Announce { id, to: None, .. } => {
            if id.is_none() {
                *id = Some(stream_id.to_string());
            }
            true
        }
        _ => false,
    }
}

/// A node id (16 hex digits) as the number in [`Origin::node`].
pub(super) fn node_number(hex: &str) -> u64 {
    u64::from_str_radix(hex, 16).unwrap_or(0)
}

/// A room in which a closed connection's state is still there for the
/// chat to check its last messages against; nothing is sent to it.
pub(super) struct Departed<'r, R> {
    pub(super) room: &'r mut R,
    pub(super) slot: usize,
    pub(super) peer: &'r mut ChatPeer,
}

impl<R: Room> Room for Departed<'_, R> {
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer> {
        if slot == self.slot {
            Some(self.peer)
        } else {
            self.room.peer(slot)
        }
    }

    fn send(&mut self, slot: usize, frame: &[u8]) {
        if slot != self.slot {
            self.room.send(slot, frame);
        }
    }

    fn broadcast(&mut self, frame: &[u8]) {
        self.room.broadcast(frame);
    }

    fn close(&mut self, slot: usize, code: CloseCode, reason: &str) {
        if slot != self.slot {
            self.room.close(slot, code, reason);
        }
    }
}
