//! Traces (`LINK_TRACE`, PROTOCOL.md 8.10) on the simulator's full nodes: along a line, every
//! node on the path reports once, in hop order, the holder last; the hop limit and a target
//! end it early; a node of two planes reports once; and on random graphs every trace from every
//! node reaches the mount's holder in as many hops as its route says, through distinct nodes,
//! each report naming the node the hop before it routes to.
//!
//! A failure names its seed; `RINGSPAN_SEED=<seed> cargo test --test sim trace_sim::<name>`
//! replays it.

use ringspan::ids::NodeId;
use ringspan::relay::Node;
use ringspan::sim::net::{Net, Traced, mount};
use ringspan::sim::rng::Rng;
use ringspan::sim::topology::Topology;
use ringspan::span::NextHop;
use ringspan::wire::{ErrorCode, TraceReport, TraceStatus};

use crate::support::seeds::seeds;

/// The simulator's node `i`'s id (`Net::new` numbers them from 1).
fn id(i: usize) -> NodeId {
    NodeId(i as u128 + 1)
}

/// `n` nodes in a line, mount 7 at the far end, routes settled.
fn line(n: usize) -> Net {
    let mut net = Net::new(n, 1);
    for i in 0..n - 1 {
        net.connect(i, i + 1).unwrap();
    }
    net.attach(n - 1, 7).unwrap();
    net.run(100_000).unwrap();
    net
}

/// Traces mount 7 from node 0 and runs the network until it ended.
fn trace(net: &mut Net, target: Option<NodeId>, limit: u8) -> Traced {
    let before = net.traced.len();
    assert!(net.trace(0, 7, target, limit).unwrap(), "a route to trace");
    net.run(100_000).unwrap();
    net.check_quiet().unwrap();
    assert_eq!(net.traced.len(), before + 1, "the trace ended");
    net.traced.last().unwrap().clone()
}

/// The node at the other end of link `l` from node `at`.
fn across(net: &Net, at: usize, l: usize) -> usize {
    let [a, b] = net.ends(l);
    if a == at { b } else { a }
}

fn reports(of: &[(usize, TraceStatus)]) -> Vec<TraceReport> {
    of.iter()
        .enumerate()
        .map(|(at, &(node, status))| TraceReport { hop: at as u8 + 1, status, node: id(node) })
        .collect()
}

#[test]
fn every_node_on_a_line_reports_once_in_hop_order_the_holder_last() {
    use TraceStatus::{Holder, Limit, Relayed, Target};
    let mut net = line(5);
    let whole = trace(&mut net, None, 64);
    assert_eq!(whole.error, ErrorCode::NONE);
    let path = [(1, Relayed), (2, Relayed), (3, Relayed), (4, Holder)];
    assert_eq!(whole.reports, reports(&path));
    // A hop limit of 2: the second node ends it, and nothing goes further.
    let served = net.node(4).counters().traced;
    let short = trace(&mut net, None, 2);
    assert_eq!(
        (short.error, short.reports),
        (ErrorCode::NONE, reports(&[(1, Relayed), (2, Limit)]))
    );
    // The third node as target: it ends there.
    let to_3 = trace(&mut net, Some(id(3)), 64);
    assert_eq!(to_3.reports, reports(&[(1, Relayed), (2, Relayed), (3, Target)]));
    assert_eq!(net.node(4).counters().traced, served, "neither reached the holder");
    // A node not on the path as target: the trace goes to the holder.
    let elsewhere = trace(&mut net, Some(NodeId(0xdead)), 64);
    assert_eq!(elsewhere.reports, reports(&path));
    // The relays carried them as circuits; the holder answered without one.
    assert_eq!(net.node(4).counters().served, 0);
    assert_eq!(net.node(2).counters().relayed, 3);
}

#[test]
fn a_node_of_two_planes_reports_once() {
    // 0 — 1 ═ 1′ — 2: node 1 runs two planes; the trace enters it on one and leaves it on the
    // other.
    let mut net = Net::new(3, 2);
    let second = net.add_plane(1);
    net.connect(1, second).unwrap();
    net.connect(0, 1).unwrap();
    net.connect(second, 2).unwrap();
    net.attach(2, 7).unwrap();
    net.run(100_000).unwrap();
    let traced = trace(&mut net, None, 64);
    use TraceStatus::{Holder, Relayed};
    assert_eq!(traced.reports, reports(&[(1, Relayed), (2, Holder)]));
    // The holder on a plane the trace reaches through another: one report, from the node.
    let mut net = Net::new(2, 3);
    let second = net.add_plane(1);
    net.connect(1, second).unwrap();
    net.connect(0, 1).unwrap();
    net.attach(second, 7).unwrap();
    net.run(100_000).unwrap();
    let traced = trace(&mut net, None, 64);
    assert_eq!(traced.reports, reports(&[(1, Holder)]));
}

#[test]
fn on_random_graphs_every_trace_follows_the_routes_to_the_holder() {
    for seed in seeds(0, 40) {
        let mut rng = Rng::new(seed);
        let topology = match seed % 3 {
            0 => Topology::ErdosRenyi(6 + (seed % 10) as usize, 300),
            1 => Topology::BarabasiAlbert(6 + (seed % 12) as usize, 2),
            _ => Topology::Grid(2 + (seed % 3) as usize, 3),
        };
        let n = topology.nodes();
        let mut net = Net::new(n, seed);
        for (a, b) in topology.edges(&mut rng) {
            net.connect(a as usize, b as usize).unwrap();
        }
        let home = rng.index(n);
        net.attach(home, 7).unwrap();
        net.run(1_000_000).unwrap();
        let mut traced = 0;
        for from in (0..n).filter(|&i| i != home) {
            let route = net.node(from).route(mount(7)).unwrap_or_else(|| {
                panic!("seed {seed}: node {from} has no route on a connected graph")
            });
            assert!(net.trace(from, 7, None, 64).unwrap(), "seed {seed}");
            net.run(1_000_000).unwrap();
            let done = net.traced.last().unwrap().clone();
            assert_eq!(done.node, from, "seed {seed}");
            traced += 1;
            let fail = |what: &str| panic!("seed {seed}, from {from}: {what}: {done:?}");
            if done.error != ErrorCode::NONE {
                fail("ended with an error");
            }
            if done.reports.len() != usize::from(route.metric.0) {
                fail("as many reports as the route's hops");
            }
            // Each report names the node the one before routes to, hop numbers in order, the
            // holder last and only last, and no node twice.
            let mut at = from;
            for (k, report) in done.reports.iter().enumerate() {
                let next = match net.node(at).route(mount(7)).map(|r| r.next_hop) {
                    Some(NextHop::Neighbour(n)) => across(&net, at, Node::link_of(n).0 as usize),
                    _ => fail("a node on the path without a route onward"),
                };
                if report.hop as usize != k + 1 || report.node != id(next) {
                    fail("reports in hop order, each the next node's");
                }
                let last = k + 1 == done.reports.len();
                let status = if last { TraceStatus::Holder } else { TraceStatus::Relayed };
                if report.status != status || (last && next != home) {
                    fail("the holder last, and only last");
                }
                at = next;
            }
        }
        assert_eq!(net.traced.len(), traced);
        net.check_quiet().unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
    }
}
