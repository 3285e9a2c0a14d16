//! Engines in this test's process, over real loopback sockets: two engines joined by an
//! encrypted link, what an engine tells its services about a link, one node per port, dials
//! from chosen sources and identities, admission control under connection storms, the mount
//! API through relays, peers given by host name, and the control socket and metrics endpoint.
//!
//! One test binary; each file is a module of it: `cargo test --test engine admission::`.

#[path = "../support/mod.rs"]
mod support;

mod admission;
mod attach;
mod control;
mod dial;
mod engine;
mod engine_links;
mod engine_listen;
mod lanes;
mod mount_api;
mod names;
