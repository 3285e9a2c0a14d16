//! The deterministic tests, all in memory: the simulators (relays, satellites, span routing),
//! the transaction model, the trust boundaries' property tests (their drivers are also the
//! cargo-fuzz targets), cipher sessions over an in-memory pipe, and `docs/PROTOCOL.md`'s byte
//! examples. No socket, no process.
//!
//! One test binary; each file is a module of it: `cargo test --test sim relay_sim::`.

#[path = "../support/mod.rs"]
mod support;

mod boundaries;
mod cipher;
mod planes_sim;
mod protocol_doc;
mod relay_sim;
mod satellite_planes_sim;
mod satellite_sim;
mod span_sim;
mod trace_sim;
mod txn_model;

// The boundary drivers name their helpers `crate::input` and `crate::say`, as the fuzz targets
// include them at their crate root (`fuzz/fuzz_targets/`).
use boundaries::{input, say};
