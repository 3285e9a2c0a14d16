//! Messages through relay hops, as `ringspan-bench hops` measures them: a sender and a receiver,
//! each a full node ([`ringspan::relay::Node`]) running on the one worker of its own engine, on either side
//! of a chain of `ringspan run` relays.
//!
//! - The **receiver** ([`Role::Receive`]) dials a relay, says hello (role router) and attaches a
//!   master mount. It answers one-shot requests with their payload, counts one-way streams and
//!   echoes request-reply streams (below), and reports each stream's count when it ends.
//! - The **sender** ([`Role::Send`]) dials the first relay (role client), waits for the route to
//!   the mount, then runs one [`Plan`]:
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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use ringspan::Error;
use ringspan::cipher::PublicKey;
use ringspan::ids::{LinkId, NodeId};
use ringspan::relay::{AppEvent, CallId, Node};
use ringspan::ring::{CloseReason, LinkCtx, Service, WorkerCtx};
use ringspan::span::{Hello, Label, MountKey, MountKind, Role as SpanRole, Wants};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command, ErrorCode, Flags};

use super::plan::{Mode, OneWayReport, Outcome, Plan, Role, StreamSummary, round_trip_report};

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
const REPORT_LEN: usize = 32;
/// Acknowledgement interval a receiver uses when the stream's open does not say.
const DEFAULT_ACK_EVERY: u64 = 1024;
/// The largest acknowledgement interval a receiver accepts.
const ACK_EVERY_MAX: u64 = 1 << 20;
/// Wire bytes of a message's header.
const HEADER: usize = ringspan::limits::MESSAGE_HEADER_LEN;
/// Bytes the sender writes onto its link per turn at most, and the most it lets wait unsent.
const TURN_BYTES: usize = 256 * 1024;
/// Wait between dials while the relay is not there yet.
const REDIAL: Duration = Duration::from_millis(100);

/// A one-way stream at the receiver.
#[derive(Debug, Default)]
struct Inbound {
    echo: bool,
    received: u64,
    out_of_order: u64,
    ack_every: u64,
    since_ack: u64,
    marks: [Option<(Instant, u64)>; 2],
}

impl Inbound {
    fn window(&self) -> (u64, Duration) {
        match self.marks {
            [Some((t0, n0)), Some((t1, n1))] => (n1 - n0, t1.saturating_duration_since(t0)),
            _ => (0, Duration::ZERO),
        }
    }

    fn summary(&self, error: ErrorCode) -> StreamSummary {
        let (window_messages, window) = self.window();
        StreamSummary {
            kind: if self.echo { "echo" } else { "one-way" },
            received: self.received,
            out_of_order: self.out_of_order,
            window_messages,
            window_seconds: window.as_secs_f64(),
            error: error.0,
        }
    }
}

/// Where a sender is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the link and the route.
    Route,
    /// Warming up or measuring.
    Running,
    /// The closing message is sent; waiting for the receiver's answer.
    Finishing,
    /// The outcome is sent.
    Done,
}

/// A sender's state.
struct Sending {
    plan: Plan,
    phase: Phase,
    deadline: Instant,
    call: Option<CallId>,
    payload: Vec<u8>,
    // One-way.
    window: u64,
    ack_every: u64,
    sent: u64,
    acked: u64,
    marks: u8,
    measure_end: Option<Instant>,
    report: Option<[u64; 4]>,
    // Round trips.
    request_at: Option<Instant>,
    measuring_since: Option<Instant>,
    measure_seconds: f64,
    samples: Vec<u64>,
    recorded: u64,
    corrupted: u64,
}

/// The service of `ringspan-bench hops`: a node on the worker, sending or receiving.
pub struct Hops {
    node: Node,
    relay: SocketAddr,
    relay_key: PublicKey,
    mount: MountKey,
    link: Option<LinkId>,
    dial_at: Option<Instant>,
    started: bool,
    now: Instant,
    to_close: Vec<(LinkId, ErrorCode)>,
    receiver: Option<Receiving>,
    sender: Option<Sending>,
    scratch: Vec<u8>,
}

/// A receiver's state: its streams.
struct Receiving {
    summaries: Option<Sender<StreamSummary>>,
    streams: HashMap<CallId, Inbound, foldhash::fast::RandomState>,
}

/// An application event, copied out of the node (its payload into the scratch buffer).
enum App {
    Opened { call: CallId, command: Command, flags: Flags },
    Message { call: CallId, command: Command, flags: Flags },
    Ended { call: CallId, error: ErrorCode },
}

impl Hops {
    /// A service for `role`, as node `id`, dialling the relay at `relay` (key `relay_key`), with
    /// `mount` as the receiver's mount or the sender's target; `now` is the start time.
    pub fn new(
        role: Role,
        id: NodeId,
        relay: SocketAddr,
        relay_key: PublicKey,
        mount: MountKey,
        now: Instant,
    ) -> Hops {
        let (hello_role, receiver, sender) = match role {
            Role::Receive { summaries } => {
                (SpanRole::Router, Some(Receiving { summaries, streams: HashMap::default() }), None)
            }
            Role::Send(plan) => {
                let wire = (HEADER + plan.size).next_multiple_of(ringspan::limits::MESSAGE_ALIGN);
                let window = (plan.window_bytes / wire).clamp(16, 1 << 20) as u64;
                let deadline = now + plan.route_timeout;
                let payload = vec![0x5a; plan.size];
                (
                    SpanRole::Client,
                    None,
                    Some(Sending {
                        phase: Phase::Route,
                        deadline,
                        call: None,
                        payload,
                        window,
                        ack_every: (window / 4).max(1),
                        sent: 0,
                        acked: 0,
                        marks: 0,
                        measure_end: None,
                        report: None,
                        request_at: None,
                        measuring_since: None,
                        measure_seconds: 0.0,
                        samples: Vec::new(),
                        recorded: 0,
                        corrupted: 0,
                        plan,
                    }),
                )
            }
        };
        Hops {
            node: Node::new(id, Hello::new(hello_role, Wants::all()), now),
            relay,
            relay_key,
            mount,
            link: None,
            dial_at: Some(now),
            started: false,
            now,
            to_close: Vec::new(),
            receiver,
            sender,
            scratch: Vec::new(),
        }
    }

    fn refused(&mut self, link: LinkId, error: Error) {
        tracing::warn!(%link, %error, "closing the link");
        self.to_close.push((link, ErrorCode::REFUSED));
    }

    /// Copies the next application event out of the node.
    fn next_app(&mut self) -> Option<App> {
        let event = self.node.poll_app()?;
        self.scratch.clear();
        Some(match event {
            AppEvent::Opened { call, command, flags, payload, .. } => {
                self.scratch.extend_from_slice(payload);
                App::Opened { call, command, flags }
            }
            AppEvent::Message { call, command, flags, payload, .. } => {
                // A receiver counts a stream's data by its sequence number alone: the rest of
                // the payload is not copied (64 KiB a message in bulk), unless it is echoed.
                let stream = self.receiver.as_ref().and_then(|r| r.streams.get(&call));
                let counted =
                    command == DATA && flags == Flags::NONE && stream.is_some_and(|s| !s.echo);
                let keep = if counted { &payload[..payload.len().min(8)] } else { payload };
                self.scratch.extend_from_slice(keep);
                App::Message { call, command, flags }
            }
            AppEvent::Ended { call, error } => App::Ended { call, error },
        })
    }

    fn receive(&mut self, now: Instant, worker: &mut WorkerCtx<'_>) {
        while let Some(app) = self.next_app() {
            let Some(receiver) = self.receiver.as_mut() else { return };
            let payload = &self.scratch;
            let node = &mut self.node;
            match app {
                App::Opened { call, command, flags } if flags.contains(Flags::DELETE) => {
                    // A one-shot request: answer with its payload.
                    let _ =
                        node.send(call, command, payload, Flags::DELETE, ErrorCode::NONE, worker);
                }
                App::Opened { call, command: OPEN_STREAM, .. } => {
                    let ack_every = payload
                        .get(..4)
                        .map_or(DEFAULT_ACK_EVERY, |b| {
                            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                        })
                        .clamp(1, ACK_EVERY_MAX);
                    receiver.streams.insert(call, Inbound { ack_every, ..Inbound::default() });
                }
                App::Opened { call, command: OPEN_ECHO, .. } => {
                    receiver.streams.insert(call, Inbound { echo: true, ..Inbound::default() });
                }
                App::Opened { call, command, .. } => {
                    let _ = node.send(
                        call,
                        command,
                        &[],
                        Flags::ABORT | Flags::DELETE,
                        ErrorCode::REFUSED,
                        worker,
                    );
                }
                App::Message { call, command, flags } => {
                    let Some(stream) = receiver.streams.get_mut(&call) else { continue };
                    if flags.contains(Flags::ABORT) {
                        continue;
                    }
                    if flags.contains(Flags::DELETE) {
                        // The sender's last: answer with the counts, and close.
                        let (window_messages, window) = stream.window();
                        let mut report = [0u8; REPORT_LEN];
                        for (i, value) in [
                            stream.received,
                            stream.out_of_order,
                            window_messages,
                            window.as_nanos().min(u128::from(u64::MAX)) as u64,
                        ]
                        .into_iter()
                        .enumerate()
                        {
                            report[i * 8..i * 8 + 8].copy_from_slice(&value.to_le_bytes());
                        }
                        let _ = node.send(
                            call,
                            REPORT,
                            &report,
                            Flags::DELETE,
                            ErrorCode::NONE,
                            worker,
                        );
                        continue;
                    }
                    if stream.echo {
                        stream.received += 1;
                        let _ =
                            node.send(call, command, payload, Flags::NONE, ErrorCode::NONE, worker);
                        continue;
                    }
                    match command {
                        DATA => {
                            if let Some(seq) = payload.get(..8) {
                                let mut raw = [0u8; 8];
                                raw.copy_from_slice(seq);
                                if u64::from_le_bytes(raw) != stream.received {
                                    stream.out_of_order += 1;
                                }
                            }
                            stream.received += 1;
                            stream.since_ack += 1;
                            if stream.since_ack >= stream.ack_every {
                                stream.since_ack = 0;
                                let count = stream.received.to_le_bytes();
                                let _ = node.send(
                                    call,
                                    ACK,
                                    &count,
                                    Flags::NONE,
                                    ErrorCode::NONE,
                                    worker,
                                );
                            }
                        }
                        MARK => {
                            if let Some(slot) = stream.marks.iter_mut().find(|m| m.is_none()) {
                                *slot = Some((now, stream.received));
                            }
                        }
                        _ => {}
                    }
                }
                App::Ended { call, error } => {
                    if let Some(stream) = receiver.streams.remove(&call)
                        && let Some(summaries) = &receiver.summaries
                    {
                        let _ = summaries.send(stream.summary(error));
                    }
                }
            }
        }
    }

    /// Ends the run with `outcome`.
    fn finish(&mut self, outcome: Result<Outcome, String>) {
        if let Some(sender) = self.sender.as_mut()
            && sender.phase != Phase::Done
        {
            sender.phase = Phase::Done;
            let _ = sender.plan.outcome.send(outcome);
        }
    }

    fn send(&mut self, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        // What the receiver said.
        let mut failure = None;
        let mut done = false;
        while let Some(app) = self.next_app() {
            let Some(s) = self.sender.as_mut() else { return };
            match app {
                App::Opened { call, command, .. } => {
                    // Nothing is served here.
                    let _ = self.node.send(
                        call,
                        command,
                        &[],
                        Flags::ABORT | Flags::DELETE,
                        ErrorCode::REFUSED,
                        worker,
                    );
                }
                App::Message { call, command, flags } if Some(call) == s.call => {
                    if flags.contains(Flags::ABORT) {
                        continue;
                    }
                    match (s.plan.mode, command) {
                        (Mode::OneWay, ACK) => {
                            if let Some(b) = self.scratch.get(..8) {
                                let mut raw = [0u8; 8];
                                raw.copy_from_slice(b);
                                s.acked = s.acked.max(u64::from_le_bytes(raw).min(s.sent));
                            }
                        }
                        (Mode::OneWay, REPORT) if self.scratch.len() == REPORT_LEN => {
                            let mut values = [0u64; 4];
                            for (i, v) in values.iter_mut().enumerate() {
                                let mut raw = [0u8; 8];
                                raw.copy_from_slice(&self.scratch[i * 8..i * 8 + 8]);
                                *v = u64::from_le_bytes(raw);
                            }
                            s.report = Some(values);
                        }
                        (Mode::RoundTrip { .. }, ECHO) => {
                            if self.scratch != s.payload {
                                s.corrupted += 1;
                            }
                            if let Some(at) = s.request_at.take() {
                                if s.measuring_since.is_some() {
                                    let ns = now.saturating_duration_since(at).as_nanos();
                                    s.samples.push(ns.min(u128::from(u64::MAX)) as u64);
                                }
                                s.recorded += 1;
                            }
                        }
                        _ => {}
                    }
                }
                App::Message { .. } => {}
                App::Ended { call, error } if Some(call) == s.call => {
                    s.call = None;
                    if !error.is_none() {
                        failure = Some(format!("the call ended with error {}", error.0));
                    } else if s.phase == Phase::Finishing
                        || matches!(s.plan.mode, Mode::RoundTrip { stream: false })
                    {
                        done = s.phase == Phase::Finishing;
                    } else {
                        failure = Some("the receiver ended the stream early".into());
                    }
                }
                App::Ended { .. } => {}
            }
        }
        if let Some(failure) = failure {
            self.finish(Err(failure));
            return;
        }
        if done {
            let outcome = self.outcome();
            self.finish(outcome);
            return;
        }
        self.drive(worker);
    }

    fn outcome(&mut self) -> Result<Outcome, String> {
        let s = self.sender.as_mut().ok_or("not a sender")?;
        match s.plan.mode {
            Mode::OneWay => {
                let [received, out_of_order, window_messages, window_ns] =
                    s.report.ok_or("the receiver did not report its counts")?;
                let seconds = window_ns as f64 / 1e9;
                let rate = if seconds > 0.0 { window_messages as f64 / seconds } else { 0.0 };
                Ok(Outcome::OneWay(OneWayReport {
                    mode: "one-way",
                    size: s.plan.size,
                    sent: s.sent,
                    received,
                    out_of_order,
                    window_messages,
                    window_seconds: seconds,
                    msgs_per_sec: rate,
                    mb_per_sec: rate * s.plan.size as f64 / 1e6,
                    window: s.window,
                    ack_every: s.ack_every,
                }))
            }
            Mode::RoundTrip { stream } => Ok(Outcome::RoundTrip(round_trip_report(
                stream,
                s.plan.size,
                &mut s.samples,
                s.corrupted,
                s.measure_seconds,
            ))),
        }
    }

    /// Moves the sender's plan on: opens, sends what flow allows, marks and closes.
    fn drive(&mut self, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        let mount = self.mount;
        let Some(s) = self.sender.as_mut() else { return };
        match s.phase {
            Phase::Done | Phase::Finishing => {}
            Phase::Route => {
                if now >= s.deadline {
                    let what = if self.link.is_some() { "route to the mount" } else { "link" };
                    let outcome = Err(format!("no {what} after {:?}", s.plan.route_timeout));
                    self.finish(outcome);
                    return;
                }
                if self.link.is_none() || self.node.route(mount).is_none() {
                    worker.wake_at(now + Duration::from_millis(10));
                    return;
                }
                let opened = match s.plan.mode {
                    Mode::OneWay => {
                        let ack = (s.ack_every as u32).to_le_bytes();
                        self.node.open(mount, OPEN_STREAM, &ack, Flags::NONE, worker).map(Some)
                    }
                    Mode::RoundTrip { stream: true } => {
                        self.node.open(mount, OPEN_ECHO, &[], Flags::NONE, worker).map(Some)
                    }
                    Mode::RoundTrip { stream: false } => Ok(None),
                };
                match opened {
                    Ok(call) => {
                        s.call = call;
                        s.phase = Phase::Running;
                        let warmup =
                            if s.plan.count.is_some() { Duration::ZERO } else { s.plan.warmup };
                        s.deadline = now + warmup;
                        self.drive(worker);
                    }
                    // The route is known but its span not open yet: try again shortly.
                    Err(_) => worker.wake_at(now + Duration::from_millis(10)),
                }
            }
            Phase::Running => match s.plan.mode {
                Mode::OneWay => self.drive_one_way(worker),
                Mode::RoundTrip { stream } => self.drive_round_trip(worker, stream),
            },
        }
    }

    fn drive_one_way(&mut self, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        let Some(s) = self.sender.as_mut() else { return };
        let Some(call) = s.call else { return };
        if s.marks == 0 && now >= s.deadline {
            let _ = self.node.send(call, MARK, &[], Flags::NONE, ErrorCode::NONE, worker);
            s.marks = 1;
            s.measure_end = Some(now + s.plan.seconds);
        }
        let over = match (s.plan.count, s.measure_end) {
            (Some(count), _) => s.sent >= count,
            (None, Some(end)) => now >= end,
            (None, None) => false,
        };
        if over {
            let _ = self.node.send(call, MARK, &[], Flags::NONE, ErrorCode::NONE, worker);
            let _ = self.node.send(call, REPORT, &[], Flags::DELETE, ErrorCode::NONE, worker);
            s.phase = Phase::Finishing;
            return;
        }
        if s.plan.count.is_none() {
            // The end of the warm-up, or of the measured window, even if nothing else happens.
            worker.wake_at(s.measure_end.unwrap_or(s.deadline));
        }
        // As much as the window, the turn and the link's unsent bytes allow.
        let queued = self.link.and_then(|l| worker.link(l)).map_or(0, |l| l.queued_bytes());
        let wire = HEADER + s.payload.len();
        let room = TURN_BYTES.saturating_sub(queued) / wire;
        let credit = s.window.saturating_sub(s.sent - s.acked);
        let mut n = credit.min(room as u64);
        if let Some(count) = s.plan.count {
            n = n.min(count - s.sent);
        }
        for _ in 0..n {
            if s.payload.len() >= 8 {
                s.payload[..8].copy_from_slice(&s.sent.to_le_bytes());
            }
            let sent = self.node.send(call, DATA, &s.payload, Flags::NONE, ErrorCode::NONE, worker);
            if sent.is_err() {
                break;
            }
            s.sent += 1;
        }
        if room == 0 {
            // The link is full: come back when its send completes (or shortly).
            worker.wake_at(now + Duration::from_millis(1));
        }
    }

    fn drive_round_trip(&mut self, worker: &mut WorkerCtx<'_>, stream: bool) {
        let now = worker.now();
        let mount = self.mount;
        let Some(s) = self.sender.as_mut() else { return };
        if s.measuring_since.is_none() && now >= s.deadline {
            s.measuring_since = Some(now);
            s.recorded = 0;
            s.measure_end = Some(now + s.plan.seconds);
        }
        // One-shot: the next request once the previous call has ended; stream: once answered.
        let idle = if stream { s.request_at.is_none() } else { s.call.is_none() };
        if !idle {
            return;
        }
        let over = match (s.plan.count, s.measure_end) {
            (Some(count), _) => s.recorded >= count,
            (None, Some(end)) => now >= end,
            (None, None) => false,
        };
        if over {
            s.measure_seconds = s
                .measuring_since
                .map_or(0.0, |since| now.saturating_duration_since(since).as_secs_f64());
            if stream {
                if let Some(call) = s.call {
                    let _ =
                        self.node.send(call, REPORT, &[], Flags::DELETE, ErrorCode::NONE, worker);
                }
                s.phase = Phase::Finishing;
            } else {
                s.phase = Phase::Finishing;
                let outcome = self.outcome();
                self.finish(outcome);
            }
            return;
        }
        if s.measuring_since.is_none() {
            worker.wake_at(s.deadline);
        }
        let sent = if stream {
            match s.call {
                Some(call) => {
                    self.node.send(call, ECHO, &s.payload, Flags::NONE, ErrorCode::NONE, worker)
                }
                None => Err(ringspan::error::Misuse::UnknownCall.into()),
            }
        } else {
            self.node
                .open(mount, ECHO, &s.payload, Flags::DELETE, worker)
                .map(|call| s.call = Some(call))
        };
        match sent {
            Ok(()) => s.request_at = Some(now),
            Err(error) => {
                let outcome = Err(format!("cannot send a request: {error}"));
                self.finish(outcome);
            }
        }
    }
}

impl Service for Hops {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let id = link.id();
        let peer = link.peer();
        self.now = link.now();
        if self.link.is_some() {
            self.to_close.push((id, ErrorCode::REFUSED));
            return;
        }
        self.link = Some(id);
        // The relay it dialled is trusted with routes; a second link was refused above.
        if let Err(error) = self.node.link_up(id, peer.node_id(), SpanRole::Router, true, link) {
            self.refused(id, error);
        }
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let id = link.id();
        if let Err(error) = self.node.received(id, link, received) {
            self.refused(id, error);
        }
    }

    fn event(&mut self, link: &mut LinkCtx<'_>, event: Event) {
        let id = link.id();
        if let Err(error) = self.node.event(id, link, event) {
            self.refused(id, error);
        }
    }

    fn link_down(&mut self, worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        self.node.link_down(link, worker);
        if self.link == Some(link) {
            self.link = None;
            match self.sender.as_ref().map(|s| s.phase) {
                // The run is over: this is the engine shutting down.
                Some(Phase::Done) => {}
                Some(_) => self.finish(Err(format!("the link to the relay went down: {reason}"))),
                None => {
                    tracing::warn!(%link, %reason, "link to the relay down; dialling again");
                    self.dial_at = Some(self.now + REDIAL);
                }
            }
        }
    }

    fn dial_failed(&mut self, _link: Option<LinkId>, addr: SocketAddr, reason: CloseReason) {
        tracing::debug!(%addr, %reason, "dial failed; dialling again");
        self.dial_at = Some(self.now + REDIAL);
    }

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        self.now = now;
        if !self.started {
            self.started = true;
            if self.receiver.is_some()
                && let Err(error) =
                    self.node.attach(self.mount, MountKind::Master, Label::EMPTY, worker)
            {
                tracing::error!(%error, "cannot attach the mount");
            }
        }
        if let Some(at) = self.dial_at {
            if now >= at {
                self.dial_at = None;
                worker.connect(self.relay, Some(self.relay_key));
            } else {
                worker.wake_at(at);
            }
        }
        if self.receiver.is_some() {
            self.receive(now, worker);
        } else {
            self.send(worker);
        }
        for (link, code) in self.to_close.drain(..) {
            worker.close(link, code);
        }
    }
}
