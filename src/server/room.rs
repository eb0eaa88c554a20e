//! The chat's view of the server: queueing framed messages on open chat
//! connections within their output caps.

use super::*;
use crate::app::chat::Room;

/// Appends `len` bytes, written by `write`, to one connection's output if it
/// is open and under its cap; over the cap it is put on the `slow` list
/// instead. Writing in place lets a frame be encoded straight into the
/// buffer, with no allocation of its own.
#[allow(clippy::too_many_arguments)]
pub(super) fn queue_with(
    t: usize,
    slot: &mut Slot,
    len: usize,
    max_output: usize,
    dirty: &mut VecDeque<usize>,
    slow: &mut Vec<usize>,
    bytes_sent: &mut u64,
    write: impl FnOnce(&mut Vec<u8>),
) -> bool {
    let conn = &mut slot.conn;
    if !conn.is_open() {
        return false;
    }
    if conn.out.len().saturating_add(len) > max_output && !conn.out.is_empty() {
        // Output queued this turn has not met the socket yet: only what the
        // kernel refuses counts as pending, so write now before judging.
        if let Ok((_, written)) = conn.flush() {
            *bytes_sent += written as u64;
        }
        // One message always fits an empty buffer, so a message larger than
        // the cap (an echo of a big message) is not mistaken for a slow
        // reader; memory stays bounded by the cap plus one message.
        if !conn.out.is_empty() && conn.out.len().saturating_add(len) > max_output {
            slow.push(t);
            return false;
        }
    }
    write(&mut conn.out);
    conn.active = true;
    if !conn.dirty {
        conn.dirty = true;
        dirty.push_back(t);
    }
    true
}

/// [`queue_with`] for bytes already framed (a broadcast's shared frame).
pub(super) fn queue_on(
    t: usize,
    slot: &mut Slot,
    bytes: &[u8],
    max_output: usize,
    dirty: &mut VecDeque<usize>,
    slow: &mut Vec<usize>,
    bytes_sent: &mut u64,
) -> bool {
    queue_with(
        t,
        slot,
        bytes.len(),
        max_output,
        dirty,
        slow,
        bytes_sent,
        |out| out.extend_from_slice(bytes),
    )
}

/// The chat's view of the server's connections.
pub(super) struct ServerRoom<'a> {
    pub(super) conns: &'a mut Slab<Slot>,
    pub(super) dirty: &'a mut VecDeque<usize>,
    pub(super) slow: &'a mut Vec<usize>,
    pub(super) closes: &'a mut Vec<(usize, CloseCode, &'static str)>,
    pub(super) metrics: &'a mut Metrics,
    pub(super) max_output: usize,
}

impl Room for ServerRoom<'_> {
    fn peer(&mut self, slot: usize) -> Option<&mut ChatPeer> {
        match self.conns.get_mut(slot) {
            Some(Slot {
                conn,
                app: AppState::Chat(peer),
            }) if conn.is_open() => Some(peer),
            _ => None,
        }
    }

    fn send(&mut self, t: usize, frame: &[u8]) {
        if let Some(slot) = self.conns.get_mut(t)
            && matches!(slot.app, AppState::Chat(_))
            && queue_on(
                t,
                slot,
                frame,
                self.max_output,
                self.dirty,
                self.slow,
                &mut self.metrics.bytes_sent,
            )
        {
            self.metrics.messages_sent[AppLabel::Chat as usize] += 1;
        }
    }

    fn broadcast(&mut self, frame: &[u8]) {
        let mut sent = 0;
        for (t, slot) in self.conns.iter_mut() {
            if matches!(slot.app, AppState::Chat(_))
                && queue_on(
                    t,
                    slot,
                    frame,
                    self.max_output,
                    self.dirty,
                    self.slow,
                    &mut self.metrics.bytes_sent,
                )
            {
                sent += 1;
            }
        }
        self.metrics.messages_sent[AppLabel::Chat as usize] += sent;
    }

    fn close(&mut self, t: usize, code: CloseCode, reason: &'static str) {
        self.closes.push((t, code, reason));
    }
}
