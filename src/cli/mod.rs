//! The `ringspan` binary's subcommands beyond key handling.

pub mod bench;
pub mod config;
pub mod demo;
pub mod demo_satellites;
pub mod run;
