//! cargo-fuzz target: the driver in `tests/sim/boundaries/message.rs`, which says what it
//! checks. The same driver runs as a property test in `tests/sim/boundaries.rs`.

#![no_main]

#[path = "../../tests/sim/boundaries/input.rs"]
mod input;
#[path = "../../tests/sim/boundaries/message.rs"]
mod message;

libfuzzer_sys::fuzz_target!(|data: &[u8]| message::run(data));
