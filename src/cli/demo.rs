//! `ringspan demo`: a local cluster on loopback that shows relaying, rerouting and figures.
//!
//! It starts N nodes (default 5) in this process, each a real node (its own io_uring engine,
//! encrypted links on 127.0.0.1, its own key), wired as two parallel chains between an entry
//! node and a node holding an echo master mount, so there is a loop and two paths. A client
//! node attaches at the entry and sends calls through the cluster with a live progress line.
//! Midway the link from the entry node to the relay on the active path is cut: the calls
//! crossing it are aborted with LOST_LINK, and the next calls take the other path. Then it prints the
//! routes and a summary, and exits 0.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use ringspan::cipher::PrivateKey;
use ringspan::cipher::identity::write_new_key_file;
use ringspan::daemon::control::{self, View};
use ringspan::daemon::{Handle, LoadReport, Request, Snapshot};
use ringspan::ring;

use super::run::start;
use ringspan::daemon::config::{NodeConfig, parse_mount};

/// `ringspan demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Nodes in the cluster (at least 5).
    #[arg(long, default_value_t = 5)]
    pub nodes: usize,
    /// How long to send calls, in seconds.
    #[arg(long, default_value_t = 6)]
    pub seconds: u64,
    /// Shows a satellite with many idle clients beside a 3-node core instead.
    #[arg(long)]
    pub satellites: bool,
    /// Idle clients on the satellite (with --satellites).
    #[arg(long, default_value_t = 2_000)]
    pub clients: u64,
    /// Workers per node (each runs a plane of it, joined to the others by internal links). The
    /// demo's nodes share this host's cores: one each by default.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
}

const MOUNT: &str = "0x1:0x10";

#[allow(clippy::disallowed_methods)] // the binary owns the clock
fn now() -> Instant {
    Instant::now()
}

/// A loopback port free at the time of asking, for a node to listen on: below the ephemeral
/// range when there is room (the 10,000 ports under it), so that no outgoing connection (the
/// demo's own nodes dial each other while the later ones start, and other processes dial too)
/// is given it as its source port before the node binds it. Never one given before by this
/// process. Else one the system picks.
pub(super) fn free_port() -> Result<u16, String> {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let low = range.ok().and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok());
    if let Some(low) = low.filter(|&low| low >= 12_000) {
        for _ in 0..1_000 {
            let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
            let port = low - 10_000 + (random % 10_000) as u16;
            if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return Ok(port);
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    given.push(port);
    Ok(port)
}

struct Member {
    name: String,
    port: u16,
    public: String,
    node: Option<Handle>,
}

/// The links: two chains from node 0 to the last node, through the odd and the even nodes.
fn edges(n: usize) -> Vec<(usize, usize)> {
    let last = n - 1;
    let mut edges = Vec::new();
    for parity in [1, 0] {
        let chain: Vec<usize> = (1..last).filter(|i| i % 2 == parity).collect();
        let mut prev = 0;
        for &i in &chain {
            edges.push((prev, i));
            prev = i;
        }
        edges.push((prev, last));
    }
    edges
}

fn config_text(
    i: usize,
    members: &[Member],
    edges: &[(usize, usize)],
    client: &str,
    workers: usize,
) -> String {
    let m = &members[i];
    let mut text = format!(
        "[node]\nkey = \"{}.key\"\nlisten = [\"127.0.0.1:{}\"]\nworkers = {workers}\n",
        m.name, m.port
    );
    if i == 0 {
        let _ = writeln!(text, "allow = [\"{client}\"]");
    }
    text.push_str(
        "\n[limits]\nkeepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 1000\n",
    );
    for &(a, b) in edges {
        let (other, dial) = match (a == i, b == i) {
            (true, _) => (b, true),
            (_, true) => (a, false),
            _ => continue,
        };
        let peer = &members[other];
        let _ = write!(text, "\n[[peer]]\nname = \"{}\"\nkey = \"{}\"\n", peer.name, peer.public);
        if dial {
            let _ = writeln!(text, "address = \"127.0.0.1:{}\"", peer.port);
        }
    }
    if i == members.len() - 1 {
        text.push_str(
            "\n[[mount]]\ncluster = \"0x1\"\nid = \"0x10\"\nkind = \"master\"\nlabel = \"demo/master\"\nservice = \"echo\"\n",
        );
    }
    text
}

fn key(dir: &Path, name: &str) -> Result<String, String> {
    let key = PrivateKey::generate().map_err(|e| e.to_string())?;
    write_new_key_file(&dir.join(format!("{name}.key")), &key).map_err(|e| e.to_string())?;
    Ok(key.public_key().map_err(|e| e.to_string())?.to_base64())
}

fn start_from(dir: &Path, name: &str, text: &str) -> Result<Handle, String> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    let config = NodeConfig::parse(&path, text).map_err(|e| e.to_string())?;
    start(&config)
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = now() + timeout;
    while now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("timed out waiting for {what}"))
}

fn route_via(s: &Snapshot) -> Option<(u16, String)> {
    s.routes.iter().find(|r| r.mount == "10").map(|r| (r.metric, r.via.clone()))
}

#[derive(Default)]
struct Totals {
    completed: u64,
    lost_link: u64,
    no_route: u64,
    other: u64,
    rtt: Vec<u32>,
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs the demo.
pub fn run(args: &DemoArgs) -> Result<(), String> {
    let n = args.nodes.max(5);
    let dir = std::env::temp_dir().join(format!("ringspan-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = if args.satellites {
        super::demo_satellites::run(&dir, args.clients.max(1))
    } else {
        demo(&dir, n, args.seconds.max(2), args.workers.max(1))
    };
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn demo(dir: &Path, n: usize, seconds: u64, workers: usize) -> Result<(), String> {
    let edges = edges(n);
    let mut members = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("n{i}");
        let public = key(dir, &name)?;
        members.push(Member { name, port: free_port()?, public, node: None });
    }
    let client_public = key(dir, "client")?;
    println!(
        "ringspan demo: {n} nodes on loopback, each with its own io_uring engine ({workers} \
         worker(s)) and key"
    );
    let describe: Vec<String> = edges.iter().map(|(a, b)| format!("n{a}–n{b}")).collect();
    println!("  links (two parallel chains, one loop): {}", describe.join("  "));
    println!("  n{} holds an echo master mount {MOUNT}; a client node attaches at n0", n - 1);
    for i in 0..n {
        let text = config_text(i, &members, &edges, &client_public, workers);
        members[i].node = Some(start_from(dir, &members[i].name, &text)?);
    }
    let client_text = format!(
        "[node]\nkey = \"client.key\"\nrole = \"client\"\n\n[[peer]]\nname = \"n0\"\naddress = \"127.0.0.1:{}\"\nkey = \"{}\"\n",
        members[0].port, members[0].public
    );
    let client = start_from(dir, "client", &client_text)?;
    let t0 = now();
    let entry = |m: &[Member]| m[0].node.as_ref().map(Handle::snapshot);
    wait_for("routes to converge", Duration::from_secs(20), || {
        client.snapshot().routes.iter().any(|r| r.mount == "10")
            && entry(&members).is_some_and(|s| route_via(&s).is_some())
    })?;
    println!("  cluster up and routes converged in {} ms\n", t0.elapsed().as_millis());
    let before = entry(&members).ok_or("n0 is gone")?;
    print!("{}", control::render(&before, View::Routes));
    let (metric, via) = route_via(&before).ok_or("no route at n0")?;
    // The relay on the active path: the peer n0's route goes through.
    let victim = (1..n - 1)
        .find(|&i| members[i].node.as_ref().is_some_and(|s| via.contains(&s.id().to_string())))
        .ok_or("the active path has no relay")?;
    let victim_id = members[victim].node.as_ref().map(Handle::id).ok_or("no relay")?;
    println!("\nactive path from n0: {metric} hops via n{victim}\n");

    let mount = parse_mount(MOUNT)?;
    let mut totals = Totals::default();
    let mut cut_at = None;
    let mut cut_report = None;
    let mut flowing_again: Option<Duration> = None;
    let start = now();
    let deadline = start + Duration::from_secs(seconds);
    let mut window = (now(), 0u64, Vec::<u32>::new());
    while now() < deadline {
        let (reply, rx) = mpsc::channel::<LoadReport>();
        let requested = now();
        let request = Request::Load { mount, calls: 2_000, concurrency: 64, size: 64, reply };
        client
            .remote()
            .send(ring::Command::Service(Box::new(request)))
            .map_err(|_| "the client node does not take requests".to_string())?;
        if cut_at.is_none() && now() >= start + Duration::from_secs(seconds) / 2 {
            // Midway, while calls cross it: cut the link from n0 to the relay on the active
            // path, as a failure would (no notice), and keep it cut until the end. A burst
            // takes a few milliseconds; a millisecond in, calls are crossing.
            std::thread::sleep(Duration::from_millis(1));
            members[0]
                .node
                .as_ref()
                .ok_or("n0 is gone")?
                .cut(victim_id, Duration::from_secs(seconds))?;
            cut_at = Some(now());
        }
        let report = rx.recv().map_err(|_| "the client node stopped".to_string())?;
        if report.not_sent > 0 {
            // No route at this instant (the cut is being routed around): wait a little.
            std::thread::sleep(Duration::from_millis(1));
        }
        // Flowing again: the first call sent after the cut that was answered (calls of the
        // burst under way at the cut may have been answered before it, or on the old path).
        if let Some(at) = cut_at
            && flowing_again.is_none()
            && requested > at
            && let Some(answered) = report.first_answered
        {
            flowing_again = Some(answered.saturating_duration_since(at));
        }
        if cut_at.is_some() {
            let since_cut = cut_report.get_or_insert((0, 0));
            since_cut.0 += report.lost_link;
            since_cut.1 += report.no_route;
        }
        totals.completed += report.completed;
        totals.lost_link += report.lost_link;
        totals.no_route += report.no_route;
        totals.other += report.other;
        window.1 += report.completed;
        window.2.extend_from_slice(&report.rtt_us);
        totals.rtt.extend_from_slice(&report.rtt_us);
        let elapsed = window.0.elapsed();
        if elapsed >= Duration::from_millis(500) {
            window.2.sort_unstable();
            print!(
                "\r  t={:>4.1}s  {:>8.0} calls/s  p50 {:>5} µs  p99 {:>6} µs  completed {:>8}  aborted {:>4}   ",
                start.elapsed().as_secs_f64(),
                window.1 as f64 / elapsed.as_secs_f64(),
                pct(&window.2, 0.5),
                pct(&window.2, 0.99),
                totals.completed,
                totals.lost_link + totals.no_route + totals.other,
            );
            let _ = std::io::stdout().flush();
            window = (now(), 0, Vec::new());
        }
    }
    println!();
    let wall = start.elapsed();
    if let Some((lost, no_route)) = cut_report {
        println!(
            "\ncut: link n0–n{victim} cut at t={:.1}s; {lost} calls in flight across it were aborted with LOST_LINK (hop by hop, at both ends), {no_route} refused with NO_ROUTE while the route moved",
            cut_at.map_or(0.0, |at| (at - start).as_secs_f64()),
        );
    }
    if let Some(gap) = flowing_again {
        println!(
            "calls flowed again on the new path {:.1} ms after the cut (the first call sent after it to be answered)",
            gap.as_secs_f64() * 1e3
        );
    }
    let after = entry(&members).ok_or("n0 is gone")?;
    if let Some((metric, via)) = route_via(&after) {
        println!("reroute: n0 now reaches the master in {metric} hops via {via}\n");
    }
    print!("{}", control::render(&after, View::Routes));
    totals.rtt.sort_unstable();
    println!("\nSUMMARY");
    println!("  {:<28} {}", "nodes", n);
    println!("  {:<28} {:.1} s", "calls sent for", wall.as_secs_f64());
    println!("  {:<28} {}", "calls completed", totals.completed);
    println!("  {:<28} {}", "aborted, LOST_LINK", totals.lost_link);
    println!("  {:<28} {}", "refused, NO_ROUTE", totals.no_route);
    println!("  {:<28} {}", "other errors", totals.other);
    println!("  {:<28} {:.0}", "calls/s (mean)", totals.completed as f64 / wall.as_secs_f64());
    println!("  {:<28} {} µs", "round trip p50", pct(&totals.rtt, 0.5));
    println!("  {:<28} {} µs", "round trip p99", pct(&totals.rtt, 0.99));
    println!(
        "  (each call: client → n0 → relays → n{} and back, encrypted on every link, 64 calls in flight)",
        n - 1
    );
    if workers > 1 {
        // Where each node's links landed, and how much crossed between its workers.
        println!("\nWORKERS (each node a plane per worker; bytes handed between its workers)");
        for member in &members {
            let Some(node) = &member.node else { continue };
            let rows = node.snapshot().workers;
            let links: Vec<String> = rows.iter().map(|w| w.links.to_string()).collect();
            let socket: u64 = rows.iter().map(|w| w.bytes_in).sum();
            let crossed: u64 = rows.iter().map(|w| w.internal_bytes_in).sum();
            let share = 100.0 * crossed as f64 / (socket + crossed).max(1) as f64;
            println!(
                "  {:<4} links per worker {:<8} crossed between workers {share:>5.1}% of bytes in",
                member.name,
                links.join("/")
            );
        }
    }
    client.shutdown();
    for member in &mut members {
        if let Some(node) = member.node.take() {
            node.shutdown();
        }
    }
    Ok(())
}
