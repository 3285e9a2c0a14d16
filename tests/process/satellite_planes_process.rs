//! A satellite on two workers (DESIGN 7c.3) as a real `ringspan run` process, under a core
//! router (also a process). Its clients (applications in this test's process) link to it on
//! whichever worker accepts them, its link to the core sits on one of the two, and its two planes
//! keep one client directory between them: calls from the core side reach every client whatever
//! worker its link is on, and every client reaches the master. Then one client on each worker
//! goes away: calls to those two are refused (`NO_ROUTE`, never lost or hung) while the others
//! carry on; they come back, link again (on either worker), and are found.
//!
//! Nothing waits on the clock: each step waits for what the satellite or a call reports.
//!
//! ```text
//! caller — a (router, echo master) — s (satellite, 2 workers) — clients
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, CallEvent, Handle, PeerSpec, Settings, Snapshot};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, MountKind, Role};
use ringspan::wire::ErrorCode;

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::wait::wait_for;

const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const WAIT: Duration = Duration::from_secs(20);
const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";
/// Clients started before giving up on the kernel ever handing one to each worker.
const CLIENTS_MAX: u128 = 24;

/// A client application serving one client mount (each call answered with its payload) until
/// it is stopped.
struct Client {
    mount: MountKey,
    stop: Arc<AtomicBool>,
    server: JoinHandle<Handle>,
}

impl Client {
    fn start(satellite: PeerSpec, mount: MountKey) -> Client {
        let mut settings = Settings::new(Identity::generate().unwrap());
        settings.role = Role::Client;
        settings.peers = vec![satellite];
        settings.recv_buffers = 8;
        settings.limits.keepalive = Duration::from_millis(200);
        settings.limits.idle_timeout = Duration::from_millis(1000);
        settings.limits.redial_min = Duration::from_millis(50);
        settings.limits.redial_max = Duration::from_millis(500);
        let handle = Handle::start(settings).unwrap();
        handle.attach(mount, MountKind::Client, "client").unwrap();
        assert!(handle.wait_for_route(MASTER, WAIT), "a client reaches the master");
        assert_eq!(ask(&handle, None, MASTER), ErrorCode::NONE, "client → master");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let server = std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                if let Some(incoming) = handle.accept(Duration::from_millis(50)) {
                    let payload = incoming.payload.clone();
                    incoming.into_call(&handle).finish(CALL, &payload);
                }
            }
            handle
        });
        Client { mount, stop, server }
    }

    fn shutdown(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.join().unwrap().shutdown();
    }
}

/// A one-shot call from `from` to `mount`, or (with `aggregate`) to the client mount `mount`
/// behind that aggregate; how it ended (`NO_ROUTE` also when it could not open).
fn ask(from: &Handle, aggregate: Option<MountKey>, mount: MountKey) -> ErrorCode {
    let call = match aggregate {
        Some(aggregate) => from.open_client(aggregate, mount.mount, CALL, b"hello", true),
        None => from.open(mount, CALL, b"hello", true),
    };
    let Ok(call) = call else { return ErrorCode::NO_ROUTE };
    loop {
        match call.recv(WAIT) {
            Some(CallEvent::Ended(error)) => return error,
            Some(CallEvent::Message { .. }) => {}
            None => panic!("a call to {mount:?} hangs"),
        }
    }
}

/// The client links on each of the satellite's two workers.
fn clients_on(snapshot: &Snapshot) -> [usize; 2] {
    let on = |w: usize| snapshot.workers.get(w).map_or(0, |row| row.clients);
    [on(0), on(1)]
}

#[test]
fn a_satellite_on_two_workers_reaches_clients_on_both() {
    let dir = scratch("satellite-planes");
    let [a, s] = ["a", "s"].map(|n| Node::new(&dir, n));
    let caller_id = Identity::generate().unwrap();
    let allow = config::allow(&[(caller_id.public_key(), "router")]);
    let master = config::echo_mount(MASTER, "master", "");
    let a_tables = config::peer_as(&s, "satellite", false) + &master;
    config::write(&a, &format!("role = \"router\"\n{allow}"), LIMITS, &a_tables);
    let satellite = "role = \"satellite\"\nworkers = 2\naccept_unknown_keys = true\n\
                     client_clusters = [\"0x1\"]\n";
    config::write(&s, satellite, LIMITS, &config::peer_as(&a, "router", true));
    let procs = [a.run(), s.run()];
    wait_for("the satellite to link to the core", WAIT, || {
        s.try_snapshot().is_some_and(|snap| snap.links.len() == 1 && snap.workers.len() == 2)
    });

    // Clients until each worker holds at least two (the kernel deals connections to the
    // workers' accepts; each client waits for its link before the next dials).
    let mut clients: Vec<(Client, usize)> = Vec::new();
    let mut on = [0; 2];
    while on.iter().any(|&n| n < 2) {
        let i = clients.len() as u128;
        assert!(i < CLIENTS_MAX, "{CLIENTS_MAX} clients, all on one worker: {on:?}");
        let mount = MountKey { cluster: ClusterId(1), mount: MountId(0x1000 + i) };
        let client = Client::start(s.peer(), mount);
        let mut now_on = on;
        wait_for("the satellite to count the client's link", WAIT, || {
            now_on = s.try_snapshot().map_or(on, |snap| clients_on(&snap));
            now_on.iter().sum::<usize>() == clients.len() + 1
        });
        let worker = (0..2).find(|&w| now_on[w] > on[w]).unwrap();
        on = now_on;
        clients.push((client, worker));
    }

    let mut settings = Settings::new(caller_id);
    settings.peers = vec![a.peer()];
    settings.recv_buffers = 8;
    let caller = Handle::start(settings).unwrap();
    let s_id = s.key.public_key().unwrap().node_id();
    let aggregate = MountKey { cluster: ClusterId(1), mount: MountId(s_id.0) };
    assert!(caller.wait_for_route(aggregate, WAIT), "the core hears the satellite's aggregate");
    for (client, _) in &clients {
        assert_eq!(ask(&caller, Some(aggregate), client.mount), ErrorCode::NONE, "core → client");
    }
    let snap = s.try_snapshot().unwrap();
    assert_eq!(snap.client_mounts, clients.len(), "each client's mount, once");
    let handed: u64 = snap.workers.iter().map(|w| w.internal_bytes_out).sum();
    assert!(handed > 0, "calls to the clients on the worker without the core link cross");
    // The core holds the master and the one aggregate, whatever the clients.
    let routes = a.try_snapshot().unwrap().routes;
    assert_eq!(routes.len(), 2, "{routes:?}");

    // One client on each worker goes away: calls to them are refused, the others answered.
    let mut gone = Vec::new();
    for worker in 0..2 {
        let i = clients.iter().position(|&(_, w)| w == worker).unwrap();
        let (client, _) = clients.remove(i);
        gone.push(client.mount);
        client.shutdown();
    }
    wait_for("the satellite to drop the two clients' links", WAIT, || {
        s.try_snapshot().is_some_and(|snap| snap.client_mounts == clients.len())
    });
    for &mount in &gone {
        assert_eq!(ask(&caller, Some(aggregate), mount), ErrorCode::NO_ROUTE, "gone: {mount:?}");
    }
    for (client, _) in &clients {
        assert_eq!(ask(&caller, Some(aggregate), client.mount), ErrorCode::NONE);
    }

    // They come back, on whichever worker accepts them, and are found.
    let mut clients: Vec<Client> = clients.into_iter().map(|(client, _)| client).collect();
    for mount in gone {
        clients.push(Client::start(s.peer(), mount));
    }
    for client in &clients {
        assert_eq!(ask(&caller, Some(aggregate), client.mount), ErrorCode::NONE, "found again");
    }
    assert_eq!(s.try_snapshot().unwrap().client_mounts, clients.len());

    caller.shutdown();
    for client in clients {
        client.shutdown();
    }
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
}
