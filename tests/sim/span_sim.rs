//! The cluster simulator over every topology, with link and node faults, partitions and mount
//! churn; each topology over 200 seeds, plus one 1,000-node run and the standby takeover.
//!
//! A failure names its seed; `RINGSPAN_SEED=<seed> cargo test --test sim span_sim::<name>`
//! replays exactly that run. `cargo test --test sim span_sim:: -- --nocapture` prints rounds,
//! messages and wall time.

use std::time::Duration;

use ringspan::ids::NeighbourId;
use ringspan::sim::chaos::{Report, Scenario, mount_key, run_seeds};
use ringspan::sim::cluster::Cluster;
use ringspan::sim::rng::Rng;
use ringspan::sim::topology::Topology;
use ringspan::span::{MountKind, NextHop};

use crate::support::seeds::seeds;
use crate::support::wait::now;

const SEEDS: u64 = 200;

/// Wall time of `f`.
fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let start = now();
    let out = f();
    (out, now() - start)
}

fn summary(name: &str, reports: &[Report], wall: Duration) {
    let runs = reports.len().max(1) as f64;
    let nodes: usize = reports.iter().map(|r| r.nodes).sum();
    let msgs: u64 = reports.iter().map(|r| r.delivered).sum();
    let init_msgs: u64 = reports.iter().map(|r| r.initial_delivered).sum();
    let init_rounds: u32 = reports.iter().map(|r| r.initial_rounds).sum();
    let max_init = reports.iter().map(|r| r.initial_rounds).max().unwrap_or(0);
    let max_rounds = reports.iter().map(|r| r.max_rounds).max().unwrap_or(0);
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    let quiet: u32 = reports.iter().map(|r| r.convergences).sum();
    println!(
        "{name}: {} seeds, {:.0} nodes avg; first convergence {:.1} rounds avg ({max_init} max), \
         {:.1} msgs/node; after faults {max_rounds} rounds max; {:.1} msgs/node over the run \
         ({:.1}% seqno requests); {quiet} quiet points checked; wall {:.2?} ({:.2?}/seed)",
        reports.len(),
        nodes as f64 / runs,
        f64::from(init_rounds) / runs,
        init_msgs as f64 / nodes.max(1) as f64,
        msgs as f64 / nodes.max(1) as f64,
        100.0 * requests as f64 / msgs.max(1) as f64,
        wall,
        wall / reports.len().max(1) as u32,
    );
}

/// Runs `SEEDS` seeds, each with a topology of the size `size(seed)` picks.
fn topology_over_seeds(name: &str, first: u64, size: impl Fn(u64) -> Topology) {
    let (reports, wall) = timed(|| {
        let mut all = Vec::new();
        for seed in seeds(first, SEEDS) {
            let scenario =
                Scenario { topology: size(seed), mounts: 5, faults: 20, max_latency_ms: 20 };
            all.extend(run_seeds(name, seed, 1, scenario));
        }
        all
    });
    summary(name, &reports, wall);
}

#[test]
fn ring_with_faults() {
    topology_over_seeds("ring_with_faults", 1_000, |s| Topology::Ring(6 + (s % 19) as usize));
}

#[test]
fn mesh_with_faults() {
    topology_over_seeds("mesh_with_faults", 2_000, |s| Topology::Mesh(4 + (s % 7) as usize));
}

#[test]
fn grid_with_faults() {
    topology_over_seeds("grid_with_faults", 3_000, |s| {
        Topology::Grid(3 + (s % 3) as usize, 3 + (s / 3 % 3) as usize)
    });
}

#[test]
fn erdos_renyi_with_faults() {
    topology_over_seeds("erdos_renyi_with_faults", 4_000, |s| {
        Topology::ErdosRenyi(10 + (s % 21) as usize, 100)
    });
}

#[test]
fn barabasi_albert_with_faults() {
    topology_over_seeds("barabasi_albert_with_faults", 5_000, |s| {
        Topology::BarabasiAlbert(10 + (s % 31) as usize, 2)
    });
}

#[test]
fn thousand_nodes_barabasi_albert() {
    let scenario = Scenario {
        topology: Topology::BarabasiAlbert(1_000, 2),
        mounts: 12,
        faults: 20,
        max_latency_ms: 10,
    };
    let (reports, wall) = timed(|| run_seeds("thousand_nodes_barabasi_albert", 7, 1, scenario));
    summary("thousand_nodes_barabasi_albert", &reports, wall);
    assert!(wall < Duration::from_secs(60), "took {wall:?}");
}

/// The standby takes over the moment the best route's link is cut: before any message is
/// delivered the node still routes, through the standby's neighbour, and no loop exists.
#[test]
fn standby_takes_over_without_repropagation() {
    let mut takeovers = 0;
    for seed in 0..50u64 {
        let mut rng = Rng::new(seed);
        let topology = Topology::Grid(4, 4);
        let edges = topology.edges(&mut rng);
        let latencies: Vec<u64> = edges.iter().map(|_| 1 + rng.below(5)).collect();
        let mut cluster = Cluster::new(16, &edges, &latencies).unwrap();
        let origin = rng.below(16) as u32;
        let mount = mount_key(1);
        cluster.attach(origin, mount, MountKind::Master).unwrap();
        cluster.run_until_quiet(1_000_000).unwrap();
        cluster.check_converged().unwrap();
        // Every node whose route has a standby.
        let with_standby: Vec<u32> =
            (0..16).filter(|&n| cluster.table(n).standby(mount).is_some()).collect();
        assert!(!with_standby.is_empty(), "seed {seed}: a grid always has equal-cost paths");
        let node = with_standby[rng.index(with_standby.len())];
        let table = cluster.table(node);
        let (best, standby) = (table.route(mount).unwrap(), table.standby(mount).unwrap());
        assert_ne!(best.next_hop, standby.next_hop);
        assert_eq!(best.metric, standby.metric);
        let NextHop::Neighbour(NeighbourId(via)) = best.next_hop else { panic!("local") };
        let link = cluster.link_between(node, via as u32).unwrap();
        let delivered = cluster.stats().delivered;
        cluster.set_link(link, false).unwrap(); // checks every mount from every node for loops
        // Nothing was delivered, yet the route is already the standby, same metric.
        assert_eq!(cluster.stats().delivered, delivered);
        let now =
            cluster.table(node).route(mount).unwrap_or_else(|| panic!("seed {seed}: no route"));
        assert_eq!(now.next_hop, standby.next_hop, "seed {seed}");
        assert_eq!(now.metric, standby.metric, "seed {seed}");
        cluster.check_loop_from(node, mount).unwrap();
        cluster.run_until_quiet(1_000_000).unwrap();
        cluster.check_converged().unwrap();
        takeovers += 1;
    }
    assert_eq!(takeovers, 50);
}

/// More mounts, more faults and wider latency spread on small meshes. With these seeds the
/// simulator found a loop through an originator that had detached its mount (it had no
/// feasibility distance and took a neighbour's stale route back through itself): 5 of these
/// 200 seeds failed before the fix.
#[test]
fn mesh_with_churn() {
    let (reports, wall) = timed(|| {
        let mut all = Vec::new();
        for seed in seeds(100_000, SEEDS) {
            let topology = Topology::Mesh(4 + (seed % 9) as usize);
            let scenario = Scenario { topology, mounts: 6, faults: 30, max_latency_ms: 20 };
            all.extend(run_seeds("mesh_with_churn", seed, 1, scenario));
        }
        all
    });
    summary("mesh_with_churn", &reports, wall);
}

/// Cutting a ring next to the originator starves the nodes behind the cut: their remaining
/// routes, around the other side, are longer than their feasibility distance. They ask for a
/// new seqno, the originator bumps it, and the whole ring converges on the new seqno.
#[test]
fn ring_cut_recovers_through_a_seqno_request() {
    let mut rng = Rng::new(1);
    let edges = Topology::Ring(6).edges(&mut rng);
    let mut cluster = Cluster::new(6, &edges, &vec![1; edges.len()]).unwrap();
    let mount = mount_key(1);
    cluster.attach(0, mount, MountKind::Master).unwrap();
    cluster.run_until_quiet(10_000).unwrap();
    cluster.check_converged().unwrap();
    assert_eq!(cluster.table(3).route(mount).unwrap().seqno.0, 1);
    let link = cluster.link_between(0, 1).unwrap();
    cluster.set_link(link, false).unwrap();
    cluster.run_until_quiet(10_000).unwrap();
    cluster.check_converged().unwrap();
    assert!(cluster.stats().requests > 0);
    assert_eq!(cluster.table(0).route(mount).unwrap().seqno.0, 2);
    for node in 1..6 {
        let route = cluster.table(node).route(mount).unwrap();
        assert_eq!((route.seqno.0, route.metric.0), (2, 6 - node as u16), "node {node}");
    }
}
