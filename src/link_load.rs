//! Services that put load on engine links and count what arrives: the engine's own tests
//! drive real links with them (`tests/engine_alloc.rs`, `tests/process/engine_process.rs`), and
//! `ringspan-bench link` and `ringspan-bench serve` (tools/bench) measure with the same ones. They
//! stay in the library, not in the benchmark binary, because those tests need them and a test
//! cannot reach into a binary; everything else that benchmarks lives in tools/bench.
//!
//! - [`Sink`] (the accepting side) counts every message and byte it receives and answers every
//!   request it is sent with the same payload.
//! - [`Source`] (the dialling side) either streams one-way messages inside one long transaction,
//!   keeping the link's send queue topped up ([`Mode::OneWay`]), or sends one request at a time
//!   and records each round trip ([`Mode::RoundTrip`]).
//!
//! Counters are shared atomics, read by the thread that runs the benchmark; nothing allocates
//! per message.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;

use crate::ids::{LinkId, TxnId};
use crate::ring::{CloseReason, LinkCtx, Service, WorkerCtx};
use crate::txn::Received;
use crate::wire::{Command, ErrorCode, Flags};

/// The command of benchmark transactions.
pub const BENCH: Command = Command::new(32, 1);

/// What a [`Source`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Stream messages one way as fast as the link takes them.
    OneWay,
    /// One request at a time; each reply's round trip is recorded.
    RoundTrip,
}

/// Counters shared between a service and the thread reading them.
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages received.
    pub messages: AtomicU64,
    /// Payload bytes received.
    pub bytes: AtomicU64,
    /// Transactions that ended.
    pub ended: AtomicU64,
    /// Transactions that ended with an error.
    pub aborted: AtomicU64,
    /// Links that came up.
    pub links_up: AtomicU64,
    /// Links that went down.
    pub links_down: AtomicU64,
    /// Why each link went down, in order.
    pub close_reasons: Mutex<Vec<CloseReason>>,
}

impl Counters {
    fn down(&self, reason: CloseReason) {
        if let Ok(mut reasons) = self.close_reasons.lock() {
            reasons.push(reason);
        }
        self.links_down.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages and payload bytes so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (self.messages.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }
}

/// Counts what arrives and answers requests. Counts are kept locally and published to the
/// shared counters once per turn of the worker, not once per message.
pub struct Sink {
    counters: Arc<Counters>,
    messages: u64,
    bytes: u64,
}

impl Sink {
    /// A sink reporting into `counters`.
    pub fn new(counters: Arc<Counters>) -> Sink {
        Sink { counters, messages: 0, bytes: 0 }
    }
}

impl Service for Sink {
    fn link_up(&mut self, _link: &mut LinkCtx<'_>) {
        self.counters.links_up.fetch_add(1, Ordering::Relaxed);
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let Received::Txn(d) = received else { return };
        self.messages += 1;
        self.bytes += d.payload.len() as u64;
        if d.opens() && d.closes() {
            // A one-shot request: answer it with its payload.
            let _ = link.txn.send(
                &mut link.out,
                d.txn,
                BENCH,
                d.payload,
                Flags::DELETE,
                ErrorCode::NONE,
            );
        } else if d.closes() && !d.is_forced_close() {
            let _ = link.txn.close(&mut link.out, d.txn, ErrorCode::NONE);
        }
    }

    fn event(&mut self, _link: &mut LinkCtx<'_>, event: crate::txn::Event) {
        if let crate::txn::Event::Ended { error, .. } = event {
            self.counters.ended.fetch_add(1, Ordering::Relaxed);
            if !error.is_none() {
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, _link: LinkId, reason: CloseReason) {
        self.counters.down(reason);
    }

    fn tick(&mut self, _worker: &mut WorkerCtx<'_>) {
        if self.messages > 0 {
            self.counters.messages.fetch_add(std::mem::take(&mut self.messages), Ordering::Relaxed);
            self.counters.bytes.fetch_add(std::mem::take(&mut self.bytes), Ordering::Relaxed);
        }
    }
}

/// Loads every link it dials.
pub struct Source {
    mode: Mode,
    payload: Vec<u8>,
    /// One-way mode keeps at least this many bytes queued on the link.
    queue_target: usize,
    counters: Arc<Counters>,
    rtt: Arc<Mutex<Histogram<u64>>>,
    /// Round trips recorded locally, merged into `rtt` every so often.
    local: Histogram<u64>,
    links: Vec<(LinkId, Option<TxnId>)>,
    sent_at: Option<Instant>,
    stopped: bool,
}

/// Tells a [`Source`] to stop sending (as a [`crate::ring::Command::Service`]).
pub struct Stop;

impl Source {
    /// A source sending `size`-byte payloads in `mode`.
    pub fn new(
        mode: Mode,
        size: usize,
        counters: Arc<Counters>,
        rtt: Arc<Mutex<Histogram<u64>>>,
    ) -> Source {
        Source {
            mode,
            payload: vec![0x5a; size],
            queue_target: 1 << 20,
            counters,
            rtt,
            local: new_histogram(),
            links: Vec::with_capacity(4),
            sent_at: None,
            stopped: false,
        }
    }

    fn fill(&mut self, link: &mut LinkCtx<'_>, stream: Option<TxnId>) -> Option<TxnId> {
        let txn = match stream {
            Some(txn) => txn,
            None => link.txn.open(&mut link.out, None, BENCH, &[], Flags::NONE).ok()?,
        };
        while link.queued_bytes() < self.queue_target {
            // Up to one record's worth per call; the worker seals it at the end of the turn.
            for _ in 0..64 {
                if link
                    .txn
                    .send(&mut link.out, txn, BENCH, &self.payload, Flags::NONE, ErrorCode::NONE)
                    .is_err()
                {
                    return None;
                }
            }
        }
        Some(txn)
    }

    fn request(&mut self, link: &mut LinkCtx<'_>) {
        if link.txn.open(&mut link.out, None, BENCH, &self.payload, Flags::DELETE).is_ok() {
            self.sent_at = Some(link.now());
        }
    }

    fn flush_histogram(&mut self) {
        if let Ok(mut shared) = self.rtt.lock() {
            let _ = shared.add(&self.local);
        }
        self.local.reset();
    }
}

impl Service for Source {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        self.counters.links_up.fetch_add(1, Ordering::Relaxed);
        self.links.push((link.id(), None));
        if self.mode == Mode::RoundTrip {
            self.request(link);
        }
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let Received::Txn(d) = received else { return };
        self.counters.messages.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes.fetch_add(d.payload.len() as u64, Ordering::Relaxed);
        if self.mode == Mode::RoundTrip && d.closes() {
            if let Some(sent) = self.sent_at.take() {
                let nanos = link.now().saturating_duration_since(sent).as_nanos() as u64;
                let _ = self.local.record(nanos.max(1));
                if self.local.len() >= 1024 {
                    self.flush_histogram();
                }
            }
            if !self.stopped {
                self.request(link);
            }
        }
    }

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        if self.mode != Mode::OneWay || self.stopped {
            return;
        }
        for i in 0..self.links.len() {
            let (id, stream) = self.links[i];
            let Some(mut link) = worker.link(id) else {
                continue;
            };
            self.links[i].1 = self.fill(&mut link, stream);
        }
    }

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        self.links.retain(|(id, _)| *id != link);
        self.counters.down(reason);
    }

    fn command(&mut self, _worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        if command.is::<Stop>() {
            self.stopped = true;
            self.flush_histogram();
        }
    }
}

/// A histogram of nanoseconds from 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid")
}
