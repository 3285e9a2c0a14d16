//! `ringspan trace`, `ringspan ping --node` and `ringspan show cluster` against real
//! `ringspan run` processes, and traces from a rogue peer:
//!
//! ```text
//!                       ┌─ r2 ─┐
//!   client ─── r1 ──────┤      ├─── h (echo master 0x1:0x10)
//!   (the CLI's node)    └─ r3 ─┘
//! ```
//!
//! r1 (on one worker) has two paths to the master, one active and one standby. A trace from the client names
//! r1, the relay of r1's active path and h, in that order, each with its own round trips; a
//! node is pinged along the path it is on, and one on no path this node routes is refused as
//! such. A rogue client at r1 sends malformed traces (each refused alone with `MALFORMED`, its
//! link kept) and a burst of good ones (each answered by exactly one report per node on the
//! path), while an honest call load through r1 loses nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{RouteRow, Snapshot};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, Role, Wants};
use ringspan::wire::{self, ErrorCode, Flags, TraceReport, TraceRequest, TraceStatus};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::{Node, key_file};
use crate::support::process::{BIN, Proc};
use crate::support::rogue::Rogue;
use crate::support::wait::wait_for;

const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
/// How long any condition is waited for: generous, so that only a real failure fails.
const PATIENCE: Duration = Duration::from_secs(60);

struct Diamond {
    dir: PathBuf,
    r1: Node,
    r2: Node,
    r3: Node,
    h: Node,
    /// The client's configuration: it links to r1, which it names "r1".
    client: PathBuf,
    _procs: Vec<Proc>,
}

impl Diamond {
    /// The four nodes running, r1 with both paths to the master; `allow` more keys at r1 (as
    /// clients) beside the client's.
    fn start(name: &str, allow: &[Identity]) -> Diamond {
        let dir = scratch(name);
        let [r1, r2, r3, h] = ["r1", "r2", "r3", "h"].map(|n| Node::new(&dir, n));
        let client_key = key_file(&dir, "client");
        let mut clients = vec![(client_key.public_key().unwrap(), "client")];
        clients.extend(allow.iter().map(|id| (id.public_key(), "client")));
        let tables = format!("{}{}", config::peer(&r2, true), config::peer(&r3, true));
        // r1 on one worker: its active path is then one path. On two, each plane has its own
        // (the one through its own link), and a trace takes the path of the plane the client's
        // link landed on (the others run on a worker per core: a trace crosses their planes).
        let lines = format!("{}workers = 1\n", config::allow(&clients));
        config::write(&r1, &lines, "", &tables);
        for relay in [&r2, &r3] {
            let tables = format!("{}{}", config::peer(&h, true), config::peer(&r1, false));
            config::write(relay, "", "", &tables);
        }
        let tables = format!(
            "{}{}{}",
            config::peer(&r2, false),
            config::peer(&r3, false),
            config::echo_mount(MASTER, "master", "h/master")
        );
        config::write(&h, "", "", &tables);
        let client = dir.join("client.toml");
        let text =
            format!("[node]\nkey = \"client.key\"\nrole = \"client\"\n{}", config::peer(&r1, true));
        std::fs::write(&client, text).unwrap();
        let procs = [&h, &r2, &r3, &r1].map(|n| n.run()).into_iter().collect();
        wait_for("r1 to hear both paths to the master", PATIENCE, || {
            r1.try_snapshot()
                .and_then(|s| master(&s))
                .is_some_and(|r| r.metric == 2 && r.via_node.is_some() && r.standby_node.is_some())
        });
        Diamond { dir, r1, r2, r3, h, client, _procs: procs }
    }

    fn id(node: &Node) -> String {
        node.public().node_id().to_string()
    }

    /// r1's active and standby first hops toward the master.
    fn paths(&self) -> (String, String) {
        let route = master(&self.r1.snapshot()).unwrap();
        (route.via_node.unwrap(), route.standby_node.unwrap())
    }
}

impl Drop for Diamond {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn master(s: &Snapshot) -> Option<RouteRow> {
    s.routes.iter().find(|r| (r.cluster.as_str(), r.mount.as_str()) == ("1", "10")).cloned()
}

fn ringspan(args: &[&str], config: &Path) -> Output {
    Command::new(BIN).args(args).arg("--config").arg(config).output().unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn trace_names_every_hop_of_the_active_path_in_order_and_ping_finds_nodes_on_it() {
    let d = Diamond::start("trace-diamond", &[]);
    let (active, standby) = d.paths();
    assert!([Diamond::id(&d.r2), Diamond::id(&d.r3)].contains(&active));
    let mount = "0x1:0x10";

    // The path, as JSON: r1, the relay of r1's active path, h; names as the client's
    // configuration gives them (it names r1 only); every round trip measured, each probe's in
    // hop order (a later hop's report comes back behind an earlier one's).
    let args = ["trace", "--mount", mount, "--count", "2", "--wait", "30", "--json"];
    let out = ringspan(&args, &d.client);
    assert!(out.status.success(), "{}", text(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let hops = json["hops"].as_array().unwrap();
    let nodes: Vec<&str> = hops.iter().map(|h| h["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, [Diamond::id(&d.r1), active.clone(), Diamond::id(&d.h)], "{json}");
    let statuses: Vec<&str> = hops.iter().map(|h| h["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["relays", "relays", "holds the mount"], "{json}");
    let names: Vec<Option<&str>> = hops.iter().map(|h| h["name"].as_str()).collect();
    assert_eq!(names, [Some("r1"), None, None], "{json}");
    let numbers: Vec<u64> = hops.iter().map(|h| h["hop"].as_u64().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3]);
    for probe in 0..2 {
        let rtts: Vec<u64> = hops.iter().map(|h| h["rtt_us"][probe].as_u64().unwrap()).collect();
        assert!(rtts.iter().all(|&t| t > 0), "{json}");
        assert!(rtts.windows(2).all(|w| w[0] <= w[1]), "in hop order: {json}");
    }
    assert_eq!(json["reached"], true);
    // Each node answered for itself: the holder counted the traces it ended, r1 those it passed
    // on, as calls.
    assert!(d.h.snapshot().counters.traced >= 2);
    assert!(d.r1.snapshot().counters.relayed >= 2);

    // The same as text: one line per hop, in order, with the holder last.
    let out = ringspan(&["trace", "--mount", mount, "--count", "1", "--wait", "30"], &d.client);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<&str> = shown.lines().collect();
    assert!(
        lines[0].starts_with("trace from ") && lines[0].ends_with("to 0x1:0x10, at most 30 hops")
    );
    assert!(lines[1].starts_with("hop  node"), "{shown}");
    let r1_line = format!("  1  {}  r1  ", Diamond::id(&d.r1));
    assert!(lines[2].starts_with(&r1_line) && lines[2].ends_with("relays"), "{shown}");
    assert!(lines[3].starts_with(&format!("  2  {active}  -     ")), "{shown}");
    let h_line = format!("  3  {}  -     ", Diamond::id(&d.h));
    assert!(lines[4].starts_with(&h_line) && lines[4].ends_with("holds the mount"), "{shown}");

    // A hop limit short of the mount, and a mount nobody serves: exit 1, and why.
    let out = ringspan(&["trace", "--mount", mount, "--max-hops", "2", "--count", "1"], &d.client);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("hop limit was reached at hop 2 ({active})")), "{stderr}");
    let out = ringspan(&["trace", "--mount", "0x1:0x77", "--wait", "2"], &d.client);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no route to 0x1:0x77 after 2 s"));

    // `ping --node`: each node on the path, at its hop; the standby relay is on no path this
    // client routes, and is refused as such, not timed.
    let ping = |node: &str| {
        let args = ["ping", "--node", node, "--count", "2", "--interval-ms", "0", "--wait", "30"];
        ringspan(&args, &d.client)
    };
    for (node, hop) in [(Diamond::id(&d.r1), 1), (active.clone(), 2), (Diamond::id(&d.h), 3)] {
        let out = ping(&node);
        let shown = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", text(&out));
        let at = format!("{node}: seq=1 hop={hop} via 0x1:0x10 time=");
        assert!(shown.contains(&at), "{at} in {shown}");
        assert!(shown.contains("2 requests, 2 answered; round trip"), "{shown}");
    }
    let out = ping(&standby);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("node {standby} is on none of the paths")), "{stderr}");
    let out = ping("not-a-node");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a node id is 32 hexadecimal digits"));
    // `ping --mount` still pings the mount.
    let args = ["ping", "--mount", mount, "--count", "2", "--interval-ms", "0", "--wait", "30"];
    let out = ringspan(&args, &d.client);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).matches(" time=").count(), 2);
}

#[test]
fn show_cluster_draws_the_nodes_and_both_paths_of_a_real_node() {
    let d = Diamond::start("trace-cluster", &[]);
    let (active, standby) = d.paths();
    let (r1, h) = (Diamond::id(&d.r1), Diamond::id(&d.h));
    let name_of = |id: &str| if id == Diamond::id(&d.r2) { "r2" } else { "r3" };

    let out = ringspan(&["show", "cluster"], &d.r1.config);
    assert!(out.status.success(), "{}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    let row = |id: &str| {
        *lines.iter().find(|l| l.starts_with(id)).unwrap_or_else(|| panic!("{id}: {shown}"))
    };
    assert!(row(&r1).ends_with("this node"), "{shown}");
    for relay in [&active, &standby] {
        let line = row(relay);
        assert!(line.contains(&format!("  {}  ", name_of(relay))), "{shown}");
        assert!(line.contains("neighbour (link "), "{shown}");
    }
    assert!(row(&h).ends_with("1 mount attached"), "{shown}");
    let mount = row("0x1:0x10");
    for part in [
        "master".to_string(),
        "h/master".to_string(),
        h.clone(),
        format!("{active} (2 hops)"),
        format!("{standby} (2 hops)"),
    ] {
        assert!(mount.contains(&part), "{part} in {mount}");
    }

    let out = ringspan(&["show", "cluster", "--dot"], &d.r1.config);
    assert!(out.status.success(), "{}", text(&out));
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph cluster {"), "{dot}");
    let q = |id: &str| format!("\"{id}\"");
    for line in [
        format!("  {} [label=\"{}\", style=bold];", q(&r1), &r1[..8]),
        format!("  {} [label=\"{}\\n{}\"];", q(&active), &active[..8], name_of(&active)),
        format!("  {} [label=\"{}\"];", q(&h), &h[..8]),
        format!("  {} -> \"0x1:0x10 (master)\" [dir=none, style=bold, label=\"attached\"];", q(&h)),
        format!("  {} -> {} [style=solid, label=\"0x1:0x10 active, 2 hops\"];", q(&r1), q(&active)),
        format!("  {} -> {} [style=solid, label=\"0x1:0x10 active\"];", q(&active), q(&h)),
        format!(
            "  {} -> {} [style=dashed, label=\"0x1:0x10 standby, 2 hops\"];",
            q(&r1),
            q(&standby)
        ),
        format!("  {} -> {} [style=dashed, label=\"0x1:0x10 standby\"];", q(&standby), q(&h)),
    ] {
        assert!(dot.lines().any(|l| l == line), "{line} missing from\n{dot}");
    }
    // Without `cluster`, --dot is the node's own neighbourhood, as before.
    let out = ringspan(&["show", "--dot"], &d.r1.config);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("digraph ringspan {"));
}

#[test]
fn a_rogues_traces_are_refused_alone_or_answered_once_per_node_and_calls_go_on() {
    let identity = Identity::generate().unwrap();
    let d = Diamond::start("trace-rogue", std::slice::from_ref(&identity));
    let (active, _) = d.paths();
    let mut rogue = Rogue::connect(d.r1.addr(), &identity, Some(d.r1.public())).unwrap();
    rogue.hello(Role::Client, Wants::all());
    rogue.pump_until(PATIENCE, |r| r.span_of(MASTER).is_some()).unwrap();
    let span = rogue.span_of(MASTER).unwrap();
    let refused_before = d.r1.snapshot().counters.refused;

    // Malformed: too short, reserved bytes set, hops at the limit, a limit past 64, not a
    // one-shot. Each is refused alone with MALFORMED; nothing is reported.
    let good = TraceRequest { hops: 0, limit: 64, target: None }.emit();
    let mut reserved = good;
    reserved[3] = 7;
    let mut at_limit = good;
    (at_limit[0], at_limit[1]) = (5, 5);
    let mut past = good;
    past[1] = 65;
    let bad = [
        (good[..20].to_vec(), Flags::DELETE),
        (reserved.to_vec(), Flags::DELETE),
        (at_limit.to_vec(), Flags::DELETE),
        (past.to_vec(), Flags::DELETE),
        (good.to_vec(), Flags::NONE),
    ];
    let malformed: Vec<_> = bad
        .iter()
        .map(|(payload, flags)| rogue.open(span, wire::Command::LINK_TRACE, payload, *flags))
        .collect();
    rogue.pump_until(PATIENCE, |r| malformed.iter().all(|&t| r.ended(t).is_some())).unwrap();
    for &trace in &malformed {
        assert_eq!(rogue.ended(trace), Some(ErrorCode::MALFORMED));
        assert!(rogue.deliveries(trace).all(|d| d.payload.is_empty()), "nothing reported");
    }
    assert!(rogue.closed().is_none(), "its link is kept");
    wait_for("r1 to count the refusals", PATIENCE, || {
        d.r1.snapshot().counters.refused >= refused_before + malformed.len() as u64
    });

    // A burst of good traces, all at once: each ends at the holder with exactly one report from
    // each node on the path, r1's first. No node sends more than its own.
    let burst: Vec<_> = (0..300)
        .map(|_| rogue.open(span, wire::Command::LINK_TRACE, &good, Flags::DELETE))
        .collect();
    rogue.pump_until(PATIENCE, |r| burst.iter().all(|&t| r.ended(t).is_some())).unwrap();
    let path = [d.r1.public().node_id().to_string(), active, d.h.public().node_id().to_string()];
    for &trace in &burst {
        assert_eq!(rogue.ended(trace), Some(ErrorCode::NONE));
        let reports: Vec<TraceReport> = rogue
            .deliveries(trace)
            .filter(|d| !d.synthesized)
            .map(|d| TraceReport::parse(&d.payload).unwrap())
            .collect();
        let nodes: Vec<String> = reports.iter().map(|r| r.node.to_string()).collect();
        assert_eq!(nodes, path);
        let hops: Vec<(u8, TraceStatus)> = reports.iter().map(|r| (r.hop, r.status)).collect();
        let relays = TraceStatus::Relayed;
        assert_eq!(hops, [(1, relays), (2, relays), (3, TraceStatus::Holder)]);
    }
    assert!(rogue.closed().is_none());

    // Honest calls through r1 meanwhile: all answered.
    let args = ["call", "--mount", "0x1:0x10", "--calls", "300", "--concurrency", "8"];
    let out = ringspan(&args, &d.client);
    assert!(out.status.success(), "{}", text(&out));
    let counts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counts["completed"], 300, "{counts}");
    rogue.pump(Duration::from_millis(50)).unwrap();
    assert!(rogue.closed().is_none());
}
