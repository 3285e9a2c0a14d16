//! Deterministic harnesses: the protocol layers driven without sockets, on virtual time.
//!
//! Shared by unit tests, integration tests and benches (through the `sim` feature).

#![forbid(unsafe_code)]

pub mod chaos;
pub mod cluster;
pub mod lend;
pub mod net;
pub mod pair;
pub mod rng;
pub mod topology;

use crate::link::{Chunk, Lent};

/// The bytes of a chunk a simulated link sends: always its own, as the simulators hand their
/// links no receive buffer to lend (records are forwarded as copies here).
fn own_bytes(chunk: Chunk<'_>) -> &[u8] {
    chunk.bytes().expect("a simulated link lends no receive buffer")
}

/// What a simulated link does with a lent receive buffer handed back: there is none.
fn never_lent(at: Lent) {
    unreachable!("a simulated link lends no receive buffer, yet {at:?} came back")
}
