//! A link's liveness and resource deadlines, and what to do when one comes due: no clock, no
//! socket, no callbacks.
//!
//! Five deadlines belong to the link itself (the handshake's is the session's, the rekey's the
//! sealer's):
//!
//! | deadline | moved by | when due |
//! | --- | --- | --- |
//! | keepalive | every sealed record (`last_tx`) | send a `LINK_PING` |
//! | idle | every received byte (`last_rx`) | close: the peer is gone |
//! | send stall | a send in flight | close: the peer does not read |
//! | shed | every record carrying more than keepalives (`last_data`) | shed the key schedules |
//! | reassembly | a record taking a full-size buffer | close if it is still unfinished |
//!
//! The engine keeps one heap of entries for all its links and never removes one early. The
//! clock keeps each true deadline and, for each deadline that moves later often (keepalive,
//! shed, send stall, reassembly), whether an entry is armed that will find it: an entry that
//! comes due is answered with [`Fired`] — act, arm again at the true deadline, or drop a stale
//! entry. Moving a deadline later costs nothing, and a link keeps at most one live entry per
//! deadline.

use std::time::{Duration, Instant};

/// The periods a link's deadlines are set by (the engine's configuration; the keepalive
/// interval is the link's own and is passed where it is needed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Periods {
    /// Nothing received for this long: the link is closed.
    pub idle_timeout: Duration,
    /// A send that has not completed for this long: the link is closed.
    pub send_stall_timeout: Duration,
    /// Nothing but keepalives for this long: the record keys' schedules are shed.
    pub shed_keys_after: Duration,
    /// A record holding a full-size buffer must complete within this.
    pub record_completion_timeout: Duration,
}

/// One of the link's own deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    /// Send a keepalive.
    Keepalive,
    /// The peer must have sent something.
    Idle,
    /// The send in flight must have completed.
    SendStall,
    /// The key schedules may be shed.
    Shed,
    /// The record in a full-size buffer must have completed.
    Reassembly,
}

/// Why a deadline closes the link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing received within the idle timeout.
    Idle,
    /// A send made no progress within the stall timeout.
    SendStall,
    /// A record stayed unfinished past the reassembly deadline.
    Reassembly,
}

/// What to do about an entry that came due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fired {
    /// Nothing: the entry is stale (another is armed for the true deadline, or the deadline
    /// is gone).
    Stale,
    /// Not due yet: arm an entry for this deadline again at this time.
    Later(Instant),
    /// Send a keepalive now and arm the next entry at `next`. The record it goes in is sealed
    /// at the end of the turn: see [`LinkClock::end_turn`].
    Ping {
        /// When the next keepalive is due if nothing else is sent.
        next: Instant,
    },
    /// Shed the record keys' expanded schedules (keep their bytes).
    ShedKeys,
    /// Close the link.
    Expired(Expiry),
}

/// What the link's receive side holds, as a firing reassembly entry needs it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxState {
    /// A record in a full-size buffer has been given a deadline and is still unfinished.
    pub unfinished: bool,
}

const KEEPALIVE_ARMED: u8 = 1;
const STALL_ARMED: u8 = 1 << 1;
const SHED_ARMED: u8 = 1 << 2;
const REASSEMBLY_ARMED: u8 = 1 << 3;
/// The record being built this turn holds only a keepalive (sealing it is not data).
const PING_ONLY: u8 = 1 << 4;
/// Shed the keys once this turn's records are sealed (set by an idle keepalive).
const SHED_AFTER_TURN: u8 = 1 << 5;

/// A link's deadlines. 65 bytes of state; the engine keeps one per link.
#[derive(Clone, Copy, Debug)]
pub struct LinkClock {
    last_rx: Instant,
    last_tx: Instant,
    /// The last record either way that carried more than keepalives.
    last_data: Instant,
    /// When the send in flight started, if one is.
    send_started: Option<Instant>,
    flags: u8,
}

impl LinkClock {
    /// A link that starts at `now` (dialled, or accepted).
    pub fn new(now: Instant) -> LinkClock {
        LinkClock { last_rx: now, last_tx: now, last_data: now, send_started: None, flags: 0 }
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// Sets `flag`; whether it was clear.
    fn take_arm(&mut self, flag: u8) -> bool {
        let was = self.flags & flag == 0;
        self.flags |= flag;
        was
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// The handshake finished at `now`: the keepalive and idle deadlines start, and data counts
    /// from now. Returns the entries to arm (every one of them is new).
    pub fn established(
        &mut self,
        now: Instant,
        keepalive: Duration,
        periods: &Periods,
    ) -> [(Deadline, Instant); 3] {
        self.last_data = now;
        self.flags |= KEEPALIVE_ARMED | SHED_ARMED;
        [
            (Deadline::Keepalive, now + keepalive),
            (Deadline::Idle, now + periods.idle_timeout),
            (Deadline::Shed, now + periods.shed_keys_after),
        ]
    }

    /// Bytes arrived at `now`.
    pub fn received(&mut self, now: Instant) {
        self.last_rx = now;
    }

    /// The last time a record carried more than keepalives, either way.
    pub fn last_data(&self) -> Instant {
        self.last_data
    }

    /// Received records carried data, the last at `at`. Returns when to arm a shed entry, if
    /// none is armed.
    pub fn received_data(&mut self, at: Instant, periods: &Periods) -> Option<Instant> {
        self.last_data = self.last_data.max(at);
        self.take_arm(SHED_ARMED).then(|| self.last_data + periods.shed_keys_after)
    }

    /// Records were sealed at `now`; `whole` of them were written whole (forwarded, so data).
    /// The keepalive moves later (the entry armed for it fires early now and re-arms); if they
    /// carried data, so does the shed deadline. Returns when to arm a shed entry, if none is
    /// armed.
    pub fn sealed(&mut self, now: Instant, whole: bool, periods: &Periods) -> Option<Instant> {
        if self.last_tx != now {
            self.last_tx = now;
            self.set(KEEPALIVE_ARMED, false);
        }
        if self.has(PING_ONLY) && !whole {
            return None;
        }
        self.last_data = now;
        self.take_arm(SHED_ARMED).then(|| now + periods.shed_keys_after)
    }

    /// Data was written this turn after all (the application wrote into the record a keepalive
    /// had started, or a record filled up): this turn's records are data, not keepalives alone,
    /// and the keys stay. Call it before [`LinkClock::sealed`].
    pub fn data_written(&mut self) {
        self.set(PING_ONLY | SHED_AFTER_TURN, false);
    }

    /// The turn's records are sealed: whether to shed the keys now (an idle keepalive asked).
    pub fn end_turn(&mut self) -> bool {
        let shed = self.has(SHED_AFTER_TURN);
        self.set(PING_ONLY | SHED_AFTER_TURN, false);
        shed
    }

    /// The link's keepalive interval changed to `interval` at `now`: arm an entry at the
    /// returned time (at once if that has passed); entries armed for the old interval are
    /// stale from now on.
    pub fn keepalive_changed(&mut self, now: Instant, interval: Duration) -> Instant {
        self.flags |= KEEPALIVE_ARMED;
        (self.last_tx + interval).max(now)
    }

    /// A send started at `now`. Returns when to arm a stall entry, if none is armed.
    pub fn send_started(&mut self, now: Instant, periods: &Periods) -> Option<Instant> {
        self.send_started = Some(now);
        self.take_arm(STALL_ARMED).then(|| now + periods.send_stall_timeout)
    }

    /// The send in flight completed.
    pub fn send_done(&mut self) {
        self.send_started = None;
    }

    /// Whether a send is in flight.
    pub fn sending(&self) -> bool {
        self.send_started.is_some()
    }

    /// The receive side may hold a record in a full-size buffer without a deadline
    /// (`needs_deadline`). Returns when to arm a reassembly entry, if one is needed and none is
    /// armed; the caller then gives that record its deadline.
    pub fn arm_reassembly(
        &mut self,
        now: Instant,
        needs_deadline: bool,
        periods: &Periods,
    ) -> Option<Instant> {
        if !needs_deadline || self.has(REASSEMBLY_ARMED) {
            return None;
        }
        self.flags |= REASSEMBLY_ARMED;
        Some(now + periods.record_completion_timeout)
    }

    /// An entry for `deadline` came due at `now`. `keepalive` is the link's interval;
    /// `tx_pending` says whether a record is being built this turn (a keepalive then goes in it
    /// and is not alone); `rx` what the receive side holds.
    pub fn fire(
        &mut self,
        deadline: Deadline,
        now: Instant,
        keepalive: Duration,
        tx_pending: bool,
        rx: RxState,
        periods: &Periods,
    ) -> Fired {
        match deadline {
            Deadline::Idle => {
                let due = self.last_rx + periods.idle_timeout;
                if now >= due { Fired::Expired(Expiry::Idle) } else { Fired::Later(due) }
            }
            Deadline::Keepalive => {
                let due = self.last_tx + keepalive;
                if now >= due {
                    // The ping about to go says the link is idle this way; if nothing but pings
                    // has crossed it either way for a while, shed the keys once it is sealed.
                    let alone = !tx_pending;
                    self.set(PING_ONLY, alone);
                    if alone && now >= self.last_data + periods.shed_keys_after {
                        self.flags |= SHED_AFTER_TURN;
                    }
                    // The ping is sealed at the end of this turn: that is the last send.
                    self.last_tx = now;
                    self.flags |= KEEPALIVE_ARMED;
                    Fired::Ping { next: now + keepalive }
                } else if self.take_arm(KEEPALIVE_ARMED) {
                    // Sends moved the keepalive later: follow it.
                    Fired::Later(due)
                } else {
                    // Another entry is armed for the true deadline (the interval changed, or an
                    // earlier entry already followed the sends).
                    Fired::Stale
                }
            }
            Deadline::Shed => {
                // At most one entry: it re-arms itself while data flows, and the next data arms
                // one again once the keys are shed.
                self.set(SHED_ARMED, false);
                let due = self.last_data + periods.shed_keys_after;
                if now >= due {
                    Fired::ShedKeys
                } else {
                    self.flags |= SHED_ARMED;
                    Fired::Later(due)
                }
            }
            Deadline::SendStall => {
                // At most one entry: it re-arms itself while sends go on.
                self.set(STALL_ARMED, false);
                let Some(started) = self.send_started else { return Fired::Stale };
                let due = started + periods.send_stall_timeout;
                if now >= due {
                    Fired::Expired(Expiry::SendStall)
                } else {
                    self.flags |= STALL_ARMED;
                    Fired::Later(due)
                }
            }
            Deadline::Reassembly => {
                self.set(REASSEMBLY_ARMED, false);
                // The record that took a full-size buffer a period ago is still unfinished: the
                // peer holds our memory without sending. Else a later record (or none) holds
                // the buffer: the caller gives it a period of its own (`arm_reassembly`).
                if rx.unfinished { Fired::Expired(Expiry::Reassembly) } else { Fired::Stale }
            }
        }
    }
}

#[cfg(test)]
mod tests;
