//! Live reload (DESIGN 7c.5, "Live reload"): a running node takes new [`Settings`] without a
//! restart.
//!
//! [`Shared::reload`] compares them with the node's: a change to anything the node holds from
//! its start only (its key, role, listeners, workers, client clusters, control socket, metrics
//! address, attach socket, receive buffers, and the link timers its neighbours were told in
//! their hellos) is refused whole, naming each such key, and the node runs on as it was.
//! Otherwise every plane is sent the new settings ([`PlaneReload`]) and takes them in one turn
//! of its worker: peers, allow list and roles, names, the configured mounts, and every other
//! limit. What the reload changed comes back as a [`ReloadReport`], a line each.
//!
//! `ringspan run` re-reads its file on SIGHUP or a `reload` on the control socket
//! ([`Shared::reload_from_source`]); a file that does not parse is refused there, with its
//! `file:line:col`, before anything here runs.

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::host::{PlaneReload, mount_text};
use super::planes::dial_plan;
use super::{Limits, MountService, PeerSpec, Settings, Shared};
use crate::cipher::PublicKey;
use crate::ring;
use crate::span::Role;

/// How long a reload waits for each plane to take the new settings.
const PLANE_WAIT: Duration = Duration::from_secs(5);

/// What a reload changed, a line each, for a person to read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The changes: peers, allow list, mounts and limits as the settings say, then what the
    /// planes did of them (links closed, mounts that could not be attached).
    pub changes: Vec<String>,
}

/// Re-reads a node's settings from where they came from (`ringspan run`'s file), applies them
/// ([`Shared::reload`]) and whatever else it owns (the log level); its report, or why nothing
/// changed.
pub type ReloadSource = Box<dyn FnMut(&Shared) -> Result<ReloadReport, String> + Send>;

/// The settings a node runs with, and which plane dials each configured peer.
pub(super) struct Running {
    settings: Settings,
    plan: HashMap<PublicKey, usize>,
}

impl Running {
    /// A node starting with `settings` on `planes` planes.
    pub(super) fn new(settings: Settings, planes: usize) -> Running {
        let plan = dial_plan(&settings.peers, planes, None);
        Running { settings, plan }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing a panic could leave half-done is kept under these locks.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Notes the settings a node starts with, on `planes` planes (what a reload compares).
    pub(super) fn set_running(&self, settings: Settings, planes: usize) {
        *lock(&self.running) = Some(Running::new(settings, planes));
    }

    /// The drain grace the node runs with now (a reload may change it).
    pub fn drain_grace(&self) -> Option<Duration> {
        lock(&self.running).as_ref().map(|r| r.settings.limits.drain_grace)
    }

    /// Gives the node a way to re-read its settings: [`Shared::reload_from_source`] (SIGHUP, and
    /// `reload` on the control socket) calls it.
    pub fn set_reload_source(&self, source: ReloadSource) {
        *lock(&self.reload_source) = Some(source);
    }

    /// Re-reads the node's settings where they came from and applies them (one reload at a
    /// time); why not, if the node has no source or the source refused them.
    pub fn reload_from_source(&self) -> Result<ReloadReport, String> {
        let mut source = lock(&self.reload_source);
        let Some(source) = source.as_mut() else {
            return Err("this node was not started from a configuration file: nothing to reload \
                        from"
                .into());
        };
        let result = source(self);
        if let Err(error) = &result {
            tracing::warn!("reload refused: {error}");
        }
        result
    }

    /// Runs the node with `new` settings from now on (see the module documentation): what
    /// changed, or why nothing did.
    pub fn reload(&self, new: Settings) -> Result<ReloadReport, String> {
        let Some(planes) = self.node.get() else {
            return Err("the node is starting: ask again".into());
        };
        let mut running = lock(&self.running);
        let Some(running) = running.as_mut() else {
            return Err("the node is starting: ask again".into());
        };
        let old = &running.settings;
        let fixed = restart_only(old, &new);
        if !fixed.is_empty() {
            return Err(format!(
                "{} change only when the node restarts (`ringspan drain`, then start it \
                 again); the node runs on as it was",
                fixed.join(", ")
            ));
        }
        let cipher = Arc::new(new.cipher_config()?);
        let mut changes = changes(old, &new);
        let plan = dial_plan(&new.peers, planes.len(), Some(&running.plan));
        let settings = Arc::new(new.clone());
        let engine = Arc::new(new.engine_config());
        let shared_plan = Arc::new(plan.clone());
        let (reply, answers) = mpsc::channel();
        let mut asked = 0;
        for plane in planes {
            let reload = PlaneReload {
                settings: settings.clone(),
                cipher: cipher.clone(),
                engine: engine.clone(),
                plan: shared_plan.clone(),
                reply: reply.clone(),
            };
            if plane.send(ring::Command::Service(Box::new(reload))).is_ok() {
                asked += 1;
            }
        }
        drop(reply);
        // Planes that took the reload took all of it: from here on the node runs the new
        // settings, whatever the others say.
        running.settings = new;
        running.plan = plan;
        for _ in 0..asked {
            match answers.recv_timeout(PLANE_WAIT) {
                Ok(lines) => changes.extend(lines),
                Err(_) => {
                    changes.push("a worker did not say what it changed in time".into());
                    break;
                }
            }
        }
        if asked < planes.len() {
            changes.push(format!(
                "{} of {} workers could not be told (mailbox full): they run the old settings",
                planes.len() - asked,
                planes.len()
            ));
        }
        for line in &changes {
            tracing::info!("reload: {line}");
        }
        Ok(ReloadReport { changes })
    }
}

/// The settings `new` changes that the node takes only at start, as the configuration names
/// them.
fn restart_only(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut fixed = Vec::new();
    let mut check = |changed: bool, key: &'static str| {
        if changed {
            fixed.push(key);
        }
    };
    check(old.identity.public_key() != new.identity.public_key(), "the node's key ([node] key)");
    check(old.role != new.role, "[node] role");
    check(old.name != new.name, "[node] name");
    check(old.listen != new.listen, "[node] listen");
    check(old.planes() != new.planes(), "[node] workers");
    check(old.client_clusters != new.client_clusters, "[node] client_clusters");
    check(old.control != new.control, "[node] control");
    check(old.metrics != new.metrics, "[node] metrics");
    check(old.attach != new.attach, "[node] attach (its path, mode, uids and gids)");
    check(old.attach_role != new.attach_role, "[node] attach_role");
    check(old.recv_buffers != new.recv_buffers, "the receive buffers");
    check(old.limits.keepalive != new.limits.keepalive, "[limits] keepalive_ms");
    check(old.limits.idle_timeout != new.limits.idle_timeout, "[limits] idle_timeout_ms");
    fixed
}

/// A peer or key as the reload report names it: its configured name, else its node id.
fn who(key: &PublicKey, names: &[(PublicKey, String)]) -> String {
    match names.iter().find(|(k, _)| k == key) {
        Some((_, name)) => format!("{name} ({})", key.node_id()),
        None => key.node_id().to_string(),
    }
}

fn address(peer: &PeerSpec) -> String {
    peer.address.as_ref().map_or("none (accepted only)".into(), |a| a.to_string())
}

/// What `new` changes of `old`'s peers, allow list, mounts and limits, a line each.
fn changes(old: &Settings, new: &Settings) -> Vec<String> {
    let mut lines = Vec::new();
    for peer in &new.peers {
        let name = who(&peer.key, &new.names);
        match old.peers.iter().find(|p| p.key == peer.key) {
            None => lines.push(format!("peer {name} added ({})", address(peer))),
            Some(was) => {
                if was.address != peer.address {
                    lines.push(format!(
                        "peer {name}: address {} -> {}",
                        address(was),
                        address(peer)
                    ));
                }
                let named = |names: &[(PublicKey, String)]| {
                    names.iter().find(|(k, _)| *k == peer.key).map(|(_, n)| n.clone())
                };
                let (was_named, named_now) = (named(&old.names), named(&new.names));
                if was_named != named_now {
                    lines.push(format!(
                        "peer {name}: renamed from {}",
                        was_named.as_deref().unwrap_or("no name")
                    ));
                }
                if was.role != peer.role {
                    lines.push(format!(
                        "peer {name}: role {} -> {}",
                        was.role.name(),
                        peer.role.name()
                    ));
                }
            }
        }
    }
    for peer in old.peers.iter().filter(|p| !new.peers.iter().any(|n| n.key == p.key)) {
        lines.push(format!("peer {} removed", who(&peer.key, &old.names)));
    }
    let role_of = |list: &[(PublicKey, Role)], key: &PublicKey| {
        list.iter().find(|(k, _)| k == key).map(|(_, role)| *role)
    };
    for (key, role) in &new.allow {
        match role_of(&old.allow, key) {
            None => lines.push(format!("key {} allowed as {}", key.node_id(), role.name())),
            Some(was) if was != *role => lines.push(format!(
                "key {}: allowed as {} -> {}",
                key.node_id(),
                was.name(),
                role.name()
            )),
            Some(_) => {}
        }
    }
    for (key, _) in old.allow.iter().filter(|(k, _)| role_of(&new.allow, k).is_none()) {
        lines.push(format!("key {} no longer allowed", key.node_id()));
    }
    if old.accept_unknown_keys != new.accept_unknown_keys {
        lines.push(format!("accept_unknown_keys {}", new.accept_unknown_keys));
    }
    // Which mounts were attached, detached or attached anew the first plane says: it knows
    // which an application holds (not attached), and which it attached before.
    for mount in &new.mounts {
        if let Some(was) = old.mounts.iter().find(|m| m.key == mount.key)
            && was.service != mount.service
        {
            lines.push(format!(
                "mount {}: service {} -> {}",
                mount_text(mount),
                service(was.service),
                service(mount.service)
            ));
        }
    }
    lines.extend(limit_changes(&old.limits, &new.limits));
    lines
}

/// A mount's service as the configuration names it.
fn service(service: MountService) -> &'static str {
    match service {
        MountService::Echo => "echo",
        MountService::App => "none",
    }
}

/// Each limit `new` changes, as `[limits] key old -> new`.
fn limit_changes(old: &Limits, new: &Limits) -> Vec<String> {
    let ms = |d: Duration| d.as_millis().to_string();
    let rows: [(&str, String, String); 11] = [
        ("handshake_timeout_ms", ms(old.handshake_timeout), ms(new.handshake_timeout)),
        (
            "send_queue_max_bytes",
            old.send_queue_max_bytes.to_string(),
            new.send_queue_max_bytes.to_string(),
        ),
        ("redial_min_ms", ms(old.redial_min), ms(new.redial_min)),
        ("redial_max_ms", ms(old.redial_max), ms(new.redial_max)),
        ("max_links", old.max_links.to_string(), new.max_links.to_string()),
        (
            "max_handshakes_per_sec",
            old.max_handshakes_per_sec.to_string(),
            new.max_handshakes_per_sec.to_string(),
        ),
        (
            "trusted_handshakes_per_sec",
            old.trusted_handshakes_per_sec.to_string(),
            new.trusted_handshakes_per_sec.to_string(),
        ),
        ("reserved_links", old.reserved_links.to_string(), new.reserved_links.to_string()),
        (
            "busy_poll_us",
            old.busy_poll.as_micros().to_string(),
            new.busy_poll.as_micros().to_string(),
        ),
        ("circuit_idle_ms", ms(old.circuit_idle), ms(new.circuit_idle)),
        ("drain_grace_ms", ms(old.drain_grace), ms(new.drain_grace)),
    ];
    rows.into_iter()
        .filter(|(_, was, now)| was != now)
        .map(|(key, was, now)| format!("[limits] {key} {was} -> {now}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::Identity;

    fn settings() -> Settings {
        Settings::new(Identity::generate().unwrap())
    }

    #[test]
    fn a_change_to_what_the_node_holds_from_its_start_is_named() {
        let old = settings();
        let mut new = old.clone();
        assert!(restart_only(&old, &new).is_empty());
        new.listen = vec!["127.0.0.1:1".parse().unwrap()];
        new.limits.keepalive *= 2;
        new.limits.redial_max *= 2;
        assert_eq!(restart_only(&old, &new), ["[node] listen", "[limits] keepalive_ms"]);
        let other = settings();
        assert_eq!(restart_only(&old, &other), ["the node's key ([node] key)"]);
    }

    #[test]
    fn the_report_names_each_peer_key_mount_and_limit_changed() {
        let old = settings();
        let mut new = old.clone();
        let a = Identity::generate().unwrap().public_key();
        let b = Identity::generate().unwrap().public_key();
        new.peers.push(PeerSpec::router(Some("127.0.0.1:9".parse().unwrap()), a));
        new.names.push((a, "a".into()));
        new.allow.push((b, Role::Client));
        new.limits.circuit_idle = Duration::from_secs(7);
        let lines = changes(&old, &new);
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0], format!("peer a ({}) added (127.0.0.1:9)", a.node_id()));
        assert_eq!(lines[1], format!("key {} allowed as client", b.node_id()));
        assert!(lines[2].starts_with("[limits] circuit_idle_ms ") && lines[2].ends_with("-> 7000"));
        let back = changes(&new, &old);
        assert_eq!(back[0], format!("peer a ({}) removed", a.node_id()));
        assert_eq!(back[1], format!("key {} no longer allowed", b.node_id()));
    }
}
