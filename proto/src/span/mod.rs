//! The span table of one node: which mounts are reachable, through which neighbour, and what to
//! tell each neighbour about them. Sans-IO: no socket, no clock.
//!
//! # Loop freedom
//!
//! Babel's feasibility condition (RFC 8966 §3.5). Each originator numbers its advertisements of
//! a mount with a [`Seqno`]. For every mount the table keeps a *feasibility distance* FD =
//! (seqno, metric): the best of everything it has advertised for the mount (a newer seqno is
//! better; within one seqno, a smaller metric). An advertisement (s, m) from a neighbour is
//! *feasible* when s is newer than FD's seqno, or equal with m strictly below FD's metric. Only
//! feasible routes are selected. Because every node's FD only improves, and a selected route's
//! advertised distance is strictly better than the selecting node's FD, following selected next
//! hops strictly improves the distance at every hop: it can never come back to where it started.
//! This holds at every instant, transients included. It needs no hop cap.
//!
//! # Best two, and what each neighbour hears
//!
//! Per mount the table selects the best feasible route (lowest metric, ties to the lower
//! neighbour id) and a *standby* from another neighbour, also feasible, ready to take over at
//! once when the best one's neighbour goes down. Each neighbour is told the best route not
//! learned from it: the best one, or the standby for the best one's own neighbour, or an
//! explicit retraction. Advertising updates FD, which could make a selected route unfeasible;
//! the standby is therefore chosen feasible against the FD that advertising *both* would leave,
//! so both stay selectable whatever is sent. With hop counts this makes the standby an
//! equal-cost loop-free alternate: a longer path could lead back through this node, and taking
//! it is exactly what the condition forbids.
//!
//! A node left with routes but none feasible retracts and sends a seqno request toward the
//! originator, which bumps its seqno so that fresh, feasible advertisements flow back.
//!
//! # Filters, and what clients may do
//!
//! A neighbour receives only the kinds and clusters it wants ([`Wants`]). A [`Role::Client`]
//! neighbour never receives client spans (mounts of kind [`MountKind::Client`] or
//! [`MountKind::Aggregate`]). What a client advertises never enters the table: its mounts are
//! kept in the node's [`Clients`] directory, used only to pass calls addressed to them, so a
//! client can never shadow, replace or hide a route to any mount.
//!
//! # Shares
//!
//! The table holds at most [`SPAN_MOUNTS_MAX`] live mounts, and one neighbour's spans at most
//! [`SPANS_PER_NEIGHBOUR_MAX`] of them: one more is refused alone (nothing changes; the caller
//! refuses that span and the link carries on), never by evicting or blaming an older mount. A
//! mount that went away is kept as a *tombstone* for its feasibility distance, charged to the
//! node whose retraction (or loss, or detach) made it go, at most
//! [`DEPARTED_PER_NEIGHBOUR_MAX`] per node, oldest forgotten first, and at most
//! [`DEPARTED_MAX`] in all (past it, the oldest of the node holding most). Seqno requests are
//! served at [`SEQNO_REQUESTS_PER_SEC`] per neighbour, the rest waiting (one per mount, the
//! newest seqno asked), and an originator raises a mount's seqno at most once per
//! [`SEQNO_RAISE_INTERVAL_MS`], so no neighbour can make the cluster re-flood a mount faster
//! than that. A client's request is taken as one for at most one past the newest seqno known of
//! the mount (by the originator too), so no client can push a seqno ahead; a router's or
//! satellite's is taken as sent and passed on as such (it may know a seqno from before the
//! originator restarted, and is trusted with routes anyway).
//!
//! # Time
//!
//! The table reads no clock: seqno requests carry the time they arrived, and
//! [`Table::handle_timeout`] serves the requests that waited once [`Table::poll_timeout`] is
//! due.
//!
//! # Calling contract
//!
//! Tell the table about neighbours with [`Table::handle_neighbour_up`] /
//! [`Table::handle_neighbour_down`], feed it what they send with [`Table::handle_advert`],
//! [`Table::handle_retract`], [`Table::handle_seqno_request`] and [`Table::handle_refused`] (a
//! neighbour refused one of our spans), call [`Table::handle_timeout`] when
//! [`Table::poll_timeout`] is due, and attach local mounts with [`Table::attach`] /
//! [`Table::detach`]. After each call drain [`Table::poll_transmit`] until it returns `None` and
//! deliver each message, in order, to its neighbour. Every change recomputes
//! only the mounts it touches. An error from a neighbour's input changed nothing: either the
//! neighbour broke the protocol ([`Error::closes_link`]: the caller closes the link and calls
//! `handle_neighbour_down`), or a share or the table is full, and the caller refuses that one
//! span.

#![forbid(unsafe_code)]

mod advertise;
mod clients;
mod codec;
mod departed;
mod distance;
mod link;
mod requests;
mod small;
mod types;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod wire_tests;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Instant;

use advertise::tell;
pub use distance::METRIC_MAX;
use distance::{Fd, HOP, fd_after, feasible};
use small::SmallMap;

pub use clients::{ClientHolder, ClientRefusal, Clients, SharedClients};
pub use codec::Hello;
pub use link::{SpanCounters, SpanCtx, SpanLink};
pub use types::{
    Advert, Clusters, KindSet, Label, Metric, MountKey, MountKind, NextHop, Outbound, Role, Route,
    Seqno, Wants,
};

use crate::error::{Error, Limit, Misuse};
use crate::ids::{NeighbourId, NodeId};
use crate::limits::{
    DEPARTED_MAX, DEPARTED_PER_NEIGHBOUR_MAX, SEQNO_RAISE_INTERVAL_MS, SEQNO_REQUEST_BURST,
    SEQNO_REQUESTS_PER_SEC, SPAN_MOUNTS_MAX, SPAN_NEIGHBOURS_MAX, SPANS_PER_NEIGHBOUR_MAX,
};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The span table of one node. See the module documentation for the calling contract.
#[derive(Debug)]
pub struct Table {
    node: NodeId,
    /// Boxed entries: the map's spare slots then cost a pointer each instead of a whole entry.
    mounts: Map<MountKey, Box<Entry>>,
    /// Ordered, so that every walk over neighbours (and so the output) is deterministic. Boxed:
    /// a satellite has one per client, and a tree node then holds eleven pointers, not eleven
    /// neighbours (half-full nodes would cost ~100 bytes per client).
    neighbours: BTreeMap<NeighbourId, Box<Neighbour>>,
    /// Live mounts (attached here, or with a route): those neighbours may hear of, at most
    /// [`SPAN_MOUNTS_MAX`]. A new neighbour is told of these (sorted then, for deterministic
    /// output).
    live: HashSet<MountKey, foldhash::fast::RandomState>,
    /// Tombstones charged to each node (a neighbour's, or ours for local detaches), oldest
    /// first, each with the number it was stamped with when it became one (a mount revived and
    /// gone again is a new tombstone; the old queue position is then stale and skipped).
    departed: Map<NodeId, VecDeque<(MountKey, u64)>>,
    /// Entries in all the `departed` queues (stale ones included), at most [`DEPARTED_MAX`].
    departed_total: usize,
    /// The last tombstone number given.
    departed_seq: u64,
    /// Deadlines: a neighbour's waiting seqno requests, an originator's next raise.
    timers: BTreeSet<(Instant, Timer)>,
    out: VecDeque<(NeighbourId, Outbound)>,
    /// Advertising nothing to other nodes any more ([`Table::drain`]).
    draining: bool,
}

/// What a deadline in [`Table::timers`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Serve a neighbour's waiting seqno requests.
    Serve(NeighbourId),
    /// Raise a local mount's seqno for the requests that came since the last raise.
    Raise(MountKey),
}

#[derive(Debug)]
struct Neighbour {
    /// The node on the other end: its tombstones are charged to it, across its links.
    node: NodeId,
    role: Role,
    wants: Wants,
    /// Mounts it advertises to us (each has a [`Learned`] in its entry).
    routes: SmallMap<MountKey, ()>,
    /// What we last advertised to it, per mount (absent: nothing, or retracted).
    sent: SmallMap<MountKey, Sent>,
    /// Mounts whose pending seqno request we passed to it.
    requests: SmallMap<MountKey, ()>,
    /// Its seqno requests: the tokens it has, and those that wait for one. Made at its first
    /// request: most neighbours of a satellite are clients that never send one.
    budget: Option<Box<requests::Budget>>,
}

/// One mount. With no local attachment and no route it is a *tombstone*: invisible to queries,
/// kept only for its feasibility distance (forgetting FD while a stale advertisement may still
/// arrive could admit a loop) and the seqno we last originated it with, charged to the node that
/// made it go ([`Table::departed`]).
#[derive(Debug, Default)]
struct Entry {
    /// Attached here. Boxed: most entries are learned, and the label inside takes 65 bytes.
    local: Option<Box<Local>>,
    /// The seqno we originate with; kept after detach so a re-attach goes on from it.
    own_seqno: Option<Seqno>,
    /// Advertisements heard, one per neighbour, finite metrics only.
    routes: Vec<Learned>,
    fd: Option<Fd>,
    best: Option<NeighbourId>,
    standby: Option<NeighbourId>,
    /// A seqno asked for (by us, starving, or by a neighbour) and not yet seen, and the
    /// neighbour it was last passed to (`None`: not passed on yet, no route to pass it along).
    request: Option<Pending>,
    /// Neighbours with a record of what they last heard of this mount from us (one they
    /// refused included): a mount gone is walked until each has been cleared.
    advertised_to: u32,
    /// Whether it is in the table's `live` set.
    live: bool,
    /// While a tombstone: its number in its charger's queue (0: not a tombstone).
    departed: u64,
}

/// An advertisement as remembered by the neighbour it was sent to, so that only changes are
/// sent again: every field but the mount (the key it is kept under), with the label (up to 64
/// bytes) as a 64-bit digest. Kept per neighbour per mount: 32 bytes instead of 128.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    origin: NodeId,
    label: u64,
    seqno: Seqno,
    metric: Metric,
    kind: MountKind,
    /// The neighbour refused it ([`Table::handle_refused`]): it holds nothing, and the next
    /// advertisement differs from this record whatever its fields (in the padding: still 32
    /// bytes).
    refused: bool,
}

const _: () = assert!(std::mem::size_of::<Sent>() == 32);

impl Sent {
    fn of(advert: &Advert) -> Sent {
        // FNV-1a, 64-bit: deterministic, and only ever compared with the same mount's previous
        // label (a collision would withhold one relabelling, never misroute).
        let label = advert.label.as_bytes().iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        Sent {
            origin: advert.origin,
            label,
            seqno: advert.seqno,
            metric: advert.metric,
            kind: advert.kind,
            refused: false,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    seqno: Seqno,
    via: Option<NeighbourId>,
}

#[derive(Clone, Copy, Debug)]
struct Local {
    kind: MountKind,
    label: Label,
    /// When the seqno was last raised on request.
    raised_at: Option<Instant>,
    /// A raise asked for since then, waiting for the interval to pass.
    raise_to: Option<Seqno>,
}

#[derive(Clone, Copy, Debug)]
struct Learned {
    from: NeighbourId,
    /// The advertisement as heard, but for the mount (the entry's key): one per route of
    /// every mount, so 32 bytes fewer each.
    heard: Heard,
    /// `from` is another plane of this node (DESIGN 7c.3): its metric is in [`Units`].
    internal: bool,
}

/// An advertisement's fields other than its mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Heard {
    origin: NodeId,
    label: Label,
    seqno: Seqno,
    metric: Metric,
    kind: MountKind,
}

impl Heard {
    fn of(advert: &Advert) -> Heard {
        let Advert { mount: _, kind, label, origin, seqno, metric } = *advert;
        Heard { origin, label, seqno, metric, kind }
    }
}

impl Entry {
    fn is_tombstone(&self) -> bool {
        self.local.is_none() && self.routes.is_empty()
    }

    fn learned(&self, from: NeighbourId) -> Option<&Learned> {
        self.routes.iter().find(|r| r.from == from)
    }

    /// The newest seqno this node knows of the mount: its own, its FD's, or a route's.
    fn newest_seqno(&self) -> Option<Seqno> {
        let heard = self.routes.iter().map(|r| r.heard.seqno);
        [self.own_seqno, self.fd.map(|fd| fd.seqno)].into_iter().flatten().chain(heard).fold(
            None,
            |acc: Option<Seqno>, s| match acc {
                Some(a) if !s.is_newer_than(a) => Some(a),
                _ => Some(s),
            },
        )
    }
}

impl Table {
    /// An empty table for the node `node` (stamped on the mounts it originates).
    pub fn new(node: NodeId) -> Table {
        Table {
            node,
            mounts: Map::default(),
            neighbours: BTreeMap::new(),
            live: HashSet::default(),
            departed: Map::default(),
            departed_total: 0,
            departed_seq: 0,
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            draining: false,
        }
    }

    /// From now on, tells other nodes of no mount: each neighbour that is not one of this
    /// node's planes hears every span retracted, and none advertised again. What they
    /// advertise is still taken, and routes still chosen, so circuits already on their way here
    /// go on. For a node about to stop: its neighbours route around it before it goes.
    pub fn drain(&mut self) {
        self.draining = true;
        let keys: Vec<MountKey> = self.mounts.keys().copied().collect();
        for key in keys {
            self.advertise(key, None);
        }
    }

    /// Whether [`Table::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.draining
    }

    /// The node this table belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// A neighbour's link is up: the node `node` on its other end said what it is and wants
    /// (its role already checked against what its key was granted). Everything it wants is
    /// advertised to it.
    pub fn handle_neighbour_up(
        &mut self,
        id: NeighbourId,
        node: NodeId,
        role: Role,
        wants: Wants,
    ) -> Result<(), Error> {
        if self.neighbours.contains_key(&id) {
            return Err(Misuse::DuplicateNeighbour(id).into());
        }
        if self.neighbours.len() >= SPAN_NEIGHBOURS_MAX {
            return Err(Limit::SpanNeighbours(SPAN_NEIGHBOURS_MAX).into());
        }
        let neighbour = Neighbour {
            node,
            role,
            wants,
            routes: SmallMap::default(),
            sent: SmallMap::default(),
            requests: SmallMap::default(),
            budget: None,
        };
        self.neighbours.insert(id, Box::new(neighbour));
        let mut keys: Vec<MountKey> = self.live.iter().copied().collect();
        keys.sort_unstable();
        for key in keys {
            self.advertise(key, Some(id));
        }
        Ok(())
    }

    /// A neighbour's link is gone: its routes are dropped, and each mount it served fails over
    /// to its standby (or to whatever else is feasible) at once. Mounts that go with it are
    /// charged to its node.
    pub fn handle_neighbour_down(&mut self, id: NeighbourId) -> Result<(), Error> {
        let neighbour = self.neighbours.remove(&id).ok_or(Misuse::UnknownNeighbour(id))?;
        for key in neighbour.sent.keys() {
            if let Some(entry) = self.mounts.get_mut(key) {
                entry.advertised_to = entry.advertised_to.saturating_sub(1);
            }
        }
        let mut keys: Vec<MountKey> = neighbour.routes.keys().copied().collect();
        // A request passed to it may have been lost with the link: pass it on again.
        keys.extend(neighbour.requests.keys().copied());
        keys.sort_unstable();
        keys.dedup();
        for key in keys {
            if let Some(entry) = self.mounts.get_mut(&key) {
                entry.routes.retain(|r| r.from != id);
                if let Some(p) = &mut entry.request
                    && p.via == Some(id)
                {
                    p.via = None;
                }
            }
            self.recompute(key, neighbour.node);
        }
        Ok(())
    }

    /// A neighbour advertised a route to a mount. A metric of [`Metric::INFINITY`] is a
    /// retraction. Refused, with nothing changed and the neighbour's other spans untouched, past
    /// its share of [`SPANS_PER_NEIGHBOUR_MAX`] spans or when the table holds
    /// [`SPAN_MOUNTS_MAX`] live mounts (`Limit::NeighbourSpans`, `Limit::SpanMounts`); a
    /// client's advertisement is never a route (`Misuse::ClientAdvert`).
    pub fn handle_advert(&mut self, from: NeighbourId, advert: &Advert) -> Result<(), Error> {
        if !advert.metric.is_finite() {
            return self.handle_retract(from, advert.mount);
        }
        let key = advert.mount;
        let neighbour = self.neighbours.get(&from).ok_or(Misuse::UnknownNeighbour(from))?;
        if neighbour.role == Role::Client {
            return Err(Misuse::ClientAdvert.into());
        }
        let known = neighbour.routes.contains_key(&key);
        // Another plane of this node carries the node's whole table, not a peer's share of it
        // (each peer's share was checked where its link is).
        let plane = neighbour.node == self.node;
        if !known && !plane && neighbour.routes.len() >= SPANS_PER_NEIGHBOUR_MAX {
            return Err(Limit::NeighbourSpans(SPANS_PER_NEIGHBOUR_MAX).into());
        }
        if !self.live.contains(&key) && self.live.len() >= SPAN_MOUNTS_MAX {
            return Err(Limit::SpanMounts(SPAN_MOUNTS_MAX).into());
        }
        let entry = self.mounts.entry(key).or_default();
        if entry.local.is_some() {
            // Our own mount coming back around (or another node claiming it): we originate it.
            return Ok(());
        }
        // A neighbour with our own id is another plane of this node.
        let internal = neighbour.node == self.node;
        let learned = Learned { from, heard: Heard::of(advert), internal };
        match entry.routes.iter_mut().find(|r| r.from == from) {
            Some(r) if r.heard == learned.heard => return Ok(()),
            Some(r) => *r = learned,
            None => {
                // Usually one or two routes per mount: grow one at a time.
                entry.routes.reserve_exact(1);
                entry.routes.push(learned);
                // A tombstone revived: its place in its charger's queue is now stale.
                entry.departed = 0;
            }
        }
        let node = neighbour.node;
        if !known && let Some(n) = self.neighbours.get_mut(&from) {
            n.routes.insert(key, ());
        }
        self.recompute(key, node);
        Ok(())
    }

    /// A neighbour withdrew its route to a mount. Unknown mounts are ignored (a retraction may
    /// cross our own).
    pub fn handle_retract(&mut self, from: NeighbourId, mount: MountKey) -> Result<(), Error> {
        let neighbour = self.neighbours.get_mut(&from).ok_or(Misuse::UnknownNeighbour(from))?;
        if neighbour.routes.remove(&mount).is_none() {
            return Ok(());
        }
        let node = neighbour.node;
        if let Some(entry) = self.mounts.get_mut(&mount) {
            entry.routes.retain(|r| r.from != from);
        }
        self.recompute(mount, node);
        Ok(())
    }

    /// A neighbour refused our advertisement of a mount (it forced our span closed): it holds
    /// nothing of it, as if it had never heard it. Nothing is sent now (offered again at once,
    /// it would only be refused again). At the mount's next change the neighbour is sent afresh
    /// what it should then hear: an advertisement even if it is the one refused (a new span), or
    /// a retraction, which the span link has no span to carry and sends nowhere (the output
    /// still says, for every neighbour, what it should hear). FD stays where the advertisement
    /// put it: a better FD than needed only makes fewer routes feasible, never a loop.
    pub fn handle_refused(&mut self, from: NeighbourId, mount: MountKey) -> Result<(), Error> {
        let neighbour = self.neighbours.get_mut(&from).ok_or(Misuse::UnknownNeighbour(from))?;
        if let Some(&sent) = neighbour.sent.get(&mount) {
            neighbour.sent.insert(mount, Sent { refused: true, ..sent });
        }
        Ok(())
    }

    /// Attach a local mount (or change the kind or label of one attached here), and advertise
    /// it. Its seqno goes on from anything this table remembers of the mount.
    pub fn attach(&mut self, mount: MountKey, kind: MountKind, label: Label) -> Result<(), Error> {
        if !self.live.contains(&mount) && self.live.len() >= SPAN_MOUNTS_MAX {
            return Err(Limit::LocalMounts(SPAN_MOUNTS_MAX).into());
        }
        let entry = self.mounts.entry(mount).or_default();
        if entry.local.is_none() {
            let seen = [entry.own_seqno, entry.fd.map(|fd| fd.seqno)].into_iter().flatten().fold(
                None,
                |acc: Option<Seqno>, s| match acc {
                    Some(a) if !s.is_newer_than(a) => Some(a),
                    _ => Some(s),
                },
            );
            entry.own_seqno = Some(seen.map_or(Seqno(1), Seqno::next));
            entry.departed = 0;
            let stale: Vec<NeighbourId> = entry.routes.drain(..).map(|r| r.from).collect();
            entry.best = None;
            entry.standby = None;
            for id in stale {
                if let Some(n) = self.neighbours.get_mut(&id) {
                    n.routes.remove(&mount);
                }
            }
        }
        let Some(entry) = self.mounts.get_mut(&mount) else { return Ok(()) };
        match &mut entry.local {
            Some(local) => {
                local.kind = kind;
                local.label = label;
            }
            None => {
                entry.local =
                    Some(Box::new(Local { kind, label, raised_at: None, raise_to: None }));
            }
        }
        self.advertise(mount, None);
        Ok(())
    }

    /// Detach a local mount: it is retracted from every neighbour.
    pub fn detach(&mut self, mount: MountKey) -> Result<(), Error> {
        let entry = self.mounts.get_mut(&mount).ok_or(Misuse::NotAttached)?;
        if entry.local.take().is_none() {
            return Err(Misuse::NotAttached.into());
        }
        self.recompute(mount, self.node);
        Ok(())
    }

    /// The next message to send, and to which neighbour. Drain until `None` after every call.
    pub fn poll_transmit(&mut self) -> Option<(NeighbourId, Outbound)> {
        self.out.pop_front()
    }

    /// The selected route to a mount, if any.
    pub fn route(&self, mount: MountKey) -> Option<Route> {
        let entry = self.mounts.get(&mount)?;
        if let Some(local) = entry.local.as_deref() {
            return Some(Route {
                next_hop: NextHop::Local,
                metric: Metric::ZERO,
                seqno: entry.own_seqno.unwrap_or(Seqno(0)),
                origin: self.node,
                kind: local.kind,
                label: local.label,
            });
        }
        entry.best.and_then(|b| entry.learned(b)).map(to_route)
    }

    /// The standby route to a mount: feasible, through another neighbour than the best route,
    /// and taken at once if the best one's neighbour goes down.
    pub fn standby(&self, mount: MountKey) -> Option<Route> {
        let entry = self.mounts.get(&mount)?;
        entry.standby.and_then(|s| entry.learned(s)).map(to_route)
    }

    /// The feasibility distance of a mount (seqno, metric), if this node ever advertised it.
    pub fn feasibility_distance(&self, mount: MountKey) -> Option<(Seqno, Metric)> {
        self.mounts.get(&mount)?.fd.map(|fd| (fd.seqno, Metric((fd.metric / HOP) as u16)))
    }

    /// Every mount this table knows of (attached here or heard from a neighbour), with its
    /// selected route if it has one. In no particular order.
    pub fn mounts(&self) -> impl Iterator<Item = (MountKey, Option<Route>)> + '_ {
        self.live.iter().map(|k| (*k, self.route(*k)))
    }

    /// Live mounts: attached here or heard of from a neighbour (what [`Table::mounts`] yields).
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no mount is live.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Tombstones kept: mounts that went away, remembered for their feasibility distance.
    pub fn tombstones(&self) -> usize {
        self.mounts.len() - self.live.len()
    }

    /// Whether a mount is known here (attached, or heard of from a neighbour).
    pub fn knows(&self, mount: MountKey) -> bool {
        self.live.contains(&mount)
    }

    /// Whether a neighbour is up in this table.
    pub fn has_neighbour(&self, id: NeighbourId) -> bool {
        self.neighbours.contains_key(&id)
    }

    /// Spans a neighbour currently advertises to us.
    pub fn spans_from(&self, id: NeighbourId) -> usize {
        self.neighbours.get(&id).map_or(0, |n| n.routes.len())
    }

    /// Reselects a mount's best and standby routes after its routes changed, tells the
    /// neighbours whatever changed for them, and, if routes remain but none is feasible, asks
    /// the originator for a newer seqno. A mount left with nothing becomes a tombstone charged
    /// to `cause`.
    fn recompute(&mut self, key: MountKey, cause: NodeId) {
        let Some(entry) = self.mounts.get_mut(&key) else { return };
        if entry.local.is_none() {
            select(entry);
            if entry.best.is_none()
                && !entry.routes.is_empty()
                && let Some(fd) = entry.fd
            {
                let want = fd.seqno.next();
                match entry.request {
                    Some(p) if !want.is_newer_than(p.seqno) => {}
                    _ => entry.request = Some(Pending { seqno: want, via: None }),
                }
            }
        }
        self.advertise(key, None);
        self.pass_request(key);
        if self.mounts.get(&key).is_some_and(|e| e.is_tombstone() && e.departed == 0) {
            self.depart(key, cause);
        }
    }

    /// Passes a mount's pending seqno request to its next hop toward the originator, unless it
    /// was already passed there, or forgets it once a route that new is selected.
    fn pass_request(&mut self, key: MountKey) {
        let Some(entry) = self.mounts.get_mut(&key) else { return };
        let Some(pending) = entry.request else { return };
        if entry.local.is_some() || satisfied(entry, pending.seqno) {
            entry.request = None;
            return;
        }
        let next = entry
            .best
            .or_else(|| entry.routes.iter().min_by_key(|r| (r.distance(), r.from)).map(|r| r.from));
        if next == pending.via {
            return;
        }
        entry.request = Some(Pending { seqno: pending.seqno, via: next });
        if let Some(next) = next {
            if let Some(n) = self.neighbours.get_mut(&next) {
                n.requests.insert(key, ());
            }
            self.out.push_back((next, Outbound::SeqnoRequest { mount: key, seqno: pending.seqno }));
        }
    }

    /// Sends each neighbour (or only `only`) what it should now hear about `key`, if that
    /// differs from what it last heard, and updates FD with what is advertised.
    fn advertise(&mut self, key: MountKey, only: Option<NeighbourId>) {
        let Some(entry) = self.mounts.get_mut(&key) else {
            self.live.remove(&key);
            return;
        };
        // Every change to a mount passes here: keep the set of live mounts current.
        let live = !entry.is_tombstone();
        if live != entry.live {
            entry.live = live;
            if live {
                self.live.insert(key);
            } else {
                self.live.remove(&key);
            }
        }
        if !live && entry.advertised_to == 0 {
            // Gone, and nobody holds it: nothing to walk.
            return;
        }
        let (node, draining) = (self.node, self.draining);
        let out = &mut self.out;
        match only {
            Some(id) => {
                if let Some(neighbour) = self.neighbours.get_mut(&id) {
                    tell(node, draining, key, entry, id, neighbour, out);
                }
            }
            None => {
                for (&id, neighbour) in self.neighbours.iter_mut() {
                    tell(node, draining, key, entry, id, neighbour, out);
                }
            }
        }
    }
}

/// Whether the selected route is at least as new as `seqno`.
fn satisfied(entry: &Entry, seqno: Seqno) -> bool {
    entry.best.and_then(|b| entry.learned(b)).is_some_and(|b| !seqno.is_newer_than(b.heard.seqno))
}

fn to_route(r: &Learned) -> Route {
    Route {
        next_hop: NextHop::Neighbour(r.from),
        metric: Metric((r.distance() / HOP) as u16),
        seqno: r.heard.seqno,
        origin: r.heard.origin,
        kind: r.heard.kind,
        label: r.heard.label,
    }
}

/// Picks the best feasible route and a standby from another neighbour that stays feasible once
/// both have been advertised.
fn select(entry: &mut Entry) {
    let fd = entry.fd;
    // A route one hop past the largest finite metric is unreachable, not selectable.
    let best = entry
        .routes
        .iter()
        .filter(|r| r.reachable())
        .filter(|r| feasible(fd, r.heard.seqno, r.reported()))
        .min_by_key(|r| (r.distance(), r.from))
        .copied();
    entry.best = best.map(|b| b.from);
    entry.standby = best.and_then(|b| {
        // FD once the best route is advertised (metric one hop further). A standby feasible
        // against it, and not newer than the best one, leaves both feasible whatever is sent.
        let after = fd_after(fd, b.heard.seqno, b.distance());
        entry
            .routes
            .iter()
            .filter(|r| r.from != b.from && r.reachable())
            .filter(|r| !r.heard.seqno.is_newer_than(b.heard.seqno))
            .filter(|r| feasible(after, r.heard.seqno, r.reported()))
            .min_by_key(|r| (r.distance(), r.from))
            .map(|r| r.from)
    });
}
