//! Traces through one node and scripted peers (PROTOCOL.md 8.10): what the node reports, what
//! it passes on, where a trace ends, what it refuses, and that a trace holds no more than a call.

use super::{Bench, key};
use crate::ids::{NodeId, TxnId};
use crate::limits::RELAY_CIRCUITS_PER_LINK_MAX;
use crate::span::{Label, MountKey, MountKind, Role};
use crate::wire::{Command, ErrorCode, Flags, TraceReport, TraceRequest, TraceStatus};

const TRACE: Command = Command::LINK_TRACE;

/// A trace request to the holder, with hop limit `limit`.
fn request(limit: u8, target: Option<u128>) -> [u8; 24] {
    TraceRequest { hops: 0, limit, target: target.map(NodeId) }.emit()
}

impl Bench {
    /// Peer `p` opens a trace (or anything with the trace command) in the node's span for
    /// `mount`, with `flags`.
    fn open_trace(&mut self, p: usize, mount: MountKey, payload: &[u8], flags: Flags) -> TxnId {
        let span = self.peers[p].spans[&mount];
        self.send(p, |txn, out| txn.open(out, Some(span), TRACE, payload, flags).unwrap())
    }

    /// The reports peer `p` received on `txn`, in order, each with whether it closed it.
    fn reports(&self, p: usize, txn: TxnId) -> Vec<(TraceReport, bool)> {
        self.peers[p]
            .got
            .iter()
            .filter(|g| g.txn == txn && !g.payload.is_empty())
            .map(|g| (TraceReport::parse(&g.payload).unwrap(), g.flags.contains(Flags::DELETE)))
            .collect()
    }

    /// The circuits peer `p` was asked to open (CREATEs inside its spans), with their payloads.
    fn opened_at(&self, p: usize) -> Vec<(TxnId, Vec<u8>)> {
        let peer = &self.peers[p];
        peer.got
            .iter()
            .filter(|g| g.parent.is_some() && g.flags.contains(Flags::CREATE))
            .map(|g| (g.txn, g.payload.clone()))
            .collect()
    }
}

/// A router peer (id 2) advertising `mount` as a master, heard by the node: its index, and its
/// span.
fn server_of(b: &mut Bench, mount: MountKey) -> (usize, TxnId) {
    let server = b.connect(2, Role::Router, Role::Router);
    let advert = super::advert(mount, MountKind::Master);
    let span = b.send(server, |txn, out| {
        txn.open(out, None, Command::LINK_SPAN, &advert, Flags::NONE).unwrap()
    });
    b.pump();
    (server, span)
}

fn report(hop: u8, status: TraceStatus, node: u128) -> TraceReport {
    TraceReport { hop, status, node: NodeId(node) }
}

#[test]
fn a_relay_reports_for_itself_and_passes_the_trace_on_with_its_hop() {
    let mount = key(1, 7);
    let mut b = Bench::new(Role::Router);
    let server = b.advertising_server(mount);
    let caller = b.connect(3, Role::Router, Role::Router);
    let trace = b.open_trace(caller, mount, &request(64, None), Flags::DELETE);
    b.pump();
    // The node (id 1) reported itself as hop 1, relaying, and nothing closed yet.
    assert_eq!(b.reports(caller, trace), [(report(1, TraceStatus::Relayed, 1), false)]);
    // The server was asked with the hop count raised to 1, as a one-shot.
    let opened = b.opened_at(server);
    assert_eq!(opened.len(), 1);
    let (onward, payload) = &opened[0];
    let asked = TraceRequest::parse(payload).unwrap();
    assert_eq!(asked, TraceRequest { hops: 1, limit: 64, target: None });
    // The server's own report and DELETE come back through the node, which ends the circuit.
    let holder = report(2, TraceStatus::Holder, 2).emit();
    b.send(server, |txn, out| {
        txn.send(out, *onward, TRACE, &holder, Flags::DELETE, ErrorCode::NONE).unwrap()
    });
    b.pump();
    assert_eq!(
        b.reports(caller, trace),
        [(report(1, TraceStatus::Relayed, 1), false), (report(2, TraceStatus::Holder, 2), true)]
    );
    assert_eq!(b.node.circuits(), 0);
    let counters = b.node.counters();
    // Passed on: counted as relayed, as any circuit.
    assert_eq!((counters.traced, counters.relayed), (0, 1));
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
}

#[test]
fn a_trace_ends_at_the_holder_the_target_the_hop_limit_or_where_no_route_goes_on() {
    let (remote, here) = (key(1, 7), key(1, 8));
    let mut b = Bench::new(Role::Router);
    let (node, mut ours) = b.node();
    node.attach(here, MountKind::Master, Label::EMPTY, &mut ours).unwrap();
    let (server, server_span) = server_of(&mut b, remote);
    let caller = b.connect(3, Role::Router, Role::Router);
    let ends = |b: &mut Bench, mount: MountKey, payload: [u8; 24]| {
        let trace = b.open_trace(caller, mount, &payload, Flags::DELETE);
        b.pump();
        let reports = b.reports(caller, trace);
        assert!(b.forced(caller, trace).is_empty(), "answered, not refused");
        reports
    };
    // The mount is attached here: the node answers for its application, which never hears.
    assert_eq!(ends(&mut b, here, request(64, None)), [(report(1, TraceStatus::Holder, 1), true)]);
    assert!(b.node.poll_app().is_none());
    // The node is the target: it ends there, though the mount is further on.
    let target = request(64, Some(1));
    assert_eq!(ends(&mut b, remote, target), [(report(1, TraceStatus::Target, 1), true)]);
    // Hop limit 1: the node would pass it on, and ends it instead.
    assert_eq!(ends(&mut b, remote, request(1, None)), [(report(1, TraceStatus::Limit, 1), true)]);
    // None of these held a circuit, or reached the server.
    assert_eq!(b.node.circuits(), 0);
    assert!(b.opened_at(server).is_empty());
    // No route onward: the server retracts its span, and the caller, not yet told, traces.
    b.send(server, |txn, out| {
        txn.send(out, server_span, Command::LINK_SPAN, &[], Flags::DELETE, ErrorCode::NONE).unwrap()
    });
    b.deliver_to_node(server);
    let trace = b.open_trace(caller, remote, &request(64, None), Flags::DELETE);
    b.pump();
    assert_eq!(b.reports(caller, trace), [(report(1, TraceStatus::NoRoute, 1), false)]);
    assert_eq!(b.forced(caller, trace), [ErrorCode::NO_ROUTE]);
    // Ended here three times; the fourth is counted as refused for no route, as a call would be.
    assert_eq!((b.node.counters().traced, b.node.counters().no_route), (3, 1));
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
}

#[test]
fn a_malformed_trace_is_refused_alone_and_the_link_carries_on() {
    let mount = key(1, 7);
    let mut b = Bench::new(Role::Router);
    let server = b.advertising_server(mount);
    let caller = b.connect(3, Role::Router, Role::Router);
    let good = request(64, None);
    let mut reserved = good;
    reserved[5] = 1;
    let mut at_limit = good;
    (at_limit[0], at_limit[1]) = (3, 3);
    let mut too_far = good;
    too_far[1] = 200;
    let refused = [
        (good[..23].to_vec(), Flags::DELETE),
        ([good.as_slice(), &[0; 8]].concat(), Flags::DELETE),
        (Vec::new(), Flags::DELETE),
        (reserved.to_vec(), Flags::DELETE),
        (at_limit.to_vec(), Flags::DELETE),
        (too_far.to_vec(), Flags::DELETE),
        // Not a one-shot: a trace is a request, never a stream.
        (good.to_vec(), Flags::NONE),
    ];
    for (payload, flags) in refused {
        let trace = b.open_trace(caller, mount, &payload, flags);
        b.pump();
        assert_eq!(b.forced(caller, trace), [ErrorCode::MALFORMED], "{payload:?} {flags:?}");
        assert!(b.reports(caller, trace).is_empty(), "nothing reported for {payload:?}");
    }
    assert_eq!(b.node.counters().refused, 7);
    assert!(b.opened_at(server).is_empty(), "nothing reached the server");
    // The link and everything else on it carry on: a good trace and a call go through.
    let trace = b.open_trace(caller, mount, &good, Flags::DELETE);
    let span = b.peers[caller].spans[&mount];
    let call = b.send(caller, |txn, out| {
        txn.open(out, Some(span), super::CALL, b"x", Flags::DELETE).unwrap()
    });
    b.pump();
    assert_eq!(b.reports(caller, trace), [(report(1, TraceStatus::Relayed, 1), false)]);
    assert!(b.forced(caller, call).is_empty());
    assert_eq!(b.opened_at(server).len(), 2);
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
}

#[test]
fn traces_that_go_on_are_circuits_within_the_shares_and_each_gets_one_report() {
    // A hog fills the node's circuits toward a server that never answers, with traces: each is
    // a circuit like a call, counted against the hog, and the node sends back exactly one report
    // per trace it carries (none for one it refuses). An honest caller's trace still goes
    // through, in place of the hog's oldest.
    let mount = key(1, 7);
    let mut b = Bench::new(Role::Router);
    let server = b.advertising_server(mount);
    let hog = b.connect(3, Role::Router, Role::Router);
    let honest = b.connect(4, Role::Router, Role::Router);
    let traces: Vec<TxnId> = (0..RELAY_CIRCUITS_PER_LINK_MAX)
        .map(|_| b.open_trace(hog, mount, &request(64, None), Flags::DELETE))
        .collect();
    b.pump();
    assert_eq!(b.info(server).circuits_open, RELAY_CIRCUITS_PER_LINK_MAX);
    let extra = b.open_trace(hog, mount, &request(64, None), Flags::DELETE);
    let fair = b.open_trace(honest, mount, &request(64, None), Flags::DELETE);
    b.pump();
    assert_eq!(b.forced(hog, extra), [ErrorCode::LIMIT_REACHED]);
    assert!(b.reports(hog, extra).is_empty(), "a refused trace is not reported");
    assert_eq!(b.reports(honest, fair), [(report(1, TraceStatus::Relayed, 1), false)]);
    assert_eq!(b.forced(hog, traces[0]), [ErrorCode::LIMIT_REACHED], "the oldest gave way");
    // Exactly one report per trace carried, each the node's own, and nothing else but the two
    // forced closes.
    let mut reports = std::collections::HashMap::<TxnId, usize>::new();
    let mut others = 0;
    for got in b.peers[hog].got.iter().filter(|g| g.flags.contains(Flags::REPLY)) {
        if got.payload.is_empty() {
            others += 1;
            continue;
        }
        let parsed = TraceReport::parse(&got.payload).unwrap();
        assert_eq!(parsed, report(1, TraceStatus::Relayed, 1));
        *reports.entry(got.txn).or_default() += 1;
    }
    assert_eq!(others, 2);
    assert_eq!(reports.len(), RELAY_CIRCUITS_PER_LINK_MAX);
    assert!(reports.values().all(|&n| n == 1));
    assert!(traces.iter().all(|t| reports.contains_key(t)));
    assert_eq!(b.info(hog).counters.circuits_limited, 1);
    assert_eq!(b.info(hog).counters.circuits_preempted, 1);
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
}
