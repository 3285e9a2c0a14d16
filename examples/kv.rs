//! A tiny key-value store served through a ringspan cluster, with the mount API.
//!
//! In one process: two relay nodes (`core-1` — `core-2`), a key-value *master* application
//! attached to `core-1` (its own small node, role router, serving mount 7:1), and a *client*
//! application attached to `core-2` (role client). The client writes and reads keys and scans a
//! prefix (a streamed answer), all through both relays, every link encrypted.
//!
//! ```sh
//! cargo run --release --example kv
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CallEvent, Handle, PeerSpec, Settings};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, MountKind, Role};
use ringspan::wire::{Command, ErrorCode};

const PUT: Command = Command::new(2, 1);
const GET: Command = Command::new(2, 2);
const SCAN: Command = Command::new(2, 3);
const KV: MountKey = MountKey { cluster: ClusterId(7), mount: MountId(1) };
const WAIT: Duration = Duration::from_secs(5);

fn start(
    identity: &Identity,
    role: Role,
    listen: bool,
    peers: Vec<PeerSpec>,
    allow: &[(&Identity, Role)],
) -> Handle {
    let mut settings = Settings::new(identity.clone());
    settings.role = role;
    settings.listen =
        listen.then(|| "127.0.0.1:0".parse().expect("an address")).into_iter().collect();
    settings.peers = peers;
    // Each allowed key with the most it may be: a router's mounts reach the whole cluster.
    settings.allow = allow.iter().map(|(i, role)| (i.public_key(), *role)).collect();
    // A small node: 8 receive buffers of 256 KiB instead of 64.
    settings.recv_buffers = 8;
    Handle::start(settings).expect("the node starts")
}

fn peer(handle: &Handle, identity: &Identity) -> PeerSpec {
    PeerSpec::router(handle.local_addr(), identity.public_key())
}

/// The master: answers PUT, GET and SCAN until the process ends.
fn serve(master: Handle) {
    let mut store = BTreeMap::<String, String>::new();
    while let Some(incoming) = master.accept(Duration::from_secs(3600)) {
        let (command, request) =
            (incoming.command, String::from_utf8_lossy(&incoming.payload).into_owned());
        let call = incoming.into_call(&master);
        if command == PUT {
            let (key, value) = request.split_once('=').unwrap_or((&request, ""));
            store.insert(key.to_string(), value.to_string());
            call.finish(PUT, b"ok");
        } else if command == GET {
            let value = store.get(&request).cloned().unwrap_or_default();
            call.finish(GET, value.as_bytes());
        } else if command == SCAN {
            // A streamed answer: one message per entry, then the close.
            for (key, value) in store.range(request.clone()..) {
                if !key.starts_with(&request) {
                    break;
                }
                call.send(SCAN, format!("{key}={value}").as_bytes());
            }
            call.finish(SCAN, b"");
        } else {
            call.abort(command, ErrorCode::REFUSED);
        }
    }
}

/// A one-shot request; the answer's payloads, in order.
fn ask(client: &Handle, command: Command, payload: &str) -> Vec<String> {
    let call = client.open(KV, command, payload.as_bytes(), true).expect("a route to the store");
    let mut answers = Vec::new();
    while let Some(event) = call.recv(WAIT) {
        match event {
            CallEvent::Message { payload, .. } if !payload.is_empty() => {
                answers.push(String::from_utf8_lossy(&payload).into_owned());
            }
            CallEvent::Message { .. } => {}
            CallEvent::Ended(ErrorCode::NONE) => return answers,
            CallEvent::Ended(error) => panic!("the call ended with error {}", error.0),
        }
    }
    panic!("no answer within {WAIT:?}");
}

fn main() {
    let [core1_id, core2_id, master_id, client_id] =
        [(); 4].map(|()| Identity::generate().expect("a key"));
    let routers = [(&core2_id, Role::Router), (&master_id, Role::Router)];
    let core1 = start(&core1_id, Role::Router, true, vec![], &routers);
    let clients = [(&client_id, Role::Client)];
    let core2 = start(&core2_id, Role::Router, true, vec![peer(&core1, &core1_id)], &clients);
    // The applications: each its own small node, dialling its host node.
    let master = start(&master_id, Role::Router, false, vec![peer(&core1, &core1_id)], &[]);
    let client = start(&client_id, Role::Client, false, vec![peer(&core2, &core2_id)], &[]);

    master.attach(KV, MountKind::Master, "kv/master").expect("attach");
    std::thread::spawn(move || serve(master));
    assert!(client.wait_for_route(KV, WAIT), "the store is reachable from the client");
    for route in client.routes() {
        println!(
            "client sees mount {}:{} ({}, {:?}), {} hops away",
            route.cluster, route.mount, route.kind, route.label, route.metric
        );
    }
    for (key, value) in [("fruit/apple", "red"), ("fruit/kiwi", "green"), ("veg/leek", "white")] {
        ask(&client, PUT, &format!("{key}={value}"));
    }
    println!("GET fruit/kiwi -> {:?}", ask(&client, GET, "fruit/kiwi"));
    println!("SCAN fruit/    -> {:?}", ask(&client, SCAN, "fruit/"));
    client.shutdown();
    core2.shutdown();
    core1.shutdown();
}
