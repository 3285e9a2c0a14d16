//! A rogue peer for process tests: a link to a real `ringspan run` node over loopback TCP, built
//! from the crate's own protocol code (the Noise handshake of [`cipher::Session`], its record
//! sealer and opener, the message views of `ringspan::wire`, the transaction machine
//! [`txn::Link`], the span payloads), driven by the test one step at a time.
//!
//! It speaks the protocol correctly by default: it answers forced closes (the transaction layer
//! does) and the node's retractions, and pings when it has sent nothing for a while, so the
//! node's idle timeout never fires while the test pumps it. The test makes it misbehave *within*
//! the protocol ([`Policy`]: withhold answers, stay silent; send whatever it likes through
//! [`Rogue::send`]) or outside it ([`Rogue::raw_record`], [`Rogue::raw_bytes`]).
//!
//! I/O is blocking `std` sockets: nothing happens on the link between calls. Everything the node
//! sends is read and handled inside [`Rogue::pump_until`] (or [`pump_all_until`] for several
//! rogues), which also keeps the link alive; a test waits for anything, a node's snapshot
//! included, through its condition. A rogue left unpumped for longer than the node's idle
//! timeout is closed by the node (as it should be).
//!
//! ```ignore
//! let mut rogue = Rogue::connect(node.addr(), &Identity::generate()?, Some(node.public()))?;
//! rogue.hello(Role::Client, Wants::all());
//! rogue.pump_until(WAIT, |r| r.span_of(MOUNT).is_some())?;
//! let call = rogue.open(rogue.span_of(MOUNT).unwrap(), CALL, b"ping", Flags::DELETE);
//! rogue.pump_until(WAIT, |r| r.ended(call).is_some())?;
//! assert_eq!(rogue.deliveries(call).next().unwrap().payload, b"ping");
//! ```

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringspan::cipher::{self, Identity, PublicKey, RecordOpener, RecordSealer, Session};
use ringspan::ids::{MountId, NodeId, TxnId};
use ringspan::limits::HANDSHAKE_FRAME_MAX;
use ringspan::span::{Advert, Hello, Label, Metric, MountKey, MountKind, Role, Seqno, Wants};
use ringspan::txn::{self, Delivery};
use ringspan::wire::{
    ADVERT_LEN_MAX, CLIENT_ADDRESS_LEN, ClientAddress, Command, ErrorCode, Flags, HELLO_LEN_MAX,
};

use super::wait::now;

// TCP or the attach socket.
mod stream;
// Reading and handling what the node sends; sealing and writing.
mod traffic;

use stream::Stream;

/// How long [`Rogue::connect`] waits for the TCP connection and the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read waits at most inside a pump, so its condition is checked this often.
const POLL_WAIT: Duration = Duration::from_millis(20);
/// The default keepalive: well under the idle timeout of any test's node configuration.
const KEEPALIVE: Duration = Duration::from_millis(200);
/// Bytes one read takes at most.
const READ_LEN: usize = 64 * 1024;
/// A blocked write gives up after this long (the node does not read: the test has its answer).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// What the rogue does by itself. Change it through [`Rogue::policy`] at any time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Sends a `LINK_PING` when it has sent nothing for this long, while pumping. `None`:
    /// silent, so the node's idle timeout fires.
    pub keepalive: Option<Duration>,
    /// Answers the node's forced closes (ABORT|DELETE) with the DELETE the transaction layer
    /// writes at once. `false`: that DELETE is withheld ([`Rogue::release_withheld`]), so the
    /// node holds the transaction (and everything it waits for) open. The rogue's own state
    /// moves on as if it had answered.
    pub answer_forced_closes: bool,
    /// Answers the node's retraction of a span (its DELETE) with our DELETE. `false`: withheld
    /// ([`Rogue::release_withheld`]), so the retracted span stays open at the node.
    pub answer_retractions: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { keepalive: Some(KEEPALIVE), answer_forced_closes: true, answer_retractions: true }
    }
}

/// One transaction message the node sent (or, `synthesized`, one the rogue's transaction layer
/// made up for it when the link went down), as an owned value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The transaction, as the rogue's [`txn::Link`] names it.
    pub txn: TxnId,
    /// Its parent, if it is stacked.
    pub parent: Option<TxnId>,
    /// The flags as sent.
    pub flags: Flags,
    /// The command.
    pub command: Command,
    /// The error code.
    pub error: ErrorCode,
    /// The payload.
    pub payload: Vec<u8>,
    /// Never on the wire: the close of a transaction on the lost link (section 6.6).
    pub synthesized: bool,
}

impl Delivered {
    fn new(delivery: &Delivery<'_>, synthesized: bool) -> Delivered {
        Delivered {
            txn: delivery.txn,
            parent: delivery.parent,
            flags: delivery.flags,
            command: delivery.command,
            error: delivery.error,
            payload: delivery.payload.to_vec(),
            synthesized,
        }
    }

    /// Whether this opens a transaction the node started.
    pub fn opens(&self) -> bool {
        self.flags.contains(Flags::CREATE) && !self.flags.contains(Flags::REPLY)
    }

    /// Whether this is the node's last message on its transaction.
    pub fn closes(&self) -> bool {
        self.flags.contains(Flags::DELETE)
    }

    /// Whether this is a forced close.
    pub fn is_forced_close(&self) -> bool {
        self.flags.contains(Flags::ABORT | Flags::DELETE)
    }
}

/// One entry of the rogue's log, in the order things happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// A transaction message (see [`Delivered`]).
    Delivery(Delivered),
    /// A one-way message other than `LINK_PING` (counted in [`Rogue::pings`]) and `LINK_CLOSE`
    /// (in [`Rogue::closed`]).
    OneWay {
        /// Its command.
        command: Command,
        /// Its error code.
        error: ErrorCode,
        /// Its payload.
        payload: Vec<u8>,
    },
    /// A transaction ended at the rogue's end (exactly once each).
    Ended {
        /// The transaction.
        txn: TxnId,
        /// The first error carried by a DELETE either way.
        error: ErrorCode,
    },
}

/// How the link ended, as the rogue saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseSeen {
    /// The node sent `LINK_CLOSE` with this code.
    Notice(ErrorCode),
    /// The node closed the connection without a notice.
    Eof,
    /// The connection failed: reset, broken pipe, a write that could not finish.
    Io(io::ErrorKind),
    /// The node's bytes broke the protocol as the rogue's own layers check it (a node bug, or
    /// the rogue's misbehaviour confused its own state); the rogue closed the connection.
    Refused(ringspan::Error),
}

/// A rogue's answer kept back by its [`Policy`].
#[derive(Clone, Debug)]
enum Withheld {
    /// Messages the transaction layer wrote (the DELETE answering a forced close).
    Bytes(Vec<u8>),
    /// The DELETE answering the node's retraction of this span.
    Retraction(TxnId),
}

/// One link to a node, as a test-controlled peer. See the module documentation.
pub struct Rogue {
    stream: Stream,
    identity: Identity,
    peer: PublicKey,
    sealer: RecordSealer,
    opener: RecordOpener,
    link: txn::Link,
    /// Bytes received and not yet a whole record.
    rx: Vec<u8>,
    /// Where one read lands.
    read_buf: Vec<u8>,
    /// Messages written and not yet sealed (the answers made while handling input).
    outbox: Vec<u8>,
    policy: Policy,
    withheld: Vec<Withheld>,
    peer_hello: Option<(TxnId, Hello)>,
    /// The node's open spans, by mount.
    spans: HashMap<MountKey, (TxnId, Advert)>,
    /// Every span the node opened that has not ended (retracted ones too), to its mount.
    span_mounts: HashMap<TxnId, MountKey>,
    /// Every span the rogue opened that has not ended, to its mount.
    our_spans: HashMap<TxnId, MountKey>,
    log: Vec<Seen>,
    pings: u64,
    records_in: u64,
    records_out: u64,
    closed: Option<CloseSeen>,
    last_sent: Instant,
}

impl Rogue {
    /// Dials `addr` and runs the Noise XX handshake as initiator with `identity`, expecting the
    /// node's key `peer` if given (any key otherwise). Nothing is sent after the handshake:
    /// [`Rogue::hello`] is the test's move.
    pub fn connect(
        addr: SocketAddr,
        identity: &Identity,
        peer: Option<PublicKey>,
    ) -> io::Result<Rogue> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
        Rogue::handshake(stream, identity, peer)
    }

    /// [`Rogue::connect`] from the local address `source` (e.g. 127.0.0.2, to come from another
    /// address than the other rogues), on a port the kernel picks.
    pub fn connect_from(
        source: IpAddr,
        addr: SocketAddr,
        identity: &Identity,
        peer: Option<PublicKey>,
    ) -> io::Result<Rogue> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.bind(&SocketAddr::new(source, 0).into())?;
        socket.connect_timeout(&addr.into(), CONNECT_TIMEOUT)?;
        Rogue::handshake(socket.into(), identity, peer)
    }

    fn handshake(
        mut stream: TcpStream,
        identity: &Identity,
        peer: Option<PublicKey>,
    ) -> io::Result<Rogue> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let mut config = cipher::Config::new(identity.clone()).map_err(invalid)?;
        // Without an expected key the rogue takes whatever node answers.
        config.accept_unknown_keys = true;
        let mut session = Session::initiator(Arc::new(config), peer, now()).map_err(invalid)?;
        let deadline = now() + CONNECT_TIMEOUT;
        let mut frame = [0u8; HANDSHAKE_FRAME_MAX];
        let mut buf = [0u8; 4096];
        let mut rx = Vec::new();
        loop {
            loop {
                let len = session.poll_transmit(&mut frame).map_err(invalid)?;
                if len == 0 {
                    break;
                }
                stream.write_all(&frame[..len])?;
            }
            if session.is_established() {
                break;
            }
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "rogue: handshake timed out"));
            }
            stream.set_read_timeout(Some(left))?;
            let len = match stream.read(&mut buf) {
                // Interrupted by a signal: tried again.
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                read => read?,
            };
            if len == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "rogue: the node closed the connection during the handshake",
                ));
            }
            let consumed = session.handle_handshake_bytes(&buf[..len], now()).map_err(invalid)?;
            // Bytes after the last handshake frame are records.
            rx.extend_from_slice(&buf[consumed..len]);
        }
        let peer = session.peer().ok_or_else(|| invalid("established without a peer key"))?;
        let (sealer, opener) =
            session.into_record_layer().ok_or_else(|| invalid("established without keys"))?;
        Ok(Rogue::over(Stream::Tcp(stream), identity, peer, (sealer, opener), &rx))
    }

    /// Connects to the node's attach socket at `path`: a local link (PROTOCOL 10), no
    /// handshake, records framed as on any link but plain (a zero tag, no encryption). Nothing
    /// is sent: [`Rogue::hello`] is the test's move. `identity` only names the rogue's own
    /// mounts' origin (the node knows the link by a key it made up); the node's key is not
    /// proven on a local link, so [`Rogue::peer`] is all zeros.
    pub fn attach(path: &std::path::Path, identity: &Identity) -> io::Result<Rogue> {
        let stream = std::os::unix::net::UnixStream::connect(path)?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        let layer = cipher::record::record_layer_for_attach(now()).map_err(invalid)?;
        Ok(Rogue::over(Stream::Unix(stream), identity, PublicKey([0; 32]), layer, &[]))
    }

    /// A rogue over `stream`, its records sealed and opened by `layer`; `rx` holds bytes that
    /// arrived after the handshake.
    fn over(
        stream: Stream,
        identity: &Identity,
        peer: PublicKey,
        (sealer, opener): (RecordSealer, RecordOpener),
        rx: &[u8],
    ) -> Rogue {
        let mut rogue = Rogue {
            stream,
            identity: identity.clone(),
            peer,
            sealer,
            opener,
            link: txn::Link::new(),
            rx: Vec::new(),
            read_buf: vec![0; READ_LEN],
            outbox: Vec::new(),
            policy: Policy::default(),
            withheld: Vec::new(),
            peer_hello: None,
            spans: HashMap::new(),
            span_mounts: HashMap::new(),
            our_spans: HashMap::new(),
            log: Vec::new(),
            pings: 0,
            records_in: 0,
            records_out: 0,
            closed: None,
            last_sent: now(),
        };
        rogue.received(rx);
        rogue
    }

    /// The node's static key, as its handshake proved it.
    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    /// The node's id.
    pub fn peer_node_id(&self) -> NodeId {
        self.peer.node_id()
    }

    /// The rogue's own node id (the origin of the mounts it attaches).
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// The local address of the rogue's socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// What the rogue does by itself; change it at any time.
    pub fn policy(&mut self) -> &mut Policy {
        &mut self.policy
    }

    /// The rogue's transaction state, to inspect.
    pub fn link(&self) -> &txn::Link {
        &self.link
    }

    /// Writes messages with the rogue's [`txn::Link`] into a buffer (a [`ringspan::wire::Sink`]),
    /// then seals them as one or more records (cut between messages at the record plaintext
    /// maximum) and sends them. Answers waiting to go are sent first. Returns what `f` returns.
    /// Events the sends cause (a transaction ending) go to the log.
    pub fn send<R>(&mut self, f: impl FnOnce(&mut txn::Link, &mut Vec<u8>) -> R) -> R {
        let mut out = std::mem::take(&mut self.outbox);
        let result = f(&mut self.link, &mut out);
        self.outbox = out;
        self.drain_events();
        self.flush();
        result
    }

    /// Opens the rogue's `LINK_CONN` with the hello `role` and `wants` make.
    pub fn hello(&mut self, role: Role, wants: Wants) -> TxnId {
        let mut buf = [0u8; HELLO_LEN_MAX];
        let len = make_hello(role, wants).encode(&mut buf);
        self.hello_raw(&buf[..len])
    }

    /// Opens the rogue's `LINK_CONN` with any payload (a malformed hello, say).
    pub fn hello_raw(&mut self, payload: &[u8]) -> TxnId {
        self.send(|link, out| link.open(out, None, Command::LINK_CONN, payload, Flags::NONE))
            .unwrap_or_else(|error| panic!("rogue: cannot open LINK_CONN: {error}"))
    }

    /// An advertisement of `mount` originated by the rogue: its node id, seqno 1, metric 0,
    /// label "rogue".
    pub fn own_advert(&self, mount: MountKey, kind: MountKind) -> Advert {
        Advert {
            mount,
            kind,
            label: Label::new(b"rogue").expect("a five-byte label is within the bound"),
            origin: self.node_id(),
            seqno: Seqno(1),
            metric: Metric::ZERO,
        }
    }

    /// Opens a span advertising `advert` (a top-level `LINK_SPAN`). Returns the span.
    pub fn advertise(&mut self, advert: &Advert) -> TxnId {
        let mut buf = [0u8; ADVERT_LEN_MAX];
        let len = advert.encode(&mut buf);
        let span = self
            .send(|link, out| link.open(out, None, Command::LINK_SPAN, &buf[..len], Flags::NONE))
            .unwrap_or_else(|error| panic!("rogue: cannot open LINK_SPAN: {error}"));
        self.our_spans.insert(span, advert.mount);
        span
    }

    /// Sends `advert` as an update on the rogue's open span `span`.
    pub fn update(&mut self, span: TxnId, advert: &Advert) {
        let mut buf = [0u8; ADVERT_LEN_MAX];
        let len = advert.encode(&mut buf);
        self.send(|link, out| {
            link.send(out, span, Command::LINK_SPAN, &buf[..len], Flags::NONE, ErrorCode::NONE)
        })
        .unwrap_or_else(|error| panic!("rogue: cannot update {span}: {error}"));
    }

    /// Retracts the rogue's span `span` (its DELETE).
    pub fn retract(&mut self, span: TxnId) {
        self.send(|link, out| link.close(out, span, ErrorCode::NONE))
            .unwrap_or_else(|error| panic!("rogue: cannot retract {span}: {error}"));
    }

    /// Asks for a seqno at least `seqno` on the node's span `their_span` (`LINK_SPAN_REQUEST`,
    /// in the reply direction).
    pub fn seqno_request(&mut self, their_span: TxnId, seqno: Seqno) {
        let payload = seqno.encode_request();
        self.send(|link, out| {
            link.send(
                out,
                their_span,
                Command::LINK_SPAN_REQUEST,
                &payload,
                Flags::NONE,
                ErrorCode::NONE,
            )
        })
        .unwrap_or_else(|error| panic!("rogue: cannot request a seqno on {their_span}: {error}"));
    }

    /// Opens a transaction inside `parent` (a circuit, when `parent` is one of the node's
    /// spans) with `command` and `payload`; `flags` may hold DELETE (a one-shot request).
    pub fn open(&mut self, parent: TxnId, command: Command, payload: &[u8], flags: Flags) -> TxnId {
        self.send(|link, out| link.open(out, Some(parent), command, payload, flags))
            .unwrap_or_else(|error| panic!("rogue: cannot open inside {parent}: {error}"))
    }

    /// A one-shot call with `command` to `mount` (one of the node's spans), waited for up to
    /// `wait`: it must be answered with one reply carrying `payload` back (an echo), and end.
    pub fn echo_call(&mut self, mount: MountKey, command: Command, payload: &[u8], wait: Duration) {
        let span = self.span_of(mount).expect("rogue: the node's span for the mount");
        let call = self.open(span, command, payload, Flags::DELETE);
        self.pump_until(wait, |r| r.ended(call).is_some()).unwrap();
        assert_eq!(self.ended(call), Some(ErrorCode::NONE));
        let answers: Vec<_> = self.deliveries(call).collect();
        assert_eq!(answers.len(), 1, "{answers:?}");
        assert_eq!(answers[0].flags, Flags::REPLY | Flags::CREATE | Flags::DELETE);
        assert_eq!(answers[0].command, command);
        assert_eq!(answers[0].payload, payload);
    }

    /// Opens a call to the client mount `client` behind a satellite, inside `aggregate_span`
    /// (the node's span for that satellite's aggregate): the payload starts with the client's
    /// 16-byte address (PROTOCOL.md section 8.6).
    pub fn call_client(
        &mut self,
        aggregate_span: TxnId,
        client: MountId,
        command: Command,
        payload: &[u8],
        flags: Flags,
    ) -> TxnId {
        let mut addressed = Vec::with_capacity(CLIENT_ADDRESS_LEN + payload.len());
        addressed.extend_from_slice(&ClientAddress { client }.emit());
        addressed.extend_from_slice(payload);
        self.open(aggregate_span, command, &addressed, flags)
    }

    /// Sends a message on `txn` (an answer, on a transaction the node opened): `flags` may hold
    /// DELETE, ABORT, or both (a forced close).
    pub fn reply(&mut self, txn: TxnId, command: Command, payload: &[u8], flags: Flags) {
        self.send(|link, out| link.send(out, txn, command, payload, flags, ErrorCode::NONE))
            .unwrap_or_else(|error| panic!("rogue: cannot send on {txn}: {error}"));
    }

    /// Sends a `LINK_CLOSE` with `error`, as a node that shuts down does. The rogue's link then
    /// counts as down (its transactions end with `LOST_LINK`, section 6.6).
    pub fn close_notice(&mut self, error: ErrorCode) {
        let sent = self.send(|link, out| link.send_oneway(out, Command::LINK_CLOSE, error, &[]));
        if sent.is_ok() {
            self.lost(CloseSeen::Notice(error));
        }
    }

    /// Seals `plaintext` as one record, whatever it says, and sends it. Answers waiting to go are
    /// sent first, in their own record. `plaintext` must be a length a record may have (32 to
    /// 65,536 bytes, a multiple of 8): the sealer refuses any other (use
    /// [`Rogue::raw_bytes`]).
    pub fn raw_record(&mut self, plaintext: &[u8]) {
        self.flush();
        let mut wire = Vec::new();
        self.seal_into(plaintext, &mut wire);
        self.write(&wire);
    }

    /// Writes `bytes` to the connection as they are (a forged record header, garbage, half a
    /// record). Answers waiting to go are sent first. The next record the rogue seals is still
    /// numbered after the last one it sealed.
    pub fn raw_bytes(&mut self, bytes: &[u8]) {
        self.flush();
        self.write(bytes);
    }

    /// Sends the answers the [`Policy`] withheld, in the order they were due.
    pub fn release_withheld(&mut self) {
        for withheld in std::mem::take(&mut self.withheld) {
            match withheld {
                Withheld::Bytes(bytes) => self.outbox.extend_from_slice(&bytes),
                Withheld::Retraction(span) => {
                    let mut out = std::mem::take(&mut self.outbox);
                    // Gone only if the link is down: then nothing goes anyway.
                    let _ = self.link.close(&mut out, span, ErrorCode::NONE);
                    self.outbox = out;
                }
            }
        }
        self.drain_events();
        self.flush();
    }

    /// Answers withheld so far.
    pub fn withheld(&self) -> usize {
        self.withheld.len()
    }

    /// Reads and handles what the node sends, waiting up to `wait` for something (at least one
    /// read), and pings if the keepalive is due. Errors only if the link is closed.
    pub fn pump(&mut self, wait: Duration) -> io::Result<()> {
        self.keepalive();
        self.read_some(wait);
        match self.closed {
            Some(close) => Err(closed_error(close)),
            None => Ok(()),
        }
    }

    /// Reads and handles what the node sends until `until(self)` holds, pinging when idle (per
    /// the [`Policy`]). `until` is checked first, then after every read (at least every 20 ms),
    /// so it may also poll something else, such as a node's snapshot. Fails if `timeout` passes
    /// first, or if the link closes with `until` still false.
    pub fn pump_until(
        &mut self,
        timeout: Duration,
        mut until: impl FnMut(&Rogue) -> bool,
    ) -> io::Result<()> {
        let deadline = now() + timeout;
        loop {
            if until(self) {
                return Ok(());
            }
            if let Some(close) = self.closed {
                return Err(closed_error(close));
            }
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("rogue: condition still false after {timeout:?}"),
                ));
            }
            self.keepalive();
            self.read_some(left.min(POLL_WAIT).min(self.keepalive_due()));
        }
    }

    /// The node's hello, once its `LINK_CONN` has arrived.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref().map(|(_, hello)| hello)
    }

    /// The node's open spans (not retracted), by mount, with their latest advertisement.
    pub fn spans(&self) -> &HashMap<MountKey, (TxnId, Advert)> {
        &self.spans
    }

    /// The node's open span for `mount`: where calls to it open.
    pub fn span_of(&self, mount: MountKey) -> Option<TxnId> {
        self.spans.get(&mount).map(|(span, _)| *span)
    }

    /// Everything logged so far, in order.
    pub fn log(&self) -> &[Seen] {
        &self.log
    }

    /// The messages delivered on `txn`, in order.
    pub fn deliveries(&self, txn: TxnId) -> impl Iterator<Item = &Delivered> {
        self.log.iter().filter_map(move |seen| match seen {
            Seen::Delivery(delivered) if delivered.txn == txn => Some(delivered),
            _ => None,
        })
    }

    /// Transactions the node opened inside `parent` (calls to a mount the rogue advertised,
    /// when `parent` is its span): their opening messages.
    pub fn opened_inside(&self, parent: TxnId) -> impl Iterator<Item = &Delivered> {
        self.log.iter().filter_map(move |seen| match seen {
            Seen::Delivery(delivered) if delivered.opens() && delivered.parent == Some(parent) => {
                Some(delivered)
            }
            _ => None,
        })
    }

    /// How `txn` ended at the rogue's end, once it has.
    pub fn ended(&self, txn: TxnId) -> Option<ErrorCode> {
        self.log.iter().find_map(|seen| match *seen {
            Seen::Ended { txn: ended, error } if ended == txn => Some(error),
            _ => None,
        })
    }

    /// `LINK_PING`s received.
    pub fn pings(&self) -> u64 {
        self.pings
    }

    /// Records opened (from the node) and sealed (to it).
    pub fn records(&self) -> (u64, u64) {
        (self.records_in, self.records_out)
    }

    /// Whether the link is over, and how.
    pub fn closed(&self) -> Option<CloseSeen> {
        self.closed
    }
}

/// Pumps several rogues in turn (as [`Rogue::pump`], a short wait each) until `until` holds.
/// Unlike [`Rogue::pump_until`], a rogue whose link closes is no error: the condition decides.
pub fn pump_all_until(
    rogues: &mut [&mut Rogue],
    timeout: Duration,
    mut until: impl FnMut(&[&mut Rogue]) -> bool,
) -> io::Result<()> {
    let deadline = now() + timeout;
    let wait = POLL_WAIT / (rogues.len().max(1) as u32);
    loop {
        if until(rogues) {
            return Ok(());
        }
        if now() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("rogues: condition still false after {timeout:?}"),
            ));
        }
        for rogue in rogues.iter_mut() {
            let _ = rogue.pump(wait);
        }
    }
}

/// The one place a hello is built (the hello will gain fields).
fn make_hello(role: Role, wants: Wants) -> Hello {
    Hello::new(role, wants)
}

fn closed_error(close: CloseSeen) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, format!("rogue: link closed: {close:?}"))
}

fn invalid(error: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("rogue: {error}"))
}
