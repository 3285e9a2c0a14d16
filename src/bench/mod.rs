//! Benchmark tools: [`clients`] opens very many idle client links (`ringspan bench clients`);
//! [`hops`] measures messages through relay hops (`ringspan bench hops`); [`nats`] measures the
//! baselines (NATS servers, plain TCP, a socat relay) with `ringspan bench nats`; [`direct`] is
//! the plain-TCP reference of `ringspan bench link`. The services that load one engine link are
//! in [`crate::link_load`].

#![forbid(unsafe_code)]

pub mod clients;
pub mod direct;
pub mod hops;
pub mod nats;

/// The value at quantile `q` (0..=1) of ascending `sorted`, nearest rank: the smallest sample
/// with at least a fraction `q` of the samples at or below it. 0 if there are none. Both
/// `bench hops` and `bench nats` report exact percentiles with it.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
