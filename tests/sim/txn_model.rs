//! Property tests: random operation sequences from both sides of a link, with random link cuts,
//! must leave every transaction ended exactly once at each end and both tables empty.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use ringspan::error::{Error, Misuse};
use ringspan::ids::TxnId;
use ringspan::sim::pair::{Output, Pair, Parts, Side};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command, ErrorCode, Flags};

const CMD: Command = Command::new(9, 1);

#[derive(Debug, Clone)]
enum Op {
    /// Open a transaction, top-level or inside one of the side's live transactions.
    Open { side: Side, parent: Option<usize>, one_shot: bool, len: usize },
    /// Send a message (or an advisory abort) on a live transaction.
    Send { side: Side, txn: usize, len: usize, advisory_abort: bool },
    /// Close our direction of a live transaction.
    Close { side: Side, txn: usize },
    /// Force-close a live transaction and its subtree.
    Abort { side: Side, txn: usize },
    /// Frame what was sent and deliver whatever has arrived.
    Deliver,
    /// Let virtual time pass so in-flight records arrive.
    Advance,
    /// Cut the link; a fresh link replaces it.
    Cut,
}

fn side() -> impl Strategy<Value = Side> {
    prop_oneof![Just(Side::A), Just(Side::B)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (side(), proptest::option::of(0usize..64), any::<bool>(), 0usize..40)
            .prop_map(|(side, parent, one_shot, len)| Op::Open { side, parent, one_shot, len }),
        4 => (side(), 0usize..64, 0usize..40, proptest::bool::weighted(0.1))
            .prop_map(|(side, txn, len, advisory_abort)| Op::Send { side, txn, len, advisory_abort }),
        3 => (side(), 0usize..64).prop_map(|(side, txn)| Op::Close { side, txn }),
        1 => (side(), 0usize..64).prop_map(|(side, txn)| Op::Abort { side, txn }),
        3 => Just(Op::Deliver),
        2 => Just(Op::Advance),
        1 => prop_oneof![9 => Just(Op::Deliver), 1 => Just(Op::Cut)],
    ]
}

/// What one side's application knows.
#[derive(Default, Debug)]
struct Books {
    /// Transactions this side has seen begin: opened here, or opened by the peer.
    live: Vec<TxnId>,
    /// Transactions stacked inside another.
    stacked: HashMap<TxnId, ()>,
    opened_here: usize,
    opened_by_peer: usize,
    ended: HashMap<TxnId, u32>,
    known: HashMap<TxnId, ()>,
    /// Anything that must never happen between two correct ends.
    failures: Vec<String>,
}

#[derive(Default, Debug)]
struct Model {
    a: Books,
    b: Books,
}

impl Model {
    fn books(&mut self, side: Side) -> &mut Books {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn app(&mut self) -> impl FnMut(Side, &mut Parts<'_>, Output<'_>) + '_ {
        move |side, _peer, output| {
            let books = self.books(side);
            match output {
                Output::Received(Received::Txn(d)) if d.opens() => {
                    if d.parent.is_some() {
                        books.stacked.insert(d.txn, ());
                    }
                    books.opened_by_peer += 1;
                    books.live.push(d.txn);
                    books.known.insert(d.txn, ());
                }
                Output::Received(_) | Output::Event(Event::Delivery(_)) => {}
                Output::Event(Event::Ended { txn, .. }) => {
                    if !books.known.contains_key(&txn) {
                        books.failures.push(format!("{side:?}: end of unknown {txn}"));
                    }
                    *books.ended.entry(txn).or_default() += 1;
                    books.live.retain(|&t| t != txn);
                }
                Output::Closed(reason) => {
                    books.failures.push(format!("{side:?}: link closed: {reason}"));
                }
            }
        }
    }

    /// Checks the books of the link that just finished, then starts afresh.
    fn settle(&mut self, graceful: bool) -> Result<(), TestCaseError> {
        for (side, books) in [(Side::A, &self.a), (Side::B, &self.b)] {
            prop_assert!(books.failures.is_empty(), "{:?}", books.failures);
            for txn in books.known.keys() {
                prop_assert_eq!(
                    books.ended.get(txn).copied(),
                    Some(1),
                    "{:?}: {} must end exactly once",
                    side,
                    txn
                );
            }
            prop_assert_eq!(books.ended.len(), books.known.len());
            prop_assert!(books.live.is_empty());
        }
        if graceful {
            // Nothing was lost in flight: every open was seen by the other side.
            prop_assert_eq!(self.a.opened_here, self.b.opened_by_peer);
            prop_assert_eq!(self.b.opened_here, self.a.opened_by_peer);
        }
        *self = Model::default();
        Ok(())
    }
}

fn pick(live: &[TxnId], index: usize) -> Option<TxnId> {
    (!live.is_empty()).then(|| live[index % live.len()])
}

/// Errors a random application may provoke; anything else fails the test.
fn expected(result: Result<(), Error>) -> Result<(), TestCaseError> {
    match result {
        Ok(()) => Ok(()),
        Err(Error::Misuse(Misuse::AlreadyClosed(_) | Misuse::ParentClosed(_))) => Ok(()),
        Err(Error::LimitReached(_)) => Ok(()),
        Err(error) => Err(TestCaseError::fail(format!("unexpected error {error}"))),
    }
}

fn drain_events(pair: &mut Pair, model: &mut Model) {
    let mut app = model.app();
    for side in [Side::A, Side::B] {
        // A closed link's events were all shown when it closed.
        let Some(mut parts) = pair.peer(side).try_parts() else { continue };
        while let Some(event) = parts.txn.poll_event() {
            app(side, &mut parts, Output::Event(event));
        }
    }
}

fn apply(pair: &mut Pair, model: &mut Model, op: &Op) -> Result<(), TestCaseError> {
    let payload = [0x5a; 64];
    match *op {
        Op::Open { side, parent, one_shot, len } => {
            let parent = parent.and_then(|i| pick(&model.books(side).live, i));
            let flags = if one_shot { Flags::DELETE } else { Flags::NONE };
            let mut peer = pair.peer(side).parts();
            match peer.txn.open(&mut peer.out, parent, CMD, &payload[..len], flags) {
                Ok(txn) => {
                    let books = model.books(side);
                    if parent.is_some() {
                        books.stacked.insert(txn, ());
                    }
                    books.opened_here += 1;
                    books.live.push(txn);
                    books.known.insert(txn, ());
                }
                Err(error) => expected(Err(error))?,
            }
        }
        Op::Send { side, txn, len, advisory_abort } => {
            if let Some(txn) = pick(&model.books(side).live, txn) {
                let flags = if advisory_abort { Flags::ABORT } else { Flags::NONE };
                let mut peer = pair.peer(side).parts();
                let result =
                    peer.txn.send(&mut peer.out, txn, CMD, &payload[..len], flags, ErrorCode::NONE);
                expected(result)?;
            }
        }
        Op::Close { side, txn } => {
            if let Some(txn) = pick(&model.books(side).live, txn) {
                let mut peer = pair.peer(side).parts();
                expected(peer.txn.close(&mut peer.out, txn, ErrorCode::NONE))?;
            }
        }
        Op::Abort { side, txn } => {
            if let Some(txn) = pick(&model.books(side).live, txn) {
                let mut peer = pair.peer(side).parts();
                expected(peer.txn.abort(&mut peer.out, txn, ErrorCode::ABORTED))?;
            }
        }
        Op::Deliver => {
            pair.transmit();
            pair.deliver(&mut model.app());
        }
        Op::Advance => pair.advance(Duration::from_micros(100)),
        Op::Cut => {
            pair.cut(&mut model.app());
            model.settle(false)?;
            *pair = Pair::new(Duration::from_micros(100));
        }
    }
    drain_events(pair, model);
    Ok(())
}

/// Both applications close every transaction they know until the link is empty.
fn close_everything(pair: &mut Pair, model: &mut Model) -> Result<(), TestCaseError> {
    for _ in 0..64 {
        for side in [Side::A, Side::B] {
            let live = model.books(side).live.clone();
            let mut peer = pair.peer(side).parts();
            for txn in live {
                expected(peer.txn.close(&mut peer.out, txn, ErrorCode::NONE))?;
            }
        }
        drain_events(pair, model);
        pair.drive_bounded(10_000, &mut model.app())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        drain_events(pair, model);
        if pair.a.txn().is_empty() && pair.b.txn().is_empty() {
            return Ok(());
        }
    }
    Err(TestCaseError::fail("links did not empty after everything was closed"))
}

/// Only side A acts: it forces every *top-level* transaction it knows, twice (the second round
/// catches top-level transactions whose CREATE was in flight). Stacked transactions, including
/// those B opens while the force is in flight, must end through the cascade alone; and B's
/// application does nothing, so every end at B comes from its link answering forced closes.
fn force_everything_from_a(pair: &mut Pair, model: &mut Model) -> Result<(), TestCaseError> {
    for _ in 0..2 {
        let live = model.a.live.clone();
        for txn in live.into_iter().filter(|txn| !model.a.stacked.contains_key(txn)) {
            let mut peer = pair.a.parts();
            match peer.txn.abort(&mut peer.out, txn, ErrorCode::ABORTED) {
                // Already forced, or ended meanwhile by a cascade from its parent.
                Err(Error::Misuse(Misuse::UnknownTransaction(_))) => {}
                result => expected(result)?,
            }
        }
        drain_events(pair, model);
        pair.drive_bounded(10_000, &mut model.app())
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        drain_events(pair, model);
    }
    prop_assert!(pair.a.txn().is_empty(), "A still holds {}", pair.a.txn().len());
    prop_assert!(pair.b.txn().is_empty(), "B still holds {}", pair.b.txn().len());
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Ending {
    /// The link is cut.
    Cut,
    /// Both applications close everything.
    CloseAll,
    /// Only A acts, forcing everything.
    ForceFromA,
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Beside this file, as `txn_model.proptest-regressions` (the default looks for the
        // crate's `main.rs` and uses a folder beside its directory).
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_transaction_ends_exactly_once(
        ops in proptest::collection::vec(op(), 1..160),
        ending in prop_oneof![Just(Ending::Cut), Just(Ending::CloseAll), Just(Ending::ForceFromA)],
    ) {
        let mut pair = Pair::new(Duration::from_micros(100));
        let mut model = Model::default();
        for op in &ops {
            apply(&mut pair, &mut model, op)?;
        }
        match ending {
            Ending::Cut => {
                pair.cut(&mut model.app());
                model.settle(false)?;
            }
            Ending::CloseAll => {
                close_everything(&mut pair, &mut model)?;
                model.settle(true)?;
            }
            Ending::ForceFromA => {
                force_everything_from_a(&mut pair, &mut model)?;
                model.settle(true)?;
            }
        }
    }
}
