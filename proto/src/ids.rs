//! Identifier newtypes. Each kind of id is its own type so that one can never be passed where
//! another is expected.

use core::fmt;

/// A message id as it appears on the wire: chosen by the side that opened a transaction, opaque
/// to the other side, and never reused on a link (a late forced close may name a transaction
/// after it ended; it must not reach a newer one). Zero means "no transaction" (a one-way
/// message, or the link itself as a parent).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MsgId(pub u64);

impl MsgId {
    /// The id of the link itself: the parent of top-level transactions, the id of one-way
    /// messages.
    pub const ROOT: MsgId = MsgId(0);

    /// Whether this is [`MsgId::ROOT`].
    pub fn is_root(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for MsgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// A handle on a live transaction in one [`crate::txn::Link`]'s table.
///
/// It names a table slot and the generation of that slot, so a handle kept past the end of its
/// transaction is refused instead of reaching whichever transaction reuses the slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxnId {
    pub(crate) slot: u32,
    pub(crate) generation: u32,
}

impl TxnId {
    /// The table slot. Stable for the transaction's life; reused after it ends.
    pub fn slot(self) -> u32 {
        self.slot
    }
}

impl fmt::Display for TxnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "txn {}.{}", self.slot, self.generation)
    }
}

/// Identifies a link (one peer connection) within a node: which worker holds it, its table slot
/// there, and the slot's generation (so an id kept past the link's end never names its
/// successor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

impl LinkId {
    /// The worker holding the link.
    pub fn worker(self) -> usize {
        (self.0 >> 56) as usize
    }
}

impl fmt::Display for LinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "link {}:{}.{}", self.0 >> 56, self.0 as u32, (self.0 >> 32) & 0xff_ffff)
    }
}

/// A node's identity in the cluster, stamped on the advertisements of the mounts it originates:
/// the first 16 bytes of SHA-256 of its static public key, read big-endian
/// ([`crate::cipher::PublicKey::node_id`]), shown as 32 hex digits.
///
/// 128 bits make an accidental collision among even billions of nodes negligible (birthday bound
/// 2^64); a deliberate one would need a second SHA-256 preimage on 128 bits *and* the matching
/// private key, and the handshake authenticates the full public key anyway, so the id is a name,
/// never a credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u128);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A cluster (HAMMER2's `pfs_clid`): the mounts of one replicated file system share it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(pub u128);

/// One mount of a cluster (HAMMER2's `pfs_fsid`): unique across the cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MountId(pub u128);

/// A neighbour of one node's span table: an opaque number chosen by the caller (the relay maps
/// each link to one). Only meaningful within the table it was given to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NeighbourId(pub u64);

impl fmt::Display for NeighbourId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "neighbour {}", self.0)
    }
}
