//! One engine service hosting a relay node and an application: [`Host`] runs a
//! [`relay::Node`](crate::relay::Node) on an engine worker and does everything a node needs of
//! its worker whatever it is for; an [`App`] does the rest.
//!
//! The host keeps, beside the node ([`HostState`]):
//!
//! - the configured peers dialled and redialled ([`Redial`]; a client keeps one at a time and
//!   fails over down its list), told when links come up, go down, are refused or fail to dial;
//!   peers given by host name resolved before each dial, off the worker (`resolve.rs`);
//! - the rights bound to keys: each link's granted role is its key's configured one (a peer's
//!   `role`, an `allow` entry's), or client for a key let in by `accept_unknown_keys`; the
//!   addresses a configured key linked from, handed to the engine's admission as trusted;
//! - links to close at the end of the turn (a protocol error, a duplicate), with the peer told
//!   why; which of them misbehaved; why links went down ([`Closes`]); dials that failed;
//! - the keepalive interval a peer's short idle timeout asks for (`Node::poll_notice`);
//! - the configured mounts, attached at the first tick; the node's time, moved on with every
//!   input (`Node::handle_timeout`), and its next deadline, which wakes the worker.
//!
//! The application is what differs: the daemon's ([`DaemonApp`](super::DaemonApp): echo
//! mounts, the mount API's calls, call loads, control requests) and the benchmark's
//! (`ringspan-bench hops`: a sender or a receiver). It sees the node through [`HostState`] once
//! per turn ([`App::tick`], where it drains `Node::poll_app`), hears of links coming and going,
//! and takes the commands other threads send its worker.
//!
//! Everything is built from [`Settings`] as they are: the configuration file parses into them,
//! and the daemon, the demo and the benchmarks make them in code.
//!
//! # Planes
//!
//! A node on several workers runs a host on each, each with a node of its own — a *plane*
//! (DESIGN 7c.3) — joined to the others by the engine's internal links, which its node takes up
//! as links to itself ([`Node::sibling_up`]). Each plane dials its share of the configured peers
//! ([`Plane`]); accepted links land on whichever worker accepted them. Plane 0 attaches the
//! configured mounts and runs the application's work; the others reach them through their
//! internal links.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::planes::{Claim, Linked, PlaneCommand, dial_plan};
use super::refusals::{Refusal, RefusalLog};
use super::resolve::{Lookups, Resolved, Resolver};
use super::{Closes, MountSpec, Settings};
use crate::cipher::PublicKey;
use crate::ids::{LinkId, NodeId};
use crate::limits::LANE_QUEUE_RECORDS;
use crate::relay::redial::Redial;
use crate::relay::{LinkUp, Node, Notice};
use crate::ring::{CloseReason, LinkCtx, PeerCred, RecordIn, Service, WorkerCtx};
use crate::span::{Hello, Label, Role, SharedClients, Wants};
use crate::txn::{Event, Received};
use crate::wire::ErrorCode;

mod attach;
mod reload;

pub(super) use reload::{PlaneReload, mount_text};
use reload::{Rights, dials, names};

/// The hasher of the maps consulted per message (as in `relay`): seeded per process, and several
/// times cheaper than the standard library's SipHash on these small keys.
pub(super) type Hasher = foldhash::fast::RandomState;

/// What a [`Host`] runs beside its node: the part that differs between the daemon and the
/// benchmarks. Every hook runs on the node's worker, with the time of the engine's turn.
pub trait App: 'static {
    /// A link finished its handshake with the peer whose key is `peer`, before the node hears
    /// of it: `false` refuses it (closed at the end of the turn with `REFUSED`; the node never
    /// sees it). Every link offered here is later reported to [`App::link_down`], refused or
    /// not.
    fn link_up(&mut self, _link: LinkId, _peer: &PublicKey) -> bool {
        true
    }

    /// A link that was up is gone (after the node has handled its loss).
    fn link_down(&mut self, _link: LinkId, _reason: CloseReason) {}

    /// The node's settings were reloaded ([`Shared::reload`](super::Shared::reload)), after
    /// the host took them: take what the application keeps of them.
    fn reload(&mut self, _settings: &Settings) {}

    /// Once per turn of the worker, after the node's timers, the dials and the configured
    /// mounts, and after each command: drain `host.node.poll_app()` and move the work on.
    fn tick(&mut self, host: &mut HostState, worker: &mut WorkerCtx<'_>);

    /// A command for the application from another thread (whatever `ring::Command::Service`
    /// carried). The host ticks after it.
    fn command(
        &mut self,
        _host: &mut HostState,
        _worker: &mut WorkerCtx<'_>,
        _command: Box<dyn Any + Send>,
    ) {
    }
}

/// Which plane of a node a host runs, of how many (DESIGN 7c.3), and what the planes share.
#[derive(Clone, Debug)]
pub struct Plane {
    /// This plane's index: its worker's.
    pub index: usize,
    /// The node's planes: its workers.
    pub of: usize,
    /// Which link holds each linked peer, across the planes.
    linked: Arc<Linked>,
    /// The clients' mounts, across the planes.
    clients: Arc<SharedClients>,
    /// The node's resolver of peers' host names, across the planes.
    resolver: Arc<Resolver>,
}

impl Plane {
    /// The only plane of a node on one worker.
    pub fn one() -> Plane {
        Plane {
            index: 0,
            of: 1,
            linked: Arc::default(),
            clients: Arc::default(),
            resolver: Arc::default(),
        }
    }

    /// The planes of a node on `of` workers, by index, sharing what they must.
    pub fn all(of: usize) -> Vec<Plane> {
        let linked: Arc<Linked> = Arc::default();
        let clients: Arc<SharedClients> = Arc::default();
        let resolver: Arc<Resolver> = Arc::default();
        (0..of.max(1))
            .map(|index| Plane {
                index,
                of,
                linked: linked.clone(),
                clients: clients.clone(),
                resolver: resolver.clone(),
            })
            .collect()
    }

    /// Whether this is the plane that attaches the configured mounts and runs the
    /// application's work (plane 0).
    pub fn is_first(&self) -> bool {
        self.index == 0
    }
}

/// The node and what the host keeps around it; what an [`App`] is handed. See the module
/// documentation.
pub struct HostState {
    /// The relay node.
    pub node: Node,
    redial: Redial,
    /// The named peers' resolutions.
    lookups: Lookups,
    /// The role each known key is granted (the most its hello may claim), and whether any
    /// other key may get in (as a client).
    rights: Rights,
    /// The configuration's names of peers, by node id.
    names: HashMap<NodeId, String>,
    /// The names the peers of this plane's links announced in their hellos (keys granted more
    /// than a client only), while their links are up.
    announced: HashMap<LinkId, Label, Hasher>,
    /// The node's own keepalive interval (a peer with a short idle timeout gets more).
    keepalive: Duration,
    /// The configured mounts: attached at the first tick (the first plane's only); from then
    /// on those the node attached (not one an application held at a reload), kept to tell what
    /// a reload changes.
    mounts: Vec<MountSpec>,
    started: bool,
    /// Links to close at the end of the turn, with why.
    to_close: Vec<(LinkId, ErrorCode)>,
    /// Links whose keepalive interval must be shortened for their peer's idle timeout.
    keepalives: Vec<(LinkId, Duration)>,
    /// Addresses a configured key linked from, to be trusted by the engine's admission.
    trusted: Vec<IpAddr>,
    /// Links being closed because the peer broke the protocol as the node checks it (their
    /// close is counted as misbehaviour, not as a local close).
    misbehaving: HashSet<LinkId, Hasher>,
    /// Which plane of the node this is.
    plane: Plane,
    /// The internal links to the node's other planes.
    siblings: Vec<LinkId>,
    /// Links closed because a link on another plane to the same node was kept (counted with
    /// the node's own duplicates).
    duplicates: u64,
    /// What to tell other planes at the end of the turn.
    to_planes: Vec<(usize, PlaneCommand)>,
    closes: Closes,
    dial_failures: u64,
    /// Links refused for who the peer is or what it said, logged within a budget.
    refusals: RefusalLog,
    /// The time of the latest callback that told it (the engine's turn time).
    now: Instant,
    /// The role granted to local links (`Settings::attach_role`).
    attach_role: Role,
    /// The local links up (applications attached through the attach socket), with their
    /// processes' credentials. At most `ATTACH_LINKS_MAX` (the engine's bound).
    attached: HashMap<LinkId, PeerCred, Hasher>,
}

impl HostState {
    fn new(settings: &Settings, now: Instant, plane: Plane) -> HostState {
        let id = settings.identity.public_key().node_id();
        let mut hello = Hello::new(settings.role, Wants::all());
        hello.idle_timeout_ms =
            u32::try_from(settings.limits.idle_timeout.as_millis()).unwrap_or(u32::MAX).max(1);
        if let Some(name) = &settings.name {
            match hello.clone().named(name) {
                Ok(named) => hello = named,
                Err(error) => tracing::warn!(%error, "the node's name is not announced"),
            }
        }
        let plan = dial_plan(&settings.peers, plane.of, None);
        let mut redial = Redial::new(
            dials(settings, &plan, plane.index),
            settings.limits.redial_min,
            settings.limits.redial_max,
            id.0 as u64,
            now,
        );
        if settings.role == Role::Client {
            // A client keeps one satellite (or node) at a time and fails over down its list.
            redial = redial.one_at_a_time();
        }
        let mut node = Node::new(id, hello, now);
        node.serve_client_clusters(settings.client_clusters.iter().copied());
        if plane.of > 1 {
            // `Settings::planes` keeps a node to fewer workers than that.
            let index = u16::try_from(plane.index).unwrap_or(u16::MAX);
            node.share_clients(plane.clients.clone(), index);
        }
        node.set_circuit_idle(settings.limits.circuit_idle);
        HostState {
            node,
            redial,
            lookups: Lookups::new(plane.resolver.clone()),
            rights: Rights::of(settings),
            names: names(settings),
            announced: HashMap::default(),
            keepalive: settings.limits.keepalive,
            mounts: if plane.is_first() { settings.mounts.clone() } else { Vec::new() },
            started: false,
            to_close: Vec::new(),
            keepalives: Vec::new(),
            trusted: Vec::new(),
            misbehaving: HashSet::default(),
            plane,
            siblings: Vec::new(),
            duplicates: 0,
            to_planes: Vec::new(),
            closes: Closes::default(),
            dial_failures: 0,
            refusals: RefusalLog::default(),
            now,
            attach_role: settings.attach_role,
            attached: HashMap::default(),
        }
    }

    /// The time of the latest input (the engine's turn time).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The configuration's name of the peer `node`, if it gives one.
    pub fn name_of(&self, node: NodeId) -> Option<&str> {
        self.names.get(&node).map(String::as_str)
    }

    /// The name the peer on `link` announced in its hello, if it did (and its key is granted
    /// more than a client). Said by the peer, not proven: the configuration's name wins.
    pub fn announced_name(&self, link: LinkId) -> Option<&str> {
        let name = self.announced.get(&link)?;
        std::str::from_utf8(name.as_bytes()).ok()
    }

    /// Which plane of its node this host runs.
    pub fn plane(&self) -> &Plane {
        &self.plane
    }

    /// Second links to a linked node closed, this plane's and across planes.
    pub fn duplicates(&self) -> u64 {
        self.node.counters().duplicates + self.duplicates
    }

    /// The internal links to the node's other planes.
    pub fn siblings(&self) -> &[LinkId] {
        &self.siblings
    }

    /// The configured peers this plane dials, and their dialling state.
    pub fn redial(&self) -> &Redial {
        &self.redial
    }

    /// Why links that were up went down, since the node started.
    pub fn closes(&self) -> &Closes {
        &self.closes
    }

    /// Dials that failed before their handshake completed.
    pub fn dial_failures(&self) -> u64 {
        self.dial_failures
    }

    /// The role a peer's key is granted: its configured one, or client for a key let in only
    /// by `accept_unknown_keys`.
    pub fn granted(&self, key: &PublicKey) -> Role {
        self.rights.of_key(key).unwrap_or(Role::Client)
    }

    /// Closes `link` at the end of the turn for `error` of its peer's (a refusal, counted as
    /// misbehaviour if the error closes links), logged with the peer's key and address within
    /// the refusal log's budget.
    fn refuse(&mut self, link: &LinkCtx<'_>, error: crate::Error) {
        let id = link.id();
        tracing::debug!(link = %id, %error, "closing link: protocol error");
        let reason = Refusal::of(&error);
        self.refusals.log(reason, &link.peer(), link.remote_addr(), Some(&error), self.now);
        if error.closes_link() {
            self.misbehaving.insert(id);
        }
        self.to_close.push((id, ErrorCode::REFUSED));
    }

    /// Cuts the links to the node `peer` now (no notice: as a failure looks) and does not
    /// redial it for `hold`.
    pub fn cut(&mut self, peer: NodeId, hold: Duration, worker: &mut WorkerCtx<'_>) {
        let until = worker.now() + hold;
        let keys: Vec<PublicKey> =
            self.redial.peers().filter(|p| p.key.node_id() == peer).map(|p| p.key).collect();
        for key in keys {
            self.redial.hold(&key, until);
        }
        let links: Vec<LinkId> =
            self.node.peers().filter(|&(_, p)| p == peer).map(|(link, _)| link).collect();
        for link in links {
            tracing::info!(%link, %peer, "cutting the link on request");
            worker.close(link, ErrorCode::LOST_LINK);
        }
    }

    /// What another plane of the node asks.
    fn plane_command(&mut self, command: PlaneCommand, worker: &mut WorkerCtx<'_>) {
        match command {
            PlaneCommand::Close { link } => {
                tracing::info!(%link, "closing a link another worker's link to the same node replaced");
                worker.close_with_notice(link, ErrorCode::DUPLICATE);
            }
            PlaneCommand::Gone { link, reason } => self.redial.down(link, reason, self.now),
        }
    }

    /// Acts on what the node asks of the engine after an input.
    fn notices(&mut self) {
        while let Some(notice) = self.node.poll_notice() {
            match notice {
                Notice::PeerIdleTimeout { link, idle_timeout, granted } => {
                    // A third of the peer's idle timeout lets two keepalives be late.
                    let needed = idle_timeout / 3;
                    if needed < self.keepalive {
                        let peer_idle_ms = idle_timeout.as_millis() as u64;
                        let keepalive_ms = needed.as_millis() as u64;
                        const SHORT: &str =
                            "the peer's idle timeout is short: keeping its link alive more often";
                        // A configured peer's is worth the operator's attention (the pair's
                        // settings disagree); a client's is one line per client, of very many.
                        if granted == Role::Client {
                            tracing::debug!(%link, peer_idle_ms, keepalive_ms, "{SHORT}");
                        } else {
                            tracing::warn!(%link, peer_idle_ms, keepalive_ms, "{SHORT}");
                        }
                        self.keepalives.push((link, needed));
                    }
                }
                Notice::PeerName { link, name } => {
                    let node = self.node.peer_of(link).unwrap_or_default();
                    let announced = String::from_utf8_lossy(name.as_bytes());
                    let configured = self.name_of(node).unwrap_or("-");
                    tracing::info!(%link, peer = %node, configured, "the peer announces its name: {announced:?}");
                    self.announced.insert(link, name);
                }
            }
        }
    }

    /// What comes before the application in a tick: the node's time and notices, trusted
    /// addresses, the configured mounts (at the first), dials.
    fn before_app(&mut self, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        self.now = now;
        self.node.handle_timeout(now, worker);
        self.notices();
        for (link, interval) in self.keepalives.drain(..) {
            worker.set_keepalive(link, interval);
        }
        for ip in self.trusted.drain(..) {
            worker.trust_source(ip);
        }
        if !self.started {
            self.started = true;
            // Only those attached count as attached (a reload tries the others again).
            for spec in std::mem::take(&mut self.mounts) {
                match self.node.attach(spec.key, spec.kind, spec.label, worker) {
                    Ok(()) => self.mounts.push(spec),
                    Err(error) => tracing::error!(%error, "cannot attach a configured mount"),
                }
            }
        }
        self.lookups.dial(&mut self.redial, worker);
        if let Some(at) = self.redial.next_deadline() {
            worker.wake_at(at);
        }
    }

    /// What comes after it: the links to close, the commands to other planes, the node's next
    /// deadline.
    fn after_app(&mut self, worker: &mut WorkerCtx<'_>) {
        for (link, code) in self.to_close.drain(..) {
            // The peer is told why: a refusal of what it sent, or a duplicate link.
            worker.close_with_notice(link, code);
        }
        for (plane, command) in self.to_planes.drain(..) {
            // Rare (a duplicate link, a peer's link gone): a mailbox command each.
            let command = crate::ring::Command::Service(Box::new(command));
            if worker.send_to(plane, command).is_err() {
                tracing::warn!(plane, "another worker's mailbox is full: a plane command is lost");
            }
        }
        if let Some(at) = self.node.poll_timeout() {
            worker.wake_at(at);
        }
    }
}

/// The engine service hosting a relay node and an application. See the module documentation.
pub struct Host<A: App> {
    state: HostState,
    app: A,
}

impl<A: App> Host<A> {
    /// A host for the node `settings` describe, running `app`, at time `now`. Of the settings it
    /// takes the identity's node id, the role, the peers (dialled if they have an address), the
    /// rights (`peers` and `allow`), the client clusters, the mounts (attached at the first
    /// tick) and the limits the node and the redialler use; the engine's own (the listener,
    /// buffers, admission) are the caller's to give the engine.
    pub fn new(settings: &Settings, app: A, now: Instant) -> Host<A> {
        Host::on_plane(settings, app, now, Plane::one())
    }

    /// The host of `plane` of the node `settings` describe (see [`Plane`]): it dials its share
    /// of the peers, and only the first plane attaches the configured mounts.
    pub fn on_plane(settings: &Settings, app: A, now: Instant, plane: Plane) -> Host<A> {
        Host { state: HostState::new(settings, now, plane), app }
    }

    /// The node and what the host keeps around it.
    pub fn state(&self) -> &HostState {
        &self.state
    }

    /// The same, to change.
    pub fn state_mut(&mut self) -> &mut HostState {
        &mut self.state
    }

    /// The application.
    pub fn app(&self) -> &A {
        &self.app
    }

    /// The same, to change.
    pub fn app_mut(&mut self) -> &mut A {
        &mut self.app
    }

    /// Both, to change together (as the hooks get them).
    pub fn parts_mut(&mut self) -> (&mut HostState, &mut A) {
        (&mut self.state, &mut self.app)
    }
}

impl<A: App> Service for Host<A> {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let id = link.id();
        let peer = link.peer();
        let s = &mut self.state;
        s.now = link.now();
        s.node.handle_timeout(s.now, link);
        if let Some(other) = link.sibling() {
            // Another plane of this node: no rights to check, nothing to redial.
            let other_plane = u16::try_from(other).unwrap_or(u16::MAX);
            match s.node.sibling_up(id, other_plane, link) {
                Ok(()) => {
                    s.siblings.push(id);
                    tracing::debug!(%id, plane = s.plane.index, other, "internal link up");
                }
                Err(error) => tracing::error!(%id, %error, "cannot take up an internal link"),
            }
            return;
        }
        if !self.app.link_up(id, &peer) {
            tracing::debug!(%id, peer = %peer.node_id(), "link refused by the application");
            s.refusals.log(Refusal::Application, &peer, link.remote_addr(), None, s.now);
            s.to_close.push((id, ErrorCode::REFUSED));
            return;
        }
        if let Some(cred) = link.attached() {
            return s.attached_up(link, cred);
        }
        let Some(granted) = s.rights.of_key(&peer) else {
            // Its handshake began before a reload took its key off the allow list.
            tracing::debug!(%id, peer = %peer.node_id(), "link refused: its key is no longer allowed");
            s.refusals.log(Refusal::KeyNotAllowed, &peer, link.remote_addr(), None, s.now);
            s.to_close.push((id, ErrorCode::REFUSED));
            return;
        };
        let dialled = link.dialled();
        let (us, node) = (s.node.id(), peer.node_id());
        if s.rights.configured(&peer)
            && let Some(addr) = link.remote_addr()
        {
            // A key the configuration names proved itself from there: connections from that
            // address keep their capacity during a flood of strangers.
            s.trusted.push(addr.ip());
        }
        // Another plane may hold a link to the same node: one link per adjacency, node-wide (a
        // node on one worker has its own node's rule alone).
        let planes = s.plane.of > 1;
        let claim = if planes {
            s.plane.linked.claim(us, node, id, dialled, s.plane.index)
        } else {
            Claim::Take
        };
        match claim {
            Claim::Take => {}
            Claim::Replaces { old } => {
                s.duplicates += 1;
                tracing::info!(%id, %old, peer = %node, "link up, replacing a duplicate on another worker");
                s.to_planes.push((old.worker(), PlaneCommand::Close { link: old }));
            }
            Claim::Keep { keep } => {
                s.duplicates += 1;
                s.redial.up(&peer, keep, s.now);
                tracing::warn!(%id, %keep, peer = %node, "a second link to a linked node: closed (if the node is not dialling us itself, its key is used by two nodes)");
                s.to_close.push((id, ErrorCode::DUPLICATE));
                return;
            }
        }
        let outcome = s.node.link_up(id, node, granted, dialled, link);
        if planes && matches!(outcome, Ok(LinkUp::Duplicate { .. }) | Err(_)) {
            // Not taken up after all: the planes forget it (unless another link is the peer's).
            s.plane.linked.gone(node, id);
        }
        match outcome {
            Ok(LinkUp::Up) => {
                s.redial.up(&peer, id, s.now);
                if planes && granted != Role::Client {
                    // What other planes hand this link comes in batches as deep as a lane's:
                    // room for that, made now rather than grown under load.
                    link.reserve_send_queue(LANE_QUEUE_RECORDS);
                }
                let name = s.name_of(node).unwrap_or("-");
                tracing::info!(%id, peer = %node, name, role = granted.name(), "link up");
            }
            Ok(LinkUp::Duplicate { keep }) => {
                match keep {
                    Some(keep) => {
                        s.redial.up(&peer, keep, s.now);
                        tracing::warn!(%id, %keep, peer = %peer.node_id(), "a second link to a linked node: closed (if the node is not dialling us itself, its key is used by two nodes)");
                    }
                    None => tracing::warn!(%id, "a link to this node itself: closed"),
                }
                s.to_close.push((id, ErrorCode::DUPLICATE));
            }
            Ok(LinkUp::Replaces { old }) => {
                if planes {
                    s.plane.linked.kept(node, id, dialled);
                }
                s.redial.up(&peer, id, s.now);
                tracing::info!(%id, %old, peer = %peer.node_id(), "link up, replacing a duplicate");
                s.to_close.push((old, ErrorCode::DUPLICATE));
            }
            Err(error) => s.refuse(link, error),
        }
    }

    fn record(&mut self, link: &mut LinkCtx<'_>, record: &mut RecordIn<'_>) -> Option<usize> {
        let id = link.id();
        let LinkCtx { txn, peers, .. } = link;
        self.state.node.forward_record(id, txn, peers, record)
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let id = link.id();
        let s = &mut self.state;
        s.now = link.now();
        s.node.handle_timeout(s.now, link);
        if let Err(error) = s.node.received(id, link, received) {
            s.refuse(link, error);
        }
        s.notices();
    }

    fn event(&mut self, link: &mut LinkCtx<'_>, event: Event) {
        let id = link.id();
        let s = &mut self.state;
        s.now = link.now();
        s.node.handle_timeout(s.now, link);
        if let Err(error) = s.node.event(id, link, event) {
            s.refuse(link, error);
        }
        s.notices();
    }

    fn link_down(&mut self, worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        let s = &mut self.state;
        if let Some(at) = s.siblings.iter().position(|&l| l == link) {
            s.siblings.swap_remove(at);
            tracing::debug!(%link, %reason, "internal link down");
            s.node.link_down(link, worker);
            return;
        }
        tracing::info!(%link, %reason, "link down");
        s.announced.remove(&link);
        let attached = s.attached.remove(&link).is_some();
        if s.misbehaving.remove(&link) {
            s.closes.misbehaved += 1;
        } else {
            s.closes.count(reason);
        }
        if s.plane.of > 1
            && let Some(peer) = s.node.peer_of(link)
        {
            // The planes whose redialler counted on this link redial the peer now.
            for plane in s.plane.linked.gone(peer, link) {
                s.to_planes.push((plane, PlaneCommand::Gone { link, reason }));
            }
        }
        s.node.link_down(link, worker);
        // A link the peer refused, or that went down before it was stable, backs off. (A local
        // link is not redialled: the application comes back if it wants to.)
        if !attached {
            s.redial.down(link, reason, s.now);
        }
        self.app.link_down(link, reason);
    }

    fn dial_failed(&mut self, _link: Option<LinkId>, addr: SocketAddr, reason: CloseReason) {
        tracing::debug!(%addr, %reason, "dial failed");
        self.state.dial_failures += 1;
        self.state.redial.failed(addr, reason, self.state.now);
    }

    fn key_refused(
        &mut self,
        worker: &mut WorkerCtx<'_>,
        key: PublicKey,
        addr: Option<SocketAddr>,
        reason: CloseReason,
    ) {
        let s = &mut self.state;
        s.now = worker.now();
        let refusal = match reason {
            CloseReason::Protocol(error) => Refusal::of(&error),
            _ => Refusal::Protocol,
        };
        s.refusals.log(refusal, &key, addr, None, s.now);
    }

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        self.state.before_app(worker);
        self.app.tick(&mut self.state, worker);
        self.state.after_app(worker);
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn Any + Send>) {
        let command = match command.downcast::<PlaneCommand>() {
            Ok(command) => {
                self.state.plane_command(*command, worker);
                return self.tick(worker);
            }
            Err(command) => command,
        };
        let command = match command.downcast::<Resolved>() {
            Ok(resolved) => {
                let s = &mut self.state;
                s.lookups.answer(*resolved, &mut s.redial, worker);
                return self.tick(worker);
            }
            Err(command) => command,
        };
        match command.downcast::<PlaneReload>() {
            Ok(reload) => {
                let changes = self.state.reload(&reload, worker);
                self.app.reload(&reload.settings);
                let _ = reload.reply.send(changes);
            }
            Err(command) => self.app.command(&mut self.state, worker, command),
        }
        self.tick(worker);
    }
}
