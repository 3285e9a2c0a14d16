//! A relay node on the engine: [`NodeService`] runs one [`crate::relay::Node`] on an engine worker,
//! keeps configured peers dialled, serves the built-in echo mounts, runs call loads for
//! clients, and builds a [`Snapshot`] for `ringspan show` and the metrics endpoint when one is
//! asked for (nothing is walked while nobody asks).
//!
//! A node runs on one worker: its links, span table and circuits share one core, so relaying
//! never hands a message across cores (a hand-off costs ~20 µs on this machine).

pub mod control;
mod handle;
mod metrics;
mod render;
mod request;
mod snapshot;
#[cfg(test)]
mod tests;

pub use handle::{Call, CallEvent, Handle, Incoming, Limits, PeerSpec, Settings};
pub use request::{LoadReport, Request, Shared};
pub use snapshot::{Closes, Counters, LinkRow, PeerRow, Refusals, RouteRow, Snapshot};

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use crate::cipher::PublicKey;
use crate::ids::{ClusterId, LinkId, NodeId};
use crate::relay::redial::{PeerState, Redial};
use crate::relay::{AppEvent, CallId, LinkSet, LinkUp, Node, NodeCounters, Notice};
use crate::ring::{CloseReason, LinkCtx, RecordIn, Service, WorkerCtx};
use crate::span::{Hello, Label, MountKey, MountKind, NextHop, Role};
use crate::txn::{Event, Received};
use crate::wire::{Command, ErrorCode, Flags};

/// The hasher of the maps consulted per message (as in `relay`): seeded per process, and several
/// times cheaper than the standard library's SipHash on these small keys.
type Hasher = foldhash::fast::RandomState;

/// The command ringspan's own calls use (`ringspan call`, the loads, the demos).
pub const CALL: Command = Command::new(1, 1);

/// A mount the node attaches at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Its identity.
    pub key: MountKey,
    /// Its kind.
    pub kind: MountKind,
    /// Its label.
    pub label: Label,
    /// Whether the node answers its calls itself, echoing each payload back.
    pub echo: bool,
}

/// What a node is set up with.
#[derive(Clone, Debug)]
pub struct Options {
    /// This node's id (from its key).
    pub id: NodeId,
    /// What it tells neighbours.
    pub hello: Hello,
    /// Mounts attached at start.
    pub mounts: Vec<MountSpec>,
    /// Peers to keep a link to.
    pub peers: Vec<(SocketAddr, PublicKey)>,
    /// The role each known key is granted (the most its hello may claim); any other key that
    /// gets in is a client.
    pub rights: HashMap<PublicKey, Role>,
    /// Clusters whose client mounts the node accepts.
    pub client_clusters: Vec<ClusterId>,
    /// A circuit carrying nothing for this long is aborted.
    pub circuit_idle: Duration,
    /// The node's own keepalive interval (a peer with a short idle timeout gets more).
    pub keepalive: Duration,
    /// First redial wait.
    pub redial_min: Duration,
    /// Longest redial wait.
    pub redial_max: Duration,
}

struct Load {
    mount: MountKey,
    left: u64,
    concurrency: u32,
    in_flight: u32,
    payload: Vec<u8>,
    report: LoadReport,
    reply: Sender<LoadReport>,
    started: HashMap<CallId, (Instant, bool), Hasher>,
}

/// The engine service running one node. See the module documentation.
pub struct NodeService {
    node: Node,
    echo: HashSet<MountKey, Hasher>,
    /// Mounts the application serves, and where their calls go.
    app_mounts: HashSet<MountKey, Hasher>,
    incoming: Option<Sender<Incoming>>,
    /// The application's calls (opened by it, or to its mounts) and where their events go.
    calls: HashMap<CallId, Sender<CallEvent>, Hasher>,
    redial: Redial,
    /// Links to close at the next tick, with why.
    to_close: Vec<(LinkId, ErrorCode)>,
    /// Links whose keepalive interval must be shortened for their peer's idle timeout.
    keepalives: Vec<(LinkId, Duration)>,
    /// Addresses a configured key linked from, to be trusted by the engine's admission.
    trusted: Vec<std::net::IpAddr>,
    /// Links being closed because the peer broke the protocol as the node checks it (their
    /// close is counted as misbehaviour, not as a local close).
    misbehaving: HashSet<LinkId, Hasher>,
    closes: Closes,
    loads: Vec<Load>,
    handshake_failures: u64,
    started: bool,
    options: Options,
    /// The time of the latest callback that told it (the engine's turn time).
    now: Instant,
}

impl NodeService {
    /// A service for `options`; calls to mounts the application attaches go to `incoming`.
    pub fn new(options: Options, incoming: Option<Sender<Incoming>>, now: Instant) -> NodeService {
        let mut redial = Redial::new(
            options.peers.iter().copied(),
            options.redial_min,
            options.redial_max,
            options.id.0 as u64,
            now,
        );
        if options.hello.role == Role::Client {
            // A client keeps one satellite (or node) at a time and fails over down its list.
            redial = redial.one_at_a_time();
        }
        let mut node = Node::new(options.id, options.hello.clone(), now);
        node.serve_client_clusters(options.client_clusters.iter().copied());
        node.set_circuit_idle(options.circuit_idle);
        NodeService {
            node,
            keepalives: Vec::new(),
            trusted: Vec::new(),
            echo: HashSet::default(),
            app_mounts: HashSet::default(),
            incoming,
            calls: Default::default(),
            redial,
            to_close: Vec::new(),
            misbehaving: HashSet::default(),
            closes: Closes::default(),
            loads: Vec::new(),
            handshake_failures: 0,
            started: false,
            options,
            now,
        }
    }

    fn refused(&mut self, link: LinkId, error: crate::Error) {
        tracing::warn!(%link, %error, "closing link: protocol error");
        if error.closes_link() {
            self.misbehaving.insert(link);
        }
        self.to_close.push((link, ErrorCode::REFUSED));
    }

    /// The role a peer's key is granted: its configured one, or client for a key let in only
    /// by `accept_unknown_keys`.
    fn granted(&self, key: &PublicKey) -> Role {
        self.options.rights.get(key).copied().unwrap_or(Role::Client)
    }

    /// Acts on what the node asks of the engine after an input.
    fn notices(&mut self) {
        while let Some(notice) = self.node.poll_notice() {
            match notice {
                Notice::PeerIdleTimeout { link, idle_timeout, granted } => {
                    // A third of the peer's idle timeout lets two keepalives be late.
                    let needed = idle_timeout / 3;
                    if needed < self.options.keepalive {
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
            }
        }
    }

    /// The local application: echo mounts answer, loads book their calls.
    fn app<L: LinkSet>(&mut self, now: Instant, links: &mut L) {
        // A call to an echo mount is answered with its payload; any other call to a mount here
        // is refused (no application serves it on this node). Both carry the call's command.
        let mut answers: Vec<(CallId, Command, Option<Vec<u8>>)> = Vec::new();
        while let Some(event) = self.node.poll_app() {
            match event {
                AppEvent::Opened { call, mount, command, flags, payload } => {
                    if self.app_mounts.contains(&mount)
                        && let Some(incoming) = &self.incoming
                    {
                        let (events, rx) = std::sync::mpsc::channel();
                        let handed = incoming.send(Incoming {
                            mount,
                            command,
                            payload: payload.to_vec(),
                            last: flags.contains(Flags::DELETE),
                            call,
                            events: rx,
                        });
                        if handed.is_ok() {
                            self.calls.insert(call, events);
                            continue;
                        }
                    }
                    let echo = self.echo.contains(&mount).then(|| payload.to_vec());
                    answers.push((call, command, echo));
                }
                AppEvent::Message { call, flags, payload, command, error }
                    if self.calls.contains_key(&call) =>
                {
                    if let Some(events) = self.calls.get(&call) {
                        let _ = events.send(CallEvent::Message {
                            command,
                            payload: payload.to_vec(),
                            last: flags.contains(Flags::DELETE),
                            abort: flags.contains(Flags::ABORT),
                            error,
                        });
                    }
                }
                AppEvent::Ended { call, error } if self.calls.contains_key(&call) => {
                    if let Some(events) = self.calls.remove(&call) {
                        let _ = events.send(CallEvent::Ended(error));
                    }
                }
                AppEvent::Message { call, flags, payload, .. } => {
                    for load in &mut self.loads {
                        if let Some((_, answered)) = load.started.get_mut(&call) {
                            if !flags.contains(Flags::ABORT) {
                                *answered = true;
                                if payload != &load.payload[..] {
                                    load.report.corrupted += 1;
                                }
                            }
                            break;
                        }
                    }
                }
                AppEvent::Ended { call, error } => {
                    for load in &mut self.loads {
                        if let Some((at, _)) = load.started.remove(&call) {
                            load.in_flight -= 1;
                            match error {
                                ErrorCode::NONE => {
                                    load.report.completed += 1;
                                    let us = now.saturating_duration_since(at).as_micros();
                                    load.report.rtt_us.push(us.min(u128::from(u32::MAX)) as u32);
                                }
                                ErrorCode::LOST_LINK => load.report.lost_link += 1,
                                ErrorCode::NO_ROUTE => load.report.no_route += 1,
                                _ => load.report.other += 1,
                            }
                            break;
                        }
                    }
                }
            }
        }
        for (call, command, echo) in answers {
            let _ = match echo {
                Some(payload) => {
                    self.node.send(call, command, &payload, Flags::DELETE, ErrorCode::NONE, links)
                }
                None => {
                    let refuse = Flags::ABORT | Flags::DELETE;
                    self.node.send(call, command, &[], refuse, ErrorCode::REFUSED, links)
                }
            };
        }
    }

    /// Keeps every load at its concurrency; reports the finished ones.
    fn drive_loads<L: LinkSet>(&mut self, now: Instant, links: &mut L) {
        let node = &mut self.node;
        for load in &mut self.loads {
            while load.left > 0 && load.in_flight < load.concurrency {
                load.left -= 1;
                match node.open(load.mount, CALL, &load.payload, Flags::DELETE, links) {
                    Ok(call) => {
                        load.in_flight += 1;
                        load.started.insert(call, (now, false));
                    }
                    Err(_) => {
                        load.report.no_route += 1;
                        load.report.not_sent += load.left;
                        load.left = 0;
                    }
                }
            }
        }
        let mut i = 0;
        while i < self.loads.len() {
            if self.loads[i].left == 0 && self.loads[i].in_flight == 0 {
                let load = self.loads.swap_remove(i);
                let _ = load.reply.send(load.report);
            } else {
                i += 1;
            }
        }
    }

    fn snapshot(&self, worker: &WorkerCtx<'_>) -> Snapshot {
        // Client links are counted, not listed: a satellite holds a great many.
        let is_client = |info: &crate::relay::LinkInfo| info.granted == Role::Client;
        let mut clients = 0;
        // Those of client links gone too: exported as counters, they never go down.
        let mut client_refusals = Refusals::of(&self.node.clients_gone());
        for info in self.node.link_info().filter(is_client) {
            clients += 1;
            client_refusals.add(Refusals::of(&info.counters));
        }
        let mut links: Vec<LinkRow> = self
            .node
            .link_info()
            .filter(|info| !is_client(info))
            .map(|info| {
                let stats = worker.link_stats(info.link).unwrap_or_default();
                LinkRow {
                    link: info.link.0,
                    peer: info.peer.to_string(),
                    role: info.role.map_or("-", Role::name).to_owned(),
                    granted: info.granted.name().to_owned(),
                    spans_in: info.spans_in,
                    spans_out: info.spans_out,
                    bytes_in: stats.bytes_in,
                    bytes_out: stats.bytes_out,
                    records_in: stats.records_in,
                    records_out: stats.records_out,
                    circuits_in: info.counters.circuits_in,
                    circuits_out: info.counters.circuits_out,
                    aborts_in: info.counters.aborts_in,
                    aborts_out: info.counters.aborts_out,
                    circuits_open: info.circuits_open,
                    refusals: Refusals::of(&info.counters),
                }
            })
            .collect();
        links.sort_by_key(|l| l.link);
        let peer_of = |link: LinkId| {
            links.iter().find(|l| l.link == link.0).map_or(String::new(), |l| l.peer.clone())
        };
        let hop = |next: NextHop| match next {
            NextHop::Local => "local".to_string(),
            NextHop::Neighbour(n) => {
                let link = Node::link_of(n);
                format!("{link} ({})", peer_of(link))
            }
        };
        let table = self.node.table();
        let mut routes: Vec<RouteRow> = table
            .mounts()
            .filter_map(|(key, route)| {
                let route = route?;
                Some(RouteRow {
                    cluster: format!("{:x}", key.cluster.0),
                    mount: format!("{:x}", key.mount.0),
                    kind: format!("{:?}", route.kind).to_lowercase(),
                    label: String::from_utf8_lossy(route.label.as_bytes()).into_owned(),
                    origin: route.origin.to_string(),
                    metric: route.metric.0,
                    via: hop(route.next_hop),
                    standby: table.standby(key).map(|s| hop(s.next_hop)),
                })
            })
            .collect();
        routes.sort_by(|a, b| (&a.cluster, &a.mount).cmp(&(&b.cluster, &b.mount)));
        let peers = self
            .redial
            .peers()
            .map(|(addr, key, state)| PeerRow {
                address: addr.to_string(),
                peer: key.node_id().to_string(),
                state: match state {
                    PeerState::Up(link) => format!("up ({link})"),
                    PeerState::Dialling => "dialling".into(),
                    PeerState::Waiting(_) => "waiting".into(),
                    PeerState::Standby => "standby".into(),
                },
            })
            .collect();
        let NodeCounters {
            relayed,
            served,
            opened,
            no_route,
            lost,
            refused,
            whole_records,
            limited,
            preempted,
            idle,
            duplicates,
        } = self.node.counters();
        let stats = worker.stats();
        Snapshot {
            node: self.node.id().to_string(),
            links,
            routes,
            peers,
            circuits: self.node.circuits(),
            counters: Counters {
                relayed,
                served,
                opened,
                no_route,
                lost,
                refused,
                whole_records,
                records_in_place: stats.records_in_place,
                limited,
                preempted,
                idle,
                duplicates,
            },
            handshake_failures: stats.handshake_failures,
            clients,
            accepted: stats.accepted,
            refused_max_links: stats.refused_max_links,
            refused_handshake_rate: stats.refused_handshake_rate,
            trusted_accepted: stats.trusted_accepted,
            trusted_refused: stats.trusted_refused_max_links + stats.trusted_refused_handshake_rate,
            closes: self.closes.clone(),
            client_refusals,
            client_mounts: self.node.clients().len(),
            tombstones: self.node.table().tombstones(),
            handshaking: stats.handshaking(),
        }
    }
}

impl Service for NodeService {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let id = link.id();
        let peer = link.peer();
        self.now = link.now();
        self.node.handle_timeout(self.now, link);
        let granted = self.granted(&peer);
        let dialled = link.dialled();
        if self.options.rights.contains_key(&peer)
            && let Some(addr) = link.remote_addr()
        {
            // A key the configuration names proved itself from there: connections from that
            // address keep their capacity during a flood of strangers.
            self.trusted.push(addr.ip());
        }
        match self.node.link_up(id, peer.node_id(), granted, dialled, link) {
            Ok(LinkUp::Up) => {
                self.redial.up(&peer, id);
                tracing::info!(%id, peer = %peer.node_id(), role = granted.name(), "link up");
            }
            Ok(LinkUp::Duplicate { keep }) => {
                match keep {
                    Some(keep) => {
                        self.redial.up(&peer, keep);
                        tracing::warn!(%id, %keep, peer = %peer.node_id(), "a second link to a linked node: closed (if the node is not dialling us itself, its key is used by two nodes)");
                    }
                    None => tracing::warn!(%id, "a link to this node itself: closed"),
                }
                self.to_close.push((id, ErrorCode::DUPLICATE));
            }
            Ok(LinkUp::Replaces { old }) => {
                self.redial.up(&peer, id);
                tracing::info!(%id, %old, peer = %peer.node_id(), "link up, replacing a duplicate");
                self.to_close.push((old, ErrorCode::DUPLICATE));
            }
            Err(error) => self.refused(id, error),
        }
    }

    fn record(&mut self, link: &mut LinkCtx<'_>, record: &mut RecordIn<'_>) -> Option<usize> {
        let id = link.id();
        let LinkCtx { txn, peers, .. } = link;
        self.node.forward_record(id, txn, peers, record)
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let id = link.id();
        self.now = link.now();
        self.node.handle_timeout(self.now, link);
        if let Err(error) = self.node.received(id, link, received) {
            self.refused(id, error);
        }
        self.notices();
    }

    fn event(&mut self, link: &mut LinkCtx<'_>, event: Event) {
        let id = link.id();
        self.now = link.now();
        self.node.handle_timeout(self.now, link);
        if let Err(error) = self.node.event(id, link, event) {
            self.refused(id, error);
        }
        self.notices();
    }

    fn link_down(&mut self, worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        tracing::info!(%link, %reason, "link down");
        if self.misbehaving.remove(&link) {
            self.closes.misbehaved += 1;
        } else {
            self.closes.count(reason);
        }
        self.node.link_down(link, worker);
        match reason {
            // The peer refused the link (a duplicate of one it keeps, or its hello): dialling
            // it again at once would be refused again.
            CloseReason::PeerSaid(ErrorCode::DUPLICATE | ErrorCode::REFUSED) => {
                self.redial.refused(link, self.now)
            }
            _ => self.redial.down(link, self.now),
        }
    }

    fn dial_failed(&mut self, _link: Option<LinkId>, addr: SocketAddr, reason: CloseReason) {
        tracing::debug!(%addr, %reason, "dial failed");
        self.handshake_failures += 1;
        self.redial.failed(addr, self.now);
    }

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
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
            for spec in self.options.mounts.clone() {
                if let Err(error) = self.node.attach(spec.key, spec.kind, spec.label, worker) {
                    tracing::error!(%error, "cannot attach a configured mount");
                }
                if spec.echo {
                    self.echo.insert(spec.key);
                }
            }
        }
        while let Some((addr, key)) = self.redial.poll_dial(now) {
            tracing::debug!(%addr, "dialling");
            worker.connect(addr, Some(key));
        }
        if let Some(at) = self.redial.next_deadline() {
            worker.wake_at(at);
        }
        self.app(now, worker);
        self.drive_loads(now, worker);
        self.app(now, worker);
        for (link, code) in self.to_close.drain(..) {
            // The peer is told why: a refusal of what it sent, or a duplicate link.
            worker.close_with_notice(link, code);
        }
        if let Some(at) = self.node.poll_timeout() {
            worker.wake_at(at);
        }
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        let Ok(request) = command.downcast::<Request>() else { return };
        match *request {
            Request::Load { mount, calls, concurrency, size, reply } => {
                self.loads.push(Load {
                    mount,
                    left: calls,
                    concurrency: concurrency.max(1),
                    in_flight: 0,
                    payload: (0..size).map(|i| i as u8).collect(),
                    report: LoadReport::default(),
                    reply,
                    started: Default::default(),
                });
            }
            Request::Attach { mount, kind, label, reply } => {
                let result = self.node.attach(mount, kind, label, worker);
                if result.is_ok() {
                    self.app_mounts.insert(mount);
                }
                let _ = reply.send(result);
            }
            Request::Detach { mount, reply } => {
                let result = self.node.detach(mount, worker);
                self.app_mounts.remove(&mount);
                let _ = reply.send(result);
            }
            Request::Open { mount, command, payload, last, client, events, reply } => {
                let flags = if last { Flags::DELETE } else { Flags::NONE };
                let result = match client {
                    None => self.node.open(mount, command, &payload, flags, worker),
                    Some(client) => {
                        self.node.open_client(mount, client, command, &payload, flags, worker)
                    }
                };
                if let Ok(call) = result {
                    self.calls.insert(call, events);
                }
                let _ = reply.send(result);
            }
            Request::Cut { peer, hold } => {
                let until = worker.now() + hold;
                let keys: Vec<PublicKey> = self
                    .redial
                    .peers()
                    .filter(|(_, key, _)| key.node_id() == peer)
                    .map(|(_, key, _)| key)
                    .collect();
                for key in keys {
                    self.redial.hold(&key, until);
                }
                let links: Vec<LinkId> =
                    self.node.link_info().filter(|l| l.peer == peer).map(|l| l.link).collect();
                for link in links {
                    tracing::info!(%link, %peer, "cutting the link on request");
                    worker.close(link, ErrorCode::LOST_LINK);
                }
            }
            Request::Snapshot { reply } => {
                let _ = reply.send(self.snapshot(worker));
            }
            Request::Send { call, command, payload, flags, error } => {
                if let Err(e) = self.node.send(call, command, &payload, flags, error, worker) {
                    tracing::debug!(%e, "application send refused");
                }
            }
        }
        self.tick(worker);
    }
}
