//! A relay in steady state allocates nothing per relayed message: three `relay::Node`s in a
//! chain, a caller A, a relay R and a node B with a mount, joined by real transaction state
//! (`txn::Link` pairs carrying encoded messages). Once warm, one-shot calls A → R → B and their
//! replies, and messages streamed both ways inside a long-lived call, cost zero heap allocations
//! on every node, the relay's circuits, queues and transaction tables included.
//!
//! The harness moves bytes between preallocated buffers, so what the counting allocator sees is
//! the nodes' and links' own work. Each node is handed its links with every input
//! (`relay::LinkSet`, as the engine does: whatever it sends goes straight into the link). It runs
//! two ways: message by message, and each batch of bytes first offered whole
//! (`Node::forward_record`, as the engine offers each record).

use ringspan::ids::{ClusterId, LinkId, MountId, NodeId};
use ringspan::link::RecordIn;
use ringspan::relay::{AppEvent, BareLink, CallId, Node};
use ringspan::sim::lend::{self, Lent};
use ringspan::span::{Hello, Label, MountKey, MountKind, Role, Wants};
use ringspan::txn::Received;
use ringspan::wire::{Command, ErrorCode, Flags, Messages};

use crate::support::counting;

const ECHO: Command = Command::new(1, 1);
const MOUNT: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x42) };
const A: usize = 0;
const R: usize = 1;
const B: usize = 2;

/// One link: each end's transaction and span state and the bytes it wrote, not yet delivered.
struct Wire {
    ends: [usize; 2],
    link: [BareLink; 2],
    out: [Vec<u8>; 2],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Every message handed to its node one by one.
    PerMessage,
    /// Each batch first offered whole.
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
}

impl lend::Wire for Wire {
    fn held_by(&self, node: usize) -> Option<usize> {
        Some(Chain::side(self, node))
    }

    fn is_up(&self) -> bool {
        true
    }

    fn end_mut(&mut self, end: usize) -> (&mut BareLink, &mut Vec<u8>) {
        (&mut self.link[end], &mut self.out[end])
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
            link: [BareLink::default(), BareLink::default()],
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
        };
        for l in 0..chain.wires.len() {
            for side in 0..2 {
                let node = chain.wires[l].ends[side];
                let peer = NodeId(chain.wires[l].ends[1 - side] as u128 + 1);
                let links = &mut Lent::all(&mut chain.wires, node);
                chain.nodes[node]
                    .link_up(LinkId(l as u64), peer, Role::Router, side == 0, links)
                    .unwrap();
            }
        }
        chain.pump();
        let links = &mut Lent::all(&mut chain.wires, B);
        chain.nodes[B].attach(MOUNT, MountKind::Master, Label::EMPTY, links).unwrap();
        chain.pump();
        assert!(chain.nodes[A].route(MOUNT).is_some(), "A hears of B's mount through R");
        chain
    }

    /// The end of `wire` at `node`.
    fn side(wire: &Wire, node: usize) -> usize {
        usize::from(wire.ends[1] == node)
    }

    /// Delivers everything written and plays both applications, until nothing moves.
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
                    let link = LinkId(l as u64);
                    if self.mode == Mode::Whole {
                        let (wire, mut others) = Lent::split(&mut self.wires, l, n).unwrap();
                        let batch = &mut RecordIn::plaintext_only(&mut self.scratch);
                        if node
                            .forward_record(link, &wire.link[to].txn, &mut others, batch)
                            .is_some()
                        {
                            self.scratch.clear();
                            continue;
                        }
                    }
                    for message in Messages::new(&self.scratch) {
                        let message = message.unwrap();
                        let wire = &mut self.wires[l];
                        let (txn, out) = (&mut wire.link[to].txn, &mut wire.out[to]);
                        if let Some(received @ Received::Txn(_)) =
                            txn.handle_message(out, &message).unwrap()
                        {
                            let links = &mut Lent::all(&mut self.wires, n);
                            node.received(link, links, received).unwrap();
                        }
                        while let Some(event) = self.wires[l].link[to].txn.poll_event() {
                            node.event(link, &mut Lent::all(&mut self.wires, n), event).unwrap();
                        }
                    }
                    self.scratch.clear();
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
                let links = &mut Lent::all(&mut self.wires, B);
                self.nodes[B]
                    .send(call, ECHO, &payload[..len], Flags::DELETE, ErrorCode::NONE, links)
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
        let links = &mut Lent::all(&mut self.wires, A);
        self.nodes[A].open(MOUNT, ECHO, payload, Flags::DELETE, links).unwrap();
        self.pump();
    }
}

#[test]
fn relaying_allocates_nothing_once_warm() {
    relays_without_allocating(Mode::PerMessage);
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
    let links = &mut Lent::all(&mut chain.wires, A);
    let call = chain.nodes[A].open(MOUNT, ECHO, b"open", Flags::NONE, links).unwrap();
    chain.pump();
    let at_b = chain.stream_at_b.expect("the call opened at B");
    let stream = |chain: &mut Chain, turns: u32| {
        for _ in 0..turns {
            for _ in 0..32 {
                let (none, error) = (Flags::NONE, ErrorCode::NONE);
                for (node, call) in [(A, call), (B, at_b)] {
                    let links = &mut Lent::all(&mut chain.wires, node);
                    chain.nodes[node].send(call, ECHO, &payload, none, error, links).unwrap();
                }
            }
            chain.pump();
        }
    };
    stream(&mut chain, 200);
    let (b0, a0) = (chain.received_at_b, chain.received_at_a);
    let whole = chain.nodes[R].counters().whole_records;
    let allocations = counting::on_this_thread(|| stream(&mut chain, 1_000));
    assert_eq!(chain.received_at_b - b0, 32_000, "every message reached B");
    assert_eq!(chain.received_at_a - a0, 32_000, "every message reached A");
    assert_eq!(allocations, 0, "{allocations} allocations for 64,000 streamed messages");
    let whole = chain.nodes[R].counters().whole_records - whole;
    match mode {
        Mode::PerMessage => assert_eq!(whole, 0, "whole batches"),
        // Each turn's batch of 32, each way, crossed the relay as one.
        Mode::Whole => assert_eq!(whole, 2_000, "whole batches"),
    }
}

#[test]
fn the_harness_counts_a_relay_that_allocates() {
    // The first calls through a cold chain grow tables and queues: the counter sees it.
    let mut chain = Chain::new(Mode::PerMessage);
    let allocations = counting::on_this_thread(|| chain.call(&[0u8; 64]));
    assert!(allocations > 0);
}
