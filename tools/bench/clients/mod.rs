//! `ringspan-bench clients`: very many client links to a satellite from one engine worker
//! ([`load::ClientLoad`]), how fast they came up, and how many stay up while held idle.

mod load;

use std::fmt::Write as _;
use std::io::IsTerminal as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use ringspan::cipher::{self, Identity, PublicKey};
use ringspan::ids::ClusterId;
use ringspan::ring::{self, Engine};

use crate::clock;
use load::{ClientLoad, ClientsReport, Plan, Progress};

/// Options of `ringspan-bench clients`.
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
    /// Dials per link before it is given up: a dial that fails (refused, reset by the
    /// satellite's admission, handshake timed out) is dialled again under the same key after
    /// a backoff, as a client node redials its satellite. 1: never redialled.
    #[arg(long, default_value_t = 10)]
    attempts: u32,
    /// The first wait before a failed dial is redialled, in milliseconds; it doubles after each
    /// failure of the link up to --redial-max-ms, each wait jittered down by up to half.
    #[arg(long, default_value_t = ringspan::limits::REDIAL_MIN_MS)]
    redial_min_ms: u64,
    /// The longest wait between two dials of a link, in milliseconds.
    #[arg(long, default_value_t = ringspan::limits::REDIAL_MAX_MS)]
    redial_max_ms: u64,
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
    ringspan::daemon::config::parse_id(text)
}

/// Runs `ringspan-bench clients`.
pub fn run(args: ClientsArgs) -> Result<(), String> {
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
    if args.attempts == 0 {
        return Err("--attempts must be at least 1".into());
    }
    if args.redial_min_ms > args.redial_max_ms || args.redial_max_ms > 3_600_000 {
        return Err("--redial-min-ms must not exceed --redial-max-ms, nor that an hour".into());
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
            "ringspan-bench clients: {} links to {} from {} source address(es), {} dials/s, {keys} \
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
        attempts: args.attempts,
        redial_min: Duration::from_millis(args.redial_min_ms),
        redial_max: Duration::from_millis(args.redial_max_ms),
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
            attempts: 1,
            redial_min: Duration::ZERO,
            redial_max: Duration::ZERO,
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
    // Dial, then wait for every link to be up or given up: each dial is bounded by the
    // handshake timeout, which covers the TCP connect too, and each link by its attempts.
    let mut report = progress(&engine)?;
    let mut last_change = clock();
    let mut last_line = clock();
    let mut seen = 0;
    while report.dialled < args.clients || report.pending > 0 {
        std::thread::sleep(Duration::from_millis(250));
        report = progress(&engine)?;
        // Any dial ending, up or failed, is progress.
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
        // Also with --json: a script measuring the satellite waits for this line (and may
        // show the rest, which says why links are missing, if any are).
        eprintln!("holding {} links idle for {} s{}", dialled.up_now, args.hold, missing(&dialled));
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

/// How long to wait, once every link has been dialled, for a dial to end one way or the other
/// before giving up on the rest: well past the handshake timeout, which covers the connect,
/// plus the longest wait before a redial.
const STALL: Duration = Duration::from_secs(60);

/// Why links are not up, for the `holding` line: empty when every link is up and no dial
/// failed; else the dials that failed, by reason, and the links given up or still pending.
fn missing(r: &ClientsReport) -> String {
    if r.failed == 0 && r.up_now == r.clients {
        return String::new();
    }
    let reasons: Vec<String> = r.failures.iter().map(|(why, n)| format!("{n} x {why}")).collect();
    let mut text = format!(
        "; {} of {} links up, {} given up, {} pending; {} dials failed",
        r.established, r.clients, r.given_up, r.pending, r.failed
    );
    if !reasons.is_empty() {
        let _ = write!(text, " ({})", reasons.join(", "));
    }
    let _ = write!(text, ", {} redialled", r.redialled);
    if r.lost > 0 {
        let _ = write!(text, "; {} lost after up", r.lost);
    }
    text
}

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
        "dialled {}/{}, up {}, failed {} (redialled {}, given up {}), pending {}, lost {}",
        r.dialled, r.clients, r.established, r.failed, r.redialled, r.given_up, r.pending, r.lost
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
    let _ = writeln!(out, "dials failed        {}", r.failed);
    for (reason, count) in &r.failures {
        let _ = writeln!(out, "  {count:>8}  {reason}");
    }
    if r.redialled > 0 || r.given_up > 0 {
        let _ = writeln!(out, "redialled           {}", r.redialled);
        let _ = writeln!(out, "links given up      {}", r.given_up);
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
