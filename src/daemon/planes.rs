//! What the planes of one node share (DESIGN 7c.3): which link holds each linked peer node,
//! whatever plane it came up on, so that a node keeps one link per adjacency across its workers
//! as it does on one; and the commands one plane sends another about those links.
//!
//! A plane consults [`Linked`] only when a link to another node comes up or goes down (never
//! per message). Two links to one node on the same plane are still the node's to resolve
//! (`Node::link_up`); across planes the same rule ([`keeps_new`]) is applied here, and the
//! plane holding the losing link is told to close it ([`PlaneCommand::Close`]).

use std::collections::HashMap;
use std::sync::Mutex;

use super::PeerSpec;
use crate::cipher::PublicKey;
use crate::ids::{LinkId, NodeId};
use crate::link::CloseReason;
use crate::relay::keeps_new;

/// Which plane dials each configured peer with an address, by key, on a node of `planes`
/// planes. At start (no `previous` plan) the peers are dealt round robin in file order, so the
/// dials are balanced. After a reload a peer dialled before keeps its plane (its link, if up,
/// is not moved), and a new one goes to the plane dialling fewest (the lowest first on a tie).
pub fn dial_plan(
    peers: &[PeerSpec],
    planes: usize,
    previous: Option<&HashMap<PublicKey, usize>>,
) -> HashMap<PublicKey, usize> {
    let planes = planes.max(1);
    let dialled = peers.iter().filter(|p| p.address.is_some()).map(|p| p.key);
    let Some(previous) = previous else {
        return dialled.enumerate().map(|(n, key)| (key, n % planes)).collect();
    };
    let mut plan: HashMap<PublicKey, usize> = HashMap::new();
    let mut load = vec![0usize; planes];
    let mut new = Vec::new();
    for key in dialled {
        match previous.get(&key) {
            Some(&plane) if plane < planes => {
                plan.insert(key, plane);
                load[plane] += 1;
            }
            _ => new.push(key),
        }
    }
    for key in new {
        let (plane, _) = load.iter().enumerate().min_by_key(|&(i, n)| (*n, i)).unwrap_or((0, &0));
        load[plane] += 1;
        plan.insert(key, plane);
    }
    plan
}

/// Which link holds each linked peer node, across the planes of one node.
#[derive(Debug, Default)]
pub struct Linked {
    peers: Mutex<HashMap<NodeId, Held>>,
}

#[derive(Debug)]
struct Held {
    link: LinkId,
    dialled: bool,
    /// Planes whose redialler counts on this link for the peer (told when it goes).
    waiting: Vec<usize>,
}

/// What [`Linked::claim`] decides of a new link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No other plane holds a link to the peer (a link on the claiming plane is the node's to
    /// resolve): take it up.
    Take,
    /// Take it up; it replaces `old`, held by another plane, which must close it.
    Replaces {
        /// The other plane's link.
        old: LinkId,
    },
    /// Close it: the node keeps `keep`, on another plane.
    Keep {
        /// The link kept.
        keep: LinkId,
    },
}

impl Linked {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Held>> {
        // A plane that panicked holding the lock left the map whole (no update spans a panic).
        self.peers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A link to `peer` came up on plane `plane` (its id names its worker), dialled by us if
    /// `dialled`; the node's own id is `us`. See [`Claim`].
    pub fn claim(
        &self,
        us: NodeId,
        peer: NodeId,
        link: LinkId,
        dialled: bool,
        plane: usize,
    ) -> Claim {
        let mut peers = self.lock();
        let Some(held) = peers.get_mut(&peer) else {
            peers.insert(peer, Held { link, dialled, waiting: Vec::new() });
            return Claim::Take;
        };
        if held.link.worker() == plane {
            return Claim::Take;
        }
        if keeps_new(us, peer, held.dialled, dialled) {
            let old = held.link;
            *held = Held { link, dialled, waiting: std::mem::take(&mut held.waiting) };
            Claim::Replaces { old }
        } else {
            if !held.waiting.contains(&plane) {
                held.waiting.push(plane);
            }
            Claim::Keep { keep: held.link }
        }
    }

    /// The node (on the claiming plane) resolved two links to `peer` itself: `link` is kept.
    pub fn kept(&self, peer: NodeId, link: LinkId, dialled: bool) {
        let mut peers = self.lock();
        let waiting = peers.remove(&peer).map(|held| held.waiting).unwrap_or_default();
        peers.insert(peer, Held { link, dialled, waiting });
    }

    /// `link` to `peer` went down: if it was the peer's, it is forgotten, and the planes that
    /// counted on it are returned (to be told).
    pub fn gone(&self, peer: NodeId, link: LinkId) -> Vec<usize> {
        let mut peers = self.lock();
        match peers.get(&peer) {
            Some(held) if held.link == link => {
                peers.remove(&peer).map(|held| held.waiting).unwrap_or_default()
            }
            _ => Vec::new(),
        }
    }
}

/// What one plane of a node asks of another, through its worker's mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaneCommand {
    /// Close `link` with a notice: a link on another plane replaced it.
    Close {
        /// The link.
        link: LinkId,
    },
    /// `link` (on another plane), which this plane's redialler counted on for its peer, is
    /// gone.
    Gone {
        /// The link.
        link: LinkId,
        /// Why it went down.
        reason: CloseReason,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: NodeId = NodeId(5);
    const SMALLER: NodeId = NodeId(1);

    fn link(worker: u64, slot: u64) -> LinkId {
        LinkId(worker << 56 | slot)
    }

    #[test]
    fn a_second_link_on_another_plane_is_resolved_as_the_node_resolves_one() {
        let linked = Linked::default();
        // The peer dialled us (on plane 0), then we dialled it (on plane 1): the link the smaller
        // id dialled is kept at both ends, the peer's.
        assert_eq!(linked.claim(US, SMALLER, link(0, 1), false, 0), Claim::Take);
        assert_eq!(
            linked.claim(US, SMALLER, link(1, 1), true, 1),
            Claim::Keep { keep: link(0, 1) }
        );
        // Plane 1 counted on it: told when it goes.
        assert_eq!(linked.gone(SMALLER, link(1, 1)), Vec::<usize>::new(), "not the peer's link");
        assert_eq!(linked.gone(SMALLER, link(0, 1)), vec![1]);
        assert_eq!(linked.gone(SMALLER, link(0, 1)), Vec::<usize>::new(), "once");

        // We dialled it first (plane 1), then it dialled us (plane 0): its link replaces ours.
        assert_eq!(linked.claim(US, SMALLER, link(1, 2), true, 1), Claim::Take);
        assert_eq!(
            linked.claim(US, SMALLER, link(0, 2), false, 0),
            Claim::Replaces { old: link(1, 2) }
        );
        // A second link on the same plane is the node's to resolve.
        assert_eq!(linked.claim(US, SMALLER, link(0, 3), false, 0), Claim::Take);
        linked.kept(SMALLER, link(0, 2), false);
        assert_eq!(linked.gone(SMALLER, link(0, 2)), Vec::<usize>::new());
    }

    #[test]
    fn peers_keep_their_plane_across_a_reload_and_new_ones_fill_the_emptiest() {
        let peer = |b: u8, dial: bool| {
            let key = PublicKey([b; 32]);
            let address = dial.then(|| std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
            PeerSpec::router(address, key)
        };
        let start = [peer(1, true), peer(2, false), peer(3, true), peer(4, true)];
        let plan = dial_plan(&start, 2, None);
        let plane =
            |plan: &HashMap<PublicKey, usize>, b: u8| plan.get(&PublicKey([b; 32])).copied();
        assert_eq!([1, 2, 3, 4].map(|b| plane(&plan, b)), [Some(0), None, Some(1), Some(0)]);
        // Peer 1 goes, 5 and 6 come, listed first: the kept ones stay where they were.
        let after = [peer(5, true), peer(6, true), peer(3, true), peer(4, true)];
        let plan = dial_plan(&after, 2, Some(&plan));
        assert_eq!([3, 4].map(|b| plane(&plan, b)), [Some(1), Some(0)]);
        let mut new = [plane(&plan, 5).unwrap(), plane(&plan, 6).unwrap()];
        new.sort_unstable();
        assert_eq!(new, [0, 1], "one each: the planes were even");
        assert_eq!(plane(&plan, 1), None);
    }

    #[test]
    fn two_links_dialled_the_same_way_keep_the_older() {
        let linked = Linked::default();
        let bigger = NodeId(9);
        assert_eq!(linked.claim(US, bigger, link(0, 1), true, 0), Claim::Take);
        assert_eq!(linked.claim(US, bigger, link(1, 1), true, 1), Claim::Keep { keep: link(0, 1) });
        assert_eq!(
            linked.claim(US, bigger, link(1, 2), false, 1),
            Claim::Keep { keep: link(0, 1) }
        );
    }
}
