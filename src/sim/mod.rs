//! Deterministic harnesses: the protocol layers driven without sockets, on virtual time.
//!
//! Shared by unit tests, integration tests and benches (through the `sim` feature).

#![forbid(unsafe_code)]

pub mod pair;
