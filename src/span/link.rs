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
//!   DELETE; the transaction ends once circuits opened inside it have ended (so a retraction never
//!   cuts the circuits already using the span: make-before-break).
//! - A seqno request travels inside the span that advertised the mount, in the reply direction,
//!   toward the originator (`LINK_SPAN_REQUEST`).
//!
//! # Calling contract
//!
//! Call [`SpanLink::start`] when the link's handshake is done. Give each delivery the link's
//! [`txn::Link`] returns (and each [`txn::Event::Delivery`]) to [`SpanLink::handle`]: it consumes
//! the span protocol's own messages and returns `false` for everything else (circuits, the
//! application's transactions). Give it every [`txn::Event::Ended`] through
//! [`SpanLink::ended`]. Send what the table asks for this neighbour with
//! [`SpanLink::transmit`]. When the link goes down the table forgets the neighbour at once (at
//! the first synthesized close handed to `handle`, or at [`SpanLink::link_down`], whichever
//! comes first), and the other synthesized closes are absorbed. An error from `handle` means the peer broke the protocol or a
//! bound: close the link with it as the reason.

use crate::error::{Error, Limit, Violation};
use crate::ids::{NeighbourId, TxnId};
use crate::limits::SPANS_PER_NEIGHBOUR_MAX;
use crate::txn::{self, Delivery};
use crate::wire::{Command, ErrorCode, Flags, Sink};

use super::codec::{self, ADVERT_LEN_MAX, HELLO_LEN_MAX, Hello};
use super::small::SmallMap;
use super::{MountKey, Outbound, Role, Table};

/// The span protocol state of one link. See the module documentation.
#[derive(Debug)]
pub struct SpanLink {
    neighbour: NeighbourId,
    /// Our `LINK_CONN`.
    conn: Option<TxnId>,
    /// The peer's `LINK_CONN` and what it said.
    peer: Option<(TxnId, Role)>,
    down: bool,
    /// Our open spans, by mount.
    ours: SmallMap<MountKey, TxnId>,
    /// Every span transaction we opened that has not ended (open or retracted), to its mount.
    ours_by_txn: SmallMap<TxnId, MountKey>,
    /// The peer's open spans, by mount: where circuits to the mount open and seqno requests go.
    theirs: SmallMap<MountKey, TxnId>,
    /// Every span transaction the peer opened that has not ended, to its mount and whether the
    /// peer has retracted it.
    theirs_by_txn: SmallMap<TxnId, (MountKey, bool)>,
    /// A client peer's mounts that appeared (`true`) or went away (`false`), for the node that
    /// aggregates its clients; drained with [`SpanLink::take_client_changes`].
    client_changes: Vec<(MountKey, bool)>,
}

impl SpanLink {
    /// The span protocol for the link the table knows as `neighbour`.
    pub fn new(neighbour: NeighbourId) -> SpanLink {
        SpanLink {
            neighbour,
            conn: None,
            peer: None,
            down: false,
            ours: SmallMap::default(),
            ours_by_txn: SmallMap::default(),
            theirs: SmallMap::default(),
            theirs_by_txn: SmallMap::default(),
            client_changes: Vec::new(),
        }
    }

    /// Moves the client mounts that appeared or went away since the last call into `out`.
    pub fn take_client_changes(&mut self, out: &mut Vec<(MountKey, bool)>) {
        // Asked after every message the link handles, relayed ones included: nothing to do
        // is the common case.
        if !self.client_changes.is_empty() {
            // Taken, not drained: an idle client link keeps no spare capacity.
            out.append(&mut std::mem::take(&mut self.client_changes));
        }
    }

    fn peer_is_client(&self) -> bool {
        self.peer_role() == Some(Role::Client)
    }

    /// The neighbour id this link has in the table.
    pub fn neighbour(&self) -> NeighbourId {
        self.neighbour
    }

    /// What the peer said it is, once its hello has arrived.
    pub fn peer_role(&self) -> Option<Role> {
        self.peer.map(|(_, role)| role)
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

    /// Spans the peer has open to us.
    pub fn spans_received(&self) -> usize {
        self.theirs.len()
    }

    /// Spans we have open to the peer.
    pub fn spans_sent(&self) -> usize {
        self.ours.len()
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
    /// no longer advertises is dropped (its retraction is on its way to the table).
    pub fn transmit(
        &mut self,
        link: &mut txn::Link,
        out: &mut impl Sink,
        outbound: &Outbound,
    ) -> Result<(), Error> {
        match *outbound {
            Outbound::Advert(advert) => {
                let mut buf = [0u8; ADVERT_LEN_MAX];
                let len = codec::encode_advert(&advert, &mut buf);
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
                    let payload = codec::encode_seqno_request(seqno);
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
        table: &mut Table,
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
            self.link_down(table)?;
        }
        if self.down {
            return Ok(true);
        }
        if ours {
            self.handle_on_ours(table, delivery)?;
        } else if delivery.opens() {
            self.handle_open(table, delivery)?;
        } else {
            self.handle_on_theirs(link, out, table, delivery)?;
        }
        Ok(true)
    }

    fn peer_conn(&self) -> Option<TxnId> {
        self.peer.map(|(txn, _)| txn)
    }

    /// A transaction the peer opens: its hello or one of its spans.
    fn handle_open(&mut self, table: &mut Table, delivery: &Delivery<'_>) -> Result<(), Error> {
        if delivery.closes() {
            return Err(Violation::LinkProtocol(
                "a LINK_CONN or LINK_SPAN opened and closed at once",
            )
            .into());
        }
        if delivery.command == Command::LINK_CONN {
            if self.peer.is_some() {
                return Err(Violation::LinkProtocol("a second LINK_CONN").into());
            }
            let hello = Hello::decode(delivery.payload)?;
            table.handle_neighbour_up(self.neighbour, hello.role, hello.wants)?;
            self.peer = Some((delivery.txn, hello.role));
            return Ok(());
        }
        if delivery.command != Command::LINK_SPAN {
            return Err(Violation::LinkProtocol("LINK_SPAN_REQUEST opens no transaction").into());
        }
        if self.peer.is_none() {
            return Err(Violation::LinkProtocol("a LINK_SPAN before the LINK_CONN").into());
        }
        let advert = codec::decode_advert(delivery.payload)?;
        if self.peer_is_client() && !advert.kind.is_client_kind() {
            return Err(Violation::LinkProtocol(
                "a client advertised a mount that is not a client or cache",
            )
            .into());
        }
        if self.theirs.contains_key(&advert.mount) {
            return Err(Violation::LinkProtocol("a second open LINK_SPAN for one mount").into());
        }
        // Retracted spans still carrying circuits count too: at most twice the open bound.
        if self.theirs_by_txn.len() >= 2 * SPANS_PER_NEIGHBOUR_MAX {
            return Err(Limit::NeighbourSpans(SPANS_PER_NEIGHBOUR_MAX).into());
        }
        table.handle_advert(self.neighbour, &advert)?;
        self.theirs.insert(advert.mount, delivery.txn);
        self.theirs_by_txn.insert(delivery.txn, (advert.mount, false));
        if self.peer_is_client() {
            self.client_changes.push((advert.mount, true));
        }
        Ok(())
    }

    /// A message from the peer on a transaction it opened: an update, a retraction, or (on its
    /// `LINK_CONN`) anything, which is refused.
    fn handle_on_theirs(
        &mut self,
        link: &mut txn::Link,
        out: &mut impl Sink,
        table: &mut Table,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        let Some(&(mount, retracted)) = self.theirs_by_txn.get(&delivery.txn) else {
            return Err(Violation::LinkProtocol(
                "LINK_CONN is not closed or updated while the link is up",
            )
            .into());
        };
        if retracted {
            // The transaction layer refuses anything after the peer's DELETE; reaching here
            // would be a bug in it, not the peer's fault.
            return Ok(());
        }
        if delivery.closes() {
            table.handle_retract(self.neighbour, mount)?;
            self.theirs.remove(&mount);
            if self.peer_is_client() {
                self.client_changes.push((mount, false));
            }
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
        let advert = codec::decode_advert(delivery.payload)?;
        if advert.mount != mount {
            return Err(Violation::LinkProtocol("a span update naming another mount").into());
        }
        if self.peer_is_client() && !advert.kind.is_client_kind() {
            return Err(Violation::LinkProtocol(
                "a client advertised a mount that is not a client or cache",
            )
            .into());
        }
        table.handle_advert(self.neighbour, &advert)?;
        Ok(())
    }

    /// A message from the peer on a transaction we opened: a seqno request on a span, the
    /// peer's close of a span we retracted, or anything on our `LINK_CONN`, which is refused.
    fn handle_on_ours(&mut self, table: &mut Table, delivery: &Delivery<'_>) -> Result<(), Error> {
        let Some(&mount) = self.ours_by_txn.get(&delivery.txn) else {
            return Err(Violation::LinkProtocol("a reply on our LINK_CONN").into());
        };
        if delivery.command == Command::LINK_SPAN_REQUEST {
            let seqno = codec::decode_seqno_request(delivery.payload)?;
            table.handle_seqno_request(self.neighbour, mount, seqno)?;
        } else if !delivery.closes() {
            return Err(
                Violation::LinkProtocol("a reply on a span that is not a seqno request").into()
            );
        }
        // The peer's DELETE on our span: its answer to our retraction (or it no longer wants to
        // send requests on it). Nothing to do; the transaction ends when both sides are done.
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
        if self.peer_conn() == Some(txn) {
            self.peer = None;
        }
    }

    /// The link is gone: the table forgets the neighbour (failing its mounts over at once).
    /// Idempotent.
    pub fn link_down(&mut self, table: &mut Table) -> Result<(), Error> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        self.ours.clear();
        if self.peer_is_client() {
            self.client_changes.extend(self.theirs.keys().map(|&mount| (mount, false)));
        }
        self.theirs.clear();
        if self.peer.is_some() && table.has_neighbour(self.neighbour) {
            table.handle_neighbour_down(self.neighbour)?;
        }
        Ok(())
    }
}
