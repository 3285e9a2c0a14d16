//! The `ringspan` binary's subcommands beyond key handling.

pub mod config;
pub mod demo;
pub mod demo_satellites;
pub mod ids;
pub mod run;
