//! Full relay nodes on the simulator (`sim::net`, whose links run the production link: a Noise
//! handshake, sealed records, deadlines): calls relayed hop by hop across ring, mesh, grid and
//! random graphs while links are cut and restored and nodes crash and restart; one-shot calls,
//! and streamed calls whose messages relays forward one by one, straight to the next link, or in
//! whole records (`Node::forward_record`), as the simulator picks; half the batches arrive in two
//! pieces, so records are put together and some are forwarded from the buffer they were put
//! together in (`Link::forward_in_place`). After every step no call ends
//! twice or ends unopened; at every quiet point every call of a live node has ended at both
//! ends, no circuit is left, links hold only their spans and every record buffer is back in its
//! pool.
//!
//! A failure names its seed; `RINGSPAN_SEED=<seed> cargo test --test sim relay_sim::<name>`
//! replays it. `-- --nocapture` prints the outcomes.

use ringspan::sim::net::Net;
use ringspan::sim::rng::Rng;
use ringspan::sim::topology::Topology;

use crate::support::seeds::seeds;

const SEEDS: u64 = 100;

/// One run: the graph, three mounts, then rounds of calls interleaved with faults.
fn run(seed: u64, topology: Topology) -> Result<Net, String> {
    let mut rng = Rng::new(seed);
    let n = topology.nodes();
    let mut net = Net::new(n, seed).with_cut_batches();
    let fail = |e: ringspan::sim::cluster::Failure| format!("seed {seed}: {e}");
    let mut edges = Vec::new();
    for (a, b) in topology.edges(&mut rng) {
        edges.push((a as usize, b as usize));
        net.connect(a as usize, b as usize).map_err(fail)?;
    }
    let homes: Vec<usize> = (0..3).map(|_| rng.index(n)).collect();
    for (m, &home) in homes.iter().enumerate() {
        net.attach(home, m as u128).map_err(fail)?;
    }
    net.run(1_000_000).map_err(fail)?;
    for _round in 0..8 {
        for _ in 0..10 {
            let to = rng.index(homes.len());
            let from = rng.index(n);
            if from == homes[to] {
                continue; // a call to a mount of its own node is not a relay's business
            }
            let to = to as u128;
            net.call(from, to, &seed.to_le_bytes()).map_err(fail)?;
        }
        // Streamed calls: opened now, fed while traffic moves and across the fault, closed
        // before the round ends.
        let mut streams = Vec::new();
        for _ in 0..3 {
            let to = rng.index(homes.len());
            let from = rng.index(n);
            if from != homes[to]
                && let Some(call) =
                    net.open_stream(from, to as u128, &seed.to_be_bytes()).map_err(fail)?
            {
                streams.push((from, call));
            }
        }
        // Let some of it move, then a fault in the middle of the traffic.
        for _ in 0..rng.below(30) {
            net.step().map_err(fail)?;
            if !streams.is_empty() && rng.below(2) == 0 {
                let (from, call) = streams[rng.index(streams.len())];
                net.stream_send(from, call, false).map_err(fail)?;
            }
        }
        match rng.below(4) {
            0 | 1 => {
                let up: Vec<usize> = (0..net.link_count()).filter(|&l| net.is_up(l)).collect();
                if !up.is_empty() {
                    net.cut(up[rng.index(up.len())]).map_err(fail)?;
                }
            }
            2 => {
                let (a, b) = edges[rng.index(edges.len())];
                if net.is_alive(a) && net.is_alive(b) {
                    net.connect(a, b).map_err(fail)?;
                }
            }
            _ => {
                let victim = rng.index(n);
                if net.is_alive(victim) {
                    net.crash(victim).map_err(fail)?;
                    for _ in 0..rng.below(20) {
                        net.step().map_err(fail)?;
                    }
                    net.restart(victim).map_err(fail)?;
                    for &(a, b) in &edges {
                        if (a == victim || b == victim) && net.is_alive(a) && net.is_alive(b) {
                            net.connect(a, b).map_err(fail)?;
                        }
                    }
                }
            }
        }
        for _ in 0..4 {
            for &(from, call) in &streams {
                net.stream_send(from, call, false).map_err(fail)?;
            }
            for _ in 0..rng.below(12) {
                net.step().map_err(fail)?;
            }
        }
        for &(from, call) in &streams {
            net.stream_send(from, call, true).map_err(fail)?;
        }
        net.run(1_000_000).map_err(fail)?;
        net.check_quiet().map_err(fail)?;
        if !net.refusals.is_empty() {
            return Err(format!("seed {seed}: links refused: {:?}", net.refusals));
        }
    }
    Ok(net)
}

fn topology_over_seeds(name: &str, first: u64, topology: impl Fn(u64) -> Topology) {
    let mut totals = ringspan::sim::net::Outcomes::default();
    let (mut opened, mut steps, mut crashed, mut whole) = (0, 0, 0, 0);
    let (mut reassembled, mut moved) = (0, 0);
    for seed in seeds(first, SEEDS) {
        let net = run(seed, topology(seed)).unwrap_or_else(|e| panic!("{name}: {e}"));
        totals.completed += net.outcomes.completed;
        totals.lost_link += net.outcomes.lost_link;
        totals.no_route += net.outcomes.no_route;
        totals.other += net.outcomes.other;
        opened += net.opened;
        steps += net.steps;
        crashed += net.crashed_calls;
        whole += net.whole_records();
        reassembled += net.records_reassembled();
        moved += net.records_moved();
    }
    println!(
        "{name}: {opened} calls: {totals:?}, {crashed} lost with their node; {steps} steps \
         checked; {whole} records forwarded whole; {reassembled} put together from pieces, \
         {moved} of them forwarded from there"
    );
    assert!(whole > 0, "{name}: some records of streamed messages were forwarded whole");
    assert!(moved > 0, "{name}: some were forwarded from the buffer they were put together in");
    // Calls of crashed nodes end nowhere; every other call ended exactly once.
    let ended = totals.completed + totals.lost_link + totals.no_route + totals.other;
    assert_eq!(ended + crashed, opened, "{name}");
    assert!(totals.completed > opened / 2, "{name}: most calls complete: {totals:?} of {opened}");
}

#[test]
fn ring() {
    topology_over_seeds("ring", 0, |s| Topology::Ring(4 + (s % 8) as usize));
}

#[test]
fn mesh() {
    topology_over_seeds("mesh", 1000, |s| Topology::Mesh(3 + (s % 5) as usize));
}

#[test]
fn grid() {
    topology_over_seeds("grid", 2000, |s| Topology::Grid(2 + (s % 3) as usize, 3));
}

#[test]
fn erdos_renyi() {
    topology_over_seeds("erdos-renyi", 3000, |s| Topology::ErdosRenyi(6 + (s % 10) as usize, 300));
}

#[test]
fn barabasi_albert() {
    topology_over_seeds("barabasi-albert", 4000, |s| {
        Topology::BarabasiAlbert(6 + (s % 14) as usize, 2)
    });
}
