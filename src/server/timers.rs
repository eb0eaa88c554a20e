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
        let nanos = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(nanos.div_ceil(1_000_000)).unwrap_or(NONE - 1)
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
        let now = now.saturating_duration_since(self.origin).as_millis();
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if u128::from(*at) <= now => self
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
