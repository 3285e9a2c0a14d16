//! [`Link`]: everything of one link that is protocol, in one sans-IO value — its record keys
//! (or its handshake), its byte streams, its transaction table, its span protocol state, its
//! deadlines, its counters and what it was told about itself (who dialled, its keepalive
//! interval).
//!
//! It is fed with what happened — bytes received ([`Link::handle_handshake_bytes`],
//! [`Link::handle_records`]), a deadline that came due ([`Link::handle_timeout`]), bytes the
//! socket took ([`Link::sent`]) — and answers what to do: deadlines to arm, a reason to close,
//! bytes to send ([`Link::transmit`]). The link's own messages (`LINK_PING`, `LINK_CLOSE`) never
//! leave it: a keepalive is written and consumed here, a peer's close notice is a close reason.
//! Who owns the socket, the buffers' memory and the timer heap (the engine in production, the
//! simulator in tests) interprets no message.

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

use crate::cipher::{PublicKey, RecordOpener, RecordSealer, Session};
use crate::error::{Error, Violation};
use crate::limits::{HANDSHAKE_FRAME_MAX, MESSAGE_HEADER_LEN, RECORD_HEADER_LEN, RECORD_TAG_LEN};
use crate::span::SpanLink;
use crate::txn::{self, Event, Received};
use crate::wire::{Command, ErrorCode, Messages};

use super::clock::{Deadline, Expiry, Fired, LinkClock, Periods, RxState};
use super::pool::Pool;
use super::pool::RecordBuf;
use super::stream::{Chunk, Cut, Lent, Rx, Tx, TxSink};

/// Plaintext bytes of a keepalive (`LINK_PING`, a header and no payload).
const KEEPALIVE_LEN: usize = MESSAGE_HEADER_LEN;

/// Why a link closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection (end of stream) without saying why.
    PeerClosed,
    /// The peer said why it closed the link.
    PeerSaid(ErrorCode),
    /// A socket error (errno).
    Io(i32),
    /// The peer's bytes broke the protocol, failed to authenticate, or a limit was hit.
    Protocol(Error),
    /// Nothing was received for longer than the idle timeout.
    IdleTimeout,
    /// A send made no progress for longer than the send-stall timeout: the peer does not read.
    SendStall,
    /// More bytes were queued than the send-queue limit: the peer does not read.
    SendQueueFull,
    /// The local node closed the link (a service request, or shutdown).
    Local(ErrorCode),
    /// A broken invariant of the engine itself (a bug): only this link is closed.
    Internal(&'static str),
}

impl From<Error> for CloseReason {
    fn from(error: Error) -> CloseReason {
        CloseReason::Protocol(error)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::PeerSaid(code) => write!(f, "peer closed the link: {code}"),
            CloseReason::Io(errno) => {
                write!(f, "socket error: {}", std::io::Error::from_raw_os_error(*errno))
            }
            CloseReason::Protocol(error) => write!(f, "{error}"),
            CloseReason::IdleTimeout => f.write_str("nothing received within the idle timeout"),
            CloseReason::SendStall => {
                f.write_str("peer not reading: a send made no progress within the stall timeout")
            }
            CloseReason::SendQueueFull => f.write_str("peer not reading: send queue full"),
            CloseReason::Local(code) => write!(f, "closed locally: {code}"),
            CloseReason::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Records opened.
    pub records_in: u64,
    /// Records sealed.
    pub records_out: u64,
    /// Messages received.
    pub messages_in: u64,
}

/// The link's cryptographic state.
// The established variant is the common case and is read on every record: it stays inline,
// and the rare, larger-in-code handshake state is boxed instead.
#[allow(clippy::large_enum_variant)]
#[derive(Default)]
pub enum Crypto {
    /// The handshake is in progress.
    Handshake(Box<Session>),
    /// Records flow.
    Established {
        /// The sending half.
        sealer: RecordSealer,
        /// The receiving half.
        opener: RecordOpener,
    },
    /// Not started (a dial not yet connected), or closed.
    #[default]
    None,
}

/// What the owner of a link reads or sets about it besides its traffic. Eight bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkMeta {
    /// This end dialled the link (it did not accept it).
    pub dialled: bool,
    /// The link's own keepalive interval in milliseconds; 0: the default one.
    pub keepalive_ms: u32,
    /// `keepalive_ms` was set since the link last armed its keepalive by it.
    pub keepalive_changed: bool,
}

impl LinkMeta {
    /// The link's keepalive interval: its own if one was set, else `default`.
    pub fn keepalive(&self, default: Duration) -> Duration {
        match self.keepalive_ms {
            0 => default,
            ms => Duration::from_millis(ms.into()),
        }
    }
}

/// What handling a received record or message may touch on its own link: its transactions, its
/// output and its settings.
pub struct Parts<'a> {
    /// The link's transactions.
    pub txn: &'a mut txn::Link,
    /// The link's span protocol state (its node's, through `relay::LinkSet`).
    pub span: &'a mut SpanLink,
    /// Where messages sent on the link go.
    pub out: TxSink<'a>,
    /// What the link's owner reads or sets.
    pub meta: &'a mut LinkMeta,
}

/// A received record, opened in place: the record (header, plaintext, tag) with its plaintext
/// opened, where it lies — in a receive buffer its driver can lend to a send ([`Lent`]), or in
/// the pooled buffer it was put together in. A relay forwards such a record from where it lies
/// ([`Link::forward_in_place`]); any other is forwarded as a copy.
pub struct RecordIn<'a> {
    wire: Wire<'a>,
    /// Its plaintext: `len` bytes from `start`.
    start: usize,
    len: usize,
}

/// Where a received record lies.
enum Wire<'a> {
    /// Where it arrived, in a receive buffer (lendable, if the driver said so).
    Arrived(&'a mut [u8], Option<Lent>),
    /// Its first `usize` bytes, in the pooled buffer it was put together in (taken out when the
    /// record is sent on from there).
    Reassembled(&'a mut Option<RecordBuf>, usize),
}

impl<'a> RecordIn<'a> {
    /// Plaintext alone, lying nowhere it could be sent from (tests, tools, simulators): it is
    /// forwarded as a copy.
    pub fn plaintext_only(plaintext: &'a mut [u8]) -> RecordIn<'a> {
        let len = plaintext.len();
        RecordIn { wire: Wire::Arrived(plaintext, None), start: 0, len }
    }

    fn wire(&self) -> &[u8] {
        match &self.wire {
            Wire::Arrived(wire, _) => wire,
            Wire::Reassembled(held, len) => held.as_deref().map_or(&[], |buf| &buf[..*len]),
        }
    }

    fn wire_mut(&mut self) -> &mut [u8] {
        match &mut self.wire {
            Wire::Arrived(wire, _) => wire,
            Wire::Reassembled(held, len) => {
                held.as_deref_mut().map_or(&mut [], |buf| &mut buf[..*len])
            }
        }
    }

    /// Its plaintext: whole messages (none once it was sent on from where it lay).
    pub fn plaintext(&self) -> &[u8] {
        self.wire().get(self.start..self.start + self.len).unwrap_or_default()
    }

    /// Its plaintext, to rewrite in place.
    pub fn plaintext_mut(&mut self) -> &mut [u8] {
        let (start, len) = (self.start, self.len);
        self.wire_mut().get_mut(start..start + len).unwrap_or_default()
    }

    /// Where it lies, if in a receive buffer its driver can lend to a send.
    pub fn lent(&self) -> Option<Lent> {
        match self.wire {
            Wire::Arrived(_, lent) => lent,
            Wire::Reassembled(..) => None,
        }
    }

    /// Whether it lies in the pooled buffer it was put together in (and can be sent on from
    /// there without lending anything).
    pub fn reassembled(&self) -> bool {
        matches!(&self.wire, Wire::Reassembled(held, _) if held.is_some())
    }
}

/// What a received record hands to its link's user, in order.
pub enum Input<'a, 'r> {
    /// A record, opened: its messages, not yet handled. The user may take it whole (a relay
    /// forwarding every message of it to one other link) by answering how many messages it
    /// held; otherwise each message follows as [`Input::Received`] and [`Input::Event`]s.
    Record(&'r mut RecordIn<'a>),
    /// A message the transaction layer returned.
    Received(Received<'a>),
    /// A lifecycle event of the link's transactions.
    Event(Event),
}

/// What a batch of received bytes did, for the owner's counters and timers.
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordsIn {
    /// Records opened.
    pub records: u64,
    /// Messages in them.
    pub messages: u64,
    /// Records that had been cut by a buffer boundary (put together in a pooled buffer).
    pub reassembled: u64,
    /// Arm a shed deadline at this time.
    pub shed_at: Option<Instant>,
}

/// What a deadline that came due asks of the link's owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timeout {
    /// Nothing (a stale entry, or the keys were shed).
    Nothing,
    /// Arm `Deadline` again at this time.
    Arm(Deadline, Instant),
    /// A keepalive was written: send it, and arm the next at this time.
    Pinged(Instant),
    /// Close the link.
    Close(CloseReason),
}

/// What the end of a turn asks of the link's owner.
#[derive(Clone, Copy, Debug, Default)]
pub struct EndTurn {
    /// Records sealed this turn.
    pub records: u64,
    /// Arm a shed deadline at this time.
    pub shed_at: Option<Instant>,
    /// Arm a keepalive deadline at this time (the interval changed).
    pub keepalive_at: Option<Instant>,
    /// Close the link: its output failed, or more is queued than `send_queue_max` allows.
    pub close: Option<CloseReason>,
}

/// One link's protocol state. See the module documentation.
pub struct Link {
    crypto: Crypto,
    txn: txn::Link,
    span: SpanLink,
    rx: Rx,
    tx: Tx,
    meta: LinkMeta,
    clock: LinkClock,
    stats: LinkStats,
    /// A record was queued whole this turn ([`Link::queue_record`]: forwarded, so data).
    whole_this_turn: bool,
}

impl Link {
    /// A link that starts at `now` with `crypto`: a handshake, or nothing yet (a dial not yet
    /// connected; also the empty place a link is lifted out of while it is handled).
    pub fn new(crypto: Crypto, now: Instant) -> Link {
        Link {
            crypto,
            txn: txn::Link::new(),
            span: SpanLink::default(),
            rx: Rx::default(),
            tx: Tx::default(),
            meta: LinkMeta::default(),
            clock: LinkClock::new(now),
            stats: LinkStats::default(),
            whole_this_turn: false,
        }
    }

    /// Its counters.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// What its owner reads or sets about it.
    pub fn meta(&self) -> &LinkMeta {
        &self.meta
    }

    /// What its owner reads or sets about it.
    pub fn meta_mut(&mut self) -> &mut LinkMeta {
        &mut self.meta
    }

    /// Its transactions (to end them, or read them).
    pub fn txn(&mut self) -> &mut txn::Link {
        &mut self.txn
    }

    /// Its span protocol state, whatever the link's phase (a closed link's too, until it is
    /// dropped: its node withdraws what the link advertised from it).
    pub fn span(&self) -> &SpanLink {
        &self.span
    }

    /// Its span protocol state, to change ([`Link::span`]).
    pub fn span_mut(&mut self) -> &mut SpanLink {
        &mut self.span
    }

    /// The last time a record either way carried more than keepalives (key shedding counts
    /// quiet from it).
    pub fn last_data(&self) -> Instant {
        self.clock.last_data()
    }

    /// Whether records flow (the handshake is done and the link not closed).
    pub fn is_established(&self) -> bool {
        matches!(self.crypto, Crypto::Established { .. })
    }

    /// The handshake starts (a dial connected): `session` speaks first if it is the initiator.
    pub fn start_handshake(&mut self, session: Box<Session>, pool: &mut Pool) {
        self.crypto = Crypto::Handshake(session);
        self.poll_handshake(pool);
    }

    /// The key the peer proved in the handshake, accepted or not, while the link is
    /// handshaking or after its handshake failed ([`Session::proven_peer`]): what a refusal of
    /// the key names. `None` before the message carrying it, and once established.
    pub fn handshake_key(&self) -> Option<PublicKey> {
        match &self.crypto {
            Crypto::Handshake(session) => session.proven_peer(),
            _ => None,
        }
    }

    /// Queues whatever handshake frames the session has to send.
    pub fn poll_handshake(&mut self, pool: &mut Pool) {
        let Crypto::Handshake(session) = &mut self.crypto else { return };
        let mut frame = [0u8; HANDSHAKE_FRAME_MAX];
        while let Ok(len @ 1..) = session.poll_transmit(&mut frame) {
            self.tx.queue_raw(&frame[..len], pool);
        }
    }

    /// Bytes arrived at `now` (counted; the idle deadline moves).
    pub fn received_bytes(&mut self, len: usize, now: Instant) {
        self.clock.received(now);
        self.stats.bytes_in += len as u64;
    }

    /// Handshake bytes arrived: how many of them the handshake took (the rest, if any, are
    /// records), and whether it is done. Replies are queued.
    pub fn handle_handshake_bytes(
        &mut self,
        bytes: &[u8],
        now: Instant,
        pool: &mut Pool,
    ) -> Result<(usize, bool), CloseReason> {
        let Crypto::Handshake(session) = &mut self.crypto else {
            return Err(CloseReason::Internal("a handshaking link without a session"));
        };
        let used = session.handle_handshake_bytes(bytes, now).map_err(CloseReason::Protocol)?;
        let done = session.is_established();
        self.poll_handshake(pool);
        Ok((used, done))
    }

    /// The handshake finished at `now`: switch to records. Returns the peer's key, the
    /// deadlines to arm (keepalive at the link's interval or `keepalive`, idle, key shedding)
    /// and when the sending keys change, if they ever do by time.
    #[allow(clippy::type_complexity)]
    pub fn establish(
        &mut self,
        now: Instant,
        keepalive: Duration,
        periods: &Periods,
    ) -> Result<(PublicKey, [(Deadline, Instant); 3], Option<Instant>), CloseReason> {
        let Crypto::Handshake(session) = std::mem::take(&mut self.crypto) else {
            return Err(CloseReason::Internal("establishing a link that is not handshaking"));
        };
        let Some(peer) = session.peer() else {
            return Err(CloseReason::Internal("handshake finished without the peer's key"));
        };
        let Some((sealer, opener)) = session.into_record_layer() else {
            return Err(CloseReason::Internal("handshake finished without record keys"));
        };
        let rekey_at = sealer.poll_timeout();
        self.crypto = Crypto::Established { sealer, opener };
        let keepalive = self.meta.keepalive(keepalive);
        Ok((peer, self.clock.established(now, keepalive, periods), rekey_at))
    }

    /// Records arrived at `now` in `bytes`: each is cut, opened in place (or put together in a
    /// pooled buffer if a buffer boundary cut it) and handed to `deliver` — first whole
    /// ([`Input::Record`]; `deliver` answers `Some(messages)` if it took it; with `lent`, `bytes`
    /// start at that place of a receive buffer the driver can lend to a send, and so does each
    /// record not put together), else message by
    /// message with the transactions' events. The link's own messages are handled here: a
    /// keepalive is consumed, a peer's `LINK_CLOSE` ends the batch with
    /// [`CloseReason::PeerSaid`]. A quiet link's receive keys are shed after a record of
    /// keepalives alone once `shed_after` has passed without data. The pool is borrowed only
    /// between records (`deliver` may write to other links meanwhile).
    pub fn handle_records(
        &mut self,
        bytes: &mut [u8],
        lent: Option<Lent>,
        pool: &RefCell<Pool>,
        now: Instant,
        periods: &Periods,
        mut deliver: impl FnMut(&mut Parts<'_>, Input<'_, '_>) -> Option<usize>,
    ) -> Result<RecordsIn, CloseReason> {
        let Link { crypto, txn, span, rx, tx, meta, clock, stats, .. } = self;
        let Crypto::Established { sealer, opener } = crypto else {
            return Err(CloseReason::Internal("records on a link without record keys"));
        };
        let mut last_data = clock.last_data();
        let data_before = last_data;
        let mut count = RecordsIn::default();
        // Where the bytes start, to find each record's offset from.
        let start = bytes.as_ptr() as usize;
        let result = rx.feed(bytes, pool, |cut| -> Result<(), CloseReason> {
            let wire = match cut {
                Cut::Arrived(record) => {
                    // Where the record lies in the lendable buffer (an offset below its size).
                    let lent = lent.map(|at| Lent {
                        buffer: at.buffer,
                        offset: at.offset + (record.as_ptr() as usize - start) as u32,
                    });
                    Wire::Arrived(record, lent)
                }
                Cut::Reassembled(held, len) => {
                    count.reassembled += 1;
                    Wire::Reassembled(held, len)
                }
            };
            let mut whole = RecordIn { wire, start: RECORD_HEADER_LEN, len: 0 };
            whole.len = opener.open(whole.wire_mut()).map_err(CloseReason::Protocol)?.len();
            count.records += 1;
            let mut parts = Parts { txn, span, out: tx.sink(sealer, pool), meta };
            // Offered whole first, then message by message.
            if let Some(n) = deliver(&mut parts, Input::Record(&mut whole)) {
                // Taken whole (forwarded by a relay): transaction messages, so data.
                count.messages += n as u64;
                last_data = now;
                return Ok(());
            }
            let mut data = false;
            for message in Messages::new(whole.plaintext()) {
                let message = message.map_err(CloseReason::Protocol)?;
                count.messages += 1;
                if message.command() != Command::LINK_PING {
                    last_data = now;
                    data = true;
                }
                let received = parts
                    .txn
                    .handle_message(&mut parts.out, &message)
                    .map_err(CloseReason::from)?;
                match received {
                    Some(Received::OneWay { command: Command::LINK_PING, .. }) | None => {}
                    Some(Received::OneWay { command: Command::LINK_CLOSE, error, .. }) => {
                        return Err(CloseReason::PeerSaid(error));
                    }
                    Some(received) => {
                        deliver(&mut parts, Input::Received(received));
                    }
                }
                while let Some(event) = parts.txn.poll_event() {
                    deliver(&mut parts, Input::Event(event));
                }
            }
            if !data && now >= last_data + periods.shed_keys_after {
                // A keepalive on a quiet link: the opener need not keep its schedule.
                opener.shed_keys();
            }
            Ok(())
        });
        stats.records_in += count.records;
        stats.messages_in += count.messages;
        if last_data != data_before {
            count.shed_at = clock.received_data(last_data, periods);
        }
        result.map(|()| count)
    }

    /// Whether the link holds part of a record in a full-size buffer with no deadline yet:
    /// returns when to arm its reassembly deadline, if so.
    pub fn arm_reassembly(&mut self, now: Instant, periods: &Periods) -> Option<Instant> {
        let needs = self.rx.holds_large_buffer() && !self.rx.deadline_armed();
        let at = self.clock.arm_reassembly(now, needs, periods)?;
        self.rx.arm_deadline();
        Some(at)
    }

    /// A deadline of the link came due at `now`. `keepalive` is the default keepalive interval.
    pub fn handle_timeout(
        &mut self,
        deadline: Deadline,
        now: Instant,
        keepalive: Duration,
        pool: &RefCell<Pool>,
        periods: &Periods,
    ) -> Timeout {
        let interval = self.meta.keepalive(keepalive);
        let rx = RxState { unfinished: self.rx.deadline_armed() };
        let pending = self.tx.has_pending();
        match self.clock.fire(deadline, now, interval, pending, rx, periods) {
            Fired::Stale => match deadline {
                // A later record (or none) holds the buffer now: it gets a period of its own.
                Deadline::Reassembly => match self.arm_reassembly(now, periods) {
                    Some(at) => Timeout::Arm(Deadline::Reassembly, at),
                    None => Timeout::Nothing,
                },
                _ => Timeout::Nothing,
            },
            Fired::Later(at) => Timeout::Arm(deadline, at),
            Fired::Ping { next } => {
                if let Crypto::Established { sealer, .. } = &mut self.crypto {
                    let mut sink = self.tx.sink(sealer, pool);
                    let _ =
                        self.txn.send_oneway(&mut sink, Command::LINK_PING, ErrorCode::NONE, &[]);
                }
                Timeout::Pinged(next)
            }
            Fired::ShedKeys => {
                if let Crypto::Established { sealer, opener } = &mut self.crypto {
                    // Quiet for a while: keep the keys' bytes, not their expanded schedules
                    // (rebuilt at the next record).
                    sealer.shed_keys();
                    opener.shed_keys();
                }
                Timeout::Nothing
            }
            Fired::Expired(expiry) => Timeout::Close(match expiry {
                Expiry::Idle => CloseReason::IdleTimeout,
                Expiry::SendStall => CloseReason::SendStall,
                Expiry::Reassembly => {
                    let stalled = "a record stayed unfinished past the reassembly deadline";
                    CloseReason::Protocol(Error::from(Violation::LinkProtocol(stalled)))
                }
            }),
        }
    }

    /// The sending keys' time to change came at `now`: returns when they next change, if ever.
    pub fn handle_rekey(&mut self, now: Instant) -> Result<Option<Instant>, CloseReason> {
        let Crypto::Established { sealer, .. } = &mut self.crypto else { return Ok(None) };
        sealer.handle_timeout(now).map_err(CloseReason::Protocol)?;
        Ok(sealer.poll_timeout())
    }

    /// The link as its user writes to it: its transactions, its output and its settings;
    /// `None` until records flow.
    pub fn parts<'a>(&'a mut self, pool: &'a RefCell<Pool>) -> Option<Parts<'a>> {
        let Link { crypto: Crypto::Established { sealer, .. }, txn, span, tx, meta, .. } = self
        else {
            return None;
        };
        Some(Parts { txn, span, out: tx.sink(sealer, pool), meta })
    }

    /// Sends `plaintext` (whole messages) as one record of its own behind whatever the link
    /// wrote before: a copy is made in a pooled buffer, `edit` rewrites it with the link's
    /// transactions at hand, and it is sealed and queued if `edit` returns `Some`. `None` if
    /// records do not flow, or `edit` refused.
    pub fn queue_record<R>(
        &mut self,
        pool: &RefCell<Pool>,
        plaintext: &[u8],
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let Link { crypto: Crypto::Established { sealer, .. }, txn, tx, .. } = self else {
            return None;
        };
        let result = tx.queue_record(sealer, pool, plaintext, |body| edit(txn, body))?;
        self.whole_this_turn = true;
        Some(result)
    }

    /// Sends a received `record` on this link from where it lies — in a lent receive buffer, or
    /// in the pooled buffer it was put together in: `edit` rewrites its plaintext in place with
    /// the link's transactions at hand, and if it returns `Some`, the record is sealed there
    /// with this link's key and queued behind whatever the link wrote before. A lent buffer
    /// comes back through [`Link::sent`] or [`Link::release`]; a pooled one goes with the link's
    /// own. `None` if the record lies in neither, records do not flow, or `edit` refused: then
    /// `edit` must have left the plaintext as it was.
    pub fn forward_in_place<R>(
        &mut self,
        pool: &RefCell<Pool>,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        // Where it lies, and laid out as a sealed record of its length is (so sealing there
        // cannot fail for want of room): checked before `edit` touches it.
        let whole = record.wire().len() == RECORD_HEADER_LEN + record.len + RECORD_TAG_LEN;
        if !whole || (record.lent().is_none() && !record.reassembled()) {
            return None;
        }
        let Link { crypto: Crypto::Established { sealer, .. }, txn, tx, .. } = self else {
            return None;
        };
        let result = edit(txn, record.plaintext_mut())?;
        let len = record.len;
        let pool = &mut pool.borrow_mut();
        // A failed seal is kept to close the link with at the end of the turn: the record is
        // lost with the link, whose transactions all end.
        match &mut record.wire {
            Wire::Arrived(wire, Some(at)) => {
                tx.queue_lent(sealer, pool, wire, len, *at);
            }
            Wire::Reassembled(held, _) => {
                if let Some(buf) = held.take() {
                    tx.queue_reassembled(sealer, pool, buf, len);
                }
            }
            Wire::Arrived(_, None) => {}
        }
        self.whole_this_turn = true;
        Some(result)
    }

    /// Makes room in the send queue for `chunks` records queued at once (an internal link, whose
    /// queue runs deeper than a socket's while another worker lags).
    pub fn reserve_send_queue(&mut self, chunks: usize) {
        self.tx.reserve(chunks);
    }

    /// Records queued in lent receive buffers, not yet sent.
    pub fn lent_chunks(&self) -> usize {
        self.tx.lent_chunks()
    }

    /// Sends `LINK_CLOSE` carrying `code`: the link's last message. `false` if records do not
    /// flow (nothing sent).
    pub fn send_close_notice(&mut self, code: ErrorCode, pool: &RefCell<Pool>) -> bool {
        let Some(mut parts) = self.parts(pool) else { return false };
        let _ = parts.txn.send_oneway(&mut parts.out, Command::LINK_CLOSE, code, &[]);
        true
    }

    /// The link is gone, or closing: every transaction ends at once, with `code` as the loss's
    /// error (their events follow from [`Link::poll_event`]).
    pub fn handle_link_down(&mut self, code: ErrorCode) {
        self.txn.handle_link_down(code);
    }

    /// The next event of the link's transactions.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.txn.poll_event()
    }

    /// The turn ends at `now`: what the link wrote is sealed into a record. Returns what to
    /// arm, and whether to close (its output failed, or more than `send_queue_max` bytes wait).
    pub fn end_turn(
        &mut self,
        now: Instant,
        keepalive: Duration,
        send_queue_max: usize,
        pool: &mut Pool,
        periods: &Periods,
    ) -> EndTurn {
        let mut end = EndTurn::default();
        if let Crypto::Established { sealer, opener } = &mut self.crypto {
            // This turn wrote data if a record went whole (forwarded by a relay), if a record
            // filled up and was sealed already (a keepalive alone never fills one), or if the
            // record being built holds more than a keepalive: whatever a keepalive that fired
            // this turn assumed, the application may have written into its record since.
            let whole = std::mem::take(&mut self.whole_this_turn);
            let sealed = self.tx.take_sealed();
            if whole || sealed > 0 || self.tx.pending_len() > KEEPALIVE_LEN {
                self.clock.data_written();
            }
            if self.tx.has_pending() {
                self.tx.flush(sealer, pool);
            }
            // Every record sealed this turn counts: at its end, filled up, or whole.
            end.records = u64::from(sealed) + u64::from(self.tx.take_sealed());
            if end.records > 0 {
                end.shed_at = self.clock.sealed(now, whole, periods);
            }
            self.stats.records_out += end.records;
            if self.clock.end_turn() {
                // Quiet for a while: keep the keys' bytes, not their expanded schedules
                // (rebuilt at the next record). An idle client costs that much less.
                sealer.shed_keys();
                opener.shed_keys();
            }
            if self.meta.keepalive_changed {
                // A new interval: an entry for the deadline it gives.
                self.meta.keepalive_changed = false;
                let interval = self.meta.keepalive(keepalive);
                end.keepalive_at = Some(self.clock.keepalive_changed(now, interval));
            }
        }
        if let Some(error) = self.tx.take_failure() {
            end.close = Some(CloseReason::Protocol(error));
        } else if self.tx.queued_bytes() > send_queue_max {
            end.close = Some(CloseReason::SendQueueFull);
        }
        end
    }

    /// The bytes to send, in order (sealed records, or handshake frames): the link's own, or
    /// places in lent receive buffers.
    pub fn transmit(&self) -> impl Iterator<Item = Chunk<'_>> {
        self.tx.chunks()
    }

    /// Whether nothing waits to be sent.
    pub fn is_idle(&self) -> bool {
        self.tx.is_empty() && !self.tx.has_pending()
    }

    /// Bytes written and not yet sent (sealed, or in the record being built).
    pub fn queued_bytes(&self) -> usize {
        self.tx.queued_bytes()
    }

    /// Whether a send is in flight.
    pub fn sending(&self) -> bool {
        self.clock.sending()
    }

    /// A send of what [`Link::transmit`] gave started at `now`: returns when to arm its stall
    /// deadline, if none is armed. `None` also if there was nothing to send.
    pub fn send_started(&mut self, now: Instant, periods: &Periods) -> Option<Instant> {
        self.clock.send_started(now, periods)
    }

    /// The send in flight completed, `n` bytes taken (0 for a failed send). Lent receive
    /// buffers sent from in full come back through `unlend`.
    pub fn sent(&mut self, n: usize, pool: &mut Pool, unlend: &mut impl FnMut(Lent)) {
        self.clock.send_done();
        self.stats.bytes_out += n as u64;
        self.tx.advance(n, pool, unlend);
    }

    /// The link is closed: its keys are dropped at once, its buffers when [`Link::release`]d.
    pub fn close(&mut self) {
        self.crypto = Crypto::None;
    }

    /// Gives the link's buffers back to the pool, and the lent ones through `unlend`.
    pub fn release(&mut self, pool: &mut Pool, unlend: &mut impl FnMut(Lent)) {
        self.rx.release(pool);
        self.tx.release(pool, unlend);
    }

    /// Its transactions, to read.
    pub fn transactions(&self) -> &txn::Link {
        &self.txn
    }
}
