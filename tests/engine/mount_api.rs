//! The mount API (`daemon::Handle`) end to end on loopback: an application node serving a mount
//! behind one relay, a client application behind another, calls streaming both ways, no route,
//! and a relay stopped under an open call.

use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CallEvent, Handle, PeerSpec, Settings};
use ringspan::error::{Error, Misuse};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, MountKind, Role};
use ringspan::wire::{Command, ErrorCode};

use crate::support::wait::wait_until;

const CMD: Command = Command::new(3, 1);
const MOUNT: MountKey = MountKey { cluster: ClusterId(9), mount: MountId(2) };
const WAIT: Duration = Duration::from_secs(10);

fn start(
    id: &Identity,
    role: Role,
    listen: bool,
    peers: Vec<PeerSpec>,
    allow: &[(&Identity, Role)],
) -> Handle {
    let mut settings = Settings::new(id.clone());
    settings.role = role;
    settings.listen = listen.then(|| "127.0.0.1:0".parse().unwrap()).into_iter().collect();
    settings.peers = peers;
    settings.allow = allow.iter().map(|(i, role)| (i.public_key(), *role)).collect();
    settings.recv_buffers = 8;
    settings.limits.keepalive = Duration::from_millis(200);
    settings.limits.idle_timeout = Duration::from_millis(1000);
    settings.limits.redial_min = Duration::from_millis(50);
    Handle::start(settings).unwrap()
}

fn peer(handle: &Handle, id: &Identity) -> PeerSpec {
    PeerSpec::router(handle.local_addr(), id.public_key())
}

struct Cluster {
    relays: Vec<Handle>,
    server: Handle,
    client: Handle,
}

/// client — relay 2 — relay 1 — server (mount 9:2).
fn cluster() -> Cluster {
    let [r1, r2, s, c] = [(); 4].map(|()| Identity::generate().unwrap());
    let relay1 = start(&r1, Role::Router, true, vec![], &[(&r2, Role::Router), (&s, Role::Router)]);
    let relay2 = start(&r2, Role::Router, true, vec![peer(&relay1, &r1)], &[(&c, Role::Client)]);
    let server = start(&s, Role::Router, false, vec![peer(&relay1, &r1)], &[]);
    let client = start(&c, Role::Client, false, vec![peer(&relay2, &r2)], &[]);
    server.attach(MOUNT, MountKind::Master, "test/master").unwrap();
    assert!(client.wait_for_route(MOUNT, WAIT), "the client reaches the mount");
    Cluster { relays: vec![relay1, relay2], server, client }
}

fn message(event: Option<CallEvent>) -> (Vec<u8>, bool) {
    match event {
        Some(CallEvent::Message { payload, last, abort: false, .. }) => (payload, last),
        other => panic!("expected a message, got {other:?}"),
    }
}

#[test]
fn calls_stream_both_ways_through_two_relays() {
    let c = cluster();
    let route = c.client.routes().into_iter().find(|r| r.mount == "2").unwrap();
    assert_eq!(
        (route.metric, route.label.as_str(), route.kind.as_str()),
        (3, "test/master", "master")
    );

    let call = c.client.open(MOUNT, CMD, b"first", false).unwrap();
    let incoming = c.server.accept(WAIT).expect("the call arrives");
    assert_eq!(
        (incoming.mount, incoming.command, &incoming.payload[..], incoming.last),
        (MOUNT, CMD, &b"first"[..], false)
    );
    let served = incoming.into_call(&c.server);
    for i in 0..3u8 {
        call.send(CMD, &[i; 100]);
        assert_eq!(message(served.recv(WAIT)), (vec![i; 100], false));
        served.send(CMD, &[i + 10; 1000]);
        assert_eq!(message(call.recv(WAIT)), (vec![i + 10; 1000], false));
    }
    call.finish(CMD, b"bye");
    assert_eq!(message(served.recv(WAIT)), (b"bye".to_vec(), true));
    served.finish(CMD, b"");
    assert_eq!(message(call.recv(WAIT)), (vec![], true));
    assert_eq!(call.recv(WAIT), Some(CallEvent::Ended(ErrorCode::NONE)));
    assert_eq!(served.recv(WAIT), Some(CallEvent::Ended(ErrorCode::NONE)));
    // Nothing is left open anywhere along the way once the last closes have crossed.
    for node in c.relays.iter().chain([&c.server, &c.client]) {
        let what = format!("no circuit left open at {}", node.id());
        wait_until(&what, WAIT, Duration::from_millis(10), || node.snapshot().circuits == 0);
    }
}

#[test]
fn a_mount_nobody_advertises_has_no_route() {
    let c = cluster();
    let nowhere = MountKey { cluster: ClusterId(9), mount: MountId(99) };
    match c.client.open(nowhere, CMD, b"x", true) {
        Err(Error::Misuse(Misuse::NoRoute)) => {}
        Err(other) => panic!("expected NoRoute, got {other}"),
        Ok(_) => panic!("expected NoRoute, got a call"),
    }
}

#[test]
fn a_relay_stopped_under_an_open_call_ends_it_at_both_ends_with_lost_link() {
    let mut c = cluster();
    let call = c.client.open(MOUNT, CMD, b"held", false).unwrap();
    let served = c.server.accept(WAIT).expect("the call arrives").into_call(&c.server);
    let relay1 = c.relays.remove(0);
    relay1.shutdown();
    let end = |call: &ringspan::daemon::Call| loop {
        match call.recv(WAIT) {
            Some(CallEvent::Ended(error)) => return error,
            Some(CallEvent::Message { .. }) => continue, // the forced close itself
            None => panic!("the call hangs"),
        }
    };
    assert_eq!(end(&call), ErrorCode::LOST_LINK);
    assert_eq!(end(&served), ErrorCode::LOST_LINK);
}
