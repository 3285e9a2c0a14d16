//! What each neighbour hears of a mount ([`tell`]): the local mount, or the best route not
//! learned from it, within its filters; nothing at all while the node drains
//! ([`Table::drain`](super::Table::drain)), except on the links between its own planes.

use std::collections::VecDeque;

use super::distance::{Units, fd_after, metric_for};
use super::{Advert, Entry, Heard, MountKey, MountKind, Neighbour, Outbound, Role, Sent, Seqno};
use crate::ids::{NeighbourId, NodeId};
use crate::span::Metric;

/// Sends one neighbour what it should now hear about a mount, if that changed, and updates the
/// mount's FD and advertisement count.
pub(super) fn tell(
    node: NodeId,
    draining: bool,
    key: MountKey,
    entry: &mut Entry,
    id: NeighbourId,
    neighbour: &mut Neighbour,
    out: &mut VecDeque<(NeighbourId, Outbound)>,
) {
    let wanted = match draining && neighbour.node != node {
        // Draining: every neighbour but the node's own planes hears nothing any more.
        true => None,
        false => desired(node, key, entry, id, neighbour),
    };
    let sent = neighbour.sent.get(&key);
    match (wanted, sent) {
        (Some((w, _)), Some(s)) if Sent::of(&w) == *s => {}
        (Some((w, distance)), previous) => {
            if previous.is_none() {
                entry.advertised_to += 1;
            }
            // The originator too: after a detach, its FD (own seqno, 0) keeps it from taking a
            // neighbour's stale route back through itself.
            entry.fd = fd_after(entry.fd, w.seqno, distance);
            neighbour.sent.insert(key, Sent::of(&w));
            out.push_back((id, Outbound::Advert(w)));
        }
        (None, Some(_)) => {
            entry.advertised_to = entry.advertised_to.saturating_sub(1);
            neighbour.sent.remove(&key);
            out.push_back((id, Outbound::Retract(key)));
        }
        (None, None) => {}
    }
}

/// What `id` should hear about a mount: the local mount, or the best route not learned from it,
/// if its filters admit the mount.
fn desired(
    node: NodeId,
    key: MountKey,
    entry: &Entry,
    id: NeighbourId,
    neighbour: &Neighbour,
) -> Option<(Advert, Units)> {
    if let Some(local) = entry.local.as_deref() {
        let advert = Advert {
            mount: key,
            kind: local.kind,
            label: local.label,
            origin: node,
            seqno: entry.own_seqno.unwrap_or(Seqno(0)),
            metric: Metric::ZERO,
        };
        return admit(neighbour, advert).map(|advert| (advert, 0));
    }
    let route = [entry.best, entry.standby]
        .into_iter()
        .flatten()
        .filter_map(|from| entry.learned(from))
        .find(|r| r.from != id)?;
    if !route.reachable() {
        return None;
    }
    let distance = route.distance();
    let metric = metric_for(neighbour, node, distance);
    let Heard { origin, label, seqno, kind, .. } = route.heard;
    let advert = Advert { mount: key, kind, label, origin, seqno, metric };
    admit(neighbour, advert).map(|advert| (advert, distance))
}

/// The advertisement if the neighbour's filters let it through.
fn admit(neighbour: &Neighbour, advert: Advert) -> Option<Advert> {
    let client_span = matches!(advert.kind, MountKind::Client | MountKind::Aggregate);
    if neighbour.role == Role::Client && client_span {
        return None;
    }
    neighbour.wants.admits(advert.kind, advert.mount.cluster).then_some(advert)
}
