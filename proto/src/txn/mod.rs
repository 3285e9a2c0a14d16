//! Transactions on one link: the sans-IO state machine.
//!
//! A transaction is a conversation opened by either side with CREATE, carrying any number of
//! messages each way, and closed by one DELETE from each side. Transactions stack: one can be
//! opened *inside* another (its parent), which is how spans carry circuits. The rules, in
//! `docs/PROTOCOL.md` ("Transactions"), are enforced here:
//!
//! - a transaction's state is freed, and its [`Event::Ended`] emitted, only when DELETE has been
//!   both sent and received *and* no child remains; so each transaction ends exactly once at
//!   each end;
//! - ABORT alone is advisory (delivered, nothing else happens); ABORT|DELETE is a forced close:
//!   the sender forces its whole subtree, children first, and the receiver answers each with its
//!   own DELETE at once, so a forced close completes without the application's help. One
//!   ABORT|DELETE may follow a sender's own DELETE ("force after a half-close");
//! - [`Link::handle_link_down`] ends every open transaction, children before parents, with a
//!   synthesized ABORT|DELETE carrying [`ErrorCode::LOST_LINK`], delivered as an
//!   [`Event::Delivery`] exactly like a real one, then its [`Event::Ended`];
//! - anything the peer does wrong is a precise [`Error`] and the link is to be closed.
//!
//! # Calling contract
//!
//! Feed each received message to [`Link::handle_message`]; act on what it returns, then drain
//! [`Link::poll_event`] until it returns `None`. Send with [`Link::open`], [`Link::send`],
//! [`Link::close`], [`Link::abort`] and [`Link::send_oneway`]. Every method that may emit
//! messages takes a [`Sink`]: the caller owns the bytes and decides how they become records.
//! After a method returns an error, nothing was emitted and no state changed, except for errors
//! that close the link, after which the caller calls [`Link::handle_link_down`].
//!
//! Nothing here allocates once the tables have grown to a link's working size.

#![forbid(unsafe_code)]

use std::collections::{HashMap, VecDeque};

use slab::Slab;

use crate::error::{Error, Limit, Misuse, Violation};
use crate::ids::{MsgId, TxnId};
use crate::limits::{
    LOCAL_TXNS_PER_LINK_MAX, MESSAGE_PAYLOAD_MAX, PEER_TXNS_PER_LINK_MAX, TXN_DEPTH_MAX,
};
use crate::wire::{Command, ErrorCode, Flags, Message, Repr, Sink};

/// Something received on a link, for the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received<'a> {
    /// A message outside any transaction.
    OneWay {
        /// Its command.
        command: Command,
        /// Its error code.
        error: ErrorCode,
        /// Its payload, borrowed from the record.
        payload: &'a [u8],
    },
    /// A message of a transaction.
    Txn(Delivery<'a>),
}

/// A transaction message delivered to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery<'a> {
    /// The transaction.
    pub txn: TxnId,
    /// Its parent, if it is stacked inside another.
    pub parent: Option<TxnId>,
    /// Flags as the peer sent them (or as it would have, for a synthesized close).
    pub flags: Flags,
    /// The message's command.
    pub command: Command,
    /// The message's error code.
    pub error: ErrorCode,
    /// The payload, borrowed from the record (empty for a synthesized close).
    pub payload: &'a [u8],
}

impl Delivery<'_> {
    /// Whether this message opens a transaction the peer started.
    pub fn opens(&self) -> bool {
        self.flags.contains(Flags::CREATE) && !self.flags.contains(Flags::REPLY)
    }

    /// Whether this is the peer's last message on the transaction.
    pub fn closes(&self) -> bool {
        self.flags.contains(Flags::DELETE)
    }

    /// Whether this is a forced close (ABORT|DELETE).
    pub fn is_forced_close(&self) -> bool {
        self.flags.contains(Flags::ABORT | Flags::DELETE)
    }
}

/// Lifecycle output of a [`Link`], drained with [`Link::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A message the peer did not send but would have: the close of a transaction on a lost link.
    Delivery(Delivery<'static>),
    /// The transaction is over at this end and its handle is dead. Emitted exactly once per
    /// transaction.
    Ended {
        /// The transaction.
        txn: TxnId,
        /// The first error carried by a DELETE either way (a forced close, a synthesized close on
        /// a lost link, or a close with an error), or [`ErrorCode::NONE`].
        error: ErrorCode,
    },
}

/// The transactions of one link.
#[derive(Debug)]
pub struct Link {
    states: Slab<State>,
    /// Wire identity (who opened it, its msgid) to table slot, once the link holds more than
    /// [`SCAN_MAX`] transactions; below that (every idle link) `states` is scanned instead and
    /// there is no index. Kept until the link has no transaction left.
    // Boxed on purpose: 8 bytes inline instead of 40 in every link, the index being rare.
    #[allow(clippy::box_collection)]
    index: Option<Box<HashMap<Key, u32, foldhash::fast::RandomState>>>,
    /// The msgid for the next transaction we open. Starts at 1; zero is the link itself.
    next_msgid: u64,
    /// Stamped on each new state, so stale [`TxnId`]s are refused.
    next_generation: u32,
    events: VecDeque<Event>,
    down: bool,
    /// Live transactions we opened (the rest of `states` the peer opened).
    opened_locally: usize,
    /// The most transactions the peer may have open ([`Link::set_peer_transactions_max`]).
    peer_max: u32,
}

/// Who opened a transaction and its msgid: what a message's (REPLY, msgid) names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    ours: bool,
    msgid: u64,
}

/// What has passed in one direction of a transaction.
#[derive(Clone, Copy, Debug, Default)]
struct Half {
    created: bool,
    deleted: bool,
    /// An ABORT|DELETE went this way (possibly after a plain DELETE).
    forced: bool,
}

const NIL: u32 = u32::MAX;

/// Up to this many transactions a link finds one by scanning its table instead of hashing: as
/// fast for so few, and it spares an idle link the index's allocation.
const SCAN_MAX: usize = 8;

#[derive(Debug)]
struct State {
    generation: u32,
    msgid: MsgId,
    /// We opened it (so the peer's messages on it carry REPLY).
    ours: bool,
    /// The command it was opened with: used for the messages this layer sends on its own.
    command: Command,
    depth: u32,
    sent: Half,
    received: Half,
    error: ErrorCode,
    parent: u32,
    first_child: u32,
    prev_sibling: u32,
    next_sibling: u32,
}

impl Default for Link {
    fn default() -> Link {
        Link::new()
    }
}

impl Link {
    /// A link with no transactions.
    pub fn new() -> Link {
        Link {
            states: Slab::new(),
            index: None,
            next_msgid: 1,
            next_generation: 0,
            events: VecDeque::new(),
            down: false,
            opened_locally: 0,
            peer_max: PEER_TXNS_PER_LINK_MAX as u32,
        }
    }

    /// Bounds the transactions the peer may have open at once (stacked ones included) to `max`,
    /// at most [`PEER_TXNS_PER_LINK_MAX`] (the default): one more CREATE from the peer closes the
    /// link with `Limit::PeerTransactions`. A node gives a client less than a router.
    pub fn set_peer_transactions_max(&mut self, max: usize) {
        self.peer_max = max.min(PEER_TXNS_PER_LINK_MAX) as u32;
    }

    /// Transactions open (including those waiting only for their children to end).
    pub fn len(&self) -> usize {
        self.states.len()
    }

    /// Whether no transaction is open.
    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Whether [`Link::handle_link_down`] was called.
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Whether `txn` is open on this link.
    pub fn contains(&self, txn: TxnId) -> bool {
        self.slot(txn).is_ok()
    }

    /// The wire id of `txn` (the msgid its messages carry).
    pub fn msgid(&self, txn: TxnId) -> Option<MsgId> {
        self.slot(txn).ok().map(|slot| self.states[slot as usize].msgid)
    }

    /// Next lifecycle output. Drain it after every call that handles input or sends.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Opens a transaction, inside `parent` if given, sending its CREATE (with DELETE too if
    /// `flags` has it: a one-shot request whose reply stream may still follow).
    pub fn open(
        &mut self,
        out: &mut impl Sink,
        parent: Option<TxnId>,
        command: Command,
        payload: &[u8],
        flags: Flags,
    ) -> Result<TxnId, Error> {
        self.check_up()?;
        check_payload(payload)?;
        let (parent_slot, parent_msgid, rev_parent, depth) = match parent {
            None => (NIL, MsgId::ROOT, false, 1),
            Some(parent) => {
                let slot = self.slot(parent)?;
                let state = &self.states[slot as usize];
                if state.sent.deleted {
                    return Err(Misuse::ParentClosed(parent).into());
                }
                if state.depth >= TXN_DEPTH_MAX {
                    return Err(Limit::LocalDepth(TXN_DEPTH_MAX).into());
                }
                (slot, state.msgid, !state.ours, state.depth + 1)
            }
        };
        if self.opened_locally >= LOCAL_TXNS_PER_LINK_MAX {
            return Err(Limit::LocalTransactions(LOCAL_TXNS_PER_LINK_MAX).into());
        }
        let msgid = MsgId(self.next_msgid);
        self.next_msgid += 1;
        let mut header = Flags::CREATE | (flags & Flags::DELETE);
        if rev_parent {
            header |= Flags::REV_PARENT;
        }
        let repr = Repr {
            flags: header,
            command,
            msgid,
            parent: parent_msgid,
            error: ErrorCode::NONE,
            payload_len: payload.len() as u32,
        };
        out.put(&repr, payload);
        let sent = Half { created: true, deleted: header.contains(Flags::DELETE), forced: false };
        let slot = self.insert(msgid, true, command, parent_slot, depth, sent, Half::default());
        Ok(self.txn_id(slot))
    }

    /// Sends a message on `txn`. `flags` may hold DELETE (our last message), ABORT (advisory),
    /// or both (a forced close of `txn` and everything stacked inside it). The first message we
    /// send on a transaction the peer opened carries the reply CREATE automatically.
    pub fn send(
        &mut self,
        out: &mut impl Sink,
        txn: TxnId,
        command: Command,
        payload: &[u8],
        flags: Flags,
        error: ErrorCode,
    ) -> Result<(), Error> {
        self.check_up()?;
        check_payload(payload)?;
        let slot = self.slot(txn)?;
        let flags = flags & (Flags::DELETE | Flags::ABORT);
        let state = &self.states[slot as usize];
        if flags.contains(Flags::ABORT | Flags::DELETE) {
            if state.sent.forced {
                return Err(Misuse::AlreadyClosed(txn).into());
            }
            self.force_subtree(out, slot, command, payload, error, true);
            return Ok(());
        }
        if state.sent.deleted {
            return Err(Misuse::AlreadyClosed(txn).into());
        }
        self.emit(out, slot, command, payload, flags, error);
        if flags.contains(Flags::DELETE) {
            self.try_end(slot);
        }
        Ok(())
    }

    /// Closes our direction of `txn` with an empty DELETE.
    pub fn close(
        &mut self,
        out: &mut impl Sink,
        txn: TxnId,
        error: ErrorCode,
    ) -> Result<(), Error> {
        self.check_up()?;
        let command = self.states[self.slot(txn)? as usize].command;
        self.send(out, txn, command, &[], Flags::DELETE, error)
    }

    /// Force-closes `txn` and everything stacked inside it (ABORT|DELETE, children first). Also
    /// allowed after our own DELETE, once.
    pub fn abort(
        &mut self,
        out: &mut impl Sink,
        txn: TxnId,
        error: ErrorCode,
    ) -> Result<(), Error> {
        self.check_up()?;
        let command = self.states[self.slot(txn)? as usize].command;
        self.send(out, txn, command, &[], Flags::ABORT | Flags::DELETE, error)
    }

    /// Sends a one-way message outside any transaction, with an error code (zero for none).
    pub fn send_oneway(
        &mut self,
        out: &mut impl Sink,
        command: Command,
        error: ErrorCode,
        payload: &[u8],
    ) -> Result<(), Error> {
        self.check_up()?;
        check_payload(payload)?;
        let repr = Repr { command, error, payload_len: payload.len() as u32, ..Repr::default() };
        out.put(&repr, payload);
        Ok(())
    }

    /// Whether a received message with `flags` on `msgid` is one that [`Link::handle_message`]
    /// would only deliver, changing nothing: a message in the middle of a transaction's stream
    /// (no CREATE, DELETE or ABORT) on a transaction open in the peer's direction. Then its
    /// transaction; otherwise `None`, and the message must go through `handle_message`.
    ///
    /// A relay forwarding a whole record asks this of each message instead of handling them one
    /// by one (`relay::Node::forward_record`).
    pub fn in_stream(&self, flags: Flags, msgid: MsgId) -> Option<TxnId> {
        if self.down
            || msgid.is_root()
            || flags.intersects(Flags::CREATE | Flags::DELETE | Flags::ABORT)
        {
            return None;
        }
        let slot = self.find(Key { ours: flags.contains(Flags::REPLY), msgid: msgid.0 })?;
        let state = &self.states[slot as usize];
        // Past the peer's CREATE and before its DELETE; and not a child of a transaction we are
        // forcing closed that we have not forced yet (`handle_message` would force it).
        let parent_forced = state.parent != NIL && self.states[state.parent as usize].sent.forced;
        let quiet = state.received.created
            && !state.received.deleted
            && (!parent_forced || state.sent.deleted);
        quiet.then_some(TxnId { slot, generation: state.generation })
    }

    /// The header fields [`Link::send`] would write for a message in the middle of `txn`'s
    /// stream, with no flags of its own: its flags (REPLY on a transaction the peer opened) and
    /// its msgid. `None` unless our CREATE has gone and our DELETE has not.
    pub fn in_stream_header(&self, txn: TxnId) -> Option<(Flags, MsgId)> {
        let state = self.states.get(txn.slot as usize)?;
        if self.down || state.generation != txn.generation {
            return None;
        }
        if !state.sent.created || state.sent.deleted {
            return None;
        }
        let flags = if state.ours { Flags::NONE } else { Flags::REPLY };
        Some((flags, state.msgid))
    }

    /// Handles one checked message from the peer. Returns what to deliver (`None` for a late
    /// forced close of a transaction already over, which is dropped). Replies this layer makes
    /// by itself (the DELETE answering a forced close, the forced close of a child opened under
    /// a transaction we are forcing) go to `out`.
    ///
    /// An `Err` means the peer broke the protocol: close the link with it as the reason, then
    /// call [`Link::handle_link_down`].
    pub fn handle_message<'a>(
        &mut self,
        out: &mut impl Sink,
        message: &Message<&'a [u8]>,
    ) -> Result<Option<Received<'a>>, Error> {
        self.check_up()?;
        let flags = message.flags();
        let msgid = message.msgid();
        if msgid.is_root() {
            return Ok(Some(Received::OneWay {
                command: message.command(),
                error: message.error(),
                payload: message.payload(),
            }));
        }
        let forced = flags.contains(Flags::ABORT | Flags::DELETE);
        let slot = if flags.contains(Flags::CREATE) && !flags.contains(Flags::REPLY) {
            self.accept_create(message)?
        } else {
            let key = Key { ours: flags.contains(Flags::REPLY), msgid: msgid.0 };
            let Some(slot) = self.find(key) else {
                if forced {
                    // A forced close racing the end of the transaction: already over here.
                    return Ok(None);
                }
                return Err(Violation::UnknownTransaction(msgid).into());
            };
            let received = self.states[slot as usize].received;
            if flags.contains(Flags::CREATE) {
                if received.created {
                    return Err(Violation::DuplicateReplyCreate(msgid).into());
                }
            } else if !received.created {
                return Err(Violation::ReplyBeforeCreate(msgid).into());
            }
            // After the peer's DELETE, only its one forced close may follow.
            let late_force = forced && !received.forced;
            if received.deleted && !late_force {
                return Err(Violation::MessageAfterDelete(msgid).into());
            }
            slot
        };

        let state = &mut self.states[slot as usize];
        state.received.created = true;
        if flags.contains(Flags::DELETE) {
            state.received.deleted = true;
        }
        if forced {
            state.received.forced = true;
        }
        if flags.contains(Flags::DELETE) && state.error.is_none() {
            state.error = message.error();
        }
        let delivery = Delivery {
            txn: TxnId { slot, generation: state.generation },
            parent: self.parent_id(slot),
            flags,
            command: message.command(),
            error: message.error(),
            payload: message.payload(),
        };

        let state = &self.states[slot as usize];
        let parent_forced = state.parent != NIL && self.states[state.parent as usize].sent.forced;
        if parent_forced && !state.sent.deleted {
            // Opened under a transaction we are forcing closed: force it too (which also ends
            // it, if the peer's DELETE came with its CREATE).
            let (command, error) = (state.command, self.states[state.parent as usize].error);
            self.force_subtree(out, slot, command, &[], error, false);
        } else {
            if forced && !state.sent.deleted {
                // A forced close is answered at once, without the application.
                let (command, error) = (state.command, message.error());
                self.emit(out, slot, command, &[], Flags::DELETE, error);
            }
            // Only a DELETE can end a transaction (a child's end is handled by `try_end`).
            if flags.contains(Flags::DELETE) {
                self.try_end(slot);
            }
        }
        Ok(Some(Received::Txn(delivery)))
    }

    /// The link is gone (lost, or closed because of an error): ends every transaction on it,
    /// children before parents, each with a synthesized ABORT|DELETE carrying `error` (normally
    /// [`ErrorCode::LOST_LINK`]) and then [`Event::Ended`]. Afterwards the link refuses all
    /// calls with [`Misuse::LinkDown`].
    pub fn handle_link_down(&mut self, error: ErrorCode) {
        if self.down {
            return;
        }
        self.down = true;
        // Children are deeper than their parents: deepest first puts every child first.
        for depth in (1..=TXN_DEPTH_MAX).rev() {
            for (slot, state) in self.states.iter() {
                if state.depth != depth {
                    continue;
                }
                let txn = TxnId { slot: slot as u32, generation: state.generation };
                let mut flags = Flags::ABORT | Flags::DELETE;
                if !state.received.created {
                    flags |= Flags::CREATE;
                }
                if state.ours {
                    flags |= Flags::REPLY;
                }
                let parent = (state.parent != NIL).then(|| TxnId {
                    slot: state.parent,
                    generation: self.states[state.parent as usize].generation,
                });
                // After the peer's own forced close it could have sent nothing more: only the
                // end remains to report.
                if !state.received.forced {
                    self.events.push_back(Event::Delivery(Delivery {
                        txn,
                        parent,
                        flags,
                        command: state.command,
                        error,
                        payload: &[],
                    }));
                }
                let error = if state.error.is_none() { error } else { state.error };
                self.events.push_back(Event::Ended { txn, error });
            }
        }
        self.states.clear();
        self.opened_locally = 0;
        self.forget_index();
    }

    fn check_up(&self) -> Result<(), Error> {
        if self.down { Err(Misuse::LinkDown.into()) } else { Ok(()) }
    }

    fn slot(&self, txn: TxnId) -> Result<u32, Error> {
        match self.states.get(txn.slot as usize) {
            Some(state) if state.generation == txn.generation => Ok(txn.slot),
            _ => Err(Misuse::UnknownTransaction(txn).into()),
        }
    }

    fn txn_id(&self, slot: u32) -> TxnId {
        TxnId { slot, generation: self.states[slot as usize].generation }
    }

    fn parent_id(&self, slot: u32) -> Option<TxnId> {
        let parent = self.states[slot as usize].parent;
        (parent != NIL).then(|| self.txn_id(parent))
    }

    /// Validates a peer's CREATE and makes its state.
    fn accept_create(&mut self, message: &Message<&[u8]>) -> Result<u32, Error> {
        let msgid = message.msgid();
        let key = Key { ours: false, msgid: msgid.0 };
        if self.find(key).is_some() {
            return Err(Violation::DuplicateCreate(msgid).into());
        }
        let (parent, depth) = if message.parent().is_root() {
            (NIL, 1)
        } else {
            let ours = message.flags().contains(Flags::REV_PARENT);
            let parent_key = Key { ours, msgid: message.parent().0 };
            let Some(parent) = self.find(parent_key) else {
                return Err(Violation::UnknownParent(message.parent()).into());
            };
            let state = &self.states[parent as usize];
            if state.received.deleted {
                return Err(Violation::CreateUnderClosedParent(message.parent()).into());
            }
            if state.depth >= TXN_DEPTH_MAX {
                return Err(Limit::PeerDepth(TXN_DEPTH_MAX).into());
            }
            (parent, state.depth + 1)
        };
        if self.states.len() - self.opened_locally >= self.peer_max as usize {
            return Err(Limit::PeerTransactions(self.peer_max as usize).into());
        }
        let received = Half::default();
        Ok(self.insert(msgid, false, message.command(), parent, depth, Half::default(), received))
    }

    #[allow(clippy::too_many_arguments)]
    fn insert(
        &mut self,
        msgid: MsgId,
        ours: bool,
        command: Command,
        parent: u32,
        depth: u32,
        sent: Half,
        received: Half,
    ) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let next_sibling =
            if parent == NIL { NIL } else { self.states[parent as usize].first_child };
        let slot = self.states.insert(State {
            generation,
            msgid,
            ours,
            command,
            depth,
            sent,
            received,
            error: ErrorCode::NONE,
            parent,
            first_child: NIL,
            prev_sibling: NIL,
            next_sibling,
        }) as u32;
        if parent != NIL {
            if next_sibling != NIL {
                self.states[next_sibling as usize].prev_sibling = slot;
            }
            self.states[parent as usize].first_child = slot;
        }
        if let Some(index) = &mut self.index {
            index.insert(Key { ours, msgid: msgid.0 }, slot);
        } else if self.states.len() > SCAN_MAX {
            let keys =
                self.states.iter().map(|(i, s)| (Key { ours: s.ours, msgid: s.msgid.0 }, i as u32));
            self.index = Some(Box::new(keys.collect()));
        }
        self.opened_locally += usize::from(ours);
        slot
    }

    /// The slot of the transaction `key` names, if it is open.
    fn find(&self, key: Key) -> Option<u32> {
        if let Some(index) = &self.index {
            return index.get(&key).copied();
        }
        let mut states = self.states.iter();
        states.find(|(_, s)| s.ours == key.ours && s.msgid.0 == key.msgid).map(|(i, _)| i as u32)
    }

    /// Once no transaction is left: drops the index and a table grown by a burst, so a link
    /// that was busy and is now idle holds no more than one that never was.
    fn forget_index(&mut self) {
        debug_assert!(self.states.is_empty());
        self.index = None;
        if self.states.capacity() > SCAN_MAX {
            self.states = Slab::new();
        }
    }

    /// Writes one message of `slot` in our direction and records it.
    fn emit(
        &mut self,
        out: &mut impl Sink,
        slot: u32,
        command: Command,
        payload: &[u8],
        flags: Flags,
        error: ErrorCode,
    ) {
        let state = &mut self.states[slot as usize];
        let mut header = flags;
        if !state.sent.created {
            header |= Flags::CREATE;
        }
        if !state.ours {
            header |= Flags::REPLY;
        }
        let repr = Repr {
            flags: header,
            command,
            msgid: state.msgid,
            parent: MsgId::ROOT,
            error,
            payload_len: payload.len() as u32,
        };
        out.put(&repr, payload);
        state.sent.created = true;
        if flags.contains(Flags::DELETE) {
            state.sent.deleted = true;
            if state.error.is_none() {
                state.error = error;
            }
        }
        if flags.contains(Flags::ABORT | Flags::DELETE) {
            state.sent.forced = true;
        }
    }

    /// Forces `slot` and its subtree closed: every child first, then `slot` itself with
    /// ABORT|DELETE. `after_delete`: also send it where our DELETE has already gone (an explicit
    /// request to force); otherwise only where our direction is still open.
    fn force_subtree(
        &mut self,
        out: &mut impl Sink,
        slot: u32,
        command: Command,
        payload: &[u8],
        error: ErrorCode,
        after_delete: bool,
    ) {
        let generation = self.states[slot as usize].generation;
        let mut child = self.states[slot as usize].first_child;
        while child != NIL {
            let next = self.states[child as usize].next_sibling;
            let child_command = self.states[child as usize].command;
            self.force_subtree(out, child, child_command, &[], error, after_delete);
            child = next;
        }
        // The cascade may have ended `slot` itself (both directions were already closed).
        match self.states.get(slot as usize) {
            Some(state) if state.generation == generation => {
                let needed = if after_delete {
                    let both_closed = state.sent.deleted && state.received.deleted;
                    !state.sent.forced && !both_closed
                } else {
                    !state.sent.deleted
                };
                if needed {
                    self.emit(out, slot, command, payload, Flags::ABORT | Flags::DELETE, error);
                }
                if self.states[slot as usize].error.is_none() {
                    self.states[slot as usize].error = error;
                }
                self.try_end(slot);
            }
            _ => {}
        }
    }

    /// Frees `slot` if it is over (DELETE both ways, no child left), then its ancestors that were
    /// waiting only for it.
    fn try_end(&mut self, mut slot: u32) {
        loop {
            let state = &self.states[slot as usize];
            if !(state.sent.deleted && state.received.deleted && state.first_child == NIL) {
                return;
            }
            let state = self.states.remove(slot as usize);
            if let Some(index) = &mut self.index {
                index.remove(&Key { ours: state.ours, msgid: state.msgid.0 });
            }
            self.opened_locally -= usize::from(state.ours);
            if state.prev_sibling != NIL {
                self.states[state.prev_sibling as usize].next_sibling = state.next_sibling;
            } else if state.parent != NIL {
                self.states[state.parent as usize].first_child = state.next_sibling;
            }
            if state.next_sibling != NIL {
                self.states[state.next_sibling as usize].prev_sibling = state.prev_sibling;
            }
            let txn = TxnId { slot, generation: state.generation };
            self.events.push_back(Event::Ended { txn, error: state.error });
            if state.parent == NIL {
                if self.states.is_empty() {
                    self.forget_index();
                }
                return;
            }
            slot = state.parent;
        }
    }
}

fn check_payload(payload: &[u8]) -> Result<(), Error> {
    if payload.len() > MESSAGE_PAYLOAD_MAX {
        return Err(Limit::PayloadTooLarge(payload.len()).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
