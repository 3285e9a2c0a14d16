//! Very many client links from one worker, as `ringspan bench clients` opens them against a
//! satellite: dials paced at a rate, spread over source addresses, each link under a key of its
//! own, each opening the hello a client node opens (`LINK_CONN`, role client, wanting every kind
//! in every cluster), then held idle.
//!
//! [`ClientLoad`] is the worker's service. The thread running the benchmark asks it for a
//! [`ClientsReport`] with [`Progress`] (a [`crate::ring::Command::Service`]); nothing is shared
//! between them otherwise.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cipher::{self, PublicKey};
use crate::ids::LinkId;
use crate::ring::{CloseReason, LinkCtx, Service, WorkerCtx};
use crate::span::codec::HELLO_LEN_MAX;
use crate::span::{Hello, Role, Wants};
use crate::txn::Received;
use crate::wire::{Command, Flags};

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

/// The worker's service: dials, opens hellos, counts.
pub struct ClientLoad {
    addr: SocketAddr,
    peer: PublicKey,
    sources: Vec<IpAddr>,
    clients: u64,
    rate: f64,
    identities: std::vec::IntoIter<Arc<cipher::Config>>,
    hello: [u8; HELLO_LEN_MAX],
    hello_len: usize,
    started: Option<Instant>,
    dialled: u64,
    /// When each link still handshaking was dialled.
    dialling: HashMap<LinkId, Instant, foldhash::fast::RandomState>,
    established: u64,
    failed: u64,
    lost: u64,
    last_up: Option<Instant>,
    /// Dial to link up, microseconds.
    connect_us: Histogram<u64>,
    failures: BTreeMap<String, u64>,
    lost_reasons: BTreeMap<String, u64>,
}

impl ClientLoad {
    /// A load carrying out `plan`.
    pub fn new(plan: Plan) -> ClientLoad {
        let hello = Hello { role: Role::Client, wants: Wants::all() };
        let mut buf = [0u8; HELLO_LEN_MAX];
        let hello_len = hello.encode(&mut buf);
        ClientLoad {
            addr: plan.addr,
            peer: plan.peer,
            sources: plan.sources,
            clients: plan.clients,
            rate: plan.rate.max(f64::MIN_POSITIVE),
            identities: plan.identities.into_iter(),
            hello: buf,
            hello_len,
            started: None,
            dialled: 0,
            dialling: HashMap::default(),
            established: 0,
            failed: 0,
            lost: 0,
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
        self.dialled += 1;
        let id = match self.identities.next() {
            Some(cipher) => worker.connect_as(self.addr, from, Some(self.peer), cipher),
            None => worker.connect_from(self.addr, from, Some(self.peer)),
        };
        // A dial that could not start is reported through `dial_failed`.
        if let Some(id) = id {
            self.dialling.insert(id, worker.now());
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
        if let Some(dialled) = self.dialling.remove(&link.id()) {
            let us = now.saturating_duration_since(dialled).as_micros() as u64;
            let _ = self.connect_us.record(us.max(1));
        }
        // The hello a client node opens, kept open for the link's life.
        let hello = &self.hello[..self.hello_len];
        if let Err(error) =
            link.txn.open(&mut link.out, None, Command::LINK_CONN, hello, Flags::NONE)
        {
            *self.failures.entry(format!("hello not sent: {error}")).or_default() += 1;
        }
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn link_down(&mut self, _link: LinkId, reason: CloseReason) {
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
