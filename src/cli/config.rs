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
//! # Whether a node whose key is neither a peer's nor listed in `allow` may connect.
//! accept_unknown_keys = false
//! # Keys allowed to connect besides the peers' (base64, as `ringspan pubkey` prints them).
//! allow = ["BteBEaiYoKJNlrpUJ6jod75DMNzRJ8EISy9iPr5HIrs="]
//!
//! # A neighbour, one table per peer. Without `address` the node accepts its links but never
//! # dials it. `name` is for logs only.
//! [[peer]]
//! name = "b"
//! address = "127.0.0.1:7402"
//! key = "UTN4L3rO3PFCCDdgT33zWvJrYKCYE3R5v3pb0Mm4pSo="
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
//! busy_poll_us = 100              # polls this long after moving data before sleeping (0: never)
//! ```
//!
//! # Rules
//!
//! - Unknown keys and tables are refused, so a misspelt key is never silently ignored.
//! - Addresses are an IP address and a port; `listen` may not name one twice, and `metrics` and
//!   the peers' addresses may not be one of the listen addresses.
//! - Peer keys are 32-byte public keys in base64; no two peers share a key or a name, and at
//!   most [`limits::CONFIG_PEERS_MAX`] peers are listed. Keys in `allow` are listed once.
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
//!   is taken at once. A node runs on one worker, so both are the node's.
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
    /// connect. Default false.
    pub accept_unknown_keys: bool,
    /// Keys allowed to connect besides the peers'.
    pub allow: Vec<PublicKey>,
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
    /// Microseconds the node polls after a turn that moved data before it sleeps; 0 to
    /// [`limits::BUSY_POLL_US_MAX`], 0 = never.
    pub busy_poll_us: u64,
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
            busy_poll_us: limits::BUSY_POLL_US,
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

        let mut allow = Vec::with_capacity(node.allow.len());
        let mut allowed: HashMap<PublicKey, Range<usize>> =
            HashMap::with_capacity(node.allow.len());
        for text in &node.allow {
            let key = source.public_key(text, "[node] allow")?;
            if let Some(first) = allowed.insert(key, text.span()) {
                let first = source.line(first);
                return Err(source.error(
                    text.span(),
                    format!("[node] allow: key {key} is listed twice (first on line {first})"),
                ));
            }
            allow.push(key);
        }

        let peers = source.peers(&raw.peer, &listen)?;
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
    allow: Vec<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPeer {
    name: Option<Spanned<String>>,
    address: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
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
    busy_poll_us: Option<Spanned<i64>>,
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

/// Parses a 128-bit id: `0x` and hexadecimal digits, decimal digits, or a UUID
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, read as one big-endian number). Command-line ids
/// (`ringspan bench clients --mount-cluster`) are read the same way.
pub fn parse_id(text: &str) -> Result<u128, String> {
    const HOW: &str = "write hexadecimal with 0x (\"0x1f\"), decimal (\"31\") or a UUID \
                       (\"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\")";
    let too_large = |_| format!("{text:?} does not fit in 128 bits");
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{text:?} is not a hexadecimal number; {HOW}"));
        }
        // Only digits were let through, so the one possible failure is overflow.
        return u128::from_str_radix(hex, 16).map_err(too_large);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u128>().map_err(too_large);
    }
    let bytes = text.as_bytes();
    let is_uuid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if is_uuid {
        let digits: String = text.chars().filter(|&c| c != '-').collect();
        // 32 hexadecimal digits: always fits.
        return u128::from_str_radix(&digits, 16).map_err(too_large);
    }
    Err(format!("{text:?} is not a number; {HOW}"))
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
            peers.push(Peer { name, address, key });
        }
        Ok(peers)
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
            busy_poll_us,
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
mod tests {
    use super::*;

    use proptest::prelude::*;

    /// Where the test configs claim to live.
    const CONFIG: &str = "/etc/ringspan/node.toml";

    /// The smallest valid config.
    const MINIMAL: &str = "[node]\nkey = \"node.key\"\n";

    fn key(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn b64(n: u8) -> String {
        key(n).to_base64()
    }

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(Path::new(CONFIG), text)
    }

    /// Parses `text`, expecting a refusal on `line` whose reason contains `reason`.
    #[track_caller]
    fn refused(text: &str, line: usize, reason: &str) -> ConfigError {
        let error = match parse(text) {
            Ok(config) => panic!("accepted: {config:?}\n{text}"),
            Err(error) => error,
        };
        assert_eq!(error.line, Some(line), "{error}");
        assert!(error.column.is_some(), "{error}");
        assert!(error.reason.contains(reason), "{error:?} lacks {reason:?}");
        assert_eq!(error.path, Path::new(CONFIG));
        error
    }

    /// The TOML example of the module documentation.
    fn doc_example() -> String {
        let mut example = String::new();
        let mut inside = false;
        for line in include_str!("config.rs").lines().take_while(|l| l.starts_with("//!")) {
            let line = line.strip_prefix("//!").unwrap_or(line);
            let line = line.strip_prefix(' ').unwrap_or(line);
            match (inside, line) {
                (false, "```toml") => inside = true,
                (true, "```") => break,
                (true, _) => {
                    example.push_str(line);
                    example.push('\n');
                }
                (false, _) => {}
            }
        }
        assert!(example.contains("[node]"), "no example found in the module documentation");
        example
    }

    #[test]
    fn the_documented_example_parses_to_its_values() {
        let config = parse(&doc_example()).unwrap();
        let expected = NodeConfig {
            path: PathBuf::from(CONFIG),
            key: PathBuf::from("/etc/ringspan/node.key"),
            listen: vec!["127.0.0.1:7401".parse().unwrap(), "[::1]:7401".parse().unwrap()],
            workers: Some(1),
            role: NodeRole::Router,
            control: Some(PathBuf::from("/etc/ringspan/node.sock")),
            metrics: Some("127.0.0.1:9401".parse().unwrap()),
            accept_unknown_keys: false,
            allow: vec![
                PublicKey::from_base64(b"BteBEaiYoKJNlrpUJ6jod75DMNzRJ8EISy9iPr5HIrs=").unwrap(),
            ],
            peers: vec![Peer {
                name: Some("b".to_owned()),
                address: Some("127.0.0.1:7402".parse().unwrap()),
                key: PublicKey::from_base64(b"UTN4L3rO3PFCCDdgT33zWvJrYKCYE3R5v3pb0Mm4pSo=")
                    .unwrap(),
            }],
            mounts: vec![MountConfig {
                cluster: 1,
                id: 0x10,
                kind: MountKindName::Master,
                label: "a/master".to_owned(),
                service: Service::Echo,
            }],
            limits: Limits::default(),
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn a_full_config_parses_to_its_values() {
        let text = format!(
            r#"[node]
key = "/var/lib/ringspan/a.key"
listen = ["0.0.0.0:7401", "[::]:7401"]
workers = 4
role = "satellite"
control = "run/a.sock"
metrics = "[::1]:9401"
accept_unknown_keys = true
allow = ["{k3}", "{k4}"]

[[peer]]
name = "b"
address = "10.0.0.2:7401"
key = "{k1}"

[[peer]]
key = "{k2}"

[[mount]]
cluster = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
id = "42"
kind = "soft-slave"
label = "pfs/home"

[[mount]]
cluster = 7
id = "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
kind = "client"
service = "none"

[limits]
keepalive_ms = 250
idle_timeout_ms = 1000
handshake_timeout_ms = 3000
send_queue_max_bytes = 1048576
redial_min_ms = 50
redial_max_ms = 50
max_links = 20000
max_handshakes_per_sec = 150
busy_poll_us = 0
"#,
            k1 = b64(1),
            k2 = b64(2),
            k3 = b64(3),
            k4 = b64(4),
        );
        let config = parse(&text).unwrap();
        assert_eq!(config.key, Path::new("/var/lib/ringspan/a.key"));
        assert_eq!(
            config.listen,
            ["0.0.0.0:7401".parse::<SocketAddr>().unwrap(), "[::]:7401".parse().unwrap()]
        );
        assert_eq!(config.workers, Some(4));
        assert_eq!(config.role, NodeRole::Satellite);
        assert_eq!(config.control, Some(PathBuf::from("/etc/ringspan/run/a.sock")));
        assert_eq!(config.metrics, Some("[::1]:9401".parse().unwrap()));
        assert!(config.accept_unknown_keys);
        assert_eq!(config.allow, [key(3), key(4)]);
        assert_eq!(
            config.peers,
            [
                Peer {
                    name: Some("b".to_owned()),
                    address: Some("10.0.0.2:7401".parse().unwrap()),
                    key: key(1),
                },
                Peer { name: None, address: None, key: key(2) },
            ]
        );
        assert_eq!(
            config.mounts,
            [
                MountConfig {
                    cluster: 0x3f2504e0_4f89_11d3_9a0c_0305e82c3301,
                    id: 42,
                    kind: MountKindName::SoftSlave,
                    label: "pfs/home".to_owned(),
                    service: Service::None,
                },
                MountConfig {
                    cluster: 7,
                    id: u128::MAX,
                    kind: MountKindName::Client,
                    label: String::new(),
                    service: Service::None,
                },
            ]
        );
        assert_eq!(
            config.limits,
            Limits {
                keepalive_ms: 250,
                idle_timeout_ms: 1000,
                handshake_timeout_ms: 3000,
                send_queue_max_bytes: 1 << 20,
                redial_min_ms: 50,
                redial_max_ms: 50,
                max_links: 20_000,
                max_handshakes_per_sec: 150,
                busy_poll_us: 0,
            }
        );
    }

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let config = parse(MINIMAL).unwrap();
        assert_eq!(
            config,
            NodeConfig {
                path: PathBuf::from(CONFIG),
                key: PathBuf::from("/etc/ringspan/node.key"),
                listen: vec![],
                workers: None,
                role: NodeRole::Router,
                control: None,
                metrics: None,
                accept_unknown_keys: false,
                allow: vec![],
                peers: vec![],
                mounts: vec![],
                limits: Limits::default(),
            }
        );
        assert_eq!(
            Limits::default(),
            Limits {
                keepalive_ms: limits::KEEPALIVE_INTERVAL_MS,
                idle_timeout_ms: limits::IDLE_TIMEOUT_MS,
                handshake_timeout_ms: limits::HANDSHAKE_TIMEOUT_MS,
                send_queue_max_bytes: limits::SEND_QUEUE_MAX_BYTES,
                redial_min_ms: 100,
                redial_max_ms: 5000,
                max_links: limits::MAX_LINKS_PER_WORKER,
                max_handshakes_per_sec: limits::HANDSHAKES_PER_SEC,
                busy_poll_us: limits::BUSY_POLL_US,
            }
        );
        // An empty [limits] table is the defaults too.
        assert_eq!(parse(&format!("{MINIMAL}[limits]\n")).unwrap().limits, Limits::default());
    }

    #[test]
    fn every_kind_role_and_service_has_its_name() {
        for (name, kind) in [
            ("master", MountKindName::Master),
            ("slave", MountKindName::Slave),
            ("soft-master", MountKindName::SoftMaster),
            ("soft-slave", MountKindName::SoftSlave),
            ("cache", MountKindName::Cache),
            ("client", MountKindName::Client),
        ] {
            let text = format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"{name}\"\n");
            assert_eq!(parse(&text).unwrap().mounts[0].kind, kind, "{name}");
        }
        for (name, role) in [
            ("router", NodeRole::Router),
            ("satellite", NodeRole::Satellite),
            ("client", NodeRole::Client),
        ] {
            let text = format!("[node]\nkey = \"k\"\nrole = \"{name}\"\n");
            assert_eq!(parse(&text).unwrap().role, role, "{name}");
        }
        for (name, service) in [("echo", Service::Echo), ("none", Service::None)] {
            let text = format!(
                "{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"cache\"\nservice = \"{name}\"\n"
            );
            assert_eq!(parse(&text).unwrap().mounts[0].service, service, "{name}");
        }
    }

    #[test]
    fn relative_paths_are_taken_from_the_config_directory() {
        let at = |config: &str, text: &str| NodeConfig::parse(Path::new(config), text).unwrap();
        let relative = "[node]\nkey = \"node.key\"\ncontrol = \"sock/node.sock\"\n";
        let config = at("/etc/ringspan/a.toml", relative);
        assert_eq!(config.key, Path::new("/etc/ringspan/node.key"));
        assert_eq!(config.control.unwrap(), Path::new("/etc/ringspan/sock/node.sock"));
        assert_eq!(config.path, Path::new("/etc/ringspan/a.toml"));

        let absolute = "[node]\nkey = \"/srv/keys/node.key\"\ncontrol = \"/run/ringspan.sock\"\n";
        let config = at("/etc/ringspan/a.toml", absolute);
        assert_eq!(config.key, Path::new("/srv/keys/node.key"));
        assert_eq!(config.control.unwrap(), Path::new("/run/ringspan.sock"));

        // A config named without a directory: paths stay relative to the working directory, as
        // the config's own path is.
        assert_eq!(at("a.toml", relative).key, Path::new("node.key"));
        assert_eq!(at("conf/a.toml", relative).key, Path::new("conf/node.key"));
        assert_eq!(at("../a.toml", "[node]\nkey = \"k\"\n").key, Path::new("../k"));
    }

    #[test]
    fn a_missing_node_table_is_refused_for_the_whole_file() {
        for text in ["", "# nothing\n", "[limits]\nkeepalive_ms = 1000\n"] {
            let error = parse(text).unwrap_err();
            assert_eq!((error.line, error.column), (None, None), "{error}");
            assert!(error.reason.contains("no [node] table"), "{error}");
        }
    }

    #[test]
    fn a_missing_key_is_refused_at_the_node_table() {
        let error = refused("# a node\n\n[node]\nlisten = []\n", 3, "[node] has no `key`");
        assert_eq!(error.column, Some(1));
        refused("[node]\nkey = \"\"\n", 2, "[node] key: the path is empty");
        refused("[node]\nkey = \"a\\u0000b\"\n", 2, "NUL");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let error = refused("[node]\nkey = \"k\"\nlisen = []\n", 3, "unknown field `lisen`");
        assert_eq!(error.column, Some(1));
        refused("[node]\nkey = \"k\"\n\n[peers]\n", 4, "unknown field `peers`");
        refused("tls = true\n[node]\nkey = \"k\"\n", 1, "unknown field `tls`");
        refused("[node]\nkey = \"k\"\n[node.extra]\n", 3, "unknown field `extra`");
        refused(
            &format!("{MINIMAL}[[peer]]\nkey = \"{}\"\nport = 7401\n", b64(1)),
            5,
            "unknown field `port`",
        );
        refused(
            &format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"master\"\nlable = \"x\"\n"),
            7,
            "unknown field `lable`",
        );
        refused(&format!("{MINIMAL}[limits]\nkeepalive = 5\n"), 4, "unknown field `keepalive`");
    }

    #[test]
    fn syntax_errors_report_their_line() {
        // An unterminated string: the closing quote was expected at the end of line 2.
        let error = refused("[node]\nkey = \"node.key\nworkers = 2\n", 2, "string");
        assert_eq!(error.column, Some(16));
        refused("[node]\nkey = \"k\"\nkey = \"j\"\n", 3, "duplicate key");
        refused("[node]\nkey = \"k\"\nworkers = \n", 3, "");
        refused("[node\nkey = \"k\"\n", 1, "");
    }

    #[test]
    fn wrong_types_report_their_line() {
        refused("[node]\nkey = \"k\"\nworkers = \"two\"\n", 3, "invalid type: string");
        refused("[node]\nkey = 7\n", 2, "invalid type: integer");
        refused("[node]\nkey = \"k\"\nlisten = \"127.0.0.1:1\"\n", 3, "invalid type");
        refused("[node]\nkey = \"k\"\naccept_unknown_keys = \"yes\"\n", 3, "invalid type");
        refused("[node]\nkey = \"k\"\nrole = \"routr\"\n", 3, "unknown variant `routr`");
        let error = refused(
            &format!("{MINIMAL}[peer]\nkey = \"{}\"\n", b64(1)),
            3,
            "each peer is a [[peer]] table",
        );
        assert_eq!(error.column, Some(1));
    }

    #[test]
    fn addresses_must_be_socket_addresses_and_say_which_field() {
        let error = refused(
            "[node]\nkey = \"k\"\nlisten = [\"127.0.0.1:7401\", \"localhost:7401\"]\n",
            3,
            "[node] listen address: \"localhost:7401\" is not an IP address and port",
        );
        assert_eq!(error.column, Some(29));
        refused("[node]\nkey = \"k\"\nlisten = [\"127.0.0.1\"]\n", 3, "[node] listen address");
        refused("[node]\nkey = \"k\"\nmetrics = \"9401\"\n", 3, "[node] metrics: \"9401\"");
        refused(
            &format!("{MINIMAL}\n[[peer]]\naddress = \"10.0.0.1:99999\"\nkey = \"{}\"\n", b64(1)),
            5,
            "peer address: \"10.0.0.1:99999\"",
        );
    }

    #[test]
    fn listen_addresses_may_not_repeat() {
        let text = "[node]\nkey = \"k\"\nlisten = [\n  \"127.0.0.1:7401\",\n  \"[::1]:7401\",\n  \
                    \"127.0.0.1:7401\",\n]\n";
        let error = refused(text, 6, "listen address 127.0.0.1:7401 is listed twice");
        assert!(error.reason.contains("first on line 4"), "{error}");
        assert_eq!(error.column, Some(3));
    }

    #[test]
    fn metrics_and_peers_may_not_use_a_listen_address() {
        refused(
            "[node]\nkey = \"k\"\nlisten = [\"127.0.0.1:7401\"]\nmetrics = \"127.0.0.1:7401\"\n",
            4,
            "metrics address 127.0.0.1:7401 is also a listen address",
        );
        refused(
            &format!(
                "[node]\nkey = \"k\"\nlisten = [\"127.0.0.1:7401\"]\n[[peer]]\n\
                 address = \"127.0.0.1:7401\"\nkey = \"{}\"\n",
                b64(1)
            ),
            5,
            "would dial itself",
        );
    }

    #[test]
    fn peer_keys_must_be_public_keys() {
        let text = "[node]\nkey = \"node.key\"\n\n[[peer]]\nname = \"b\"\naddress = \
                    \"127.0.0.1:7402\"\nkey = \"not a key!\"\n";
        let error = refused(text, 7, "peer key: not valid base64");
        assert_eq!(error.column, Some(7));
        // Base64, but of 31 bytes.
        let short = BASE64_31;
        refused(
            &format!("{MINIMAL}[[peer]]\nkey = \"{short}\"\n"),
            4,
            "peer key: the base64 decodes to 31 bytes; a public key has 32",
        );
        refused(&format!("{MINIMAL}[[peer]]\nkey = \"\"\n"), 4, "peer key: the key is empty");
        refused(&format!("{MINIMAL}[[peer]]\nname = \"b\"\n"), 3, "[[peer]] has no `key`");
    }

    /// Base64 of 31 zero bytes.
    const BASE64_31: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

    #[test]
    fn two_peers_may_not_share_a_key_or_a_name() {
        let text = format!(
            "{MINIMAL}[[peer]]\nname = \"b\"\nkey = \"{a}\"\n\n[[peer]]\nname = \"c\"\nkey = \
             \"{a}\"\n",
            a = b64(1)
        );
        let error = refused(&text, 9, "is also the key of the peer on line 5");
        assert!(error.reason.contains(&b64(1)), "{error}");
        let text = format!(
            "{MINIMAL}[[peer]]\nname = \"b\"\nkey = \"{}\"\n[[peer]]\nname = \"b\"\nkey = \"{}\"\n",
            b64(1),
            b64(2)
        );
        refused(&text, 7, "peer name \"b\" is also the name of the peer on line 4");
    }

    #[test]
    fn allowed_keys_must_be_public_keys_listed_once() {
        refused(
            &format!("[node]\nkey = \"k\"\nallow = [\"{}\", \"AAAA\"]\n", b64(1)),
            3,
            "[node] allow: the base64 decodes to 3 bytes",
        );
        let text = format!("[node]\nkey = \"k\"\nallow = [\n\"{a}\",\n\"{a}\",\n]\n", a = b64(9));
        refused(&text, 5, "is listed twice (first on line 4)");
        // A key both allowed and a peer's is fine.
        let text = format!(
            "[node]\nkey = \"k\"\nallow = [\"{a}\"]\n[[peer]]\nkey = \"{a}\"\n",
            a = b64(9)
        );
        assert_eq!(parse(&text).unwrap().allow, [key(9)]);
    }

    #[test]
    fn too_many_peers_are_refused() {
        let mut text = MINIMAL.to_owned();
        for i in 0..limits::CONFIG_PEERS_MAX {
            let mut bytes = [0u8; 32];
            bytes[..2].copy_from_slice(&(i as u16).to_be_bytes());
            text.push_str(&format!("[[peer]]\nkey = \"{}\"\n", PublicKey(bytes).to_base64()));
        }
        assert_eq!(parse(&text).unwrap().peers.len(), limits::CONFIG_PEERS_MAX);
        text.push_str(&format!("[[peer]]\nkey = \"{}\"\n", b64(0xff)));
        refused(&text, 3 + 2 * limits::CONFIG_PEERS_MAX, "more than 4096 peers");
    }

    #[test]
    fn ids_are_hex_decimal_uuids_or_integers() {
        assert_eq!(parse_id("0x1"), Ok(1));
        assert_eq!(parse_id("0X1f"), Ok(31));
        assert_eq!(parse_id("0x0000000000000000000000000000000000000001"), Ok(1));
        assert_eq!(parse_id("0xffffffffffffffffffffffffffffffff"), Ok(u128::MAX));
        assert_eq!(parse_id("31"), Ok(31));
        assert_eq!(parse_id("0"), Ok(0));
        assert_eq!(parse_id("340282366920938463463374607431768211455"), Ok(u128::MAX));
        assert_eq!(
            parse_id("3F2504E0-4F89-11D3-9A0C-0305E82C3301"),
            Ok(0x3f2504e0_4f89_11d3_9a0c_0305e82c3301)
        );
        assert!(parse_id("340282366920938463463374607431768211456").unwrap_err().contains("128"));
        assert!(parse_id("0x1ffffffffffffffffffffffffffffffff").unwrap_err().contains("128"));
        for bad in [
            "",
            "0x",
            "0x+1",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1_000",
            "0xg",
            "1e3",
            "3f2504e0-4f89-11d3-9a0c-0305e82c330",
            "3f2504e0-4f89-11d3-9a0c-0305e82c33011",
            "3f2504e04-f89-11d3-9a0c-0305e82c3301",
            "3f2504e0-4f89-11d3-9a0c-0305e82c330g",
            "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}",
            "ünïcödé",
        ] {
            assert!(parse_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn mount_ids_must_parse() {
        let mount = |cluster: &str, id: &str| {
            format!("{MINIMAL}[[mount]]\ncluster = {cluster}\nid = {id}\nkind = \"master\"\n")
        };
        let error = refused(&mount("\"cluster-1\"", "1"), 4, "mount cluster: \"cluster-1\" is not");
        assert_eq!(error.column, Some(11));
        refused(&mount("1", "\"0xz\""), 5, "mount id: \"0xz\" is not a hexadecimal number");
        refused(&mount("-1", "1"), 4, "mount cluster: -1 is negative");
        refused(&mount("1", "\"1e40\""), 5, "mount id");
        refused(&mount("1", "1.5"), 5, "expected a 128-bit id");
        refused(&mount("[1]", "1"), 4, "expected a 128-bit id");
        refused(&format!("{MINIMAL}[[mount]]\nid = 1\nkind = \"cache\"\n"), 3, "no `cluster`");
        refused(&format!("{MINIMAL}[[mount]]\ncluster = 1\nkind = \"cache\"\n"), 3, "no `id`");
        refused(&format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\n"), 3, "no `kind`");
        refused(
            &format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"primary\"\n"),
            6,
            "unknown variant `primary`",
        );
        refused(
            &format!(
                "{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"cache\"\nservice = \"x\"\n"
            ),
            7,
            "unknown variant `x`",
        );
    }

    #[test]
    fn mounts_are_unique_by_cluster_and_id() {
        let text = format!(
            "{MINIMAL}[[mount]]\ncluster = \"0x1\"\nid = \"0x10\"\nkind = \"master\"\n\n\
             [[mount]]\ncluster = \"0x2\"\nid = \"0x10\"\nkind = \"master\"\n\n\
             [[mount]]\ncluster = \"1\"\nid = 16\nkind = \"slave\"\n"
        );
        let error = refused(&text, 15, "mount cluster 0x1 id 0x10 is also the mount on line 3");
        assert_eq!(error.column, Some(6));
    }

    #[test]
    fn labels_hold_at_most_64_bytes() {
        let mount = |label: &str| {
            format!(
                "{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"master\"\nlabel = \"{label}\"\n"
            )
        };
        let longest = "x".repeat(limits::SPAN_LABEL_MAX);
        assert_eq!(parse(&mount(&longest)).unwrap().mounts[0].label, longest);
        refused(&mount(&"x".repeat(65)), 7, "mount label is 65 bytes; at most 64");
        // Bytes, not characters: 33 two-byte characters are 66 bytes.
        refused(&mount(&"é".repeat(33)), 7, "mount label is 66 bytes");
    }

    #[test]
    fn too_many_mounts_are_refused() {
        let mut text = MINIMAL.to_owned();
        for i in 0..limits::SPAN_MOUNTS_MAX {
            text.push_str(&format!("[[mount]]\ncluster = 1\nid = {i}\nkind = \"cache\"\n"));
        }
        assert_eq!(parse(&text).unwrap().mounts.len(), limits::SPAN_MOUNTS_MAX);
        text.push_str("[[mount]]\ncluster = 2\nid = 0\nkind = \"cache\"\n");
        refused(&text, 3 + 4 * limits::SPAN_MOUNTS_MAX, "more than 16384 mounts");
    }

    #[test]
    fn workers_are_between_1_and_256() {
        let workers = |n: i64| format!("[node]\nkey = \"k\"\nworkers = {n}\n");
        assert_eq!(parse(&workers(1)).unwrap().workers, Some(1));
        assert_eq!(parse(&workers(256)).unwrap().workers, Some(256));
        let error = refused(&workers(0), 3, "[node] workers must be between 1 and 256, not 0");
        assert_eq!(error.column, Some(11));
        refused(&workers(257), 3, "not 257");
        refused(&workers(-1), 3, "not -1");
        refused(&workers(i64::MIN), 3, "between 1 and 256");
    }

    fn with_limits(limits: &str) -> String {
        format!("{MINIMAL}[limits]\n{limits}")
    }

    #[test]
    fn durations_are_positive_and_at_most_a_day() {
        for field in [
            "keepalive_ms",
            "idle_timeout_ms",
            "handshake_timeout_ms",
            "redial_min_ms",
            "redial_max_ms",
        ] {
            refused(
                &with_limits(&format!("{field} = 0\n")),
                4,
                &format!("limits.{field} must be greater than 0, not 0"),
            );
            refused(&with_limits(&format!("{field} = -5\n")), 4, "greater than 0, not -5");
            refused(&with_limits(&format!("{field} = 86400001\n")), 4, "more than one day");
        }
        let day = with_limits("keepalive_ms = 1000\nidle_timeout_ms = 86400000\n");
        assert_eq!(parse(&day).unwrap().limits.idle_timeout_ms, MILLIS_MAX);
    }

    #[test]
    fn idle_timeout_must_exceed_keepalive() {
        let error = refused(
            &with_limits("keepalive_ms = 2000\nidle_timeout_ms = 2000\n"),
            5,
            "limits.idle_timeout_ms (2000) must be greater than limits.keepalive_ms (2000)",
        );
        assert_eq!(error.column, Some(19));
        // Only the keepalive given: the error points at it, and names the default it broke.
        refused(
            &with_limits("keepalive_ms = 6000\n"),
            4,
            "limits.idle_timeout_ms (5000, the default) must be greater than limits.keepalive_ms \
             (6000)",
        );
        refused(&with_limits("idle_timeout_ms = 1000\n"), 4, "keepalive_ms (1000, the default)");
        let ok = parse(&with_limits("keepalive_ms = 1\nidle_timeout_ms = 2\n")).unwrap();
        assert_eq!((ok.limits.keepalive_ms, ok.limits.idle_timeout_ms), (1, 2));
    }

    #[test]
    fn handshake_timeout_must_be_positive() {
        refused(
            &with_limits("handshake_timeout_ms = 0\n"),
            4,
            "limits.handshake_timeout_ms must be greater than 0",
        );
        assert_eq!(
            parse(&with_limits("handshake_timeout_ms = 1\n")).unwrap().limits.handshake_timeout_ms,
            1
        );
    }

    #[test]
    fn redial_min_may_not_exceed_redial_max() {
        refused(
            &with_limits("redial_max_ms = 2000\nredial_min_ms = 2001\n"),
            5,
            "limits.redial_min_ms (2001) must not be greater than limits.redial_max_ms (2000)",
        );
        refused(&with_limits("redial_max_ms = 99\n"), 4, "redial_min_ms (100, the default)");
        refused(&with_limits("redial_min_ms = 5001\n"), 4, "redial_max_ms (5000, the default)");
    }

    #[test]
    fn the_send_queue_holds_at_least_one_record() {
        let queue = |n: i64| with_limits(&format!("send_queue_max_bytes = {n}\n"));
        let least = limits::RECORD_WIRE_MAX as i64;
        assert_eq!(
            parse(&queue(least)).unwrap().limits.send_queue_max_bytes,
            limits::RECORD_WIRE_MAX
        );
        refused(&queue(least - 1), 4, "limits.send_queue_max_bytes must be at least 65560");
        refused(&queue(0), 4, "one full record), not 0");
        refused(&queue(-1), 4, "not -1");
    }

    #[test]
    fn admission_bounds_are_counts_from_one() {
        let links = |n: i64| with_limits(&format!("max_links = {n}\n"));
        let rate = |n: i64| with_limits(&format!("max_handshakes_per_sec = {n}\n"));
        assert_eq!(parse(&links(1)).unwrap().limits.max_links, 1);
        let most = limits::MAX_LINKS_PER_WORKER as i64;
        assert_eq!(parse(&links(most)).unwrap().limits.max_links, limits::MAX_LINKS_PER_WORKER);
        assert_eq!(parse(&rate(1)).unwrap().limits.max_handshakes_per_sec, 1);
        let fastest = i64::from(u32::MAX);
        assert_eq!(parse(&rate(fastest)).unwrap().limits.max_handshakes_per_sec, u32::MAX);

        let error = refused(&links(0), 4, "limits.max_links must be between 1 and 1048576, not 0");
        assert_eq!(error.column, Some(13));
        refused(&links(-3), 4, "limits.max_links must be between 1 and 1048576, not -3");
        refused(&links(most + 1), 4, "not 1048577");
        let error = refused(
            &rate(0),
            4,
            "limits.max_handshakes_per_sec must be between 1 and 4294967295, not 0",
        );
        assert_eq!(error.column, Some(26));
        refused(&rate(-1), 4, "max_handshakes_per_sec must be between 1 and 4294967295, not -1");
        refused(&rate(fastest + 1), 4, "not 4294967296");
        refused(&with_limits("max_links = \"many\"\n"), 4, "invalid type: string");
        refused(&with_limits("max_handshakes_per_sec = 1.5\n"), 4, "invalid type: floating");

        // Busy polling: 0 (off) to 10 ms.
        let poll = |n: i64| with_limits(&format!("busy_poll_us = {n}\n"));
        assert_eq!(parse(&poll(0)).unwrap().limits.busy_poll_us, 0);
        let longest = limits::BUSY_POLL_US_MAX as i64;
        assert_eq!(parse(&poll(longest)).unwrap().limits.busy_poll_us, limits::BUSY_POLL_US_MAX);
        let error =
            refused(&poll(-1), 4, "limits.busy_poll_us must be between 0 and 10000, not -1");
        assert_eq!(error.column, Some(16));
        refused(&poll(longest + 1), 4, "not 10001");

        // Among the other limits, each keeps its own value.
        let both = parse(&with_limits(
            "keepalive_ms = 500\nmax_links = 7\nmax_handshakes_per_sec = 9\nredial_max_ms = 600\n",
        ))
        .unwrap()
        .limits;
        assert_eq!(
            both,
            Limits {
                keepalive_ms: 500,
                redial_max_ms: 600,
                max_links: 7,
                max_handshakes_per_sec: 9,
                ..Limits::default()
            }
        );
    }

    #[test]
    fn the_control_path_must_fit_a_socket_address() {
        let longest = format!("/{}", "s".repeat(CONTROL_PATH_MAX - 1));
        let text = format!("[node]\nkey = \"k\"\ncontrol = \"{longest}\"\n");
        assert_eq!(parse(&text).unwrap().control.unwrap(), Path::new(&longest));
        let text = format!("[node]\nkey = \"k\"\ncontrol = \"{longest}s\"\n");
        refused(&text, 3, "is 108 bytes; a Unix socket path holds at most 107");
        // The length counted is the resolved one: 14 bytes of "/etc/ringspan/" and 94 more.
        let text = format!("[node]\nkey = \"k\"\ncontrol = \"{}\"\n", "s".repeat(94));
        refused(&text, 3, "is 108 bytes");
        refused("[node]\nkey = \"k\"\ncontrol = \"\"\n", 3, "[node] control: the path is empty");
    }

    #[test]
    fn errors_display_as_path_line_column_reason() {
        let error = ConfigError {
            path: PathBuf::from("node.toml"),
            line: Some(12),
            column: Some(9),
            reason: "peer key: not valid base64".to_owned(),
        };
        assert_eq!(error.to_string(), "node.toml:12:9: peer key: not valid base64");
        let error = ConfigError { column: None, ..error };
        assert_eq!(error.to_string(), "node.toml:12: peer key: not valid base64");
        let error = ConfigError { line: None, ..error };
        assert_eq!(error.to_string(), "node.toml: peer key: not valid base64");

        // As parse reports one.
        let error = NodeConfig::parse(
            Path::new("conf/node.toml"),
            &format!("{MINIMAL}\n[[peer]]\nname = \"b\"\nkey = \"not base64\"\n"),
        )
        .unwrap_err();
        assert!(
            error.to_string().starts_with("conf/node.toml:6:7: peer key: not valid base64 ("),
            "{error}"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(error);
        assert!(boxed.to_string().starts_with("conf/node.toml:6:7:"));
    }

    #[test]
    fn load_reads_the_file_and_reports_one_it_cannot_read() {
        let dir = std::env::temp_dir().join(format!("ringspan-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let config = NodeConfig::load(&path);
        let missing = NodeConfig::load(&dir.join("absent.toml"));
        std::fs::write(&path, b"[node]\nkey = \"\xff\"\n").unwrap();
        let not_utf8 = NodeConfig::load(&path);
        std::fs::remove_dir_all(&dir).unwrap();

        let config = config.unwrap();
        assert_eq!(config.path, path);
        assert_eq!(config.key, dir.join("node.key"));

        let missing = missing.unwrap_err();
        assert_eq!(missing.path, dir.join("absent.toml"));
        assert_eq!((missing.line, missing.column), (None, None));
        assert!(missing.reason.starts_with("cannot read the configuration: "), "{missing}");

        assert!(not_utf8.unwrap_err().reason.starts_with("cannot read the configuration: "));
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let text = "ab\ncdé\nfg";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 2), (1, 3));
        assert_eq!(line_column(text, 3), (2, 1));
        assert_eq!(line_column(text, 5), (2, 3));
        // 'é' takes two bytes but one column.
        assert_eq!(line_column(text, 7), (2, 4));
        assert_eq!(line_column(text, 8), (3, 1));
        // Inside a character (counted), or past the end: no panic.
        assert_eq!(line_column(text, 6), (2, 4));
        assert_eq!(line_column(text, 1000), (3, 3));
    }

    /// Every error's position is within the text.
    fn check_position(text: &str, result: Result<NodeConfig, ConfigError>) {
        if let Err(error) = result
            && let Some(line) = error.line
        {
            assert!(line >= 1 && line <= text.split('\n').count(), "{error}");
            assert!(error.column.is_some_and(|c| c >= 1), "{error}");
        }
    }

    proptest! {
        #[test]
        fn any_text_gives_a_result_not_a_panic(text in "\\PC*") {
            check_position(&text, parse(&text));
        }

        #[test]
        fn an_edited_example_gives_a_result_not_a_panic(
            at in any::<prop::sample::Index>(),
            cut in 0usize..16,
            insert in "[\\[\\]\"=#,.0-9a-z\n -]{0,8}",
        ) {
            let example = doc_example();
            // The example is ASCII, so every byte offset is a character boundary.
            let start = at.index(example.len());
            let end = (start + cut).min(example.len());
            let text = format!("{}{insert}{}", &example[..start], &example[end..]);
            check_position(&text, parse(&text));
        }
    }
}
