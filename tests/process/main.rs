//! Tests that run the real binaries as processes: `ringspan run` nodes (clusters, satellites,
//! relays killed and restarted), `ringspan-bench serve`, `hops` and `call` loads, the rogue peer
//! kit against live nodes (`hostile_*`), the operator's surfaces of a running node, the key
//! commands, and `--version`, `check` and the log formats.
//!
//! One test binary; each file is a module of it: `cargo test --test process hostile_links::`.
//! The two tests at ten thousand clients are in `tests/scale/`.

#[path = "../support/mod.rs"]
mod support;

mod attach_kill_process;
mod attach_mounts_process;
mod attach_process;
mod attach_python_process;
mod attach_reload_process;
mod cli_call;
mod cli_keys;
mod cli_ops;
mod cluster_process;
mod control_process;
mod diagnose_process;
mod drain_process;
mod engine_process;
mod hops_process;
mod hostile_buffers;
mod hostile_links;
mod hostile_links_flood;
mod hostile_rights;
mod hostile_shares;
mod hostile_shares_spans;
mod listen_process;
mod planes_process;
mod reload_process;
mod rogue_smoke;
mod satellite_planes_process;
mod satellite_process;
mod service_process;
mod trace_process;
