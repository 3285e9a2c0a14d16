//! The byte streams: cut, reassembled, sealed, queued, lent.

use super::*;
use crate::cipher::RekeyLimits;
use crate::cipher::record::dangerous_record_layer_from_secrets;
use crate::ids::MsgId;
use crate::limits::{MESSAGE_HEADER_LEN, SMALL_RECORD_BUF};
use crate::wire::record::peek_wire_len;
use crate::wire::{Command, Messages};

#[allow(clippy::disallowed_methods)] // a test's fixed epoch
fn now() -> std::time::Instant {
    std::time::Instant::now()
}

/// Every byte queued, none of them lent.
fn own_bytes(tx: &Tx) -> Vec<u8> {
    let chunks = tx.chunks().map(|chunk| chunk.bytes().expect("no chunk is lent"));
    chunks.flatten().copied().collect()
}

fn no_lent(at: Lent) {
    panic!("nothing was lent, yet {at:?} came back")
}

/// Builds a stream of records holding `count` messages of assorted sizes.
fn stream(count: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let (mut sealer, _) =
        dangerous_record_layer_from_secrets(&[1; 32], &[2; 32], RekeyLimits::default(), now())
            .unwrap();
    let pool = RefCell::new(Pool::new(4, 4));
    let mut tx = Tx::default();
    let mut payloads = Vec::new();
    for i in 0..count {
        let payload = vec![i as u8; (i * 37) % 3000];
        let repr = Repr {
            command: Command::new(1, 1),
            payload_len: payload.len() as u32,
            ..Repr::default()
        };
        tx.sink(&mut sealer, &pool).put(&repr, &payload);
        payloads.push(payload);
        if i % 7 == 6 {
            tx.flush(&mut sealer, &mut pool.borrow_mut());
        }
    }
    tx.flush(&mut sealer, &mut pool.borrow_mut());
    let mut bytes = Vec::new();
    // Send in odd-sized pieces that cut across chunks, as partial sends do.
    while !tx.is_empty() {
        let all = own_bytes(&tx);
        let n = all.len().min(bytes.len() % 9_999 + 1_234);
        bytes.extend_from_slice(&all[..n]);
        tx.advance(n, &mut pool.borrow_mut(), &mut no_lent);
    }
    assert_eq!(tx.queued_bytes(), 0);
    (bytes, payloads)
}

/// Feeds `bytes` cut at `cuts` and returns every payload opened, in order.
fn receive(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let (_, mut opener) =
        dangerous_record_layer_from_secrets(&[2; 32], &[1; 32], RekeyLimits::default(), now())
            .unwrap();
    let pool = RefCell::new(Pool::new(2, 2));
    let mut rx = Rx::default();
    let mut got = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
        let mut piece = bytes[start..end].to_vec();
        rx.feed(&mut piece, &pool, |cut: Cut<'_>| -> Result<(), Error> {
            let record = cut.bytes();
            let plaintext = opener.open(record)?;
            for message in Messages::new(plaintext) {
                let message = message?;
                assert_eq!(message.msgid(), MsgId::ROOT);
                got.push(message.payload().to_vec());
            }
            Ok(())
        })
        .unwrap();
        // Memory in proportion to what arrived: a full-size buffer only past a small one.
        assert_eq!(rx.holds_large_buffer(), rx.partial_len() > SMALL_RECORD_BUF);
        start = end;
    }
    assert!(!rx.holds_buffer(), "the stream ended on a record boundary");
    got
}

#[test]
fn records_survive_every_cut() {
    let (bytes, payloads) = stream(60);
    assert_eq!(receive(&bytes, &[]), payloads);
    // One cut at every position of the first 300 bytes, then a sample of the rest.
    for cut in (1..300).chain((300..bytes.len()).step_by(97)) {
        assert_eq!(receive(&bytes, &[cut]), payloads, "cut at {cut}");
    }
    // Byte by byte.
    let cuts: Vec<usize> = (1..bytes.len()).collect();
    assert_eq!(receive(&bytes, &cuts), payloads);
}

#[test]
fn full_records_are_sealed_as_they_fill() {
    let (mut sealer, _) =
        dangerous_record_layer_from_secrets(&[1; 32], &[2; 32], RekeyLimits::default(), now())
            .unwrap();
    let pool = RefCell::new(Pool::new(4, 4));
    let mut tx = Tx::default();
    let payload = [0u8; 1000];
    let repr = Repr { payload_len: 1000, ..Repr::default() };
    for _ in 0..200 {
        tx.sink(&mut sealer, &pool).put(&repr, &payload);
    }
    // 63 messages of 1,032 bytes fit a 64 KiB record: three are full, one is still open.
    assert_eq!(tx.queued_chunks(), 3);
    assert!(tx.has_pending());
    tx.flush(&mut sealer, &mut pool.borrow_mut());
    assert_eq!(tx.queued_chunks(), 4);
    assert_eq!(tx.take_failure(), None);
}

#[test]
fn a_whole_record_is_queued_edited_and_behind_what_was_built() {
    let (mut sealer, mut opener) =
        dangerous_record_layer_from_secrets(&[1; 32], &[1; 32], RekeyLimits::default(), now())
            .unwrap();
    let pool = RefCell::new(Pool::new(4, 4));
    let mut tx = Tx::default();
    let message = |byte: u8| {
        let mut bytes = Vec::new();
        let repr = Repr { payload_len: 3, ..Repr::default() };
        bytes.put(&repr, &[byte; 3]);
        bytes
    };
    tx.sink(&mut sealer, &pool).put(&Repr { payload_len: 3, ..Repr::default() }, &[1; 3]);
    // Refused by its edit: nothing changes, the buffer goes back.
    let available = pool.borrow().available();
    assert_eq!(tx.queue_record(&mut sealer, &pool, &message(2), |_| None::<()>), None);
    assert_eq!((tx.queued_chunks(), pool.borrow().available()), (0, available));
    assert!(tx.has_pending());
    // Taken: the record being built is sealed first, then the edited copy.
    let original = [message(2), message(3)].concat();
    let edited = tx.queue_record(&mut sealer, &pool, &original, |body| {
        body[32] = 9;
        Some(body.len())
    });
    assert_eq!(edited, Some(original.len()));
    assert_eq!(original[32], 2, "the original is left as it was");
    assert!(!tx.has_pending());
    let mut wire = own_bytes(&tx);
    let mut payloads = Vec::new();
    let rx_pool = RefCell::new(Pool::new(1, 1));
    Rx::default()
        .feed(&mut wire, &rx_pool, |cut: Cut<'_>| -> Result<(), Error> {
            let record = cut.bytes();
            for message in Messages::new(opener.open(record)?) {
                payloads.push(message?.payload().to_vec());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(payloads, [vec![1; 3], vec![9, 2, 2], vec![3; 3]]);
}

/// A record header announcing the largest record, sealed length included.
fn largest_header() -> [u8; RECORD_HEADER_LEN] {
    let mut header = [0u8; RECORD_HEADER_LEN];
    let sealed = (RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN) as u32;
    header[..4].copy_from_slice(&sealed.to_le_bytes());
    header
}

fn nothing(_: Cut<'_>) -> Result<(), Error> {
    panic!("no record is complete")
}

#[test]
fn a_record_announced_large_holds_a_small_buffer_until_more_than_that_arrives() {
    let pool = RefCell::new(Pool::new(2, 2));
    let mut rx = Rx::default();
    // A header announcing 64 KiB, and a few bytes of it.
    let mut start = [largest_header().as_slice(), &[7; 5]].concat();
    rx.feed(&mut start, &pool, nothing).unwrap();
    assert!(rx.holds_buffer() && !rx.holds_large_buffer());
    assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (2, 1));
    // Up to a small buffer's worth, in pieces: still small.
    let mut arrived = start.len();
    while arrived < SMALL_RECORD_BUF {
        let mut piece = vec![7; (SMALL_RECORD_BUF - arrived).min(100)];
        rx.feed(&mut piece, &pool, nothing).unwrap();
        arrived += piece.len();
        assert!(!rx.holds_large_buffer(), "{arrived} bytes arrived");
    }
    assert_eq!(rx.partial_len(), SMALL_RECORD_BUF);
    // One byte more: a full-size buffer, and the small one back in the pool.
    rx.feed(&mut [7], &pool, nothing).unwrap();
    assert!(rx.holds_large_buffer());
    assert_eq!(rx.partial_len(), SMALL_RECORD_BUF + 1);
    assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (1, 2));
    // Closing gives it back.
    rx.release(&mut pool.borrow_mut());
    assert!(!rx.holds_buffer());
    assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (2, 2));
    assert_eq!(pool.borrow().misses(), 0);
}

#[test]
fn a_record_that_starts_past_a_small_buffer_takes_a_large_one_at_once() {
    let pool = RefCell::new(Pool::new(1, 1));
    let mut rx = Rx::default();
    let mut start = [largest_header().as_slice(), &[0; SMALL_RECORD_BUF]].concat();
    rx.feed(&mut start, &pool, nothing).unwrap();
    assert!(rx.holds_large_buffer());
    assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (0, 1));
    // The deadline note belongs to this buffer only.
    assert!(!rx.deadline_armed());
    rx.arm_deadline();
    assert!(rx.deadline_armed());
    rx.release(&mut pool.borrow_mut());
    assert!(!rx.deadline_armed());
    assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (1, 1));
}

#[test]
fn a_failed_record_gives_its_buffer_back_whatever_its_size() {
    // A record that fails to open (here: any record) after it was reassembled, in a small
    // buffer and in a large one.
    let (bytes, _) = stream(60);
    let first = peek_wire_len(&bytes).unwrap().unwrap();
    for cut in [3, 100, first - 1] {
        let pool = RefCell::new(Pool::new(2, 2));
        let mut rx = Rx::default();
        let fail =
            |_: Cut<'_>| Err::<(), _>(Error::from(crate::error::Malformed::RecordReserved(0)));
        rx.feed(&mut bytes[..cut].to_vec(), &pool, fail).unwrap();
        assert_eq!(rx.holds_large_buffer(), cut > SMALL_RECORD_BUF);
        rx.arm_deadline();
        assert!(rx.feed(&mut bytes[cut..first].to_vec(), &pool, fail).is_err());
        assert!(!rx.holds_buffer() && !rx.deadline_armed());
        assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (2, 2));
        assert_eq!(pool.borrow().misses(), 0);
    }
}

#[test]
fn garbage_is_refused_and_buffers_return() {
    let pool = RefCell::new(Pool::new(1, 1));
    let mut rx = Rx::default();
    let mut bytes = [0xffu8; 20];
    let error = rx.feed(&mut bytes, &pool, |_| Ok::<_, Error>(())).unwrap_err();
    assert!(error.closes_link());
    // A partial header, then garbage completing it.
    let mut rx = Rx::default();
    rx.feed(&mut [0x30, 0, 0], &pool, |_| Ok::<_, Error>(())).unwrap();
    assert!(rx.holds_buffer() && !rx.holds_large_buffer());
    assert!(rx.feed(&mut [0, 0xff, 0, 0, 0, 0], &pool, |_| Ok::<_, Error>(())).is_err());
    assert!(!rx.holds_buffer());
    assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (1, 1));
}

/// A peer's sealed record of `messages` messages of `byte`s, as it arrives.
fn sealed_record(sealer: &mut RecordSealer, messages: usize, byte: u8) -> Vec<u8> {
    let repr = Repr { payload_len: 40, ..Repr::default() };
    let mut plaintext = Vec::new();
    for _ in 0..messages {
        plaintext.put(&repr, &[byte; 40]);
    }
    let mut wire = vec![0; RECORD_HEADER_LEN + plaintext.len() + RECORD_TAG_LEN];
    wire[RECORD_HEADER_LEN..RECORD_HEADER_LEN + plaintext.len()].copy_from_slice(&plaintext);
    let len = sealer.seal(&mut wire, plaintext.len()).unwrap();
    assert_eq!(len, wire.len());
    wire
}

#[test]
fn a_record_sealed_where_it_arrived_goes_out_in_order_and_its_buffer_comes_back_once() {
    // Three parties: the peer the record came from, this link, and the next peer.
    let layer = |send: u8, receive: u8| {
        dangerous_record_layer_from_secrets(
            &[send; 32],
            &[receive; 32],
            RekeyLimits::default(),
            now(),
        )
        .unwrap()
    };
    let ((mut from_peer, _), (_, mut opener_here)) = (layer(3, 4), layer(4, 3));
    let ((mut sealer_here, _), (_, mut next_peer)) = (layer(5, 6), layer(6, 5));
    let pool = RefCell::new(Pool::new(4, 4));
    let mut tx = Tx::default();
    // A message written to the link first, in the record being built.
    tx.sink(&mut sealer_here, &pool).put(&Repr { payload_len: 3, ..Repr::default() }, &[1; 3]);
    // A receive buffer (id 7) holding something, then the record at offset 100.
    let mut recv_buffer = vec![0xee; 100];
    recv_buffer.extend(sealed_record(&mut from_peer, 3, 2));
    let wire_len = recv_buffer.len() - 100;
    let plaintext_len = opener_here.open(&mut recv_buffer[100..]).unwrap().len();
    // Rewritten in place (here: one payload byte), then sealed there for the next peer.
    recv_buffer[100 + RECORD_HEADER_LEN + MESSAGE_HEADER_LEN] = 9;
    let at = Lent { buffer: 7, offset: 100 };
    let lent_record = &mut recv_buffer[100..];
    assert!(tx.queue_lent(
        &mut sealer_here,
        &mut pool.borrow_mut(),
        lent_record,
        plaintext_len,
        at
    ));
    assert_eq!(tx.lent_chunks(), 1);
    assert!(!tx.has_pending(), "the record being built went first");
    // A record of the wrong length is refused with nothing queued.
    let short = &mut recv_buffer[100..100 + wire_len - 16];
    assert!(!tx.queue_lent(&mut sealer_here, &mut pool.borrow_mut(), short, plaintext_len, at));
    assert_eq!((tx.queued_chunks(), tx.lent_chunks()), (2, 1));
    // What goes out: the built record from the pool, then the lent place.
    let chunks: Vec<Chunk<'_>> = tx.chunks().collect();
    assert!(matches!(chunks[0], Chunk::Bytes(_)));
    assert_eq!(chunks[1], Chunk::Lent { buffer: 7, offset: 100, len: wire_len as u32 });
    let mut stream = chunks[0].bytes().unwrap().to_vec();
    stream.extend_from_slice(&recv_buffer[100..]);
    // Sent in three pieces: the lent buffer comes back once, when its last byte is sent.
    let mut back = Vec::new();
    let first = chunks[0].len();
    let pieces = [first - 5, 5 + 10, wire_len - 10];
    for (i, n) in pieces.into_iter().enumerate() {
        tx.advance(n, &mut pool.borrow_mut(), &mut |at| back.push(at));
        assert_eq!(back.len(), usize::from(i == 2), "after piece {i}");
        if i == 1 {
            // The front chunk is the lent one, partly sent.
            let rest = Chunk::Lent { buffer: 7, offset: 110, len: wire_len as u32 - 10 };
            assert_eq!(tx.chunks().next(), Some(rest));
        }
    }
    assert_eq!((back, tx.lent_chunks(), tx.queued_bytes()), (vec![at], 0, 0));
    // The next peer reads both records, the rewrite included.
    let mut payloads = Vec::new();
    Rx::default()
        .feed(&mut stream, &RefCell::new(Pool::new(1, 1)), |cut: Cut<'_>| -> Result<(), Error> {
            let record = cut.bytes();
            for message in Messages::new(next_peer.open(record)?) {
                payloads.push(message?.payload().to_vec());
            }
            Ok(())
        })
        .unwrap();
    let mut edited = vec![2; 40];
    edited[0] = 9;
    assert_eq!(payloads, [vec![1; 3], edited, vec![2; 40], vec![2; 40]]);
}

#[test]
fn a_released_link_hands_back_every_lent_buffer_it_still_queues() {
    let (mut sealer, mut opener) =
        dangerous_record_layer_from_secrets(&[1; 32], &[1; 32], RekeyLimits::default(), now())
            .unwrap();
    let pool = RefCell::new(Pool::new(2, 2));
    let mut tx = Tx::default();
    let mut buffers: Vec<Vec<u8>> = (0..3).map(|i| sealed_record(&mut sealer, 2, i)).collect();
    for (i, buffer) in buffers.iter_mut().enumerate() {
        let len = opener.open(buffer).unwrap().len();
        let at = Lent { buffer: i as u16, offset: 0 };
        assert!(tx.queue_lent(&mut sealer, &mut pool.borrow_mut(), buffer, len, at));
    }
    // One partly sent, two waiting: all three come back, in order, on release.
    tx.advance(7, &mut pool.borrow_mut(), &mut no_lent);
    let mut back = Vec::new();
    tx.release(&mut pool.borrow_mut(), &mut |at: Lent| back.push(at.buffer));
    assert_eq!((back, tx.lent_chunks(), tx.queued_chunks()), (vec![0, 1, 2], 0, 0));
    assert_eq!(pool.borrow().misses(), 0);
}
