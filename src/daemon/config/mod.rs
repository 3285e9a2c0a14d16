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
//! `docs/CONFIG.md` gives every key with its default and its bounds, and a complete file;
//! `tests/doc.rs` checks that page against this parser (every key taken has a row there, and
//! its complete file parses with the defaults it shows). Checks beyond single values:
//!
//! - Addresses are an IP address and a port, but a peer's, which may also be a host name and a
//!   port (`PeerAddr`; resolved at each dial, never here); `listen` may not name one twice, and
//!   `metrics` and the peers' IP addresses may not be one of the listen addresses.
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
//!   ([`limits::RECORD_WIRE_MAX`]); the admission bounds (`max_links`, the handshake rates,
//!   `reserved_links`) are each worker's.
//! - The control socket's path, once resolved, fits a Unix socket address
//!   ([`limits::CONTROL_PATH_MAX`] bytes); so does the attach socket's. `attach_mode` is an
//!   octal string of permission bits; `attach_uids` and `attach_gids` hold at most
//!   [`limits::ATTACH_IDS_MAX`] ids each, each once; `attach_mode`, `attach_uids`,
//!   `attach_gids` and `attach_role` need `attach`.

mod attach;
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
use std::str::FromStr;

use crate::cipher::{Identity, PublicKey};
use crate::daemon::{Limits, MountSpec, PeerSpec, Settings, control};
use crate::ids::ClusterId;
#[cfg(doc)]
use crate::limits;
use crate::ring::AttachConfig;
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
    /// How the node's log lines are written. `None`: as the command line says (text by
    /// default).
    pub log_format: Option<LogFormat>,
    /// Which log lines are written: a `RUST_LOG`-style filter, checked. `None`: as `RUST_LOG`
    /// says (warnings and errors by default). A reload changes it.
    pub log_level: Option<String>,
    /// The name the node announces to its neighbours, if any.
    pub name: Option<String>,
    /// The attach socket, if any (`attach`, relative paths resolved against the config
    /// directory; `attach_mode`, 0600 by default; `attach_uids`, `attach_gids`).
    pub attach: Option<AttachConfig>,
    /// The most an attached application's hello may claim to be (`attach_role`, client by
    /// default).
    pub attach_role: Role,
}

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Lines for people to read: coloured on a terminal, plain anywhere else.
    #[default]
    Text,
    /// One JSON object per line, for a log collector.
    Json,
}

impl LogFormat {
    /// Every format's name, as the configuration and `--log-format` take it.
    pub const NAMES: [&str; 2] = ["text", "json"];

    /// Its name in the configuration.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl FromStr for LogFormat {
    type Err = String;

    /// `"text"` or `"json"`; anything else is refused with the names accepted.
    fn from_str(name: &str) -> Result<LogFormat, String> {
        match name {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("log_format must be \"text\" or \"json\", not {other:?}")),
        }
    }
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
        let log_format = match &node.log_format {
            None => None,
            Some(text) => Some(source.log_format(text)?),
        };
        let log_level = match &node.log_level {
            None => None,
            Some(text) => Some(source.log_level(text)?),
        };
        let name = match &node.name {
            None => None,
            Some(text) => Some(source.node_name(text)?),
        };

        let (attach, attach_role) = source.attach(&node)?;
        if let (Some(attach), Some(text)) = (&attach, &node.attach) {
            let control_socket = control.clone().unwrap_or_else(|| control::default_socket(path));
            if attach.path == control_socket {
                let whose = if control.is_some() {
                    "[node] control"
                } else {
                    "the default control socket (the file's name with .sock)"
                };
                return Err(source.error(
                    text.span(),
                    format!(
                        "[node] attach {} is also {whose}: give them different paths",
                        attach.path.display()
                    ),
                ));
            }
        }

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
            log_format,
            log_level,
            name,
            attach,
            attach_role,
        })
    }
}

impl NodeConfig {
    /// The settings a node runs with, its key pair `identity` read from [`NodeConfig::key`]:
    /// everything the file says but the key file, the workers one per core when the file says
    /// none, and the control socket beside the file when none is named.
    pub fn settings(&self, identity: Identity) -> Settings {
        Settings {
            role: self.role,
            listen: self.listen.clone(),
            peers: self.peers.iter().map(|peer| peer.spec.clone()).collect(),
            allow: self.allow.clone(),
            accept_unknown_keys: self.accept_unknown_keys,
            client_clusters: self.client_clusters.clone(),
            mounts: self.mounts.clone(),
            limits: self.limits,
            control: Some(self.control_socket()),
            metrics: self.metrics,
            workers: self.workers.unwrap_or_else(cores),
            names: self.peers.iter().filter_map(|p| Some((p.spec.key, p.name.clone()?))).collect(),
            name: self.name.clone(),
            attach: self.attach.clone(),
            attach_role: self.attach_role,
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
