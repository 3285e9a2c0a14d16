//! A connect flood from strangers against a real `ringspan run` node with small admission
//! bounds leaves room for its configured peers: raw connects that never speak and real
//! handshakes from unknown keys, all from 127.0.0.99, held open, fill every link slot strangers
//! may take and are refused by the handshake rate and at `max_links`; a configured peer that
//! comes back during the flood (from 127.0.0.1, where its key linked from before) takes a
//! reserved slot, and honest calls through the node complete. The same node with
//! `reserved_links = 0` refuses that peer until the strangers leave.
//!
//! Nothing waits on the clock to assert: every wait is for a condition of the node's snapshot or
//! a process's outcome, with a generous timeout.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ringspan::cipher::{Identity, PublicKey};
use ringspan::daemon::Snapshot;
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::MountKey;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::support::config;
use crate::support::host::{raise_nofile_limit, scratch};
use crate::support::node::Node;
use crate::support::process::{BIN, Proc};
use crate::support::rogue::Rogue;
use crate::support::wait::wait_for;

/// How long any condition is waited for: generous, so that only a real failure fails.
const WAIT: Duration = Duration::from_secs(60);
/// Where the strangers come from: not an address any node of the test dials or links from.
const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 99));
/// The node's link bound.
const MAX_LINKS: usize = 64;
/// Its handshake rate (and burst), and the trusted sources' own.
const RATE: u32 = 20;
/// Link slots only trusted sources may take, in the scenario that has them.
const RESERVED: usize = 16;
/// Raw connects the flood holds open at most, and real handshakes (the descriptors they take).
const HELD_MAX: usize = 150;
/// Calls made through the node during the flood.
const CALLS: u64 = 20;
/// The echo master p serves.
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };

/// `node`'s snapshot, if its worker answered (an empty one is not a sample).
fn answered(node: &Node) -> Option<Snapshot> {
    let id = node.public().node_id().to_string();
    node.try_snapshot().filter(|s| s.node == id)
}

/// Whether the snapshot lists a link to `peer`.
fn links_to(snapshot: &Snapshot, peer: &Node) -> bool {
    let id = peer.public().node_id().to_string();
    snapshot.links.iter().any(|l| l.peer == id)
}

/// The flood: from [`STRANGER`], raw connects that never say a word and handshakes from fresh
/// unknown keys, every 5 ms, each held open (up to [`HELD_MAX`] of each; handshakes the node
/// refuses fail at once and are tried again) until the flood is stopped or dropped.
struct Flood {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<(usize, usize)>>,
}

impl Flood {
    fn start(addr: SocketAddr, key: PublicKey) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut silent = Vec::new();
            let mut rogues = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if silent.len() < HELD_MAX {
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    socket.bind(&SockAddr::from(SocketAddr::new(STRANGER, 0))).unwrap();
                    // Accepted by the kernel before the node decides: a refused one is reset
                    // later, and held all the same.
                    if socket.connect(&SockAddr::from(addr)).is_ok() {
                        silent.push(socket);
                    }
                }
                let identity = Identity::generate().unwrap();
                if let Ok(rogue) = Rogue::connect_from(STRANGER, addr, &identity, Some(key))
                    && rogues.len() < HELD_MAX
                {
                    rogues.push(rogue);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            (silent.len(), rogues.len())
        });
        Flood { stop, thread: Some(thread) }
    }

    /// Stops the flood and lets go of every connection it holds; how many it held.
    fn stop(mut self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a scenario ran on.
struct Cluster {
    dir: PathBuf,
    /// The node flooded.
    n: Node,
    /// A configured peer of n (a router, with the echo master), dialling n.
    p: Node,
    /// Another configured peer of n (a client), which makes the calls.
    q: Node,
}

/// n with the test's admission bounds and `reserved` link slots for trusted sources, p and q.
fn cluster(name: &str, reserved: usize) -> Cluster {
    let dir = scratch(&format!("flood-{name}"));
    let [n, p, q] = ["n", "p", "q"].map(|name| Node::new(&dir, name));
    // Silent connections and idle strangers keep their slots for the whole scenario: long
    // handshake and idle timeouts (n still keeps its peers' links alive at their pace).
    let limits = format!(
        "max_links = {MAX_LINKS}\nmax_handshakes_per_sec = {RATE}\n\
         trusted_handshakes_per_sec = {RATE}\nreserved_links = {reserved}\n\
         handshake_timeout_ms = 120000\nidle_timeout_ms = 120000\n"
    );
    let peers = config::peer_as(&p, "router", false) + &config::peer_as(&q, "client", false);
    config::write(&n, "accept_unknown_keys = true", &limits, &peers);
    let redial = "redial_min_ms = 50\nredial_max_ms = 250\n";
    let master = config::echo_mount(MASTER, "master", "");
    config::write(&p, "", redial, &(config::peer_as(&n, "router", true) + &master));
    config::write(&q, "role = \"client\"", redial, &config::peer_as(&n, "router", true));
    Cluster { dir, n, p, q }
}

/// Runs n and p until p is linked (so n trusts the address p's key linked from), floods n until
/// strangers hold every slot they may take, and kills p. Returns n's process, the flood, and
/// n's snapshot from then.
fn flood_without_p(c: &Cluster) -> (Proc, Flood, Snapshot) {
    let n_proc = c.n.run();
    let p_proc = c.p.run();
    wait_for("p to link to n", WAIT, || answered(&c.n).is_some_and(|s| links_to(&s, &c.p)));
    let flood = Flood::start(c.n.addr(), c.n.public());
    wait_for("strangers refused by the rate and at the link bound", WAIT, || {
        answered(&c.n).is_some_and(|s| s.refused_handshake_rate > 0 && s.refused_max_links > 0)
    });
    // p goes; a stranger takes its slot (strangers hold theirs for good): once one more is
    // refused at the link bound, every slot strangers may take is a stranger's.
    drop(p_proc);
    let mut refused = None;
    wait_for("n to lose p", WAIT, || {
        let Some(s) = answered(&c.n) else { return false };
        refused = Some(s.refused_max_links);
        !links_to(&s, &c.p)
    });
    let mut last = None;
    wait_for("a stranger refused at the link bound after p went", WAIT, || {
        last = answered(&c.n).filter(|s| s.refused_max_links > refused.unwrap());
        last.is_some()
    });
    (n_proc, flood, last.unwrap())
}

fn call(config: &Path) -> serde_json::Value {
    let output = Command::new(BIN)
        .args(["call", "--config"])
        .arg(config)
        .args(["--mount", "0x1:0x10", "--calls", &CALLS.to_string(), "--concurrency", "4"])
        .args(["--wait", "60"])
        .output()
        .unwrap();
    assert!(output.status.success(), "ringspan call: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Before (one bucket, no reserved slots): strangers holding every slot refused p at the link
/// bound, its link never came up during the flood (the wait for it timed out), and the second
/// scenario's refusals were the first's too.
#[test]
fn a_flood_of_strangers_leaves_room_for_configured_peers() {
    let fds = raise_nofile_limit(4_096);
    assert!(fds >= 1_024, "the descriptor limit ({fds}) is too low for this test");

    // With reserved slots: p comes back during the flood, q too, and calls pass through n.
    let c = cluster("reserved", RESERVED);
    let (n_proc, flood, before) = flood_without_p(&c);
    let p_proc = c.p.run();
    wait_for("p back on n during the flood", WAIT, || {
        answered(&c.n).is_some_and(|s| links_to(&s, &c.p))
    });
    let outcome = call(&c.q.config);
    assert_eq!(outcome["completed"].as_u64(), Some(CALLS), "{outcome}");
    // The flood went on all along: strangers are still refused at their bound.
    wait_for("more strangers refused", WAIT, || {
        answered(&c.n).is_some_and(|s| s.refused_max_links > before.refused_max_links + 10)
    });
    let s = c.n.snapshot();
    assert!(links_to(&s, &c.p), "{:?}", s.links);
    assert!(s.trusted_accepted >= before.trusted_accepted + 2, "p and q: {}", s.trusted_accepted);
    assert_eq!(s.trusted_refused, before.trusted_refused, "a configured peer was refused");
    assert!(s.counters.relayed >= CALLS, "{:?}", s.counters);
    assert_eq!(s.closes.misbehaved, 0, "{:?}", s.closes);
    let held = flood.stop();
    println!(
        "reserved_links = {RESERVED}: flood held {held:?}; n accepted {}, refused {} by rate \
         and {} at the bound; trusted {} accepted, {} refused",
        s.accepted,
        s.refused_handshake_rate,
        s.refused_max_links,
        s.trusted_accepted,
        s.trusted_refused
    );
    drop((p_proc, n_proc));
    let _ = std::fs::remove_dir_all(&c.dir);

    // The same without reserved slots: strangers take every slot, and p is refused (as a
    // trusted source, so counted apart) until the flood ends.
    let c = cluster("unreserved", 0);
    let (_n, flood, before) = flood_without_p(&c);
    let _p = c.p.run();
    wait_for("p refused three times", WAIT, || {
        let Some(s) = answered(&c.n) else { return false };
        assert!(!links_to(&s, &c.p), "p linked with no slot reserved: {:?}", s.links);
        assert_eq!(s.trusted_accepted, before.trusted_accepted);
        s.trusted_refused >= before.trusted_refused + 3
    });
    let held = flood.stop();
    wait_for("p on n once the strangers left", WAIT, || {
        answered(&c.n).is_some_and(|s| links_to(&s, &c.p))
    });
    let s = c.n.snapshot();
    println!(
        "reserved_links = 0: flood held {held:?}; n accepted {}, refused {} by rate and {} at \
         the bound; trusted {} accepted, {} refused",
        s.accepted,
        s.refused_handshake_rate,
        s.refused_max_links,
        s.trusted_accepted,
        s.trusted_refused
    );
    assert_eq!(s.closes.misbehaved, 0, "{:?}", s.closes);
    let _ = std::fs::remove_dir_all(&c.dir);
}
