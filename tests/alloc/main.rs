//! What the allocator sees, counted only on the threads each test names, so that the tests
//! beside it do not disturb it (`support::counting`): zero allocations in steady state on the
//! test's own thread, for a warm `Pair` link (`alloc`) and a chain of relay nodes
//! (`relay_alloc`); and the heap bytes held per idle link by a listening engine's worker thread
//! (`link_memory`) and by a satellite's protocol state, built on the test's thread
//! (`client_memory`). `engine_alloc`, which counts every thread, has a binary of its own.
//!
//! One test binary; each file is a module of it: `cargo test --test alloc link_memory`.

#[path = "../support/mod.rs"]
mod support;

mod alloc;
mod client_memory;
mod link_memory;
mod relay_alloc;

#[global_allocator]
static GLOBAL: support::counting::Counting = support::counting::Counting;
