//! Circuits: pairing an incoming transaction with one on the next link (or the application),
//! forwarding between them, admitting them within the peers' shares, and ending them.

use std::cell::Cell;

use crate::error::{Error, Limit, Misuse};
use crate::ids::{LinkId, MsgId, TxnId};
use crate::limits::MESSAGE_PAYLOAD_MAX;
use crate::link::RecordIn;
use crate::span::{ClientHolder, MountKey, NextHop, Role};
use crate::txn::{self, Delivery};
use crate::wire::{ClientAddress, Command, ErrorCode, Flags, Message};

use super::output::{LinkSet, Pending};
use super::share::{Holder, Hook};
use super::{CLIENT_ADDRESS_LEN, CallId, Node, client_calls_left};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum End {
    /// A transaction on a link. `txn` is `None` until its open is written (a circuit is made
    /// before the open on its next link, which may fail). `closed`: we sent our DELETE on it (plain or forced); `forced`: we sent our one forced
    /// close (which may follow a plain DELETE: PROTOCOL.md 6.5); `ended`: it is over.
    Link { link: LinkId, txn: Option<TxnId>, closed: bool, forced: bool, ended: bool },
    /// The local application.
    Local { closed: bool },
}

impl End {
    /// A link end nothing has been sent on yet.
    pub(super) fn link(link: LinkId, txn: Option<TxnId>) -> End {
        End::Link { link, txn, closed: false, forced: false, ended: false }
    }
}

#[derive(Debug)]
pub(super) struct Circuit {
    pub(super) generation: u32,
    /// The end that opened it (a link, or the application).
    pub(super) a: End,
    /// The end it goes to (a link, or a local mount).
    pub(super) b: End,
    pub(super) command: Command,
    pub(super) error: ErrorCode,
    /// Who it counts against in the pools: the link it came into the node on, or the
    /// application (`holding.rs`).
    pub(super) holder: Holder,
    /// Its place in the node's pool (0) and in its next link's (1).
    pub(super) hooks: [Hook; 2],
    /// Its next link, whose pool it is in.
    pub(super) out: Option<LinkId>,
    /// The idle sweep's epoch in which it last carried something.
    pub(super) seen: Cell<u32>,
    /// Aborted by this node: it holds no share any more, and is not swept again.
    pub(super) aborting: bool,
    /// Its far end (b) has sent something back.
    pub(super) answered: bool,
}

impl Circuit {
    pub(super) fn end(&mut self, side: Side) -> &mut End {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}

/// Where a circuit goes next.
pub(super) enum Hop {
    Local,
    Link { link: LinkId, span: TxnId, strip: usize },
}

impl Node {
    /// Opens the circuit's `side` end on `link` (inside the span `open.parent`). If the link
    /// refuses (the span closed meanwhile, or a limit) the circuit cannot go on: it is aborted
    /// back.
    pub(super) fn open_end<L: LinkSet>(
        &mut self,
        slot: u32,
        side: Side,
        link: LinkId,
        open: Open<'_>,
        links: &mut L,
    ) {
        let Open { parent, command, flags, payload } = open;
        // Onto another plane of this node: first the note of who holds it (`holding.rs`).
        let note = match self.is_plane_link(link) {
            true => self.circuits.get(slot as usize).map(|c| c.holder.note()),
            false => None,
        };
        // An open ends nothing: no event of this write to handle.
        let opened = links.with(link, |txn, out| {
            if let Some(note) = &note {
                txn.send_oneway(out, Command::LINK_HOLDER, ErrorCode::NONE, note)?;
            }
            txn.open(out, Some(parent), command, payload, flags)
        });
        match opened {
            Some(Ok(id)) => {
                let c = &mut self.circuits[slot as usize];
                if let End::Link { txn: t, closed, .. } = c.end(side) {
                    *t = Some(id);
                    *closed |= flags.contains(Flags::DELETE);
                }
                self.by_txn.insert((link, id), (slot, side));
            }
            failed => {
                let code = match failed {
                    Some(Err(Error::LimitReached(_))) => ErrorCode::LIMIT_REACHED,
                    _ => ErrorCode::NO_ROUTE,
                };
                let c = &mut self.circuits[slot as usize];
                if let End::Link { ended, closed, forced, .. } = c.end(side) {
                    *ended = true;
                    *closed = true;
                    *forced = true;
                }
                self.abort_both(slot, code, links);
                self.maybe_free(slot);
            }
        }
    }

    /// Sends on a call. `flags` may hold DELETE (our last), ABORT, or both (force-close).
    pub fn send<L: LinkSet>(
        &mut self,
        call: CallId,
        command: Command,
        payload: &[u8],
        flags: Flags,
        error: ErrorCode,
        links: &mut L,
    ) -> Result<(), Error> {
        let result = self.send_inner(call, command, payload, flags, error, links);
        self.settle(links);
        result
    }

    fn send_inner<L: LinkSet>(
        &mut self,
        call: CallId,
        command: Command,
        payload: &[u8],
        flags: Flags,
        error: ErrorCode,
        links: &mut L,
    ) -> Result<(), Error> {
        check_payload(payload)?;
        if !self.live(call.slot, call.generation) {
            return Err(Misuse::UnknownCall.into());
        }
        let circuit = &mut self.circuits[call.slot as usize];
        circuit.seen.set(self.epoch);
        let (local_side, link_side) = if matches!(circuit.a, End::Local { .. }) {
            (Side::A, Side::B)
        } else {
            (Side::B, Side::A)
        };
        let End::Local { closed } = circuit.end(local_side) else {
            return Err(Misuse::UnknownCall.into());
        };
        let forced = flags.contains(Flags::ABORT | Flags::DELETE);
        if *closed && !forced {
            return Err(Misuse::CallClosed.into());
        }
        if flags.contains(Flags::DELETE) {
            *closed = true;
        }
        let End::Link { link, closed: link_closed, forced: link_forced, ended, txn } =
            *circuit.end(link_side)
        else {
            return Err(Misuse::UnknownCall.into());
        };
        // After our DELETE only our one forced close may still go.
        if ended || !may_send(link_closed, link_forced, forced) {
            return Ok(());
        }
        let Some(id) = txn else { return Ok(()) };
        if let End::Link { closed, forced: sent_forced, .. } = circuit.end(link_side) {
            *closed |= flags.contains(Flags::DELETE);
            *sent_forced |= forced;
        }
        if forced && let Some(state) = self.links.get_mut(&link) {
            state.counters.aborts_out += 1;
        }
        let flags = flags & (Flags::DELETE | Flags::ABORT);
        if flags != Flags::NONE {
            // A close may end the transaction there: its event is handled at the end.
            self.touch(link);
        }
        // Refused only if the peer's forced close crossed it: the transaction is ending anyway.
        let _ = links.with(link, |txn, out| txn.send(out, id, command, payload, flags, error));
        Ok(())
    }

    /// Forwards a whole record that arrived on `link` as one record on the next link, when every
    /// message in it is in the middle of a circuit's stream (no CREATE, DELETE or ABORT: nothing
    /// changes but the counters) and all of them continue on that same link: each message's
    /// header is rewritten (its msgid and REPLY flag are per link) and the record sealed for the
    /// next link as a whole — where it lies, in the receive buffer it arrived in, if `links` can
    /// send from there, else in a copy — instead of each message being parsed, delivered, looked
    /// up and written again. Consecutive messages of one transaction share one lookup.
    ///
    /// `txn` is `link`'s own transaction state, read only; `links` holds the others (the engine
    /// lends them while the record is handled). Returns how many messages went; `None` if the
    /// record does not qualify (or `links` cannot take it), and then nothing happened, to the
    /// record either: hand its messages one by one to [`Node::received`] as usual (which also
    /// reports anything malformed in it).
    pub fn forward_record<L: LinkSet>(
        &mut self,
        link: LinkId,
        txn: &txn::Link,
        links: &mut L,
        record: &mut RecordIn<'_>,
    ) -> Option<usize> {
        // The first message says where the record would go, before anything is touched.
        let first = Message::new_checked(record.plaintext()).ok()?;
        let (next, _) = self.continues(link, txn.in_stream(first.flags(), first.msgid())?)?;
        let node = &*self;
        let count = links.with_record(next, record, |next_txn, body| {
            let header_of = |(flags, msgid): (Flags, MsgId)| {
                let (to, out) = node.continues(link, txn.in_stream(flags, msgid)?)?;
                if to != next {
                    return None;
                }
                next_txn.in_stream_header(out)
            };
            // Every message is checked before any is rewritten: `body` may be the received
            // record itself, which must stay as it arrived if the record does not qualify.
            rewrite_headers(body, header_of, false)?;
            rewrite_headers(body, header_of, true)
        })?;
        if let Some(state) = self.links.get_mut(&next) {
            state.counters.forwarded += count as u64;
        }
        self.counters.whole_records += 1;
        Some(count)
    }

    /// Where a message on `link`'s transaction `txn` continues, if `txn` is one end of a
    /// circuit whose other end is a transaction open on a link: that link and transaction. The
    /// circuit counts as active.
    fn continues(&self, link: LinkId, txn: TxnId) -> Option<(LinkId, TxnId)> {
        let &(slot, side) = self.by_txn.get(&(link, txn))?;
        let circuit = self.circuits.get(slot as usize)?;
        let other = match side {
            Side::A => &circuit.b,
            Side::B => &circuit.a,
        };
        match *other {
            End::Link { link, txn: Some(txn), closed: false, ended: false, .. } => {
                circuit.seen.set(self.epoch);
                Some((link, txn))
            }
            _ => None,
        }
    }

    /// A transaction the peer opened that is not the span protocol's: a circuit if it opened
    /// inside one of our spans and the peer has room for it, refused otherwise.
    pub(super) fn incoming<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        // Taken first, so that a note is used up by the open it was sent for, refused or not.
        let holder = self.holder_of_open(link);
        if delivery.command == Command::LINK_ATTACH {
            return match delivery.parent {
                None => self.attach_open(link, links, delivery),
                Some(_) => {
                    self.counters.refused += 1;
                    self.refuse(link, links, delivery, ErrorCode::MALFORMED)
                }
            };
        }
        let span = links.span(link).ok_or(Misuse::UnknownLink(link))?;
        let mount = delivery.parent.and_then(|parent| span.our_span_mount(parent));
        let from_client = span.peer_role() == Some(Role::Client);
        let state = self.links.get_mut(&link).ok_or(Misuse::UnknownLink(link))?;
        let Some(mount) = mount else {
            // Not inside a span of ours: nothing to route it by.
            self.counters.refused += 1;
            return self.refuse(link, links, delivery, ErrorCode::REFUSED);
        };
        state.counters.circuits_in += 1;
        if from_client && !client_calls_left(state.open_in) {
            state.counters.circuits_limited += 1;
            self.counters.limited += 1;
            return self.refuse(link, links, delivery, ErrorCode::LIMIT_REACHED);
        }
        if delivery.command == Command::LINK_TRACE {
            return self.trace(link, links, delivery, mount, from_client, holder);
        }
        let hop = match self.resolve(link, from_client, mount, delivery.payload, links) {
            Ok(hop) => hop,
            Err(code) => {
                if code == ErrorCode::NO_ROUTE {
                    self.counters.no_route += 1;
                } else {
                    self.counters.refused += 1;
                }
                return self.refuse(link, links, delivery, code);
            }
        };
        let payload = match hop {
            Hop::Local => delivery.payload,
            Hop::Link { strip, .. } => &delivery.payload[strip..],
        };
        let carry = Carry { mount, holder, hop, payload, report: None };
        self.carry(link, links, delivery, carry).map(|_| ())
    }

    /// Makes the circuit a transaction the peer opened on `link` starts, if its holder has room
    /// in the pools (refused with `LIMIT_REACHED` otherwise): delivered to the application, or
    /// opened on the next link with `carry.payload`, after `carry.report` has been written back
    /// on `link` if there is one. Whether it was admitted.
    pub(super) fn carry<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &Delivery<'_>,
        carry: Carry<'_>,
    ) -> Result<bool, Error> {
        let Carry { mount, holder, hop, payload, report } = carry;
        let next = match hop {
            Hop::Local => None,
            Hop::Link { link: next, .. } => Some(next),
        };
        if !self.admit(holder, next, links) {
            if let Some(state) = self.links.get_mut(&link) {
                state.counters.circuits_limited += 1;
            }
            self.counters.limited += 1;
            return self.refuse(link, links, delivery, ErrorCode::LIMIT_REACHED).map(|()| false);
        }
        let a = End::link(link, Some(delivery.txn));
        let b = match next {
            None => End::Local { closed: false },
            Some(next) => End::link(next, None),
        };
        let (slot, generation) = self.new_circuit(a, b, delivery.command, holder, next);
        self.by_txn.insert((link, delivery.txn), (slot, Side::A));
        if let Some(state) = self.links.get_mut(&link) {
            state.open_in += 1;
        }
        match hop {
            Hop::Local => {
                self.counters.served += 1;
                let call = CallId { slot, generation };
                let at = self.app_bytes.len();
                self.app_bytes.extend_from_slice(payload);
                self.app.push_back(Pending::Opened {
                    call,
                    mount,
                    command: delivery.command,
                    flags: delivery.flags,
                    at,
                    len: payload.len(),
                });
                if delivery.closes() {
                    self.circuits[slot as usize].error = delivery.error;
                }
            }
            Hop::Link { link: next, span, .. } => {
                let state = self.links.get_mut(&next).ok_or(Misuse::UnknownLink(next))?;
                // A circuit handed to another plane of this node is counted where it leaves
                // the node (relayed) or ends in it (served), once (DESIGN 7c.3).
                if state.peer != self.id {
                    self.counters.relayed += 1;
                }
                state.counters.circuits_out += 1;
                if let Some(report) = report {
                    // Back toward the caller, before the circuit goes on: no DELETE, so it ends
                    // nothing and has no event to handle.
                    let (id, command) = (delivery.txn, delivery.command);
                    let _ = links.with(link, |txn, out| {
                        txn.send(out, id, command, report, Flags::NONE, ErrorCode::NONE)
                    });
                }
                let flags = delivery.flags & Flags::DELETE;
                let open = Open { parent: span, command: delivery.command, flags, payload };
                self.open_end(slot, Side::B, next, open, links);
            }
        }
        Ok(true)
    }

    /// Where a circuit to `mount` arriving on `from` (a client's link if `from_client`) goes
    /// next. A circuit to one of our aggregates names the client in its first 16 payload bytes
    /// (stripped here), and goes to the client holding that mount in the client directory,
    /// never anywhere else.
    pub(super) fn resolve<L: LinkSet>(
        &self,
        from: LinkId,
        from_client: bool,
        mount: MountKey,
        payload: &[u8],
        links: &mut L,
    ) -> Result<Hop, ErrorCode> {
        let (link, target, strip) = if self.is_our_aggregate(mount) {
            let (address, _) = ClientAddress::parse(payload).ok_or(ErrorCode::REFUSED)?;
            let target = MountKey { cluster: mount.cluster, mount: address.client };
            let holder = self.clients.holder(target).ok_or(ErrorCode::NO_ROUTE)?;
            if from_client {
                // A client never hears of aggregates; it may not reach another client.
                return Err(ErrorCode::REFUSED);
            }
            match holder {
                ClientHolder::Here(holder) => (Self::link_of(holder), target, CLIENT_ADDRESS_LEN),
                // A client on another plane of this node: passed to that plane, still addressed
                // to the aggregate, once (what came from a plane is never passed on again).
                ClientHolder::Plane(plane) if !self.is_plane_link(from) => {
                    (self.plane_link(plane).ok_or(ErrorCode::NO_ROUTE)?, mount, 0)
                }
                ClientHolder::Plane(_) => return Err(ErrorCode::NO_ROUTE),
            }
        } else {
            let route = self.table.route(mount).ok_or(ErrorCode::NO_ROUTE)?;
            match (route.next_hop, self.attached_to(mount)) {
                // A mount a local link attached: to the application, inside its LINK_ATTACH.
                (NextHop::Local, Some((app, span))) if app != from => {
                    return Ok(Hop::Link { link: app, span, strip: 0 });
                }
                (NextHop::Local, Some(_)) => return Err(ErrorCode::NO_ROUTE),
                (NextHop::Local, None) => return Ok(Hop::Local),
                (NextHop::Neighbour(n), _) => (Self::link_of(n), mount, 0),
            }
        };
        if link == from {
            return Err(ErrorCode::NO_ROUTE);
        }
        if !self.links.contains_key(&link) {
            return Err(ErrorCode::NO_ROUTE);
        }
        let span =
            links.span(link).and_then(|s| s.their_span(target)).ok_or(ErrorCode::NO_ROUTE)?;
        Ok(Hop::Link { link, span, strip })
    }

    /// Forwards a message that arrived on the circuit's `from` end to its other end: written
    /// straight into the next link, or handed to the application.
    pub(super) fn forward<L: LinkSet>(
        &mut self,
        slot: u32,
        from: Side,
        links: &mut L,
        delivery: &Delivery<'_>,
    ) {
        let Some(circuit) = self.circuits.get_mut(slot as usize) else { return };
        circuit.seen.set(self.epoch);
        if delivery.closes() && circuit.error == ErrorCode::NONE {
            circuit.error = delivery.error;
        }
        if from == Side::B {
            let answered = std::mem::replace(&mut circuit.answered, true);
            let forced = delivery.flags.contains(Flags::ABORT | Flags::DELETE);
            if forced && delivery.error == ErrorCode::LIMIT_REACHED {
                // Another plane of this node refused or preempted it for its share there: the
                // refusal is counted against the link it came in on, as one here would be
                // (the node-wide count is that plane's).
                let holder = circuit.holder;
                if let (End::Link { link: next, .. }, Holder::Link(link)) = (circuit.b, holder)
                    && self.links.get(&next).is_some_and(|s| s.peer == self.id)
                    && let Some(state) = self.links.get_mut(&link)
                {
                    match answered {
                        true => state.counters.circuits_preempted += 1,
                        false => state.counters.circuits_limited += 1,
                    }
                }
            }
        }
        let Some(circuit) = self.circuits.get_mut(slot as usize) else { return };
        let generation = circuit.generation;
        let to = from.other();
        let flags = delivery.flags & (Flags::DELETE | Flags::ABORT);
        match *circuit.end(to) {
            End::Local { closed: _ } => {
                let call = CallId { slot, generation };
                let at = self.app_bytes.len();
                self.app_bytes.extend_from_slice(delivery.payload);
                self.app.push_back(Pending::Message {
                    call,
                    flags,
                    command: delivery.command,
                    error: delivery.error,
                    at,
                    len: delivery.payload.len(),
                });
            }
            End::Link { link, closed, forced, ended, txn: next } => {
                // After our DELETE on that end, only our one forced close may still go there:
                // a path lost after the other end's last reply must still reach the caller.
                let forcing = flags.contains(Flags::ABORT | Flags::DELETE);
                if ended || !may_send(closed, forced, forcing) {
                    return;
                }
                let Some(id) = next else { return };
                if let End::Link { closed, forced, .. } = circuit.end(to) {
                    *closed |= flags.contains(Flags::DELETE);
                    *forced |= forcing;
                }
                if flags.contains(Flags::DELETE) && delivery.error == ErrorCode::LOST_LINK {
                    self.counters.lost += 1;
                }
                if let Some(state) = self.links.get_mut(&link) {
                    state.counters.forwarded += 1;
                    if forcing {
                        state.counters.aborts_out += 1;
                    }
                }
                if flags != Flags::NONE {
                    // A close may end the transaction there: its event is handled at the end.
                    self.touch(link);
                }
                let (command, error) = (delivery.command, delivery.error);
                // Refused only if the peer's forced close crossed it: that transaction is ending
                // anyway.
                let _ = links.with(link, |txn, out| {
                    txn.send(out, id, command, delivery.payload, flags, error)
                });
            }
        }
    }

    /// Force-closes both link ends of a circuit, and tells a local end it ended. The circuit
    /// holds no share from then on.
    pub(super) fn abort_both<L: LinkSet>(&mut self, slot: u32, error: ErrorCode, links: &mut L) {
        self.release(slot);
        let Some(circuit) = self.circuits.get_mut(slot as usize) else { return };
        circuit.aborting = true;
        if circuit.error == ErrorCode::NONE {
            circuit.error = error;
        }
        let command = circuit.command;
        for side in [Side::A, Side::B] {
            let circuit = &mut self.circuits[slot as usize];
            let End::Link { link, closed, forced, ended, txn } = circuit.end(side) else {
                continue;
            };
            // One forced close per end, also after a plain DELETE of ours.
            if *forced || *ended {
                continue;
            }
            *closed = true;
            *forced = true;
            let (link, txn) = (*link, *txn);
            if let Some(state) = self.links.get_mut(&link) {
                state.counters.aborts_out += 1;
            }
            let Some(id) = txn else { continue };
            let flags = Flags::ABORT | Flags::DELETE;
            // Refused only if the peer's forced close crossed it: that end is ending anyway.
            let _ =
                self.write(links, link, |txn, out| txn.send(out, id, command, &[], flags, error));
        }
    }

    /// A circuit end's transaction ended on its link.
    pub(super) fn end_ended(&mut self, slot: u32, side: Side) {
        if let Some(circuit) = self.circuits.get_mut(slot as usize)
            && let End::Link { ended, .. } = circuit.end(side)
        {
            *ended = true;
        }
        self.maybe_free(slot);
    }

    /// The circuits of a link that went down: those whose open on it was still queued, or whose
    /// transaction on it is gone, are aborted on their other end.
    pub(super) fn circuits_link_down<L: LinkSet>(&mut self, link: LinkId, links: &mut L) {
        let stale: Vec<u32> = self
            .circuits
            .iter()
            .filter(|(_, c)| {
                matches!(c.a, End::Link { link: l, .. } if l == link)
                    || matches!(c.b, End::Link { link: l, .. } if l == link)
            })
            .map(|(slot, _)| slot as u32)
            .collect();
        for slot in stale {
            let circuit = &mut self.circuits[slot as usize];
            for side in [Side::A, Side::B] {
                if let End::Link { link: l, txn, ended, closed, forced } = circuit.end(side)
                    && *l == link
                {
                    if let Some(txn) = txn.take() {
                        self.by_txn.remove(&(link, txn));
                    }
                    *ended = true;
                    *closed = true;
                    *forced = true;
                }
            }
            self.abort_both(slot, ErrorCode::LOST_LINK, links);
            self.maybe_free(slot);
        }
    }

    pub(super) fn live(&self, slot: u32, generation: u32) -> bool {
        self.circuits.get(slot as usize).is_some_and(|c| c.generation == generation)
    }

    /// Frees a circuit once both ends are over.
    pub(super) fn maybe_free(&mut self, slot: u32) {
        let Some(circuit) = self.circuits.get(slot as usize) else { return };
        let over = |end: &End| match *end {
            End::Link { ended, .. } => ended,
            End::Local { .. } => true,
        };
        if !(over(&circuit.a) && over(&circuit.b)) {
            return;
        }
        let error = circuit.error;
        let has_local =
            matches!(circuit.a, End::Local { .. }) || matches!(circuit.b, End::Local { .. });
        let generation = circuit.generation;
        self.release(slot);
        self.circuits.remove(slot as usize);
        if has_local {
            self.app.push_back(Pending::Ended { call: CallId { slot, generation }, error });
        }
    }
}

/// Whether a message may still go on a link end on which we sent our DELETE (`closed`) and our
/// forced close (`forced`): anything before our DELETE, and after it our one forced close
/// (`forcing`), as PROTOCOL.md 6.5 allows.
fn may_send(closed: bool, forced: bool, forcing: bool) -> bool {
    !closed || (forcing && !forced)
}

/// Refuses a payload no message can carry, before anything is opened or queued.
pub(super) fn check_payload(payload: &[u8]) -> Result<(), Error> {
    if payload.len() > MESSAGE_PAYLOAD_MAX {
        return Err(Limit::PayloadTooLarge(payload.len()).into());
    }
    Ok(())
}

/// How a circuit arriving on a link goes on ([`Node::carry`]).
pub(super) struct Carry<'a> {
    /// The mount it is for.
    pub(super) mount: MountKey,
    /// Who holds it in the pools.
    pub(super) holder: Holder,
    /// Where it goes next.
    pub(super) hop: Hop,
    /// Its first payload there.
    pub(super) payload: &'a [u8],
    /// A message written back on the link it came on first, if it goes on to a next link (a
    /// trace's report).
    pub(super) report: Option<&'a [u8]>,
}

/// What opening a circuit's end on its link sends.
pub(super) struct Open<'a> {
    pub(super) parent: TxnId,
    pub(super) command: Command,
    pub(super) flags: Flags,
    pub(super) payload: &'a [u8],
}

impl Node {
    /// Force-closes a transaction the peer opened on `link` that we will not carry. If the
    /// transaction layer already forced it (it was opened under a transaction we had forced:
    /// PROTOCOL.md 6.5), there is nothing more to send.
    pub(super) fn refuse<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &Delivery<'_>,
        error: ErrorCode,
    ) -> Result<(), Error> {
        let (id, command, flags) = (delivery.txn, delivery.command, Flags::ABORT | Flags::DELETE);
        match self.write(links, link, |txn, out| txn.send(out, id, command, &[], flags, error)) {
            Some(Err(Error::Misuse(_))) | None => Ok(()),
            Some(result) => result,
        }
    }
}

/// Walks the messages of a record's plaintext, finding each one's header on the next link with
/// `header_of` (once per run of messages of one transaction), and writes it into each if
/// `write`. Returns how many messages the record holds; `None` at the first message that is
/// malformed or has no header there (having written the ones before it, if `write`).
fn rewrite_headers(
    body: &mut [u8],
    header_of: impl Fn((Flags, MsgId)) -> Option<(Flags, MsgId)>,
    write: bool,
) -> Option<usize> {
    let mut count = 0;
    // The last (flags, msgid) seen, and the header it becomes on the next link.
    let mut last: Option<((Flags, MsgId), (Flags, MsgId))> = None;
    let mut at = 0;
    while at < body.len() {
        let mut message = Message::new_checked(&mut body[at..]).ok()?;
        let key = (message.flags(), message.msgid());
        let (flags, msgid) = match last {
            Some((seen, header)) if seen == key => header,
            _ => {
                let header = header_of(key)?;
                last = Some((key, header));
                header
            }
        };
        if write {
            message.set_flags(flags);
            message.set_msgid(msgid);
        }
        at += message.wire_len();
        count += 1;
    }
    Some(count)
}
