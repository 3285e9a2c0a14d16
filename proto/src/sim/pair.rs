//! `Pair`: two production links joined by an in-memory byte pipe, on a virtual clock.
//!
//! Each end is a real [`link::Link`](Link) driven the way the engine drives one (`ring::worker`),
//! with the pipe in place of the socket and a small timer list in place of the worker's heap:
//!
//! - [`Pair::new`] makes two identities and runs the real Noise handshake over the pipe (A dials,
//!   B accepts; each frame takes the latency to cross), then both links switch to records.
//! - What an end's application writes (into [`Parts::out`], from [`Peer::parts`] or in the
//!   application callback) goes into the record being built; [`Pair::transmit`] ends the turn
//!   (`end_turn` seals it, AES-GCM) and moves what the link gives to send onto the wire, where it
//!   arrives at the other end `latency` later. [`Pair::deliver`] hands what has arrived to the
//!   other link (`handle_records`: records cut, opened, parsed, the transaction layer, the link's
//!   own keepalives and close notices) and shows the application every message and event.
//! - Every deadline a link asks for (handshake, keepalive, idle, key shedding, send stall,
//!   reassembly, rekey) goes in its end's timer list and is handed back to the link when virtual
//!   time reaches it. A link that closes (idle timeout, a peer's `LINK_CLOSE`, bytes that do not
//!   authenticate or parse, the end of the peer's stream) ends its transactions as the engine's
//!   does, shows the application [`Output::Closed`] with the reason, and closes its side of the
//!   pipe: the other end sees the end of the stream after what was already on the wire.
//!
//! Faults: [`Pair::cut`] loses everything in flight and ends both links at once;
//! [`Pair::mute`] drops everything one end sends from then on (its links keep running);
//! [`Pair::in_flight`] lends the bytes on the wire, to flip one; [`Pair::close`] closes one end
//! with a notice, as the engine's drain does.
//!
//! Nothing here reads the real clock after the one epoch read in [`Pair::with_settings`]: time
//! moves only by [`Pair::advance`], to the next arrival ([`Pair::drive`]), or to each event in
//! turn ([`Pair::run_for`]). The keys are random (fresh identities and ephemeral keys), so the
//! bytes differ from run to run; their lengths and everything that happens when do not.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cipher::{self, Identity, RekeyLimits, Session};
use crate::error::{Error, Handshake};
use crate::limits;
use crate::link::{CloseReason, Crypto, Deadline, Link, Periods, Timeout};
use crate::txn::{Event, Received};
use crate::wire::ErrorCode;

mod peer;

pub use peer::Peer;
use peer::{Phase, Timer};

/// What a link lends its user: its transactions, its output (the record being built) and its
/// settings. The application callback is handed one; [`Peer::parts`] lends one outside it.
pub use crate::link::Parts;

/// The reason recorded at both ends when the pair is [`Pair::cut`]: a reset connection
/// (`ECONNRESET` on Linux), as the engine would see it.
const CUT_ERRNO: i32 = 104;

/// Rounds [`Pair::run_until`] runs before it calls the pair livelocked.
const RUN_ROUNDS_MAX: usize = 10_000_000;

/// One end of a [`Pair`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The first end: it dialled (the handshake's initiator).
    A,
    /// The second end: it accepted.
    B,
}

impl Side {
    /// The other end.
    pub fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// What an end's application is shown.
#[derive(Debug)]
pub enum Output<'a> {
    /// A message arrived.
    Received(Received<'a>),
    /// A lifecycle event from the link's transactions.
    Event(Event),
    /// This end's link closed, for this reason; its transactions have ended (their events came
    /// first). Not shown for [`Pair::cut`], which only ends the transactions.
    Closed(CloseReason),
}

/// How a pair's links are set up: the engine's defaults ([`Settings::new`]) unless a test needs
/// shorter periods.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long bytes take to cross, either way.
    pub latency: Duration,
    /// A link that sent nothing for this long sends a keepalive.
    pub keepalive: Duration,
    /// The periods of the links' other deadlines.
    pub periods: Periods,
    /// A link with more bytes than this queued at the end of a turn is closed.
    pub send_queue_max: usize,
    /// When record keys change.
    pub rekey: RekeyLimits,
    /// Time from the start of a handshake to its end.
    pub handshake_timeout: Duration,
}

impl Settings {
    /// The engine's defaults (`ring::Config::default()`, from `limits`), with bytes taking
    /// `latency` to cross.
    pub fn new(latency: Duration) -> Settings {
        Settings {
            latency,
            keepalive: Duration::from_millis(limits::KEEPALIVE_INTERVAL_MS),
            periods: Periods {
                idle_timeout: Duration::from_millis(limits::IDLE_TIMEOUT_MS),
                send_stall_timeout: Duration::from_millis(limits::SEND_STALL_TIMEOUT_MS),
                shed_keys_after: Duration::from_millis(limits::SHED_KEYS_AFTER_MS),
                record_completion_timeout: Duration::from_millis(
                    limits::RECORD_COMPLETION_TIMEOUT_MS,
                ),
            },
            send_queue_max: limits::SEND_QUEUE_MAX_BYTES,
            rekey: RekeyLimits::default(),
            handshake_timeout: Duration::from_millis(limits::HANDSHAKE_TIMEOUT_MS),
        }
    }
}

/// One direction of the pipe.
#[derive(Debug, Default)]
struct Wire {
    /// Bytes in flight; `bytes[..read]` has been handed to the receiving link.
    bytes: Vec<u8>,
    read: usize,
    /// `(time, end)`: the bytes up to `end` arrive at `time`.
    arrivals: VecDeque<(Instant, usize)>,
    /// Bytes up to here have arrived.
    arrived: usize,
    /// The sender closed: the stream ends at this time, after every byte before it.
    eof: Option<Instant>,
}

impl Wire {
    /// Drops what was handed over (a move within the buffer, never an allocation).
    fn consume(&mut self) {
        if self.read > 0 {
            let read = self.read;
            self.bytes.drain(..read);
            self.read = 0;
            self.arrived -= read;
            for (_, end) in &mut self.arrivals {
                *end -= read;
            }
        }
    }

    /// Whether the end of the stream has arrived by `now`, every byte before it handed over.
    fn ended(&self, now: Instant) -> bool {
        self.eof.is_some_and(|at| at <= now)
            && self.arrivals.is_empty()
            && self.read == self.bytes.len()
    }

    /// When the next bytes, or the end of the stream, arrive.
    fn next_arrival(&self) -> Option<Instant> {
        self.arrivals.front().map(|&(time, _)| time).or(self.eof)
    }
}

/// The outcome of a bounded drive that did not settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Livelock {
    /// Delivery rounds run.
    pub rounds: usize,
}

/// Counters over a pair's life, both ends together.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Records opened at the receiving end (keepalives and close notices included).
    pub records: u64,
    /// Messages received, in records opened (keepalives included).
    pub messages: u64,
    /// Bytes put on the wire (handshake frames and sealed records).
    pub bytes: u64,
}

/// Two production links over an in-memory pipe with a virtual clock. See the module
/// documentation.
pub struct Pair {
    /// End A (it dialled).
    pub a: Peer,
    /// End B (it accepted).
    pub b: Peer,
    /// `[A to B, B to A]`.
    wires: [Wire; 2],
    epoch: Instant,
    now: Instant,
    settings: Settings,
}

impl Pair {
    /// A pair whose bytes take `latency` to cross, with the engine's default periods, its
    /// handshake done ([`Pair::with_settings`]).
    pub fn new(latency: Duration) -> Pair {
        Pair::with_settings(Settings::new(latency))
    }

    /// A pair set up by `settings`: two fresh identities, A dialling B, which accepts A's key;
    /// the handshake runs over the pipe on virtual time (so it takes three crossings), and the
    /// pair is returned with both links up. Panics if the handshake fails.
    pub fn with_settings(settings: Settings) -> Pair {
        // The epoch of virtual time. It is read once and only ever compared with itself plus
        // durations, so runs stay deterministic.
        #[allow(clippy::disallowed_methods)]
        let epoch = Instant::now();
        let config = |identity: Identity| {
            let mut config = cipher::Config::new(identity).expect("a cipher configuration");
            config.rekey = settings.rekey;
            config.handshake_timeout = settings.handshake_timeout;
            config
        };
        let (a_identity, b_identity) = (
            Identity::generate().expect("an identity"),
            Identity::generate().expect("an identity"),
        );
        let (a_key, b_key) = (a_identity.public_key(), b_identity.public_key());
        let a_config = config(a_identity);
        let mut b_config = config(b_identity);
        b_config.allowlist.insert(a_key);
        let initiator = Session::initiator(Arc::new(a_config), Some(b_key), epoch);
        let responder = Session::responder(Arc::new(b_config), epoch);
        let (initiator, responder) = (initiator.expect("a session"), responder.expect("a session"));

        let mut a = Peer::new(Link::new(Crypto::None, epoch));
        a.link.meta_mut().dialled = true;
        a.link.start_handshake(Box::new(initiator), a.pool.get_mut());
        let mut b = Peer::new(Link::new(Crypto::Handshake(Box::new(responder)), epoch));
        if let Some(at) = epoch.checked_add(settings.handshake_timeout) {
            a.arm(at, Timer::Handshake);
            b.arm(at, Timer::Handshake);
        }
        let mut pair = Pair { a, b, wires: Default::default(), epoch, now: epoch, settings };
        pair.drive(&mut |_, _, _| {});
        for (side, peer) in [(Side::A, &pair.a), (Side::B, &pair.b)] {
            assert!(peer.is_up(), "{side:?}: handshake failed: {:?}", peer.close_reason());
        }
        pair
    }

    /// Virtual time now.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time's origin: when the handshake started.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// How the pair was set up.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        let (a, b) = (self.a.link.stats(), self.b.link.stats());
        Stats {
            records: a.records_in + b.records_in,
            messages: a.messages_in + b.messages_in,
            bytes: self.a.wire_bytes + self.b.wire_bytes,
        }
    }

    /// Whether both links are up.
    pub fn is_connected(&self) -> bool {
        self.a.is_up() && self.b.is_up()
    }

    /// One end.
    pub fn peer(&mut self, side: Side) -> &mut Peer {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// One end, and the wires into and out of it.
    fn end(&mut self, side: Side) -> (&mut Peer, &mut Wire, &mut Wire) {
        let [a_to_b, b_to_a] = &mut self.wires;
        match side {
            Side::A => (&mut self.a, b_to_a, a_to_b),
            Side::B => (&mut self.b, a_to_b, b_to_a),
        }
    }

    /// Drops everything `side` sends from now on (also its close notice and the end of its
    /// stream): to the other end it falls silent. Its link goes on as if its bytes were sent.
    pub fn mute(&mut self, side: Side) {
        self.peer(side).muted = true;
    }

    /// The bytes `from` has put on the wire that the other end has not been handed yet
    /// (arrived or not), to read or to change.
    pub fn in_flight(&mut self, from: Side) -> &mut [u8] {
        let wire = &mut self.wires[match from {
            Side::A => 0,
            Side::B => 1,
        }];
        &mut wire.bytes[wire.read..]
    }

    /// Ends the turn at both ends: each link seals what was written into a record, and what it
    /// has to send goes onto the wire (at once: the pipe takes everything), arriving at the
    /// other end after the latency.
    pub fn transmit(&mut self) {
        for side in [Side::A, Side::B] {
            if let Some(reason) = self.transmit_side(side) {
                self.peer(side).close_pending.get_or_insert(reason);
            }
        }
    }

    /// Ends `side`'s turn ([`Pair::transmit`]); returns a reason to close, if the end of the
    /// turn gave one.
    fn transmit_side(&mut self, side: Side) -> Option<CloseReason> {
        let (now, settings) = (self.now, self.settings);
        let (peer, _, wire) = self.end(side);
        if peer.phase == Phase::Closed || peer.close_pending.is_some() {
            return None;
        }
        let end = peer.link.end_turn(
            now,
            settings.keepalive,
            settings.send_queue_max,
            peer.pool.get_mut(),
            &settings.periods,
        );
        if let Some(at) = end.shed_at {
            peer.arm(at, Timer::Link(Deadline::Shed));
        }
        if let Some(at) = end.keepalive_at {
            peer.arm(at, Timer::Link(Deadline::Keepalive));
        }
        if end.close.is_some() {
            return end.close;
        }
        if peer.link.is_idle() {
            // Nothing to send.
            return None;
        }
        if let Some(at) = peer.link.send_started(now, &settings.periods) {
            peer.arm(at, Timer::Link(Deadline::SendStall));
        }
        let before = wire.bytes.len();
        let mut sent = 0;
        for chunk in peer.link.transmit().map(super::own_bytes) {
            sent += chunk.len();
            if !peer.muted {
                wire.bytes.extend_from_slice(chunk);
            }
        }
        peer.link.sent(sent, peer.pool.get_mut(), &mut super::never_lent);
        if wire.bytes.len() > before {
            peer.wire_bytes += (wire.bytes.len() - before) as u64;
            wire.arrivals.push_back((now + settings.latency, wire.bytes.len()));
        }
        None
    }

    /// Hands everything that has arrived by now to the receiving links, in both directions,
    /// calling `app` for each message and event (and a close); then hands each link its
    /// deadlines that have come due. Returns whether the application was shown a message or a
    /// close.
    pub fn deliver(&mut self, app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>)) -> bool {
        let mut shown = false;
        for side in [Side::A, Side::B] {
            if let Some(reason) = self.peer(side).close_pending.take() {
                self.close_side(side, reason, app, true);
                shown = true;
            }
        }
        for side in [Side::B, Side::A] {
            shown |= self.receive(side, app);
        }
        for side in [Side::A, Side::B] {
            shown |= self.fire_timers(side, app);
        }
        shown
    }

    /// Hands `side` what has arrived for it; closes it if its bytes close the link, or the
    /// stream ended.
    fn receive(
        &mut self,
        side: Side,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
    ) -> bool {
        let (now, settings) = (self.now, self.settings);
        let (peer, wire, _) = self.end(side);
        while let Some(&(time, end)) = wire.arrivals.front() {
            if time > now {
                break;
            }
            wire.arrived = end;
            wire.arrivals.pop_front();
        }
        let mut outcome = Ok(false);
        if wire.read < wire.arrived {
            let bytes = &mut wire.bytes[wire.read..wire.arrived];
            // A closed link reads nothing more.
            if peer.phase != Phase::Closed {
                peer.link.received_bytes(bytes.len(), now);
                outcome = peer.receive(side, bytes, now, &settings, app);
            }
            wire.read = wire.arrived;
            wire.consume();
        }
        let ended = wire.ended(now);
        if ended {
            wire.eof = None;
        }
        let close = match outcome {
            Err(reason) => Some(reason),
            Ok(_) if ended => Some(CloseReason::PeerClosed),
            Ok(_) => None,
        };
        match close {
            Some(reason) => {
                self.close_side(side, reason, app, true);
                true
            }
            None => outcome.unwrap_or(false),
        }
    }

    /// Hands `side`'s link each of its deadlines due by now, earliest first.
    fn fire_timers(
        &mut self,
        side: Side,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
    ) -> bool {
        let (now, settings) = (self.now, self.settings);
        loop {
            let peer = self.peer(side);
            if peer.phase == Phase::Closed {
                return false;
            }
            let Some(timer) = peer.take_due(now) else { return false };
            let close = match timer {
                Timer::Handshake => (peer.phase == Phase::Handshake)
                    .then(|| CloseReason::Protocol(Error::from(Handshake::Timeout))),
                Timer::Rekey => match peer.link.handle_rekey(now) {
                    Ok(next) => {
                        if let Some(at) = next {
                            peer.arm(at, Timer::Rekey);
                        }
                        None
                    }
                    Err(reason) => Some(reason),
                },
                Timer::Link(deadline) => match peer.link.handle_timeout(
                    deadline,
                    now,
                    settings.keepalive,
                    &peer.pool,
                    &settings.periods,
                ) {
                    Timeout::Nothing => None,
                    Timeout::Arm(deadline, at) => {
                        peer.arm(at, Timer::Link(deadline));
                        None
                    }
                    // The keepalive is in the record being built: sent at the next transmit.
                    Timeout::Pinged(next) => {
                        peer.arm(next, Timer::Link(Deadline::Keepalive));
                        None
                    }
                    Timeout::Close(reason) => Some(reason),
                },
            };
            if let Some(reason) = close {
                self.close_side(side, reason, app, true);
                return true;
            }
        }
    }

    /// Closes `side`'s link as the engine does: every transaction ends (with the local code for
    /// a local close, else [`ErrorCode::LOST_LINK`]) and the application sees each end, then
    /// the close if `tell`; the keys and buffers go, the timers are dropped; what still arrives
    /// is not read, and the other end sees the end of the stream after what is on the wire.
    fn close_side(
        &mut self,
        side: Side,
        reason: CloseReason,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
        tell: bool,
    ) {
        let (now, latency) = (self.now, self.settings.latency);
        let (peer, _, out) = self.end(side);
        if peer.phase == Phase::Closed {
            return;
        }
        let was_up = peer.phase == Phase::Up;
        peer.phase = Phase::Closed;
        peer.closed = Some((now, reason));
        peer.close_pending = None;
        if was_up {
            let code = match reason {
                CloseReason::Local(code) => code,
                _ => ErrorCode::LOST_LINK,
            };
            peer.link.handle_link_down(code);
            if let Some(mut parts) = peer.link.parts(&peer.pool) {
                while let Some(event) = parts.txn.poll_event() {
                    app(side, &mut parts, Output::Event(event));
                }
                if tell {
                    app(side, &mut parts, Output::Closed(reason));
                }
            }
        }
        peer.link.close();
        peer.link.release(peer.pool.get_mut(), &mut super::never_lent);
        peer.timers.clear();
        if !peer.muted {
            out.eof = Some(now + latency);
        }
    }

    /// Closes `side`'s link with a notice, as the engine's drain does: `LINK_CLOSE` carrying
    /// `code` goes out behind what the link wrote this turn, every transaction ends here at once
    /// with `code` (the application sees each end), and the link closes once the notice is sent
    /// (at once: the pipe takes everything), showing [`Output::Closed`] with
    /// [`CloseReason::Local`]. The peer ends its transactions with [`ErrorCode::LOST_LINK`] and
    /// closes with [`CloseReason::PeerSaid`]. `false` (nothing done) if the link is not up.
    pub fn close(
        &mut self,
        side: Side,
        code: ErrorCode,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
    ) -> bool {
        let peer = self.peer(side);
        if peer.phase != Phase::Up
            || peer.close_pending.is_some()
            || !peer.link.send_close_notice(code, &peer.pool)
        {
            return false;
        }
        peer.link.handle_link_down(code);
        if let Some(mut parts) = peer.link.parts(&peer.pool) {
            while let Some(event) = parts.txn.poll_event() {
                app(side, &mut parts, Output::Event(event));
            }
        }
        let reason = self.transmit_side(side).unwrap_or(CloseReason::Local(code));
        self.close_side(side, reason, app, true);
        true
    }

    /// Whether neither end has anything to send or do.
    fn settled(&self) -> bool {
        self.a.is_settled() && self.b.is_settled()
    }

    fn next_arrival(&self) -> Option<Instant> {
        self.wires.iter().filter_map(Wire::next_arrival).min()
    }

    fn next_deadline(&self) -> Option<Instant> {
        [self.a.next_deadline(), self.b.next_deadline()].into_iter().flatten().min()
    }

    /// Transmits and delivers until nothing is in flight, advancing virtual time to each
    /// arrival (and to each deadline that comes due before it). Fails after `max_rounds`
    /// rounds: a livelock in the protocol or the application. Deadlines after the last arrival
    /// are left for [`Pair::advance`] or [`Pair::run_for`]. A link is never silent for long
    /// (keepalives): with a latency near the keepalive interval or above, there is always a
    /// keepalive in flight and this never settles; run such a pair with [`Pair::run_for`].
    pub fn drive_bounded(
        &mut self,
        max_rounds: usize,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
    ) -> Result<(), Livelock> {
        for _ in 0..max_rounds {
            self.transmit();
            self.deliver(app);
            if self.settled() {
                let Some(arrival) = self.next_arrival() else { return Ok(()) };
                let next = self.next_deadline().map_or(arrival, |at| at.min(arrival));
                self.now = self.now.max(next);
            }
        }
        Err(Livelock { rounds: max_rounds })
    }

    /// [`Pair::drive_bounded`] with a generous bound, panicking on livelock (for tests).
    pub fn drive(&mut self, app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>)) {
        if let Err(livelock) = self.drive_bounded(100_000, app) {
            panic!("pair did not settle: {livelock:?}");
        }
    }

    /// Moves virtual time forward, and nothing else: what arrives or comes due meanwhile is
    /// handled by the next [`Pair::deliver`] (or drive), at the new time, as by an engine that
    /// was busy for that long. [`Pair::run_for`] handles each at its own time instead.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Runs the pair for `by` of virtual time: every arrival and deadline in order, each at
    /// its own time, with transmits between them.
    pub fn run_for(
        &mut self,
        by: Duration,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
    ) {
        self.run_until(self.now + by, app);
    }

    /// [`Pair::run_for`] up to virtual time `at`. Panics if the pair livelocks.
    pub fn run_until(
        &mut self,
        at: Instant,
        app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>),
    ) {
        for _ in 0..RUN_ROUNDS_MAX {
            self.transmit();
            self.deliver(app);
            if !self.settled() {
                continue;
            }
            let next = [self.next_arrival(), self.next_deadline()].into_iter().flatten().min();
            match next {
                Some(next) if next <= at => self.now = self.now.max(next),
                _ if self.now < at => self.now = at,
                _ => return,
            }
        }
        panic!("pair did not settle in {RUN_ROUNDS_MAX} rounds");
    }

    /// Cuts the link: everything in flight is lost and both ends end every transaction with
    /// [`ErrorCode::LOST_LINK`] at once (no [`Output::Closed`]; each end's
    /// [`Peer::close_reason`] is a reset connection).
    pub fn cut(&mut self, app: &mut impl FnMut(Side, &mut Parts<'_>, Output<'_>)) {
        for wire in &mut self.wires {
            *wire = Wire::default();
        }
        for side in [Side::A, Side::B] {
            self.close_side(side, CloseReason::Io(CUT_ERRNO), app, false);
        }
        // The ends of the streams went with the wire.
        for wire in &mut self.wires {
            wire.eof = None;
        }
    }
}

#[cfg(test)]
mod tests;
