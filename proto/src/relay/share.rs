//! Max-min fair shares of a bounded number of circuits.
//!
//! A [`Pool`] is a budget of circuits (the node's circuit table, or the circuits it may open on
//! one link) shared by *holders*: the links circuits come in on, and the local application. While
//! the pool has room anyone may take a place. When it is full, a holder with at least two fewer
//! circuits in it than the biggest holder takes the place of the biggest holder's oldest circuit
//! (the caller aborts that one); anyone else is refused. So no holder, nor any group of holders,
//! can fill a pool so that a holder with fewer circuits cannot open one: the biggest holders give
//! way first, and a pool saturated by many holders settles with every holder within one circuit
//! of the others (max-min fairness).
//!
//! Each holder's circuits are kept in opening order on an intrusive list through the circuits'
//! [`Hook`]s (one per pool a circuit is in), so the oldest is found, and any is removed, in
//! constant time, and the biggest holder is found in logarithmic time. Nothing is allocated per
//! circuit once the holder maps have grown.

use std::collections::{BTreeSet, HashMap};

use crate::ids::LinkId;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// No circuit: the end of a holder's list.
const NIL: u32 = u32::MAX;

/// Who holds a circuit in a pool: the link it came in on, or the local application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Holder {
    /// The application of this node.
    Local,
    /// The peer on this link.
    Link(LinkId),
    /// A peer on a link of another plane of this node (DESIGN 7c.3), by that link's id: the
    /// circuit came over the internal link from that plane (`holding.rs`).
    Remote(LinkId),
}

/// A circuit's place in one pool: its neighbours on its holder's list.
#[derive(Clone, Copy, Debug)]
pub(super) struct Hook {
    prev: u32,
    next: u32,
    member: bool,
}

impl Default for Hook {
    fn default() -> Hook {
        Hook { prev: NIL, next: NIL, member: false }
    }
}

/// What the pool lets a holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Admission {
    /// There is room.
    Admit,
    /// The pool is full, and this circuit (the biggest holder's oldest) must give way first.
    Preempt(u32),
    /// The pool is full and the holder has its share.
    Refuse,
}

/// Where a pool reaches the circuits' hooks: the caller's circuit table.
pub(super) trait Hooks {
    /// The hook of circuit `slot` for this pool.
    fn hook(&mut self, slot: u32) -> &mut Hook;
}

#[derive(Clone, Copy, Debug)]
struct Held {
    count: u32,
    head: u32,
    tail: u32,
}

/// One budget of circuits. See the module documentation.
#[derive(Debug)]
pub(super) struct Pool {
    budget: usize,
    used: usize,
    held: Map<Holder, Held>,
    /// Holders by how many circuits they hold, to find the biggest.
    by_count: BTreeSet<(u32, Holder)>,
}

impl Pool {
    /// An empty pool of `budget` circuits.
    pub(super) fn new(budget: usize) -> Pool {
        Pool { budget, used: 0, held: Map::default(), by_count: BTreeSet::new() }
    }

    /// Circuits in the pool.
    pub(super) fn used(&self) -> usize {
        self.used
    }

    /// Circuits `holder` has in the pool.
    pub(super) fn count(&self, holder: Holder) -> u32 {
        self.held.get(&holder).map_or(0, |h| h.count)
    }

    /// Circuits held by the holders `which` picks.
    pub(super) fn count_where(&self, which: impl Fn(Holder) -> bool) -> usize {
        self.held.iter().filter(|&(&h, _)| which(h)).map(|(_, held)| held.count as usize).sum()
    }

    /// Whether `holder` may add a circuit (see [`Admission`]). Changes nothing.
    pub(super) fn check(&self, holder: Holder) -> Admission {
        if self.used < self.budget {
            return Admission::Admit;
        }
        let Some(&(biggest, victim)) = self.by_count.last() else { return Admission::Refuse };
        if self.count(holder) + 2 > biggest {
            return Admission::Refuse;
        }
        match self.held.get(&victim) {
            Some(held) if held.head != NIL => Admission::Preempt(held.head),
            _ => Admission::Refuse,
        }
    }

    /// Adds circuit `slot`, held by `holder`, at the end of the holder's list.
    pub(super) fn insert(&mut self, hooks: &mut impl Hooks, slot: u32, holder: Holder) {
        if hooks.hook(slot).member {
            return;
        }
        let held = self.held.entry(holder).or_insert(Held { count: 0, head: NIL, tail: NIL });
        self.by_count.remove(&(held.count, holder));
        let tail = held.tail;
        *hooks.hook(slot) = Hook { prev: tail, next: NIL, member: true };
        if tail == NIL {
            held.head = slot;
        } else {
            hooks.hook(tail).next = slot;
        }
        held.tail = slot;
        held.count += 1;
        self.by_count.insert((held.count, holder));
        self.used += 1;
    }

    /// Removes circuit `slot` (held by `holder`), if it is in the pool.
    pub(super) fn remove(&mut self, hooks: &mut impl Hooks, slot: u32, holder: Holder) {
        let Hook { prev, next, member } = *hooks.hook(slot);
        if !member {
            return;
        }
        *hooks.hook(slot) = Hook::default();
        let Some(held) = self.held.get_mut(&holder) else { return };
        if prev == NIL {
            held.head = next;
        } else {
            hooks.hook(prev).next = next;
        }
        if next == NIL {
            held.tail = prev;
        } else {
            hooks.hook(next).prev = prev;
        }
        self.by_count.remove(&(held.count, holder));
        held.count -= 1;
        if held.count == 0 {
            self.held.remove(&holder);
        } else {
            self.by_count.insert((held.count, holder));
        }
        self.used -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Circuits as the pool sees them: a hook each.
    struct Table(Vec<Hook>);

    impl Hooks for Table {
        fn hook(&mut self, slot: u32) -> &mut Hook {
            &mut self.0[slot as usize]
        }
    }

    fn link(n: u64) -> Holder {
        Holder::Link(LinkId(n))
    }

    #[test]
    fn a_full_pool_gives_way_from_its_biggest_holder_oldest_first() {
        let mut table = Table(vec![Hook::default(); 16]);
        let mut pool = Pool::new(4);
        let (rogue, honest) = (link(1), link(2));
        for slot in 0..4 {
            assert_eq!(pool.check(rogue), Admission::Admit);
            pool.insert(&mut table, slot, rogue);
        }
        // Full: the rogue is refused, the honest holder takes the rogue's oldest place.
        assert_eq!(pool.check(rogue), Admission::Refuse);
        assert_eq!(pool.check(honest), Admission::Preempt(0));
        pool.remove(&mut table, 0, rogue);
        pool.insert(&mut table, 4, honest);
        assert_eq!(pool.check(honest), Admission::Preempt(1));
        pool.remove(&mut table, 1, rogue);
        pool.insert(&mut table, 5, honest);
        // Two each: nobody is two below the biggest any more; a newcomer takes the oldest of
        // one of the two biggest.
        assert_eq!(pool.check(honest), Admission::Refuse);
        assert_eq!(pool.check(rogue), Admission::Refuse);
        assert!(matches!(pool.check(Holder::Local), Admission::Preempt(2 | 4)));
        assert_eq!((pool.count(rogue), pool.count(honest), pool.used()), (2, 2, 4));
        // Removal from the middle and the ends keeps the lists whole.
        pool.remove(&mut table, 3, rogue);
        pool.remove(&mut table, 3, rogue);
        assert_eq!((pool.count(rogue), pool.used()), (1, 3));
        assert_eq!(pool.check(rogue), Admission::Admit);
        pool.insert(&mut table, 6, rogue);
        pool.remove(&mut table, 5, honest);
        pool.insert(&mut table, 7, Holder::Local);
        // rogue [2, 6], honest [4], local [7]: the rogue is the biggest, its oldest goes first.
        assert_eq!(pool.check(link(3)), Admission::Preempt(2));
        for (slot, holder) in [(2, rogue), (6, rogue), (4, honest), (7, Holder::Local)] {
            pool.remove(&mut table, slot, holder);
        }
        assert_eq!(pool.used(), 0);
        assert!(pool.held.is_empty() && pool.by_count.is_empty());
    }

    #[test]
    fn many_holders_settle_within_one_of_each_other() {
        let mut table = Table(vec![Hook::default(); 64]);
        let mut pool = Pool::new(12);
        let mut next = 0u32;
        let mut owner = vec![None; 64];
        // Three holders take turns asking, the first having filled the pool alone.
        for round in 0..40 {
            let holder = link([1, 1, 1, 2, 3][round % 5]);
            match pool.check(holder) {
                Admission::Admit => {}
                Admission::Preempt(victim) => {
                    let victim_holder = owner[victim as usize].take().unwrap();
                    pool.remove(&mut table, victim, victim_holder);
                }
                Admission::Refuse => continue,
            }
            pool.insert(&mut table, next, holder);
            owner[next as usize] = Some(holder);
            next += 1;
        }
        let counts = [pool.count(link(1)), pool.count(link(2)), pool.count(link(3))];
        assert_eq!(counts.iter().sum::<u32>(), 12);
        assert!(counts.iter().all(|c| (3..=5).contains(c)), "{counts:?}");
    }
}
