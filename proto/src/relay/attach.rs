//! Mounts applications attach through their local links (PROTOCOL.md 8.11): a `LINK_ATTACH`
//! transaction, held open while the mount is attached. The node attaches the mount as its own
//! (its table's local mount: advertised to every neighbour like a configured one, with this
//! node as origin), and a call to it is a circuit to the application, opened inside that
//! transaction as a call to a neighbour's mount opens inside its span. Closing the transaction,
//! or losing the link, detaches the mount; circuits to it end as any circuit whose link ends.
//!
//! Only a link the node's host marked local ([`Node::set_local`]: the attach socket, whose
//! access the operator controls) may attach. A mount the node already holds (configured,
//! attached by the application of the node itself, or by another local link) is refused, so two
//! applications never share one. Each local link attaches at most
//! [`ATTACH_MOUNTS_PER_LINK_MAX`] mounts.

use std::collections::HashSet;

use crate::error::Error;
use crate::ids::{LinkId, TxnId};
use crate::limits::ATTACH_MOUNTS_PER_LINK_MAX;
use crate::span::{Label, MountKey, MountKind, NextHop};
use crate::txn::Delivery;
use crate::wire::{AttachRequest, Command, ErrorCode, Flags};

use super::output::LinkSet;
use super::{Map, Node};

/// The mounts local links attached, both ways.
#[derive(Debug, Default)]
pub(super) struct Attached {
    /// The links that may attach.
    local: HashSet<LinkId, foldhash::fast::RandomState>,
    /// Each attached mount's link and `LINK_ATTACH` transaction.
    by_mount: Map<MountKey, (LinkId, TxnId)>,
    /// Each `LINK_ATTACH` transaction's mount (looked up as every transaction ends: empty on a
    /// node no application attached to, which costs that lookup nothing).
    by_txn: Map<(LinkId, TxnId), MountKey>,
    /// Mounts attached per link.
    per_link: Map<LinkId, usize>,
}

impl Node {
    /// Marks `link` as local: its peer is an application on this host, let in by the attach
    /// socket, which may attach mounts as the node's own. Call after [`Node::link_up`].
    pub fn set_local(&mut self, link: LinkId) {
        if self.links.contains_key(&link) {
            self.attached.local.insert(link);
        }
    }

    /// Where a call to `mount`, which the table routes here, goes: the local link that
    /// attached it and its `LINK_ATTACH` transaction, if one did.
    pub(super) fn attached_to(&self, mount: MountKey) -> Option<(LinkId, TxnId)> {
        if self.attached.by_mount.is_empty() {
            return None;
        }
        self.attached.by_mount.get(&mount).copied()
    }

    /// The local link whose application holds `mount` (attached it with a `LINK_ATTACH` still
    /// open), if one does: what the host shows and a reload leaves alone. Read-only.
    pub fn attached_by(&self, mount: MountKey) -> Option<LinkId> {
        self.attached_to(mount).map(|(link, _)| link)
    }

    /// Whether `link`'s transaction `txn` is a `LINK_ATTACH` the node took.
    pub(super) fn is_attach(&self, link: LinkId, txn: TxnId) -> bool {
        !self.attached.by_txn.is_empty() && self.attached.by_txn.contains_key(&(link, txn))
    }

    /// A `LINK_ATTACH` the peer on `link` opened: the mount attached and the transaction
    /// answered with an empty `LINK_ATTACH` (kept open), or refused alone with a forced close:
    /// `REFUSED` from a link that is not local or for a mount the node holds, `MALFORMED` for a
    /// request that does not parse or closes at once, `LIMIT_REACHED` past the link's share or
    /// a full table.
    pub(super) fn attach_open<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        let refused = |node: &mut Node, links: &mut L, code| {
            node.counters.refused += 1;
            node.refuse(link, links, delivery, code)
        };
        if !self.attached.local.contains(&link) {
            return refused(self, links, ErrorCode::REFUSED);
        }
        let Ok(request) = AttachRequest::parse(delivery.payload) else {
            return refused(self, links, ErrorCode::MALFORMED);
        };
        let (Some(kind), Ok(label)) =
            (MountKind::from_index(request.kind), Label::new(request.label))
        else {
            return refused(self, links, ErrorCode::MALFORMED);
        };
        if delivery.closes() {
            // It must stay open while the mount is attached.
            return refused(self, links, ErrorCode::MALFORMED);
        }
        let mount = MountKey { cluster: request.cluster, mount: request.mount };
        if self.attached.per_link.get(&link).copied().unwrap_or(0) >= ATTACH_MOUNTS_PER_LINK_MAX {
            return refused(self, links, ErrorCode::LIMIT_REACHED);
        }
        if self.table.route(mount).is_some_and(|r| r.next_hop == NextHop::Local) {
            return refused(self, links, ErrorCode::REFUSED);
        }
        if self.table.attach(mount, kind, label).is_err() {
            return refused(self, links, ErrorCode::LIMIT_REACHED);
        }
        self.attached.by_mount.insert(mount, (link, delivery.txn));
        self.attached.by_txn.insert((link, delivery.txn), mount);
        *self.attached.per_link.entry(link).or_default() += 1;
        self.route_table_output(links);
        let id = delivery.txn;
        let answer = |txn: &mut crate::txn::Link, out: &mut L::Out<'_>| {
            txn.send(out, id, Command::LINK_ATTACH, &[], Flags::NONE, ErrorCode::NONE)
        };
        match self.write(links, link, answer) {
            Some(Err(Error::Misuse(_))) | None => Ok(()),
            Some(result) => result,
        }
    }

    /// A message on a `LINK_ATTACH` the node took: a close detaches its mount (a plain one is
    /// answered with ours); anything else on it is ignored.
    pub(super) fn attach_message<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &Delivery<'_>,
    ) -> Result<(), Error> {
        if !delivery.closes() {
            return Ok(());
        }
        self.detach_attached(link, delivery.txn, links);
        if delivery.is_forced_close() {
            return Ok(());
        }
        let id = delivery.txn;
        let close = |txn: &mut crate::txn::Link, out: &mut L::Out<'_>| {
            txn.send(out, id, Command::LINK_ATTACH, &[], Flags::DELETE, ErrorCode::NONE)
        };
        match self.write(links, link, close) {
            Some(Err(Error::Misuse(_))) | None => Ok(()),
            Some(result) => result,
        }
    }

    /// `link`'s transaction `txn` ended: if it was a `LINK_ATTACH`, its mount is detached.
    pub(super) fn detach_attached<L: LinkSet>(&mut self, link: LinkId, txn: TxnId, links: &mut L) {
        if self.attached.by_txn.is_empty() {
            return;
        }
        let Some(mount) = self.attached.by_txn.remove(&(link, txn)) else { return };
        self.attached.by_mount.remove(&mount);
        if let Some(count) = self.attached.per_link.get_mut(&link) {
            *count = count.saturating_sub(1);
        }
        if self.table.detach(mount).is_ok() {
            self.route_table_output(links);
        }
    }

    /// `link` is gone: every mount it attached is detached.
    pub(super) fn attached_link_down<L: LinkSet>(&mut self, link: LinkId, links: &mut L) {
        self.attached.local.remove(&link);
        if self.attached.per_link.remove(&link).is_none() {
            return;
        }
        let txns: Vec<TxnId> =
            self.attached.by_txn.keys().filter(|(l, _)| *l == link).map(|&(_, t)| t).collect();
        for txn in txns {
            self.detach_attached(link, txn, links);
        }
        self.attached.per_link.remove(&link);
    }
}
