//! Five `ringspan run` processes on loopback, with a loop: an echo master mount at one end, a
//! `ringspan call` client at the other sending calls through three relay hops. Then the relay
//! the calls go through is killed with SIGKILL while a call load runs through it: every call ends
//! (answered, or aborted with LOST_LINK or NO_ROUTE; none hangs, none vanishes), the calls held
//! open through it end with LOST_LINK, new calls take the other path, and the killed node,
//! restarted, rejoins and carries traffic again.
//!
//! Nothing here waits on the clock: the kill comes once the relay's snapshot shows the calls
//! going through it, while a load that only stops when the test says so is running, and with
//! calls held open through the relay, so calls are in flight there by construction whatever the
//! machine's speed.
//!
//! ```text
//!            B
//!          /   \
//! client — A     C — E (master, echo)
//!          \   /
//!            D
//! ```

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, Call, CallEvent};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, MountKind, Role};
use ringspan::wire::ErrorCode;

use crate::support::calls::{StopOnDrop, app, load};
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::{Node, key_file};
use crate::support::process::{BIN, Proc};
use crate::support::wait::wait_for;

const MOUNT: &str = "0x1:0x10";
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
/// A mount served by the test, beside the master, that never answers.
const HOLD: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x11) };
/// How long anything may take before the test calls it hung.
const WAIT: Duration = Duration::from_secs(20);
/// Calls the in-process load keeps in flight.
const CONCURRENCY: usize = 64;
/// Calls held open (both ways) through the relay that is killed.
const HELD: usize = 8;

fn call(config: &Path, calls: u64) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["call", "--config"]).arg(config).args([
        "--mount",
        MOUNT,
        "--calls",
        &calls.to_string(),
        "--concurrency",
        "64",
        "--size",
        "100",
    ]);
    cmd
}

/// What `ringspan call` printed: its counts. It exits 0 only if every call was answered, and
/// 1 with a line per error class otherwise.
fn outcome(output: &Output) -> serde_json::Value {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|_| panic!("ringspan call failed: {stderr}"));
    let failed: u64 = ["lost_link", "no_route", "other", "corrupted", "not_sent"]
        .iter()
        .map(|field| count(&v, field))
        .sum();
    assert_eq!(output.status.success(), failed == 0, "exit status against {v}: {stderr}");
    if failed > 0 {
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("calls answered"), "says why: {stderr}");
    }
    v
}

fn count(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap()
}

/// The peer a node's route to `mount` (its id in hex) goes through.
fn via(node: &Node, mount: &str) -> String {
    let s = node.snapshot();
    s.routes.iter().find(|r| r.mount == mount).map(|r| r.via.clone()).unwrap_or_default()
}

/// How `call` ends: its next events are at most a forced close, then its end.
fn end_of(call: &Call) -> ErrorCode {
    loop {
        match call.recv(WAIT) {
            Some(CallEvent::Message { abort: true, last: true, .. }) => {}
            Some(CallEvent::Ended(error)) => return error,
            event => panic!("a held call: {event:?} instead of its end"),
        }
    }
}

#[test]
fn five_processes_relay_survive_a_killed_relay_and_take_it_back() {
    let dir = scratch("cluster");
    let names = ["a", "b", "c", "d", "e"];
    let nodes: Vec<Node> = names.iter().map(|&name| Node::new(&dir, name)).collect();
    let client_public = key_file(&dir, "client").public_key().unwrap();
    let caller_id = Identity::generate().unwrap();
    let server_id = Identity::generate().unwrap();
    let idx = |name: &str| names.iter().position(|&n| n == name).unwrap();
    // Each link is dialled by its first node and accepted by its second.
    let links = [("a", "b"), ("b", "c"), ("a", "d"), ("d", "c"), ("c", "e")];
    let limits =
        "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";
    for node in &nodes {
        let allow = match node.name {
            "a" => config::allow(&[(client_public, "client"), (caller_id.public_key(), "client")]),
            // The server attaches a mount the cluster must hear of: its key is a router's.
            "e" => config::allow(&[(server_id.public_key(), "router")]),
            _ => String::new(),
        };
        let mut tables = String::new();
        for &(from, to) in &links {
            if from == node.name {
                tables += &config::peer(&nodes[idx(to)], true);
            } else if to == node.name {
                tables += &config::peer(&nodes[idx(from)], false);
            }
        }
        if node.name == "e" {
            tables += &config::echo_mount(MASTER, "master", "e/master");
        }
        config::write(node, &allow, limits, &tables);
    }
    // The client is no node of the cluster: it listens nowhere.
    let client = dir.join("client.toml");
    let text = format!(
        "[node]\nkey = \"client.key\"\nrole = \"client\"\n{}",
        config::peer(&nodes[0], true)
    );
    std::fs::write(&client, text).unwrap();

    let mut procs: Vec<Option<Proc>> = nodes.iter().map(|n| Some(n.run())).collect();
    let a = &nodes[0];
    wait_for("a route from a to the master", Duration::from_secs(20), || {
        a.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == "10" && r.metric == 3))
    });

    // 10k calls through three relays (a, then b or d, then c) to the echo master at e.
    let first = outcome(&call(&client, 10_000).output().unwrap());
    assert_eq!(count(&first, "completed"), 10_000, "{first}");
    assert_eq!(count(&first, "corrupted"), 0);

    // Kill the relay in the middle of the path while calls go through it. Which one that is
    // depends on the worker of a that the caller's link lands on (each of a's workers dials one
    // of b and d, and takes its own link first of two equal paths): the one its held calls
    // cross.
    let caller = app(caller_id, Role::Client, a);
    let server = app(server_id, Role::Router, &nodes[idx("e")]);
    server.attach(HOLD, MountKind::Master, "held").unwrap();
    assert!(caller.wait_for_route(MASTER, WAIT), "the caller reaches the master");
    assert!(caller.wait_for_route(HOLD, WAIT), "the caller reaches the held mount");
    wait_for("a's routes to both mounts, the same way", WAIT, || via(a, "11") == via(a, "10"));
    // Calls the server takes and never answers: open both ways at every hop until the path under
    // them goes, so in flight through the relay by construction. Its snapshot shows them (and
    // nothing else runs yet).
    let held: Vec<(Call, Call)> = (0..HELD)
        .map(|_| {
            let call = caller.open(HOLD, CALL, b"held", false).unwrap();
            let incoming = server.accept(WAIT).expect("a held call reaches the server");
            assert_eq!((&incoming.payload[..], incoming.last), (&b"held"[..], false));
            (call, incoming.into_call(&server))
        })
        .collect();
    let mut relayed = 0;
    let mut victim = "";
    wait_for("the held calls at b or d", WAIT, || {
        ["b", "d"].into_iter().any(|name| {
            nodes[idx(name)].try_snapshot().is_some_and(|s| {
                relayed = s.counters.relayed;
                victim = name;
                s.circuits == HELD
            })
        })
    });
    let other = if victim == "b" { "d" } else { "b" };
    let relay = &nodes[idx(victim)];
    let through = relay.snapshot().node;
    // A load that runs until told to stop, seen flowing through the relay before it dies.
    let stop = AtomicBool::new(false);
    let completed = AtomicU64::new(0);
    let (stop, completed) = (&stop, &completed);
    let (second, caller) = std::thread::scope(|scope| {
        // The handle goes to the load's thread (it is not shared) and comes back with its tally.
        let running = scope.spawn(move || {
            (load(&caller, &[MASTER], CONCURRENCY, stop, std::slice::from_ref(completed)), caller)
        });
        // Should a wait below fail, the load still stops (the scope waits for it).
        let _stop = StopOnDrop(stop);
        wait_for("the load to flow through the relay", WAIT, || {
            relay.try_snapshot().is_some_and(|s| s.counters.relayed >= relayed + 100)
        });
        drop(procs[idx(victim)].take());
        // The held calls were in flight through it: each ends at both ends, with LOST_LINK.
        for (call, served) in &held {
            assert_eq!(end_of(call), ErrorCode::LOST_LINK, "a held call, at the caller");
            assert_eq!(end_of(served), ErrorCode::LOST_LINK, "a held call, at the server");
        }
        // The load goes on around it: once a reroutes, calls keep being answered.
        wait_for("a reroute around the killed relay", WAIT, || {
            let v = via(a, "10");
            !v.is_empty() && !v.contains(&through)
        });
        let rerouted = completed.load(Ordering::Relaxed);
        wait_for("calls answered on the other path", WAIT, || {
            completed.load(Ordering::Relaxed) >= rerouted + 1_000
        });
        stop.store(true, Ordering::Relaxed);
        running.join().unwrap()
    });
    eprintln!("10k calls: {first}\nload across the kill: {second:?}");
    let ended = second.completed + second.lost_link + second.no_route + second.other;
    assert_eq!(ended, second.opened, "every call ends exactly once: {second:?}");
    assert_eq!(second.other, 0, "calls end answered, or with LOST_LINK or NO_ROUTE: {second:?}");
    assert_eq!(second.corrupted, 0);
    caller.shutdown();
    server.shutdown();

    // New calls take the other path.
    let third = outcome(&call(&client, 2_000).output().unwrap());
    assert_eq!(count(&third, "completed"), 2_000, "{third}");

    // The killed relay restarts and rejoins; with the other one gone, it carries the traffic.
    procs[idx(victim)] = Some(nodes[idx(victim)].run());
    wait_for("the restarted relay to rejoin", Duration::from_secs(20), || {
        nodes[idx(victim)].try_snapshot().is_some_and(|s| s.links.len() == 2)
    });
    drop(procs[idx(other)].take());
    wait_for("the route through the restarted relay", Duration::from_secs(20), || {
        let s = nodes[idx(victim)].try_snapshot();
        let v = via(a, "10");
        s.is_some_and(|s| v.contains(&s.node))
    });
    let fourth = outcome(&call(&client, 2_000).output().unwrap());
    assert_eq!(count(&fourth, "completed"), 2_000, "{fourth}");
    // Snapshots are refreshed every 200 ms.
    wait_for("the restarted relay's counters to show the calls", Duration::from_secs(5), || {
        nodes[idx(victim)].try_snapshot().is_some_and(|s| s.counters.relayed >= 2_000)
    });
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_relays_reroutes_and_exits_zero() {
    let output = Command::new(BIN).args(["demo", "--seconds", "2"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    let hops = |line: &str| -> u16 {
        text.lines()
            .find_map(|l| l.strip_prefix(line))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no line {line:?}: {text}"))
    };
    // Two chains lead to the master, of 2 and 3 hops. The demo starts its calls once n0 has a
    // route, which may be the longer one if the shorter chain's links are not all up yet; its
    // cut then moves the calls to the shorter one. Either way the reroute takes the other chain.
    let (active, rerouted) =
        (hops("active path from n0: "), hops("reroute: n0 now reaches the master in "));
    assert_eq!((active.min(rerouted), active.max(rerouted)), (2, 3), "{text}");
    assert!(text.contains("SUMMARY"), "{text}");
    let completed: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("calls completed"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap();
    assert!(completed > 0, "{text}");
}

#[test]
fn run_refuses_a_bad_config_with_file_line_and_reason() {
    let dir = scratch("badconfig");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[node]\nkey = \"n.key\"\nlisten = [\"127.0.0.1:notaport\"]\n").unwrap();
    let output = Command::new(BIN).args(["run", "--config"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("{}:3:", path.display())), "{stderr}");
    assert!(stderr.contains("listen"), "{stderr}");
    // A good config whose key file is missing is refused naming the key file.
    std::fs::write(&path, "[node]\nkey = \"missing.key\"\n").unwrap();
    let output = Command::new(BIN).args(["run", "--config"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("missing.key"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_satellite_demo_keeps_the_core_table_flat_and_exits_zero() {
    let output =
        Command::new(BIN).args(["demo", "--satellites", "--clients", "300"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("core routes at n0 with 302 clients: 2"), "{text}");
    assert!(text.contains("100 + 100 of 200"), "{text}");
}
