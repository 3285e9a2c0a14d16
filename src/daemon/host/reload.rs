//! A plane's part of a live reload ([`Shared::reload`](crate::daemon::Shared::reload) checks the
//! new settings, then sends each plane a [`PlaneReload`]): the rights bound to keys, the
//! names, the peers this plane dials, the node's and the engine's bounds, the allow list of
//! handshakes started from now on, and on the first plane the configured mounts. Links whose
//! key lost its right to be here, or was granted another role, are closed with `REFUSED` (a
//! role is bound to a link when it comes up; the peer links again under the new one); every
//! other link, and the calls on it, is untouched.

use crate::relay::redial::PeerAddr;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::Sender;

use super::{HostState, MountSpec, Settings};
use crate::cipher::{self, PublicKey};
use crate::ids::{LinkId, NodeId};
use crate::relay::LinkSet;
use crate::ring::{self, WorkerCtx};
use crate::span::Role;
use crate::wire::ErrorCode;

/// What each plane is sent: the new settings, and what the node built of them once for all.
pub(in crate::daemon) struct PlaneReload {
    /// The settings the node runs with from now on.
    pub settings: Arc<Settings>,
    /// The handshake's configuration for them (the allow list, the handshake timeout).
    pub cipher: Arc<cipher::Config>,
    /// The engine's configuration for them, of which the worker takes the bounds that can
    /// change while it runs (`WorkerCtx::reconfigure`).
    pub engine: Arc<ring::Config>,
    /// Which plane dials each configured peer (`planes::dial_plan`).
    pub plan: Arc<HashMap<PublicKey, usize>>,
    /// Where the plane says what it changed beyond the settings themselves, a line each: the
    /// links it closed; on the first plane, the configured mounts it attached, detached, left
    /// to the application holding them, or could not attach.
    pub reply: Sender<Vec<String>>,
}

/// The rights bound to keys: a configured peer's role, an allowed key's role; with
/// `accept_unknown_keys`, any other key is a client; without, it is not let in.
#[derive(Debug, Default)]
pub(super) struct Rights {
    roles: HashMap<PublicKey, Role>,
    anyone: bool,
}

impl Rights {
    /// The rights `settings` give.
    pub(super) fn of(settings: &Settings) -> Rights {
        let mut roles = HashMap::new();
        roles.extend(settings.allow.iter().copied());
        roles.extend(settings.peers.iter().map(|p| (p.key, p.role)));
        Rights { roles, anyone: settings.accept_unknown_keys }
    }

    /// The role `key` is granted, if it may link at all.
    pub(super) fn of_key(&self, key: &PublicKey) -> Option<Role> {
        self.roles.get(key).copied().or(self.anyone.then_some(Role::Client))
    }

    /// Whether the configuration names `key` (a peer's or an allowed key).
    pub(super) fn configured(&self, key: &PublicKey) -> bool {
        self.roles.contains_key(key)
    }
}

/// The peers `settings` list that plane `index` dials under `plan`, as the redialler takes them.
pub(super) fn dials<'a>(
    settings: &'a Settings,
    plan: &'a HashMap<PublicKey, usize>,
    index: usize,
) -> impl Iterator<Item = (PeerAddr, PublicKey)> + 'a {
    let ours = move |key: &PublicKey| plan.get(key) == Some(&index);
    settings
        .peers
        .iter()
        .filter(move |p| ours(&p.key))
        .filter_map(|p| Some((p.address.clone()?, p.key)))
}

/// The configuration's names of peers, by node id.
pub(super) fn names(settings: &Settings) -> HashMap<NodeId, String> {
    settings.names.iter().map(|(key, name)| (key.node_id(), name.clone())).collect()
}

impl HostState {
    /// Takes `reload`'s settings on this plane (see the module documentation); a line for each
    /// link closed and each configured mount attached, detached, held or refused.
    pub(super) fn reload(
        &mut self,
        reload: &PlaneReload,
        worker: &mut WorkerCtx<'_>,
    ) -> Vec<String> {
        let settings = &*reload.settings;
        let now = worker.now();
        self.now = now;
        worker.set_cipher(reload.cipher.clone());
        worker.reconfigure(&reload.engine);
        self.rights = Rights::of(settings);
        // Before the names change: a peer removed is still named in what is said of its link.
        let mut changes = self.close_unentitled(worker);
        self.names = names(settings);
        let limits = &settings.limits;
        let peers = dials(settings, &reload.plan, self.plane.index);
        self.redial.reconfigure(peers, limits.redial_min, limits.redial_max, now);
        self.node.set_circuit_idle(limits.circuit_idle);
        if self.plane.is_first() {
            changes.extend(self.remount(&settings.mounts, worker));
        }
        changes
    }

    /// Closes the links whose key may no longer link, or is now granted another role than the
    /// one its link came up with; never a local link.
    fn close_unentitled(&mut self, worker: &mut WorkerCtx<'_>) -> Vec<String> {
        // Local links (applications on the attach socket) are granted `attach_role`, which only
        // a restart changes, and their keys are made up per link: no configuration names them.
        let links: Vec<(LinkId, NodeId)> = self
            .node
            .peers()
            .filter(|(link, _)| !self.siblings.contains(link) && !self.attached.contains_key(link))
            .collect();
        let mut changes = Vec::new();
        for (link, node) in links {
            let (Some(key), Some(had)) =
                (worker.peer_key(link), worker.span(link).map(|s| s.granted()))
            else {
                continue;
            };
            let why = match self.rights.of_key(&key) {
                None => "its key is no longer allowed".to_string(),
                Some(role) if role != had => {
                    format!("its key is now granted {} (it was {})", role.name(), had.name())
                }
                Some(_) => continue,
            };
            let name = self.name_of(node).map(|n| format!(" ({n})")).unwrap_or_default();
            tracing::info!(%link, peer = %node, "reload: closing the link: {why}");
            changes.push(format!("{link} to {node}{name} closed: {why}"));
            self.to_close.push((link, ErrorCode::REFUSED));
        }
        changes
    }

    /// Attaches the configured mounts `mounts` lists and the node does not, and detaches those
    /// it no longer lists; a mount whose kind or label changed is attached anew. A mount an
    /// application holds through the attach socket is left to it, and said so: not attached,
    /// and not counted as attached, so a later reload that still lists it attaches it if the
    /// application let it go. Before the first tick, they are only noted (attached then). A
    /// line for each mount attached, detached, held or refused.
    fn remount(&mut self, mounts: &[MountSpec], worker: &mut WorkerCtx<'_>) -> Vec<String> {
        // What the node attached of the configuration it ran with.
        let old = std::mem::take(&mut self.mounts);
        let same = |a: &MountSpec, b: &MountSpec| (a.kind, &a.label) == (b.kind, &b.label);
        let listed = |list: &[MountSpec], spec: &MountSpec| list.iter().any(|m| m.key == spec.key);
        let mut changes = Vec::new();
        if !self.started {
            for spec in old.iter().filter(|spec| !listed(mounts, spec)) {
                changes.push(format!("mount {} detached", mount_text(spec)));
            }
            for spec in mounts.iter().filter(|spec| !listed(&old, spec)) {
                changes.push(format!("mount {} attached", mount_text(spec)));
            }
            self.mounts = mounts.to_vec();
            return changes;
        }
        for spec in &old {
            if mounts.iter().any(|m| m.key == spec.key && same(m, spec)) {
                continue;
            }
            match self.node.detach(spec.key, worker) {
                // Attached anew below, and said so there.
                Ok(()) if listed(mounts, spec) => {}
                Ok(()) => changes.push(format!("mount {} detached", mount_text(spec))),
                Err(error) => {
                    changes.push(format!("mount {}: not detached: {error}", mount_text(spec)));
                }
            }
        }
        for spec in mounts {
            if old.iter().any(|m| m.key == spec.key && same(m, spec)) {
                // Its service may have changed (the application's part).
                self.mounts.push(spec.clone());
                continue;
            }
            if let Some(holder) = self.holder(spec.key) {
                let mount = mount_text(spec);
                tracing::warn!(
                    mount,
                    "reload: a configured mount is held by {holder}; not attached"
                );
                changes.push(format!("mount {mount} is held by {holder}; not attached"));
                continue;
            }
            let text = if listed(&old, spec) {
                format!("mount {}: kind or label changed (attached anew)", mount_text(spec))
            } else {
                format!("mount {} attached", mount_text(spec))
            };
            match self.node.attach(spec.key, spec.kind, spec.label, worker) {
                Ok(()) => {
                    self.mounts.push(spec.clone());
                    changes.push(text);
                }
                Err(error) => {
                    tracing::error!(%error, mount = mount_text(spec), "reload: cannot attach a configured mount");
                    changes.push(format!("mount {}: not attached: {error}", mount_text(spec)));
                }
            }
        }
        changes
    }

    /// The application holding `mount` through its local link, as the reload names it:
    /// `application pid 4242 (link 0:3.1)`.
    fn holder(&self, mount: crate::span::MountKey) -> Option<String> {
        let link = self.node.attached_by(mount)?;
        Some(match self.attached(link) {
            Some(cred) => format!("application pid {} ({link})", cred.pid),
            None => format!("an application ({link})"),
        })
    }
}

/// A mount as `ringspan call --mount` takes it: `0xCLUSTER:0xMOUNT`.
pub(in crate::daemon) fn mount_text(spec: &MountSpec) -> String {
    format!("{:#x}:{:#x}", spec.key.cluster.0, spec.key.mount.0)
}
