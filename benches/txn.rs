//! Transaction-layer benches: a whole open/reply/close cycle between two `Link`s, a long-lived
//! stream of small messages, and the same cycle through the `Pair` harness for comparison.
//!
//! Run with `cargo bench --bench txn`. The two links are wired directly: each side writes into a
//! reusable `Vec<u8>` that the other side parses with `Messages`, and every event is drained, so
//! after warm-up the measured loops allocate nothing. A counting global allocator checks that
//! before the benches run (and reports what the `Pair` harness allocates).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringspan::ids::TxnId;
use ringspan::limits::RECORD_PLAINTEXT_MAX;
use ringspan::sim::pair::{Output, Pair, Parts, Side};
use ringspan::txn::{Event, Link, Received};
use ringspan::wire::{Command, ErrorCode, Flags, Messages};

/// The command every bench transaction carries.
const COMMAND: Command = Command::new(2, 7);

/// Payload of the request and of the reply in the cycle benches.
const CYCLE_PAYLOAD: usize = 64;

/// Payload of each streamed message.
const STREAM_PAYLOAD: usize = 64;

/// Streamed messages per batch: as many 64-byte-payload messages (96 bytes on the wire) as fill
/// one record, i.e. one record's worth of plaintext per iteration.
const STREAM_BATCH: usize = RECORD_PLAINTEXT_MAX / (32 + STREAM_PAYLOAD);

/// Iterations run before counting allocations, so tables and buffers reach their working size.
const WARM_UP: usize = 1_000;

/// Iterations over which allocations are counted.
const COUNTED: usize = 10_000;

/// Counts every allocation (and reallocation) made by the process.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: forwards every call unchanged to the system allocator; only adds a counter.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` and `layout` came from this allocator, i.e. from `System`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` and `layout` came from this allocator, i.e. from `System`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocations made by `COUNTED` runs of `step`, after `WARM_UP` runs.
fn allocations_after_warm_up(mut step: impl FnMut()) -> u64 {
    for _ in 0..WARM_UP {
        step();
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..COUNTED {
        step();
    }
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Drains a link's events; returns how many `Ended` there were.
fn drain(link: &mut Link) -> usize {
    let mut ended = 0;
    while let Some(event) = link.poll_event() {
        ended += usize::from(matches!(event, Event::Ended { .. }));
        black_box(event);
    }
    ended
}

/// Bytes that are not all zero.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(1)).collect()
}

/// Two links joined directly: each side's messages are parsed by the other with `Messages`.
struct Direct {
    a: Link,
    b: Link,
    /// What A sent in the current step, for B to read.
    a_out: Vec<u8>,
    /// What B sent in the current step, for A to read.
    b_out: Vec<u8>,
}

impl Direct {
    fn new() -> Direct {
        Direct {
            a: Link::new(),
            b: Link::new(),
            a_out: Vec::with_capacity(RECORD_PLAINTEXT_MAX),
            b_out: Vec::with_capacity(RECORD_PLAINTEXT_MAX),
        }
    }

    /// B handles everything in `a_out`; its automatic replies go to `b_out` (cleared first).
    /// Returns the transaction of the last delivery.
    fn b_receives(&mut self) -> Option<TxnId> {
        self.b_out.clear();
        let mut txn = None;
        for message in Messages::new(&self.a_out) {
            let message = message.expect("valid message");
            let received = self.b.handle_message(&mut self.b_out, &message).expect("accepted");
            if let Some(Received::Txn(delivery)) = received {
                txn = Some(delivery.txn);
            }
            black_box(received);
        }
        txn
    }

    /// A handles everything in `b_out`; its automatic replies go to `a_out` (cleared first).
    fn a_receives(&mut self) {
        self.a_out.clear();
        for message in Messages::new(&self.b_out) {
            let message = message.expect("valid message");
            let received = self.a.handle_message(&mut self.a_out, &message).expect("accepted");
            black_box(received);
        }
    }

    /// One transaction, start to end: A opens with a 64-byte request (CREATE); B answers with
    /// its whole 64-byte reply (CREATE|REPLY|DELETE); A closes (DELETE); B sees the close. Both
    /// tables are empty again afterwards. Returns the `Ended` events seen (two).
    fn cycle(&mut self, request: &[u8], reply: &[u8]) -> usize {
        let mut ended = 0;
        self.a_out.clear();
        let txn_a =
            self.a.open(&mut self.a_out, None, COMMAND, request, Flags::NONE).expect("open");
        ended += drain(&mut self.a);

        let txn_b = self.b_receives().expect("B sees the CREATE");
        ended += drain(&mut self.b);
        self.b
            .send(&mut self.b_out, txn_b, COMMAND, reply, Flags::DELETE, ErrorCode::NONE)
            .expect("reply");
        ended += drain(&mut self.b);

        self.a_receives();
        ended += drain(&mut self.a);
        self.a.close(&mut self.a_out, txn_a, ErrorCode::NONE).expect("close");
        ended += drain(&mut self.a);

        self.b_receives();
        ended += drain(&mut self.b);
        ended
    }

    /// Opens the long-lived transaction for streaming: A's CREATE, handled by B.
    fn open_stream(&mut self) -> TxnId {
        self.a_out.clear();
        let txn = self.a.open(&mut self.a_out, None, COMMAND, &[], Flags::NONE).expect("open");
        self.b_receives().expect("B sees the CREATE");
        drain(&mut self.a);
        drain(&mut self.b);
        txn
    }

    /// A sends `STREAM_BATCH` messages on `txn` into `a_out`.
    fn send_batch(&mut self, txn: TxnId, payload: &[u8]) {
        self.a_out.clear();
        for _ in 0..STREAM_BATCH {
            self.a
                .send(&mut self.a_out, txn, COMMAND, payload, Flags::NONE, ErrorCode::NONE)
                .expect("send");
        }
    }

    /// B handles the batch in `a_out`.
    fn receive_batch(&mut self) {
        self.b_receives();
        drain(&mut self.b);
    }
}

/// The open/reply/close cycle between two directly joined links.
fn cycle(c: &mut Criterion) {
    let request = payload(CYCLE_PAYLOAD);
    let reply = payload(CYCLE_PAYLOAD);
    let mut direct = Direct::new();
    assert_eq!(direct.cycle(&request, &reply), 2, "each end ends the transaction once");
    assert!(direct.a.is_empty() && direct.b.is_empty());
    let allocations = allocations_after_warm_up(|| {
        black_box(direct.cycle(&request, &reply));
    });
    eprintln!("txn/cycle: {allocations} allocations in {COUNTED} cycles after warm-up");
    assert_eq!(allocations, 0, "the Link cycle allocates after warm-up");

    let mut group = c.benchmark_group("txn/cycle");
    group.throughput(Throughput::Elements(1));
    group.bench_function("direct", |b| b.iter(|| direct.cycle(&request, &reply)));
    group.finish();
}

/// A long-lived transaction streaming 64-byte messages from A to B, one record's worth per
/// iteration: sending alone, receiving alone (the same batch replayed), and both.
fn stream(c: &mut Criterion) {
    let payload = payload(STREAM_PAYLOAD);
    let mut direct = Direct::new();
    let txn = direct.open_stream();
    direct.send_batch(txn, &payload);
    assert!(direct.a_out.len() <= RECORD_PLAINTEXT_MAX);
    direct.receive_batch();
    let allocations = allocations_after_warm_up(|| {
        direct.send_batch(txn, &payload);
        direct.receive_batch();
    });
    eprintln!(
        "txn/stream: {allocations} allocations in {COUNTED} batches of {STREAM_BATCH} after warm-up"
    );
    assert_eq!(allocations, 0, "streaming allocates after warm-up");

    let mut group = c.benchmark_group("txn/stream");
    group.throughput(Throughput::Elements(STREAM_BATCH as u64));
    let id = |what: &str| BenchmarkId::new(what, format!("{STREAM_BATCH}x{STREAM_PAYLOAD}B"));
    group.bench_function(id("send"), |b| b.iter(|| direct.send_batch(txn, &payload)));
    direct.send_batch(txn, &payload);
    group.bench_function(id("receive"), |b| b.iter(|| direct.receive_batch()));
    group.bench_function(id("send+receive"), |b| {
        b.iter(|| {
            direct.send_batch(txn, &payload);
            direct.receive_batch();
        });
    });
    group.finish();
    assert!(direct.a.contains(txn) && direct.b.len() == 1, "the stream stayed open");
}

/// The same cycle as `txn/cycle/direct`, through `Pair` (records framed and deframed, virtual
/// clock, the application as a closure), to show the harness's overhead.
fn pair_cycle(c: &mut Criterion) {
    let request = payload(CYCLE_PAYLOAD);
    let reply = payload(CYCLE_PAYLOAD);
    let ended = Cell::new(0u64);
    let mut app = |side: Side, peer: &mut Parts<'_>, output: Output<'_>| match (side, output) {
        (Side::B, Output::Received(Received::Txn(delivery))) if delivery.opens() => {
            let flags = Flags::DELETE;
            let txn = delivery.txn;
            peer.txn.send(&mut peer.out, txn, COMMAND, &reply, flags, ErrorCode::NONE).unwrap();
        }
        (Side::A, Output::Received(Received::Txn(delivery))) if delivery.closes() => {
            peer.txn.close(&mut peer.out, delivery.txn, ErrorCode::NONE).unwrap();
        }
        (_, Output::Event(event)) => {
            ended.set(ended.get() + u64::from(matches!(event, Event::Ended { .. })));
            black_box(event);
        }
        (_, Output::Closed(reason)) => panic!("link closed: {reason}"),
        (_, Output::Received(received)) => {
            black_box(received);
        }
    };
    let mut pair = Pair::new(Duration::ZERO);
    let mut run = |pair: &mut Pair| {
        let mut a = pair.a.parts();
        a.txn.open(&mut a.out, None, COMMAND, &request, Flags::NONE).unwrap();
        pair.drive(&mut app);
    };
    run(&mut pair);
    assert_eq!(ended.get(), 2, "each end ends the transaction once");
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
    let allocations = allocations_after_warm_up(|| run(&mut pair));
    eprintln!("txn/cycle/pair: {allocations} allocations in {COUNTED} cycles after warm-up");

    let mut group = c.benchmark_group("txn/cycle");
    group.throughput(Throughput::Elements(1));
    group.bench_function("pair", |b| b.iter(|| run(&mut pair)));
    group.finish();
    assert!(pair.is_connected());
}

criterion_group!(benches, cycle, stream, pair_cycle);
criterion_main!(benches);
