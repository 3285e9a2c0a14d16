//! The pair runs the production link: the handshake over the pipe, sealed records, keepalives,
//! the idle timeout, close notices and tampering, each on virtual time.

use std::collections::HashMap;

use super::*;
use crate::ids::TxnId;
use crate::limits::{HANDSHAKE_FRAME_HEADER_LEN, RECORD_HEADER_LEN, RECORD_TAG_LEN};
use crate::wire::record::RecordHeader;
use crate::wire::{Command, Flags};

const OPEN: Command = Command::new(7, 1);
const DATA: Command = Command::new(7, 2);

/// What one end's application saw.
#[derive(Default, Debug)]
struct Books {
    /// Transactions this end knows: opened here, or opened by the peer.
    known: Vec<TxnId>,
    /// Each transaction's ends, with their errors.
    ended: HashMap<TxnId, Vec<ErrorCode>>,
    /// Payloads received.
    payloads: Vec<Vec<u8>>,
    /// Closes shown.
    closed: Vec<CloseReason>,
}

#[derive(Default, Debug)]
struct Log {
    a: Books,
    b: Books,
}

impl Log {
    fn side(&mut self, side: Side) -> &mut Books {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn app(&mut self) -> impl FnMut(Side, &mut Parts<'_>, Output<'_>) + '_ {
        move |side, _parts, output| {
            let books = self.side(side);
            match output {
                Output::Received(Received::Txn(d)) => {
                    if d.opens() {
                        books.known.push(d.txn);
                    }
                    books.payloads.push(d.payload.to_vec());
                }
                Output::Received(Received::OneWay { payload, .. }) => {
                    books.payloads.push(payload.to_vec())
                }
                Output::Event(Event::Ended { txn, error }) => {
                    books.ended.entry(txn).or_default().push(error)
                }
                Output::Event(Event::Delivery(_)) => {}
                Output::Closed(reason) => books.closed.push(reason),
            }
        }
    }

    /// Every transaction `side` knows ended exactly once, with `error`.
    fn all_ended_once(&self, side: Side, error: ErrorCode) {
        let books = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        assert!(!books.known.is_empty(), "{side:?} knew transactions");
        for txn in &books.known {
            assert_eq!(books.ended.get(txn), Some(&vec![error]), "{side:?}: {txn}");
        }
        assert_eq!(books.ended.len(), books.known.len(), "{side:?}: ends of unknown transactions");
    }
}

/// Opens transactions both ways (A: a top-level one and a child in it, B: one), all left
/// open, and delivers them.
fn open_some(pair: &mut Pair, log: &mut Log) {
    let mut a = pair.a.parts();
    let span = a.txn.open(&mut a.out, None, OPEN, b"a1", Flags::NONE).unwrap();
    let child = a.txn.open(&mut a.out, Some(span), OPEN, b"a2", Flags::NONE).unwrap();
    let mut b = pair.b.parts();
    let theirs = b.txn.open(&mut b.out, None, OPEN, b"b1", Flags::NONE).unwrap();
    log.a.known.extend([span, child]);
    log.b.known.push(theirs);
    pair.drive(&mut log.app());
    assert_eq!((log.a.known.len(), log.b.known.len()), (3, 3));
    assert_eq!((pair.a.txn().len(), pair.b.txn().len()), (3, 3));
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn the_handshake_crosses_the_pipe_under_latency() {
    let latency = ms(10);
    let mut pair = Pair::new(latency);
    let epoch = pair.epoch();
    // A (the initiator) is done when B's reply arrives; B when A's last message does.
    assert_eq!(pair.a.established_at(), Some(epoch + 2 * latency));
    assert_eq!(pair.b.established_at(), Some(epoch + 3 * latency));
    assert_eq!(pair.now(), epoch + 3 * latency);
    assert!(pair.is_connected() && pair.a.link().is_established());
    // Each end authenticated the other's key.
    let (a_key, b_key) = (pair.a.peer_key().unwrap(), pair.b.peer_key().unwrap());
    assert_ne!(a_key, b_key);
    // Three Noise messages of the XX pattern (32, 96 and 64 bytes) crossed, and no record.
    let frames = 3 * HANDSHAKE_FRAME_HEADER_LEN + 32 + 96 + 64;
    assert_eq!(pair.stats(), Stats { records: 0, messages: 0, bytes: frames as u64 });
    // Records flow, one crossing later.
    let mut log = Log::default();
    let mut a = pair.a.parts();
    a.txn.open(&mut a.out, None, OPEN, b"hello", Flags::DELETE).unwrap();
    let sent = pair.now();
    pair.drive(&mut log.app());
    assert_eq!(log.b.payloads, [b"hello".to_vec()]);
    assert_eq!(pair.now(), sent + latency);
}

#[test]
fn bytes_on_the_wire_are_sealed() {
    let marker = b"a payload marker that must not cross in the clear";
    let mut pair = Pair::new(ms(1));
    let mut log = Log::default();
    let mut a = pair.a.parts();
    a.txn.open(&mut a.out, None, OPEN, marker, Flags::DELETE).unwrap();
    pair.transmit();
    let wire = pair.in_flight(Side::A).to_vec();
    // One record: a header, the sealed message (32-byte header, payload padded to 8), a tag.
    let plaintext_len = 32 + marker.len().next_multiple_of(8);
    assert_eq!(wire.len(), RECORD_HEADER_LEN + plaintext_len + RECORD_TAG_LEN);
    assert_eq!(RecordHeader::parse(&wire).unwrap().plaintext_len, plaintext_len);
    let found = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
    assert!(!found(marker), "the payload crossed in the clear");
    // Not even a part of it: no 8-byte piece (a shorter one could turn up in random ciphertext
    // by chance: two bytes do about once in 650 runs).
    assert!(marker.chunks_exact(8).all(|part| !found(part)));
    pair.drive(&mut log.app());
    assert_eq!(log.b.payloads, [marker.to_vec()]);
}

#[test]
fn keepalives_keep_an_idle_pair_up() {
    let mut pair = Pair::new(ms(2));
    let mut log = Log::default();
    open_some(&mut pair, &mut log);
    let (start, records) = (pair.now(), pair.stats().records);
    let settings = *pair.settings();
    // Twelve idle timeouts of nothing but keepalives, the clock moved a tenth of a second at a
    // time.
    let span = 12 * settings.periods.idle_timeout;
    while pair.now() < start + span {
        pair.advance(ms(100));
        pair.drive(&mut log.app());
        assert!(pair.is_connected(), "closed at {:?}", pair.now() - start);
    }
    assert!(log.a.closed.is_empty() && log.b.closed.is_empty());
    assert!(log.a.ended.is_empty() && log.b.ended.is_empty());
    assert_eq!((pair.a.txn().len(), pair.b.txn().len()), (3, 3));
    // A keepalive each way per interval (give or take the step), and nothing else.
    let pings = 2 * (span.as_millis() / settings.keepalive.as_millis()) as u64;
    let crossed = pair.stats().records - records;
    assert!(crossed >= pings * 9 / 10 && crossed <= pings, "{crossed} records, {pings} expected");
    assert_eq!(log.a.payloads.len() + log.b.payloads.len(), 3, "only the opens were shown");
}

#[test]
fn a_silent_peer_is_closed_at_its_idle_timeout() {
    let latency = ms(5);
    let mut pair = Pair::new(latency);
    let mut log = Log::default();
    open_some(&mut pair, &mut log);
    // Keepalives flow for a while, then B falls silent.
    pair.run_for(ms(3_500), &mut log.app());
    assert!(pair.is_connected());
    let settings = *pair.settings();
    let muted = pair.now();
    pair.mute(Side::B);
    pair.run_for(3 * settings.periods.idle_timeout, &mut log.app());
    // A heard B last at most a keepalive interval before B fell silent (plus the crossing).
    let closed = pair.a.closed_at().expect("A closed");
    let idle = settings.periods.idle_timeout;
    assert!(
        closed >= muted + idle - settings.keepalive && closed <= muted + idle + latency,
        "A closed {:?} after B fell silent",
        closed - muted
    );
    assert_eq!(pair.a.close_reason(), Some(CloseReason::IdleTimeout));
    assert_eq!(log.a.closed, [CloseReason::IdleTimeout]);
    // B, which still heard A, sees A's end of the stream one crossing later.
    assert_eq!(log.b.closed, [CloseReason::PeerClosed]);
    assert_eq!(pair.b.closed_at(), Some(closed + latency));
    log.all_ended_once(Side::A, ErrorCode::LOST_LINK);
    log.all_ended_once(Side::B, ErrorCode::LOST_LINK);
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
}

#[test]
fn a_close_notice_ends_the_peers_transactions() {
    let latency = ms(5);
    let mut pair = Pair::new(latency);
    let mut log = Log::default();
    open_some(&mut pair, &mut log);
    // A writes one more message, then closes with a notice: the message goes first.
    let txn = log.a.known[0];
    let mut a = pair.a.parts();
    a.txn.send(&mut a.out, txn, DATA, b"last", Flags::NONE, ErrorCode::NONE).unwrap();
    assert!(pair.close(Side::A, ErrorCode::SHUTDOWN, &mut log.app()));
    // A ends its own at once, with its code.
    log.all_ended_once(Side::A, ErrorCode::SHUTDOWN);
    assert_eq!(log.a.closed, [CloseReason::Local(ErrorCode::SHUTDOWN)]);
    assert!(!pair.close(Side::A, ErrorCode::SHUTDOWN, &mut log.app()), "closed already");
    let closed = pair.now();
    pair.drive(&mut log.app());
    assert_eq!(log.b.payloads.last().map(Vec::as_slice), Some(&b"last"[..]));
    assert_eq!(log.b.closed, [CloseReason::PeerSaid(ErrorCode::SHUTDOWN)]);
    assert_eq!(pair.b.closed_at(), Some(closed + latency));
    log.all_ended_once(Side::B, ErrorCode::LOST_LINK);
    assert!(!pair.is_connected());
}

#[test]
fn a_flipped_byte_fails_authentication() {
    let mut pair = Pair::new(ms(1));
    let mut log = Log::default();
    open_some(&mut pair, &mut log);
    let txn = log.a.known[0];
    let mut a = pair.a.parts();
    a.txn.send(&mut a.out, txn, DATA, b"tampered", Flags::NONE, ErrorCode::NONE).unwrap();
    pair.transmit();
    // One bit of the sealed body (past the record header).
    pair.in_flight(Side::A)[RECORD_HEADER_LEN + 3] ^= 0x10;
    pair.drive(&mut log.app());
    assert_eq!(log.b.closed, [CloseReason::Protocol(Error::Decrypt)]);
    assert!(!log.b.payloads.contains(&b"tampered".to_vec()));
    assert_eq!(log.a.closed, [CloseReason::PeerClosed]);
    log.all_ended_once(Side::A, ErrorCode::LOST_LINK);
    log.all_ended_once(Side::B, ErrorCode::LOST_LINK);
}

#[test]
fn sending_keys_change_on_virtual_time() {
    let mut settings = Settings::new(ms(1));
    settings.rekey.rekey_after = ms(3_000);
    let mut pair = Pair::with_settings(settings);
    let mut log = Log::default();
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, OPEN, b"", Flags::NONE).unwrap();
    pair.drive(&mut log.app());
    // A message a second; the key phase of each record A seals, read off the wire.
    let established = pair.a.established_at().unwrap();
    let mut phases = Vec::new();
    for second in 1..=10u64 {
        pair.run_until(established + ms(1_000 * second) - ms(500), &mut log.app());
        let mut a = pair.a.parts();
        a.txn.send(&mut a.out, txn, DATA, &[second as u8], Flags::NONE, ErrorCode::NONE).unwrap();
        pair.transmit();
        phases.push(RecordHeader::parse(pair.in_flight(Side::A)).unwrap().key_phase);
        pair.drive(&mut log.app());
    }
    // A new key every three seconds, and B follows each.
    let expected: Vec<bool> = (1..=10u64).map(|s| (s * 1_000 - 500) / 3_000 % 2 == 1).collect();
    assert_eq!(phases, expected);
    assert!(pair.is_connected());
    assert_eq!(log.b.payloads.len(), 11);
}

#[test]
fn a_links_own_keepalive_interval_takes_effect() {
    let mut pair = Pair::new(ms(1));
    let mut log = Log::default();
    // Set by the link's user (as a client asks for its own interval), armed at the end of the
    // turn.
    let parts = pair.a.parts();
    parts.meta.keepalive_ms = 100;
    parts.meta.keepalive_changed = true;
    let opened = |pair: &Pair| (pair.b.link().stats().records_in, pair.a.link().stats().records_in);
    let before = opened(&pair);
    pair.run_for(ms(2_500), &mut log.app());
    let after = opened(&pair);
    // Ten keepalives a second from A; B keeps the default of one a second.
    assert_eq!((after.0 - before.0, after.1 - before.1), (25, 2));
    assert!(pair.is_connected());
}

#[test]
fn data_written_in_the_turn_a_keepalive_fired_counts_as_data() {
    // A keepalive fires on an idle link and writes its ping; later in the same turn the
    // application writes into that record. The record is data: the last-data time moves (else a
    // sender writing once per keepalive interval would shed its keys after every record).
    let mut pair = Pair::new(ms(2));
    let mut log = Log::default();
    open_some(&mut pair, &mut log);
    let txn = log.a.known[0];
    pair.run_for(ms(3_500), &mut log.app());
    // Step until A's keepalive fires: its ping waits in the record being built.
    let mut steps = 0;
    while pair.a.link().is_idle() {
        pair.advance(ms(1));
        pair.deliver(&mut log.app());
        steps += 1;
        assert!(steps < 2_000, "no keepalive fired");
    }
    let fired = pair.now();
    assert!(pair.a.link().last_data() < fired, "quiet since the opens");
    let mut a = pair.a.parts();
    a.txn.send(&mut a.out, txn, DATA, b"late", Flags::NONE, ErrorCode::NONE).unwrap();
    pair.transmit();
    assert_eq!(pair.a.link().last_data(), fired, "the ping's record carried data");
    pair.run_for(ms(100), &mut log.app());
    assert_eq!(log.b.payloads.last().map(Vec::as_slice), Some(&b"late"[..]));
}
