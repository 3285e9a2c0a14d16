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
//!
//! # Planes
//!
//! A node on several workers runs a [`Node`](crate::relay::Node) per worker, a *plane* (DESIGN
//! 7c.3), and a client's link lands on whichever worker accepted it. The planes of one node then
//! keep one directory between them, a [`SharedClients`] ([`Clients::share`]): a mount is claimed
//! node-wide, so the first-client rule and the bound hold for the node as on one worker, and a
//! call to the aggregate that arrives on any plane finds the plane its client is on
//! ([`ClientHolder::Plane`]). The directory is consulted when a client's span comes or goes and
//! when a call to the aggregate opens, never per message; it is split in [`SHARDS`] locks so
//! that planes rarely wait for each other. Each plane still attaches the aggregate while it has
//! clients of the cluster itself; one that has none hears of it from those that do.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ids::{ClusterId, NeighbourId};
use crate::limits::CLIENT_MOUNTS_MAX;

use super::MountKey;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Locks a [`SharedClients`] is split in (by a keyed hash of the mount, so that no client can
/// choose mounts that all fall in one).
pub const SHARDS: usize = 64;

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

/// Where the client holding a mount is linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientHolder {
    /// On a link of this plane: the table neighbour of that link.
    Here(NeighbourId),
    /// On a link of another plane of this node, by that plane's index.
    Plane(u16),
}

/// A client mount's holder in a [`SharedClients`]: its plane and, there, its link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Home {
    plane: u16,
    neighbour: NeighbourId,
}

/// The client mounts of every plane of one node (see the module documentation). Thread-safe;
/// made once per node and handed to each plane's [`Clients::share`].
#[derive(Debug)]
pub struct SharedClients {
    shards: Box<[Mutex<Map<MountKey, Home>>]>,
    hasher: foldhash::fast::RandomState,
    /// Mounts held, across the shards.
    len: AtomicUsize,
}

impl Default for SharedClients {
    fn default() -> SharedClients {
        SharedClients {
            shards: (0..SHARDS).map(|_| Mutex::new(Map::default())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            len: AtomicUsize::new(0),
        }
    }
}

impl SharedClients {
    /// The shard holding `mount`. A plane that panicked while holding it left a map that is
    /// still whole (no operation here panics half-way), so a poisoned lock is taken as is.
    fn shard(&self, mount: &MountKey) -> MutexGuard<'_, Map<MountKey, Home>> {
        let index = (self.hasher.hash_one(mount) % SHARDS as u64) as usize;
        self.shards[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records that `home` holds `mount`: `Ok(true)` if newly, `Ok(false)` if it held it already.
    fn claim(&self, home: Home, mount: MountKey) -> Result<bool, ClientRefusal> {
        let mut shard = self.shard(&mount);
        match shard.get(&mount) {
            Some(&holder) if holder == home => return Ok(false),
            Some(_) => return Err(ClientRefusal::Taken),
            None => {}
        }
        if self.len.fetch_add(1, Ordering::Relaxed) >= CLIENT_MOUNTS_MAX {
            self.len.fetch_sub(1, Ordering::Relaxed);
            return Err(ClientRefusal::Full);
        }
        shard.insert(mount, home);
        Ok(true)
    }

    /// `home` no longer holds `mount`; whether it did.
    fn release(&self, home: Home, mount: MountKey) -> bool {
        let mut shard = self.shard(&mount);
        if shard.get(&mount) != Some(&home) {
            return false;
        }
        shard.remove(&mount);
        self.len.fetch_sub(1, Ordering::Relaxed);
        true
    }

    fn get(&self, mount: MountKey) -> Option<Home> {
        self.shard(&mount).get(&mount).copied()
    }

    /// Client mounts held, by every plane.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no plane holds a client mount.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every mount held on plane `plane`: that plane's node state is gone (the simulator
    /// crashing one plane alone; a node's process takes all its planes with it).
    pub fn forget_plane(&self, plane: u16) {
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let before = shard.len();
            shard.retain(|_, home| home.plane != plane);
            self.len.fetch_sub(before - shard.len(), Ordering::Relaxed);
        }
    }
}

/// Where a node's client mounts are kept: by the node alone, or with its other planes.
#[derive(Debug)]
enum Directory {
    Own(Map<MountKey, NeighbourId>),
    Shared {
        homes: Arc<SharedClients>,
        /// This plane's index.
        plane: u16,
        /// Mounts held by this plane's clients.
        held: usize,
    },
}

/// The clients' mounts of one node, or of one plane of it. See the module documentation.
#[derive(Debug)]
pub struct Clients {
    /// Each client mount and the client link (table neighbour) holding it.
    directory: Directory,
    /// The clusters this node serves clients of.
    clusters: HashSet<ClusterId, foldhash::fast::RandomState>,
    /// This plane's client mounts per cluster, for the clusters that have any.
    per_cluster: Map<ClusterId, u32>,
    /// Aggregates that appeared (`true`) or went (`false`), oldest first.
    changes: VecDeque<(ClusterId, bool)>,
}

impl Clients {
    /// An empty directory for a node serving clients of `clusters` (none: no client mount is
    /// accepted).
    pub fn new(clusters: impl IntoIterator<Item = ClusterId>) -> Clients {
        Clients {
            directory: Directory::Own(Map::default()),
            clusters: clusters.into_iter().collect(),
            per_cluster: Map::default(),
            changes: VecDeque::new(),
        }
    }

    /// From now on, keeps the client mounts in `homes`, shared with the node's other planes, as
    /// those of plane `plane`. Mounts held already move there (one another plane holds stays
    /// with it, and its client here loses it: share before any client links).
    pub fn share(&mut self, homes: Arc<SharedClients>, plane: u16) {
        let old = std::mem::replace(
            &mut self.directory,
            Directory::Shared { homes: homes.clone(), plane, held: 0 },
        );
        let Directory::Own(mounts) = old else { return };
        for (mount, neighbour) in mounts {
            if let Ok(true) = homes.claim(Home { plane, neighbour }, mount) {
                if let Directory::Shared { held, .. } = &mut self.directory {
                    *held += 1;
                }
            } else {
                self.count_out(mount.cluster);
            }
        }
    }

    /// The clusters this node serves clients of.
    pub fn clusters(&self) -> impl Iterator<Item = ClusterId> + '_ {
        self.clusters.iter().copied()
    }

    /// Records that client `from` holds `mount`; refused (nothing changed) if the cluster is not
    /// served here, another client holds the mount (on any plane), or the directory is full.
    /// Claiming a mount the same client holds already is a no-op.
    pub fn claim(&mut self, from: NeighbourId, mount: MountKey) -> Result<(), ClientRefusal> {
        if !self.clusters.contains(&mount.cluster) {
            return Err(ClientRefusal::Cluster);
        }
        match &mut self.directory {
            Directory::Own(mounts) => {
                match mounts.get(&mount) {
                    Some(&holder) if holder == from => return Ok(()),
                    Some(_) => return Err(ClientRefusal::Taken),
                    None => {}
                }
                if mounts.len() >= CLIENT_MOUNTS_MAX {
                    return Err(ClientRefusal::Full);
                }
                mounts.insert(mount, from);
            }
            Directory::Shared { homes, plane, held } => {
                if !homes.claim(Home { plane: *plane, neighbour: from }, mount)? {
                    return Ok(());
                }
                *held += 1;
            }
        }
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
        match &mut self.directory {
            Directory::Own(mounts) => {
                if mounts.get(&mount) != Some(&from) {
                    return;
                }
                mounts.remove(&mount);
            }
            Directory::Shared { homes, plane, held } => {
                if !homes.release(Home { plane: *plane, neighbour: from }, mount) {
                    return;
                }
                *held -= 1;
            }
        }
        self.count_out(mount.cluster);
    }

    /// One mount of `cluster` fewer on this plane.
    fn count_out(&mut self, cluster: ClusterId) {
        if let Some(count) = self.per_cluster.get_mut(&cluster) {
            *count -= 1;
            if *count == 0 {
                self.per_cluster.remove(&cluster);
                self.changes.push_back((cluster, false));
            }
        }
    }

    /// Where the client holding `mount` is linked, if a client holds it.
    pub fn holder(&self, mount: MountKey) -> Option<ClientHolder> {
        match &self.directory {
            Directory::Own(mounts) => mounts.get(&mount).map(|&n| ClientHolder::Here(n)),
            Directory::Shared { homes, plane, .. } => {
                let home = homes.get(mount)?;
                Some(if home.plane == *plane {
                    ClientHolder::Here(home.neighbour)
                } else {
                    ClientHolder::Plane(home.plane)
                })
            }
        }
    }

    /// Client mounts held by this plane's clients.
    pub fn len(&self) -> usize {
        match &self.directory {
            Directory::Own(mounts) => mounts.len(),
            Directory::Shared { held, .. } => *held,
        }
    }

    /// Whether this plane's clients hold no mount.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a cluster's aggregate is present on this plane (some client holds a mount of it
    /// here).
    pub fn has_aggregate(&self, cluster: ClusterId) -> bool {
        self.per_cluster.contains_key(&cluster)
    }

    /// Whether a call to `cluster`'s aggregate is passed on through this directory: a client of
    /// it is here, or (with planes) the cluster is served and its client may be on another plane.
    pub fn answers_for(&self, cluster: ClusterId) -> bool {
        match self.directory {
            Directory::Own(_) => self.has_aggregate(cluster),
            Directory::Shared { .. } => self.clusters.contains(&cluster),
        }
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
        assert_eq!(clients.holder(key(1, 5)), Some(ClientHolder::Here(a)));
        // Another client's release of it changes nothing.
        clients.release(b, key(1, 5));
        assert_eq!(clients.holder(key(1, 5)), Some(ClientHolder::Here(a)));
        assert_eq!(clients.claim(b, key(1, 6)), Ok(()));
        assert_eq!(clients.poll_aggregate(), None, "one aggregate per cluster");
        clients.release(a, key(1, 5));
        assert_eq!(clients.poll_aggregate(), None, "b still holds a mount of cluster 1");
        clients.release(b, key(1, 6));
        assert_eq!(clients.poll_aggregate(), Some((ClusterId(1), false)));
        assert!(clients.is_empty());
        assert!(!clients.has_aggregate(ClusterId(1)));
    }

    #[test]
    fn planes_sharing_a_directory_claim_each_mount_once_node_wide() {
        // Client links on two planes have the same neighbour id: each plane counts its own.
        let same = NeighbourId(1);
        let homes = Arc::new(SharedClients::default());
        let (mut zero, mut one) = (Clients::new([ClusterId(1)]), Clients::new([ClusterId(1)]));
        zero.share(homes.clone(), 0);
        one.share(homes.clone(), 1);
        assert!(one.answers_for(ClusterId(1)), "a call may be for a client on another plane");
        assert!(!one.has_aggregate(ClusterId(1)), "none of its own yet");
        assert!(!one.answers_for(ClusterId(2)), "not a served cluster");

        assert_eq!(zero.claim(same, key(1, 5)), Ok(()));
        assert_eq!(one.claim(same, key(1, 5)), Err(ClientRefusal::Taken), "held on plane 0");
        assert_eq!(zero.holder(key(1, 5)), Some(ClientHolder::Here(same)));
        assert_eq!(one.holder(key(1, 5)), Some(ClientHolder::Plane(0)));
        assert_eq!(zero.poll_aggregate(), Some((ClusterId(1), true)));
        assert_eq!(one.poll_aggregate(), None, "plane 1 has no client of cluster 1");
        assert_eq!((zero.len(), one.len(), homes.len()), (1, 0, 1));

        // Plane 1's client of the same neighbour id releasing it changes nothing.
        one.release(same, key(1, 5));
        assert_eq!(one.holder(key(1, 5)), Some(ClientHolder::Plane(0)));
        zero.release(same, key(1, 5));
        assert_eq!(one.holder(key(1, 5)), None);
        assert_eq!(one.claim(same, key(1, 5)), Ok(()), "free again, for anyone");
        assert_eq!(zero.holder(key(1, 5)), Some(ClientHolder::Plane(1)));
        assert_eq!(zero.poll_aggregate(), Some((ClusterId(1), false)));
        assert_eq!(one.poll_aggregate(), Some((ClusterId(1), true)));

        homes.forget_plane(1);
        assert_eq!((homes.len(), zero.holder(key(1, 5))), (0, None));
    }

    #[test]
    fn mounts_held_before_sharing_move_to_the_shared_directory() {
        let homes = Arc::new(SharedClients::default());
        let mut other = Clients::new([ClusterId(1)]);
        other.share(homes.clone(), 1);
        assert_eq!(other.claim(NeighbourId(9), key(1, 6)), Ok(()));
        let mut clients = Clients::new([ClusterId(1)]);
        assert_eq!(clients.claim(NeighbourId(1), key(1, 5)), Ok(()));
        assert_eq!(clients.claim(NeighbourId(1), key(1, 6)), Ok(()));
        assert_eq!(clients.poll_aggregate(), Some((ClusterId(1), true)));
        clients.share(homes.clone(), 0);
        assert_eq!(clients.holder(key(1, 5)), Some(ClientHolder::Here(NeighbourId(1))));
        assert_eq!(clients.holder(key(1, 6)), Some(ClientHolder::Plane(1)), "plane 1's first");
        assert_eq!((clients.len(), homes.len()), (1, 2));
        assert!(clients.has_aggregate(ClusterId(1)));
    }
}
