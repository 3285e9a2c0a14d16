//! `ringspan drain`: a running node withdraws its spans, carries its calls to their end, and
//! stops (as on SIGTERM with `drain_grace_ms`); and `ringspan reload`: it re-reads its
//! configuration file (as on SIGHUP) and says what changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use ringspan::daemon::config::NodeConfig;
use ringspan::daemon::control;

use super::run::now;

#[derive(Args)]
pub struct DrainArgs {
    /// The node's configuration file (its control socket is found from it).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The node's control socket, instead of --config.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// How long to wait for the node to stop, in seconds.
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
}

/// `ringspan reload`.
#[derive(Args)]
pub struct ReloadArgs {
    /// The node's configuration file (its control socket is found from it; the node re-reads
    /// the file it was started with).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The node's control socket, instead of --config.
    #[arg(long)]
    pub socket: Option<PathBuf>,
}

/// The control socket of the node a command names: `socket`, or the one `config` gives.
pub fn socket_of(
    socket: Option<&Path>,
    config: Option<&Path>,
    command: &str,
) -> Result<PathBuf, String> {
    match (socket, config) {
        (Some(socket), _) => Ok(socket.to_path_buf()),
        (None, Some(config)) => {
            Ok(NodeConfig::load(config).map_err(|e| e.to_string())?.control_socket())
        }
        (None, None) => Err(format!("{command} needs --config FILE or --socket PATH")),
    }
}

/// Asks the node to re-read its configuration file and take it; prints what changed, or the
/// node's reason for keeping the configuration it runs (an error).
pub fn reload(args: &ReloadArgs) -> Result<(), String> {
    let socket = socket_of(args.socket.as_deref(), args.config.as_deref(), "reload")?;
    let answer = control::ask(&socket, "reload")?;
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| format!("the node answered something else: {e}"))?;
    if let Some(error) = answer.get("error").and_then(|e| e.as_str()) {
        return Err(format!("not reloaded: {error}"));
    }
    let changes = answer["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("reloaded: nothing changed");
    }
    for change in changes {
        println!("{}", change.as_str().unwrap_or_default());
    }
    Ok(())
}

/// Asks the node to drain and stop, and waits until it has (its control socket gone).
pub fn drain(args: &DrainArgs) -> Result<(), String> {
    let socket = socket_of(args.socket.as_deref(), args.config.as_deref(), "drain")?;
    let answer = control::ask(&socket, "drain")?;
    let answer: serde_json::Value = serde_json::from_str(&answer)
        .map_err(|e| format!("the node answered something else: {e}"))?;
    if let Some(error) = answer.get("error") {
        return Err(format!("the node refused: {error}"));
    }
    if answer["stopping"] != true {
        println!(
            "draining; the node runs on (it is not a `ringspan run` process): stop it once `ringspan show --json` says \"drained\""
        );
        return Ok(());
    }
    println!("draining: its neighbours route around it, its calls run to their end");
    let deadline = now() + Duration::from_secs(args.wait);
    while std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        if now() >= deadline {
            return Err(format!("the node still runs after {} s", args.wait));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("stopped");
    Ok(())
}
