//! The worker as its service sees it: [`WorkerCtx`] during ticks and commands, and [`Peers`],
//! the other links lent while a message is handled. Each is a [`LinkSet`] a relay node writes
//! through, as is [`LinkCtx`] (its own link and the lent ones).

use super::*;
use crate::link::RecordIn;
use crate::relay::LinkSet;
use crate::span::SpanLink;

/// A worker, as its service sees it during [`Service::tick`] and [`Service::command`].
pub struct WorkerCtx<'a> {
    pub(super) worker: &'a mut Worker,
}

impl WorkerCtx<'_> {
    /// The worker's index.
    pub fn index(&self) -> usize {
        self.worker.index
    }

    /// The time of the current turn.
    pub fn now(&self) -> Instant {
        self.worker.now
    }

    /// The established links of this worker, written into `out` (cleared first).
    pub fn links(&self, out: &mut Vec<LinkId>) {
        out.clear();
        for (slot, conn) in self.worker.conns.iter() {
            if conn.phase == Phase::Established {
                out.push(self.worker.link_id(slot as u32));
            }
        }
    }

    /// An established link of this worker, to send on.
    pub fn link(&mut self, id: LinkId) -> Option<LinkCtx<'_>> {
        let slot = self.worker.slot_of(id)?;
        self.worker.touch(slot);
        let now = self.worker.now;
        let conn = &mut self.worker.conns[slot as usize];
        if conn.phase != Phase::Established {
            return None;
        }
        conn.ctx(id, &self.worker.pool, now)
    }

    /// Counters of a link.
    pub fn link_stats(&self, id: LinkId) -> Option<crate::ring::LinkStats> {
        let slot = self.worker.slot_of(id)?;
        Some(self.worker.conns[slot as usize].link.stats())
    }

    /// Workers of the engine.
    pub fn workers(&self) -> usize {
        self.worker.mailboxes.len()
    }

    /// Sends a command to worker `index` (which may be this one). Never waits: a full mailbox
    /// hands the command back. Batch work into few commands: each wakes a thread, which costs
    /// ~20 µs when it sleeps on another core (the task's machine notes).
    pub fn send_to(&self, index: usize, command: Command) -> Result<(), Command> {
        match self.worker.mailboxes.get(index) {
            Some(mailbox) => mailbox.send(command),
            None => Err(command),
        }
    }

    /// A handle to this worker's mailbox that another thread can keep, to send it commands
    /// (a thread doing blocking work for the service, say, hands its answers back this way).
    pub fn remote(&self) -> crate::ring::Remote {
        crate::ring::Remote { mailbox: self.worker.mailboxes[self.worker.index].clone() }
    }

    /// Dials `addr` from this worker.
    pub fn connect(&mut self, addr: SocketAddr, peer: Option<PublicKey>) {
        self.worker.connect(addr, None, peer, None);
    }

    /// Dials `addr` from this worker, from source address `from` if given (bound with port 0;
    /// the port is picked at connect). Returns the link's id, which [`Service::link_up`] will
    /// show; a dial that cannot start (no descriptor, an address that does not bind) returns
    /// `None`, and [`Service::dial_failed`] hears of it after this turn's callbacks.
    pub fn connect_from(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        peer: Option<PublicKey>,
    ) -> Option<LinkId> {
        self.worker.connect(addr, from, peer, None)
    }

    /// Like [`WorkerCtx::connect_from`], showing the identity in `cipher` to the other side
    /// instead of the engine's (a load generator dials as many distinct nodes).
    pub fn connect_as(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        peer: Option<PublicKey>,
        cipher: Arc<cipher::Config>,
    ) -> Option<LinkId> {
        self.worker.connect(addr, from, peer, Some(cipher))
    }

    /// Trusts connections from source address `ip` from now on, on every worker of the engine
    /// (this one at once, the others through their mailboxes; one whose mailbox is full does
    /// not hear of it, which is logged). Call it when a link from `ip` proved an authorized
    /// key ([`LinkCtx::remote_addr`](super::LinkCtx::remote_addr)): its connections may then
    /// take the link slots and handshake tokens reserved for trusted sources
    /// (`Config::reserved_links`, `Config::trusted_handshakes_per_sec`), which strangers cannot.
    /// At most `TRUSTED_SOURCES_MAX` addresses are trusted this way per worker, besides
    /// `Config::trusted_sources`; past it the least recently trusted is forgotten.
    pub fn trust_source(&mut self, ip: IpAddr) {
        self.worker.admission.trust(ip);
        for (index, mailbox) in self.worker.mailboxes.iter().enumerate() {
            if index != self.worker.index && mailbox.send(Command::TrustSource(ip)).is_err() {
                tracing::warn!(worker = index, %ip, "mailbox full: a trusted source not passed on");
            }
        }
    }

    /// Sends link `link`'s keepalives at `interval` from now on instead of
    /// `Config::keepalive_interval`, in whole milliseconds and at least
    /// `KEEPALIVE_INTERVAL_MIN_MS`: each end must keep alive often enough for the *other*
    /// end's idle timeout, which may be shorter than ours (a third of it leaves room for two
    /// keepalives lost or late). Takes effect at the end of the turn: a sooner deadline is
    /// armed then, a later one followed. A link that is gone is ignored; one still
    /// handshaking starts with it.
    pub fn set_keepalive(&mut self, link: LinkId, interval: Duration) {
        let Some(slot) = self.worker.slot_of(link) else { return };
        let meta = self.worker.conns[slot as usize].link.meta_mut();
        meta.keepalive_ms = crate::ring::keepalive_ms(interval);
        meta.keepalive_changed = true;
        self.worker.touch(slot);
    }

    /// Links of this worker that are not closing (established, handshaking, dialling).
    pub fn live_links(&self) -> usize {
        self.worker.live_links
    }

    /// Asks for a [`Service::tick`] at `at` at the latest (the earliest of several asks wins),
    /// even if nothing else happens by then.
    pub fn wake_at(&mut self, at: Instant) {
        let wake = &mut self.worker.service_wake;
        *wake = Some(wake.map_or(at, |w| w.min(at)));
    }

    /// Closes a link with a reason the peer is not told (after this turn's callbacks): as a
    /// failure looks to it.
    pub fn close(&mut self, id: LinkId, code: ErrorCode) {
        self.worker.deferred_closes.push((id, code, false));
    }

    /// Closes an established link telling the peer why (after this turn's callbacks): a
    /// `LINK_CLOSE` carrying `code` goes out, every transaction of the link ends at once, and
    /// the link closes once the notice is sent. A link not established is closed at once.
    pub fn close_with_notice(&mut self, id: LinkId, code: ErrorCode) {
        self.worker.deferred_closes.push((id, code, true));
    }

    /// The worker's counters so far.
    pub fn stats(&self) -> WorkerStats {
        self.worker.current_stats()
    }

    /// The key the peer of an established link proved in its handshake.
    pub fn peer_key(&self, id: LinkId) -> Option<PublicKey> {
        let slot = self.worker.slot_of(id)?;
        let conn = &self.worker.conns[slot as usize];
        if conn.phase != Phase::Established {
            return None;
        }
        conn.peer
    }

    /// Handshakes started from now on use `cipher` (a reloaded allow list or handshake
    /// timeout); those under way finish with the configuration they started with, so the
    /// service checks the key of every link it is offered against its own rights as well.
    pub fn set_cipher(&mut self, cipher: Arc<cipher::Config>) {
        self.worker.cipher = cipher;
    }

    /// Takes the bounds of `config` that can change while the engine runs: the send queue
    /// bound, busy polling, and admission's (link slots, handshake rates, reserved slots and the
    /// configured trusted sources, which replace the old ones; sources trusted at run time are
    /// kept). Everything else in it (workers, listener, buffers, link timers) is the engine's
    /// from its start and ignored here. The buckets keep the tokens they hold, up to their new
    /// size.
    pub fn reconfigure(&mut self, config: &Config) {
        let mut own = (*self.worker.config).clone();
        own.send_queue_max_bytes = config.send_queue_max_bytes;
        own.busy_poll = config.busy_poll;
        own.max_links = config.max_links;
        own.max_handshakes_per_sec = config.max_handshakes_per_sec;
        own.trusted_handshakes_per_sec = config.trusted_handshakes_per_sec;
        own.reserved_links = config.reserved_links;
        own.trusted_sources.clone_from(&config.trusted_sources);
        self.worker.admission.reconfigure(&own);
        self.worker.config = Arc::new(own);
    }
}

/// The other links of a worker, lent to a service while it handles a message received on one
/// of them ([`LinkCtx::peers`]): a relay writes a relayed message straight into the link it
/// continues on, instead of queueing it for a later turn. Links that are not established, and
/// the link whose message is being handled, are not lent.
pub struct Peers<'a> {
    inner: Option<PeersInner<'a>>,
}

struct PeersInner<'a> {
    conns: &'a mut Slab<Conn>,
    pool: &'a RefCell<Pool>,
    touched: &'a mut Vec<u32>,
    worker: usize,
    /// The receive buffer a record being handled lies in, if records may be sent from it.
    lending: Option<&'a mut Lending>,
}

/// How records of the receive buffer being handled are lent to other links' sends (forwarded
/// from where they arrived), within two shares of the worker's receive buffers
/// ([`RECV_LENT_SHARE`](crate::limits::RECV_LENT_SHARE) in all,
/// [`RECV_LENT_LINK_SHARE`](crate::limits::RECV_LENT_LINK_SHARE) per link): past either, a
/// record is forwarded as a copy.
pub(super) struct Lending {
    /// Records the worker may still lend.
    left: u32,
    /// Records one link may hold.
    link_max: usize,
    /// Records lent from this buffer (at most the worker's share of its buffers).
    pub(super) records: u16,
    /// Records put together in pooled buffers, sent on from there.
    pub(super) moved: u64,
}

impl Lending {
    /// With `lent` records of the worker's `buffers` receive buffers lent already.
    pub(super) fn new(lent: u32, buffers: u16) -> Lending {
        let max = u32::from(buffers / crate::limits::RECV_LENT_SHARE);
        let link_max = usize::from(buffers / crate::limits::RECV_LENT_LINK_SHARE).max(1);
        Lending { left: max.saturating_sub(lent), link_max, records: 0, moved: 0 }
    }
}

impl<'a> Peers<'a> {
    pub(super) fn new(
        conns: &'a mut Slab<Conn>,
        pool: &'a RefCell<Pool>,
        touched: &'a mut Vec<u32>,
        worker: usize,
    ) -> Peers<'a> {
        Peers { inner: Some(PeersInner { conns, pool, touched, worker, lending: None }) }
    }

    /// The same, sending records of the buffer being handled from where they lie, within
    /// `lending`'s shares.
    pub(super) fn lending(mut self, lending: &'a mut Lending) -> Peers<'a> {
        if let Some(inner) = &mut self.inner {
            inner.lending = Some(lending);
        }
        self
    }

    /// No link is lent.
    pub(crate) fn none() -> Peers<'a> {
        Peers { inner: None }
    }

    /// Runs `f` with link `id`'s span state, transactions and output, if that link is lent:
    /// established, on this worker, and not the one whose message is being handled. What `f`
    /// writes is sealed and sent at the end of the turn, like anything else written to the link.
    pub fn with_span<R>(
        &mut self,
        id: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut TxSink<'_>) -> R,
    ) -> Option<R> {
        let (conn, pool, _) = self.lent(id)?;
        let mut parts = conn.link.parts(pool)?;
        Some(f(parts.span, parts.txn, &mut parts.out))
    }

    /// Runs `f` with link `id`'s transactions and output, if that link is lent (as for
    /// [`Peers::with_span`]).
    pub fn with<R>(
        &mut self,
        id: LinkId,
        f: impl FnOnce(&mut txn::Link, &mut TxSink<'_>) -> R,
    ) -> Option<R> {
        self.with_span(id, |_, txn, out| f(txn, out))
    }

    /// Link `id`'s span state, if that link is lent (as for [`Peers::with_span`]; nothing is
    /// marked written).
    pub fn span(&mut self, id: LinkId) -> Option<&mut SpanLink> {
        let inner = self.inner.as_mut()?;
        let (_, conn) = lendable(inner.conns, inner.worker, id)?;
        Some(conn.link.span_mut())
    }

    /// Sends a received `record` on link `id` as one record, if that link is lent (as for
    /// [`Peers::with`]): `edit` rewrites its plaintext with the link's transactions at hand, and
    /// it is sealed and queued, behind whatever the link wrote before, if `edit` returns `Some`.
    /// The record is sent from where it lies in its receive buffer if it lies in one and the
    /// shares of receive buffers allow (`RECV_LENT_SHARE`, `RECV_LENT_LINK_SHARE`), from its
    /// reassembly buffer if it was put together, else from a copy in a pooled buffer. Sent at
    /// the end of the turn.
    pub fn with_record<R>(
        &mut self,
        id: LinkId,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let (conn, pool, lending) = self.lent(id)?;
        let Some(lending) = lending else {
            return conn.link.queue_record(pool, record.plaintext(), edit);
        };
        if record.reassembled() {
            // Put together in a pooled buffer: sent on from there, nothing lent.
            let result = conn.link.forward_in_place(pool, record, edit);
            lending.moved += u64::from(result.is_some());
            return result;
        }
        if record.lent().is_some() && lending.left > 0 && conn.link.lent_chunks() < lending.link_max
        {
            let before = conn.link.lent_chunks();
            let result = conn.link.forward_in_place(pool, record, edit);
            // Counted by what the link queued (a failed seal queues nothing).
            if conn.link.lent_chunks() > before {
                lending.left -= 1;
                lending.records += 1;
            }
            return result;
        }
        conn.link.queue_record(pool, record.plaintext(), edit)
    }

    /// Link `id`'s state, the pool and the lending of the buffer being handled, if the link is
    /// lent: on this worker, established, and not the one whose message is being handled (its
    /// state is lifted out, so it has no record keys). It is marked as touched: whatever is
    /// written to it is sent at the end of the turn.
    #[allow(clippy::type_complexity)]
    fn lent(&mut self, id: LinkId) -> Option<(&mut Conn, &'a RefCell<Pool>, Option<&mut Lending>)> {
        let inner = self.inner.as_mut()?;
        let (slot, conn) = lendable(inner.conns, inner.worker, id)?;
        if !conn.touched {
            conn.touched = true;
            inner.touched.push(slot);
        }
        Some((conn, inner.pool, inner.lending.as_deref_mut()))
    }
}

/// Link `id` among worker `index`'s `conns`, and its slot, if it can be lent: on this worker,
/// established, and not the one whose message is being handled (its state is lifted out, so it
/// has no record keys).
fn lendable(conns: &mut Slab<Conn>, index: usize, id: LinkId) -> Option<(u32, &mut Conn)> {
    let (worker, slot, generation) = decode_link(id);
    let conn = conns.get_mut(slot as usize)?;
    let lendable = worker == index as u64
        && conn.generation & 0xff_ffff == generation
        && conn.phase == Phase::Established
        && conn.link.is_established();
    lendable.then_some((slot, conn))
}

/// While a message on a link is handled, a node writes to that link and to the worker's other
/// established links: a relayed message goes straight into the link it continues on.
impl LinkSet for LinkCtx<'_> {
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
            return Some(f(self.span, self.txn, &mut self.out));
        }
        self.peers.with_span(link, f)
    }

    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        if link == self.id {
            return Some(self.span);
        }
        self.peers.span(link)
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
        self.peers.with_record(link, record, edit)
    }
}

/// The worker's other links alone (a record forwarded whole reads its own link's transactions
/// beside them: `relay::Node::forward_record`).
impl LinkSet for Peers<'_> {
    type Out<'b>
        = TxSink<'b>
    where
        Self: 'b;

    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut TxSink<'_>) -> R,
    ) -> Option<R> {
        Peers::with_span(self, link, f)
    }

    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        Peers::span(self, link)
    }

    fn with_record<R>(
        &mut self,
        link: LinkId,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        Peers::with_record(self, link, record, edit)
    }
}

/// During a tick or a command, and when a link went down, a node can write to any established
/// link of the worker.
impl LinkSet for WorkerCtx<'_> {
    type Out<'b>
        = TxSink<'b>
    where
        Self: 'b;

    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut TxSink<'_>) -> R,
    ) -> Option<R> {
        let mut ctx = self.link(link)?;
        let LinkCtx { span, txn, out, .. } = &mut ctx;
        Some(f(span, txn, out))
    }

    /// Any link of the worker, whatever its phase: a closing link's too (its node withdraws
    /// what the link advertised when it goes down). No link is lifted out of the worker while
    /// a `WorkerCtx` exists.
    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        let slot = self.worker.slot_of(link)?;
        Some(self.worker.conns[slot as usize].link.span_mut())
    }
}
