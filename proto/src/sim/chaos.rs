//! Seeded fault schedules over a [`Cluster`]: build a topology, attach mounts, converge, then
//! cut and restore links, crash and restart nodes, partition and heal, detach and re-attach
//! mounts, sometimes letting the cluster converge and sometimes piling faults onto a cluster
//! still converging. Every step is checked (see [`Cluster`]); every quiet point is checked for
//! convergence. A whole run is a function of its seed.

use super::cluster::{Cluster, Failure};
use super::rng::Rng;
use super::topology::Topology;
use crate::ids::{ClusterId, MountId};
use crate::span::{MountKey, MountKind};

/// What to run.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The graph.
    pub topology: Topology,
    /// Mounts attached at random nodes.
    pub mounts: usize,
    /// Faults injected after the first convergence.
    pub faults: usize,
    /// Link latencies are drawn from `1..=max_latency_ms`.
    pub max_latency_ms: u64,
}

/// What a run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Links.
    pub links: usize,
    /// Rounds (longest causal message chain) of the first convergence.
    pub initial_rounds: u32,
    /// The most rounds any later convergence took.
    pub max_rounds: u32,
    /// Quiet points checked after faults.
    pub convergences: u32,
    /// Messages delivered.
    pub delivered: u64,
    /// Of which seqno requests.
    pub requests: u64,
    /// Messages delivered for the first convergence.
    pub initial_delivered: u64,
}

/// Deliveries allowed per convergence before it is called a livelock: generous, since a
/// correct run needs a few messages per mount per link.
fn step_budget(cluster: &Cluster, mounts: usize) -> u64 {
    200 * (cluster.link_count() as u64 + cluster.len() as u64) * (mounts as u64 + 1)
}

/// Runs `scenario` from `seed`.
pub fn run(seed: u64, scenario: Scenario) -> Result<Report, Failure> {
    let mut rng = Rng::new(seed);
    let n = scenario.topology.nodes();
    let edges = scenario.topology.edges(&mut rng);
    let latencies: Vec<u64> =
        edges.iter().map(|_| 1 + rng.below(scenario.max_latency_ms.max(1))).collect();
    let mut cluster = Cluster::new(n, &edges, &latencies)?;
    let budget = step_budget(&cluster, scenario.mounts);
    let mut next_mount = 0u128;
    for _ in 0..scenario.mounts {
        next_mount += 1;
        let node = rng.index(n) as u32;
        let kind = MountKind::ALL[rng.index(MountKind::ALL.len() - 1)];
        cluster.attach(node, mount_key(next_mount), kind)?;
    }
    cluster.run_until_quiet(budget)?;
    cluster.check_converged()?;
    let mut report = Report {
        nodes: n,
        links: edges.len(),
        initial_rounds: cluster.last_quiet_rounds(),
        initial_delivered: cluster.stats().delivered,
        ..Report::default()
    };
    let mut partition: Vec<usize> = Vec::new();
    for _ in 0..scenario.faults {
        fault(&mut cluster, &mut rng, &mut partition, &mut next_mount)?;
        if rng.chance(1, 3) {
            cluster.run_until_quiet(budget)?;
            cluster.check_converged()?;
            report.convergences += 1;
            report.max_rounds = report.max_rounds.max(cluster.last_quiet_rounds());
        } else {
            cluster.run_for(rng.below(3 * scenario.max_latency_ms.max(1)))?;
        }
    }
    cluster.run_until_quiet(budget)?;
    cluster.check_converged()?;
    report.max_rounds = report.max_rounds.max(cluster.last_quiet_rounds());
    // Heal everything and check the whole graph converges back.
    let down: Vec<usize> = (0..cluster.link_count()).filter(|&l| !cluster.link(l).2).collect();
    cluster.set_links(&down, true)?;
    for node in 0..n as u32 {
        if !cluster.is_alive(node) {
            cluster.restart(node)?;
        }
    }
    cluster.run_until_quiet(budget)?;
    cluster.check_converged()?;
    report.max_rounds = report.max_rounds.max(cluster.last_quiet_rounds());
    report.convergences += 2;
    let stats = cluster.stats();
    report.delivered = stats.delivered;
    report.requests = stats.requests;
    Ok(report)
}

/// One random fault.
fn fault(
    cluster: &mut Cluster,
    rng: &mut Rng,
    partition: &mut Vec<usize>,
    next_mount: &mut u128,
) -> Result<(), Failure> {
    let n = cluster.len() as u32;
    let links = cluster.link_count();
    match rng.below(100) {
        // Cut a link that is up.
        0..=34 => {
            let link = rng.index(links);
            if cluster.link(link).2 {
                cluster.set_link(link, false)?;
            }
        }
        // Restore a link that is down.
        35..=59 => {
            let down: Vec<usize> = (0..links).filter(|&l| !cluster.link(l).2).collect();
            if !down.is_empty() {
                cluster.set_link(down[rng.index(down.len())], true)?;
            }
        }
        // Crash a node.
        60..=69 => {
            let node = rng.below(u64::from(n)) as u32;
            if cluster.is_alive(node) {
                cluster.crash(node)?;
            }
        }
        // Restart a crashed node.
        70..=79 => {
            let dead: Vec<u32> = (0..n).filter(|&x| !cluster.is_alive(x)).collect();
            if !dead.is_empty() {
                cluster.restart(dead[rng.index(dead.len())])?;
            }
        }
        // Partition: every link between a random half and the rest goes down.
        80..=84 => {
            let side: Vec<bool> = (0..n).map(|_| rng.chance(1, 2)).collect();
            let cut: Vec<usize> = (0..links)
                .filter(|&l| {
                    let (a, b, up) = cluster.link(l);
                    up && side[a as usize] != side[b as usize]
                })
                .collect();
            cluster.set_links(&cut, false)?;
            partition.extend(cut);
        }
        // Heal the last partition.
        85..=89 => {
            let heal: Vec<usize> = partition.drain(..).filter(|&l| !cluster.link(l).2).collect();
            cluster.set_links(&heal, true)?;
        }
        // Detach a mount.
        90..=94 => {
            let node = rng.below(u64::from(n)) as u32;
            if let Some(&(mount, _)) = cluster.mounts_at(node).first() {
                cluster.detach(node, mount)?;
            }
        }
        // Attach a new mount.
        _ => {
            *next_mount += 1;
            let node = rng.below(u64::from(n)) as u32;
            cluster.attach(node, mount_key(*next_mount), MountKind::Master)?;
        }
    }
    Ok(())
}

/// The key of the `n`th mount of a run (two clusters, so cluster ids vary).
pub fn mount_key(n: u128) -> MountKey {
    MountKey { cluster: ClusterId(n % 2), mount: MountId(n) }
}

/// Runs `scenario` for seeds `first..first + count`, or only for `RINGSPAN_SEED` if it is set.
/// Returns the reports. On a failure, panics with the seed and how to replay it.
pub fn run_seeds(name: &str, first: u64, count: u64, scenario: Scenario) -> Vec<Report> {
    let seeds: Vec<u64> = match std::env::var("RINGSPAN_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (first..first + count).collect(),
    };
    let mut reports = Vec::with_capacity(seeds.len());
    for seed in seeds {
        match run(seed, scenario) {
            Ok(report) => reports.push(report),
            Err(failure) => panic!(
                "{name}: seed {seed} failed: {failure}\nreplay with: RINGSPAN_SEED={seed} cargo test {name}"
            ),
        }
    }
    reports
}
