//! Local links (an application attached through the node's attach socket, DESIGN 7g) as the
//! host takes them up: granted the configured `attach_role` (their keys are made up per link,
//! so nothing is looked up by key), outside the node-wide one-link-per-adjacency claim (each
//! is a node of its own to the relay, on one plane), never redialled, their address (there is
//! none) never trusted.

use super::{HostState, LinkUp};
use crate::ring::{LinkCtx, PeerCred};
use crate::wire::ErrorCode;

impl HostState {
    /// A local link from the process `cred` came up: the node takes it up as a link to a
    /// neighbour granted `attach_role`.
    pub(super) fn attached_up(&mut self, link: &mut LinkCtx<'_>, cred: PeerCred) {
        let id = link.id();
        let node = link.peer().node_id();
        let granted = self.attach_role;
        match self.node.link_up(id, node, granted, false, link) {
            Ok(LinkUp::Up) => {
                // Its application may attach mounts as the node's own (LINK_ATTACH).
                self.node.set_local(id);
                self.attached.insert(id, cred);
                tracing::info!(
                    %id,
                    peer = %node,
                    pid = cred.pid,
                    uid = cred.uid,
                    role = granted.name(),
                    "local link up (attached)"
                );
            }
            // Its key is unique to it: never a duplicate, never one that replaces another.
            Ok(LinkUp::Duplicate { .. } | LinkUp::Replaces { .. }) => {
                tracing::error!(%id, pid = cred.pid, "a local link taken for a duplicate");
                self.to_close.push((id, ErrorCode::DUPLICATE));
            }
            Err(error) => self.refuse(link, error),
        }
    }

    /// The credentials of the process at the other end of `link`, if it is a local link that
    /// is up.
    pub fn attached(&self, link: crate::ids::LinkId) -> Option<PeerCred> {
        self.attached.get(&link).copied()
    }
}
