//! `ringspan-bench hops` end to end: a sender and a receiver on either side of one and of two
//! `ringspan run` relays on loopback. Counts must be exact: every message sent arrives once and
//! in order, and every round trip asked for is recorded. The relays forward the one-way stream's
//! records whole (their counters say so).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ringspan::cipher::PrivateKey;
use ringspan::cipher::identity::write_new_key_file;
use ringspan::daemon::{Snapshot, control};

use crate::support::host::scratch;
use crate::support::process::{BENCH, Proc, free_port, run_node};
use crate::support::wait::wait_for;

const MOUNT: &str = "0x1:0x10";

fn key(dir: &Path, name: &str) -> String {
    let path = dir.join(format!("{name}.key"));
    let key = PrivateKey::generate().unwrap();
    write_new_key_file(&path, &key).unwrap();
    key.public_key().unwrap().to_base64()
}

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
    let sender = key(dir, "sender");
    let receiver = key(dir, "receiver");
    let names: Vec<String> = (1..=relays).map(|i| format!("r{i}")).collect();
    let keys: Vec<String> = names.iter().map(|n| key(dir, n)).collect();
    let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
    let mut procs: Vec<Proc> = Vec::new();
    for i in 0..relays {
        let mut allow = Vec::new();
        if i == 0 {
            allow.push(format!("\"{sender}\""));
        }
        if i + 1 == relays {
            // The receiver attaches the mount: its key is granted a router's rights.
            allow.push(format!("{{ key = \"{receiver}\", role = \"router\" }}"));
        }
        let mut text = format!(
            "[node]\nkey = \"{}.key\"\nlisten = [\"127.0.0.1:{}\"]\nworkers = 1\nallow = [{}]\n\
             control = \"{}.sock\"\n",
            names[i],
            ports[i],
            allow.join(", "),
            names[i]
        );
        if i > 0 {
            text += &format!("\n[[peer]]\nkey = \"{}\"\n", keys[i - 1]);
        }
        if i + 1 < relays {
            text += &format!(
                "\n[[peer]]\nkey = \"{}\"\naddress = \"127.0.0.1:{}\"\n",
                keys[i + 1],
                ports[i + 1]
            );
        }
        let config = dir.join(format!("{}.toml", names[i]));
        std::fs::write(&config, text).unwrap();
        procs.push(run_node(&config));
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
    // Past the call's first record, every relay forwarded the stream's records whole.
    for name in &names {
        let socket = dir.join(format!("{name}.sock"));
        let whole = || {
            let snapshot = control::fetch(&socket).ok()?;
            let snapshot: Snapshot = serde_json::from_str(&snapshot).ok()?;
            Some(snapshot.counters.whole_records)
        };
        wait_for(
            &format!("{name} to count records forwarded whole"),
            Duration::from_secs(5),
            || whole().is_some_and(|n| n > 0),
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
