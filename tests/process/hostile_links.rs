//! One link per adjacency, one node per port and per key, and timers both ends agree on, on
//! real `ringspan run` processes (and rogue peers, `support/rogue.rs`):
//!
//! - a second node on a running node's port exits naming the address, and the first serves on;
//! - two processes running with one key both dial a node: it keeps one link to that node id,
//!   closes every other as a duplicate (not as misbehaviour) and routes only on the kept one;
//! - three routers that all dial each other at once end with one link per pair, and no route
//!   keeps a standby through a second link to its best route's node;
//! - a node keeps a link alive as often as the *peer's* idle timeout needs, whatever its own
//!   keepalive setting says;
//! - a hello asking for an idle timeout below `PEER_IDLE_TIMEOUT_MIN_MS` closes its link as
//!   misbehaviour, the minimum itself is taken;
//! - a record trickled a byte at a time, which keeps the link from idling, is cut off once it
//!   has held a full-size buffer for the reassembly deadline.
//!
//! The flood of strangers against configured peers is in `hostile_links_flood.rs`.
//!
//! Nothing waits on the clock to assert: every wait is for a condition (a snapshot, a rogue's
//! state, a process's exit) with a generous timeout, so a slow machine only makes it slower.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, LinkRow, Snapshot};
use ringspan::ids::{ClusterId, LinkId, MountId};
use ringspan::limits::{RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN, SMALL_RECORD_BUF};
use ringspan::span::{MountKey, Role, Wants};
use ringspan::wire::{Command, ErrorCode};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::{Proc, exit_of, free_port, run_node, signal};
use crate::support::rogue::{self, CloseSeen, Rogue};
use crate::support::wait::{now, wait_for};

/// How long any condition is waited for: generous, so that only a real failure fails.
const WAIT: Duration = Duration::from_secs(60);
/// The echo master of the tests' cluster 1.
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };

/// The echo master's config entry.
fn echo_master() -> String {
    config::echo_mount(MASTER, "master", "echo")
}

/// `node`'s id, as snapshots show node ids.
fn id_of(node: &Node) -> String {
    node.public().node_id().to_string()
}

/// `node`'s snapshot, if its worker answered (a node that does not answer in time, or has not
/// started yet, gives an empty one: not a sample).
fn answered(node: &Node) -> Option<Snapshot> {
    node.try_snapshot().filter(|s| s.node == id_of(node))
}

/// The snapshot's link rows to the node with id `peer`.
fn rows_to<'a>(snapshot: &'a Snapshot, peer: &str) -> Vec<&'a LinkRow> {
    snapshot.links.iter().filter(|l| l.peer == peer).collect()
}

/// The node id a route's `via` or `standby` names ("link 0:5.1 (PEER)").
fn peer_in(hop: &str) -> &str {
    hop.rsplit_once(" (").map_or("", |(_, peer)| peer.trim_end_matches(')'))
}

/// Node `n` in `dir`, letting strangers in and serving the echo master, and an honest client
/// (from 127.0.0.2) whose first call it has answered.
fn stranger_node_serving(dir: &std::path::Path) -> (Node, Proc, Rogue) {
    let n = Node::new(dir, "n");
    config::write(&n, "accept_unknown_keys = true", "", &echo_master());
    let process = n.run();
    wait_for("n to serve its master", WAIT, || {
        answered(&n).is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    let mut good = client_of(&n, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    good.echo_call(MASTER, CALL, b"before", WAIT);
    (n, process, good)
}

/// A rogue that said hello as a client and heard `node`'s span for the echo master.
fn client_of(node: &Node, from: Option<IpAddr>) -> Rogue {
    let identity = Identity::generate().unwrap();
    let mut rogue = match from {
        None => Rogue::connect(node.addr(), &identity, Some(node.public())),
        Some(source) => Rogue::connect_from(source, node.addr(), &identity, Some(node.public())),
    }
    .unwrap();
    rogue.hello(Role::Client, Wants::all());
    rogue.pump_until(WAIT, |r| r.span_of(MASTER).is_some()).unwrap();
    rogue
}

/// Whether the node sent `rogue` anything but pings and its close: a transaction message, or a
/// one-way message of another kind.
fn heard_anything(rogue: &Rogue) -> bool {
    rogue.log().iter().any(|seen| match seen {
        rogue::Seen::Delivery(d) => !d.synthesized,
        rogue::Seen::OneWay { .. } => true,
        rogue::Seen::Ended { .. } => false,
    })
}

/// A hello (PROTOCOL.md section 8.2) of a client wanting every kind of every cluster, with
/// `idle_ms` as its idle timeout.
fn client_hello(idle_ms: u32) -> [u8; 16] {
    let mut hello = [0u8; 16];
    hello[0] = 2; // client
    hello[1] = 0x1f; // master, slave, soft-master, soft-slave, cache
    hello[2] = 1; // ALL_CLUSTERS, so no list
    hello[8..12].copy_from_slice(&idle_ms.to_le_bytes());
    hello
}

/// Before: with SO_REUSEPORT on the listener, the second node bound the same port, ran, and was
/// dealt a share of the first one's connections; the wait for its exit timed out.
#[test]
fn a_second_node_on_a_running_nodes_port_exits_and_the_first_serves_on() {
    let dir = scratch("links-port");
    let a = Node::new(&dir, "a");
    // Two configs that differ only in their control socket: nothing but the port is shared.
    let config = |control: &str| {
        format!(
            "[node]\nkey = \"a.key\"\nlisten = [\"127.0.0.1:{}\"]\ncontrol = \"{control}\"\n\
             accept_unknown_keys = true\n{}",
            a.port,
            echo_master()
        )
    };
    std::fs::write(&a.config, config("a.sock")).unwrap();
    let copy = dir.join("copy.toml");
    std::fs::write(&copy, config("copy.sock")).unwrap();

    let _first = a.run();
    wait_for("a to serve its master", WAIT, || {
        answered(&a).is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    let mut second = run_node(&copy);
    let status = exit_of(&mut second, "the second node to give up", WAIT);
    assert!(!status.success(), "the second node refuses to run: {status:?}");
    let log = std::fs::read_to_string(copy.with_extension("log")).unwrap();
    assert!(
        log.contains(&format!("cannot listen on 127.0.0.1:{}", a.port)) && log.contains("in use"),
        "the second node names the address in use: {log}"
    );
    // It bound its own control socket before it failed, and took it away with it.
    assert!(!dir.join("copy.sock").exists(), "a node that failed to start left its socket");

    // The first still answers on its socket and carries calls.
    let served = a.snapshot().counters.served;
    let mut client = client_of(&a, None);
    for i in 0..3u8 {
        client.echo_call(MASTER, CALL, &[b'x', i], WAIT);
    }
    client
        .pump_until(WAIT, |_| answered(&a).is_some_and(|s| s.counters.served == served + 3))
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before (no duplicate resolution): M held both processes' links to one node id, the second
/// process's link stayed (the `links` rows to K reached 2), and `counters.duplicates` stayed 0;
/// a rogue with K's key, or M's own, was kept and sent M's hello.
#[test]
fn a_key_used_by_two_processes_gets_one_link_and_calls_go_on_it() {
    let dir = scratch("links-twokeys");
    let m = Node::new(&dir, "m");
    let k1 = Node::new(&dir, "k1");
    // A second process with the same key (k1.key), on its own port and socket.
    let k2 =
        Node { name: "k2", port: free_port(), key: k1.key.clone(), config: dir.join("k2.toml") };
    let k = id_of(&k1);
    config::write(&m, "accept_unknown_keys = true", "", &config::peer(&k1, false));
    let k_config = |n: &Node| {
        let text = format!(
            "[node]\nkey = \"k1.key\"\nlisten = [\"127.0.0.1:{}\"]\n[limits]\nredial_min_ms = 50\n\
             redial_max_ms = 500\n{}{}",
            n.port,
            config::peer(&m, true),
            echo_master()
        );
        std::fs::write(&n.config, text).unwrap();
    };
    k_config(&k1);
    k_config(&k2);

    let _m = m.run();
    let _k1 = k1.run();
    let mut kept = None;
    wait_for("m to link to k1 and route to its master", WAIT, || {
        let Some(s) = answered(&m) else { return false };
        kept = rows_to(&s, &k).first().map(|row| row.link);
        s.routes.iter().any(|r| r.mount == "10" && peer_in(&r.via) == k)
    });
    let kept = kept.unwrap();
    // Every sample of m: at most one link to K's node id, and it is the one kept.
    let check = |s: &Snapshot| {
        let rows = rows_to(s, &k);
        assert!(rows.len() <= 1, "two links to one node id: {:?}", s.links);
        assert!(rows.iter().all(|row| row.link == kept), "the kept link changed: {:?}", s.links);
        assert_eq!(s.closes.misbehaved, 0, "a duplicate counted as misbehaviour: {:?}", s.closes);
    };

    // A third user of the key, a rogue: its link is closed, and m sends nothing on it before
    // (not even its hello).
    let duplicates = m.snapshot().counters.duplicates;
    let mut third =
        Rogue::connect(m.addr(), &Identity::new(k1.key.clone()).unwrap(), Some(m.public()))
            .unwrap();
    third.pump_until(WAIT, |r| r.closed().is_some()).unwrap();
    assert_eq!(third.closed(), Some(CloseSeen::Notice(ErrorCode::DUPLICATE)), "told why");
    assert!(third.peer_hello().is_none() && !heard_anything(&third), "{:?}", third.log());
    wait_for("m to count the duplicate", WAIT, || {
        answered(&m).is_some_and(|s| {
            check(&s);
            s.counters.duplicates > duplicates
        })
    });
    // m's own key, from outside: closed the same way.
    let mut mirror =
        Rogue::connect(m.addr(), &Identity::new(m.key.clone()).unwrap(), Some(m.public())).unwrap();
    mirror.pump_until(WAIT, |r| r.closed().is_some()).unwrap();
    assert_eq!(mirror.closed(), Some(CloseSeen::Notice(ErrorCode::DUPLICATE)), "told why");
    assert!(mirror.peer_hello().is_none() && !heard_anything(&mirror), "{:?}", mirror.log());
    wait_for("m to count its own key as a duplicate", WAIT, || {
        answered(&m).is_some_and(|s| {
            check(&s);
            s.counters.duplicates > duplicates + 1
        })
    });

    // The second process: m closes its every link as a duplicate, and it keeps dialling.
    let duplicates = m.snapshot().counters.duplicates;
    let _k2 = k2.run();
    wait_for("m to close k2's links as duplicates, again and again", WAIT, || {
        let Some(s) = answered(&m) else { return false };
        check(&s);
        s.counters.duplicates >= duplicates + 5
            && answered(&k2).is_some_and(|s| s.closes.peer_closed + s.closes.io >= 3)
    });
    let s = m.snapshot();
    check(&s);
    assert!(s.closes.local > 0, "m closed the duplicates itself: {:?}", s.closes);

    // Calls through m go on the kept link, to k1, while k2 goes on dialling.
    let mut client = client_of(&m, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    for i in 0..5u8 {
        client.echo_call(MASTER, CALL, &[b'k', i], WAIT);
        check(&m.snapshot());
    }
    let duplicates = m.snapshot().counters.duplicates;
    client
        .pump_until(WAIT, |_| {
            answered(&m).is_some_and(|s| {
                check(&s);
                s.counters.duplicates > duplicates
            })
        })
        .unwrap();
    assert_eq!(k1.snapshot().counters.served, 5, "k1, on the kept link, served every call");
    let k2_now = k2.snapshot();
    assert_eq!(k2_now.counters.served, 0, "nothing reached k2 on a duplicate");
    assert_eq!(k2_now.closes.misbehaved, 0, "{:?}", k2_now.closes);
    let k1_now = k1.snapshot();
    assert_eq!(k1_now.closes, Default::default(), "k1's link never went down");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before (no duplicate resolution): each pair that dialled each other kept both links (four
/// per node), and A's route to the master kept a standby through its second link to C.
#[test]
fn routers_that_all_dial_each_other_keep_one_link_per_pair() {
    let dir = scratch("links-triangle");
    let [a, b, c] = ["a", "b", "c"].map(|name| Node::new(&dir, name));
    // Long idle and handshake timeouts: b and c are stopped for a moment below.
    let limits = "keepalive_ms = 1000\nidle_timeout_ms = 20000\nhandshake_timeout_ms = 60000\n\
                  redial_min_ms = 50\nredial_max_ms = 300\n";
    let a_extra = "accept_unknown_keys = true";
    config::write(&a, a_extra, limits, &(config::peer(&b, true) + &config::peer(&c, true)));
    config::write(&b, "", limits, &(config::peer(&a, true) + &config::peer(&c, true)));
    config::write(
        &c,
        "",
        limits,
        &(config::peer(&a, true) + &config::peer(&b, true) + &echo_master()),
    );
    let ids = [&a, &b, &c].map(id_of);

    // Races for certain: b and c linked to each other and dialling a (refused: it is not up),
    // then stopped; a started, dialling them (its handshakes wait in their listen queues);
    // once b's and c's redial of a is due, they go on. Each one's first turn dials a before
    // a's handshake can complete there (it needs two more messages): both links of each pair
    // with a come up at both ends.
    let b_proc = b.run();
    let c_proc = c.run();
    wait_for("b and c to link", WAIT, || {
        [&b, &c].iter().all(|n| answered(n).is_some_and(|s| s.links.len() == 1))
    });
    signal(&b_proc.0, libc::SIGSTOP);
    signal(&c_proc.0, libc::SIGSTOP);
    let stopped = now();
    let _a = a.run();
    wait_for("a to dial b and c", WAIT, || {
        answered(&a)
            .is_some_and(|s| s.peers.len() == 2 && s.peers.iter().all(|p| p.state == "dialling"))
    });
    // Their redial of a is due by then: their last dial failed before they stopped, and no
    // wait between two dials is longer than redial_max_ms (a precondition, not an assertion).
    std::thread::sleep((stopped + Duration::from_millis(300)).saturating_duration_since(now()));
    signal(&b_proc.0, libc::SIGCONT);
    signal(&c_proc.0, libc::SIGCONT);

    let nodes = [&a, &b, &c];
    // Each node: no handshake still under way (one finishing later is a duplicate that may
    // replace a link), exactly two links, one to each other node, each the link its configured
    // peer's state names.
    let settled = |i: usize, s: &Snapshot| {
        let mut peers: Vec<&str> = s.links.iter().map(|l| l.peer.as_str()).collect();
        peers.sort_unstable();
        let mut others: Vec<&str> =
            ids.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, id)| id.as_str()).collect();
        others.sort_unstable();
        s.handshaking == 0
            && peers == others
            && s.peers.iter().all(|p| {
                rows_to(s, &p.peer)
                    .first()
                    .is_some_and(|row| p.state == format!("up ({})", LinkId(row.link)))
            })
    };
    let mut snapshots: Vec<Snapshot> = Vec::new();
    wait_for("one link per pair, a route from a to the master", WAIT, || {
        snapshots = nodes.iter().filter_map(|n| answered(n)).collect();
        snapshots.len() == 3
            && snapshots.iter().enumerate().all(|(i, s)| settled(i, s))
            // The duplicate's close withdraws what came over it: until the kept link's spans
            // arrive, a's route may go the long way, through b.
            && snapshots[0].routes.iter().any(|r| r.mount == "10" && peer_in(&r.via) == ids[2])
            && snapshots.iter().map(|s| s.counters.duplicates).sum::<u64>() >= 2
    });
    for (node, s) in nodes.iter().zip(&snapshots) {
        assert_eq!(s.closes.misbehaved, 0, "{}: {:?}", node.name, s.closes);
        println!("{}: {} duplicates, closes {:?}", node.name, s.counters.duplicates, s.closes);
    }
    // a reaches the master through c; a standby, if any, goes through another node (in a
    // triangle there is none: b's path is longer, and only equal-cost standbys are feasible).
    let route = snapshots[0].routes.iter().find(|r| r.mount == "10").unwrap().clone();
    assert!(route.standby.as_deref().is_none_or(|s| peer_in(s) != ids[2]), "{route:?}");

    // Settled for good: calls from a client of a reach the master, and no link was replaced.
    let links: Vec<Vec<u64>> =
        snapshots.iter().map(|s| s.links.iter().map(|l| l.link).collect()).collect();
    let mut client = client_of(&a, None);
    for i in 0..3u8 {
        client.echo_call(MASTER, CALL, &[b't', i], WAIT);
    }
    for (i, node) in nodes.iter().enumerate() {
        let s = node.snapshot();
        assert!(settled(i, &s), "{}: {:?} {:?}", node.name, s.links, s.peers);
        let now: Vec<u64> = s.links.iter().map(|l| l.link).collect();
        assert_eq!(now, links[i], "{}'s links changed", node.name);
    }
    assert!(c.snapshot().counters.served >= 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before (each node kept alive at its own `keepalive_ms`): b pinged a every 3 s, a cut the
/// link after 600 ms of silence, b redialled; the link id changed and a's `closes.idle` grew.
#[test]
fn a_node_keeps_alive_as_often_as_its_peers_idle_timeout_needs() {
    let dir = scratch("links-keepalive");
    let a = Node::new(&dir, "a");
    let b = Node::new(&dir, "b");
    config::write(&a, "", "keepalive_ms = 200\nidle_timeout_ms = 600\n", &config::peer(&b, false));
    config::write(
        &b,
        "",
        "keepalive_ms = 3000\nidle_timeout_ms = 10000\nredial_min_ms = 50\nredial_max_ms = 500\n",
        &config::peer(&a, true),
    );
    let _a = a.run();
    let _b = b.run();
    let peer = id_of(&b);
    let mut first: Option<(u64, u64)> = None;
    wait_for("a's link to b", WAIT, || {
        let Some(s) = answered(&a) else { return false };
        first = rows_to(&s, &peer).first().map(|row| (row.link, row.records_in));
        first.is_some()
    });
    let (link, records) = first.unwrap();
    // Nothing but keepalives flows (no mounts on either node): b's records reaching a are
    // b's pings, every 200 ms (a third of a's idle timeout), not every 3 s.
    wait_for("ten more records from b on the same link", WAIT, || {
        let Some(s) = answered(&a) else { return false };
        assert_eq!(s.closes.idle, 0, "a cut an idle link: {:?}", s.closes);
        let rows = rows_to(&s, &peer);
        assert!(
            rows.len() == 1 && rows[0].link == link,
            "a's link to b is not the first one ({link}): {:?}",
            s.links
        );
        rows[0].records_in >= records + 10
    });
    let s = answered(&b).expect("b answers");
    assert_eq!(s.closes, Default::default(), "b's link never went down");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before (any non-zero idle timeout taken): the 20 ms hello was taken, the node kept the link
/// (and would have kept alive at its own pace, so that a compliant peer cut it).
#[test]
fn a_hello_asking_for_a_too_short_idle_timeout_closes_its_link() {
    let dir = scratch("links-shortidle");
    let (n, _n, mut good) = stranger_node_serving(&dir);

    // 20 ms: below PEER_IDLE_TIMEOUT_MIN_MS (30). Closed at the hello, as misbehaviour.
    let mut rogue = Rogue::connect(n.addr(), &Identity::generate().unwrap(), None).unwrap();
    rogue.hello_raw(&client_hello(20));
    rogue::pump_all_until(&mut [&mut good, &mut rogue], WAIT, |r| {
        r[1].closed().is_some()
            && answered(&n).is_some_and(|s| s.closes.misbehaved == 1 && s.clients == 1)
    })
    .unwrap();
    assert_eq!(rogue.closed(), Some(CloseSeen::Notice(ErrorCode::REFUSED)), "told why");
    assert!(
        !rogue.log().iter().any(|seen| matches!(
            seen,
            rogue::Seen::Delivery(d) if !d.synthesized && d.command == Command::LINK_SPAN
        )),
        "the node advertised to a peer whose hello it refused: {:?}",
        rogue.log()
    );
    good.echo_call(MASTER, CALL, b"after a short idle timeout", WAIT);

    // 30 ms, the minimum, is taken: the link carries calls (and the node keeps it alive every
    // 10 ms, a third of it).
    let mut brisk = Rogue::connect(n.addr(), &Identity::generate().unwrap(), None).unwrap();
    brisk.hello_raw(&client_hello(30));
    brisk.pump_until(WAIT, |r| r.span_of(MASTER).is_some()).unwrap();
    brisk.echo_call(MASTER, CALL, b"at the minimum", WAIT);
    let pings = brisk.pings();
    brisk.pump_until(WAIT, |r| r.pings() > pings).unwrap();
    good.echo_call(MASTER, CALL, b"after all", WAIT);
    let s = n.snapshot();
    assert_eq!((s.closes.misbehaved, s.clients), (1, 2), "{:?}", s.closes);
    assert_eq!((good.closed(), brisk.closed()), (None, None));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Before (bytes kept a link's idle timer going, and a partial record held its 64 KiB buffer for
/// as long as they came): a peer trickling one record a byte at a time pinned a full buffer for
/// ever. Now a record holding a full-size buffer must be finished within
/// `RECORD_COMPLETION_TIMEOUT_MS` (10 s), however busy its trickle keeps the link.
#[test]
fn a_record_trickled_a_byte_at_a_time_is_cut_off_and_the_node_serves_on() {
    let dir = scratch("links-trickle");
    let (n, _n, mut good) = stranger_node_serving(&dir);

    // A stranger announces the largest record, sends more of it than a small buffer holds (the
    // node moves it to a full-size one), then one byte every 50 ms, well inside the idle timeout.
    let mut rogue = client_of(&n, None);
    rogue.policy().keepalive = None;
    let sealed = (RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN) as u32;
    let mut start = vec![0u8; RECORD_HEADER_LEN + SMALL_RECORD_BUF + 100];
    start[..4].copy_from_slice(&sealed.to_le_bytes());
    rogue.raw_bytes(&start);
    let deadline = now() + WAIT;
    let mut trickled = 0;
    while rogue.closed().is_none() {
        assert!(now() < deadline, "still open after {trickled} bytes trickled");
        rogue.raw_bytes(&[0]);
        trickled += 1;
        let _ = rogue.pump(Duration::from_millis(25));
        good.pump(Duration::from_millis(25)).unwrap();
    }
    // Far short of the record: only the deadline can have closed it.
    assert!(trickled < RECORD_PLAINTEXT_MAX / 2, "{trickled} bytes trickled");
    wait_for("n to count the rogue's close", WAIT, || {
        answered(&n).is_some_and(|s| s.closes.misbehaved == 1 && s.clients == 1)
    });
    assert_eq!(n.snapshot().closes.idle, 0, "closed by the reassembly deadline, not idleness");
    good.echo_call(MASTER, CALL, b"after a trickled record", WAIT);
    assert_eq!(good.closed(), None);
    let _ = std::fs::remove_dir_all(&dir);
}
