//! Redialling configured peers: exponential backoff with jitter, reset once a link is up.
//! Sans-IO: time is a parameter and the jitter comes from a seeded generator.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cipher::PublicKey;
use crate::ids::LinkId;

/// One configured peer's dialling state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Waiting until the instant to dial.
    Waiting(Instant),
    /// A dial is under way.
    Dialling,
    /// A link to it is up.
    Up(LinkId),
    /// Not wanted now: in failover mode another peer is the one in use.
    Standby,
}

#[derive(Clone, Debug)]
struct Peer {
    addr: SocketAddr,
    key: PublicKey,
    state: PeerState,
    failures: u32,
    /// No dial before this (an operator's cut).
    held_until: Option<Instant>,
}

/// The peers a node keeps links to. See the module documentation.
#[derive(Clone, Debug)]
pub struct Redial {
    peers: Vec<Peer>,
    min: Duration,
    max: Duration,
    rng: u64,
    /// Failover mode: keep a link to one peer at a time, moving to the next when it fails.
    one_of: bool,
}

impl Redial {
    /// Peers `(address, key)`, all due at `now`; backoff from `min` doubling to `max`, each wait
    /// jittered down by up to half (so peers that failed together do not retry together).
    pub fn new(
        peers: impl IntoIterator<Item = (SocketAddr, PublicKey)>,
        min: Duration,
        max: Duration,
        seed: u64,
        now: Instant,
    ) -> Redial {
        let peers = peers
            .into_iter()
            .map(|(addr, key)| Peer {
                addr,
                key,
                state: PeerState::Waiting(now),
                failures: 0,
                held_until: None,
            })
            .collect();
        Redial { peers, min, max: max.max(min), rng: seed | 1, one_of: false }
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

    /// The next peer due for a dial at `now` (marked as dialling).
    pub fn poll_dial(&mut self, now: Instant) -> Option<(SocketAddr, PublicKey)> {
        let peer = self
            .peers
            .iter_mut()
            .find(|p| matches!(p.state, PeerState::Waiting(at) if at <= now))?;
        peer.state = PeerState::Dialling;
        Some((peer.addr, peer.key))
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

    /// A link to the peer with `key` is up (dialled by us or by it). The backoff is reset when
    /// it goes down ([`Redial::down`]), not now: a link the peer refuses at once
    /// ([`Redial::refused`]) keeps backing off.
    pub fn up(&mut self, key: &PublicKey, link: LinkId) {
        if let Some(peer) = self.peers.iter_mut().find(|p| p.key == *key) {
            peer.state = PeerState::Up(link);
        }
    }

    /// A link went down: if it was a peer's, redial after the first backoff step.
    pub fn down(&mut self, link: LinkId, now: Instant) {
        let Some(i) = self.peers.iter().position(|p| p.state == PeerState::Up(link)) else {
            return;
        };
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

    /// A link that was up was closed by the peer with a refusal (it said `REFUSED` or
    /// `DUPLICATE`): back off as after a failed dial, growing with each one in a row, instead of
    /// dialling again at once (a node whose key another node also uses, or whose hello the peer
    /// refuses, would otherwise redial at the shortest wait forever).
    pub fn refused(&mut self, link: LinkId, now: Instant) {
        let Some(i) = self.peers.iter().position(|p| p.state == PeerState::Up(link)) else {
            return;
        };
        self.peers[i].state = PeerState::Dialling;
        let addr = self.peers[i].addr;
        self.failed(addr, now);
    }

    /// A dial to `addr` failed before its handshake completed: back off.
    pub fn failed(&mut self, addr: SocketAddr, now: Instant) {
        let Some(i) =
            self.peers.iter().position(|p| p.addr == addr && p.state == PeerState::Dialling)
        else {
            return;
        };
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

    /// Holds off dialling the peer with `key` until `until` (its link is being cut on purpose).
    pub fn hold(&mut self, key: &PublicKey, until: Instant) {
        if let Some(peer) = self.peers.iter_mut().find(|p| p.key == *key) {
            peer.held_until = Some(until);
            if let PeerState::Waiting(at) = &mut peer.state {
                *at = (*at).max(until);
            }
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
        let at = now + half + jitter;
        self.peers[i].state =
            PeerState::Waiting(self.peers[i].held_until.map_or(at, |h| at.max(h)));
    }

    /// Each peer's address, key and state.
    pub fn peers(&self) -> impl Iterator<Item = (SocketAddr, PublicKey, PeerState)> + '_ {
        self.peers.iter().map(|p| (p.addr, p.key, p.state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    #[test]
    fn backs_off_doubling_with_jitter_and_resets_when_up() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let min = Duration::from_millis(100);
        let max = Duration::from_millis(1600);
        let mut r = Redial::new([(addr, key(1))], min, max, 7, t0);
        assert_eq!(r.poll_dial(t0), Some((addr, key(1))));
        assert_eq!(r.poll_dial(t0), None, "one dial at a time");
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            r.failed(addr, now);
            let at = r.next_deadline().unwrap();
            waits.push(at - now);
            assert_eq!(r.poll_dial(at - Duration::from_millis(1)), None);
            assert!(r.poll_dial(at).is_some());
            now = at;
        }
        // 200, 400, 800, 1600, 1600, 1600 ms, each jittered into [half, full].
        let full = [200, 400, 800, 1600, 1600, 1600];
        for (wait, full) in waits.iter().zip(full) {
            let full = Duration::from_millis(full);
            assert!(*wait >= full / 2 && *wait <= full, "{wait:?} vs {full:?}");
        }
        r.up(&key(1), LinkId(5));
        assert_eq!(r.next_deadline(), None);
        // A hold outlives the link it cuts.
        r.hold(&key(1), now + Duration::from_secs(60));
        r.down(LinkId(5), now);
        assert_eq!(r.next_deadline(), Some(now + Duration::from_secs(60)));
        r.poll_dial(now + Duration::from_secs(60)).unwrap();
        r.up(&key(1), LinkId(5));
        r.hold(&key(1), now);
        r.down(LinkId(5), now);
        let wait = r.next_deadline().unwrap() - now;
        assert!(wait >= min / 2 && wait <= min, "first step again after a link was up: {wait:?}");
    }

    #[test]
    fn a_link_the_peer_refuses_backs_off_like_a_failed_dial() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1600));
        let mut r = Redial::new([(addr, key(1))], min, max, 9, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for link in 0..5 {
            r.poll_dial(now).unwrap();
            r.up(&key(1), LinkId(link));
            r.refused(LinkId(link), now);
            let at = r.next_deadline().unwrap();
            waits.push(at - now);
            now = at;
        }
        // 200, 400, 800, 1600, 1600 ms at most, each at least half of that: growing, where a
        // plain `down` would wait the first step every time.
        for (wait, full) in waits.iter().zip([200, 400, 800, 1600, 1600]) {
            let full = Duration::from_millis(full);
            assert!(*wait >= full / 2 && *wait <= full, "{wait:?} vs {full:?}");
        }
        // A refusal of a link that is not the peer's changes nothing.
        r.refused(LinkId(99), now);
        assert_eq!(r.next_deadline(), Some(now));
    }

    #[test]
    fn failover_mode_keeps_one_peer_and_moves_on_when_it_fails() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let ms = Duration::from_millis;
        let mut r =
            Redial::new([(a, key(1)), (b, key(2))], ms(100), ms(800), 3, t0).one_at_a_time();
        assert_eq!(r.poll_dial(t0), Some((a, key(1))));
        assert_eq!(r.poll_dial(t0), None, "only the first satellite is dialled");
        r.up(&key(1), LinkId(1));
        // The satellite dies: the next one is dialled, not the dead one.
        r.down(LinkId(1), t0);
        let at = r.next_deadline().unwrap();
        assert_eq!(r.poll_dial(at), Some((b, key(2))));
        // It refuses: back to the first, after a longer wait.
        r.failed(b, at);
        let again = r.next_deadline().unwrap();
        assert!(again - at >= ms(100), "{:?}", again - at);
        assert_eq!(r.poll_dial(again), Some((a, key(1))));
        assert_eq!(r.peers().filter(|(.., s)| *s == PeerState::Standby).count(), 1);
    }
}
