//! The node as one plane of several (DESIGN 7c.3): its internal links to the other planes, the
//! client directory they share, and the circuits that came into the node elsewhere.

use std::sync::Arc;

use crate::error::Error;
use crate::ids::LinkId;
use crate::span::{Role, SharedClients};

use super::Node;
use super::output::{LinkSet, LinkState};
use super::share::Holder;

/// An internal link to another plane of this node.
#[derive(Debug)]
pub(super) struct PlaneLink {
    /// The plane at its other end.
    pub(super) plane: u16,
    pub(super) link: LinkId,
    /// Who holds the next circuit it opens, as that plane's last `LINK_HOLDER` note said.
    pub(super) note: Option<Holder>,
}

impl Node {
    /// Keeps the client directory in `homes`, shared with the node's other planes, as plane
    /// `plane` (DESIGN 7c.3; [`SharedClients`]): a client mount is then claimed node-wide, and a
    /// call to an aggregate arriving here for a client on another plane is passed to that plane
    /// over the internal link to it ([`Node::sibling_up`]). Call after
    /// [`Node::serve_client_clusters`] and before any client links.
    pub fn share_clients(&mut self, homes: Arc<SharedClients>, plane: u16) {
        self.clients.share(homes, plane);
    }

    /// Of [`Node::circuits`], those that came into the node on another plane of it (DESIGN
    /// 7c.3): that plane counts them.
    pub fn circuits_from_planes(&self) -> usize {
        self.pool.count_where(|holder| match holder {
            Holder::Remote(_) => true,
            Holder::Link(link) => self.is_plane_link(link),
            Holder::Local => false,
        })
    }

    /// A link to another plane of this node came up: an internal link between two of the
    /// node's workers (DESIGN 7c.3), which the node treats as a link to a router of its own id.
    /// Our hello goes out on it. It is never a duplicate (one node has many such links, all to
    /// its own id), so it takes no part in the one-link-per-peer rule. `plane` is the index of
    /// the plane at its other end, as [`Node::share_clients`] names planes.
    pub fn sibling_up<L: LinkSet>(
        &mut self,
        link: LinkId,
        plane: u16,
        links: &mut L,
    ) -> Result<(), Error> {
        let result = self.sibling_up_inner(link, plane, links);
        self.settle(links);
        result
    }

    fn sibling_up_inner<L: LinkSet>(
        &mut self,
        link: LinkId,
        plane: u16,
        links: &mut L,
    ) -> Result<(), Error> {
        Self::bind_span(link, self.id, Role::Router, links)?;
        self.say_hello(link, Role::Router, links)?;
        let state = LinkState::new(self.id, false, false);
        self.links.insert(link, Box::new(state));
        self.planes.retain(|p| p.plane != plane);
        self.planes.push(PlaneLink { plane, link, note: None });
        Ok(())
    }

    /// The internal link to plane `plane` of this node, if it is up.
    pub(super) fn plane_link(&self, plane: u16) -> Option<LinkId> {
        self.planes.iter().find(|p| p.plane == plane).map(|p| p.link)
    }

    /// Whether `link` is an internal link to another plane of this node.
    pub(super) fn is_plane_link(&self, link: LinkId) -> bool {
        self.planes.iter().any(|p| p.link == link)
    }
}
