//! A relay node on the engine, and the node as a library.
//!
//! - [`Host`] (`host.rs`): the one engine service hosting a relay node and an application
//!   ([`App`]), built from [`Settings`]: configured peers kept dialled, rights bound to keys,
//!   closes counted, keepalive notices, configured mounts. The daemon, the demo and the
//!   benchmarks (`ringspan-bench hops`) each run one.
//! - [`DaemonApp`] (`app.rs`): the daemon's application: the built-in echo mounts, call loads
//!   for clients, the mount API's calls, and a [`Snapshot`] for `ringspan show` and the metrics
//!   endpoint when one is asked for (nothing is walked while nobody asks).
//! - [`Handle`] (`handle.rs`): a `Host<DaemonApp>` on an engine thread of its own, and the
//!   mount API; [`Settings`], [`Limits`], [`PeerSpec`], [`MountSpec`]: how a node is set up.
//! - [`config`]: the configuration file `ringspan run` reads, parsed and checked into those
//!   (`NodeConfig::settings`), and ids as operators write them.
//! - [`Request`], [`Shared`] (`request.rs`): how other threads reach it; [`Snapshot`]
//!   (`snapshot.rs`); the control socket and the metrics endpoint ([`control`]).
//!
//! A node runs a plane per worker ([`Plane`]; DESIGN 7c.3): each plane's links, span table and
//! circuits share one core, and planes hand each other what crosses through internal links,
//! batched per turn, never per message (a wake-up costs ~20 µs on this machine).

mod app;
pub mod config;
pub mod control;
mod handle;
mod host;
mod metrics;
mod planes;
mod refusals;
mod reload;
mod render;
mod request;
mod resolve;
mod snapshot;
#[cfg(test)]
mod tests;
mod trace;

pub use app::DaemonApp;
pub use handle::{Call, CallEvent, Handle, Incoming, Limits, PeerSpec, Settings};
pub use host::{App, Host, HostState, Plane};
pub use reload::{ReloadReport, ReloadSource};
pub use request::{LoadReport, Request, Shared};
pub use snapshot::{
    Closes, Counters, Holder, LinkRow, PeerRow, Refusals, RouteRow, Snapshot, WorkerRow,
};
pub use trace::TraceEvent;

use crate::span::{Label, MountKey, MountKind};
use crate::wire::Command;

/// The command ringspan's own calls use (`ringspan call`, the loads, the demos).
pub const CALL: Command = Command::new(1, 1);

/// A mount the node attaches at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Its identity.
    pub key: MountKey,
    /// Its kind.
    pub kind: MountKind,
    /// Its label.
    pub label: Label,
    /// Who answers its calls.
    pub service: MountService,
}

/// Who answers a mount's calls (`[[mount]] service` in the configuration, which deserializes
/// straight into this).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub enum MountService {
    /// `"echo"`: the node itself, sending each payload back.
    #[serde(rename = "echo")]
    Echo,
    /// `"none"`, the default: an application attached through the mount API serves it (with
    /// none attached, its calls are refused).
    #[default]
    #[serde(rename = "none")]
    App,
}
