//! Scripted exchanges against one table: the peer's messages are fed in, what the table sends is
//! checked.

use std::time::{Duration, Instant};

use super::*;
use crate::error::Violation;
use crate::ids::{ClusterId, MountId};
use crate::limits::{DEPARTED_MAX, DEPARTED_PER_NEIGHBOUR_MAX, SEQNO_RAISE_INTERVAL_MS};

const ME: NodeId = NodeId(100);
const A: NeighbourId = NeighbourId(1);
const B: NeighbourId = NeighbourId(2);
const C: NeighbourId = NeighbourId(3);

fn key(n: u128) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(n) }
}

fn advert(mount: MountKey, seqno: u16, metric: u16) -> Advert {
    Advert {
        mount,
        kind: MountKind::Master,
        label: Label::new(b"pfs").unwrap(),
        origin: NodeId(9),
        seqno: Seqno(seqno),
        metric: Metric(metric),
    }
}

/// The time the tests start at; only durations are added to it.
fn t0() -> Instant {
    use std::sync::OnceLock;
    static T0: OnceLock<Instant> = OnceLock::new();
    #[allow(clippy::disallowed_methods)] // read once; the table never reads it
    *T0.get_or_init(Instant::now)
}

fn ms(n: u64) -> Instant {
    t0() + Duration::from_millis(n)
}

/// The node on the other end of neighbour `id`.
fn node_of(id: NeighbourId) -> NodeId {
    NodeId(1000 + u128::from(id.0))
}

fn up(t: &mut Table, id: NeighbourId, role: Role, wants: Wants) -> Result<(), Error> {
    t.handle_neighbour_up(id, node_of(id), role, wants)
}

/// A table with routers `ids` up, output drained.
fn table_with(ids: &[NeighbourId]) -> Table {
    let mut t = Table::new(ME);
    for &id in ids {
        up(&mut t, id, Role::Router, Wants::all()).unwrap();
    }
    drain(&mut t);
    t
}

fn drain(t: &mut Table) -> Vec<(NeighbourId, Outbound)> {
    std::iter::from_fn(|| t.poll_transmit()).collect()
}

fn sent_to(out: &[(NeighbourId, Outbound)], id: NeighbourId) -> Vec<Outbound> {
    out.iter().filter(|(n, _)| *n == id).map(|(_, o)| *o).collect()
}

fn hop(t: &Table, m: MountKey) -> Option<NeighbourId> {
    match t.route(m)?.next_hop {
        NextHop::Neighbour(n) => Some(n),
        NextHop::Local => None,
    }
}

#[test]
fn first_advert_is_selected_and_propagated_with_split_horizon() {
    let mut t = table_with(&[A, B]);
    t.handle_advert(A, &advert(key(1), 1, 3)).unwrap();
    let route = t.route(key(1)).unwrap();
    assert_eq!(
        (route.next_hop, route.metric, route.seqno),
        (NextHop::Neighbour(A), Metric(4), Seqno(1))
    );
    let out = drain(&mut t);
    // B hears the route one hop further; A hears nothing (nothing learned elsewhere).
    assert_eq!(sent_to(&out, B), vec![Outbound::Advert(advert(key(1), 1, 4))]);
    assert!(sent_to(&out, A).is_empty());
    assert_eq!(t.feasibility_distance(key(1)), Some((Seqno(1), Metric(4))));
}

#[test]
fn unfeasible_advert_is_refused_and_starvation_asks_for_a_new_seqno() {
    let mut t = table_with(&[A, B]);
    t.handle_advert(A, &advert(key(1), 5, 2)).unwrap();
    drain(&mut t); // FD = (5, 3)
    // Same seqno, metric not below FD's: unfeasible, not selected.
    t.handle_advert(B, &advert(key(1), 5, 3)).unwrap();
    assert_eq!(hop(&t, key(1)), Some(A));
    assert!(t.standby(key(1)).is_none());
    drain(&mut t);
    // A's route goes: B's route is all that is left and it is unfeasible.
    t.handle_retract(A, key(1)).unwrap();
    assert!(t.route(key(1)).is_none());
    let out = drain(&mut t);
    assert!(out.contains(&(B, Outbound::Retract(key(1)))));
    assert!(out.contains(&(B, Outbound::SeqnoRequest { mount: key(1), seqno: Seqno(6) })));
    // Asked once: hearing the same request back does not ask again.
    t.handle_seqno_request(B, key(1), Seqno(6), t0()).unwrap();
    assert!(drain(&mut t).is_empty());
    // A newer seqno is feasible whatever its metric.
    t.handle_advert(B, &advert(key(1), 6, 40)).unwrap();
    assert_eq!(hop(&t, key(1)), Some(B));
    assert_eq!(t.route(key(1)).unwrap().metric, Metric(41));
}

#[test]
fn strictly_smaller_metric_with_same_seqno_is_feasible() {
    let mut t = table_with(&[A, B, C]);
    t.handle_advert(A, &advert(key(1), 5, 4)).unwrap(); // FD (5, 5)
    t.handle_advert(B, &advert(key(1), 5, 2)).unwrap();
    assert_eq!(hop(&t, key(1)), Some(B));
    // An older seqno is never feasible.
    t.handle_advert(C, &advert(key(1), 4, 0)).unwrap();
    assert_eq!(hop(&t, key(1)), Some(B));
}

#[test]
fn standby_is_equal_cost_and_takes_over_at_once() {
    let mut t = table_with(&[A, B, C]);
    t.handle_advert(A, &advert(key(1), 1, 2)).unwrap();
    t.handle_advert(B, &advert(key(1), 1, 2)).unwrap();
    t.handle_advert(C, &advert(key(1), 1, 3)).unwrap(); // longer: could lead back through us
    assert_eq!(hop(&t, key(1)), Some(A));
    assert_eq!(t.standby(key(1)).map(|r| r.next_hop), Some(NextHop::Neighbour(B)));
    let out = drain(&mut t);
    // A (the best route's neighbour) is told about the standby path.
    assert_eq!(sent_to(&out, A).last(), Some(&Outbound::Advert(advert(key(1), 1, 3))));
    t.handle_neighbour_down(A).unwrap();
    assert_eq!(hop(&t, key(1)), Some(B));
    assert_eq!(t.route(key(1)).unwrap().metric, Metric(3));
    // The metric-3 route from C is not feasible (FD is (1, 3)), so no new standby.
    assert!(t.standby(key(1)).is_none());
}

#[test]
fn best_neighbour_hears_a_retraction_when_there_is_no_second_path() {
    let mut t = table_with(&[A, B]);
    t.handle_advert(B, &advert(key(1), 1, 1)).unwrap();
    let out = drain(&mut t);
    assert_eq!(sent_to(&out, A), vec![Outbound::Advert(advert(key(1), 1, 2))]);
    assert!(sent_to(&out, B).is_empty());
    // A now offers a path; it is better: A becomes best, and B hears about A's path.
    t.handle_advert(A, &advert(key(1), 1, 0)).unwrap();
    let out = drain(&mut t);
    assert_eq!(hop(&t, key(1)), Some(A));
    assert_eq!(sent_to(&out, B), vec![Outbound::Advert(advert(key(1), 1, 1))]);
    // A can no longer be told about A's own path: it is retracted from A (B's path, metric 1,
    // is not feasible against FD (1, 1) so there is no standby to offer).
    assert_eq!(sent_to(&out, A), vec![Outbound::Retract(key(1))]);
}

#[test]
fn retraction_removes_everything() {
    let mut t = table_with(&[A, B]);
    t.handle_advert(A, &advert(key(1), 1, 0)).unwrap();
    drain(&mut t);
    t.handle_advert(A, &advert(key(1), 1, Metric::INFINITY.0)).unwrap();
    assert!(t.route(key(1)).is_none());
    assert!(!t.knows(key(1)));
    assert_eq!(t.mounts().count(), 0);
    assert_eq!(t.spans_from(A), 0);
    assert_eq!(drain(&mut t), vec![(B, Outbound::Retract(key(1)))]);
    // A retraction of something unknown is ignored.
    t.handle_retract(B, key(7)).unwrap();
    assert!(drain(&mut t).is_empty());
}

#[test]
fn local_mount_is_advertised_retracted_and_bumped_on_request() {
    let mut t = table_with(&[A]);
    t.attach(key(1), MountKind::Slave, Label::new(b"x").unwrap()).unwrap();
    assert_eq!(t.route(key(1)).unwrap().next_hop, NextHop::Local);
    let out = drain(&mut t);
    let Outbound::Advert(a) = out[0].1 else { panic!("{out:?}") };
    assert_eq!(
        (a.origin, a.seqno, a.metric, a.kind),
        (ME, Seqno(1), Metric::ZERO, MountKind::Slave)
    );
    // A route to our own mount from elsewhere is ignored.
    t.handle_advert(A, &advert(key(1), 9, 1)).unwrap();
    assert_eq!(t.route(key(1)).unwrap().next_hop, NextHop::Local);
    assert_eq!(t.spans_from(A), 0);
    // A request for an older or equal seqno changes nothing; a newer one is honoured.
    t.handle_seqno_request(A, key(1), Seqno(1), t0()).unwrap();
    assert!(drain(&mut t).is_empty());
    t.handle_seqno_request(A, key(1), Seqno(7), t0()).unwrap();
    let out = drain(&mut t);
    assert!(matches!(out[..], [(A, Outbound::Advert(Advert { seqno: Seqno(7), .. }))]));
    // New neighbours hear it.
    up(&mut t, B, Role::Router, Wants::all()).unwrap();
    assert_eq!(drain(&mut t).len(), 1);
    t.detach(key(1)).unwrap();
    assert_eq!(drain(&mut t), vec![(A, Outbound::Retract(key(1))), (B, Outbound::Retract(key(1)))]);
    assert!(!t.knows(key(1)));
    assert_eq!(t.detach(key(1)), Err(Misuse::NotAttached.into()));
    // Re-attaching goes on from the seqno it had.
    t.attach(key(1), MountKind::Slave, Label::EMPTY).unwrap();
    assert_eq!(t.route(key(1)).unwrap().seqno, Seqno(8));
}

#[test]
fn a_refused_advertisement_is_as_if_never_heard() {
    // PROTOCOL.md 8.5 and 9.8: a neighbour that refused a span holds nothing of the mount.
    let mut t = table_with(&[A, B, C]);
    t.handle_advert(A, &advert(key(1), 1, 2)).unwrap();
    let heard = Outbound::Advert(advert(key(1), 1, 3));
    assert_eq!(sent_to(&drain(&mut t), B), vec![heard]);
    // B refuses it: nothing is offered again at once (it would only be refused again), and FD
    // stays where the advertisement put it.
    t.handle_refused(B, key(1)).unwrap();
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.feasibility_distance(key(1)), Some((Seqno(1), Metric(3))));
    // The next change of the mount offers it afresh, though what B should hear is the same
    // (C's equal route only becomes the standby).
    t.handle_advert(C, &advert(key(1), 1, 2)).unwrap();
    assert_eq!(sent_to(&drain(&mut t), B), vec![heard]);
    // A local mount refused by B, then detached. B should hear nothing: the table says so as to
    // everyone (B's span link, holding no span of the mount, sends nothing) and forgets it.
    t.attach(key(2), MountKind::Master, Label::EMPTY).unwrap();
    assert_eq!(drain(&mut t).len(), 3);
    t.handle_refused(B, key(2)).unwrap();
    t.detach(key(2)).unwrap();
    let gone = Outbound::Retract(key(2));
    assert_eq!(drain(&mut t), vec![(A, gone), (B, gone), (C, gone)]);
    // A refusal crossing our retraction changes nothing; an unknown neighbour is a misuse.
    t.handle_refused(B, key(2)).unwrap();
    t.attach(key(2), MountKind::Master, Label::EMPTY).unwrap();
    assert_eq!(drain(&mut t).len(), 3, "B is told of it again like the others");
    let stranger = NeighbourId(9);
    assert_eq!(t.handle_refused(stranger, key(2)), Err(Misuse::UnknownNeighbour(stranger).into()));
}

#[test]
fn seqno_requests_are_forwarded_toward_the_originator() {
    let mut t = table_with(&[A, B, C]);
    t.handle_advert(A, &advert(key(1), 3, 1)).unwrap();
    t.handle_advert(C, &advert(key(1), 3, 1)).unwrap();
    drain(&mut t);
    // Our route is new enough: nothing to do.
    t.handle_seqno_request(B, key(1), Seqno(3), t0()).unwrap();
    assert!(drain(&mut t).is_empty());
    // Our route is older than asked: forward along it, once.
    t.handle_seqno_request(B, key(1), Seqno(4), t0()).unwrap();
    assert_eq!(drain(&mut t), vec![(A, Outbound::SeqnoRequest { mount: key(1), seqno: Seqno(4) })]);
    t.handle_seqno_request(C, key(1), Seqno(4), t0()).unwrap();
    assert!(drain(&mut t).is_empty());
    // The link it went over dies: it may be lost, so it goes again along the new route.
    t.handle_neighbour_down(A).unwrap();
    let out = drain(&mut t);
    assert!(
        out.contains(&(C, Outbound::SeqnoRequest { mount: key(1), seqno: Seqno(4) })),
        "{out:?}"
    );
    // The newer seqno arrives: the request is satisfied and forgotten.
    t.handle_advert(C, &advert(key(1), 4, 1)).unwrap();
    drain(&mut t);
    t.handle_neighbour_down(C).unwrap();
    assert!(!drain(&mut t).iter().any(|(_, o)| matches!(o, Outbound::SeqnoRequest { .. })));
    // Unknown mounts are dropped.
    t.handle_seqno_request(B, key(2), Seqno(4), t0()).unwrap();
    assert!(drain(&mut t).is_empty());
}

#[test]
fn filters_by_kind_cluster_and_client_role() {
    let mut t = table_with(&[A]);
    let masters_of_1 =
        Wants::new(KindSet::NONE.with(MountKind::Master), Clusters::Only(vec![ClusterId(1)]))
            .unwrap();
    up(&mut t, B, Role::Router, masters_of_1).unwrap();
    up(&mut t, C, Role::Client, Wants::all()).unwrap();
    let other_cluster = MountKey { cluster: ClusterId(2), mount: MountId(5) };
    t.handle_advert(A, &advert(key(1), 1, 0)).unwrap();
    t.handle_advert(A, &advert(other_cluster, 1, 0)).unwrap();
    t.handle_advert(A, &Advert { kind: MountKind::Cache, ..advert(key(2), 1, 0) }).unwrap();
    t.handle_advert(A, &Advert { kind: MountKind::Client, ..advert(key(3), 1, 0) }).unwrap();
    let out = drain(&mut t);
    let to_b: Vec<MountKey> = sent_to(&out, B)
        .iter()
        .map(|o| match o {
            Outbound::Advert(a) => a.mount,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(to_b, vec![key(1)]);
    // The client hears every non-client span, not the client one.
    assert_eq!(sent_to(&out, C).len(), 3);
    assert!(
        !sent_to(&out, C).iter().any(|o| matches!(o, Outbound::Advert(a) if a.mount == key(3)))
    );
    // A client's span is never a route (the node keeps clients' mounts apart): whatever it
    // names, it cannot shadow, replace or hide one.
    assert_eq!(t.handle_advert(C, &advert(key(1), 9, 0)), Err(Misuse::ClientAdvert.into()));
    assert_eq!(t.handle_advert(C, &advert(key(4), 1, 0)), Err(Misuse::ClientAdvert.into()));
    assert_eq!(hop(&t, key(1)), Some(A));
    assert!(!t.knows(key(4)));
    assert!(drain(&mut t).is_empty());
    // Another client attached later hears the same three.
    up(&mut t, NeighbourId(4), Role::Client, Wants::all()).unwrap();
    assert_eq!(drain(&mut t).len(), 3);
}

#[test]
fn shares_and_a_full_table_refuse_the_newcomer_alone() {
    let mut t = table_with(&[A, B, C]);
    let share = SPANS_PER_NEIGHBOUR_MAX as u128;
    for n in 0..share {
        t.handle_advert(A, &advert(key(n), 1, 0)).unwrap();
    }
    drain(&mut t);
    // A has its share: one more from it is refused, and the refusal is not the link's end.
    let over = advert(key(share), 1, 0);
    let err = t.handle_advert(A, &over).unwrap_err();
    assert_eq!(err, Limit::NeighbourSpans(SPANS_PER_NEIGHBOUR_MAX).into());
    assert!(!err.closes_link());
    assert!(!t.knows(over.mount));
    // Updating a known span is fine at the bound.
    t.handle_advert(A, &advert(key(0), 2, 0)).unwrap();
    // B takes the rest of the table: one neighbour could not fill it alone.
    for n in share..2 * share {
        t.handle_advert(B, &advert(key(n), 1, 0)).unwrap();
    }
    drain(&mut t);
    assert_eq!(t.len(), SPAN_MOUNTS_MAX);
    // Full: C's new mount is refused (nobody's is evicted or blamed), as is a local attach;
    // a route to a mount the table has is still taken.
    let newcomer = advert(key(2 * share), 1, 0);
    let err = t.handle_advert(C, &newcomer).unwrap_err();
    assert_eq!(err, Limit::SpanMounts(SPAN_MOUNTS_MAX).into());
    assert!(!err.closes_link());
    assert_eq!(
        t.attach(newcomer.mount, MountKind::Master, Label::EMPTY),
        Err(Limit::LocalMounts(SPAN_MOUNTS_MAX).into())
    );
    t.handle_advert(C, &advert(key(1), 1, 0)).unwrap();
    assert_eq!(t.spans_from(A), SPANS_PER_NEIGHBOUR_MAX);
    // Once a mount is retracted, its tombstone makes room.
    t.handle_retract(A, key(0)).unwrap();
    t.handle_advert(C, &newcomer).unwrap();
    assert!(t.knows(newcomer.mount));
}

#[test]
fn tombstones_are_charged_to_the_node_that_made_them_go() {
    let mut t = table_with(&[A, B]);
    // B's mount goes: its tombstone keeps its feasibility distance.
    t.handle_advert(B, &advert(key(999_999), 4, 2)).unwrap();
    t.handle_retract(B, key(999_999)).unwrap();
    assert_eq!(t.tombstones(), 1);
    // A advertises and retracts new mounts in a loop: only its own share is kept.
    for n in 0..3 * DEPARTED_PER_NEIGHBOUR_MAX as u128 {
        t.handle_advert(A, &advert(key(n), 1, 0)).unwrap();
        t.handle_retract(A, key(n)).unwrap();
    }
    drain(&mut t);
    assert_eq!(t.tombstones(), DEPARTED_PER_NEIGHBOUR_MAX + 1);
    assert_eq!(t.feasibility_distance(key(999_999)), Some((Seqno(4), Metric(3))), "B's kept");
    assert_eq!(t.feasibility_distance(key(0)), None, "A's oldest forgotten");
    // A neighbour's share outlives its link: its node's tombstones are still its own.
    t.handle_neighbour_down(A).unwrap();
    up(&mut t, A, Role::Router, Wants::all()).unwrap();
    t.handle_advert(A, &advert(key(5_000_000), 1, 0)).unwrap();
    t.handle_retract(A, key(5_000_000)).unwrap();
    assert_eq!(t.tombstones(), DEPARTED_PER_NEIGHBOUR_MAX + 1);
    assert!(t.feasibility_distance(key(999_999)).is_some());
    // A revived tombstone is live again and no longer charged.
    t.handle_advert(B, &advert(key(999_999), 5, 0)).unwrap();
    assert_eq!(t.tombstones(), DEPARTED_PER_NEIGHBOUR_MAX);
    assert!(t.knows(key(999_999)));
}

#[test]
fn tombstones_in_all_are_bounded_and_the_biggest_holder_gives_way() {
    // More routers than DEPARTED_MAX / DEPARTED_PER_NEIGHBOUR_MAX, each at its full share.
    let routers = DEPARTED_MAX / DEPARTED_PER_NEIGHBOUR_MAX + 2;
    let ids: Vec<NeighbourId> = (1..=routers as u64).map(NeighbourId).collect();
    let mut t = table_with(&ids);
    let mut n = 0u128;
    for &id in &ids[1..] {
        for _ in 0..DEPARTED_PER_NEIGHBOUR_MAX {
            t.handle_advert(id, &advert(key(n), 1, 0)).unwrap();
            t.handle_retract(id, key(n)).unwrap();
            n += 1;
        }
        drain(&mut t);
    }
    assert_eq!(t.tombstones(), DEPARTED_MAX);
    assert_eq!(t.departed_total, DEPARTED_MAX);
    // The first router's one tombstone is kept: the others hold more and give way first.
    t.handle_advert(ids[0], &advert(key(n), 1, 0)).unwrap();
    t.handle_retract(ids[0], key(n)).unwrap();
    assert_eq!(t.tombstones(), DEPARTED_MAX);
    assert!(t.feasibility_distance(key(n)).is_some(), "the smallest holder's tombstone kept");
    assert_eq!(t.departed.get(&node_of(ids[0])).map(VecDeque::len), Some(1));
    assert!(t.departed.values().all(|q| q.len() <= DEPARTED_PER_NEIGHBOUR_MAX));
}

#[test]
fn a_neighbours_seqno_requests_wait_for_its_budget_coalesced_per_mount() {
    let mut t = table_with(&[A, B]);
    let burst = SEQNO_REQUEST_BURST as u128;
    for n in 0..burst + 10 {
        t.attach(key(n), MountKind::Master, Label::EMPTY).unwrap();
    }
    drain(&mut t);
    // A asks for every mount at once: its burst is served, the rest waits.
    for n in 0..burst + 10 {
        t.handle_seqno_request(A, key(n), Seqno(2), t0()).unwrap();
    }
    assert_eq!(drain(&mut t).len(), 2 * burst as usize, "each raise told to A and B");
    assert_eq!(t.seqno_requests_delayed(A), 10);
    // Asked again while waiting: coalesced, not counted twice; another neighbour is not held up.
    t.handle_seqno_request(A, key(burst), Seqno(3), ms(1)).unwrap();
    assert_eq!(t.seqno_requests_delayed(A), 10);
    t.handle_seqno_request(B, key(burst + 1), Seqno(2), ms(1)).unwrap();
    assert_eq!(drain(&mut t).len(), 2, "B's request is served at once");
    // The waiting requests are served as A's budget refills, at its rate.
    let due = t.poll_timeout().expect("a deadline for A's waiting requests");
    assert!(due > t0() && due <= ms(1000 / u64::from(SEQNO_REQUESTS_PER_SEC) + 1), "{due:?}");
    t.handle_timeout(ms(1000));
    let out = drain(&mut t);
    let raised: Vec<(MountKey, Seqno)> = out
        .iter()
        .filter(|(n, _)| *n == A)
        .map(|(_, o)| match o {
            Outbound::Advert(a) => (a.mount, a.seqno),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(raised.len(), 9, "the nine still behind (B's was served meanwhile)");
    assert!(raised.contains(&(key(burst), Seqno(3))), "the newest seqno asked");
    assert_eq!(t.poll_timeout(), None);
}

#[test]
fn an_originator_raises_a_mount_at_most_once_per_interval() {
    let mut t = table_with(&[A]);
    t.attach(key(1), MountKind::Master, Label::EMPTY).unwrap();
    drain(&mut t);
    t.handle_seqno_request(A, key(1), Seqno(2), ms(0)).unwrap();
    assert_eq!(drain(&mut t).len(), 1);
    // Within the interval: coalesced into one raise when it has passed.
    t.handle_seqno_request(A, key(1), Seqno(3), ms(1)).unwrap();
    t.handle_seqno_request(A, key(1), Seqno(4), ms(2)).unwrap();
    assert!(drain(&mut t).is_empty());
    assert_eq!(t.poll_timeout(), Some(ms(SEQNO_RAISE_INTERVAL_MS)));
    t.handle_timeout(ms(SEQNO_RAISE_INTERVAL_MS - 1));
    assert!(drain(&mut t).is_empty());
    t.handle_timeout(ms(SEQNO_RAISE_INTERVAL_MS));
    let out = drain(&mut t);
    assert!(matches!(out[..], [(A, Outbound::Advert(Advert { seqno: Seqno(4), .. }))]), "{out:?}");
}

#[test]
fn a_clients_request_asks_one_past_the_newest_seqno_known() {
    let mut t = table_with(&[A]);
    up(&mut t, C, Role::Client, Wants::all()).unwrap();
    t.attach(key(1), MountKind::Master, Label::EMPTY).unwrap();
    t.handle_advert(A, &advert(key(2), 3, 0)).unwrap();
    drain(&mut t);
    // At the originator: by one, however far the client asks.
    t.handle_seqno_request(C, key(1), Seqno(0x7000), t0()).unwrap();
    assert_eq!(t.route(key(1)).unwrap().seqno, Seqno(2));
    drain(&mut t);
    // On the way: passed on for one past the newest known.
    t.handle_seqno_request(C, key(2), Seqno(0x7000), t0()).unwrap();
    assert_eq!(drain(&mut t), vec![(A, Outbound::SeqnoRequest { mount: key(2), seqno: Seqno(4) })]);
    // A router is taken at its word (it may know a seqno from before a restart).
    t.handle_seqno_request(A, key(1), Seqno(90), ms(SEQNO_RAISE_INTERVAL_MS)).unwrap();
    assert_eq!(t.route(key(1)).unwrap().seqno, Seqno(90));
}

#[test]
fn misuse_is_reported() {
    let mut t = table_with(&[A]);
    assert_eq!(t.handle_advert(B, &advert(key(1), 1, 0)), Err(Misuse::UnknownNeighbour(B).into()));
    assert_eq!(t.handle_neighbour_down(B), Err(Misuse::UnknownNeighbour(B).into()));
    assert_eq!(
        up(&mut t, A, Role::Router, Wants::all()),
        Err(Misuse::DuplicateNeighbour(A).into())
    );
    assert_eq!(Label::new(&[0; 65]), Err(Violation::SpanLabel(65).into()));
}

#[test]
fn a_route_at_the_largest_metric_is_unreachable() {
    let mut t = table_with(&[A, B]);
    t.handle_advert(A, &advert(key(1), 1, METRIC_MAX.0)).unwrap();
    assert!(t.route(key(1)).is_none());
    assert!(!drain(&mut t).iter().any(|(_, o)| matches!(o, Outbound::Advert(_))));
    t.handle_advert(A, &advert(key(1), 1, METRIC_MAX.0 - 1)).unwrap();
    assert_eq!(t.route(key(1)).unwrap().metric, METRIC_MAX);
    // Advertised on at that metric, which B (like us above) cannot use.
    assert_eq!(drain(&mut t), vec![(B, Outbound::Advert(advert(key(1), 1, METRIC_MAX.0)))]);
}

#[test]
fn a_detached_mount_is_not_routed_back_through_a_neighbour() {
    let mut t = table_with(&[A]);
    t.attach(key(1), MountKind::Master, Label::EMPTY).unwrap();
    drain(&mut t);
    t.detach(key(1)).unwrap();
    drain(&mut t);
    // A has not yet seen the retraction: it still offers its path, which goes through us.
    t.handle_advert(A, &Advert { origin: ME, ..advert(key(1), 1, 1) }).unwrap();
    assert!(t.route(key(1)).is_none());
    // Only a newer seqno (from a real originator) is feasible.
    t.handle_advert(A, &Advert { origin: NodeId(5), ..advert(key(1), 2, 1) }).unwrap();
    assert_eq!(hop(&t, key(1)), Some(A));
}

/// Two planes of one node (DESIGN 7c.3): a neighbour with the table's own node id.
fn with_plane(ids: &[NeighbourId], plane: NeighbourId) -> Table {
    let mut t = table_with(ids);
    t.handle_neighbour_up(plane, ME, Role::Router, Wants::all()).unwrap();
    drain(&mut t);
    t
}

#[test]
fn a_hop_between_planes_of_a_node_is_not_a_hop_to_its_neighbours() {
    // P is another plane of this node; it attached mount 1 (metric 0 in its units) and reaches
    // mount 2 in three hops (48 units).
    const P: NeighbourId = NeighbourId(7);
    let mut t = with_plane(&[A], P);
    t.handle_advert(P, &advert(key(1), 1, 0)).unwrap();
    t.handle_advert(P, &advert(key(2), 1, 3 * 16)).unwrap();
    // Our neighbours hear what they would from the plane itself: the mount is this node's,
    // and the other three hops away.
    assert_eq!(t.route(key(1)).unwrap().metric, Metric(0));
    assert_eq!(t.route(key(2)).unwrap().metric, Metric(3));
    let out = drain(&mut t);
    assert_eq!(
        sent_to(&out, A),
        vec![Outbound::Advert(advert(key(1), 1, 0)), Outbound::Advert(advert(key(2), 1, 3)),]
    );
    // The same route from a neighbour, as short in hops, is taken over the plane's: a circuit
    // that can stay on its plane does.
    t.handle_advert(A, &advert(key(2), 1, 2)).unwrap();
    assert_eq!(hop(&t, key(2)), Some(A));
    // The plane hears our distance in units: one plane hop more than it reported would not be
    // shorter than its own, so it cannot loop back through us.
    let out = drain(&mut t);
    assert_eq!(sent_to(&out, P), vec![Outbound::Advert(advert(key(2), 1, 3 * 16))]);
}

#[test]
fn a_plane_hears_the_units_of_a_route_and_neighbours_whole_hops() {
    const P: NeighbourId = NeighbourId(7);
    let mut t = with_plane(&[A, B], P);
    // From A, two hops: three from here, in units to the plane.
    t.handle_advert(A, &advert(key(1), 1, 2)).unwrap();
    let out = drain(&mut t);
    assert_eq!(sent_to(&out, P), vec![Outbound::Advert(advert(key(1), 1, 3 * 16))]);
    assert_eq!(sent_to(&out, B), vec![Outbound::Advert(advert(key(1), 1, 3))]);
    // A plane's own route, reported in units, with the same seqno and as long: not feasible
    // against what we advertised (it would be a loop through us).
    t.handle_advert(P, &advert(key(1), 1, 3 * 16)).unwrap();
    t.handle_retract(A, key(1)).unwrap();
    assert!(t.route(key(1)).is_none(), "no route through the plane that heard it from us");
}
