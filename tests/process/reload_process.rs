//! Live reload with real `ringspan run` processes: a relay `a` under a load of calls takes a
//! new configuration file several times, by `ringspan reload` and by SIGHUP, and the links and
//! calls the changes do not touch go on untouched: the same link ids throughout, and every call
//! of the load answered. What each change must do is checked where it shows: a mount attached
//! and detached (the caller's routes), a peer added and removed (a's links, its log), the log
//! level (a's log), and files refused whole (a bad one with its `file:line:col`, one changing
//! what only a restart changes) with the node running on as it was.
//!
//! ```text
//! caller — a — b (echo M2)
//!   (echo M1, later M3)
//!          |
//!          d (added, then removed)
//! ```
//!
//! Nothing waits on the clock: each step waits for the load's progress or a node's snapshot.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ringspan::cipher::Identity;
use ringspan::daemon::Snapshot;
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, Role};

use crate::support::calls::{StopOnDrop, WAIT, app, load};
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::{BIN, signal};
use crate::support::wait::wait_for;

const M1: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const M2: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x20) };
const M3: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x30) };
const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";

/// `ringspan reload --config` on `node`'s file.
fn reload(node: &Node) -> Output {
    Command::new(BIN).args(["reload", "--config"]).arg(&node.config).output().unwrap()
}

/// [`reload`], which must succeed; what it printed.
fn reloaded(node: &Node) -> String {
    let out = reload(node);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// [`reload`], which must be refused; what it said.
fn refused(node: &Node) -> String {
    let out = reload(node);
    assert!(!out.status.success(), "reloaded: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The link `snapshot` holds to `peer`, by id.
fn link_to(snapshot: &Snapshot, peer: &str) -> Option<u64> {
    snapshot.links.iter().find(|l| l.peer == peer).map(|l| l.link)
}

fn has_route(snapshot: &Snapshot, mount: MountKey) -> bool {
    let mount = format!("{:x}", mount.mount.0);
    snapshot.routes.iter().any(|r| r.mount == mount)
}

/// The snapshot of a node in this process, asked again while its workers do not answer in
/// time (a busy machine: the empty snapshot it gives then names no node).
fn view(shared: &ringspan::daemon::Shared) -> Snapshot {
    let mut snapshot = Snapshot::default();
    wait_for("a snapshot", WAIT, || {
        snapshot = shared.snapshot();
        !snapshot.node.is_empty()
    });
    snapshot
}

/// `node`'s snapshot, asked again while it does not answer (a busy machine).
fn snapshot_of(node: &Node) -> Snapshot {
    let mut snapshot = None;
    wait_for("a snapshot", WAIT, || {
        snapshot = node.try_snapshot();
        snapshot.is_some()
    });
    snapshot.unwrap()
}

fn log_of(node: &Node) -> String {
    std::fs::read_to_string(node.config.with_extension("log")).unwrap_or_default()
}

#[test]
fn a_relay_under_load_takes_new_peers_mounts_limits_and_log_level_without_dropping_a_call() {
    let dir = scratch("reload");
    let [a, b, d] = ["a", "b", "d"].map(|n| Node::new(&dir, n));
    let caller_id = Identity::generate().unwrap();
    let a_node = a.public().node_id().to_string();
    let b_node = b.public().node_id().to_string();
    let d_node = d.public().node_id().to_string();

    let allow = config::allow(&[(caller_id.public_key(), "client")]);
    let m1 = config::echo_mount(M1, "master", "a/m1");
    let m3 = config::echo_mount(M3, "master", "a/m3");
    let a_with = |level: &str, tables: &str| {
        let lines = format!("{allow}log_level = \"{level}\"\n");
        config::write(&a, &lines, LIMITS, &(config::peer(&b, true) + &m1 + tables));
    };
    a_with("warn", "");
    config::write(
        &b,
        "",
        LIMITS,
        &(config::peer(&a, false) + &config::echo_mount(M2, "master", "b/m2")),
    );
    config::write(&d, "", LIMITS, &config::peer(&a, false));
    let mut a_proc = a.run();
    let _others = [b.run(), d.run()];
    let caller = app(caller_id, Role::Client, &a);
    assert!(caller.wait_for_route(M1, WAIT) && caller.wait_for_route(M2, WAIT));
    // A client's link is not among a's rows (a satellite may hold very many): the caller's own
    // snapshot shows it.
    let caller_view = caller.shared();
    let to_caller = link_to(&view(&caller_view), &a_node);
    let to_b = link_to(&snapshot_of(&a), &b_node);
    assert!(to_caller.is_some() && to_b.is_some());
    assert!(!log_of(&a).contains("link up"), "log_level = \"warn\" writes no INFO line");

    let stop = AtomicBool::new(false);
    let completed = [AtomicU64::new(0), AtomicU64::new(0)];
    let (stop, completed) = (&stop, &completed);
    let tally = std::thread::scope(|scope| {
        let running = scope.spawn(move || load(&caller, &[M1, M2], 8, stop, completed));
        let _stop = StopOnDrop(stop);
        let progress = |what: &str| {
            let from = completed.iter().map(|c| c.load(Ordering::Relaxed)).min().unwrap();
            wait_for(what, WAIT, || {
                completed.iter().all(|c| c.load(Ordering::Relaxed) >= from + 100)
            });
        };
        progress("calls to both mounts before any reload");

        // 1. A mount, limits and the log level.
        a_with("info", &m3);
        let limits = "circuit_idle_ms = 60000\nmax_links = 5000\nredial_max_ms = 400\n";
        let text = std::fs::read_to_string(&a.config).unwrap();
        std::fs::write(&a.config, text.replace("redial_max_ms = 500\n", limits)).unwrap();
        let said = reloaded(&a);
        for line in [
            "mount 0x1:0x30 attached",
            "[limits] redial_max_ms 500 -> 400",
            "[limits] max_links",
            "[limits] circuit_idle_ms",
            "log_level info",
        ] {
            assert!(said.contains(line), "{line:?} not in:\n{said}");
        }
        wait_for("b to hear of the new mount", WAIT, || {
            b.try_snapshot().is_some_and(|s| has_route(&s, M3))
        });
        progress("calls after the first reload");

        // 2. A peer added: dialled, linked, and its `link up` written at the new level.
        a_with("info", &(m3.clone() + &config::peer(&d, true)));
        let said = reloaded(&a);
        assert!(said.contains("peer d (") && said.contains(") added (127.0.0.1:"), "{said}");
        wait_for("a to link to d", WAIT, || {
            a.try_snapshot().is_some_and(|s| link_to(&s, &d_node).is_some())
        });
        wait_for("d's link up in a's log", WAIT, || {
            let named = |l: &str| l.contains("name=d") || l.contains("name=\"d\"");
            log_of(&a).lines().any(|l| l.contains("link up") && named(l))
        });

        // 3. Refused whole: a file that does not parse, then one changing the listener.
        let good = std::fs::read_to_string(&a.config).unwrap();
        std::fs::write(&a.config, format!("{good}\n[[peer]]\nkey = \"not base64\"\n")).unwrap();
        let why = refused(&a);
        let line = good.lines().count() + 3;
        assert!(why.contains(&format!("a.toml:{line}:7: peer key")), "{why}");
        let moved = good.replace(&a.addr().to_string(), "127.0.0.1:1");
        std::fs::write(&a.config, moved).unwrap();
        let why = refused(&a);
        assert!(why.contains("[node] listen change only when the node restarts"), "{why}");
        std::fs::write(&a.config, &good).unwrap();
        assert!(reloaded(&a).contains("nothing changed"), "the file as it runs");
        progress("calls after the refused reloads");

        // 4. The peer removed: its link closed, its key no longer let in.
        a_with("info", &m3);
        let said = reloaded(&a);
        assert!(said.contains("peer d (") && said.contains(") removed"), "{said}");
        assert!(said.contains("closed: its key is no longer allowed"), "{said}");
        wait_for("a's link to d to go", WAIT, || {
            a.try_snapshot().is_some_and(|s| link_to(&s, &d_node).is_none())
        });

        // 5. SIGHUP: the mount detached; the process and its control socket stay.
        a_with("info", "");
        signal(&a_proc.0, libc::SIGHUP);
        wait_for("b to hear the mount is gone", WAIT, || {
            b.try_snapshot().is_some_and(|s| !has_route(&s, M3))
        });
        assert!(a_proc.0.try_wait().unwrap().is_none(), "SIGHUP ends no node");
        progress("calls after SIGHUP");

        let caller_link = link_to(&view(&caller_view), &a_node);
        assert_eq!(caller_link, to_caller, "the caller's link is untouched");
        assert_eq!(link_to(&snapshot_of(&a), &b_node), to_b, "b's link is untouched");
        stop.store(true, Ordering::Relaxed);
        running.join().unwrap()
    });
    tally.assert_every_call_answered("reload under load");
    assert!(log_of(&a).contains("reloaded on SIGHUP"), "SIGHUP's reload is logged");
}

#[test]
fn a_reload_lets_a_key_in_changes_its_role_and_shuts_it_out() {
    let dir = scratch("reload-rights");
    let a = Node::new(&dir, "a");
    let a_node = a.public().node_id().to_string();
    let c_id = Identity::generate().unwrap();
    let c_key = c_id.public_key();
    let c_node = c_key.node_id().to_string();
    let mount = config::echo_mount(M1, "master", "a/m1");
    let a_allowing = |allow: &str| config::write(&a, allow, LIMITS, &mount);
    a_allowing("");
    let _a = a.run();
    // c dials a, whose configuration does not know its key yet.
    let c = app(c_id, Role::Client, &a);
    let c_view = c.shared();
    let peer_state = || {
        let snapshot = view(&c_view);
        let peer = snapshot.peers.into_iter().find(|p| p.peer == a_node)?;
        Some((peer.state, peer.last_error.unwrap_or_default()))
    };
    wait_for("c to be refused", WAIT, || peer_state().is_some_and(|(s, _)| s == "refused"));
    // Its workers may refuse c before the node takes requests on its control socket.
    snapshot_of(&a);

    // Allowed as a client: c links at its next dial, and calls.
    a_allowing(&config::allow(&[(c_key, "client")]));
    let said = reloaded(&a);
    assert!(said.contains(&format!("key {c_node} allowed as client")), "{said}");
    assert!(c.wait_for_route(M1, WAIT), "c reaches a's mount once allowed");
    let first = link_to(&view(&c_view), &a_node).expect("c's link to a");

    // Granted router instead: its link, up as a client's, is closed, and it links again as
    // the router its key now may be (it still says it is a client).
    a_allowing(&config::allow(&[(c_key, "router")]));
    let said = reloaded(&a);
    assert!(said.contains("closed: its key is now granted router (it was client)"), "{said}");
    wait_for("c's link again, granted router", WAIT, || {
        a.try_snapshot()
            .is_some_and(|s| s.links.iter().any(|l| l.peer == c_node && l.granted == "router"))
    });
    let second = link_to(&view(&c_view), &a_node);
    assert!(second.is_some() && second != Some(first), "a new link");

    // Shut out: its link closed, and refused from then on.
    a_allowing("");
    let said = reloaded(&a);
    assert!(said.contains("closed: its key is no longer allowed"), "{said}");
    wait_for("c refused again", WAIT, || {
        peer_state().is_some_and(|(state, _)| state == "refused")
            && a.try_snapshot().is_some_and(|s| s.links.is_empty())
    });
}
