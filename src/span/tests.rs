//! Scripted exchanges against one table: the peer's messages are fed in, what the table sends is
//! checked.

use super::*;
use crate::error::Violation;
use crate::ids::{ClusterId, MountId};

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

/// A table with routers `ids` up, output drained.
fn table_with(ids: &[NeighbourId]) -> Table {
    let mut t = Table::new(ME);
    for &id in ids {
        t.handle_neighbour_up(id, Role::Router, Wants::all()).unwrap();
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
    t.handle_seqno_request(B, key(1), Seqno(6)).unwrap();
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
    t.handle_seqno_request(A, key(1), Seqno(1)).unwrap();
    assert!(drain(&mut t).is_empty());
    t.handle_seqno_request(A, key(1), Seqno(7)).unwrap();
    let out = drain(&mut t);
    assert!(matches!(out[..], [(A, Outbound::Advert(Advert { seqno: Seqno(7), .. }))]));
    // New neighbours hear it.
    t.handle_neighbour_up(B, Role::Router, Wants::all()).unwrap();
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
fn seqno_requests_are_forwarded_toward_the_originator() {
    let mut t = table_with(&[A, B, C]);
    t.handle_advert(A, &advert(key(1), 3, 1)).unwrap();
    t.handle_advert(C, &advert(key(1), 3, 1)).unwrap();
    drain(&mut t);
    // Our route is new enough: nothing to do.
    t.handle_seqno_request(B, key(1), Seqno(3)).unwrap();
    assert!(drain(&mut t).is_empty());
    // Our route is older than asked: forward along it, once.
    t.handle_seqno_request(B, key(1), Seqno(4)).unwrap();
    assert_eq!(drain(&mut t), vec![(A, Outbound::SeqnoRequest { mount: key(1), seqno: Seqno(4) })]);
    t.handle_seqno_request(C, key(1), Seqno(4)).unwrap();
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
    t.handle_seqno_request(B, key(2), Seqno(4)).unwrap();
    assert!(drain(&mut t).is_empty());
}

#[test]
fn filters_by_kind_cluster_and_client_role() {
    let mut t = table_with(&[A]);
    let masters_of_1 =
        Wants::new(KindSet::NONE.with(MountKind::Master), Clusters::Only(vec![ClusterId(1)]))
            .unwrap();
    t.handle_neighbour_up(B, Role::Router, masters_of_1).unwrap();
    t.handle_neighbour_up(C, Role::Client, Wants::all()).unwrap();
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
    // A client's own span is used here but goes nowhere else.
    t.handle_advert(C, &advert(key(4), 1, 0)).unwrap();
    assert_eq!(hop(&t, key(4)), Some(C));
    assert!(drain(&mut t).is_empty());
    // Another client attached later does not hear it either.
    t.handle_neighbour_up(NeighbourId(4), Role::Client, Wants::all()).unwrap();
    let out = drain(&mut t);
    assert_eq!(out.len(), 3);
    assert!(!out.iter().any(|(_, o)| matches!(o, Outbound::Advert(a) if a.mount == key(4))));
}

#[test]
fn limits_refuse_without_changing_anything() {
    let mut t = table_with(&[A, B]);
    for n in 0..SPANS_PER_NEIGHBOUR_MAX as u128 {
        t.handle_advert(A, &advert(key(n), 1, 0)).unwrap();
    }
    drain(&mut t);
    let over = advert(key(SPANS_PER_NEIGHBOUR_MAX as u128), 1, 0);
    let err = t.handle_advert(A, &over).unwrap_err();
    assert_eq!(err, Limit::NeighbourSpans(SPANS_PER_NEIGHBOUR_MAX).into());
    assert!(err.closes_link());
    assert!(!t.knows(over.mount));
    // Updating a known span is fine at the bound.
    t.handle_advert(A, &advert(key(0), 2, 0)).unwrap();
    // The table is full too (the two bounds are equal): B cannot add a mount, and a local
    // attach is refused, both without a panic.
    assert_eq!(t.handle_advert(B, &over), Err(Limit::SpanMounts(SPAN_MOUNTS_MAX).into()));
    assert_eq!(
        t.attach(over.mount, MountKind::Master, Label::EMPTY),
        Err(Limit::LocalMounts(SPAN_MOUNTS_MAX).into())
    );
    // Once a mount is retracted its tombstone makes room.
    t.handle_retract(A, key(0)).unwrap();
    t.handle_advert(B, &over).unwrap();
    assert!(t.knows(over.mount));
}

#[test]
fn misuse_is_reported() {
    let mut t = table_with(&[A]);
    assert_eq!(t.handle_advert(B, &advert(key(1), 1, 0)), Err(Misuse::UnknownNeighbour(B).into()));
    assert_eq!(t.handle_neighbour_down(B), Err(Misuse::UnknownNeighbour(B).into()));
    assert_eq!(
        t.handle_neighbour_up(A, Role::Router, Wants::all()),
        Err(Misuse::DuplicateNeighbour(A).into())
    );
    assert_eq!(Label::new(&[0; 65]), Err(Violation::SpanLabel(65).into()));
}

#[test]
fn a_route_at_the_largest_metric_is_unreachable() {
    let mut t = table_with(&[A, B]);
    t.handle_advert(A, &advert(key(1), 1, Metric::INFINITY.0 - 1)).unwrap();
    assert!(t.route(key(1)).is_none());
    assert!(!drain(&mut t).iter().any(|(_, o)| matches!(o, Outbound::Advert(_))));
    t.handle_advert(A, &advert(key(1), 1, Metric::INFINITY.0 - 2)).unwrap();
    assert_eq!(t.route(key(1)).unwrap().metric, Metric(Metric::INFINITY.0 - 1));
    // Advertised on at that metric, which B (like us above) cannot use.
    assert_eq!(
        drain(&mut t),
        vec![(B, Outbound::Advert(advert(key(1), 1, Metric::INFINITY.0 - 1)))]
    );
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
