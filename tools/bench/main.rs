//! `ringspan-bench`: ringspan's benchmark tools, a binary of their own beside `ringspan`.
//!
//! - `link` ([`link`]): one encrypted engine link on loopback against plain blocking TCP
//!   ([`direct`]); `serve`: the accepting side alone, for two-process runs and tests.
//! - `clients` ([`clients`]): very many idle client links to a satellite.
//! - `hops` ([`hops`]): messages through `ringspan run` relays, a sender and a receiver each a
//!   relay node on one engine worker.
//! - `nats` ([`nats`]): the baselines ringspan is compared with: a NATS client, plain TCP round
//!   trips, and bulk TCP direct or through a relay.
//! - `attach` ([`attach`]): echo calls through a running node's attach socket.
//!
//! The perf/*.sh scripts drive it (perf/README.md). The services that load one engine link
//! (`Sink`, `Source`) are the library's `ringspan::link_load`, which the engine's tests use too.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

mod attach;
mod clients;
mod direct;
mod hops;
mod link;
mod nats;

/// The version `--version` prints: the package's, and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("RINGSPAN_COMMIT"), ")");

/// ringspan's benchmarks: an engine link against plain TCP, many idle clients, messages through
/// relays, and the NATS and TCP baselines (see perf/README.md).
#[derive(Parser)]
#[command(name = "ringspan-bench", version = VERSION)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

/// Benchmarks.
#[derive(Subcommand)]
enum BenchCommand {
    /// One encrypted engine link on loopback against plain blocking TCP: one-way throughput and
    /// request-reply round trips at several message sizes.
    Link(link::LinkArgs),
    /// Serves benchmark links: counts what arrives and answers requests (for two-process runs).
    Serve(link::ServeArgs),
    /// Opens very many client links to a satellite (each under a key of its own, each opening a
    /// client's hello), reports how fast they came up, and holds them idle.
    Clients(clients::ClientsArgs),
    /// Baselines to compare with: NATS servers (one-way, request-reply), plain TCP round
    /// trips, and bulk TCP direct or through a relay (perf/baselines.sh). Prints key=value.
    Nats(nats::NatsArgs),
    /// Messages through `ringspan run` relays: a receiver attached beyond the last relay, and a
    /// sender measuring one-way messages/s or round trips through them (see perf/hops.sh).
    Hops(hops::HopsArgs),
    /// Echo calls through a running node's attach socket, as an application makes them:
    /// `serve` attaches an echo mount, `call` measures calls/s and round trips (perf/attach.sh).
    Attach(attach::AttachArgs),
}

fn main() -> ExitCode {
    ringspan::ring::sys::fix_mmap_threshold();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let result = match Cli::parse().command {
        BenchCommand::Link(args) => link::link(args),
        BenchCommand::Serve(args) => link::serve(args),
        BenchCommand::Clients(args) => clients::run(args),
        BenchCommand::Nats(args) => nats::command(args),
        BenchCommand::Hops(args) => hops::run(args),
        BenchCommand::Attach(args) => attach::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ringspan-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

#[allow(clippy::disallowed_methods)] // the binary reads the clock
fn clock() -> Instant {
    Instant::now()
}

/// The value at quantile `q` (0..=1) of ascending `sorted`, nearest rank: the smallest sample
/// with at least a fraction `q` of the samples at or below it. 0 if there are none. Both
/// `hops` and `nats` report exact percentiles with it.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 0.5), 500);
        assert_eq!(percentile(&samples, 0.99), 990);
        assert_eq!(percentile(&samples, 0.999), 999);
        assert_eq!(percentile(&samples, 1.0), 1000);
        assert_eq!(percentile(&samples, 0.0), 1);
        assert_eq!(percentile(&[7], 0.999), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }
}
