//! A relay on two workers (DESIGN 7c.3), as a real `ringspan run` process: its two echo
//! servers' links sit one on each worker (a node deals the peers it dials to its planes in
//! turn), and a caller in the test's process links to it on whichever worker accepts it, so the
//! calls to one of the two servers cross from worker to worker inside the relay. Under a load of
//! calls to both, with calls held open to each, each server is killed with SIGKILL in turn (the
//! link on worker 0 first, then the one on worker 1) and brought back: the calls held through
//! the killed link end with `LOST_LINK` at the caller, those held through the other live on,
//! every call of the load ends exactly once, answered or with `LOST_LINK` or `NO_ROUTE`, and
//! calls flow again once the server is back. The relay's snapshot shows its links on both
//! workers and bytes handed between them.
//!
//! Nothing waits on the clock: each step waits for what the relay or the caller reports.
//!
//! ```text
//! caller — relay (worker 0 — e0, worker 1 — e1)
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, Call, CallEvent, Handle, Settings, Snapshot};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, Role};
use ringspan::wire::ErrorCode;

use crate::support::calls::load;
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::wait::wait_for;

/// The two servers' echo mounts.
const MOUNTS: [MountKey; 2] = [
    MountKey { cluster: ClusterId(1), mount: MountId(0x20) },
    MountKey { cluster: ClusterId(1), mount: MountId(0x21) },
];
/// How long anything may take before the test calls it hung.
const WAIT: Duration = Duration::from_secs(20);
/// Calls the load keeps in flight.
const CONCURRENCY: usize = 32;
/// Calls held open to each mount.
const HELD: usize = 4;
const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";

/// Calls to `mount` the server answers but the caller keeps open: held through the relay until
/// the caller finishes them or the path under them goes.
fn hold(caller: &Handle, mount: MountKey) -> Vec<Call> {
    (0..HELD)
        .map(|_| {
            let call = caller.open(mount, CALL, b"held", false).unwrap();
            match call.recv(WAIT) {
                Some(CallEvent::Message { payload, abort: false, .. }) => {
                    assert_eq!(payload, b"held")
                }
                event => panic!("a held call: {event:?} instead of its answer"),
            }
            call
        })
        .collect()
}

/// How a held call ends: at most a forced close, then its end.
fn end_of(call: &Call) -> ErrorCode {
    loop {
        match call.recv(WAIT) {
            Some(CallEvent::Message { abort: true, .. }) => {}
            Some(CallEvent::Ended(error)) => return error,
            event => panic!("a held call: {event:?} instead of its end"),
        }
    }
}

/// A client node in the test's process, linked to `relay`, with routes to both mounts.
fn client_of(identity: Identity, relay: &Node) -> Handle {
    let mut settings = Settings::new(identity);
    settings.role = Role::Client;
    settings.peers = vec![relay.peer()];
    settings.recv_buffers = 8;
    settings.limits.keepalive = Duration::from_millis(200);
    settings.limits.idle_timeout = Duration::from_millis(1000);
    let handle = Handle::start(settings).unwrap();
    for mount in MOUNTS {
        assert!(handle.wait_for_route(mount, WAIT), "a client reaches {mount:?}");
    }
    handle
}

/// The worker of the relay's link to the node `peer` (its id), if linked.
fn worker_of(s: &Snapshot, peer: &str) -> Option<usize> {
    s.links.iter().find(|l| l.peer == peer).map(|l| l.worker)
}

#[test]
fn calls_cross_a_relays_workers_and_survive_a_link_killed_on_either() {
    let dir = scratch("planes");
    let relay = Node::new(&dir, "relay");
    let servers = [Node::new(&dir, "e0"), Node::new(&dir, "e1")];
    let (caller_id, holder_id) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let allow =
        config::allow(&[(caller_id.public_key(), "client"), (holder_id.public_key(), "client")]);
    // The relay dials both servers: the first peer from worker 0, the second from worker 1.
    let peers: String = servers.iter().map(|s| config::peer(s, true)).collect();
    config::write(&relay, &format!("workers = 2\n{allow}"), LIMITS, &peers);
    for (server, mount) in servers.iter().zip(MOUNTS) {
        let tables = config::peer(&relay, false) + &config::echo_mount(mount, "master", "echo");
        config::write(server, "workers = 1\n", LIMITS, &tables);
    }
    let _relay_proc = relay.run();
    let mut server_procs: Vec<Option<Proc>> = servers.iter().map(|s| Some(s.run())).collect();
    let ids: Vec<String> = servers.iter().map(|s| s.public().node_id().to_string()).collect();
    wait_for("the relay's links to both servers, one on each worker", WAIT, || {
        relay.try_snapshot().is_some_and(|s| {
            s.workers.len() == 2
                && worker_of(&s, &ids[0]) == Some(0)
                && worker_of(&s, &ids[1]) == Some(1)
        })
    });

    // The caller runs the load on its own thread; the holder holds calls open on this one.
    let (caller, holder) = (client_of(caller_id, &relay), client_of(holder_id, &relay));
    // Client links are counted per worker, not listed: wherever they are, the calls of each
    // client to one of the servers cross.
    let s = relay.snapshot();
    assert_eq!(s.workers.iter().map(|w| w.clients).sum::<usize>(), 2, "{:?}", s.workers);

    let stop = AtomicBool::new(false);
    let completed = [AtomicU64::new(0), AtomicU64::new(0)];
    let (stop, completed) = (&stop, &completed);
    let answered = |which: usize| completed[which].load(Ordering::Relaxed);
    let (tally, caller) = std::thread::scope(|scope| {
        let mut held: Vec<Vec<Call>> = MOUNTS.iter().map(|&m| hold(&holder, m)).collect();
        // The handle goes to the load's thread (it is not shared) and comes back with its tally.
        let running =
            scope.spawn(move || (load(&caller, &MOUNTS, CONCURRENCY, stop, completed), caller));
        // Calls flow to both, and some cross between the relay's workers.
        wait_for("calls answered by both servers", WAIT, || {
            answered(0) >= 500 && answered(1) >= 500
        });
        wait_for("bytes handed between the relay's workers", WAIT, || {
            relay.try_snapshot().is_some_and(|s| {
                s.workers.iter().all(|w| w.internal_bytes_in > 0 && w.internal_bytes_out > 0)
            })
        });

        // Each server in turn: its link (on worker `which`) dies under the load.
        for which in 0..2 {
            let other = 1 - which;
            drop(server_procs[which].take());
            for call in held[which].drain(..) {
                assert_eq!(end_of(&call), ErrorCode::LOST_LINK, "a call held through e{which}");
            }
            // The other server's calls go on: those held, and new ones.
            let before = answered(other);
            wait_for("calls answered by the other server", WAIT, || {
                answered(other) >= before + 500
            });
            for call in &held[other] {
                assert!(call.recv(Duration::ZERO).is_none(), "a call held through e{other} lives");
            }
            // Back: the relay redials it from the same worker, and calls reach it again.
            server_procs[which] = Some(servers[which].run());
            let before = answered(which);
            wait_for("calls answered by the restarted server", WAIT, || {
                answered(which) >= before + 500
            });
            let s = relay.snapshot();
            assert_eq!(worker_of(&s, &ids[which]), Some(which), "redialled from its worker");
            held[which] = hold(&holder, MOUNTS[which]);
        }
        stop.store(true, Ordering::Relaxed);
        for call in held.iter().flatten() {
            call.finish(CALL, b"done");
            assert_eq!(end_of(call), ErrorCode::NONE, "a held call closed by the holder");
        }
        running.join().unwrap()
    });
    eprintln!("load across two kills: {tally:?}");
    let ended = tally.completed + tally.lost_link + tally.no_route + tally.other;
    assert_eq!(ended, tally.opened, "every call ends exactly once: {tally:?}");
    assert_eq!(tally.other, 0, "calls end answered, or with LOST_LINK or NO_ROUTE: {tally:?}");
    assert_eq!(tally.corrupted, 0);

    // Nothing is left open at the relay once the last ends have crossed it (the holder hears
    // its calls end before the relay has freed them), and it counted each call once, though
    // half of them crossed its workers.
    wait_for("the relay to free every circuit", WAIT, || {
        relay.try_snapshot().is_some_and(|s| s.circuits == 0)
    });
    let s = relay.snapshot();
    assert_eq!(s.workers.iter().map(|w| w.worker).collect::<Vec<_>>(), [0, 1]);
    assert!(s.counters.relayed >= tally.completed, "{:?} for {tally:?}", s.counters);
    caller.shutdown();
    holder.shutdown();
    drop(server_procs);
    let _ = std::fs::remove_dir_all(&dir);
}
