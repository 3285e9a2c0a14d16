//! Wire-format benches: emitting and parsing single messages, walking a full record's plaintext,
//! and parsing a record header.
//!
//! Run with `cargo bench --bench wire`. Every loop body works on buffers built before timing
//! starts, so nothing is allocated while measuring.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringspan::ids::MsgId;
use ringspan::limits::{MESSAGE_HEADER_LEN, RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX};
use ringspan::wire::record::RecordHeader;
use ringspan::wire::{Command, ErrorCode, Flags, Message, Messages, Repr, Sink};

/// Payload sizes for the single-message benches: small, medium, large.
const PAYLOAD_SIZES: [usize; 3] = [16, 128, 1024];

/// Payload of each message in the record-walk bench.
const PACKED_PAYLOAD: usize = 16;

/// A mid-stream message of transaction 1 (no flags: the common case on a busy link).
fn repr(payload_len: usize) -> Repr {
    Repr {
        flags: Flags::NONE,
        command: Command::new(2, 7),
        msgid: MsgId(1),
        parent: MsgId::ROOT,
        error: ErrorCode::NONE,
        payload_len: payload_len as u32,
    }
}

/// A payload whose bytes are not all zero, so a check that only looks for zeros cannot shortcut.
fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(1)).collect()
}

/// `Repr::emit` of one message into a buffer allocated once.
fn emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/emit");
    for size in PAYLOAD_SIZES {
        let repr = repr(size);
        let payload = payload(size);
        let mut buffer = vec![0u8; repr.wire_len()];
        group.throughput(Throughput::Bytes(repr.wire_len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                black_box(&repr).emit(black_box(&payload), black_box(&mut buffer[..]));
            });
        });
    }
    group.finish();
}

/// `Message::new_checked` + `Repr::parse` + `payload()` of one message.
fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("wire/parse");
    for size in PAYLOAD_SIZES {
        let repr = repr(size);
        let mut buffer = Vec::with_capacity(repr.wire_len());
        buffer.put(&repr, &payload(size));
        group.throughput(Throughput::Bytes(repr.wire_len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
            b.iter(|| {
                let message = Message::new_checked(black_box(&buffer[..])).expect("valid message");
                black_box(Repr::parse(&message));
                black_box(message.payload());
            });
        });
    }
    group.finish();
}

/// The `Messages` iterator over a 64 KiB record plaintext packed with 16-byte-payload messages:
/// 1,365 messages of 48 bytes (65,520 bytes; the 16 bytes left cannot hold another header).
fn iterate(c: &mut Criterion) {
    let repr = repr(PACKED_PAYLOAD);
    let payload = payload(PACKED_PAYLOAD);
    let count = RECORD_PLAINTEXT_MAX / repr.wire_len();
    let mut plaintext = Vec::with_capacity(RECORD_PLAINTEXT_MAX);
    for _ in 0..count {
        plaintext.put(&repr, &payload);
    }
    assert!(plaintext.len() <= RECORD_PLAINTEXT_MAX);
    assert!(RECORD_PLAINTEXT_MAX - plaintext.len() < MESSAGE_HEADER_LEN);
    assert_eq!(Messages::new(&plaintext).filter(Result::is_ok).count(), count);

    let mut group = c.benchmark_group("wire/iterate");
    group.throughput(Throughput::Elements(count as u64));
    group.bench_function(BenchmarkId::new("record_64k", format!("{PACKED_PAYLOAD}B")), |b| {
        b.iter(|| {
            let mut seen = 0usize;
            for message in Messages::new(black_box(&plaintext[..])) {
                let message = message.expect("valid message");
                black_box(message.payload());
                seen += 1;
            }
            assert_eq!(seen, count);
            seen
        });
    });
    group.finish();
}

/// `RecordHeader::parse` of a full-size record's header.
fn record_header(c: &mut Criterion) {
    let mut header = [0u8; RECORD_HEADER_LEN];
    RecordHeader { plaintext_len: RECORD_PLAINTEXT_MAX, key_phase: true }.emit(&mut header);
    let mut group = c.benchmark_group("wire/record_header");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse", |b| {
        b.iter(|| RecordHeader::parse(black_box(&header[..])).expect("valid header"));
    });
    group.finish();
}

criterion_group!(benches, emit, parse, iterate, record_header);
criterion_main!(benches);
