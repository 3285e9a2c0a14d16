//! The node's configuration file, as `ringspan run --config node.toml` reads it: TOML, parsed
//! and checked here without touching anything but the file itself.
//!
//! [`NodeConfig::load`] reads the file; [`NodeConfig::parse`] checks text already read. Neither
//! opens the private key file, binds a socket or resolves a name: the daemon does that with the
//! values returned. Every refusal is a [`ConfigError`] that names the file, the line and column
//! of the offending value (when there is one) and the reason, e.g.
//! `node.toml:7:7: peer key: not valid base64 (...)`.
//!
//! The values are the node's own types (`span::Role`, `span::MountKind`, `daemon::PeerSpec`,
//! `daemon::MountSpec`, `daemon::Limits`, whose defaults are `limits.rs`'s), so
//! [`NodeConfig::settings`] hands them to the daemon as they are once the key is read. The
//! files: `raw.rs` (the TOML as serde reads it), `source.rs` (positions and single values),
//! `lists.rs` (peers, allow, client clusters, mounts) and `limits_table.rs` (`[limits]`).
//!
//! # Format
//!
//! ```toml
//! # Only [node] and its `key` are required.
//! [node]
//! # The private key file (`ringspan keygen --out node.key`). Relative paths are taken from the
//! # directory of this file, here and for `control`.
//! key = "node.key"
//! # Addresses to accept links on: IP address and port, no host names. None: the node only dials.
//! listen = ["127.0.0.1:7401", "[::1]:7401"]
//! # Engine workers, 1 to 256, each running a plane of the node (DESIGN 7c.3). Absent: one per
//! # core. A client, and a node with client_clusters, run on one for now.
//! workers = 1
//! # "router" (the default), "satellite" or "client".
//! role = "router"
//! # A Unix socket for control commands. Absent: none.
//! control = "node.sock"
//! # Where to serve metrics in the Prometheus text format. Absent: nowhere.
//! metrics = "127.0.0.1:9401"
//! # Whether a node whose key is neither a peer's nor listed in `allow` may connect. Such a
//! # key is always a client.
//! accept_unknown_keys = false
//! # Keys allowed to connect besides the peers' (base64, as `ringspan pubkey` prints them). A
//! # bare key is a client; a table grants a role ("router", "satellite" or "client").
//! allow = [
//!     "BteBEaiYoKJNlrpUJ6jod75DMNzRJ8EISy9iPr5HIrs=",
//!     { key = "K3cBnqCLpXXl5y+BUu2pHvD9UpRWfmVw2Ldz6OKq1mA=", role = "router" },
//! ]
//! # Clusters whose client mounts this node accepts from its clients (and advertises one
//! # aggregate for, each). Ids as for mounts. None: clients may call, not advertise mounts.
//! client_clusters = ["0x1"]
//!
//! # A neighbour, one table per peer. Without `address` the node accepts its links but never
//! # dials it. `name` is for logs only. `role` is the most its hello may claim: "router" (the
//! # default), "satellite" or "client".
//! [[peer]]
//! name = "b"
//! address = "127.0.0.1:7402"
//! key = "UTN4L3rO3PFCCDdgT33zWvJrYKCYE3R5v3pb0Mm4pSo="
//! role = "router"
//!
//! # A mount this node serves. `cluster` and `id` are 128-bit numbers, written as a string:
//! # hexadecimal with 0x ("0x1f"), decimal ("31") or a UUID
//! # ("3f2504e0-4f89-11d3-9a0c-0305e82c3301"); a plain TOML integer (31) is taken too.
//! [[mount]]
//! cluster = "0x1"
//! id = "0x10"
//! # "master", "slave", "soft-master", "soft-slave", "cache" or "client".
//! kind = "master"
//! # At most 64 bytes. Absent: empty.
//! label = "a/master"
//! # "echo": the node answers every transaction by sending its payload back. "none" (the
//! # default): an application attached through the mount API serves it.
//! service = "echo"
//!
//! # Timers and bounds of every link. Each value is optional; these are the defaults.
//! [limits]
//! keepalive_ms = 1000             # sends a keepalive after this long without sending
//! idle_timeout_ms = 5000          # closes a link after this long without receiving
//! handshake_timeout_ms = 10000    # gives up on a handshake after this long
//! send_queue_max_bytes = 8388608  # closes a link whose peer leaves this much unread
//! redial_min_ms = 100             # first wait before dialling a lost peer again
//! redial_max_ms = 5000            # longest wait between two dials of a lost peer
//! max_links = 1048576             # links at once, dialled and handshaking ones included
//! max_handshakes_per_sec = 2000   # handshakes started per second on accepted connections
//! trusted_handshakes_per_sec = 250  # more per second for trusted addresses only
//! reserved_links = 4096           # link slots only trusted addresses may take
//! busy_poll_us = 100              # polls this long after moving data before sleeping (0: never)
//! circuit_idle_ms = 300000        # aborts a circuit that carried nothing for this long
//! ```
//!
//! # Rules
//!
//! - Unknown keys and tables are refused, so a misspelt key is never silently ignored.
//! - Addresses are an IP address and a port; `listen` may not name one twice, and `metrics` and
//!   the peers' addresses may not be one of the listen addresses.
//! - Peer keys are 32-byte public keys in base64; no two peers share a key or a name, and at
//!   most [`limits::CONFIG_PEERS_MAX`] peers are listed. Keys in `allow` are listed once, and
//!   a key both allowed and a peer's must not be granted two different roles.
//! - Rights are bound to keys: a peer's key is granted its `role` (router by default), an
//!   `allow` entry's its `role` (client for a bare key), any other key (with
//!   `accept_unknown_keys`) client. A hello claiming more than its key's role closes the link.
//! - `client_clusters` lists at most [`limits::CLIENT_CLUSTERS_MAX`] clusters, each once.
//! - Mounts: (cluster, id) is unique, the label holds at most [`limits::SPAN_LABEL_MAX`] bytes,
//!   and at most [`limits::SPAN_MOUNTS_MAX`] mounts are listed.
//! - Limits: every duration is at least 1 ms and at most a day ([`limits::CONFIG_MILLIS_MAX`]);
//!   `idle_timeout_ms` is greater than `keepalive_ms`; `redial_min_ms` is at most
//!   `redial_max_ms`; `send_queue_max_bytes` holds at least one full record
//!   ([`limits::RECORD_WIRE_MAX`]).
//! - Admission (checked when a connection is accepted, before any handshake work; a connection
//!   past either bound is reset at once and counted in the node's snapshot; the node's own dials
//!   are never refused): `max_links` is 1 to [`limits::MAX_LINKS_PER_WORKER`] links (accepted
//!   and dialled, established or handshaking); `max_handshakes_per_sec` is 1 to 2^32 - 1, a
//!   token bucket refilled continuously that holds one second's worth, so a burst of that many
//!   is taken at once. A node runs on one worker, so both are the node's. Connections from
//!   *trusted* addresses (the configured peers' addresses, and those a key named in the
//!   configuration has linked from) may also take `reserved_links` slots strangers may not (at
//!   most half of `max_links`; none is held back while no address is trusted), and
//!   `trusted_handshakes_per_sec` more handshakes per second (1 to 2^32 - 1) when the common
//!   bucket is empty: a flood of strangers does not keep configured peers out.
//! - `busy_poll_us` is 0 to [`limits::BUSY_POLL_US_MAX`] microseconds: after a turn that moved
//!   data the node polls for more that long instead of sleeping at once (yielding the core to
//!   any other runnable thread between looks), which saves the ~20 µs a sleeping thread takes
//!   to wake at the price of the cycles polled. 0 sleeps at once.
//! - The control socket's path, once resolved, fits a Unix socket address
//!   ([`limits::CONTROL_PATH_MAX`] bytes).

mod ids;
mod limits_table;
mod lists;
mod raw;
mod source;

pub use ids::{parse_id, parse_mount};

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::cipher::{Identity, PublicKey};
use crate::daemon::{Limits, MountSpec, PeerSpec, Settings, control};
use crate::ids::ClusterId;
#[cfg(doc)]
use crate::limits;
use crate::span::Role;

use raw::RawFile;
use source::Source;

/// A node's configuration: what `ringspan run` needs to start, checked but not yet acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// The file it was read from.
    pub path: PathBuf,
    /// The private key file, relative paths resolved against the config file's directory. Not
    /// read here.
    pub key: PathBuf,
    /// Addresses to accept links on, each once. Empty: a node that only dials.
    pub listen: Vec<SocketAddr>,
    /// Engine workers, 1 to [`limits::CONFIG_WORKERS_MAX`]. `None`: one per core.
    pub workers: Option<usize>,
    /// What this node is to its neighbours.
    pub role: Role,
    /// The Unix control socket's path (relative paths resolved against the config directory).
    pub control: Option<PathBuf>,
    /// Where to serve metrics in the Prometheus text format.
    pub metrics: Option<SocketAddr>,
    /// Whether nodes with keys that are neither a peer's nor in [`NodeConfig::allow`] may
    /// connect (as clients). Default false.
    pub accept_unknown_keys: bool,
    /// Keys allowed to connect besides the peers', each with the role it is granted (the most
    /// its hello may claim to be; a bare key in `allow` is a client).
    pub allow: Vec<(PublicKey, Role)>,
    /// Clusters whose client mounts the node accepts (one aggregate each toward the core).
    pub client_clusters: Vec<ClusterId>,
    /// The neighbours this node knows, in file order.
    pub peers: Vec<Peer>,
    /// The mounts this node serves, in file order; (cluster, id) is unique.
    pub mounts: Vec<MountSpec>,
    /// Link timers and bounds.
    pub limits: Limits,
}

/// A neighbour: a node this one links to, as the node takes it, and the name the file gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// A name for logs; unique among the peers when given.
    pub name: Option<String>,
    /// Where to dial it (`None`: the node only accepts its links), its static public key
    /// (links must prove it) and the most its hello may claim to be (router by default).
    pub spec: PeerSpec,
}

/// Why a configuration was refused, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file.
    pub path: PathBuf,
    /// The 1-based line of the offending value; `None` when the fault is the whole file's (it
    /// cannot be read, or lacks `[node]`).
    pub line: Option<usize>,
    /// The 1-based column (in characters) of the offending value on that line.
    pub column: Option<usize>,
    /// What is wrong, for a person to read.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    /// `path:line:column: reason`, or `path: reason` without a line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for ConfigError {}

impl NodeConfig {
    /// Reads and checks the configuration file at `path`. Does not read the key file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            reason: format!("cannot read the configuration: {e}"),
        })?;
        NodeConfig::parse(path, &text)
    }

    /// Checks configuration `text`. `path` is where it came from: it names the file in errors,
    /// and relative paths in the file are resolved against its directory. Nothing is read.
    pub fn parse(path: &Path, text: &str) -> Result<NodeConfig, ConfigError> {
        let source = Source { path, text, dir: path.parent().unwrap_or(Path::new("")) };
        let raw: RawFile = toml::from_str(text).map_err(|e| source.toml_error(&e))?;
        let Some(node) = raw.node else {
            return Err(source.whole(
                "no [node] table: a node needs at least `[node]` with `key = \"node.key\"`",
            ));
        };
        let node_span = node.span();
        let node = node.into_inner();

        let Some(key) = &node.key else {
            return Err(source.error(
                node_span,
                "[node] has no `key`: the path of the node's private key file is required \
                 (e.g. key = \"node.key\")",
            ));
        };
        let key = source.path(key, "[node] key")?;

        let mut listen: Vec<SocketAddr> = Vec::with_capacity(node.listen.len());
        let mut listed: HashMap<SocketAddr, Range<usize>> =
            HashMap::with_capacity(node.listen.len());
        for text in &node.listen {
            let address = source.address(text, "[node] listen address")?;
            if let Some(first) = listed.insert(address, text.span()) {
                let first = source.line(first);
                return Err(source.error(
                    text.span(),
                    format!(
                        "[node] listen address {address} is listed twice (first on line {first})"
                    ),
                ));
            }
            listen.push(address);
        }

        let workers = match &node.workers {
            None => None,
            Some(value) => Some(source.workers(value)?),
        };

        let control = match &node.control {
            None => None,
            Some(value) => Some(source.control(value)?),
        };

        let metrics = match &node.metrics {
            None => None,
            Some(text) => {
                let address = source.address(text, "[node] metrics")?;
                if listen.contains(&address) {
                    return Err(source.error(
                        text.span(),
                        format!("[node] metrics address {address} is also a listen address"),
                    ));
                }
                Some(address)
            }
        };

        let peers = source.peers(&raw.peer, &listen)?;
        let allow = source.allow(&node.allow, &peers)?;
        let client_clusters = source.client_clusters(&node.client_clusters)?;
        let mounts = source.mounts(&raw.mount)?;
        let limits = source.limits(raw.limits.as_ref())?;

        Ok(NodeConfig {
            path: path.to_path_buf(),
            key,
            listen,
            workers,
            role: node.role.unwrap_or(Role::Router),
            control,
            metrics,
            accept_unknown_keys: node.accept_unknown_keys,
            allow,
            client_clusters,
            peers,
            mounts,
            limits,
        })
    }
}

impl NodeConfig {
    /// The settings a node runs with, its key pair `identity` read from [`NodeConfig::key`]:
    /// everything the file says but the key file and all listen addresses but the first (a
    /// node has one listener for now), the workers one per core when the file says none, and
    /// the control socket beside the file when none is named.
    pub fn settings(&self, identity: Identity) -> Settings {
        Settings {
            role: self.role,
            listen: self.listen.first().copied(),
            peers: self.peers.iter().map(|peer| peer.spec).collect(),
            allow: self.allow.clone(),
            accept_unknown_keys: self.accept_unknown_keys,
            client_clusters: self.client_clusters.clone(),
            mounts: self.mounts.clone(),
            limits: self.limits,
            control: Some(self.control_socket()),
            metrics: self.metrics,
            workers: self.workers.unwrap_or_else(cores),
            ..Settings::new(identity)
        }
    }

    /// The control socket's path: the one the file names, or the default beside the file.
    pub fn control_socket(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(|| control::default_socket(&self.path))
    }
}

/// The cores this process may run on: the default number of workers.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests;
