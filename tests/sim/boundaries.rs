//! Property tests of every trust boundary, driven by operation sequences read from random bytes.
//!
//! Each boundary has one driver in `tests/sim/boundaries/`, shared with its cargo-fuzz target in
//! `fuzz/fuzz_targets/` (both include it with `#[path]`): the fuzzer explores the same
//! operations with coverage guidance (`cargo +nightly fuzz run <target>`), these tests run a
//! fixed number of random cases on every `cargo test`. A driver panics when an invariant
//! breaks; proptest then shrinks the input and saves it in
//! `tests/sim/boundaries.proptest-regressions`, beside this file.

// The drivers' helpers, named at the crate root by the drivers (see `main.rs`).
pub(crate) mod input;
pub(crate) mod say;

mod deframer;
mod message;
mod relay_node;
mod span_link;
mod txn_link;

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Cases per test: 256, or `RINGSPAN_BOUNDARY_CASES` for a longer run by hand.
fn cases() -> u32 {
    std::env::var("RINGSPAN_BOUNDARY_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        // Beside this file (the default looks for the crate's `main.rs` and uses a folder
        // beside its directory).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn record_deframer(data in vec(any::<u8>(), 0..512)) {
        deframer::run(&data);
    }

    #[test]
    fn message_parser(data in vec(any::<u8>(), 0..1024)) {
        message::run(&data);
    }

    #[test]
    fn txn_link(data in vec(any::<u8>(), 0..4096)) {
        txn_link::run(&data);
    }

    #[test]
    fn span_link(data in vec(any::<u8>(), 0..4096)) {
        span_link::run(&data);
    }

    #[test]
    fn relay_node(data in vec(any::<u8>(), 0..4096)) {
        relay_node::run(&data);
    }
}

/// Replays inputs through a driver, to read what a failing one does:
/// `RINGSPAN_FUZZ_REPLAY=<driver>:<file or folder> RINGSPAN_FUZZ_TRACE=1 cargo test --test
/// sim boundaries::replay -- --nocapture`, with `<driver>` one of `record_deframer`,
/// `message_parser`, `txn_link`, `span_link`, `relay_node` (a fuzzer's crash file, or a corpus
/// folder). Does nothing without the variable.
#[test]
fn replay() {
    let Ok(spec) = std::env::var("RINGSPAN_FUZZ_REPLAY") else { return };
    let (driver, path) = spec.split_once(':').expect("<driver>:<path>");
    let run: fn(&[u8]) = match driver {
        "record_deframer" => deframer::run,
        "message_parser" => message::run,
        "txn_link" => txn_link::run,
        "span_link" => span_link::run,
        "relay_node" => relay_node::run,
        other => panic!("no driver {other}"),
    };
    let path = Path::new(path);
    let files: Vec<_> = if path.is_dir() {
        let mut files: Vec<_> =
            std::fs::read_dir(path).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        eprintln!("replaying {}", file.display());
        run(&std::fs::read(&file).unwrap());
    }
}
