//! A node's in-memory links lent to it while it handles input that arrived on one of them, as
//! the engine lends a worker's links (`relay::LinkSet`): used by the simulator and by tests that
//! join nodes with byte vectors.
//!
//! A link lent is a [`Lend`]: the simulator's links ([`super::net`]) are pairs of production
//! [`crate::link::Link`]s writing into sealed records through the node's buffer pool (what the
//! [`Lent`] set shares, [`Lend::Shared`]); a bare [`Wire`] is each end's transaction and span
//! state ([`BareLink`]) and a byte vector of plaintext messages, for tests that need no more.

use crate::ids::LinkId;
use crate::link::RecordIn;
use crate::relay::{BareLink, LinkSet};
use crate::span::SpanLink;
use crate::txn;
use crate::wire::Sink;

/// An in-memory link between two nodes, as its ends are written.
pub trait Lend {
    /// What all the links of a set write through besides their own state (a buffer pool), `()`
    /// for nothing.
    type Shared;
    /// An end's output.
    type Out<'b>: Sink
    where
        Self: 'b;

    /// Which end of the link `node` holds (0 or 1), if the link can be written now.
    fn end_of(&self, node: usize) -> Option<usize>;

    /// Runs `f` with that end's span state, transactions and output, if it can be written now.
    fn with_end<R>(
        &mut self,
        end: usize,
        shared: &Self::Shared,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut Self::Out<'_>) -> R,
    ) -> Option<R>;

    /// The span state of the end `node` holds, whether or not the link can be written
    /// ([`LinkSet::span`]).
    fn span_of(&mut self, node: usize) -> Option<&mut SpanLink>;

    /// Sends a received `record` (whole messages) on that end as one record: see
    /// [`LinkSet::with_record`].
    fn record_at<R>(
        &mut self,
        end: usize,
        shared: &Self::Shared,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R>;
}

/// A bare in-memory link: each end's transaction and span state and the plaintext messages it
/// wrote.
pub trait Wire {
    /// Which end of the wire `node` holds (0 or 1), up or not.
    fn held_by(&self, node: usize) -> Option<usize>;
    /// Whether the wire can be written now.
    fn is_up(&self) -> bool;
    /// That end's state and output.
    fn end_mut(&mut self, end: usize) -> (&mut BareLink, &mut Vec<u8>);
}

impl<W: Wire> Lend for W {
    type Shared = ();
    type Out<'b>
        = Vec<u8>
    where
        Self: 'b;

    fn end_of(&self, node: usize) -> Option<usize> {
        self.is_up().then(|| self.held_by(node)).flatten()
    }

    fn with_end<R>(
        &mut self,
        end: usize,
        _: &(),
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        let (link, out) = self.end_mut(end);
        Some(f(&mut link.span, &mut link.txn, out))
    }

    fn span_of(&mut self, node: usize) -> Option<&mut SpanLink> {
        let end = self.held_by(node)?;
        Some(&mut self.end_mut(end).0.span)
    }

    /// The copy is appended to the wire's bytes, and taken off again if `edit` refuses it.
    fn record_at<R>(
        &mut self,
        end: usize,
        _: &(),
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let (link, out) = self.end_mut(end);
        let start = out.len();
        out.extend_from_slice(record.plaintext());
        let result = edit(&link.txn, &mut out[start..]);
        if result.is_none() {
            out.truncate(start);
        }
        result
    }
}

/// The links lent to `node`, a link id being a link's index: all of them, or all but the one
/// the input being handled came on.
pub struct Lent<'a, W: Lend> {
    before: &'a mut [W],
    after: &'a mut [W],
    /// The link the input came on (not lent), or `wires.len()` if none.
    current: usize,
    node: usize,
    shared: &'a W::Shared,
}

impl<'a, W: Lend<Shared = ()>> Lent<'a, W> {
    /// Wire `current`, and the others lent to `node`.
    pub fn split(wires: &'a mut [W], current: usize, node: usize) -> Option<(&'a mut W, Self)> {
        Lent::split_with(wires, &(), current, node)
    }

    /// Every wire lent to `node` (its application's own output, not input from a wire).
    pub fn all(wires: &'a mut [W], node: usize) -> Self {
        Lent::all_with(wires, &(), node)
    }
}

impl<'a, W: Lend> Lent<'a, W> {
    /// Link `current`, and the others lent to `node`, writing through `shared`.
    pub fn split_with(
        wires: &'a mut [W],
        shared: &'a W::Shared,
        current: usize,
        node: usize,
    ) -> Option<(&'a mut W, Self)> {
        let (before, rest) = wires.split_at_mut(current);
        let (wire, after) = rest.split_first_mut()?;
        Some((wire, Lent { before, after, current, node, shared }))
    }

    /// Every link lent to `node`, writing through `shared`.
    pub fn all_with(wires: &'a mut [W], shared: &'a W::Shared, node: usize) -> Self {
        let current = wires.len();
        Lent { before: wires, after: &mut [], current, node, shared }
    }

    /// Runs `f` with the node's end of link `link`, if lent and writable: [`LinkSet::with`],
    /// callable where the trait's higher-ranked bound is too strict (another set wrapping this
    /// one, as the simulator's set of the link being handled and the others).
    pub fn lend<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut W::Out<'_>) -> R,
    ) -> Option<R> {
        let (wire, end, shared) = self.get(link)?;
        wire.with_end(end, shared, f)
    }

    /// [`LinkSet::span`], as [`Lent::lend`] is [`LinkSet::with_span`].
    pub fn lend_span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        let node = self.node;
        self.wire(link)?.span_of(node)
    }

    /// [`LinkSet::with_record`], as [`Lent::lend`] is [`LinkSet::with`].
    pub fn lend_record<R>(
        &mut self,
        link: LinkId,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let (wire, end, shared) = self.get(link)?;
        wire.record_at(end, shared, record, edit)
    }

    /// Link `link`, if lent and writable, and the node's end of it.
    fn get(&mut self, link: LinkId) -> Option<(&mut W, usize, &W::Shared)> {
        let node = self.node;
        let shared = self.shared;
        let wire = self.wire(link)?;
        let end = wire.end_of(node)?;
        Some((wire, end, shared))
    }

    /// Link `link`, if lent, up or not.
    fn wire(&mut self, link: LinkId) -> Option<&mut W> {
        let l = usize::try_from(link.0).ok()?;
        match l.cmp(&self.current) {
            std::cmp::Ordering::Less => self.before.get_mut(l),
            std::cmp::Ordering::Greater => self.after.get_mut(l - self.current - 1),
            std::cmp::Ordering::Equal => None,
        }
    }
}

impl<W: Lend> LinkSet for Lent<'_, W> {
    type Out<'b>
        = W::Out<'b>
    where
        Self: 'b;

    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut W::Out<'_>) -> R,
    ) -> Option<R> {
        self.lend(link, f)
    }

    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        self.lend_span(link)
    }

    fn with_record<R>(
        &mut self,
        link: LinkId,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        self.lend_record(link, record, edit)
    }
}
