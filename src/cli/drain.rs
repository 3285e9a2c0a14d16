//! `ringspan drain`: a running node withdraws its spans, carries its calls to their end, and
//! stops (as on SIGTERM with `drain_grace_ms`).

use std::path::PathBuf;
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

/// Asks the node to drain and stop, and waits until it has (its control socket gone).
pub fn drain(args: &DrainArgs) -> Result<(), String> {
    let socket = match (&args.socket, &args.config) {
        (Some(socket), _) => socket.clone(),
        (None, Some(config)) => {
            NodeConfig::load(config).map_err(|e| e.to_string())?.control_socket()
        }
        (None, None) => return Err("drain needs --config FILE or --socket PATH".into()),
    };
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
