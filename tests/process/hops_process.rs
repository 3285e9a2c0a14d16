//! `ringspan-bench hops` end to end: a sender and a receiver on either side of one and of two
//! `ringspan run` relays on loopback. Counts must be exact: every message sent arrives once and
//! in order, and every round trip asked for is recorded. The relays forward the one-way stream's
//! records whole (their counters say so).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::{Node, key_file};
use crate::support::process::{BENCH, Proc};
use crate::support::wait::wait_for;

const MOUNT: &str = "0x1:0x10";

/// Runs `ringspan-bench hops send` with `args` and returns its JSON outcome.
fn send(dir: &Path, port: u16, relay: &str, args: &[&str]) -> serde_json::Value {
    let output = Command::new(BENCH)
        .args(["hops", "send", "--relay", &format!("127.0.0.1:{port}")])
        .args(["--relay-key", relay, "--mount", MOUNT, "--json", "--key"])
        .arg(dir.join("sender.key"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "ringspan-bench hops send {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn run_chain(relays: usize) {
    let path = scratch(&format!("hops-{relays}"));
    let dir = path.as_path();
    let sender = key_file(dir, "sender").public_key().unwrap();
    let receiver = key_file(dir, "receiver").public_key().unwrap();
    let nodes: Vec<Node> =
        ["r1", "r2"][..relays].iter().map(|&name| Node::new(dir, name)).collect();
    let keys: Vec<String> = nodes.iter().map(|n| n.public().to_base64()).collect();
    let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
    let mut procs: Vec<Proc> = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let mut allow = Vec::new();
        if i == 0 {
            allow.push((sender, "client"));
        }
        if i + 1 == relays {
            // The receiver attaches the mount: its key is granted a router's rights.
            allow.push((receiver, "router"));
        }
        let node_lines =
            format!("workers = 1\n{}control = \"{}.sock\"\n", config::allow(&allow), node.name);
        let mut tables = String::new();
        if i > 0 {
            tables += &config::peer(&nodes[i - 1], false);
        }
        if i + 1 < relays {
            tables += &config::peer(&nodes[i + 1], true);
        }
        config::write(node, &node_lines, "", &tables);
        procs.push(node.run());
    }
    let last = relays - 1;
    procs.push(Proc(
        Command::new(BENCH)
            .args(["hops", "receive", "--relay", &format!("127.0.0.1:{}", ports[last])])
            .args(["--relay-key", &keys[last], "--mount", MOUNT, "--key"])
            .arg(dir.join("receiver.key"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));

    let one_way = send(dir, ports[0], &keys[0], &["--mode", "one-way", "--count", "1000"]);
    for (field, want) in [("sent", 1000), ("received", 1000), ("window_messages", 1000)] {
        assert_eq!(one_way[field].as_u64(), Some(want), "{field}: {one_way}");
    }
    assert_eq!(one_way["out_of_order"].as_u64(), Some(0), "{one_way}");
    // (1,000 small messages may arrive within one turn of the receiver: no rate to check.)

    // A window far smaller than the count: the sender must wait for acknowledgements.
    let args = ["--mode", "one-way", "--count", "3000", "--size", "128", "--window-bytes", "4096"];
    let paced = send(dir, ports[0], &keys[0], &args);
    assert_eq!(paced["received"].as_u64(), Some(3000), "{paced}");
    assert_eq!(paced["out_of_order"].as_u64(), Some(0), "{paced}");
    assert!(paced["window_seconds"].as_f64().unwrap() > 0.0, "{paced}");
    assert!(paced["msgs_per_sec"].as_f64().unwrap() > 0.0, "{paced}");
    // Past the call's first record, every relay forwarded the stream's records whole, and
    // sent them from the receive buffers they arrived in.
    for node in &nodes {
        wait_for(
            &format!("{} to count records forwarded whole, in place", node.name),
            Duration::from_secs(5),
            || {
                node.try_snapshot().is_some_and(|s| {
                    s.counters.whole_records > 0 && s.counters.records_in_place > 0
                })
            },
        );
    }

    for mode in ["rtt", "rtt-stream"] {
        let rtt = send(dir, ports[0], &keys[0], &["--mode", mode, "--count", "100"]);
        assert_eq!(rtt["samples"].as_u64(), Some(100), "{mode}: {rtt}");
        assert_eq!(rtt["corrupted"].as_u64(), Some(0), "{mode}: {rtt}");
        let (p50, p99, p999) = (
            rtt["p50_us"].as_f64().unwrap(),
            rtt["p99_us"].as_f64().unwrap(),
            rtt["p999_us"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= p999, "{mode}: {rtt}");
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&path);
}

#[test]
fn one_relay_hop() {
    run_chain(1);
}

#[test]
fn two_relay_hops() {
    run_chain(2);
}
