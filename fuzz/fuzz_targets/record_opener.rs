//! The record opener on arbitrary input.
//!
//! Mode 0: the input is a stream of records from the wire; open them one after another until
//! the first failure. Must never panic.
//!
//! Mode 1: seal the input's plaintext with the matching sealer, XOR a mask taken from the input
//! over the sealed record, and open it: it must open (to the original plaintext) exactly when
//! the mask is all zeros.

#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ringspan::cipher::RekeyLimits;
use ringspan::cipher::record::dangerous_record_layer_from_secrets;
use ringspan::limits::{RECORD_HEADER_LEN, RECORD_TAG_LEN};
use ringspan::wire::record::peek_wire_len;

#[allow(clippy::disallowed_methods)] // The fuzzer needs one real instant.
fn start() -> Instant {
    Instant::now()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = RekeyLimits {
        records_per_key: 4,
        reject_after_records: 4,
        ..RekeyLimits::default()
    };
    let (mut sealer, mut opener) =
        dangerous_record_layer_from_secrets(&[3; 32], &[3; 32], limits, start()).unwrap();
    if mode % 2 == 0 {
        let mut stream = rest.to_vec();
        let mut at = 0;
        while let Ok(Some(len)) = peek_wire_len(&stream[at..]) {
            if stream.len() - at < len || opener.open(&mut stream[at..]).is_err() {
                break;
            }
            at += len;
        }
        return;
    }
    // Mode 1: [records before: u8][plaintext len / 8: u8][mask...]
    let [before, len8, mask @ ..] = rest else {
        return;
    };
    // Move both sides along (through key switches) before the record under test.
    let mut scratch = vec![0u8; RECORD_HEADER_LEN + 32 + RECORD_TAG_LEN];
    for _ in 0..*before % 16 {
        sealer.seal(&mut scratch, 32).unwrap();
        opener.open(&mut scratch).unwrap();
    }
    let len = 32 + 8 * usize::from(*len8);
    let mut record = vec![0u8; RECORD_HEADER_LEN + len + RECORD_TAG_LEN];
    for (i, byte) in record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len]
        .iter_mut()
        .enumerate()
    {
        *byte = i as u8;
    }
    let original = record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len].to_vec();
    sealer.seal(&mut record, len).unwrap();
    let mut changed = false;
    for (byte, m) in record.iter_mut().zip(mask) {
        *byte ^= m;
        changed |= *m != 0;
    }
    match opener.open(&mut record) {
        Ok(plain) => {
            assert!(!changed, "a modified record opened");
            assert_eq!(plain, &original[..]);
        }
        Err(_) => assert!(changed, "an intact record was refused"),
    }
});
