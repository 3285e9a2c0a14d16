//! Tombstones: mounts that went away, kept for their feasibility distance (forgetting it while
//! a stale advertisement may still arrive could admit a loop), each charged to the node whose
//! retraction, loss or detach made it go: at most [`DEPARTED_PER_NEIGHBOUR_MAX`] per node, its
//! oldest forgotten first, and at most [`DEPARTED_MAX`] in all, past which the node holding most
//! forgets its oldest.

use super::{DEPARTED_MAX, DEPARTED_PER_NEIGHBOUR_MAX, MountKey, NodeId, Table};

impl Table {
    /// Charges a new tombstone to `cause`, forgetting that node's oldest beyond its share, and,
    /// past the node-wide bound, the oldest of whichever node holds the most.
    pub(super) fn depart(&mut self, key: MountKey, cause: NodeId) {
        self.departed_seq += 1;
        let seq = self.departed_seq;
        if let Some(entry) = self.mounts.get_mut(&key) {
            entry.departed = seq;
        }
        self.departed.entry(cause).or_default().push_back((key, seq));
        self.departed_total += 1;
        if self.departed.get(&cause).is_some_and(|q| q.len() > DEPARTED_PER_NEIGHBOUR_MAX) {
            self.forget_oldest(cause);
        }
        while self.departed_total > DEPARTED_MAX {
            // Only reached with more than DEPARTED_MAX / DEPARTED_PER_NEIGHBOUR_MAX nodes
            // charged: the scan is over at most DEPARTED_MAX queues, and rare.
            let Some(biggest) = self
                .departed
                .iter()
                .max_by_key(|(node, q)| (q.len(), **node))
                .map(|(&node, _)| node)
            else {
                break;
            };
            self.forget_oldest(biggest);
        }
    }

    /// Forgets the oldest tombstone charged to `node` (unless it was revived since), dropping the
    /// node's queue once empty.
    fn forget_oldest(&mut self, node: NodeId) {
        let Some(queue) = self.departed.get_mut(&node) else { return };
        let Some((old, stamp)) = queue.pop_front() else { return };
        if queue.is_empty() {
            self.departed.remove(&node);
        }
        self.departed_total -= 1;
        if self.mounts.get(&old).is_some_and(|e| e.is_tombstone() && e.departed == stamp) {
            self.mounts.remove(&old);
        }
    }
}
