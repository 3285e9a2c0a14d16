//! A satellite with 10,000 client links, as processes: `ringspan run` with role satellite and
//! unknown keys accepted, and `ringspan-bench clients` opening 10,000 links to it (each under a
//! key of its own, each opening a client's hello), holding them idle for 2 s.
//!
//! Debug builds handshake at ~1,400 links a second on the 2-vCPU development VM with both
//! processes on it, so the dials are paced at 1,000 a second: the whole test takes ~15 s there.

use std::process::Command;
use std::time::Duration;

use crate::support::config;
use crate::support::host::{raise_nofile_limit, scratch};
use crate::support::node::Node;
use crate::support::process::{BENCH, Proc};
use crate::support::wait::{now, wait_for, wait_until};

const CLIENTS: u64 = 10_000;
/// Dials per second (see the module doc).
const RATE: u32 = 1_000;
/// Generous for 10 s of dialling on two busy cores.
const TIME_LIMIT: Duration = Duration::from_secs(100);

#[test]
fn a_satellite_takes_ten_thousand_client_links() {
    let _alone = crate::alone();
    // The satellite inherits this limit; the client load raises its own.
    let want = CLIENTS + 1_024;
    let open = raise_nofile_limit(want);
    assert!(open >= want, "{CLIENTS} links need {want} open files; the hard limit allows {open}");

    let dir = scratch("clients");
    let sat = Node::new(&dir, "sat");
    let (public, port) = (sat.public().to_base64(), sat.port);
    let node_lines = "workers = 1\nrole = \"satellite\"\naccept_unknown_keys = true\n";
    config::write(&sat, node_lines, "keepalive_ms = 15000\nidle_timeout_ms = 60000\n", "");
    let _satellite = sat.run();
    wait_for("the satellite to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let started = now();
    let (out, err) = (dir.join("clients.json"), dir.join("clients.log"));
    let mut load = Proc(
        Command::new(BENCH)
            .args(["clients", "--connect", &format!("127.0.0.1:{port}")])
            .args(["--peer-key", &public, "--clients", &CLIENTS.to_string()])
            .args(["--rate", &RATE.to_string(), "--hold", "2", "--json"])
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut status = None;
    wait_until("the client load to end", TIME_LIMIT, Duration::from_millis(100), || {
        status = load.0.try_wait().unwrap();
        status.is_some()
    });
    let status = status.unwrap();
    let elapsed = now() - started;
    let stdout = std::fs::read_to_string(&out).unwrap();
    let stderr = std::fs::read_to_string(&err).unwrap();
    assert!(status.success(), "ringspan-bench clients failed ({status}): {stderr}");
    let report: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"));
    let field = |name: &str| report[name].as_u64().unwrap_or_else(|| panic!("no {name}: {report}"));
    println!(
        "{} links established in {:.1} s ({:.0}/s, connect p50 {} ms, p99 {} ms), {} held; the \
         whole run took {elapsed:.1?}",
        field("established"),
        report["dial_seconds"].as_f64().unwrap_or(0.0),
        report["handshakes_per_sec"].as_f64().unwrap_or(0.0),
        report["connect_p50_ms"],
        report["connect_p99_ms"],
        field("up_now"),
    );
    assert_eq!(field("established"), CLIENTS, "{report}");
    assert_eq!(field("failed"), 0, "{report}");
    // Every client is still held once all have said hello (none refused by a table bound).
    let held = field("up_now");
    assert_eq!(held, CLIENTS, "only {held} links held: {report}");
    let _ = std::fs::remove_dir_all(&dir);
}
