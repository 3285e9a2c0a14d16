//! The daemon's application ([`DaemonApp`]), what a [`Host`](super::Host) runs for
//! `ringspan run`, the demo and the mount API: the built-in echo mounts, the calls of a
//! [`Handle`](super::Handle)'s user (handed over on channels: [`Incoming`], [`CallEvent`]),
//! call loads ([`Request::Load`]), traces ([`Request::Trace`], `trace.rs`), and the other
//! [`Request`]s: attach, detach, open, send, cut, snapshot.

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc::Sender;
use std::time::Instant;

use super::host::Hasher;
use super::trace::Traces;
use super::{
    App, CALL, CallEvent, HostState, Incoming, LoadReport, MountService, Request, Settings,
    Snapshot,
};
use crate::error::{Error, Misuse};
use crate::relay::{AppEvent, CallId, LinkSet, Node};
use crate::ring::WorkerCtx;
use crate::span::MountKey;
use crate::wire::{Command, ErrorCode, Flags};

struct Load {
    mount: MountKey,
    left: u64,
    concurrency: u32,
    in_flight: u32,
    payload: Vec<u8>,
    report: LoadReport,
    reply: Sender<LoadReport>,
    started: HashMap<CallId, (Instant, bool), Hasher>,
}

/// The daemon's application. See the module documentation.
pub struct DaemonApp {
    /// Mounts the node answers itself, echoing each payload back.
    echo: HashSet<MountKey, Hasher>,
    /// Mounts the application serves, and where their calls go.
    app_mounts: HashSet<MountKey, Hasher>,
    incoming: Option<Sender<Incoming>>,
    /// The application's calls (opened by it, or to its mounts) and where their events go.
    calls: HashMap<CallId, Sender<CallEvent>, Hasher>,
    loads: Vec<Load>,
    /// The traces opened by [`Request::Trace`].
    traces: Traces,
}

impl DaemonApp {
    /// The echo mounts of `settings`.
    fn echo_mounts(settings: &Settings) -> HashSet<MountKey, Hasher> {
        let echo = settings.mounts.iter().filter(|m| m.service == MountService::Echo);
        echo.map(|m| m.key).collect()
    }

    /// The application of a node run with `settings` (its echo mounts are those of
    /// `settings.mounts` marked so); calls to mounts a [`Handle`](super::Handle)'s user attaches
    /// go to `incoming`.
    pub fn new(settings: &Settings, incoming: Option<Sender<Incoming>>) -> DaemonApp {
        DaemonApp {
            echo: DaemonApp::echo_mounts(settings),
            app_mounts: HashSet::default(),
            incoming,
            calls: HashMap::default(),
            loads: Vec::new(),
            traces: Traces::default(),
        }
    }

    /// Answers `mount`'s calls by echoing their payload (a test attaches mounts by hand).
    #[cfg(test)]
    pub(super) fn echo(&mut self, mount: MountKey) {
        self.echo.insert(mount);
    }

    /// Its traces (a test opens and flushes them by hand).
    #[cfg(test)]
    pub(super) fn traces_mut(&mut self) -> &mut Traces {
        &mut self.traces
    }

    /// The node's application events: echo mounts answer, the application's calls get theirs,
    /// loads book their calls.
    pub(super) fn answer<L: LinkSet>(&mut self, node: &mut Node, now: Instant, links: &mut L) {
        // A call to an echo mount is answered with its payload; any other call to a mount here
        // is refused (no application serves it on this node). Both carry the call's command.
        let mut answers: Vec<(CallId, Command, Option<Vec<u8>>)> = Vec::new();
        while let Some(event) = node.poll_app() {
            match event {
                AppEvent::Message { call, payload, .. } if self.traces.has(call) => {
                    self.traces.message(call, payload, now);
                }
                AppEvent::Ended { call, error } if self.traces.has(call) => {
                    self.traces.ended(call, error);
                }
                AppEvent::Opened { call, mount, command, flags, payload } => {
                    if self.app_mounts.contains(&mount)
                        && let Some(incoming) = &self.incoming
                    {
                        let (events, rx) = std::sync::mpsc::channel();
                        let handed = incoming.send(Incoming {
                            mount,
                            command,
                            payload: payload.to_vec(),
                            last: flags.contains(Flags::DELETE),
                            call,
                            events: rx,
                        });
                        if handed.is_ok() {
                            self.calls.insert(call, events);
                            continue;
                        }
                    }
                    let echo = self.echo.contains(&mount).then(|| payload.to_vec());
                    answers.push((call, command, echo));
                }
                AppEvent::Message { call, flags, payload, command, error }
                    if self.calls.contains_key(&call) =>
                {
                    if let Some(events) = self.calls.get(&call) {
                        let _ = events.send(CallEvent::Message {
                            command,
                            payload: payload.to_vec(),
                            last: flags.contains(Flags::DELETE),
                            abort: flags.contains(Flags::ABORT),
                            error,
                        });
                    }
                }
                AppEvent::Ended { call, error } if self.calls.contains_key(&call) => {
                    if let Some(events) = self.calls.remove(&call) {
                        let _ = events.send(CallEvent::Ended(error));
                    }
                }
                AppEvent::Message { call, flags, payload, .. } => {
                    for load in &mut self.loads {
                        if let Some((_, answered)) = load.started.get_mut(&call) {
                            if !flags.contains(Flags::ABORT) {
                                *answered = true;
                                if payload != &load.payload[..] {
                                    load.report.corrupted += 1;
                                }
                            }
                            break;
                        }
                    }
                }
                AppEvent::Ended { call, error } => {
                    for load in &mut self.loads {
                        if let Some((at, _)) = load.started.remove(&call) {
                            load.in_flight -= 1;
                            match error {
                                ErrorCode::NONE => {
                                    load.report.completed += 1;
                                    load.report.first_answered.get_or_insert(now);
                                    let us = now.saturating_duration_since(at).as_micros();
                                    load.report.rtt_us.push(us.min(u128::from(u32::MAX)) as u32);
                                }
                                ErrorCode::LOST_LINK => load.report.lost_link += 1,
                                ErrorCode::NO_ROUTE => load.report.no_route += 1,
                                _ => load.report.other += 1,
                            }
                            break;
                        }
                    }
                }
            }
        }
        self.traces.abort_excess(node, links);
        for (call, command, echo) in answers {
            let _ = match echo {
                Some(payload) => {
                    node.send(call, command, &payload, Flags::DELETE, ErrorCode::NONE, links)
                }
                None => {
                    let refuse = Flags::ABORT | Flags::DELETE;
                    node.send(call, command, &[], refuse, ErrorCode::REFUSED, links)
                }
            };
        }
    }

    /// Keeps every load at its concurrency; reports the finished ones.
    fn drive_loads<L: LinkSet>(&mut self, node: &mut Node, now: Instant, links: &mut L) {
        for load in &mut self.loads {
            while load.left > 0 && load.in_flight < load.concurrency {
                load.left -= 1;
                match node.open(load.mount, CALL, &load.payload, Flags::DELETE, links) {
                    Ok(call) => {
                        load.in_flight += 1;
                        load.started.insert(call, (now, false));
                    }
                    Err(error) => {
                        match error {
                            Error::Misuse(Misuse::NoRoute) => load.report.no_route += 1,
                            error => {
                                load.report.other += 1;
                                load.report.open_error = Some(error.to_string());
                            }
                        }
                        load.report.not_sent += load.left;
                        load.left = 0;
                    }
                }
            }
        }
        let mut i = 0;
        while i < self.loads.len() {
            if self.loads[i].left == 0 && self.loads[i].in_flight == 0 {
                let load = self.loads.swap_remove(i);
                let _ = load.reply.send(load.report);
            } else {
                i += 1;
            }
        }
    }
}

impl App for DaemonApp {
    fn reload(&mut self, settings: &Settings) {
        // A configured mount's service may change; what the mount API attached stays.
        self.echo = DaemonApp::echo_mounts(settings);
    }

    fn tick(&mut self, host: &mut HostState, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        self.answer(&mut host.node, now, worker);
        self.drive_loads(&mut host.node, now, worker);
        self.answer(&mut host.node, now, worker);
        self.traces.flush(host);
    }

    fn command(
        &mut self,
        host: &mut HostState,
        worker: &mut WorkerCtx<'_>,
        command: Box<dyn Any + Send>,
    ) {
        let Ok(request) = command.downcast::<Request>() else { return };
        let node = &mut host.node;
        match *request {
            Request::Load { mount, calls, concurrency, size, reply } => {
                self.loads.push(Load {
                    mount,
                    left: calls,
                    concurrency: concurrency.max(1),
                    in_flight: 0,
                    payload: (0..size).map(|i| i as u8).collect(),
                    report: LoadReport::default(),
                    reply,
                    started: Default::default(),
                });
            }
            Request::Attach { mount, kind, label, reply } => {
                let result = node.attach(mount, kind, label, worker);
                if result.is_ok() {
                    self.app_mounts.insert(mount);
                }
                let _ = reply.send(result);
            }
            Request::Detach { mount, reply } => {
                let result = node.detach(mount, worker);
                self.app_mounts.remove(&mount);
                let _ = reply.send(result);
            }
            Request::Open { mount, command, payload, last, client, events, reply } => {
                let flags = if last { Flags::DELETE } else { Flags::NONE };
                let result = match client {
                    None => node.open(mount, command, &payload, flags, worker),
                    Some(client) => {
                        node.open_client(mount, client, command, &payload, flags, worker)
                    }
                };
                if let Ok(call) = result {
                    self.calls.insert(call, events);
                }
                let _ = reply.send(result);
            }
            Request::Cut { peer, hold } => host.cut(peer, hold, worker),
            Request::Drain => {
                tracing::info!(plane = host.plane().index, "draining: spans withdrawn");
                host.node.drain(worker);
            }
            Request::Snapshot { reply } => {
                let _ = reply.send(Snapshot::of(host, worker));
            }
            request @ Request::Trace { .. } => {
                self.traces.open(node, worker.now(), request, worker);
            }
            Request::Send { call, command, payload, flags, error } => {
                if let Err(e) = node.send(call, command, &payload, flags, error, worker) {
                    tracing::debug!(%e, "application send refused");
                }
            }
        }
    }
}
