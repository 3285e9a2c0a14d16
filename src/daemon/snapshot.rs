//! What a node's snapshot is made of: the rows and counters that `ringspan show` prints and the
//! metrics endpoint exports, sent over the control socket as JSON (so each type is read back as
//! well as written).

use serde::{Deserialize, Serialize};

use super::HostState;
use crate::ids::LinkId;
use crate::relay::{LinkInfo, Node, NodeCounters};
use crate::ring::WorkerCtx;
use crate::span::{NextHop, Role};

mod rows;

pub use rows::{Closes, Counters, Holder, LinkRow, PeerRow, Refusals, RouteRow};

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
    /// Local links accepted on the attach socket (applications attached; DESIGN 7g).
    #[serde(default)]
    pub attached: u64,
    /// Connections to the attach socket closed at once: the process's uid and gid not allowed,
    /// or `ATTACH_LINKS_MAX` local links held.
    #[serde(default)]
    pub attach_refused: u64,
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
            } else if info.granted == Role::Client && host.attached(info.link).is_none() {
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
                    attached: host.attached(info.link).map(|cred| cred.pid),
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
        // The application holding a mount of this node, if a local link attached it.
        let holder = |key| {
            let link = node.attached_by(key)?;
            let cred = host.attached(link)?;
            Some(Holder { pid: cred.pid, link: link.0 })
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
                    held_by: holder(key),
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
            attached: stats.attached,
            attach_refused: stats.attach_refused_cred
                + stats.attach_refused_max
                + stats.attach_refused_share,
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
            all.attached += plane.attached;
            all.attach_refused += plane.attach_refused;
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
