//! A node's logic: its links' span protocol, its span table and client directory, its local
//! mounts, and the circuits it relays. Sans-IO: the caller owns the links' transaction state
//! ([`txn::Link`]) and their output, hands them over with every input ([`LinkSet`]), and drives
//! the node with what arrives and the time.
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
//! # Rights and shares
//!
//! A peer is what its key was granted ([`Node::link_up`]), never what it says: a hello
//! claiming more closes its link. A client's transactions on its link are bounded
//! ([`CLIENT_TXNS_PER_LINK_MAX`]), its calls through the node too ([`CLIENT_CALLS_MAX`]), and its
//! mounts are kept in the client directory ([`Clients`]), never as routes. Circuits are shared
//! max-min fairly (`share.rs`): the node's circuit table among the links they come in on, and the
//! circuits the node may open on each link among the links they come from, so no peer or group
//! of peers can take a place another peer with fewer circuits needs. A circuit that carries
//! nothing for [`Node::set_circuit_idle`] is aborted. Each refusal is counted on the link it
//! concerns ([`LinkCounters`]).
//!
//! # Traces
//!
//! A circuit opened with `LINK_TRACE` is answered by every node on its path for itself, one
//! small report each, instead of being carried to an application (`trace.rs`, PROTOCOL.md
//! 8.10): what a trace costs a node is bounded as a call's is, and it holds a circuit only
//! while it goes on.
//!
//! # One link per adjacency
//!
//! A second link to a node already linked is resolved the same way at both ends: the link
//! dialled by the node with the smaller id is kept (two links in the same direction: the older
//! one), and the caller closes the other ([`LinkUp`]) with [`ErrorCode::DUPLICATE`].
//!
//! # Calling contract
//!
//! - [`Node::link_up`] when a link's handshake is done; [`Node::received`] for each message the
//!   link's transaction layer returns and [`Node::event`] for each of its events;
//!   [`Node::link_down`] when the link is gone (after its synthesized events, which are handed
//!   over with the closing link still in the set: what the node writes on it is dropped).
//! - Time only moves forward: call [`Node::handle_timeout`] with the time of each input (it
//!   is cheap when nothing is due) and when [`Node::poll_timeout`] falls due.
//! - Every input is handed the caller's links ([`LinkSet`]: all of them, the one the input came
//!   on included), and whatever the node sends goes straight into the link it goes on: one
//!   output path, in the order the node wrote it. The events that writing causes on another
//!   link (a DELETE completing a pair ends the transaction) are handled before the input
//!   returns; those of the link the input came on, the caller hands over after the message, as
//!   it does for every message of that link.
//! - Drain [`Node::poll_notice`] after each input: the keepalive interval a peer's idle timeout
//!   needs. (Links to close come back from [`Node::link_up`] as [`LinkUp`], and as errors from
//!   `received` and `event`.)
//! - The application: [`Node::attach`] / [`Node::detach`] mounts; [`Node::open`] calls to a
//!   mount, [`Node::send`] on calls; drain [`Node::poll_app`] after each input.
//!
//! An error returned by `received` or `event` means the peer broke the protocol or a bound:
//! close that link with it as the reason. Nothing here allocates per relayed message once its
//! tables have grown to their working size.

#![forbid(unsafe_code)]

#[cfg(test)]
mod peer_tests;
#[cfg(test)]
mod tests;

mod attach;
mod calls;
mod circuit;
mod holding;
mod output;
mod planes;
pub mod redial;
mod report;
mod share;
mod trace;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use slab::Slab;

pub use output::{BareLink, LinkSet, NoLinks, OneLink};
pub use report::{LinkCounters, LinkInfo};

use crate::error::{Error, Misuse};
use crate::ids::{ClusterId, LinkId, MountId, NeighbourId, NodeId};
use crate::limits::{
    CIRCUIT_IDLE_MS, CIRCUITS_MAX, CLIENT_CALLS_MAX, CLIENT_TXNS_PER_LINK_MAX,
    PEER_TXNS_PER_LINK_MAX,
};
use crate::span::{
    Clients, Hello, Label, MountKey, MountKind, Role, Route, SpanCtx, SpanLink, Table,
};
use crate::txn::{self, Event, Received};
use crate::wire::{Command, ErrorCode, Flags};

use circuit::{Circuit, Side};
use output::{LinkState, Pending};
use planes::PlaneLink;
use share::Pool;

/// Bytes that name the client at the start of a call to a satellite's aggregate; the format is
/// [`crate::wire::client_address`].
pub use crate::wire::client_address::CLIENT_ADDRESS_LEN;

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

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

/// What became of a link that came up ([`Node::link_up`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkUp {
    /// It is the link to its peer.
    Up,
    /// The peer is already linked by `keep`: close this link with [`ErrorCode::DUPLICATE`]
    /// (nothing is sent or routed on it meanwhile). Also a link to this node itself (`keep` is
    /// then `None`).
    Duplicate {
        /// The link kept to the peer.
        keep: Option<LinkId>,
    },
    /// It replaces `old`, an earlier link to the same peer: close `old` with
    /// [`ErrorCode::DUPLICATE`].
    Replaces {
        /// The link to close.
        old: LinkId,
    },
}

/// Which of two links between the nodes `us` and `peer` both ends keep: the new one (`true`) or
/// the old one, given which of them we dialled. The link the node with the smaller id dialled
/// wins; of two links dialled the same way, the older one.
pub fn keeps_new(us: NodeId, peer: NodeId, old_dialled: bool, new_dialled: bool) -> bool {
    new_dialled != old_dialled && new_dialled == (us < peer)
}

/// Something the caller must do for the node, drained with [`Node::poll_notice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The peer on `link` closes links silent for `idle_timeout` (its hello said so): send it
    /// something at least that often (a keepalive a third of it apart lets two be late).
    PeerIdleTimeout {
        /// The link.
        link: LinkId,
        /// The peer's idle timeout.
        idle_timeout: Duration,
        /// The role its key was granted (a client's short timeout is its own affair, not an
        /// operator's misconfiguration).
        granted: Role,
    },
    /// The peer on `link`, whose key is granted more than a client, announced `name` in its
    /// hello: a name for people, shown where the configuration gives its key none.
    PeerName {
        /// The link.
        link: LinkId,
        /// The name it announced: printable UTF-8, at most `NODE_NAME_MAX` bytes.
        name: Label,
    },
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
    /// Circuits refused for a limit (a share, or a client's calls).
    pub limited: u64,
    /// Circuits aborted to make room for a peer holding fewer.
    pub preempted: u64,
    /// Circuits aborted after carrying nothing for the idle bound.
    pub idle: u64,
    /// Second links to an already linked node, closed.
    pub duplicates: u64,
    /// Traces this node ended itself with its report (PROTOCOL.md 8.10): it holds the mount,
    /// is the target, or is at the hop limit. (A trace it passes on is counted in `relayed`, one
    /// with no route onward in `no_route`, as any circuit.)
    pub traced: u64,
}

/// One node. See the module documentation.
#[derive(Debug)]
pub struct Node {
    id: NodeId,
    hello: Hello,
    table: Table,
    clients: Clients,
    /// Boxed: a satellite holds a million, and the map's spare slots then cost a pointer each
    /// instead of a whole link state.
    links: Map<LinkId, Box<LinkState>>,
    /// The link kept to each linked node.
    by_peer: Map<NodeId, LinkId>,
    /// The internal link to each other plane of this node.
    planes: Vec<PlaneLink>,
    /// Links written to during the current input, whose events are handled before it returns.
    touched: Vec<LinkId>,
    circuits: Slab<Circuit>,
    /// A link's transaction to the circuit it belongs to and which end it is.
    by_txn: Map<(LinkId, crate::ids::TxnId), (u32, Side)>,
    /// The node's circuit table, shared among the links circuits come in on.
    pool: Pool,
    next_generation: u32,
    app: VecDeque<Pending>,
    app_bytes: Vec<u8>,
    /// Bytes of the event last handed out, dropped at the next poll.
    app_consumed: bool,
    notices: VecDeque<Notice>,
    counters: NodeCounters,
    /// What client links that went down had counted, in all.
    clients_gone: LinkCounters,
    /// The time of the latest input.
    now: Instant,
    /// A circuit carrying nothing for this long is aborted.
    circuit_idle: Duration,
    /// Advanced every half `circuit_idle`; each circuit remembers the epoch it last carried
    /// something in.
    epoch: u32,
    next_sweep: Instant,
    /// The mounts local links attached (`attach.rs`).
    attached: attach::Attached,
}

impl Node {
    /// A node with id `id` that greets each neighbour with `hello`, at time `now`. It serves no
    /// clients' mounts until [`Node::serve_client_clusters`].
    pub fn new(id: NodeId, hello: Hello, now: Instant) -> Node {
        let circuit_idle = Duration::from_millis(CIRCUIT_IDLE_MS);
        Node {
            id,
            hello,
            table: Table::new(id),
            clients: Clients::new([]),
            links: Map::default(),
            by_peer: Map::default(),
            planes: Vec::new(),
            touched: Vec::new(),
            circuits: Slab::new(),
            by_txn: Map::default(),
            pool: Pool::new(CIRCUITS_MAX),
            next_generation: 0,
            app: VecDeque::new(),
            app_bytes: Vec::new(),
            app_consumed: false,
            notices: VecDeque::new(),
            counters: NodeCounters::default(),
            clients_gone: LinkCounters::default(),
            now,
            circuit_idle,
            epoch: 0,
            next_sweep: now + circuit_idle / 2,
            attached: attach::Attached::default(),
        }
    }

    /// Accepts clients' mounts in these clusters (and only these): one aggregate per cluster
    /// is all the core hears of them. Call before any client links.
    pub fn serve_client_clusters(&mut self, clusters: impl IntoIterator<Item = ClusterId>) {
        self.clients = Clients::new(clusters);
    }

    /// Aborts circuits that carry nothing for `idle` (after `idle` to 1.5 × `idle`; the default
    /// is [`CIRCUIT_IDLE_MS`]).
    pub fn set_circuit_idle(&mut self, idle: Duration) {
        self.circuit_idle = idle.max(Duration::from_millis(2));
        self.next_sweep = self.now + self.circuit_idle / 2;
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The span table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The clients' mounts held here.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Node-wide counters.
    pub fn counters(&self) -> NodeCounters {
        self.counters
    }

    /// Circuits and calls open.
    pub fn circuits(&self) -> usize {
        self.circuits.len()
    }

    /// The link a table neighbour stands for.
    pub fn link_of(neighbour: NeighbourId) -> LinkId {
        LinkId(neighbour.0)
    }

    pub(super) fn neighbour_of(link: LinkId) -> NeighbourId {
        NeighbourId(link.0)
    }

    /// The route to a mount.
    pub fn route(&self, mount: MountKey) -> Option<Route> {
        self.table.route(mount)
    }

    /// A link to the node `peer` finished its handshake; its key was granted `granted` (the
    /// most its hello may claim), and we dialled it if `dialled`. Our hello goes out on it,
    /// unless it duplicates a link to the same peer (see [`LinkUp`]).
    pub fn link_up<L: LinkSet>(
        &mut self,
        link: LinkId,
        peer: NodeId,
        granted: Role,
        dialled: bool,
        links: &mut L,
    ) -> Result<LinkUp, Error> {
        let result = self.link_up_inner(link, peer, granted, dialled, links);
        self.settle(links);
        result
    }

    fn link_up_inner<L: LinkSet>(
        &mut self,
        link: LinkId,
        peer: NodeId,
        granted: Role,
        dialled: bool,
        links: &mut L,
    ) -> Result<LinkUp, Error> {
        let outcome = match self.by_peer.get(&peer) {
            _ if peer == self.id => LinkUp::Duplicate { keep: None },
            None => LinkUp::Up,
            Some(&old) => {
                let old_dialled = self.links.get(&old).is_some_and(|s| s.dialled);
                if keeps_new(self.id, peer, old_dialled, dialled) {
                    LinkUp::Replaces { old }
                } else {
                    LinkUp::Duplicate { keep: Some(old) }
                }
            }
        };
        // The link's span state is bound to it as a neighbour even if it is a duplicate being
        // closed (never started then): its `link_down` must not name another link's neighbour.
        Self::bind_span(link, peer, granted, links)?;
        let closing = matches!(outcome, LinkUp::Duplicate { .. });
        if closing {
            self.counters.duplicates += 1;
        } else {
            if let LinkUp::Replaces { old } = outcome {
                self.counters.duplicates += 1;
                self.retire(old, links);
            }
            self.say_hello(link, granted, links)?;
            self.by_peer.insert(peer, link);
        }
        let state = LinkState::new(peer, dialled, closing);
        self.links.insert(link, Box::new(state));
        Ok(outcome)
    }

    /// Binds `link`'s span state to it: the table's neighbour for the link, the node at its other
    /// end, and the role that node's key was granted.
    fn bind_span<L: LinkSet>(
        link: LinkId,
        peer: NodeId,
        granted: Role,
        links: &mut L,
    ) -> Result<(), Error> {
        let span = links.span(link).ok_or(Misuse::UnknownLink(link))?;
        *span = SpanLink::new(Self::neighbour_of(link), peer, granted);
        Ok(())
    }

    /// Opens our `LINK_CONN` with our hello on `link`, whose peer was granted `granted` (which
    /// sets how many transactions it may hold open on the link).
    fn say_hello<L: LinkSet>(
        &self,
        link: LinkId,
        granted: Role,
        links: &mut L,
    ) -> Result<(), Error> {
        let most =
            if granted == Role::Client { CLIENT_TXNS_PER_LINK_MAX } else { PEER_TXNS_PER_LINK_MAX };
        links
            .with_span(link, |span, txn, out| {
                txn.set_peer_transactions_max(most);
                span.start(txn, out, &self.hello)
            })
            .ok_or(Misuse::UnknownLink(link))?
    }

    /// An older link to a peer is being replaced by a newer one (and closed by the caller): the
    /// table forgets it as a neighbour at once, so no new circuit is routed over it and no
    /// route or client mount is kept through it; circuits already on it carry on until it
    /// closes.
    fn retire<L: LinkSet>(&mut self, old: LinkId, links: &mut L) {
        let Some(state) = self.links.get_mut(&old) else { return };
        state.retired = true;
        self.span_down(old, links);
        self.update_aggregates(links);
    }

    /// Starts draining the node (DESIGN 7c.5): every neighbour but the node's own planes hears
    /// all its spans retracted, so that new circuits go around it; circuits already open, and
    /// those on their way here before a neighbour heard, are carried as ever.
    /// [`Node::drained`] says when it is done.
    pub fn drain<L: LinkSet>(&mut self, links: &mut L) {
        self.table.drain();
        self.route_table_output(links);
        self.settle(links);
    }

    /// Whether a draining node is done: no circuit or call open, and every neighbour has
    /// answered the retraction of every span it heard from this one (so none sends a new
    /// circuit here). Internal links to the node's other planes are not waited for.
    pub fn drained<L: LinkSet>(&self, links: &mut L) -> bool {
        self.table.is_draining()
            && self.circuits.is_empty()
            && self.links.iter().all(|(&link, state)| {
                state.peer == self.id || links.span(link).is_none_or(|s| s.spans_unsettled() == 0)
            })
    }

    /// Attaches a local mount (advertised to every neighbour that wants it). A mount an
    /// application holds through its local link is refused ([`Misuse::HeldByApplication`]).
    pub fn attach<L: LinkSet>(
        &mut self,
        mount: MountKey,
        kind: MountKind,
        label: Label,
        links: &mut L,
    ) -> Result<(), Error> {
        if self.attached_to(mount).is_some() {
            return Err(Misuse::HeldByApplication.into());
        }
        self.table.attach(mount, kind, label)?;
        self.route_table_output(links);
        self.settle(links);
        Ok(())
    }

    /// Detaches a local mount (retracted everywhere). Calls already open to it go on.
    pub fn detach<L: LinkSet>(&mut self, mount: MountKey, links: &mut L) -> Result<(), Error> {
        if self.attached_to(mount).is_some() {
            return Err(Misuse::HeldByApplication.into());
        }
        self.table.detach(mount)?;
        self.route_table_output(links);
        self.settle(links);
        Ok(())
    }

    /// A message arrived on `link` (one its transaction layer returned).
    pub fn received<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        received: Received<'_>,
    ) -> Result<(), Error> {
        let result = match received {
            Received::OneWay { command: Command::LINK_HOLDER, payload, .. } => {
                self.holder_note(link, payload);
                Ok(())
            }
            // One-way messages of other protocols are not ours to interpret.
            Received::OneWay { .. } => Ok(()),
            Received::Txn(delivery) => self.delivery(link, links, &delivery),
        };
        self.settle(links);
        result
    }

    /// A lifecycle event of `link`'s transactions.
    pub fn event<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        event: Event,
    ) -> Result<(), Error> {
        let result = self.handle_event(link, links, event);
        self.settle(links);
        result
    }

    pub(super) fn handle_event<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        event: Event,
    ) -> Result<(), Error> {
        match event {
            Event::Delivery(delivery) => self.delivery(link, links, &delivery),
            Event::Ended { txn: id, .. } => {
                if self.links.contains_key(&link)
                    && let Some(span) = links.span(link)
                {
                    span.ended(id);
                }
                self.detach_attached(link, id, links);
                if let Some((slot, side)) = self.by_txn.remove(&(link, id)) {
                    if side == Side::A
                        && let Some(state) = self.links.get_mut(&link)
                    {
                        state.open_in = state.open_in.saturating_sub(1);
                    }
                    self.end_ended(slot, side);
                }
                Ok(())
            }
        }
    }

    fn delivery<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &txn::Delivery<'_>,
    ) -> Result<(), Error> {
        let Some(state) = self.links.get_mut(&link) else {
            return Err(Misuse::UnknownLink(link).into());
        };
        if state.closing {
            // A duplicate link being closed: nothing on it is acted on.
            return Ok(());
        }
        if delivery.is_forced_close() {
            state.counters.aborts_in += 1;
        }
        let mut ctx = SpanCtx {
            table: &mut self.table,
            clients: &mut self.clients,
            now: self.now,
            announced: None,
        };
        // What the span link writes here ends transactions of this link only, whose events the
        // caller hands over after this message, as it does for every message of the link.
        let handled = links.with_span(link, |span, txn, out| {
            let heard = span.peer_idle_timeout_ms().is_some();
            let handled = span.handle(txn, out, &mut ctx, delivery);
            let idle = if heard { None } else { span.peer_idle_timeout_ms() };
            (handled, idle.map(|ms| (ms, span.granted())))
        });
        let Some((handled, idle)) = handled else {
            return Err(Misuse::UnknownLink(link).into());
        };
        if let Some((ms, granted)) = idle {
            let idle_timeout = Duration::from_millis(u64::from(ms));
            self.notices.push_back(Notice::PeerIdleTimeout { link, idle_timeout, granted });
        }
        if let Some(name) = ctx.announced {
            self.notices.push_back(Notice::PeerName { link, name });
        }
        self.update_aggregates(links);
        if handled? {
            return Ok(());
        }
        if let Some(&(slot, side)) = self.by_txn.get(&(link, delivery.txn)) {
            self.forward(slot, side, links, delivery);
            return Ok(());
        }
        if self.is_attach(link, delivery.txn) {
            return self.attach_message(link, links, delivery);
        }
        if delivery.opens() {
            self.incoming(link, links, delivery)?;
        }
        // Anything else on a transaction that is no circuit (a close answering our refusal) is
        // left to the transaction layer.
        Ok(())
    }

    /// The link is gone (its transactions' synthesized closes have been handled): what it
    /// advertised is withdrawn, and circuits still on it are aborted at their other end.
    pub fn link_down<L: LinkSet>(&mut self, link: LinkId, links: &mut L) {
        let Some(state) = self.links.remove(&link) else { return };
        if self.by_peer.get(&state.peer) == Some(&link) {
            self.by_peer.remove(&state.peer);
        }
        self.planes.retain(|p| p.link != link);
        let span = links.span(link).map(|span| &*span);
        if span.is_some_and(|span| span.granted() == Role::Client) {
            let gone = self.link_counters(link, &state, span);
            self.clients_gone.add(&gone);
        }
        self.attached_link_down(link, links);
        self.span_down(link, links);
        self.update_aggregates(links);
        self.circuits_link_down(link, links);
        self.settle(links);
    }

    /// The table forgets `link` as a neighbour (failing its mounts over at once), and a client's
    /// mounts leave the directory: through the link's span state, which the set must still hold
    /// (see [`LinkSet::span`]). If it does not, the table forgets the neighbour all the same.
    fn span_down<L: LinkSet>(&mut self, link: LinkId, links: &mut L) {
        let mut ctx = SpanCtx {
            table: &mut self.table,
            clients: &mut self.clients,
            now: self.now,
            announced: None,
        };
        match links.span(link) {
            Some(span) => {
                let _ = span.link_down(&mut ctx);
            }
            None => {
                tracing::warn!(%link, "a link went down without its span state");
                let neighbour = Self::neighbour_of(link);
                if self.table.has_neighbour(neighbour) {
                    let _ = self.table.handle_neighbour_down(neighbour);
                }
            }
        }
    }

    /// The time moved to `now` (never backwards): serves the span table's waiting seqno
    /// requests, and aborts circuits idle beyond the bound, when they are due.
    pub fn handle_timeout<L: LinkSet>(&mut self, now: Instant, links: &mut L) {
        if now <= self.now {
            return;
        }
        self.now = now;
        if self.table.poll_timeout().is_some_and(|at| at <= now) {
            self.table.handle_timeout(now);
            self.route_table_output(links);
        }
        if now >= self.next_sweep {
            self.epoch = self.epoch.wrapping_add(1);
            self.next_sweep = now + self.circuit_idle / 2;
            self.sweep_idle(links);
        }
        self.settle(links);
    }

    /// When [`Node::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        Some(self.table.poll_timeout().map_or(self.next_sweep, |at| at.min(self.next_sweep)))
    }

    /// The next thing the caller must do for the node.
    pub fn poll_notice(&mut self) -> Option<Notice> {
        self.notices.pop_front()
    }

    /// The aggregate mount this node advertises for its clients in `cluster`.
    pub fn aggregate_of(&self, cluster: ClusterId) -> MountKey {
        MountKey { cluster, mount: MountId(self.id.0) }
    }

    fn is_our_aggregate(&self, mount: MountKey) -> bool {
        mount == self.aggregate_of(mount.cluster) && self.clients.answers_for(mount.cluster)
    }

    /// Attaches (or detaches) the aggregate of each cluster that gained its first (or lost its
    /// last) client mount here, and sends what the table asks.
    fn update_aggregates<L: LinkSet>(&mut self, links: &mut L) {
        while let Some((cluster, present)) = self.clients.poll_aggregate() {
            let key = self.aggregate_of(cluster);
            if present {
                if let Err(error) = self.table.attach(key, MountKind::Aggregate, Label::EMPTY) {
                    tracing::warn!(%error, "cannot attach a client aggregate");
                }
            } else {
                let _ = self.table.detach(key);
            }
        }
        self.route_table_output(links);
    }

    fn generation(&mut self) -> u32 {
        self.next_generation = self.next_generation.wrapping_add(1);
        self.next_generation
    }

    /// Makes room for `bytes` of payload in `messages` events waiting for the application at
    /// once (between two drains of [`Node::poll_app`]), so that delivering a burst that large
    /// allocates nothing. Both grow to the largest burst otherwise.
    pub fn reserve_app(&mut self, bytes: usize, messages: usize) {
        self.app_bytes.reserve(bytes);
        self.app.reserve(messages);
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

/// Whether a client link may open one more call through the node.
fn client_calls_left(open_in: u32) -> bool {
    (open_in as usize) < CLIENT_CALLS_MAX
}
