//! `Net`: full relay nodes ([`relay::Node`]) joined by in-memory links that carry encoded
//! messages through real transaction state ([`txn::Link`]), with link cuts and node crashes,
//! and the application on every node played by the harness: mounts that answer every call with
//! an echo, and clients that open calls. Deterministic: every choice comes from a seeded RNG.
//!
//! After every step it checks that no call ends twice or ends without having been opened, and
//! [`Net::check_quiet`] checks, once nothing is in flight, that every call opened on a live node
//! has ended at both ends, no node holds a circuit, and every link holds only its span protocol.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use crate::ids::{ClusterId, LinkId, MountId, NodeId};
use crate::relay::{AppEvent, CallId, LinkSet, LinkUp, Node};
use crate::span::{Hello, Label, MountKey, MountKind, Role, Wants};
use crate::txn;
use crate::wire::{Command, ErrorCode, Flags, Messages};

use super::cluster::Failure;
use super::lend::{Lent, Wire};
use super::rng::Rng;

/// The command the harness's calls use.
pub const ECHO: Command = Command::new(1, 1);

/// How one call ended, at the end that opened it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcomes {
    /// Calls answered (ended with no error).
    pub completed: u64,
    /// Calls ended by a lost link.
    pub lost_link: u64,
    /// Calls refused for lack of a route.
    pub no_route: u64,
    /// Calls ended with another error.
    pub other: u64,
}

struct SimNode {
    node: Node,
    /// What it says it is, and what its neighbours grant its key.
    role: Role,
    alive: bool,
    mounts: Vec<MountKey>,
    /// Calls this node's application opened and that have not ended.
    open_calls: BTreeMap<CallIdKey, OpenCall>,
    /// Calls to this node's mounts not yet ended.
    served: BTreeSet<CallIdKey>,
}

/// A call the application opened: what it sends, how many messages it sent and how many echoes
/// came back (equal when the call ends without an error).
struct OpenCall {
    payload: Vec<u8>,
    sent: u64,
    echoed: u64,
}

impl OpenCall {
    fn new(payload: &[u8]) -> OpenCall {
        OpenCall { payload: payload.to_vec(), sent: 1, echoed: 0 }
    }
}

/// `CallId` is opaque; the harness keys its books by its Debug form.
type CallIdKey = String;

fn key_of(call: CallId) -> CallIdKey {
    format!("{call:?}")
}

struct SimLink {
    ends: [usize; 2],
    up: bool,
    txn: [txn::Link; 2],
    /// Bytes written by each end, not yet moved.
    out: [Vec<u8>; 2],
    /// Batches in flight toward each end.
    inflight: [VecDeque<Vec<u8>>; 2],
}

/// A network of relay nodes. See the module documentation.
pub struct Net {
    nodes: Vec<SimNode>,
    links: Vec<SimLink>,
    rng: Rng,
    /// Outcomes of the calls opened so far.
    pub outcomes: Outcomes,
    /// Calls opened.
    pub opened: u64,
    /// Steps taken.
    pub steps: u64,
    /// Calls open on nodes when they crashed (they end nowhere).
    pub crashed_calls: u64,
    /// Links closed because a node refused what came on them, with the reason.
    pub refusals: Vec<String>,
    /// Virtual time zero; each step moves virtual time on by a millisecond.
    epoch: Instant,
}

/// A mount key for the harness: cluster 1, mount `n`.
pub fn mount(n: u128) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(n) }
}

fn fail(msg: String) -> Failure {
    Failure(msg)
}

impl Net {
    /// `n` nodes, no links, RNG seeded with `seed`.
    pub fn new(n: usize, seed: u64) -> Net {
        let epoch = epoch();
        let nodes = (0..n).map(|i| SimNode::new(i, epoch)).collect();
        Net {
            nodes,
            links: Vec::new(),
            rng: Rng::new(seed),
            outcomes: Outcomes::default(),
            opened: 0,
            steps: 0,
            crashed_calls: 0,
            refusals: Vec::new(),
            epoch,
        }
    }

    /// The virtual time now: a millisecond per step taken.
    pub fn now(&self) -> Instant {
        self.epoch + Duration::from_millis(self.steps)
    }

    /// `roles.len()` nodes with these roles (each says it in its hello).
    pub fn with_roles(roles: &[Role], seed: u64) -> Net {
        let mut net = Net::new(roles.len(), seed);
        for (i, &role) in roles.iter().enumerate() {
            net.nodes[i] = SimNode::with_role(i, role, net.now());
        }
        net
    }

    /// Attaches mount `n` of `kind` at node `i`.
    pub fn attach_as(&mut self, i: usize, n: u128, kind: MountKind) -> Result<(), Failure> {
        self.nodes[i].mounts.push(mount(n));
        self.nodes[i]
            .node
            .attach(mount(n), kind, Label::EMPTY, &mut Lent::all(&mut self.links, i))
            .map_err(|e| fail(format!("attach at {i}: {e}")))?;
        self.settle(i)
    }

    /// Node `i`'s application calls client mount `n` behind the satellite `satellite` (through
    /// its aggregate), a one-shot request.
    pub fn call_client(
        &mut self,
        i: usize,
        satellite: usize,
        n: u128,
        payload: &[u8],
    ) -> Result<(), Failure> {
        if !self.nodes[i].alive {
            return Ok(());
        }
        self.opened += 1;
        let aggregate = self.nodes[satellite].node.aggregate_of(ClusterId(1));
        let links = &mut Lent::all(&mut self.links, i);
        let node = &mut self.nodes[i].node;
        match node.open_client(aggregate, MountId(n), ECHO, payload, Flags::DELETE, links) {
            Ok(call) => {
                self.nodes[i].open_calls.insert(key_of(call), OpenCall::new(payload));
            }
            Err(_) => self.outcomes.no_route += 1,
        }
        self.settle(i)
    }

    /// The mounts node `i`'s table has a route to.
    pub fn routes_at(&self, i: usize) -> usize {
        self.nodes[i].node.table().mounts().filter(|(_, route)| route.is_some()).count()
    }

    /// The node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    /// The node `i`, to call its API directly (what it then opens, the harness does not book).
    pub fn node_mut(&mut self, i: usize) -> &mut Node {
        &mut self.nodes[i].node
    }

    /// The node `i` and the links it writes through, to call its API directly (what it then
    /// opens, the harness does not book; what it writes goes in flight at the next step).
    pub fn node_and_links(&mut self, i: usize) -> (&mut Node, impl LinkSet + '_) {
        (&mut self.nodes[i].node, Lent::all(&mut self.links, i))
    }

    /// Batches the nodes forwarded whole ([`Node::forward_record`]), crashed nodes' aside.
    pub fn whole_records(&self) -> u64 {
        self.nodes.iter().map(|sim| sim.node.counters().whole_records).sum()
    }

    /// Calls node `i`'s application has open.
    pub fn open_calls(&self, i: usize) -> usize {
        self.nodes[i].open_calls.len()
    }

    /// Joins `a` and `b` with a new link; returns its index.
    pub fn connect(&mut self, a: usize, b: usize) -> Result<usize, Failure> {
        let l = self.links.len();
        self.links.push(SimLink {
            ends: [a, b],
            up: true,
            txn: [txn::Link::new(), txn::Link::new()],
            out: [Vec::new(), Vec::new()],
            inflight: [VecDeque::new(), VecDeque::new()],
        });
        // What each end closes: the new link or an older one, when the two nodes are linked
        // already (one link per adjacency; both ends decide alike).
        let mut losers = Vec::new();
        for side in 0..2 {
            let node = self.links[l].ends[side];
            let other = self.links[l].ends[1 - side];
            let peer = NodeId(other as u128 + 1);
            // Each end's key is granted what the other end says it is; the first end dials.
            let granted = self.nodes[other].role;
            let links = &mut Lent::all(&mut self.links, node);
            let up = self.nodes[node]
                .node
                .link_up(LinkId(l as u64), peer, granted, side == 0, links)
                .map_err(|e| fail(format!("link_up on node {node}: {e}")))?;
            match up {
                LinkUp::Up => {}
                LinkUp::Duplicate { .. } => losers.push(l),
                LinkUp::Replaces { old } => losers.push(old.0 as usize),
            }
            self.settle(node)?;
        }
        losers.sort_unstable();
        losers.dedup();
        for loser in losers {
            self.cut(loser)?;
        }
        Ok(l)
    }

    /// Attaches mount `n` (a master) at node `i`.
    pub fn attach(&mut self, i: usize, n: u128) -> Result<(), Failure> {
        self.nodes[i].mounts.push(mount(n));
        self.nodes[i]
            .node
            .attach(mount(n), MountKind::Master, Label::EMPTY, &mut Lent::all(&mut self.links, i))
            .map_err(|e| fail(format!("attach at {i}: {e}")))?;
        self.settle(i)
    }

    /// Node `i`'s application opens a call to mount `n` and closes its side at once (a
    /// one-shot request). No route is counted as such.
    pub fn call(&mut self, i: usize, n: u128, payload: &[u8]) -> Result<(), Failure> {
        self.open_call(i, n, payload, Flags::DELETE).map(|_| ())
    }

    /// Node `i`'s application opens a streamed call to mount `n`, its first message carrying
    /// `payload` and its side left open: send more with [`Net::stream_send`]. The mount echoes
    /// every message. `None` if there was no route (counted as such).
    pub fn open_stream(
        &mut self,
        i: usize,
        n: u128,
        payload: &[u8],
    ) -> Result<Option<CallId>, Failure> {
        self.open_call(i, n, payload, Flags::NONE)
    }

    /// Opens and books a call of node `i`'s application (`flags`: DELETE for a one-shot).
    fn open_call(
        &mut self,
        i: usize,
        n: u128,
        payload: &[u8],
        flags: Flags,
    ) -> Result<Option<CallId>, Failure> {
        if !self.nodes[i].alive {
            return Ok(None);
        }
        self.opened += 1;
        let links = &mut Lent::all(&mut self.links, i);
        let call = match self.nodes[i].node.open(mount(n), ECHO, payload, flags, links) {
            Ok(call) => {
                self.nodes[i].open_calls.insert(key_of(call), OpenCall::new(payload));
                Some(call)
            }
            Err(_) => {
                self.outcomes.no_route += 1;
                None
            }
        };
        self.settle(i)?;
        Ok(call)
    }

    /// Node `i`'s application sends the call's payload again on a streamed call, closing its
    /// side if `close`. A call that has ended meanwhile (a lost link) is left alone.
    pub fn stream_send(&mut self, i: usize, call: CallId, close: bool) -> Result<(), Failure> {
        let sim = &mut self.nodes[i];
        let Some(open) = sim.open_calls.get_mut(&key_of(call)) else { return Ok(()) };
        let flags = if close { Flags::DELETE } else { Flags::NONE };
        let links = &mut Lent::all(&mut self.links, i);
        if sim.node.send(call, ECHO, &open.payload, flags, ErrorCode::NONE, links).is_ok() {
            open.sent += 1;
        }
        self.settle(i)
    }

    /// Whether link `l` is up.
    pub fn is_up(&self, l: usize) -> bool {
        self.links[l].up
    }

    /// Links, up or not.
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// The nodes at the ends of link `l`.
    pub fn ends(&self, l: usize) -> [usize; 2] {
        self.links[l].ends
    }

    /// Cuts link `l`: what is in flight is lost, both ends' transactions end.
    pub fn cut(&mut self, l: usize) -> Result<(), Failure> {
        if !self.links[l].up {
            return Ok(());
        }
        // Each end handles its transactions' synthesized closes with the link still in its set
        // (as the engine hands a closing link's own state with them); nothing written on it
        // arrives.
        for side in 0..2 {
            let node = self.links[l].ends[side];
            if !self.nodes[node].alive {
                continue;
            }
            let id = LinkId(l as u64);
            self.links[l].txn[side].handle_link_down(ErrorCode::LOST_LINK);
            while let Some(event) = self.links[l].txn[side].poll_event() {
                self.nodes[node]
                    .node
                    .event(id, &mut Lent::all(&mut self.links, node), event)
                    .map_err(|e| fail(format!("synthesized close refused at {node}: {e}")))?;
            }
            self.links[l].up = false;
            self.nodes[node].node.link_down(id, &mut Lent::all(&mut self.links, node));
            self.links[l].up = true;
            self.settle(node)?;
        }
        self.links[l].up = false;
        for side in 0..2 {
            self.links[l].inflight[side].clear();
            self.links[l].out[side].clear();
        }
        Ok(())
    }

    /// Crashes node `i`: its links are cut and everything it held is forgotten, its calls with it
    /// (a dead process's calls end nowhere).
    pub fn crash(&mut self, i: usize) -> Result<(), Failure> {
        self.nodes[i].alive = false;
        self.crashed_calls += self.nodes[i].open_calls.len() as u64;
        for l in 0..self.links.len() {
            if self.links[l].up && self.links[l].ends.contains(&i) {
                self.cut(l)?;
            }
        }
        let mounts = std::mem::take(&mut self.nodes[i].mounts);
        let role = self.nodes[i].role;
        self.nodes[i] = SimNode::with_role(i, role, self.now());
        self.nodes[i].alive = false;
        self.nodes[i].mounts = mounts;
        Ok(())
    }

    /// Restarts crashed node `i` with its mounts (not its links).
    pub fn restart(&mut self, i: usize) -> Result<(), Failure> {
        let mounts = std::mem::take(&mut self.nodes[i].mounts);
        let role = self.nodes[i].role;
        self.nodes[i] = SimNode::with_role(i, role, self.now());
        for m in mounts {
            self.attach(i, m.mount.0)?;
        }
        Ok(())
    }

    /// Whether node `i` is alive.
    pub fn is_alive(&self, i: usize) -> bool {
        self.nodes[i].alive
    }

    /// Whether anything is in flight.
    pub fn is_quiet(&self) -> bool {
        self.links.iter().all(|l| l.inflight.iter().all(VecDeque::is_empty))
    }

    /// Delivers one batch of bytes on one link direction chosen at random. `false` when nothing
    /// was in flight.
    pub fn step(&mut self) -> Result<bool, Failure> {
        self.launch();
        let busy: Vec<(usize, usize)> = (0..self.links.len())
            .flat_map(|l| (0..2).map(move |side| (l, side)))
            .filter(|&(l, side)| !self.links[l].inflight[side].is_empty())
            .collect();
        if busy.is_empty() {
            return Ok(false);
        }
        let (l, side) = busy[self.rng.index(busy.len())];
        let bytes = self.links[l].inflight[side].pop_front().unwrap_or_default();
        self.steps += 1;
        let node = self.links[l].ends[side];
        let id = LinkId(l as u64);
        let mut refused = None;
        // Half the batches are offered whole first, as the engine does (forwarded as one record
        // if every message in it continues on one link); the rest go message by message.
        let whole_first = self.rng.index(2) == 0;
        let now = self.epoch + Duration::from_millis(self.steps);
        let sim = &mut self.nodes[node].node;
        sim.handle_timeout(now, &mut Lent::all(&mut self.links, node));
        let whole = whole_first && {
            let (link, mut others) =
                Lent::split(&mut self.links, l, node).ok_or_else(|| fail("no such link".into()))?;
            sim.forward_record(id, &link.txn[side], &mut others, &bytes).is_some()
        };
        let messages = Messages::new(if whole { &[] } else { &bytes[..] });
        for message in messages {
            let message = message.map_err(|e| fail(format!("bad message on link {l}: {e}")))?;
            let links = &mut self.links;
            let result = (|| {
                let link = &mut links[l];
                let received = link.txn[side].handle_message(&mut link.out[side], &message)?;
                if let Some(received) = received {
                    sim.received(id, &mut Lent::all(links, node), received)?;
                }
                while let Some(event) = links[l].txn[side].poll_event() {
                    sim.event(id, &mut Lent::all(links, node), event)?;
                }
                Ok::<(), crate::error::Error>(())
            })();
            if let Err(error) = result {
                // As the engine does: the link it came on is closed, with the reason.
                refused = Some(format!("node {node} closed link {l}: {error}"));
                break;
            }
        }
        self.settle(node)?;
        if let Some(reason) = refused {
            self.refusals.push(reason);
            self.cut(l)?;
        }
        Ok(true)
    }

    /// Runs until nothing is in flight (at most `max` steps).
    pub fn run(&mut self, max: u64) -> Result<(), Failure> {
        for _ in 0..max {
            if !self.step()? {
                return Ok(());
            }
        }
        Err(fail(format!("not quiet after {max} steps")))
    }

    /// After input at node `i`: its application answers what arrived, and what its links
    /// wrote is put in flight.
    fn settle(&mut self, i: usize) -> Result<(), Failure> {
        self.app(i)?;
        self.launch();
        Ok(())
    }

    /// Puts in flight what the links' ends wrote.
    fn launch(&mut self) {
        for sim in &mut self.links {
            if !sim.up {
                continue;
            }
            for side in 0..2 {
                if !sim.out[side].is_empty() {
                    let bytes = std::mem::take(&mut sim.out[side]);
                    sim.inflight[1 - side].push_back(bytes);
                }
            }
        }
    }

    /// Node `i`'s application: echo every message of calls to its mounts (closing its side
    /// when the caller closes), book every end.
    fn app(&mut self, i: usize) -> Result<(), Failure> {
        // Each answer may end calls at once, which the application hears of: until none is left.
        while self.app_once(i)? {}
        Ok(())
    }

    /// One pass of node `i`'s application over its events; whether it answered any.
    fn app_once(&mut self, i: usize) -> Result<bool, Failure> {
        let sim = &mut self.nodes[i];
        // Echoes to send: the call, the payload, and whether it closes.
        let mut answers: Vec<(CallId, Vec<u8>, bool)> = Vec::new();
        while let Some(event) = sim.node.poll_app() {
            match event {
                AppEvent::Opened { call, payload, flags, .. } => {
                    if !sim.served.insert(key_of(call)) {
                        return Err(fail(format!("node {i}: call {call:?} opened twice")));
                    }
                    answers.push((call, payload.to_vec(), flags.contains(Flags::DELETE)));
                }
                AppEvent::Message { call, flags, payload, .. } => {
                    let key = key_of(call);
                    if let Some(open) = sim.open_calls.get_mut(&key) {
                        if !flags.contains(Flags::ABORT) {
                            if payload != &open.payload[..] {
                                let msg = format!("node {i}: call {call:?} answered wrongly");
                                return Err(fail(msg));
                            }
                            open.echoed += 1;
                        }
                    } else if sim.served.contains(&key) && !flags.contains(Flags::ABORT) {
                        answers.push((call, payload.to_vec(), flags.contains(Flags::DELETE)));
                    }
                }
                AppEvent::Ended { call, error } => {
                    let key = key_of(call);
                    if let Some(open) = sim.open_calls.remove(&key) {
                        if error == ErrorCode::NONE && open.echoed != open.sent {
                            return Err(fail(format!(
                                "node {i}: call {call:?} sent {} messages and got {} echoes",
                                open.sent, open.echoed
                            )));
                        }
                        match error {
                            ErrorCode::NONE => self.outcomes.completed += 1,
                            ErrorCode::LOST_LINK => self.outcomes.lost_link += 1,
                            ErrorCode::NO_ROUTE => self.outcomes.no_route += 1,
                            _ => self.outcomes.other += 1,
                        }
                    } else if !sim.served.remove(&key) {
                        return Err(fail(format!(
                            "node {i}: call {call:?} ended twice or never opened"
                        )));
                    }
                }
            }
        }
        let answered = !answers.is_empty();
        let links = &mut Lent::all(&mut self.links, i);
        for (call, payload, close) in answers {
            let flags = if close { Flags::DELETE } else { Flags::NONE };
            let _ = sim.node.send(call, ECHO, &payload, flags, ErrorCode::NONE, links);
        }
        Ok(answered)
    }

    /// Once quiet: every call of a live node has ended at both ends, no circuit is left, and
    /// every link holds only its span protocol.
    pub fn check_quiet(&self) -> Result<(), Failure> {
        for (i, sim) in self.nodes.iter().enumerate() {
            if !sim.alive {
                continue;
            }
            if !sim.open_calls.is_empty() || !sim.served.is_empty() {
                return Err(fail(format!(
                    "node {i}: {} calls and {} served calls never ended",
                    sim.open_calls.len(),
                    sim.served.len()
                )));
            }
            if sim.node.circuits() != 0 {
                return Err(fail(format!("node {i}: {} circuits left", sim.node.circuits())));
            }
        }
        for (l, link) in self.links.iter().enumerate() {
            if !link.up {
                continue;
            }
            for side in 0..2 {
                let node = link.ends[side];
                let info = self.nodes[node]
                    .node
                    .link_info()
                    .find(|info| info.link == LinkId(l as u64))
                    .ok_or_else(|| fail(format!("node {node} lost track of link {l}")))?;
                let expected = 2 + info.spans_in + info.spans_out;
                if link.txn[side].len() != expected {
                    return Err(fail(format!(
                        "link {l} at node {node}: {} transactions, {expected} expected",
                        link.txn[side].len()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Virtual time zero: the clock read once, as `Pair` does; from then on only durations are added.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

impl Wire for SimLink {
    fn end_of(&self, node: usize) -> Option<usize> {
        self.up.then(|| usize::from(self.ends[1] == node))
    }

    fn end_mut(&mut self, end: usize) -> (&mut txn::Link, &mut Vec<u8>) {
        (&mut self.txn[end], &mut self.out[end])
    }
}

impl SimNode {
    fn new(i: usize, now: Instant) -> SimNode {
        SimNode::with_role(i, Role::Router, now)
    }

    fn with_role(i: usize, role: Role, now: Instant) -> SimNode {
        let mut node = Node::new(NodeId(i as u128 + 1), Hello::new(role, Wants::all()), now);
        // The harness's clients attach their mounts in cluster 1 (`mount`).
        node.serve_client_clusters([ClusterId(1)]);
        SimNode {
            node,
            role,
            alive: true,
            mounts: Vec::new(),
            open_calls: BTreeMap::new(),
            served: BTreeSet::new(),
        }
    }
}
