//! Satellites on the simulator (`sim::net`): a 3-router core, two satellites, and many client
//! nodes with client mounts. The core's tables do not grow with the clients; calls go client →
//! master and master → client through the satellites' aggregates; a client that advertises
//! anything but a client or cache mount is cut off alone; clients of a dead satellite carry on
//! through the other.

use ringspan::sim::net::Net;
use ringspan::span::{MountKind, Role};

const MASTER: u128 = 1;
const CORE: [usize; 3] = [0, 1, 2];
const SATELLITES: [usize; 2] = [3, 4];

fn client_mount(client: usize) -> u128 {
    10_000 + client as u128
}

/// The core triangle 0–1–2 with the master at 0, satellite 3 on 1 and 4 on 2, and `clients`
/// client nodes (5..) alternating between the satellites, each with one client mount.
fn cluster(clients: usize) -> Net {
    let mut roles = vec![Role::Router; 3];
    roles.extend([Role::Satellite; 2]);
    roles.extend(std::iter::repeat_n(Role::Client, clients));
    let mut net = Net::with_roles(&roles, 7);
    for (a, b) in [(0, 1), (1, 2), (2, 0), (3, 1), (4, 2)] {
        net.connect(a, b).unwrap();
    }
    net.attach_as(0, MASTER, MountKind::Master).unwrap();
    for c in 5..5 + clients {
        net.connect(c, SATELLITES[c % 2]).unwrap();
        net.attach_as(c, client_mount(c), MountKind::Client).unwrap();
    }
    net.run(10_000_000).unwrap();
    assert!(net.refusals.is_empty(), "{:?}", net.refusals);
    net
}

#[test]
fn the_core_holds_the_same_routes_for_ten_clients_as_for_a_thousand() {
    let small = cluster(10);
    let large = cluster(1_000);
    for node in CORE {
        // The master and one aggregate per satellite: never a route per client.
        assert_eq!(small.routes_at(node), 3, "core node {node}");
        assert_eq!(large.routes_at(node), small.routes_at(node), "core node {node}");
    }
    // A satellite holds its own clients' mounts in its client directory, never as routes (and
    // nothing of the other satellite's).
    assert_eq!(large.routes_at(3), 3, "the master and both aggregates");
    assert_eq!(large.node(3).clients().len(), 500);
    // A client sees the master only: no client mounts, no aggregates.
    assert_eq!(large.routes_at(5), 1 + 1, "the master and its own mount");
}

#[test]
fn calls_go_client_to_master_and_master_to_client_through_the_satellites() {
    let mut net = cluster(20);
    for c in 5..25 {
        net.call(c, MASTER, b"to the master").unwrap();
        net.call_client(0, SATELLITES[c % 2], client_mount(c), b"to a client").unwrap();
    }
    net.run(1_000_000).unwrap();
    assert_eq!(net.outcomes.completed, 40, "{:?}", net.outcomes);
    net.check_quiet().unwrap();
    // Through the wrong satellite there is no such client: refused, not lost.
    net.call_client(0, 3, client_mount(5), b"x").unwrap(); // client 5 is on satellite 4
    net.run(1_000_000).unwrap();
    assert_eq!(net.outcomes.no_route, 1);
    net.check_quiet().unwrap();
}

#[test]
fn a_client_advertising_a_master_is_cut_off_alone() {
    let mut net = cluster(10);
    // Client 5 (on satellite 3) claims to hold a master mount.
    net.attach_as(5, 77, MountKind::Master).unwrap();
    net.run(1_000_000).unwrap();
    assert_eq!(net.refusals.len(), 1, "{:?}", net.refusals);
    assert!(net.refusals[0].contains("not a client or cache"), "{:?}", net.refusals);
    for node in CORE {
        assert_eq!(net.routes_at(node), 3, "the core never heard of it");
    }
    // Everyone else carries on.
    for c in 6..15 {
        net.call(c, MASTER, b"still here").unwrap();
    }
    net.run(1_000_000).unwrap();
    assert_eq!(net.outcomes.completed, 9);
    net.check_quiet().unwrap();
}

#[test]
fn clients_of_a_dead_satellite_carry_on_through_the_other() {
    let mut net = cluster(10);
    net.crash(3).unwrap();
    net.run(1_000_000).unwrap();
    // The core dropped the dead satellite's aggregate and nothing else.
    assert_eq!(net.routes_at(0), 2);
    // Its clients (the even ones; odd ones are on 4) dial the other satellite.
    for c in (5..15).filter(|c| c % 2 == 0) {
        net.connect(c, 4).unwrap();
    }
    net.run(1_000_000).unwrap();
    for c in (5..15).filter(|c| c % 2 == 0) {
        net.call(c, MASTER, b"failed over").unwrap();
        net.call_client(0, 4, client_mount(c), b"found again").unwrap();
    }
    net.run(1_000_000).unwrap();
    assert_eq!(net.outcomes.completed, 10, "{:?}", net.outcomes);
    net.check_quiet().unwrap();
}
