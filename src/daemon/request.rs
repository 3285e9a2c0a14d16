//! How other threads reach a node running on its engine worker: the requests they send it
//! (`Engine::send(0, Command::Service(Box::new(request)))`), the report of a call load, and
//! [`Shared`], through which the control socket, the metrics endpoint and the mount API ask for
//! snapshots.

use std::sync::OnceLock;
use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::Serialize;

use crate::ids::NodeId;
use crate::relay::CallId;
use crate::ring::Remote;
use crate::span::{Label, MountKey, MountKind};
use crate::wire::{Command, ErrorCode, Flags};

#[cfg(doc)]
use super::Incoming;
use super::{CallEvent, Snapshot, TraceEvent};

/// How long a thread asking for a snapshot waits for the node's worker.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(2);

/// A request from another thread, sent with `Engine::send(0, Command::Service(Box::new(..)))`.
pub enum Request {
    /// Open `calls` calls to `mount`, `concurrency` at a time, each a one-shot request of
    /// `size` bytes answered by the mount, and report when all have ended.
    Load {
        /// The mount.
        mount: MountKey,
        /// Calls to make.
        calls: u64,
        /// Calls in flight at once.
        concurrency: u32,
        /// Payload bytes.
        size: usize,
        /// Where the report goes.
        reply: Sender<LoadReport>,
    },
    /// Attach a mount served by the application (its calls arrive as [`Incoming`]).
    Attach {
        /// The mount.
        mount: MountKey,
        /// Its kind.
        kind: MountKind,
        /// Its label.
        label: Label,
        /// The outcome.
        reply: Sender<Result<(), crate::Error>>,
    },
    /// Detach a mount attached by the application.
    Detach {
        /// The mount.
        mount: MountKey,
        /// The outcome.
        reply: Sender<Result<(), crate::Error>>,
    },
    /// Open a call to a mount for the application.
    Open {
        /// The mount.
        mount: MountKey,
        /// The command.
        command: Command,
        /// The first payload.
        payload: Vec<u8>,
        /// Close our direction at once (a one-shot request).
        last: bool,
        /// With `Some(client)`, `mount` is a satellite's aggregate and the call is for its client
        /// mount `client`.
        client: Option<crate::ids::MountId>,
        /// Where the call's events go.
        events: Sender<CallEvent>,
        /// The call, or why it could not be opened.
        reply: Sender<Result<CallId, crate::Error>>,
    },
    /// Cut the links to the peer with node id `peer` (no notice: as a failure looks) and do not
    /// redial it for `hold`.
    Cut {
        /// The peer.
        peer: NodeId,
        /// How long to leave it cut.
        hold: Duration,
    },
    /// Start draining the node: withdraw its spans, carry its circuits to their end
    /// (`relay::Node::drain`).
    Drain,
    /// Build a snapshot of the node and send it back.
    Snapshot {
        /// Where it goes.
        reply: Sender<Snapshot>,
    },
    /// Trace the path a call to `mount` takes (PROTOCOL.md 8.10): each node on it reports,
    /// timed from the open; the reports and the trace's end go to `events` as they come.
    Trace {
        /// The mount.
        mount: MountKey,
        /// A node at which to end the trace if it is on the path (`None`: at the mount's holder).
        target: Option<NodeId>,
        /// The hop at which the trace ends at the latest (1 to `TRACE_HOPS_MAX`).
        limit: u8,
        /// Where its reports and its end go.
        events: Sender<TraceEvent>,
    },
    /// Send on an application's call.
    Send {
        /// The call.
        call: CallId,
        /// The command.
        command: Command,
        /// The payload.
        payload: Vec<u8>,
        /// DELETE (our last), ABORT, or both (force-close).
        flags: Flags,
        /// The error code.
        error: ErrorCode,
    },
}

/// The outcome of a [`Request::Load`].
#[derive(Clone, Debug, Default, Serialize)]
pub struct LoadReport {
    /// Calls answered.
    pub completed: u64,
    /// Calls ended by a lost link.
    pub lost_link: u64,
    /// Calls refused for lack of a route (at open or on the way).
    pub no_route: u64,
    /// Calls ended by another error.
    pub other: u64,
    /// Answers whose payload differed from the request.
    pub corrupted: u64,
    /// Calls not attempted: the load stops at the first call it cannot open (that one is
    /// counted in `no_route`, or in `other` with `open_error`).
    pub not_sent: u64,
    /// Round-trip times of answered calls, microseconds.
    #[serde(skip)]
    pub rtt_us: Vec<u32>,
    /// Why the load stopped at a call it could not open, if it did for another reason than
    /// no route (a payload too large, the node's share of circuits used up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_error: Option<String>,
    /// When the first call was answered (the node's turn time).
    #[serde(skip)]
    pub first_answered: Option<std::time::Instant>,
}

/// How other threads (the control socket, the metrics endpoint, the mount API) reach a node for
/// its snapshot.
#[derive(Default)]
pub struct Shared {
    /// The worker of each plane of the node.
    pub(super) node: OnceLock<Vec<Remote>>,
    /// The settings it runs with, for a reload to compare (`reload.rs`).
    pub(super) running: std::sync::Mutex<Option<super::reload::Running>>,
    /// Where a reload re-reads them from (`ringspan run`'s file).
    pub(super) reload_source: std::sync::Mutex<Option<super::ReloadSource>>,
    /// What it answers when no node is connected (tests of the surfaces).
    fixed: Option<Snapshot>,
    /// The node's process stops on SIGTERM after draining (`Handle::run_until_signal`): a drain
    /// asked over the control socket is that signal.
    stops_on_signal: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("started", &self.node.get().is_some()).finish()
    }
}

impl Shared {
    /// Answers `snapshot` with this until a node is connected: for testing what the control
    /// socket and the metrics endpoint make of a snapshot.
    pub fn fixed(snapshot: Snapshot) -> Shared {
        Shared { fixed: Some(snapshot), ..Shared::default() }
    }

    /// Whether a node is connected (or a fixed snapshot stands in for one): before that, a
    /// snapshot would be an empty one, which says nothing true of the node.
    pub fn started(&self) -> bool {
        self.node.get().is_some() || self.fixed.is_some()
    }

    /// Tells every plane to drain (`relay::Node::drain`).
    pub fn drain(&self) {
        for plane in self.node.get().into_iter().flatten() {
            let _ = plane.send(crate::ring::Command::Service(Box::new(Request::Drain)));
        }
    }

    /// Says that the node's process drains and stops on SIGTERM ([`Shared::drain_and_stop`]).
    pub fn stop_on_signal(&self) {
        self.stops_on_signal.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Asks the node to drain and then stop, as SIGTERM does, when its process stops on that
    /// signal; otherwise (a node inside an application) only to drain. Whether it will stop.
    pub fn drain_and_stop(&self) -> bool {
        if self.stops_on_signal.load(std::sync::atomic::Ordering::Relaxed) {
            // The signal's own path: the thread waiting for it drains, then stops the node.
            signal_hook::low_level::raise(signal_hook::consts::SIGTERM).is_ok()
        } else {
            self.drain();
            false
        }
    }

    /// Connects the node's workers (one per plane), once they run.
    pub fn connect(&self, planes: Vec<Remote>) {
        let _ = self.node.set(planes);
    }

    /// A snapshot of the node now, each plane's built by its worker (waiting up to 2 s for
    /// them) and merged ([`Snapshot::merge`]); an empty one if the node is not running.
    pub fn snapshot(&self) -> Snapshot {
        let Some(planes) = self.node.get() else { return self.fixed.clone().unwrap_or_default() };
        let (reply, answer) = std::sync::mpsc::channel();
        let mut asked = 0;
        for plane in planes {
            let request = Request::Snapshot { reply: reply.clone() };
            if plane.send(crate::ring::Command::Service(Box::new(request))).is_ok() {
                asked += 1;
            }
        }
        drop(reply);
        #[allow(clippy::disallowed_methods)] // a thread outside the protocol layers
        let deadline = std::time::Instant::now() + SNAPSHOT_WAIT;
        let mut parts = Vec::with_capacity(asked);
        while parts.len() < asked {
            #[allow(clippy::disallowed_methods)]
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match answer.recv_timeout(left) {
                Ok(part) => parts.push(part),
                Err(_) => return Snapshot::default(),
            }
        }
        Snapshot::merge(parts)
    }
}
