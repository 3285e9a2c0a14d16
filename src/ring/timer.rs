//! A worker's timers: one min-heap of deadlines for all its links.
//!
//! Entries are never removed early. A link keeps its true deadlines itself; when an entry comes
//! due, the worker compares it with the link's current deadline for that kind and either acts,
//! or re-arms at the later time, or drops a stale entry (the link is gone or was replaced). So
//! moving a deadline later — every send moves the keepalive — costs nothing, and the heap holds
//! at most a few entries per link.
//!
//! An entry is 16 bytes (an idle link keeps about three: keepalive, idle, rekey): its deadline
//! is kept as nanoseconds since the heap's epoch with the kind in the low bits, not as an
//! `Instant` (16 bytes on its own).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
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
    /// The link may have been quiet long enough to shed its record key schedules.
    Shed,
    /// A record being reassembled in a full-size buffer must have completed.
    Reassembly,
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

/// Bits of an entry's key that hold its kind.
const KIND_BITS: u32 = 3;

/// The latest deadline an entry holds, in nanoseconds after the epoch: about 73 years. Later
/// ones are kept at it (they never come due in a process's life either way).
const AT_MAX_NS: u64 = u64::MAX >> KIND_BITS;

const KINDS: [TimerKind; 7] = [
    TimerKind::Handshake,
    TimerKind::Keepalive,
    TimerKind::Idle,
    TimerKind::Rekey,
    TimerKind::SendStall,
    TimerKind::Shed,
    TimerKind::Reassembly,
];

const _: () = assert!(KINDS.len() <= 1 << KIND_BITS);

/// One entry as the heap stores it: ordered by deadline first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    /// Nanoseconds after the epoch, shifted left by [`KIND_BITS`], with the kind below.
    key: u64,
    slot: u32,
    generation: u32,
}

/// The heap.
pub struct Timers {
    epoch: Instant,
    heap: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// An empty heap with room for `capacity` entries before it grows. Deadlines before `epoch`
    /// are kept at `epoch` (they are due at once).
    pub fn new(epoch: Instant, capacity: usize) -> Timers {
        Timers { epoch, heap: BinaryHeap::with_capacity(capacity) }
    }

    /// Arms a deadline.
    pub fn arm(&mut self, timer: Timer) {
        let ns = timer.at.saturating_duration_since(self.epoch).as_nanos();
        let ns = u64::try_from(ns).unwrap_or(u64::MAX).min(AT_MAX_NS);
        let key = ns << KIND_BITS | timer.kind as u64;
        self.heap.push(Reverse(Entry { key, slot: timer.slot, generation: timer.generation }));
    }

    fn at(&self, entry: &Entry) -> Instant {
        self.epoch + Duration::from_nanos(entry.key >> KIND_BITS)
    }

    /// The earliest deadline armed.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(entry)| self.at(entry))
    }

    /// Removes and returns an entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let Reverse(entry) = *self.heap.peek()?;
        let at = self.at(&entry);
        if at > now {
            return None;
        }
        self.heap.pop();
        let kind = KINDS[(entry.key & ((1 << KIND_BITS) - 1)) as usize];
        Some(Timer { at, slot: entry.slot, generation: entry.generation, kind })
    }

    /// Entries armed (live and stale).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Bytes the heap has allocated (its capacity), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Reverse<Entry>>()
    }

    /// Bytes one entry takes.
    pub const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_only_when_due() {
        #[allow(clippy::disallowed_methods)] // a test's fixed epoch
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, 0);
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

    #[test]
    fn entries_are_small_and_keep_kind_and_deadline() {
        assert_eq!(Timers::ENTRY_BYTES, 16);
        #[allow(clippy::disallowed_methods)] // a test's fixed epoch
        let t0 = Instant::now();
        let mut timers = Timers::new(t0, 0);
        let at = t0 + Duration::from_nanos(123_456_789);
        for (slot, kind) in KINDS.into_iter().enumerate() {
            timers.arm(Timer { at, slot: slot as u32, generation: u32::MAX, kind });
        }
        // A deadline before the epoch is due at once; one far in the future never comes.
        let early = Timer { at: t0, slot: 9, generation: 0, kind: TimerKind::Idle };
        timers.arm(early);
        timers.arm(Timer { at: t0 + Duration::from_secs(u64::MAX / 4), ..early });
        assert_eq!(timers.pop_due(t0), Some(early));
        let mut kinds = Vec::new();
        while let Some(timer) = timers.pop_due(at) {
            assert_eq!((timer.at, timer.generation), (at, u32::MAX));
            kinds.push(timer.kind);
        }
        kinds.sort();
        assert_eq!(kinds, KINDS);
        assert_eq!(timers.len(), 1);
        assert!(timers.next().is_some_and(|next| next > at));
    }
}
