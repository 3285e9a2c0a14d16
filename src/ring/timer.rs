//! A worker's timers: one min-heap of deadlines for all its links.
//!
//! Entries are never removed early. A link keeps its true deadlines itself; when an entry comes
//! due, the worker compares it with the link's current deadline for that kind and either acts,
//! or re-arms at the later time, or drops a stale entry (the link is gone or was replaced). So
//! moving a deadline later — every send moves the keepalive — costs nothing, and the heap holds
//! at most a few entries per link.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The handshake must have finished.
    Handshake,
    /// Nothing sent for a while: send a keepalive.
    Keepalive,
    /// Nothing received for too long: the peer is gone.
    Idle,
    /// The send key reaches its age limit.
    Rekey,
    /// A send has been waiting on a peer that does not read.
    SendStall,
}

/// One armed deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timer {
    /// When.
    pub at: Instant,
    /// The link's slot.
    pub slot: u32,
    /// The link's generation, so a reused slot does not inherit the timer.
    pub generation: u32,
    /// What for.
    pub kind: TimerKind,
}

/// The heap.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Timer>>,
}

impl Timers {
    /// An empty heap with room for `capacity` entries before it grows.
    pub fn with_capacity(capacity: usize) -> Timers {
        Timers { heap: BinaryHeap::with_capacity(capacity) }
    }

    /// Arms a deadline.
    pub fn arm(&mut self, timer: Timer) {
        self.heap.push(Reverse(timer));
    }

    /// The earliest deadline armed.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(timer)| timer.at)
    }

    /// Removes and returns an entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        match self.heap.peek() {
            Some(Reverse(timer)) if timer.at <= now => self.heap.pop().map(|Reverse(t)| t),
            _ => None,
        }
    }

    /// Entries armed (live and stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        #[allow(clippy::disallowed_methods)] // a test's fixed epoch
        let t0 = Instant::now();
        let mut timers = Timers::default();
        let timer = |ms, slot| Timer {
            at: t0 + Duration::from_millis(ms),
            slot,
            generation: 0,
            kind: TimerKind::Idle,
        };
        timers.arm(timer(30, 3));
        timers.arm(timer(10, 1));
        timers.arm(timer(20, 2));
        assert_eq!(timers.next(), Some(t0 + Duration::from_millis(10)));
        assert_eq!(timers.pop_due(t0 + Duration::from_millis(5)), None);
        let due: Vec<u32> = std::iter::from_fn(|| timers.pop_due(t0 + Duration::from_millis(25)))
            .map(|t| t.slot)
            .collect();
        assert_eq!(due, [1, 2]);
        assert_eq!(timers.len(), 1);
    }
}
