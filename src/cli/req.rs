//! `ringspan req`: one request to a mount, its reply on standard output; `ringspan ping`:
//! requests one at a time, each timed (to a node: traces, `trace.rs`).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ringspan::daemon::config::{LogFormat, parse_id, parse_mount};
use ringspan::daemon::{CALL, CallEvent};
use ringspan::limits::MESSAGE_PAYLOAD_MAX;
use ringspan::wire::{Command, ErrorCode};

use super::run::{load, now, start};

#[derive(Args)]
pub struct ReqArgs {
    /// The client node's configuration file (as for `ringspan call`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The mount to call: `CLUSTER:MOUNT`, each hex (0x…) or decimal.
    #[arg(long)]
    pub mount: String,
    /// The request's payload, as text.
    #[arg(long, default_value = "", conflicts_with = "payload_file")]
    pub payload: String,
    /// The request's payload, read from this file (`-`: standard input).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// The call's command, `PROTO:CODE` (default: ringspan's own, 1:1).
    #[arg(long)]
    pub command: Option<String>,
    /// How long to wait for a route, and then for the reply, in seconds.
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
}

/// Sends one request (the whole payload in the call's one message) and writes each message of
/// the reply's payload to standard output as it comes. `Ok` when the call ended without an
/// error; otherwise the error code, and whether any reply came first.
pub fn req(args: &ReqArgs, log_format: Option<LogFormat>) -> Result<(), String> {
    let mount = parse_mount(&args.mount)?;
    let payload = match &args.payload_file {
        Some(path) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| format!("reading standard input: {e}"))?;
            bytes
        }
        Some(path) => std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => args.payload.as_bytes().to_vec(),
    };
    if payload.len() > MESSAGE_PAYLOAD_MAX {
        return Err(format!(
            "the payload is {} bytes: a request carries at most {MESSAGE_PAYLOAD_MAX}",
            payload.len()
        ));
    }
    let command = match &args.command {
        Some(text) => parse_command(text)?,
        None => CALL,
    };
    let config = load(&args.config, log_format)?;
    let node = start(&config)?;
    let wait = Duration::from_secs(args.wait);
    let result = ask(&node, mount, command, &payload, wait, &args.mount);
    node.shutdown();
    result
}

fn ask(
    node: &ringspan::daemon::Handle,
    mount: ringspan::span::MountKey,
    command: Command,
    payload: &[u8],
    wait: Duration,
    name: &str,
) -> Result<(), String> {
    if !node.wait_for_route(mount, wait) {
        return Err(format!("no route to {name} after {} s", wait.as_secs()));
    }
    let call = node.open(mount, command, payload, true).map_err(|e| format!("{name}: {e}"))?;
    let mut out = std::io::stdout().lock();
    let mut replies = 0u64;
    loop {
        match call.recv(wait) {
            Some(CallEvent::Message { payload, abort: false, .. }) => {
                replies += 1;
                out.write_all(&payload).map_err(|e| format!("writing the reply: {e}"))?;
            }
            Some(CallEvent::Message { .. }) => {}
            Some(CallEvent::Ended(ErrorCode::NONE)) => {
                return out.flush().map_err(|e| format!("writing the reply: {e}"));
            }
            Some(CallEvent::Ended(error)) => {
                let _ = out.flush();
                return Err(format!(
                    "{name}: the call ended with {error} (code {}) after {replies} reply messages",
                    error.0
                ));
            }
            None => return Err(format!("{name}: no reply within {} s", wait.as_secs())),
        }
    }
}

/// `PROTO:CODE`, each written as an id is (decimal or 0x-hex, `parse_id`).
fn parse_command(text: &str) -> Result<Command, String> {
    let (proto, code) = text.split_once(':').ok_or("--command: PROTO:CODE")?;
    match (parse_id(proto).map(u8::try_from), parse_id(code).map(u16::try_from)) {
        (Ok(Ok(proto)), Ok(Ok(code))) => Ok(Command::new(proto, code)),
        _ => Err(format!("--command {text}: PROTO (0–255) and CODE (0–65535)")),
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["mount", "node"])))]
pub struct PingArgs {
    /// The client node's configuration file (as for `ringspan call`).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The mount to ping: `CLUSTER:MOUNT`, each hex (0x…) or decimal. Its server must answer
    /// each call (an echo mount does). Timed on this thread, from the call's open to its end.
    #[arg(long)]
    pub mount: Option<String>,
    /// The node to ping instead: its id, as `ringspan show` and `ringspan pubkey --id` print
    /// it. It must be on the path to some mount this node routes: each request is a trace
    /// (`ringspan trace`) that ends there, timed on this node's worker.
    #[arg(long)]
    pub node: Option<String>,
    /// Requests to send, one at a time.
    #[arg(long, default_value_t = 5)]
    pub count: u32,
    /// Milliseconds between one answer and the next request.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Payload bytes per request to a mount (a node's requests are traces, 24 bytes).
    #[arg(long, default_value_t = 16)]
    pub size: usize,
    /// How long to wait for a route, and for each answer, in seconds.
    #[arg(long, default_value_t = 5)]
    pub wait: u64,
}

/// Sends `count` requests one at a time, printing each one's round trip, then a summary. `Ok`
/// if every request was answered.
pub fn ping(args: &PingArgs, log_format: Option<LogFormat>) -> Result<(), String> {
    let target = match (&args.mount, &args.node) {
        (Some(mount), _) => Ok((mount.as_str(), parse_mount(mount)?)),
        (None, Some(node)) => Err(super::trace::parse_node_id(node)?),
        (None, None) => return Err("ping needs --mount or --node".into()),
    };
    if args.size > MESSAGE_PAYLOAD_MAX {
        return Err(format!("--size {}: at most {MESSAGE_PAYLOAD_MAX} bytes", args.size));
    }
    let config = load(&args.config, log_format)?;
    let node = start(&config)?;
    let result = match target {
        Ok((name, mount)) => ping_on(&node, name, mount, args),
        Err(id) => super::trace::ping_node(&node, id, args),
    };
    node.shutdown();
    result
}

fn ping_on(
    node: &ringspan::daemon::Handle,
    name: &str,
    mount: ringspan::span::MountKey,
    args: &PingArgs,
) -> Result<(), String> {
    let wait = Duration::from_secs(args.wait);
    if !node.wait_for_route(mount, wait) {
        return Err(format!("no route to {name} after {} s", args.wait));
    }
    let payload = vec![0x5a; args.size];
    let mut times = Vec::new();
    for seq in 1..=args.count {
        if seq > 1 {
            std::thread::sleep(Duration::from_millis(args.interval_ms));
        }
        let sent = now();
        let ended = match node.open(mount, CALL, &payload, true) {
            Ok(call) => loop {
                match call.recv(wait) {
                    Some(CallEvent::Ended(error)) => break Some(error),
                    Some(CallEvent::Message { .. }) => {}
                    None => break None,
                }
            },
            Err(e) => {
                println!("{name}: seq={seq} not sent: {e}");
                continue;
            }
        };
        let time = sent.elapsed();
        match ended {
            Some(ErrorCode::NONE) => {
                println!("{name}: seq={seq} time={:.1} µs", time.as_secs_f64() * 1e6);
                times.push(time);
            }
            Some(error) => println!("{name}: seq={seq} {error} (code {})", error.0),
            None => println!("{name}: seq={seq} no answer within {} s", args.wait),
        }
    }
    summarize(args.count, times)
}

/// Prints the summary line of `count` requests of which those timed in `times` were answered:
/// `Ok` if all were.
pub(super) fn summarize(count: u32, mut times: Vec<Duration>) -> Result<(), String> {
    times.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    print!("{count} requests, {} answered", times.len());
    if let (Some(min), Some(max)) = (times.first(), times.last()) {
        let mean = times.iter().sum::<Duration>() / times.len() as u32;
        let median = times[times.len() / 2];
        print!(
            "; round trip min/median/mean/max {:.1}/{:.1}/{:.1}/{:.1} µs",
            us(*min),
            us(median),
            us(mean),
            us(*max)
        );
    }
    println!();
    match times.len() as u32 == count {
        true => Ok(()),
        false => Err(format!("{} of {count} requests unanswered", count - times.len() as u32)),
    }
}
