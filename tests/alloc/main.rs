//! Zero allocations in steady state, counted by a global allocator on the test's own thread
//! (`support::counting::on_this_thread`), so that the tests beside it do not disturb it: a
//! warm `Pair` link (`alloc`), and a chain of relay nodes (`relay_alloc`).
//!
//! One test binary; each file is a module of it: `cargo test --test alloc relay_alloc::`.

#[path = "../support/mod.rs"]
mod support;

mod alloc;
mod relay_alloc;

#[global_allocator]
static GLOBAL: support::counting::Counting = support::counting::Counting;
