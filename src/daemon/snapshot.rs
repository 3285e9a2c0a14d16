//! What a node's snapshot is made of: the rows and counters that `ringspan show` prints and the
//! metrics endpoint exports, sent over the control socket as JSON (so each type is read back as
//! well as written).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::HostState;
use crate::ids::LinkId;
use crate::relay::redial::{Failure, LastError, PeerAddr, PeerState, PeerStatus};
use crate::relay::{LinkInfo, Node, NodeCounters};
use crate::ring::{CloseReason, WorkerCtx};
use crate::span::{NextHop, Role};

/// What `ringspan show` and the metrics endpoint see, built by the node's worker when asked.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// This node's id.
    pub node: String,
    /// Established links.
    pub links: Vec<LinkRow>,
    /// Known mounts and their routes.
    pub routes: Vec<RouteRow>,
    /// Configured peers and their dialling state.
    pub peers: Vec<PeerRow>,
    /// Circuits and calls open.
    pub circuits: usize,
    /// Node-wide counters.
    pub counters: Counters,
    /// Handshakes that failed on this node's worker.
    pub handshake_failures: u64,
    /// Client links (counted here, not listed in `links`).
    #[serde(default)]
    pub clients: usize,
    /// Accepted connections admitted: handshakes started on them.
    #[serde(default)]
    pub accepted: u64,
    /// Accepted connections from untrusted addresses reset at once because the node held as
    /// many links as strangers may take (`max_links` less the reserved ones).
    #[serde(default)]
    pub refused_max_links: u64,
    /// Accepted connections from untrusted addresses reset at once because
    /// `max_handshakes_per_sec` was used up.
    #[serde(default)]
    pub refused_handshake_rate: u64,
    /// Accepted connections from trusted addresses admitted (also in `accepted`).
    #[serde(default)]
    pub trusted_accepted: u64,
    /// Accepted connections from trusted addresses reset: `max_links` reached, or both handshake
    /// buckets empty.
    #[serde(default)]
    pub trusted_refused: u64,
    /// Why links that were up went down, client links included.
    #[serde(default)]
    pub closes: Closes,
    /// What the client links (not listed in `links`), up or gone, had refused, in all.
    #[serde(default)]
    pub client_refusals: Refusals,
    /// Clients' mounts held in the client directory.
    #[serde(default)]
    pub client_mounts: usize,
    /// Draining (`ringspan drain`, or SIGTERM with `drain_grace_ms`): every span withdrawn
    /// from its neighbours, circuits carried to their end (DESIGN 7c.5).
    #[serde(default)]
    pub draining: bool,
    /// Draining and done: no circuit open, and every neighbour has answered the withdrawal.
    #[serde(default)]
    pub drained: bool,
    /// Mounts that went away, remembered for their feasibility distance.
    #[serde(default)]
    pub tombstones: usize,
    /// Links still connecting or handshaking, accepted or dialled.
    #[serde(default)]
    pub handshaking: u64,
    /// Records forwarded from the receive buffers they arrived in whose sends are not complete.
    #[serde(default)]
    pub lent_records: u64,
    /// The most such records at once since the node started.
    #[serde(default)]
    pub lent_records_max: u64,
    /// Receive buffers out of the kernel's hands (being handled, or holding lent records).
    #[serde(default)]
    pub recv_buffers_held: u64,
    /// Each worker the node runs on (a plane of it, DESIGN 7c.3), and its load.
    #[serde(default)]
    pub workers: Vec<WorkerRow>,
}

/// One worker of a node, and its load.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WorkerRow {
    /// Its index.
    pub worker: usize,
    /// Links to other nodes on it (clients included).
    pub links: usize,
    /// Of those, client links.
    pub clients: usize,
    /// Circuits and calls its plane holds.
    pub circuits: usize,
    /// Messages received, from every link of it.
    pub messages_in: u64,
    /// Bytes received from sockets.
    pub bytes_in: u64,
    /// Bytes sent on sockets.
    pub bytes_out: u64,
    /// Connections it accepted and let start a handshake.
    pub accepted: u64,
    /// Links that completed their handshake on it.
    pub established: u64,
    /// Bytes it handed to other workers through its internal links.
    pub internal_bytes_out: u64,
    /// Bytes other workers handed to it.
    pub internal_bytes_in: u64,
    /// Times it stopped reading its sockets because another worker lagged behind what it
    /// handed it (DESIGN 7c.3).
    #[serde(default)]
    pub lane_pauses: u64,
}

impl Snapshot {
    /// The snapshot of a host's node now, with its worker's link and admission counters.
    pub fn of(host: &HostState, worker: &mut WorkerCtx<'_>) -> Snapshot {
        let node = &host.node;
        // Client links are counted, not listed: a satellite holds a great many.
        let mut clients = 0;
        // Those of client links gone too: exported as counters, they never go down.
        let mut client_refusals = Refusals::of(&node.clients_gone());
        let mut others: Vec<LinkInfo> = Vec::new();
        let siblings = host.siblings();
        // What the internal links carried: in the worker's row.
        let (mut internal_bytes_in, mut internal_bytes_out) = (0, 0);
        for &link in siblings {
            let stats = worker.link_stats(link).unwrap_or_default();
            internal_bytes_in += stats.bytes_in;
            internal_bytes_out += stats.bytes_out;
        }
        // Circuits that came in from another plane: that plane counts them.
        let from_planes = node.circuits_from_planes();
        // What each link's span state says is read from the link, on the worker.
        for info in node.link_info(worker) {
            if siblings.contains(&info.link) {
                continue;
            } else if info.granted == Role::Client {
                clients += 1;
                client_refusals.add(Refusals::of(&info.counters));
            } else {
                others.push(info);
            }
        }
        let mut links: Vec<LinkRow> = others
            .into_iter()
            .map(|info| {
                let stats = worker.link_stats(info.link).unwrap_or_default();
                LinkRow {
                    link: info.link.0,
                    worker: info.link.worker(),
                    peer: info.peer.to_string(),
                    name: host.name_of(info.peer).map(str::to_owned),
                    announced: host.announced_name(info.link).map(str::to_owned),
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
        // The node a path goes to first, as its own field (`show cluster` draws it).
        let first = |next: NextHop| match next {
            NextHop::Local => None,
            NextHop::Neighbour(n) => Some(peer_of(Node::link_of(n))).filter(|p| !p.is_empty()),
        };
        // A path through an internal link is another plane's path, shown by that plane.
        let outside = |next: &NextHop| match next {
            NextHop::Local => true,
            NextHop::Neighbour(n) => !siblings.contains(&Node::link_of(*n)),
        };
        let table = node.table();
        let mut routes: Vec<RouteRow> = table
            .mounts()
            .filter_map(|(key, route)| {
                let mut paths = [route, table.standby(key)]
                    .into_iter()
                    .flatten()
                    .filter(|path| outside(&path.next_hop));
                let best = paths.next()?;
                let standby = paths.next();
                Some(RouteRow {
                    cluster: format!("{:x}", key.cluster.0),
                    mount: format!("{:x}", key.mount.0),
                    kind: format!("{:?}", best.kind).to_lowercase(),
                    label: String::from_utf8_lossy(best.label.as_bytes()).into_owned(),
                    origin: best.origin.to_string(),
                    origin_name: host.name_of(best.origin).map(str::to_owned),
                    metric: best.metric.0,
                    via: hop(best.next_hop),
                    via_node: first(best.next_hop),
                    standby: standby.map(|s| hop(s.next_hop)),
                    standby_node: standby.and_then(|s| first(s.next_hop)),
                    standby_metric: standby.map(|s| s.metric.0),
                })
            })
            .collect();
        routes.sort_by(|a, b| (&a.cluster, &a.mount).cmp(&(&b.cluster, &b.mount)));
        let now = worker.now();
        let peers = host
            .redial()
            .peers()
            .map(|p| {
                let mut row = PeerRow::of(&p, now);
                row.name = host.name_of(p.key.node_id()).map(str::to_owned);
                row
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
            duplicates: _,
            traced,
        } = node.counters();
        let duplicates = host.duplicates();
        let stats = worker.stats();
        let workers = vec![WorkerRow {
            worker: worker.index(),
            links: links.len() + clients,
            clients,
            circuits: node.circuits() - from_planes,
            messages_in: stats.messages_in,
            bytes_in: stats.bytes_in - internal_bytes_in,
            bytes_out: stats.bytes_out - internal_bytes_out,
            accepted: stats.accepted,
            established: stats.established,
            internal_bytes_out,
            internal_bytes_in,
            lane_pauses: stats.lane_pauses,
        }];
        Snapshot {
            node: node.id().to_string(),
            links,
            routes,
            peers,
            circuits: node.circuits() - from_planes,
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
                traced,
            },
            handshake_failures: stats.handshake_failures,
            clients,
            accepted: stats.accepted,
            refused_max_links: stats.refused_max_links,
            refused_handshake_rate: stats.refused_handshake_rate,
            trusted_accepted: stats.trusted_accepted,
            trusted_refused: stats.trusted_refused_max_links + stats.trusted_refused_handshake_rate,
            closes: host.closes().clone(),
            client_refusals,
            client_mounts: node.clients().len(),
            draining: table.is_draining(),
            drained: node.drained(worker),
            tombstones: table.tombstones(),
            handshaking: stats.handshaking(),
            lent_records: stats.lent_records,
            lent_records_max: stats.lent_records_max,
            recv_buffers_held: stats.recv_buffers_held,
            workers,
        }
    }

    /// The snapshot of a node on several workers, from each plane's (DESIGN 7c.3): links, peers
    /// and workers listed together, counters summed, and each mount's route the best any plane
    /// has (the next best as its standby). A circuit that crosses planes is counted once, by the
    /// plane it came in on.
    pub fn merge(mut planes: Vec<Snapshot>) -> Snapshot {
        if planes.len() <= 1 {
            return planes.pop().unwrap_or_default();
        }
        // In plane order, whatever order they answered in: of two paths as long, the lower
        // plane's is shown as the active one, the same at every asking.
        planes.sort_by_key(|p| p.workers.first().map(|w| w.worker));
        let mut all = Snapshot { node: planes[0].node.clone(), ..Snapshot::default() };
        let mut routes: Vec<RouteRow> = Vec::new();
        all.drained = planes.iter().all(|p| p.drained);
        all.draining = planes.iter().any(|p| p.draining);
        for plane in planes {
            all.links.extend(plane.links);
            all.peers.extend(plane.peers);
            all.workers.extend(plane.workers);
            routes.extend(plane.routes);
            all.circuits += plane.circuits;
            all.counters.add(&plane.counters);
            all.handshake_failures += plane.handshake_failures;
            all.clients += plane.clients;
            all.accepted += plane.accepted;
            all.refused_max_links += plane.refused_max_links;
            all.refused_handshake_rate += plane.refused_handshake_rate;
            all.trusted_accepted += plane.trusted_accepted;
            all.trusted_refused += plane.trusted_refused;
            all.closes.add(&plane.closes);
            all.client_refusals.add(plane.client_refusals);
            all.client_mounts += plane.client_mounts;
            all.tombstones = all.tombstones.max(plane.tombstones);
            all.handshaking += plane.handshaking;
            all.lent_records += plane.lent_records;
            all.lent_records_max += plane.lent_records_max;
            all.recv_buffers_held += plane.recv_buffers_held;
        }
        all.links.sort_by_key(|l| l.link);
        all.peers.sort_by(|a, b| a.address.cmp(&b.address));
        all.workers.sort_by_key(|w| w.worker);
        // Each mount once: the plane with the shortest path shows it, the next plane's path
        // (or its own standby) standing by.
        routes.sort_by(|a, b| {
            (&a.cluster, &a.mount, a.metric).cmp(&(&b.cluster, &b.mount, b.metric))
        });
        for row in routes {
            match all.routes.last_mut() {
                Some(last) if (&last.cluster, &last.mount) == (&row.cluster, &row.mount) => {
                    if last.standby.is_none() && row.via != last.via {
                        last.standby = Some(row.via);
                        last.standby_node = row.via_node;
                        last.standby_metric = Some(row.metric);
                    }
                }
                _ => all.routes.push(row),
            }
        }
        all
    }
}

/// What a link's peer was refused or lost for exceeding its share (one link's, or the client
/// links' in all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// Circuits refused for a limit: its share of the node's circuits or of the next link's,
    /// or its calls as a client.
    pub circuits_limited: u64,
    /// Its circuits aborted to make room for a peer holding fewer.
    pub circuits_preempted: u64,
    /// Its circuits aborted after carrying nothing for the idle bound.
    pub circuits_idle: u64,
    /// Spans refused past its share or a full table.
    pub spans_limited: u64,
    /// Client spans refused: a cluster not served here, or a mount another client holds.
    pub spans_refused: u64,
    /// Seqno requests that waited for its budget.
    pub seqno_delayed: u64,
}

impl Refusals {
    pub(super) fn of(c: &crate::relay::LinkCounters) -> Refusals {
        Refusals {
            circuits_limited: c.circuits_limited,
            circuits_preempted: c.circuits_preempted,
            circuits_idle: c.circuits_idle,
            spans_limited: c.spans_limited,
            spans_refused: c.spans_refused,
            seqno_delayed: c.seqno_delayed,
        }
    }

    pub(super) fn add(&mut self, other: Refusals) {
        self.circuits_limited += other.circuits_limited;
        self.circuits_preempted += other.circuits_preempted;
        self.circuits_idle += other.circuits_idle;
        self.spans_limited += other.spans_limited;
        self.spans_refused += other.spans_refused;
        self.seqno_delayed += other.seqno_delayed;
    }
}

/// Links that were up and went down, by cause, since the node started. Links that fail before
/// their handshake completes are in [`Snapshot::handshake_failures`] instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closes {
    /// The peer's fault, found by the engine or by the node: bytes that do not parse, a record
    /// that fails authentication, a rule or bound of the transaction, span or client protocol.
    pub misbehaved: u64,
    /// The peer closed the connection, or closed the link with a notice.
    pub peer_closed: u64,
    /// Nothing received within the idle timeout.
    pub idle: u64,
    /// The peer did not read: a send stalled, or the send queue was full.
    pub not_reading: u64,
    /// A socket error.
    pub io: u64,
    /// Closed by this node: on request, at shutdown, or on an error of its own.
    pub local: u64,
}

impl Closes {
    fn add(&mut self, other: &Closes) {
        self.misbehaved += other.misbehaved;
        self.peer_closed += other.peer_closed;
        self.idle += other.idle;
        self.not_reading += other.not_reading;
        self.io += other.io;
        self.local += other.local;
    }

    pub(super) fn count(&mut self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Protocol(error) if error.closes_link() => &mut self.misbehaved,
            CloseReason::PeerClosed | CloseReason::PeerSaid(_) => &mut self.peer_closed,
            CloseReason::IdleTimeout => &mut self.idle,
            CloseReason::SendStall | CloseReason::SendQueueFull => &mut self.not_reading,
            CloseReason::Io(_) => &mut self.io,
            CloseReason::Protocol(_) | CloseReason::Local(_) | CloseReason::Internal(_) => {
                &mut self.local
            }
        };
        *counter += 1;
    }
}

/// Node-wide counters, as shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Circuits relayed through this node.
    pub relayed: u64,
    /// Calls served by local mounts.
    pub served: u64,
    /// Calls opened by local clients.
    pub opened: u64,
    /// Transactions refused for lack of a route.
    pub no_route: u64,
    /// Circuit ends that lost a link.
    pub lost: u64,
    /// Transactions refused by policy (a client calling another client, not inside a span).
    #[serde(default)]
    pub refused: u64,
    /// Received records forwarded whole: every message in them continued on one link.
    #[serde(default)]
    pub whole_records: u64,
    /// Of those, records sent on from where they lay: the receive buffer they arrived in, or the
    /// buffer they were put together in (no copy).
    #[serde(default)]
    pub records_in_place: u64,
    /// Circuits refused for a limit (a peer's share, a client's calls).
    #[serde(default)]
    pub limited: u64,
    /// Circuits aborted to make room for a peer holding fewer.
    #[serde(default)]
    pub preempted: u64,
    /// Circuits aborted after carrying nothing for the idle bound.
    #[serde(default)]
    pub idle: u64,
    /// Second links to an already linked node, closed.
    #[serde(default)]
    pub duplicates: u64,
    /// Traces this node ended itself with its report (`ringspan trace`, PROTOCOL.md 8.10): it
    /// holds the mount, is the target, or is at the hop limit (a trace passed on is relayed).
    #[serde(default)]
    pub traced: u64,
}

impl Counters {
    fn add(&mut self, other: &Counters) {
        self.relayed += other.relayed;
        self.served += other.served;
        self.opened += other.opened;
        self.no_route += other.no_route;
        self.lost += other.lost;
        self.refused += other.refused;
        self.whole_records += other.whole_records;
        self.records_in_place += other.records_in_place;
        self.limited += other.limited;
        self.preempted += other.preempted;
        self.idle += other.idle;
        self.duplicates += other.duplicates;
        self.traced += other.traced;
    }
}

/// One link, as shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkRow {
    /// The engine's link id.
    pub link: u64,
    /// The worker it lives on.
    #[serde(default)]
    pub worker: usize,
    /// The peer's node id.
    pub peer: String,
    /// The configuration's name for the peer, if it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The name the peer announced in its hello, if it did (a key granted more than a client):
    /// said by the peer, not proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
    /// What the peer said it is.
    pub role: String,
    /// What the peer's key is granted (the most it may say it is).
    #[serde(default)]
    pub granted: String,
    /// Spans it has open to us / we to it.
    pub spans_in: usize,
    /// Spans we have open to it.
    pub spans_out: usize,
    /// Bytes received / sent.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Records opened / sealed.
    pub records_in: u64,
    /// Records sealed.
    pub records_out: u64,
    /// Circuits the peer opened through this link.
    pub circuits_in: u64,
    /// Circuits we opened on it.
    pub circuits_out: u64,
    /// Forced closes received.
    pub aborts_in: u64,
    /// Forced closes sent.
    pub aborts_out: u64,
    /// Circuits and calls we have open on it.
    #[serde(default)]
    pub circuits_open: usize,
    /// What its peer was refused or lost for exceeding its share.
    #[serde(default)]
    pub refusals: Refusals,
}

/// One mount, as shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouteRow {
    /// Cluster id, hex.
    pub cluster: String,
    /// Mount id, hex.
    pub mount: String,
    /// Kind.
    pub kind: String,
    /// Label.
    pub label: String,
    /// Originating node.
    pub origin: String,
    /// The configuration's name for the originating node, if it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_name: Option<String>,
    /// Hops.
    pub metric: u16,
    /// "local" or the link id and peer of the best path.
    pub via: String,
    /// The node the best path goes to first (none if the mount is attached here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_node: Option<String>,
    /// The standby path's link and peer, if any.
    pub standby: Option<String>,
    /// The node the standby path goes to first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_node: Option<String>,
    /// The standby path's hops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_metric: Option<u16>,
}

/// One configured peer, as shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerRow {
    /// Its address, as configured: an IP address and port, or a host name and port.
    pub address: String,
    /// For a peer given by host name, the address its latest dial went to (what the name
    /// resolved to then); `None` before its name first resolved, and for an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// The configuration's name for it, if it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its node id.
    pub peer: String,
    /// "up (link N)" (linked), "resolving" (its host name, for a dial), "dialling", "waiting"
    /// (for the next dial), "refused" (waiting, after the peer refused the link or ended it
    /// before it was stable, as a node that does not allow this node's key does), or "standby"
    /// (failover mode: another peer is in use).
    pub state: String,
    /// Its key, base64 (as `ringspan pubkey` prints it).
    #[serde(default)]
    pub key: String,
    /// While waiting (or refused): how long until its next dial, in milliseconds.
    #[serde(default)]
    pub next_dial_ms: Option<u64>,
    /// The latest wait scheduled before dialling it, in milliseconds: the backoff step for
    /// its failures in a row, jittered down by up to half.
    #[serde(default)]
    pub backoff_ms: u64,
    /// Dials and links that failed in a row (a link counts when the peer refused it or it went
    /// down before it was stable).
    #[serde(default)]
    pub failures: u32,
    /// How its latest dial or link ended, if one has.
    #[serde(default)]
    pub last_error: Option<String>,
    /// How long ago that was, in milliseconds.
    #[serde(default)]
    pub last_error_ago_ms: Option<u64>,
}

impl PeerRow {
    /// The row of a configured peer as its redialler sees it at `now`.
    fn of(p: &PeerStatus, now: Instant) -> PeerRow {
        let refused = p.last_error.as_ref().is_some_and(LastError::is_refusal);
        let (state, next_dial_ms) = match p.state {
            PeerState::Up(link) => (format!("up ({link})"), None),
            PeerState::Resolving => ("resolving".into(), None),
            PeerState::Dialling => ("dialling".into(), None),
            PeerState::Waiting(at) => {
                let state = if refused { "refused" } else { "waiting" };
                (state.into(), Some(millis(at.saturating_duration_since(now))))
            }
            PeerState::Standby => ("standby".into(), None),
        };
        let resolved = match p.addr {
            PeerAddr::Name { .. } => p.dialled.map(|addr| addr.to_string()),
            PeerAddr::Ip(_) => None,
        };
        PeerRow {
            address: p.addr.to_string(),
            resolved,
            name: None,
            peer: p.key.node_id().to_string(),
            state,
            key: p.key.to_base64(),
            next_dial_ms,
            backoff_ms: millis(p.wait),
            failures: p.failures,
            last_error: p.last_error.as_ref().map(describe),
            last_error_ago_ms: p
                .last_error
                .as_ref()
                .map(|e| millis(now.saturating_duration_since(e.at))),
        }
    }
}

/// A peer's latest error in words: the reason, whether it was a dial or a link, and for a link
/// ended by the peer before it was stable, what that usually means. A name that did not
/// resolve says so itself (`cannot resolve NAME: ...`).
fn describe(e: &LastError) -> String {
    let reason = match &e.reason {
        Failure::Closed(reason) => *reason,
        Failure::Unresolved(why) => return why.clone(),
    };
    match e.lived {
        None => format!("dial failed: {reason}"),
        Some(lived) => {
            let lived = millis(lived);
            let hint = match reason {
                CloseReason::PeerClosed | CloseReason::Io(_) if e.is_refusal() => {
                    " (the peer may not allow this node's key)"
                }
                _ => "",
            };
            format!("link down {lived} ms after its handshake: {reason}{hint}")
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Limit, Malformed, Misuse, Violation};
    use crate::wire::ErrorCode;

    #[test]
    fn peer_rows_say_state_backoff_and_last_error() {
        use crate::cipher::PublicKey;
        use crate::relay::redial::PeerStatus;
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let now = Instant::now();
        let ms = Duration::from_millis;
        let refused = PeerStatus {
            addr: "127.0.0.1:7".parse().unwrap(),
            dialled: Some("127.0.0.1:7".parse().unwrap()),
            key: PublicKey([1; 32]),
            state: PeerState::Waiting(now + ms(900)),
            failures: 3,
            wait: ms(1100),
            last_error: Some(LastError {
                reason: Failure::Closed(CloseReason::PeerClosed),
                at: now - ms(200),
                lived: Some(ms(4)),
            }),
        };
        let row = PeerRow::of(&refused, now);
        assert_eq!(row.state, "refused");
        assert_eq!(row.key, PublicKey([1; 32]).to_base64());
        assert_eq!((row.next_dial_ms, row.backoff_ms, row.failures), (Some(900), 1100, 3));
        assert_eq!(
            row.last_error.as_deref(),
            Some(
                "link down 4 ms after its handshake: peer closed the connection (the peer may \
                 not allow this node's key)"
            )
        );
        assert_eq!(row.last_error_ago_ms, Some(200));
        assert_eq!((row.address.as_str(), row.resolved), ("127.0.0.1:7", None));
        // A dial refused by the kernel: waiting, not refused by the peer.
        let failed = PeerStatus {
            last_error: Some(LastError {
                reason: Failure::Closed(CloseReason::Io(111)),
                at: now,
                lived: None,
            }),
            ..refused.clone()
        };
        let row = PeerRow::of(&failed, now);
        assert_eq!(row.state, "waiting");
        assert!(
            row.last_error.unwrap().starts_with("dial failed: socket error: Connection refused")
        );
        // The peer said REFUSED after a long while: still a refusal.
        let told = PeerStatus {
            last_error: Some(LastError {
                reason: Failure::Closed(CloseReason::PeerSaid(ErrorCode::REFUSED)),
                at: now,
                lived: Some(ms(60_000)),
            }),
            ..refused.clone()
        };
        assert_eq!(PeerRow::of(&told, now).state, "refused");
        // A name that did not resolve: waiting, the resolver's reason as the last error.
        let unresolved = PeerStatus {
            addr: "b.invalid:7".parse().unwrap(),
            dialled: None,
            last_error: Some(LastError {
                reason: Failure::Unresolved("cannot resolve b.invalid: no such name".into()),
                at: now,
                lived: None,
            }),
            ..refused.clone()
        };
        let row = PeerRow::of(&unresolved, now);
        assert_eq!((row.address.as_str(), row.state.as_str()), ("b.invalid:7", "waiting"));
        assert_eq!(row.last_error.as_deref(), Some("cannot resolve b.invalid: no such name"));
        assert_eq!(row.resolved, None);
        // A name that resolved: where its dial went.
        let resolving = PeerStatus {
            state: PeerState::Resolving,
            dialled: Some("127.0.0.1:7".parse().unwrap()),
            ..unresolved
        };
        let row = PeerRow::of(&resolving, now);
        assert_eq!(
            (row.state.as_str(), row.resolved.as_deref()),
            ("resolving", Some("127.0.0.1:7"))
        );
        let up = PeerStatus { state: PeerState::Up(LinkId(3)), last_error: None, ..refused };
        let row = PeerRow::of(&up, now);
        assert_eq!((row.state.as_str(), row.next_dial_ms), ("up (link 0:3.0)", None));
    }

    #[test]
    fn a_peer_row_from_an_older_node_reads_with_defaults() {
        let old = r#"{"address":"127.0.0.1:1","peer":"bbbb1111","state":"waiting"}"#;
        let row: PeerRow = serde_json::from_str(old).unwrap();
        assert_eq!((row.state.as_str(), row.failures, row.last_error), ("waiting", 0, None));
    }

    #[test]
    fn closes_are_counted_by_whose_fault_they_are() {
        let mut closes = Closes::default();
        for reason in [
            CloseReason::Protocol(crate::Error::Decrypt),
            CloseReason::Protocol(Malformed::MessagePadding.into()),
            CloseReason::Protocol(Violation::LinkProtocol("a second LINK_CONN").into()),
            CloseReason::Protocol(Limit::PeerTransactions(1).into()),
            CloseReason::PeerClosed,
            CloseReason::PeerSaid(ErrorCode::LOST_LINK),
            CloseReason::IdleTimeout,
            CloseReason::SendStall,
            CloseReason::SendQueueFull,
            // ECONNRESET.
            CloseReason::Io(104),
            CloseReason::Local(ErrorCode::REFUSED),
            CloseReason::Internal("bug"),
            // Not the peer's fault: a local misuse that reached a close.
            CloseReason::Protocol(Misuse::LinkDown.into()),
        ] {
            closes.count(reason);
        }
        assert_eq!(
            closes,
            Closes { misbehaved: 4, peer_closed: 2, idle: 1, not_reading: 2, io: 1, local: 3 }
        );
    }
}
