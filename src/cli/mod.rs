//! The `ringspan` binary's subcommands beyond key handling.

pub mod bench;
pub mod config;
pub mod run;
