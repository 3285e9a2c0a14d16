//! A client of a running ringspan node's attach socket (PROTOCOL.md 8.11 and the local links of
//! section 4): no engine, no key. An application connects, learns the mounts the node can reach,
//! attaches mounts of its own as the node's, serves the calls opened to them, and calls any
//! mount of the cluster.
//!
//! ```no_run
//! use ringspan_attach::{Client, mount};
//! use std::time::Duration;
//!
//! let mut node = Client::connect("/run/ringspan/attach.sock")?;
//! let kv = mount(1, 0x10);
//! node.attach(kv, ringspan_attach::Kind::Master, "kv", Duration::from_secs(5))?;
//! while let Some(request) = node.accept(Duration::from_secs(60))? {
//!     let answer = request.payload.clone();
//!     node.reply(&request, &answer)?;
//! }
//! # Ok::<(), ringspan_attach::ClientError>(())
//! ```
//!
//! One thread drives a client: each method reads and handles what the node sent until what it
//! waits for has come (or its time is up), answering what the protocol asks on the way. Calls
//! opened to attached mounts that arrive meanwhile wait for [`Client::accept`].
//!
//! The link is the node's local link: records framed as on any link (PROTOCOL.md section 4),
//! their plaintext sent as it is and their tag zero; transactions, hellos and spans as on any
//! link (sections 5, 6, 8).

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ringspan_proto::cipher::record::{RecordOpener, RecordSealer, record_layer_for_attach};
use ringspan_proto::ids::{ClusterId, MountId, TxnId};
use ringspan_proto::limits::{MESSAGE_PAYLOAD_MAX, RECORD_HEADER_LEN, RECORD_TAG_LEN};
use ringspan_proto::span::{Advert, Hello, MountKey, Role, Wants};
use ringspan_proto::txn::{self, Delivery, Event, Received};
use ringspan_proto::wire::record::{peek_wire_len, record_plaintexts};
use ringspan_proto::wire::{
    ATTACH_LEN_MAX, AttachRequest, Command, ErrorCode, Flags, HELLO_LEN_MAX, Message, Messages,
};

pub use ringspan_proto::span::MountKind as Kind;

/// The command of the calls this client opens (ringspan's own: `ringspan call`'s).
pub const CALL: Command = Command::new(1, 1);

/// A mount: its cluster and its id in it.
pub type Mount = MountKey;

/// The mount `id` of cluster `cluster`.
pub fn mount(cluster: u128, id: u128) -> Mount {
    MountKey { cluster: ClusterId(cluster), mount: MountId(id) }
}

/// What went wrong.
#[derive(Debug)]
pub enum ClientError {
    /// The socket failed, or the node closed the link.
    Io(io::Error),
    /// The node broke the protocol as this client checks it (the link is then closed).
    Protocol(String),
    /// The node refused or ended the request with this error code (PROTOCOL.md 5.7).
    Refused(ErrorCode),
    /// Nothing came in time.
    TimedOut,
}

impl std::error::Error for ClientError {}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Io(error) => write!(f, "the link to the node: {error}"),
            ClientError::Protocol(why) => write!(f, "the node broke the protocol: {why}"),
            ClientError::Refused(code) => write!(f, "refused by the node: {code}"),
            ClientError::TimedOut => write!(f, "no answer in time"),
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> ClientError {
        ClientError::Io(error)
    }
}

/// A mount the node can reach, as it advertised it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The mount.
    pub mount: Mount,
    /// Its kind.
    pub kind: Kind,
    /// Its label (lossy UTF-8).
    pub label: String,
}

/// A mount this client attached: pass it to [`Client::detach`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The mount.
    pub mount: Mount,
    txn: TxnId,
}

/// A call opened to one of this client's mounts, from [`Client::accept`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The mount called.
    pub mount: Mount,
    /// The call's command.
    pub command: Command,
    /// Its first payload.
    pub payload: Vec<u8>,
    /// Whether the caller closed its direction with it (a one-shot request).
    pub last: bool,
    txn: TxnId,
}

/// A call this client opened, until it ends.
#[derive(Debug, Default)]
struct Outgoing {
    reply: Vec<u8>,
    ended: Option<ErrorCode>,
}

/// An attach this client asked for, until the node answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttachState {
    Asked,
    Attached,
    Ended(ErrorCode),
}

/// A connection to a node's attach socket. See the crate documentation.
pub struct Client {
    stream: UnixStream,
    sealer: RecordSealer,
    opener: RecordOpener,
    link: txn::Link,
    /// Bytes received, not yet a whole record.
    rx: Vec<u8>,
    /// Where one read lands (kept: not allocated per call).
    read_buf: Vec<u8>,
    /// Messages written and not yet sent.
    outbox: Vec<u8>,
    /// The node's spans: where calls to each mount open.
    spans: HashMap<MountKey, (TxnId, Advert)>,
    span_mounts: HashMap<TxnId, MountKey>,
    attaches: HashMap<TxnId, (MountKey, AttachState)>,
    requests: VecDeque<Request>,
    /// Calls opened to our mounts, by their transaction: the mount.
    serving: HashMap<TxnId, MountKey>,
    calls: HashMap<TxnId, Outgoing>,
    closed: Option<String>,
}

#[allow(clippy::disallowed_methods)] // a client owns its clock, as the engine does
fn now() -> Instant {
    Instant::now()
}

impl Client {
    /// Connects to the node's attach socket at `path` and says hello: a client wanting every
    /// span (the node grants what its configuration's `attach_role` says).
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path)?;
        // Framed, not sealed: the keys are not used (PROTOCOL.md 8.11's local links).
        let (sealer, opener) =
            record_layer_for_attach(now()).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut client = Client {
            stream,
            sealer,
            opener,
            link: txn::Link::new(),
            rx: Vec::new(),
            read_buf: vec![0; 64 * 1024],
            outbox: Vec::new(),
            spans: HashMap::new(),
            span_mounts: HashMap::new(),
            attaches: HashMap::new(),
            requests: VecDeque::new(),
            serving: HashMap::new(),
            calls: HashMap::new(),
            closed: None,
        };
        let mut hello = [0u8; HELLO_LEN_MAX];
        let len = Hello::new(Role::Client, Wants::all()).encode(&mut hello);
        client.write_with(|link, out| {
            link.open(out, None, Command::LINK_CONN, &hello[..len], Flags::NONE).map(|_| ())
        })?;
        Ok(client)
    }

    /// The mounts the node can reach now.
    pub fn routes(&self) -> Vec<Route> {
        self.spans
            .values()
            .map(|(_, a)| Route {
                mount: a.mount,
                kind: a.kind,
                label: String::from_utf8_lossy(a.label.as_bytes()).into_owned(),
            })
            .collect()
    }

    /// Waits up to `timeout` until the node can reach `mount`.
    pub fn wait_for_route(&mut self, mount: Mount, timeout: Duration) -> Result<(), ClientError> {
        self.pump_until(timeout, |c| c.spans.contains_key(&mount))
    }

    /// Attaches `mount` as the node's own, of `kind`, labelled `label` (at most 64 bytes): the
    /// node advertises it to the cluster and sends its calls here ([`Client::accept`]).
    /// Refused if the node already holds the mount.
    pub fn attach(
        &mut self,
        mount: Mount,
        kind: Kind,
        label: &str,
        timeout: Duration,
    ) -> Result<Attachment, ClientError> {
        let kind = kind.index();
        let request = AttachRequest {
            cluster: mount.cluster,
            mount: mount.mount,
            kind,
            label: label.as_bytes(),
        };
        if kind >= ringspan_proto::wire::attach::ATTACH_KINDS || label.len() > 64 {
            return Err(ClientError::Refused(ErrorCode::MALFORMED));
        }
        let mut buf = [0u8; ATTACH_LEN_MAX];
        let len = request.emit(&mut buf);
        let txn = self.write_with(|link, out| {
            link.open(out, None, Command::LINK_ATTACH, &buf[..len], Flags::NONE)
        })?;
        self.attaches.insert(txn, (mount, AttachState::Asked));
        self.pump_until(timeout, |c| {
            c.attaches.get(&txn).is_none_or(|(_, s)| *s != AttachState::Asked)
        })?;
        match self.attaches.get(&txn).map(|&(_, state)| state) {
            Some(AttachState::Attached) => Ok(Attachment { mount, txn }),
            Some(AttachState::Ended(code)) => {
                self.attaches.remove(&txn);
                Err(ClientError::Refused(code))
            }
            Some(AttachState::Asked) | None => Err(ClientError::Refused(ErrorCode::LOST_LINK)),
        }
    }

    /// Detaches a mount: the node retracts it; calls open to it run on to their end.
    pub fn detach(&mut self, attachment: Attachment) -> Result<(), ClientError> {
        self.write_with(|link, out| link.close(out, attachment.txn, ErrorCode::NONE))
    }

    /// The next call opened to one of this client's mounts, waiting up to `timeout`; `None`
    /// if none came.
    pub fn accept(&mut self, timeout: Duration) -> Result<Option<Request>, ClientError> {
        match self.pump_until(timeout, |c| !c.requests.is_empty()) {
            Ok(()) => Ok(self.requests.pop_front()),
            Err(ClientError::TimedOut) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Answers `request` with `payload` and ends our side of the call.
    pub fn reply(&mut self, request: &Request, payload: &[u8]) -> Result<(), ClientError> {
        if payload.len() > MESSAGE_PAYLOAD_MAX {
            return Err(ClientError::Refused(ErrorCode::LIMIT_REACHED));
        }
        let (txn, command) = (request.txn, request.command);
        self.write_with(|link, out| {
            link.send(out, txn, command, payload, Flags::DELETE, ErrorCode::NONE)
        })
    }

    /// Calls `mount` with `payload` (a one-shot request), waiting up to `timeout` for its end:
    /// the reply's payload, or the error code it ended with.
    pub fn call(
        &mut self,
        mount: Mount,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let span = match self.spans.get(&mount) {
            Some(&(span, _)) => span,
            None => return Err(ClientError::Refused(ErrorCode::NO_ROUTE)),
        };
        if payload.len() > MESSAGE_PAYLOAD_MAX {
            return Err(ClientError::Refused(ErrorCode::LIMIT_REACHED));
        }
        let txn =
            self.write_with(|link, out| link.open(out, Some(span), CALL, payload, Flags::DELETE))?;
        self.calls.insert(txn, Outgoing::default());
        self.pump_until(timeout, |c| c.calls.get(&txn).is_none_or(|call| call.ended.is_some()))?;
        let call = self.calls.remove(&txn).unwrap_or_default();
        match call.ended {
            Some(ErrorCode::NONE) => Ok(call.reply),
            Some(code) => Err(ClientError::Refused(code)),
            None => Err(ClientError::Refused(ErrorCode::LOST_LINK)),
        }
    }

    /// Writes with the transaction layer, then sends.
    fn write_with<R>(
        &mut self,
        f: impl FnOnce(&mut txn::Link, &mut Vec<u8>) -> Result<R, ringspan_proto::Error>,
    ) -> Result<R, ClientError> {
        if let Some(why) = &self.closed {
            return Err(ClientError::Io(io::Error::new(io::ErrorKind::NotConnected, why.clone())));
        }
        let mut out = std::mem::take(&mut self.outbox);
        let result = f(&mut self.link, &mut out);
        self.outbox = out;
        self.events();
        self.flush()?;
        result.map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Reads and handles what the node sends until `done` holds or `timeout` passes.
    fn pump_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&Client) -> bool,
    ) -> Result<(), ClientError> {
        let deadline = now() + timeout;
        let mut buf = std::mem::take(&mut self.read_buf);
        let result = self.pump_into(&mut buf, deadline, &mut done);
        self.read_buf = buf;
        result
    }

    /// [`Client::pump_until`]'s loop, reading into `buf`.
    fn pump_into(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        done: &mut impl FnMut(&Client) -> bool,
    ) -> Result<(), ClientError> {
        loop {
            if done(self) {
                return Ok(());
            }
            if let Some(why) = &self.closed {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    why.clone(),
                )));
            }
            let left = deadline.saturating_duration_since(now());
            if left.is_zero() {
                return Err(ClientError::TimedOut);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(buf) {
                Ok(0) => self.lost("the node closed the socket".into()),
                Ok(len) => self.received(&buf[..len])?,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => self.lost(e.to_string()),
            }
        }
    }

    /// Handles every whole record in what arrived, then sends the answers.
    fn received(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let mut rx = std::mem::take(&mut self.rx);
        rx.extend_from_slice(bytes);
        let mut at = 0;
        let mut failed = None;
        while failed.is_none() {
            let len = match peek_wire_len(&rx[at..]) {
                Ok(Some(len)) if rx.len() - at >= len => len,
                Ok(_) => break,
                Err(error) => {
                    failed = Some(error.to_string());
                    break;
                }
            };
            match self.opener.open(&mut rx[at..at + len]) {
                Ok(plaintext) => {
                    if let Err(error) = self.handle_plaintext(plaintext) {
                        failed = Some(error);
                    }
                }
                Err(error) => failed = Some(error.to_string()),
            }
            at += len;
        }
        rx.drain(..at);
        self.rx = rx;
        if let Some(why) = failed {
            self.lost(why.clone());
            return Err(ClientError::Protocol(why));
        }
        self.flush()
    }

    fn handle_plaintext(&mut self, plaintext: &[u8]) -> Result<(), String> {
        for message in Messages::new(plaintext) {
            let message = message.map_err(|e| e.to_string())?;
            self.handle_message(&message)?;
        }
        Ok(())
    }

    fn handle_message(&mut self, message: &Message<&[u8]>) -> Result<(), String> {
        let mut answers = Vec::new();
        let received =
            self.link.handle_message(&mut answers, message).map_err(|e| e.to_string())?;
        self.outbox.extend_from_slice(&answers);
        match received {
            Some(Received::OneWay { command, error, .. }) if command == Command::LINK_CLOSE => {
                self.lost(format!("the node closed the link: {error}"));
            }
            // Keepalives and other one-way messages: nothing answers them.
            Some(Received::OneWay { .. }) | None => {}
            Some(Received::Txn(delivery)) => self.delivery(&delivery)?,
        }
        self.events();
        Ok(())
    }

    /// What a delivery means to the client: the node's hello and spans, answers to its
    /// attaches and calls, calls to its mounts.
    fn delivery(&mut self, d: &Delivery<'_>) -> Result<(), String> {
        let txn = d.txn;
        if d.parent.is_none() && d.opens() && d.command == Command::LINK_SPAN {
            let advert = Advert::decode(d.payload).map_err(|e| e.to_string())?;
            self.spans.insert(advert.mount, (txn, advert));
            self.span_mounts.insert(txn, advert.mount);
            return Ok(());
        }
        if let Some(&mount) = self.span_mounts.get(&txn) {
            if d.closes() {
                self.spans.retain(|_, (span, _)| *span != txn);
                if !d.is_forced_close() {
                    // The node retracted the span: our close answers it.
                    let mut out = std::mem::take(&mut self.outbox);
                    let _ = self.link.close(&mut out, txn, ErrorCode::NONE);
                    self.outbox = out;
                }
            } else if d.command == Command::LINK_SPAN
                && let Ok(advert) = Advert::decode(d.payload)
                && advert.mount == mount
            {
                self.spans.insert(mount, (txn, advert));
            }
            return Ok(());
        }
        if let Some((_, state)) = self.attaches.get_mut(&txn) {
            if d.closes() {
                // A refusal says why; a plain close after it was attached is a detach.
                *state = AttachState::Ended(d.error);
            } else if *state == AttachState::Asked {
                *state = AttachState::Attached;
            }
            return Ok(());
        }
        if let Some(parent) = d.parent
            && d.opens()
            && let Some(&(mount, _)) = self.attaches.get(&parent)
        {
            self.serving.insert(txn, mount);
            self.requests.push_back(Request {
                mount,
                command: d.command,
                payload: d.payload.to_vec(),
                last: d.flags.contains(Flags::DELETE),
                txn,
            });
            return Ok(());
        }
        if let Some(call) = self.calls.get_mut(&txn)
            && !d.flags.contains(Flags::ABORT)
        {
            call.reply.extend_from_slice(d.payload);
        }
        Ok(())
    }

    /// Transactions that ended: our calls' outcomes, our attaches', the node's spans.
    fn events(&mut self) {
        while let Some(event) = self.link.poll_event() {
            match event {
                Event::Ended { txn, error } => {
                    if let Some(call) = self.calls.get_mut(&txn) {
                        call.ended = Some(error);
                    }
                    match self.attaches.get(&txn).map(|&(_, state)| state) {
                        // Ended before any answer: refused, or the link went.
                        Some(AttachState::Asked) => {
                            if let Some((_, state)) = self.attaches.get_mut(&txn) {
                                *state = AttachState::Ended(error);
                            }
                        }
                        // Detached.
                        Some(AttachState::Attached) => {
                            self.attaches.remove(&txn);
                        }
                        // Kept for `attach` to read.
                        Some(AttachState::Ended(_)) | None => {}
                    }
                    self.serving.remove(&txn);
                    if let Some(mount) = self.span_mounts.remove(&txn) {
                        self.spans.retain(|m, (span, _)| !(*m == mount && *span == txn));
                    }
                }
                Event::Delivery(d) => {
                    let _ = self.delivery(&d);
                }
            }
        }
    }

    fn lost(&mut self, why: String) {
        if self.closed.is_none() {
            self.closed = Some(why);
        }
        self.link.handle_link_down(ErrorCode::LOST_LINK);
        self.spans.clear();
        self.outbox.clear();
        self.events();
    }

    /// Frames what waits in the outbox into records and writes them.
    fn flush(&mut self) -> Result<(), ClientError> {
        if self.outbox.is_empty() || self.closed.is_some() {
            return Ok(());
        }
        let outbox = std::mem::take(&mut self.outbox);
        let mut wire = Vec::with_capacity(outbox.len() + 64);
        for plaintext in record_plaintexts(&outbox) {
            self.frame(plaintext, &mut wire)?;
        }
        if let Err(error) = self.stream.write_all(&wire) {
            self.lost(error.to_string());
            return Err(error.into());
        }
        Ok(())
    }

    fn frame(&mut self, plaintext: &[u8], wire: &mut Vec<u8>) -> Result<(), ClientError> {
        let start = wire.len();
        wire.resize(start + RECORD_HEADER_LEN, 0);
        wire.extend_from_slice(plaintext);
        wire.resize(wire.len() + RECORD_TAG_LEN, 0);
        self.sealer
            .seal(&mut wire[start..], plaintext.len())
            .map(|_| ())
            .map_err(|e| ClientError::Protocol(e.to_string()))
    }
}
