//! The daemon's traces ([`Request::Trace`], `ringspan trace` and `ringspan ping --node`): a
//! `LINK_TRACE` circuit opened by the node's application, each report that comes back timed on
//! the worker's clock from the open and named as the configuration names the node, and handed to
//! the asking thread as it comes ([`TraceEvent`]). What a node on the path does with a trace is
//! the relay's (`relay/trace.rs`, PROTOCOL.md 8.10).
//!
//! A trace keeps at most its hop limit's worth of reports (at most [`TRACE_HOPS_MAX`]): a path
//! that sends more is not ours, and the trace is aborted.

use std::collections::HashMap;
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::host::Hasher;
use super::{HostState, Request};
use crate::ids::NodeId;
use crate::limits::TRACE_HOPS_MAX;
use crate::relay::{CallId, LinkSet, Node};
use crate::span::{MountKey, NextHop};
use crate::wire::{Command, ErrorCode, Flags, TraceReport, TraceRequest};

/// What a trace heard, in the order it heard it: reports, then its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceEvent {
    /// A node on the path reported.
    Hop {
        /// Its report, or why it did not parse.
        report: Result<TraceReport, String>,
        /// From the trace's open to the report's arrival, both on this node's worker clock
        /// (its turns' times).
        rtt: Duration,
        /// The configuration's name for the node the report names, if it gives one.
        name: Option<String>,
    },
    /// The trace is over, with this error (`NONE`: its last node answered it to its end).
    Ended(ErrorCode),
    /// It could not be opened: no route to the mount (or no room for one more call).
    NotOpened(String),
}

/// The traces a node's application has open.
#[derive(Default)]
pub(super) struct Traces {
    runs: HashMap<CallId, Run, Hasher>,
    /// Reports heard this turn, sent once their names are looked up ([`Traces::flush`]): the
    /// asking thread, the event, and the node it names.
    heard: Vec<(Sender<TraceEvent>, TraceEvent, Option<NodeId>)>,
    /// Traces whose paths sent more reports than their limit: aborted after this turn's events.
    excess: Vec<CallId>,
}

struct Run {
    started: Instant,
    events: Sender<TraceEvent>,
    limit: u8,
    reports: usize,
}

impl Traces {
    /// Opens a trace of `mount` ([`Request::Trace`]) at `now`.
    pub(super) fn open<L: LinkSet>(
        &mut self,
        node: &mut Node,
        now: Instant,
        request: Request,
        links: &mut L,
    ) {
        let Request::Trace { mount, target, limit, events } = request else { return };
        let limit = limit.clamp(1, TRACE_HOPS_MAX as u8);
        if node.route(mount).is_some_and(|r| matches!(r.next_hop, NextHop::Local)) {
            let mount = format!("0x{:x}:0x{:x}", mount.cluster.0, mount.mount.0);
            let _ = events.send(TraceEvent::NotOpened(format!("{mount} is attached to this node")));
            return;
        }
        let payload = TraceRequest { hops: 0, limit, target }.emit();
        match node.open(mount, Command::LINK_TRACE, &payload, Flags::DELETE, links) {
            Ok(call) => {
                self.runs.insert(call, Run { started: now, events, limit, reports: 0 });
            }
            Err(error) => {
                let _ = events.send(TraceEvent::NotOpened(describe(mount, &error)));
            }
        }
    }

    /// Whether `call` is one of the traces.
    pub(super) fn has(&self, call: CallId) -> bool {
        self.runs.contains_key(&call)
    }

    /// A message on trace `call`, arrived in the turn of `now`: a report (a forced close's empty
    /// payload is no report; its end follows).
    pub(super) fn message(&mut self, call: CallId, payload: &[u8], now: Instant) {
        let Some(run) = self.runs.get_mut(&call) else { return };
        if payload.is_empty() {
            return;
        }
        run.reports += 1;
        if run.reports > usize::from(run.limit) {
            if run.reports == usize::from(run.limit) + 1 {
                self.excess.push(call);
            }
            return;
        }
        let report = TraceReport::parse(payload).map_err(|e| e.to_string());
        let node = report.as_ref().ok().map(|r| r.node);
        let rtt = now.saturating_duration_since(run.started);
        self.heard.push((run.events.clone(), TraceEvent::Hop { report, rtt, name: None }, node));
    }

    /// Trace `call` ended.
    pub(super) fn ended(&mut self, call: CallId, error: ErrorCode) {
        if let Some(run) = self.runs.remove(&call) {
            self.heard.push((run.events, TraceEvent::Ended(error), None));
        }
    }

    /// Aborts the traces whose paths sent more reports than asked for.
    pub(super) fn abort_excess<L: LinkSet>(&mut self, node: &mut Node, links: &mut L) {
        for call in self.excess.drain(..) {
            tracing::warn!("a trace's path sent more reports than its hop limit: aborted");
            let flags = Flags::ABORT | Flags::DELETE;
            let _ = node.send(call, Command::LINK_TRACE, &[], flags, ErrorCode::ABORTED, links);
        }
    }

    /// Hands what was heard to the asking threads, each report with the configuration's name
    /// for its node.
    pub(super) fn flush(&mut self, host: &HostState) {
        for (events, mut event, node) in self.heard.drain(..) {
            if let (TraceEvent::Hop { name, .. }, Some(node)) = (&mut event, node) {
                *name = host.name_of(node).map(str::to_owned);
            }
            // The asking thread may have given up: nothing to tell then.
            let _ = events.send(event);
        }
    }
}

fn describe(mount: MountKey, error: &crate::Error) -> String {
    let mount = format!("0x{:x}:0x{:x}", mount.cluster.0, mount.mount.0);
    match error {
        crate::Error::Misuse(crate::error::Misuse::NoRoute) => format!("no route to {mount}"),
        error => format!("{mount}: {error}"),
    }
}
