//! Very many client links from one worker, as `ringspan-bench clients` opens them against a
//! satellite: dials paced at a rate, spread over source addresses, each link under a key of its
//! own, each opening the hello a client node opens (`LINK_CONN`, role client, wanting every kind
//! in every cluster), optionally advertising one client mount once the satellite's hello has
//! arrived (a `LINK_SPAN`, as a client node with one attached mount does), then held idle.
//!
//! [`ClientLoad`] is the worker's service. The thread running the benchmark asks it for a
//! [`ClientsReport`] with [`Progress`] (a [`ringspan::ring::Command::Service`]); nothing is shared
//! between them otherwise.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use ringspan::cipher::{self, PublicKey};
use ringspan::ids::{ClusterId, LinkId, MountId, NodeId};
use ringspan::ring::{CloseReason, LinkCtx, Service, WorkerCtx};
use ringspan::span::codec::{self, ADVERT_LEN_MAX, HELLO_LEN_MAX};
use ringspan::span::{Advert, Hello, Label, Metric, MountKey, MountKind, Role, Seqno, Wants};
use ringspan::txn::Received;
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
    /// Dials started.
    pub dialled: u64,
    /// Links whose handshake completed.
    pub established: u64,
    /// Dials that failed before their handshake completed.
    pub failed: u64,
    /// Dials neither up nor failed yet.
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
    /// When each link still handshaking was dialled, and the client mount it is to advertise,
    /// if any.
    dialling: HashMap<LinkId, (Instant, Option<ClientMount>), foldhash::fast::RandomState>,
    /// Links up whose advertisement waits for the satellite's hello.
    awaiting_hello: HashMap<LinkId, ClientMount, foldhash::fast::RandomState>,
    established: u64,
    failed: u64,
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
            dialling: HashMap::default(),
            awaiting_hello: HashMap::default(),
            established: 0,
            failed: 0,
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

    fn dial(&mut self, worker: &mut WorkerCtx<'_>) {
        let from = match self.sources.len() {
            0 => None,
            n => Some(self.sources[(self.dialled % n as u64) as usize]),
        };
        let index = self.dialled;
        self.dialled += 1;
        let (id, origin, mount) = match self.identities.next() {
            Some(cipher) => {
                let origin = cipher.identity().public_key().node_id();
                let id = worker.connect_as(self.addr, from, Some(self.peer), cipher);
                (id, origin, MountId(origin.0))
            }
            None => {
                let id = worker.connect_from(self.addr, from, Some(self.peer));
                (id, self.node, MountId(self.node.0.wrapping_add(u128::from(index))))
            }
        };
        let advert = self.mount_cluster.map(|_| ClientMount { origin, mount });
        // A dial that could not start is reported through `dial_failed`.
        if let Some(id) = id {
            self.dialling.insert(id, (worker.now(), advert));
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
        let len = codec::encode_advert(&advert, &mut buf);
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
            established: self.established,
            failed: self.failed,
            pending: self.dialled - self.established - self.failed,
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
        if let Some((dialled, advert)) = self.dialling.remove(&link.id()) {
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

    fn dial_failed(&mut self, _addr: SocketAddr, reason: CloseReason) {
        self.failed += 1;
        *self.failures.entry(reason.to_string()).or_default() += 1;
    }

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        if self.dialled >= self.clients {
            return;
        }
        let now = worker.now();
        let started = *self.started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(started).as_secs_f64();
        let due = ((elapsed * self.rate) as u64 + 1).min(self.clients);
        while self.dialled < due {
            self.dial(worker);
        }
        if self.dialled < self.clients {
            let next = Duration::from_secs_f64(self.dialled as f64 / self.rate);
            worker.wake_at(started + next);
        }
    }

    fn command(&mut self, _worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        if let Ok(progress) = command.downcast::<Progress>() {
            let _ = progress.0.send(self.report());
        }
    }
}
