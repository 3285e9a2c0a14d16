//! Steady state allocates nothing: once a link is warm, transactions opened, streamed both ways
//! and closed (stacked ones too) cost zero heap allocations per message, through the production
//! link (`link::Link`: records built, sealed, cut and opened) that `Pair` runs.
//!
//! A counting global allocator counts the allocations made on the test's own thread while the
//! measurement is on.

use std::time::Duration;

use ringspan::sim::pair::{Output, Pair, Parts, Side};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command, ErrorCode, Flags};

use crate::support::counting;

const OPEN: Command = Command::new(9, 1);
const DATA: Command = Command::new(9, 2);
const SIZES: [usize; 6] = [0, 16, 64, 200, 1_000, 4_000];

/// B's application: answers each message with one of the same size, opens a child inside each
/// transaction A opens, and closes its direction when A closes. A's application closes the
/// children B opens.
fn app(side: Side, peer: &mut Parts<'_>, output: Output<'_>) {
    let Output::Received(Received::Txn(d)) = output else {
        if let Output::Closed(reason) = output {
            panic!("link closed: {reason}");
        }
        return;
    };
    let Parts { txn: link, out, .. } = peer;
    match side {
        Side::B if d.opens() && d.parent.is_none() => {
            link.send(out, d.txn, DATA, d.payload, Flags::NONE, ErrorCode::NONE).unwrap();
            link.open(out, Some(d.txn), OPEN, b"child", Flags::NONE).unwrap();
        }
        Side::B if d.closes() => link.close(out, d.txn, ErrorCode::NONE).unwrap(),
        Side::B if !d.opens() => {
            link.send(out, d.txn, DATA, d.payload, Flags::NONE, ErrorCode::NONE).unwrap()
        }
        Side::A if d.opens() => link.close(out, d.txn, ErrorCode::NONE).unwrap(),
        _ => {}
    }
}

/// One transaction: A opens it, streams every size, closes; B echoes and stacks a child that
/// A closes. Returns after both tables are empty again.
fn cycle(pair: &mut Pair, payload: &[u8]) {
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, OPEN, &payload[..64], Flags::NONE).unwrap();
    for &size in &SIZES {
        a.txn.send(&mut a.out, txn, DATA, &payload[..size], Flags::NONE, ErrorCode::NONE).unwrap();
    }
    pair.drive(&mut app);
    let mut a = pair.a.parts();
    a.txn.close(&mut a.out, txn, ErrorCode::NONE).unwrap();
    pair.drive(&mut app);
    for peer in [&mut pair.a, &mut pair.b] {
        while let Some(event) = peer.txn().poll_event() {
            assert!(matches!(event, Event::Ended { error: ErrorCode::NONE, .. }));
        }
    }
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
}

#[test]
fn zero_allocations_per_message_once_warm() {
    let payload = vec![0x3c; 4_096];
    let mut pair = Pair::new(Duration::from_micros(20));
    for _ in 0..200 {
        cycle(&mut pair, &payload);
    }
    let (warm, warm_records) = (pair.stats().messages, pair.stats().records);
    let allocations = counting::on_this_thread(|| {
        while pair.stats().messages - warm < 10_000 {
            cycle(&mut pair, &payload);
        }
    });
    let messages = pair.stats().messages - warm;
    println!(
        "{messages} messages in {} records after warm-up: {allocations} allocations",
        pair.stats().records - warm_records
    );
    assert!(messages >= 10_000);
    assert_eq!(allocations, 0, "allocations in steady state over {messages} messages");
    // The links' record buffers all came from their pools.
    assert_eq!((pair.a.pool_misses(), pair.b.pool_misses()), (0, 0));
}

#[test]
fn the_counter_sees_allocations() {
    // Guards the test above: the allocator really counts on this thread.
    let n = counting::on_this_thread(|| drop(std::hint::black_box(vec![1u8; 100])));
    assert_eq!(n, 1);
}
