//! The mounts of a node's clients, kept apart from the span table. Sans-IO.
//!
//! A client's mount is used in one place only: the node the client is attached to, to pass on
//! calls addressed to it through the node's aggregate (PROTOCOL.md 8.6). It is therefore never a
//! route: it is not in the [`Table`](super::Table), so no client can shadow, replace or hide a
//! route to any mount, for anyone, however it names its own. What a client names is bounded:
//!
//! - its mounts must be in a cluster this node is configured to serve clients of, so the core
//!   hears at most one aggregate per configured cluster, whatever clients name;
//! - a mount is held by the first client that advertised it, until that client retracts it or
//!   its link goes; another client naming it is refused, and cannot take it over;
//! - the directory holds at most [`CLIENT_MOUNTS_MAX`] mounts in all (and each client at most
//!   [`CLIENT_MOUNTS_PER_CLIENT`](crate::limits::CLIENT_MOUNTS_PER_CLIENT), counted by the span
//!   link).
//!
//! Each configured cluster's aggregate is present while at least one client mount of it is:
//! [`Clients::poll_aggregate`] says when one appears or goes.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::ids::{ClusterId, NeighbourId};
use crate::limits::CLIENT_MOUNTS_MAX;

use super::MountKey;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Why a client's mount was refused. The span is refused alone; the client's link carries on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientRefusal {
    /// The mount's cluster is not one this node serves clients of.
    Cluster,
    /// Another client holds a mount with this key.
    Taken,
    /// The directory is full.
    Full,
}

/// The clients' mounts of one node. See the module documentation.
#[derive(Debug)]
pub struct Clients {
    /// Each client mount and the client link (table neighbour) holding it.
    mounts: Map<MountKey, NeighbourId>,
    /// The clusters this node serves clients of.
    clusters: HashSet<ClusterId, foldhash::fast::RandomState>,
    /// Client mounts per cluster, for the clusters that have any.
    per_cluster: Map<ClusterId, u32>,
    /// Aggregates that appeared (`true`) or went (`false`), oldest first.
    changes: VecDeque<(ClusterId, bool)>,
}

impl Clients {
    /// An empty directory for a node serving clients of `clusters` (none: no client mount is
    /// accepted).
    pub fn new(clusters: impl IntoIterator<Item = ClusterId>) -> Clients {
        Clients {
            mounts: Map::default(),
            clusters: clusters.into_iter().collect(),
            per_cluster: Map::default(),
            changes: VecDeque::new(),
        }
    }

    /// The clusters this node serves clients of.
    pub fn clusters(&self) -> impl Iterator<Item = ClusterId> + '_ {
        self.clusters.iter().copied()
    }

    /// Records that client `from` holds `mount`; refused (nothing changed) if the cluster is not
    /// served here, another client holds the mount, or the directory is full. Claiming a mount
    /// the same client holds already is a no-op.
    pub fn claim(&mut self, from: NeighbourId, mount: MountKey) -> Result<(), ClientRefusal> {
        if !self.clusters.contains(&mount.cluster) {
            return Err(ClientRefusal::Cluster);
        }
        match self.mounts.get(&mount) {
            Some(&holder) if holder == from => return Ok(()),
            Some(_) => return Err(ClientRefusal::Taken),
            None => {}
        }
        if self.mounts.len() >= CLIENT_MOUNTS_MAX {
            return Err(ClientRefusal::Full);
        }
        self.mounts.insert(mount, from);
        let count = self.per_cluster.entry(mount.cluster).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.changes.push_back((mount.cluster, true));
        }
        Ok(())
    }

    /// Client `from` no longer holds `mount` (retracted, or its link went). A mount it does not
    /// hold is left alone.
    pub fn release(&mut self, from: NeighbourId, mount: MountKey) {
        if self.mounts.get(&mount) != Some(&from) {
            return;
        }
        self.mounts.remove(&mount);
        if let Some(count) = self.per_cluster.get_mut(&mount.cluster) {
            *count -= 1;
            if *count == 0 {
                self.per_cluster.remove(&mount.cluster);
                self.changes.push_back((mount.cluster, false));
            }
        }
    }

    /// The client link holding `mount`, if a client holds it.
    pub fn holder(&self, mount: MountKey) -> Option<NeighbourId> {
        self.mounts.get(&mount).copied()
    }

    /// Client mounts held.
    pub fn len(&self) -> usize {
        self.mounts.len()
    }

    /// Whether no client mount is held.
    pub fn is_empty(&self) -> bool {
        self.mounts.is_empty()
    }

    /// Whether a cluster's aggregate is present (some client holds a mount of it here).
    pub fn has_aggregate(&self, cluster: ClusterId) -> bool {
        self.per_cluster.contains_key(&cluster)
    }

    /// The next aggregate that appeared (`true`) or went (`false`), in order. Drain after each
    /// claim or release.
    pub fn poll_aggregate(&mut self) -> Option<(ClusterId, bool)> {
        self.changes.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::MountId;

    fn key(cluster: u128, mount: u128) -> MountKey {
        MountKey { cluster: ClusterId(cluster), mount: MountId(mount) }
    }

    #[test]
    fn a_mount_is_held_by_its_first_client_in_a_served_cluster() {
        let (a, b) = (NeighbourId(1), NeighbourId(2));
        let mut clients = Clients::new([ClusterId(1)]);
        assert_eq!(clients.claim(a, key(2, 5)), Err(ClientRefusal::Cluster));
        assert_eq!(clients.poll_aggregate(), None);
        assert_eq!(clients.claim(a, key(1, 5)), Ok(()));
        assert_eq!(clients.poll_aggregate(), Some((ClusterId(1), true)));
        assert_eq!(clients.claim(a, key(1, 5)), Ok(()), "again by its holder");
        assert_eq!(clients.claim(b, key(1, 5)), Err(ClientRefusal::Taken));
        assert_eq!(clients.holder(key(1, 5)), Some(a));
        // Another client's release of it changes nothing.
        clients.release(b, key(1, 5));
        assert_eq!(clients.holder(key(1, 5)), Some(a));
        assert_eq!(clients.claim(b, key(1, 6)), Ok(()));
        assert_eq!(clients.poll_aggregate(), None, "one aggregate per cluster");
        clients.release(a, key(1, 5));
        assert_eq!(clients.poll_aggregate(), None, "b still holds a mount of cluster 1");
        clients.release(b, key(1, 6));
        assert_eq!(clients.poll_aggregate(), Some((ClusterId(1), false)));
        assert!(clients.is_empty());
        assert!(!clients.has_aggregate(ClusterId(1)));
    }
}
