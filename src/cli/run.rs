//! `ringspan run`, `ringspan show` and `ringspan call`: a node from its configuration file, a
//! look into a running one, and a client that sends calls through the cluster.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ringspan::cipher::Identity;
use ringspan::cipher::identity::read_key_file;
use ringspan::daemon::config::{LogFormat, NodeConfig, parse_mount};
use ringspan::daemon::control::{self, View};
use ringspan::daemon::{Handle, LoadReport, Request, Settings};
use ringspan::limits::MESSAGE_PAYLOAD_MAX;
use ringspan::ring;

use super::log;

/// What `ringspan show` prints.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ShowWhat {
    /// Links, configured peers and workers.
    Links,
    /// Routes: each mount's best and standby first hop.
    Routes,
    /// Circuits and relay counters.
    Circuits,
    /// Mounts, grouped by the node they are attached to.
    Mounts,
    /// The cluster as the node knows it: its neighbours, the nodes mounts are attached to, and
    /// each mount's active and standby paths (with --dot: as a graph).
    Cluster,
    /// All of it.
    All,
}

/// `ringspan show`.
#[derive(Args, Debug)]
pub struct ShowArgs {
    /// What to show.
    #[arg(value_enum, default_value = "all")]
    pub what: ShowWhat,
    /// The node's configuration file (its control socket is found from it).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The node's control socket, instead of --config.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the raw snapshot as JSON.
    #[arg(long)]
    pub json: bool,
    /// Print the topology around the node as Graphviz (active and standby paths).
    #[arg(long)]
    pub dot: bool,
}

/// `ringspan call`.
#[derive(Args, Debug)]
pub struct CallArgs {
    /// The client node's configuration file (usually role = "client" with its local node as
    /// its one peer).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The mount to call: `CLUSTER:MOUNT`, each hex (0x…) or decimal.
    #[arg(long)]
    pub mount: String,
    /// Calls to make.
    #[arg(long, default_value_t = 1000)]
    pub calls: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
    /// Payload bytes per call.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// How long to wait for a route to the mount before giving up, in seconds.
    #[arg(long, default_value_t = 10)]
    pub wait: u64,
}

/// Reads and checks the configuration file at `path`, then installs the log subscriber in the
/// format `log_format` (the command line's) or else the file's names.
pub fn load(path: &Path, log_format: Option<LogFormat>) -> Result<NodeConfig, String> {
    let config = NodeConfig::load(path).map_err(|e| e.to_string())?;
    log::init_with(
        log_format.or(config.log_format).unwrap_or_default(),
        config.log_level.as_deref(),
    );
    Ok(config)
}

/// Everything `ringspan run` checks before it starts the engine, beyond the file itself: reads
/// the key file, builds the node's settings and its handshake configuration. Opens no socket
/// and resolves no name. `ringspan check` stops here.
pub fn settings(config: &NodeConfig) -> Result<Settings, String> {
    let key = read_key_file(&config.key).map_err(|e| format!("{}: {e}", config.key.display()))?;
    let identity = Identity::new(key).map_err(|e| e.to_string())?;
    let settings = config.settings(identity);
    // The node builds it again when it starts; here it is only checked.
    settings.cipher_config()?;
    if settings.planes() < settings.workers && config.workers.is_some() {
        tracing::warn!(
            "a client holds one link at a time and runs on one worker; `workers` above 1 is \
             ignored"
        );
    }
    Ok(settings)
}

/// Starts the node a configuration describes.
pub fn start(config: &NodeConfig) -> Result<Handle, String> {
    Handle::start(settings(config)?)
}

#[allow(clippy::disallowed_methods)] // the binary owns the clock
pub(super) fn now() -> Instant {
    Instant::now()
}

/// `ringspan run --config FILE`, logging in `log_format` (else as the file says).
pub fn run(path: &Path, log_format: Option<LogFormat>) -> Result<(), String> {
    let config = load(path, log_format)?;
    let node = start(&config)?;
    let listen = listening(node.local_addrs());
    let socket = config.control_socket();
    log::notice(&format!(
        "node {} up on {} worker(s), listening on {listen}, control socket {}",
        node.id(),
        node.workers(),
        socket.display()
    ));
    super::notify::when_ready(node.shared(), &config);
    node.shared().set_reload_source(reload_source(config));
    node.run_until_signal().map_err(|e| e.to_string())
}

/// How `ringspan run` reloads (SIGHUP, `ringspan reload`): re-reads the file it started from,
/// checks it and the key file whole as at start (a file refused changes nothing, and its error
/// names the file, line and column), has the node take the settings, then the log level.
fn reload_source(started: NodeConfig) -> ringspan::daemon::ReloadSource {
    let mut running = started;
    Box::new(move |shared| {
        let path = running.path.clone();
        let config = NodeConfig::load(&path).map_err(|e| e.to_string())?;
        if config.log_format != running.log_format {
            return Err(format!(
                "{}: log_format changes only when the node restarts; the node runs on as it was",
                path.display()
            ));
        }
        let new = settings(&config)?;
        let mut report = shared.reload(new).map_err(|e| format!("{}: {e}", path.display()))?;
        if config.log_level != running.log_level {
            log::set_level(config.log_level.as_deref())?;
            let level = config.log_level.as_deref().unwrap_or("as RUST_LOG says");
            report.changes.push(format!("log_level {level}"));
        }
        log::notice(&format!("reloaded {}: {} change(s)", path.display(), report.changes.len()));
        running = config;
        Ok(report)
    })
}

/// The addresses a node listens on, for people: `127.0.0.1:7401 and [::1]:7401`, or
/// `nothing`.
pub(super) fn listening(addrs: &[std::net::SocketAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    match addrs.as_slice() {
        [] => "nothing".to_owned(),
        [one] => one.clone(),
        [first @ .., last] => format!("{} and {last}", first.join(", ")),
    }
}

/// `ringspan show`.
pub fn show(args: &ShowArgs) -> Result<(), String> {
    let socket = super::drain::socket_of(args.socket.as_deref(), args.config.as_deref(), "show")?;
    let text = control::fetch(&socket)?;
    if args.json {
        println!("{text}");
        return Ok(());
    }
    let snapshot = serde_json::from_str::<serde_json::Value>(&text)
        .map_err(|e| format!("the node answered something else than a snapshot: {e}"))?;
    if let Some(error) = snapshot.get("error") {
        return Err(format!("the node refused: {error}"));
    }
    let snapshot: ringspan::daemon::Snapshot =
        serde_json::from_value(snapshot).map_err(|e| format!("unreadable snapshot: {e}"))?;
    if args.dot {
        match args.what {
            ShowWhat::Cluster => print!("{}", control::cluster_dot(&snapshot)),
            _ => print!("{}", control::dot(&snapshot)),
        }
        return Ok(());
    }
    let view = match args.what {
        ShowWhat::Links => View::Links,
        ShowWhat::Routes => View::Routes,
        ShowWhat::Circuits => View::Circuits,
        ShowWhat::Mounts => View::Mounts,
        ShowWhat::Cluster => View::Cluster,
        ShowWhat::All => View::All,
    };
    print!("{}", control::render(&snapshot, view));
    Ok(())
}

/// `ringspan call`: starts a node from the config, waits for a route to the mount, makes the
/// calls, prints the outcome as JSON (and p50/p99 round trips), and exits. Logs in
/// `log_format` (else as the file says).
pub fn call(args: &CallArgs, log_format: Option<LogFormat>) -> Result<(), String> {
    let mount = parse_mount(&args.mount)?;
    if args.size > MESSAGE_PAYLOAD_MAX {
        return Err(format!(
            "--size {}: a call's payload is at most {MESSAGE_PAYLOAD_MAX} bytes",
            args.size
        ));
    }
    let config = load(&args.config, log_format)?;
    let node = start(&config)?;
    if !node.wait_for_route(mount, Duration::from_secs(args.wait)) {
        node.shutdown();
        return Err(format!("no route to {} after {} s", args.mount, args.wait));
    }
    let (reply, report) = mpsc::channel::<LoadReport>();
    let request = Request::Load {
        mount,
        calls: args.calls,
        concurrency: args.concurrency,
        size: args.size,
        reply,
    };
    let t0 = now();
    let sent = node.remote().send(ring::Command::Service(Box::new(request)));
    let report = match sent {
        Ok(()) => report.recv().map_err(|_| "the node stopped before the calls ended".to_string()),
        Err(_) => Err("the node does not take requests".to_string()),
    };
    let elapsed = t0.elapsed();
    node.shutdown();
    let mut report = report?;
    report.rtt_us.sort_unstable();
    let pct = |p: f64| {
        let n = report.rtt_us.len();
        if n == 0 { 0 } else { report.rtt_us[((n as f64 * p) as usize).min(n - 1)] }
    };
    let json = serde_json::json!({
        "completed": report.completed,
        "lost_link": report.lost_link,
        "no_route": report.no_route,
        "other": report.other,
        "corrupted": report.corrupted,
        "not_sent": report.not_sent,
        "seconds": elapsed.as_secs_f64(),
        "calls_per_second": report.completed as f64 / elapsed.as_secs_f64().max(1e-9),
        "rtt_p50_us": pct(0.50),
        "rtt_p99_us": pct(0.99),
        "open_error": report.open_error,
    });
    println!("{json}");
    call_outcome(&report, args.calls)
}

/// `Ok` if every call of `calls` was answered; otherwise what went wrong, a line per error
/// class (the exit status says it, the JSON on standard output still has the counts).
fn call_outcome(report: &LoadReport, calls: u64) -> Result<(), String> {
    if report.completed == calls && report.corrupted == 0 {
        return Ok(());
    }
    let classes = [
        (report.no_route, "refused for lack of a route (NO_ROUTE)"),
        (report.lost_link, "ended by a lost link on the way (LOST_LINK)"),
        (report.other, "ended with another error"),
        (report.corrupted, "answered with a payload that differs from the request"),
        (report.not_sent, "not sent: the load stops at the first call it cannot open"),
    ];
    let mut lines: Vec<String> =
        classes.iter().filter(|(n, _)| *n > 0).map(|(n, what)| format!("  {n} {what}")).collect();
    if let Some(error) = &report.open_error {
        lines.push(format!("  the call it could not open: {error}"));
    }
    Err(format!("{} of {calls} calls answered\n{}", report.completed, lines.join("\n")))
}
