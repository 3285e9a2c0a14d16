//! Distances in a span table: the units a table counts in (a hop between nodes, or between two
//! planes of one node), what each neighbour is told, and the feasibility condition over them
//! (PROTOCOL 9.2 and 9.9).

use super::{Learned, Metric, Neighbour, NodeId, Seqno};

/// A distance inside the table: [`HOP`] units per hop between nodes, one per hop between two
/// planes of a node (DESIGN 7c.3). A node's neighbours hear whole hops (the units divided by
/// [`HOP`]), so a node looks the same to them on one worker or many; its planes hear each
/// other's units, so every hop, between nodes or planes, makes a distance strictly longer, as
/// loop-free selection needs (RFC 8966 §3.5.1). A route is reachable below [`UNITS_MAX`]: what a
/// plane's metric field can carry to another (4,095 hops and 15 plane hops).
pub(super) type Units = u32;

/// Units per hop between nodes.
pub(super) const HOP: Units = 16;

/// The first distance that is unreachable.
const UNITS_MAX: Units = u16::MAX as Units;

/// The longest route a table keeps, in hops (4,095): a neighbour's advertisement one hop
/// shorter is the longest it takes.
pub const METRIC_MAX: Metric = Metric(((UNITS_MAX - 1) / HOP) as u16);

impl Learned {
    /// The distance the neighbour reported.
    pub(super) fn reported(&self) -> Units {
        let heard = Units::from(self.heard.metric.0);
        if self.internal { heard } else { heard * HOP }
    }

    /// The route's distance here: as reported, plus the hop.
    pub(super) fn distance(&self) -> Units {
        self.reported() + if self.internal { 1 } else { HOP }
    }

    pub(super) fn reachable(&self) -> bool {
        self.distance() < UNITS_MAX
    }
}

/// What `neighbour` is told of a distance: whole hops, or units for another plane.
pub(super) fn metric_for(neighbour: &Neighbour, node: NodeId, distance: Units) -> Metric {
    let units = if neighbour.node == node { distance } else { distance / HOP };
    Metric(units.min(UNITS_MAX - 1) as u16)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fd {
    pub(super) seqno: Seqno,
    pub(super) metric: Units,
}

/// Whether an advertisement (seqno, metric) is feasible against `fd` (RFC 8966 §3.5.1).
pub(super) fn feasible(fd: Option<Fd>, seqno: Seqno, metric: Units) -> bool {
    match fd {
        None => true,
        Some(fd) => seqno.is_newer_than(fd.seqno) || (seqno == fd.seqno && metric < fd.metric),
    }
}

/// The feasibility distance after advertising (seqno, metric).
pub(super) fn fd_after(fd: Option<Fd>, seqno: Seqno, metric: Units) -> Option<Fd> {
    match fd {
        Some(fd) if fd.seqno.is_newer_than(seqno) => Some(fd),
        Some(fd) if fd.seqno == seqno && fd.metric <= metric => Some(fd),
        _ => Some(Fd { seqno, metric }),
    }
}
