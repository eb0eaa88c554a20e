//! Deadlines without a sweep: a min-heap of `(when, slot)` entries, so a
//! timer tick touches only the connections that are due, and ten thousand
//! idle connections cost nothing between their keepalive pings.
//!
//! Entries are never removed early. A connection whose deadline moved
//! later (any input resets keepalive) is simply found not yet due when its
//! old entry comes up, and scheduled again; one whose deadline moved
//! earlier gets an extra entry. Each slot remembers the time of its live
//! entry ([`Timers::key`]), so stale entries (and entries of a slot reused
//! since) are recognised and skipped.
//!
//! Times are whole milliseconds since the heap was made, rounded up, so an
//! entry takes 16 bytes: at ten thousand idle connections the heap is a
//! quarter of a megabyte, not half.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a timer entry is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// The connection's own deadline (see `Connection::on_deadline`).
    Deadline,
    /// Give buffers back if the connection stayed quiet.
    Trim,
}

/// A time on the heap's clock: milliseconds since it was made.
pub type Millis = u64;

/// No entry: later than any deadline.
pub const NONE: Millis = Millis::MAX;

#[derive(Debug)]
pub struct Timers {
    origin: Instant,
    heap: BinaryHeap<Reverse<(Millis, u32, Kind)>>,
}

impl Timers {
    /// A heap for about `connections` entries. Reserved up front, because
    /// growing by doubling would touch (and keep) the old buffers too.
    pub fn new(origin: Instant, connections: usize) -> Timers {
        Timers {
            origin,
            heap: BinaryHeap::with_capacity(connections.min(1 << 20)),
        }
    }

    /// `at` on the heap's clock, rounded up so nothing fires early.
    pub fn key(&self, at: Instant) -> Millis {
        self.millis(at, true).min(NONE - 1)
    }

    /// Milliseconds from the origin to `at`, rounded up or down. u64
    /// arithmetic: this runs after every read and flush, and a u128
    /// division (`as_nanos`) costs more than the rest of it.
    fn millis(&self, at: Instant, round_up: bool) -> Millis {
        let since = at.saturating_duration_since(self.origin);
        let part = match round_up {
            true => since.subsec_nanos().div_ceil(1_000_000),
            false => since.subsec_millis(),
        };
        since
            .as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(part))
    }

    /// Schedules `slot` at `at`; returns the entry's key.
    pub fn push(&mut self, at: Instant, slot: usize, kind: Kind) -> Millis {
        let key = self.key(at);
        // Slots are bounded by --max-connections, far below u32::MAX.
        let slot = u32::try_from(slot).unwrap_or(u32::MAX);
        self.heap.push(Reverse((key, slot, kind)));
        key
    }

    /// The earliest entry's time.
    pub fn next(&self) -> Option<Instant> {
        self.heap
            .peek()
            .map(|Reverse((at, _, _))| self.origin + std::time::Duration::from_millis(*at))
    }

    /// Removes and returns an entry due at `now`: its key, slot and kind.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Millis, usize, Kind)> {
        let now = self.millis(now, false);
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self
                .heap
                .pop()
                .map(|Reverse((at, slot, kind))| (at, slot as usize, kind)),
            _ => None,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.heap.len()
    }
}

/// Acting on deadlines: the loop's side of the heap.
mod acting {
    use super::super::*;
    use super::{Kind, NONE};
    use crate::engine::connection::Expiry;
    use crate::server::pump::Shown;

    /// Quiet time after which a connection gives its buffers back.
    const TRIM_AFTER: Duration = Duration::from_secs(1);

    impl<S: Service> Server<S> {
        /// Makes sure the connection's deadline has a timer entry, and that a
        /// connection holding buffers gives them back once quiet (an idle one
        /// holds none, and costs one timer entry).
        pub(in crate::server) fn schedule(&mut self, t: usize) {
            let now = self.now;
            let Some(slot) = self.conns.get_mut(t) else {
                return;
            };
            let deadline = self.timers.key(slot.conn.deadline());
            if deadline < slot.timer_at {
                slot.timer_at = self.timers.push(slot.conn.deadline(), t, Kind::Deadline);
            }
            if !slot.trim_armed && (slot.conn.holds_buffers() || slot.transport.holds_buffers()) {
                slot.trim_armed = true;
                self.timers.push(now + TRIM_AFTER, t, Kind::Trim);
            }
        }

        /// Acts on every timer entry that is due.
        pub(in crate::server) fn run_timers(&mut self) {
            let now = self.now;
            while let Some((at, t, kind)) = self.timers.pop_due(now) {
                let Some(slot) = self.conns.get_mut(t) else {
                    continue;
                };
                match kind {
                    Kind::Trim => {
                        if !slot.trim_armed {
                            continue;
                        }
                        if slot.conn.take_activity() {
                            self.timers.push(now + TRIM_AFTER, t, Kind::Trim);
                        } else {
                            slot.conn.trim();
                            slot.transport.trim_idle();
                            slot.trim_armed = false;
                        }
                    }
                    Kind::Deadline => {
                        if at != slot.timer_at {
                            continue;
                        }
                        slot.timer_at = NONE;
                        match slot.conn.on_deadline(now, &self.limits) {
                            Expiry::NotYet => self.schedule(t),
                            Expiry::Pinged => {
                                self.mark_dirty(t);
                                self.schedule(t);
                            }
                            Expiry::Closed { code } => {
                                if let Some(slot) = self.conns.get(t) {
                                    info!(
                                        "closing {} with {code}: message not completed in time",
                                        Shown(slot.addr)
                                    );
                                }
                                self.metrics.close_sent(code);
                                self.mark_dirty(t);
                                self.schedule(t);
                                self.leave(t);
                            }
                            Expiry::HandshakeTimeout => {
                                self.metrics.rejected("timeout");
                                self.drop_connection(t, "no request within the handshake timeout");
                            }
                            Expiry::Drop(reason) => self.drop_connection(t, &reason),
                        }
                    }
                }
            }
            self.settle();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_only_what_is_due_in_order() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, 4);
        timers.push(t0 + Duration::from_secs(3), 1, Kind::Deadline);
        timers.push(t0 + Duration::from_secs(1), 2, Kind::Trim);
        timers.push(t0 + Duration::from_secs(2), 3, Kind::Deadline);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        let now = t0 + Duration::from_secs(2);
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(2));
        assert_eq!(timers.pop_due(now).map(|e| e.1), Some(3));
        assert_eq!(timers.pop_due(now), None);
        assert_eq!(timers.len(), 1);
    }

    #[test]
    fn never_fires_early() {
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, 4);
        let at = t0 + Duration::from_micros(1500);
        let key = timers.push(at, 7, Kind::Deadline);
        assert_eq!(key, 2, "rounded up");
        assert_eq!(timers.pop_due(t0 + Duration::from_micros(1999)), None);
        assert_eq!(
            timers.pop_due(t0 + Duration::from_millis(2)),
            Some((2, 7, Kind::Deadline))
        );
        assert_eq!(std::mem::size_of::<Reverse<(Millis, u32, Kind)>>(), 16);
    }
}
