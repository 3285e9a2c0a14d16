//! A satellite on several planes, on the simulator (DESIGN 7c.3): its clients' links land on any
//! of its planes, its link to the core on one of them, and its planes keep one client directory
//! between them (`span::SharedClients`). Calls from the core reach every client whatever plane
//! it is on; calls from clients reach the master; a mount is held by one client node-wide; a
//! client that links again lands on another plane and is found there.
//!
//! A failure names its seed; `RINGSPAN_SEED=<seed> cargo test --test sim satellite_planes_sim::`
//! replays it.

use ringspan::ids::{ClusterId, MountId};
use ringspan::sim::net::Net;
use ringspan::sim::rng::Rng;
use ringspan::span::{ClientHolder, MountKey, MountKind, Role};

use crate::support::seeds::seeds;

const MASTER: u128 = 1;
const SATELLITE: usize = 3;
const CLIENTS: usize = 12;

fn client_mount(client: usize) -> u128 {
    10_000 + client as u128
}

fn key(n: u128) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(n) }
}

/// The core triangle 0–1–2 with the master at 0; satellite 3 on three planes, one of them
/// (picked by the seed) linked to router 1, sometimes another to router 2 as well; clients 4..
/// with one client mount each, client `c` on plane `c % 3`.
struct Cluster {
    net: Net,
    /// The satellite's planes, by plane index.
    planes: [usize; 3],
    /// Each client's link, by client.
    links: Vec<Option<usize>>,
}

impl Cluster {
    fn new(seed: u64, rng: &mut Rng) -> Cluster {
        let mut roles = vec![Role::Router; 3];
        roles.push(Role::Satellite);
        roles.extend(std::iter::repeat_n(Role::Client, CLIENTS + 1));
        let mut net = Net::with_roles(&roles, seed);
        let planes = [SATELLITE, net.add_plane(SATELLITE), net.add_plane(SATELLITE)];
        for (i, &a) in planes.iter().enumerate() {
            for &b in &planes[i + 1..] {
                net.connect(a, b).unwrap();
            }
        }
        for (a, b) in [(0, 1), (1, 2), (2, 0)] {
            net.connect(a, b).unwrap();
        }
        net.connect(planes[rng.index(3)], 1).unwrap();
        if rng.below(2) == 0 {
            net.connect(planes[rng.index(3)], 2).unwrap();
        }
        net.attach_as(0, MASTER, MountKind::Master).unwrap();
        let mut links = vec![None; 4 + CLIENTS];
        for (c, link) in links.iter_mut().enumerate().skip(4) {
            *link = Some(net.connect(c, planes[c % 3]).unwrap());
            net.attach_as(c, client_mount(c), MountKind::Client).unwrap();
        }
        net.run(10_000_000).unwrap();
        assert!(net.refusals.is_empty(), "seed {seed}: {:?}", net.refusals);
        Cluster { net, planes, links }
    }

    /// The client mounts the satellite's planes hold, in all.
    fn held(&self) -> usize {
        self.planes.iter().map(|&p| self.net.node(p).clients().len()).sum()
    }

    /// What the satellite's planes passed to each other.
    fn forwarded_between_planes(&mut self) -> u64 {
        self.net.forwarded_within(&self.planes)
    }

    /// Calls from every client to the master and from the master to every client.
    fn call_everyone(&mut self) -> u64 {
        for c in 4..4 + CLIENTS {
            self.net.call(c, MASTER, b"to the master").unwrap();
            self.net.call_client(0, SATELLITE, client_mount(c), b"to a client").unwrap();
        }
        2 * CLIENTS as u64
    }
}

#[test]
fn a_satellite_on_three_planes_reaches_every_client_from_the_core() {
    for seed in seeds(9000, 20) {
        let mut rng = Rng::new(seed);
        let mut s = Cluster::new(seed, &mut rng);
        for core in 0..3 {
            assert_eq!(s.net.routes_at(core), 2, "seed {seed}: the master and one aggregate");
        }
        assert_eq!(s.held(), CLIENTS, "seed {seed}: each client's mount, once");
        for c in 4..4 + CLIENTS {
            // Held where its link is, and known to the other planes as held there.
            let home = c % 3;
            for (index, &plane) in s.planes.iter().enumerate() {
                let seen = s.net.node(plane).clients().holder(key(client_mount(c)));
                match seen {
                    Some(ClientHolder::Here(_)) if index == home => {}
                    Some(ClientHolder::Plane(p)) if index != home && p as usize == home => {}
                    _ => panic!("seed {seed}: client {c} on plane {home} seen as {seen:?}"),
                }
            }
        }

        let mut expected = s.call_everyone();
        s.net.run(1_000_000).unwrap();
        assert_eq!(s.net.outcomes.completed, expected, "seed {seed}: {:?}", s.net.outcomes);
        assert!(s.forwarded_between_planes() > 0, "seed {seed}: calls crossed planes");

        // Another client naming client 4's mount, on another plane: its span is refused alone,
        // and client 4 keeps the mount.
        let rogue = 4 + CLIENTS;
        // Client 4 is on plane 1; the rogue links to plane 2.
        let rogue_plane = 2;
        s.net.connect(rogue, s.planes[rogue_plane]).unwrap();
        s.net.attach_as(rogue, client_mount(4), MountKind::Client).unwrap();
        s.net.run(1_000_000).unwrap();
        assert!(s.net.refusals.is_empty(), "seed {seed}: {:?}", s.net.refusals);
        assert_eq!(s.held(), CLIENTS, "seed {seed}: the rogue holds nothing");
        let seen = s.net.node(s.planes[rogue_plane]).clients().holder(key(client_mount(4)));
        assert_eq!(seen, Some(ClientHolder::Plane(1)), "seed {seed}");

        // Client 5 links again, to another plane: its mount goes with its old link and is found
        // on the new one.
        let old = s.links[5].take().unwrap();
        s.net.cut(old).unwrap();
        s.net.run(1_000_000).unwrap();
        assert_eq!(s.held(), CLIENTS - 1, "seed {seed}: client 5's mount went with its link");
        // From plane 2 to plane 0.
        let moved_to = 0;
        s.links[5] = Some(s.net.connect(5, s.planes[moved_to]).unwrap());
        s.net.run(10_000_000).unwrap();
        assert_eq!(s.held(), CLIENTS, "seed {seed}");
        let seen = s.net.node(s.planes[(moved_to + 1) % 3]).clients().holder(key(client_mount(5)));
        assert_eq!(seen, Some(ClientHolder::Plane(moved_to as u16)), "seed {seed}");

        expected += s.call_everyone();
        // A client no plane holds: refused as no route, not lost.
        s.net.call_client(0, SATELLITE, 99, b"nobody").unwrap();
        s.net.run(1_000_000).unwrap();
        assert_eq!(s.net.outcomes.completed, expected, "seed {seed}: {:?}", s.net.outcomes);
        assert_eq!(s.net.outcomes.no_route, 1, "seed {seed}");
        s.net.check_quiet().unwrap();
    }
}
