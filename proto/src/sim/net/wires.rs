//! `Net`'s links: each a pair of production [`Link`]s joined by in-memory bytes — the handshake
//! on connect, records sealed and delivered, the deadlines in one heap fired on virtual time,
//! and the faults a link can suffer (cuts, muted ends, corrupted records, close notices).

use super::*;

pub(super) struct SimLink {
    pub(super) ends: [usize; 2],
    pub(super) up: bool,
    /// Each end's protocol state.
    pub(super) links: [Link; 2],
    /// Batches in flight toward each end.
    pub(super) inflight: [VecDeque<Vec<u8>>; 2],
    /// Its index.
    pub(super) index: usize,
    /// Each end was written to since its last end of turn (and is in [`Shared::touched`]).
    pub(super) touched: [bool; 2],
    /// What each end sends is lost ([`Net::mute`]).
    pub(super) muted: [bool; 2],
    /// Each end's send, if it has been stalled since then: the other end stopped reading
    /// ([`Net::stop_reading`]).
    pub(super) stalled: [Option<Instant>; 2],
    /// The other end of each end reads nothing any more.
    pub(super) unread: [bool; 2],
    /// When each end last received bytes.
    pub(super) heard: [Instant; 2],
}

/// What every link writes through: the record buffers their streams take and give back, and
/// the ends written to since they last ended their turn.
pub(super) struct Shared {
    pub(super) pool: RefCell<Pool>,
    pub(super) touched: RefCell<Vec<(usize, usize)>>,
    /// Records put together from pieces ([`Net::with_cut_batches`]).
    pub(super) reassembled: Cell<u64>,
    /// Records forwarded whole from the buffer they were put together in.
    pub(super) moved: Cell<u64>,
}

/// A node's key pair and handshake configuration.
#[derive(Clone)]
pub(super) struct NodeKey {
    pub(super) config: Arc<cipher::Config>,
    pub(super) public: PublicKey,
}

/// The deadlines armed for the links' ends, in one heap as the engine keeps them: an entry is
/// never removed early, and one for a closed link is dropped when it comes due.
#[derive(Default)]
pub(super) struct Timers {
    pub(super) heap: BinaryHeap<Reverse<Timer>>,
    /// Entries armed so far: orders entries due at the same time by when they were armed.
    pub(super) armed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Timer {
    pub(super) at: Instant,
    pub(super) seq: u64,
    pub(super) link: usize,
    pub(super) side: usize,
    pub(super) kind: TimerKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum TimerKind {
    Keepalive,
    Idle,
    SendStall,
    Shed,
    Reassembly,
    Rekey,
}

impl TimerKind {
    pub(super) fn of(deadline: Deadline) -> TimerKind {
        match deadline {
            Deadline::Keepalive => TimerKind::Keepalive,
            Deadline::Idle => TimerKind::Idle,
            Deadline::SendStall => TimerKind::SendStall,
            Deadline::Shed => TimerKind::Shed,
            Deadline::Reassembly => TimerKind::Reassembly,
        }
    }

    pub(super) fn deadline(self) -> Option<Deadline> {
        Some(match self {
            TimerKind::Keepalive => Deadline::Keepalive,
            TimerKind::Idle => Deadline::Idle,
            TimerKind::SendStall => Deadline::SendStall,
            TimerKind::Shed => Deadline::Shed,
            TimerKind::Reassembly => Deadline::Reassembly,
            TimerKind::Rekey => return None,
        })
    }
}

impl Timers {
    pub(super) fn arm(&mut self, at: Instant, link: usize, side: usize, kind: TimerKind) {
        self.armed += 1;
        self.heap.push(Reverse(Timer { at, seq: self.armed, link, side, kind }));
    }

    /// The earliest entry due at `now`, taken off.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        let Reverse(next) = self.heap.peek()?;
        if next.at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(timer)| timer)
    }

    /// When the earliest entry comes due.
    pub(super) fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(timer)| timer.at)
    }
}

/// The node's links while it handles input that came on `id`, whose [`Link`] is busy handling
/// it: that link's own parts, and the others lent (the engine's `LinkCtx`).
pub(super) struct OnLink<'s, 'p, 'a> {
    pub(super) id: LinkId,
    pub(super) parts: &'s mut Parts<'p>,
    pub(super) others: &'s mut Lent<'a, SimLink>,
}

impl LinkSet for OnLink<'_, '_, '_> {
    type Out<'b>
        = TxSink<'b>
    where
        Self: 'b;

    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut TxSink<'_>) -> R,
    ) -> Option<R> {
        if link == self.id {
            return Some(f(self.parts.span, self.parts.txn, &mut self.parts.out.reborrow()));
        }
        self.others.lend(link, f)
    }

    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        if link == self.id {
            return Some(self.parts.span);
        }
        self.others.lend_span(link)
    }

    fn with_record<R>(
        &mut self,
        link: LinkId,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        if link == self.id {
            return None;
        }
        self.others.lend_record(link, record, edit)
    }
}

impl SimLink {
    /// End `end` was written to: its turn ends at the next launch.
    pub(super) fn touch(&mut self, end: usize, shared: &Shared) {
        if !std::mem::replace(&mut self.touched[end], true) {
            shared.touched.borrow_mut().push((self.index, end));
        }
    }
}

impl Lend for SimLink {
    type Shared = Shared;
    type Out<'b>
        = TxSink<'b>
    where
        Self: 'b;

    fn end_of(&self, node: usize) -> Option<usize> {
        self.up.then(|| usize::from(self.ends[1] == node))
    }

    /// Through the end's [`Link::parts`]: `None` once it is closed.
    fn with_end<R>(
        &mut self,
        end: usize,
        shared: &Shared,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut TxSink<'_>) -> R,
    ) -> Option<R> {
        if !self.links[end].is_established() {
            return None;
        }
        self.touch(end, shared);
        let mut parts = self.links[end].parts(&shared.pool)?;
        Some(f(parts.span, parts.txn, &mut parts.out))
    }

    /// The end's own ([`Link::span`]), up or not.
    fn span_of(&mut self, node: usize) -> Option<&mut SpanLink> {
        let end = self.ends.iter().position(|&n| n == node)?;
        Some(self.links[end].span_mut())
    }

    /// Through the end's [`Link::queue_record`].
    /// A record put together in a pooled buffer is sent on from there, as the engine does; any
    /// other is copied (the simulator lends no receive buffer).
    fn record_at<R>(
        &mut self,
        end: usize,
        shared: &Shared,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let link = &mut self.links[end];
        let result = if record.reassembled() {
            let result = link.forward_in_place(&shared.pool, record, edit)?;
            shared.moved.set(shared.moved.get() + 1);
            result
        } else {
            link.queue_record(&shared.pool, record.plaintext(), edit)?
        };
        self.touch(end, shared);
        Some(result)
    }
}

/// Record buffers in the simulator's pool: few large ones (its records are small), and small
/// ones for a node that writes to its thousand client links in one input.
pub(super) const POOL_LARGE: usize = 8;

pub(super) const POOL_SMALL: usize = 1_024;

/// Node `i`'s identity, the same across restarts: its handshakes accept any peer's key (the
/// dialling end pins the key it expects, and the harness checks both).
pub(super) fn node_key(i: usize) -> NodeKey {
    let mut private = [0x5a; 32];
    private[..8].copy_from_slice(&(i as u64).to_le_bytes());
    let identity = Identity::new(PrivateKey::from_bytes(private))
        .unwrap_or_else(|e| panic!("node {i}'s key: {e}"));
    let public = identity.public_key();
    let mut config =
        cipher::Config::new(identity).unwrap_or_else(|e| panic!("node {i}'s handshakes: {e}"));
    config.accept_unknown_keys = true;
    NodeKey { config: Arc::new(config), public }
}

impl Net {
    /// Joins `a` and `b` with a new link, `a` dialling: the handshake runs to its end (in no
    /// time), then each node hears the link is up. Returns its index.
    pub fn connect(&mut self, a: usize, b: usize) -> Result<usize, Failure> {
        let l = self.links.len();
        let links = self.handshake(a, b)?;
        let now = self.now();
        self.links.push(SimLink {
            ends: [a, b],
            up: true,
            links,
            inflight: [VecDeque::new(), VecDeque::new()],
            index: l,
            touched: [false; 2],
            muted: [false; 2],
            stalled: [None; 2],
            unread: [false; 2],
            heard: [now; 2],
        });
        // What each end closes: the new link or an older one, when the two nodes are linked
        // already (one link per adjacency; both ends decide alike).
        let mut losers = Vec::new();
        for side in 0..2 {
            let node = self.links[l].ends[side];
            let other = self.links[l].ends[1 - side];
            let peer = self.nodes[other].id;
            // Each end's key is granted what the other end says it is; the first end dials.
            let granted = self.nodes[other].role;
            let links = &mut Lent::all_with(&mut self.links, &self.shared, node);
            let up = if peer == self.nodes[node].id {
                // Two planes of one node: an internal link.
                let plane = self.nodes[other].plane;
                self.nodes[node]
                    .node
                    .sibling_up(LinkId(l as u64), plane, links)
                    .map(|()| LinkUp::Up)
                    .map_err(|e| fail(format!("sibling_up on node {node}: {e}")))?
            } else {
                self.nodes[node]
                    .node
                    .link_up(LinkId(l as u64), peer, granted, side == 0, links)
                    .map_err(|e| fail(format!("link_up on node {node}: {e}")))?
            };
            match up {
                LinkUp::Up => {}
                LinkUp::Duplicate { .. } => losers.push(l),
                LinkUp::Replaces { old } => losers.push(old.0 as usize),
            }
            self.settle(node)?;
        }
        losers.sort_unstable();
        losers.dedup();
        for loser in losers {
            self.cut(loser)?;
        }
        Ok(l)
    }

    /// The two ends of a new link from `a` to `b` (its index the next one), once a Noise
    /// handshake between the nodes' identities has run over their bytes: `a` dials and pins
    /// `b`'s key, `b` accepts any; each then checks it reached the other. The ends' deadlines
    /// are armed once both are established.
    pub(super) fn handshake(&mut self, a: usize, b: usize) -> Result<[Link; 2], Failure> {
        let l = self.links.len();
        let now = self.now();
        let failed = |e: &dyn std::fmt::Display| fail(format!("handshake {a}-{b}: {e}"));
        let dialler =
            Session::initiator(self.keys[a].config.clone(), Some(self.keys[b].public), now)
                .map_err(|e| failed(&e))?;
        let acceptor =
            Session::responder(self.keys[b].config.clone(), now).map_err(|e| failed(&e))?;
        let mut ends =
            [Link::new(Crypto::None, now), Link::new(Crypto::Handshake(Box::new(acceptor)), now)];
        ends[0].meta_mut().dialled = true;
        ends[0].start_handshake(Box::new(dialler), &mut self.shared.pool.borrow_mut());
        let mut peers = [None; 2];
        let mut deadlines = Vec::new();
        // Three frames: `a`, `b`, then `a` again.
        for _ in 0..3 {
            for side in 0..2 {
                let bytes: Vec<u8> = ends[side].transmit().flat_map(own_bytes).copied().collect();
                if bytes.is_empty() {
                    continue;
                }
                ends[side].sent(bytes.len(), &mut self.shared.pool.borrow_mut(), &mut never_lent);
                let to = &mut ends[1 - side];
                to.received_bytes(bytes.len(), now);
                let (used, done) = to
                    .handle_handshake_bytes(&bytes, now, &mut self.shared.pool.borrow_mut())
                    .map_err(|e| failed(&e))?;
                if used != bytes.len() {
                    return Err(failed(&"records before the handshake's end"));
                }
                if done {
                    let (peer, own, rekey_at) = to
                        .establish(now, self.timing.keepalive, &self.timing.periods)
                        .map_err(|e| failed(&e))?;
                    peers[1 - side] = Some(peer);
                    let own = own.map(|(deadline, at)| (at, TimerKind::of(deadline)));
                    let rekey = rekey_at.map(|at| (at, TimerKind::Rekey));
                    deadlines.extend(own.into_iter().chain(rekey).map(|entry| (1 - side, entry)));
                }
            }
        }
        if peers != [Some(self.keys[b].public), Some(self.keys[a].public)]
            || !ends.iter().all(|end| end.is_established() && end.is_idle())
        {
            return Err(failed(&"the ends did not reach each other"));
        }
        for (side, (at, kind)) in deadlines {
            self.timers.arm(at, l, side, kind);
        }
        Ok(ends)
    }

    /// A fault: from now on, what end `side` of link `l` sends is lost (what is in flight
    /// already arrives). Nothing tells either end: the other end's idle deadline finds out.
    pub fn mute(&mut self, l: usize, side: usize) {
        self.links[l].muted[side] = true;
    }

    /// A fault: from now on end `side` of link `l` reads nothing (what is in flight to it
    /// already arrives): the other end's next send never completes, and that end's send-stall
    /// deadline finds out. What end `side` sends still arrives.
    pub fn stop_reading(&mut self, l: usize, side: usize) {
        self.links[l].unread[1 - side] = true;
    }

    /// Since when end `side` of link `l` has had a send that cannot complete, if it has
    /// ([`Net::stop_reading`]).
    pub fn stalled_since(&self, l: usize, side: usize) -> Option<Instant> {
        self.links[l].stalled[side]
    }

    /// A fault: the last byte of the next batch in flight from end `side` of link `l` (the
    /// authentication tag of its last record) is flipped, so the other end fails to open that
    /// record and closes the link. `false` if nothing was in flight that way.
    pub fn corrupt(&mut self, l: usize, side: usize) -> bool {
        let Some(byte) =
            self.links[l].inflight[1 - side].front_mut().and_then(|batch| batch.last_mut())
        else {
            return false;
        };
        *byte ^= 1;
        true
    }

    /// Cuts link `l`: what is in flight is lost, both ends' transactions end.
    pub fn cut(&mut self, l: usize) -> Result<(), Failure> {
        if !self.links[l].up {
            return Ok(());
        }
        for side in 0..2 {
            let node = self.links[l].ends[side];
            if !self.nodes[node].alive || !self.links[l].links[side].is_established() {
                // A dead node's end, or one closed already (it sent a close notice).
                self.links[l].links[side].close();
                continue;
            }
            self.end_transactions(l, side, ErrorCode::LOST_LINK)?;
            self.close_end(l, side)?;
        }
        let sim = &mut self.links[l];
        sim.up = false;
        for side in 0..2 {
            sim.inflight[side].clear();
            self.busy.remove(&(l, side));
            sim.links[side].release(&mut self.shared.pool.borrow_mut(), &mut never_lent);
        }
        Ok(())
    }

    /// End `side` of link `l` closes it telling the peer why, as the engine drains a link: a
    /// `LINK_CLOSE` carrying `code` goes out, the end's transactions end at once with `code`,
    /// and once the notice is sent the end is closed (its node hears `link_down`). The other
    /// end closes when the notice arrives ([`CloseReason::PeerSaid`], in [`Net::closes`]), or
    /// by its idle deadline if it never does. `false` (nothing done) if the end is not open.
    pub fn close_with_notice(
        &mut self,
        l: usize,
        side: usize,
        code: ErrorCode,
    ) -> Result<bool, Failure> {
        let node = self.links[l].ends[side];
        let sim = &mut self.links[l];
        if !sim.up || !self.nodes[node].alive {
            return Ok(false);
        }
        if !sim.links[side].send_close_notice(code, &self.shared.pool) {
            return Ok(false);
        }
        sim.touch(side, &self.shared);
        self.end_transactions(l, side, code)?;
        // The notice goes with whatever else the node wrote meanwhile.
        self.settle(node)?;
        self.close_end(l, side)?;
        Ok(true)
    }

    /// Ends every transaction of end `side` of link `l` with `code`: its node handles the
    /// synthesized closes with the link still in its set (as the engine hands a closing link's
    /// own state with them).
    pub(super) fn end_transactions(
        &mut self,
        l: usize,
        side: usize,
        code: ErrorCode,
    ) -> Result<(), Failure> {
        let id = LinkId(l as u64);
        let node = self.links[l].ends[side];
        let Net { links, nodes, shared, .. } = self;
        let (wire, mut others) =
            Lent::split_with(links, shared, l, node).ok_or_else(|| fail("no such link".into()))?;
        let link = &mut wire.links[side];
        link.handle_link_down(code);
        if let Some(mut parts) = link.parts(&shared.pool) {
            while let Some(event) = parts.txn.poll_event() {
                let links = &mut OnLink { id, parts: &mut parts, others: &mut others };
                nodes[node]
                    .node
                    .event(id, links, event)
                    .map_err(|e| fail(format!("synthesized close refused at {node}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Closes end `side` of link `l` (nothing written on it is sent any more, and it is no
    /// longer lent) and tells its node.
    pub(super) fn close_end(&mut self, l: usize, side: usize) -> Result<(), Failure> {
        let node = self.links[l].ends[side];
        let link = &mut self.links[l].links[side];
        link.close();
        link.release(&mut self.shared.pool.borrow_mut(), &mut never_lent);
        let links = &mut Lent::all_with(&mut self.links, &self.shared, node);
        self.nodes[node].node.link_down(LinkId(l as u64), links);
        self.settle(node)
    }

    /// End `side` of link `l` closed it for `reason`: recorded, and the link is cut (the
    /// connection is gone: the other end hears of it at once).
    pub(super) fn closed(
        &mut self,
        l: usize,
        side: usize,
        reason: CloseReason,
    ) -> Result<(), Failure> {
        let node = self.links[l].ends[side];
        self.closes.push(Closed { link: l, node, reason, at: self.now() });
        self.refusals.push(format!("node {node} closed link {l}: {reason}"));
        self.cut(l)
    }

    /// Delivers one batch of bytes on one link direction chosen at random, a millisecond on;
    /// then the links' deadlines due by then fire. `false` when nothing was in flight.
    pub fn step(&mut self) -> Result<bool, Failure> {
        self.launch()?;
        if self.busy.is_empty() {
            return Ok(false);
        }
        let pick = self.rng.index(self.busy.len());
        let Some(&(l, side)) = self.busy.iter().nth(pick) else { return Ok(false) };
        let mut bytes = self.links[l].inflight[side].pop_front().unwrap_or_default();
        if self.cut_batches && bytes.len() > 1 && self.rng.index(2) == 0 {
            // The rest of the batch arrives later, before anything sent after it.
            let rest = bytes.split_off(1 + self.rng.index(bytes.len() - 1));
            self.links[l].inflight[side].push_front(rest);
        }
        if self.links[l].inflight[side].is_empty() {
            self.busy.remove(&(l, side));
        }
        self.steps += 1;
        self.elapsed += Duration::from_millis(1);
        // Half the batches have their records offered whole first, as the engine does
        // (forwarded as one record if every message in it continues on one link); the rest go
        // message by message.
        let whole_first = self.rng.index(2) == 0;
        let node = self.links[l].ends[side];
        let now = self.now();
        let links = &mut Lent::all_with(&mut self.links, &self.shared, node);
        self.nodes[node].node.handle_timeout(now, links);
        self.deliver(l, side, bytes, whole_first)?;
        self.fire_timers()?;
        Ok(true)
    }

    /// End `side` of link `l` received `bytes`: its link cuts them into records and opens them,
    /// and its node handles them (each record offered whole first if `whole_first`).
    pub(super) fn deliver(
        &mut self,
        l: usize,
        side: usize,
        mut bytes: Vec<u8>,
        whole_first: bool,
    ) -> Result<(), Failure> {
        let now = self.now();
        let id = LinkId(l as u64);
        let node = self.links[l].ends[side];
        let mut refused = None;
        let Net { links, nodes, shared, timing, timers, .. } = self;
        let (wire, mut others) =
            Lent::split_with(links, shared, l, node).ok_or_else(|| fail("no such link".into()))?;
        if !wire.links[side].is_established() {
            // That end closed (it sent a close notice): the connection is gone there.
            return Ok(());
        }
        wire.heard[side] = now;
        wire.touch(side, shared);
        let link = &mut wire.links[side];
        link.received_bytes(bytes.len(), now);
        let sim = &mut nodes[node].node;
        let periods = &timing.periods;
        let result =
            link.handle_records(&mut bytes, None, &shared.pool, now, periods, |parts, input| {
                // As the engine does, a refusal closes the link after the input; what follows it
                // is still handed over.
                let result = match input {
                    Input::Record(record) => {
                        let taken = whole_first
                            .then(|| sim.forward_record(id, parts.txn, &mut others, record));
                        return taken.flatten();
                    }
                    Input::Received(received) => {
                        sim.received(id, &mut OnLink { id, parts, others: &mut others }, received)
                    }
                    Input::Event(event) => {
                        sim.event(id, &mut OnLink { id, parts, others: &mut others }, event)
                    }
                };
                if let Err(error) = result {
                    refused.get_or_insert(error);
                }
                None
            });
        let closed = match result {
            Ok(count) => {
                let reassembled = &shared.reassembled;
                reassembled.set(reassembled.get() + count.reassembled);
                if let Some(at) = count.shed_at {
                    timers.arm(at, l, side, TimerKind::Shed);
                }
                if let Some(at) = link.arm_reassembly(now, periods) {
                    timers.arm(at, l, side, TimerKind::Reassembly);
                }
                None
            }
            Err(reason) => Some(reason),
        };
        self.settle(node)?;
        if let Some(reason) = closed {
            self.closed(l, side, reason)?;
        } else if let Some(error) = refused {
            // As the engine does: the link it came on is closed, with the reason.
            self.refusals.push(format!("node {node} closed link {l}: {error}"));
            self.cut(l)?;
        }
        Ok(())
    }

    /// Fires the links' deadlines due by now, as the engine's worker does, and puts in flight
    /// what they wrote (keepalives).
    pub(super) fn fire_timers(&mut self) -> Result<(), Failure> {
        let now = self.now();
        while let Some(timer) = self.timers.pop_due(now) {
            let (l, side) = (timer.link, timer.side);
            let sim = &mut self.links[l];
            let link = &mut sim.links[side];
            if !sim.up || !link.is_established() {
                continue;
            }
            let close = match timer.kind.deadline() {
                None => match link.handle_rekey(now) {
                    Ok(Some(at)) => {
                        self.timers.arm(at, l, side, TimerKind::Rekey);
                        None
                    }
                    Ok(None) => None,
                    Err(reason) => Some(reason),
                },
                Some(deadline) => {
                    let keepalive = self.timing.keepalive;
                    let periods = &self.timing.periods;
                    let pool = &self.shared.pool;
                    match link.handle_timeout(deadline, now, keepalive, pool, periods) {
                        Timeout::Nothing => None,
                        Timeout::Arm(deadline, at) => {
                            self.timers.arm(at, l, side, TimerKind::of(deadline));
                            None
                        }
                        Timeout::Pinged(next) => {
                            sim.touch(side, &self.shared);
                            self.timers.arm(next, l, side, TimerKind::Keepalive);
                            None
                        }
                        Timeout::Close(reason) => Some(reason),
                    }
                }
            };
            if let Some(reason) = close {
                self.closed(l, side, reason)?;
            }
        }
        self.launch()
    }

    /// Runs until nothing is in flight (at most `max` steps).
    pub fn run(&mut self, max: u64) -> Result<(), Failure> {
        for _ in 0..max {
            if !self.step()? {
                return Ok(());
            }
        }
        Err(fail(format!("not quiet after {max} steps")))
    }

    /// Runs the network for `by` of virtual time: a batch in flight is delivered every
    /// millisecond (as [`Net::step`] does); while nothing is in flight, time jumps to the links'
    /// next deadline and fires it.
    pub fn run_for(&mut self, by: Duration) -> Result<(), Failure> {
        let until = self.now() + by;
        while self.now() < until {
            self.launch()?;
            if !self.is_quiet() {
                self.step()?;
                continue;
            }
            let next = self.timers.next().map_or(until, |at| at.min(until));
            self.elapsed = self.elapsed.max(next - self.epoch);
            self.fire_timers()?;
        }
        Ok(())
    }

    /// Ends the turn of every link end written to: what it wrote is sealed, and sent in one
    /// batch (lost if the end is muted).
    pub(super) fn launch(&mut self) -> Result<(), Failure> {
        let now = self.now();
        let mut touched = std::mem::take(&mut *self.shared.touched.borrow_mut());
        let mut failed = Vec::new();
        let Net { links, shared, timing, timers, busy, .. } = self;
        let pool = &shared.pool;
        for &(l, side) in &touched {
            let sim = &mut links[l];
            sim.touched[side] = false;
            let link = &mut sim.links[side];
            if !sim.up || !link.is_established() {
                continue;
            }
            let end = link.end_turn(
                now,
                timing.keepalive,
                SEND_QUEUE_MAX_BYTES,
                &mut pool.borrow_mut(),
                &timing.periods,
            );
            if let Some(at) = end.shed_at {
                timers.arm(at, l, side, TimerKind::Shed);
            }
            if let Some(at) = end.keepalive_at {
                timers.arm(at, l, side, TimerKind::Keepalive);
            }
            if let Some(reason) = end.close {
                failed.push((l, side, reason));
                continue;
            }
            if sim.unread[side] {
                // Nobody reads: the send starts and never completes (once: one at a time).
                if sim.stalled[side].is_none() && !link.is_idle() && !link.sending() {
                    sim.stalled[side] = Some(now);
                    if let Some(at) = link.send_started(now, &timing.periods) {
                        timers.arm(at, l, side, TimerKind::SendStall);
                    }
                }
                continue;
            }
            let mut bytes = Vec::with_capacity(link.queued_bytes());
            for chunk in link.transmit() {
                bytes.extend_from_slice(own_bytes(chunk));
            }
            if bytes.is_empty() {
                continue;
            }
            // The socket takes it all at once.
            if let Some(at) = link.send_started(now, &timing.periods) {
                timers.arm(at, l, side, TimerKind::SendStall);
            }
            link.sent(bytes.len(), &mut pool.borrow_mut(), &mut never_lent);
            if !sim.muted[side] {
                sim.inflight[1 - side].push_back(bytes);
                busy.insert((l, 1 - side));
            }
        }
        // The list's memory back, unless ends were touched meanwhile.
        touched.clear();
        let mut list = shared.touched.borrow_mut();
        if list.is_empty() {
            *list = touched;
        }
        drop(list);
        for (l, side, reason) in failed {
            self.closed(l, side, reason)?;
        }
        Ok(())
    }
}
