//! Satellites as real `ringspan run` processes under a 3-node core (also processes), with
//! client applications (the mount API, in this test's process) listing both satellites:
//!
//! ```text
//!   app (router, calls clients) — a (echo master) — b — s1 — clients
//!                                  \             /
//!                                   ——— c ——— s2 — (failover)
//! ```
//!
//! Calls go client → master and master → client through a satellite; the core holds one route
//! per satellite, not per client; a client that advertises a master is cut off while the others
//! carry on; a satellite SIGKILLed: its clients fail over to the other one and carry on.

use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CallEvent, Handle, PeerSpec, Settings};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, MountKind, Role};
use ringspan::wire::{Command as Cmd, ErrorCode};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::wait::{now, wait_for};

const CALL: Cmd = Cmd::new(1, 1);
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const WAIT: Duration = Duration::from_secs(20);

fn app(role: Role, peers: Vec<PeerSpec>) -> (Handle, Identity) {
    let identity = Identity::generate().unwrap();
    let mut settings = Settings::new(identity.clone());
    settings.role = role;
    settings.peers = peers;
    settings.recv_buffers = 8;
    settings.limits.keepalive = Duration::from_millis(200);
    settings.limits.idle_timeout = Duration::from_millis(1000);
    settings.limits.redial_min = Duration::from_millis(50);
    settings.limits.redial_max = Duration::from_millis(500);
    (Handle::start(settings).unwrap(), identity)
}

/// A one-shot call answered by the echo master (or a client serving its mount).
fn ask(call: Result<ringspan::daemon::Call, ringspan::Error>) -> ErrorCode {
    let call = match call {
        Ok(call) => call,
        Err(e) => panic!("cannot open: {e}"),
    };
    loop {
        match call.recv(WAIT) {
            Some(CallEvent::Ended(error)) => return error,
            Some(CallEvent::Message { .. }) => {}
            None => panic!("the call hangs"),
        }
    }
}

/// Serves calls to a client mount: each answered with its payload.
fn serve(handle: Handle) -> std::thread::JoinHandle<Handle> {
    std::thread::spawn(move || {
        while let Some(incoming) = handle.accept(Duration::from_secs(3)) {
            let payload = incoming.payload.clone();
            let call = incoming.into_call(&handle);
            call.finish(CALL, &payload);
        }
        handle
    })
}

#[test]
fn satellites_carry_clients_both_ways_and_fail_over() {
    let dir = scratch("satellites");
    let [a, b, c, s1, s2] = ["a", "b", "c", "s1", "s2"].map(|n| Node::new(&dir, n));
    // The core side's application node (it calls clients), allowed at a.
    let caller_id = Identity::generate().unwrap();
    let limits =
        "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";
    let peer = |n: &Node, dial: bool| {
        // Satellites are granted what they are, routers a router's rights.
        let role = if n.name.starts_with('s') { "satellite" } else { "router" };
        config::peer_as(n, role, dial)
    };
    let write = |n: &Node, role: &str, extra: &str, tables: String| {
        config::write(n, &format!("role = \"{role}\"\n{extra}"), limits, &tables);
    };
    let allow = config::allow(&[(caller_id.public_key(), "router")]);
    let master = config::echo_mount(MASTER, "master", "");
    write(&a, "router", &allow, peer(&b, true) + &peer(&c, true) + &master);
    write(&b, "router", "", peer(&a, false) + &peer(&c, true) + &peer(&s1, false));
    write(&c, "router", "", peer(&a, false) + &peer(&b, false) + &peer(&s2, false));
    let clients_of_1 = "accept_unknown_keys = true\nclient_clusters = [\"0x1\"]\n";
    write(&s1, "satellite", clients_of_1, peer(&b, true));
    write(&s2, "satellite", clients_of_1, peer(&c, true));
    let mut procs: Vec<Option<Proc>> =
        [&a, &b, &c, &s1, &s2].iter().map(|n| Some(n.run())).collect();

    // The satellites are up and linked to the core before any client dials (a client that
    // found s1 not yet listening would rightly fail over to s2).
    for sat in [&s1, &s2] {
        wait_for("a satellite to link to the core", WAIT, || {
            sat.try_snapshot().is_some_and(|s| s.links.len() == 1)
        });
    }
    // Clients list both satellites, s1 first.
    let mut clients = Vec::new();
    for i in 0..3u128 {
        let (client, _) = app(Role::Client, vec![s1.peer(), s2.peer()]);
        let mount = MountKey { cluster: ClusterId(1), mount: MountId(0x1000 + i) };
        client.attach(mount, MountKind::Client, "client").unwrap();
        clients.push((client, mount));
    }
    let mut settings = Settings::new(caller_id.clone());
    settings.peers = vec![a.peer()];
    settings.recv_buffers = 8;
    let caller = Handle::start(settings).unwrap();
    let s1_id = s1.key.public_key().unwrap().node_id();
    let s2_id = s2.key.public_key().unwrap().node_id();
    let aggregate =
        |id: ringspan::ids::NodeId| MountKey { cluster: ClusterId(1), mount: MountId(id.0) };
    for (client, _) in &clients {
        assert!(client.wait_for_route(MASTER, WAIT), "a client reaches the master");
    }
    assert!(caller.wait_for_route(aggregate(s1_id), WAIT), "the core hears s1's aggregate");
    // The core: the master and one aggregate (s1 serves every client now), never a client.
    wait_for("a's routes", WAIT, || {
        a.try_snapshot()
            .is_some_and(|s| s.routes.len() == 2 && s.routes.iter().any(|r| r.kind == "aggregate"))
    });

    // Client → master, and master side → client through s1's aggregate.
    let mut servers = Vec::new();
    for (client, mount) in clients.drain(..) {
        assert_eq!(ask(client.open(MASTER, CALL, b"hello master", true)), ErrorCode::NONE);
        servers.push((serve(client), mount));
    }
    for (_, mount) in &servers {
        let call = caller.open_client(aggregate(s1_id), mount.mount, CALL, b"hello client", true);
        assert_eq!(ask(call), ErrorCode::NONE);
    }

    // A client claiming a master is cut off alone, and the core never hears of it.
    let (rogue, _) = app(Role::Client, vec![s1.peer()]);
    let fake = MountKey { cluster: ClusterId(1), mount: MountId(0xbad) };
    rogue.attach(fake, MountKind::Master, "rogue").unwrap();
    // s1 cuts it for breaking the client rules (again at each of its redials) and counts that
    // as misbehaving, not as its own close.
    wait_for("s1 to count the rogue client's link as misbehaving", WAIT, || {
        s1.try_snapshot().is_some_and(|s| s.closes.misbehaved >= 1 && s.closes.local == 0)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(a.try_snapshot().unwrap().routes.iter().all(|r| r.mount != "bad"));
    for (_, mount) in &servers {
        let call = caller.open_client(aggregate(s1_id), mount.mount, CALL, b"still fine", true);
        assert_eq!(ask(call), ErrorCode::NONE);
    }
    rogue.shutdown();

    // s1 dies: its clients fail over to s2; calls both ways go on through s2.
    drop(procs[3].take());
    wait_for("the core to hear s2's aggregate", WAIT, || {
        a.try_snapshot()
            .is_some_and(|s| s.routes.iter().any(|r| r.mount == format!("{:x}", s2_id.0)))
    });
    for (_, mount) in &servers {
        let deadline = now() + WAIT;
        loop {
            let call =
                caller.open_client(aggregate(s2_id), mount.mount, CALL, b"found again", true);
            let error = match call {
                Ok(call) => ask(Ok(call)),
                Err(_) => ErrorCode::NO_ROUTE,
            };
            if error == ErrorCode::NONE {
                break;
            }
            // The client may still be redialling: NO_ROUTE until it is attached to s2.
            assert_eq!(error, ErrorCode::NO_ROUTE);
            assert!(now() < deadline, "client {mount:?} never came back through s2");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (server, _) in servers {
        let client = server.join().unwrap();
        assert_eq!(ask(client.open(MASTER, CALL, b"via s2", true)), ErrorCode::NONE);
        client.shutdown();
    }
    caller.shutdown();
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
