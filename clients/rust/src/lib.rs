//! A client of a running ringspan node's attach socket (PROTOCOL.md 8.11, and the local links of
//! section 10): no engine, no key. An application connects, learns the mounts the node can reach,
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
//! // Serves until a minute passes with no call.
//! while let Some(request) = node.accept(Duration::from_secs(60))? {
//!     // A call's first message only (a caller may stream more, or end it by force).
//!     if !request.first || request.forced {
//!         continue;
//!     }
//!     let answer = request.payload.clone();
//!     match node.reply(&request, &answer) {
//!         // The caller ended the call meanwhile: nothing to answer.
//!         Ok(()) | Err(ringspan_attach::ClientError::Refused(_)) => {}
//!         Err(error) => return Err(error),
//!     }
//! }
//! # Ok::<(), ringspan_attach::ClientError>(())
//! ```
//!
//! One thread drives a client: each method that waits reads and handles what the node sent until
//! what it waits for has come (or its time is up), answering what the protocol asks on the way.
//! Calls opened to attached mounts that arrive meanwhile wait for [`Client::accept`].
//!
//! **Several calls in flight.** [`Client::open`] only queues a call; [`Client::next_ended`] (or
//! [`Client::wait`]) sends everything queued in one write, then reads. A caller that keeps many
//! calls open therefore pays one write and one read per batch, not per call. A server does the
//! same: [`Client::reply`] sends at once only when no other request already waits for
//! [`Client::accept`], so the answers to one read's requests leave in one write.
//!
//! The link is the node's local link: records framed as on any link (PROTOCOL.md section 4),
//! their plaintext sent as it is and their tag zero; transactions, hellos and spans as on any
//! link (sections 5, 6, 8).

mod link;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use ringspan_proto::cipher::record::{RecordOpener, RecordSealer, record_layer_for_attach};
use ringspan_proto::ids::{ClusterId, MountId, TxnId};
use ringspan_proto::limits::MESSAGE_PAYLOAD_MAX;
use ringspan_proto::span::{Advert, Hello, MountKey, Role, Wants};
use ringspan_proto::txn;
use ringspan_proto::wire::{ATTACH_LEN_MAX, AttachRequest, Flags, HELLO_LEN_MAX};

pub use ringspan_proto::span::MountKind as Kind;
pub use ringspan_proto::wire::{Command, ErrorCode};

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
    /// The application asked for what the protocol forbids (a message after its own last one,
    /// say); nothing was sent and the link carries on.
    Misuse(String),
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
            ClientError::Misuse(why) => write!(f, "not allowed by the protocol: {why}"),
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

/// A call opened to one of this client's mounts, or a further message of one, from
/// [`Client::accept`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The mount called.
    pub mount: Mount,
    /// The message's command.
    pub command: Command,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether this message opened the call (later ones stream more of the request).
    pub first: bool,
    /// Whether the caller closed its direction with it: nothing more of the request comes.
    pub last: bool,
    /// Whether it ended the call by force (ABORT|DELETE: the caller, or a lost link on the
    /// way, gave up on it): the call is over, and answers to it are refused.
    pub forced: bool,
    /// The error code it carried (`NONE` for most; a forced close says why).
    pub error: ErrorCode,
    txn: TxnId,
}

/// A call this client opened with [`Client::open`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CallId(TxnId);

/// A call that ended, from [`Client::next_ended`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The call.
    pub call: CallId,
    /// The messages of its answer, in order, or the error code it ended with.
    pub result: Result<Vec<Vec<u8>>, ErrorCode>,
}

/// What a client did on its socket so far: how well it batches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Reads that returned bytes.
    pub reads: u64,
    /// Writes (each sends everything queued).
    pub writes: u64,
}

/// A call this client opened, until it ends.
#[derive(Debug, Default)]
struct Outgoing {
    parts: Vec<Vec<u8>>,
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
    /// Records framed from the outbox, for one write (kept: not allocated per batch).
    wire: Vec<u8>,
    /// The node's spans: where calls to each mount open.
    spans: HashMap<MountKey, (TxnId, Advert)>,
    span_mounts: HashMap<TxnId, MountKey>,
    attaches: HashMap<TxnId, (MountKey, AttachState)>,
    requests: VecDeque<Request>,
    /// Calls opened to our mounts, by their transaction: the mount.
    serving: HashMap<TxnId, MountKey>,
    calls: HashMap<TxnId, Outgoing>,
    /// Our calls that ended and were not yet taken, in the order they ended.
    ended: VecDeque<TxnId>,
    counters: Counters,
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
        // Non-blocking: the client waits in poll(2), not in a read (link.rs).
        stream.set_nonblocking(true)?;
        // Framed, not sealed: the keys are not used (PROTOCOL.md section 10's local links).
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
            wire: Vec::new(),
            spans: HashMap::new(),
            span_mounts: HashMap::new(),
            attaches: HashMap::new(),
            requests: VecDeque::new(),
            serving: HashMap::new(),
            calls: HashMap::new(),
            ended: VecDeque::new(),
            counters: Counters::default(),
            closed: None,
        };
        let mut hello = [0u8; HELLO_LEN_MAX];
        let len = Hello::new(Role::Client, Wants::all()).encode(&mut hello);
        client.write_with(|link, out| {
            link.open(out, None, Command::LINK_CONN, &hello[..len], Flags::NONE).map(|_| ())
        })?;
        client.flush()?;
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

    /// Waits up to `timeout` until the node can no longer reach `mount` (its last path went).
    pub fn wait_for_no_route(
        &mut self,
        mount: Mount,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        self.pump_until(timeout, |c| !c.spans.contains_key(&mount))
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
        let answered = self.pump_until(timeout, |c| {
            c.attaches.get(&txn).is_none_or(|(_, s)| *s != AttachState::Asked)
        });
        if let Err(error) = answered {
            // Given up on: withdrawn, so that the mount is not attached with nobody to detach it.
            self.attaches.remove(&txn);
            let _ = self.write_with(|link, out| link.abort(out, txn, ErrorCode::ABORTED));
            let _ = self.flush();
            return Err(error);
        }
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
        self.write_with(|link, out| link.close(out, attachment.txn, ErrorCode::NONE))?;
        self.flush()
    }

    /// The next message of a call to one of this client's mounts (the call's first, or a
    /// further one it streams), waiting up to `timeout`; `None` if none came.
    pub fn accept(&mut self, timeout: Duration) -> Result<Option<Request>, ClientError> {
        match self.pump_until(timeout, |c| !c.requests.is_empty()) {
            Ok(()) => Ok(self.requests.pop_front()),
            Err(ClientError::TimedOut) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Answers `request`'s call with `payload` and ends our side of it. Sent at once, unless
    /// another request already waits for [`Client::accept`]: then with the answers to it.
    pub fn reply(&mut self, request: &Request, payload: &[u8]) -> Result<(), ClientError> {
        self.answer(request, request.command, payload, true)
    }

    /// Sends one message of a streamed answer to `request`'s call, with `command`; the call
    /// stays open for more ([`Client::reply`] ends it). Sent as [`Client::reply`] is.
    pub fn stream(
        &mut self,
        request: &Request,
        command: Command,
        payload: &[u8],
    ) -> Result<(), ClientError> {
        self.answer(request, command, payload, false)
    }

    /// Refuses `request`'s call, or ends it early: a forced close carrying `code` (e.g.
    /// `ErrorCode::REFUSED` for a command this application does not serve). Sent as
    /// [`Client::reply`] is.
    pub fn refuse(&mut self, request: &Request, code: ErrorCode) -> Result<(), ClientError> {
        self.force_close(request.txn, code)
    }

    /// Ends `call` by force, with `code`: the node passes the close on to the mount's holder,
    /// and the call ends when the node answers it ([`Client::next_ended`] and [`Client::wait`]
    /// then give `code`, or what the call ended with first if its end was already on the way).
    /// Sent at once. A call that already ended is left as it is.
    pub fn abort(&mut self, call: CallId, code: ErrorCode) -> Result<(), ClientError> {
        match self.calls.get(&call.0) {
            None => Err(ClientError::Refused(ErrorCode::LOST_LINK)),
            Some(outgoing) if outgoing.ended.is_some() => Ok(()),
            Some(_) => {
                self.write_with(|link, out| link.abort(out, call.0, code))?;
                self.flush()
            }
        }
    }

    /// Opens a call to `mount` with `command` and `payload`; `last` closes our direction with
    /// it (a one-shot request). Queued: it is sent by the next method that waits, or
    /// [`Client::flush`]. Its end comes from [`Client::wait`] or [`Client::next_ended`].
    pub fn open(
        &mut self,
        mount: Mount,
        command: Command,
        payload: &[u8],
        last: bool,
    ) -> Result<CallId, ClientError> {
        let span = match self.spans.get(&mount) {
            Some(&(span, _)) => span,
            None => return Err(ClientError::Refused(ErrorCode::NO_ROUTE)),
        };
        check_payload(payload)?;
        let flags = if last { Flags::DELETE } else { Flags::NONE };
        let txn =
            self.write_with(|link, out| link.open(out, Some(span), command, payload, flags))?;
        self.calls.insert(txn, Outgoing::default());
        Ok(CallId(txn))
    }

    /// Sends one more message of `call`'s request; `last` closes our direction. Queued as
    /// [`Client::open`] is.
    pub fn send(
        &mut self,
        call: CallId,
        command: Command,
        payload: &[u8],
        last: bool,
    ) -> Result<(), ClientError> {
        check_payload(payload)?;
        match self.calls.get(&call.0) {
            None => return Err(ClientError::Refused(ErrorCode::LOST_LINK)),
            // Over (its end waits for `wait` or `next_ended`): nothing more can go on it.
            Some(Outgoing { ended: Some(code), .. }) => {
                let code = if *code == ErrorCode::NONE { ErrorCode::REFUSED } else { *code };
                return Err(ClientError::Refused(code));
            }
            Some(_) => {}
        }
        let flags = if last { Flags::DELETE } else { Flags::NONE };
        self.write_with(|link, out| {
            link.send(out, call.0, command, payload, flags, ErrorCode::NONE)
        })
    }

    /// Waits up to `timeout` for `call` to end: the messages of its answer, in order, or the
    /// error code it ended with.
    pub fn wait(&mut self, call: CallId, timeout: Duration) -> Result<Vec<Vec<u8>>, ClientError> {
        let txn = call.0;
        self.pump_until(timeout, |c| c.calls.get(&txn).is_none_or(|call| call.ended.is_some()))?;
        self.ended.retain(|&t| t != txn);
        match self.take_ended(txn) {
            Some(result) => result.map_err(ClientError::Refused),
            None => Err(ClientError::Refused(ErrorCode::LOST_LINK)),
        }
    }

    /// The next of this client's calls to end (in the order they end), waiting up to
    /// `timeout`; `None` if none ended. Sends what [`Client::open`] queued first.
    pub fn next_ended(&mut self, timeout: Duration) -> Result<Option<Ended>, ClientError> {
        loop {
            while let Some(txn) = self.ended.pop_front() {
                if let Some(result) = self.take_ended(txn) {
                    return Ok(Some(Ended { call: CallId(txn), result }));
                }
            }
            match self.pump_until(timeout, |c| !c.ended.is_empty()) {
                Ok(()) => {}
                Err(ClientError::TimedOut) => return Ok(None),
                Err(error) => return Err(error),
            }
        }
    }

    /// Calls `mount` with `payload` (a one-shot request), waiting up to `timeout` for its end:
    /// the messages of its answer joined, or the error code it ended with.
    pub fn call(
        &mut self,
        mount: Mount,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let call = self.open(mount, CALL, payload, true)?;
        match self.wait(call, timeout) {
            Ok(parts) => Ok(parts.concat()),
            Err(ClientError::TimedOut) => {
                // Given up on: ended by force, so that no answer comes for a call nobody holds.
                let _ = self.abort(call, ErrorCode::ABORTED);
                self.forget(call.0);
                Err(ClientError::TimedOut)
            }
            Err(error) => Err(error),
        }
    }

    /// Reads and writes on the socket so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Sends everything queued now.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.send_outbox()
    }
}

impl Drop for Client {
    /// What was queued still goes: an answer queued behind a request never accepted.
    fn drop(&mut self) {
        let _ = self.send_outbox();
    }
}

fn check_payload(payload: &[u8]) -> Result<(), ClientError> {
    if payload.len() > MESSAGE_PAYLOAD_MAX {
        return Err(ClientError::Refused(ErrorCode::LIMIT_REACHED));
    }
    Ok(())
}
