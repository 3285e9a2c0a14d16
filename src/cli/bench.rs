//! `ringspan bench`: link benchmarks, side by side with plain TCP, in one run.

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use ringspan::bench::clients::{ClientLoad, ClientsReport, Plan, Progress};
use ringspan::bench::{self, direct};
use ringspan::cipher::{self, Identity, PublicKey};
use ringspan::ids::ClusterId;
use ringspan::link_load::{self, Counters, Mode, Sink, Source, Stop};
use ringspan::ring::{self, Engine};

mod hops;

/// Benchmarks.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// One encrypted engine link on loopback against plain blocking TCP: one-way throughput and
    /// request-reply round trips at several message sizes.
    Link(LinkArgs),
    /// Serves benchmark links: counts what arrives and answers requests (for two-process runs).
    Serve(ServeArgs),
    /// Opens very many client links to a satellite (each under a key of its own, each opening a
    /// client's hello), reports how fast they came up, and holds them idle.
    Clients(ClientsArgs),
    /// Baselines to compare with: NATS servers (one-way, request-reply), plain TCP round
    /// trips, and bulk TCP direct or through a relay (perf/baselines.sh). Prints key=value.
    Nats(NatsArgs),
    /// Messages through `ringspan run` relays: a receiver attached beyond the last relay, and a
    /// sender measuring one-way messages/s or round trips through them (see perf/hops.sh).
    Hops(hops::HopsArgs),
}

/// Options of `bench nats`.
#[derive(Args)]
pub struct NatsArgs {
    /// What to measure: one-way, rtt (request-reply through NATS), tcp-rtt (plain TCP
    /// ping-pong, no server) or bulk (one TCP stream of --size writes).
    test: bench::nats::Test,
    /// The publisher's / requester's NATS server (default 127.0.0.1:4222); for bulk, where the
    /// sender connects (a relay in front of --listen; default --listen itself).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The subscriber's / responder's NATS server (default: --server).
    #[arg(long)]
    to: Option<SocketAddr>,
    /// bulk: where the receiver listens (default: any loopback port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Payload bytes (bulk: bytes per write).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// Options of `bench link`.
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

/// Options of `bench serve`.
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

/// Options of `bench clients`.
#[derive(Args)]
pub struct ClientsArgs {
    /// The satellite's address.
    #[arg(long)]
    connect: SocketAddr,
    /// The satellite's public key (base64, as `ringspan pubkey` prints it).
    #[arg(long)]
    peer_key: String,
    /// Client links to open.
    #[arg(long)]
    clients: u64,
    /// Dial from source addresses 127.0.0.2 to 127.0.0.(K + 1), round robin (loopback
    /// satellites only): each gives about 28,000 ports toward one address. 127.0.0.1 is left to
    /// the nodes, whose configured peers' addresses a node trusts: these clients are strangers.
    /// Default: one per 10,000 links.
    #[arg(long)]
    sources: Option<u8>,
    /// Seconds to hold the links idle once they are up, before exiting.
    #[arg(long, default_value_t = 0.0)]
    hold: f64,
    /// Dials per second.
    #[arg(long, default_value_t = 5_000.0)]
    rate: f64,
    /// Keepalive interval of the links, in milliseconds; their idle timeout is four times it.
    #[arg(long, default_value_t = 15_000)]
    keepalive_ms: u64,
    /// Every link dials under one shared key instead of a key of its own.
    #[arg(long)]
    shared_key: bool,
    /// Each link also advertises one client mount of this cluster (hex with 0x, decimal or a
    /// UUID, as in the config file) once the satellite's hello has arrived, as a client node
    /// with one mount does. The mount id is the link's node id (with --shared-key, the shared
    /// node id plus the link's index).
    #[arg(long, value_name = "CLUSTER", value_parser = cluster_id)]
    mount_cluster: Option<u128>,
    /// Prints one JSON object at the end instead of a table.
    #[arg(long)]
    json: bool,
}

/// Links per source address by default. Linux's default ephemeral range (32768-60999) gives
/// ~28,000 ports toward one destination, but connect() tries the even half first (odd ports are
/// left to bind()): past ~14,000 links from one address every connect scans it, and 18,000 links
/// from one address cost the dialler 8.2 s of system time instead of 2.5 s (and the rate fell
/// from 2,000/s to 1,340/s). 10,000 stays well inside the even half.
const LINKS_PER_SOURCE: u64 = 10_000;

fn cluster_id(text: &str) -> Result<u128, String> {
    super::config::parse_id(text)
}

/// Runs a bench subcommand.
pub fn run(command: BenchCommand) -> Result<(), String> {
    match command {
        BenchCommand::Link(args) => link(args),
        BenchCommand::Serve(args) => serve(args),
        BenchCommand::Clients(args) => clients(args),
        BenchCommand::Nats(a) => {
            if !(a.seconds.is_finite() && a.seconds > 0.0) {
                return Err("--seconds must be a positive number".into());
            }
            let options = bench::nats::Options {
                test: a.test,
                server: a.server,
                to: a.to,
                listen: a.listen,
                size: a.size,
                duration: Duration::from_secs_f64(a.seconds),
            };
            println!("{}", bench::nats::run(&options)?);
            Ok(())
        }
        BenchCommand::Hops(args) => hops::run(args),
    }
}

fn clients(args: ClientsArgs) -> Result<(), String> {
    if args.clients == 0 {
        return Err("--clients must be at least 1".into());
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be a positive number of dials per second".into());
    }
    if !(args.hold.is_finite() && args.hold >= 0.0) {
        return Err("--hold must be zero or more seconds".into());
    }
    if !(1..=3_600_000).contains(&args.keepalive_ms) {
        return Err("--keepalive-ms must be between 1 and 3,600,000".into());
    }
    let peer = PublicKey::from_base64(args.peer_key.trim().as_bytes())
        .map_err(|e| format!("--peer-key: {e}"))?;
    let sources: Vec<IpAddr> = match args.connect.ip() {
        IpAddr::V4(ip) if ip.is_loopback() => {
            let wanted = args.clients.div_ceil(LINKS_PER_SOURCE).min(253) as u8;
            let count = args.sources.unwrap_or(wanted).clamp(1, 253);
            (2..=count + 1).map(|last| IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))).collect()
        }
        _ if args.sources.is_some_and(|k| k > 1) => {
            return Err(
                "--sources spreads links over 127.0.0.x: the satellite must be on 127.0.0.0/8"
                    .into(),
            );
        }
        _ => Vec::new(),
    };

    // One descriptor per link, and room for the rest of the process.
    let want = args.clients + 1024;
    let got =
        ring::sys::raise_nofile_limit(want).map_err(|e| format!("reading RLIMIT_NOFILE: {e}"))?;
    if got < want {
        let (_, hard) = ring::sys::nofile_limit().unwrap_or((got, got));
        return Err(format!(
            "{} links need {want} open files, but this process may have only {got} (hard limit \
             {hard}) and cannot raise it: run `ulimit -n {want}` first (as root, or with \
             CAP_SYS_RESOURCE, if the hard limit is lower)",
            args.clients
        ));
    }

    let keygen_start = clock();
    let identities = if args.shared_key { Vec::new() } else { client_identities(args.clients)? };
    let keygen_seconds = clock().duration_since(keygen_start).as_secs_f64();
    let keys = if args.shared_key { "one key shared by every link" } else { "one key per link" };
    if !args.json {
        eprintln!(
            "ringspan bench clients: {} links to {} from {} source address(es), {} dials/s, {keys} \
             ({keygen_seconds:.1} s to generate)",
            args.clients,
            args.connect,
            sources.len().max(1),
            args.rate
        );
    }

    let keepalive = Duration::from_millis(args.keepalive_ms);
    let idle_timeout = keepalive * 4;
    let config = ring::Config {
        workers: 1,
        pin_workers: false,
        keepalive_interval: keepalive,
        idle_timeout,
        ..ring::Config::default()
    };
    let own = cipher::Config::new(Identity::generate().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let node = own.identity().public_key().node_id();
    let mount_cluster = args.mount_cluster.map(ClusterId);
    let plan = std::sync::Mutex::new(Some(Plan {
        addr: args.connect,
        peer,
        sources: sources.clone(),
        clients: args.clients,
        rate: args.rate,
        identities,
        node,
        mount_cluster,
        idle_timeout,
    }));
    let engine = Engine::start(config, Arc::new(own), move |_| {
        // One worker: the plan is taken once.
        let plan = plan.lock().ok().and_then(|mut plan| plan.take());
        ClientLoad::new(plan.unwrap_or_else(|| Plan {
            addr: args.connect,
            peer,
            sources: Vec::new(),
            clients: 0,
            rate: 1.0,
            identities: Vec::new(),
            node,
            mount_cluster: None,
            idle_timeout,
        }))
    })
    .map_err(|e| e.to_string())?;

    let progress = |engine: &Engine| -> Result<ClientsReport, String> {
        let (tx, rx) = std::sync::mpsc::channel();
        engine.send(0, ring::Command::Service(Box::new(Progress(tx))));
        rx.recv_timeout(Duration::from_secs(30))
            .map_err(|_| "the client worker does not answer".to_string())
    };
    let terminal = std::io::stderr().is_terminal() && !args.json;
    // Dial, then wait for every dial to end up or failed: each is bounded by the handshake
    // timeout, which covers the TCP connect too.
    let mut report = progress(&engine)?;
    let mut last_change = clock();
    let mut last_line = clock();
    let mut seen = 0;
    while report.dialled < args.clients || report.pending > 0 {
        std::thread::sleep(Duration::from_millis(250));
        report = progress(&engine)?;
        let settled = report.established + report.failed;
        if settled != seen {
            seen = settled;
            last_change = clock();
        }
        if report.dialled == args.clients && clock().duration_since(last_change) > STALL {
            break;
        }
        if terminal {
            eprint!("\r\x1b[2K  {}", progress_line(&report));
        } else if !args.json && clock().duration_since(last_line) >= Duration::from_secs(10) {
            eprintln!("  {}", progress_line(&report));
            last_line = clock();
        }
    }
    if terminal {
        eprintln!();
    }
    let dialled = report.clone();
    if !args.json {
        print!("{}", clients_table(&dialled));
    }

    // Hold the links idle, so that the satellite's memory can be measured meanwhile.
    if args.hold > 0.0 {
        // Also with --json: a script measuring the satellite waits for this line.
        eprintln!("holding {} links idle for {} s", dialled.up_now, args.hold);
        std::thread::sleep(Duration::from_secs_f64(args.hold));
        report = progress(&engine)?;
    }
    engine.shutdown();
    engine.join();

    let lost_while_held = report.lost - dialled.lost;
    if args.json {
        let mut json = serde_json::to_value(&report).map_err(|e| e.to_string())?;
        if let Some(object) = json.as_object_mut() {
            object.insert("keys".into(), keys.into());
            object.insert("keygen_seconds".into(), keygen_seconds.into());
            object.insert("hold_seconds".into(), args.hold.into());
            object.insert("up_after_dialling".into(), dialled.up_now.into());
            object.insert("lost_while_held".into(), lost_while_held.into());
        }
        println!("{json}");
    } else if args.hold > 0.0 {
        println!("links lost while held: {lost_while_held}; up at the end: {}", report.up_now);
    }
    if report.established < args.clients {
        return Err(format!("only {} of {} links came up", report.established, args.clients));
    }
    Ok(())
}

/// How long to wait, once every dial has started, for a dial to end one way or the other
/// before giving up on the rest: well past the handshake timeout, which covers the connect.
const STALL: Duration = Duration::from_secs(60);

/// One key per link, made on every core.
fn client_identities(count: u64) -> Result<Vec<Arc<cipher::Config>>, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let make = |n: u64| -> Result<Vec<Arc<cipher::Config>>, String> {
        (0..n)
            .map(|_| {
                let identity = Identity::generate().map_err(|e| e.to_string())?;
                cipher::Config::new(identity).map(Arc::new).map_err(|e| e.to_string())
            })
            .collect()
    };
    let parts: Vec<Result<Vec<_>, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let n = count / threads + u64::from(t < count % threads);
                scope.spawn(move || make(n))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("key generation failed".into())))
            .collect()
    });
    let mut all = Vec::with_capacity(count as usize);
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

fn progress_line(r: &ClientsReport) -> String {
    format!(
        "dialled {}/{}, up {}, failed {}, pending {}, lost {}",
        r.dialled, r.clients, r.established, r.failed, r.pending, r.lost
    )
}

fn clients_table(r: &ClientsReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "links established   {} of {}", r.established, r.clients);
    let _ = writeln!(
        out,
        "handshakes/s        {:.0} ({} links in {:.2} s from the first dial to the last link up)",
        r.handshakes_per_sec, r.established, r.dial_seconds
    );
    let _ = writeln!(
        out,
        "connect time        p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (dial to link up)",
        r.connect_p50_ms, r.connect_p99_ms, r.connect_max_ms
    );
    let _ = writeln!(out, "failed              {}", r.failed);
    for (reason, count) in &r.failures {
        let _ = writeln!(out, "  {count:>8}  {reason}");
    }
    if r.pending > 0 {
        let _ = writeln!(out, "still pending       {}", r.pending);
    }
    if r.advertised > 0 {
        let _ = writeln!(out, "mounts advertised   {}", r.advertised);
    }
    let _ = writeln!(out, "lost after up       {}", r.lost);
    for (reason, count) in &r.lost_reasons {
        let _ = writeln!(out, "  {count:>8}  {reason}");
    }
    out
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let key = cipher::identity::read_key_file(&args.key)
        .map_err(|e| format!("{}: {e}", args.key.display()))?;
    let identity = Identity::new(key).map_err(|e| e.to_string())?;
    let mut cipher = cipher::Config::new(identity).map_err(|e| e.to_string())?;
    cipher.accept_unknown_keys = true;
    let mut config = ring::Config {
        workers: args.workers,
        listen: Some(args.listen),
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

fn link(args: LinkArgs) -> Result<(), String> {
    let seconds = if args.quick { 0.5 } else { args.seconds };
    let duration = Duration::from_secs_f64(seconds);
    let mut rows = Vec::new();
    eprintln!("ringspan bench link: {} s per measurement, sizes {:?}", seconds, args.sizes);
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
            listen: Some("127.0.0.1:0".parse().map_err(|_| "address")?),
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

#[allow(clippy::disallowed_methods)] // the binary reads the clock
fn clock() -> Instant {
    Instant::now()
}
