//! ringspan: a relay engine for cluster messaging on Linux io_uring.
//!
//! Nodes hold encrypted links; a transactional message protocol runs over them; a spanning-tree
//! protocol says which mounts are reachable where; transactions are relayed hop by hop along
//! those routes. This crate is layered, one module per layer:
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
//! - [`ring`]: the io_uring engine that owns sockets, buffers and time and drives the layers
//!   above: a pinned worker per core.
//! - [`link_load`]: services that load engine links and count what arrives, for the engine's
//!   tests and `ringspan-bench link`. The benchmark tools themselves are the `ringspan-bench`
//!   binary (tools/bench), not part of the library.
//! - `sim` (feature `sim`): deterministic harnesses that drive the layers without sockets, on
//!   virtual time: `sim::pair::Pair` joins two transaction endpoints, and
//!   `sim::cluster::Cluster` runs many span tables with link and node faults.
//!
//! The protocol layers are *sans-IO*: they never touch a socket or read the clock. They are fed
//! input with `handle_*` methods and drained with `poll_*` methods; the caller owns buffers and
//! time. See `docs/PROTOCOL.md` for the bytes and `docs/DESIGN.md` for the reasons.

// Only the io_uring engine (src/ring) shares memory with the kernel; everything else is safe
// Rust, and the protocol layers forbid unsafe outright.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cipher;
pub mod daemon;
pub mod error;
pub mod ids;
pub mod limits;
pub mod link;
pub mod link_load;
pub mod relay;
#[allow(unsafe_code)]
pub mod ring;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod span;
pub mod txn;
pub mod wire;

pub use error::Error;
