//! The span protocol on one link: its `LINK_CONN` exchange and its spans, carried as
//! transactions of the link's [`txn::Link`], translated to and from one [`Table`]'s inputs and
//! outputs. Sans-IO like both.
//!
//! - Right after the handshake each side opens a `LINK_CONN` transaction whose CREATE carries
//!   its [`Hello`] (role and wants). It stays open for the link's life; the peer's hello brings
//!   the neighbour up in the table.
//! - Each advertisement the table sends a neighbour is a `LINK_SPAN` transaction opened by the
//!   advertiser: the CREATE carries the first [`Advert`], later messages on it carry updates for
//!   the same mount, and its DELETE retracts it. The receiver answers a retraction with its own
//!   DELETE; the transaction ends once circuits opened inside it have ended (so a retraction
//!   never cuts the circuits already using the span: make-before-break).
//! - A seqno request travels inside the span that advertised the mount, in the reply direction,
//!   toward the originator (`LINK_SPAN_REQUEST`). Nothing else does, but for the receiver's
//!   forced close refusing the span: its plain DELETE before the retraction closes the link.
//!
//! # Rights and shares
//!
//! The peer's role is what its key was granted ([`SpanLink::new`]), never more: a hello
//! claiming more closes the link (`Violation::RoleNotGranted`). A client's spans never reach
//! the table: each is a mount in the node's [`Clients`] directory, of kind client or cache only
//! (anything else closes the link), at most [`CLIENT_MOUNTS_PER_CLIENT`] per client. A span
//! past the peer's share, past a full table or directory, in a cluster the node does not serve
//! clients of, or naming a client mount another client holds, is *refused alone*: answered with
//! a forced close (`LIMIT_REACHED` or `REFUSED`) and counted ([`SpanCounters`]); the link and
//! the peer's other spans carry on.
//!
//! # Calling contract
//!
//! Call [`SpanLink::start`] when the link's handshake is done. Give each delivery the link's
//! [`txn::Link`] returns (and each [`txn::Event::Delivery`]) to [`SpanLink::handle`], with the
//! node's table, client directory and the time ([`SpanCtx`]): it consumes
//! the span protocol's own messages and returns `false` for everything else (circuits, the
//! application's transactions). Give it every [`txn::Event::Ended`] through
//! [`SpanLink::ended`]. Send what the table asks for this neighbour with
//! [`SpanLink::transmit`]. When the link goes down the table forgets the neighbour at once (at
//! the first synthesized close handed to `handle`, or at [`SpanLink::link_down`], whichever
//! comes first), and the other synthesized closes are absorbed. An error from `handle` means
//! the peer broke the protocol or a bound: close the link with it as the reason.
//!
//! The state is part of its link's ([`crate::link::Link::span`]); `relay::Node` makes these
//! calls through the `relay::LinkSet` it is handed with each input.

use std::time::Instant;

use crate::error::{Error, Limit, Violation};
use crate::ids::{NeighbourId, NodeId, TxnId};
use crate::limits::{
    CLIENT_MOUNTS_PER_CLIENT, PEER_IDLE_TIMEOUT_MIN_MS, SPANS_HELD_PER_NEIGHBOUR_MAX,
};
use crate::txn::{self, Delivery};
use crate::wire::{Command, ErrorCode, Flags, Sink};

use super::Hello;
use super::clients::{ClientRefusal, Clients};
use super::small::SmallMap;
use super::{Advert, Label, MountKey, Outbound, Role, Seqno, Table};
use crate::wire::{ADVERT_LEN_MAX, HELLO_LEN_MAX};

/// What the span protocol of a link works on: the node's table and client directory, and the
/// time of the input.
pub struct SpanCtx<'a> {
    /// The node's span table.
    pub table: &'a mut Table,
    /// The node's clients' mounts.
    pub clients: &'a mut Clients,
    /// The time the input arrived.
    pub now: Instant,
    /// Set by a hello that announced a name, from a key granted more than a client (a client's
    /// is not kept: a satellite may hold very many): the name, for the caller to keep.
    pub announced: Option<Label>,
}

/// What a link's span protocol refused or delayed, for `show` and the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpanCounters {
    /// Spans refused past the peer's share or a full table (`LIMIT_REACHED`).
    pub spans_limited: u64,
    /// Client spans refused: a cluster not served here, or a mount another client holds
    /// (`REFUSED`).
    pub spans_refused: u64,
}

/// The span protocol state of one link: part of the link's own state
/// ([`crate::link::Link::span`]), reached by its node through [`crate::relay::LinkSet`]. A link
/// starts with an unbound one ([`SpanLink::default`]: no neighbour, granted nothing beyond a
/// client's rights), which its node replaces with [`SpanLink::new`] when the link comes up. See
/// the module documentation.
#[derive(Debug)]
pub struct SpanLink {
    neighbour: NeighbourId,
    /// The node on the other end.
    peer_node: NodeId,
    /// The most the peer may say it is: what its key was granted.
    granted: Role,
    /// Our `LINK_CONN`.
    conn: Option<TxnId>,
    /// The peer's `LINK_CONN` and what it said.
    peer: Option<(TxnId, Role)>,
    /// The idle timeout the peer's hello asked for, in milliseconds.
    peer_idle_timeout_ms: Option<u32>,
    down: bool,
    /// Our open spans, by mount.
    ours: SmallMap<MountKey, TxnId>,
    /// Every span transaction we opened that has not ended (open or retracted), to its mount.
    ours_by_txn: SmallMap<TxnId, MountKey>,
    /// The peer's open spans, by mount: where circuits to the mount open and seqno requests go.
    theirs: SmallMap<MountKey, TxnId>,
    /// Every span transaction the peer opened that has not ended, to its mount and whether it is
    /// over at our end (retracted by the peer, or refused by us).
    theirs_by_txn: SmallMap<TxnId, (MountKey, bool)>,
    counters: SpanCounters,
}

impl Default for SpanLink {
    /// Unbound: the state of a link whose node has not taken it up (neighbour and node 0,
    /// granted a client's rights). Allocates nothing.
    fn default() -> SpanLink {
        SpanLink::new(NeighbourId(0), NodeId(0), Role::Client)
    }
}

impl SpanLink {
    /// The span protocol for the link the table knows as `neighbour`, to the node `peer_node`,
    /// whose key was granted the role `granted`.
    pub fn new(neighbour: NeighbourId, peer_node: NodeId, granted: Role) -> SpanLink {
        SpanLink {
            neighbour,
            peer_node,
            granted,
            conn: None,
            peer: None,
            peer_idle_timeout_ms: None,
            down: false,
            ours: SmallMap::default(),
            ours_by_txn: SmallMap::default(),
            theirs: SmallMap::default(),
            theirs_by_txn: SmallMap::default(),
            counters: SpanCounters::default(),
        }
    }

    fn peer_is_client(&self) -> bool {
        self.peer_role() == Some(Role::Client)
    }

    /// The neighbour id this link has in the table.
    pub fn neighbour(&self) -> NeighbourId {
        self.neighbour
    }

    /// The role the peer's key was granted.
    pub fn granted(&self) -> Role {
        self.granted
    }

    /// What the peer said it is, once its hello has arrived (never more than it was granted).
    pub fn peer_role(&self) -> Option<Role> {
        self.peer.map(|(_, role)| role)
    }

    /// The idle timeout the peer's hello asked for, once it has arrived: send it something at
    /// least this often.
    pub fn peer_idle_timeout_ms(&self) -> Option<u32> {
        self.peer_idle_timeout_ms
    }

    /// What this link's span protocol refused.
    pub fn counters(&self) -> SpanCounters {
        self.counters
    }

    /// The peer's open span for `mount`: circuits toward the mount through this neighbour open
    /// inside it.
    pub fn their_span(&self, mount: MountKey) -> Option<TxnId> {
        self.theirs.get(&mount).copied()
    }

    /// The mount a span we opened advertises (also after its retraction, until it ends): the
    /// destination of a circuit the peer opens inside it.
    pub fn our_span_mount(&self, span: TxnId) -> Option<MountKey> {
        self.ours_by_txn.get(&span).copied()
    }

    /// The mount a span the peer opened advertises (also after its retraction, until it ends).
    pub fn their_span_mount(&self, span: TxnId) -> Option<MountKey> {
        self.theirs_by_txn.get(&span).map(|(mount, _)| *mount)
    }

    /// Spans the peer has open to us (accepted, not retracted).
    pub fn spans_received(&self) -> usize {
        self.theirs.len()
    }

    /// Spans we have open to the peer.
    pub fn spans_sent(&self) -> usize {
        self.ours.len()
    }

    /// Our span transactions that have not ended: open, or retracted and not yet answered by
    /// the peer's own close. None left after a retraction: the peer has heard it.
    pub fn spans_unsettled(&self) -> usize {
        self.ours_by_txn.len()
    }

    /// Opens our `LINK_CONN` with `hello`. Call once, when the handshake is done.
    pub fn start(
        &mut self,
        link: &mut txn::Link,
        out: &mut impl Sink,
        hello: &Hello,
    ) -> Result<(), Error> {
        let mut buf = [0u8; HELLO_LEN_MAX];
        let len = hello.encode(&mut buf);
        let txn = link.open(out, None, Command::LINK_CONN, &buf[..len], Flags::NONE)?;
        self.conn = Some(txn);
        Ok(())
    }

    /// Sends one thing the table asked for this neighbour. A seqno request for a mount the peer
    /// no longer advertises is dropped (its retraction is on its way to the table), and so is a
    /// retraction of a span the peer refused (it holds nothing to retract).
    pub fn transmit(
        &mut self,
        link: &mut txn::Link,
        out: &mut impl Sink,
        outbound: &Outbound,
    ) -> Result<(), Error> {
        match *outbound {
            Outbound::Advert(advert) => {
                let mut buf = [0u8; ADVERT_LEN_MAX];
                let len = advert.encode(&mut buf);
                match self.ours.get(&advert.mount) {
                    Some(&span) => link.send(
                        out,
                        span,
                        Command::LINK_SPAN,
                        &buf[..len],
                        Flags::NONE,
                        ErrorCode::NONE,
                    )?,
                    None => {
                        let span =
                            link.open(out, None, Command::LINK_SPAN, &buf[..len], Flags::NONE)?;
                        self.ours.insert(advert.mount, span);
                        self.ours_by_txn.insert(span, advert.mount);
                    }
                }
            }
            Outbound::Retract(mount) => {
                if let Some(span) = self.ours.remove(&mount) {
                    link.close(out, span, ErrorCode::NONE)?;
                }
            }
            Outbound::SeqnoRequest { mount, seqno } => {
                if let Some(&span) = self.theirs.get(&mount) {
                    let payload = seqno.encode_request();
                    link.send(
                        out,
                        span,
                        Command::LINK_SPAN_REQUEST,
                        &payload,
                        Flags::NONE,
                        ErrorCode::NONE,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// Handles one delivery from the link. Returns `Ok(true)` if it belonged to the span
    /// protocol (and was acted on), `Ok(false)` if it is someone else's (a circuit, an
    /// application transaction).
    pub fn handle(
        &mut self,
        link: &mut txn::Link,
        out: &mut impl Sink,
        ctx: &mut SpanCtx<'_>,
        delivery: &Delivery<'_>,
    ) -> Result<bool, Error> {
        if delivery.parent.is_some() {
            return Ok(false);
        }
        let txn = delivery.txn;
        let command = delivery.command;
        let ours = self.ours_by_txn.contains_key(&txn) || self.conn == Some(txn);
        let theirs = self.theirs_by_txn.contains_key(&txn) || self.peer_conn() == Some(txn);
        let link_protocol = command == Command::LINK_CONN
            || command == Command::LINK_SPAN
            || command == Command::LINK_SPAN_REQUEST;
        if !(ours || theirs || (delivery.opens() && link_protocol)) {
            return Ok(false);
        }
        if link.is_down() {
            // The synthesized closes of a lost link: the table forgets the neighbour once, at
            // the first of them, and the rest are absorbed.
            self.link_down(ctx)?;
        }
        if self.down {
            return Ok(true);
        }
        if ours {
            self.handle_on_ours(ctx, delivery)?;
        } else if delivery.opens() {
            self.handle_open(link, out, ctx, delivery)?;
        } else {
            self.handle_on_theirs(link, out, ctx, delivery)?;
        }
        Ok(true)
    }

    fn peer_conn(&self) -> Option<TxnId> {
        self.peer.map(|(txn, _)| txn)
    }

    /// A transaction the peer opens: its hello or one of its spans.
    fn handle_open(
        &mut self,
        link: &mut txn::Link,
        out: &mut impl Sink,
        ctx: &mut SpanCtx<'_>,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        if delivery.closes() {
            return Err(Violation::LinkProtocol(
                "a LINK_CONN or LINK_SPAN opened and closed at once",
            )
            .into());
        }
        if delivery.command == Command::LINK_CONN {
            return self.handle_hello(ctx, delivery);
        }
        if delivery.command != Command::LINK_SPAN {
            return Err(Violation::LinkProtocol("LINK_SPAN_REQUEST opens no transaction").into());
        }
        if self.peer.is_none() {
            return Err(Violation::LinkProtocol("a LINK_SPAN before the LINK_CONN").into());
        }
        let advert = Advert::decode(delivery.payload)?;
        self.check_client_kind(&advert)?;
        if self.theirs.contains_key(&advert.mount) {
            return Err(Violation::LinkProtocol("a second open LINK_SPAN for one mount").into());
        }
        // Retracted and refused spans still ending count too.
        if self.theirs_by_txn.len() >= SPANS_HELD_PER_NEIGHBOUR_MAX {
            return Err(Limit::NeighbourSpansHeld(SPANS_HELD_PER_NEIGHBOUR_MAX).into());
        }
        let taken = if self.peer_is_client() {
            self.claim_client_mount(ctx, advert.mount)
        } else {
            match ctx.table.handle_advert(self.neighbour, &advert) {
                Ok(()) => Ok(()),
                Err(Error::LimitReached(Limit::NeighbourSpans(_) | Limit::SpanMounts(_))) => {
                    Err(ErrorCode::LIMIT_REACHED)
                }
                Err(error) => return Err(error),
            }
        };
        match taken {
            Ok(()) => {
                self.theirs.insert(advert.mount, delivery.txn);
                self.theirs_by_txn.insert(delivery.txn, (advert.mount, false));
            }
            Err(code) => {
                // Refused alone: the span is over at our end, and ends when the peer answers.
                if code == ErrorCode::LIMIT_REACHED {
                    self.counters.spans_limited += 1;
                } else {
                    self.counters.spans_refused += 1;
                }
                link.send(
                    out,
                    delivery.txn,
                    Command::LINK_SPAN,
                    &[],
                    Flags::ABORT | Flags::DELETE,
                    code,
                )?;
                self.theirs_by_txn.insert(delivery.txn, (advert.mount, true));
            }
        }
        Ok(())
    }

    /// The peer's hello: its role within what its key was granted, and its timers.
    fn handle_hello(
        &mut self,
        ctx: &mut SpanCtx<'_>,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        if self.peer.is_some() {
            return Err(Violation::LinkProtocol("a second LINK_CONN").into());
        }
        let hello = Hello::decode(delivery.payload)?;
        if !self.granted.permits(hello.role) {
            return Err(Violation::RoleNotGranted {
                claimed: hello.role.name(),
                granted: self.granted.name(),
            }
            .into());
        }
        if u64::from(hello.idle_timeout_ms) < PEER_IDLE_TIMEOUT_MIN_MS {
            return Err(Limit::PeerIdleTimeout(hello.idle_timeout_ms).into());
        }
        ctx.table.handle_neighbour_up(self.neighbour, self.peer_node, hello.role, hello.wants)?;
        self.peer = Some((delivery.txn, hello.role));
        self.peer_idle_timeout_ms = Some(hello.idle_timeout_ms);
        if self.granted != Role::Client && !hello.name.as_bytes().is_empty() {
            ctx.announced = Some(hello.name);
        }
        Ok(())
    }

    /// A client may advertise client and cache mounts only; anything else closes its link.
    fn check_client_kind(&self, advert: &Advert) -> Result<(), Error> {
        if self.peer_is_client() && !advert.kind.is_client_kind() {
            return Err(Violation::LinkProtocol(
                "a client advertised a mount that is not a client or cache",
            )
            .into());
        }
        Ok(())
    }

    /// A client's new mount, within its share, into the node's client directory; the code a
    /// refusal is answered with.
    fn claim_client_mount(&self, ctx: &mut SpanCtx<'_>, mount: MountKey) -> Result<(), ErrorCode> {
        if self.theirs.len() >= CLIENT_MOUNTS_PER_CLIENT {
            return Err(ErrorCode::LIMIT_REACHED);
        }
        ctx.clients.claim(self.neighbour, mount).map_err(|refusal| match refusal {
            ClientRefusal::Full => ErrorCode::LIMIT_REACHED,
            ClientRefusal::Cluster | ClientRefusal::Taken => ErrorCode::REFUSED,
        })
    }

    /// A message from the peer on a transaction it opened: an update, a retraction, or (on its
    /// `LINK_CONN`) anything, which is refused.
    fn handle_on_theirs(
        &mut self,
        link: &mut txn::Link,
        out: &mut impl Sink,
        ctx: &mut SpanCtx<'_>,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        let Some(&(mount, over)) = self.theirs_by_txn.get(&delivery.txn) else {
            return Err(Violation::LinkProtocol(
                "LINK_CONN is not closed or updated while the link is up",
            )
            .into());
        };
        if over {
            // A span we refused: what the peer sent on it before it saw our forced close, and
            // its answering DELETE. (After a retraction the transaction layer refuses anything.)
            return Ok(());
        }
        if delivery.closes() {
            if self.peer_is_client() {
                ctx.clients.release(self.neighbour, mount);
            } else {
                ctx.table.handle_retract(self.neighbour, mount)?;
            }
            self.theirs.remove(&mount);
            self.theirs_by_txn.insert(delivery.txn, (mount, true));
            if !delivery.is_forced_close() {
                // A forced close is answered by the transaction layer itself.
                link.close(out, delivery.txn, ErrorCode::NONE)?;
            }
            return Ok(());
        }
        if delivery.command != Command::LINK_SPAN {
            return Err(Violation::LinkProtocol("a span update that is not a LINK_SPAN").into());
        }
        let advert = Advert::decode(delivery.payload)?;
        if advert.mount != mount {
            return Err(Violation::LinkProtocol("a span update naming another mount").into());
        }
        self.check_client_kind(&advert)?;
        if !self.peer_is_client() {
            // An update of a route it has: it needs no more room.
            ctx.table.handle_advert(self.neighbour, &advert)?;
        }
        // A client's update is on a span it holds the mount of (accepted, not yet retracted).
        // The directory keeps only the holder: the mount's kind and label are used nowhere
        // (calls reach it by its key, and it is never advertised), so there is nothing to record.
        Ok(())
    }

    /// A message from the peer on a transaction we opened: a seqno request on a span, the
    /// peer's close of a span (its answer to our retraction, or its refusal of the span), or
    /// anything on our `LINK_CONN`, which is refused.
    fn handle_on_ours(
        &mut self,
        ctx: &mut SpanCtx<'_>,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        let Some(&mount) = self.ours_by_txn.get(&delivery.txn) else {
            return Err(Violation::LinkProtocol("a reply on our LINK_CONN").into());
        };
        let open = self.ours.get(&mount) == Some(&delivery.txn);
        if open && delivery.closes() && !delivery.is_forced_close() {
            // The peer's DELETE answers our retraction, which comes first on the link: before
            // it, a plain DELETE would leave a span we still update that the peer cannot ask on.
            return Err(Violation::LinkProtocol("a DELETE on a span before its retraction").into());
        }
        if delivery.command == Command::LINK_SPAN_REQUEST {
            let seqno = Seqno::decode_request(delivery.payload)?;
            ctx.table.handle_seqno_request(self.neighbour, mount, seqno, ctx.now)?;
        } else if !delivery.closes() {
            return Err(
                Violation::LinkProtocol("a reply on a span that is not a seqno request").into()
            );
        }
        if delivery.is_forced_close() && open {
            // The peer refused the span: it holds nothing of the mount, for the table too, and
            // the next change of the mount opens a new span.
            self.ours.remove(&mount);
            ctx.table.handle_refused(self.neighbour, mount)?;
        }
        // A plain DELETE here is the peer's answer to our retraction. Nothing to do; the
        // transaction ends when both sides are done.
        Ok(())
    }

    /// A transaction ended on the link ([`txn::Event::Ended`]): forget it if it was ours.
    pub fn ended(&mut self, txn: TxnId) {
        if let Some(mount) = self.ours_by_txn.remove(&txn)
            && self.ours.get(&mount) == Some(&txn)
        {
            self.ours.remove(&mount);
        }
        if let Some((mount, _)) = self.theirs_by_txn.remove(&txn)
            && self.theirs.get(&mount) == Some(&txn)
        {
            self.theirs.remove(&mount);
        }
        if self.conn == Some(txn) {
            self.conn = None;
        }
        // The peer's hello stays known after its LINK_CONN ends (a peer forcing it closed is
        // refused, and the link goes down): the table must still forget the neighbour, and a
        // client's mounts must still leave the directory, at `link_down`.
    }

    /// The link is gone: the table forgets the neighbour (failing its mounts over at once), and
    /// a client's mounts leave the directory. Idempotent.
    pub fn link_down(&mut self, ctx: &mut SpanCtx<'_>) -> Result<(), Error> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        self.ours.clear();
        if self.peer_is_client() {
            for &mount in self.theirs.keys() {
                ctx.clients.release(self.neighbour, mount);
            }
        }
        self.theirs.clear();
        if ctx.table.has_neighbour(self.neighbour) {
            ctx.table.handle_neighbour_down(self.neighbour)?;
        }
        Ok(())
    }
}
