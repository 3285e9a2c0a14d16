//! Shares of a node's circuits, against real `ringspan run` processes: no peer, and no group of
//! peers, can take more than its share of a node's circuits, and what a peer leaves open costs
//! it alone (PROTOCOL.md 8.6 and 8.7). The shares of its span table: `hostile_shares_spans.rs`.
//!
//! Each test sets hostile peers (the rogue kit: real links speaking the protocol, see
//! `support/rogue.rs`) against a node, checks that they are refused or confined and that the
//! node counts it on their links, and runs an honest call stream (the mount API in this test's
//! process) through the same nodes: it loses and corrupts nothing, and no honest link closes.
//!
//! Nothing here waits for time to pass: every wait is on a condition (a node's snapshot, what a
//! rogue received), with a generous timeout.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use ringspan::cipher::{Identity, PublicKey};
use ringspan::daemon::{CALL, CallEvent, Closes, Handle};
use ringspan::ids::{ClusterId, MountId, TxnId};
use ringspan::limits::{
    CLIENT_CALLS_MAX, CLIENT_TXNS_PER_LINK_MAX, LOCAL_TXNS_PER_LINK_MAX,
    RELAY_CIRCUITS_PER_LINK_MAX,
};
use ringspan::span::{MountKey, MountKind, Role};
use ringspan::wire::{ErrorCode, Flags};

use crate::support::config::{allow, echo_mount, peer_as};
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::rogue::{Rogue, pump_all_until};
use crate::support::shares::*;
use crate::support::wait::wait_for;

/// How many calls a rogue opens in one go.
const BATCH: usize = 1_024;

/// An echo node `e` with the master, and a relay `x` linked to it (x dials), both running; x
/// lets in `keys` with their roles and `x_extra` in `[node]`.
fn relay_and_echo(
    dir: &Path,
    keys: &[(PublicKey, &str)],
    x_role: &str,
    x_extra: &str,
) -> (Node, Node, [Proc; 2]) {
    let (x, e) = (Node::new(dir, "x"), Node::new(dir, "e"));
    configure(
        &e,
        "router",
        "",
        "",
        &(peer_as(&x, if x_role == "satellite" { "satellite" } else { "router" }, false)
            + &echo_mount(MASTER, "master", "echo")),
    );
    configure(&x, x_role, &(allow(keys) + x_extra), "", &peer_as(&e, "router", true));
    let procs = [e.run(), x.run()];
    wait_for("x to learn the master from e", WAIT, || {
        x.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    (x, e, procs)
}

/// A router holding every circuit x may open toward the master's node gives way, oldest
/// first, to an honest client's calls; it is refused past the link's share, and nobody's link
/// closes.
#[test]
fn a_router_hogging_circuits_gives_way() {
    let dir = scratch("shares-hog");
    let (rogue_id, app_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (x, e, _procs) = relay_and_echo(
        &dir,
        &[(rogue_id.public_key(), "router"), (app_id.public_key(), "client")],
        "router",
        "",
    );
    let mut hog = rogue_at(&x, &rogue_id, Role::Router, MASTER);
    let span = hog.span_of(MASTER).unwrap();

    // The hog opens calls it never closes, a batch at a time, until x refuses one, or until it
    // has opened all it may open on its link (its hello is one): as many as x may open toward e
    // in all, which a node without shares let it hold. e answers each call and closes its side;
    // the circuit stays open at x until the hog closes its own.
    let mut tally = Tally::default();
    let mut calls = Vec::new();
    while calls.len() < LOCAL_TXNS_PER_LINK_MAX - 1 {
        let count = BATCH.min(LOCAL_TXNS_PER_LINK_MAX - 1 - calls.len());
        let batch = open_calls(&mut hog, span, count, Flags::NONE);
        hog.pump_until(WAIT, |r| {
            tally.update(r);
            tally.heard_all(&batch)
        })
        .unwrap();
        calls.extend(batch);
        if !tally.forced.is_empty() {
            break;
        }
    }
    // x took exactly its share of circuits toward e, and refused the rest at once.
    let opened = calls.len();
    let held = calls.iter().filter(|c| !tally.forced.contains_key(c)).count();
    assert!(calls[..held].iter().all(|c| tally.answered.contains(c)), "the first ones held");
    assert_eq!(held, RELAY_CIRCUITS_PER_LINK_MAX, "circuits the hog holds through x");
    assert_eq!(tally.forced_with(ErrorCode::LIMIT_REACHED, false), opened - held);
    assert_eq!(tally.forced.len(), opened - held, "nothing forced closed but the refused");
    let s = x.snapshot();
    let hog_row = row(&s, hog.node_id()).unwrap();
    assert_eq!(hog_row.refusals.circuits_limited, (opened - held) as u64);
    assert_eq!(hog_row.refusals.circuits_preempted, 0);
    assert_eq!(row(&s, e.public().node_id()).unwrap().circuits_open, RELAY_CIRCUITS_PER_LINK_MAX);

    // An honest client of x calls the master through the same link: every call is answered,
    // each taking the place of one of the hog's oldest circuits.
    let app = honest(app_id, Role::Client, &x);
    assert!(app.wait_for_route(MASTER, WAIT), "the honest client hears of the master");
    const CALLS: u64 = 2_000;
    let report = load(&app, MASTER, CALLS, 32, &mut [&mut hog]);
    assert_good(&report, CALLS);

    // The hog paid: its oldest circuits were forced closed with LIMIT_REACHED, as many as x
    // counts on its link, and no more were refused.
    let mut every = Every::new();
    let mut preempted = None;
    hog.pump_until(WAIT, |r| {
        tally.update(r);
        if every.due() {
            let s = x.snapshot();
            preempted = row(&s, r.node_id()).map(|row| row.refusals.circuits_preempted as usize);
        }
        preempted.is_some_and(|p| p >= 1 && tally.forced_with(ErrorCode::LIMIT_REACHED, true) == p)
    })
    .unwrap();
    let preempted = preempted.unwrap();
    // Each honest call took one place at most.
    assert!(preempted <= CALLS as usize, "{preempted} preempted");
    let s = x.snapshot();
    let hog_row = row(&s, hog.node_id()).unwrap();
    assert_eq!(hog_row.refusals.circuits_limited, (opened - held) as u64);
    assert_eq!(s.counters.preempted, preempted as u64);
    assert_eq!(s.counters.limited, (opened - held) as u64);
    // The honest client was refused nothing and lost nothing.
    assert_eq!(s.client_refusals, Default::default(), "the honest client's link");
    assert_eq!(s.clients, 1);
    // Nobody's link closed: x's, e's, the honest client's, the hog's.
    assert_eq!(s.closes, Closes::default(), "x's links");
    assert_eq!(e.snapshot().closes, Closes::default(), "e's links");
    assert_eq!(app.snapshot().closes, Closes::default(), "the honest client's link");
    assert_eq!(hog.closed(), None);
    // What the hog still holds is all x holds: the rest were freed at both ends.
    let mut every = Every::new();
    hog.pump_until(WAIT, |_| {
        every.due() && x.try_snapshot().is_some_and(|s| s.circuits == held - preempted)
    })
    .unwrap();
    app.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Strangers at a satellite, each within its own calls' bound, together hold more circuits
/// than the satellite may open on its uplink: they share it among themselves, and an honest
/// client still gets every call through.
#[test]
fn strangers_together_cannot_starve_a_satellites_clients() {
    // 33 × 1,000 held calls: twice the uplink's share, and more than a node without shares
    // could open on one link at all.
    const ROGUES: usize = 33;
    const HELD: usize = 1_000;
    let dir = scratch("shares-strangers");
    let clients_of_1 = "accept_unknown_keys = true\nclient_clusters = [\"0x1\"]\n";
    let (s, e, _procs) = relay_and_echo(&dir, &[], "satellite", clients_of_1);
    let mut rogues: Vec<Rogue> = (0..ROGUES)
        .map(|_| rogue_at(&s, &Identity::generate().unwrap(), Role::Client, MASTER))
        .collect();
    let mut tallies: Vec<Tally> = (0..ROGUES).map(|_| Tally::default()).collect();
    let mut calls: Vec<Vec<TxnId>> = Vec::new();
    // One after the other, each opens its calls and holds them.
    for (rogue, tally) in rogues.iter_mut().zip(&mut tallies) {
        let span = rogue.span_of(MASTER).unwrap();
        let batch = open_calls(rogue, span, HELD, Flags::NONE);
        rogue
            .pump_until(WAIT, |r| {
                tally.update(r);
                tally.heard_all(&batch)
            })
            .unwrap();
        calls.push(batch);
    }
    // Once every forced close has reached its rogue, what they hold fills the uplink's share
    // exactly, and the satellite counted each refusal and preemption on the client links.
    let held = |tallies: &[Tally], calls: &[Vec<TxnId>]| -> Vec<usize> {
        calls
            .iter()
            .zip(tallies)
            .map(|(calls, t)| {
                calls.iter().filter(|c| t.answered.contains(c) && !t.forced.contains_key(c)).count()
            })
            .collect()
    };
    let mut every = Every::new();
    let mut refusals = None;
    {
        let mut pumped: Vec<&mut Rogue> = rogues.iter_mut().collect();
        pump_all_until(&mut pumped, WAIT, |r| {
            for (rogue, tally) in r.iter().zip(&mut tallies) {
                tally.update(rogue);
            }
            if every.due() {
                refusals = s.try_snapshot().map(|s| s.client_refusals);
            }
            let preempted: usize =
                tallies.iter().map(|t| t.forced_with(ErrorCode::LIMIT_REACHED, true)).sum();
            let limited: usize =
                tallies.iter().map(|t| t.forced_with(ErrorCode::LIMIT_REACHED, false)).sum();
            refusals.is_some_and(|c| {
                c.circuits_preempted == preempted as u64 && c.circuits_limited == limited as u64
            }) && held(&tallies, &calls).iter().sum::<usize>() == RELAY_CIRCUITS_PER_LINK_MAX
        })
        .unwrap();
    }
    let refusals = refusals.unwrap();
    assert!(refusals.circuits_preempted > 0, "later strangers took places of earlier ones");
    assert!(refusals.circuits_limited > 0, "and were refused past their share");
    // Max-min fair: every stranger wanted more than its share, and they settled within one
    // circuit of each other.
    let counts = held(&tallies, &calls);
    let (min, max) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
    assert!(max - min <= 1, "what each stranger holds: {counts:?}");
    let snapshot = s.snapshot();
    assert_eq!(
        row(&snapshot, e.public().node_id()).unwrap().circuits_open,
        RELAY_CIRCUITS_PER_LINK_MAX
    );
    assert_eq!(snapshot.clients, ROGUES);
    // On a satellite of several workers the strangers sit on all of them, and the share above
    // held across them (DESIGN 7c.3: a circuit is held by the link it came into the node on).
    if snapshot.workers.len() > 1 {
        let on: Vec<usize> = snapshot.workers.iter().map(|w| w.clients).collect();
        assert!(on.iter().all(|&n| n > 0), "strangers per worker: {on:?}");
    }

    // An honest stranger of the satellite calls the master: every call gets through, taking
    // places from the biggest holders, and is refused nothing itself.
    let app = honest(Identity::generate().unwrap(), Role::Client, &s);
    assert!(app.wait_for_route(MASTER, WAIT), "the honest client hears of the master");
    const CALLS: u64 = 2_000;
    let mut pumped: Vec<&mut Rogue> = rogues.iter_mut().collect();
    let report = load(&app, MASTER, CALLS, 32, &mut pumped);
    assert_good(&report, CALLS);
    let after = s.snapshot();
    assert_eq!(after.client_refusals.circuits_limited, refusals.circuits_limited, "none refused");
    assert!(after.client_refusals.circuits_preempted > refusals.circuits_preempted);
    assert_eq!(after.clients, ROGUES + 1);
    assert_eq!(after.closes, Closes::default(), "the satellite's links");
    assert_eq!(e.snapshot().closes, Closes::default(), "e's links");
    assert_eq!(app.snapshot().closes, Closes::default(), "the honest client's link");
    assert!(rogues.iter().all(|r| r.closed().is_none()), "the strangers are confined, not cut");
    app.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that never answers the node's refusals holds its calls' bound, then as many
/// refused transactions again, and then loses its link; an honest client of the same node is
/// served throughout.
#[test]
fn transactions_a_client_never_closes_cost_it_its_own_link() {
    let dir = scratch("shares-unclosed");
    let x = Node::new(&dir, "x");
    configure(
        &x,
        "router",
        "accept_unknown_keys = true\n",
        "",
        &echo_mount(MASTER, "master", "echo"),
    );
    let _proc = x.run();
    wait_for("x to attach its master", WAIT, || {
        x.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    let app = honest(Identity::generate().unwrap(), Role::Client, &x);
    assert!(app.wait_for_route(MASTER, WAIT), "the honest client hears of the master");
    assert_good(&load(&app, MASTER, 500, 16, &mut []), 500);

    let mut rogue = rogue_at(&x, &Identity::generate().unwrap(), Role::Client, MASTER);
    rogue.policy().answer_forced_closes = false;
    let span = rogue.span_of(MASTER).unwrap();
    let mut tally = Tally::default();
    // Its calls' bound, held: each answered by the echo master, none closed by the rogue.
    let held = open_calls(&mut rogue, span, CLIENT_CALLS_MAX, Flags::NONE);
    rogue
        .pump_until(WAIT, |r| {
            tally.update(r);
            tally.heard_all(&held)
        })
        .unwrap();
    assert!(tally.forced.is_empty(), "its first {CLIENT_CALLS_MAX} calls are carried");
    // More calls: each refused at once with LIMIT_REACHED. The rogue never answers a refusal,
    // so x keeps each transaction until its link's bound (its hello takes one place).
    let refusable = CLIENT_TXNS_PER_LINK_MAX - 1 - CLIENT_CALLS_MAX;
    let refused = open_calls(&mut rogue, span, refusable, Flags::NONE);
    rogue
        .pump_until(WAIT, |r| {
            tally.update(r);
            tally.heard_all(&refused)
        })
        .unwrap();
    assert!(
        refused.iter().all(|c| tally.forced.get(c) == Some(&(ErrorCode::LIMIT_REACHED, false)))
    );
    assert_eq!(tally.forced.len(), refusable, "none of the held calls was touched");
    assert_eq!(rogue.withheld(), refusable);
    let s = x.snapshot();
    assert_eq!(s.client_refusals.circuits_limited, refusable as u64);
    assert_eq!(s.counters.limited, refusable as u64);
    assert_eq!((s.clients, s.circuits, s.closes.misbehaved), (2, CLIENT_CALLS_MAX, 0));
    assert_eq!(rogue.closed(), None, "refusals alone do not cost the link");
    assert_good(&load(&app, MASTER, 500, 16, &mut [&mut rogue]), 500);
    assert_eq!(x.snapshot().counters.limited, refusable as u64, "the honest client's calls");

    // One more transaction than its link may hold: x closes the rogue's link for it, and frees
    // everything it held.
    open_calls(&mut rogue, span, 1, Flags::NONE);
    let mut every = Every::new();
    rogue
        .pump_until(WAIT, |r| {
            r.closed().is_some()
                && every.due()
                && x.try_snapshot().is_some_and(|s| s.clients == 1 && s.circuits == 0)
        })
        .unwrap_or_else(|e| panic!("{e}: {:?}", x.try_snapshot().map(|s| (s.clients, s.closes))));
    assert_eq!(x.snapshot().closes, Closes { misbehaved: 1, ..Closes::default() }, "the rogue's");
    assert_good(&load(&app, MASTER, 500, 16, &mut []), 500);
    // The node's counters keep the rogue's refusals after its link is gone (they are exported
    // as counters, which never go down), and the honest client added none.
    let s = x.snapshot();
    assert_eq!(s.counters.limited, refusable as u64, "the honest client's calls");
    assert_eq!(s.client_refusals.circuits_limited, refusable as u64, "the rogue's, kept");
    assert_eq!(app.snapshot().closes, Closes::default(), "the honest client's link");
    app.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A mount served by an application that echoes every message of a call back as it comes, and
/// closes when the caller does: a streaming peer. Serves until `stop`.
fn serve_streams(
    app: Handle,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Handle> {
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(incoming) = app.accept(Duration::from_millis(100)) else { continue };
            let first = incoming.payload.clone();
            let call = incoming.into_call(&app);
            call.send(CALL, &first);
            while let Some(event) = call.recv(WAIT) {
                match event {
                    CallEvent::Message { payload, last: true, .. } => call.finish(CALL, &payload),
                    CallEvent::Message { payload, .. } => call.send(CALL, &payload),
                    CallEvent::Ended(_) => break,
                }
            }
        }
        app
    })
}

/// Circuits that carry nothing for the node's idle bound are aborted with IDLE and counted
/// on their peer's link; a call that keeps talking through the same node is never cut.
#[test]
fn idle_circuits_are_aborted() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    /// x's idle bound. 400 ms would do as well; a second leaves the busy call (a message every
    /// 100 ms) ten times its bound should this test's threads be held up.
    const IDLE_MS: u64 = 1_000;
    const STREAMED: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x30) };
    const HELD: usize = 100;
    let dir = scratch("shares-idle");
    let x = Node::new(&dir, "x");
    let (rogue_id, server_id, caller_id) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    configure(
        &x,
        "router",
        &allow(&[
            (rogue_id.public_key(), "router"),
            (server_id.public_key(), "router"),
            (caller_id.public_key(), "client"),
        ]),
        &format!("circuit_idle_ms = {IDLE_MS}\n"),
        &echo_mount(MASTER, "master", "echo"),
    );
    let _proc = x.run();
    // The streaming peer, attached at x through its own node, and an honest caller of it.
    let server = honest(server_id, Role::Router, &x);
    server.attach(STREAMED, MountKind::Master, "streams").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let server = serve_streams(server, stop.clone());
    let caller = honest(caller_id, Role::Client, &x);
    assert!(caller.wait_for_route(STREAMED, WAIT), "the caller hears of the streaming mount");

    // The busy call: a message every 100 ms, each echoed back, until told the rogue's circuits
    // are gone; then three more, and its close.
    let rogue_done = Arc::new(AtomicBool::new(false));
    let (started, busy_started) = mpsc::channel();
    let busy = {
        let rogue_done = rogue_done.clone();
        std::thread::spawn(move || {
            let call = caller.open(STREAMED, CALL, b"busy 0", false).unwrap();
            let mut exchanged = 0u32;
            let mut after = 0;
            loop {
                let expected = format!("busy {exchanged}");
                match call.recv(WAIT) {
                    Some(CallEvent::Message { payload, last: false, .. }) => {
                        assert_eq!(payload, expected.as_bytes(), "echoed in order");
                    }
                    other => panic!("the busy call, after {exchanged} exchanges: {other:?}"),
                }
                exchanged += 1;
                let _ = started.send(());
                if rogue_done.load(Ordering::Relaxed) {
                    after += 1;
                    if after > 3 {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
                call.send(CALL, format!("busy {exchanged}").as_bytes());
            }
            call.finish(CALL, b"done");
            let end = loop {
                match call.recv(WAIT) {
                    Some(CallEvent::Message { .. }) => {}
                    Some(CallEvent::Ended(error)) => break error,
                    None => panic!("the busy call never ends"),
                }
            };
            (caller, exchanged, end)
        })
    };

    // The rogue holds calls to x's echo master that carry nothing once answered, opened after
    // the busy call: x aborts each once idle for its bound, with IDLE.
    busy_started.recv_timeout(WAIT).expect("the busy call is answered");
    let mut rogue = rogue_at(&x, &rogue_id, Role::Router, MASTER);
    let span = rogue.span_of(MASTER).unwrap();
    let held = open_calls(&mut rogue, span, HELD, Flags::NONE);
    let mut tally = Tally::default();
    rogue
        .pump_until(WAIT, |r| {
            tally.update(r);
            held.iter().all(|c| tally.ended.contains_key(c))
        })
        .unwrap();
    assert!(held.iter().all(|c| tally.answered.contains(c)), "each was answered first");
    // How the rogue's calls ended: code, and how many.
    let mut ends = std::collections::BTreeMap::new();
    for call in &held {
        *ends.entry(tally.ended[call].0).or_insert(0) += 1;
    }
    assert_eq!(ends, [(ErrorCode::IDLE.0, HELD)].into(), "how the rogue's calls ended");
    assert!(held.iter().all(|c| tally.forced[c] == (ErrorCode::IDLE, true)), "forced closed");
    let s = x.snapshot();
    assert_eq!(row(&s, rogue.node_id()).unwrap().refusals.circuits_idle, HELD as u64);
    assert_eq!(s.counters.idle, HELD as u64, "the busy call is not counted");
    assert_eq!(s.client_refusals, Default::default(), "the caller's link");
    assert_eq!(rogue.closed(), None, "aborting its circuits leaves its link up");

    // The busy call outlived the rogue's calls and still answers.
    rogue_done.store(true, Ordering::Relaxed);
    let mut finished = None;
    rogue
        .pump_until(WAIT, |_| {
            finished = finished.take().or_else(|| busy.is_finished().then_some(()));
            finished.is_some()
        })
        .unwrap();
    let (caller, exchanged, end) = busy.join().unwrap();
    assert_eq!(end, ErrorCode::NONE, "the busy call ended as it was closed");
    assert!(exchanged > 3);
    stop.store(true, Ordering::Relaxed);
    let server = server.join().unwrap();
    let s = x.snapshot();
    assert_eq!(row(&s, server.id()).unwrap().refusals, Default::default(), "the server's link");
    assert_eq!(s.counters.idle, HELD as u64);
    assert_eq!(s.closes, Closes::default());
    assert_eq!(caller.snapshot().closes, Closes::default());
    assert_eq!(server.snapshot().closes, Closes::default());
    caller.shutdown();
    server.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
