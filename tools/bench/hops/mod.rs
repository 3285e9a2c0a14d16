//! `ringspan-bench hops`: a sender or a receiver ([`app::HopsApp`] on the daemon's
//! [`Host`]) on one engine worker, on either side of `ringspan run` relays (see perf/hops.sh).
//! `app.rs`: the application and what both sides share; `sender.rs`, `receiver.rs`: each side;
//! `plan.rs`: what a run is given and reports.

mod app;
mod plan;
mod receiver;
mod sender;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use ringspan::cipher::{self, Identity, PublicKey};
use ringspan::daemon::Host;
use ringspan::ring::{self, Engine};

use crate::clock;
use app::HopsApp;
use plan::{Outcome, Plan, Role};

/// Options of `ringspan-bench hops`.
#[derive(Args)]
pub struct HopsArgs {
    /// `receive`: attach the mount beyond the relay and serve it until interrupted, printing a
    /// JSON line per stream that ends; `send`: measure, print the outcome and exit.
    #[arg(value_enum)]
    role: HopsRole,
    /// The relay to dial.
    #[arg(long)]
    relay: SocketAddr,
    /// The relay's public key (base64, as `ringspan pubkey` prints it).
    #[arg(long)]
    relay_key: String,
    /// This node's private key file. Absent: a new key (the relay must accept unknown keys).
    #[arg(long)]
    key: Option<PathBuf>,
    /// The mount (CLUSTER:MOUNT) the receiver attaches and the sender calls.
    #[arg(long, default_value = "0x1:0x10")]
    mount: String,
    /// What the sender measures: `one-way` messages/s, `rtt` (a one-shot transaction per
    /// request), or `rtt-stream` (requests and replies inside one transaction).
    #[arg(long, value_enum, default_value_t = HopsMode::OneWay)]
    mode: HopsMode,
    /// Payload bytes per message or request.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Seconds of warm-up before the measured window.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Exactly this many messages (one-way) or round trips instead, with no warm-up.
    #[arg(long)]
    count: Option<u64>,
    /// One-way: wire bytes the sender may have unacknowledged by the receiver (at most 4 MiB).
    #[arg(long, default_value_t = HOPS_WINDOW_MAX)]
    window_bytes: usize,
    /// Pins the worker to this core.
    #[arg(long)]
    core: Option<usize>,
    /// Microseconds the worker polls after moving data before it sleeps (0: never), as a
    /// node's `busy_poll_us`.
    #[arg(long, default_value_t = ringspan::limits::BUSY_POLL_US)]
    busy_poll_us: u64,
    /// Seconds to wait for the link and the route to the mount.
    #[arg(long, default_value_t = 10.0)]
    wait: f64,
    /// Prints one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The largest one-way window `ringspan-bench hops` takes, in wire bytes.
const HOPS_WINDOW_MAX: usize = 4 << 20;

#[derive(Clone, Copy, clap::ValueEnum)]
enum HopsRole {
    Send,
    Receive,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HopsMode {
    OneWay,
    Rtt,
    RttStream,
}

/// Runs `ringspan-bench hops`.
pub fn run(args: HopsArgs) -> Result<(), String> {
    let mount = ringspan::daemon::config::parse_mount(&args.mount)?;
    let relay_key = PublicKey::from_base64(args.relay_key.trim().as_bytes())
        .map_err(|e| format!("--relay-key: {e}"))?;
    let identity = match &args.key {
        Some(path) => Identity::new(
            cipher::identity::read_key_file(path)
                .map_err(|e| format!("{}: {e}", path.display()))?,
        ),
        None => Identity::generate(),
    }
    .map_err(|e| e.to_string())?;
    if args.size > ringspan::limits::MESSAGE_PAYLOAD_MAX {
        return Err(format!(
            "a message holds at most {} bytes",
            ringspan::limits::MESSAGE_PAYLOAD_MAX
        ));
    }
    for (name, value) in
        [("--seconds", args.seconds), ("--warmup", args.warmup), ("--wait", args.wait)]
    {
        if !(value.is_finite() && (0.0..=86_400.0).contains(&value)) {
            return Err(format!("{name} must be between 0 and 86,400 seconds"));
        }
    }
    // Within every queue bound on the way: the relays' per-link queue per turn and the links'
    // unsent bytes (SEND_QUEUE_MAX_BYTES, 8 MiB) hold a whole window with room to spare.
    if !(1..=HOPS_WINDOW_MAX).contains(&args.window_bytes) {
        return Err(format!("--window-bytes must be between 1 and {HOPS_WINDOW_MAX}"));
    }
    let config = ring::Config {
        workers: 1,
        pin_workers: args.core.is_some(),
        first_core: args.core.unwrap_or(0),
        busy_poll: Duration::from_micros(args.busy_poll_us.min(ringspan::limits::BUSY_POLL_US_MAX)),
        ..ring::Config::default()
    };
    let cipher = Arc::new(cipher::Config::new(identity.clone()).map_err(|e| e.to_string())?);
    let sender = matches!(args.role, HopsRole::Send);
    let settings = app::settings(identity, sender, args.relay, relay_key, mount);
    let start = clock();
    let (relay, json) = (args.relay, args.json);
    match args.role {
        HopsRole::Receive => {
            let (tx, rx) = std::sync::mpsc::channel();
            let engine = Engine::start(config, cipher, move |_| {
                let role = Role::Receive { summaries: Some(tx.clone()) };
                Host::new(&settings, HopsApp::new(role, mount, clock()), clock())
            })
            .map_err(|e| e.to_string())?;
            eprintln!("bench hops receive: mount {} behind {relay}", args.mount);
            // One JSON line per stream that ended, until the engine stops.
            std::thread::spawn(move || {
                for summary in rx {
                    if let Ok(line) = serde_json::to_string(&summary) {
                        println!("{line}");
                    }
                }
            });
            let stats = engine.run_until_signal().map_err(|e| e.to_string())?;
            eprintln!("bench hops receive: workers: {stats:?}");
            Ok(())
        }
        HopsRole::Send => {
            let mode = match args.mode {
                HopsMode::OneWay => plan::Mode::OneWay,
                HopsMode::Rtt => plan::Mode::RoundTrip { stream: false },
                HopsMode::RttStream => plan::Mode::RoundTrip { stream: true },
            };
            let (tx, rx) = std::sync::mpsc::channel();
            let plan = Mutex::new(Some(Plan {
                mode,
                size: args.size,
                warmup: Duration::from_secs_f64(args.warmup),
                seconds: Duration::from_secs_f64(args.seconds),
                count: args.count,
                window_bytes: args.window_bytes,
                route_timeout: Duration::from_secs_f64(args.wait),
                outcome: tx,
            }));
            let engine = Engine::start(config, cipher, move |_| {
                // One worker: the plan is taken once.
                let role = match plan.lock().ok().and_then(|mut p| p.take()) {
                    Some(plan) => Role::Send(plan),
                    None => Role::Receive { summaries: None },
                };
                Host::new(&settings, HopsApp::new(role, mount, clock()), clock())
            })
            .map_err(|e| e.to_string())?;
            // The run's own length, the route wait, and room for the end (a count may take long:
            // give it a minute per million).
            let count_allowance = args.count.map_or(0.0, |n| 60.0 * (n as f64 / 1e6).ceil());
            let limit = args.wait + args.warmup + args.seconds + count_allowance + 30.0;
            let outcome = rx.recv_timeout(Duration::from_secs_f64(limit));
            engine.shutdown();
            engine.join();
            let outcome = match outcome {
                Ok(outcome) => outcome?,
                Err(_) => return Err(format!("no outcome after {limit:.0} s")),
            };
            let elapsed = clock().duration_since(start).as_secs_f64();
            if json {
                let mut value = serde_json::to_value(&outcome).map_err(|e| e.to_string())?;
                if let Some(object) = value.as_object_mut() {
                    object.insert("run_seconds".into(), elapsed.into());
                }
                println!("{value}");
            } else {
                match &outcome {
                    Outcome::OneWay(r) => println!(
                        "one-way {} B: {:.0} msgs/s ({:.1} MB/s) over {:.2} s at the receiver; \
                         sent {}, received {}, out of order {} (window {} messages, ack every {})",
                        r.size,
                        r.msgs_per_sec,
                        r.mb_per_sec,
                        r.window_seconds,
                        r.sent,
                        r.received,
                        r.out_of_order,
                        r.window,
                        r.ack_every
                    ),
                    Outcome::RoundTrip(r) => println!(
                        "rtt ({}) {} B: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, min {:.1}, \
                         max {:.1}, mean {:.1} over {} round trips ({:.0}/s), corrupted {}",
                        r.rtt,
                        r.size,
                        r.p50_us,
                        r.p99_us,
                        r.p999_us,
                        r.min_us,
                        r.max_us,
                        r.mean_us,
                        r.samples,
                        r.per_sec,
                        r.corrupted
                    ),
                }
            }
            match outcome {
                Outcome::OneWay(r) if r.received != r.sent || r.out_of_order > 0 => Err(format!(
                    "{} of {} messages arrived, {} out of order",
                    r.received, r.sent, r.out_of_order
                )),
                Outcome::RoundTrip(r) if r.corrupted > 0 => {
                    Err(format!("{} replies differed from their request", r.corrupted))
                }
                _ => Ok(()),
            }
        }
    }
}
