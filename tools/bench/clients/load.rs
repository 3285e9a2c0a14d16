//! Very many client links from one worker, as `ringspan-bench clients` opens them against a
//! satellite: dials paced at a rate, spread over source addresses, each link under a key of its
//! own, each opening the hello a client node opens (`LINK_CONN`, role client, wanting every kind
//! in every cluster), optionally advertising one client mount once the satellite's hello has
//! arrived (a `LINK_SPAN`, as a client node with one attached mount does), then held idle.
//!
//! A dial that fails (refused, reset by the satellite's admission, handshake timed out) is
//! dialled again under the same key after a backoff, as a client node redials its satellite:
//! from [`Plan::redial_min`] doubling to [`Plan::redial_max`], each wait jittered down by up to
//! half so links that failed together do not come back together; a link is given up after
//! [`Plan::attempts`] failed dials. Links that go down after they were up are counted, not
//! redialled: holding them is what is measured.
//!
//! [`ClientLoad`] is the worker's service. The thread running the benchmark asks it for a
//! [`ClientsReport`] with [`Progress`] (a [`ringspan::ring::Command::Service`]); nothing is shared
//! between them otherwise.

#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use ringspan::cipher::{self, PublicKey};
use ringspan::ids::{ClusterId, LinkId, MountId, NodeId};
use ringspan::ring::{CloseReason, LinkCtx, Service, WorkerCtx};
use ringspan::span::{Advert, Hello, Label, Metric, MountKey, MountKind, Role, Seqno, Wants};
use ringspan::txn::Received;
use ringspan::wire::{ADVERT_LEN_MAX, HELLO_LEN_MAX};
use ringspan::wire::{Command, Flags};

/// What to open.
pub struct Plan {
    /// The satellite.
    pub addr: SocketAddr,
    /// Its key.
    pub peer: PublicKey,
    /// Source addresses, used round robin (empty: the system chooses).
    pub sources: Vec<IpAddr>,
    /// Links to open.
    pub clients: u64,
    /// Dials per second.
    pub rate: f64,
    /// One identity per link, in dialling order. Empty: every link dials as the engine's
    /// identity.
    pub identities: Vec<Arc<cipher::Config>>,
    /// The node id of the engine's identity (what links dial as when `identities` is empty).
    pub node: NodeId,
    /// With `Some(cluster)`, each link advertises one client mount of `cluster` once the
    /// satellite's hello has arrived, as a client node with one attached mount does: kind
    /// client, empty label, seqno 1, metric 0, origin the node id the link dials as. Its mount
    /// id is that node id, so every link's mount is its own; links sharing the engine's
    /// identity add their dial index (0, 1, ...) to it instead.
    pub mount_cluster: Option<ClusterId>,
    /// The idle timeout each link's hello asks the satellite to keep alive for (the load's
    /// engine's own), as a client node's does.
    pub idle_timeout: Duration,
    /// Dials per link before it is given up (1: a failed dial is not redialled).
    pub attempts: u32,
    /// The first wait before a failed dial is redialled.
    pub redial_min: Duration,
    /// The longest wait between two dials of a link.
    pub redial_max: Duration,
}

/// Asks a [`ClientLoad`] for its report so far.
pub struct Progress(pub Sender<ClientsReport>);

/// What happened to the links so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ClientsReport {
    /// Links asked for.
    pub clients: u64,
    /// Source addresses used.
    pub sources: usize,
    /// Dials per second asked for.
    pub rate: f64,
    /// Links dialled (their first dial).
    pub dialled: u64,
    /// Dials again of links whose dial had failed.
    pub redialled: u64,
    /// Links whose handshake completed.
    pub established: u64,
    /// Dials that failed before their handshake completed (first dials and redials).
    pub failed: u64,
    /// Links given up: each of their dials failed.
    pub given_up: u64,
    /// Links dialled and neither up nor given up yet (handshaking, or waiting to be redialled).
    pub pending: u64,
    /// Links that went down after they were up.
    pub lost: u64,
    /// Client mounts advertised (one per link, with a mount cluster, once the satellite's
    /// hello arrived).
    pub advertised: u64,
    /// Links up now.
    pub up_now: u64,
    /// Seconds from the first dial to the last link up.
    pub dial_seconds: f64,
    /// Links established per second over that time.
    pub handshakes_per_sec: f64,
    /// Dial-to-link-up times, milliseconds.
    pub connect_p50_ms: f64,
    /// 99th percentile.
    pub connect_p99_ms: f64,
    /// The slowest.
    pub connect_max_ms: f64,
    /// Why dials failed, with counts.
    pub failures: BTreeMap<String, u64>,
    /// Why established links went down, with counts.
    pub lost_reasons: BTreeMap<String, u64>,
}

/// The client mount a link advertises: the node id it dials as, and the mount's id.
#[derive(Clone, Copy, Debug)]
struct ClientMount {
    origin: NodeId,
    mount: MountId,
}

/// A link not up yet: what it dials as, and how many of its dials failed.
struct Link {
    /// The key it dials under (`None`: the engine's).
    identity: Option<Arc<cipher::Config>>,
    /// The client mount it advertises once up, if any.
    advert: Option<ClientMount>,
    failures: u32,
}

/// A link waiting to be dialled again, first due first.
struct Redial {
    due: Instant,
    /// Breaks ties in failure order.
    seq: u64,
    link: Link,
}

impl PartialEq for Redial {
    fn eq(&self, other: &Redial) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Redial {}

impl PartialOrd for Redial {
    fn partial_cmp(&self, other: &Redial) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Redial {
    fn cmp(&self, other: &Redial) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// The wait before the next dial of a link whose last `failures` dials failed (at least one):
/// `min` doubling with each failure up to `max`, jittered down by up to half (`rng`, a
/// xorshift state, never zero).
fn backoff(min: Duration, max: Duration, failures: u32, rng: &mut u64) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let wait = min.saturating_mul(1 << doublings).min(max);
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    wait.mul_f64(1.0 - (*rng % 1024) as f64 / 2048.0)
}

/// The worker's service: dials, opens hellos, counts.
pub struct ClientLoad {
    addr: SocketAddr,
    peer: PublicKey,
    sources: Vec<IpAddr>,
    clients: u64,
    rate: f64,
    identities: std::vec::IntoIter<Arc<cipher::Config>>,
    node: NodeId,
    mount_cluster: Option<ClusterId>,
    hello: [u8; HELLO_LEN_MAX],
    hello_len: usize,
    started: Option<Instant>,
    dialled: u64,
    /// Dials started, first dials and redials (picks the source address).
    attempts: u64,
    /// When each link still connecting or handshaking was dialled (this time), and the link.
    dialling: HashMap<LinkId, (Instant, Link), foldhash::fast::RandomState>,
    /// Links whose dial failed, waiting to be dialled again.
    redials: BinaryHeap<Reverse<Redial>>,
    redial_seq: u64,
    max_attempts: u32,
    redial_min: Duration,
    redial_max: Duration,
    rng: u64,
    /// Dialled links that failed (`dial_failed`), to dial again or give up on at the next tick.
    failed_dials: Vec<LinkId>,
    /// Links up whose advertisement waits for the satellite's hello.
    awaiting_hello: HashMap<LinkId, ClientMount, foldhash::fast::RandomState>,
    established: u64,
    redialled: u64,
    failed: u64,
    given_up: u64,
    lost: u64,
    advertised: u64,
    last_up: Option<Instant>,
    /// Dial to link up, microseconds.
    connect_us: Histogram<u64>,
    failures: BTreeMap<String, u64>,
    lost_reasons: BTreeMap<String, u64>,
}

impl ClientLoad {
    /// A load carrying out `plan`.
    pub fn new(plan: Plan) -> ClientLoad {
        let mut hello = Hello::new(Role::Client, Wants::all());
        hello.idle_timeout_ms = u32::try_from(plan.idle_timeout.as_millis()).unwrap_or(u32::MAX);
        let mut buf = [0u8; HELLO_LEN_MAX];
        let hello_len = hello.encode(&mut buf);
        ClientLoad {
            addr: plan.addr,
            peer: plan.peer,
            sources: plan.sources,
            clients: plan.clients,
            rate: plan.rate.max(f64::MIN_POSITIVE),
            identities: plan.identities.into_iter(),
            node: plan.node,
            mount_cluster: plan.mount_cluster,
            hello: buf,
            hello_len,
            started: None,
            dialled: 0,
            attempts: 0,
            dialling: HashMap::default(),
            redials: BinaryHeap::new(),
            redial_seq: 0,
            max_attempts: plan.attempts.max(1),
            redial_min: plan.redial_min,
            redial_max: plan.redial_max.max(plan.redial_min),
            rng: std::hash::BuildHasher::hash_one(&foldhash::fast::RandomState::default(), 0) | 1,
            failed_dials: Vec::new(),
            awaiting_hello: HashMap::default(),
            established: 0,
            redialled: 0,
            failed: 0,
            given_up: 0,
            lost: 0,
            advertised: 0,
            last_up: None,
            // One microsecond to ten minutes, three significant digits.
            connect_us: Histogram::new_with_bounds(1, 600_000_000, 3)
                .expect("constant bounds are valid"),
            failures: BTreeMap::new(),
            lost_reasons: BTreeMap::new(),
        }
    }

    /// Dials a new link: the next identity, and the client mount that goes with it.
    fn dial_new(&mut self, worker: &mut WorkerCtx<'_>) {
        let index = self.dialled;
        self.dialled += 1;
        let identity = self.identities.next();
        let (origin, mount) = match &identity {
            Some(cipher) => {
                let origin = cipher.identity().public_key().node_id();
                (origin, MountId(origin.0))
            }
            None => (self.node, MountId(self.node.0.wrapping_add(u128::from(index)))),
        };
        let advert = self.mount_cluster.map(|_| ClientMount { origin, mount });
        self.dial(worker, Link { identity, advert, failures: 0 });
    }

    /// Starts one dial of `link`.
    fn dial(&mut self, worker: &mut WorkerCtx<'_>, link: Link) {
        let from = match self.sources.len() {
            0 => None,
            n => Some(self.sources[(self.attempts % n as u64) as usize]),
        };
        self.attempts += 1;
        let id = match &link.identity {
            Some(cipher) => worker.connect_as(self.addr, from, Some(self.peer), cipher.clone()),
            None => worker.connect_from(self.addr, from, Some(self.peer)),
        };
        match id {
            Some(id) => {
                self.dialling.insert(id, (worker.now(), link));
            }
            None => {
                // `dial_failed` counts it after this turn's callbacks (with no link).
                self.dial_ended_in_failure(worker.now(), link);
            }
        }
    }

    /// A dial of `link` failed at `now`: it is dialled again after its backoff, or given up.
    fn dial_ended_in_failure(&mut self, now: Instant, mut link: Link) {
        link.failures += 1;
        if link.failures >= self.max_attempts {
            self.given_up += 1;
            return;
        }
        let wait = backoff(self.redial_min, self.redial_max, link.failures, &mut self.rng);
        self.redial_seq += 1;
        self.redials.push(Reverse(Redial { due: now + wait, seq: self.redial_seq, link }));
    }

    /// The dials that failed since the last tick: each is dialled again after its backoff, or
    /// given up.
    fn redial_failed(&mut self, now: Instant) {
        for id in std::mem::take(&mut self.failed_dials) {
            if let Some((_, link)) = self.dialling.remove(&id) {
                self.dial_ended_in_failure(now, link);
            }
        }
    }

    /// Opens the `LINK_SPAN` advertising the link's client mount.
    fn advertise(&mut self, link: &mut LinkCtx<'_>, client: ClientMount) {
        let Some(cluster) = self.mount_cluster else { return };
        let advert = Advert {
            mount: MountKey { cluster, mount: client.mount },
            kind: MountKind::Client,
            label: Label::EMPTY,
            origin: client.origin,
            seqno: Seqno(1),
            metric: Metric::ZERO,
        };
        let mut buf = [0u8; ADVERT_LEN_MAX];
        let len = advert.encode(&mut buf);
        match link.txn.open(&mut link.out, None, Command::LINK_SPAN, &buf[..len], Flags::NONE) {
            Ok(_) => self.advertised += 1,
            Err(error) => {
                *self.failures.entry(format!("mount not advertised: {error}")).or_default() += 1
            }
        }
    }

    fn report(&self) -> ClientsReport {
        let up_now = self.established - self.lost;
        let (first, last) = (self.started, self.last_up);
        let dial_seconds = match (first, last) {
            (Some(first), Some(last)) => last.saturating_duration_since(first).as_secs_f64(),
            _ => 0.0,
        };
        let ms = |q: f64| self.connect_us.value_at_quantile(q) as f64 / 1e3;
        ClientsReport {
            clients: self.clients,
            sources: self.sources.len(),
            rate: self.rate,
            dialled: self.dialled,
            redialled: self.redialled,
            established: self.established,
            failed: self.failed,
            given_up: self.given_up,
            pending: self.dialled.saturating_sub(self.established + self.given_up),
            lost: self.lost,
            advertised: self.advertised,
            up_now,
            dial_seconds,
            handshakes_per_sec: if dial_seconds > 0.0 {
                self.established as f64 / dial_seconds
            } else {
                0.0
            },
            connect_p50_ms: ms(0.5),
            connect_p99_ms: ms(0.99),
            connect_max_ms: self.connect_us.max() as f64 / 1e3,
            failures: self.failures.clone(),
            lost_reasons: self.lost_reasons.clone(),
        }
    }
}

impl Service for ClientLoad {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let now = link.now();
        self.established += 1;
        self.last_up = Some(now);
        if let Some((dialled, Link { advert, .. })) = self.dialling.remove(&link.id()) {
            let us = now.saturating_duration_since(dialled).as_micros() as u64;
            let _ = self.connect_us.record(us.max(1));
            if let Some(advert) = advert {
                self.awaiting_hello.insert(link.id(), advert);
            }
        }
        // The hello a client node opens, kept open for the link's life.
        let hello = &self.hello[..self.hello_len];
        if let Err(error) =
            link.txn.open(&mut link.out, None, Command::LINK_CONN, hello, Flags::NONE)
        {
            *self.failures.entry(format!("hello not sent: {error}")).or_default() += 1;
        }
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        // The satellite's hello: a client node advertises its mounts to it now.
        let Received::Txn(d) = received else { return };
        if d.opens()
            && d.parent.is_none()
            && d.command == Command::LINK_CONN
            && let Some(client) = self.awaiting_hello.remove(&link.id())
        {
            self.advertise(link, client);
        }
    }

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        self.awaiting_hello.remove(&link);
        self.lost += 1;
        *self.lost_reasons.entry(reason.to_string()).or_default() += 1;
    }

    fn dial_failed(&mut self, link: Option<LinkId>, _addr: SocketAddr, reason: CloseReason) {
        self.failed += 1;
        *self.failures.entry(reason.to_string()).or_default() += 1;
        // A dial that could not start (no link) was handled when it was made.
        if let Some(link) = link {
            self.failed_dials.push(link);
        }
    }

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        self.redial_failed(now);
        while let Some(Reverse(redial)) = self.redials.peek() {
            if redial.due > now {
                worker.wake_at(redial.due);
                break;
            }
            let Some(Reverse(redial)) = self.redials.pop() else { break };
            self.redialled += 1;
            self.dial(worker, redial.link);
        }
        if self.dialled >= self.clients {
            return;
        }
        let started = *self.started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started).as_secs_f64();
        let due = ((elapsed * self.rate) as u64 + 1).min(self.clients);
        while self.dialled < due {
            self.dial_new(worker);
        }
        if self.dialled < self.clients {
            let next = Duration::from_secs_f64(self.dialled as f64 / self.rate);
            worker.wake_at(started + next);
        }
        if let Some(Reverse(redial)) = self.redials.peek() {
            // One that could not even start, just now.
            worker.wake_at(redial.due);
        }
    }

    fn command(&mut self, _worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        if let Ok(progress) = command.downcast::<Progress>() {
            let _ = progress.0.send(self.report());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redials_back_off_doubling_up_to_the_longest_wait_jittered_down_by_up_to_half() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(5_000));
        let mut rng = 0x9e37_79b9_7f4a_7c15;
        for failures in 1..40 {
            let full = (min * 2u32.pow((failures - 1).min(20))).min(max);
            for _ in 0..100 {
                let wait = backoff(min, max, failures, &mut rng);
                assert!(wait <= full && wait >= full / 2, "{failures}: {wait:?} of {full:?}");
            }
        }
        // Links that failed together do not come back together.
        let waits: std::collections::BTreeSet<_> =
            (0..100).map(|_| backoff(min, max, 3, &mut rng)).collect();
        assert!(waits.len() > 50, "{waits:?}");
    }
}
