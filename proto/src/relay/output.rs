//! Where a node's output goes: the [`LinkSet`] it is handed on every input, each message
//! written straight into the link it goes on, and through which it reaches each link's span
//! protocol state (the link's own: [`crate::link::Link::span`]). What the node keeps of each
//! link besides.

use crate::ids::{LinkId, NodeId};
use crate::link::RecordIn;
use crate::span::{MountKey, SpanLink};
use crate::txn;
use crate::wire::{Command, ErrorCode, Flags, Sink};

use super::share::Pool;
use super::{CallId, Node};

/// Every link of a node that can be written now, handed to the node with each input: whatever
/// the node sends, on the link the input came on or on any other, it writes at once through
/// this (smoltcp's interface is polled with its whole socket set the same way). A link the set
/// cannot write (gone, or closing) drops what is written to it; the node hears of its end
/// through [`Node::link_down`].
///
/// Each link's span protocol state ([`SpanLink`]) is the link's, not the node's: the node reaches
/// it through the set, with the link's transactions and output ([`LinkSet::with_span`]) or alone
/// ([`LinkSet::span`], which also reaches a link that can no longer be written).
pub trait LinkSet {
    /// A link's output.
    type Out<'b>: Sink
    where
        Self: 'b;

    /// Runs `f` with `link`'s span protocol state, transaction state and output, if that link
    /// can be written now.
    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut Self::Out<'_>) -> R,
    ) -> Option<R>;

    /// Runs `f` with `link`'s transaction state and output, if that link can be written now.
    fn with<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut txn::Link, &mut Self::Out<'_>) -> R,
    ) -> Option<R> {
        self.with_span(link, |_, txn, out| f(txn, out))
    }

    /// `link`'s span protocol state, if the set holds that link, whether or not it can be
    /// written: a link going down keeps it until [`Node::link_down`] has withdrawn what the link
    /// advertised.
    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink>;

    /// Sends a received `record` (whole messages) on `link` as one record of its own, if that
    /// link can be written now: `edit` rewrites its plaintext with the link's transaction state
    /// at hand — where it lies, if the set can send it from there
    /// ([`Link::forward_in_place`](crate::link::Link::forward_in_place)), else a copy in the
    /// link's output — and it is sent if `edit` returns `Some` (nothing is sent if it returns
    /// `None`, and `edit` must then have left the plaintext as it was). Whatever the link had
    /// written before goes first. By default no record can be sent so.
    fn with_record<R>(
        &mut self,
        _link: LinkId,
        _record: &mut RecordIn<'_>,
        _edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        None
    }
}

/// A set with no link: for a node not linked to anything yet.
pub struct NoLinks;

impl LinkSet for NoLinks {
    type Out<'b> = Vec<u8>;

    fn with_span<R>(
        &mut self,
        _link: LinkId,
        _f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        None
    }

    fn span(&mut self, _link: LinkId) -> Option<&mut SpanLink> {
        None
    }
}

/// A link's state as a bare in-memory end holds it for a [`LinkSet`]: its transactions and its
/// span protocol state (the parts of [`crate::link::Link`] a node reaches), for tests and tools
/// that join nodes without records.
#[derive(Debug, Default)]
pub struct BareLink {
    /// Its transactions.
    pub txn: txn::Link,
    /// Its span protocol state.
    pub span: SpanLink,
}

/// A set of one link, its state and output borrowed: a node joined to a single peer (tests,
/// tools).
pub struct OneLink<'a, S> {
    id: LinkId,
    link: &'a mut BareLink,
    out: &'a mut S,
}

impl<'a, S: Sink> OneLink<'a, S> {
    /// Link `id`, with its state and output.
    pub fn new(id: LinkId, link: &'a mut BareLink, out: &'a mut S) -> OneLink<'a, S> {
        OneLink { id, link, out }
    }
}

impl<S: Sink> LinkSet for OneLink<'_, S> {
    type Out<'b>
        = S
    where
        Self: 'b;

    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut S) -> R,
    ) -> Option<R> {
        (link == self.id).then(|| f(&mut self.link.span, &mut self.link.txn, self.out))
    }

    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        (link == self.id).then_some(&mut self.link.span)
    }
}

/// What the node keeps of one link.
#[derive(Debug)]
pub(super) struct LinkState {
    pub(super) peer: NodeId,
    pub(super) counters: Counted,
    /// We dialled it.
    pub(super) dialled: bool,
    /// A duplicate link to a peer linked already, being closed: nothing on it is acted on.
    pub(super) closing: bool,
    /// An older link to a peer, replaced by a newer one and being closed: out of the span
    /// table, its circuits carrying on until it closes.
    pub(super) retired: bool,
    /// Circuits the peer opened through this link that are still open at its end.
    pub(super) open_in: u32,
    /// The circuits and calls we opened on this link, shared among the links they come from.
    /// Made at the first: a client link rarely carries any.
    pub(super) pool: Option<Box<Pool>>,
    /// Written to during the current input: its transactions' events are handled before the
    /// input returns ([`Node::settle`]).
    touched: bool,
}

/// What the relay counts of a link itself ([`super::LinkCounters`] adds what its span link and
/// the table count, when asked): kept apart so that a satellite's many client links do not each
/// carry fields that are always zero here.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Counted {
    pub(super) circuits_in: u64,
    pub(super) circuits_out: u64,
    pub(super) forwarded: u64,
    pub(super) aborts_in: u64,
    pub(super) aborts_out: u64,
    pub(super) circuits_limited: u64,
    pub(super) circuits_preempted: u64,
    pub(super) circuits_idle: u64,
}

/// An owned copy of an application event, kept until [`Node::poll_app`] hands it out.
#[derive(Debug)]
pub(super) enum Pending {
    Opened {
        call: CallId,
        mount: MountKey,
        command: Command,
        flags: Flags,
        at: usize,
        len: usize,
    },
    Message {
        call: CallId,
        flags: Flags,
        command: Command,
        error: ErrorCode,
        at: usize,
        len: usize,
    },
    Ended {
        call: CallId,
        error: ErrorCode,
    },
}

impl LinkState {
    pub(super) fn new(peer: NodeId, dialled: bool, closing: bool) -> LinkState {
        LinkState {
            peer,
            counters: Counted::default(),
            dialled,
            closing,
            retired: false,
            open_in: 0,
            pool: None,
            touched: false,
        }
    }
}

impl Node {
    /// Writes on `link` through `links` with its transaction state and output; `None` if the
    /// link cannot be written (the output is dropped: the link is going). The link's
    /// transactions' events that the write causes (a DELETE completing a pair ends it) are
    /// handled when the input is done ([`Node::settle`]), not in the middle of it.
    pub(super) fn write<L: LinkSet, R>(
        &mut self,
        links: &mut L,
        link: LinkId,
        f: impl FnOnce(&mut txn::Link, &mut L::Out<'_>) -> R,
    ) -> Option<R> {
        self.touch(link);
        links.with(link, f)
    }

    /// Lists `link` as written to during the current input, once.
    pub(super) fn touch(&mut self, link: LinkId) {
        if let Some(state) = self.links.get_mut(&link)
            && !state.touched
        {
            state.touched = true;
            self.touched.push(link);
        }
    }

    /// Handles the events of the links written to during an input, until none is left (handling
    /// one may write to another link). Every input method ends with this.
    pub(super) fn settle<L: LinkSet>(&mut self, links: &mut L) {
        while let Some(link) = self.touched.pop() {
            if let Some(state) = self.links.get_mut(&link) {
                state.touched = false;
            }
            while let Some(Some(event)) = links.with(link, |txn, _| txn.poll_event()) {
                if let Err(error) = self.handle_event(link, links, event) {
                    tracing::debug!(%link, %error, "event after a write refused");
                }
            }
        }
    }

    /// Sends what the table asked for, on each link it names.
    pub(super) fn route_table_output<L: LinkSet>(&mut self, links: &mut L) {
        while let Some((to, outbound)) = self.table.poll_transmit() {
            let link = Self::link_of(to);
            if !self.links.contains_key(&link) {
                continue;
            }
            let sent = links.with_span(link, |span, txn, out| span.transmit(txn, out, &outbound));
            if let Some(Err(error)) = sent {
                tracing::debug!(%link, %error, "span output refused");
            }
            self.touch(link);
        }
    }
}
