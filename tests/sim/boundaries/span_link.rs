//! One node's span protocol (`span::SpanLink` over a `span::Table`) facing two scripted peers.
//! Each peer has a real `txn::Link` of its own, so what it sends is transactionally valid
//! unless the input says otherwise: hellos with random roles and wants (or bytes that do not
//! decode), span opens, updates and retractions with random adverts over a small pool of mounts,
//! origins, seqnos and metrics, seqno requests on the node's spans, forced closes of anything,
//! closes of the node's spans, circuits and other transactions inside spans or at the top, abuse
//! of its own LINK_CONN, and now and then raw messages written behind its transaction layer's
//! back. Records cross when the input says; links go down at random (or when the node refuses
//! what came), and come back as new neighbours. The node attaches and detaches mounts.
//!
//! Each link's peer key is granted a role (a router's, a satellite's or a client's); a careful
//! peer claims no more in its hello. The node serves clients of cluster 1 (its client directory).
//! Time moves on with the operations, and the table's deadlines (waiting seqno requests,
//! coalesced raises) are served as they fall due.
//!
//! Invariants, after every operation:
//! - nothing panics;
//! - an error from the node's transaction layer or span layer closes the link (`closes_link`);
//!   the node's own span output (`SpanLink::transmit`) never fails with one that does; a span
//!   the node refuses alone (a share, a full table, a client's mount it will not hold) is
//!   answered with a forced close on that span, not an error;
//! - the peer's transaction layer accepts everything the node sends, unless the peer went
//!   behind its own back; the node's hello, adverts and seqno requests decode; adverts pass the
//!   filters the peer asked for (its wants, and no client spans to a client); seqno requests
//!   travel inside the peer's own spans;
//! - after a link goes down the table holds no route (best or standby) through that neighbour,
//!   no longer has it, the client directory holds nothing of it, and the span link holds no
//!   span either way;
//! - no client's mount is ever a route; each client mount in the directory is held by an up
//!   client link whose span for it is open; a hello never gets past the role its key was
//!   granted;
//! - every route (best or standby) goes through an up neighbour whose span for the mount is open
//!   at the node, or is a mount attached here; a neighbour's routes are at most its open spans;
//! - what the table last advertised to each neighbour is a route it holds through another
//!   neighbour that is not a client, or its own mount (split horizon, client routes not
//!   propagated); every attached mount is advertised to every up neighbour whose filters admit
//!   it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringspan::error::Error;
use ringspan::ids::{ClusterId, NeighbourId, NodeId, TxnId};
use ringspan::limits::SPANS_PER_NEIGHBOUR_MAX;
use ringspan::span::{
    Advert, ClientHolder, Clients, Hello, Label, Metric, MountKey, MountKind, NextHop, Outbound,
    Role, Seqno, SpanCtx, SpanLink, Table, Wants,
};
use ringspan::txn::{self, Delivery, Event, Received};
use ringspan::wire::{Command, ErrorCode, Flags, Messages, Repr, Sink};

use crate::input::Input;
use crate::say;

/// The node under test.
const X: NodeId = NodeId(1);
/// Origins adverts name: the node itself among them.
const ORIGINS: [NodeId; 4] = [NodeId(1), NodeId(2), NodeId(3), NodeId(4)];
const PEERS: usize = 2;
const OPS_MAX: usize = 1_500;

/// What the node says in its hello.
fn x_hello() -> Hello {
    Hello::new(Role::Router, Wants::all())
}

/// Virtual time zero: the clock read once; only durations are added to it.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

/// The scripted peer's end of one link.
struct Peer {
    link: txn::Link,
    out: Vec<u8>,
    /// Its first hello, if that decodes: the filters the node must apply.
    hello: Option<Hello>,
    /// Whether it has sent a hello at all.
    said_hello: bool,
    /// Its own LINK_CONN.
    conn: Option<TxnId>,
    /// Its open spans, with their mounts.
    spans: Vec<(TxnId, MountKey)>,
    /// Its spans until they end (retracted ones too).
    all_spans: Vec<TxnId>,
    /// Transactions the node opened, as the peer sees them, with their commands.
    theirs: Vec<(TxnId, Command)>,
    /// Of those, the ones the node has closed its side of (a retracted span, for one).
    closed_by_node: Vec<TxnId>,
    /// Every live transaction at the peer.
    live: Vec<TxnId>,
    /// It wrote messages behind its transaction layer's back.
    raw: bool,
    /// It breaks no rule it knows of.
    careful: bool,
    /// The role its key is granted: a careful peer claims no more.
    granted: Role,
}

impl Peer {
    /// A fresh peer: mostly careful, and then it greets first.
    fn new(input: &mut Input<'_>) -> Peer {
        let granted = say::role(input);
        let mut peer = Peer {
            link: txn::Link::new(),
            out: Vec::new(),
            hello: None,
            said_hello: false,
            conn: None,
            spans: Vec::new(),
            all_spans: Vec::new(),
            theirs: Vec::new(),
            closed_by_node: Vec::new(),
            live: Vec::new(),
            raw: false,
            careful: !input.one_in(4),
            granted,
        };
        if peer.careful || input.bool() {
            peer.say_hello(input);
        }
        peer
    }

    /// Its hello (a careful peer's decodes).
    fn say_hello(&mut self, input: &mut Input<'_>) {
        let (payload, hello) = say::hello(input);
        let within = |h: &Hello| self.granted.permits(h.role) && h.idle_timeout_ms >= 30;
        let (payload, hello) = match hello {
            Some(h) if self.careful && !within(&h) => say::hello_clean(self.granted),
            None if self.careful => say::hello_clean(self.granted),
            _ => (payload, hello),
        };
        let careless = !self.careful && input.one_in(16);
        let flags = if careless { Flags::DELETE } else { Flags::NONE };
        let command =
            if careless && input.bool() { Command::LINK_SPAN } else { Command::LINK_CONN };
        if let Ok(txn) = self.link.open(&mut self.out, None, command, &payload, flags) {
            if !self.said_hello && command == Command::LINK_CONN {
                self.said_hello = true;
                self.hello = hello;
                self.conn = Some(txn);
            }
            self.live.push(txn);
        }
    }

    /// An advert payload for `mount`: well formed and within its role, when careful.
    fn advert(&self, input: &mut Input<'_>, mount: MountKey) -> Vec<u8> {
        let mut advert = say::advert_of(input, mount, &ORIGINS);
        if !self.careful {
            return say::advert_payload(input, &advert);
        }
        if self.hello.as_ref().is_some_and(|h| h.role == Role::Client) {
            advert.kind = input.pick(&[MountKind::Client, MountKind::Cache]);
        }
        say::advert_clean(&advert)
    }
}

/// One link: the node's end and the peer's.
struct Conn {
    id: NeighbourId,
    x: txn::Link,
    x_out: Vec<u8>,
    span: SpanLink,
    peer: Peer,
    /// What the node's table last asked to tell this neighbour, per mount (`None`: retracted).
    told: HashMap<MountKey, Option<Advert>>,
}

impl Conn {
    fn new(id: NeighbourId, input: &mut Input<'_>) -> Conn {
        let mut conn = Conn {
            id,
            x: txn::Link::new(),
            x_out: Vec::new(),
            span: SpanLink::new(id, NodeId(1_000 + u128::from(id.0)), Role::Router),
            peer: Peer::new(input),
            told: HashMap::new(),
        };
        conn.span = SpanLink::new(id, NodeId(1_000 + u128::from(id.0)), conn.peer.granted);
        conn.span.start(&mut conn.x, &mut conn.x_out, &x_hello()).expect("a fresh link");
        conn
    }
}

struct World {
    table: Table,
    clients: Clients,
    now: Instant,
    conns: Vec<Conn>,
    next_id: u64,
    /// Mounts attached at the node, with their kinds.
    attached: HashMap<MountKey, MountKind>,
}

/// Which of the node's transactions a delivery to the peer belongs to.
fn pick<T: Copy>(input: &mut Input<'_>, items: &[T]) -> Option<T> {
    (!items.is_empty()).then(|| items[input.below(items.len())])
}

impl World {
    fn new(input: &mut Input<'_>) -> World {
        let mut world = World {
            table: Table::new(X),
            clients: Clients::new([ClusterId(1)]),
            now: epoch(),
            conns: Vec::new(),
            next_id: 0,
            attached: HashMap::new(),
        };
        for _ in 0..PEERS {
            let conn = world.fresh(input);
            world.conns.push(conn);
        }
        world
    }

    fn fresh(&mut self, input: &mut Input<'_>) -> Conn {
        self.next_id += 1;
        Conn::new(NeighbourId(self.next_id), input)
    }

    /// Sends what the table asks for, each to its neighbour.
    fn route_output(&mut self) {
        while let Some((to, outbound)) = self.table.poll_transmit() {
            let conn = self.conns.iter_mut().find(|c| c.id == to);
            let conn = conn.unwrap_or_else(|| panic!("output for {to:?}, which is not up"));
            match outbound {
                Outbound::Advert(advert) => {
                    conn.told.insert(advert.mount, Some(advert));
                }
                Outbound::Retract(mount) => {
                    conn.told.insert(mount, None);
                }
                Outbound::SeqnoRequest { .. } => {}
            }
            if let Err(error) = conn.span.transmit(&mut conn.x, &mut conn.x_out, &outbound) {
                // The peer may have closed the span this goes on; that refuses the send and
                // changes nothing, but it must not be taken for the peer breaking the protocol.
                assert!(!error.closes_link(), "span output refused with {error}");
            }
        }
    }

    /// The node handles one delivery on link `c` (a message, or a synthesized close).
    fn x_delivery(&mut self, c: usize, delivery: &Delivery<'_>) -> Result<(), Error> {
        let conn = &mut self.conns[c];
        let mut ctx = SpanCtx {
            table: &mut self.table,
            clients: &mut self.clients,
            now: self.now,
            announced: None,
        };
        let handled = conn.span.handle(&mut conn.x, &mut conn.x_out, &mut ctx, delivery)?;
        if !handled && delivery.opens() && !conn.x.is_down() {
            // Not the span protocol's: the node's application refuses it, as a relay refuses
            // a transaction it cannot route.
            let flags = Flags::ABORT | Flags::DELETE;
            let refused = conn.x.send(
                &mut conn.x_out,
                delivery.txn,
                delivery.command,
                b"",
                flags,
                ErrorCode::REFUSED,
            );
            if let Err(error) = refused {
                assert!(!error.closes_link(), "{error}");
            }
        }
        Ok(())
    }

    /// Drains the node's events on link `c`.
    fn x_events(&mut self, c: usize) -> Result<(), Error> {
        while let Some(event) = self.conns[c].x.poll_event() {
            match event {
                Event::Delivery(delivery) => self.x_delivery(c, &delivery)?,
                Event::Ended { txn, .. } => self.conns[c].span.ended(txn),
            }
        }
        Ok(())
    }

    /// What the peer on link `c` wrote arrives at the node.
    fn deliver_to_node(&mut self, c: usize, input: &mut Input<'_>) {
        let bytes = std::mem::take(&mut self.conns[c].peer.out);
        for message in Messages::new(&bytes) {
            let conn = &mut self.conns[c];
            if let Ok(m) = &message {
                crate::trace!(
                    "peer {c} -> node: {:?} {:?} msgid {} parent {} error {} {} bytes",
                    m.flags(),
                    m.command(),
                    m.msgid().0,
                    m.parent().0,
                    m.error().0,
                    m.payload_len()
                );
            }
            let result = message.and_then(|m| conn.x.handle_message(&mut conn.x_out, &m));
            let result = match result {
                Ok(Some(Received::Txn(delivery))) => self.x_delivery(c, &delivery),
                Ok(_) => Ok(()),
                Err(error) => Err(error),
            };
            let result = result.and_then(|()| self.x_events(c));
            self.route_output();
            if let Err(error) = result {
                crate::trace!("node closes link {c}: {error}");
                assert!(error.closes_link(), "the node failed with {error}, which keeps the link");
                self.down(c, input);
                return;
            }
        }
    }

    /// What the node wrote on link `c` arrives at the peer, which checks it.
    fn deliver_to_peer(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        let bytes = std::mem::take(&mut conn.x_out);
        let peer = &mut conn.peer;
        for message in Messages::new(&bytes) {
            let message = message.expect("the node wrote a malformed message");
            crate::trace!(
                "node -> peer {c}: {:?} {:?} msgid {} parent {} error {}",
                message.flags(),
                message.command(),
                message.msgid().0,
                message.parent().0,
                message.error().0
            );
            let delivery = match peer.link.handle_message(&mut peer.out, &message) {
                Ok(Some(Received::Txn(delivery))) => delivery,
                Ok(_) => continue,
                Err(error) => {
                    assert!(peer.raw, "the peer's transaction layer refused the node: {error}");
                    // Out of step with its own transaction layer: stop listening.
                    return;
                }
            };
            check_from_x(peer, &delivery, &self.attached);
            if delivery.opens() {
                peer.theirs.push((delivery.txn, delivery.command));
                peer.live.push(delivery.txn);
            }
            if delivery.closes() {
                peer.closed_by_node.push(delivery.txn);
            }
            while let Some(event) = peer.link.poll_event() {
                if let Event::Ended { txn, .. } = event {
                    peer.live.retain(|&t| t != txn);
                    peer.theirs.retain(|&(t, _)| t != txn);
                    peer.closed_by_node.retain(|&t| t != txn);
                    peer.spans.retain(|&(t, _)| t != txn);
                    peer.all_spans.retain(|&t| t != txn);
                    if peer.conn == Some(txn) {
                        peer.conn = None;
                    }
                }
            }
        }
    }

    /// Link `c` goes down (cut, or closed by the node): the node forgets the neighbour, which
    /// comes back as a new one.
    fn down(&mut self, c: usize, input: &mut Input<'_>) {
        let id = self.conns[c].id;
        crate::trace!("link {c} ({id:?}) down");
        self.conns[c].x.handle_link_down(ErrorCode::LOST_LINK);
        // One end learns of it from `link_down` first, the other from the synthesized closes.
        let now = self.now;
        if input.bool() {
            let conn = &mut self.conns[c];
            let mut ctx = SpanCtx {
                table: &mut self.table,
                clients: &mut self.clients,
                now,
                announced: None,
            };
            conn.span.link_down(&mut ctx).expect("link down");
        }
        if let Err(error) = self.x_events(c) {
            panic!("a synthesized close was refused: {error}");
        }
        let conn = &mut self.conns[c];
        let mut ctx =
            SpanCtx { table: &mut self.table, clients: &mut self.clients, now, announced: None };
        conn.span.link_down(&mut ctx).expect("link down is idempotent");
        assert!(conn.x.is_empty());
        assert!(!self.table.has_neighbour(id), "the table still has {id:?}");
        for n in 0..6u128 {
            let mount = MountKey {
                cluster: ClusterId(1 + n / 3),
                mount: ringspan::ids::MountId(1 + n % 3),
            };
            assert_ne!(
                self.clients.holder(mount),
                Some(ClientHolder::Here(id)),
                "the directory still has {id:?}'s"
            );
        }
        assert_eq!((conn.span.spans_received(), conn.span.spans_sent()), (0, 0));
        for (mount, route) in self.table.mounts() {
            for route in route.into_iter().chain(self.table.standby(mount)) {
                assert_ne!(route.next_hop, NextHop::Neighbour(id), "a route through a downed link");
            }
        }
        let fresh = self.fresh(input);
        self.conns[c] = fresh;
        self.route_output();
    }

    /// One thing the peer on link `c` does. A careful peer breaks no rule it knows of (so it
    /// lives long enough to get somewhere); the others do anything.
    fn peer_op(&mut self, c: usize, input: &mut Input<'_>) {
        let peer = &mut self.conns[c].peer;
        let careful = peer.careful;
        crate::trace!("peer {c}: op (careful {careful}), {} bytes pending", peer.out.len());
        let span_flags = |input: &mut Input<'_>| {
            if !careful && input.one_in(16) { Flags::DELETE } else { Flags::NONE }
        };
        match input.below(24) {
            0 if !careful || !peer.said_hello => peer.say_hello(input),
            1..=5 => {
                let mount = say::mount(input);
                if careful && peer.spans.iter().any(|&(_, m)| m == mount) {
                    return;
                }
                let payload = peer.advert(input, mount);
                let flags = span_flags(input);
                let parent =
                    if !careful && input.one_in(16) { pick(input, &peer.live) } else { None };
                let opened =
                    peer.link.open(&mut peer.out, parent, Command::LINK_SPAN, &payload, flags);
                if let Ok(txn) = opened {
                    peer.spans.push((txn, mount));
                    peer.all_spans.push(txn);
                    peer.live.push(txn);
                }
            }
            6..=9 => {
                // An update on one of its spans: for the same mount, when careful.
                let Some((txn, mount)) = pick(input, &peer.spans) else { return };
                let mount = if !careful && input.one_in(8) { say::mount(input) } else { mount };
                let payload = peer.advert(input, mount);
                let command = match input.below(16) {
                    _ if careful => Command::LINK_SPAN,
                    0 => Command::LINK_SPAN_REQUEST,
                    1 => Command::new(input.u8(), input.u16()),
                    _ => Command::LINK_SPAN,
                };
                let flags = if !careful && input.one_in(16) { Flags::ABORT } else { Flags::NONE };
                let _ =
                    peer.link.send(&mut peer.out, txn, command, &payload, flags, ErrorCode::NONE);
            }
            10 | 11 => {
                // A retraction, or a forced close, of one of its spans (or of anything).
                let txn = if !careful && input.one_in(4) {
                    pick(input, &peer.live)
                } else {
                    pick(input, &peer.spans).map(|(t, _)| t)
                };
                let Some(txn) = txn else { return };
                let error = ErrorCode(input.below(4) as u32);
                let _ = if input.bool() {
                    peer.link.close(&mut peer.out, txn, error)
                } else {
                    peer.link.abort(&mut peer.out, txn, error)
                };
                peer.spans.retain(|&(t, _)| t != txn);
            }
            12..=14 => {
                // A seqno request on one of the node's spans (or on anything the node opened).
                let theirs: Vec<TxnId> = peer
                    .theirs
                    .iter()
                    .filter(|&&(_, command)| !careful || command == Command::LINK_SPAN)
                    .map(|&(t, _)| t)
                    .collect();
                let Some(txn) = pick(input, &theirs) else { return };
                let payload =
                    if careful { say::seqno_clean(input) } else { say::seqno_payload(input) };
                let command = if !careful && input.one_in(16) {
                    Command::LINK_SPAN
                } else {
                    Command::LINK_SPAN_REQUEST
                };
                let flags = if !careful && input.one_in(16) { Flags::DELETE } else { Flags::NONE };
                let _ =
                    peer.link.send(&mut peer.out, txn, command, &payload, flags, ErrorCode::NONE);
            }
            15 | 16 => {
                // The end of one of the node's spans: a refusal (a forced close) at any time, or
                // a plain close, which a careful peer sends only to answer a retraction.
                let refuse = input.one_in(4);
                let theirs: Vec<TxnId> = peer
                    .theirs
                    .iter()
                    .filter(|&&(_, command)| !careful || command == Command::LINK_SPAN)
                    .map(|&(t, _)| t)
                    .filter(|t| !careful || refuse || peer.closed_by_node.contains(t))
                    .collect();
                let Some(txn) = pick(input, &theirs) else { return };
                let _ = if refuse {
                    peer.link.abort(&mut peer.out, txn, ErrorCode::ABORTED)
                } else {
                    peer.link.close(&mut peer.out, txn, ErrorCode::NONE)
                };
            }
            17 | 18 => {
                // A transaction that is no span: a circuit inside a span, or anything at the top.
                let parent = if input.bool() { pick(input, &peer.live) } else { None };
                let command = match input.below(4) {
                    0 if !careful => Command::LINK_SPAN_REQUEST,
                    1 => Command::new(1, 1),
                    _ => Command::new(1 + input.u8() % 200, input.u16()),
                };
                let flags = if input.bool() { Flags::DELETE } else { Flags::NONE };
                if let Ok(txn) = peer.link.open(&mut peer.out, parent, command, b"call", flags) {
                    peer.live.push(txn);
                }
            }
            19 => {
                let command = Command::new(input.u8() % 2, input.u16() % 8);
                let error = ErrorCode(input.below(8) as u32);
                let payload = input.vec(16);
                let _ = peer.link.send_oneway(&mut peer.out, command, error, &payload);
            }
            20 if !careful => {
                // A message written behind its own transaction layer's back.
                let msgid = match input.below(3) {
                    0 => 1 + input.below(12) as u64,
                    1 => 0,
                    _ => input.u64(),
                };
                let flags = Flags::from_bits(input.u8() & 0x1f).expect("defined bits");
                let command = input.pick(&[
                    Command::LINK_CONN,
                    Command::LINK_SPAN,
                    Command::LINK_SPAN_REQUEST,
                    Command::new(1, 1),
                ]);
                let parent = if input.one_in(3) { 1 + input.below(12) as u64 } else { 0 };
                let payload = match command {
                    Command::LINK_CONN => say::hello(input).0,
                    Command::LINK_SPAN => {
                        let mount = say::mount(input);
                        let advert = say::advert_of(input, mount, &ORIGINS);
                        say::advert_payload(input, &advert)
                    }
                    Command::LINK_SPAN_REQUEST => say::seqno_payload(input),
                    _ => input.vec(8),
                };
                let repr = Repr { command, payload_len: payload.len() as u32, ..Repr::default() };
                let at = peer.out.len();
                peer.out.put(&repr, &payload);
                // Flags and ids written by hand: the message rules may refuse them.
                peer.out[at] = flags.bits();
                peer.out[at + 8..at + 16].copy_from_slice(&msgid.to_le_bytes());
                peer.out[at + 16..at + 24].copy_from_slice(&parent.to_le_bytes());
                peer.raw = true;
            }
            21 if !careful => {
                // Its own LINK_CONN updated, closed or forced.
                let Some(conn) = peer.conn else { return };
                let _ = match input.below(3) {
                    0 => peer.link.send(
                        &mut peer.out,
                        conn,
                        Command::LINK_CONN,
                        b"",
                        Flags::NONE,
                        ErrorCode::NONE,
                    ),
                    1 => peer.link.close(&mut peer.out, conn, ErrorCode::NONE),
                    _ => peer.link.abort(&mut peer.out, conn, ErrorCode::NONE),
                };
            }
            _ => {}
        }
    }

    /// The node attaches or detaches a mount.
    fn local(&mut self, input: &mut Input<'_>) {
        let mount = say::mount(input);
        if input.bool() {
            let kind = MountKind::from_index(input.below(7) as u8).expect("seven kinds");
            let label = if input.bool() { Label::EMPTY } else { Label::new(b"x").expect("fits") };
            self.table.attach(mount, kind, label).expect("a small table has room");
            self.attached.insert(mount, kind);
            self.route_output();
            return;
        } else {
            let detached = self.table.detach(mount);
            assert_eq!(detached.is_ok(), self.attached.remove(&mount).is_some(), "{detached:?}");
        }
        self.route_output();
    }

    /// Time moves on by `ms`, and what the table held for it is served.
    fn tick(&mut self, ms: u64) {
        self.now += Duration::from_millis(ms);
        if self.table.poll_timeout().is_some_and(|at| at <= self.now) {
            self.table.handle_timeout(self.now);
            self.route_output();
        }
    }

    /// The invariants that hold between operations.
    fn check(&self) {
        let up: HashMap<NeighbourId, &Conn> = self.conns.iter().map(|c| (c.id, c)).collect();
        for conn in &self.conns {
            if let Some(role) = conn.span.peer_role() {
                assert!(conn.peer.granted.permits(role), "a hello past its key's role taken");
            }
        }
        for n in 0..6u128 {
            let mount = MountKey {
                cluster: ClusterId(1 + n / 3),
                mount: ringspan::ids::MountId(1 + n % 3),
            };
            if let Some(ClientHolder::Here(holder)) = self.clients.holder(mount) {
                let conn = up.get(&holder).unwrap_or_else(|| panic!("held by {holder:?}, down"));
                assert_eq!(conn.span.peer_role(), Some(Role::Client), "held by a non-client");
                assert!(conn.span.their_span(mount).is_some(), "held without an open span");
            }
        }
        for conn in &self.conns {
            let spans = conn.span.spans_received();
            assert!(spans <= SPANS_PER_NEIGHBOUR_MAX);
            assert!(
                self.table.spans_from(conn.id) <= spans,
                "the table holds {} routes from {:?}, which has {spans} spans open",
                self.table.spans_from(conn.id),
                conn.id
            );
        }
        for (mount, route) in self.table.mounts() {
            for route in route.into_iter().chain(self.table.standby(mount)) {
                match route.next_hop {
                    NextHop::Local => {
                        assert!(self.attached.contains_key(&mount), "a local route not attached")
                    }
                    NextHop::Neighbour(n) => {
                        let conn = up.get(&n).unwrap_or_else(|| panic!("a route through {n:?}"));
                        assert!(
                            conn.span.their_span(mount).is_some(),
                            "a route to {mount:?} through {n:?}, whose span for it is not open"
                        );
                        assert_ne!(
                            conn.span.peer_role(),
                            Some(Role::Client),
                            "a client's mount became a route"
                        );
                    }
                }
            }
        }
        for conn in &self.conns {
            let Some(role) = conn.span.peer_role() else { continue };
            for (mount, advert) in &conn.told {
                let Some(advert) = advert else { continue };
                self.check_told(conn.id, role, mount, advert, &up);
            }
            // Every attached mount its filters admit is advertised to it.
            let Some(hello) = conn.peer.hello.as_ref().filter(|_| !conn.peer.raw) else {
                continue;
            };
            for (&mount, &kind) in &self.attached {
                let client_span = matches!(kind, MountKind::Client | MountKind::Aggregate);
                if hello.wants.admits(kind, mount.cluster) && !(role == Role::Client && client_span)
                {
                    let told = conn.told.get(&mount).copied().flatten();
                    assert!(
                        told.is_some_and(|a| a.origin == X && a.metric == Metric::ZERO),
                        "attached {mount:?} not advertised to {:?}: {told:?}",
                        conn.id
                    );
                }
            }
        }
    }

    /// What the table last told neighbour `to` about `mount` is a route it holds through
    /// another, non-client neighbour, or its own mount.
    fn check_told(
        &self,
        to: NeighbourId,
        role: Role,
        mount: &MountKey,
        advert: &Advert,
        up: &HashMap<NeighbourId, &Conn>,
    ) {
        let routes = self.table.route(*mount).into_iter().chain(self.table.standby(*mount));
        let backed = routes.into_iter().any(|route| {
            let same = route.metric == advert.metric
                && route.seqno == advert.seqno
                && route.origin == advert.origin
                && route.kind == advert.kind
                && route.label == advert.label;
            let via = match route.next_hop {
                NextHop::Local => true,
                NextHop::Neighbour(n) => {
                    n != to && up.get(&n).is_some_and(|c| c.span.peer_role() != Some(Role::Client))
                }
            };
            same && via
        });
        assert!(backed, "{to:?} was told {advert:?}, which no route of the node backs");
        let client_span = matches!(advert.kind, MountKind::Client | MountKind::Aggregate);
        assert!(!(role == Role::Client && client_span), "a client span advertised to a client");
    }
}

/// The peer checks one delivery from the node.
fn check_from_x(peer: &Peer, delivery: &Delivery<'_>, _attached: &HashMap<MountKey, MountKind>) {
    let forced = delivery.is_forced_close();
    match delivery.command {
        Command::LINK_CONN if delivery.opens() => {
            assert!(peer.theirs.iter().all(|&(_, c)| c != Command::LINK_CONN), "a second hello");
            Hello::decode(delivery.payload).expect("the node's hello decodes");
        }
        Command::LINK_SPAN if !delivery.closes() && !forced => {
            let advert = Advert::decode(delivery.payload).expect("the node's advert decodes");
            if let Some(hello) = peer.hello.as_ref().filter(|_| !peer.raw) {
                assert!(
                    hello.wants.admits(advert.kind, advert.mount.cluster),
                    "advert {advert:?} past the peer's wants {:?}",
                    hello.wants
                );
            }
            if !delivery.opens() {
                assert!(
                    peer.theirs.iter().any(|&(t, c)| t == delivery.txn && c == Command::LINK_SPAN),
                    "a span update on a transaction that is not the node's span"
                );
            }
        }
        Command::LINK_SPAN_REQUEST if !delivery.closes() => {
            Seqno::decode_request(delivery.payload).expect("the node's seqno request decodes");
            assert!(
                peer.all_spans.contains(&delivery.txn),
                "a seqno request outside the peer's spans"
            );
        }
        _ => {}
    }
}

/// Runs one operation sequence; panics on any broken rule.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut world = World::new(&mut input);
    for _ in 0..OPS_MAX {
        if input.is_empty() {
            break;
        }
        let c = input.below(PEERS);
        match input.below(16) {
            0..=6 => world.peer_op(c, &mut input),
            7 => world.tick(input.pick(&[1, 10, 100, 250, 1_000])),
            8 | 9 => world.deliver_to_node(c, &mut input),
            10 | 11 => world.deliver_to_peer(c),
            12 => world.local(&mut input),
            13 => {
                if input.one_in(4) {
                    world.down(c, &mut input);
                }
            }
            _ => {
                for _ in 0..8 {
                    for c in 0..PEERS {
                        world.deliver_to_node(c, &mut input);
                        world.deliver_to_peer(c);
                    }
                }
            }
        }
        world.check();
    }
    for c in 0..PEERS {
        world.down(c, &mut input);
        world.check();
    }
    assert_eq!(world.table.mounts().filter(|(_, r)| r.is_some()).count(), world.attached.len());
}
