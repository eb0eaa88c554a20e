//! The loop's side of [`Connections`]: what a service may do to the
//! connections, over the slab, within the output caps.

use super::Slot;
use crate::app::{ConnId, Connections};
use crate::engine::close::CloseCode;
use crate::engine::connection::{Connection, State};
use crate::engine::frame::{Opcode, encode_frame};
use crate::metrics::{AppGauges, Gauges, Metrics};
use slab::Slab;
use std::collections::VecDeque;
use std::time::Instant;

/// A borrow of the loop's parts that a service call may touch.
pub(super) struct LoopRoom<'a, P> {
    pub conns: &'a mut Slab<Slot<P>>,
    pub out: Outbox<'a>,
    /// Closes asked for, settled after the current event.
    pub closes: &'a mut Vec<(usize, CloseCode, String)>,
    pub now: Instant,
    pub fd_capacity: u64,
}

/// Where queued output is accounted: the turn's flush list, the slow
/// consumers, the counters.
pub(super) struct Outbox<'a> {
    pub dirty: &'a mut VecDeque<usize>,
    /// Connections found over `--max-output-bytes` while queueing.
    pub slow: &'a mut Vec<usize>,
    pub metrics: &'a mut Metrics,
    pub max_output: usize,
}

impl Outbox<'_> {
    /// Appends `len` bytes, written by `write`, to an open connection's
    /// output if it stays under its cap; over the cap the connection goes
    /// on the `slow` list instead. Writing in place lets a frame be encoded
    /// straight into the buffer.
    fn queue<P>(
        &mut self,
        t: usize,
        slot: &mut Slot<P>,
        len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> bool {
        if !slot.conn.is_open() {
            return false;
        }
        let pending = slot.pending();
        if pending.saturating_add(len) > self.max_output && pending > 0 {
            // Output queued this turn has not met the socket yet: only what
            // the kernel refuses counts as pending, so write now before
            // judging.
            if let Ok(written) = slot.write_out() {
                self.metrics.bytes_sent += written as u64;
            }
            // One message always fits an empty buffer, so a message larger
            // than the cap (an echo of a big message) is not mistaken for a
            // slow reader; memory stays bounded by the cap plus one message.
            let pending = slot.pending();
            if pending > 0 && pending.saturating_add(len) > self.max_output {
                self.slow.push(t);
                return false;
            }
        }
        slot.conn.queue_with(write);
        if !slot.dirty {
            slot.dirty = true;
            self.dirty.push_back(t);
        }
        true
    }
}

impl<P> Connections<P> for LoopRoom<'_, P> {
    fn now(&self) -> Instant {
        self.now
    }

    fn peer(&mut self, id: ConnId) -> Option<&mut P> {
        let slot = self.conns.get_mut(id)?;
        if slot.conn.is_open() {
            slot.app.as_mut()
        } else {
            None
        }
    }

    fn send(&mut self, id: ConnId, frame: &[u8]) -> bool {
        let Some(slot) = self.conns.get_mut(id) else {
            return false;
        };
        self.out
            .queue(id, slot, frame.len(), |out| out.extend_from_slice(frame))
    }

    fn send_frame(&mut self, id: ConnId, opcode: Opcode, payload: &[u8]) -> bool {
        let Some(slot) = self.conns.get_mut(id) else {
            return false;
        };
        let len = Connection::frame_len(payload.len());
        self.out
            .queue(id, slot, len, |out| encode_frame(out, opcode, payload))
    }

    fn broadcast(&mut self, frame: &[u8], mut to: impl FnMut(&P) -> bool) -> u64 {
        let mut sent = 0;
        for (t, slot) in self.conns.iter_mut() {
            if slot.app.as_ref().is_some_and(&mut to)
                && self
                    .out
                    .queue(t, slot, frame.len(), |out| out.extend_from_slice(frame))
            {
                sent += 1;
            }
        }
        sent
    }

    fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        self.closes.push((id, code, reason.to_string()));
    }

    fn metrics(&mut self) -> &mut Metrics {
        self.out.metrics
    }

    fn render_metrics(&mut self, app: &AppGauges) -> String {
        let mut g = Gauges {
            users_named: app.users_named,
            rate_limited_total: app.rate_limited_total,
            fd_capacity: self.fd_capacity,
            extra: app.extra.clone(),
            ..Gauges::default()
        };
        for (_, slot) in self.conns.iter() {
            match slot.conn.state() {
                State::Handshake => g.handshake += 1,
                State::Open => g.open += 1,
                State::Closing => g.closing += 1,
                State::Http => g.http += 1,
            }
        }
        self.out.metrics.render(&g)
    }
}
