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
