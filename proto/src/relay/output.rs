//! What a node writes to its links: straight into a lent link ([`Links`]), or queued per link
//! and written by [`Node::flush`].

use std::collections::VecDeque;

use crate::error::Error;
use crate::ids::{LinkId, NodeId, TxnId};
use crate::span::{MountKey, Outbound, Role, SpanLink};
use crate::txn;
use crate::wire::{Command, ErrorCode, Flags, Sink};

use super::circuit::{End, Side};
use super::share::Pool;
use super::{CallId, Node};

/// The caller's other links, reachable while a message received on one link is handled: a
/// relayed message can then be written straight into the link its circuit continues on.
pub trait Links {
    /// A link's output.
    type Out<'b>: Sink
    where
        Self: 'b;

    /// Runs `f` with `link`'s transaction state and output, if that link can be written now.
    fn with<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut txn::Link, &mut Self::Out<'_>) -> R,
    ) -> Option<R>;

    /// Sends `plaintext` (whole messages, as a received record held them) on `link` as one
    /// record of its own, if that link can be written now: a copy of it is made in the link's
    /// output, `edit` rewrites the copy with the link's transaction state at hand, and the copy
    /// is sent if `edit` returns `Some` (dropped, with nothing sent, if it returns `None`).
    /// Whatever the link had written before goes first. By default no record can be sent so.
    fn with_record<R>(
        &mut self,
        _link: LinkId,
        _plaintext: &[u8],
        _edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        None
    }
}

/// No other link is reachable: everything for other links waits for [`Node::flush`].
pub struct NoLinks;

impl Links for NoLinks {
    type Out<'b> = Vec<u8>;

    fn with<R>(
        &mut self,
        _link: LinkId,
        _f: impl FnOnce(&mut txn::Link, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        None
    }
}

/// What the node keeps of one link.
#[derive(Debug)]
pub(super) struct LinkState {
    pub(super) peer: NodeId,
    pub(super) span: SpanLink,
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
    /// Output waiting for [`Node::flush`]: none on an idle client link.
    queue: Option<Box<Queue>>,
    dirty: bool,
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

/// A link's output waiting for [`Node::flush`]: its operations, and their payloads in one arena.
#[derive(Debug, Default)]
struct Queue {
    ops: VecDeque<Op>,
    bytes: Vec<u8>,
}

/// One queued action on a link.
#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    Span(Outbound),
    /// Open the circuit's `side` end inside `parent`.
    Open {
        circuit: u32,
        generation: u32,
        side: Side,
        parent: TxnId,
        command: Command,
        flags: Flags,
        at: usize,
        len: usize,
    },
    /// Send on the circuit's `side` end.
    Send {
        circuit: u32,
        generation: u32,
        side: Side,
        command: Command,
        flags: Flags,
        error: ErrorCode,
        at: usize,
        len: usize,
    },
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
    pub(super) fn new(peer: NodeId, span: SpanLink, dialled: bool, closing: bool) -> LinkState {
        LinkState {
            peer,
            span,
            counters: Counted::default(),
            dialled,
            closing,
            retired: false,
            open_in: 0,
            pool: None,
            queue: None,
            dirty: false,
        }
    }

    /// Whether output waits in this link's queue (which anything written directly would
    /// overtake).
    pub(super) fn has_queued(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| !q.ops.is_empty())
    }

    /// Bytes of payload queued.
    pub(super) fn queued_bytes(&self) -> usize {
        self.queue.as_ref().map_or(0, |q| q.bytes.len())
    }

    /// Writes a message with no flags on `txn` straight into this link through `links`, if
    /// nothing is queued here for it to overtake and the link is lent. Whether it was written
    /// (if not, the caller queues it).
    pub(super) fn send_direct<L: Links>(
        &self,
        links: &mut L,
        link: LinkId,
        txn: TxnId,
        command: Command,
        payload: &[u8],
        error: ErrorCode,
    ) -> bool {
        if self.has_queued() {
            return false;
        }
        links
            .with(link, |link_txn, out| {
                // Refused only if the peer's forced close crossed it: the transaction is ending
                // anyway, as it would be for a refused queued send.
                let _ = link_txn.send(out, txn, command, payload, Flags::NONE, error);
            })
            .is_some()
    }

    /// Queues `op` for [`Node::flush`], its payload kept in the link's byte arena (`op` is given
    /// where and how long), and lists the link as dirty once.
    pub(super) fn queue(
        &mut self,
        dirty: &mut Vec<LinkId>,
        link: LinkId,
        payload: &[u8],
        op: impl FnOnce(usize, usize) -> Op,
    ) {
        let queue = self.queue.get_or_insert_with(Box::default);
        let at = queue.bytes.len();
        queue.bytes.extend_from_slice(payload);
        queue.ops.push_back(op(at, payload.len()));
        if !self.dirty {
            self.dirty = true;
            dirty.push(link);
        }
    }
}

impl Node {
    /// Writes `link`'s queued output with its transaction state and sink; `None` if the link is
    /// gone (the output is dropped and circuits waiting on it aborted).
    pub fn flush<S: Sink>(&mut self, link: LinkId, io: Option<(&mut txn::Link, &mut S)>) {
        let Some(state) = self.links.get_mut(&link) else { return };
        state.dirty = false;
        let Some((txn, out)) = io else {
            self.link_down(link);
            return;
        };
        let mut queue = state.queue.take();
        let mut span_errors = None;
        if let Some(Queue { ops, bytes }) = queue.as_deref_mut() {
            for op in ops.drain(..) {
                match op {
                    Op::Span(outbound) => {
                        if let Some(state) = self.links.get_mut(&link)
                            && let Err(e) = state.span.transmit(txn, out, &outbound)
                        {
                            span_errors.get_or_insert(e);
                        }
                    }
                    Op::Open { circuit, generation, side, parent, command, flags, at, len } => {
                        if !self.live(circuit, generation) {
                            continue;
                        }
                        match txn.open(out, Some(parent), command, &bytes[at..at + len], flags) {
                            Ok(id) => {
                                let c = &mut self.circuits[circuit as usize];
                                if let End::Link { txn: t, closed, .. } = c.end(side) {
                                    *t = Some(id);
                                    // Kept if an abort was queued after this open: its forced
                                    // close follows in this flush.
                                    *closed |= flags.contains(Flags::DELETE);
                                }
                                self.by_txn.insert((link, id), (circuit, side));
                            }
                            Err(error) => {
                                // The span closed meanwhile, or a limit: the circuit cannot go on.
                                let code = match error {
                                    Error::LimitReached(_) => ErrorCode::LIMIT_REACHED,
                                    _ => ErrorCode::NO_ROUTE,
                                };
                                let c = &mut self.circuits[circuit as usize];
                                if let End::Link { ended, closed, forced, .. } = c.end(side) {
                                    *ended = true;
                                    *closed = true;
                                    *forced = true;
                                }
                                self.abort_both(circuit, code);
                                self.maybe_free(circuit);
                            }
                        }
                    }
                    Op::Send { circuit, generation, side, command, flags, error, at, len } => {
                        if !self.live(circuit, generation) {
                            continue;
                        }
                        let End::Link { txn: Some(id), .. } =
                            *self.circuits[circuit as usize].end(side)
                        else {
                            continue;
                        };
                        // The transaction may have been closed by the peer's forced close
                        // meanwhile; a refused send changes nothing.
                        let _ = txn.send(out, id, command, &bytes[at..at + len], flags, error);
                    }
                }
            }
        }
        if let Some(state) = self.links.get_mut(&link) {
            // A client link is idle nearly always, and a satellite holds very many: it keeps no
            // queue between turns. Other links keep theirs (its capacity), so steady state
            // allocates nothing; unless the flush queued more meanwhile (sent next turn).
            if state.span.peer_role() != Some(Role::Client)
                && state.queue.is_none()
                && let Some(mut kept) = queue
            {
                kept.bytes.clear();
                state.queue = Some(kept);
            }
        }
        if let Some(error) = span_errors {
            tracing::debug!(%link, %error, "span output refused");
        }
        // Sends end transactions (a DELETE completing a pair): their events are ours to handle.
        while let Some(event) = txn.poll_event() {
            if let Err(error) = self.event(link, txn, out, event) {
                tracing::debug!(%link, %error, "event after flush refused");
            }
        }
    }

    /// Sends what the table asked for on each link's queue.
    pub(super) fn route_table_output(&mut self) {
        while let Some((to, outbound)) = self.table.poll_transmit() {
            let link = Self::link_of(to);
            if let Some(state) = self.links.get_mut(&link) {
                state.queue(&mut self.dirty, link, &[], |_, _| Op::Span(outbound));
            }
        }
    }
}
