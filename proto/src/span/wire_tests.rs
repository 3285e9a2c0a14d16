//! The span protocol over real transaction links: tables joined by [`txn::Link`] pairs that
//! exchange encoded messages, checked against what the tables alone would decide.

use std::collections::BTreeMap;
use std::time::Instant;

use super::*;
use super::{ClientHolder, Hello};
use crate::error::{Malformed, Violation};
use crate::ids::{ClusterId, MountId, NeighbourId, NodeId, TxnId};
use crate::txn::{self, Event, Received};
use crate::wire::{ADVERT_LEN_MAX, HELLO_LEN_MAX};
use crate::wire::{Command, ErrorCode, Flags, Messages};

struct End {
    txn: txn::Link,
    span: SpanLink,
    out: Vec<u8>,
}

struct Node {
    table: Table,
    clients: Clients,
    /// By link index; the link's neighbour id is its index.
    ends: BTreeMap<usize, End>,
}

impl Node {
    fn new(i: usize) -> Node {
        Node {
            table: Table::new(NodeId(i as u128 + 1)),
            clients: Clients::new([ClusterId(1)]),
            ends: BTreeMap::new(),
        }
    }
}

struct Net {
    nodes: Vec<Node>,
    links: Vec<(usize, usize)>,
    /// Virtual time: it moves only to the tables' deadlines, when nothing else is left to do.
    now: Instant,
}

fn hello(role: Role) -> Hello {
    Hello::new(role, Wants::all())
}

/// Virtual time zero: the clock read once; only durations are added to it.
#[allow(clippy::disallowed_methods)]
fn t0() -> Instant {
    Instant::now()
}

fn key(n: u128) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(n) }
}

impl Net {
    fn new(nodes: usize) -> Net {
        Net { nodes: (0..nodes).map(Node::new).collect(), links: Vec::new(), now: t0() }
    }

    /// Joins `a` and `b` (with the roles each says it has) and starts both ends.
    fn link(&mut self, a: usize, b: usize, roles: (Role, Role)) -> usize {
        let l = self.links.len();
        self.links.push((a, b));
        for (node, role, other, granted) in [(a, roles.0, b, roles.1), (b, roles.1, a, roles.0)] {
            // Each end grants the other's key what the other says it is.
            let peer = NodeId(other as u128 + 1);
            let mut end = End {
                txn: txn::Link::new(),
                span: SpanLink::new(NeighbourId(l as u64), peer, granted),
                out: vec![],
            };
            end.span.start(&mut end.txn, &mut end.out, &hello(role)).unwrap();
            self.nodes[node].ends.insert(l, end);
        }
        l
    }

    fn cut(&mut self, l: usize) {
        let (a, b) = self.links[l];
        let now = self.now;
        for node in [a, b] {
            let Node { table, clients, ends } = &mut self.nodes[node];
            let mut end = ends.remove(&l).unwrap();
            let mut ctx = SpanCtx { table, clients, now, announced: None };
            // One end is told first; the other learns from the synthesized closes alone.
            if node == a {
                end.span.link_down(&mut ctx).unwrap();
            }
            end.txn.handle_link_down(ErrorCode::LOST_LINK);
            drain_events(&mut ctx, &mut end).unwrap();
            assert!(end.txn.is_empty());
        }
    }

    /// Moves everything until nothing is left to send, taking the tables' deadlines (waiting
    /// seqno requests, coalesced raises) as they fall due. Returns messages delivered.
    fn pump(&mut self) -> usize {
        let mut delivered = 0;
        loop {
            let now = self.now;
            for node in &mut self.nodes {
                while let Some((to, ob)) = node.table.poll_transmit() {
                    let end = node.ends.get_mut(&(to.0 as usize)).unwrap();
                    end.span.transmit(&mut end.txn, &mut end.out, &ob).unwrap();
                }
            }
            let mut moved = false;
            for l in 0..self.links.len() {
                let (a, b) = self.links[l];
                for (from, to) in [(a, b), (b, a)] {
                    let Some(end) = self.nodes[from].ends.get_mut(&l) else { continue };
                    let bytes = std::mem::take(&mut end.out);
                    if bytes.is_empty() {
                        continue;
                    }
                    moved = true;
                    delivered += deliver(&mut self.nodes[to], l, &bytes, now).unwrap();
                }
            }
            if moved {
                continue;
            }
            let Some(due) = self.nodes.iter().filter_map(|n| n.table.poll_timeout()).min() else {
                return delivered;
            };
            self.now = self.now.max(due);
            for node in &mut self.nodes {
                node.table.handle_timeout(self.now);
            }
        }
    }
}

fn drain_events(ctx: &mut SpanCtx<'_>, end: &mut End) -> Result<(), crate::Error> {
    while let Some(event) = end.txn.poll_event() {
        match event {
            Event::Delivery(d) => {
                assert!(end.span.handle(&mut end.txn, &mut end.out, ctx, &d)?);
            }
            Event::Ended { txn, .. } => end.span.ended(txn),
        }
    }
    Ok(())
}

fn deliver(node: &mut Node, l: usize, bytes: &[u8], now: Instant) -> Result<usize, crate::Error> {
    let Node { table, clients, ends } = node;
    let mut ctx = SpanCtx { table, clients, now, announced: None };
    let end = ends.get_mut(&l).unwrap();
    let mut n = 0;
    for message in Messages::new(bytes) {
        let message = message?;
        n += 1;
        match end.txn.handle_message(&mut end.out, &message)? {
            Some(Received::Txn(d)) => {
                assert!(end.span.handle(&mut end.txn, &mut end.out, &mut ctx, &d)?);
            }
            Some(Received::OneWay { .. }) => panic!("no one-way messages here"),
            None => {}
        }
        drain_events(&mut ctx, end)?;
    }
    Ok(n)
}

#[test]
fn hello_then_spans_then_retraction_over_transactions() {
    let mut net = Net::new(3);
    let ab = net.link(0, 1, (Role::Router, Role::Router));
    net.link(1, 2, (Role::Router, Role::Router));
    net.pump();
    assert_eq!(net.nodes[1].ends[&ab].span.peer_role(), Some(Role::Router));

    net.nodes[0].table.attach(key(7), MountKind::Master, Label::new(b"m").unwrap()).unwrap();
    net.pump();
    let route = net.nodes[2].table.route(key(7)).unwrap();
    assert_eq!(route.metric, Metric(2));
    assert_eq!(route.origin, NodeId(1));
    assert_eq!(route.label.as_bytes(), b"m");
    // One span each way along the line, each a transaction open at both ends (plus LINK_CONNs).
    assert_eq!(net.nodes[1].ends[&ab].span.spans_received(), 1);
    assert_eq!(net.nodes[1].ends[&ab].txn.len(), 3);
    let span = net.nodes[1].ends[&ab].span.their_span(key(7)).unwrap();
    assert_eq!(net.nodes[1].ends[&ab].span.their_span_mount(span), Some(key(7)));

    net.nodes[0].table.detach(key(7)).unwrap();
    net.pump();
    for node in &net.nodes {
        assert!(node.table.route(key(7)).is_none());
        for end in node.ends.values() {
            // Only the two LINK_CONNs are left on every link: each span ended at both ends.
            assert_eq!(end.txn.len(), 2);
            assert_eq!(end.span.spans_received() + end.span.spans_sent(), 0);
        }
    }
}

#[test]
fn updates_stream_inside_the_open_span() {
    // A line 0–1–2–3 with the mount at 0; then a shortcut 0–2. Node 2's metric drops from 2 to
    // 1, and node 3 hears it as an update inside the span it already has, not a new span.
    let mut net = Net::new(4);
    net.link(0, 1, (Role::Router, Role::Router));
    net.link(1, 2, (Role::Router, Role::Router));
    let l23 = net.link(2, 3, (Role::Router, Role::Router));
    net.pump();
    net.nodes[0].table.attach(key(1), MountKind::Slave, Label::EMPTY).unwrap();
    net.pump();
    assert_eq!(net.nodes[3].table.route(key(1)).unwrap().metric, Metric(3));
    let before = net.nodes[3].ends[&l23].span.their_span(key(1)).unwrap();
    let txns = net.nodes[3].ends[&l23].txn.len();
    net.link(0, 2, (Role::Router, Role::Router));
    net.pump();
    assert_eq!(net.nodes[3].table.route(key(1)).unwrap().metric, Metric(2));
    assert_eq!(net.nodes[3].ends[&l23].span.their_span(key(1)), Some(before));
    assert_eq!(net.nodes[3].ends[&l23].txn.len(), txns);
}

#[test]
fn a_client_link_hears_no_other_clients_and_its_spans_stop_at_its_node() {
    // 0 (router) — 1 (satellite) — 2 and 3 (clients of 1).
    let mut net = Net::new(4);
    net.link(0, 1, (Role::Router, Role::Satellite));
    net.link(1, 2, (Role::Satellite, Role::Client));
    net.link(1, 3, (Role::Satellite, Role::Client));
    net.pump();
    net.nodes[2].table.attach(key(20), MountKind::Client, Label::EMPTY).unwrap();
    net.nodes[0].table.attach(key(1), MountKind::Master, Label::EMPTY).unwrap();
    net.pump();
    // The satellite holds the client's mount in its client directory (never as a route); the
    // core and the other client never hear of it, the core hears of one aggregate at most.
    assert_eq!(net.nodes[1].clients.holder(key(20)), Some(ClientHolder::Here(NeighbourId(1))));
    assert!(net.nodes[1].table.route(key(20)).is_none());
    assert!(net.nodes[0].table.route(key(20)).is_none());
    assert!(net.nodes[3].table.route(key(20)).is_none());
    // Both clients reach the master through the satellite.
    assert_eq!(net.nodes[2].table.route(key(1)).unwrap().metric, Metric(2));
    assert_eq!(net.nodes[3].table.route(key(1)).unwrap().metric, Metric(2));
}

#[test]
fn a_cut_link_fails_over_and_everything_on_it_ends() {
    let mut net = Net::new(3);
    let l01 = net.link(0, 1, (Role::Router, Role::Router));
    net.link(0, 2, (Role::Router, Role::Router));
    net.link(1, 2, (Role::Router, Role::Router));
    net.pump();
    net.nodes[0].table.attach(key(3), MountKind::Master, Label::EMPTY).unwrap();
    net.pump();
    assert_eq!(net.nodes[1].table.route(key(3)).unwrap().metric, Metric(1));
    net.cut(l01);
    net.pump();
    assert_eq!(net.nodes[1].table.route(key(3)).unwrap().metric, Metric(2));
}

#[test]
fn a_starved_node_asks_inside_the_span_and_the_originator_bumps() {
    // A ring of 4 with the mount at 0. Cut 0–1: node 1's only other route (through 2, 3) is
    // not feasible against its distance 1 until the originator bumps its seqno, which the
    // request carried inside the spans brings about.
    let mut net = Net::new(4);
    let l01 = net.link(0, 1, (Role::Router, Role::Router));
    net.link(1, 2, (Role::Router, Role::Router));
    net.link(2, 3, (Role::Router, Role::Router));
    net.link(3, 0, (Role::Router, Role::Router));
    net.pump();
    net.nodes[0].table.attach(key(9), MountKind::Master, Label::EMPTY).unwrap();
    net.pump();
    let seqno = net.nodes[1].table.route(key(9)).unwrap().seqno;
    net.cut(l01);
    net.pump();
    let route = net.nodes[1].table.route(key(9)).expect("node 1 recovers a route");
    assert_eq!(route.metric, Metric(3));
    assert!(route.seqno.is_newer_than(seqno));
}

/// One link end (to a peer granted `granted`) with the peer's side scripted by hand, to feed it
/// bad input.
fn scripted_as(granted: Role) -> (Node, txn::Link, Vec<u8>) {
    let mut node = Node::new(0);
    let span = SpanLink::new(NeighbourId(0), NodeId(99), granted);
    let mut end = End { txn: txn::Link::new(), span, out: vec![] };
    end.span.start(&mut end.txn, &mut end.out, &hello(Role::Router)).unwrap();
    node.ends.insert(0, end);
    (node, txn::Link::new(), Vec::new())
}

fn scripted() -> (Node, txn::Link, Vec<u8>) {
    scripted_as(Role::Router)
}

fn feed(node: &mut Node, bytes: &mut Vec<u8>) -> Result<usize, crate::Error> {
    let result = deliver(node, 0, bytes, t0());
    bytes.clear();
    result
}

fn advert_bytes(mount: MountKey) -> Vec<u8> {
    let advert = Advert {
        mount,
        kind: MountKind::Master,
        label: Label::EMPTY,
        origin: NodeId(5),
        seqno: Seqno(1),
        metric: Metric(0),
    };
    let mut buf = [0u8; ADVERT_LEN_MAX];
    let n = advert.encode(&mut buf);
    buf[..n].to_vec()
}

fn hello_bytes() -> Vec<u8> {
    let mut buf = [0u8; HELLO_LEN_MAX];
    let n = hello(Role::Router).encode(&mut buf);
    buf[..n].to_vec()
}

#[test]
fn a_span_before_the_hello_is_refused() {
    let (mut node, mut peer, mut wire) = scripted();
    peer.open(&mut wire, None, Command::LINK_SPAN, &advert_bytes(key(1)), Flags::NONE).unwrap();
    let err = feed(&mut node, &mut wire).unwrap_err();
    assert_eq!(err, Violation::LinkProtocol("a LINK_SPAN before the LINK_CONN").into());
    assert!(err.closes_link());
}

/// What a scripted peer does after a well-behaved start.
type Script = fn(&mut txn::Link, &mut Vec<u8>);

#[test]
fn protocol_breaks_are_refused_with_their_reason() {
    let cases: [(&str, Script, crate::Error); 6] = [
        (
            "second hello",
            |p, w| {
                p.open(w, None, Command::LINK_CONN, &hello_bytes(), Flags::NONE).unwrap();
            },
            Violation::LinkProtocol("a second LINK_CONN").into(),
        ),
        (
            "second span for one mount",
            |p, w| {
                p.open(w, None, Command::LINK_SPAN, &advert_bytes(key(1)), Flags::NONE).unwrap();
            },
            Violation::LinkProtocol("a second open LINK_SPAN for one mount").into(),
        ),
        (
            "update naming another mount",
            |p, w| {
                let span = first_span(p);
                p.send(
                    w,
                    span,
                    Command::LINK_SPAN,
                    &advert_bytes(key(2)),
                    Flags::NONE,
                    ErrorCode::NONE,
                )
                .unwrap();
            },
            Violation::LinkProtocol("a span update naming another mount").into(),
        ),
        (
            "garbage advertisement",
            |p, w| {
                p.open(w, None, Command::LINK_SPAN, &[0; 10], Flags::NONE).unwrap();
            },
            Malformed::LinkPayload {
                what: "LINK_SPAN advertisement",
                reason: "shorter than its 56-byte header",
            }
            .into(),
        ),
        (
            "span opened and closed at once",
            |p, w| {
                p.open(w, None, Command::LINK_SPAN, &advert_bytes(key(3)), Flags::DELETE).unwrap();
            },
            Violation::LinkProtocol("a LINK_CONN or LINK_SPAN opened and closed at once").into(),
        ),
        (
            "LINK_CONN closed while the link is up",
            |p, w| {
                let conn = first_conn(p);
                p.close(w, conn, ErrorCode::NONE).unwrap();
            },
            Violation::LinkProtocol("LINK_CONN is not closed or updated while the link is up")
                .into(),
        ),
    ];
    for (name, script, want) in cases {
        let (mut node, mut peer, mut wire) = scripted();
        // A well-behaved start: the peer's hello and one span.
        peer.open(&mut wire, None, Command::LINK_CONN, &hello_bytes(), Flags::NONE).unwrap();
        peer.open(&mut wire, None, Command::LINK_SPAN, &advert_bytes(key(1)), Flags::NONE).unwrap();
        feed(&mut node, &mut wire).unwrap();
        assert!(node.table.route(key(1)).is_some(), "{name}");
        script(&mut peer, &mut wire);
        assert_eq!(feed(&mut node, &mut wire), Err(want), "{name}");
    }
}

/// The transactions a scripted peer opened, in order: its LINK_CONN is msgid 1, its first span 2.
fn first_conn(peer: &txn::Link) -> TxnId {
    nth_open(peer, 1)
}

fn first_span(peer: &txn::Link) -> TxnId {
    nth_open(peer, 2)
}

fn nth_open(peer: &txn::Link, msgid: u64) -> TxnId {
    (0..8u32)
        .flat_map(|slot| (0..4u32).map(move |generation| TxnId { slot, generation }))
        .find(|&t| peer.msgid(t).map(|m| m.0) == Some(msgid))
        .expect("the scripted peer opened it")
}

/// Hands what the table sends the scripted link's neighbour to its end (and drops what it sends
/// others); how many things it handed.
fn transmit(node: &mut Node) -> usize {
    let Node { table, ends, .. } = node;
    let end = ends.get_mut(&0).unwrap();
    let mut sent = 0;
    while let Some((to, ob)) = table.poll_transmit() {
        if to == NeighbourId(0) {
            end.span.transmit(&mut end.txn, &mut end.out, &ob).unwrap();
            sent += 1;
        }
    }
    sent
}

/// What the node wrote to the scripted peer, handled by it: each message's transaction and flags.
fn to_peer(node: &mut Node, peer: &mut txn::Link, wire: &mut Vec<u8>) -> Vec<(TxnId, Flags)> {
    let bytes = std::mem::take(&mut node.ends.get_mut(&0).unwrap().out);
    let mut got = Vec::new();
    for m in Messages::new(&bytes) {
        if let Some(Received::Txn(d)) = peer.handle_message(wire, &m.unwrap()).unwrap() {
            got.push((d.txn, d.flags));
        }
        while peer.poll_event().is_some() {}
    }
    got
}

#[test]
fn a_seqno_request_on_our_span_reaches_the_table() {
    let (mut node, mut peer, mut wire) = scripted();
    peer.open(&mut wire, None, Command::LINK_CONN, &hello_bytes(), Flags::NONE).unwrap();
    feed(&mut node, &mut wire).unwrap();
    node.table.attach(key(4), MountKind::Master, Label::EMPTY).unwrap();
    transmit(&mut node);
    // The peer receives our hello and span, then asks for a newer seqno inside the span.
    let bytes = std::mem::take(&mut node.ends.get_mut(&0).unwrap().out);
    let mut span = None;
    for m in Messages::new(&bytes) {
        if let Some(Received::Txn(d)) = peer.handle_message(&mut wire, &m.unwrap()).unwrap()
            && d.command == Command::LINK_SPAN
        {
            span = Some(d.txn);
        }
    }
    let before = node.table.route(key(4)).unwrap().seqno;
    let want = before.next();
    peer.send(
        &mut wire,
        span.unwrap(),
        Command::LINK_SPAN_REQUEST,
        &want.encode_request(),
        Flags::NONE,
        ErrorCode::NONE,
    )
    .unwrap();
    feed(&mut node, &mut wire).unwrap();
    assert_eq!(node.table.route(key(4)).unwrap().seqno, want);
    // And the bump goes out as an update inside the same span, not a new one.
    assert_eq!(transmit(&mut node), 1);
    let end = &node.ends[&0];
    assert_eq!(end.span.spans_sent(), 1);
    for m in Messages::new(&end.out) {
        let m = m.unwrap();
        assert!(!m.flags().contains(Flags::CREATE));
        assert_eq!(m.command(), Command::LINK_SPAN);
    }
}

/// Hop distances from `from` over the links still up.
fn bfs(net: &Net, from: usize) -> Vec<Option<u16>> {
    let mut dist = vec![None; net.nodes.len()];
    dist[from] = Some(0);
    let mut queue = std::collections::VecDeque::from([from]);
    while let Some(n) = queue.pop_front() {
        for (l, &(a, b)) in net.links.iter().enumerate() {
            if !net.nodes[a].ends.contains_key(&l) {
                continue;
            }
            let other = if a == n {
                b
            } else if b == n {
                a
            } else {
                continue;
            };
            if dist[other].is_none() {
                dist[other] = dist[n].map(|d| d + 1);
                queue.push_back(other);
            }
        }
    }
    dist
}

#[test]
fn random_graphs_converge_to_shortest_paths_over_the_wire() {
    for seed in 0..40 {
        let mut rng = crate::sim::rng::Rng::new(seed);
        let n = 8;
        let mut net = Net::new(n);
        for a in 0..n {
            for b in a + 1..n {
                if rng.below(10) < 4 {
                    net.link(a, b, (Role::Router, Role::Router));
                }
            }
        }
        let homes = [0usize, 3, 5];
        for (i, &home) in homes.iter().enumerate() {
            net.nodes[home].table.attach(key(i as u128), MountKind::Master, Label::EMPTY).unwrap();
        }
        for step in 0..12 {
            match rng.below(3) {
                0 => {
                    let up: Vec<usize> = (0..net.links.len())
                        .filter(|&l| net.nodes[net.links[l].0].ends.contains_key(&l))
                        .collect();
                    if !up.is_empty() {
                        net.cut(up[rng.below(up.len() as u64) as usize]);
                    }
                }
                _ => {
                    let a = rng.below(n as u64) as usize;
                    let b = rng.below(n as u64) as usize;
                    if a != b {
                        net.link(a, b, (Role::Router, Role::Router));
                    }
                }
            }
            net.pump();
            for (i, &home) in homes.iter().enumerate() {
                let dist = bfs(&net, home);
                for (node, d) in dist.iter().enumerate() {
                    let route = net.nodes[node].table.route(key(i as u128));
                    assert_eq!(
                        route.map(|r| r.metric.0),
                        *d,
                        "seed {seed} step {step}: node {node}, mount at {home}"
                    );
                }
            }
            // Nothing leaks: every transaction left on a link is a LINK_CONN or an open span.
            for node in &net.nodes {
                for end in node.ends.values() {
                    assert_eq!(
                        end.txn.len(),
                        2 + end.span.spans_sent() + end.span.spans_received(),
                        "seed {seed} step {step}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_peer_forcing_its_own_hello_closed_leaves_nothing_in_the_table() {
    // Found by the span-link fuzz driver: the peer says hello, advertises a span, then forces
    // its LINK_CONN closed. The node refuses that, and the link goes down as the engine takes
    // it down (the LINK_CONN's end first, then the synthesized closes, then `link_down`). The
    // table must forget the neighbour and its route, not keep a dead neighbour advertising on.
    let (mut node, mut peer, mut wire) = scripted();
    let conn = peer.open(&mut wire, None, Command::LINK_CONN, &hello_bytes(), Flags::NONE).unwrap();
    peer.open(&mut wire, None, Command::LINK_SPAN, &advert_bytes(key(1)), Flags::NONE).unwrap();
    peer.abort(&mut wire, conn, ErrorCode::NONE).unwrap();
    let refused = feed(&mut node, &mut wire).unwrap_err();
    assert!(refused.closes_link(), "{refused}");
    assert!(node.table.route(key(1)).is_some());
    let Node { table, clients, ends } = &mut node;
    let end = ends.get_mut(&0).unwrap();
    let mut ctx = SpanCtx { table, clients, now: t0(), announced: None };
    end.txn.handle_link_down(ErrorCode::LOST_LINK);
    drain_events(&mut ctx, end).unwrap();
    end.span.link_down(&mut ctx).unwrap();
    assert!(!node.table.has_neighbour(NeighbourId(0)), "the neighbour is gone");
    assert_eq!(node.table.route(key(1)), None, "no route through a link that is down");
}

#[test]
fn a_span_the_peer_refused_is_as_if_it_never_heard_it() {
    // PROTOCOL.md 8.5 and 9.8: a neighbour that refused a span holds nothing of the mount. It
    // is offered nothing at once, the mount's next change afresh in a new span, and nothing on
    // the wire when the mount goes.
    let (mut node, mut peer, mut wire) = scripted();
    peer.open(&mut wire, None, Command::LINK_CONN, &hello_bytes(), Flags::NONE).unwrap();
    feed(&mut node, &mut wire).unwrap();
    // The peer refuses the span it is offered next (a new span's transaction).
    let refuse = |node: &mut Node, peer: &mut txn::Link, wire: &mut Vec<u8>| {
        let got = to_peer(node, peer, wire);
        let &(span, flags) = got.last().expect("a span offered");
        assert!(flags.contains(Flags::CREATE), "a new span: {got:?}");
        let refusal = Flags::ABORT | Flags::DELETE;
        peer.send(wire, span, Command::LINK_SPAN, &[], refusal, ErrorCode::LIMIT_REACHED).unwrap();
        feed(node, wire).unwrap();
        assert_eq!(node.ends[&0].span.spans_sent(), 0);
        // Nothing is offered again at once: it would only be refused again. The node's
        // transaction layer answers the forced close.
        assert_eq!(transmit(node), 0);
        assert_eq!(to_peer(node, peer, wire), [(span, Flags::DELETE)]);
        span
    };
    // A route learned from another neighbour, offered to the peer and refused.
    let (other, third) = (NeighbourId(1), NeighbourId(2));
    for id in [other, third] {
        node.table
            .handle_neighbour_up(id, NodeId(50 + u128::from(id.0)), Role::Router, Wants::all())
            .unwrap();
    }
    let route = Advert {
        mount: key(4),
        kind: MountKind::Master,
        label: Label::EMPTY,
        origin: NodeId(7),
        seqno: Seqno(1),
        metric: Metric(0),
    };
    node.table.handle_advert(other, &route).unwrap();
    assert_eq!(transmit(&mut node), 1);
    let first = refuse(&mut node, &mut peer, &mut wire);
    // The mount changes (an equal route through a third neighbour, only a standby), though what
    // the peer should hear does not: it is offered afresh, in a new span.
    node.table.handle_advert(third, &route).unwrap();
    assert_eq!(transmit(&mut node), 1);
    let second = refuse(&mut node, &mut peer, &mut wire);
    assert_ne!(first, second);
    // A local mount refused, then detached: nothing goes on the wire.
    node.table.attach(key(5), MountKind::Master, Label::EMPTY).unwrap();
    transmit(&mut node);
    refuse(&mut node, &mut peer, &mut wire);
    node.table.detach(key(5)).unwrap();
    transmit(&mut node);
    assert_eq!(to_peer(&mut node, &mut peer, &mut wire), []);
    // Attached again: a new span, which the peer keeps, and which a retraction then closes.
    node.table.attach(key(5), MountKind::Master, Label::new(b"x").unwrap()).unwrap();
    assert_eq!(transmit(&mut node), 1);
    let got = to_peer(&mut node, &mut peer, &mut wire);
    let [(kept, flags)] = got[..] else { panic!("{got:?}") };
    assert!(flags.contains(Flags::CREATE));
    node.table.detach(key(5)).unwrap();
    assert_eq!(transmit(&mut node), 1);
    assert_eq!(to_peer(&mut node, &mut peer, &mut wire), [(kept, Flags::DELETE)]);
}

#[test]
fn a_plain_delete_on_our_span_before_its_retraction_closes_the_link() {
    // PROTOCOL.md 8.1: the receiver's DELETE answers a retraction. Before one it is a protocol
    // break, refused like the others; after one it is the answer, and the span ends.
    let (mut node, mut peer, mut wire) = scripted();
    peer.open(&mut wire, None, Command::LINK_CONN, &hello_bytes(), Flags::NONE).unwrap();
    feed(&mut node, &mut wire).unwrap();
    node.table.attach(key(4), MountKind::Master, Label::EMPTY).unwrap();
    node.table.attach(key(5), MountKind::Master, Label::EMPTY).unwrap();
    assert_eq!(transmit(&mut node), 2);
    let spans: Vec<TxnId> = to_peer(&mut node, &mut peer, &mut wire)
        .into_iter()
        .filter(|&(_, flags)| flags.contains(Flags::CREATE))
        .map(|(txn, _)| txn)
        .collect();
    let [_, early, answered] = spans[..] else { panic!("{spans:?}") };
    node.table.detach(key(5)).unwrap();
    assert_eq!(transmit(&mut node), 1);
    assert_eq!(to_peer(&mut node, &mut peer, &mut wire), [(answered, Flags::DELETE)]);
    peer.close(&mut wire, answered, ErrorCode::NONE).unwrap();
    feed(&mut node, &mut wire).unwrap();
    assert_eq!(node.ends[&0].span.our_span_mount(answered), None, "the retracted span ended");
    peer.close(&mut wire, early, ErrorCode::NONE).unwrap();
    let err = feed(&mut node, &mut wire).unwrap_err();
    assert_eq!(err, Violation::LinkProtocol("a DELETE on a span before its retraction").into());
    assert!(err.closes_link());
}
