//! Who holds each circuit, and the shares of the node's pools ([`super::share`]) applied to
//! circuits: admitting one, preempting for one, releasing one, and the idle sweep.
//!
//! A circuit is held by the link it came into the node on, or by the application. On a node of
//! several planes (DESIGN 7c.3) a circuit may come into the node on one plane and leave it on
//! another: the plane it leaves from then counts it against that same link, named by the
//! `LINK_HOLDER` note the entering plane sends on the internal link before each circuit it
//! opens there (PROTOCOL.md 9.9), as a [`Holder::Remote`]. So the shares of a link to the next
//! hop are max-min fair among the node's peers, whatever plane each is linked to, and not among
//! planes: a plane with many peers behind it is not one holder with one share.

use std::cell::Cell;

use crate::ids::LinkId;
use crate::limits::RELAY_CIRCUITS_PER_LINK_MAX;
use crate::wire::{Command, ErrorCode};

use super::Node;
use super::circuit::{Circuit, End};
use super::output::LinkSet;
use super::share::{Admission, Holder, Hook, Hooks, Pool};

/// The `LINK_HOLDER` note naming the application (any other names a link id).
const NOTE_APPLICATION: u64 = u64::MAX;

impl Holder {
    /// The payload of the `LINK_HOLDER` note naming this holder.
    pub(super) fn note(self) -> [u8; 8] {
        match self {
            Holder::Local => NOTE_APPLICATION,
            Holder::Link(link) | Holder::Remote(link) => link.0,
        }
        .to_le_bytes()
    }
}

/// The circuits' hooks for the node's pool (0) or a link's pool (1).
struct Hooked<'a>(&'a mut slab::Slab<Circuit>, usize);

impl Hooks for Hooked<'_> {
    fn hook(&mut self, slot: u32) -> &mut Hook {
        // Pools hold live slots only: they are removed before their circuit is.
        &mut self.0[slot as usize].hooks[self.1]
    }
}

impl Node {
    /// Who holds a circuit the peer on `link` opens: that link; or, on an internal link, the
    /// holder the other plane's last note named (the link it came into the node on there).
    pub(super) fn holder_of_open(&mut self, link: LinkId) -> Holder {
        let note = self.planes.iter_mut().find(|p| p.link == link).and_then(|p| p.note.take());
        note.unwrap_or(Holder::Link(link))
    }

    /// A `LINK_HOLDER` note on `link`: kept for the next circuit the link opens, if it is an
    /// internal link. On any other link it is dropped, as any one-way message a peer sends
    /// (PROTOCOL.md 8.9): no peer names who holds its circuits.
    pub(super) fn holder_note(&mut self, link: LinkId, payload: &[u8]) {
        let Some(plane) = self.planes.iter_mut().find(|p| p.link == link) else { return };
        plane.note =
            <[u8; 8]>::try_from(payload).ok().map(|bytes| match u64::from_le_bytes(bytes) {
                NOTE_APPLICATION => Holder::Local,
                id => Holder::Remote(LinkId(id)),
            });
    }

    /// Makes room for a circuit held by `holder` in the node's pool and, if it continues on
    /// `next`, in that link's pool, aborting the biggest holders' oldest circuits if the pools
    /// are full and `holder` holds fewer; `false` (nothing taken, nothing aborted beyond what
    /// was due) if `holder` has its share.
    pub(super) fn admit<L: LinkSet>(
        &mut self,
        holder: Holder,
        next: Option<LinkId>,
        links: &mut L,
    ) -> bool {
        // Each preemption frees a place in the pool it was found in, so each loop ends.
        loop {
            match self.pool.check(holder) {
                Admission::Admit => break,
                Admission::Refuse => return false,
                Admission::Preempt(victim) => self.preempt(victim, links),
            }
        }
        let Some(next) = next else { return true };
        loop {
            let Some(pool) = self.links.get(&next).and_then(|s| s.pool.as_deref()) else {
                return true;
            };
            match pool.check(holder) {
                Admission::Admit => return true,
                Admission::Refuse => return false,
                Admission::Preempt(victim) => self.preempt(victim, links),
            }
        }
    }

    /// A new circuit, in the node's pool and its next link's.
    pub(super) fn new_circuit(
        &mut self,
        a: End,
        b: End,
        command: Command,
        holder: Holder,
        out: Option<LinkId>,
    ) -> (u32, u32) {
        let generation = self.generation();
        let slot = self.circuits.insert(Circuit {
            generation,
            a,
            b,
            command,
            error: ErrorCode::NONE,
            holder,
            hooks: [Hook::default(); 2],
            out,
            seen: Cell::new(self.epoch),
            aborting: false,
            answered: false,
        }) as u32;
        self.pool.insert(&mut Hooked(&mut self.circuits, 0), slot, holder);
        if let Some(link) = out
            && let Some(state) = self.links.get_mut(&link)
        {
            let pool =
                state.pool.get_or_insert_with(|| Box::new(Pool::new(RELAY_CIRCUITS_PER_LINK_MAX)));
            pool.insert(&mut Hooked(&mut self.circuits, 1), slot, holder);
        }
        (slot, generation)
    }

    /// Takes a circuit out of the pools it is in.
    pub(super) fn release(&mut self, slot: u32) {
        let Some(circuit) = self.circuits.get(slot as usize) else { return };
        let (holder, out) = (circuit.holder, circuit.out);
        self.pool.remove(&mut Hooked(&mut self.circuits, 0), slot, holder);
        if let Some(link) = out
            && let Some(pool) = self.links.get_mut(&link).and_then(|s| s.pool.as_deref_mut())
        {
            pool.remove(&mut Hooked(&mut self.circuits, 1), slot, holder);
        }
    }

    /// Aborts a circuit to make room for a holder with fewer, counting it against its holder
    /// (one on another plane counts it there, when the forced close reaches it).
    pub(super) fn preempt<L: LinkSet>(&mut self, slot: u32, links: &mut L) {
        let Some(circuit) = self.circuits.get(slot as usize) else { return };
        if let Holder::Link(link) = circuit.holder
            && let Some(state) = self.links.get_mut(&link)
        {
            state.counters.circuits_preempted += 1;
        }
        self.counters.preempted += 1;
        self.abort_both(slot, ErrorCode::LIMIT_REACHED, links);
        self.maybe_free(slot);
    }

    /// Aborts every circuit that carried nothing for two whole epochs (the idle bound).
    pub(super) fn sweep_idle<L: LinkSet>(&mut self, links: &mut L) {
        let epoch = self.epoch;
        let (links_state, id) = (&self.links, self.id);
        // A circuit that came from another plane of this node is swept there, where it came
        // into the node (its abort comes through here): counted once.
        let from_plane = |holder: Holder| match holder {
            Holder::Link(link) => links_state.get(&link).is_some_and(|s| s.peer == id),
            Holder::Remote(_) => true,
            Holder::Local => false,
        };
        let idle: Vec<u32> = self
            .circuits
            .iter()
            .filter(|(_, c)| !c.aborting && epoch.wrapping_sub(c.seen.get()) >= 3)
            .filter(|(_, c)| !from_plane(c.holder))
            .map(|(slot, _)| slot as u32)
            .collect();
        for slot in idle {
            if let Holder::Link(link) = self.circuits[slot as usize].holder
                && let Some(state) = self.links.get_mut(&link)
            {
                state.counters.circuits_idle += 1;
            }
            self.counters.idle += 1;
            self.abort_both(slot, ErrorCode::IDLE, links);
            self.maybe_free(slot);
        }
    }
}
