//! Messages through relay hops, as `ringspan-bench hops` measures them: a sender and a receiver,
//! each a full node ([`ringspan::relay::Node`]) hosted by the daemon's own service
//! ([`Host`], running [`HopsApp`]) on the one worker of its own engine, on either side of a
//! chain of `ringspan run` relays. The relay is the host's one configured peer ([`settings`]):
//! a router with its address and key, dialled and redialled by the host as the daemon does its
//! peers; the application keeps one link to it and refuses a second.
//!
//! - The **receiver** ([`Role::Receive`], `receiver.rs`) dials a relay, says hello (role
//!   router) and attaches a master mount (the host's one configured mount); when its link to
//!   the relay goes down, the host dials it again. It answers one-shot requests with their payload, counts one-way streams and
//!   echoes request-reply streams (below), and reports each stream's count when it ends.
//! - The **sender** ([`Role::Send`], `sender.rs`) dials the first relay (role client), waits for
//!   the route to the mount, then runs one [`Plan`] (and fails if its link to the relay goes down
//!   before the end):
//!   - [`Mode::OneWay`]: one long-lived call (a transaction opened with [`OPEN_STREAM`]) carrying
//!     `size`-byte [`DATA`] messages, each starting with its sequence number, as fast as a
//!     credit window lets it. The relays forward without backpressure of their own (each
//!     message goes straight into the next link, and a link with more than
//!     `SEND_QUEUE_MAX_BYTES` unsent is closed), so the receiver returns
//!     an [`ACK`] with its running count every `ack_every` messages, and the sender keeps at most
//!     `window` messages unacknowledged. Two [`MARK`] messages bound the measured window (after
//!     the warm-up, and at the end); the receiver notes its own clock and count at each, and its
//!     final [`REPORT`] (the answer to the sender's closing message) says how many messages
//!     arrived between the marks and over how long, by the receiver's clock: the figure
//!     reported is what the receiver counted.
//!   - [`Mode::RoundTrip`]: one request in flight at a time. With `stream == false` each request
//!     is a one-shot transaction (opened with CREATE|DELETE, answered with DELETE: a circuit is
//!     set up and torn down at every relay per request, as `ringspan call` does); with `stream
//!     == true` requests and replies are messages inside one long-lived transaction (no
//!     per-request state in the relays). Each round trip is recorded; percentiles are exact, from
//!     the sorted samples.
//!
//! Everything runs on the worker thread: no message crosses threads. The sender's outcome goes
//! to the starting thread once, at the end, over a channel; the receiver sends one
//! [`StreamSummary`] per stream that ends.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringspan::cipher::{Identity, PublicKey};
use ringspan::daemon::{App, HostState, Limits, MountService, MountSpec, PeerSpec, Settings};
use ringspan::ids::LinkId;
use ringspan::relay::{AppEvent, CallId, Node};
use ringspan::ring::{CloseReason, WorkerCtx};
use ringspan::span::{Label, MountKey, MountKind, Role as SpanRole};
use ringspan::wire::{Command, ErrorCode, Flags};

use super::plan::Role;
#[cfg(doc)]
use super::plan::{Mode, Plan, StreamSummary};
use super::receiver::Receiving;
use super::sender::{Phase, Sending};
#[cfg(doc)]
use ringspan::daemon::Host;

/// Opens a one-way stream; payload: `ack_every` as a little-endian u32.
pub const OPEN_STREAM: Command = Command::new(33, 1);
/// A message of a one-way stream; its payload starts with its sequence number (little-endian
/// u64, from 0) when it holds 8 bytes or more.
pub const DATA: Command = Command::new(33, 2);
/// Marks the start or the end of the measured window of a one-way stream.
pub const MARK: Command = Command::new(33, 3);
/// The receiver's running count of a one-way stream (little-endian u64).
pub const ACK: Command = Command::new(33, 4);
/// Closes a stream (sender) and answers with the receiver's [`StreamSummary`] counts (receiver).
pub const REPORT: Command = Command::new(33, 5);
/// A request answered with its payload: a one-shot call, or a message in an echo stream.
pub const ECHO: Command = Command::new(33, 6);
/// Opens an echo stream: each [`ECHO`] message in it is answered with its payload.
pub const OPEN_ECHO: Command = Command::new(33, 7);

/// Bytes of a [`REPORT`] answer: four little-endian u64 (received, out of order, messages
/// between the marks, nanoseconds between the marks).
pub const REPORT_LEN: usize = 32;
/// Acknowledgement interval a receiver uses when the stream's open does not say.
pub const DEFAULT_ACK_EVERY: u64 = 1024;
/// The largest acknowledgement interval a receiver accepts.
pub const ACK_EVERY_MAX: u64 = 1 << 20;
/// Wire bytes of a message's header.
pub const HEADER: usize = ringspan::limits::MESSAGE_HEADER_LEN;
/// Wait between dials of the relay (the host's redial bounds, both: each wait is jittered down
/// by up to half).
const REDIAL: Duration = Duration::from_millis(100);

/// The settings of the node on either side: `identity`'s, dialling the relay at `relay` (key
/// `relay_key`) as its one peer, a router, and saying hello as a client (a sender) or a router
/// (a receiver, which attaches `mount`); every other limit the daemon's default.
pub fn settings(
    identity: Identity,
    sender: bool,
    relay: SocketAddr,
    relay_key: PublicKey,
    mount: MountKey,
) -> Settings {
    let mounts = match sender {
        true => Vec::new(),
        false => vec![MountSpec {
            key: mount,
            kind: MountKind::Master,
            label: Label::EMPTY,
            service: MountService::App,
        }],
    };
    Settings {
        role: if sender { SpanRole::Client } else { SpanRole::Router },
        peers: vec![PeerSpec::router(Some(relay), relay_key)],
        mounts,
        limits: Limits { redial_min: REDIAL, redial_max: REDIAL, ..Limits::default() },
        ..Settings::new(identity)
    }
}

/// An application event, copied out of the node (its payload into a scratch buffer).
pub enum Input {
    /// A call to the mount was opened.
    Opened { call: CallId, command: Command, flags: Flags },
    /// A message on a call.
    Message { call: CallId, command: Command, flags: Flags },
    /// A call ended.
    Ended { call: CallId, error: ErrorCode },
}

/// Refuses a call opened to this end (nothing is served here), with its own command.
pub fn refuse(node: &mut Node, call: CallId, command: Command, worker: &mut WorkerCtx<'_>) {
    let refuse = Flags::ABORT | Flags::DELETE;
    let _ = node.send(call, command, &[], refuse, ErrorCode::REFUSED, worker);
}

/// Copies the next application event out of `node`, its payload into `scratch`: of a plain
/// [`DATA`] message on a call `counted` names, only the sequence number (the first 8 bytes).
pub fn next_input(
    node: &mut Node,
    scratch: &mut Vec<u8>,
    counted: impl Fn(CallId) -> bool,
) -> Option<Input> {
    let event = node.poll_app()?;
    scratch.clear();
    Some(match event {
        AppEvent::Opened { call, command, flags, payload, .. } => {
            scratch.extend_from_slice(payload);
            Input::Opened { call, command, flags }
        }
        AppEvent::Message { call, command, flags, payload, .. } => {
            let counted = command == DATA && flags == Flags::NONE && counted(call);
            let keep = if counted { &payload[..payload.len().min(8)] } else { payload };
            scratch.extend_from_slice(keep);
            Input::Message { call, command, flags }
        }
        AppEvent::Ended { call, error } => Input::Ended { call, error },
    })
}

/// Which side this node is.
#[allow(clippy::large_enum_variant)] // one per engine
enum Side {
    Receive(Receiving),
    Send(Sending),
}

/// The application of `ringspan-bench hops`: a sender or a receiver, on the host's node.
pub struct HopsApp {
    side: Side,
    /// The link to the relay, while up.
    link: Option<LinkId>,
    scratch: Vec<u8>,
}

impl HopsApp {
    /// The application for `role`, with `mount` as the sender's target (the receiver's is its
    /// host's configured mount); `now` is the start time.
    pub fn new(role: Role, mount: MountKey, now: Instant) -> HopsApp {
        let side = match role {
            Role::Receive { summaries } => Side::Receive(Receiving::new(summaries)),
            Role::Send(plan) => Side::Send(Sending::new(plan, mount, now)),
        };
        HopsApp { side, link: None, scratch: Vec::new() }
    }
}

impl App for HopsApp {
    fn link_up(&mut self, link: LinkId, _peer: &PublicKey) -> bool {
        // One link, to the relay.
        if self.link.is_some() {
            return false;
        }
        self.link = Some(link);
        true
    }

    fn link_down(&mut self, link: LinkId, reason: CloseReason) {
        if self.link != Some(link) {
            return;
        }
        self.link = None;
        match &mut self.side {
            // The run is over: this is the engine shutting down.
            Side::Send(s) if s.phase() == Phase::Done => {}
            Side::Send(s) => s.finish(Err(format!("the link to the relay went down: {reason}"))),
            Side::Receive(_) => {
                tracing::warn!(%link, %reason, "link to the relay down; dialling again")
            }
        }
    }

    fn tick(&mut self, host: &mut HostState, worker: &mut WorkerCtx<'_>) {
        let node = &mut host.node;
        match &mut self.side {
            Side::Receive(r) => r.tick(node, &mut self.scratch, worker.now(), worker),
            Side::Send(s) => s.tick(node, self.link, &mut self.scratch, worker),
        }
    }
}
