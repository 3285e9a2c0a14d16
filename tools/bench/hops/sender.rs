//! The sender's side of `ringspan-bench hops`: once its link to the relay is up and the mount
//! is reachable it runs one [`Plan`], one-way or round trips, and sends the [`Outcome`] to the
//! starting thread once, at the end (see `app.rs`).

use std::time::{Duration, Instant};

use ringspan::ids::LinkId;
use ringspan::relay::{CallId, Node};
use ringspan::ring::WorkerCtx;
use ringspan::span::MountKey;
use ringspan::wire::{ErrorCode, Flags};

use super::app::{
    ACK, DATA, ECHO, HEADER, Input, MARK, OPEN_ECHO, OPEN_STREAM, REPORT, REPORT_LEN, next_input,
    refuse,
};
use super::plan::{Mode, OneWayReport, Outcome, Plan, round_trip_report};

/// Bytes the sender writes onto its link per turn at most, and the most it lets wait unsent.
const TURN_BYTES: usize = 256 * 1024;

/// Where a sender is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
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
pub struct Sending {
    plan: Plan,
    mount: MountKey,
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

impl Sending {
    /// A sender that runs `plan` against `mount`, from `now`.
    pub fn new(plan: Plan, mount: MountKey, now: Instant) -> Sending {
        let wire = (HEADER + plan.size).next_multiple_of(ringspan::limits::MESSAGE_ALIGN);
        let window = (plan.window_bytes / wire).clamp(16, 1 << 20) as u64;
        Sending {
            mount,
            phase: Phase::Route,
            deadline: now + plan.route_timeout,
            call: None,
            payload: vec![0x5a; plan.size],
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
        }
    }

    /// Where the run is.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Ends the run with `outcome`.
    pub fn finish(&mut self, outcome: Result<Outcome, String>) {
        if self.phase != Phase::Done {
            self.phase = Phase::Done;
            let _ = self.plan.outcome.send(outcome);
        }
    }

    /// Handles what the receiver said, then moves the plan on; `link` is the link to the relay,
    /// if up, and `scratch` holds each event's payload.
    pub fn tick(
        &mut self,
        node: &mut Node,
        link: Option<LinkId>,
        scratch: &mut Vec<u8>,
        worker: &mut WorkerCtx<'_>,
    ) {
        let now = worker.now();
        let mut failure = None;
        let mut done = false;
        while let Some(input) = next_input(node, scratch, |_| false) {
            match input {
                Input::Opened { call, command, .. } => {
                    // Nothing is served here.
                    refuse(node, call, command, worker);
                }
                Input::Message { call, command, flags } if Some(call) == self.call => {
                    if flags.contains(Flags::ABORT) {
                        continue;
                    }
                    match (self.plan.mode, command) {
                        (Mode::OneWay, ACK) => {
                            if let Some(b) = scratch.get(..8) {
                                let mut raw = [0u8; 8];
                                raw.copy_from_slice(b);
                                self.acked = self.acked.max(u64::from_le_bytes(raw).min(self.sent));
                            }
                        }
                        (Mode::OneWay, REPORT) if scratch.len() == REPORT_LEN => {
                            let mut values = [0u64; 4];
                            for (i, v) in values.iter_mut().enumerate() {
                                let mut raw = [0u8; 8];
                                raw.copy_from_slice(&scratch[i * 8..i * 8 + 8]);
                                *v = u64::from_le_bytes(raw);
                            }
                            self.report = Some(values);
                        }
                        (Mode::RoundTrip { .. }, ECHO) => {
                            if *scratch != self.payload {
                                self.corrupted += 1;
                            }
                            if let Some(at) = self.request_at.take() {
                                if self.measuring_since.is_some() {
                                    let ns = now.saturating_duration_since(at).as_nanos();
                                    self.samples.push(ns.min(u128::from(u64::MAX)) as u64);
                                }
                                self.recorded += 1;
                            }
                        }
                        _ => {}
                    }
                }
                Input::Message { .. } => {}
                Input::Ended { call, error } if Some(call) == self.call => {
                    self.call = None;
                    if !error.is_none() {
                        failure = Some(format!("the call ended with error {}", error.0));
                    } else if self.phase == Phase::Finishing
                        || matches!(self.plan.mode, Mode::RoundTrip { stream: false })
                    {
                        done = self.phase == Phase::Finishing;
                    } else {
                        failure = Some("the receiver ended the stream early".into());
                    }
                }
                Input::Ended { .. } => {}
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
        self.drive(node, link, worker);
    }

    fn outcome(&mut self) -> Result<Outcome, String> {
        match self.plan.mode {
            Mode::OneWay => {
                let [received, out_of_order, window_messages, window_ns] =
                    self.report.ok_or("the receiver did not report its counts")?;
                let seconds = window_ns as f64 / 1e9;
                let rate = if seconds > 0.0 { window_messages as f64 / seconds } else { 0.0 };
                Ok(Outcome::OneWay(OneWayReport {
                    mode: "one-way",
                    size: self.plan.size,
                    sent: self.sent,
                    received,
                    out_of_order,
                    window_messages,
                    window_seconds: seconds,
                    msgs_per_sec: rate,
                    mb_per_sec: rate * self.plan.size as f64 / 1e6,
                    window: self.window,
                    ack_every: self.ack_every,
                }))
            }
            Mode::RoundTrip { stream } => Ok(Outcome::RoundTrip(round_trip_report(
                stream,
                self.plan.size,
                &mut self.samples,
                self.corrupted,
                self.measure_seconds,
            ))),
        }
    }

    /// Moves the plan on: opens, sends what flow allows, marks and closes.
    fn drive(&mut self, node: &mut Node, link: Option<LinkId>, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        match self.phase {
            Phase::Done | Phase::Finishing => {}
            Phase::Route => {
                if now >= self.deadline {
                    let what = if link.is_some() { "route to the mount" } else { "link" };
                    let outcome = Err(format!("no {what} after {:?}", self.plan.route_timeout));
                    self.finish(outcome);
                    return;
                }
                if link.is_none() || node.route(self.mount).is_none() {
                    worker.wake_at(now + Duration::from_millis(10));
                    return;
                }
                let opened = match self.plan.mode {
                    Mode::OneWay => {
                        let ack = (self.ack_every as u32).to_le_bytes();
                        node.open(self.mount, OPEN_STREAM, &ack, Flags::NONE, worker).map(Some)
                    }
                    Mode::RoundTrip { stream: true } => {
                        node.open(self.mount, OPEN_ECHO, &[], Flags::NONE, worker).map(Some)
                    }
                    Mode::RoundTrip { stream: false } => Ok(None),
                };
                match opened {
                    Ok(call) => {
                        self.call = call;
                        self.phase = Phase::Running;
                        let warmup = if self.plan.count.is_some() {
                            Duration::ZERO
                        } else {
                            self.plan.warmup
                        };
                        self.deadline = now + warmup;
                        self.drive(node, link, worker);
                    }
                    // The route is known but its span not open yet: try again shortly.
                    Err(_) => worker.wake_at(now + Duration::from_millis(10)),
                }
            }
            Phase::Running => match self.plan.mode {
                Mode::OneWay => self.drive_one_way(node, link, worker),
                Mode::RoundTrip { stream } => self.drive_round_trip(node, worker, stream),
            },
        }
    }

    fn drive_one_way(&mut self, node: &mut Node, link: Option<LinkId>, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        let Some(call) = self.call else { return };
        if self.marks == 0 && now >= self.deadline {
            let _ = node.send(call, MARK, &[], Flags::NONE, ErrorCode::NONE, worker);
            self.marks = 1;
            self.measure_end = Some(now + self.plan.seconds);
        }
        let over = match (self.plan.count, self.measure_end) {
            (Some(count), _) => self.sent >= count,
            (None, Some(end)) => now >= end,
            (None, None) => false,
        };
        if over {
            let _ = node.send(call, MARK, &[], Flags::NONE, ErrorCode::NONE, worker);
            let _ = node.send(call, REPORT, &[], Flags::DELETE, ErrorCode::NONE, worker);
            self.phase = Phase::Finishing;
            return;
        }
        if self.plan.count.is_none() {
            // The end of the warm-up, or of the measured window, even if nothing else happens.
            worker.wake_at(self.measure_end.unwrap_or(self.deadline));
        }
        // As much as the window, the turn and the link's unsent bytes allow.
        let queued = link.and_then(|l| worker.link(l)).map_or(0, |l| l.queued_bytes());
        let wire = HEADER + self.payload.len();
        let room = TURN_BYTES.saturating_sub(queued) / wire;
        let credit = self.window.saturating_sub(self.sent - self.acked);
        let mut n = credit.min(room as u64);
        if let Some(count) = self.plan.count {
            n = n.min(count - self.sent);
        }
        for _ in 0..n {
            if self.payload.len() >= 8 {
                self.payload[..8].copy_from_slice(&self.sent.to_le_bytes());
            }
            let sent = node.send(call, DATA, &self.payload, Flags::NONE, ErrorCode::NONE, worker);
            if sent.is_err() {
                break;
            }
            self.sent += 1;
        }
        if room == 0 {
            // The link is full: come back when its send completes (or shortly).
            worker.wake_at(now + Duration::from_millis(1));
        }
    }

    fn drive_round_trip(&mut self, node: &mut Node, worker: &mut WorkerCtx<'_>, stream: bool) {
        let now = worker.now();
        if self.measuring_since.is_none() && now >= self.deadline {
            self.measuring_since = Some(now);
            self.recorded = 0;
            self.measure_end = Some(now + self.plan.seconds);
        }
        // One-shot: the next request once the previous call has ended; stream: once answered.
        let idle = if stream { self.request_at.is_none() } else { self.call.is_none() };
        if !idle {
            return;
        }
        let over = match (self.plan.count, self.measure_end) {
            (Some(count), _) => self.recorded >= count,
            (None, Some(end)) => now >= end,
            (None, None) => false,
        };
        if over {
            self.measure_seconds = self
                .measuring_since
                .map_or(0.0, |since| now.saturating_duration_since(since).as_secs_f64());
            self.phase = Phase::Finishing;
            if stream {
                if let Some(call) = self.call {
                    let _ = node.send(call, REPORT, &[], Flags::DELETE, ErrorCode::NONE, worker);
                }
            } else {
                let outcome = self.outcome();
                self.finish(outcome);
            }
            return;
        }
        if self.measuring_since.is_none() {
            worker.wake_at(self.deadline);
        }
        let sent = if stream {
            match self.call {
                Some(call) => {
                    node.send(call, ECHO, &self.payload, Flags::NONE, ErrorCode::NONE, worker)
                }
                None => Err(ringspan::error::Misuse::UnknownCall.into()),
            }
        } else {
            node.open(self.mount, ECHO, &self.payload, Flags::DELETE, worker)
                .map(|call| self.call = Some(call))
        };
        match sent {
            Ok(()) => self.request_at = Some(now),
            Err(error) => {
                let outcome = Err(format!("cannot send a request: {error}"));
                self.finish(outcome);
            }
        }
    }
}
