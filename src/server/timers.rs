//! Deadlines without a sweep: a min-heap of `(when, slot)` entries, so a
//! timer tick touches only the connections that are due, and ten thousand
//! idle connections cost nothing between their keepalive pings.
//!
//! Entries are never removed early. A connection whose deadline moved
//! later (any input resets keepalive) is simply found not yet due when its
//! old entry comes up, and scheduled again; one whose deadline moved
//! earlier gets an extra entry. Each slot remembers the time of its live
//! entry, so stale entries (and entries of a slot reused since) are
//! recognised and skipped.

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

#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, usize, Kind)>>,
}

impl Timers {
    pub fn push(&mut self, at: Instant, slot: usize, kind: Kind) {
        self.heap.push(Reverse((at, slot, kind)));
    }

    /// The earliest entry's time.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Removes and returns an entry due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, usize, Kind)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self.heap.pop().map(|Reverse(e)| e),
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
        let mut timers = Timers::default();
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
}
