//! `ringspan-bench link` and `ringspan-bench serve`: one encrypted engine link on loopback
//! against plain blocking TCP ([`crate::direct`]), and the accepting side alone for two-process
//! runs. Both load the link with the library's [`ringspan::link_load`] services.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use hdrhistogram::Histogram;
use ringspan::cipher::{self, Identity};
use ringspan::link_load::{self, Counters, Mode, Sink, Source, Stop};
use ringspan::ring::{self, Engine};

use crate::{clock, direct};

/// Options of `ringspan-bench link`.
#[derive(Args)]
pub struct LinkArgs {
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Short measurements (0.5 s each): the whole run in well under a minute.
    #[arg(long)]
    quick: bool,
    /// Message payload sizes in bytes (the largest a message holds is 65,504).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1024, 65_504])]
    sizes: Vec<usize>,
    /// Writes the results as CSV to this file.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Measures only one-way throughput (no round trips), e.g. under a profiler.
    #[arg(long)]
    one_way_only: bool,
}

/// Options of `ringspan-bench serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:7000")]
    listen: SocketAddr,
    /// This node's private key file.
    #[arg(long)]
    key: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Keepalive interval of the links, in milliseconds; their idle timeout is four times it.
    /// Default: the engine's (limits::KEEPALIVE_INTERVAL_MS, 1 s).
    #[arg(long)]
    keepalive_ms: Option<u64>,
}

/// Runs `ringspan-bench serve`.
pub fn serve(args: ServeArgs) -> Result<(), String> {
    let key = cipher::identity::read_key_file(&args.key)
        .map_err(|e| format!("{}: {e}", args.key.display()))?;
    let identity = Identity::new(key).map_err(|e| e.to_string())?;
    let mut cipher = cipher::Config::new(identity).map_err(|e| e.to_string())?;
    cipher.accept_unknown_keys = true;
    let mut config = ring::Config {
        workers: args.workers,
        listen: vec![args.listen],
        ..ring::Config::default()
    };
    if let Some(ms) = args.keepalive_ms {
        if !(1..=3_600_000).contains(&ms) {
            return Err("--keepalive-ms must be between 1 and 3,600,000".into());
        }
        config.keepalive_interval = Duration::from_millis(ms);
        config.idle_timeout = config.keepalive_interval * 4;
    }
    let counters = Arc::new(Counters::default());
    let shared = counters.clone();
    let engine = Engine::start(config, Arc::new(cipher), move |_| Sink::new(shared.clone()))
        .map_err(|e| e.to_string())?;
    // The port line tells a parent process where to connect.
    println!("listening {}", engine.local_addr().map_or_else(String::new, |a| a.to_string()));
    let stats = engine.run_until_signal().map_err(|e| e.to_string())?;
    let (messages, bytes) = counters.snapshot();
    eprintln!("served {messages} messages, {bytes} payload bytes; workers: {stats:?}");
    Ok(())
}

/// One row of the results.
struct Row {
    scenario: &'static str,
    size: usize,
    ringspan: f64,
    direct: f64,
    unit: &'static str,
}

/// Runs `ringspan-bench link`.
pub fn link(args: LinkArgs) -> Result<(), String> {
    let seconds = if args.quick { 0.5 } else { args.seconds };
    let duration = Duration::from_secs_f64(seconds);
    let mut rows = Vec::new();
    eprintln!("ringspan-bench link: {} s per measurement, sizes {:?}", seconds, args.sizes);
    for &size in &args.sizes {
        if size > ringspan::limits::MESSAGE_PAYLOAD_MAX {
            return Err(format!(
                "a message holds at most {} bytes",
                ringspan::limits::MESSAGE_PAYLOAD_MAX
            ));
        }
        progress(&format!("one-way {size} B: ringspan"));
        let (messages, bytes, elapsed) = engine_one_way(size, duration)?;
        progress(&format!("one-way {size} B: plain TCP"));
        let (d_messages, d_bytes, d_elapsed) =
            direct::one_way(size, duration, (0, 1)).map_err(|e| e.to_string())?;
        rows.push(Row {
            scenario: "one-way msgs/s",
            size,
            ringspan: messages as f64 / elapsed.as_secs_f64(),
            direct: d_messages as f64 / d_elapsed.as_secs_f64(),
            unit: "msg/s",
        });
        rows.push(Row {
            scenario: "one-way MB/s",
            size,
            ringspan: bytes as f64 / elapsed.as_secs_f64() / 1e6,
            direct: d_bytes as f64 / d_elapsed.as_secs_f64() / 1e6,
            unit: "MB/s",
        });
        if args.one_way_only {
            continue;
        }
        progress(&format!("round trips {size} B: ringspan"));
        let ours = engine_round_trips(size, duration)?;
        progress(&format!("round trips {size} B: plain TCP"));
        let theirs = direct::round_trips(size, duration, (0, 1)).map_err(|e| e.to_string())?;
        for (name, q) in [("RTT p50 µs", 0.5), ("RTT p99 µs", 0.99), ("RTT p99.9 µs", 0.999)] {
            rows.push(Row {
                scenario: name,
                size,
                ringspan: ours.value_at_quantile(q) as f64 / 1e3,
                direct: theirs.value_at_quantile(q) as f64 / 1e3,
                unit: "µs",
            });
        }
    }
    eprintln!();
    let mut table = String::new();
    let _ = writeln!(
        table,
        "{:<16} {:>7} {:>14} {:>14} {:>7}",
        "scenario", "size B", "ringspan", "plain TCP", "ratio"
    );
    for row in &rows {
        let _ = writeln!(
            table,
            "{:<16} {:>7} {:>14.1} {:>14.1} {:>6.2}x",
            row.scenario,
            row.size,
            row.ringspan,
            row.direct,
            row.ringspan / row.direct
        );
    }
    print!("{table}");
    println!(
        "(ringspan: AES-256-GCM records, transactions, io_uring, one worker per side; plain TCP: blocking, no encryption, 64 KiB buffered)"
    );
    if let Some(path) = args.csv {
        let mut csv = String::from("scenario,size_bytes,ringspan,plain_tcp,unit,ratio\n");
        for row in &rows {
            let _ = writeln!(
                csv,
                "{},{},{:.3},{:.3},{},{:.4}",
                row.scenario,
                row.size,
                row.ringspan,
                row.direct,
                row.unit,
                row.ringspan / row.direct
            );
        }
        std::fs::write(&path, csv).map_err(|e| format!("{}: {e}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

fn progress(what: &str) {
    eprint!("\r\x1b[2K  measuring {what} ...");
}

/// A server engine (core 0) and a client engine (core 1) joined by one link.
struct EnginePair {
    server: Engine,
    client: Engine,
    received: Arc<Counters>,
    rtt: Arc<Mutex<Histogram<u64>>>,
}

fn engine_pair(mode: Mode, size: usize) -> Result<EnginePair, String> {
    let server_id = Identity::generate().map_err(|e| e.to_string())?;
    let client_id = Identity::generate().map_err(|e| e.to_string())?;
    let server_key = server_id.public_key();
    let mut server_cipher = cipher::Config::new(server_id).map_err(|e| e.to_string())?;
    server_cipher.allowlist.insert(client_id.public_key());
    let client_cipher = cipher::Config::new(client_id).map_err(|e| e.to_string())?;

    let received = Arc::new(Counters::default());
    let server_counters = received.clone();
    let server = Engine::start(
        ring::Config {
            workers: 1,
            first_core: 0,
            listen: vec!["127.0.0.1:0".parse().map_err(|_| "address")?],
            ..ring::Config::default()
        },
        Arc::new(server_cipher),
        move |_| Sink::new(server_counters.clone()),
    )
    .map_err(|e| e.to_string())?;
    let rtt = Arc::new(Mutex::new(link_load::new_histogram()));
    let (client_counters, client_rtt) = (Arc::new(Counters::default()), rtt.clone());
    let up = client_counters.clone();
    let client = Engine::start(
        ring::Config { workers: 1, first_core: 1, ..ring::Config::default() },
        Arc::new(client_cipher),
        move |_| Source::new(mode, size, client_counters.clone(), client_rtt.clone()),
    )
    .map_err(|e| e.to_string())?;
    client.connect(server.local_addr().ok_or("no listening address")?, Some(server_key));
    let deadline = clock() + Duration::from_secs(10);
    while up.links_up.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        if clock() > deadline {
            return Err("the benchmark link did not come up within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(EnginePair { server, client, received, rtt })
}

impl EnginePair {
    fn finish(self) {
        self.client.send(0, ring::Command::Service(Box::new(Stop)));
        self.client.shutdown();
        self.client.join();
        self.server.shutdown();
        self.server.join();
    }
}

fn engine_one_way(size: usize, duration: Duration) -> Result<(u64, u64, Duration), String> {
    let pair = engine_pair(Mode::OneWay, size)?;
    std::thread::sleep(Duration::from_millis(300));
    let (m0, b0) = pair.received.snapshot();
    let start = clock();
    std::thread::sleep(duration);
    let (m1, b1) = pair.received.snapshot();
    let elapsed = clock() - start;
    pair.finish();
    Ok((m1 - m0, b1 - b0, elapsed))
}

fn engine_round_trips(size: usize, duration: Duration) -> Result<Histogram<u64>, String> {
    let pair = engine_pair(Mode::RoundTrip, size)?;
    std::thread::sleep(Duration::from_millis(300));
    pair.rtt.lock().map_err(|_| "poisoned")?.reset();
    std::thread::sleep(duration);
    pair.client.send(0, ring::Command::Service(Box::new(Stop)));
    std::thread::sleep(Duration::from_millis(50));
    let histogram = pair.rtt.lock().map_err(|_| "poisoned")?.clone();
    pair.finish();
    Ok(histogram)
}
