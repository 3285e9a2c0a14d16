//! Redialling configured peers: exponential backoff with jitter, reset only once a link has
//! stayed up for [`REDIAL_STABLE_MS`].
//! Sans-IO: time is a parameter and the jitter comes from a seeded generator.
//!
//! Each configured peer is waiting (until an instant), dialling, linked, or on standby (failover
//! mode). A dial that fails, a link the peer refuses (it says `REFUSED` or `DUPLICATE`), and a
//! link that goes down before it was up for the stable period each count as one failure in a
//! row: the next dial waits `min` doubled per failure, up to `max`. A link that was up for the
//! stable period and then went down clears the failures: the peer is redialled after the first
//! step. So a peer that refuses us right after each handshake (a node that does not allow our
//! key closes the connection as soon as it reads it) is dialled ever less often, down to once
//! per `max`, instead of at the first step forever.
//!
//! A peer may be given by host name ([`PeerAddr::Name`]): each dial then starts with a
//! resolution, which the caller makes ([`Redial::poll_dial`] hands it the name, the peer is
//! [`PeerState::Resolving`]) and reports: the addresses found ([`Redial::resolved`], which
//! picks the one to dial, in turn across failures in a row, so a name with an address that
//! does not answer is dialled at its others), or why there are none ([`Redial::unresolved`]),
//! which counts as a failed dial.

mod addr;

pub use addr::{PeerAddr, PeerAddrError};

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cipher::PublicKey;
use crate::error::{Error, Handshake};
use crate::ids::LinkId;
use crate::limits::REDIAL_STABLE_MS;
use crate::link::CloseReason;
use crate::wire::ErrorCode;

/// One configured peer's dialling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Waiting until the instant to dial.
    Waiting(Instant),
    /// Its host name is being resolved, for a dial.
    Resolving,
    /// A dial is under way.
    Dialling,
    /// A link to it is up.
    Up(LinkId),
    /// Not wanted now: in failover mode another peer is the one in use.
    Standby,
}

/// Why a peer's dial or link ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The dial or the link ended for this reason.
    Closed(CloseReason),
    /// Its host name gave no address to dial: why, in words (`cannot resolve NAME: ...`).
    Unresolved(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Closed(reason) => write!(f, "{reason}"),
            Failure::Unresolved(why) => f.write_str(why),
        }
    }
}

/// How a peer's latest dial or link ended, as the redialler was told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastError {
    /// Why it ended.
    pub reason: Failure,
    /// When.
    pub at: Instant,
    /// How long its link had been up; `None` for a dial that failed before its handshake
    /// completed.
    pub lived: Option<Duration>,
}

impl LastError {
    /// Whether it was a refusal: the peer's `REFUSED` or `DUPLICATE` notice, our own refusal of
    /// the link, a handshake that showed a key not accepted at one end, or the peer ending the
    /// connection (end of stream or a socket error) before the link was stable, which is what a
    /// node that does not allow our key does as soon as it reads it.
    pub fn is_refusal(&self) -> bool {
        let Failure::Closed(reason) = self.reason else { return false };
        match reason {
            CloseReason::PeerSaid(code) => {
                code == ErrorCode::REFUSED || code == ErrorCode::DUPLICATE
            }
            CloseReason::Local(code) => code == ErrorCode::REFUSED,
            CloseReason::Protocol(Error::Handshake(
                Handshake::WrongKey | Handshake::UnknownKey,
            )) => true,
            CloseReason::PeerClosed | CloseReason::Io(_) => {
                self.lived.is_some_and(|lived| lived < Duration::from_millis(REDIAL_STABLE_MS))
            }
            _ => false,
        }
    }
}

/// One configured peer as the redialler sees it ([`Redial::peers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// Where it is dialled, as configured.
    pub addr: PeerAddr,
    /// The address its latest dial went to (for a name, what it resolved to then), if it was
    /// dialled.
    pub dialled: Option<SocketAddr>,
    /// The key it must show.
    pub key: PublicKey,
    /// Where its dialling is.
    pub state: PeerState,
    /// Failures in a row (dials, refusals, links that went down before they were stable).
    pub failures: u32,
    /// The latest wait scheduled before dialling it (jitter and any hold included); zero
    /// before the first.
    pub wait: Duration,
    /// How its latest dial or link ended, if one has.
    pub last_error: Option<LastError>,
}

#[derive(Clone, Debug)]
struct Peer {
    addr: PeerAddr,
    /// The address of its latest dial, if it was dialled (its failure is reported by address;
    /// a name resolves to another address at each dial, and a reload may have moved the peer
    /// since).
    dialled: Option<SocketAddr>,
    key: PublicKey,
    state: PeerState,
    failures: u32,
    /// No dial before this (an operator's cut).
    held_until: Option<Instant>,
    /// When its link came up, while it is up.
    up_since: Option<Instant>,
    wait: Duration,
    last_error: Option<LastError>,
}

impl Peer {
    /// A peer never dialled, due at `now`.
    fn due(addr: PeerAddr, key: PublicKey, now: Instant) -> Peer {
        Peer {
            addr,
            dialled: None,
            key,
            state: PeerState::Waiting(now),
            failures: 0,
            held_until: None,
            up_since: None,
            wait: Duration::ZERO,
            last_error: None,
        }
    }
}

/// The peers a node keeps links to. See the module documentation.
#[derive(Clone, Debug)]
pub struct Redial {
    peers: Vec<Peer>,
    min: Duration,
    max: Duration,
    /// How long a link must stay up before its going down clears the failures.
    stable: Duration,
    rng: u64,
    /// Failover mode: keep a link to one peer at a time, moving to the next when it fails.
    one_of: bool,
}

impl Redial {
    /// Peers `(address, key)`, all due at `now`; backoff from `min` doubling to `max`, each wait
    /// jittered down by up to half (so peers that failed together do not retry together).
    pub fn new(
        peers: impl IntoIterator<Item = (PeerAddr, PublicKey)>,
        min: Duration,
        max: Duration,
        seed: u64,
        now: Instant,
    ) -> Redial {
        let peers = peers.into_iter().map(|(addr, key)| Peer::due(addr, key, now)).collect();
        Redial {
            peers,
            min,
            max: max.max(min),
            stable: Duration::from_millis(REDIAL_STABLE_MS),
            rng: seed | 1,
            one_of: false,
        }
    }

    /// Failover mode (a client listing several satellites): a link to one peer at a time, the
    /// first listed first; when it fails or its link goes down, the next one is tried (after the
    /// backoff, which grows with the failures in a row across all of them).
    pub fn one_at_a_time(mut self) -> Redial {
        self.one_of = true;
        for peer in self.peers.iter_mut().skip(1) {
            peer.state = PeerState::Standby;
        }
        self
    }

    /// The next peer due for a dial at `now`: one given by address is marked as dialling (dial
    /// it); one given by name as resolving (resolve the name, then tell [`Redial::resolved`] or
    /// [`Redial::unresolved`]).
    pub fn poll_dial(&mut self, now: Instant) -> Option<(PeerAddr, PublicKey)> {
        let peer = self
            .peers
            .iter_mut()
            .find(|p| matches!(p.state, PeerState::Waiting(at) if at <= now))?;
        match &peer.addr {
            PeerAddr::Ip(addr) => {
                peer.state = PeerState::Dialling;
                peer.dialled = Some(*addr);
            }
            PeerAddr::Name { .. } => peer.state = PeerState::Resolving,
        }
        Some((peer.addr.clone(), peer.key))
    }

    /// The name of the peer with `key`, being resolved, gave `addrs`: the one to dial, now
    /// dialling (reported as any dial, [`Redial::failed`]). The addresses are taken in turn
    /// across failures in a row: the first while its dials work, the next after one failed.
    /// `None` if the peer is not resolving (its answer came late: it timed out, or the peer
    /// linked meanwhile) or `addrs` is empty (tell [`Redial::unresolved`] instead).
    pub fn resolved(&mut self, key: &PublicKey, addrs: &[SocketAddr]) -> Option<SocketAddr> {
        let peer = self.peers.iter_mut().find(|p| p.key == *key)?;
        if peer.state != PeerState::Resolving || addrs.is_empty() {
            return None;
        }
        let addr = addrs[peer.failures as usize % addrs.len()];
        peer.state = PeerState::Dialling;
        peer.dialled = Some(addr);
        Some(addr)
    }

    /// The name of the peer with `key`, being resolved, gave no address at `now`: `why`, in
    /// words (`cannot resolve NAME: ...`, shown as its last error). Counts as a failed dial.
    /// Nothing if the peer is not resolving.
    pub fn unresolved(&mut self, key: &PublicKey, why: String, now: Instant) {
        let Some(i) =
            self.peers.iter().position(|p| p.key == *key && p.state == PeerState::Resolving)
        else {
            return;
        };
        self.peers[i].last_error =
            Some(LastError { reason: Failure::Unresolved(why), at: now, lived: None });
        self.fail(i, now);
    }

    /// When the next dial is due, if one is waiting.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.peers
            .iter()
            .filter_map(|p| match p.state {
                PeerState::Waiting(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// A link to the peer with `key` is up at `now` (dialled by us or by it). The failures are
    /// not cleared now but when the link goes down, and only if it was up for the stable period
    /// by then ([`Redial::down`]): a link the peer drops at once keeps backing off.
    pub fn up(&mut self, key: &PublicKey, link: LinkId, now: Instant) {
        if let Some(peer) = self.peers.iter_mut().find(|p| p.key == *key)
            && peer.state != PeerState::Up(link)
        {
            peer.state = PeerState::Up(link);
            peer.up_since = Some(now);
        }
    }

    /// A link went down at `now` for `reason`. If it was a peer's: a link up for the stable
    /// period clears the failures and the peer is redialled after the first backoff step; a
    /// shorter-lived one, or one the peer refused (it said `REFUSED` or `DUPLICATE`, whenever),
    /// counts as a failed dial and waits the next step (a node whose key another node also
    /// uses, or whose key or hello the peer refuses, would otherwise redial at the shortest wait
    /// forever).
    pub fn down(&mut self, link: LinkId, reason: CloseReason, now: Instant) {
        let Some(i) = self.peers.iter().position(|p| p.state == PeerState::Up(link)) else {
            return;
        };
        let peer = &mut self.peers[i];
        let lived = peer.up_since.take().map(|since| now.saturating_duration_since(since));
        peer.last_error = Some(LastError { reason: Failure::Closed(reason), at: now, lived });
        let refused =
            matches!(reason, CloseReason::PeerSaid(ErrorCode::REFUSED | ErrorCode::DUPLICATE));
        if refused || lived.is_none_or(|lived| lived < self.stable) {
            self.fail(i, now);
            return;
        }
        self.peers[i].failures = 0;
        if self.one_of && self.peers.len() > 1 {
            self.peers[i].state = PeerState::Standby;
            let next = (i + 1) % self.peers.len();
            self.peers[next].failures = 0;
            self.schedule(next, now);
        } else {
            self.schedule(i, now);
        }
    }

    /// A dial to `addr` failed at `now` for `reason`, before its handshake completed: back off.
    pub fn failed(&mut self, addr: SocketAddr, reason: CloseReason, now: Instant) {
        let Some(i) = self
            .peers
            .iter()
            .position(|p| p.dialled == Some(addr) && p.state == PeerState::Dialling)
        else {
            return;
        };
        let reason = Failure::Closed(reason);
        self.peers[i].last_error = Some(LastError { reason, at: now, lived: None });
        self.fail(i, now);
    }

    /// Holds off dialling the peer with `key` until `until` (its link is being cut on purpose).
    pub fn hold(&mut self, key: &PublicKey, until: Instant) {
        if let Some(peer) = self.peers.iter_mut().find(|p| p.key == *key) {
            peer.held_until = Some(until);
            if let PeerState::Waiting(at) = &mut peer.state {
                *at = (*at).max(until);
            }
        }
    }

    /// Takes a new list of peers `(address, key)` and backoff bounds at `now` (a reload). A
    /// peer already listed, known by its key, keeps its state, failures and last error, and is
    /// dialled at its new address from its next dial on (a dial under way still reports as
    /// its, and a resolution under way still dials what its name gave). A new one is due at once, or, in failover mode, on standby while another is in
    /// use. One no longer listed is forgotten: its link, if up, is the caller's to keep or
    /// close. In failover mode the list's order is the new one, and if the peer in use is gone,
    /// the first is due at once.
    pub fn reconfigure(
        &mut self,
        peers: impl IntoIterator<Item = (PeerAddr, PublicKey)>,
        min: Duration,
        max: Duration,
        now: Instant,
    ) {
        let mut old = std::mem::take(&mut self.peers);
        for (addr, key) in peers {
            let peer = match old.iter().position(|p| p.key == key) {
                Some(i) => Peer { addr, ..old.swap_remove(i) },
                None => {
                    let mut peer = Peer::due(addr, key, now);
                    if self.one_of {
                        peer.state = PeerState::Standby;
                    }
                    peer
                }
            };
            self.peers.push(peer);
        }
        self.min = min;
        self.max = max.max(min);
        if self.one_of
            && !self.peers.is_empty()
            && self.peers.iter().all(|p| p.state == PeerState::Standby)
        {
            self.peers[0].state = PeerState::Waiting(now);
        }
    }

    /// Each configured peer, as the redialler sees it.
    pub fn peers(&self) -> impl Iterator<Item = PeerStatus> + '_ {
        self.peers.iter().map(|p| PeerStatus {
            addr: p.addr.clone(),
            dialled: p.dialled,
            key: p.key,
            state: p.state,
            failures: p.failures,
            wait: p.wait,
            last_error: p.last_error.clone(),
        })
    }

    /// Peer `i`'s dial or link failed: one more failure in a row, and the next dial (of it, or
    /// in failover mode of the next peer) after the backoff for that many.
    fn fail(&mut self, i: usize, now: Instant) {
        let failures = self.peers[i].failures.saturating_add(1);
        if self.one_of && self.peers.len() > 1 {
            self.peers[i].state = PeerState::Standby;
            let next = (i + 1) % self.peers.len();
            self.peers[next].failures = failures;
            self.schedule(next, now);
        } else {
            self.peers[i].failures = failures;
            self.schedule(i, now);
        }
    }

    fn schedule(&mut self, i: usize, now: Instant) {
        let doubling = self.peers[i].failures.min(16);
        let wait = self.min.saturating_mul(1 << doubling).min(self.max);
        // xorshift64: jitter in [wait/2, wait].
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = wait / 2;
        let jitter = Duration::from_nanos(self.rng % (half.as_nanos() as u64).max(1));
        let at =
            self.peers[i].held_until.map_or(now + half + jitter, |h| (now + half + jitter).max(h));
        self.peers[i].wait = at.saturating_duration_since(now);
        self.peers[i].state = PeerState::Waiting(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    const LOST: CloseReason = CloseReason::PeerSaid(ErrorCode::LOST_LINK);
    const REFUSED: CloseReason = CloseReason::PeerSaid(ErrorCode::REFUSED);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Each wait against the full step it was jittered from: within `[full / 2, full]`.
    fn assert_steps(waits: &[Duration], full: &[u64]) {
        assert_eq!(waits.len(), full.len());
        for (wait, full) in waits.iter().zip(full) {
            let full = ms(*full);
            assert!(*wait >= full / 2 && *wait <= full, "{wait:?} vs {full:?} in {waits:?}");
        }
    }

    #[test]
    fn backs_off_doubling_with_jitter_and_resets_after_a_stable_link() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (min, max) = (ms(100), ms(1600));
        let mut r = Redial::new([(addr.into(), key(1))], min, max, 7, t0);
        assert_eq!(r.poll_dial(t0), Some((addr.into(), key(1))));
        assert_eq!(r.poll_dial(t0), None, "one dial at a time");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            r.failed(addr, CloseReason::Io(111), now);
            let at = r.next_deadline().unwrap();
            waits.push(at - now);
            assert_eq!(r.peers().next().unwrap().wait, at - now);
            assert_eq!(r.poll_dial(at - ms(1)), None);
            assert!(r.poll_dial(at).is_some());
            now = at;
        }
        // 200, 400, 800, 1600, 1600, 1600 ms, each jittered into [half, full].
        assert_steps(&waits, &[200, 400, 800, 1600, 1600, 1600]);
        let last = r.peers().next().unwrap().last_error.unwrap();
        assert_eq!((last.reason, last.lived), (Failure::Closed(CloseReason::Io(111)), None));
        r.up(&key(1), LinkId(5), now);
        assert_eq!(r.next_deadline(), None);
        // A hold outlives the link it cuts.
        now += ms(REDIAL_STABLE_MS);
        r.hold(&key(1), now + Duration::from_secs(60));
        r.down(LinkId(5), LOST, now);
        assert_eq!(r.next_deadline(), Some(now + Duration::from_secs(60)));
        now += Duration::from_secs(60);
        r.poll_dial(now).unwrap();
        r.up(&key(1), LinkId(5), now);
        r.hold(&key(1), now);
        now += ms(REDIAL_STABLE_MS);
        r.down(LinkId(5), LOST, now);
        let wait = r.next_deadline().unwrap() - now;
        assert!(wait >= min / 2 && wait <= min, "first step after a stable link: {wait:?}");
        assert_eq!(r.peers().next().unwrap().failures, 0);
    }

    #[test]
    fn links_dropped_right_after_the_handshake_back_off_to_the_longest_wait() {
        // A node that does not allow our key ends each connection as soon as it reads our key:
        // our end saw its handshake complete, and the link goes down a moment later.
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let mut r = Redial::new([(addr.into(), key(1))], ms(100), ms(1600), 11, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for link in 0..7 {
            r.poll_dial(now).unwrap();
            r.up(&key(1), LinkId(link), now);
            now += ms(3);
            r.down(LinkId(link), CloseReason::PeerClosed, now);
            let at = r.next_deadline().unwrap();
            waits.push(at - now);
            now = at;
        }
        assert_steps(&waits, &[200, 400, 800, 1600, 1600, 1600, 1600]);
        let peer = r.peers().next().unwrap();
        assert_eq!(peer.failures, 7);
        let last = peer.last_error.unwrap();
        assert_eq!(
            (&last.reason, last.lived),
            (&Failure::Closed(CloseReason::PeerClosed), Some(ms(3)))
        );
        assert!(last.is_refusal(), "a link the peer ended before it was stable");
        // A link just short of the stable period is one more failure.
        r.poll_dial(now).unwrap();
        r.up(&key(1), LinkId(10), now);
        now += ms(REDIAL_STABLE_MS - 1);
        r.down(LinkId(10), CloseReason::Io(104), now);
        assert_eq!(r.peers().next().unwrap().failures, 8);
        // One that lived past it clears them: the next wait is the first step again.
        now = r.next_deadline().unwrap();
        r.poll_dial(now).unwrap();
        r.up(&key(1), LinkId(11), now);
        now += ms(REDIAL_STABLE_MS);
        r.down(LinkId(11), CloseReason::PeerClosed, now);
        let peer = r.peers().next().unwrap();
        assert_eq!(peer.failures, 0);
        assert!(peer.wait >= ms(50) && peer.wait <= ms(100), "{:?}", peer.wait);
        assert!(!peer.last_error.unwrap().is_refusal(), "a stable link that was lost");
    }

    #[test]
    fn a_link_the_peer_refuses_backs_off_like_a_failed_dial() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (min, max) = (ms(100), ms(1600));
        let mut r = Redial::new([(addr.into(), key(1))], min, max, 9, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for link in 0..5 {
            r.poll_dial(now).unwrap();
            r.up(&key(1), LinkId(link), now);
            // Refused however long the link lived: the peer said why.
            now += ms(REDIAL_STABLE_MS * 2);
            r.down(LinkId(link), REFUSED, now);
            let at = r.next_deadline().unwrap();
            waits.push(at - now);
            now = at;
        }
        // Growing, where a stable link's loss would wait the first step every time.
        assert_steps(&waits, &[200, 400, 800, 1600, 1600]);
        assert!(r.peers().next().unwrap().last_error.unwrap().is_refusal());
        // A link that is not the peer's changes nothing.
        r.down(LinkId(99), REFUSED, now);
        assert_eq!(r.next_deadline(), Some(now));
    }

    #[test]
    fn a_reload_keeps_the_peers_it_lists_adds_new_ones_and_forgets_the_rest() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let moved: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:4".parse().unwrap();
        let mut r = Redial::new([(a.into(), key(1)), (b.into(), key(2))], ms(100), ms(800), 5, t0);
        r.poll_dial(t0).unwrap();
        r.up(&key(1), LinkId(1), t0);
        r.poll_dial(t0).unwrap();
        // Peer 2 moves while its dial to the old address is under way; peer 3 is new; peer 1
        // is no longer listed.
        r.reconfigure([(moved.into(), key(2)), (c.into(), key(3))], ms(50), ms(400), t0);
        let peers: Vec<PeerStatus> = r.peers().collect();
        assert_eq!(peers.len(), 2);
        assert_eq!((&peers[0].addr, peers[0].state), (&moved.into(), PeerState::Dialling));
        assert_eq!((&peers[1].addr, peers[1].state), (&c.into(), PeerState::Waiting(t0)));
        // The old dial fails: it is still peer 2's, which waits the new first step.
        r.failed(b, CloseReason::Io(111), t0);
        let wait = r.peers().next().unwrap().wait;
        assert!(wait >= ms(50) && wait <= ms(100), "{wait:?}");
        // Its next dial goes to the new address; the link of the forgotten peer changes nothing.
        assert_eq!(r.poll_dial(t0), Some((c.into(), key(3))));
        assert_eq!(r.poll_dial(t0 + ms(100)), Some((moved.into(), key(2))));
        r.down(LinkId(1), LOST, t0 + ms(100));
        assert_eq!(r.next_deadline(), None);
    }

    #[test]
    fn a_reload_in_failover_mode_keeps_the_peer_in_use_or_starts_over() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut r = Redial::new([(a.into(), key(1))], ms(100), ms(800), 3, t0).one_at_a_time();
        r.poll_dial(t0).unwrap();
        r.up(&key(1), LinkId(1), t0);
        // A second satellite listed first: the one in use stays in use, the new one waits.
        r.reconfigure([(b.into(), key(2)), (a.into(), key(1))], ms(100), ms(800), t0);
        let states: Vec<PeerState> = r.peers().map(|p| p.state).collect();
        assert_eq!(states, [PeerState::Standby, PeerState::Up(LinkId(1))]);
        assert_eq!(r.poll_dial(t0), None);
        // The one in use is dropped from the list: the first listed is dialled at once.
        r.reconfigure([(b.into(), key(2))], ms(100), ms(800), t0);
        assert_eq!(r.poll_dial(t0), Some((b.into(), key(2))));
    }

    #[test]
    fn failover_mode_keeps_one_peer_and_moves_on_when_it_fails() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let mut r = Redial::new([(a.into(), key(1)), (b.into(), key(2))], ms(100), ms(800), 3, t0)
            .one_at_a_time();
        assert_eq!(r.poll_dial(t0), Some((a.into(), key(1))));
        assert_eq!(r.poll_dial(t0), None, "only the first satellite is dialled");
        r.up(&key(1), LinkId(1), t0);
        // The satellite dies after a stable while: the next one is dialled, not the dead one.
        let t1 = t0 + ms(REDIAL_STABLE_MS);
        r.down(LinkId(1), LOST, t1);
        let at = r.next_deadline().unwrap();
        assert!(at - t1 <= ms(100), "{:?}", at - t1);
        assert_eq!(r.poll_dial(at), Some((b.into(), key(2))));
        // It refuses: back to the first, after a longer wait.
        r.failed(b, CloseReason::Io(111), at);
        let again = r.next_deadline().unwrap();
        assert!(again - at >= ms(100), "{:?}", again - at);
        assert_eq!(r.poll_dial(again), Some((a.into(), key(1))));
        assert_eq!(r.peers().filter(|p| p.state == PeerState::Standby).count(), 1);
    }

    #[test]
    fn a_name_is_resolved_before_each_dial_and_its_addresses_taken_in_turn() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let name: PeerAddr = "b.example:7402".parse().unwrap();
        let ip: SocketAddr = "127.0.0.1:7403".parse().unwrap();
        let found: [SocketAddr; 2] =
            ["[::1]:7402".parse().unwrap(), "127.0.0.1:7402".parse().unwrap()];
        let mut r =
            Redial::new([(name.clone(), key(1)), (ip.into(), key(2))], ms(100), ms(800), 5, t0);
        // The name is handed out to resolve, the address to dial.
        assert_eq!(r.poll_dial(t0), Some((name.clone(), key(1))));
        assert_eq!(r.poll_dial(t0), Some((ip.into(), key(2))));
        let states: Vec<PeerState> = r.peers().map(|p| p.state).collect();
        assert_eq!(states, [PeerState::Resolving, PeerState::Dialling]);
        // A dial to an address the name has not resolved to is not its.
        r.failed(found[0], CloseReason::Io(111), t0);
        assert_eq!(r.peers().next().unwrap().state, PeerState::Resolving);
        // Resolved: the first address is dialled; its failure backs off as any dial's.
        assert_eq!(r.resolved(&key(1), &found), Some(found[0]));
        assert_eq!(r.resolved(&key(1), &found), None, "dialling already");
        let peer = r.peers().next().unwrap();
        assert_eq!((peer.state, peer.dialled), (PeerState::Dialling, Some(found[0])));
        r.failed(found[0], CloseReason::Io(111), t0);
        assert_eq!(r.peers().next().unwrap().failures, 1);
        // Resolved anew at the next dial: after a failure, the next address.
        let mut now = r
            .peers()
            .next()
            .map(|p| match p.state {
                PeerState::Waiting(at) => at,
                other => panic!("{other:?}"),
            })
            .unwrap();
        assert_eq!(r.poll_dial(now), Some((name.clone(), key(1))));
        assert_eq!(r.resolved(&key(1), &found), Some(found[1]));
        r.failed(found[1], CloseReason::Io(111), now);
        // A name that gives nothing counts as a failed dial, its reason in words.
        now += ms(800);
        assert_eq!(r.poll_dial(now), Some((name.clone(), key(1))));
        assert_eq!(r.resolved(&key(1), &[]), None);
        r.unresolved(&key(1), "cannot resolve b.example: no such name".into(), now);
        let peer = r.peers().next().unwrap();
        assert_eq!(peer.failures, 3);
        assert!(matches!(peer.state, PeerState::Waiting(at) if at > now));
        let last = peer.last_error.unwrap();
        assert_eq!(last.reason.to_string(), "cannot resolve b.example: no such name");
        assert!(!last.is_refusal());
        // An answer that comes when the peer is no longer resolving (it timed out, or the peer
        // linked meanwhile) dials nothing.
        assert_eq!(r.resolved(&key(1), &found), None);
        r.unresolved(&key(1), "late".into(), now);
        assert_eq!(r.peers().next().unwrap().failures, 3);
        now += ms(800);
        assert_eq!(r.poll_dial(now), Some((name, key(1))));
        r.up(&key(1), LinkId(1), now);
        assert_eq!(r.resolved(&key(1), &found), None);
        assert_eq!(r.peers().next().unwrap().state, PeerState::Up(LinkId(1)));
    }
}
