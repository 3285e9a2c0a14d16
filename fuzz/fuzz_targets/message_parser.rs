//! cargo-fuzz target: the driver in `tests/boundaries/message.rs`, which says what it checks. The
//! same driver runs as a property test in `tests/boundaries.rs`.

#![no_main]

#[path = "../../tests/boundaries/input.rs"]
mod input;
#[path = "../../tests/boundaries/message.rs"]
mod message;

libfuzzer_sys::fuzz_target!(|data: &[u8]| message::run(data));
