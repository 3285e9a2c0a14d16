//! What a `ringspan-bench hops` run is given and what it reports: the side an engine takes
//! ([`Role`]), a sender's [`Plan`] and its [`Outcome`], and a receiver's [`StreamSummary`] per
//! stream. The application that runs them is [`super::app::HopsApp`].

use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::Serialize;

use crate::percentile;

/// Which side this engine is.
pub enum Role {
    /// Attach `mount` and serve it.
    Receive {
        /// Where each stream's summary goes when it ends (none: nowhere).
        summaries: Option<Sender<StreamSummary>>,
    },
    /// Run the plan against `mount`.
    Send(Plan),
}

/// What a sender measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Stream messages one way.
    OneWay,
    /// One request at a time.
    RoundTrip {
        /// Requests and replies inside one long-lived transaction instead of one transaction
        /// per request.
        stream: bool,
    },
}

/// A sender's run.
pub struct Plan {
    /// What to measure.
    pub mode: Mode,
    /// Payload bytes per message (one-way) or request (round trip).
    pub size: usize,
    /// Time before the measured window (nothing is counted in it).
    pub warmup: Duration,
    /// Length of the measured window (ignored with `count`).
    pub seconds: Duration,
    /// With `Some(n)`: exactly `n` messages (one-way) or round trips, no warm-up.
    pub count: Option<u64>,
    /// One-way: wire bytes the sender may have sent and not had acknowledged.
    pub window_bytes: usize,
    /// How long to wait for the link and the route before giving up.
    pub route_timeout: Duration,
    /// Where the outcome goes.
    pub outcome: Sender<Result<Outcome, String>>,
}

/// What a sender measured.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    /// A one-way run.
    OneWay(OneWayReport),
    /// A round-trip run.
    RoundTrip(RoundTripReport),
}

/// A one-way run, as the receiver counted it.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OneWayReport {
    /// "one-way".
    pub mode: &'static str,
    /// Payload bytes per message.
    pub size: usize,
    /// Messages the sender sent.
    pub sent: u64,
    /// Messages the receiver received.
    pub received: u64,
    /// Messages whose sequence number was not the next expected.
    pub out_of_order: u64,
    /// Messages the receiver received between the two marks.
    pub window_messages: u64,
    /// Seconds between the two marks, by the receiver's clock.
    pub window_seconds: f64,
    /// `window_messages / window_seconds` (0 when the whole window fell within one turn of the
    /// receiver's loop, as a short `--count` run may).
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6) per second over the window.
    pub mb_per_sec: f64,
    /// Messages the sender may have unacknowledged.
    pub window: u64,
    /// The receiver acknowledges every this many messages.
    pub ack_every: u64,
}

/// A round-trip run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RoundTripReport {
    /// "rtt".
    pub mode: &'static str,
    /// "oneshot" (a transaction per request) or "stream" (one transaction).
    pub rtt: &'static str,
    /// Payload bytes per request.
    pub size: usize,
    /// Round trips recorded (after the warm-up).
    pub samples: u64,
    /// Replies whose payload differed from the request.
    pub corrupted: u64,
    /// Percentiles in microseconds, nearest rank over the sorted samples.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// The fastest.
    pub min_us: f64,
    /// The slowest.
    pub max_us: f64,
    /// The mean.
    pub mean_us: f64,
    /// Round trips per second over the measured window (one at a time).
    pub per_sec: f64,
}

/// A stream that ended at a receiver.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StreamSummary {
    /// "one-way" or "echo".
    pub kind: &'static str,
    /// Messages received in it.
    pub received: u64,
    /// One-way: messages whose sequence number was not the next expected.
    pub out_of_order: u64,
    /// One-way: messages between the marks.
    pub window_messages: u64,
    /// One-way: seconds between the marks.
    pub window_seconds: f64,
    /// How it ended (0: cleanly).
    pub error: u32,
}

/// The round-trip report of nanosecond samples (sorted here).
pub fn round_trip_report(
    stream: bool,
    size: usize,
    samples: &mut [u64],
    corrupted: u64,
    seconds: f64,
) -> RoundTripReport {
    samples.sort_unstable();
    let us = |ns: u64| ns as f64 / 1e3;
    let sum: u128 = samples.iter().map(|&s| u128::from(s)).sum();
    let n = samples.len() as u64;
    RoundTripReport {
        mode: "rtt",
        rtt: if stream { "stream" } else { "oneshot" },
        size,
        samples: n,
        corrupted,
        p50_us: us(percentile(samples, 0.5)),
        p99_us: us(percentile(samples, 0.99)),
        p999_us: us(percentile(samples, 0.999)),
        min_us: us(samples.first().copied().unwrap_or(0)),
        max_us: us(samples.last().copied().unwrap_or(0)),
        mean_us: if n == 0 { 0.0 } else { sum as f64 / n as f64 / 1e3 },
        per_sec: if seconds > 0.0 { n as f64 / seconds } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_reports_take_exact_percentiles() {
        let mut rtt = vec![3_000, 1_000, 2_000];
        let report = round_trip_report(false, 16, &mut rtt, 0, 1.0);
        assert_eq!((report.p50_us, report.max_us, report.mean_us), (2.0, 3.0, 2.0));
        assert_eq!(report.samples, 3);
    }
}
