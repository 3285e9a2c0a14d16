//! Scripted lifecycles: each test drives two links through a [`Pair`] and checks exactly what
//! each side saw, in order.

use super::*;
use crate::error::Malformed;
use crate::link::CloseReason;
use crate::sim::pair::{Output, Pair, Parts, Side};
use crate::wire::{Messages, Record};
use std::time::Duration;

const REQUEST: Command = Command::new(7, 1);
const DATA: Command = Command::new(7, 2);

/// What one side saw, owned so tests can compare it after the fact.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    OneWay(Vec<u8>),
    Msg { txn: TxnId, flags: Flags, error: ErrorCode, payload: Vec<u8>, synthesized: bool },
    Ended { txn: TxnId, error: ErrorCode },
    Closed(CloseReason),
}

#[derive(Default)]
struct Log {
    a: Vec<Seen>,
    b: Vec<Seen>,
}

impl Log {
    fn side(&mut self, side: Side) -> &mut Vec<Seen> {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn record(&mut self) -> impl FnMut(Side, &mut Parts<'_>, Output<'_>) + '_ {
        move |side, _peer, output| {
            let seen = match output {
                Output::Received(Received::OneWay { payload, .. }) => {
                    Seen::OneWay(payload.to_vec())
                }
                Output::Received(Received::Txn(d)) => Seen::Msg {
                    txn: d.txn,
                    flags: d.flags,
                    error: d.error,
                    payload: d.payload.to_vec(),
                    synthesized: false,
                },
                Output::Event(Event::Delivery(d)) => Seen::Msg {
                    txn: d.txn,
                    flags: d.flags,
                    error: d.error,
                    payload: d.payload.to_vec(),
                    synthesized: true,
                },
                Output::Event(Event::Ended { txn, error }) => Seen::Ended { txn, error },
                Output::Closed(reason) => Seen::Closed(reason),
            };
            self.side(side).push(seen);
        }
    }

    /// The flags of each message seen on one side, in order.
    fn flags(&self, side: Side) -> Vec<Flags> {
        let seen = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        seen.iter()
            .filter_map(|s| match s {
                Seen::Msg { flags, .. } => Some(*flags),
                _ => None,
            })
            .collect()
    }

    fn ended(&self, side: Side) -> Vec<(TxnId, ErrorCode)> {
        let seen = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        seen.iter()
            .filter_map(|s| match s {
                Seen::Ended { txn, error } => Some((*txn, *error)),
                _ => None,
            })
            .collect()
    }

    /// The transaction handle of the first message seen on a side.
    fn first_txn(&self, side: Side) -> TxnId {
        let seen = match side {
            Side::A => &self.a,
            Side::B => &self.b,
        };
        seen.iter()
            .find_map(|s| match s {
                Seen::Msg { txn, .. } => Some(*txn),
                _ => None,
            })
            .expect("a message was seen")
    }

    fn clear(&mut self) {
        self.a.clear();
        self.b.clear();
    }
}

fn pair() -> Pair {
    Pair::new(Duration::from_micros(50))
}

fn drive(pair: &mut Pair, log: &mut Log) {
    pair.drive(&mut log.record());
}

const C: Flags = Flags::CREATE;
const D: Flags = Flags::DELETE;
const R: Flags = Flags::REPLY;
const X: Flags = Flags::ABORT;

#[test]
fn request_reply() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"get k", D).unwrap();
    drive(&mut pair, &mut log);
    assert_eq!(log.flags(Side::B), [C | D]);
    assert!(log.ended(Side::B).is_empty(), "B has not replied yet");

    let peer_txn = log.first_txn(Side::B);
    let mut b = pair.b.parts();
    b.txn.send(&mut b.out, peer_txn, REQUEST, b"v", D, ErrorCode::NONE).unwrap();
    assert_eq!(log.ended(Side::B).len(), 0, "events wait in the queue until drained");
    drive(&mut pair, &mut log);
    // B's reply CREATE was added by the link; its send ended the transaction at B.
    assert_eq!(log.flags(Side::A), [C | D | R]);
    assert!(matches!(&log.a[0], Seen::Msg { payload, .. } if payload == b"v"));
    assert_eq!(log.ended(Side::A), [(txn, ErrorCode::NONE)]);
    assert!(pair.a.txn().is_empty());
    // B's Ended sits in its queue (it came from a send): drain it as the contract says.
    assert_eq!(
        pair.b.txn().poll_event(),
        Some(Event::Ended { txn: peer_txn, error: ErrorCode::NONE })
    );
    assert!(pair.b.txn().is_empty());
}

#[test]
fn streams_both_ways_then_half_closes() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    for i in 0..3u8 {
        a.txn.send(&mut a.out, txn, DATA, &[i], Flags::NONE, ErrorCode::NONE).unwrap();
    }
    drive(&mut pair, &mut log);
    let peer_txn = log.first_txn(Side::B);
    assert_eq!(log.flags(Side::B), [C, Flags::NONE, Flags::NONE, Flags::NONE]);

    let mut b = pair.b.parts();
    b.txn.send(&mut b.out, peer_txn, DATA, b"r0", Flags::NONE, ErrorCode::NONE).unwrap();
    b.txn.send(&mut b.out, peer_txn, DATA, b"r1", Flags::NONE, ErrorCode::NONE).unwrap();
    // A closes its direction while B keeps streaming.
    let mut a = pair.a.parts();
    a.txn.close(&mut a.out, txn, ErrorCode::NONE).unwrap();
    drive(&mut pair, &mut log);
    assert_eq!(log.flags(Side::A), [C | R, R]);
    assert_eq!(log.flags(Side::B)[4], D);
    assert!(log.ended(Side::A).is_empty() && log.ended(Side::B).is_empty());

    // After the peer's DELETE, B can still send; its DELETE ends the transaction both sides.
    let mut b = pair.b.parts();
    b.txn.send(&mut b.out, peer_txn, DATA, b"r2", Flags::NONE, ErrorCode::NONE).unwrap();
    b.txn.close(&mut b.out, peer_txn, ErrorCode::NONE).unwrap();
    drain(&mut pair, &mut log, Side::B);
    drive(&mut pair, &mut log);
    assert_eq!(log.flags(Side::A), [C | R, R, R, D | R]);
    assert_eq!(log.ended(Side::A), [(txn, ErrorCode::NONE)]);
    assert_eq!(log.ended(Side::B), [(peer_txn, ErrorCode::NONE)]);
    // Neither side may send again.
    let mut a = pair.a.parts();
    assert_eq!(
        a.txn.send(&mut a.out, txn, DATA, b"", Flags::NONE, ErrorCode::NONE),
        Err(Misuse::UnknownTransaction(txn).into())
    );
}

/// Drains a side's event queue into the log (for events caused by a local send).
fn drain(pair: &mut Pair, log: &mut Log, side: Side) {
    let mut record = log.record();
    let mut parts = pair.peer(side).parts();
    while let Some(event) = parts.txn.poll_event() {
        record(side, &mut parts, Output::Event(event));
    }
}

#[test]
fn sending_after_our_delete_is_refused() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", D).unwrap();
    let out_len = a.out.queued_bytes();
    assert_eq!(
        a.txn.send(&mut a.out, txn, DATA, b"x", Flags::NONE, ErrorCode::NONE),
        Err(Misuse::AlreadyClosed(txn).into())
    );
    assert_eq!(a.out.queued_bytes(), out_len, "nothing emitted on error");
    drive(&mut pair, &mut log);
}

#[test]
fn one_way_messages() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    a.txn.send_oneway(&mut a.out, DATA, ErrorCode::NONE, b"ping").unwrap();
    drive(&mut pair, &mut log);
    assert_eq!(log.b, [Seen::OneWay(b"ping".to_vec())]);
    assert!(pair.b.txn().is_empty());
    // A `LINK_PING` is the link's own keepalive: the link under the pair consumes it.
    let mut a = pair.a.parts();
    a.txn.send_oneway(&mut a.out, Command::LINK_PING, ErrorCode::NONE, b"ping").unwrap();
    let before = pair.stats().messages;
    drive(&mut pair, &mut log);
    assert_eq!(pair.stats().messages, before + 1);
    assert_eq!(log.b.len(), 1);
}

#[test]
fn advisory_abort_is_only_delivered() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    a.txn.send(&mut a.out, txn, DATA, b"", X, ErrorCode::ABORTED).unwrap();
    drive(&mut pair, &mut log);
    assert_eq!(log.flags(Side::B), [C, X]);
    assert!(log.ended(Side::B).is_empty());
    assert_eq!(pair.b.txn().len(), 1);
}

#[test]
fn forced_close_is_answered_without_the_application() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    let mut a = pair.a.parts();
    a.txn.abort(&mut a.out, txn, ErrorCode::REFUSED).unwrap();
    drive(&mut pair, &mut log);
    // B got the forced close and its link answered with DELETE on its own.
    assert_eq!(log.flags(Side::B), [C, X | D]);
    assert_eq!(log.ended(Side::B).len(), 1);
    assert_eq!(log.flags(Side::A), [C | D | R]);
    assert_eq!(log.ended(Side::A), [(txn, ErrorCode::REFUSED)]);
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
}

#[test]
fn forced_close_after_our_half_close() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", D).unwrap();
    drive(&mut pair, &mut log);
    // B keeps the transaction open (it never replies); A forces it.
    let mut a = pair.a.parts();
    a.txn.abort(&mut a.out, txn, ErrorCode::ABORTED).unwrap();
    assert_eq!(
        a.txn.abort(&mut a.out, txn, ErrorCode::ABORTED),
        Err(Misuse::AlreadyClosed(txn).into()),
        "one forced close only"
    );
    drive(&mut pair, &mut log);
    assert_eq!(log.flags(Side::B), [C | D, X | D]);
    assert_eq!(log.ended(Side::A), [(txn, ErrorCode::ABORTED)]);
    assert_eq!(log.ended(Side::B).len(), 1);
}

#[test]
fn forced_close_racing_a_normal_close_is_dropped() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", D).unwrap();
    drive(&mut pair, &mut log);
    let peer_txn = log.first_txn(Side::B);
    // B closes; before B's DELETE arrives, A forces. B's state is gone when A's force arrives.
    let mut b = pair.b.parts();
    b.txn.close(&mut b.out, peer_txn, ErrorCode::NONE).unwrap();
    let mut a = pair.a.parts();
    a.txn.abort(&mut a.out, txn, ErrorCode::ABORTED).unwrap();
    drive(&mut pair, &mut log);
    assert!(!log.a.iter().chain(&log.b).any(|s| matches!(s, Seen::Closed(_))));
    assert_eq!(log.ended(Side::A).len(), 1);
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
}

#[test]
fn stacked_transactions_and_deferred_parent_end() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let span = a.txn.open(&mut a.out, None, REQUEST, b"span", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    let peer_span = log.first_txn(Side::B);
    // B opens a circuit inside A's span: its CREATE names A's id with REV_PARENT.
    let mut b = pair.b.parts();
    let circuit = b.txn.open(&mut b.out, Some(peer_span), DATA, b"circ", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    let a_circuit = match &log.a[0] {
        Seen::Msg { txn, flags, .. } => {
            assert_eq!(*flags, C | Flags::REV_PARENT);
            *txn
        }
        other => panic!("unexpected {other:?}"),
    };
    // Both close the span; it lingers while the circuit lives.
    let mut a = pair.a.parts();
    a.txn.close(&mut a.out, span, ErrorCode::NONE).unwrap();
    drive(&mut pair, &mut log);
    let mut b = pair.b.parts();
    b.txn.close(&mut b.out, peer_span, ErrorCode::NONE).unwrap();
    drive(&mut pair, &mut log);
    assert!(log.ended(Side::A).is_empty() && log.ended(Side::B).is_empty());
    assert_eq!((pair.a.txn().len(), pair.b.txn().len()), (2, 2));
    // Closing the circuit both ways ends the circuit, then the span, at each end.
    let mut b = pair.b.parts();
    b.txn.close(&mut b.out, circuit, ErrorCode::NONE).unwrap();
    let mut a = pair.a.parts();
    a.txn.close(&mut a.out, a_circuit, ErrorCode::NONE).unwrap();
    drain(&mut pair, &mut log, Side::A);
    drain(&mut pair, &mut log, Side::B);
    drive(&mut pair, &mut log);
    let ended_a: Vec<TxnId> = log.ended(Side::A).into_iter().map(|(t, _)| t).collect();
    let ended_b: Vec<TxnId> = log.ended(Side::B).into_iter().map(|(t, _)| t).collect();
    assert_eq!(ended_a, [a_circuit, span]);
    assert_eq!(ended_b, [circuit, peer_span]);
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
}

#[test]
fn forced_close_takes_the_subtree_children_first() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let span = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    let c1 = a.txn.open(&mut a.out, Some(span), DATA, b"", Flags::NONE).unwrap();
    let c2 = a.txn.open(&mut a.out, Some(c1), DATA, b"", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    log.clear();
    let mut a = pair.a.parts();
    a.txn.abort(&mut a.out, span, ErrorCode::NO_ROUTE).unwrap();
    drive(&mut pair, &mut log);
    assert_eq!(log.flags(Side::B), [X | D, X | D, X | D]);
    let ended: Vec<TxnId> = log.ended(Side::A).into_iter().map(|(t, _)| t).collect();
    assert_eq!(ended, [c2, c1, span]);
    assert!(log.ended(Side::A).iter().all(|&(_, e)| e == ErrorCode::NO_ROUTE));
    assert_eq!(log.ended(Side::B).len(), 3);
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
}

#[test]
fn child_opened_across_a_forced_close_is_forced_too() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let span = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    let peer_span = log.first_txn(Side::B);
    // B opens a child while A's forced close of the parent is in flight.
    let mut b = pair.b.parts();
    b.txn.open(&mut b.out, Some(peer_span), DATA, b"", Flags::NONE).unwrap();
    let mut a = pair.a.parts();
    a.txn.abort(&mut a.out, span, ErrorCode::ABORTED).unwrap();
    drain(&mut pair, &mut log, Side::B);
    drive(&mut pair, &mut log);
    assert!(!log.a.iter().chain(&log.b).any(|s| matches!(s, Seen::Closed(_))));
    assert_eq!(log.ended(Side::A).len(), 2);
    assert_eq!(log.ended(Side::B).len(), 2);
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
}

#[test]
fn link_down_ends_everything_children_first() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let span = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    let other = a.txn.open(&mut a.out, None, REQUEST, b"", D).unwrap();
    drive(&mut pair, &mut log);
    let peer_span = log.first_txn(Side::B);
    let mut b = pair.b.parts();
    let circuit = b.txn.open(&mut b.out, Some(peer_span), DATA, b"", Flags::NONE).unwrap();
    let mut a = pair.a.parts();
    let inner = a.txn.open(&mut a.out, Some(span), DATA, b"", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    log.clear();

    pair.cut(&mut log.record());
    // A: every transaction gets a synthesized ABORT|DELETE, then its end, children first.
    let order: Vec<TxnId> = log.ended(Side::A).into_iter().map(|(t, _)| t).collect();
    assert_eq!(order.len(), 4);
    let pos = |t: TxnId| order.iter().position(|&x| x == t).unwrap();
    assert!(pos(inner) < pos(span));
    assert!(log.ended(Side::A).iter().all(|&(_, e)| e == ErrorCode::LOST_LINK));
    let synthesized: Vec<_> = log
        .a
        .iter()
        .filter_map(|s| match s {
            Seen::Msg { txn, flags, error, synthesized: true, .. } => Some((*txn, *flags, *error)),
            _ => None,
        })
        .collect();
    assert_eq!(synthesized.len(), 4);
    assert!(synthesized.iter().all(|&(_, f, e)| f.contains(X | D) && e == ErrorCode::LOST_LINK));
    // Our own request that B never answered looks like B's reply CREATE|ABORT|DELETE.
    assert!(synthesized.contains(&(other, C | D | R | X, ErrorCode::LOST_LINK)));
    // B's circuit, opened by B, ends at B too; B's view of A's span ends after it.
    let order_b: Vec<TxnId> = log.ended(Side::B).into_iter().map(|(t, _)| t).collect();
    assert_eq!(order_b.len(), 4);
    let pos_b = |t: TxnId| order_b.iter().position(|&x| x == t).unwrap();
    assert!(pos_b(circuit) < pos_b(peer_span));
    // The links are empty and refuse further use.
    assert!(pair.a.txn().is_empty() && pair.b.txn().is_empty());
    assert!(pair.a.try_parts().is_none(), "a closed link lends no output");
    assert_eq!(
        pair.a.txn().open(&mut Vec::new(), None, REQUEST, b"", Flags::NONE),
        Err(Misuse::LinkDown.into())
    );
}

/// Feeds raw messages to a fresh link B and returns the result of the last one.
fn feed(messages: &[Repr]) -> Result<Option<()>, Error> {
    let mut link = Link::new();
    let mut out = Vec::new();
    let mut result = Ok(None);
    for repr in messages {
        let mut bytes = Vec::new();
        bytes.put(repr, &vec![0; repr.payload_len as usize]);
        let message = Message::new_checked(&bytes[..])?;
        result = link.handle_message(&mut out, &message).map(|r| r.map(|_| ()));
        while link.poll_event().is_some() {}
        if result.is_err() {
            break;
        }
    }
    result
}

fn msg(flags: Flags, msgid: u64, parent: u64) -> Repr {
    Repr { flags, command: REQUEST, msgid: MsgId(msgid), parent: MsgId(parent), ..Repr::default() }
}

#[test]
fn violations_are_precise_errors() {
    use Violation::*;
    let rev = Flags::REV_PARENT;
    let cases: &[(&[Repr], Error)] = &[
        (&[msg(C, 1, 0), msg(C, 1, 0)], DuplicateCreate(MsgId(1)).into()),
        (&[msg(Flags::NONE, 5, 0)], UnknownTransaction(MsgId(5)).into()),
        (&[msg(D, 5, 0)], UnknownTransaction(MsgId(5)).into()),
        (&[msg(R, 5, 0)], UnknownTransaction(MsgId(5)).into()),
        (
            &[msg(C, 1, 0), msg(D, 1, 0), msg(Flags::NONE, 1, 0)],
            MessageAfterDelete(MsgId(1)).into(),
        ),
        (&[msg(C | D, 1, 0), msg(D, 1, 0)], MessageAfterDelete(MsgId(1)).into()),
        (&[msg(C, 2, 9)], UnknownParent(MsgId(9)).into()),
        (&[msg(C | rev, 2, 1)], UnknownParent(MsgId(1)).into()),
        (&[msg(C, 1, 0), msg(D, 1, 0), msg(C, 2, 1)], CreateUnderClosedParent(MsgId(1)).into()),
    ];
    for (messages, expected) in cases {
        assert_eq!(feed(messages), Err(*expected), "{messages:?}");
        assert!(expected.closes_link());
    }
    // A forced close after the peer's DELETE is accepted once, then refused.
    assert_eq!(feed(&[msg(C, 1, 0), msg(D, 1, 0), msg(X | D, 1, 0)]), Ok(Some(())));
    assert_eq!(
        feed(&[msg(C, 1, 0), msg(D, 1, 0), msg(X | D, 1, 0), msg(X | D, 1, 0)]),
        Ok(None),
        "the first forced close ended it here; a second one is for a transaction already over"
    );
    // A forced close for an unknown transaction is dropped, not a violation.
    assert_eq!(feed(&[msg(X | D, 7, 0)]), Ok(None));
}

#[test]
fn reply_violations_on_our_transactions() {
    let mut link = Link::new();
    let mut out = Vec::new();
    let txn = link.open(&mut out, None, REQUEST, b"", Flags::NONE).unwrap();
    let id = link.msgid(txn).unwrap().0;
    let mut handle = |repr: Repr| {
        let mut bytes = Vec::new();
        bytes.put(&repr, &[]);
        let message = Message::new_checked(&bytes[..]).unwrap();
        link.handle_message(&mut out, &message).map(|r| r.is_some())
    };
    assert_eq!(handle(msg(R, id, 0)), Err(Violation::ReplyBeforeCreate(MsgId(id)).into()));
    assert_eq!(handle(msg(C | R, id, 0)), Ok(true));
    assert_eq!(handle(msg(C | R, id, 0)), Err(Violation::DuplicateReplyCreate(MsgId(id)).into()));
}

#[test]
fn peer_cannot_exceed_limits() {
    // Depth: a chain of stacked CREATEs deeper than the maximum is refused.
    let mut chain = vec![msg(C, 1, 0)];
    for id in 2..=u64::from(TXN_DEPTH_MAX) {
        chain.push(msg(C, id, id - 1));
    }
    assert!(feed(&chain).is_ok());
    chain.push(msg(C, 100, u64::from(TXN_DEPTH_MAX)));
    assert_eq!(feed(&chain), Err(Limit::PeerDepth(TXN_DEPTH_MAX).into()));

    // Count: one CREATE past the maximum is refused.
    let mut link = Link::new();
    let mut out = Vec::new();
    let mut bytes = Vec::new();
    for id in 1..=PEER_TXNS_PER_LINK_MAX as u64 + 1 {
        bytes.clear();
        bytes.put(&msg(C, id, 0), &[]);
        let message = Message::new_checked(&bytes[..]).unwrap();
        let result = link.handle_message(&mut out, &message);
        if id as usize <= PEER_TXNS_PER_LINK_MAX {
            assert!(result.is_ok());
        } else {
            assert_eq!(result, Err(Limit::PeerTransactions(PEER_TXNS_PER_LINK_MAX).into()));
            assert!(result.unwrap_err().closes_link());
        }
    }
}

#[test]
fn local_misuse_changes_nothing() {
    let mut link = Link::new();
    let mut out = Vec::new();
    let txn = link.open(&mut out, None, REQUEST, b"", D).unwrap();
    let before = out.len();
    assert_eq!(
        link.open(&mut out, Some(txn), REQUEST, b"", Flags::NONE),
        Err(Misuse::ParentClosed(txn).into())
    );
    let big = vec![0; crate::limits::MESSAGE_PAYLOAD_MAX + 1];
    assert_eq!(
        link.open(&mut out, None, REQUEST, &big, Flags::NONE),
        Err(Limit::PayloadTooLarge(big.len()).into())
    );
    let stale = TxnId { slot: 9, generation: 9 };
    assert_eq!(
        link.close(&mut out, stale, ErrorCode::NONE),
        Err(Misuse::UnknownTransaction(stale).into())
    );
    assert_eq!(out.len(), before);
    assert!(!Error::from(Misuse::ParentClosed(txn)).closes_link());
}

#[test]
fn garbage_on_the_wire_closes_the_link_with_a_reason() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    // A message with a reserved flag bit, hand-written into a record of A's (sealed: it
    // authenticates, and B's parser refuses it).
    let mut garbage = Vec::new();
    garbage.put(&msg(Flags::NONE, 0, 0), &[]);
    garbage[0] = 0x80;
    assert!(pair.a.queue_record(&garbage));
    drive(&mut pair, &mut log);
    let malformed = CloseReason::Protocol(Malformed::MessageFlags(0x80).into());
    assert!(log.b.contains(&Seen::Closed(malformed)));
    // A sees the end of B's stream.
    assert!(log.a.contains(&Seen::Closed(CloseReason::PeerClosed)));
    assert!(!pair.is_connected());
    assert_eq!(log.ended(Side::A), [(txn, ErrorCode::LOST_LINK)]);
    assert_eq!(log.ended(Side::B).len(), 1);
}

#[test]
fn messages_are_batched_into_records() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    let payload = [7u8; 1000];
    for _ in 0..200 {
        a.txn.send(&mut a.out, txn, DATA, &payload, Flags::NONE, ErrorCode::NONE).unwrap();
    }
    drive(&mut pair, &mut log);
    // 200 messages of 1,032 bytes need four 64 KiB records, not 201 records; the sender counts
    // each one it sealed, those that filled up before the end of the turn included.
    assert_eq!(pair.stats().records, 4);
    assert_eq!(pair.a.link().stats().records_out, 4);
    assert_eq!(pair.stats().messages, 201);
    let bytes_seen: usize = log
        .b
        .iter()
        .map(|s| match s {
            Seen::Msg { payload, .. } => payload.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(bytes_seen, 200_000);
    // Records really are parsed by the record deframer: a record holds whole messages.
    let mut plaintext = Vec::new();
    for _ in 0..3 {
        plaintext.put(&msg(Flags::NONE, 0, 0), &[]);
    }
    let mut record = vec![0; 8 + plaintext.len() + 16];
    crate::wire::RecordHeader { plaintext_len: plaintext.len(), key_phase: false }
        .emit(&mut record);
    record[8..8 + plaintext.len()].copy_from_slice(&plaintext);
    let record = Record::new_checked(&record[..]).unwrap();
    assert_eq!(Messages::new(record.body()).count(), 3);
}

#[test]
fn link_loss_after_a_forced_close_reports_only_the_end() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let span = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    drive(&mut pair, &mut log);
    let peer_span = log.first_txn(Side::B);
    // A stacks a child while B forces the span: at A the span has received B's forced close
    // but lingers for the child, whose forced close from B is still in flight when the link dies.
    let mut a = pair.a.parts();
    let child = a.txn.open(&mut a.out, Some(span), DATA, b"", Flags::NONE).unwrap();
    let mut b = pair.b.parts();
    b.txn.abort(&mut b.out, peer_span, ErrorCode::ABORTED).unwrap();
    pair.transmit();
    pair.advance(Duration::from_millis(1));
    pair.deliver(&mut log.record());
    assert!(pair.a.txn().contains(span) && pair.a.txn().contains(child));
    log.clear();
    pair.cut(&mut log.record());
    let synthesized: Vec<TxnId> = log
        .a
        .iter()
        .filter_map(|s| match s {
            Seen::Msg { txn, synthesized: true, .. } => Some(*txn),
            _ => None,
        })
        .collect();
    // The span got B's real forced close: a peer sends nothing after that, so only its end.
    assert_eq!(synthesized, [child]);
    let ended: Vec<TxnId> = log.ended(Side::A).into_iter().map(|(t, _)| t).collect();
    assert_eq!(ended, [child, span]);
}

#[test]
fn every_call_after_link_loss_says_the_link_is_down() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut a = pair.a.parts();
    let txn = a.txn.open(&mut a.out, None, REQUEST, b"", Flags::NONE).unwrap();
    pair.cut(&mut log.record());
    // The closed link has no output any more (its keys are gone): its transaction table is
    // asked with a scratch sink, which must stay empty.
    assert!(pair.a.try_parts().is_none());
    let (a, mut out) = (pair.a.txn(), Vec::new());
    let down = Err(Misuse::LinkDown.into());
    assert_eq!(a.close(&mut out, txn, ErrorCode::NONE), down);
    assert_eq!(a.abort(&mut out, txn, ErrorCode::NONE), down);
    assert_eq!(a.send(&mut out, txn, DATA, b"", Flags::NONE, ErrorCode::NONE), down);
    assert_eq!(a.send_oneway(&mut out, DATA, ErrorCode::NONE, b""), down);
    assert!(out.is_empty());
}

#[test]
fn local_opens_stop_at_the_local_bound() {
    use crate::limits::LOCAL_TXNS_PER_LINK_MAX;
    let mut link = Link::new();
    let mut out = Vec::new();
    for _ in 0..LOCAL_TXNS_PER_LINK_MAX {
        link.open(&mut out, None, REQUEST, b"", Flags::NONE).unwrap();
    }
    let before = out.len();
    let refused = link.open(&mut out, None, REQUEST, b"", Flags::NONE);
    assert_eq!(refused, Err(Limit::LocalTransactions(LOCAL_TXNS_PER_LINK_MAX).into()));
    assert!(!refused.unwrap_err().closes_link(), "our own limit does not close the link");
    assert_eq!(out.len(), before);
    // The peer may still open its own transactions.
    let mut bytes = Vec::new();
    bytes.put(&msg(C, 1, 0), &[]);
    let message = Message::new_checked(&bytes[..]).unwrap();
    assert!(link.handle_message(&mut out, &message).is_ok());
}

#[test]
fn many_transactions_are_indexed_and_an_idle_link_drops_the_index() {
    let (mut pair, mut log) = (pair(), Log::default());
    let mut opened = Vec::new();
    for i in 0..3 * SCAN_MAX as u8 {
        let mut a = pair.a.parts();
        opened.push(a.txn.open(&mut a.out, None, REQUEST, &[i], Flags::NONE).unwrap());
    }
    drive(&mut pair, &mut log);
    assert!(pair.a.txn().index.is_some() && pair.b.txn().index.is_some());
    // Replies in reverse order each reach their own transaction through the index.
    let theirs: Vec<TxnId> = log
        .b
        .iter()
        .filter_map(|s| match s {
            Seen::Msg { txn, .. } => Some(*txn),
            _ => None,
        })
        .collect();
    for (i, txn) in theirs.iter().enumerate().rev() {
        let mut b = pair.b.parts();
        b.txn.send(&mut b.out, *txn, REQUEST, &[i as u8], D, ErrorCode::NONE).unwrap();
    }
    drive(&mut pair, &mut log);
    let replies: Vec<&[u8]> = log
        .a
        .iter()
        .filter_map(|s| match s {
            Seen::Msg { payload, .. } => Some(&payload[..]),
            _ => None,
        })
        .collect();
    let expected: Vec<[u8; 1]> = (0..3 * SCAN_MAX as u8).rev().map(|i| [i]).collect();
    assert_eq!(replies, expected.iter().map(|p| &p[..]).collect::<Vec<_>>());
    // A closes all: both links empty again, and back to scanning with a small table.
    for txn in opened {
        let mut a = pair.a.parts();
        a.txn.send(&mut a.out, txn, REQUEST, b"", D, ErrorCode::NONE).unwrap();
    }
    drive(&mut pair, &mut log);
    for link in [pair.a.txn(), pair.b.txn()] {
        assert!(link.is_empty() && link.index.is_none());
        assert!(link.states.capacity() <= SCAN_MAX);
    }
    // And it still works scanning.
    let mut a = pair.a.parts();
    a.txn.open(&mut a.out, None, REQUEST, b"again", D).unwrap();
    drive(&mut pair, &mut log);
    assert!(matches!(log.b.last(), Some(Seen::Msg { payload, .. }) if payload == b"again"));
}

/// Hands every message in `bytes` to `link`, asserting that each one `in_stream` vouches for is
/// delivered on that transaction and changes nothing else (no reply, no event).
fn handle_all(link: &mut Link, bytes: &[u8]) -> Vec<Option<TxnId>> {
    let mut vouched = Vec::new();
    for message in Messages::new(bytes) {
        let message = message.unwrap();
        let claim = link.in_stream(message.flags(), message.msgid());
        let mut out = Vec::new();
        let received = link.handle_message(&mut out, &message).unwrap();
        if let Some(txn) = claim {
            assert!(matches!(received, Some(Received::Txn(d)) if d.txn == txn));
            assert!(out.is_empty());
            assert_eq!(link.poll_event(), None);
        }
        while link.poll_event().is_some() {}
        vouched.push(claim);
    }
    vouched
}

#[test]
fn in_stream_vouches_only_for_messages_that_change_nothing() {
    let (mut a, mut b) = (Link::new(), Link::new());
    let mut wire = Vec::new();
    let ours = a.open(&mut wire, None, REQUEST, b"open", Flags::NONE).unwrap();
    a.send(&mut wire, ours, DATA, b"one", Flags::NONE, ErrorCode::NONE).unwrap();
    a.send(&mut wire, ours, DATA, b"advice", Flags::ABORT, ErrorCode::NONE).unwrap();
    // The CREATE and the ABORT go through `handle_message`; the message between them need not.
    let vouched = handle_all(&mut b, &wire);
    assert!(vouched[0].is_none() && vouched[2].is_none());
    let theirs = vouched[1].expect("a message in the middle of the stream");
    // B has not answered yet: its messages would carry its CREATE.
    assert_eq!(b.in_stream_header(theirs), None);
    assert_eq!(a.in_stream(Flags::REPLY, a.msgid(ours).unwrap()), None, "B's CREATE not seen");
    let mut reply = Vec::new();
    b.send(&mut reply, theirs, DATA, b"first", Flags::NONE, ErrorCode::NONE).unwrap();
    b.send(&mut reply, theirs, DATA, b"second", Flags::NONE, ErrorCode::NONE).unwrap();
    let vouched = handle_all(&mut a, &reply);
    assert_eq!(vouched, [None, Some(ours)]);
    // What `in_stream_header` gives is what `send` writes.
    for from_a in [true, false] {
        let (link, peer, txn) =
            if from_a { (&mut a, &mut b, ours) } else { (&mut b, &mut a, theirs) };
        let (flags, msgid) = link.in_stream_header(txn).unwrap();
        assert_eq!(flags, if from_a { Flags::NONE } else { Flags::REPLY });
        let mut sent = Vec::new();
        link.send(&mut sent, txn, DATA, b"x", Flags::NONE, ErrorCode::NONE).unwrap();
        let repr = Repr { flags, command: DATA, msgid, payload_len: 1, ..Repr::default() };
        let mut built = Vec::new();
        built.put(&repr, b"x");
        assert_eq!(sent, built);
        assert!(handle_all(peer, &sent)[0].is_some());
    }
    // Unknown transactions, one-way messages and the wrong direction are not vouched for.
    let msgid = a.msgid(ours).unwrap();
    assert_eq!(b.in_stream(Flags::REPLY, msgid), None);
    assert_eq!(b.in_stream(Flags::NONE, MsgId(msgid.0 + 1)), None);
    assert_eq!(b.in_stream(Flags::NONE, MsgId::ROOT), None);
    // After A's DELETE: nothing more from A is in stream at B, and A has nothing to send.
    let mut close = Vec::new();
    a.close(&mut close, ours, ErrorCode::NONE).unwrap();
    assert_eq!(a.in_stream_header(ours), None);
    handle_all(&mut b, &close);
    assert_eq!(b.in_stream(Flags::NONE, msgid), None);
    // B's direction is still open both ways it is seen.
    assert!(b.in_stream_header(theirs).is_some());
    assert_eq!(a.in_stream(Flags::REPLY, msgid), Some(ours));
    // A lost link vouches for nothing.
    a.handle_link_down(ErrorCode::LOST_LINK);
    assert_eq!(a.in_stream(Flags::REPLY, msgid), None);
}

#[test]
fn in_stream_agrees_with_handle_message_across_a_forced_close() {
    let (mut a, mut b) = (Link::new(), Link::new());
    let mut wire = Vec::new();
    let parent = a.open(&mut wire, None, REQUEST, b"", Flags::NONE).unwrap();
    handle_all(&mut b, &wire);
    // B opens a child under A's transaction and streams on it.
    let mut up = Vec::new();
    let b_parent = b.states.iter().map(|(slot, _)| b.txn_id(slot as u32)).next().unwrap();
    let child = b.open(&mut up, Some(b_parent), DATA, b"", Flags::NONE).unwrap();
    b.send(&mut up, child, DATA, b"more", Flags::NONE, ErrorCode::NONE).unwrap();
    assert!(handle_all(&mut a, &up)[1].is_some());
    // A forces its transaction (and so the child); B's messages already on their way are
    // still delivered, and still need nothing but delivery.
    a.abort(&mut Vec::new(), parent, ErrorCode::NONE).unwrap();
    let mut late = Vec::new();
    b.send(&mut late, child, DATA, b"late", Flags::NONE, ErrorCode::NONE).unwrap();
    assert!(handle_all(&mut a, &late)[0].is_some());
}
