//! ringspan: a relay engine for cluster messaging on Linux io_uring.
//!
//! Nodes hold encrypted links; a transactional message protocol runs over them; a spanning-tree
//! protocol says which mounts are reachable where; transactions are relayed hop by hop along
//! those routes. The protocol layers are a crate of their own, `ringspan-proto` (`proto/`),
//! re-exported here under the same names, so `ringspan::wire` is `ringspan_proto::wire`:
//!
//! - [`wire`]: bytes to typed views of records and messages, and back. No state, no allocation.
//! - [`cipher`]: node identities, the Noise handshake and in-place record encryption. No I/O,
//!   no clock.
//! - [`txn`]: the per-link transaction state machine. No I/O, no clock.
//! - [`span`]: one node's routing table of mounts (Babel-style feasibility, best two routes
//!   per mount, per-neighbour filters). No I/O, no clock.
//! - [`link`]: what belongs to one link whatever carries its bytes: its deadlines (keepalive,
//!   idle, send stall, key shedding, reassembly), its byte streams (records cut from received
//!   bytes, records built and sealed) and their buffers. No I/O, no clock.
//! - [`relay`]: a node: its span table, links and circuits relayed hop by hop. No I/O, no clock.
//! - [`ids`], [`limits`], [`error`]: id newtypes, every bound with its reason, the errors.
//! - `sim` (feature `sim`): deterministic harnesses that drive the layers without sockets, on
//!   virtual time: `sim::pair::Pair` joins two production links, and
//!   `sim::cluster::Cluster` runs many span tables with link and node faults.
//!
//! This crate adds what does I/O:
//!
//! - [`ring`]: the io_uring engine that owns sockets, buffers and time and drives the layers
//!   above: a pinned worker per core.
//! - [`daemon`]: a relay node on the engine: [`daemon::Host`], the one engine service hosting
//!   a relay node and an application (the daemon's own, or a benchmark's), built from
//!   [`daemon::Settings`], which the configuration file ([`daemon::config`]) parses into;
//!   snapshots, the control socket, metrics, and the mount API for applications.
//! - [`link_load`]: services that load engine links and count what arrives, for the engine's
//!   tests and `ringspan-bench link`. The benchmark tools themselves are the `ringspan-bench`
//!   binary (tools/bench), not part of the library.
//!
//! The protocol layers are *sans-IO*: they never touch a socket or read the clock. They are fed
//! input with `handle_*` methods and drained with `poll_*` methods; the caller owns buffers and
//! time. `ringspan-proto`'s manifest has no I/O dependency and its root forbids `unsafe`, so
//! Cargo keeps it that way. See `docs/PROTOCOL.md` for the bytes and `docs/DESIGN.md` for the
//! reasons.

// Only the io_uring engine (src/ring) shares memory with the kernel; everything else is safe
// Rust, and the protocol layers (ringspan-proto) forbid unsafe outright.
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "sim")]
pub use ringspan_proto::sim;
pub use ringspan_proto::{cipher, error, ids, limits, link, relay, span, txn, wire};

pub mod daemon;
pub mod link_load;
#[allow(unsafe_code)]
pub mod ring;

pub use error::Error;
