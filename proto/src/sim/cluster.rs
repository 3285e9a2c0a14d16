//! `Cluster`: many span tables joined by in-memory links, on virtual time, with seeded faults
//! and invariant checks after every delivered message.
//!
//! Each link has a fixed latency, so messages on one link arrive in the order sent. Deliveries
//! wait in a priority queue ordered by (arrival time, sequence number), and the tables' own
//! deadlines (seqno requests waiting for a neighbour's budget, coalesced seqno raises) are
//! taken in virtual time too: a run is fully determined by its inputs. Cutting a link, crashing a node or partitioning the graph takes the
//! affected links down at once: both ends' tables are told, and messages in flight on them are
//! lost. Restoring brings them up again (a restarted node starts with an empty table and
//! re-attaches its mounts, with seqnos starting over).
//!
//! Invariants:
//! - after every step, no forwarding loop: following selected next hops from the node whose
//!   table just changed either reaches the mount's originator or stops, never revisits a node,
//!   and only crosses live links (after a topology change, every mount is checked from every
//!   node);
//! - once quiet (no message in flight), in every partition, every node has a route to every
//!   mount attached in its partition, that route leads to the originator in exactly its metric
//!   of hops, and no node knows anything of a mount that is detached or attached elsewhere.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::fmt;
use std::time::{Duration, Instant};

use crate::ids::{NeighbourId, NodeId};
use crate::span::{Label, MountKey, MountKind, NextHop, Outbound, Role, Table, Wants};

/// An invariant that did not hold, or a table that refused an input, described.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Counters over a cluster's life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered to a table.
    pub delivered: u64,
    /// Messages lost because their link went down while they were in flight.
    pub lost: u64,
    /// Seqno requests delivered (included in `delivered`).
    pub requests: u64,
    /// Longest causal chain of messages since the last quiet point: a fault's direct output is
    /// round 1, what a round-`k` message causes is round `k + 1`.
    pub rounds: u32,
}

#[derive(Debug)]
struct Node {
    table: Table,
    alive: bool,
    /// What is attached here (re-attached after a restart).
    mounts: Vec<(MountKey, MountKind)>,
    /// The deadline of its table pushed on [`Cluster::timers`], if one is.
    timer_ms: Option<u64>,
}

#[derive(Debug)]
struct Link {
    a: u32,
    b: u32,
    latency_ms: u64,
    up: bool,
    /// Bumped whenever the link stops carrying: messages stamped with an older epoch are lost.
    epoch: u32,
    /// Whether both tables have the other end as a neighbour.
    live: bool,
}

#[derive(Debug)]
struct Delivery {
    at_ms: u64,
    seq: u64,
    link: usize,
    epoch: u32,
    from: u32,
    to: u32,
    msg: Outbound,
    round: u32,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}
impl Eq for Delivery {}
impl PartialOrd for Delivery {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delivery {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

/// Many span tables on in-memory links. See the module documentation.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Node>,
    links: Vec<Link>,
    /// Per node: neighbour index to link index.
    adjacency: Vec<BTreeMap<u32, usize>>,
    queue: BinaryHeap<Reverse<Delivery>>,
    now_ms: u64,
    /// Virtual time zero, as an `Instant` for the tables.
    epoch: Instant,
    /// Tables' deadlines: (virtual ms, causal round, node). A node's earliest is pushed at
    /// each flush; a stale entry fires a harmless early `handle_timeout`.
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    seq: u64,
    stats: Stats,
    last_quiet_rounds: u32,
}

impl Cluster {
    /// Nodes `0..nodes` (a node's neighbour id for another node is that node's index), linked
    /// by `edges` with the given latencies (one per edge), all up and advertising to each other.
    pub fn new(
        nodes: usize,
        edges: &[(u32, u32)],
        latencies_ms: &[u64],
    ) -> Result<Cluster, Failure> {
        let mut cluster = Cluster {
            nodes: (0..nodes)
                .map(|i| Node {
                    table: Table::new(node_id(i as u32)),
                    alive: true,
                    mounts: vec![],
                    timer_ms: None,
                })
                .collect(),
            links: Vec::with_capacity(edges.len()),
            adjacency: vec![BTreeMap::new(); nodes],
            queue: BinaryHeap::new(),
            now_ms: 0,
            epoch: epoch(),
            timers: BinaryHeap::new(),
            seq: 0,
            stats: Stats::default(),
            last_quiet_rounds: 0,
        };
        for (i, &(a, b)) in edges.iter().enumerate() {
            let latency_ms = latencies_ms.get(i).copied().unwrap_or(1).max(1);
            cluster.links.push(Link { a, b, latency_ms, up: true, epoch: 0, live: false });
            cluster.adjacency[a as usize].insert(b, i);
            cluster.adjacency[b as usize].insert(a, i);
        }
        for link in 0..cluster.links.len() {
            cluster.refresh_link(link)?;
        }
        Ok(cluster)
    }

    /// Nodes in the cluster (alive or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Links in the cluster (up or not).
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// A node's span table.
    pub fn table(&self, node: u32) -> &Table {
        &self.nodes[node as usize].table
    }

    /// Whether a node is running.
    pub fn is_alive(&self, node: u32) -> bool {
        self.nodes[node as usize].alive
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Virtual time now.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// Messages in flight.
    pub fn in_flight(&self) -> usize {
        self.queue.len()
    }

    /// The ends of a link, and whether it is administratively up.
    pub fn link(&self, link: usize) -> (u32, u32, bool) {
        let l = &self.links[link];
        (l.a, l.b, l.up)
    }

    /// The link between two nodes, if any.
    pub fn link_between(&self, a: u32, b: u32) -> Option<usize> {
        self.adjacency[a as usize].get(&b).copied()
    }

    /// Mounts attached at a node.
    pub fn mounts_at(&self, node: u32) -> &[(MountKey, MountKind)] {
        &self.nodes[node as usize].mounts
    }

    /// Attach a mount at a node (kept across restarts).
    pub fn attach(&mut self, node: u32, mount: MountKey, kind: MountKind) -> Result<(), Failure> {
        let n = &mut self.nodes[node as usize];
        n.mounts.push((mount, kind));
        if n.alive {
            n.table.attach(mount, kind, label(mount)).map_err(|e| fail(format!("attach: {e}")))?;
            self.flush(node, 0);
        }
        Ok(())
    }

    /// Detach a mount from a node.
    pub fn detach(&mut self, node: u32, mount: MountKey) -> Result<(), Failure> {
        let n = &mut self.nodes[node as usize];
        n.mounts.retain(|(m, _)| *m != mount);
        if n.alive {
            n.table.detach(mount).map_err(|e| fail(format!("detach: {e}")))?;
            self.flush(node, 0);
        }
        Ok(())
    }

    /// Take a link down (messages on it are lost) or bring it back up.
    pub fn set_link(&mut self, link: usize, up: bool) -> Result<(), Failure> {
        self.links[link].up = up;
        self.refresh_link(link)?;
        self.check_all_loops()
    }

    /// Take several links down or up at once (a partition or its healing), then check.
    pub fn set_links(&mut self, links: &[usize], up: bool) -> Result<(), Failure> {
        for &link in links {
            self.links[link].up = up;
            self.refresh_link(link)?;
        }
        self.check_all_loops()
    }

    /// Crash a node: its links stop at once, its table is gone.
    pub fn crash(&mut self, node: u32) -> Result<(), Failure> {
        let n = &mut self.nodes[node as usize];
        n.alive = false;
        n.table = Table::new(node_id(node));
        self.refresh_node_links(node)?;
        self.check_all_loops()
    }

    /// Restart a crashed node with an empty table; its mounts are attached again.
    pub fn restart(&mut self, node: u32) -> Result<(), Failure> {
        let n = &mut self.nodes[node as usize];
        n.alive = true;
        n.table = Table::new(node_id(node));
        for (mount, kind) in n.mounts.clone() {
            n.table.attach(mount, kind, label(mount)).map_err(|e| fail(format!("attach: {e}")))?;
        }
        self.flush(node, 0);
        self.refresh_node_links(node)?;
        self.check_all_loops()
    }

    /// Deliver the next message (or fire the next table deadline), then check for loops.
    /// `Ok(false)` when nothing is in flight or due.
    pub fn step(&mut self) -> Result<bool, Failure> {
        let next_timer = self.timers.peek().map(|&Reverse((at, ..))| at);
        let next_delivery = self.queue.peek().map(|Reverse(d)| d.at_ms);
        if let Some(at) = next_timer
            && next_delivery.is_none_or(|d| at < d)
        {
            let Some(Reverse((at, round, node))) = self.timers.pop() else { return Ok(false) };
            self.now_ms = self.now_ms.max(at);
            let now = self.instant();
            let n = &mut self.nodes[node as usize];
            if n.timer_ms == Some(at) {
                n.timer_ms = None;
            }
            if n.alive && n.table.poll_timeout().is_some_and(|due| due <= now) {
                n.table.handle_timeout(now);
                self.flush(node, round);
                self.check_all_loops_at(node)?;
            }
            return Ok(true);
        }
        let Some(Reverse(d)) = self.queue.pop() else { return Ok(false) };
        self.now_ms = d.at_ms;
        let link = &self.links[d.link];
        if link.epoch != d.epoch || !link.live {
            self.stats.lost += 1;
            return Ok(true);
        }
        self.stats.delivered += 1;
        self.stats.rounds = self.stats.rounds.max(d.round);
        let from = NeighbourId(u64::from(d.from));
        let table = &mut self.nodes[d.to as usize].table;
        let (result, mount) = match d.msg {
            Outbound::Advert(a) => (table.handle_advert(from, &a), a.mount),
            Outbound::Retract(m) => (table.handle_retract(from, m), m),
            Outbound::SeqnoRequest { mount, seqno } => {
                self.stats.requests += 1;
                let now = self.epoch + Duration::from_millis(self.now_ms);
                (table.handle_seqno_request(from, mount, seqno, now), mount)
            }
        };
        result
            .map_err(|e| fail(format!("node {} refused {:?} from {}: {e}", d.to, d.msg, d.from)))?;
        self.flush(d.to, d.round);
        self.check_loop_from(d.to, mount)?;
        Ok(true)
    }

    /// Step until nothing is in flight, at most `max_steps` deliveries (more is a livelock).
    pub fn run_until_quiet(&mut self, max_steps: u64) -> Result<u64, Failure> {
        let mut steps = 0;
        while self.step()? {
            steps += 1;
            if steps > max_steps {
                return Err(fail(format!("no quiet after {max_steps} deliveries (livelock?)")));
            }
        }
        self.last_quiet_rounds = self.stats.rounds;
        self.stats.rounds = 0;
        Ok(steps)
    }

    /// Step until virtual time passes `now + ms` or nothing is in flight.
    pub fn run_for(&mut self, ms: u64) -> Result<(), Failure> {
        let until = self.now_ms + ms;
        while self.queue.peek().is_some_and(|Reverse(d)| d.at_ms <= until)
            || self.timers.peek().is_some_and(|&Reverse((at, ..))| at <= until)
        {
            self.step()?;
        }
        self.now_ms = until;
        Ok(())
    }

    /// The longest causal chain of the convergence that ended at the last quiet point (see
    /// [`Stats::rounds`]).
    pub fn last_quiet_rounds(&self) -> u32 {
        self.last_quiet_rounds
    }

    /// Loop check of every mount from every live node.
    pub fn check_all_loops(&self) -> Result<(), Failure> {
        let mut keys: Vec<MountKey> = Vec::new();
        for n in self.nodes.iter().filter(|n| n.alive) {
            keys.extend(n.table.mounts().map(|(k, _)| k));
        }
        keys.sort_unstable();
        keys.dedup();
        // Per mount, 0: not seen, 1: on the walk now, 2: known to end well.
        let mut mark = vec![0u32; self.nodes.len()];
        for (generation, key) in keys.into_iter().enumerate() {
            let done = 2 * generation as u32 + 2;
            for start in 0..self.nodes.len() as u32 {
                self.walk(start, key, &mut mark, done)?;
            }
        }
        Ok(())
    }

    /// Loop check of one mount from one node. Costs the length of the path, not the size of
    /// the cluster: it runs after every delivered message.
    pub fn check_loop_from(&self, start: u32, key: MountKey) -> Result<(), Failure> {
        let mut path = vec![start];
        let mut cur = start;
        while let Some(next) = self.next_hop(cur, key)? {
            if path.contains(&next) {
                path.push(next);
                return Err(fail(format!("forwarding loop for {key:?}: {path:?}")));
            }
            path.push(next);
            cur = next;
        }
        Ok(())
    }

    /// The next node on `node`'s route to `key`, checking it is over a live link.
    fn next_hop(&self, node: u32, key: MountKey) -> Result<Option<u32>, Failure> {
        if !self.nodes[node as usize].alive {
            return Ok(None);
        }
        let Some(route) = self.nodes[node as usize].table.route(key) else { return Ok(None) };
        let NextHop::Neighbour(next) = route.next_hop else { return Ok(None) };
        let next = next.0 as u32;
        let live = self.link_between(node, next).is_some_and(|l| self.links[l].live);
        if !live {
            return Err(fail(format!("node {node} routes {key:?} over a dead link to {next}")));
        }
        Ok(Some(next))
    }

    /// Follows next hops from `start`; `mark[n] == done` means n already ends well,
    /// `done - 1` that n is on this walk.
    fn walk(&self, start: u32, key: MountKey, mark: &mut [u32], done: u32) -> Result<(), Failure> {
        let mut path = Vec::new();
        let mut cur = start;
        loop {
            if !self.nodes[cur as usize].alive || mark[cur as usize] == done {
                break;
            }
            if mark[cur as usize] == done - 1 {
                path.push(cur);
                return Err(fail(format!("forwarding loop for {key:?}: {path:?}")));
            }
            mark[cur as usize] = done - 1;
            path.push(cur);
            let Some(next) = self.next_hop(cur, key)? else { break };
            cur = next;
        }
        for n in path {
            mark[n as usize] = done;
        }
        Ok(())
    }

    /// Partition number of every node (alive nodes joined by live links), `u32::MAX` if dead.
    pub fn partitions(&self) -> Vec<u32> {
        let mut part = vec![u32::MAX; self.nodes.len()];
        let mut next = 0;
        for start in 0..self.nodes.len() {
            if !self.nodes[start].alive || part[start] != u32::MAX {
                continue;
            }
            part[start] = next;
            let mut stack = vec![start as u32];
            while let Some(n) = stack.pop() {
                for (&m, &l) in &self.adjacency[n as usize] {
                    if self.links[l].live && part[m as usize] == u32::MAX {
                        part[m as usize] = next;
                        stack.push(m);
                    }
                }
            }
            next += 1;
        }
        part
    }

    /// The invariants of a quiet cluster (see the module documentation).
    pub fn check_converged(&self) -> Result<(), Failure> {
        if !self.queue.is_empty() {
            return Err(fail("check_converged with messages in flight".into()));
        }
        let part = self.partitions();
        let mut origins: BTreeMap<MountKey, u32> = BTreeMap::new();
        for (i, n) in self.nodes.iter().enumerate().filter(|(_, n)| n.alive) {
            for (m, _) in &n.mounts {
                origins.insert(*m, i as u32);
            }
        }
        for (x, node) in self.nodes.iter().enumerate().filter(|(_, n)| n.alive) {
            let x = x as u32;
            for (&key, &origin) in &origins {
                let same = part[x as usize] == part[origin as usize];
                if same != node.table.knows(key) {
                    return Err(fail(format!(
                        "node {x} {} {key:?} of node {origin} (same partition: {same})",
                        if same { "does not know" } else { "still knows" }
                    )));
                }
                if same {
                    self.check_path(x, key, origin)?;
                }
            }
            for (key, _) in node.table.mounts() {
                if !origins.contains_key(&key) {
                    return Err(fail(format!("node {x} still knows detached {key:?}")));
                }
            }
        }
        Ok(())
    }

    /// From `x`, next hops reach `origin` in exactly the route's metric of hops.
    fn check_path(&self, x: u32, key: MountKey, origin: u32) -> Result<(), Failure> {
        let Some(first) = self.nodes[x as usize].table.route(key) else {
            return Err(fail(format!("node {x} has no route to {key:?} of node {origin}")));
        };
        let (mut cur, mut hops) = (x, 0u32);
        while cur != origin {
            let Some(route) = self.nodes[cur as usize].table.route(key) else {
                return Err(fail(format!("path from {x} to {key:?} stops at {cur}")));
            };
            let NextHop::Neighbour(next) = route.next_hop else {
                return Err(fail(format!("node {cur} thinks {key:?} of {origin} is local")));
            };
            cur = next.0 as u32;
            hops += 1;
            if hops as usize > self.nodes.len() {
                return Err(fail(format!("path from {x} to {key:?} does not end")));
            }
        }
        if u32::from(first.metric.0) != hops {
            return Err(fail(format!(
                "node {x}: metric {} to {key:?} but {hops} hops",
                first.metric.0
            )));
        }
        Ok(())
    }

    /// Brings the tables in line with a link's state: both ends alive and the link up means
    /// neighbours; anything else means not, and what was in flight is lost.
    fn refresh_link(&mut self, link: usize) -> Result<(), Failure> {
        let l = &self.links[link];
        let (a, b) = (l.a, l.b);
        let should = l.up && self.nodes[a as usize].alive && self.nodes[b as usize].alive;
        if should == l.live {
            return Ok(());
        }
        self.links[link].live = should;
        for (me, other) in [(a, b), (b, a)] {
            let node = &mut self.nodes[me as usize];
            if !node.alive {
                continue;
            }
            let id = NeighbourId(u64::from(other));
            let result = if should {
                node.table.handle_neighbour_up(id, node_id(other), Role::Router, Wants::all())
            } else {
                node.table.handle_neighbour_down(id)
            };
            result.map_err(|e| fail(format!("node {me}, link to {other}: {e}")))?;
        }
        if !should {
            self.links[link].epoch += 1;
        }
        self.flush(a, 0);
        self.flush(b, 0);
        Ok(())
    }

    fn refresh_node_links(&mut self, node: u32) -> Result<(), Failure> {
        let links: Vec<usize> = self.adjacency[node as usize].values().copied().collect();
        for link in links {
            self.refresh_link(link)?;
        }
        Ok(())
    }

    /// The virtual time now, as the tables see it.
    fn instant(&self) -> Instant {
        self.epoch + Duration::from_millis(self.now_ms)
    }

    /// Checks every mount for loops from one node (after a deadline changed its table).
    fn check_all_loops_at(&mut self, node: u32) -> Result<(), Failure> {
        let keys: Vec<MountKey> =
            self.nodes[node as usize].table.mounts().map(|(k, _)| k).collect();
        for key in keys {
            self.check_loop_from(node, key)?;
        }
        Ok(())
    }

    /// Puts everything a node's table wants sent in flight, and notes its next deadline.
    fn flush(&mut self, from: u32, round: u32) {
        let node = &mut self.nodes[from as usize];
        if let Some(at) = node.table.poll_timeout() {
            // Rounded up to the next virtual millisecond: never early.
            let after = at.saturating_duration_since(self.epoch);
            let ms = after.as_millis() as u64 + u64::from(after.subsec_nanos() % 1_000_000 != 0);
            let ms = ms.max(self.now_ms);
            if node.timer_ms.is_none_or(|pushed| ms < pushed) {
                node.timer_ms = Some(ms);
                self.timers.push(Reverse((ms, round, from)));
            }
        }
        while let Some((to, msg)) = self.nodes[from as usize].table.poll_transmit() {
            let to = to.0 as u32;
            let Some(&link) = self.adjacency[from as usize].get(&to) else { continue };
            let l = &self.links[link];
            self.seq += 1;
            self.queue.push(Reverse(Delivery {
                at_ms: self.now_ms + l.latency_ms,
                seq: self.seq,
                link,
                epoch: l.epoch,
                from,
                to,
                msg,
                round: round + 1,
            }));
        }
    }
}

/// Virtual time zero: the clock read once, as `Pair` does; from then on only durations are added.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn node_id(node: u32) -> NodeId {
    NodeId(u128::from(node))
}

fn label(mount: MountKey) -> Label {
    let text = format!("m{}", mount.mount.0);
    Label::new(text.as_bytes()).unwrap_or(Label::EMPTY)
}

fn fail(msg: String) -> Failure {
    Failure(msg)
}
