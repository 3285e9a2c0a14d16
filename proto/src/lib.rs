//! ringspan-proto: ringspan's protocol layers, sans-IO.
//!
//! This crate never touches a socket or reads the clock: its layers are fed input with
//! `handle_*` methods and drained with `poll_*` methods, and the caller owns buffers and time
//! (`now` is a parameter). The io_uring engine that drives them over TCP, and the node built on
//! it, are the `ringspan` crate, which re-exports every module here under its own name. Cargo
//! keeps the split honest: this crate's manifest has no I/O dependency, and it forbids `unsafe`.
//!
//! - [`wire`]: bytes to typed views of records and messages, and back. No state, no allocation.
//! - [`cipher`]: node identities, the Noise handshake and in-place record encryption.
//! - [`txn`]: the per-link transaction state machine.
//! - [`span`]: one node's routing table of mounts (Babel-style feasibility, best two routes
//!   per mount, per-neighbour filters) and the span protocol on one link.
//! - [`link`]: what belongs to one link whatever carries its bytes: its deadlines (keepalive,
//!   idle, send stall, key shedding, reassembly), its byte streams (records cut from received
//!   bytes, records built and sealed) and their buffers.
//! - [`relay`]: a node: its span table, links and circuits relayed hop by hop; redial backoff.
//! - [`ids`], [`limits`], [`error`]: id newtypes, every bound with its reason, the errors.
//! - `sim` (feature `sim`): deterministic harnesses that drive the layers on virtual time, whose
//!   origin is the one clock reading: `sim::pair::Pair` joins two production links,
//!   `sim::cluster::Cluster` runs many span tables with link and node faults, and `sim::net`
//!   full relay nodes.
//!
//! See `docs/PROTOCOL.md` for the bytes and `docs/DESIGN.md` for the reasons.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cipher;
pub mod error;
pub mod ids;
pub mod limits;
pub mod link;
pub mod relay;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod span;
pub mod txn;
pub mod wire;

pub use error::Error;
