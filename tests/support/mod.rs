//! What the integration tests share: one module tree, compiled into every test binary
//! (`#[path = "../support/mod.rs"] mod support;` in each `tests/<binary>/main.rs`,
//! `#[path = "support/mod.rs"]` in a single-file `tests/<binary>.rs`).

// Each binary uses the part of it that it needs.
#![allow(dead_code)]

pub mod calls;
pub mod config;
pub mod counting;
pub mod engines;
pub mod host;
pub mod keys;
pub mod node;
pub mod plain;
pub mod process;
pub mod rogue;
pub mod seeds;
pub mod shares;
pub mod wait;
