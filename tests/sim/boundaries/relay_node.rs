//! A small network of `relay::Node`s (one to three honest nodes in a line, joined as
//! `src/sim/net.rs` joins them: real `txn::Link`s at both ends of in-memory links, batches
//! handled with the node's other links lent or not, queued output flushed) in which a scripted
//! adversary holds one or two links, to the first and the last honest node. The adversary has a
//! real `txn::Link` per link, so what it sends is transactionally valid unless it writes behind
//! its back; it sends hellos of any role and wants (or junk), spans for any mount (the honest
//! nodes' own included, with their origins), updates, retractions, seqno requests, circuits
//! inside the honest nodes' spans (to their mounts, to client addresses behind an aggregate,
//! anywhere), answers or forced closes of the circuits opened into its spans, closes of
//! anything, and raw messages; it goes away and comes back. The honest applications attach
//! mounts, call them (one-shot and streamed, and client addresses behind an aggregate), and
//! echo every call to their mounts, as `sim::net`'s do.
//!
//! Invariants:
//! - nothing panics;
//! - no honest node refuses what another honest node sends (no honest link is closed because
//!   of the adversary's input on another link); what an honest node refuses from the adversary
//!   is refused with an error that closes the link;
//! - the adversary's transaction layer accepts everything honest nodes send it (unless it went
//!   behind its own back), and their hellos, adverts and seqno requests decode;
//! - no call ends twice or ends unopened at any honest node, and messages arrive only on calls
//!   that are open;
//! - node counters never go down; over a node's life the circuits it opened on links equal the
//!   circuits it relayed plus the calls its application opened; the circuits the peers opened
//!   through its links are at least those relayed, served and refused for want of a route, and
//!   at most those plus the refused; the calls served and opened are those its application saw;
//! - at the end, with the adversary's links cut and everything closed: every call the honest
//!   applications opened or served has ended exactly once, no circuit is left, every honest
//!   link holds only its span protocol (two hellos and its spans), and no route goes through a
//!   link that is down.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use ringspan::ids::{ClusterId, LinkId, MountId, NodeId, TxnId};
use ringspan::link::RecordIn;
use ringspan::relay::{AppEvent, BareLink, CallId, LinkCounters, LinkUp, Node, NodeCounters};
use ringspan::sim::lend::{Lent, Wire};
use ringspan::span::{Advert, Hello, Label, MountKey, MountKind, NextHop, Role, Seqno, Wants};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command, ErrorCode, Flags, Messages, Repr, Sink};

use crate::input::Input;
use crate::say;

// The adversary's side: what it does on its links, and its checks of what the honest nodes send
// it. By path, so that the fuzz target, which includes this file by path, finds it too.
#[path = "relay_node_adversary.rs"]
mod adversary;

/// The honest applications' command.
const ECHO: Command = Command::new(1, 1);
/// The adversary's place in a link's `ends`.
const Z: usize = 99;
/// The adversary's node id.
const Z_ID: NodeId = NodeId(100);
const OPS_MAX: usize = 1_500;
/// Batches delivered before the network must be quiet.
const QUIET_STEPS_MAX: usize = 100_000;

fn node_id(i: usize) -> NodeId {
    NodeId(i as u128 + 1)
}

/// What an honest node says in its hello.
fn honest_hello() -> Hello {
    Hello::new(Role::Router, Wants::all())
}

/// Virtual time zero: the clock read once; only durations are added to it.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

/// The mount honest node `i` attaches (a master in cluster 1: one of the pool's).
fn honest_mount(i: usize) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(i as u128 + 1) }
}

type CallKey = String;

fn key_of(call: CallId) -> CallKey {
    format!("{call:?}")
}

/// A call the honest application opened: its payload and how many echoes it expects.
struct OpenCall {
    payload: Vec<u8>,
    sent: u64,
    echoed: u64,
    streamed: bool,
}

struct Honest {
    node: Node,
    open_calls: BTreeMap<CallKey, (CallId, OpenCall)>,
    served: BTreeSet<CallKey>,
    /// Calls ended, ever (a second end is a failure).
    ended: BTreeSet<CallKey>,
    /// AppEvent::Opened seen, and calls the application opened.
    served_count: u64,
    opened_count: u64,
    /// Counters last seen, and those of its links that went down.
    last: NodeCounters,
    gone: Vec<LinkCounters>,
}

/// The adversary's books on one link.
struct Adversary {
    /// Its LINK_CONN, once sent.
    conn: Option<TxnId>,
    /// Its spans (with their mounts), until they end.
    spans: Vec<(TxnId, MountKey)>,
    /// Transactions the honest node opened, with their commands and whether they are stacked.
    theirs: Vec<(TxnId, Command, bool)>,
    /// Every live transaction at its end.
    live: Vec<TxnId>,
    /// It wrote behind its transaction layer's back.
    raw: bool,
    /// It closed or forced its own LINK_CONN, or may have.
    closed_conn: bool,
    /// It breaks no rule it knows of.
    careful: bool,
    /// The role its hello gave, if it decodes.
    role: Option<Role>,
    /// The role the honest node grants its key: a careful adversary claims no more.
    granted: Role,
}

impl Default for Adversary {
    fn default() -> Adversary {
        Adversary {
            conn: None,
            spans: Vec::new(),
            theirs: Vec::new(),
            live: Vec::new(),
            raw: false,
            closed_conn: false,
            careful: true,
            role: None,
            granted: Role::Router,
        }
    }
}

struct NetLink {
    ends: [usize; 2],
    up: bool,
    link: [BareLink; 2],
    out: [Vec<u8>; 2],
    inflight: [VecDeque<Vec<u8>>; 2],
    /// On the adversary's links (always at end 1): its books.
    z: Option<Adversary>,
}

impl Wire for NetLink {
    fn held_by(&self, node: usize) -> Option<usize> {
        self.ends.iter().position(|&n| n == node)
    }

    fn is_up(&self) -> bool {
        self.up
    }

    fn end_mut(&mut self, end: usize) -> (&mut BareLink, &mut Vec<u8>) {
        (&mut self.link[end], &mut self.out[end])
    }
}

struct World {
    honest: Vec<Honest>,
    links: Vec<NetLink>,
    /// The honest nodes the adversary may link to.
    z_homes: Vec<usize>,
    /// Virtual time: each operation moves it on a little, and the nodes' deadlines (waiting
    /// seqno requests, idle circuits) are served as they fall due.
    now: Instant,
}

fn pick<T: Copy>(input: &mut Input<'_>, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[input.below(items.len())])
}

impl World {
    fn new(input: &mut Input<'_>) -> World {
        let n = 1 + input.below(3);
        let now = epoch();
        let honest = (0..n)
            .map(|i| Honest {
                node: {
                    let mut node = Node::new(node_id(i), honest_hello(), now);
                    node.serve_client_clusters([ClusterId(1)]);
                    node
                },
                open_calls: BTreeMap::new(),
                served: BTreeSet::new(),
                ended: BTreeSet::new(),
                served_count: 0,
                opened_count: 0,
                last: NodeCounters::default(),
                gone: Vec::new(),
            })
            .collect();
        let z_homes = if n > 1 && input.bool() { vec![0, n - 1] } else { vec![0] };
        let mut world = World { honest, links: Vec::new(), z_homes, now };
        for i in 0..n.saturating_sub(1) {
            world.connect(i, i + 1, input);
        }
        for i in 0..n {
            if input.bool() {
                let links = &mut Lent::all(&mut world.links, i);
                world.honest[i]
                    .node
                    .attach(honest_mount(i), MountKind::Master, Label::EMPTY, links)
                    .expect("attach");
                world.settle(i);
            }
        }
        for home in world.z_homes.clone() {
            world.connect(home, Z, input);
        }
        world
    }

    /// Joins honest node `a` with honest node `b`, or with the adversary (`b == Z`).
    fn connect(&mut self, a: usize, b: usize, input: &mut Input<'_>) {
        let l = self.links.len();
        self.links.push(NetLink {
            ends: [a, b],
            up: true,
            link: [BareLink::default(), BareLink::default()],
            out: [Vec::new(), Vec::new()],
            inflight: [VecDeque::new(), VecDeque::new()],
            z: (b == Z).then(Adversary::default),
        });
        crate::trace!("link {l}: {a} - {b}");
        if b == Z {
            // Mostly careful; a careful adversary greets first with a hello that decodes.
            let net = &mut self.links[l];
            let z = net.z.as_mut().expect("the adversary's link");
            z.careful = !input.one_in(4);
            z.granted = say::role(input);
            let (payload, hello) = say::hello(input);
            let granted = z.granted;
            let within = |h: &Hello| granted.permits(h.role) && h.idle_timeout_ms >= 30;
            let (payload, hello) = match hello {
                Some(h) if z.careful && !within(&h) => say::hello_clean(granted),
                None if z.careful => say::hello_clean(granted),
                _ => (payload, hello),
            };
            if z.careful || !input.one_in(8) {
                z.role = hello.map(|h| h.role);
                let conn = Command::LINK_CONN;
                if let Ok(t) =
                    net.link[1].txn.open(&mut net.out[1], None, conn, &payload, Flags::NONE)
                {
                    z.conn = Some(t);
                    z.live.push(t);
                }
            }
        }
        for side in 0..2 {
            let node = self.links[l].ends[side];
            if node == Z {
                continue;
            }
            let other = self.links[l].ends[1 - side];
            let peer = if other == Z { Z_ID } else { node_id(other) };
            let granted = self.links[l].z.as_ref().map_or(Role::Router, |z| z.granted);
            let links = &mut Lent::all(&mut self.links, node);
            let up = self.honest[node]
                .node
                .link_up(LinkId(l as u64), peer, granted, side == 0, links)
                .expect("link up");
            // One link per adjacency: honest nodes link once, the adversary once per home at a
            // time (it comes back only after its link was cut).
            assert_eq!(up, LinkUp::Up, "link {l} at node {node}");
            self.settle(node);
        }
    }

    /// After input at honest node `i`: its application answers (until it has nothing more to
    /// answer), and what its links wrote is put in flight (as `sim::net` does).
    fn settle(&mut self, i: usize) {
        while self.app(i) {}
        self.put_in_flight();
        self.check_counters(i);
    }

    fn put_in_flight(&mut self) {
        for net in &mut self.links {
            if !net.up {
                net.out[0].clear();
                net.out[1].clear();
                continue;
            }
            for side in 0..2 {
                if !net.out[side].is_empty() {
                    let bytes = std::mem::take(&mut net.out[side]);
                    net.inflight[1 - side].push_back(bytes);
                }
            }
        }
    }

    /// Honest node `i`'s application: echo every call to its mounts, book every end. Whether it
    /// answered anything.
    fn app(&mut self, i: usize) -> bool {
        let sim = &mut self.honest[i];
        let mut answers: Vec<(CallId, Vec<u8>, bool)> = Vec::new();
        while let Some(event) = sim.node.poll_app() {
            match event {
                AppEvent::Opened { call, payload, flags, .. } => {
                    let key = key_of(call);
                    assert!(sim.served.insert(key.clone()), "node {i}: {key} opened twice");
                    assert!(!sim.ended.contains(&key), "node {i}: {key} opened after its end");
                    sim.served_count += 1;
                    answers.push((call, payload.to_vec(), flags.contains(Flags::DELETE)));
                }
                AppEvent::Message { call, flags, payload, .. } => {
                    let key = key_of(call);
                    if let Some((_, open)) = sim.open_calls.get_mut(&key) {
                        if !flags.contains(Flags::ABORT) {
                            // The adversary may answer a call to its spans with anything; an
                            // honest mount echoes. Only count.
                            if payload == &open.payload[..] {
                                open.echoed += 1;
                            }
                        }
                    } else if sim.served.contains(&key) {
                        if !flags.contains(Flags::ABORT) {
                            answers.push((call, payload.to_vec(), flags.contains(Flags::DELETE)));
                        }
                    } else {
                        panic!("node {i}: a message on {key}, which is not open");
                    }
                }
                AppEvent::Ended { call, error } => {
                    let key = key_of(call);
                    crate::trace!("node {i}: {key} ended ({error})");
                    assert!(sim.ended.insert(key.clone()), "node {i}: {key} ended twice");
                    let opened = sim.open_calls.remove(&key).is_some();
                    let served = sim.served.remove(&key);
                    assert!(opened || served, "node {i}: {key} ended, never opened");
                }
            }
        }
        let answered = !answers.is_empty();
        let links = &mut Lent::all(&mut self.links, i);
        for (call, payload, close) in answers {
            let flags = if close { Flags::DELETE } else { Flags::NONE };
            let _ = sim.node.send(call, ECHO, &payload, flags, ErrorCode::NONE, links);
        }
        answered
    }

    /// Delivers the next batch in flight on link `l` toward `side`.
    fn step(&mut self, l: usize, side: usize, lend: bool) {
        let Some(mut bytes) = self.links[l].inflight[side].pop_front() else { return };
        let node = self.links[l].ends[side];
        if node == Z {
            self.deliver_to_adversary(l, &bytes);
            return;
        }
        let id = LinkId(l as u64);
        let mut refused = None;
        let sim = &mut self.honest[node].node;
        sim.handle_timeout(self.now, &mut Lent::all(&mut self.links, node));
        let whole = lend && {
            let (link, mut others) = Lent::split(&mut self.links, l, node).expect("link exists");
            let record = &mut RecordIn::plaintext_only(&mut bytes);
            sim.forward_record(id, &link.link[side].txn, &mut others, record).is_some()
        };
        for message in Messages::new(if whole { &[] } else { &bytes[..] }) {
            if let Ok(m) = &message
                && self.links[l].ends[1] == Z
            {
                crate::trace!(
                    "adversary -> link {l}: {:?} {:?} msgid {} parent {} error {} {} bytes",
                    m.flags(),
                    m.command(),
                    m.msgid().0,
                    m.parent().0,
                    m.error().0,
                    m.payload_len()
                );
            }
            let links = &mut self.links;
            let result = message.and_then(|message| {
                let link = &mut links[l];
                let received = link.link[side].txn.handle_message(&mut link.out[side], &message)?;
                if let Some(received) = received {
                    sim.received(id, &mut Lent::all(links, node), received)?;
                }
                while let Some(event) = links[l].link[side].txn.poll_event() {
                    sim.event(id, &mut Lent::all(links, node), event)?;
                }
                Ok(())
            });
            if let Err(error) = result {
                refused = Some(error);
                break;
            }
        }
        self.settle(node);
        if let Some(error) = refused {
            crate::trace!("node {node} refuses link {l}: {error}");
            let from = self.links[l].ends[1 - side];
            assert_eq!(from, Z, "node {node} closed its link {l} to honest node {from}: {error}");
            assert!(error.closes_link(), "node {node} failed with {error}, which keeps the link");
            self.cut(l);
        }
    }

    /// Cuts link `l`: what is in flight is lost, both ends' transactions end.
    fn cut(&mut self, l: usize) {
        if !self.links[l].up {
            return;
        }
        crate::trace!("link {l} cut");
        // Each end handles its synthesized closes with the link still in its set (as the engine
        // hands a closing link's own state with them); nothing written on it arrives.
        for side in 0..2 {
            let node = self.links[l].ends[side];
            self.links[l].link[side].txn.handle_link_down(ErrorCode::LOST_LINK);
            if node == Z {
                while self.links[l].link[side].txn.poll_event().is_some() {}
                continue;
            }
            let id = LinkId(l as u64);
            while let Some(event) = self.links[l].link[side].txn.poll_event() {
                let links = &mut Lent::all(&mut self.links, node);
                if let Err(error) = self.honest[node].node.event(id, links, event) {
                    panic!("node {node} refused a synthesized close on link {l}: {error}");
                }
            }
            let sim = &mut self.honest[node];
            let links = &mut Lent::all(&mut self.links, node);
            if let Some(info) = sim.node.link_info(links).find(|info| info.link == id) {
                sim.gone.push(info.counters);
            }
            self.links[l].up = false;
            sim.node.link_down(id, &mut Lent::all(&mut self.links, node));
            self.links[l].up = true;
            self.settle(node);
        }
        self.links[l].up = false;
        for side in 0..2 {
            self.links[l].inflight[side].clear();
            self.links[l].out[side].clear();
        }
    }

    /// The counter relations of honest node `i`.
    fn check_counters(&mut self, i: usize) {
        let sim = &mut self.honest[i];
        let now = sim.node.counters();
        let last = sim.last;
        for (name, before, after) in [
            ("relayed", last.relayed, now.relayed),
            ("served", last.served, now.served),
            ("opened", last.opened, now.opened),
            ("no_route", last.no_route, now.no_route),
            ("lost", last.lost, now.lost),
            ("refused", last.refused, now.refused),
            ("whole_records", last.whole_records, now.whole_records),
            ("traced", last.traced, now.traced),
        ] {
            assert!(after >= before, "node {i}: counter {name} went down");
        }
        sim.last = now;
        let set = &mut Lent::all(&mut self.links, i);
        let links =
            sim.node.link_info(set).map(|info| info.counters).chain(sim.gone.iter().copied());
        let (mut circuits_in, mut circuits_out) = (0, 0);
        for counters in links {
            circuits_in += counters.circuits_in;
            circuits_out += counters.circuits_out;
        }
        assert_eq!(circuits_out, now.relayed + now.opened, "node {i}: circuits out, {now:?}");
        let routed = now.relayed + now.served + now.no_route;
        assert!(circuits_in >= routed, "node {i}: {circuits_in} circuits in, {now:?}");
        // A trace the node ends itself is none of those: counted as traced.
        assert!(
            circuits_in <= routed + now.refused + now.traced,
            "node {i}: {circuits_in} circuits in, {now:?}"
        );
        assert_eq!(now.served, sim.served_count, "node {i}: calls served");
        assert_eq!(now.opened, sim.opened_count, "node {i}: calls opened");
    }

    /// One thing an honest application does.
    fn honest_op(&mut self, input: &mut Input<'_>) {
        let i = input.below(self.honest.len());
        let payload = vec![i as u8; input.below(40)];
        match input.below(6) {
            0 | 1 => {
                // A call to any mount of the pool: one-shot, or streamed.
                let mount = say::mount(input);
                let streamed = input.bool();
                let flags = if streamed { Flags::NONE } else { Flags::DELETE };
                let sim = &mut self.honest[i];
                let links = &mut Lent::all(&mut self.links, i);
                if let Ok(call) = sim.node.open(mount, ECHO, &payload, flags, links) {
                    crate::trace!("node {i}: opened {call:?} to {mount:?}");
                    sim.opened_count += 1;
                    let open = OpenCall { payload, sent: 1, echoed: 0, streamed };
                    sim.open_calls.insert(key_of(call), (call, open));
                }
            }
            2 => {
                // A call to a client address behind an honest node's aggregate.
                let satellite = input.below(self.honest.len());
                let aggregate = self.honest[satellite].node.aggregate_of(ClusterId(1));
                let client = MountId(1 + input.below(3) as u128);
                let sim = &mut self.honest[i];
                let links = &mut Lent::all(&mut self.links, i);
                let opened =
                    sim.node.open_client(aggregate, client, ECHO, &payload, Flags::DELETE, links);
                if let Ok(call) = opened {
                    sim.opened_count += 1;
                    let open = OpenCall { payload, sent: 1, echoed: 0, streamed: false };
                    sim.open_calls.insert(key_of(call), (call, open));
                }
            }
            3 => {
                // More on a streamed call, or its close.
                let sim = &mut self.honest[i];
                let streams: Vec<CallKey> = sim
                    .open_calls
                    .iter()
                    .filter(|(_, (_, o))| o.streamed)
                    .map(|(k, _)| k.clone())
                    .collect();
                let Some(key) = pick(input, &streams.iter().collect::<Vec<_>>()) else { return };
                let (call, open) = sim.open_calls.get_mut(key).expect("listed");
                let close = input.bool();
                let flags = if close { Flags::DELETE } else { Flags::NONE };
                let links = &mut Lent::all(&mut self.links, i);
                if sim.node.send(*call, ECHO, &open.payload, flags, ErrorCode::NONE, links).is_ok()
                {
                    open.sent += 1;
                    open.streamed = !close;
                }
            }
            4 => {
                let mount = honest_mount(i);
                let sim = &mut self.honest[i];
                let links = &mut Lent::all(&mut self.links, i);
                if input.bool() {
                    sim.node.attach(mount, MountKind::Master, Label::EMPTY, links).expect("attach");
                } else {
                    let _ = sim.node.detach(mount, links);
                }
            }
            _ => {
                // Force a call closed.
                let sim = &mut self.honest[i];
                let calls: Vec<CallId> = sim.open_calls.values().map(|(c, _)| *c).collect();
                let Some(call) = pick(input, &calls) else { return };
                let flags = Flags::ABORT | Flags::DELETE;
                let links = &mut Lent::all(&mut self.links, i);
                let _ = sim.node.send(call, ECHO, b"", flags, ErrorCode::ABORTED, links);
            }
        }
        self.settle(i);
    }

    /// Delivers one batch somewhere, chosen by the input; false if nothing was in flight.
    fn step_any(&mut self, input: &mut Input<'_>) -> bool {
        let busy: Vec<(usize, usize)> = (0..self.links.len())
            .flat_map(|l| (0..2).map(move |side| (l, side)))
            .filter(|&(l, side)| !self.links[l].inflight[side].is_empty())
            .collect();
        let Some((l, side)) = pick(input, &busy) else { return false };
        let lend = input.bool();
        self.step(l, side, lend);
        true
    }

    /// The end: the adversary's links are cut, streams closed, and everything settles.
    fn finish(&mut self, input: &mut Input<'_>) {
        for l in 0..self.links.len() {
            if self.links[l].z.is_some() {
                self.cut(l);
            }
        }
        self.quiet(input);
        for i in 0..self.honest.len() {
            let streams: Vec<CallId> = self.honest[i]
                .open_calls
                .values()
                .filter(|(_, o)| o.streamed)
                .map(|(c, _)| *c)
                .collect();
            for call in streams {
                let links = &mut Lent::all(&mut self.links, i);
                let sim = &mut self.honest[i];
                let _ = sim.node.send(call, ECHO, b"", Flags::DELETE, ErrorCode::NONE, links);
            }
            self.settle(i);
        }
        self.quiet(input);
        for (i, sim) in self.honest.iter().enumerate() {
            assert!(
                sim.open_calls.is_empty() && sim.served.is_empty(),
                "node {i}: {} calls and {} served calls never ended",
                sim.open_calls.len(),
                sim.served.len()
            );
            assert_eq!(sim.node.circuits(), 0, "node {i}: circuits left");
        }
        for (l, net) in self.links.iter().enumerate() {
            if !net.up {
                continue;
            }
            for side in 0..2 {
                let node = net.ends[side];
                let known = self.honest[node].node.peers().any(|(id, _)| id == LinkId(l as u64));
                assert!(known, "node {node} lost track of link {l}");
                let span = &net.link[side].span;
                let expected = 2 + span.spans_received() + span.spans_sent();
                assert_eq!(net.link[side].txn.len(), expected, "link {l} at node {node}");
            }
        }
        for (i, sim) in self.honest.iter().enumerate() {
            assert!(sim.node.clients().is_empty(), "node {i}: a client mount of a cut link");
            for (mount, route) in sim.node.table().mounts() {
                if let Some(route) = route
                    && let NextHop::Neighbour(n) = route.next_hop
                {
                    let l = Node::link_of(n).0 as usize;
                    assert!(
                        self.links[l].up,
                        "node {i}: route to {mount:?} through link {l}, down"
                    );
                }
            }
        }
    }

    /// Delivers until nothing is in flight.
    fn quiet(&mut self, input: &mut Input<'_>) {
        for _ in 0..QUIET_STEPS_MAX {
            if !self.step_any(input) {
                return;
            }
        }
        panic!("not quiet after {QUIET_STEPS_MAX} batches");
    }
}

/// Runs one operation sequence; panics on any broken rule.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut world = World::new(&mut input);
    for _ in 0..OPS_MAX {
        if input.is_empty() {
            break;
        }
        match input.below(9) {
            0 | 1 => world.honest_op(&mut input),
            2..=4 => world.adversary_op(&mut input),
            8 => world.now += std::time::Duration::from_millis(input.pick(&[1, 10, 100, 1_000])),
            _ => {
                for _ in 0..1 + input.below(8) {
                    world.step_any(&mut input);
                }
            }
        }
    }
    world.finish(&mut input);
}
