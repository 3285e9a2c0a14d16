//! The node's configuration file, as `ringspan run --config node.toml` reads it: TOML, parsed
//! and checked here without touching anything but the file itself.
//!
//! [`NodeConfig::load`] reads the file; [`NodeConfig::parse`] checks text already read. Neither
//! opens the private key file, binds a socket or resolves a name: the daemon does that with the
//! values returned. Every refusal is a [`ConfigError`] that names the file, the line and column
//! of the offending value (when there is one) and the reason, e.g.
//! `node.toml:7:7: peer key: not valid base64 (...)`.
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
//! # Engine workers, 1 to 256. Absent: one per core.
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
//! - Limits: every duration is at least 1 ms and at most a day ([`MILLIS_MAX`]);
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
//!   ([`CONTROL_PATH_MAX`] bytes).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use ringspan::cipher::PublicKey;
use ringspan::error::KeyFile;
use ringspan::limits;
use serde::Deserialize;
use toml::Spanned;

use super::ids::parse_id;

/// The most engine workers a config may ask for.
pub const WORKERS_MAX: usize = 256;

/// Default first wait before dialling a lost peer again.
pub const REDIAL_MIN_MS: u64 = 100;

/// Default longest wait between two dials of a lost peer.
pub const REDIAL_MAX_MS: u64 = 5_000;

/// The longest duration any `[limits]` entry may give: one day. Longer values are surely typos,
/// and would overflow deadline arithmetic long before they made sense.
pub const MILLIS_MAX: u64 = 86_400_000;

/// Bytes of the longest control socket path: a Unix socket address holds 108 bytes with the
/// terminating NUL.
pub const CONTROL_PATH_MAX: usize = 107;

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
    /// Engine workers, 1 to [`WORKERS_MAX`]. `None`: one per core.
    pub workers: Option<usize>,
    /// What this node is to its neighbours.
    pub role: NodeRole,
    /// The Unix control socket's path (relative paths resolved against the config directory).
    pub control: Option<PathBuf>,
    /// Where to serve metrics in the Prometheus text format.
    pub metrics: Option<SocketAddr>,
    /// Whether nodes with keys that are neither a peer's nor in [`NodeConfig::allow`] may
    /// connect (as clients). Default false.
    pub accept_unknown_keys: bool,
    /// Keys allowed to connect besides the peers', each with the role it is granted.
    pub allow: Vec<Allowed>,
    /// Clusters whose client mounts the node accepts (one aggregate each toward the core).
    pub client_clusters: Vec<u128>,
    /// The neighbours this node knows, in file order.
    pub peers: Vec<Peer>,
    /// The mounts this node serves, in file order.
    pub mounts: Vec<MountConfig>,
    /// Link timers and bounds.
    pub limits: Limits,
}

/// What a node is to its neighbours (the span table's roles).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// A relay: receives every span it wants and propagates what it learns. The default.
    #[default]
    Router,
    /// A node that serves clients; its clients' spans go no further than it.
    Satellite,
    /// An end point: what it advertises is used by its neighbour but never propagated.
    Client,
}

/// A neighbour: a node this one links to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// A name for logs; unique among the peers when given.
    pub name: Option<String>,
    /// Where to dial it. `None`: the node only accepts links from this peer, never dials it.
    pub address: Option<SocketAddr>,
    /// Its static public key: links must prove it.
    pub key: PublicKey,
    /// The most its hello may claim to be. Default router.
    pub role: NodeRole,
}

/// A key allowed to connect, and the role it is granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// The key.
    pub key: PublicKey,
    /// The most its hello may claim to be. A bare key in `allow` is a client.
    pub role: NodeRole,
}

/// A mount this node serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountConfig {
    /// The cluster (HAMMER2's `pfs_clid`).
    pub cluster: u128,
    /// The mount within the cluster (HAMMER2's `pfs_fsid`). (cluster, id) is unique.
    pub id: u128,
    /// What the mount is.
    pub kind: MountKindName,
    /// A human-readable name, at most [`limits::SPAN_LABEL_MAX`] bytes; empty by default.
    pub label: String,
    /// Who answers the transactions addressed to it.
    pub service: Service,
}

/// A mount's kind as the config names it (HAMMER2's PFS types).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MountKindName {
    /// `"master"`: a full master of the cluster.
    Master,
    /// `"slave"`: a full copy, updated from the masters.
    Slave,
    /// `"soft-master"`: a master that may run ahead of the quorum.
    SoftMaster,
    /// `"soft-slave"`: a slave that may lag.
    SoftSlave,
    /// `"cache"`: a cache of the cluster's data.
    Cache,
    /// `"client"`: uses the cluster, holds none of it.
    Client,
}

/// Who serves a mount's transactions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    /// `"echo"`: the node itself answers every transaction by sending its payload back.
    Echo,
    /// `"none"`, the default: an application attached through the mount API serves it.
    #[default]
    None,
}

/// Link timers and bounds (`[limits]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A link that sent nothing for this long sends a keepalive.
    pub keepalive_ms: u64,
    /// A link that received nothing for this long is closed. Greater than `keepalive_ms`.
    pub idle_timeout_ms: u64,
    /// A handshake not finished after this long is abandoned.
    pub handshake_timeout_ms: u64,
    /// A link with more sealed bytes than this waiting to be sent is closed.
    pub send_queue_max_bytes: usize,
    /// First wait before dialling a lost peer again.
    pub redial_min_ms: u64,
    /// Longest wait between dials of a lost peer. At least `redial_min_ms`.
    pub redial_max_ms: u64,
    /// Links held at once (accepted and dialled, established or handshaking); a connection
    /// accepted at the bound is reset before any handshake work. 1 to
    /// [`limits::MAX_LINKS_PER_WORKER`].
    pub max_links: usize,
    /// Handshakes started per second on accepted connections (a token bucket holding one
    /// second's worth); a connection accepted with no token left is reset. At least 1.
    pub max_handshakes_per_sec: u32,
    /// Handshakes per second more for trusted source addresses, when the common bucket is
    /// empty. At least 1.
    pub trusted_handshakes_per_sec: u32,
    /// Link slots only trusted source addresses may take (at most half of `max_links` counts).
    pub reserved_links: usize,
    /// Microseconds the node polls after a turn that moved data before it sleeps; 0 to
    /// [`limits::BUSY_POLL_US_MAX`], 0 = never.
    pub busy_poll_us: u64,
    /// A circuit that carries nothing for this long is aborted.
    pub circuit_idle_ms: u64,
}

impl Default for Limits {
    /// The crate's defaults ([`limits`]) and a redial from [`REDIAL_MIN_MS`] to
    /// [`REDIAL_MAX_MS`].
    fn default() -> Limits {
        Limits {
            keepalive_ms: limits::KEEPALIVE_INTERVAL_MS,
            idle_timeout_ms: limits::IDLE_TIMEOUT_MS,
            handshake_timeout_ms: limits::HANDSHAKE_TIMEOUT_MS,
            send_queue_max_bytes: limits::SEND_QUEUE_MAX_BYTES,
            redial_min_ms: REDIAL_MIN_MS,
            redial_max_ms: REDIAL_MAX_MS,
            max_links: limits::MAX_LINKS_PER_WORKER,
            max_handshakes_per_sec: limits::HANDSHAKES_PER_SEC,
            trusted_handshakes_per_sec: limits::TRUSTED_HANDSHAKES_PER_SEC,
            reserved_links: limits::RESERVED_LINKS,
            busy_poll_us: limits::BUSY_POLL_US,
            circuit_idle_ms: limits::CIRCUIT_IDLE_MS,
        }
    }
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
            role: node.role,
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

// The file as serde sees it: every value that is checked after deserialization keeps its span,
// and required keys are `Option`s so that their absence is reported with our own words.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    node: Option<Spanned<RawNode>>,
    #[serde(default)]
    peer: Vec<Spanned<RawPeer>>,
    #[serde(default)]
    mount: Vec<Spanned<RawMount>>,
    limits: Option<RawLimits>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    key: Option<Spanned<String>>,
    #[serde(default)]
    listen: Vec<Spanned<String>>,
    workers: Option<Spanned<i64>>,
    #[serde(default)]
    role: NodeRole,
    control: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    #[serde(default)]
    accept_unknown_keys: bool,
    #[serde(default)]
    allow: Vec<Spanned<RawAllow>>,
    #[serde(default)]
    client_clusters: Vec<Spanned<IdText>>,
}

/// An `allow` entry: a bare key (a client), or `{ key = "...", role = "..." }`.
enum RawAllow {
    Key(String),
    Entry { key: Option<String>, role: Option<String> },
}

impl<'de> Deserialize<'de> for RawAllow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawAllow, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawAllow;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 key, or a table { key = \"...\", role = \"...\" }")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawAllow, E> {
                Ok(RawAllow::Key(value.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawAllow, A::Error> {
                let (mut key, mut role) = (None, None);
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "key" => key = Some(map.next_value::<String>()?),
                        "role" => role = Some(map.next_value::<String>()?),
                        other => {
                            return Err(serde::de::Error::unknown_field(other, &["key", "role"]));
                        }
                    }
                }
                Ok(RawAllow::Entry { key, role })
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    role: NodeRole,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMount {
    cluster: Option<Spanned<IdText>>,
    id: Option<Spanned<IdText>>,
    kind: Option<MountKindName>,
    label: Option<Spanned<String>>,
    #[serde(default)]
    service: Service,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    keepalive_ms: Option<Spanned<i64>>,
    idle_timeout_ms: Option<Spanned<i64>>,
    handshake_timeout_ms: Option<Spanned<i64>>,
    send_queue_max_bytes: Option<Spanned<i64>>,
    redial_min_ms: Option<Spanned<i64>>,
    redial_max_ms: Option<Spanned<i64>>,
    max_links: Option<Spanned<i64>>,
    max_handshakes_per_sec: Option<Spanned<i64>>,
    trusted_handshakes_per_sec: Option<Spanned<i64>>,
    reserved_links: Option<Spanned<i64>>,
    busy_poll_us: Option<Spanned<i64>>,
    circuit_idle_ms: Option<Spanned<i64>>,
}

/// A 128-bit id as written: a TOML integer, or a string parsed by [`parse_id`].
enum IdText {
    Integer(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<IdText, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = IdText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 128-bit id: a string (\"0x1f\", \"31\" or a UUID) or an integer")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<IdText, E> {
                Ok(IdText::Integer(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<IdText, E> {
                i64::try_from(value)
                    .map(IdText::Integer)
                    .map_err(|_| E::custom("integer too large; write large ids as strings"))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<IdText, E> {
                Ok(IdText::Text(value.to_owned()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// The text being checked, for turning spans into error positions.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
    dir: &'a Path,
}

impl Source<'_> {
    /// An error about the value at `span`.
    fn error(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError {
            path: self.path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            reason: reason.into(),
        }
    }

    /// An error about the file as a whole.
    fn whole(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: None,
            column: None,
            reason: reason.into(),
        }
    }

    /// A syntax or type error found while deserializing.
    fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let mut reason = error.message().trim_end().to_owned();
        if reason == "invalid type: map, expected a sequence" {
            // The likely cause: `[peer]` or `[mount]` where `[[peer]]` or `[[mount]]` was meant.
            reason.push_str(" (each peer is a [[peer]] table and each mount a [[mount]] table)");
        }
        match error.span() {
            Some(span) => self.error(span, reason),
            None => self.whole(reason),
        }
    }

    /// The 1-based line `span` starts on.
    fn line(&self, span: Range<usize>) -> usize {
        line_column(self.text, span.start).0
    }

    fn address(&self, text: &Spanned<String>, field: &str) -> Result<SocketAddr, ConfigError> {
        text.get_ref().parse().map_err(|_| {
            self.error(
                text.span(),
                format!(
                    "{field}: {:?} is not an IP address and port (e.g. \"127.0.0.1:7401\" or \
                     \"[::1]:7401\"; host names are not resolved)",
                    text.get_ref()
                ),
            )
        })
    }

    /// A path from the file: not empty, relative ones taken from the config's directory.
    fn path(&self, text: &Spanned<String>, field: &str) -> Result<PathBuf, ConfigError> {
        let value = text.get_ref();
        if value.is_empty() {
            return Err(self.error(text.span(), format!("{field}: the path is empty")));
        }
        if value.contains('\0') {
            return Err(self.error(text.span(), format!("{field}: the path contains a NUL byte")));
        }
        let path = Path::new(value);
        Ok(if path.is_absolute() { path.to_path_buf() } else { self.dir.join(path) })
    }

    fn control(&self, text: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        let path = self.path(text, "[node] control")?;
        let len = path.as_os_str().as_bytes().len();
        if len > CONTROL_PATH_MAX {
            return Err(self.error(
                text.span(),
                format!(
                    "[node] control: the socket path {} is {len} bytes; a Unix socket path \
                     holds at most {CONTROL_PATH_MAX}",
                    path.display()
                ),
            ));
        }
        Ok(path)
    }

    fn workers(&self, value: &Spanned<i64>) -> Result<usize, ConfigError> {
        let workers = *value.get_ref();
        match usize::try_from(workers) {
            Ok(n) if (1..=WORKERS_MAX).contains(&n) => Ok(n),
            _ => Err(self.error(
                value.span(),
                format!("[node] workers must be between 1 and {WORKERS_MAX}, not {workers}"),
            )),
        }
    }

    fn public_key(&self, text: &Spanned<String>, field: &str) -> Result<PublicKey, ConfigError> {
        if text.get_ref().is_empty() {
            return Err(self.error(text.span(), format!("{field}: the key is empty")));
        }
        PublicKey::from_base64(text.get_ref().as_bytes()).map_err(|e| {
            let why = match e {
                ringspan::Error::KeyFile(KeyFile::Encoding) => {
                    "not valid base64 (expected the 44 characters `ringspan pubkey` prints)"
                        .to_owned()
                }
                ringspan::Error::KeyFile(KeyFile::Length(n)) => {
                    format!("the base64 decodes to {n} bytes; a public key has 32")
                }
                other => other.to_string(),
            };
            self.error(text.span(), format!("{field}: {why}"))
        })
    }

    fn peers(
        &self,
        raw: &[Spanned<RawPeer>],
        listen: &[SocketAddr],
    ) -> Result<Vec<Peer>, ConfigError> {
        if let Some(extra) = raw.get(limits::CONFIG_PEERS_MAX) {
            return Err(self.error(
                extra.span(),
                format!(
                    "more than {} peers: a node has at most that many neighbours",
                    limits::CONFIG_PEERS_MAX
                ),
            ));
        }
        let mut peers = Vec::with_capacity(raw.len());
        // First occurrences are kept as spans: their lines are counted only for an error.
        let mut keys: HashMap<PublicKey, Range<usize>> = HashMap::with_capacity(raw.len());
        let mut names: HashMap<&str, Range<usize>> = HashMap::new();
        for peer in raw {
            let span = peer.span();
            let peer = peer.get_ref();
            let Some(key_text) = &peer.key else {
                return Err(self.error(
                    span,
                    "[[peer]] has no `key`: every peer needs its base64 public key \
                     (`ringspan pubkey` prints it)",
                ));
            };
            let key = self.public_key(key_text, "peer key")?;
            if let Some(first) = keys.insert(key, key_text.span()) {
                let first = self.line(first);
                return Err(self.error(
                    key_text.span(),
                    format!("peer key {key} is also the key of the peer on line {first}"),
                ));
            }
            if let Some(name) = &peer.name
                && let Some(first) = names.insert(name.get_ref(), name.span())
            {
                let first = self.line(first);
                return Err(self.error(
                    name.span(),
                    format!(
                        "peer name {:?} is also the name of the peer on line {first}",
                        name.get_ref()
                    ),
                ));
            }
            let address = match &peer.address {
                None => None,
                Some(text) => {
                    let address = self.address(text, "peer address")?;
                    if listen.contains(&address) {
                        return Err(self.error(
                            text.span(),
                            format!(
                                "peer address {address} is one of this node's listen \
                                 addresses: the node would dial itself"
                            ),
                        ));
                    }
                    Some(address)
                }
            };
            let name = peer.name.as_ref().map(|name| name.get_ref().clone());
            peers.push(Peer { name, address, key, role: peer.role });
        }
        Ok(peers)
    }

    /// The `allow` list: each key once, with its role, not granted otherwise as a peer.
    fn allow(
        &self,
        raw: &[Spanned<RawAllow>],
        peers: &[Peer],
    ) -> Result<Vec<Allowed>, ConfigError> {
        let mut allow = Vec::with_capacity(raw.len());
        let mut seen: HashMap<PublicKey, Range<usize>> = HashMap::with_capacity(raw.len());
        for entry in raw {
            let span = entry.span();
            let (text, role) = match entry.get_ref() {
                RawAllow::Key(text) => (text, NodeRole::Client),
                RawAllow::Entry { key: None, .. } => {
                    return Err(self.error(span, "[node] allow: an entry has no `key`"));
                }
                RawAllow::Entry { key: Some(text), role } => {
                    let role = match role.as_deref() {
                        None | Some("client") => NodeRole::Client,
                        Some("router") => NodeRole::Router,
                        Some("satellite") => NodeRole::Satellite,
                        Some(other) => {
                            return Err(self.error(
                                span,
                                format!(
                                    "[node] allow: unknown role {other:?} (\"router\", \
                                     \"satellite\" or \"client\")"
                                ),
                            ));
                        }
                    };
                    (text, role)
                }
            };
            let key = self.public_key(&Spanned::new(span.clone(), text.clone()), "[node] allow")?;
            if let Some(first) = seen.insert(key, span.clone()) {
                let first = self.line(first);
                return Err(self.error(
                    span,
                    format!("[node] allow: key {key} is listed twice (first on line {first})"),
                ));
            }
            if let Some(peer) = peers.iter().find(|p| p.key == key && p.role != role) {
                return Err(self.error(
                    span,
                    format!(
                        "[node] allow: key {key} is granted {role:?} here but {:?} as a peer",
                        peer.role
                    ),
                ));
            }
            allow.push(Allowed { key, role });
        }
        Ok(allow)
    }

    /// `client_clusters`: each id once, at most [`limits::CLIENT_CLUSTERS_MAX`].
    fn client_clusters(&self, raw: &[Spanned<IdText>]) -> Result<Vec<u128>, ConfigError> {
        if let Some(extra) = raw.get(limits::CLIENT_CLUSTERS_MAX) {
            return Err(self.error(
                extra.span(),
                format!(
                    "[node] client_clusters: more than {} clusters (each is an aggregate the \
                     core carries for this node)",
                    limits::CLIENT_CLUSTERS_MAX
                ),
            ));
        }
        let mut clusters: Vec<u128> = Vec::with_capacity(raw.len());
        for value in raw {
            let cluster = self.id(value, "[node] client_clusters")?;
            if clusters.contains(&cluster) {
                return Err(self.error(
                    value.span(),
                    format!("[node] client_clusters: cluster {cluster:#x} is listed twice"),
                ));
            }
            clusters.push(cluster);
        }
        Ok(clusters)
    }

    fn id(&self, value: &Spanned<IdText>, field: &str) -> Result<u128, ConfigError> {
        let parsed = match value.get_ref() {
            IdText::Integer(n) => u128::try_from(*n).map_err(|_| format!("{n} is negative")),
            IdText::Text(text) => parse_id(text),
        };
        parsed.map_err(|why| self.error(value.span(), format!("{field}: {why}")))
    }

    fn mounts(&self, raw: &[Spanned<RawMount>]) -> Result<Vec<MountConfig>, ConfigError> {
        if let Some(extra) = raw.get(limits::SPAN_MOUNTS_MAX) {
            return Err(self.error(
                extra.span(),
                format!(
                    "more than {} mounts: a node's span table holds at most that many",
                    limits::SPAN_MOUNTS_MAX
                ),
            ));
        }
        let mut mounts = Vec::with_capacity(raw.len());
        let mut seen: HashMap<(u128, u128), Range<usize>> = HashMap::with_capacity(raw.len());
        for mount in raw {
            let span = mount.span();
            let mount = mount.get_ref();
            let missing = |key: &str, what: &str| {
                self.error(span.clone(), format!("[[mount]] has no `{key}`: {what}"))
            };
            let Some(cluster) = &mount.cluster else {
                return Err(missing("cluster", "the id of the mount's cluster is required"));
            };
            let Some(id) = &mount.id else {
                return Err(missing("id", "the mount's id within its cluster is required"));
            };
            let Some(kind) = mount.kind else {
                return Err(missing(
                    "kind",
                    "one of \"master\", \"slave\", \"soft-master\", \"soft-slave\", \"cache\", \
                     \"client\" is required",
                ));
            };
            let cluster_value = self.id(cluster, "mount cluster")?;
            let id_value = self.id(id, "mount id")?;
            if let Some(first) = seen.insert((cluster_value, id_value), span.clone()) {
                let first = self.line(first);
                return Err(self.error(
                    id.span(),
                    format!(
                        "mount cluster {cluster_value:#x} id {id_value:#x} is also the mount on \
                         line {first}"
                    ),
                ));
            }
            let label = match &mount.label {
                None => String::new(),
                Some(label) => {
                    let len = label.get_ref().len();
                    if len > limits::SPAN_LABEL_MAX {
                        return Err(self.error(
                            label.span(),
                            format!(
                                "mount label is {len} bytes; at most {} are allowed",
                                limits::SPAN_LABEL_MAX
                            ),
                        ));
                    }
                    label.get_ref().clone()
                }
            };
            mounts.push(MountConfig {
                cluster: cluster_value,
                id: id_value,
                kind,
                label,
                service: mount.service,
            });
        }
        Ok(mounts)
    }

    fn limits(&self, raw: Option<&RawLimits>) -> Result<Limits, ConfigError> {
        let defaults = Limits::default();
        let Some(raw) = raw else {
            return Ok(defaults);
        };
        let keepalive = self.millis(&raw.keepalive_ms, "keepalive_ms", defaults.keepalive_ms)?;
        let idle =
            self.millis(&raw.idle_timeout_ms, "idle_timeout_ms", defaults.idle_timeout_ms)?;
        let handshake = self.millis(
            &raw.handshake_timeout_ms,
            "handshake_timeout_ms",
            defaults.handshake_timeout_ms,
        )?;
        let redial_min =
            self.millis(&raw.redial_min_ms, "redial_min_ms", defaults.redial_min_ms)?;
        let redial_max =
            self.millis(&raw.redial_max_ms, "redial_max_ms", defaults.redial_max_ms)?;
        let send_queue = match &raw.send_queue_max_bytes {
            None => defaults.send_queue_max_bytes,
            Some(value) => {
                let bytes = *value.get_ref();
                // On the 64-bit targets the engine runs on, only a negative value fails to
                // convert.
                match usize::try_from(bytes) {
                    Ok(n) if n >= limits::RECORD_WIRE_MAX => n,
                    _ => {
                        return Err(self.error(
                            value.span(),
                            format!(
                                "limits.send_queue_max_bytes must be at least {} (one full \
                                 record), not {bytes}",
                                limits::RECORD_WIRE_MAX
                            ),
                        ));
                    }
                }
            }
        };

        let max_links = match &raw.max_links {
            None => defaults.max_links,
            Some(value) => {
                let max = limits::MAX_LINKS_PER_WORKER as u64;
                self.count(value, "max_links", max)? as usize
            }
        };
        let max_handshakes_per_sec = match &raw.max_handshakes_per_sec {
            None => defaults.max_handshakes_per_sec,
            Some(value) => {
                let rate = self.count(value, "max_handshakes_per_sec", u64::from(u32::MAX))?;
                // At most u32::MAX, so the conversion cannot fail.
                u32::try_from(rate).unwrap_or(u32::MAX)
            }
        };
        let trusted_handshakes_per_sec = match &raw.trusted_handshakes_per_sec {
            None => defaults.trusted_handshakes_per_sec,
            Some(value) => {
                let rate = self.count(value, "trusted_handshakes_per_sec", u64::from(u32::MAX))?;
                // At most u32::MAX, so the conversion cannot fail.
                u32::try_from(rate).unwrap_or(u32::MAX)
            }
        };
        let reserved_links = match &raw.reserved_links {
            None => defaults.reserved_links,
            Some(value) => {
                let n = *value.get_ref();
                match usize::try_from(n) {
                    Ok(n) if n <= limits::MAX_LINKS_PER_WORKER => n,
                    _ => {
                        return Err(self.error(
                            value.span(),
                            format!(
                                "limits.reserved_links must be between 0 and {}, not {n}",
                                limits::MAX_LINKS_PER_WORKER
                            ),
                        ));
                    }
                }
            }
        };
        let busy_poll_us = match &raw.busy_poll_us {
            None => defaults.busy_poll_us,
            Some(value) => {
                let n = *value.get_ref();
                match u64::try_from(n) {
                    Ok(n) if n <= limits::BUSY_POLL_US_MAX => n,
                    _ => {
                        return Err(self.error(
                            value.span(),
                            format!(
                                "limits.busy_poll_us must be between 0 and {}, not {n}",
                                limits::BUSY_POLL_US_MAX
                            ),
                        ));
                    }
                }
            }
        };

        let circuit_idle =
            self.millis(&raw.circuit_idle_ms, "circuit_idle_ms", defaults.circuit_idle_ms)?;
        if idle.0 <= keepalive.0 {
            let span = idle.1.clone().or_else(|| keepalive.1.clone()).unwrap_or(0..0);
            return Err(self.error(
                span,
                format!(
                    "limits.idle_timeout_ms ({}) must be greater than limits.keepalive_ms ({}): \
                     links would be closed as idle before they send a keepalive",
                    shown(&idle),
                    shown(&keepalive)
                ),
            ));
        }
        if redial_min.0 > redial_max.0 {
            let span = redial_min.1.clone().or_else(|| redial_max.1.clone()).unwrap_or(0..0);
            return Err(self.error(
                span,
                format!(
                    "limits.redial_min_ms ({}) must not be greater than limits.redial_max_ms ({})",
                    shown(&redial_min),
                    shown(&redial_max)
                ),
            ));
        }
        Ok(Limits {
            keepalive_ms: keepalive.0,
            idle_timeout_ms: idle.0,
            handshake_timeout_ms: handshake.0,
            send_queue_max_bytes: send_queue,
            redial_min_ms: redial_min.0,
            redial_max_ms: redial_max.0,
            max_links,
            max_handshakes_per_sec,
            trusted_handshakes_per_sec,
            reserved_links,
            busy_poll_us,
            circuit_idle_ms: circuit_idle.0,
        })
    }

    /// A count from 1 to `max`.
    fn count(&self, value: &Spanned<i64>, field: &str, max: u64) -> Result<u64, ConfigError> {
        let n = *value.get_ref();
        match u64::try_from(n) {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(self.error(
                value.span(),
                format!("limits.{field} must be between 1 and {max}, not {n}"),
            )),
        }
    }

    /// A duration in milliseconds, 1 to [`MILLIS_MAX`], with the span it was written at (`None`:
    /// the default).
    fn millis(
        &self,
        value: &Option<Spanned<i64>>,
        field: &str,
        default: u64,
    ) -> Result<(u64, Option<Range<usize>>), ConfigError> {
        let Some(value) = value else {
            return Ok((default, None));
        };
        let ms = *value.get_ref();
        if ms <= 0 {
            return Err(self
                .error(value.span(), format!("limits.{field} must be greater than 0, not {ms}")));
        }
        match u64::try_from(ms) {
            Ok(ms) if ms <= MILLIS_MAX => Ok((ms, Some(value.span()))),
            _ => Err(self.error(
                value.span(),
                format!("limits.{field} is {ms}, more than one day ({MILLIS_MAX} ms)"),
            )),
        }
    }
}

/// A limit's value for a message, marked when it is the default.
fn shown(value: &(u64, Option<Range<usize>>)) -> String {
    match value.1 {
        Some(_) => value.0.to_string(),
        None => format!("{}, the default", value.0),
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`. An offset inside a
/// character counts that character; one past the end gives the position after the last.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

#[cfg(test)]
mod tests;
