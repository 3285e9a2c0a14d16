//! `ringspan trace`: the path a call to a mount takes, each node on it answering for itself
//! with its round trip from here (`LINK_TRACE`, PROTOCOL.md 8.10); and `ringspan ping --node`,
//! round trips to one node of the cluster, found on the path to some mount.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use clap::Args;
use ringspan::daemon::config::{LogFormat, parse_mount};
use ringspan::daemon::control::printable;
use ringspan::daemon::{Handle, Request, TraceEvent};
use ringspan::ids::{ClusterId, MountId, NodeId};
use ringspan::limits::TRACE_HOPS_MAX;
use ringspan::ring;
use ringspan::span::MountKey;
use ringspan::wire::{ErrorCode, TraceReport, TraceStatus};

use super::req::{PingArgs, summarize};
use super::run::{load, start};

#[derive(Args)]
pub struct TraceArgs {
    /// The client node's configuration file (as for `ringspan call`): the trace starts there.
    #[arg(long, short)]
    pub config: PathBuf,
    /// The mount to trace: `CLUSTER:MOUNT`, each hex (0x…) or decimal.
    #[arg(long)]
    pub mount: String,
    /// Traces to send, one after the other: each hop shows a round trip for each.
    #[arg(long, default_value_t = 3)]
    pub count: u32,
    /// The most hops to follow (1 to 64).
    #[arg(long, default_value_t = 30)]
    pub max_hops: u8,
    /// How long to wait for a route, and for each trace to end, in seconds.
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
    /// Print the path as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One report heard, as the tracer saw it.
struct Heard {
    report: Result<TraceReport, String>,
    rtt: Duration,
    name: Option<String>,
}

/// One trace: what came back, and how it ended (`None`: it did not within the wait).
struct Probe {
    heard: Vec<Heard>,
    ended: Option<ErrorCode>,
}

impl Probe {
    /// The last report, if it parsed.
    fn last(&self) -> Option<&TraceReport> {
        self.heard.last().and_then(|h| h.report.as_ref().ok())
    }

    /// Whether it ended where `end` says, with its last report saying so.
    fn reached(&self, end: TraceStatus) -> bool {
        self.ended == Some(ErrorCode::NONE) && self.last().is_some_and(|r| r.status == end)
    }

    /// Why it did not reach the mount's holder, in words.
    fn failure(&self, wait: Duration) -> Option<String> {
        if self.reached(TraceStatus::Holder) {
            return None;
        }
        let n = self.heard.len();
        let at = |r: &TraceReport| format!("hop {} ({})", r.hop, r.node);
        Some(match (self.ended, self.last()) {
            (None, _) => format!("no end within {} s, after {n} reports", wait.as_secs()),
            (Some(_), Some(r)) if r.status == TraceStatus::NoRoute => {
                format!("no route onward from {}", at(r))
            }
            (Some(_), Some(r)) if r.status == TraceStatus::Limit => {
                format!("the hop limit was reached at {} before the mount", at(r))
            }
            (Some(error), _) => {
                format!("ended with {error} (code {}) after {n} reports", error.0)
            }
        })
    }
}

/// Traces `mount` once from `node`: to its holder, or to `target` if it is on the path.
fn probe(
    node: &Handle,
    mount: MountKey,
    target: Option<NodeId>,
    limit: u8,
    wait: Duration,
) -> Result<Probe, String> {
    let (events, heard) = mpsc::channel();
    let request = Request::Trace { mount, target, limit, events };
    node.remote()
        .send(ring::Command::Service(Box::new(request)))
        .map_err(|_| "the node does not take requests".to_string())?;
    let mut probe = Probe { heard: Vec::new(), ended: None };
    loop {
        match heard.recv_timeout(wait) {
            Ok(TraceEvent::Hop { report, rtt, name }) => {
                probe.heard.push(Heard { report, rtt, name })
            }
            Ok(TraceEvent::Ended(error)) => {
                probe.ended = Some(error);
                return Ok(probe);
            }
            Ok(TraceEvent::NotOpened(why)) => return Err(why),
            Err(_) => return Ok(probe),
        }
    }
}

/// A row of the path: one hop's node, and its round trip in each probe that heard it.
struct Row {
    hop: Option<u8>,
    node: String,
    name: Option<String>,
    status: String,
    rtts: Vec<Option<Duration>>,
}

/// The probes' reports merged into rows by hop and node, in hop order. A report that does not
/// parse, or whose hop number is not one past the one before it (no ringspan node sends such),
/// gets a row of its own, shown as it came.
fn rows(probes: &[Probe]) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    for (k, probe) in probes.iter().enumerate() {
        let mut expected = 1u8;
        for heard in &probe.heard {
            let (hop, node, status) = match &heard.report {
                Ok(r) if r.hop == expected => {
                    expected = expected.saturating_add(1);
                    (Some(r.hop), r.node.to_string(), r.status.describe().to_string())
                }
                Ok(r) => (None, r.node.to_string(), format!("out of order: says hop {}", r.hop)),
                Err(why) => (None, "?".into(), format!("malformed report: {why}")),
            };
            let at =
                rows.iter().position(|row| hop.is_some() && row.hop == hop && row.node == node);
            let row = match at {
                Some(at) => &mut rows[at],
                None => {
                    let place = rows.iter().take_while(|r| r.hop <= hop || hop.is_none()).count();
                    let rtts = vec![None; probes.len()];
                    let name = heard.name.clone();
                    rows.insert(place, Row { hop, node, name, status: status.clone(), rtts });
                    &mut rows[place]
                }
            };
            row.rtts[k] = Some(heard.rtt);
            row.status = status;
        }
    }
    rows
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// `ringspan trace`: starts the client node, waits for a route to the mount, sends the traces
/// one after the other, and prints the path with each hop's round trips. `Ok` if every trace
/// reached the mount's holder.
pub fn trace(args: &TraceArgs, log_format: Option<LogFormat>) -> Result<(), String> {
    let mount = parse_mount(&args.mount)?;
    if args.max_hops == 0 || usize::from(args.max_hops) > TRACE_HOPS_MAX {
        return Err(format!("--max-hops {}: 1 to {TRACE_HOPS_MAX}", args.max_hops));
    }
    let config = load(&args.config, log_format)?;
    let node = start(&config)?;
    let result = trace_on(&node, mount, args);
    node.shutdown();
    result
}

fn trace_on(node: &Handle, mount: MountKey, args: &TraceArgs) -> Result<(), String> {
    let wait = Duration::from_secs(args.wait);
    if !node.wait_for_route(mount, wait) {
        return Err(format!("no route to {} after {} s", args.mount, args.wait));
    }
    let mut probes = Vec::new();
    for _ in 0..args.count.max(1) {
        probes.push(probe(node, mount, None, args.max_hops, wait)?);
    }
    let rows = rows(&probes);
    let failures: Vec<String> = probes
        .iter()
        .enumerate()
        .filter_map(|(k, p)| Some(format!("trace {}: {}", k + 1, p.failure(wait)?)))
        .collect();
    if args.json {
        let hops: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "hop": r.hop,
                    "node": r.node,
                    "name": r.name,
                    "status": r.status,
                    "rtt_us": r.rtts.iter().map(|t| t.map(|t| t.as_micros() as u64)).collect::<Vec<_>>(),
                })
            })
            .collect();
        let json = serde_json::json!({
            "mount": args.mount,
            "from": node.id().to_string(),
            "traces": probes.len(),
            "hops": hops,
            "reached": failures.is_empty(),
            "failures": failures,
        });
        println!("{json}");
    } else {
        print_path(node, &args.mount, args.max_hops, &rows);
    }
    match failures.is_empty() {
        true => Ok(()),
        false => Err(failures.join("\n")),
    }
}

fn print_path(node: &Handle, mount: &str, max_hops: u8, rows: &[Row]) {
    println!("trace from {} to {mount}, at most {max_hops} hops", node.id());
    let names = rows.iter().map(|r| r.name.as_deref().map_or(1, |n| printable(n).chars().count()));
    let name_width = names.max().unwrap_or(0).max(4);
    let node_width = rows.iter().map(|r| r.node.len()).max().unwrap_or(4).max(4);
    println!("hop  {:<node_width$}  {:<name_width$}  round trips (ms)", "node", "name");
    for row in rows {
        let hop = row.hop.map_or("?".to_string(), |h| h.to_string());
        let name = printable(row.name.as_deref().unwrap_or("-"));
        let rtts: Vec<String> = row.rtts.iter().map(|t| t.map_or("*".to_string(), ms)).collect();
        println!(
            "{hop:>3}  {:<node_width$}  {:<name_width$}  {}  {}",
            row.node,
            name,
            rtts.join("  "),
            row.status
        );
    }
}

/// A node id as `ringspan show` and `ringspan pubkey --id` print it: 32 hexadecimal digits
/// (fewer, or with `0x`, are read as hexadecimal too).
pub fn parse_node_id(text: &str) -> Result<NodeId, String> {
    let digits = text.strip_prefix("0x").unwrap_or(text);
    if digits.is_empty() || digits.len() > 32 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "node {text:?}: a node id is 32 hexadecimal digits, as `ringspan show` and \
             `ringspan pubkey --id` print it"
        ));
    }
    // Only hexadecimal digits, at most 32 of them: it fits.
    u128::from_str_radix(digits, 16).map(NodeId).map_err(|e| format!("node {text:?}: {e}"))
}

/// How many of the mounts it knows `ping --node` traces at most to find the node on a path.
const PATHS_TRIED_MAX: usize = 16;

/// `ringspan ping --node`: finds a path through `target` (a trace toward each known mount,
/// those attached to it first, then those routed through it first, ending at `target`), then
/// times traces that end there, one at a time.
pub fn ping_node(node: &Handle, target: NodeId, args: &PingArgs) -> Result<(), String> {
    if target == node.id() {
        return Err(format!("{target} is this node (the one --config starts)"));
    }
    let wait = Duration::from_secs(args.wait);
    let (mount, hop) = find_path(node, target, wait)?;
    let label = format!("{target}");
    let mut times = Vec::new();
    for seq in 1..=args.count {
        if seq > 1 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        let probe = match probe(node, mount, Some(target), TRACE_HOPS_MAX as u8, wait) {
            Ok(probe) => probe,
            Err(why) => {
                println!("{label}: seq={seq} not sent: {why}");
                continue;
            }
        };
        let reached = probe.heard.last().filter(|_| probe.reached(TraceStatus::Target));
        match reached.map(|h| (&h.report, h.rtt)) {
            Some((Ok(r), rtt)) if r.node == target => {
                let at = format!("hop={} via 0x{:x}:0x{:x}", r.hop, mount.cluster.0, mount.mount.0);
                println!("{label}: seq={seq} {at} time={:.1} µs", rtt.as_secs_f64() * 1e6);
                times.push(rtt);
            }
            _ => {
                let why = match probe.reached(TraceStatus::Holder) {
                    true => format!("the path no longer goes through it (was hop {hop})"),
                    false => probe.failure(wait).unwrap_or_default(),
                };
                println!("{label}: seq={seq} {why}");
            }
        }
    }
    summarize(args.count, times)
}

/// A mount whose path goes through `target`, and `target`'s hop on it.
fn find_path(node: &Handle, target: NodeId, wait: Duration) -> Result<(MountKey, u8), String> {
    #[allow(clippy::disallowed_methods)] // the binary owns the clock
    let deadline = std::time::Instant::now() + wait;
    let id = target.to_string();
    let mut routes = node.routes();
    #[allow(clippy::disallowed_methods)]
    while routes.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        routes = node.routes();
    }
    // Mounts attached to it first, then those whose path goes to it first, then the rest.
    routes.sort_by_key(|r| (r.origin != id, r.via_node.as_deref() != Some(&id), r.metric));
    let total = routes.len();
    let mounts = routes.iter().filter_map(|r| {
        let part = |hex: &str| u128::from_str_radix(hex, 16).ok();
        Some(MountKey { cluster: ClusterId(part(&r.cluster)?), mount: MountId(part(&r.mount)?) })
    });
    let mut tried = 0;
    for mount in mounts.take(PATHS_TRIED_MAX) {
        tried += 1;
        let Ok(probe) = probe(node, mount, Some(target), TRACE_HOPS_MAX as u8, wait) else {
            continue;
        };
        if probe.reached(TraceStatus::Target)
            && let Some(r) = probe.last().filter(|r| r.node == target)
        {
            return Ok((mount, r.hop));
        }
    }
    Err(format!(
        "node {target} is on none of the paths this node routes (traced {tried} of its {total} \
         mounts' paths): it cannot be pinged from here"
    ))
}
