//! Draining (DESIGN 7c.5) with real `ringspan run` processes: a rolling restart of a cluster's
//! two relays under a load of calls loses no call. Each relay in turn, the one the entry node's
//! route goes through, is stopped while the load runs through it, first with SIGTERM, then with
//! `ringspan drain`: it withdraws its spans, the entry node routes around it, the calls it
//! carries run to their end, and it exits once drained (its log says so, not the grace's end).
//! Then it is started again and takes its place back. Every call of the load is answered.
//!
//! Nothing waits on the clock: each step waits for the load's progress or a node's snapshot.
//!
//! ```text
//!              r1
//!            /    \
//! caller — e        s (echo master)
//!            \    /
//!              r2
//! ```

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringspan::cipher::Identity;
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, Role};

use crate::support::calls::{StopOnDrop, WAIT, app, load};
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::{BIN, Proc, exit_of, signal};
use crate::support::wait::wait_for;

const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";

/// The relay `e`'s route to the master goes through now, and whether it has a standby.
fn active(e: &Node, relays: &[Node; 2]) -> Option<(usize, bool)> {
    let snapshot = e.try_snapshot()?;
    let route = snapshot.routes.iter().find(|r| r.mount == "10")?;
    let index =
        relays.iter().position(|r| route.via.contains(&r.public().node_id().to_string()))?;
    Some((index, route.standby.is_some()))
}

#[test]
fn a_rolling_restart_of_both_relays_under_load_loses_no_call() {
    let dir = scratch("drain");
    let [e, r1, r2, s] = ["e", "r1", "r2", "s"].map(|n| Node::new(&dir, n));
    let caller_id = Identity::generate().unwrap();
    // The entry node on one worker: with two, each of its planes has one relay's route of its
    // own and the other's through the other plane, one sixteenth of a hop longer; losing its own,
    // a plane finds the other infeasible (its distance is not below the plane's feasibility
    // distance) and waits a seqno round trip before it routes again, and a call arriving then is
    // refused with NO_ROUTE. That is a weakness of the planes (DESIGN 7c.3), not of the drain.
    let entry = format!("workers = 1\n{}", config::allow(&[(caller_id.public_key(), "client")]));
    config::write(&e, &entry, LIMITS, &(config::peer(&r1, true) + &config::peer(&r2, true)));
    for relay in [&r1, &r2] {
        config::write(relay, "", LIMITS, &(config::peer(&e, false) + &config::peer(&s, true)));
    }
    let master = config::echo_mount(MASTER, "master", "s/master");
    let s_tables = config::peer(&r1, false) + &config::peer(&r2, false) + &master;
    config::write(&s, "", LIMITS, &s_tables);
    let relays = [r1, r2];
    let mut relay_procs: [Option<Proc>; 2] = [Some(relays[0].run()), Some(relays[1].run())];
    let _others = [e.run(), s.run()];
    let caller = app(caller_id, Role::Client, &e);
    assert!(caller.wait_for_route(MASTER, WAIT), "the caller reaches the master");

    let stop = AtomicBool::new(false);
    let completed = AtomicU64::new(0);
    let (stop, completed) = (&stop, &completed);
    let tally = std::thread::scope(|scope| {
        let running = scope
            .spawn(move || load(&caller, &[MASTER], 16, stop, std::slice::from_ref(completed)));
        let _stop = StopOnDrop(stop);
        let progress = |what: &str| {
            let from = completed.load(Ordering::Relaxed);
            wait_for(what, WAIT, || completed.load(Ordering::Relaxed) >= from + 300);
        };
        for round in 0..2 {
            // Both relays up, e on one with the other standing by, and calls flowing.
            let mut victim = 0;
            wait_for("e's route to the master with a standby", WAIT, || {
                active(&e, &relays).is_some_and(|(index, standby)| {
                    victim = index;
                    standby
                })
            });
            progress("calls through the active relay");
            let relay = &relays[victim];
            let mut proc = relay_procs[victim].take().unwrap();
            if round == 0 {
                signal(&proc.0, libc::SIGTERM);
            } else {
                let drain = Command::new(BIN)
                    .args(["drain", "--config"])
                    .arg(&relay.config)
                    .output()
                    .unwrap();
                let stdout = String::from_utf8_lossy(&drain.stdout);
                assert!(
                    drain.status.success(),
                    "{stdout}{}",
                    String::from_utf8_lossy(&drain.stderr)
                );
                assert!(stdout.contains("stopped"), "{stdout}");
            }
            let status = exit_of(&mut proc, "the drained relay to exit", WAIT);
            assert!(status.success(), "{status:?}");
            let log = std::fs::read_to_string(relay.config.with_extension("log")).unwrap();
            assert!(log.contains("drained=true"), "it stopped once drained:\n{log}");
            // The load goes on around it, and it comes back.
            progress("calls around the drained relay");
            relay_procs[victim] = Some(relay.run());
        }
        stop.store(true, Ordering::Relaxed);
        running.join().unwrap()
    });
    println!("{tally:?}");
    assert_eq!(tally.completed, tally.opened, "every call answered: {tally:?}");
    assert_eq!((tally.lost_link, tally.no_route, tally.other, tally.corrupted), (0, 0, 0, 0));
    let _ = std::fs::remove_dir_all(&dir);
}
