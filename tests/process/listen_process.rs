//! Where a `ringspan run` node listens and how it finds its peers, with real processes: a node
//! listening on two addresses (IPv4 and IPv6 loopback) links a peer through each; a peer given
//! by host name (`localhost:PORT`) is resolved and linked; a peer whose name never resolves
//! (`.invalid`, RFC 2606) shows why in `ringspan show` and the snapshot, while the node's other
//! peers link as ever.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ringspan::daemon::{PeerRow, Snapshot};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::{Node, key_file};
use crate::support::process::{BIN, free_port};
use crate::support::wait::wait_for;

/// How long anything may take before the test calls it hung.
const WAIT: Duration = Duration::from_secs(60);
/// Quick redials, so a dial that failed (a port not yet bound) is soon made again.
const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 2000\nredial_min_ms = 50\nredial_max_ms = 400\n";

/// `node`'s row for the peer named `name`, if `node` answers.
fn row(node: &Node, name: &str) -> Option<PeerRow> {
    let snapshot: Snapshot = node.try_snapshot()?;
    snapshot.peers.into_iter().find(|p| p.name.as_deref() == Some(name))
}

/// Whether `node` holds a link to the peer named `name`.
fn linked_to(node: &Node, name: &str) -> bool {
    node.try_snapshot().is_some_and(|s| s.links.iter().any(|l| l.name.as_deref() == Some(name)))
}

/// A `[[peer]]` table for `peer` dialled at `address` as written (an IP address or a name).
fn peer_at(peer: &Node, address: &str) -> String {
    format!(
        "\n[[peer]]\nname = \"{}\"\nkey = \"{}\"\naddress = \"{address}\"\n",
        peer.name,
        peer.public().to_base64()
    )
}

/// `ringspan show links` of the node whose config is `config`.
fn show_links(config: &Path) -> String {
    let out = Command::new(BIN).args(["show", "links", "--config"]).arg(config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_node_listening_on_two_addresses_links_a_peer_through_each() {
    let dir = scratch("listen-two");
    let [a, b, c] = ["a", "b", "c"].map(|n| Node::new(&dir, n));
    let v6 = free_port();
    // a listens on IPv4 and IPv6 loopback, on two workers, and accepts b and c.
    let text = format!(
        "[node]\nkey = \"a.key\"\nlisten = [\"{}\", \"[::1]:{v6}\"]\nworkers = 2\n[limits]\n\
         {LIMITS}{}{}",
        a.addr(),
        config::peer(&b, false),
        config::peer(&c, false)
    );
    std::fs::write(&a.config, text).unwrap();
    // b dials a's IPv4 address, c its IPv6 one.
    config::write(&b, "", LIMITS, &config::peer(&a, true));
    config::write(&c, "", LIMITS, &peer_at(&a, &format!("[::1]:{v6}")));
    let _a = a.run();
    let _b = b.run();
    let _c = c.run();

    wait_for("a linked to b and to c", WAIT, || linked_to(&a, "b") && linked_to(&a, "c"));
    for (dialler, address) in [(&b, a.addr().to_string()), (&c, format!("[::1]:{v6}"))] {
        // Asked again while the node does not answer in time (a busy machine).
        let mut up = None;
        wait_for(&format!("{}'s row for a, up", dialler.name), WAIT, || {
            up = row(dialler, "a").filter(|r| r.state.starts_with("up"));
            up.is_some()
        });
        let row = up.unwrap();
        assert_eq!(row.address, address);
        assert_eq!(row.resolved, None, "an IP address is dialled as it is: {row:?}");
    }
    // Its start-up line names both addresses.
    let log = std::fs::read_to_string(a.config.with_extension("log")).unwrap();
    let listening = format!("listening on {} and [::1]:{v6}", a.addr());
    assert!(log.contains(&listening), "no {listening:?} in:\n{log}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn peers_by_name_link_and_a_name_that_does_not_resolve_says_why() {
    let dir = scratch("listen-names");
    let [a, b, d] = ["a", "b", "d"].map(|n| Node::new(&dir, n));
    // A node that never runs, under a name that never resolves.
    let ghost = Node::new(&dir, "ghost");
    let ghost_address = format!("ghost.ringspan.invalid:{}", ghost.port);
    config::write(&a, "", LIMITS, &config::peer(&b, false));
    config::write(&d, "", LIMITS, &config::peer(&b, false));
    // b dials a by name, d by IP address and the ghost by a name that does not resolve, all
    // from one worker: the names are resolved off it, so nothing waits for the ghost's.
    let peers = format!(
        "{}{}{}",
        peer_at(&a, &format!("localhost:{}", a.port)),
        peer_at(&ghost, &ghost_address),
        config::peer(&d, true)
    );
    config::write(&b, "workers = 1", LIMITS, &peers);
    let _a = a.run();
    let _d = d.run();
    let _b = b.run();

    // The ghost's name never resolves: its dials fail, backing off, and say why.
    let mut ghost_row = PeerRow::default();
    wait_for("b to show that the ghost's name does not resolve", WAIT, || {
        row(&b, "ghost").is_some_and(|r| {
            ghost_row = r;
            ghost_row.failures >= 2
        })
    });
    assert_eq!(ghost_row.address, ghost_address);
    let error = ghost_row.last_error.clone().unwrap_or_else(|| panic!("{ghost_row:?}"));
    assert!(error.starts_with("cannot resolve ghost.ringspan.invalid: "), "{error}");
    assert!(ghost_row.state == "waiting" || ghost_row.state == "resolving", "{ghost_row:?}");
    // Meanwhile b links to a, found by name, and to d.
    wait_for("b linked to a and to d", WAIT, || linked_to(&b, "a") && linked_to(&b, "d"));
    let a_row = row(&b, "a").unwrap();
    assert!(a_row.state.starts_with("up"), "{a_row:?}");
    assert_eq!(a_row.address, format!("localhost:{}", a.port));
    // What the name resolved to (127.0.0.1 here; ::1 first where localhost has both, whose
    // dial fails, and the next dial takes the next address).
    let resolved: std::net::SocketAddr =
        a_row.resolved.as_deref().unwrap_or_else(|| panic!("{a_row:?}")).parse().unwrap();
    assert!(resolved.ip().is_loopback() && resolved.port() == a.port, "{a_row:?}");
    assert!(linked_to(&a, "b"));

    // `ringspan show` says the same, the name beside where it went.
    let shown = show_links(&b.config);
    assert!(shown.contains("cannot resolve ghost.ringspan.invalid: "), "{shown}");
    assert!(shown.contains(&format!("localhost:{} ({resolved})", a.port)), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_shows_a_peer_by_its_name() {
    let dir = scratch("listen-check");
    key_file(&dir, "a");
    let b = key_file(&dir, "b").public_key().unwrap().to_base64();
    let path = dir.join("a.toml");
    let text = format!(
        "[node]\nkey = \"a.key\"\nlisten = [\"127.0.0.1:7401\", \"[::1]:7401\"]\n\
         [[peer]]\nname = \"b\"\naddress = \"node-b.ringspan.invalid:7402\"\nkey = \"{b}\"\n"
    );
    std::fs::write(&path, text).unwrap();
    // Nothing is resolved by a check: a name that does not resolve is fine here.
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(summary.contains("listen   127.0.0.1:7401, [::1]:7401"), "{summary}");
    assert!(summary.contains("  b  node-b.ringspan.invalid:7402  router"), "{summary}");
    // A malformed one is refused at its place.
    std::fs::write(
        &path,
        format!("[node]\nkey = \"a.key\"\n[[peer]]\naddress = \"node b:1\"\nkey = \"{b}\"\n"),
    )
    .unwrap();
    let out = Command::new(BIN).args(["check", "--config"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains(&format!("{}:4:11: peer address: \"node b:1\"", path.display())),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
