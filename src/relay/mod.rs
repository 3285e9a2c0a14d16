//! A node's logic: its links' span protocol, its span table, its local mounts, and the circuits
//! it relays. Sans-IO: the caller owns the links' transaction state ([`txn::Link`]) and their
//! output, and drives the node with what arrives.
//!
//! # Circuits
//!
//! To reach a mount, a transaction is opened *inside* the span that advertises it. A node that
//! receives one (a CREATE whose parent is one of its own spans) looks the mount up in its table:
//! attached here, the transaction is the application's ([`AppEvent::Opened`]); reachable through
//! a neighbour, the node opens a transaction inside that neighbour's span and pairs the two, and
//! from then on forwards every message of one to the other, both ways, flags, command and error
//! as they came (ids are per link). That chain of paired transactions is a circuit.
//!
//! - **No route**: the incoming transaction is force-closed at once with
//!   [`ErrorCode::NO_ROUTE`].
//! - **Make-before-break**: a route change only affects circuits opened after it; a circuit stays
//!   on its path while the path lives (a retracted span stays open while circuits are inside it).
//! - **Hop-by-hop abort**: when a link dies, the transaction layer ends each of its transactions
//!   with a synthesized ABORT|DELETE carrying [`ErrorCode::LOST_LINK`]; the node forwards that
//!   forced close along the circuit, so both ends of every circuit end exactly once.
//!
//! # Calling contract
//!
//! - [`Node::link_up`] when a link's handshake is done; [`Node::received`] for each message the
//!   link's transaction layer returns and [`Node::event`] for each of its events;
//!   [`Node::link_down`] when the link is gone (after its synthesized events).
//! - Output for other links is queued, not written at once (the caller holds one link at a
//!   time): after handling input, call [`Node::flush`] for each link [`Node::poll_dirty`]
//!   returns, with that link's transaction state and sink (or `None` if it is gone).
//! - A caller that can reach its other links while it handles a message passes them
//!   ([`Links`], to [`Node::received_via`] and [`Node::event_via`]): a message in the middle
//!   of a circuit whose next link has nothing queued is then written straight to that link,
//!   without the queue's copy and the flush's second pass. Anything else still queues, so each
//!   link's output stays in order.
//! - The application: [`Node::attach`] / [`Node::detach`] mounts; [`Node::open`] calls to a
//!   mount, [`Node::send`] on calls; drain [`Node::poll_app`] after each input.
//!
//! An error returned by `received` or `event` means the peer broke the protocol or a bound:
//! close that link with it as the reason. Nothing here allocates per relayed message once its
//! queues have grown to their working size.

#![forbid(unsafe_code)]

#[cfg(test)]
mod tests;

pub mod redial;

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::error::{Error, Misuse};
use crate::ids::{ClusterId, LinkId, MountId, MsgId, NeighbourId, NodeId, TxnId};
use crate::limits::{CIRCUITS_MAX, CLIENT_CALLS_MAX, RELAY_QUEUE_MAX_BYTES};
use crate::span::{
    Hello, Label, MountKey, MountKind, NextHop, Outbound, Role, Route, SpanLink, Table,
};

/// Bytes that name the client at the start of a call to a satellite's aggregate.
pub const CLIENT_ADDRESS_LEN: usize = 16;
use crate::txn::{self, Delivery, Event, Received};
use crate::wire::{Command, ErrorCode, Flags, Message, Sink};

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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

/// A call of the local application: a transaction it opened ([`Node::open`]) or one opened to
/// one of its mounts ([`AppEvent::Opened`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId {
    slot: u32,
    generation: u32,
}

/// Something for the local application, drained with [`Node::poll_app`]. Payloads borrow from
/// the node until the next call.
#[derive(Debug, PartialEq, Eq)]
pub enum AppEvent<'a> {
    /// A transaction to one of our mounts arrived.
    Opened {
        /// The call, to answer on.
        call: CallId,
        /// The mount it is for.
        mount: MountKey,
        /// Its command.
        command: Command,
        /// Its flags (DELETE: a one-shot request).
        flags: Flags,
        /// Its first payload.
        payload: &'a [u8],
    },
    /// A message on a call.
    Message {
        /// The call.
        call: CallId,
        /// Its flags (DELETE: the other end's last; ABORT).
        flags: Flags,
        /// Its command.
        command: Command,
        /// Its error code.
        error: ErrorCode,
        /// Its payload.
        payload: &'a [u8],
    },
    /// The call is over at this end; its handle is dead. Exactly once per call.
    Ended {
        /// The call.
        call: CallId,
        /// The first error carried by a close either way (e.g. [`ErrorCode::LOST_LINK`],
        /// [`ErrorCode::NO_ROUTE`]), or [`ErrorCode::NONE`].
        error: ErrorCode,
    },
}

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
}

/// What a node knows of one link, for `show`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// The link.
    pub link: LinkId,
    /// The peer's node id.
    pub peer: NodeId,
    /// What the peer said it is (once its hello arrived).
    pub role: Option<crate::span::Role>,
    /// Spans it has open to us.
    pub spans_in: usize,
    /// Spans we have open to it.
    pub spans_out: usize,
    /// Counters.
    pub counters: LinkCounters,
}

/// Node-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeCounters {
    /// Circuits relayed through this node (paired link to link).
    pub relayed: u64,
    /// Calls delivered to local mounts.
    pub served: u64,
    /// Calls the application opened.
    pub opened: u64,
    /// Transactions refused for lack of a route.
    pub no_route: u64,
    /// Circuits that lost a link.
    pub lost: u64,
    /// Transactions refused by policy (client to client, not inside a span).
    pub refused: u64,
    /// Received records forwarded whole ([`Node::forward_record`]).
    pub whole_records: u64,
}

#[derive(Debug)]
struct LinkState {
    peer: NodeId,
    span: SpanLink,
    counters: LinkCounters,
    /// Circuits the peer opened through this link that are still open at its end.
    open_in: u32,
    /// Output waiting for [`Node::flush`]: none on an idle client link.
    queue: Option<Box<Queue>>,
    dirty: bool,
}

/// A link's output waiting for [`Node::flush`]: its operations, and their payloads in one arena.
#[derive(Debug, Default)]
struct Queue {
    ops: VecDeque<Op>,
    bytes: Vec<u8>,
}

/// One queued action on a link.
#[derive(Clone, Copy, Debug)]
enum Op {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
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
enum End {
    /// A transaction on a link. `txn` is `None` while its open waits in the link's queue.
    Link { link: LinkId, txn: Option<TxnId>, closed: bool, ended: bool },
    /// The local application.
    Local { closed: bool },
}

#[derive(Debug)]
struct Circuit {
    generation: u32,
    /// The end that opened it (a link, or the application).
    a: End,
    /// The end it goes to (a link, or a local mount).
    b: End,
    command: Command,
    error: ErrorCode,
}

impl Circuit {
    fn end(&mut self, side: Side) -> &mut End {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }
}

/// An owned copy of an application event, kept until [`Node::poll_app`] hands it out.
#[derive(Debug)]
enum Pending {
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

/// One node. See the module documentation.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    hello: Hello,
    table: Table,
    /// Boxed: a satellite holds a million, and the map's spare slots then cost a pointer each
    /// instead of a whole link state.
    links: Map<LinkId, Box<LinkState>>,
    dirty: Vec<LinkId>,
    circuits: Slab<Circuit>,
    /// A link's transaction to the circuit it belongs to and which end it is.
    by_txn: Map<(LinkId, TxnId), (u32, Side)>,
    next_generation: u32,
    app: VecDeque<Pending>,
    app_bytes: Vec<u8>,
    /// Bytes of the event last handed out, dropped at the next poll.
    app_consumed: bool,
    counters: NodeCounters,
    /// Client mounts attached through client links, per cluster (the cluster's aggregate is
    /// attached while the count is above zero).
    aggregates: Map<ClusterId, usize>,
    client_changes: Vec<(MountKey, bool)>,
    /// Whether a client may call another client's mount through this node.
    client_to_client: bool,
}

/// Where a circuit goes next.
enum Hop {
    Local,
    Link { link: LinkId, span: TxnId, strip: usize },
}

impl Node {
    /// A node with id `id` that greets each neighbour with `hello`.
    pub fn new(id: NodeId, hello: Hello) -> Node {
        Node {
            id,
            hello,
            table: Table::new(id),
            links: Map::default(),
            dirty: Vec::new(),
            circuits: Slab::new(),
            by_txn: Map::default(),
            next_generation: 0,
            app: VecDeque::new(),
            app_bytes: Vec::new(),
            app_consumed: false,
            counters: NodeCounters::default(),
            aggregates: Map::default(),
            client_changes: Vec::new(),
            client_to_client: false,
        }
    }

    /// Lets clients call other clients' mounts through this node (off by default).
    pub fn set_client_to_client(&mut self, allowed: bool) {
        self.client_to_client = allowed;
    }

    /// Opens a call to the client mount `client` behind the node whose aggregate is
    /// `aggregate` (a satellite): the call goes to the aggregate, and the satellite passes it to
    /// its client. Otherwise as [`Node::open`].
    pub fn open_client(
        &mut self,
        aggregate: MountKey,
        client: MountId,
        command: Command,
        payload: &[u8],
        flags: Flags,
    ) -> Result<CallId, Error> {
        if self.is_our_aggregate(aggregate) {
            return self.open(
                MountKey { cluster: aggregate.cluster, mount: client },
                command,
                payload,
                flags,
            );
        }
        let mut addressed = Vec::with_capacity(CLIENT_ADDRESS_LEN + payload.len());
        addressed.extend_from_slice(&client.0.to_le_bytes());
        addressed.extend_from_slice(payload);
        self.open(aggregate, command, &addressed, flags)
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The span table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Node-wide counters.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// Circuits and calls open.
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }

    /// The links, for `show`.
    pub fn link_info(&self) -> impl Iterator<Item = LinkInfo> + '_ {
        self.links.iter().map(|(&link, state)| LinkInfo {
            link,
            peer: state.peer,
            role: state.span.peer_role(),
            spans_in: state.span.spans_received(),
            spans_out: state.span.spans_sent(),
            counters: state.counters,
        })
    }

    /// The link a table neighbour stands for.
    pub fn link_of(neighbour: NeighbourId) -> LinkId {
        LinkId(neighbour.0)
    }

    fn neighbour_of(link: LinkId) -> NeighbourId {
        NeighbourId(link.0)
    }

    /// The route to a mount.
    pub fn route(&self, mount: MountKey) -> Option<Route> {
        self.table.route(mount)
    }

    /// A link to the node `peer` finished its handshake: our hello goes out on it.
    pub fn link_up<S: Sink>(
        &mut self,
        link: LinkId,
        peer: NodeId,
        txn: &mut txn::Link,
        out: &mut S,
    ) -> Result<(), Error> {
        let mut span = SpanLink::new(Self::neighbour_of(link));
        span.start(txn, out, &self.hello)?;
        let state = LinkState {
            peer,
            span,
            counters: LinkCounters::default(),
            open_in: 0,
            queue: None,
            dirty: false,
        };
        self.links.insert(link, Box::new(state));
        Ok(())
    }

    /// Attaches a local mount (advertised to every neighbour that wants it).
    pub fn attach(&mut self, mount: MountKey, kind: MountKind, label: Label) -> Result<(), Error> {
        self.table.attach(mount, kind, label)?;
        self.route_table_output();
        Ok(())
    }

    /// Detaches a local mount (retracted everywhere). Calls already open to it go on.
    pub fn detach(&mut self, mount: MountKey) -> Result<(), Error> {
        self.table.detach(mount)?;
        self.route_table_output();
        Ok(())
    }

    /// A message arrived on `link`.
    pub fn received<S: Sink>(
        &mut self,
        link: LinkId,
        txn: &mut txn::Link,
        out: &mut S,
        received: Received<'_>,
    ) -> Result<(), Error> {
        self.received_via(link, txn, out, &mut NoLinks, received)
    }

    /// [`Node::received`], with the caller's other links at hand (see [`Links`]).
    pub fn received_via<S: Sink, L: Links>(
        &mut self,
        link: LinkId,
        txn: &mut txn::Link,
        out: &mut S,
        links: &mut L,
        received: Received<'_>,
    ) -> Result<(), Error> {
        match received {
            // One-way messages of other protocols are not ours to interpret.
            Received::OneWay { .. } => Ok(()),
            Received::Txn(delivery) => self.delivery(link, txn, out, links, &delivery),
        }
    }

    /// Forwards a whole record that arrived on `link` as one record on the next link, when every
    /// message in it is in the middle of a circuit's stream (no CREATE, DELETE or ABORT: nothing
    /// changes but the counters) and all of them continue on that same link: the record's
    /// plaintext is copied once into the next link's output and each message's header rewritten
    /// there (its msgid and REPLY flag are per link), instead of each message being parsed,
    /// delivered, looked up and written again. Consecutive messages of one transaction share one
    /// lookup.
    ///
    /// Returns how many messages went; `None` if the record does not qualify (or `links` cannot
    /// take it), and then nothing happened: hand its messages one by one to
    /// [`Node::received_via`] as usual (which also reports anything malformed in it).
    pub fn forward_record<L: Links>(
        &mut self,
        link: LinkId,
        txn: &txn::Link,
        links: &mut L,
        plaintext: &[u8],
    ) -> Option<usize> {
        // The first message says where the record would go, before anything is copied.
        let first = Message::new_checked(plaintext).ok()?;
        let (next, _) = self.continues(link, txn.in_stream(first.flags(), first.msgid())?)?;
        let state = self.links.get(&next)?;
        if state.has_queued() {
            // Output for that link waits in its queue: this must not overtake it.
            return None;
        }
        let node = &*self;
        let count = links.with_record(next, plaintext, |next_txn, copy| {
            let mut count = 0;
            // The last (flags, msgid) seen, and the header it becomes on the next link.
            let mut last: Option<((Flags, MsgId), (Flags, MsgId))> = None;
            let mut at = 0;
            while at < copy.len() {
                let mut message = Message::new_checked(&mut copy[at..]).ok()?;
                let key = (message.flags(), message.msgid());
                let (flags, msgid) = match last {
                    Some((seen, header)) if seen == key => header,
                    _ => {
                        let (to, out) = node.continues(link, txn.in_stream(key.0, key.1)?)?;
                        if to != next {
                            return None;
                        }
                        let header = next_txn.in_stream_header(out)?;
                        last = Some((key, header));
                        header
                    }
                };
                message.set_flags(flags);
                message.set_msgid(msgid);
                at += message.wire_len();
                count += 1;
            }
            Some(count)
        })?;
        if let Some(state) = self.links.get_mut(&next) {
            state.counters.forwarded += count as u64;
        }
        self.counters.whole_records += 1;
        Some(count)
    }

    /// Where a message on `link`'s transaction `txn` continues, if `txn` is one end of a
    /// circuit whose other end is a transaction open on a link: that link and transaction.
    fn continues(&self, link: LinkId, txn: TxnId) -> Option<(LinkId, TxnId)> {
        let &(slot, side) = self.by_txn.get(&(link, txn))?;
        let circuit = self.circuits.get(slot as usize)?;
        let other = match side {
            Side::A => &circuit.b,
            Side::B => &circuit.a,
        };
        match *other {
            End::Link { link, txn: Some(txn), closed: false, ended: false } => Some((link, txn)),
            _ => None,
        }
    }

    /// A lifecycle event of `link`'s transactions.
    pub fn event<S: Sink>(
        &mut self,
        link: LinkId,
        txn: &mut txn::Link,
        out: &mut S,
        event: Event,
    ) -> Result<(), Error> {
        self.event_via(link, txn, out, &mut NoLinks, event)
    }

    /// [`Node::event`], with the caller's other links at hand (see [`Links`]).
    pub fn event_via<S: Sink, L: Links>(
        &mut self,
        link: LinkId,
        txn: &mut txn::Link,
        out: &mut S,
        links: &mut L,
        event: Event,
    ) -> Result<(), Error> {
        match event {
            Event::Delivery(delivery) => self.delivery(link, txn, out, links, &delivery),
            Event::Ended { txn: id, .. } => {
                if let Some(state) = self.links.get_mut(&link) {
                    state.span.ended(id);
                }
                if let Some((slot, side)) = self.by_txn.remove(&(link, id)) {
                    if side == Side::A
                        && let Some(state) = self.links.get_mut(&link)
                    {
                        state.open_in = state.open_in.saturating_sub(1);
                    }
                    if let Some(circuit) = self.circuits.get_mut(slot as usize)
                        && let End::Link { ended, .. } = circuit.end(side)
                    {
                        *ended = true;
                    }
                    self.maybe_free(slot);
                }
                Ok(())
            }
        }
    }

    fn delivery<S: Sink, L: Links>(
        &mut self,
        link: LinkId,
        txn: &mut txn::Link,
        out: &mut S,
        links: &mut L,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        let Some(state) = self.links.get_mut(&link) else {
            return Err(Misuse::UnknownLink(link).into());
        };
        if delivery.is_forced_close() {
            state.counters.aborts_in += 1;
        }
        let handled = state.span.handle(txn, out, &mut self.table, delivery);
        state.span.take_client_changes(&mut self.client_changes);
        if self.client_changes.is_empty() {
            // Every relayed message passes here: only the table's output, if any.
            self.route_table_output();
        } else {
            self.update_aggregates();
        }
        if handled? {
            return Ok(());
        }
        if let Some(&(slot, side)) = self.by_txn.get(&(link, delivery.txn)) {
            self.forward(slot, side, links, delivery);
            return Ok(());
        }
        if delivery.opens() {
            self.incoming(link, txn, out, delivery)?;
        }
        // Anything else on a transaction that is no circuit (a close answering our refusal) is
        // left to the transaction layer.
        Ok(())
    }

    /// A transaction the peer opened that is not the span protocol's: a circuit if it opened
    /// inside one of our spans, refused otherwise.
    fn incoming<S: Sink>(
        &mut self,
        link: LinkId,
        txn: &mut txn::Link,
        out: &mut S,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        let state = self.links.get_mut(&link).ok_or(Misuse::UnknownLink(link))?;
        let mount = delivery.parent.and_then(|parent| state.span.our_span_mount(parent));
        let Some(mount) = mount else {
            // Not inside a span of ours: nothing to route it by.
            self.counters.refused += 1;
            refuse(txn, out, delivery, ErrorCode::REFUSED)?;
            return Ok(());
        };
        state.counters.circuits_in += 1;
        let from_client = state.span.peer_role() == Some(Role::Client);
        if self.circuits.len() >= CIRCUITS_MAX {
            refuse(txn, out, delivery, ErrorCode::LIMIT_REACHED)?;
            return Ok(());
        }
        if from_client && state.open_in >= CLIENT_CALLS_MAX as u32 {
            refuse(txn, out, delivery, ErrorCode::LIMIT_REACHED)?;
            return Ok(());
        }
        let a = End::Link { link, txn: Some(delivery.txn), closed: false, ended: false };
        let hop = match self.resolve(link, mount, delivery.payload) {
            Ok(Hop::Local) => None,
            Ok(Hop::Link { link: next_link, span, strip }) => Some((next_link, span, strip)),
            Err(code) => {
                if code == ErrorCode::NO_ROUTE {
                    self.counters.no_route += 1;
                } else {
                    self.counters.refused += 1;
                }
                refuse(txn, out, delivery, code)?;
                return Ok(());
            }
        };
        let generation = self.generation();
        let b = match hop {
            None => End::Local { closed: false },
            Some((next_link, ..)) => {
                End::Link { link: next_link, txn: None, closed: false, ended: false }
            }
        };
        let slot = self.circuits.insert(Circuit {
            generation,
            a,
            b,
            command: delivery.command,
            error: ErrorCode::NONE,
        }) as u32;
        self.by_txn.insert((link, delivery.txn), (slot, Side::A));
        if let Some(state) = self.links.get_mut(&link) {
            state.open_in += 1;
        }
        match hop {
            None => {
                self.counters.served += 1;
                let call = CallId { slot, generation };
                let at = self.app_bytes.len();
                self.app_bytes.extend_from_slice(delivery.payload);
                self.app.push_back(Pending::Opened {
                    call,
                    mount,
                    command: delivery.command,
                    flags: delivery.flags,
                    at,
                    len: delivery.payload.len(),
                });
                if delivery.closes() {
                    self.circuits[slot as usize].error = delivery.error;
                }
            }
            Some((next_link, span, strip)) => {
                self.counters.relayed += 1;
                let payload = &delivery.payload[strip..];
                let state = self.links.get_mut(&next_link).ok_or(Misuse::UnknownLink(next_link))?;
                state.counters.circuits_out += 1;
                state.queue(&mut self.dirty, next_link, payload, |at, len| Op::Open {
                    circuit: slot,
                    generation,
                    side: Side::B,
                    parent: span,
                    command: delivery.command,
                    flags: delivery.flags & Flags::DELETE,
                    at,
                    len,
                });
            }
        }
        Ok(())
    }

    /// Where a circuit to `mount` arriving on `from` goes next. A circuit to one of our
    /// aggregates names the client in its first 16 payload bytes (stripped here).
    fn resolve(&self, from: LinkId, mount: MountKey, payload: &[u8]) -> Result<Hop, ErrorCode> {
        let route = self.table.route(mount).ok_or(ErrorCode::NO_ROUTE)?;
        let (target, strip, route) =
            if route.next_hop == NextHop::Local && self.is_our_aggregate(mount) {
                let id = payload.get(..CLIENT_ADDRESS_LEN).ok_or(ErrorCode::REFUSED)?;
                let mut raw = [0u8; CLIENT_ADDRESS_LEN];
                raw.copy_from_slice(id);
                let target =
                    MountKey { cluster: mount.cluster, mount: MountId(u128::from_le_bytes(raw)) };
                let route = self.table.route(target).ok_or(ErrorCode::NO_ROUTE)?;
                (target, CLIENT_ADDRESS_LEN, route)
            } else {
                (mount, 0, route)
            };
        let NextHop::Neighbour(n) = route.next_hop else {
            // Our own client address resolved to a local mount: not a client.
            return if strip == 0 { Ok(Hop::Local) } else { Err(ErrorCode::NO_ROUTE) };
        };
        let link = Self::link_of(n);
        let state = self.links.get(&link).ok_or(ErrorCode::NO_ROUTE)?;
        if link == from {
            return Err(ErrorCode::NO_ROUTE);
        }
        let to_client = state.span.peer_role() == Some(Role::Client);
        let from_client =
            self.links.get(&from).is_some_and(|s| s.span.peer_role() == Some(Role::Client));
        if from_client && to_client && !self.client_to_client {
            return Err(ErrorCode::REFUSED);
        }
        if strip > 0 && !to_client {
            return Err(ErrorCode::NO_ROUTE);
        }
        let span = state.span.their_span(target).ok_or(ErrorCode::NO_ROUTE)?;
        Ok(Hop::Link { link, span, strip })
    }

    /// The aggregate mount this node advertises for its clients in `cluster`.
    pub fn aggregate_of(&self, cluster: ClusterId) -> MountKey {
        MountKey { cluster, mount: MountId(self.id.0) }
    }

    fn is_our_aggregate(&self, mount: MountKey) -> bool {
        mount == self.aggregate_of(mount.cluster) && self.aggregates.contains_key(&mount.cluster)
    }

    /// Counts the client mounts that came and went (collected from the link just handled into
    /// `client_changes`), and attaches (or detaches) the aggregate of each cluster that gained
    /// its first (or lost its last) client mount here.
    fn update_aggregates(&mut self) {
        let mut changes = std::mem::take(&mut self.client_changes);
        for (mount, up) in changes.drain(..) {
            let cluster = mount.cluster;
            let count = self.aggregates.entry(cluster).or_insert(0);
            if up {
                *count += 1;
                if *count == 1 {
                    let key = self.aggregate_of(cluster);
                    if let Err(error) = self.table.attach(key, MountKind::Aggregate, Label::EMPTY) {
                        tracing::warn!(%error, "cannot attach a client aggregate");
                    }
                }
            } else {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    self.aggregates.remove(&cluster);
                    let _ = self.table.detach(self.aggregate_of(cluster));
                }
            }
        }
        self.client_changes = changes;
        self.route_table_output();
    }

    fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// Forwards a message that arrived on the circuit's `from` end to its other end: written
    /// straight to the next link when `links` lends it, queued for [`Node::flush`] otherwise.
    fn forward<L: Links>(&mut self, slot: u32, from: Side, links: &mut L, delivery: &Delivery<'_>) {
        let Some(circuit) = self.circuits.get_mut(slot as usize) else { return };
        if delivery.closes() && circuit.error == ErrorCode::NONE {
            circuit.error = delivery.error;
        }
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
            End::Link { link, closed, ended, txn: next } => {
                if closed || ended {
                    return;
                }
                // The direct path: a message that neither closes nor aborts (so no end or
                // counter changes), on a circuit open on the next link, with nothing queued
                // there that it would overtake.
                if let Some(id) = next
                    && flags == Flags::NONE
                    && let Some(state) = self.links.get_mut(&link)
                    && state.send_direct(
                        links,
                        link,
                        id,
                        delivery.command,
                        delivery.payload,
                        delivery.error,
                    )
                {
                    state.counters.forwarded += 1;
                    return;
                }
                if flags.contains(Flags::DELETE)
                    && let End::Link { closed, .. } = circuit.end(to)
                {
                    *closed = true;
                }
                if flags.contains(Flags::DELETE) && delivery.error == ErrorCode::LOST_LINK {
                    self.counters.lost += 1;
                }
                let Some(state) = self.links.get_mut(&link) else { return };
                let queued = state.queue.as_ref().map_or(0, |q| q.bytes.len());
                if queued + delivery.payload.len() > RELAY_QUEUE_MAX_BYTES
                    && !flags.contains(Flags::DELETE)
                {
                    // More than a turn's worth for one link: abort the circuit rather than queue
                    // without bound. (Closes are always queued, so every end still ends.)
                    self.abort_both(slot, ErrorCode::LIMIT_REACHED);
                    return;
                }
                state.counters.forwarded += 1;
                if flags.contains(Flags::ABORT | Flags::DELETE) {
                    state.counters.aborts_out += 1;
                }
                state.queue(&mut self.dirty, link, delivery.payload, |at, len| Op::Send {
                    circuit: slot,
                    generation,
                    side: to,
                    command: delivery.command,
                    flags,
                    error: delivery.error,
                    at,
                    len,
                });
            }
        }
    }

    /// Force-closes both link ends of a circuit (queued), and tells a local end it ended.
    fn abort_both(&mut self, slot: u32, error: ErrorCode) {
        let Some(circuit) = self.circuits.get_mut(slot as usize) else { return };
        let generation = circuit.generation;
        if circuit.error == ErrorCode::NONE {
            circuit.error = error;
        }
        for side in [Side::A, Side::B] {
            let End::Link { link, closed, ended, .. } = circuit.end(side) else { continue };
            if *closed || *ended {
                continue;
            }
            *closed = true;
            let link = *link;
            if let Some(state) = self.links.get_mut(&link) {
                state.counters.aborts_out += 1;
                state.queue(&mut self.dirty, link, &[], |at, len| Op::Send {
                    circuit: slot,
                    generation,
                    side,
                    command: circuit.command,
                    flags: Flags::ABORT | Flags::DELETE,
                    error,
                    at,
                    len,
                });
            }
        }
    }

    /// The link is gone (its transactions' synthesized closes have been handled). Queued output
    /// for it is dropped; circuits waiting to open on it are aborted back.
    pub fn link_down(&mut self, link: LinkId) {
        let Some(mut state) = self.links.remove(&link) else { return };
        // Nothing queued for it will be sent; opens it held fail below with their circuits.
        let _ = state.span.link_down(&mut self.table);
        state.span.take_client_changes(&mut self.client_changes);
        self.update_aggregates();
        state.queue = None;
        // Circuits whose open on this link was still queued, or whose transaction here is gone.
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
                if let End::Link { link: l, txn, ended, closed } = circuit.end(side)
                    && *l == link
                {
                    if let Some(txn) = txn.take() {
                        self.by_txn.remove(&(link, txn));
                    }
                    *ended = true;
                    *closed = true;
                }
            }
            self.abort_both(slot, ErrorCode::LOST_LINK);
            self.maybe_free(slot);
        }
    }

    /// The next link with queued output.
    pub fn poll_dirty(&mut self) -> Option<LinkId> {
        self.dirty.pop()
    }

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
                                    *closed = flags.contains(Flags::DELETE);
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
                                if let End::Link { ended, closed, .. } = c.end(side) {
                                    *ended = true;
                                    *closed = true;
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

    fn live(&self, slot: u32, generation: u32) -> bool {
        self.circuits.get(slot as usize).is_some_and(|c| c.generation == generation)
    }

    /// Frees a circuit once both ends are over.
    fn maybe_free(&mut self, slot: u32) {
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
        self.circuits.remove(slot as usize);
        if has_local {
            self.app.push_back(Pending::Ended { call: CallId { slot, generation }, error });
        }
    }

    /// Sends what the table asked for on each link's queue.
    fn route_table_output(&mut self) {
        while let Some((to, outbound)) = self.table.poll_transmit() {
            let link = Self::link_of(to);
            if let Some(state) = self.links.get_mut(&link) {
                state.queue(&mut self.dirty, link, &[], |_, _| Op::Span(outbound));
            }
        }
    }

    /// Opens a call to `mount` along its route. `flags` may hold DELETE (a one-shot request).
    /// No route: [`Misuse::NoRoute`] and nothing is opened.
    pub fn open(
        &mut self,
        mount: MountKey,
        command: Command,
        payload: &[u8],
        flags: Flags,
    ) -> Result<CallId, Error> {
        check_payload(payload)?;
        let route = self.table.route(mount).ok_or(Misuse::NoRoute)?;
        let NextHop::Neighbour(n) = route.next_hop else { return Err(Misuse::NoRoute.into()) };
        let link = Self::link_of(n);
        let span =
            self.links.get(&link).and_then(|s| s.span.their_span(mount)).ok_or(Misuse::NoRoute)?;
        if self.circuits.len() >= CIRCUITS_MAX {
            return Err(crate::error::Limit::Circuits(CIRCUITS_MAX).into());
        }
        let generation = self.generation();
        let slot = self.circuits.insert(Circuit {
            generation,
            a: End::Local { closed: flags.contains(Flags::DELETE) },
            b: End::Link { link, txn: None, closed: false, ended: false },
            command,
            error: ErrorCode::NONE,
        }) as u32;
        self.counters.opened += 1;
        let state = self.links.get_mut(&link).ok_or(Misuse::UnknownLink(link))?;
        state.counters.circuits_out += 1;
        state.queue(&mut self.dirty, link, payload, |at, len| Op::Open {
            circuit: slot,
            generation,
            side: Side::B,
            parent: span,
            command,
            flags: flags & Flags::DELETE,
            at,
            len,
        });
        Ok(CallId { slot, generation })
    }

    /// Sends on a call. `flags` may hold DELETE (our last), ABORT, or both (force-close).
    /// Queued for [`Node::flush`].
    pub fn send(
        &mut self,
        call: CallId,
        command: Command,
        payload: &[u8],
        flags: Flags,
        error: ErrorCode,
    ) -> Result<(), Error> {
        self.send_via(call, command, payload, flags, error, &mut NoLinks)
    }

    /// [`Node::send`], with the caller's links at hand (see [`Links`]): a message with no flags
    /// on a call open on its link, with nothing queued there, is written straight to that link
    /// (no copy into the queue, no flush pass); anything else is queued as by `send`.
    pub fn send_via<L: Links>(
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
        let generation = circuit.generation;
        let End::Link { link, closed: link_closed, ended, txn } = *circuit.end(link_side) else {
            return Err(Misuse::UnknownCall.into());
        };
        if ended || link_closed {
            return Ok(());
        }
        if let Some(id) = txn
            && flags == Flags::NONE
            && let Some(state) = self.links.get(&link)
            && state.send_direct(links, link, id, command, payload, error)
        {
            return Ok(());
        }
        if flags.contains(Flags::DELETE)
            && let End::Link { closed, .. } = circuit.end(link_side)
        {
            *closed = true;
        }
        let state = self.links.get_mut(&link).ok_or(Misuse::UnknownCall)?;
        if forced {
            state.counters.aborts_out += 1;
        }
        state.queue(&mut self.dirty, link, payload, |at, len| Op::Send {
            circuit: call.slot,
            generation,
            side: link_side,
            command,
            flags: flags & (Flags::DELETE | Flags::ABORT),
            error,
            at,
            len,
        });
        Ok(())
    }

    /// The next event for the local application.
    pub fn poll_app(&mut self) -> Option<AppEvent<'_>> {
        if self.app_consumed {
            self.app.pop_front();
            self.app_consumed = false;
        }
        if self.app.is_empty() {
            self.app_bytes.clear();
            return None;
        }
        self.app_consumed = true;
        let bytes = &self.app_bytes;
        Some(match *self.app.front()? {
            Pending::Opened { call, mount, command, flags, at, len } => {
                AppEvent::Opened { call, mount, command, flags, payload: &bytes[at..at + len] }
            }
            Pending::Message { call, flags, command, error, at, len } => {
                AppEvent::Message { call, flags, command, error, payload: &bytes[at..at + len] }
            }
            Pending::Ended { call, error } => AppEvent::Ended { call, error },
        })
    }
}

impl LinkState {
    /// Whether output waits in this link's queue (which anything written directly would
    /// overtake).
    fn has_queued(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| !q.ops.is_empty())
    }

    /// Writes a message with no flags on `txn` straight into this link through `links`, if
    /// nothing is queued here for it to overtake and the link is lent. Whether it was written
    /// (if not, the caller queues it).
    fn send_direct<L: Links>(
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
    fn queue(
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

/// Refuses a payload no message can carry, before anything is opened or queued.
fn check_payload(payload: &[u8]) -> Result<(), Error> {
    if payload.len() > crate::limits::MESSAGE_PAYLOAD_MAX {
        return Err(crate::error::Limit::PayloadTooLarge(payload.len()).into());
    }
    Ok(())
}

/// Force-closes a transaction the peer opened that we will not carry.
fn refuse<S: Sink>(
    txn: &mut txn::Link,
    out: &mut S,
    delivery: &Delivery<'_>,
    error: ErrorCode,
) -> Result<(), Error> {
    txn.send(out, delivery.txn, delivery.command, &[], Flags::ABORT | Flags::DELETE, error)
}
