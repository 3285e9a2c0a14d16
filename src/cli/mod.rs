//! The `ringspan` binary's subcommands beyond key handling.

pub mod check;
pub mod demo;
pub mod demo_satellites;
pub mod drain;
pub mod log;
pub mod notify;
pub mod req;
pub mod run;
pub mod trace;
