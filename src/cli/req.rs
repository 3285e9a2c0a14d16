//! `ringspan req`: one request to a mount, its reply on standard output.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use ringspan::daemon::config::{NodeConfig, parse_mount};
use ringspan::daemon::{CALL, CallEvent};
use ringspan::limits::MESSAGE_PAYLOAD_MAX;
use ringspan::wire::{Command, ErrorCode};

use super::run::start;

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
pub fn req(args: &ReqArgs) -> Result<(), String> {
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
    let config = NodeConfig::load(&args.config).map_err(|e| e.to_string())?;
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

/// `PROTO:CODE`, each decimal or 0x-hex.
fn parse_command(text: &str) -> Result<Command, String> {
    let number = |s: &str| match s.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    };
    let (proto, code) = text.split_once(':').ok_or("--command: PROTO:CODE")?;
    match (number(proto).map(u8::try_from), number(code).map(u16::try_from)) {
        (Some(Ok(proto)), Some(Ok(code))) => Ok(Command::new(proto, code)),
        _ => Err(format!("--command {text}: PROTO (0–255) and CODE (0–65535)")),
    }
}
