//! cargo-fuzz target: the driver in `tests/sim/boundaries/relay_node.rs`, which says what it
//! checks. The same driver runs as a property test in `tests/sim/boundaries.rs`.

#![no_main]

#[path = "../../tests/sim/boundaries/input.rs"]
mod input;
#[path = "../../tests/sim/boundaries/relay_node.rs"]
mod relay_node;
#[path = "../../tests/sim/boundaries/say.rs"]
mod say;

libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_node::run(data));
