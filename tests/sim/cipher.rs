//! Sessions end to end over an in-memory pipe: handshakes both ways, every refusal, records,
//! rekeying.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringspan::Error;
use ringspan::cipher::{Config, Identity, PublicKey, RekeyLimits, Session};
use ringspan::error::{Handshake, Malformed, Misuse};
use ringspan::limits::{HANDSHAKE_FRAME_MAX, RECORD_HEADER_LEN, RECORD_TAG_LEN};

// One real instant to offset virtual time from.
use crate::support::wait::now as t0;

struct Node {
    config: Arc<Config>,
}

impl Node {
    fn new() -> Node {
        Node { config: Arc::new(Config::new(Identity::generate().unwrap()).unwrap()) }
    }

    fn key(&self) -> PublicKey {
        self.config.identity().public_key()
    }

    fn with(identity: Identity, allow: &[PublicKey], edit: impl FnOnce(&mut Config)) -> Node {
        let mut config = Config::new(identity).unwrap();
        config.allowlist.extend(allow.iter().copied());
        edit(&mut config);
        Node { config: Arc::new(config) }
    }
}

/// Two nodes that allow each other.
fn friends() -> (Node, Node) {
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (ka, kb) = (a.public_key(), b.public_key());
    (Node::with(a, &[kb], |_| {}), Node::with(b, &[ka], |_| {}))
}

/// The next frame `from` wants to send.
fn frame(from: &mut Session) -> Vec<u8> {
    let mut buf = [0u8; HANDSHAKE_FRAME_MAX];
    let len = from.poll_transmit(&mut buf).unwrap();
    buf[..len].to_vec()
}

/// Moves frames between the two sessions until neither has anything to send. Returns the
/// first error either side reports, with which side (true = the initiator) reported it.
fn drive(
    initiator: &mut Session,
    responder: &mut Session,
    now: Instant,
) -> Result<(), (bool, Error)> {
    for _ in 0..8 {
        let to_responder = frame(initiator);
        let to_initiator = frame(responder);
        if to_responder.is_empty() && to_initiator.is_empty() {
            return Ok(());
        }
        if !to_responder.is_empty() {
            let used =
                responder.handle_handshake_bytes(&to_responder, now).map_err(|e| (false, e))?;
            assert_eq!(used, to_responder.len());
        }
        if !to_initiator.is_empty() {
            let used =
                initiator.handle_handshake_bytes(&to_initiator, now).map_err(|e| (true, e))?;
            assert_eq!(used, to_initiator.len());
        }
    }
    panic!("handshake did not settle in 8 rounds");
}

fn established(initiator: &Node, responder: &Node, now: Instant) -> (Session, Session) {
    let mut i =
        Session::initiator(Arc::clone(&initiator.config), Some(responder.key()), now).unwrap();
    let mut r = Session::responder(Arc::clone(&responder.config), now).unwrap();
    drive(&mut i, &mut r, now).unwrap();
    assert!(i.is_established() && r.is_established());
    (i, r)
}

/// Seals a record of `len` plaintext bytes, each `fill`.
fn seal(session: &mut Session, len: usize, fill: u8) -> Vec<u8> {
    let mut buf = vec![fill; RECORD_HEADER_LEN + len + RECORD_TAG_LEN];
    let wire = session.seal(&mut buf, len).unwrap();
    assert_eq!(wire, buf.len());
    buf
}

#[test]
fn handshake_both_ways_then_records_both_ways() {
    let now = t0();
    let (a, b) = friends();
    for (initiator, responder) in [(&a, &b), (&b, &a)] {
        let (mut i, mut r) = established(initiator, responder, now);
        assert_eq!(i.peer(), Some(responder.key()));
        assert_eq!(r.peer(), Some(initiator.key()));
        for round in 0..3u8 {
            let mut rec = seal(&mut i, 64, round);
            assert_eq!(r.open(&mut rec).unwrap(), &[round; 64][..]);
            let mut rec = seal(&mut r, 32, round + 100);
            assert_eq!(i.open(&mut rec).unwrap(), &[round + 100; 32][..]);
        }
    }
}

#[test]
fn allowlist_alone_authorizes_without_an_expected_key() {
    let now = t0();
    let (a, b) = friends();
    let mut i = Session::initiator(Arc::clone(&a.config), None, now).unwrap();
    let mut r = Session::responder(Arc::clone(&b.config), now).unwrap();
    drive(&mut i, &mut r, now).unwrap();
    assert_eq!(i.peer(), Some(b.key()));
}

#[test]
fn frames_may_arrive_byte_by_byte_and_records_may_follow_the_last_frame() {
    let now = t0();
    let (a, b) = friends();
    let mut i = Session::initiator(Arc::clone(&a.config), Some(b.key()), now).unwrap();
    let mut r = Session::responder(Arc::clone(&b.config), now).unwrap();
    for byte in frame(&mut i) {
        assert_eq!(r.handle_handshake_bytes(&[byte], now), Ok(1));
    }
    for byte in frame(&mut r) {
        assert_eq!(i.handle_handshake_bytes(&[byte], now), Ok(1));
    }
    assert!(i.is_established());
    // The initiator's last frame and its first record arrive in one read.
    let mut stream = frame(&mut i);
    let frame_len = stream.len();
    stream.extend(seal(&mut i, 40, 7));
    assert_eq!(r.handle_handshake_bytes(&stream, now), Ok(frame_len));
    assert!(r.is_established());
    assert_eq!(r.open(&mut stream[frame_len..]).unwrap(), &[7; 40][..]);
    // Once established, handshake bytes are not consumed.
    assert_eq!(r.handle_handshake_bytes(&[1, 2, 3], now), Ok(0));
}

#[test]
fn wrong_key_refused_by_the_initiator() {
    let now = t0();
    let (a, b) = friends();
    let impostor = Node::with(Identity::generate().unwrap(), &[a.key()], |_| {});
    let mut i = Session::initiator(Arc::clone(&a.config), Some(b.key()), now).unwrap();
    let mut r = Session::responder(Arc::clone(&impostor.config), now).unwrap();
    assert_eq!(drive(&mut i, &mut r, now), Err((true, Handshake::WrongKey.into())));
    // The initiator sent nothing more (its identity stays hidden); the failure is final.
    assert_eq!(frame(&mut i), Vec::<u8>::new());
    assert_eq!(i.handle_handshake_bytes(&[0], now), Err(Handshake::WrongKey.into()));
    assert_eq!(i.seal(&mut [0; 64], 32), Err(Handshake::WrongKey.into()));
    assert!(Error::from(Handshake::WrongKey).closes_link());
    // The refusal can name the key it refused; none was accepted.
    assert_eq!((i.proven_peer(), i.peer()), (Some(impostor.key()), None));
}

#[test]
fn unknown_key_refused_by_the_responder() {
    let now = t0();
    let (a, _) = friends();
    let stranger = Node::new();
    let mut i = Session::initiator(Arc::clone(&stranger.config), Some(a.key()), now).unwrap();
    let mut r = Session::responder(Arc::clone(&a.config), now).unwrap();
    assert_eq!(drive(&mut i, &mut r, now), Err((false, Handshake::UnknownKey.into())));
    assert!(!r.is_established());
    assert_eq!(r.peer(), None);
    assert_eq!(r.proven_peer(), Some(stranger.key()), "the key refused, for the log line");
}

#[test]
fn unknown_key_refused_by_the_initiator() {
    let now = t0();
    let (a, _) = friends();
    let stranger = Node::with(Identity::generate().unwrap(), &[], |c| c.accept_unknown_keys = true);
    let mut i = Session::initiator(Arc::clone(&a.config), None, now).unwrap();
    let mut r = Session::responder(Arc::clone(&stranger.config), now).unwrap();
    assert_eq!(drive(&mut i, &mut r, now), Err((true, Handshake::UnknownKey.into())));
}

#[test]
fn listener_may_accept_unknown_keys() {
    let now = t0();
    let satellite =
        Node::with(Identity::generate().unwrap(), &[], |c| c.accept_unknown_keys = true);
    let client = Node::new();
    let (_, r) = established(&client, &satellite, now);
    assert_eq!(r.peer(), Some(client.key()));
}

/// Runs the handshake up to the frame `step` (1, 2 or 3), hands it to `tamper`, and delivers
/// the result. Returns the receiver's verdict.
fn tampered(step: u8, tamper: impl FnOnce(&mut Vec<u8>)) -> Result<usize, Error> {
    let now = t0();
    let (a, b) = friends();
    let mut i = Session::initiator(Arc::clone(&a.config), Some(b.key()), now).unwrap();
    let mut r = Session::responder(Arc::clone(&b.config), now).unwrap();
    let mut m1 = frame(&mut i);
    if step == 1 {
        tamper(&mut m1);
        return r.handle_handshake_bytes(&m1, now).and_then(|used| {
            // Message 1 is a bare ephemeral key: garbage there shows when the responder
            // answers (or, at the latest, in the initiator's refusal of message 2).
            let m2 = frame(&mut r);
            i.handle_handshake_bytes(&m2, now).map(|_| used)
        });
    }
    r.handle_handshake_bytes(&m1, now).unwrap();
    let mut m2 = frame(&mut r);
    if step == 2 {
        tamper(&mut m2);
        return i.handle_handshake_bytes(&m2, now);
    }
    i.handle_handshake_bytes(&m2, now).unwrap();
    let mut m3 = frame(&mut i);
    tamper(&mut m3);
    r.handle_handshake_bytes(&m3, now)
}

/// Drops the last byte of the message and fixes the length field to match.
fn truncate(frame: &mut Vec<u8>) {
    frame.pop();
    let len = u16::from_le_bytes([frame[0], frame[1]]) - 1;
    frame[..2].copy_from_slice(&len.to_le_bytes());
}

#[test]
fn truncated_handshakes_refused() {
    assert_eq!(tampered(1, truncate), Err(Handshake::Truncated { step: 1, len: 31 }.into()));
    assert_eq!(tampered(2, truncate), Err(Handshake::Truncated { step: 2, len: 95 }.into()));
    assert_eq!(tampered(3, truncate), Err(Handshake::Truncated { step: 3, len: 63 }.into()));
    // An empty frame.
    assert_eq!(
        tampered(2, |f| *f = vec![0, 0, 1, 2]),
        Err(Handshake::Truncated { step: 2, len: 0 }.into())
    );
}

#[test]
fn garbage_handshakes_refused() {
    let scramble = |f: &mut Vec<u8>| {
        f[4..].iter_mut().enumerate().for_each(|(i, b)| *b ^= 0x5a ^ i as u8);
    };
    assert_eq!(tampered(2, scramble), Err(Handshake::Garbage(2).into()));
    assert_eq!(tampered(3, scramble), Err(Handshake::Garbage(3).into()));
    // A low-order ephemeral key in message 1 is caught when the responder computes ee.
    assert_eq!(tampered(1, |f| f[4..].fill(0)), Err(Handshake::Garbage(1).into()));
    // Another ephemeral key than the one sent: the initiator cannot authenticate message 2.
    assert_eq!(tampered(1, |f| f[10] ^= 0x01), Err(Handshake::Garbage(2).into()));
    // One flipped bit anywhere in messages 2 and 3 fails authentication.
    for (step, len) in [(2u8, 96), (3, 64)] {
        for at in 4..4 + len {
            let verdict = tampered(step, |f| f[at] ^= 0x01);
            assert_eq!(verdict, Err(Handshake::Garbage(step).into()), "step {step} byte {at}");
        }
    }
}

#[test]
fn framing_errors_refused() {
    assert_eq!(tampered(1, |f| f[2] = 2), Err(Handshake::Version(2).into()));
    assert_eq!(tampered(2, |f| f[2] = 0), Err(Handshake::Version(0).into()));
    assert_eq!(
        tampered(1, |f| f[3] = 3),
        Err(Handshake::UnexpectedStep { expected: 1, got: 3 }.into())
    );
    assert_eq!(
        tampered(3, |f| f[3] = 2),
        Err(Handshake::UnexpectedStep { expected: 3, got: 2 }.into())
    );
    // A frame announcing more than the step allows is refused on its header, before its body.
    assert_eq!(
        tampered(1, |f| *f = vec![0xff, 0xff, 1, 1]),
        Err(Handshake::TooLong { step: 1, len: 0xffff }.into())
    );
    assert_eq!(
        tampered(3, |f| {
            f[0] += 1;
            f.push(0);
        }),
        Err(Handshake::TooLong { step: 3, len: 65 }.into())
    );
}

#[test]
fn handshake_times_out() {
    let now = t0();
    let (a, b) = friends();
    let mut i = Session::initiator(Arc::clone(&a.config), Some(b.key()), now).unwrap();
    let deadline = now + Duration::from_millis(ringspan::limits::HANDSHAKE_TIMEOUT_MS);
    assert_eq!(i.poll_timeout(), Some(deadline));
    assert_eq!(i.handle_timeout(deadline - Duration::from_millis(1)), Ok(()));
    assert_eq!(i.handle_timeout(deadline), Err(Handshake::Timeout.into()));
    assert_eq!(i.poll_timeout(), None);
    // A responder whose peer sent half a frame and went quiet times out too, and bytes that
    // arrive after the deadline are refused.
    let mut r = Session::responder(Arc::clone(&b.config), now).unwrap();
    let mut i = Session::initiator(Arc::clone(&a.config), Some(b.key()), now).unwrap();
    let m1 = frame(&mut i);
    assert_eq!(r.handle_handshake_bytes(&m1[..10], now), Ok(10));
    assert_eq!(r.handle_handshake_bytes(&m1[10..], deadline), Err(Handshake::Timeout.into()));
    // The deadline is a configuration field.
    let quick = Node::with(Identity::generate().unwrap(), &[], |c| {
        c.handshake_timeout = Duration::from_millis(5)
    });
    let r = Session::responder(Arc::clone(&quick.config), now).unwrap();
    assert_eq!(r.poll_timeout(), Some(now + Duration::from_millis(5)));
}

#[test]
fn records_before_the_handshake_refused() {
    let now = t0();
    let (a, b) = friends();
    let mut i = Session::initiator(Arc::clone(&a.config), Some(b.key()), now).unwrap();
    let mut buf = [0u8; 64];
    assert_eq!(i.seal(&mut buf, 32), Err(Misuse::HandshakeNotDone.into()));
    assert_eq!(i.open(&mut buf).err(), Some(Misuse::HandshakeNotDone.into()));
}

#[test]
fn every_tampered_byte_of_a_record_refused() {
    let now = t0();
    let (a, b) = friends();
    let len = RECORD_HEADER_LEN + 32 + RECORD_TAG_LEN;
    for at in 0..len {
        for bit in [0x01u8, 0x80] {
            let (mut i, mut r) = established(&a, &b, now);
            let mut rec = seal(&mut i, 32, 0x33);
            rec[at] ^= bit;
            let error = r.open(&mut rec).expect_err("tampered record opened");
            if at >= RECORD_HEADER_LEN {
                assert_eq!(error, Error::Decrypt, "byte {at} bit {bit:#x}");
            } else if at == 4 {
                // Bit 0 is the key phase (authenticated); the other flag bits are reserved.
                let expected =
                    if bit == 1 { Error::Decrypt } else { Malformed::RecordReserved(0x80).into() };
                assert_eq!(error, expected, "byte {at} bit {bit:#x}");
            } else {
                // Length and reserved bytes: refused by the parser or by authentication.
                assert!(error.closes_link(), "byte {at}: {error:?}");
            }
            // The failure is final: the next genuine record is refused with the same error.
            let mut genuine = seal(&mut i, 32, 0x33);
            assert_eq!(r.open(&mut genuine).err(), Some(error));
        }
    }
}

#[test]
fn replayed_reordered_dropped_and_truncated_records_refused() {
    let now = t0();
    let (a, b) = friends();
    // Replayed.
    let (mut i, mut r) = established(&a, &b, now);
    let first = seal(&mut i, 32, 1);
    r.open(&mut first.clone()).unwrap();
    assert_eq!(r.open(&mut first.clone()).err(), Some(Error::Decrypt));
    // Reordered.
    let (mut i, mut r) = established(&a, &b, now);
    let mut first = seal(&mut i, 32, 1);
    let mut second = seal(&mut i, 32, 2);
    assert_eq!(r.open(&mut second).err(), Some(Error::Decrypt));
    assert_eq!(r.open(&mut first).err(), Some(Error::Decrypt), "failure is final");
    // Dropped: the third record after a lost second one.
    let (mut i, mut r) = established(&a, &b, now);
    let mut first = seal(&mut i, 32, 1);
    let _lost = seal(&mut i, 32, 2);
    let mut third = seal(&mut i, 32, 3);
    r.open(&mut first).unwrap();
    assert_eq!(r.open(&mut third).err(), Some(Error::Decrypt));
    // Truncated: cut short (the parser notices), or shortened with its length field rewritten
    // to match (authentication notices).
    let (mut i, mut r) = established(&a, &b, now);
    let mut rec = seal(&mut i, 64, 4);
    let full = rec.len();
    assert_eq!(
        r.open(&mut rec[..full - 1]).err(),
        Some(Malformed::RecordTruncated { expected: full, actual: full - 1 }.into())
    );
    let (mut i, mut r) = established(&a, &b, now);
    let rec = seal(&mut i, 64, 4);
    let mut short = rec[..full - 8].to_vec();
    short[..4].copy_from_slice(&((64 - 8 + 16) as u32).to_le_bytes());
    assert_eq!(r.open(&mut short).err(), Some(Error::Decrypt));
    // A record from another session (another key) is refused.
    let (mut other, _) = established(&a, &b, now);
    let (_, mut r) = established(&a, &b, now);
    let mut foreign = seal(&mut other, 32, 5);
    assert_eq!(r.open(&mut foreign).err(), Some(Error::Decrypt));
}

#[test]
fn rekeying_every_1024_records_carries_100k_records() {
    let now = t0();
    let limits =
        RekeyLimits { records_per_key: 1024, reject_after_records: 1024, ..RekeyLimits::default() };
    let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (ka, kb) = (ia.public_key(), ib.public_key());
    let a = Node::with(ia, &[kb], |c| c.rekey = limits);
    let b = Node::with(ib, &[ka], |c| c.rekey = limits);
    let (mut i, mut r) = established(&a, &b, now);
    let mut buf = vec![0u8; RECORD_HEADER_LEN + 64 + RECORD_TAG_LEN];
    let mut phase_changes = 0;
    let mut last_phase = 0;
    for n in 0..100_000u64 {
        let len = 32 + 8 * (n % 5) as usize;
        let plain = &mut buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        plain.fill(0);
        plain[..8].copy_from_slice(&n.to_le_bytes());
        let wire = i.seal(&mut buf, len).unwrap();
        if buf[4] != last_phase {
            phase_changes += 1;
            last_phase = buf[4];
        }
        let opened = r.open(&mut buf[..wire]).unwrap();
        assert_eq!(opened.len(), len);
        assert_eq!(opened[..8], n.to_le_bytes(), "record {n}");
        assert!(opened[8..].iter().all(|&b| b == 0), "record {n}");
    }
    // 100,000 records at 1,024 per key: keys 0..=97, so 97 switches.
    assert_eq!(phase_changes, 97);
}

#[test]
fn a_peer_that_does_not_rekey_is_refused() {
    let now = t0();
    let lax = RekeyLimits { records_per_key: 2048, ..RekeyLimits::default() };
    let strict = RekeyLimits { reject_after_records: 1024, ..RekeyLimits::default() };
    let (ia, ib) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (ka, kb) = (ia.public_key(), ib.public_key());
    let a = Node::with(ia, &[kb], |c| c.rekey = lax);
    let b = Node::with(ib, &[ka], |c| c.rekey = strict);
    let (mut i, mut r) = established(&a, &b, now);
    for _ in 0..1024 {
        let mut rec = seal(&mut i, 32, 0);
        r.open(&mut rec).unwrap();
    }
    let mut rec = seal(&mut i, 32, 0);
    let error = r.open(&mut rec).unwrap_err();
    assert_eq!(error, ringspan::error::Limit::PeerKeyUse(1024).into());
    assert!(error.closes_link());
}

#[test]
fn rekeying_by_time_keeps_the_stream_going() {
    let now = t0();
    let (a, b) = friends();
    let (mut i, mut r) = established(&a, &b, now);
    let due = i.poll_timeout().unwrap();
    assert_eq!(due, now + Duration::from_millis(ringspan::limits::REKEY_AFTER_MS));
    let mut before = seal(&mut i, 32, 1);
    i.handle_timeout(due).unwrap();
    let mut after = seal(&mut i, 32, 2);
    assert_eq!((before[4], after[4]), (0, 1));
    assert_eq!(r.open(&mut before).unwrap(), &[1; 32][..]);
    assert_eq!(r.open(&mut after).unwrap(), &[2; 32][..]);
    assert!(i.poll_timeout().unwrap() > due);
}

#[test]
fn split_halves_keep_working() {
    let now = t0();
    let (a, b) = friends();
    let (i, r) = established(&a, &b, now);
    let (mut sealer, _) = i.into_record_layer().unwrap();
    let (_, mut opener) = r.into_record_layer().unwrap();
    let mut buf = vec![9u8; RECORD_HEADER_LEN + 32 + RECORD_TAG_LEN];
    sealer.seal(&mut buf, 32).unwrap();
    assert_eq!(opener.open(&mut buf).unwrap(), &[9; 32][..]);
}

#[test]
fn sessions_and_halves_can_move_between_threads() {
    fn send<T: Send>() {}
    fn sync<T: Sync>() {}
    send::<Session>();
    send::<ringspan::cipher::RecordSealer>();
    send::<ringspan::cipher::RecordOpener>();
    send::<Config>();
    sync::<Config>();
}
