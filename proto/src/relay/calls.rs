//! The application's calls: opened along a mount's route, to a client behind the node's
//! aggregate, or to a mount a local link attached (inside its `LINK_ATTACH`).

use crate::error::{Error, Limit, Misuse};
use crate::ids::{LinkId, MountId, TxnId};
use crate::limits::CIRCUITS_MAX;
use crate::span::{ClientHolder, MountKey, NextHop};
use crate::wire::{ClientAddress, Command, Flags};

use super::circuit::{End, Open, Side, check_payload};
use super::output::LinkSet;
use super::share::Holder;
use super::{CLIENT_ADDRESS_LEN, CallId, Node};

impl Node {
    /// Opens a call to `mount` along its route. `flags` may hold DELETE (a one-shot request).
    /// No route: [`Misuse::NoRoute`] and nothing is opened. The application's calls count
    /// against the node's circuits and the next link's like a peer's.
    pub fn open<L: LinkSet>(
        &mut self,
        mount: MountKey,
        command: Command,
        payload: &[u8],
        flags: Flags,
        links: &mut L,
    ) -> Result<CallId, Error> {
        let route = self.table.route(mount).ok_or(Misuse::NoRoute)?;
        let (link, span) = match (route.next_hop, self.attached_to(mount)) {
            // A mount a local link attached: to its application, inside its LINK_ATTACH.
            (NextHop::Local, Some((app, attach))) => (app, Some(attach)),
            (NextHop::Local, None) => return Err(Misuse::NoRoute.into()),
            (NextHop::Neighbour(n), _) => (Self::link_of(n), None),
        };
        let call = self.open_on(link, mount, span, command, payload, flags, links);
        self.settle(links);
        call
    }

    /// Opens a call to the client mount `client` behind the node whose aggregate is
    /// `aggregate` (a satellite): the call goes to the aggregate, and the satellite passes it to
    /// its client. Otherwise as [`Node::open`].
    pub fn open_client<L: LinkSet>(
        &mut self,
        aggregate: MountKey,
        client: MountId,
        command: Command,
        payload: &[u8],
        flags: Flags,
        links: &mut L,
    ) -> Result<CallId, Error> {
        let target = MountKey { cluster: aggregate.cluster, mount: client };
        let holder = match self.is_our_aggregate(aggregate) {
            true => Some(self.clients.holder(target).ok_or(Misuse::NoRoute)?),
            false => None,
        };
        if let Some(ClientHolder::Here(holder)) = holder {
            let link = Self::link_of(holder);
            let call = self.open_on(link, target, None, command, payload, flags, links);
            self.settle(links);
            return call;
        }
        let mut addressed = Vec::with_capacity(CLIENT_ADDRESS_LEN + payload.len());
        addressed.extend_from_slice(&ClientAddress { client }.emit());
        addressed.extend_from_slice(payload);
        let Some(ClientHolder::Plane(plane)) = holder else {
            return self.open(aggregate, command, &addressed, flags, links);
        };
        // Our client, on another plane of this node: to that plane, still addressed.
        let link = self.plane_link(plane).ok_or(Misuse::NoRoute)?;
        let call = self.open_on(link, aggregate, None, command, &addressed, flags, links);
        self.settle(links);
        call
    }

    /// Opens a call inside the span for `mount` that the peer on `link` advertises.
    #[allow(clippy::too_many_arguments)] // one more than the lint's bound: the span it opens in
    fn open_on<L: LinkSet>(
        &mut self,
        link: LinkId,
        mount: MountKey,
        span: Option<TxnId>,
        command: Command,
        payload: &[u8],
        flags: Flags,
        links: &mut L,
    ) -> Result<CallId, Error> {
        check_payload(payload)?;
        if !self.links.contains_key(&link) {
            return Err(Misuse::NoRoute.into());
        }
        // Inside the given transaction (an application's LINK_ATTACH), else the link's span.
        let span = match span {
            Some(span) => span,
            None => links.span(link).and_then(|s| s.their_span(mount)).ok_or(Misuse::NoRoute)?,
        };
        if !self.admit(Holder::Local, Some(link), links) {
            self.counters.limited += 1;
            return Err(Limit::Circuits(CIRCUITS_MAX).into());
        }
        let b = End::link(link, None);
        let local = End::Local { closed: flags.contains(Flags::DELETE) };
        let (slot, generation) = self.new_circuit(local, b, command, Holder::Local, Some(link));
        self.counters.opened += 1;
        let state = self.links.get_mut(&link).ok_or(Misuse::UnknownLink(link))?;
        state.counters.circuits_out += 1;
        let open = Open { parent: span, command, flags: flags & Flags::DELETE, payload };
        self.open_end(slot, Side::B, link, open, links);
        Ok(CallId { slot, generation })
    }
}
