//! `ringspan-bench attach`: echo calls through a running node's attach socket, with the
//! `ringspan-attach` client as any application would use it (perf/attach.sh).
//!
//! - `serve`: attaches an echo mount and answers every call with its payload, until killed.
//!   It prints `attached` once the node took the mount. With `--hold`, a call whose payload is
//!   `hold` is left unanswered and `holding` printed (tests kill it then, mid-call). A call
//!   whose payload is [`STATS`] is answered with the server's own figures instead (JSON).
//! - `call`: calls a mount with `--concurrency` calls in flight and prints one JSON line: the
//!   calls answered, calls/s, round trips p50/p99, and per call its reads, writes and wake-ups
//!   (voluntary context switches), and with `--server-stats` the server's too.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use ringspan::daemon::config::parse_mount;
use ringspan_attach::{Client, Ended, Kind};

use crate::{clock, percentile};

/// Echo calls through a node's attach socket (perf/attach.sh).
#[derive(Args)]
pub struct AttachArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Attaches an echo mount and answers every call with its payload, until killed.
    Serve {
        /// The node's attach socket.
        #[arg(long)]
        socket: String,
        /// The mount, CLUSTER:ID (e.g. 0x1:0x20).
        #[arg(long)]
        mount: String,
        /// Leave calls whose payload is `hold` unanswered, printing `holding`.
        #[arg(long)]
        hold: bool,
    },
    /// Calls a mount and reports calls/s and round trips as one JSON line.
    Call {
        /// The node's attach socket.
        #[arg(long)]
        socket: String,
        /// The mount, CLUSTER:ID.
        #[arg(long)]
        mount: String,
        /// Calls to make (after the warm-up).
        #[arg(long, default_value_t = 20_000)]
        calls: u64,
        /// Calls in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: u64,
        /// Payload bytes per call.
        #[arg(long, default_value_t = 16)]
        size: usize,
        /// Calls made first and not counted.
        #[arg(long, default_value_t = 1_000)]
        warmup: u64,
        /// Ask the server (an `attach serve`) for its reads, writes and wake-ups too.
        #[arg(long)]
        server_stats: bool,
    },
}

const WAIT: Duration = Duration::from_secs(10);

/// The payload `serve` answers with its own figures: `{"calls":…,"reads":…,"writes":…,
/// "wakeups":…}`.
pub const STATS: &[u8] = b"ringspan-bench:stats";

/// What `call` does.
struct Plan {
    calls: u64,
    concurrency: u64,
    size: usize,
    warmup: u64,
    server_stats: bool,
}

pub fn run(args: AttachArgs) -> Result<(), String> {
    match args.mode {
        Mode::Serve { socket, mount, hold } => serve(&socket, &mount, hold),
        Mode::Call { socket, mount, calls, concurrency, size, warmup, server_stats } => {
            let plan = Plan { calls, concurrency: concurrency.max(1), size, warmup, server_stats };
            call(&socket, &mount, &plan)
        }
    }
}

fn serve(socket: &str, mount: &str, hold: bool) -> Result<(), String> {
    let mount = parse_mount(mount)?;
    let mut node = Client::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
    node.attach(mount, Kind::Master, "echo", WAIT).map_err(|e| format!("attach: {e}"))?;
    say("attached");
    let mut held = Vec::new();
    let mut calls = 0u64;
    loop {
        let Some(request) = node.accept(Duration::from_secs(3600)).map_err(|e| e.to_string())?
        else {
            continue;
        };
        if !request.first || request.forced {
            continue;
        }
        calls += 1;
        if request.payload == STATS {
            let (counters, wakeups) = (node.counters(), wakeups());
            let stats = serde_json::json!({
                "calls": calls,
                "reads": counters.reads,
                "writes": counters.writes,
                "wakeups": wakeups,
            });
            let _ = node.reply(&request, stats.to_string().as_bytes());
            continue;
        }
        if hold && request.payload == b"hold" {
            say("holding");
            held.push(request);
            continue;
        }
        // A call the caller ended meanwhile is refused an answer: nothing to do.
        let _ = node.reply(&request, &request.payload);
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn call(socket: &str, mount: &str, plan: &Plan) -> Result<(), String> {
    let key = parse_mount(mount)?;
    let mut node = Client::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
    node.wait_for_route(key, WAIT).map_err(|e| format!("no route to {mount}: {e}"))?;
    let payload: Vec<u8> = (0..plan.size).map(|i| i as u8).collect();
    let mut load = Load { node: &mut node, key, payload: &payload, started: Default::default() };
    load.run(plan.warmup, plan.concurrency)?;
    let server_before = plan.server_stats.then(|| load.server_stats()).transpose()?;
    let (counters, wakeups_before) = (load.node.counters(), wakeups());
    let t0 = clock();
    let rtt_us = load.run(plan.calls, plan.concurrency)?;
    let elapsed = t0.elapsed().as_secs_f64().max(1e-9);
    let after = load.node.counters();
    let wakeups = wakeups() - wakeups_before;
    let per_call = |n: u64| n as f64 / plan.calls.max(1) as f64;
    let mut sorted = rtt_us;
    sorted.sort_unstable();
    let mut json = serde_json::json!({
        "completed": sorted.len(),
        "seconds": elapsed,
        "calls_per_second": sorted.len() as f64 / elapsed,
        "rtt_p50_us": percentile(&sorted, 0.50),
        "rtt_p99_us": percentile(&sorted, 0.99),
        "reads_per_call": per_call(after.reads - counters.reads),
        "writes_per_call": per_call(after.writes - counters.writes),
        "wakeups_per_call": per_call(wakeups),
    });
    if let Some(before) = server_before {
        let after = load.server_stats()?;
        // The calls between the two asks: the measured ones and the first ask itself.
        let calls = after[0] - before[0];
        let per = |i: usize| (after[i] - before[i]) as f64 / calls.max(1) as f64;
        json["server_reads_per_call"] = per(1).into();
        json["server_writes_per_call"] = per(2).into();
        json["server_wakeups_per_call"] = per(3).into();
    }
    println!("{json}");
    Ok(())
}

/// This process's voluntary context switches so far (its threads': one here), from /proc.
fn wakeups() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"));
    line.and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// Calls kept in flight on one client.
struct Load<'a> {
    node: &'a mut Client,
    key: ringspan_attach::Mount,
    payload: &'a [u8],
    started: std::collections::HashMap<ringspan_attach::CallId, std::time::Instant>,
}

impl Load<'_> {
    /// The server's calls, reads, writes and wake-ups so far (a [`STATS`] call).
    fn server_stats(&mut self) -> Result<[u64; 4], String> {
        let answer = self.node.call(self.key, STATS, WAIT).map_err(|e| format!("stats: {e}"))?;
        let stats: serde_json::Value = serde_json::from_slice(&answer)
            .map_err(|_| "the mount is not an `attach serve`: no stats".to_string())?;
        let field = |name: &str| stats[name].as_u64().ok_or(format!("stats: no {name}"));
        Ok([field("calls")?, field("reads")?, field("writes")?, field("wakeups")?])
    }

    /// Makes `calls` calls, `concurrency` at a time; each one's round trip in µs.
    fn run(&mut self, calls: u64, concurrency: u64) -> Result<Vec<u64>, String> {
        let mut rtt_us = Vec::with_capacity(calls as usize);
        let mut opened = 0;
        while (rtt_us.len() as u64) < calls {
            while opened < calls && (self.started.len() as u64) < concurrency {
                let call = self.node.open(self.key, ringspan_attach::CALL, self.payload, true);
                self.started.insert(call.map_err(|e| format!("open: {e}"))?, clock());
                opened += 1;
            }
            let ended = self.node.next_ended(WAIT).map_err(|e| e.to_string())?;
            let Some(Ended { call, result }) = ended else {
                return Err(format!("no call ended in {WAIT:?}"));
            };
            let t0 = self.started.remove(&call).ok_or("a call ended twice")?;
            match result {
                Ok(parts) if parts.concat() == self.payload => {}
                Ok(_) => return Err("an echo differs from its call".into()),
                Err(code) => return Err(format!("a call ended with {code}")),
            }
            rtt_us.push(t0.elapsed().as_micros() as u64);
        }
        Ok(rtt_us)
    }
}
