//! cargo-fuzz target: the driver in `tests/sim/boundaries/deframer.rs`, which says what it
//! checks. The same driver runs as a property test in `tests/sim/boundaries.rs`.

#![no_main]

#[path = "../../tests/sim/boundaries/deframer.rs"]
mod deframer;
#[path = "../../tests/sim/boundaries/input.rs"]
mod input;

libfuzzer_sys::fuzz_target!(|data: &[u8]| deframer::run(data));
