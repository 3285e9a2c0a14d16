//! `Net`: full relay nodes ([`relay::Node`]) joined by in-memory links that run the production
//! link ([`link::Link`]) at both ends, with link cuts, node crashes and byte faults, and the
//! application on every node played by the harness: mounts that answer every call with an echo,
//! and clients that open calls. Deterministic: every choice comes from a seeded RNG.
//!
//! Each link is two [`link::Link`]s and the bytes in flight each way. [`Net::connect`] runs a
//! Noise handshake between the two nodes' identities over those bytes (in no virtual time)
//! before either node hears of the link; from then on everything a node writes goes through the link as the engine's
//! worker drives it: written into the record being built ([`link::Link::parts`], or a record
//! forwarded whole), sealed with AES-GCM at the end of the node's input (`end_turn`), sent as
//! one batch of bytes, and at the other end cut into records, opened and handed over whole or
//! message by message (`handle_records`), keepalives and close notices consumed on the way.
//! What a link's end closes (bad bytes, a peer's close notice, a deadline) cuts the link, the
//! reason recorded in [`Net::closes`] and [`Net::refusals`].
//!
//! Virtual time moves a millisecond per batch delivered ([`Net::step`]), or jumps to the next
//! deadline while nothing is in flight ([`Net::run_for`]). Each link's deadlines (keepalive,
//! idle, send stall, key shedding, reassembly, rekey) are armed in one heap as the engine arms
//! them and fired at their time. The default [`Timing`] is long (a keepalive every ten virtual
//! minutes) so that tests that only move traffic see none of it: one batch a millisecond cannot
//! keep up with a keepalive per link per second on a network of a thousand links. Faults:
//! [`Net::cut`], [`Net::crash`], [`Net::mute`] (an end's bytes are lost from then on, so the
//! other end's idle deadline closes the link), [`Net::stop_reading`] (an end takes nothing more,
//! so the other end's send stalls and its send-stall deadline closes the link) and
//! [`Net::corrupt`] (a batch fails to authenticate); an end may close its link with a notice
//! ([`Net::close_with_notice`], as the engine drains a link), which closes the other end when it
//! arrives; and [`Net::with_cut_batches`] delivers batches in two pieces, so records are put
//! together. The ephemeral keys are random, but nothing depends on them: record lengths do not,
//! and a seed replays the same steps.
//!
//! After every step it checks that no call ends twice or ends without having been opened, and
//! [`Net::check_quiet`] checks, once nothing is in flight, that every call opened on a live node
//! has ended at both ends, no node holds a circuit, every link holds only its span protocol, and
//! every record buffer is back in the pool.
//!
//! [`relay::Node`]: crate::relay::Node
//! [`link::Link`]: crate::link::Link
//! [`link::Link::parts`]: crate::link::Link::parts

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cipher::{self, Identity, PrivateKey, PublicKey, Session};
use crate::ids::{ClusterId, LinkId, MountId, NodeId};
use crate::limits::{
    KEEPALIVE_INTERVAL_MIN_MS, RECORD_COMPLETION_TIMEOUT_MS, SEND_QUEUE_MAX_BYTES,
    SEND_STALL_TIMEOUT_MS, SHED_KEYS_AFTER_MS,
};
use crate::link::pool::Pool;
use crate::link::stream::TxSink;
use crate::link::{
    CloseReason, Crypto, Deadline, Input, Link, LinkStats, Parts, Periods, RecordIn, Timeout,
};
use crate::relay::{AppEvent, CallId, LinkSet, LinkUp, Node, Notice};
use crate::span::{Hello, Label, MountKey, MountKind, Role, SharedClients, Wants};
use crate::txn;
use crate::wire::{Command, ErrorCode, Flags};

use super::cluster::Failure;
use super::lend::{Lend, Lent};
use super::rng::Rng;
use super::{never_lent, own_bytes};

mod traces;
mod wires;

use crate::span::SpanLink;
pub use traces::Traced;
use wires::{NodeKey, POOL_LARGE, POOL_SMALL, Shared, SimLink, Timers, node_key};

/// The command the harness's calls use.
pub const ECHO: Command = Command::new(1, 1);

/// How calls ended.
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
    /// Its node id: its own, or the node's it is a plane of ([`Net::add_plane`]).
    id: NodeId,
    /// What it says it is, and what its neighbours grant its key.
    role: Role,
    alive: bool,
    mounts: Vec<MountKey>,
    /// Which plane of its node it is (0 for a node's first), and the client directory its
    /// node's planes share, once the node has two.
    plane: u16,
    homes: Option<Arc<SharedClients>>,
    /// Calls this node's application opened and that have not ended.
    open_calls: BTreeMap<CallIdKey, OpenCall>,
    /// Calls to this node's mounts not yet ended.
    served: BTreeSet<CallIdKey>,
    /// Traces this node's application opened ([`Net::trace`]) and not yet ended: the mount, and
    /// the reports so far.
    traces: traces::Open,
}

/// A call the application opened: what it sends, how many messages it sent and how many echoes
/// came back (equal when the call ends without an error).
struct OpenCall {
    payload: Vec<u8>,
    sent: u64,
    echoed: u64,
}

impl Outcomes {
    fn count(&mut self, error: ErrorCode) {
        match error {
            ErrorCode::NONE => self.completed += 1,
            ErrorCode::LOST_LINK => self.lost_link += 1,
            ErrorCode::NO_ROUTE => self.no_route += 1,
            _ => self.other += 1,
        }
    }
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

/// The links' keepalive interval and the periods of their deadlines, in virtual time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// A link end that sent nothing for this long sends a keepalive.
    pub keepalive: Duration,
    /// The periods of the links' deadlines. Every node's hello says its `idle_timeout`.
    pub periods: Periods,
}

impl Default for Timing {
    /// Keepalives every ten minutes and an idle timeout of fifty (production's ratio, stretched
    /// far beyond any traffic test: see the module documentation); the other periods are
    /// production's.
    fn default() -> Timing {
        Timing {
            keepalive: Duration::from_secs(600),
            periods: Periods {
                idle_timeout: Duration::from_secs(3_000),
                send_stall_timeout: Duration::from_millis(SEND_STALL_TIMEOUT_MS),
                shed_keys_after: Duration::from_millis(SHED_KEYS_AFTER_MS),
                record_completion_timeout: Duration::from_millis(RECORD_COMPLETION_TIMEOUT_MS),
            },
        }
    }
}

/// A link closed by one of its ends' link layer (not by the harness): bad bytes, a peer's close
/// notice, a deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The link.
    pub link: usize,
    /// The node whose end closed it.
    pub node: usize,
    /// Why.
    pub reason: CloseReason,
    /// When (virtual time).
    pub at: Instant,
}

/// A network of relay nodes. See the module documentation.
pub struct Net {
    nodes: Vec<SimNode>,
    links: Vec<SimLink>,
    rng: Rng,
    /// Outcomes of the calls opened so far.
    pub outcomes: Outcomes,
    /// How the calls to the harness's mounts ended, at the mount's end.
    pub served: Outcomes,
    /// Calls opened.
    pub opened: u64,
    /// Steps taken.
    pub steps: u64,
    /// Calls open on nodes when they crashed (they end nowhere).
    pub crashed_calls: u64,
    /// Traces that ended ([`Net::trace`]), in the order they did.
    pub traced: Vec<Traced>,
    /// Links closed by one of their ends, with the reason: a node refused what came on them,
    /// or the link layer closed them (see [`Net::closes`]).
    pub refusals: Vec<String>,
    /// Links closed by the link layer at one of their ends.
    pub closes: Vec<Closed>,
    /// Virtual time zero.
    epoch: Instant,
    /// Virtual time passed since `epoch`.
    elapsed: Duration,
    timing: Timing,
    /// What the links write through.
    shared: Shared,
    /// The link directions with batches in flight, `(link, toward end)`.
    busy: BTreeSet<(usize, usize)>,
    timers: Timers,
    /// Each node's identity.
    keys: Vec<NodeKey>,
    /// Whether a batch may arrive in two pieces ([`Net::with_cut_batches`]).
    cut_batches: bool,
}

/// A mount key for the harness: cluster 1, mount `n`.
pub fn mount(n: u128) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(n) }
}

fn fail(msg: String) -> Failure {
    Failure(msg)
}

impl Net {
    /// `n` nodes, no links, RNG seeded with `seed`, the default [`Timing`].
    pub fn new(n: usize, seed: u64) -> Net {
        let epoch = epoch();
        let timing = Timing::default();
        let nodes =
            (0..n).map(|i| SimNode::with_role(id_of(i), Role::Router, epoch, &timing)).collect();
        Net {
            nodes,
            links: Vec::new(),
            rng: Rng::new(seed),
            outcomes: Outcomes::default(),
            served: Outcomes::default(),
            opened: 0,
            steps: 0,
            crashed_calls: 0,
            traced: Vec::new(),
            refusals: Vec::new(),
            closes: Vec::new(),
            epoch,
            elapsed: Duration::ZERO,
            timing,
            shared: Shared {
                pool: RefCell::new(Pool::new(POOL_LARGE, POOL_SMALL)),
                touched: RefCell::new(Vec::new()),
                reassembled: Cell::new(0),
                moved: Cell::new(0),
            },
            busy: BTreeSet::new(),
            timers: Timers::default(),
            keys: (0..n).map(node_key).collect(),
            cut_batches: false,
        }
    }

    /// The same network, with half the batches cut in two at a random byte, the rest arriving
    /// in a later step (as a receive buffer's end cuts a stream): records are put together
    /// from pieces, and a relay forwards such a record from the buffer it was put together in.
    pub fn with_cut_batches(mut self) -> Net {
        self.cut_batches = true;
        self
    }

    /// Records that arrived in two pieces and were put together.
    pub fn records_reassembled(&self) -> u64 {
        self.shared.reassembled.get()
    }

    /// Of the records forwarded whole, those sent on from the buffer they were put together in.
    pub fn records_moved(&self) -> u64 {
        self.shared.moved.get()
    }

    /// The same network with the links' keepalive and deadlines set by `timing` (and every
    /// node's hello saying its idle timeout): before anything else is done with it.
    pub fn with_timing(mut self, timing: Timing) -> Net {
        debug_assert!(self.links.is_empty(), "the timing is set before any link is made");
        self.timing = timing;
        let now = self.now();
        for sim in self.nodes.iter_mut() {
            *sim = sim.fresh(now, &timing);
        }
        self
    }

    /// The links' timing.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// The virtual time now: a millisecond per step taken, plus the time [`Net::run_for`]
    /// jumped over.
    pub fn now(&self) -> Instant {
        self.epoch + self.elapsed
    }

    /// `roles.len()` nodes with these roles (each says it in its hello).
    pub fn with_roles(roles: &[Role], seed: u64) -> Net {
        let mut net = Net::new(roles.len(), seed);
        for (i, &role) in roles.iter().enumerate() {
            net.nodes[i] = SimNode::with_role(id_of(i), role, net.now(), &net.timing);
        }
        net
    }

    /// A new plane of node `of` (DESIGN 7c.3): a node of its own in the simulator, with `of`'s
    /// id, key and role, as a worker of a node runs a `relay::Node` of its own. Links between two
    /// planes of one node ([`Net::connect`]) come up as sibling links. Returns its index.
    pub fn add_plane(&mut self, of: usize) -> usize {
        let (id, role) = (self.nodes[of].id, self.nodes[of].role);
        let homes = match &self.nodes[of].homes {
            Some(homes) => homes.clone(),
            None => {
                let homes = Arc::new(SharedClients::default());
                self.nodes[of].homes = Some(homes.clone());
                self.nodes[of].node.share_clients(homes.clone(), 0);
                homes
            }
        };
        let plane = self.nodes.iter().filter(|sim| sim.id == id).count() as u16;
        let mut sim = SimNode::with_role(id, role, self.now(), &self.timing);
        (sim.plane, sim.homes) = (plane, Some(homes));
        self.nodes.push(sim.fresh(self.now(), &self.timing));
        self.keys.push(self.keys[of].clone());
        self.nodes.len() - 1
    }

    /// Attaches mount `n` of `kind` at node `i`.
    pub fn attach_as(&mut self, i: usize, n: u128, kind: MountKind) -> Result<(), Failure> {
        self.nodes[i].mounts.push(mount(n));
        self.nodes[i]
            .node
            .attach(
                mount(n),
                kind,
                Label::EMPTY,
                &mut Lent::all_with(&mut self.links, &self.shared, i),
            )
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
        let links = &mut Lent::all_with(&mut self.links, &self.shared, i);
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
        (&mut self.nodes[i].node, Lent::all_with(&mut self.links, &self.shared, i))
    }

    /// Messages the nodes of `group` forwarded onto links between two of them (for the planes
    /// of one node: what they passed each other), each counted where it was sent.
    pub fn forwarded_within(&mut self, group: &[usize]) -> u64 {
        let mut total = 0;
        for &i in group {
            let inside: Vec<LinkId> = (0..self.links.len())
                .filter(|&l| self.links[l].ends.iter().all(|end| group.contains(end)))
                .filter(|&l| self.links[l].ends.contains(&i))
                .map(|l| LinkId(l as u64))
                .collect();
            let (node, mut links) = self.node_and_links(i);
            total += node
                .link_info(&mut links)
                .filter(|info| inside.contains(&info.link))
                .map(|info| info.counters.forwarded)
                .sum::<u64>();
        }
        total
    }

    /// Records the nodes forwarded whole ([`Node::forward_record`]), crashed nodes' aside.
    pub fn whole_records(&self) -> u64 {
        self.nodes.iter().map(|sim| sim.node.counters().whole_records).sum()
    }

    /// Calls node `i`'s application has open.
    pub fn open_calls(&self, i: usize) -> usize {
        self.nodes[i].open_calls.len()
    }

    /// Attaches mount `n` (a master) at node `i`.
    pub fn attach(&mut self, i: usize, n: u128) -> Result<(), Failure> {
        self.nodes[i].mounts.push(mount(n));
        self.nodes[i]
            .node
            .attach(
                mount(n),
                MountKind::Master,
                Label::EMPTY,
                &mut Lent::all_with(&mut self.links, &self.shared, i),
            )
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
        let links = &mut Lent::all_with(&mut self.links, &self.shared, i);
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
        let links = &mut Lent::all_with(&mut self.links, &self.shared, i);
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

    /// The counters of end `side` of link `l`.
    pub fn link_stats(&self, l: usize, side: usize) -> LinkStats {
        self.links[l].links[side].stats()
    }

    /// When end `side` of link `l` last received bytes (virtual time).
    pub fn heard(&self, l: usize, side: usize) -> Instant {
        self.links[l].heard[side]
    }

    /// Crashes node `i`: its links are cut and everything it held is forgotten, its calls with it
    /// (a dead process's calls end nowhere).
    pub fn crash(&mut self, i: usize) -> Result<(), Failure> {
        self.nodes[i].alive = false;
        self.crashed_calls += (self.nodes[i].open_calls.len() + self.nodes[i].traces.len()) as u64;
        for l in 0..self.links.len() {
            if self.links[l].up && self.links[l].ends.contains(&i) {
                self.cut(l)?;
            }
        }
        let mounts = std::mem::take(&mut self.nodes[i].mounts);
        if let Some(homes) = &self.nodes[i].homes {
            homes.forget_plane(self.nodes[i].plane);
        }
        self.nodes[i] = self.nodes[i].fresh(self.now(), &self.timing);
        self.nodes[i].alive = false;
        self.nodes[i].mounts = mounts;
        Ok(())
    }

    /// Restarts crashed node `i` with its mounts (not its links).
    pub fn restart(&mut self, i: usize) -> Result<(), Failure> {
        let mounts = std::mem::take(&mut self.nodes[i].mounts);
        self.nodes[i] = self.nodes[i].fresh(self.now(), &self.timing);
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
        self.busy.is_empty()
    }

    /// After input at node `i`: its application answers what arrived, the keepalives its
    /// notices ask for are set, and what its links wrote is put in flight.
    fn settle(&mut self, i: usize) -> Result<(), Failure> {
        self.app(i)?;
        self.notices(i);
        self.launch()
    }

    /// What node `i` asks of its links, as the daemon does it: a peer whose idle timeout is
    /// short hears from us at least every third of it.
    fn notices(&mut self, i: usize) {
        while let Some(notice) = self.nodes[i].node.poll_notice() {
            // A name is for people: the simulator has none to show.
            let Notice::PeerIdleTimeout { link, idle_timeout, .. } = notice else { continue };
            let needed = idle_timeout / 3;
            let Some(sim) = usize::try_from(link.0).ok().and_then(|l| self.links.get_mut(l)) else {
                continue;
            };
            if needed >= self.timing.keepalive || !sim.up {
                continue;
            }
            let side = usize::from(sim.ends[1] == i);
            let meta = sim.links[side].meta_mut();
            let ms = needed.as_millis().max(u128::from(KEEPALIVE_INTERVAL_MIN_MS));
            meta.keepalive_ms = u32::try_from(ms).unwrap_or(u32::MAX);
            meta.keepalive_changed = true;
            sim.touch(side, &self.shared);
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
                AppEvent::Message { call, payload, .. }
                    if sim.traces.contains_key(&key_of(call)) =>
                {
                    traces::report(&mut sim.traces, i, call, payload)?;
                }
                AppEvent::Ended { call, error } if sim.traces.contains_key(&key_of(call)) => {
                    self.traced.push(traces::ended(&mut sim.traces, i, call, error));
                }
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
                        self.outcomes.count(error);
                    } else if sim.served.remove(&key) {
                        self.served.count(error);
                    } else {
                        return Err(fail(format!(
                            "node {i}: call {call:?} ended twice or never opened"
                        )));
                    }
                }
            }
        }
        let answered = !answers.is_empty();
        let links = &mut Lent::all_with(&mut self.links, &self.shared, i);
        for (call, payload, close) in answers {
            let flags = if close { Flags::DELETE } else { Flags::NONE };
            let _ = sim.node.send(call, ECHO, &payload, flags, ErrorCode::NONE, links);
        }
        Ok(answered)
    }

    /// Record buffers the links took while the pool was empty (allocated then).
    pub fn pool_misses(&self) -> u64 {
        self.shared.pool.borrow().misses()
    }

    /// Once quiet: every call of a live node has ended at both ends, no circuit is left, every
    /// link holds only its span protocol, and every record buffer is back in the pool.
    pub fn check_quiet(&self) -> Result<(), Failure> {
        let pool = self.shared.pool.borrow();
        let (large, small) = (pool.available(), pool.available_small());
        if (large, small) != (POOL_LARGE, POOL_SMALL) {
            return Err(fail(format!(
                "record buffers held: {} large, {} small",
                POOL_LARGE - large,
                POOL_SMALL - small
            )));
        }
        for (i, sim) in self.nodes.iter().enumerate() {
            if !sim.alive {
                continue;
            }
            if !sim.open_calls.is_empty() || !sim.served.is_empty() || !sim.traces.is_empty() {
                return Err(fail(format!(
                    "node {i}: {} calls, {} served calls and {} traces never ended",
                    sim.open_calls.len(),
                    sim.served.len(),
                    sim.traces.len()
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
                if !link.links[side].is_established() {
                    continue;
                }
                if !self.nodes[node].node.peers().any(|(id, _)| id == LinkId(l as u64)) {
                    return Err(fail(format!("node {node} lost track of link {l}")));
                }
                let span = link.links[side].span();
                let expected = 2 + span.spans_received() + span.spans_sent();
                let held = link.links[side].transactions().len();
                if held != expected {
                    return Err(fail(format!(
                        "link {l} at node {node}: {held} transactions, {expected} expected"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Virtual time zero: the clock read once, as `Pair` does; from then on only durations are added.
/// Node `i`'s id, unless it is a plane of another node.
fn id_of(i: usize) -> NodeId {
    NodeId(i as u128 + 1)
}

#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

impl SimNode {
    /// A node started anew in this one's place: the same id, role and plane, sharing the same
    /// client directory, nothing else.
    fn fresh(&self, now: Instant, timing: &Timing) -> SimNode {
        let mut sim = SimNode::with_role(self.id, self.role, now, timing);
        if let Some(homes) = &self.homes {
            sim.node.share_clients(homes.clone(), self.plane);
        }
        (sim.plane, sim.homes) = (self.plane, self.homes.clone());
        sim
    }

    fn with_role(id: NodeId, role: Role, now: Instant, timing: &Timing) -> SimNode {
        let mut hello = Hello::new(role, Wants::all());
        let idle_ms = timing.periods.idle_timeout.as_millis();
        hello.idle_timeout_ms = u32::try_from(idle_ms).unwrap_or(u32::MAX);
        let mut node = Node::new(id, hello, now);
        // The harness's clients attach their mounts in cluster 1 (`mount`).
        node.serve_client_clusters([ClusterId(1)]);
        SimNode {
            node,
            id,
            role,
            alive: true,
            mounts: Vec::new(),
            plane: 0,
            homes: None,
            open_calls: BTreeMap::new(),
            served: BTreeSet::new(),
            traces: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
