//! Two `txn::Link`s joined by records, driven by operation sequences: both applications open,
//! stack, send, close, abort and force at random, records cross in order when the input says,
//! and the link is cut at random; and arbitrary well-framed messages (random flags, msgids,
//! parents, commands, errors, and now and then bytes that do not parse) are injected toward
//! side A, between B's real records, as an attacker on the path or a broken peer would.
//!
//! Invariants, checked after every operation:
//! - nothing panics;
//! - an error from `handle_message` closes the link (`closes_link`); the harness then calls
//!   `handle_link_down` on both sides, after which every transaction each side saw (opened
//!   there, or delivered as opened by the peer) has ended exactly once, nothing else has ended,
//!   and both tables are empty;
//! - a delivery names a transaction the application knows to be open (or opens one);
//! - local misuse (stale handles, closed directions, oversized payloads, too deep, a link that
//!   is down) is refused with an error that does not close the link, and changes nothing: the
//!   link's state, its output and its events are as before;
//! - a side refuses a message of the honest other side only if injected input provoked it: the
//!   message's transaction, or its parent, is one that injected input touched at A (or one
//!   stacked inside such a transaction). Without injection nothing is ever refused;
//! - without injection, once both applications close everything, both tables empty.

use std::collections::{HashMap, HashSet, VecDeque};

use ringspan::error::{Error, Misuse};
use ringspan::ids::{MsgId, TxnId};
use ringspan::limits::{MESSAGE_HEADER_LEN, MESSAGE_PAYLOAD_MAX, RECORD_PLAINTEXT_MAX};
use ringspan::txn::{Event, Link, Received};
use ringspan::wire::record::RecordHeader;
use ringspan::wire::{Command, ErrorCode, Flags, Message, Messages, Record, Repr, Sink};

use crate::input::Input;

const CMD: Command = Command::new(9, 1);
const PAYLOAD: [u8; 64] = [0x5a; 64];
/// Operations per run at most (the fuzzer's inputs can be long).
const OPS_MAX: usize = 2_000;

/// A transaction's identity on the wire, at side A: (A opened it, its msgid).
type Key = (bool, u64);

/// What one side's application knows.
#[derive(Default)]
struct Books {
    /// Transactions seen to begin and not yet ended.
    live: Vec<TxnId>,
    /// Every transaction seen to begin on this link, and how often it ended.
    known: HashMap<TxnId, u32>,
    /// Ended handles, kept to try them again (misuse).
    stale: Vec<TxnId>,
}

struct End {
    link: Link,
    /// Messages written since the last transmit: the record being built.
    out: Vec<u8>,
    books: Books,
}

impl End {
    fn new() -> End {
        End { link: Link::new(), out: Vec::new(), books: Books::default() }
    }
}

/// A record in flight, and whether the attacker made it.
struct InFlight {
    plaintext: Vec<u8>,
    injected: bool,
}

struct World {
    /// Side 0 is A (which receives injected input), side 1 is B.
    ends: [End; 2],
    /// Records in flight toward each side.
    wires: [VecDeque<InFlight>; 2],
    /// Transactions (A's view) that injected input touched, and those stacked inside them.
    tainted: HashSet<Key>,
    /// Whether anything was injected on this link.
    injected: bool,
    /// Every transaction either side opened on this link, as A names it (A opened it, msgid).
    wire_ids: Vec<Key>,
    /// The link closed on an error: provoked or not, the run goes on with a fresh link.
    closed_on_error: bool,
}

fn other(side: usize) -> usize {
    1 - side
}

/// Side A's key for a message that crossed the link toward `to`: its transaction and parent.
fn keys_at_a(to: usize, message: &Message<&[u8]>) -> (Key, Option<Key>) {
    let flags = message.flags();
    // The receiver opened it when REPLY is set; A opened it when A is that receiver, or when A
    // sent it without REPLY.
    let opened_by_receiver = flags.contains(Flags::REPLY);
    let a_opened = if to == 0 { opened_by_receiver } else { !opened_by_receiver };
    let key = (a_opened, message.msgid().0);
    let parent = (!message.parent().is_root()).then(|| {
        let receivers = flags.contains(Flags::REV_PARENT);
        let a_parent = if to == 0 { receivers } else { !receivers };
        (a_parent, message.parent().0)
    });
    (key, parent)
}

impl World {
    fn new() -> World {
        World {
            ends: [End::new(), End::new()],
            wires: [VecDeque::new(), VecDeque::new()],
            tainted: HashSet::new(),
            injected: false,
            wire_ids: Vec::new(),
            closed_on_error: false,
        }
    }

    /// Hands every pending event of `side` to its books.
    fn drain(&mut self, side: usize) {
        let end = &mut self.ends[side];
        while let Some(event) = end.link.poll_event() {
            match event {
                Event::Delivery(delivery) => {
                    assert!(end.link.is_down(), "a synthesized close while the link is up");
                    assert!(delivery.is_forced_close());
                    assert_eq!(delivery.payload, b"");
                    assert!(end.books.live.contains(&delivery.txn), "close of a dead txn");
                }
                Event::Ended { txn, .. } => {
                    let count = end.books.known.get_mut(&txn);
                    let count =
                        count.unwrap_or_else(|| panic!("side {side}: end of unknown {txn}"));
                    *count += 1;
                    assert_eq!(*count, 1, "side {side}: {txn} ended twice");
                    end.books.live.retain(|&t| t != txn);
                    end.books.stale.push(txn);
                }
            }
        }
    }

    /// Takes the link down at both ends (after an error, or a cut) and checks the books, then
    /// starts a fresh link. The dead link is tried once more: every call is refused.
    fn cut(&mut self, input: &mut Input<'_>) {
        crate::trace!(
            "link down: {} and {} transactions seen",
            self.ends[0].books.known.len(),
            self.ends[1].books.known.len()
        );
        for side in 0..2 {
            self.ends[side].link.handle_link_down(ErrorCode::LOST_LINK);
            self.drain(side);
            let end = &self.ends[side];
            assert!(end.link.is_empty(), "side {side}: {} left after link down", end.link.len());
            assert!(end.books.live.is_empty(), "side {side}: live after link down");
            for (txn, &count) in &end.books.known {
                assert_eq!(count, 1, "side {side}: {txn} must end exactly once");
            }
        }
        let side = input.below(2);
        let dead = &mut self.ends[side];
        let txn = dead.books.stale.last().copied();
        let before = format!("{:?}", dead.link);
        let written = dead.out.len();
        let result = match (input.below(3), txn) {
            (0, Some(txn)) => dead.link.close(&mut dead.out, txn, ErrorCode::NONE),
            (1, _) => dead.link.open(&mut dead.out, None, CMD, b"", Flags::NONE).map(|_| ()),
            _ => dead.link.send_oneway(&mut dead.out, CMD, ErrorCode::NONE, b""),
        };
        assert_eq!(result, Err(Misuse::LinkDown.into()));
        let mut message = Vec::new();
        message.put(&Repr { command: CMD, ..Repr::default() }, b"");
        let parsed = Message::new_checked(&message[..]).expect("a one-way message");
        let result = dead.link.handle_message(&mut dead.out, &parsed);
        assert_eq!(result, Err(Misuse::LinkDown.into()));
        assert_eq!(before, format!("{:?}", dead.link), "the dead link changed");
        assert_eq!(dead.out.len(), written, "the dead link wrote");
        *self = World::new();
    }

    /// Moves what `side` wrote into a record (or several, at the record bound) toward the
    /// other side.
    fn transmit(&mut self, side: usize) {
        let out = std::mem::take(&mut self.ends[side].out);
        let mut start = 0;
        while start < out.len() {
            let mut end = start;
            while end < out.len() {
                let len = Message::new_unchecked(&out[end..]).wire_len();
                if end + len - start > RECORD_PLAINTEXT_MAX {
                    break;
                }
                end += len;
            }
            let plaintext = out[start..end].to_vec();
            self.wires[other(side)].push_back(InFlight { plaintext, injected: false });
            start = end;
        }
    }

    /// Delivers the next record in flight toward `to`. Returns false if none was.
    fn deliver(&mut self, to: usize, input: &mut Input<'_>) -> bool {
        let Some(record) = self.wires[to].pop_front() else { return false };
        // Framed as on the wire (the tag left zero: sealing is the cipher's).
        let header = RecordHeader { plaintext_len: record.plaintext.len(), key_phase: false };
        let mut wire = vec![0u8; header.wire_len()];
        header.emit(&mut wire);
        wire[8..8 + record.plaintext.len()].copy_from_slice(&record.plaintext);
        let framed = Record::new_checked(&wire[..]).expect("a record the harness framed");
        for message in Messages::new(framed.body()) {
            let end = &mut self.ends[to];
            let keys = message.as_ref().ok().map(|m| keys_at_a(to, m));
            if record.injected {
                // Whatever it touched at A is the attacker's from now on.
                if let Some((key, _)) = keys {
                    self.tainted.insert(key);
                }
            } else if let Some((key, Some(parent))) = keys
                && self.tainted.contains(&parent)
            {
                // Opened inside a touched transaction.
                self.tainted.insert(key);
            }
            // A message `in_stream` vouches for may only be delivered: the relay forwards such
            // messages whole without handing them to `handle_message`.
            let vouched =
                message.as_ref().ok().and_then(|m| end.link.in_stream(m.flags(), m.msgid()));
            let before = vouched.map(|_| (format!("{:?}", end.link), end.out.len()));
            let result = message.and_then(|m| end.link.handle_message(&mut end.out, &m));
            if let (Some(txn), Some((state, written))) = (vouched, before) {
                crate::trace!("side {to}: in_stream vouches for {txn}");
                match &result {
                    Ok(Some(Received::Txn(d)))
                        if d.txn == txn && d.flags.without(Flags::REPLY) == Flags::NONE => {}
                    other => panic!("in_stream vouched for {txn}, handle_message gave {other:?}"),
                }
                assert_eq!(state, format!("{:?}", end.link), "a vouched message changed the link");
                assert_eq!(written, end.out.len(), "a vouched message made the link write");
            }
            match result {
                Ok(Some(Received::Txn(delivery))) => {
                    if delivery.opens() {
                        assert!(!end.books.known.contains_key(&delivery.txn), "reopened");
                        end.books.known.insert(delivery.txn, 0);
                        end.books.live.push(delivery.txn);
                    } else {
                        assert!(end.books.live.contains(&delivery.txn), "delivery on a dead txn");
                    }
                }
                Ok(Some(Received::OneWay { .. }) | None) => {}
                Err(error) => {
                    crate::trace!("side {to} refuses (injected {}): {error}", record.injected);
                    assert!(error.closes_link(), "side {to}: {error} does not close the link");
                    if !record.injected {
                        let provoked = keys.is_some_and(|(key, parent)| {
                            self.tainted.contains(&key)
                                || parent.is_some_and(|p| self.tainted.contains(&p))
                        });
                        assert!(
                            provoked,
                            "side {to} refused an honest message that nothing injected \
                             provoked: {error} (injected on this link: {})",
                            self.injected
                        );
                    }
                    self.cut(input);
                    self.closed_on_error = true;
                    return true;
                }
            }
            self.drain(to);
        }
        true
    }

    /// Queues an injected record toward A, somewhere among B's records in flight.
    fn inject(&mut self, input: &mut Input<'_>) {
        let mut plaintext = Vec::new();
        for _ in 0..1 + input.below(3) {
            self.injected_message(input, &mut plaintext);
        }
        if plaintext.is_empty() {
            return;
        }
        self.injected = true;
        let at = input.below(self.wires[0].len() + 1);
        self.wires[0].insert(at, InFlight { plaintext, injected: true });
    }

    /// An id worth trying: one that is or was in use on the link, a small one, or anything.
    fn some_msgid(&self, input: &mut Input<'_>) -> u64 {
        match input.below(5) {
            0 | 1 if !self.wire_ids.is_empty() => self.wire_ids[input.below(self.wire_ids.len())].1,
            2 => u64::MAX,
            3 => input.u64(),
            _ => 1 + input.below(8) as u64,
        }
    }

    /// One injected message: mostly one the message rules admit, naming a transaction the link
    /// knows the way B would name it (so that it reaches the transaction layer's own rules);
    /// sometimes any header, or bytes that do not parse.
    fn injected_message(&self, input: &mut Input<'_>, out: &mut Vec<u8>) {
        if input.one_in(32) {
            // Bytes that need not parse at all.
            let mut junk = input.vec(48);
            junk.resize(junk.len().div_ceil(8).max(4) * 8, 0);
            out.extend_from_slice(&junk);
            return;
        }
        let known = pick_key(input, &self.wire_ids);
        let bits = |input: &mut Input<'_>, of: &[Flags]| {
            of.iter().fold(Flags::NONE, |acc, &f| if input.bool() { acc | f } else { acc })
        };
        let (flags, msgid, parent) = match (input.below(16), known) {
            (0, _) => {
                // Any header at all.
                let flags = Flags::from_bits(input.u8() & 0x1f).expect("defined bits only");
                let msgid = if input.one_in(8) { 0 } else { self.some_msgid(input) };
                let parent = if input.one_in(3) { self.some_msgid(input) } else { 0 };
                (flags, msgid, parent)
            }
            (1, _) => (Flags::NONE, 0, 0),
            (2..=9, Some((true, msgid))) => {
                // On one of A's transactions, as its peer: a reply.
                let of = [Flags::CREATE, Flags::DELETE, Flags::ABORT];
                (Flags::REPLY | bits(input, &of), msgid, 0)
            }
            (2..=9, Some((false, msgid))) => {
                // On one of B's, as its opener.
                let of = [Flags::DELETE, Flags::ABORT];
                let create = if input.one_in(8) { Flags::CREATE } else { Flags::NONE };
                (create | bits(input, &of), msgid, 0)
            }
            _ => {
                // A new transaction of B's, at the top or inside one the link knows.
                let msgid =
                    if input.bool() { self.some_msgid(input) } else { 1 + input.below(24) as u64 };
                let delete = if input.one_in(4) { Flags::DELETE } else { Flags::NONE };
                match known.filter(|_| input.bool()) {
                    Some((a_opened, parent)) => {
                        let rev = if a_opened { Flags::REV_PARENT } else { Flags::NONE };
                        (Flags::CREATE | delete | rev, msgid, parent)
                    }
                    None => (Flags::CREATE | delete, msgid, 0),
                }
            }
        };
        let command = if input.bool() { CMD } else { Command::new(input.u8(), input.u16()) };
        let error = ErrorCode(input.below(8) as u32);
        let len = input.below(40);
        let repr = Repr {
            flags,
            command,
            msgid: MsgId(msgid),
            parent: MsgId(parent),
            error,
            payload_len: len as u32,
        };
        let at = out.len();
        // Emit through a scratch header so that combinations the message rules refuse are
        // written too (`Repr::emit` only writes valid ones).
        let valid = Repr { flags: Flags::NONE, msgid: MsgId::ROOT, parent: MsgId::ROOT, ..repr };
        out.put(&valid, &PAYLOAD[..len]);
        out[at] = flags.bits();
        out[at + 8..at + 16].copy_from_slice(&msgid.to_le_bytes());
        out[at + 16..at + 24].copy_from_slice(&parent.to_le_bytes());
        debug_assert!(out.len() - at >= MESSAGE_HEADER_LEN);
    }

    /// One local operation of `side`'s application, chosen by the input. Refusals must be
    /// local misuse (or a local limit) and change nothing.
    fn local(&mut self, side: usize, input: &mut Input<'_>) {
        let a_side = side == 0;
        let end = &mut self.ends[side];
        let pick_live = |input: &mut Input<'_>, books: &Books| {
            (!books.live.is_empty()).then(|| books.live[input.below(books.live.len())])
        };
        // A handle: mostly a live one, sometimes a stale one.
        let txn = if input.one_in(8) && !end.books.stale.is_empty() {
            Some(end.books.stale[input.below(end.books.stale.len())])
        } else {
            pick_live(input, &end.books)
        };
        let len = input.below(PAYLOAD.len() + 1);
        let big;
        let payload: &[u8] = if input.one_in(64) {
            big = vec![0u8; MESSAGE_PAYLOAD_MAX + 1];
            &big
        } else {
            &PAYLOAD[..len]
        };
        let error = ErrorCode(input.below(4) as u32);
        let before = format!("{:?}", end.link);
        let written = end.out.len();
        let result = match input.below(7) {
            0 | 1 => {
                let parent = if input.bool() { txn } else { None };
                let flags = if input.bool() { Flags::DELETE } else { Flags::NONE };
                let opened = end.link.open(&mut end.out, parent, CMD, payload, flags);
                if let Ok(txn) = opened {
                    end.books.known.insert(txn, 0);
                    end.books.live.push(txn);
                    let msgid = end.link.msgid(txn).expect("just opened").0;
                    self.wire_ids.push((a_side, msgid));
                    if a_side {
                        taint_child(&mut self.tainted, &end.link, parent, txn);
                    }
                }
                opened.map(|_| ())
            }
            2 => match txn {
                Some(txn) => {
                    let flags =
                        [Flags::NONE, Flags::ABORT, Flags::DELETE, Flags::ABORT | Flags::DELETE]
                            [input.below(4)];
                    // What `in_stream_header` promises a plain send writes (the relay writes
                    // forwarded headers from it).
                    let promised = end.link.in_stream_header(txn);
                    let at = end.out.len();
                    let sent = end.link.send(&mut end.out, txn, CMD, payload, flags, error);
                    if sent.is_ok() && flags == Flags::NONE {
                        let written = Message::new_checked(&end.out[at..]).expect("a sent message");
                        match promised {
                            Some(header) => {
                                assert_eq!(
                                    (written.flags(), written.msgid()),
                                    header,
                                    "in_stream_header"
                                )
                            }
                            None => assert!(
                                written.flags().contains(Flags::CREATE),
                                "no header promised"
                            ),
                        }
                    }
                    sent
                }
                None => Ok(()),
            },
            3 => match txn {
                Some(txn) => end.link.close(&mut end.out, txn, error),
                None => Ok(()),
            },
            4 => match txn {
                Some(txn) => end.link.abort(&mut end.out, txn, ErrorCode::ABORTED),
                None => Ok(()),
            },
            5 => end.link.send_oneway(&mut end.out, Command::new(7, 7), error, payload),
            _ => {
                // Deeper and deeper: past the depth bound the open is refused.
                let mut parent = txn;
                let mut result = Ok(());
                for _ in 0..input.below(10) {
                    let before = format!("{:?}", end.link);
                    let written = end.out.len();
                    match end.link.open(&mut end.out, parent, CMD, b"", Flags::NONE) {
                        Ok(child) => {
                            end.books.known.insert(child, 0);
                            end.books.live.push(child);
                            let msgid = end.link.msgid(child).expect("just opened").0;
                            self.wire_ids.push((a_side, msgid));
                            if a_side {
                                taint_child(&mut self.tainted, &end.link, parent, child);
                            }
                            parent = Some(child);
                        }
                        Err(error) => {
                            check_refusal(&end.books, error, &before, &end.link, written, &end.out);
                            result = Ok(());
                            break;
                        }
                    }
                }
                result
            }
        };
        if let Err(error) = result {
            check_refusal(&end.books, error, &before, &end.link, written, &end.out);
        }
        self.drain(side);
    }

    /// Without injection: both applications close everything they know until both tables
    /// are empty.
    fn close_everything(&mut self, input: &mut Input<'_>) {
        for _ in 0..64 {
            for side in 0..2 {
                let end = &mut self.ends[side];
                for txn in end.books.live.clone() {
                    match end.link.close(&mut end.out, txn, ErrorCode::NONE) {
                        Ok(()) | Err(Error::Misuse(Misuse::AlreadyClosed(_))) => {}
                        Err(error) => panic!("side {side}: closing {txn}: {error}"),
                    }
                }
                self.drain(side);
            }
            for _ in 0..64 {
                self.transmit(0);
                self.transmit(1);
                let moved = self.deliver(0, input) | self.deliver(1, input);
                if self.closed_on_error {
                    return;
                }
                if !moved {
                    break;
                }
            }
            if self.ends.iter().all(|end| end.link.is_empty()) {
                return;
            }
        }
        panic!(
            "the links did not empty once everything was closed: {} and {} left",
            self.ends[0].link.len(),
            self.ends[1].link.len()
        );
    }
}

fn pick_key(input: &mut Input<'_>, keys: &[Key]) -> Option<Key> {
    (!keys.is_empty()).then(|| keys[input.below(keys.len())])
}

/// At A: a transaction opened inside a touched one is touched too. (Whose the parent is, A's
/// or B's, the public API does not say: either key counts.)
fn taint_child(tainted: &mut HashSet<Key>, link: &Link, parent: Option<TxnId>, child: TxnId) {
    let Some(parent) = parent.and_then(|p| link.msgid(p)) else { return };
    if tainted.contains(&(true, parent.0)) || tainted.contains(&(false, parent.0)) {
        let child = link.msgid(child).expect("just opened");
        tainted.insert((true, child.0));
    }
}

/// A refused local operation: misuse or a local limit, the link unchanged, nothing written.
fn check_refusal(
    books: &Books,
    error: Error,
    before: &str,
    link: &Link,
    written: usize,
    out: &[u8],
) {
    assert!(!error.closes_link(), "a local operation failed with {error}, which closes the link");
    match error {
        Error::Misuse(Misuse::UnknownTransaction(txn)) => {
            assert!(!books.live.contains(&txn), "{txn} refused as unknown but never ended");
        }
        Error::Misuse(_) | Error::LimitReached(_) => {}
        error => panic!("a local operation failed with {error}"),
    }
    assert_eq!(before, format!("{link:?}"), "refused ({error}) but the link changed");
    assert_eq!(written, out.len(), "refused ({error}) but something was written");
}

/// Runs one operation sequence; panics on any broken rule.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let mut world = World::new();
    for _ in 0..OPS_MAX {
        if input.is_empty() {
            break;
        }
        match input.below(16) {
            0..=5 => {
                let side = input.below(2);
                world.local(side, &mut input);
            }
            6 | 7 => {
                let side = input.below(2);
                world.transmit(side);
            }
            8..=11 => {
                let to = input.below(2);
                for _ in 0..1 + input.below(4) {
                    world.deliver(to, &mut input);
                }
            }
            12 | 13 => world.inject(&mut input),
            14 => {
                if input.one_in(4) {
                    world.cut(&mut input);
                }
            }
            _ => {
                // Everything in flight arrives.
                world.transmit(0);
                world.transmit(1);
                while world.deliver(0, &mut input) | world.deliver(1, &mut input) {}
            }
        }
        world.closed_on_error = false;
    }
    if !world.injected {
        world.close_everything(&mut input);
        if !world.closed_on_error {
            for end in &world.ends {
                assert!(end.books.live.is_empty(), "a transaction outlived closing everything");
            }
        }
    }
    world.cut(&mut input);
}
