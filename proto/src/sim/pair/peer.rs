//! One end of a [`Pair`](super::Pair): its production link, the pool its buffers come from,
//! and its timer list.

use std::cell::RefCell;
use std::time::Instant;

use crate::cipher::PublicKey;
use crate::link::pool::Pool;
use crate::link::{CloseReason, Deadline, Input, Link, Parts};
use crate::txn;

use super::{Output, Settings, Side};

/// Large and small buffers in each end's pool: enough that a warm pair never misses (four
/// full records in flight from one turn, and small ones for keepalives and handshake frames).
const POOL_LARGE: usize = 8;
const POOL_SMALL: usize = 32;

/// Room in each end's timer list: one entry per deadline the link may have armed at once
/// (keepalive twice, when its interval changed), so the list never grows.
const TIMERS: usize = 16;

/// A deadline an end's timer list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Timer {
    /// The handshake must have finished.
    Handshake,
    /// The sending keys' time to change.
    Rekey,
    /// One of the link's own deadlines.
    Link(Deadline),
}

/// Where an end's link is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Handshake,
    Up,
    Closed,
}

/// One end: its production link, the pool its buffers come from, and its timer list.
pub struct Peer {
    pub(super) link: Link,
    pub(super) pool: RefCell<Pool>,
    /// Deadlines the link asked for: `(when, what)`. As in the engine's heap, an entry is never
    /// removed early; the link says what a stale one means when it comes due.
    pub(super) timers: Vec<(Instant, Timer)>,
    pub(super) phase: Phase,
    /// What this end sends is dropped on the wire.
    pub(super) muted: bool,
    /// Bytes this end put on the wire.
    pub(super) wire_bytes: u64,
    pub(super) peer_key: Option<PublicKey>,
    pub(super) established_at: Option<Instant>,
    pub(super) closed: Option<(Instant, CloseReason)>,
    /// A close the end of a turn asked for, where no application is at hand: done at the next
    /// [`Pair::deliver`](super::Pair::deliver).
    pub(super) close_pending: Option<CloseReason>,
}

impl Peer {
    pub(super) fn new(link: Link) -> Peer {
        Peer {
            link,
            pool: RefCell::new(Pool::new(POOL_LARGE, POOL_SMALL)),
            timers: Vec::with_capacity(TIMERS),
            phase: Phase::Handshake,
            muted: false,
            wire_bytes: 0,
            peer_key: None,
            established_at: None,
            closed: None,
            close_pending: None,
        }
    }

    /// The link as its user writes to it: its transactions and its output (the record being
    /// built, sealed at the next [`Pair::transmit`](super::Pair::transmit)). Panics if the
    /// link is not up (closed); see [`Peer::try_parts`].
    pub fn parts(&mut self) -> Parts<'_> {
        self.try_parts().expect("the link is not up")
    }

    /// [`Peer::parts`], or `None` if the link is not up (its handshake did not finish, or it
    /// closed).
    pub fn try_parts(&mut self) -> Option<Parts<'_>> {
        if self.phase != Phase::Up {
            return None;
        }
        self.link.parts(&self.pool)
    }

    /// The link's transactions, up or not (a closed link's refuse every call).
    pub fn txn(&mut self) -> &mut txn::Link {
        self.link.txn()
    }

    /// The production link itself (its counters, its queue).
    pub fn link(&self) -> &Link {
        &self.link
    }

    /// Sends `plaintext` (whole messages, not checked) as a record of its own, as a relay
    /// forwards one: for tests that put bytes the transaction layer would never write into a
    /// properly sealed record. `false` if the link is not up.
    pub fn queue_record(&mut self, plaintext: &[u8]) -> bool {
        self.phase == Phase::Up
            && self.link.queue_record(&self.pool, plaintext, |_, _| Some(())).is_some()
    }

    /// Whether the link is up: its handshake finished and it has not closed.
    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// When the handshake finished at this end.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// The peer's key, as the handshake authenticated it.
    pub fn peer_key(&self) -> Option<PublicKey> {
        self.peer_key
    }

    /// Why the link closed, if it did.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.closed.map(|(_, reason)| reason)
    }

    /// When the link closed, if it did.
    pub fn closed_at(&self) -> Option<Instant> {
        self.closed.map(|(at, _)| at)
    }

    /// Buffers the pool had to allocate because it was empty (0 in a warm pair).
    pub fn pool_misses(&self) -> u64 {
        self.pool.borrow().misses()
    }

    pub(super) fn arm(&mut self, at: Instant, timer: Timer) {
        self.timers.push((at, timer));
    }

    /// The earliest entry due by `now`, taken off the list.
    pub(super) fn take_due(&mut self, now: Instant) -> Option<Timer> {
        let (index, _) = self
            .timers
            .iter()
            .enumerate()
            .filter(|(_, (at, _))| *at <= now)
            .min_by_key(|(_, (at, _))| *at)?;
        Some(self.timers.swap_remove(index).1)
    }

    /// When the next entry comes due, if the link is not closed.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        if self.phase == Phase::Closed {
            return None;
        }
        self.timers.iter().map(|&(at, _)| at).min()
    }

    /// Whether nothing waits to be sent or done.
    pub(super) fn is_settled(&self) -> bool {
        self.link.is_idle() && self.close_pending.is_none()
    }

    /// The handshake finished at `now`: records flow, and the link's deadlines are armed.
    pub(super) fn establish(
        &mut self,
        now: Instant,
        settings: &Settings,
    ) -> Result<(), CloseReason> {
        let (key, deadlines, rekey_at) =
            self.link.establish(now, settings.keepalive, &settings.periods)?;
        self.phase = Phase::Up;
        self.peer_key = Some(key);
        self.established_at = Some(now);
        for (deadline, at) in deadlines {
            self.arm(at, Timer::Link(deadline));
        }
        if let Some(at) = rekey_at {
            self.arm(at, Timer::Rekey);
        }
        Ok(())
    }

    /// Hands `bytes`, just arrived, to this end's link: handshake frames while it handshakes,
    /// then records. Returns whether the application was shown a message.
    pub(super) fn receive(
        &mut self,
        side: Side,
        bytes: &mut [u8],
        now: Instant,
        settings: &Settings,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
    ) -> Result<bool, CloseReason> {
        let mut start = 0;
        if self.phase == Phase::Handshake {
            let (used, done) = self.link.handle_handshake_bytes(bytes, now, self.pool.get_mut())?;
            if !done {
                return Ok(false);
            }
            start = used;
            self.establish(now, settings)?;
        }
        if start == bytes.len() {
            return Ok(false);
        }
        let mut shown = false;
        let count = self.link.handle_records(
            &mut bytes[start..],
            None,
            &self.pool,
            now,
            &settings.periods,
            |parts, input| {
                match input {
                    // Offered whole first: the application takes messages one by one.
                    Input::Record(_) => {}
                    Input::Received(received) => {
                        shown = true;
                        app(side, parts, Output::Received(received));
                    }
                    Input::Event(event) => app(side, parts, Output::Event(event)),
                }
                None
            },
        )?;
        if let Some(at) = count.shed_at {
            self.arm(at, Timer::Link(Deadline::Shed));
        }
        if let Some(at) = self.link.arm_reassembly(now, &settings.periods) {
            self.arm(at, Timer::Link(Deadline::Reassembly));
        }
        Ok(shown)
    }
}
