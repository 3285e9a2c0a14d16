//! The seeds a simulator test runs.

/// `count` seeds from `first`, or only the seed in `RINGSPAN_SEED` if it is set: a failure
/// names its seed, and `RINGSPAN_SEED=<seed> cargo test --test sim <test>` replays that run.
pub fn seeds(first: u64, count: u64) -> Vec<u64> {
    match std::env::var("RINGSPAN_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (first..first + count).collect(),
    }
}
