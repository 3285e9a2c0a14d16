//! The `ringspan` binary.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A relay engine for cluster messaging on Linux io_uring.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a local cluster that shows relaying, rerouting and figures.
    Demo,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo => {
            eprintln!(
                "ringspan demo: not yet. The demo lands with the relay daemon (issue 5/7); \
                 today ringspan has its wire format and transaction layer (run `cargo test`)."
            );
            ExitCode::from(2)
        }
    }
}
