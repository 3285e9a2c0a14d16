//! Shares of a node's span table, against real `ringspan run` processes: a neighbour's spans
//! past its share or a full table are refused alone, never by evicting or blaming anyone; the
//! mounts a neighbour makes go away are charged to it; and seqno requests are served at a bounded
//! rate, coalesced, and clamped for clients (PROTOCOL.md 8.4 and 8.5). The shares of circuits:
//! `hostile_shares.rs`.
//!
//! Rogue routers here say in their hello that they want no spans at all: the node then sends
//! them nothing, and what they advertise is all that happens on their links.

use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{Closes, Snapshot};
use ringspan::ids::{ClusterId, MountId, TxnId};
use ringspan::limits::{
    DEPARTED_PER_NEIGHBOUR_MAX, SEQNO_RAISE_INTERVAL_MS, SPAN_MOUNTS_MAX, SPANS_PER_NEIGHBOUR_MAX,
};
use ringspan::span::{Advert, Clusters, KindSet, MountKey, MountKind, Role, Seqno, Wants};
use ringspan::wire::{ADVERT_LEN_MAX, Command, ErrorCode, Flags};

use crate::support::config::{allow, echo_mount, peer_as};
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::rogue::{Rogue, Seen, pump_all_until};
use crate::support::shares::*;
use crate::support::wait::{now, wait_for};

/// A rogue router linked to `node` with `identity` (granted router there), wanting no spans.
fn quiet_router(node: &Node, identity: &Identity) -> Rogue {
    let mut rogue = Rogue::connect(node.addr(), identity, Some(node.public())).unwrap();
    let nothing = Wants::new(KindSet::NONE, Clusters::Only(Vec::new())).unwrap();
    rogue.hello(Role::Router, nothing);
    rogue.pump_until(WAIT, |r| r.peer_hello().is_some()).unwrap();
    rogue
}

/// Mounts `ids` of `cluster`, as `rogue` originates them.
fn mounts(cluster: u128, ids: std::ops::Range<u128>) -> Vec<MountKey> {
    ids.map(|id| MountKey { cluster: ClusterId(cluster), mount: MountId(id) }).collect()
}

/// Opens one span per mount, in one go (the kit's `advertise`, batched). Returns the spans.
fn advertise_all(rogue: &mut Rogue, keys: &[MountKey]) -> Vec<TxnId> {
    let adverts: Vec<_> = keys.iter().map(|&k| rogue.own_advert(k, MountKind::Cache)).collect();
    rogue.send(|link, out| {
        adverts
            .iter()
            .map(|advert| {
                let mut buf = [0u8; ADVERT_LEN_MAX];
                let len = advert.encode(&mut buf);
                link.open(out, None, Command::LINK_SPAN, &buf[..len], Flags::NONE).unwrap()
            })
            .collect()
    })
}

/// Retracts the rogue's spans (their DELETE), in one go.
fn retract_all(rogue: &mut Rogue, spans: &[TxnId]) {
    rogue.send(|link, out| {
        for &span in spans {
            link.close(out, span, ErrorCode::NONE).unwrap();
        }
    });
}

/// Whether a snapshot has a route to `mount`.
fn has_route(s: &Snapshot, mount: MountKey) -> bool {
    let (cluster, id) = (format!("{:x}", mount.cluster.0), format!("{:x}", mount.mount.0));
    s.routes.iter().any(|r| r.cluster == cluster && r.mount == id)
}

/// Pumps `rogues` until `until` holds of them and `node`'s snapshot (asked at most every
/// 200 ms).
fn pump_for(
    node: &Node,
    rogues: &mut [&mut Rogue],
    what: &str,
    mut until: impl FnMut(&[&mut Rogue], &Snapshot) -> bool,
) -> Snapshot {
    let mut every = Every::new();
    let mut last = None;
    let result = pump_all_until(rogues, WAIT, |r| {
        if every.due() {
            last = node.try_snapshot();
        }
        last.as_ref().is_some_and(|s| until(r, s))
    });
    if let Err(error) = result {
        panic!("waiting for {what}: {error}");
    }
    last.unwrap()
}

/// Closes that were no one's fault but a killed process's.
fn only_killed(closes: &Closes, killed: u64) -> bool {
    closes.misbehaved == 0
        && closes.local == 0
        && closes.idle == 0
        && closes.not_reading == 0
        && closes.peer_closed + closes.io == killed
}

/// A full table refuses the newcomer's span, and only that span: the link that brought it stays
/// up and is not blamed, nothing already in the table is evicted, and the newcomer is taken
/// once there is room again.
#[test]
fn a_full_mount_table_refuses_the_newcomer_alone() {
    const L_MOUNT: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x20) };
    const OVER: usize = 100;
    let dir = scratch("shares-table");
    let (x, l) = (Node::new(&dir, "x"), Node::new(&dir, "l"));
    let ids: [Identity; 3] = std::array::from_fn(|_| Identity::generate().unwrap());
    let [a_id, b_id, app_id] = &ids;
    let keys = allow(&[
        (a_id.public_key(), "router"),
        (b_id.public_key(), "router"),
        (app_id.public_key(), "client"),
    ]);
    configure(&x, "router", &keys, "", &peer_as(&l, "router", false));
    configure(
        &l,
        "router",
        "",
        "",
        &(peer_as(&x, "router", true) + &echo_mount(L_MOUNT, "master", "echo")),
    );
    let _x_proc = x.run();
    let mut l_proc = Some(l.run());
    wait_for("x to learn l's mount", WAIT, || {
        x.try_snapshot().is_some_and(|s| has_route(&s, L_MOUNT))
    });
    let l_id = l.public().node_id();

    // A advertises its share and a hundred more: x takes the share, refuses the rest alone.
    let mut a = quiet_router(&x, a_id);
    let a_spans = advertise_all(&mut a, &mounts(2, 0..(SPANS_PER_NEIGHBOUR_MAX + OVER) as u128));
    let mut a_tally = Tally::default();
    let s = pump_for(&x, &mut [&mut a], "x to refuse A's spans past its share", |r, s| {
        a_tally.update(r[0]);
        a_tally.forced.len() >= OVER
            && row(s, a_id.node_id()).is_some_and(|r| r.refusals.spans_limited == OVER as u64)
    });
    let refused = &a_spans[SPANS_PER_NEIGHBOUR_MAX..];
    assert!(
        refused.iter().all(|t| a_tally.forced.get(t) == Some(&(ErrorCode::LIMIT_REACHED, false)))
    );
    assert_eq!(a_tally.forced.len(), OVER, "only the spans past its share");
    assert_eq!(row(&s, a_id.node_id()).unwrap().spans_in, SPANS_PER_NEIGHBOUR_MAX);
    assert_eq!(a.closed(), None);

    // B fills the rest of the table: its last span finds it full and is refused alone.
    let mut b = quiet_router(&x, b_id);
    let b_spans = advertise_all(&mut b, &mounts(3, 0..SPANS_PER_NEIGHBOUR_MAX as u128));
    let mut b_tally = Tally::default();
    let s =
        pump_for(&x, &mut [&mut a, &mut b], "x to refuse B's span past a full table", |r, s| {
            b_tally.update(r[1]);
            !b_tally.forced.is_empty()
                && row(s, b_id.node_id()).is_some_and(|r| r.refusals.spans_limited == 1)
        });
    assert_eq!(b_tally.forced.len(), 1);
    assert_eq!(
        b_tally.forced.get(b_spans.last().unwrap()),
        Some(&(ErrorCode::LIMIT_REACHED, false))
    );
    assert_eq!(row(&s, b_id.node_id()).unwrap().spans_in, SPANS_PER_NEIGHBOUR_MAX - 1);
    assert_eq!(s.routes.len(), SPAN_MOUNTS_MAX, "a's, b's and l's mounts fill the table");

    // l goes down (its mount with it), and B takes the place it left.
    drop(l_proc.take());
    pump_for(&x, &mut [&mut a, &mut b], "x to lose l", |_, s| {
        row(s, l_id).is_none() && s.routes.len() == SPAN_MOUNTS_MAX - 1
    });
    let b_more = advertise_all(&mut b, &mounts(3, 0x10_0000..0x10_0001));
    let s = pump_for(&x, &mut [&mut a, &mut b], "x to take B's span", |_, s| {
        row(s, b_id.node_id()).is_some_and(|r| r.spans_in == SPANS_PER_NEIGHBOUR_MAX)
    });
    assert_eq!(s.routes.len(), SPAN_MOUNTS_MAX);

    // l comes back and advertises its mount again: refused, for the table is full; its link
    // stays up and is not counted against it; nothing of A's or B's goes.
    l_proc = Some(l.run());
    let s = pump_for(&x, &mut [&mut a, &mut b], "x to refuse l's span", |_, s| {
        row(s, l_id).is_some_and(|r| r.refusals.spans_limited == 1)
    });
    let l_link = row(&s, l_id).unwrap().link;
    assert_eq!(row(&s, l_id).unwrap().spans_in, 0);
    assert!(!has_route(&s, L_MOUNT));
    assert_eq!(s.routes.len(), SPAN_MOUNTS_MAX);
    assert_eq!(row(&s, a_id.node_id()).unwrap().spans_in, SPANS_PER_NEIGHBOUR_MAX);
    assert_eq!(row(&s, b_id.node_id()).unwrap().spans_in, SPANS_PER_NEIGHBOUR_MAX);
    assert!(only_killed(&s.closes, 1), "x's closes: {:?}", s.closes);

    // A retracts ten mounts; l's link is the same one all along.
    retract_all(&mut a, &a_spans[..10]);
    let s = pump_for(&x, &mut [&mut a, &mut b], "x to take A's retractions", |_, s| {
        row(s, a_id.node_id()).is_some_and(|r| r.spans_in == SPANS_PER_NEIGHBOUR_MAX - 10)
    });
    assert_eq!(row(&s, l_id).map(|r| r.link), Some(l_link), "l's link was never closed");
    assert_eq!(s.routes.len(), SPAN_MOUNTS_MAX - 10);
    let l_seen = l.snapshot();
    assert_eq!(l_seen.closes.misbehaved, 0, "l blamed nobody");
    assert!(row(&l_seen, x.public().node_id()).is_some(), "l's link to x is up at l too");

    // l's next advertisement (it restarts) is taken, and honest calls reach it through x.
    drop(l_proc.take());
    pump_for(&x, &mut [&mut a, &mut b], "x to lose l again", |_, s| row(s, l_id).is_none());
    let _l_proc = l.run();
    let s = pump_for(&x, &mut [&mut a, &mut b], "x to take l's span", |_, s| has_route(s, L_MOUNT));
    assert_eq!(row(&s, l_id).unwrap().refusals.spans_limited, 0);
    let app = honest(app_id.clone(), Role::Client, &x);
    let mut every = Every::new();
    pump_all_until(&mut [&mut a, &mut b], WAIT, |_| {
        every.due() && has_route(&app.snapshot(), L_MOUNT)
    })
    .unwrap();
    const CALLS: u64 = 1_000;
    assert_good(&load(&app, L_MOUNT, CALLS, 16, &mut [&mut a, &mut b]), CALLS);

    // Nothing of A's or B's was touched but what x refused at once.
    a_tally.update(&a);
    b_tally.update(&b);
    assert_eq!((a_tally.forced.len(), b_tally.forced.len()), (OVER, 1));
    assert!(!b_tally.forced.contains_key(&b_more[0]), "B's last span is held");
    assert_eq!((a.closed(), b.closed()), (None, None));
    let s = x.snapshot();
    assert_eq!(row(&s, a_id.node_id()).unwrap().spans_in, SPANS_PER_NEIGHBOUR_MAX - 10);
    assert_eq!(row(&s, b_id.node_id()).unwrap().spans_in, SPANS_PER_NEIGHBOUR_MAX);
    assert!(only_killed(&s.closes, 2), "x's closes: {:?}", s.closes);
    assert_eq!(app.snapshot().closes, Closes::default(), "the honest client's link");
    app.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Mounts that went away are remembered (tombstones) charged to the peer that made them go, at
/// most `DEPARTED_PER_NEIGHBOUR_MAX` each: a peer advertising and retracting new mounts in a loop
/// churns its own share, never another peer's.
#[test]
fn departed_mounts_are_charged_to_their_peer() {
    const CHURN: u128 = 2_000;
    const ROUND: u128 = 500;
    let dir = scratch("shares-departed");
    let (x, l) = (Node::new(&dir, "x"), Node::new(&dir, "l"));
    let [r_id, app_id]: [Identity; 2] = std::array::from_fn(|_| Identity::generate().unwrap());
    let l_mounts = mounts(1, 0x21..0x24);
    configure(
        &x,
        "router",
        &allow(&[(r_id.public_key(), "router"), (app_id.public_key(), "client")]),
        "",
        &(peer_as(&l, "router", false) + &echo_mount(MASTER, "master", "echo")),
    );
    let l_tail: String = l_mounts.iter().map(|&m| echo_mount(m, "master", "echo")).collect();
    configure(&l, "router", "", "", &(peer_as(&x, "router", true) + &l_tail));
    let _x_proc = x.run();
    let mut l_proc = Some(l.run());
    let l_id = l.public().node_id();
    wait_for("x to learn l's mounts", WAIT, || {
        x.try_snapshot().is_some_and(|s| l_mounts.iter().all(|&m| has_route(&s, m)))
    });
    let app = honest(app_id, Role::Client, &x);
    assert!(app.wait_for_route(l_mounts[0], WAIT), "the honest client hears of l's mounts");
    assert_good(&load(&app, l_mounts[0], 300, 16, &mut []), 300);
    assert_eq!(x.snapshot().tombstones, 0);

    // l goes down: its three mounts are remembered, charged to l.
    drop(l_proc.take());
    let l_departed = l_mounts.len();
    wait_for("x to remember l's mounts", WAIT, || {
        x.try_snapshot().is_some_and(|s| row(&s, l_id).is_none() && s.tombstones == l_departed)
    });

    // A rogue router advertises and retracts 2,000 mounts of its own, 500 at a time: x never
    // remembers more than its share of them, and never forgets l's for them.
    let most = l_departed + DEPARTED_PER_NEIGHBOUR_MAX;
    let mut r = quiet_router(&x, &r_id);
    for round in 0..CHURN / ROUND {
        let keys = mounts(2, round * ROUND..(round + 1) * ROUND);
        let spans = advertise_all(&mut r, &keys);
        pump_for(&x, &mut [&mut r], "x to take the rogue's mounts", |_, s| {
            assert!(s.tombstones <= most, "{} tombstones", s.tombstones);
            row(s, r_id.node_id()).is_some_and(|row| row.spans_in == ROUND as usize)
        });
        retract_all(&mut r, &spans);
        let mut tally = Tally::default();
        pump_for(&x, &mut [&mut r], "x to forget the rogue's mounts", |r, s| {
            assert!(s.tombstones <= most, "{} tombstones", s.tombstones);
            tally.update(r[0]);
            spans.iter().all(|t| tally.ended.get(t) == Some(&ErrorCode::NONE))
                && row(s, r_id.node_id()).is_some_and(|row| row.spans_in == 0)
        });
    }
    let s = x.snapshot();
    assert_eq!(s.tombstones, most, "l's three and the rogue's share");
    assert_eq!(row(&s, r_id.node_id()).unwrap().refusals, Default::default());
    assert_eq!(r.closed(), None);

    // l comes back: its three tombstones were still there, and are live mounts again.
    let _l_proc = l.run();
    let s = pump_for(&x, &mut [&mut r], "x to learn l's mounts again", |_, s| {
        l_mounts.iter().all(|&m| has_route(s, m))
    });
    assert_eq!(s.tombstones, DEPARTED_PER_NEIGHBOUR_MAX, "l's came back to life");
    let mut every = Every::new();
    pump_all_until(&mut [&mut r], WAIT, |_| every.due() && has_route(&app.snapshot(), l_mounts[2]))
        .unwrap();
    assert_good(&load(&app, l_mounts[2], 300, 16, &mut [&mut r]), 300);
    assert_good(&load(&app, MASTER, 300, 16, &mut [&mut r]), 300);
    assert!(only_killed(&x.snapshot().closes, 1), "x's closes");
    assert_eq!(app.snapshot().closes, Closes::default(), "the honest client's link");
    app.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client flooding seqno requests for a mount, each asking far ahead: the originator raises
/// the seqno at most once per `SEQNO_RAISE_INTERVAL_MS`, by one each time (a client's request is
/// clamped to one past the newest seqno known), and the client's requests past its budget wait.
#[test]
fn seqno_requests_are_rate_limited_coalesced_and_clamped() {
    const REQUESTS: usize = 3_000;
    const PER_BATCH: usize = 100;
    const UPDATES: usize = 5;
    let dir = scratch("shares-seqno");
    let x = Node::new(&dir, "x");
    let observer_id = Identity::generate().unwrap();
    let keys = allow(&[(observer_id.public_key(), "router")]) + "accept_unknown_keys = true\n";
    configure(&x, "router", &keys, "", &echo_mount(MASTER, "master", "echo"));
    let _proc = x.run();
    wait_for("x to attach its master", WAIT, || {
        x.try_snapshot().is_some_and(|s| has_route(&s, MASTER))
    });
    let app = honest(Identity::generate().unwrap(), Role::Client, &x);
    assert!(app.wait_for_route(MASTER, WAIT), "the honest client hears of the master");
    // A router watching the master's span, and a stranger (a client) asking for seqnos.
    let mut observer = rogue_at(&x, &observer_id, Role::Router, MASTER);
    let mut asker = rogue_at(&x, &Identity::generate().unwrap(), Role::Client, MASTER);
    let (observed, first) = observer.spans()[&MASTER];
    let asked_on = asker.span_of(MASTER).unwrap();
    // The seqnos of the master's updates the observer received, in order.
    let updates = |observer: &Rogue| -> Vec<Seqno> {
        observer
            .log()
            .iter()
            .filter_map(|seen| match seen {
                Seen::Delivery(d) if d.txn == observed && !d.opens() && !d.closes() => {
                    assert_eq!(d.command, Command::LINK_SPAN);
                    Some(Advert::decode(&d.payload).unwrap().seqno)
                }
                _ => None,
            })
            .collect()
    };

    let started = now();
    let mut sent = 0;
    while sent < REQUESTS || updates(&observer).len() < UPDATES {
        assert!(
            now() < started + WAIT,
            "{} updates after {sent} requests",
            updates(&observer).len()
        );
        let known = asker.spans()[&MASTER].1.seqno;
        let request = Seqno::encode_request(Seqno(known.0.wrapping_add(0x4000)));
        asker.send(|link, out| {
            for _ in 0..PER_BATCH {
                let (request, none) = (&request[..], ErrorCode::NONE);
                link.send(out, asked_on, Command::LINK_SPAN_REQUEST, request, Flags::NONE, none)
                    .unwrap();
            }
        });
        sent += PER_BATCH;
        // What the node sends is read between batches (this paces the requests; nothing waits
        // on it).
        asker.pump(Duration::from_millis(10)).unwrap();
        observer.pump(Duration::from_millis(10)).unwrap();
    }
    // At most one raise per interval since the first request, each by exactly one.
    let check = |observer: &Rogue| {
        let seen = updates(observer);
        let elapsed = started.elapsed();
        let bound = 1 + elapsed.as_micros() / (u128::from(SEQNO_RAISE_INTERVAL_MS) * 1_000);
        assert!(seen.len() as u128 <= bound, "{} updates in {elapsed:?}", seen.len());
        let mut previous = first.seqno;
        for &seqno in &seen {
            assert_eq!(seqno, previous.next(), "raised by one: {seen:?} from {:?}", first.seqno);
            previous = seqno;
        }
        seen.len()
    };
    assert!(check(&observer) >= UPDATES);
    let s = x.snapshot();
    assert!(s.client_refusals.seqno_delayed > 0, "the asker's requests waited");
    assert_eq!(s.client_refusals.circuits_limited + s.client_refusals.spans_limited, 0);

    // Honest calls meanwhile are answered; the bound still holds afterwards.
    assert_good(&load(&app, MASTER, 500, 16, &mut [&mut asker, &mut observer]), 500);
    check(&observer);
    assert_eq!(asker.spans()[&MASTER].0, asked_on, "the asker's span was never retracted");
    assert_eq!((asker.closed(), observer.closed()), (None, None));
    assert_eq!(x.snapshot().closes, Closes::default());
    assert_eq!(app.snapshot().closes, Closes::default(), "the honest client's link");
    app.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
