//! What a node reports of its links, for `show` and the metrics: what it keeps of each link
//! itself, and what each link's own span state says, read through the node's [`LinkSet`].

use crate::ids::{LinkId, NodeId};
use crate::span::{Role, SpanLink};

use super::output::{self, LinkState};
use super::share::Holder;
use super::{LinkSet, Node};

/// Counters of one link, as the relay sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkCounters {
    /// Circuits the peer opened through this link.
    pub circuits_in: u64,
    /// Circuits we opened on this link.
    pub circuits_out: u64,
    /// Messages forwarded onto this link.
    pub forwarded: u64,
    /// Forced closes received on this link (ABORT|DELETE, real or synthesized).
    pub aborts_in: u64,
    /// Forced closes sent on this link.
    pub aborts_out: u64,
    /// Circuits the peer opened that were refused for a limit: its share of the node's circuits
    /// or of the next link's, or its calls as a client (`LIMIT_REACHED`).
    pub circuits_limited: u64,
    /// The peer's circuits aborted to make room for a peer holding fewer (`LIMIT_REACHED`).
    pub circuits_preempted: u64,
    /// The peer's circuits aborted after carrying nothing for the idle bound.
    pub circuits_idle: u64,
    /// The peer's spans refused past its share or a full table (`LIMIT_REACHED`).
    pub spans_limited: u64,
    /// The peer's client spans refused: a cluster not served here, a mount another client holds.
    pub spans_refused: u64,
    /// The peer's seqno requests that waited for its budget.
    pub seqno_delayed: u64,
}

impl LinkCounters {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &LinkCounters) {
        let LinkCounters {
            circuits_in,
            circuits_out,
            forwarded,
            aborts_in,
            aborts_out,
            circuits_limited,
            circuits_preempted,
            circuits_idle,
            spans_limited,
            spans_refused,
            seqno_delayed,
        } = *other;
        self.circuits_in += circuits_in;
        self.circuits_out += circuits_out;
        self.forwarded += forwarded;
        self.aborts_in += aborts_in;
        self.aborts_out += aborts_out;
        self.circuits_limited += circuits_limited;
        self.circuits_preempted += circuits_preempted;
        self.circuits_idle += circuits_idle;
        self.spans_limited += spans_limited;
        self.spans_refused += spans_refused;
        self.seqno_delayed += seqno_delayed;
    }
}

/// What a node knows of one link, for `show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link.
    pub link: LinkId,
    /// The peer's node id.
    pub peer: NodeId,
    /// What the peer's key was granted.
    pub granted: Role,
    /// What the peer said it is (once its hello arrived; never more than granted).
    pub role: Option<Role>,
    /// Spans it has open to us.
    pub spans_in: usize,
    /// Spans we have open to it.
    pub spans_out: usize,
    /// Circuits and calls open on it that we opened.
    pub circuits_open: usize,
    /// Circuits it holds in the node's table: those that came in on it.
    pub circuits_held: usize,
    /// Counters.
    pub counters: LinkCounters,
}

impl Node {
    /// The links, for `show`: what the node keeps of each, and what its span state in `links`
    /// says (the role its key was granted, the peer's hello, the spans each way, what they
    /// refused). A link whose span state the set does not hold is left out.
    pub fn link_info<'a, L: LinkSet>(
        &'a self,
        links: &'a mut L,
    ) -> impl Iterator<Item = LinkInfo> + 'a {
        let live = self.links.iter().filter(|(_, s)| !s.closing && !s.retired);
        live.filter_map(move |(&link, state)| {
            let span: &SpanLink = links.span(link)?;
            Some(LinkInfo {
                link,
                peer: state.peer,
                granted: span.granted(),
                role: span.peer_role(),
                spans_in: span.spans_received(),
                spans_out: span.spans_sent(),
                circuits_open: state.pool.as_ref().map_or(0, |p| p.used()),
                circuits_held: self.pool.count(Holder::Link(link)) as usize,
                counters: self.link_counters(link, state, Some(span)),
            })
        })
    }

    /// The node at the other end of `link`, if the node holds it (closing or not).
    pub fn peer_of(&self, link: LinkId) -> Option<NodeId> {
        self.links.get(&link).map(|s| s.peer)
    }

    /// The links, and the node at the other end of each.
    pub fn peers(&self) -> impl Iterator<Item = (LinkId, NodeId)> + '_ {
        self.links.iter().filter(|(_, s)| !s.closing && !s.retired).map(|(&l, s)| (l, s.peer))
    }

    /// What the client links that went down had counted, in all (with the live client links'
    /// [`LinkInfo::counters`], what all clients ever counted: never goes down).
    pub fn clients_gone(&self) -> LinkCounters {
        self.clients_gone
    }

    pub(super) fn link_counters(
        &self,
        link: LinkId,
        state: &LinkState,
        span: Option<&SpanLink>,
    ) -> LinkCounters {
        let span = span.map(SpanLink::counters).unwrap_or_default();
        let output::Counted {
            circuits_in,
            circuits_out,
            forwarded,
            aborts_in,
            aborts_out,
            circuits_limited,
            circuits_preempted,
            circuits_idle,
        } = state.counters;
        LinkCounters {
            circuits_in,
            circuits_out,
            forwarded,
            aborts_in,
            aborts_out,
            circuits_limited,
            circuits_preempted,
            circuits_idle,
            spans_limited: span.spans_limited,
            spans_refused: span.spans_refused,
            seqno_delayed: self.table.seqno_requests_delayed(Self::neighbour_of(link)),
        }
    }
}
