//! The values a span table deals in: mount identities and kinds, labels, seqnos, metrics,
//! neighbour roles and wants, and what the table asks its caller to send.

use core::fmt;

use serde::Deserialize;

use crate::error::{Error, Violation};
use crate::ids::{ClusterId, MountId, NeighbourId, NodeId};
use crate::limits::{SPAN_LABEL_MAX, SPAN_WANTED_CLUSTERS_MAX};

/// A mount's identity: its cluster and its own id within the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MountKey {
    /// The cluster (HAMMER2's `pfs_clid`).
    pub cluster: ClusterId,
    /// The mount within it (HAMMER2's `pfs_fsid`).
    pub mount: MountId,
}

/// What a mount is, as HAMMER2's PFS types. A configuration names the kinds a node may attach
/// in kebab case (`"soft-master"`); an aggregate is the node's own doing, never configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountKind {
    /// A full master of the cluster (quorum member).
    Master,
    /// A full slave copy, updated from the masters.
    Slave,
    /// A master that may run ahead of the quorum.
    SoftMaster,
    /// A slave that may lag.
    SoftSlave,
    /// A cache of the cluster's data.
    Cache,
    /// A client mount: uses the cluster, holds none of it.
    Client,
    /// The clients of one node in one cluster, advertised as one span in place of theirs (a
    /// satellite's aggregate; its mount id is the node's id). Calls to a client open inside it,
    /// naming the client (PROTOCOL.md section 8.6).
    #[serde(skip_deserializing)]
    Aggregate,
}

impl MountKind {
    /// The kind from its wire number (its index in [`MountKind::ALL`]).
    pub fn from_index(index: u8) -> Option<MountKind> {
        MountKind::ALL.get(usize::from(index)).copied()
    }

    /// Its wire number (its index in [`MountKind::ALL`]).
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// Every kind, in declaration order.
    pub const ALL: [MountKind; 7] = [
        MountKind::Master,
        MountKind::Slave,
        MountKind::SoftMaster,
        MountKind::SoftSlave,
        MountKind::Cache,
        MountKind::Client,
        MountKind::Aggregate,
    ];

    /// Whether a client may attach a mount of this kind (client or cache).
    pub fn is_client_kind(self) -> bool {
        matches!(self, MountKind::Client | MountKind::Cache)
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A set of [`MountKind`]s: which kinds a neighbour wants spans for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KindSet(u8);

impl KindSet {
    /// Every kind.
    pub const ALL: KindSet = KindSet(0b111_1111);
    /// No kind.
    pub const NONE: KindSet = KindSet(0);

    /// This set with `kind` added.
    pub const fn with(self, kind: MountKind) -> KindSet {
        KindSet(self.0 | 1 << (kind as u8))
    }

    /// Whether `kind` is in the set.
    pub fn contains(self, kind: MountKind) -> bool {
        self.0 & kind.bit() != 0
    }

    /// The set as its wire byte: bit `i` is the `i`-th kind of [`MountKind::ALL`].
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The set from its wire byte; `None` if a bit beyond the known kinds is set.
    pub const fn from_bits(bits: u8) -> Option<KindSet> {
        if bits & !KindSet::ALL.0 != 0 { None } else { Some(KindSet(bits)) }
    }
}

/// A mount's human-readable label, at most [`SPAN_LABEL_MAX`] bytes. Stored inline, so labels
/// are copied, never allocated.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Label {
    len: u8,
    bytes: [u8; SPAN_LABEL_MAX],
}

impl Label {
    /// The empty label.
    pub const EMPTY: Label = Label { len: 0, bytes: [0; SPAN_LABEL_MAX] };

    /// A label from bytes; more than [`SPAN_LABEL_MAX`] is refused (a neighbour that sends one
    /// breaks the protocol).
    pub fn new(bytes: &[u8]) -> Result<Label, Error> {
        if bytes.len() > SPAN_LABEL_MAX {
            return Err(Violation::SpanLabel(bytes.len()).into());
        }
        let mut label = Label::EMPTY;
        label.bytes[..bytes.len()].copy_from_slice(bytes);
        // Fits: checked against SPAN_LABEL_MAX (64) just above.
        label.len = bytes.len() as u8;
        Ok(label)
    }

    /// The label's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl Default for Label {
    fn default() -> Label {
        Label::EMPTY
    }
}

/// An originator's sequence number for a mount's advertisements. Compared modulo 2^16 as in
/// RFC 8966 §3.2.1: `a` is newer than `b` when `0 < (a - b) mod 2^16 < 2^15`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Seqno(pub u16);

impl Seqno {
    /// Whether `self` is strictly newer than `other`.
    pub fn is_newer_than(self, other: Seqno) -> bool {
        let d = self.0.wrapping_sub(other.0);
        d != 0 && d < 0x8000
    }

    /// The next seqno.
    pub fn next(self) -> Seqno {
        Seqno(self.0.wrapping_add(1))
    }
}

/// A route's cost: hop count for now. [`Metric::INFINITY`] means unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Metric(pub u16);

impl Metric {
    /// The originator's own metric.
    pub const ZERO: Metric = Metric(0);
    /// Unreachable.
    pub const INFINITY: Metric = Metric(u16::MAX);

    /// Whether the metric is finite.
    pub fn is_finite(self) -> bool {
        self != Metric::INFINITY
    }
}

/// What a neighbour is. A configuration names it as [`Role::name`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A relay: receives every span it wants and propagates what it learns.
    Router,
    /// A node that serves clients. Spans flow to and from it as with a router; it is the node
    /// past which its clients' spans go no further (that rule is applied by its own table).
    Satellite,
    /// An end point: never receives other clients' spans, and what it advertises is usable by
    /// the node it is attached to but never propagated further.
    Client,
}

impl Role {
    /// How much a role may do, for comparing rights: a client least, a router most.
    const fn rank(self) -> u8 {
        match self {
            Role::Client => 0,
            Role::Satellite => 1,
            Role::Router => 2,
        }
    }

    /// The role's name, as configuration writes it and `show` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Role::Router => "router",
            Role::Satellite => "satellite",
            Role::Client => "client",
        }
    }

    /// Whether a peer granted this role may say it is `claimed`: a router may also link as a
    /// satellite or a client, a satellite as a client, a client only as a client.
    pub const fn permits(self, claimed: Role) -> bool {
        claimed.rank() <= self.rank()
    }
}

/// Which clusters a neighbour wants spans for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Clusters {
    /// Every cluster.
    All,
    /// Only these (at most [`SPAN_WANTED_CLUSTERS_MAX`]).
    Only(Vec<ClusterId>),
}

/// What a neighbour asked to receive, as dmsg's LNK_CONN filters: by kind and by cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wants {
    kinds: KindSet,
    clusters: Clusters,
}

impl Wants {
    /// Everything.
    pub fn all() -> Wants {
        Wants { kinds: KindSet::ALL, clusters: Clusters::All }
    }

    /// Spans of these kinds in these clusters. More than [`SPAN_WANTED_CLUSTERS_MAX`] clusters
    /// is refused.
    pub fn new(kinds: KindSet, clusters: Clusters) -> Result<Wants, Error> {
        if let Clusters::Only(list) = &clusters
            && list.len() > SPAN_WANTED_CLUSTERS_MAX
        {
            return Err(Violation::SpanWants(list.len()).into());
        }
        Ok(Wants { kinds, clusters })
    }

    /// The kinds wanted.
    pub fn kinds(&self) -> KindSet {
        self.kinds
    }

    /// The clusters wanted.
    pub fn clusters(&self) -> &Clusters {
        &self.clusters
    }

    /// Whether a span of `kind` in `cluster` is wanted.
    pub fn admits(&self, kind: MountKind, cluster: ClusterId) -> bool {
        self.kinds.contains(kind)
            && match &self.clusters {
                Clusters::All => true,
                Clusters::Only(list) => list.contains(&cluster),
            }
    }
}

/// One advertisement of a mount: everything a span carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Advert {
    /// The mount.
    pub mount: MountKey,
    /// Its kind.
    pub kind: MountKind,
    /// Its label.
    pub label: Label,
    /// The node that attached it.
    pub origin: NodeId,
    /// The originator's seqno this advertisement descends from.
    pub seqno: Seqno,
    /// The sender's metric to the mount ([`Metric::ZERO`] from the originator).
    pub metric: Metric,
}

/// Something a table asks its caller to send to one neighbour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Advertise (or update) a route to a mount.
    Advert(Advert),
    /// Withdraw the route to a mount previously advertised to this neighbour.
    Retract(MountKey),
    /// Ask, hop by hop toward the originator, for an advertisement with a seqno at least this.
    SeqnoRequest {
        /// The mount.
        mount: MountKey,
        /// The seqno wanted.
        seqno: Seqno,
    },
}

/// Where a route leads first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NextHop {
    /// The mount is attached here.
    Local,
    /// Through this neighbour.
    Neighbour(NeighbourId),
}

/// A selected route to a mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// Where to send first.
    pub next_hop: NextHop,
    /// Hops to the mount.
    pub metric: Metric,
    /// The seqno of the advertisement it was learned from.
    pub seqno: Seqno,
    /// The originating node.
    pub origin: NodeId,
    /// The mount's kind.
    pub kind: MountKind,
    /// The mount's label.
    pub label: Label,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqno_compares_modulo() {
        assert!(Seqno(1).is_newer_than(Seqno(0)));
        assert!(!Seqno(0).is_newer_than(Seqno(0)));
        assert!(Seqno(0).is_newer_than(Seqno(u16::MAX)));
        assert!(!Seqno(0x8000).is_newer_than(Seqno(0)));
        assert!(Seqno(0x7fff).is_newer_than(Seqno(0)));
    }

    #[test]
    fn roles_permit_themselves_and_less() {
        use Role::*;
        for (granted, claimed, ok) in [
            (Router, Router, true),
            (Router, Satellite, true),
            (Router, Client, true),
            (Satellite, Router, false),
            (Satellite, Satellite, true),
            (Satellite, Client, true),
            (Client, Router, false),
            (Client, Satellite, false),
            (Client, Client, true),
        ] {
            assert_eq!(granted.permits(claimed), ok, "{granted:?} claiming {claimed:?}");
        }
    }

    #[test]
    fn labels_are_bounded() {
        assert!(Label::new(&[b'a'; SPAN_LABEL_MAX]).is_ok());
        assert_eq!(
            Label::new(&[b'a'; SPAN_LABEL_MAX + 1]),
            Err(Violation::SpanLabel(SPAN_LABEL_MAX + 1).into())
        );
        assert_eq!(
            Label::new(b"host/pfs").map(|l| l.as_bytes().to_vec()),
            Ok(b"host/pfs".to_vec())
        );
    }

    #[test]
    fn wants_filter_kind_and_cluster() {
        let w =
            Wants::new(KindSet::NONE.with(MountKind::Master), Clusters::Only(vec![ClusterId(7)]))
                .unwrap();
        assert!(w.admits(MountKind::Master, ClusterId(7)));
        assert!(!w.admits(MountKind::Slave, ClusterId(7)));
        assert!(!w.admits(MountKind::Master, ClusterId(8)));
        let many = Clusters::Only(vec![ClusterId(1); SPAN_WANTED_CLUSTERS_MAX + 1]);
        assert!(Wants::new(KindSet::ALL, many).is_err());
    }
}
