//! Five `ringspan run` processes on loopback, with a loop: an echo master mount at one end, a
//! `ringspan call` client at the other sending calls through three relay hops. Then the relay
//! the calls go through is killed with SIGKILL mid-run: every call ends (answered, or aborted
//! with LOST_LINK or NO_ROUTE; none hangs, none vanishes), new calls take the other path, and
//! the killed node, restarted, rejoins and carries traffic again.
//!
//! ```text
//!            B
//!          /   \
//! client — A     C — E (master, echo)
//!          \   /
//!            D
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ringspan::cipher::PrivateKey;
use ringspan::cipher::identity::write_new_key_file;
use ringspan::daemon::Snapshot;
use ringspan::daemon::control;

#[path = "support/process.rs"]
mod process;
use process::{BIN, Proc, free_port, now, run_node, wait_for};

const MOUNT: &str = "0x1:0x10";

struct Node {
    name: &'static str,
    port: u16,
    public: String,
    config: PathBuf,
}

fn key(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.key"));
    let key = PrivateKey::generate().unwrap();
    write_new_key_file(&path, &key).unwrap();
    key.public_key().unwrap().to_base64()
}

fn snapshot(node: &Node) -> Option<Snapshot> {
    let text = control::fetch(&node.config.with_extension("sock")).ok()?;
    serde_json::from_str(&text).ok()
}

fn run(node: &Node) -> Proc {
    run_node(&node.config)
}

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

fn outcome(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "ringspan call failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn count(v: &serde_json::Value, field: &str) -> u64 {
    v[field].as_u64().unwrap()
}

/// The peer a node's route to the mount goes through.
fn via(node: &Node) -> String {
    let s = snapshot(node).unwrap();
    s.routes.iter().find(|r| r.mount == "10").map(|r| r.via.clone()).unwrap_or_default()
}

#[test]
fn five_processes_relay_survive_a_killed_relay_and_take_it_back() {
    let dir = std::env::temp_dir().join(format!("ringspan-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let names = ["a", "b", "c", "d", "e"];
    let nodes: Vec<Node> = names
        .iter()
        .map(|&name| Node {
            name,
            port: free_port(),
            public: key(&dir, name),
            config: dir.join(format!("{name}.toml")),
        })
        .collect();
    let client_public = key(&dir, "client");
    let idx = |name: &str| names.iter().position(|&n| n == name).unwrap();
    // Each link is dialled by its first node and accepted by its second.
    let links = [("a", "b"), ("b", "c"), ("a", "d"), ("d", "c"), ("c", "e")];
    for node in &nodes {
        let mut text = format!(
            "[node]\nkey = \"{}.key\"\nlisten = [\"127.0.0.1:{}\"]\n",
            node.name, node.port
        );
        if node.name == "a" {
            text.push_str(&format!("allow = [\"{client_public}\"]\n"));
        }
        text.push_str("\n[limits]\nkeepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n");
        for &(from, to) in &links {
            let other = if from == node.name {
                Some((to, true))
            } else if to == node.name {
                Some((from, false))
            } else {
                None
            };
            if let Some((other, dial)) = other {
                let peer = &nodes[idx(other)];
                text.push_str(&format!(
                    "\n[[peer]]\nname = \"{}\"\nkey = \"{}\"\n",
                    other, peer.public
                ));
                if dial {
                    text.push_str(&format!("address = \"127.0.0.1:{}\"\n", peer.port));
                }
            }
        }
        if node.name == "e" {
            text.push_str("\n[[mount]]\ncluster = \"0x1\"\nid = \"0x10\"\nkind = \"master\"\nlabel = \"e/master\"\nservice = \"echo\"\n");
        }
        std::fs::write(&node.config, text).unwrap();
    }
    let client = dir.join("client.toml");
    std::fs::write(
        &client,
        format!(
            "[node]\nkey = \"client.key\"\nrole = \"client\"\n\n[[peer]]\nname = \"a\"\naddress = \"127.0.0.1:{}\"\nkey = \"{}\"\n",
            nodes[0].port, nodes[0].public
        ),
    )
    .unwrap();

    let mut procs: Vec<Option<Proc>> = nodes.iter().map(|n| Some(run(n))).collect();
    let a = &nodes[0];
    wait_for("a route from a to the master", Duration::from_secs(20), || {
        snapshot(a).is_some_and(|s| s.routes.iter().any(|r| r.mount == "10" && r.metric == 3))
    });

    // 10k calls through three relays (a, then b or d, then c) to the echo master at e.
    let first = outcome(&call(&client, 10_000).output().unwrap());
    assert_eq!(count(&first, "completed"), 10_000, "{first}");
    assert_eq!(count(&first, "corrupted"), 0);

    // Kill the relay in the middle of the path mid-run.
    let through = via(a);
    let victim = if through.contains(&snapshot(&nodes[1]).unwrap().node) { "b" } else { "d" };
    let other = if victim == "b" { "d" } else { "b" };
    let calls = 40_000;
    let mut running =
        call(&client, calls).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    let killed_at = now();
    drop(procs[idx(victim)].take());
    let status = loop {
        if let Some(status) = running.try_wait().unwrap() {
            break status;
        }
        assert!(now() - killed_at < Duration::from_secs(30), "calls hang after the kill");
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = Output {
        status,
        stdout: std::io::Read::bytes(running.stdout.take().unwrap()).map(Result::unwrap).collect(),
        stderr: std::io::Read::bytes(running.stderr.take().unwrap()).map(Result::unwrap).collect(),
    };
    let second = outcome(&output);
    eprintln!("10k calls: {first}\nkill mid-run: {second}");
    let ended = count(&second, "completed")
        + count(&second, "lost_link")
        + count(&second, "no_route")
        + count(&second, "other");
    assert_eq!(ended, calls, "every call ends exactly once: {second}");
    assert!(count(&second, "lost_link") > 0, "calls in flight through the killed relay: {second}");
    assert_eq!(count(&second, "corrupted"), 0);

    // New calls take the other path.
    wait_for("a reroute around the killed relay", Duration::from_secs(10), || {
        let v = via(a);
        !v.is_empty() && !v.contains(&through)
    });
    let third = outcome(&call(&client, 2_000).output().unwrap());
    assert_eq!(count(&third, "completed"), 2_000, "{third}");

    // The killed relay restarts and rejoins; with the other one gone, it carries the traffic.
    procs[idx(victim)] = Some(run(&nodes[idx(victim)]));
    wait_for("the restarted relay to rejoin", Duration::from_secs(20), || {
        snapshot(&nodes[idx(victim)]).is_some_and(|s| s.links.len() == 2)
    });
    drop(procs[idx(other)].take());
    wait_for("the route through the restarted relay", Duration::from_secs(20), || {
        let s = snapshot(&nodes[idx(victim)]);
        let v = via(a);
        s.is_some_and(|s| v.contains(&s.node))
    });
    let fourth = outcome(&call(&client, 2_000).output().unwrap());
    assert_eq!(count(&fourth, "completed"), 2_000, "{fourth}");
    // Snapshots are refreshed every 200 ms.
    wait_for("the restarted relay's counters to show the calls", Duration::from_secs(5), || {
        snapshot(&nodes[idx(victim)]).is_some_and(|s| s.counters.relayed >= 2_000)
    });
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_demo_relays_reroutes_and_exits_zero() {
    let output = Command::new(BIN).args(["demo", "--seconds", "2"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(text.contains("active path from n0"), "{text}");
    assert!(text.contains("reroute: n0 now reaches the master in 3 hops"), "{text}");
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
    let dir = std::env::temp_dir().join(format!("ringspan-badconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
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
