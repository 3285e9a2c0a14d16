//! The file's lists, each checked as a whole: peers, allowed keys, client clusters and mounts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use crate::cipher::PublicKey;
use crate::daemon::{MountSpec, PeerSpec};
use crate::ids::{ClusterId, MountId};
use crate::limits;
use crate::span::{Label, MountKey, Role};
use serde::Deserialize;
use serde::de::IntoDeserializer as _;
use toml::Spanned;

use super::raw::{IdText, RawAllow, RawMount, RawPeer};
use super::source::Source;
use super::{ConfigError, Peer};

impl Source<'_> {
    pub(super) fn peers(
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
                    let address = self.peer_address(text)?;
                    // Only an IP address can be compared: a name is resolved at each dial.
                    if let Some(ip) = address.ip()
                        && listen.contains(&ip)
                    {
                        return Err(self.error(
                            text.span(),
                            format!(
                                "peer address {ip} is one of this node's listen \
                                 addresses: the node would dial itself"
                            ),
                        ));
                    }
                    Some(address)
                }
            };
            let name = peer.name.as_ref().map(|name| name.get_ref().clone());
            let role = peer.role.unwrap_or(Role::Router);
            peers.push(Peer { name, spec: PeerSpec { address, key, role } });
        }
        Ok(peers)
    }

    /// The `allow` list: each key once, with its role, not granted otherwise as a peer.
    pub(super) fn allow(
        &self,
        raw: &[Spanned<RawAllow>],
        peers: &[Peer],
    ) -> Result<Vec<(PublicKey, Role)>, ConfigError> {
        let mut allow = Vec::with_capacity(raw.len());
        let mut seen: HashMap<PublicKey, Range<usize>> = HashMap::with_capacity(raw.len());
        for entry in raw {
            let span = entry.span();
            let (text, role) = match entry.get_ref() {
                RawAllow::Key(text) => (text, Role::Client),
                RawAllow::Entry { key: None, .. } => {
                    return Err(self.error(span, "[node] allow: an entry has no `key`"));
                }
                RawAllow::Entry { key: Some(text), role } => {
                    let role = match role.as_deref() {
                        None => Role::Client,
                        Some(name) => Role::deserialize(name.into_deserializer()).map_err(
                            |_: serde::de::value::Error| {
                                self.error(
                                    span.clone(),
                                    format!(
                                        "[node] allow: unknown role {name:?} (\"router\", \
                                         \"satellite\" or \"client\")"
                                    ),
                                )
                            },
                        )?,
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
            if let Some(peer) = peers.iter().find(|p| p.spec.key == key && p.spec.role != role) {
                return Err(self.error(
                    span,
                    format!(
                        "[node] allow: key {key} is granted {role:?} here but {:?} as a peer",
                        peer.spec.role
                    ),
                ));
            }
            allow.push((key, role));
        }
        Ok(allow)
    }

    /// `client_clusters`: each id once, at most [`limits::CLIENT_CLUSTERS_MAX`].
    pub(super) fn client_clusters(
        &self,
        raw: &[Spanned<IdText>],
    ) -> Result<Vec<ClusterId>, ConfigError> {
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
        let mut clusters: Vec<ClusterId> = Vec::with_capacity(raw.len());
        for value in raw {
            let cluster = ClusterId(self.id(value, "[node] client_clusters")?);
            if clusters.contains(&cluster) {
                return Err(self.error(
                    value.span(),
                    format!("[node] client_clusters: cluster {:#x} is listed twice", cluster.0),
                ));
            }
            clusters.push(cluster);
        }
        Ok(clusters)
    }

    pub(super) fn mounts(&self, raw: &[Spanned<RawMount>]) -> Result<Vec<MountSpec>, ConfigError> {
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
                None => Label::EMPTY,
                Some(text) => Label::new(text.get_ref().as_bytes()).map_err(|_| {
                    self.error(
                        text.span(),
                        format!(
                            "mount label is {} bytes; at most {} are allowed",
                            text.get_ref().len(),
                            limits::SPAN_LABEL_MAX
                        ),
                    )
                })?,
            };
            mounts.push(MountSpec {
                key: MountKey { cluster: ClusterId(cluster_value), mount: MountId(id_value) },
                kind,
                label,
                service: mount.service,
            });
        }
        Ok(mounts)
    }
}
