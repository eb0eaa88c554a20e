//! Applying chat events: the only place the name index changes and the
//! only place anything is delivered (see the module map in `chat/mod.rs`).

use super::*;

impl Chat {
    /// Applies one event: the only place chat state changes and the only
    /// place anything is delivered.
    pub fn apply(&mut self, room: &mut impl Room, event: ChatEvent) {
        match event {
            ChatEvent::Join { by, name, color } => {
                self.hold(room, by, &name, color);
                let message = format!("{name} joined");
                let frame = self.wire.system("join", &name, None, Some(color), &message);
                room.broadcast(frame);
            }
            ChatEvent::Rename {
                by,
                from,
                name,
                color,
            } => {
                self.release(by, &from);
                self.hold(room, by, &name, color);
                let message = format!("{from} is now {name}");
                let frame = self
                    .wire
                    .system("rename", &name, Some(&from), Some(color), &message);
                room.broadcast(frame);
            }
            ChatEvent::Recolor { by, name, color } => self.recolor(room, by, &name, color),
            ChatEvent::Message {
                by,
                name,
                color,
                text,
                ts,
                id,
                to,
            } => {
                self.recolor(room, by, &name, color);
                let Some(to) = to else {
                    let frame = self
                        .wire
                        .usermsg(&name, &text, color, ts, id.as_deref(), None);
                    room.broadcast(frame);
                    self.history.push(self.wire.json());
                    return;
                };
                // The recipient must still be there (it was checked when
                // the line was accepted).
                let Some(recipient) = self.names.get(&to.to_lowercase()) else {
                    return;
                };
                let recipient_by = recipient.by;
                let recipient_name = recipient.name.clone();
                let frame = self
                    .wire
                    .usermsg(&name, &text, color, ts, None, Some(&recipient_name));
                let frame = frame.to_vec();
                let to_slot = self.local_slot(room, recipient_by);
                if let Some(slot) = to_slot {
                    room.send(slot, &frame);
                }
                if let Some(slot) = self.local_slot(room, by)
                    && Some(slot) != to_slot
                {
                    room.send(slot, &frame);
                }
            }
            ChatEvent::Leave { by, name } => {
                if self.release(by, &name) {
                    let message = format!("{name} left");
                    let frame = self.wire.system("leave", &name, None, None, &message);
                    room.broadcast(frame);
                }
            }
            ChatEvent::Announce { text, ts, id, to } => {
                let frame = self.wire.announce(&text, ts, id.as_deref());
                match to {
                    None => {
                        room.broadcast(frame);
                        self.history.push(self.wire.json());
                    }
                    Some(to) => {
                        let frame = frame.to_vec();
                        if let Some(by) = self.names.get(&to.to_lowercase()).map(|h| h.by)
                            && let Some(slot) = self.local_slot(room, by)
                        {
                            room.send(slot, &frame);
                        }
                    }
                }
            }
            ChatEvent::Kick { name, reason } => {
                if let Some(by) = self.names.get(&name.to_lowercase()).map(|h| h.by)
                    && let Some(slot) = self.local_slot(room, by)
                {
                    room.close(slot, CloseCode::POLICY_VIOLATION, &reason);
                }
            }
        }
    }

    /// Records `by` as the holder of `name` (and the local peer's state).
    fn hold(&mut self, room: &mut impl Room, by: Origin, name: &str, color: Color) {
        self.names.insert(
            name.to_lowercase(),
            Holder {
                name: name.into(),
                color,
                by,
            },
        );
        self.users_valid = false;
        if let Some(slot) = self.local_slot(room, by)
            && let Some(peer) = room.peer(slot)
        {
            peer.name = Some(name.into());
            peer.color = color;
        }
    }

    /// Frees `name` if `by` holds it (a later holder keeps it); true if so.
    fn release(&mut self, by: Origin, name: &str) -> bool {
        let key = name.to_lowercase();
        if self.names.get(&key).is_some_and(|h| h.by == by) {
            self.names.remove(&key);
            self.users_valid = false;
            return true;
        }
        false
    }

    fn recolor(&mut self, room: &mut impl Room, by: Origin, name: &str, color: Color) {
        if let Some(holder) = self.names.get_mut(&name.to_lowercase())
            && holder.by == by
            && holder.color != color
        {
            holder.color = color;
            self.users_valid = false;
        }
        if let Some(slot) = self.local_slot(room, by)
            && let Some(peer) = room.peer(slot)
        {
            peer.color = color;
        }
    }
}
