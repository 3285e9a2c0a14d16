//! cargo-fuzz target: the driver in `tests/sim/boundaries/span_link.rs`, which says what it
//! checks. The same driver runs as a property test in `tests/sim/boundaries.rs`.

#![no_main]

#[path = "../../tests/sim/boundaries/input.rs"]
mod input;
#[path = "../../tests/sim/boundaries/say.rs"]
mod say;
#[path = "../../tests/sim/boundaries/span_link.rs"]
mod span_link;

libfuzzer_sys::fuzz_target!(|data: &[u8]| span_link::run(data));
