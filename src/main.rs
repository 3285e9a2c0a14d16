//! The `ringspan` binary. The benchmark tools are a binary of their own, `ringspan-bench`
//! (tools/bench).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValuesParser, TypedValueParser as _};
use clap::{Parser, Subcommand};

mod cli;
use cli::log;
use ringspan::cipher::PrivateKey;
use ringspan::cipher::identity::{read_key_file, write_new_key_file};
use ringspan::daemon::config::LogFormat;

/// The version `--version` prints: the package's, and the commit it was built from (build.rs).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("RINGSPAN_COMMIT"), ")");

/// A relay engine for cluster messaging on Linux io_uring.
#[derive(Parser)]
#[command(version = VERSION, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines as "text" (coloured only on a terminal) or "json" (one object per line).
    ///
    /// Default: the configuration's `log_format`, else text. Which lines are written:
    /// RUST_LOG (default: warnings and errors).
    #[arg(
        long,
        global = true,
        value_name = "FORMAT",
        value_parser = PossibleValuesParser::new(LogFormat::NAMES)
            .try_map(|name| name.parse::<LogFormat>())
    )]
    log_format: Option<LogFormat>,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a local cluster that shows relaying, rerouting and figures.
    Demo(cli::demo::DemoArgs),
    /// Runs a node from its configuration file until SIGINT or SIGTERM (then drains it for up
    /// to `drain_grace_ms` and stops); SIGHUP reloads the file.
    Run {
        /// The node's TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Checks a node's configuration and key file as `run` would, without starting the node.
    ///
    /// Prints what the node would run as and exits 0, or prints the error `run` would give and
    /// exits non-zero.
    Check {
        /// The node's TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Shows a running node's links, routes, circuits or mounts (over its control socket).
    Show(cli::run::ShowArgs),
    /// Drains a running node and waits until it stops: its neighbours route around it, its
    /// calls run to their end (over its control socket; as SIGTERM does).
    Drain(cli::drain::DrainArgs),
    /// Has a running node re-read its configuration file and take it without a restart (as
    /// SIGHUP does), and prints what changed; a file it refuses changes nothing.
    Reload(cli::drain::ReloadArgs),
    /// Sends calls to a mount through the cluster from a client node, and reports how they ended
    /// (exit status 1, and why, if any failed).
    Call(cli::run::CallArgs),
    /// Sends one request to a mount from a client node, and writes the reply to standard output.
    Req(cli::req::ReqArgs),
    /// Times requests to a mount, or to a node on the path to one, from a client node, one at
    /// a time.
    Ping(cli::req::PingArgs),
    /// Shows the path a call to a mount takes from a client node: each node on it, with its
    /// round trips (every node answers for itself).
    Trace(cli::trace::TraceArgs),
    /// Generates a node's private key (base64 and a newline, like `wg genkey`).
    Keygen {
        /// Writes the key to this new file, mode 0600, instead of standard output. Refuses to
        /// overwrite an existing file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Prints a shell's completions for ringspan (e.g. `ringspan completions bash >
    /// /etc/bash_completion.d/ringspan`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Prints ringspan's man page (roff: `ringspan man > ringspan.1; man ./ringspan.1`).
    Man,
    /// Prints the public key (base64) of a private key read from standard input or a file.
    Pubkey {
        /// Reads the private key from this file, which must not be accessible by group or
        /// others, instead of standard input.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Prints the node id instead (32 hex digits, as `show`, the logs and the metrics name
        /// the node).
        #[arg(long)]
        id: bool,
    },
}

fn main() -> ExitCode {
    ringspan::ring::sys::fix_mmap_threshold();
    let Cli { command, log_format } = Cli::parse();
    // The commands that read a node's configuration install the log subscriber once they have
    // read it, in the format it names unless the command line names one; the others at once.
    let init = || log::init(log_format.unwrap_or_default());
    let result = match command {
        Command::Run { config } => cli::run::run(&config, log_format),
        Command::Check { config } => cli::check::check(&config, log_format),
        Command::Call(args) => cli::run::call(&args, log_format),
        Command::Req(args) => cli::req::req(&args, log_format),
        Command::Ping(args) => cli::req::ping(&args, log_format),
        Command::Trace(args) => cli::trace::trace(&args, log_format),
        Command::Demo(args) => {
            init();
            cli::demo::run(&args)
        }
        Command::Completions { shell } => {
            init();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "ringspan", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            init();
            let command = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(command)
                .render(&mut std::io::stdout())
                .map_err(|e| format!("writing the man page: {e}"))
        }
        Command::Drain(args) => {
            init();
            cli::drain::drain(&args)
        }
        Command::Reload(args) => {
            init();
            cli::drain::reload(&args)
        }
        Command::Show(args) => {
            init();
            cli::run::show(&args)
        }
        Command::Keygen { out } => {
            init();
            keygen(out)
        }
        Command::Pubkey { key, id } => {
            init();
            pubkey(key, id)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            log::fatal(&message, log_format.unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

fn keygen(out: Option<PathBuf>) -> Result<(), String> {
    let key = PrivateKey::generate().map_err(|e| e.to_string())?;
    match out {
        Some(path) => {
            write_new_key_file(&path, &key).map_err(|e| format!("{}: {e}", path.display()))
        }
        None => std::io::stdout()
            .write_all(key.to_key_text().as_bytes())
            .map_err(|e| format!("writing the key: {e}")),
    }
}

fn pubkey(path: Option<PathBuf>, id: bool) -> Result<(), String> {
    let private = match path {
        Some(path) => read_key_file(&path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => {
            let mut text = Vec::new();
            // A key is 45 bytes; a bounded read refuses anything much larger as malformed.
            std::io::stdin()
                .take(4096)
                .read_to_end(&mut text)
                .map_err(|e| format!("reading standard input: {e}"))?;
            PrivateKey::from_key_text(&text).map_err(|e| format!("standard input: {e}"))?
        }
    };
    let public = private.public_key().map_err(|e| e.to_string())?;
    match id {
        true => println!("{}", public.node_id()),
        false => println!("{public}"),
    }
    Ok(())
}
