//! The record deframer (`link::stream::Rx::feed`, with a `link::pool::Pool`) on a byte stream
//! built from the input (valid records of any size, corrupted headers, raw bytes) and cut into
//! chunks the input chooses (empty, byte-sized, page-sized, record-sized, past 64 KiB).
//!
//! Checked against a reference deframer that walks the whole stream with `peek_wire_len`:
//! - the records handed out are exactly the reference's, in order, byte for byte, each as soon
//!   as its last byte has been fed, and none after the first bad header;
//! - a bad header is refused (with an error that closes the link) in the call that completes
//!   it, or at the latest in the next call when it completed exactly at the end of a chunk;
//! - an error from the record callback (a record that fails to open) stops the feed there;
//! - the callback may scribble over the record (it is opened in place) without touching the
//!   records after it;
//! - the deframer holds one pooled buffer exactly while a record is cut, never two (the pool
//!   never misses), and every buffer is back in the pool after an error and after `release`.

use std::cell::RefCell;
use std::ops::Range;

use ringspan::error::Error;
use ringspan::limits::{RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, SMALL_RECORD_BUF};
use ringspan::link::pool::Pool;
use ringspan::link::stream::Rx;
use ringspan::wire::record::{RecordHeader, peek_wire_len};

use crate::input::Input;

/// Bytes of stream at most: a few full-size records.
const STREAM_MAX: usize = 512 * 1024;

/// How the reference deframer finds the stream's end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ending {
    /// On a record boundary.
    Clean,
    /// Inside a record or its header.
    Partial,
    /// A header that does not parse starts here.
    Bad(usize),
}

/// The records of `stream`, and how it ends.
fn reference(stream: &[u8]) -> (Vec<Range<usize>>, Ending) {
    let mut records = Vec::new();
    let mut at = 0;
    loop {
        match peek_wire_len(&stream[at..]) {
            Ok(None) if at == stream.len() => return (records, Ending::Clean),
            Ok(Some(len)) if len <= stream.len() - at => {
                records.push(at..at + len);
                at += len;
            }
            Ok(_) => return (records, Ending::Partial),
            Err(_) => return (records, Ending::Bad(at)),
        }
    }
}

/// Appends a piece of stream chosen by the input.
fn piece(input: &mut Input<'_>, stream: &mut Vec<u8>, serial: u8) {
    let valid = |input: &mut Input<'_>, stream: &mut Vec<u8>| {
        let units = match input.below(4) {
            0 => 4 + input.below(4),
            1 => 4 + input.below(256),
            2 => 4 + input.below_wide(RECORD_PLAINTEXT_MAX / 8 - 3),
            _ => RECORD_PLAINTEXT_MAX / 8,
        };
        let header = RecordHeader { plaintext_len: units * 8, key_phase: input.bool() };
        let at = stream.len();
        stream.resize(at + header.wire_len(), 0);
        header.emit(&mut stream[at..]);
        // A body that differs from record to record, so a record handed out twice, or bytes of
        // one record inside another, show.
        for (i, byte) in stream[at + RECORD_HEADER_LEN..].iter_mut().enumerate() {
            *byte = serial.wrapping_mul(31).wrapping_add(i as u8);
        }
        at
    };
    match input.below(8) {
        0..=3 => {
            valid(input, stream);
        }
        4 => {
            // A valid record whose header then has one byte changed.
            let at = valid(input, stream);
            let offset = input.below(RECORD_HEADER_LEN);
            stream[at + offset] ^= input.u8() | 1;
        }
        5 => {
            // A header of arbitrary bytes and a little of what may follow.
            stream.extend_from_slice(input.bytes(RECORD_HEADER_LEN));
            let n = input.below(64);
            stream.extend(std::iter::repeat_n(serial, n));
        }
        6 => {
            // Only the start of a valid record.
            let at = valid(input, stream);
            let keep = input.below_wide(stream.len() - at);
            stream.truncate(at + keep);
        }
        _ => {
            let n = input.below(32);
            stream.extend_from_slice(input.bytes(n));
        }
    }
}

/// Runs the deframer on one input; panics on any broken rule.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut stream = Vec::new();
    let pieces = 1 + input.below(12);
    for serial in 0..pieces {
        if stream.len() >= STREAM_MAX {
            break;
        }
        piece(&mut input, &mut stream, serial as u8);
    }
    let (records, ending) = reference(&stream);
    // The record whose callback fails (a record that does not open), if any.
    let fail_at = input.one_in(4).then(|| input.below(records.len() + 1));
    // Where the first bad header becomes whole.
    let bad_complete = match ending {
        Ending::Bad(at) => Some(at + RECORD_HEADER_LEN),
        _ => None,
    };

    let pool = RefCell::new(Pool::new(1, 1));
    let mut rx = Rx::default();
    let mut fed = 0;
    let mut delivered = 0;
    let mut last_call = false;
    loop {
        let rest = stream.len() - fed;
        let len = match input.below(6) {
            _ if input.is_empty() => rest,
            0 => 0,
            1 => 1 + input.below(16),
            2 => 1 + input.below_wide(4096),
            3 => input.below_wide(70_000) + input.below(64),
            4 => {
                // Up to a record boundary, give or take a few bytes.
                let next = records.iter().map(|r| r.end).find(|&end| end > fed).unwrap_or(fed);
                (next - fed + input.below(9)).saturating_sub(4)
            }
            _ => rest,
        };
        let len = len.min(rest);
        if len == 0 && rest == 0 {
            // Everything is fed: one more, empty call finds a bad header that completed exactly
            // at the end of the last chunk.
            if last_call {
                break;
            }
            last_call = true;
        }
        let before = fed;
        let mut chunk = stream[fed..fed + len].to_vec();
        fed += len;
        let mut callback_failed = false;
        let result = rx.feed(&mut chunk, &pool, |cut| -> Result<(), Error> {
            let record = cut.bytes();
            assert!(!callback_failed, "a record was handed out after the callback failed");
            let Some(expected) = records.get(delivered) else {
                panic!("record {delivered} handed out; the stream holds {}", records.len());
            };
            assert!(expected.end <= fed, "record {delivered} handed out before it was fed");
            assert!(record == &stream[expected.clone()], "record {delivered} differs");
            if fail_at == Some(delivered) {
                callback_failed = true;
                delivered += 1;
                return Err(Error::Decrypt);
            }
            // Opened in place: the deframer must not care what the callback leaves.
            record.fill(0xee);
            delivered += 1;
            Ok(())
        });
        assert_eq!(pool.borrow().misses(), 0, "the deframer took a second buffer");
        match result {
            Err(error) => {
                assert!(error.closes_link(), "{error}");
                if callback_failed {
                    assert_eq!(error, Error::Decrypt);
                    assert_eq!(Some(delivered - 1), fail_at);
                } else {
                    let complete = bad_complete.unwrap_or_else(|| panic!("refused: {error}"));
                    assert!(complete <= fed, "refused before the bad header was whole");
                    assert!(complete >= before, "refused a call late: header whole at {complete}");
                    assert_eq!(delivered, records.len(), "records before the bad header");
                }
                assert!(!rx.holds_buffer(), "a buffer is held after an error");
                let pool = pool.borrow();
                let back = (pool.available(), pool.available_small());
                assert_eq!(back, (1, 1), "a buffer did not return after an error");
                break;
            }
            Ok(()) => {
                if let Some(complete) = bad_complete {
                    assert!(
                        complete > fed || (complete == fed && complete > before),
                        "a bad header whole at {complete} was not refused (fed {fed})"
                    );
                }
                assert!(fail_at.is_none_or(|at| at >= delivered), "the callback's error was lost");
                let whole = records.iter().take_while(|r| r.end <= fed).count();
                assert_eq!(delivered, whole, "records whole in the first {fed} bytes");
                let boundary = records.get(whole.wrapping_sub(1)).map_or(0, |r| r.end);
                assert_eq!(rx.holds_buffer(), fed > boundary, "buffer held at {fed}");
                // A cut record is held in a small buffer until more than it holds has arrived.
                assert_eq!(rx.partial_len(), fed - boundary);
                let large = rx.holds_large_buffer();
                assert_eq!(
                    large,
                    rx.partial_len() > SMALL_RECORD_BUF,
                    "{} bytes held",
                    fed - boundary
                );
                let pool = pool.borrow();
                assert_eq!(pool.available(), usize::from(!large));
                let held_small = rx.holds_buffer() && !large;
                assert_eq!(pool.available_small(), usize::from(!held_small));
            }
        }
    }
    if fail_at.is_none_or(|at| at >= records.len()) {
        assert_eq!(delivered, records.len(), "every record was handed out");
    }
    rx.release(&mut pool.borrow_mut());
    assert!(!rx.holds_buffer());
    let pool = pool.borrow();
    assert_eq!((pool.available(), pool.available_small(), pool.misses()), (1, 1, 0));
}
