//! Nodes of several planes on the simulator (DESIGN 7c.3): a node that runs on several workers
//! runs a `relay::Node` per worker, its planes joined by internal links (`Node::sibling_up`),
//! each plane holding some of the node's links to other nodes — one, or a parallel one beside
//! another plane's. Calls enter a node on one plane and leave it on another, mounts live on any
//! plane, links to other nodes are cut and made again on other planes, and a node's process
//! crashes with all its planes and starts again, while calls and streams run: every call of a
//! node that did not crash still ends exactly once, most complete, and traffic does cross the
//! internal links.
//!
//! A failure names its seed; `RINGSPAN_SEED=<seed> cargo test --test sim planes_sim::<name>`
//! replays it.

use ringspan::sim::net::Net;
use ringspan::sim::rng::Rng;
use ringspan::sim::topology::Topology;

use crate::support::seeds::seeds;

const SEEDS: u64 = 60;

/// A network of multi-plane nodes: which simulated node is a plane of which node.
struct Planes {
    net: Net,
    /// For each simulated node, the node it is a plane of (its own index for a first plane).
    base: Vec<usize>,
    /// Each node's planes.
    planes: Vec<Vec<usize>>,
}

impl Planes {
    fn plane_of(&self, node: usize, rng: &mut Rng) -> usize {
        let planes = &self.planes[node];
        planes[rng.index(planes.len())]
    }

    /// Node `node`'s process crashes: every plane of it at once.
    fn crash(&mut self, node: usize) -> Result<(), ringspan::sim::cluster::Failure> {
        for &plane in &self.planes[node] {
            self.net.crash(plane)?;
        }
        Ok(())
    }

    /// Node `node` starts again: its planes, joined again, and a link on each of its edges from
    /// planes picked anew.
    fn restart(
        &mut self,
        node: usize,
        edges: &[(usize, usize)],
        rng: &mut Rng,
    ) -> Result<(), ringspan::sim::cluster::Failure> {
        let planes = self.planes[node].clone();
        for &plane in &planes {
            self.net.restart(plane)?;
        }
        for (i, &a) in planes.iter().enumerate() {
            for &b in &planes[i + 1..] {
                self.net.connect(a, b)?;
            }
        }
        for &(a, b) in edges {
            if a == node || b == node {
                let (pa, pb) = (self.plane_of(a, rng), self.plane_of(b, rng));
                self.net.connect(pa, pb)?;
            }
        }
        Ok(())
    }

    /// Whether link `l` joins two planes of one node.
    fn is_internal(&self, l: usize) -> bool {
        let [a, b] = self.net.ends(l);
        self.base[a] == self.base[b]
    }

    /// What every plane forwarded onto its internal links.
    fn forwarded_internally(&mut self) -> u64 {
        let groups = self.planes.clone();
        groups.iter().map(|planes| self.net.forwarded_within(planes)).sum()
    }
}

/// One run: `topology` between nodes of one to three planes, three mounts on random planes, then
/// rounds of calls and streams interleaved with cuts and new links.
fn run(seed: u64, topology: Topology) -> Result<Planes, String> {
    let mut rng = Rng::new(seed);
    let n = topology.nodes();
    let fail = |e: ringspan::sim::cluster::Failure| format!("seed {seed}: {e}");
    let mut p = Planes {
        net: Net::new(n, seed).with_cut_batches(),
        base: (0..n).collect(),
        planes: (0..n).map(|i| vec![i]).collect(),
    };
    for node in 0..n {
        for _ in 0..rng.below(3) {
            let plane = p.net.add_plane(node);
            p.base.push(node);
            p.planes[node].push(plane);
        }
        // The planes of a node, each joined to each.
        let planes = p.planes[node].clone();
        for (i, &a) in planes.iter().enumerate() {
            for &b in &planes[i + 1..] {
                p.net.connect(a, b).map_err(fail)?;
            }
        }
    }
    let edges: Vec<(usize, usize)> =
        topology.edges(&mut rng).into_iter().map(|(a, b)| (a as usize, b as usize)).collect();
    for &(a, b) in &edges {
        let (pa, pb) = (p.plane_of(a, &mut rng), p.plane_of(b, &mut rng));
        p.net.connect(pa, pb).map_err(fail)?;
        // Sometimes a parallel link from other planes of the same two nodes.
        if rng.below(3) == 0 {
            let (pa, pb) = (p.plane_of(a, &mut rng), p.plane_of(b, &mut rng));
            p.net.connect(pa, pb).map_err(fail)?;
        }
    }
    let all = p.base.len();
    let homes: Vec<usize> = (0..3).map(|_| rng.index(all)).collect();
    for (m, &home) in homes.iter().enumerate() {
        p.net.attach(home, m as u128).map_err(fail)?;
    }
    p.net.run(1_000_000).map_err(fail)?;
    for _round in 0..6 {
        for _ in 0..10 {
            let to = rng.index(homes.len());
            let from = rng.index(all);
            if from != homes[to] {
                p.net.call(from, to as u128, &seed.to_le_bytes()).map_err(fail)?;
            }
        }
        let mut streams = Vec::new();
        for _ in 0..3 {
            let to = rng.index(homes.len());
            let from = rng.index(all);
            if from != homes[to]
                && let Some(call) =
                    p.net.open_stream(from, to as u128, &seed.to_be_bytes()).map_err(fail)?
            {
                streams.push((from, call));
            }
        }
        for _ in 0..rng.below(30) {
            p.net.step().map_err(fail)?;
            if !streams.is_empty() && rng.below(2) == 0 {
                let (from, call) = streams[rng.index(streams.len())];
                p.net.stream_send(from, call, false).map_err(fail)?;
            }
        }
        // A fault between nodes (the internal links of a process do not fail), a link made
        // again from planes picked anew, or a node's process crashing with all its planes.
        let fault = rng.below(5);
        if fault == 4 {
            let victim = rng.index(n);
            p.crash(victim).map_err(fail)?;
            for _ in 0..rng.below(20) {
                p.net.step().map_err(fail)?;
            }
            p.restart(victim, &edges, &mut rng).map_err(fail)?;
        } else if fault < 2 {
            let external: Vec<usize> =
                (0..p.net.link_count()).filter(|&l| p.net.is_up(l) && !p.is_internal(l)).collect();
            if !external.is_empty() {
                p.net.cut(external[rng.index(external.len())]).map_err(fail)?;
            }
        } else {
            let (a, b) = edges[rng.index(edges.len())];
            let (pa, pb) = (p.plane_of(a, &mut rng), p.plane_of(b, &mut rng));
            p.net.connect(pa, pb).map_err(fail)?;
        }
        for _ in 0..4 {
            for &(from, call) in &streams {
                p.net.stream_send(from, call, false).map_err(fail)?;
            }
            for _ in 0..rng.below(12) {
                p.net.step().map_err(fail)?;
            }
        }
        for &(from, call) in &streams {
            p.net.stream_send(from, call, true).map_err(fail)?;
        }
        p.net.run(1_000_000).map_err(fail)?;
        p.net.check_quiet().map_err(fail)?;
        if !p.net.refusals.is_empty() {
            return Err(format!("seed {seed}: links refused: {:?}", p.net.refusals));
        }
    }
    Ok(p)
}

fn over_seeds(name: &str, first: u64, topology: impl Fn(u64) -> Topology) {
    let mut totals = ringspan::sim::net::Outcomes::default();
    let (mut opened, mut internal, mut crashed) = (0, 0, 0);
    for seed in seeds(first, SEEDS) {
        let mut p = run(seed, topology(seed)).unwrap_or_else(|e| panic!("{name}: {e}"));
        totals.completed += p.net.outcomes.completed;
        totals.lost_link += p.net.outcomes.lost_link;
        totals.no_route += p.net.outcomes.no_route;
        totals.other += p.net.outcomes.other;
        opened += p.net.opened;
        crashed += p.net.crashed_calls;
        internal += p.forwarded_internally();
    }
    println!(
        "{name}: {opened} calls: {totals:?}, {crashed} lost with their node; {internal} messages \
         forwarded between planes"
    );
    // Calls of crashed planes end nowhere; every other call ended exactly once.
    let ended = totals.completed + totals.lost_link + totals.no_route + totals.other;
    assert_eq!(ended + crashed, opened, "{name}");
    assert!(totals.completed > opened / 2, "{name}: most calls complete: {totals:?} of {opened}");
    assert!(internal > 0, "{name}: calls crossed from plane to plane");
}

#[test]
fn ring_of_multi_plane_nodes() {
    over_seeds("ring", 7000, |s| Topology::Ring(3 + (s % 6) as usize));
}

#[test]
fn mesh_of_multi_plane_nodes() {
    over_seeds("mesh", 8000, |s| Topology::Mesh(3 + (s % 4) as usize));
}
