//! A relay in steady state allocates nothing per relayed message: three `relay::Node`s in a
//! chain, a caller A, a relay R and a node B with a mount, joined by real transaction state
//! (`txn::Link` pairs carrying encoded messages). Once warm, one-shot calls A → R → B and their
//! replies, and messages streamed both ways inside a long-lived call, cost zero heap allocations
//! on every node, the relay's circuits, queues and transaction tables included.
//!
//! The harness moves bytes between preallocated buffers, so what the counting allocator sees is
//! the nodes' and links' own work. It runs three ways: with the relay's other link lent while a
//! message is handled (`relay::Links`, as the engine does: messages inside a circuit go straight
//! to the next link); the same, and each batch of bytes first offered whole
//! (`Node::forward_record`, as the engine offers each record); and without (everything relayed
//! waits in the relay's queue for a flush).

use ringspan::ids::{ClusterId, LinkId, MountId, NodeId};
use ringspan::relay::{AppEvent, CallId, Node};
use ringspan::sim::lend::{self, Lent};
use ringspan::span::{Hello, Label, MountKey, MountKind, Role, Wants};
use ringspan::txn::{self, Received};
use ringspan::wire::{Command, ErrorCode, Flags, Messages};

use crate::support::counting;

const ECHO: Command = Command::new(1, 1);
const MOUNT: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x42) };
const A: usize = 0;
const R: usize = 1;
const B: usize = 2;

/// One link: each end's transaction state and the bytes it wrote, not yet delivered.
struct Wire {
    ends: [usize; 2],
    txn: [txn::Link; 2],
    out: [Vec<u8>; 2],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Relayed messages wait in the relay's queue for a flush.
    Queued,
    /// Relayed messages go straight to the next link.
    Direct,
    /// As `Direct`, each batch first offered whole.
    Whole,
}

struct Chain {
    nodes: Vec<Node>,
    wires: Vec<Wire>,
    /// Where delivered bytes are parsed from (swapped with a wire's output, so nothing grows).
    scratch: Vec<u8>,
    /// Replies and messages A's application received.
    received_at_a: u64,
    /// Messages B's application received (requests and streamed messages).
    received_at_b: u64,
    /// B's end of the long-lived call, once it has opened there.
    stream_at_b: Option<CallId>,
    /// How a node handles what arrives (see the module doc).
    mode: Mode,
    /// Times the relay had output queued for a flush.
    relay_flushes: u64,
    /// Times A or B had output queued for a flush.
    end_flushes: u64,
}

impl lend::Wire for Wire {
    fn end_of(&self, node: usize) -> Option<usize> {
        Some(Chain::side(self, node))
    }

    fn end_mut(&mut self, end: usize) -> (&mut txn::Link, &mut Vec<u8>) {
        (&mut self.txn[end], &mut self.out[end])
    }
}

impl Chain {
    fn new(mode: Mode) -> Chain {
        let hello = Hello::new(Role::Router, Wants::all());
        // The nodes' time starts here and does not move.
        let now = crate::support::wait::now();
        let nodes = (0..3).map(|i| Node::new(NodeId(i as u128 + 1), hello.clone(), now)).collect();
        let wire = |a, b| Wire {
            ends: [a, b],
            txn: [txn::Link::new(), txn::Link::new()],
            out: [Vec::with_capacity(1 << 16), Vec::with_capacity(1 << 16)],
        };
        let mut chain = Chain {
            nodes,
            wires: vec![wire(A, R), wire(R, B)],
            scratch: Vec::with_capacity(1 << 16),
            received_at_a: 0,
            received_at_b: 0,
            stream_at_b: None,
            mode,
            relay_flushes: 0,
            end_flushes: 0,
        };
        for l in 0..chain.wires.len() {
            for side in 0..2 {
                let node = chain.wires[l].ends[side];
                let peer = NodeId(chain.wires[l].ends[1 - side] as u128 + 1);
                let wire = &mut chain.wires[l];
                chain.nodes[node]
                    .link_up(
                        LinkId(l as u64),
                        peer,
                        Role::Router,
                        side == 0,
                        &mut wire.txn[side],
                        &mut wire.out[side],
                    )
                    .unwrap();
            }
        }
        chain.pump();
        chain.nodes[B].attach(MOUNT, MountKind::Master, Label::EMPTY).unwrap();
        chain.pump();
        assert!(chain.nodes[A].route(MOUNT).is_some(), "A hears of B's mount through R");
        chain
    }

    /// The end of `wire` at `node`.
    fn side(wire: &Wire, node: usize) -> usize {
        usize::from(wire.ends[1] == node)
    }

    /// Delivers everything written, flushes every node's queues and plays both applications,
    /// until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for l in 0..self.wires.len() {
                for from in 0..2 {
                    if self.wires[l].out[from].is_empty() {
                        continue;
                    }
                    moved = true;
                    std::mem::swap(&mut self.scratch, &mut self.wires[l].out[from]);
                    let to = 1 - from;
                    let n = self.wires[l].ends[to];
                    let node = &mut self.nodes[n];
                    let (wire, mut others) = Lent::split(&mut self.wires, l, n).unwrap();
                    let link = LinkId(l as u64);
                    let batch = &self.scratch;
                    if self.mode == Mode::Whole
                        && node.forward_record(link, &wire.txn[to], &mut others, batch).is_some()
                    {
                        self.scratch.clear();
                        continue;
                    }
                    let direct = self.mode != Mode::Queued;
                    for message in Messages::new(&self.scratch) {
                        let message = message.unwrap();
                        let (txn, out) = (&mut wire.txn[to], &mut wire.out[to]);
                        if let Some(received @ Received::Txn(_)) =
                            txn.handle_message(out, &message).unwrap()
                        {
                            if direct {
                                node.received_via(link, txn, out, &mut others, received).unwrap();
                            } else {
                                node.received(link, txn, out, received).unwrap();
                            }
                        }
                        while let Some(event) = txn.poll_event() {
                            if direct {
                                node.event_via(link, txn, out, &mut others, event).unwrap();
                            } else {
                                node.event(link, txn, out, event).unwrap();
                            }
                        }
                    }
                    self.scratch.clear();
                }
            }
            for n in 0..self.nodes.len() {
                while let Some(link) = self.nodes[n].poll_dirty() {
                    moved = true;
                    self.relay_flushes += u64::from(n == R);
                    self.end_flushes += u64::from(n != R);
                    let wire = &mut self.wires[link.0 as usize];
                    let side = Chain::side(wire, n);
                    let io = (&mut wire.txn[side], &mut wire.out[side]);
                    self.nodes[n].flush(link, Some(io));
                }
            }
            moved |= self.applications();
            if !moved {
                return;
            }
        }
    }

    /// B answers every one-shot request with its payload and counts streamed messages; A counts
    /// what comes back. Returns whether anything happened.
    fn applications(&mut self) -> bool {
        let mut any = false;
        let mut reply: Option<(CallId, usize)> = None;
        while let Some(event) = self.nodes[B].poll_app() {
            any = true;
            match event {
                AppEvent::Opened { call, flags, payload, .. } => {
                    self.received_at_b += 1;
                    if flags.contains(Flags::DELETE) {
                        reply = Some((call, payload.len()));
                    } else {
                        self.stream_at_b = Some(call);
                    }
                }
                AppEvent::Message { .. } => self.received_at_b += 1,
                AppEvent::Ended { .. } => {}
            }
            if let Some((call, len)) = reply.take() {
                let payload = [7u8; 64];
                self.nodes[B]
                    .send(call, ECHO, &payload[..len], Flags::DELETE, ErrorCode::NONE)
                    .unwrap();
            }
        }
        while let Some(event) = self.nodes[A].poll_app() {
            any = true;
            if let AppEvent::Message { .. } = event {
                self.received_at_a += 1;
            }
        }
        any
    }

    fn call(&mut self, payload: &[u8]) {
        self.nodes[A].open(MOUNT, ECHO, payload, Flags::DELETE).unwrap();
        self.pump();
    }
}

#[test]
fn relaying_allocates_nothing_once_warm() {
    relays_without_allocating(Mode::Queued);
}

#[test]
fn relaying_straight_to_the_next_link_allocates_nothing_once_warm() {
    relays_without_allocating(Mode::Direct);
}

#[test]
fn relaying_whole_records_allocates_nothing_once_warm() {
    relays_without_allocating(Mode::Whole);
}

fn relays_without_allocating(mode: Mode) {
    let mut chain = Chain::new(mode);
    let payload = [1u8; 64];
    // Warm-up: every table, queue and buffer reaches its working size.
    for _ in 0..2_000 {
        chain.call(&payload);
    }
    assert_eq!((chain.received_at_b, chain.received_at_a), (2_000, 2_000));

    let calls = 10_000;
    let allocations = counting::on_this_thread(|| {
        for _ in 0..calls {
            chain.call(&payload);
        }
    });
    assert_eq!((chain.received_at_b, chain.received_at_a), (12_000, 12_000), "every call answered");
    assert_eq!(chain.nodes[R].counters().relayed, 12_000);
    assert_eq!(allocations, 0, "{allocations} allocations for {calls} relayed calls");

    // A long-lived call: messages streamed A → B and B → A inside it, batches of 32 per turn.
    let call = chain.nodes[A].open(MOUNT, ECHO, b"open", Flags::NONE).unwrap();
    chain.pump();
    let at_b = chain.stream_at_b.expect("the call opened at B");
    let stream = |chain: &mut Chain, turns: u32| {
        for _ in 0..turns {
            for _ in 0..32 {
                let (none, error) = (Flags::NONE, ErrorCode::NONE);
                if mode == Mode::Queued {
                    chain.nodes[A].send(call, ECHO, &payload, none, error).unwrap();
                    chain.nodes[B].send(at_b, ECHO, &payload, none, error).unwrap();
                } else {
                    // The applications write straight to their links too.
                    for (node, call) in [(A, call), (B, at_b)] {
                        let mut links = Lent::all(&mut chain.wires, node);
                        chain.nodes[node]
                            .send_via(call, ECHO, &payload, none, error, &mut links)
                            .unwrap();
                    }
                }
            }
            chain.pump();
        }
    };
    stream(&mut chain, 200);
    let (b0, a0) = (chain.received_at_b, chain.received_at_a);
    let flushes = chain.relay_flushes;
    let end_flushes = chain.end_flushes;
    let whole = chain.nodes[R].counters().whole_records;
    let allocations = counting::on_this_thread(|| stream(&mut chain, 1_000));
    assert_eq!(chain.received_at_b - b0, 32_000, "every message reached B");
    assert_eq!(chain.received_at_a - a0, 32_000, "every message reached A");
    assert_eq!(allocations, 0, "{allocations} allocations for 64,000 streamed messages");
    let flushes = chain.relay_flushes - flushes;
    let end_flushes = chain.end_flushes - end_flushes;
    if mode != Mode::Queued {
        assert_eq!(end_flushes, 0, "A and B wrote their messages straight to their links");
    }
    let whole = chain.nodes[R].counters().whole_records - whole;
    match mode {
        Mode::Queued => assert!(flushes >= 2_000, "each turn queues both ways: {flushes}"),
        // Inside the call every message went straight to the next link: nothing queued.
        Mode::Direct => assert_eq!((flushes, whole), (0, 0), "queued, or whole batches"),
        // Each turn's batch of 32, each way, crossed the relay as one.
        Mode::Whole => assert_eq!((flushes, whole), (0, 2_000), "queued, or whole batches"),
    }
}

#[test]
fn the_harness_counts_a_relay_that_allocates() {
    // The first calls through a cold chain grow tables and queues: the counter sees it.
    let mut chain = Chain::new(Mode::Queued);
    let allocations = counting::on_this_thread(|| chain.call(&[0u8; 64]));
    assert!(allocations > 0);
}
