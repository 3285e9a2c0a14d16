//! Graphs to run the cluster simulator on: ring, full mesh, grid, Erdős–Rényi and
//! Barabási–Albert. Each builds an edge list over nodes `0..n`, without duplicates or self-loops.

use std::collections::BTreeSet;

use super::rng::Rng;

/// A graph family and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// `n` nodes in a cycle.
    Ring(usize),
    /// `n` nodes, every pair linked.
    Mesh(usize),
    /// A `width` × `height` grid, each node linked to its four neighbours.
    Grid(usize, usize),
    /// `n` nodes, each pair linked with probability `permille`/1000, plus a random spanning
    /// tree so the graph starts connected.
    ErdosRenyi(usize, u32),
    /// Preferential attachment: each new node links to `m` existing nodes chosen with
    /// probability proportional to their degree.
    BarabasiAlbert(usize, usize),
}

impl Topology {
    /// Nodes in the graph.
    pub fn nodes(self) -> usize {
        match self {
            Topology::Ring(n)
            | Topology::Mesh(n)
            | Topology::ErdosRenyi(n, _)
            | Topology::BarabasiAlbert(n, _) => n,
            Topology::Grid(w, h) => w * h,
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Ring(_) => "ring",
            Topology::Mesh(_) => "mesh",
            Topology::Grid(..) => "grid",
            Topology::ErdosRenyi(..) => "erdos-renyi",
            Topology::BarabasiAlbert(..) => "barabasi-albert",
        }
    }

    /// The edges, `(a, b)` with `a < b`, sorted.
    pub fn edges(self, rng: &mut Rng) -> Vec<(u32, u32)> {
        let mut edges = BTreeSet::new();
        let mut add = |a: usize, b: usize| {
            if a != b {
                edges.insert((a.min(b) as u32, a.max(b) as u32));
            }
        };
        match self {
            Topology::Ring(n) => {
                for i in 0..n {
                    add(i, (i + 1) % n);
                }
            }
            Topology::Mesh(n) => {
                for a in 0..n {
                    for b in a + 1..n {
                        add(a, b);
                    }
                }
            }
            Topology::Grid(w, h) => {
                for y in 0..h {
                    for x in 0..w {
                        if x + 1 < w {
                            add(y * w + x, y * w + x + 1);
                        }
                        if y + 1 < h {
                            add(y * w + x, (y + 1) * w + x);
                        }
                    }
                }
            }
            Topology::ErdosRenyi(n, permille) => {
                for i in 1..n {
                    add(i, rng.index(i));
                }
                for a in 0..n {
                    for b in a + 1..n {
                        if rng.chance(u64::from(permille), 1000) {
                            add(a, b);
                        }
                    }
                }
            }
            Topology::BarabasiAlbert(n, m) => {
                // Endpoints of every edge so far: picking one uniformly is picking a node with
                // probability proportional to its degree.
                let mut ends: Vec<usize> = Vec::new();
                let seed = (m + 1).min(n);
                for a in 0..seed {
                    for b in a + 1..seed {
                        add(a, b);
                        ends.extend([a, b]);
                    }
                }
                for new in seed..n {
                    let mut chosen = BTreeSet::new();
                    while chosen.len() < m.min(new) {
                        chosen.insert(ends[rng.index(ends.len())]);
                    }
                    for old in chosen {
                        add(new, old);
                        ends.extend([new, old]);
                    }
                }
            }
        }
        edges.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let mut rng = Rng::new(1);
        assert_eq!(Topology::Ring(5).edges(&mut rng).len(), 5);
        assert_eq!(Topology::Mesh(5).edges(&mut rng).len(), 10);
        assert_eq!(Topology::Grid(3, 2).edges(&mut rng).len(), 7);
        assert_eq!(Topology::BarabasiAlbert(50, 2).edges(&mut rng).len(), 3 + 47 * 2);
        assert!(Topology::ErdosRenyi(50, 50).edges(&mut rng).len() >= 49);
    }
}
