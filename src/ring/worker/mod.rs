//! A worker: one thread, one io_uring, its links. See the module doc of [`super`] for a turn.

use std::cell::RefCell;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::types::{Fd, SubmitArgs, Timespec};
use io_uring::{IoUring, cqueue, opcode, squeue};
use slab::Slab;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::cipher::{self, PublicKey, Session};
use crate::error::Error;
use crate::ids::LinkId;
use crate::limits::{HANDSHAKE_FRAME_MAX, POOL_SMALL_RECORDS, SHUTDOWN_GRACE_MS};
use crate::link::{Deadline, Expiry, Fired, LinkClock, Periods, RxState};
use crate::txn::{self, Received};
use crate::wire::{Command as WireCommand, ErrorCode, Messages};

use super::admission::Admission;
use super::bufring::BufRing;
use super::conn::{CloseReason, Conn, Crypto, Dial, LinkIo, LinkMeta, Phase};
use super::mailbox::{Command, Mailbox};
use super::timer::{Timer, TimerKind, Timers};
use super::uring::{SendVec, op};
pub(crate) use super::uring::{bind_listener, new_ring};
use super::{Config, LinkCtx, Service};
use crate::link::pool::Pool;
use crate::link::stream::{Rx, Tx, TxSink};

mod accept;
mod close;
mod ctx;
mod deadlines;
mod stats;
mod wait;

pub use ctx::{Peers, WorkerCtx};
pub use stats::WorkerStats;

/// How long accepting pauses after it fails (e.g. out of descriptors), instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A worker's state. Fields drop in order: the ring first, which ends the registration of the
/// provided buffers before their memory is freed.
pub(crate) struct Worker {
    ring: IoUring,
    bufring: BufRing,
    index: usize,
    config: Arc<Config>,
    /// The periods of the links' own deadlines (from `config`).
    periods: Periods,
    cipher: Arc<cipher::Config>,
    /// Every worker's mailbox, this one's at `index`.
    mailboxes: Arc<[Arc<Mailbox>]>,
    /// The eventfd read lands here (boxed: the kernel writes it while the worker moves).
    wake_buf: Box<u64>,
    listener: Option<Socket>,
    conns: Slab<Conn>,
    next_generation: u32,
    timers: Timers,
    pool: RefCell<Pool>,
    completions: Vec<(u64, i32, u32)>,
    touched: Vec<u32>,
    /// Free send descriptors. Boxed on purpose: a descriptor moves between this list and a
    /// link without its address changing, and the kernel holds that address during a send.
    #[allow(clippy::vec_box)]
    send_vecs: Vec<Box<SendVec>>,
    /// Links whose receive must be armed again, with their generations.
    rearm: Vec<(u32, u32)>,
    /// Why each draining link (by slot) closes: the code of the notice it sent. Kept here, not
    /// in every link's state: few links drain at once.
    draining: std::collections::HashMap<u32, ErrorCode>,
    /// Closes asked for during [`Service::tick`], done after it: the link, why, and whether
    /// the peer is told (`LINK_CLOSE`).
    deferred_closes: Vec<(LinkId, ErrorCode, bool)>,
    /// Dials that failed before they had a link (no socket, no source address), reported to
    /// the service after the turn's callbacks.
    dial_errors: Vec<(SocketAddr, CloseReason)>,
    /// Links not closing: established, handshaking, connecting or draining.
    live_links: usize,
    /// Who may start a handshake on an accepted connection: token buckets, trusted sources.
    admission: Admission,
    now: Instant,
    shutdown_deadline: Option<Instant>,
    /// Accepting resumes then, after a failure such as running out of descriptors.
    accept_paused_until: Option<Instant>,
    /// The generation of the accept in flight (in its `user_data`): completions of earlier
    /// ones, cancelled to move this worker to the back of the listener's queue, re-arm nothing.
    accept_generation: u32,
    /// A connection was accepted this turn (see `Worker::rotate_accept`).
    accepted_in_turn: bool,
    /// When the service asked to be ticked ([`WorkerCtx::wake_at`]).
    service_wake: Option<Instant>,
    /// When a turn last moved data (see `Config::busy_poll`).
    busy_at: Instant,
    /// No busy polling before then: the core was contended (see `Worker::busy_poll`).
    poll_backoff_until: Option<Instant>,
    stats: WorkerStats,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        config: Arc<Config>,
        cipher: Arc<cipher::Config>,
        mailboxes: Arc<[Arc<Mailbox>]>,
        listener: Option<Socket>,
    ) -> io::Result<Worker> {
        let ring = new_ring(config.ring_entries)?;
        let bufring = BufRing::new(&ring, 0, config.recv_buffers, config.recv_buffer_size)?;
        let now = now();
        let admission = Admission::new(&config, now);
        Ok(Worker {
            bufring,
            ring,
            index,
            pool: RefCell::new(Pool::new(config.pool_records, POOL_SMALL_RECORDS)),
            periods: config.periods(),
            config,
            cipher,
            mailboxes,
            wake_buf: Box::new(0),
            listener,
            conns: Slab::new(),
            next_generation: 0,
            timers: Timers::new(now, 1024),
            completions: Vec::with_capacity(1024),
            touched: Vec::with_capacity(1024),
            rearm: Vec::with_capacity(64),
            send_vecs: Vec::new(),
            deferred_closes: Vec::new(),
            draining: std::collections::HashMap::new(),
            dial_errors: Vec::new(),
            live_links: 0,
            admission,
            now,
            shutdown_deadline: None,
            accept_paused_until: None,
            accept_generation: 0,
            accepted_in_turn: false,
            service_wake: None,
            busy_at: now,
            poll_backoff_until: None,
            stats: WorkerStats::default(),
        })
    }

    /// Runs until shut down; returns the worker's counters.
    pub(crate) fn run(&mut self, service: &mut impl Service) -> WorkerStats {
        self.arm_wake();
        self.arm_accept();
        // One turn before waiting, so a service can start work (dial, attach) on its own.
        service.tick(&mut WorkerCtx { worker: self });
        self.report_dial_errors(service);
        self.flush_touched(service);
        loop {
            if let Err(error) = self.submit_and_wait() {
                tracing::error!(worker = self.index, %error, "io_uring_enter failed");
                break;
            }
            self.now = now();
            self.completions.clear();
            for cqe in self.ring.completion() {
                self.completions.push((cqe.user_data(), cqe.result(), cqe.flags()));
            }
            for i in 0..self.completions.len() {
                let (user_data, result, flags) = self.completions[i];
                self.dispatch(service, user_data, result, flags);
            }
            self.rotate_accept();
            self.fire_timers(service);
            if self.accept_paused_until.is_some_and(|until| self.now >= until) {
                self.accept_paused_until = None;
                if self.shutdown_deadline.is_none() {
                    self.arm_accept();
                }
            }
            if self.service_wake.is_some_and(|at| self.now >= at) {
                self.service_wake = None;
            }
            service.tick(&mut WorkerCtx { worker: self });
            while let Some((id, code, notice)) = self.deferred_closes.pop() {
                let Some(slot) = self.slot_of(id) else { continue };
                if notice && self.conns[slot as usize].phase == Phase::Draining {
                    // Its notice is on its way already.
                    continue;
                }
                if !(notice && self.drain(service, slot, code)) {
                    self.close(service, slot, CloseReason::Local(code));
                }
            }
            self.report_dial_errors(service);
            self.flush_touched(service);
            self.rearm_receives();
            self.bufring.publish();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() && self.listener.is_none() {
                    break;
                }
                if self.now >= deadline {
                    let slots: Vec<u32> = self.conns.iter().map(|(slot, _)| slot as u32).collect();
                    for slot in slots {
                        self.close(service, slot, CloseReason::Local(ErrorCode::SHUTDOWN));
                    }
                }
            }
        }
        self.stats.pool_misses = self.pool.get_mut().misses();
        self.stats
    }

    /// Queues one operation, submitting first if the queue is full.
    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every buffer and address an entry points to is owned by the worker (boxed,
            // so it does not move) or by a link that is not freed until all of its operations
            // have completed (`Conn::ops`).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            if let Err(error) = self.ring.submit() {
                tracing::error!(worker = self.index, %error, "submit failed");
            }
        }
    }

    fn arm_wake(&mut self) {
        let buf: *mut u64 = &mut *self.wake_buf;
        let entry = opcode::Read::new(Fd(self.mailboxes[self.index].fd()), buf.cast(), 8)
            .build()
            .user_data(op::encode(op::WAKE, 0, 0));
        self.push(entry);
    }

    fn dispatch(&mut self, service: &mut impl Service, user_data: u64, result: i32, flags: u32) {
        let (kind, slot, generation) = op::decode(user_data);
        match kind {
            op::WAKE => {
                while let Some(command) = self.mailboxes[self.index].recv() {
                    self.command(service, command);
                }
                self.arm_wake();
            }
            op::ACCEPT => self.accepted(result, flags, generation),
            op::CONNECT | op::RECV | op::SEND => {
                // A receive's buffer is ours whatever happened to its link.
                let buffer = cqueue::buffer_select(flags)
                    .filter(|&bid| result > 0 && self.bufring.take(bid, result as usize).is_some());
                let live = self
                    .conns
                    .get(slot as usize)
                    .is_some_and(|conn| conn.generation & 0xff_ffff == generation);
                if live {
                    match kind {
                        op::CONNECT => self.connected(service, slot, result),
                        op::RECV => self.received(service, slot, result, flags, buffer),
                        _ => self.sent(service, slot, result),
                    }
                }
                if let Some(bid) = buffer {
                    self.bufring.recycle(bid);
                }
            }
            _ => {}
        }
    }

    fn command(&mut self, service: &mut impl Service, command: Command) {
        match command {
            Command::Connect { addr, from, peer } => {
                self.connect(addr, from, peer, None);
            }
            Command::Shutdown => self.begin_shutdown(service),
            Command::TrustSource(ip) => self.admission.trust(ip),
            Command::Service(payload) => service.command(&mut WorkerCtx { worker: self }, payload),
        }
    }

    fn new_conn(&mut self, socket: Socket, phase: Phase, crypto: Crypto) -> u32 {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let now = self.now;
        self.live_links += 1;
        self.conns.insert(Conn {
            generation,
            ops: 0,
            socket,
            phase,
            recv_armed: false,
            recv_rearm: false,
            touched: false,
            io: LinkIo {
                crypto,
                txn: txn::Link::new(),
                rx: Rx::default(),
                tx: Tx::default(),
                meta: LinkMeta::default(),
            },
            peer: None,
            dial: None,
            send_vec: None,
            clock: LinkClock::new(now),
            records_queued: 0,
            stats: Default::default(),
        }) as u32
    }

    fn link_id(&self, slot: u32) -> LinkId {
        let generation = self.conns[slot as usize].generation & 0xff_ffff;
        LinkId((self.index as u64) << 56 | u64::from(generation) << 32 | u64::from(slot))
    }

    fn slot_of(&self, id: LinkId) -> Option<u32> {
        let (worker, slot, generation) = decode_link(id);
        let conn = self.conns.get(slot as usize)?;
        (worker == self.index as u64 && conn.generation & 0xff_ffff == generation).then_some(slot)
    }

    /// Queues whatever handshake frames the session has to send.
    fn pump_handshake(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let Crypto::Handshake(session) = &mut conn.io.crypto else {
            return;
        };
        let mut frame = [0u8; HANDSHAKE_FRAME_MAX];
        while let Ok(len @ 1..) = session.poll_transmit(&mut frame) {
            conn.io.tx.queue_raw(&frame[..len], self.pool.get_mut());
        }
        self.touch(slot);
    }

    fn arm_recv(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let entry = opcode::RecvMulti::new(Fd(conn.socket.as_raw_fd()), self.bufring.group())
            .build()
            .user_data(op::encode(op::RECV, slot, conn.generation));
        conn.ops += 1;
        conn.recv_armed = true;
        conn.recv_rearm = false;
        self.push(entry);
    }

    fn received(
        &mut self,
        service: &mut impl Service,
        slot: u32,
        result: i32,
        flags: u32,
        buffer: Option<u16>,
    ) {
        let more = cqueue::more(flags);
        let conn = &mut self.conns[slot as usize];
        if !more {
            conn.ops -= 1;
            conn.recv_armed = false;
        }
        if conn.phase == Phase::Closing {
            self.maybe_free(slot);
            return;
        }
        if conn.phase == Phase::Draining && result > 0 {
            // We said we are closing and ended every transaction: what still arrives is moot.
            conn.clock.received(self.now);
            if !more {
                conn.recv_rearm = true;
                self.rearm.push((slot, conn.generation));
            }
            return;
        }
        let outcome = match (result, buffer) {
            (1.., Some(bid)) => {
                let len = result as usize;
                self.busy_at = self.now;
                conn.clock.received(self.now);
                conn.stats.bytes_in += len as u64;
                self.stats.bytes_in += len as u64;
                self.on_bytes(service, slot, bid, len)
            }
            (0, _) => Err(CloseReason::PeerClosed),
            (error, _) if error == -libc::ENOBUFS => {
                // Every provided buffer is in use: receive again once some come back.
                self.stats.recv_buffer_shortages += 1;
                Ok(())
            }
            (error, _) if error < 0 => Err(CloseReason::Io(-error)),
            _ => Err(CloseReason::Internal("a receive reported data without a buffer")),
        };
        match outcome {
            Err(reason) => self.close(service, slot, reason),
            Ok(()) => {
                let conn = &mut self.conns[slot as usize];
                if !more && !conn.recv_rearm && conn.phase != Phase::Closing {
                    conn.recv_rearm = true;
                    self.rearm.push((slot, conn.generation));
                }
            }
        }
    }

    /// Handles `len` received bytes in provided buffer `bid`.
    fn on_bytes(
        &mut self,
        service: &mut impl Service,
        slot: u32,
        bid: u16,
        len: usize,
    ) -> Result<(), CloseReason> {
        let mut start = 0;
        if self.conns[slot as usize].phase == Phase::Handshake {
            let conn = &mut self.conns[slot as usize];
            let Crypto::Handshake(session) = &mut conn.io.crypto else {
                return Err(CloseReason::Internal("a handshaking link without a session"));
            };
            let bytes = &self.bufring.bytes_mut(bid)[..len];
            start =
                session.handle_handshake_bytes(bytes, self.now).map_err(CloseReason::Protocol)?;
            let established = session.is_established();
            self.pump_handshake(slot);
            if !established {
                return Ok(());
            }
            self.establish(service, slot)?;
        }
        if start == len {
            return Ok(());
        }
        let id = self.link_id(slot);
        let now = self.now;
        let conn = &mut self.conns[slot as usize];
        let Some(peer) = conn.peer else {
            return Err(CloseReason::Internal("records on a link without a peer"));
        };
        // Lift the link's record layer, transactions and streams out of the slab while its
        // records are handled, so the service can reach the worker's other links meanwhile
        // (`Peers`: a relayed message goes straight to the link it continues on). This link's
        // place holds an empty `LinkIo`, which `Peers` does not lend.
        let mut io = std::mem::take(&mut conn.io);
        let mut last_data = conn.clock.last_data();
        let data_before = last_data;
        let fd = conn.socket.as_raw_fd();
        let (mut records, mut messages, mut reassembled) = (0, 0, 0);
        let LinkIo { rx, tx, txn, crypto, meta } = &mut io;
        let result = match crypto {
            Crypto::Established { sealer, opener } => {
                let bytes = &mut self.bufring.bytes_mut(bid)[start..len];
                // A record outside the receive buffer was put together in a pooled one.
                let received = bytes.as_ptr_range();
                let shed_after = self.config.shed_keys_after;
                let (pool, conns, touched) = (&self.pool, &mut self.conns, &mut self.touched);
                let worker = self.index;
                rx.feed(bytes, pool, |record| -> Result<(), CloseReason> {
                    reassembled += u64::from(!received.contains(&record.as_ptr()));
                    let plaintext = opener.open(record).map_err(CloseReason::Protocol)?;
                    records += 1;
                    let mut ctx = LinkCtx {
                        id,
                        peer,
                        txn,
                        out: tx.sink(sealer, pool),
                        now,
                        peers: Peers::new(conns, pool, touched, worker),
                        fd,
                        meta,
                    };
                    // One context for the record: offered whole first, then message by message.
                    if let Some(n) = service.record(&mut ctx, plaintext) {
                        // Taken whole (forwarded by a relay): transaction messages, so data.
                        messages += n as u64;
                        last_data = now;
                        return Ok(());
                    }
                    let mut data = false;
                    for message in Messages::new(plaintext) {
                        let message = message.map_err(CloseReason::Protocol)?;
                        messages += 1;
                        if message.command() != WireCommand::LINK_PING {
                            last_data = now;
                            data = true;
                        }
                        let received = ctx
                            .txn
                            .handle_message(&mut ctx.out, &message)
                            .map_err(CloseReason::Protocol)?;
                        let received = match received {
                            Some(Received::OneWay { command: WireCommand::LINK_PING, .. }) => None,
                            Some(Received::OneWay {
                                command: WireCommand::LINK_CLOSE,
                                error,
                                ..
                            }) => {
                                return Err(CloseReason::PeerSaid(error));
                            }
                            other => other,
                        };
                        if let Some(received) = received {
                            service.received(&mut ctx, received);
                        }
                        while let Some(event) = ctx.txn.poll_event() {
                            service.event(&mut ctx, event);
                        }
                    }
                    if !data && now >= last_data + shed_after {
                        // A keepalive on a quiet link: the opener need not keep its schedule.
                        opener.shed_keys();
                    }
                    Ok(())
                })
            }
            _ => Err(CloseReason::Internal("records on a link without record keys")),
        };
        let conn = &mut self.conns[slot as usize];
        conn.io = io;
        conn.stats.records_in += records;
        conn.stats.messages_in += messages;
        self.stats.messages_in += messages;
        self.stats.records_reassembled += reassembled;
        if last_data != data_before
            && let Some(at) = conn.clock.received_data(last_data, &self.periods)
        {
            self.arm_timer(slot, TimerKind::Shed, at);
        }
        self.arm_reassembly(slot);
        self.touch(slot);
        result
    }

    /// The handshake finished: switch to records and tell the service.
    fn establish(&mut self, service: &mut impl Service, slot: u32) -> Result<(), CloseReason> {
        let now = self.now;
        let conn = &mut self.conns[slot as usize];
        let Crypto::Handshake(session) = std::mem::replace(&mut conn.io.crypto, Crypto::None)
        else {
            return Err(CloseReason::Internal("establishing a link that is not handshaking"));
        };
        let Some(peer) = session.peer() else {
            return Err(CloseReason::Internal("handshake finished without the peer's key"));
        };
        let Some((sealer, opener)) = session.into_record_layer() else {
            return Err(CloseReason::Internal("handshake finished without record keys"));
        };
        let rekey_at = sealer.poll_timeout();
        conn.io.crypto = Crypto::Established { sealer, opener };
        conn.phase = Phase::Established;
        conn.peer = Some(peer);
        // The connect is long complete: the dial's address and identity are not needed again.
        conn.dial = None;
        self.stats.established += 1;
        let keepalive = conn.io.meta.keepalive(self.config.keepalive_interval);
        for (deadline, at) in conn.clock.established(now, keepalive, &self.periods) {
            self.arm_timer(slot, deadlines::kind_of(deadline), at);
        }
        if let Some(at) = rekey_at {
            self.arm_timer(slot, TimerKind::Rekey, at);
        }
        self.with_link(slot, |ctx| service.link_up(ctx));
        self.touch(slot);
        Ok(())
    }

    /// Runs `f` with established link `slot` as its service sees it, the worker's other links
    /// lent beside it ([`Peers`]): the link's state is lifted out of the slab meanwhile (its
    /// place holds an empty `LinkIo`, which `Peers` does not lend). `None` if the link has no
    /// record keys.
    fn with_link<R>(&mut self, slot: u32, f: impl FnOnce(&mut LinkCtx<'_>) -> R) -> Option<R> {
        let id = self.link_id(slot);
        let now = self.now;
        let conn = &mut self.conns[slot as usize];
        let peer = conn.peer?;
        let fd = conn.socket.as_raw_fd();
        let mut io = std::mem::take(&mut conn.io);
        let LinkIo { crypto, txn, tx, meta, .. } = &mut io;
        let result = match crypto {
            Crypto::Established { sealer, .. } => {
                let (pool, conns, touched) = (&self.pool, &mut self.conns, &mut self.touched);
                let mut ctx = LinkCtx {
                    id,
                    peer,
                    txn,
                    out: tx.sink(sealer, pool),
                    now,
                    peers: Peers::new(conns, pool, touched, self.index),
                    fd,
                    meta,
                };
                Some(f(&mut ctx))
            }
            _ => None,
        };
        self.conns[slot as usize].io = io;
        result
    }

    fn sent(&mut self, service: &mut impl Service, slot: u32, result: i32) {
        let conn = &mut self.conns[slot as usize];
        conn.ops -= 1;
        conn.clock.send_done();
        if let Some(vec) = conn.send_vec.take() {
            self.send_vecs.push(vec);
        }
        if conn.phase == Phase::Closing {
            self.maybe_free(slot);
            return;
        }
        if result < 0 {
            return self.close(service, slot, CloseReason::Io(-result));
        }
        self.busy_at = self.now;
        conn.stats.bytes_out += result as u64;
        self.stats.bytes_out += result as u64;
        conn.io.tx.advance(result as usize, self.pool.get_mut());
        if conn.phase == Phase::Draining && conn.io.tx.is_empty() && !conn.io.tx.has_pending() {
            let code = self.draining.remove(&slot).unwrap_or(ErrorCode::SHUTDOWN);
            return self.close(service, slot, CloseReason::Local(code));
        }
        self.start_send(slot);
    }

    /// Sends everything queued on a link (up to `SEND_IOVECS` chunks in one `sendmsg`), unless
    /// a send is already in flight: one at a time keeps the byte stream in order.
    fn start_send(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.clock.sending() || conn.phase == Phase::Closing || conn.io.tx.is_empty() {
            return;
        }
        let mut vec = self.send_vecs.pop().unwrap_or_else(SendVec::new);
        let msg = vec.prepare(conn.io.tx.chunks());
        let entry = opcode::SendMsg::new(Fd(conn.socket.as_raw_fd()), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(op::encode(op::SEND, slot, conn.generation));
        conn.send_vec = Some(vec);
        conn.ops += 1;
        let stall = conn.clock.send_started(self.now, &self.periods);
        self.push(entry);
        if let Some(at) = stall {
            self.arm_timer(slot, TimerKind::SendStall, at);
        }
    }

    fn touch(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if !conn.touched {
            conn.touched = true;
            self.touched.push(slot);
        }
    }

    /// Seals what each touched link wrote this turn into one record and starts its send.
    fn flush_touched(&mut self, service: &mut impl Service) {
        let mut i = 0;
        while i < self.touched.len() {
            let slot = self.touched[i];
            i += 1;
            let Some(conn) = self.conns.get_mut(slot as usize) else {
                continue;
            };
            conn.touched = false;
            if let Crypto::Established { sealer, opener } = &mut conn.io.crypto {
                // Records written whole this turn (forwarded by a relay) are data; so is the
                // record being built, unless it holds only a keepalive.
                let whole = u64::from(std::mem::take(&mut conn.records_queued));
                let building = conn.io.tx.has_pending();
                if building || whole > 0 {
                    if building {
                        conn.io.tx.flush(sealer, self.pool.get_mut());
                    }
                    let records = whole + u64::from(building);
                    conn.stats.records_out += records;
                    self.stats.records_out += records;
                    if let Some(at) = conn.clock.sealed(self.now, whole > 0, &self.periods) {
                        let generation = conn.generation;
                        self.timers.arm(Timer { at, slot, generation, kind: TimerKind::Shed });
                    }
                }
                if conn.clock.end_turn() {
                    // Quiet for a while: keep the keys' bytes, not their expanded schedules
                    // (rebuilt at the next record). An idle client costs that much less.
                    sealer.shed_keys();
                    opener.shed_keys();
                }
            }
            if conn.io.meta.keepalive_changed && conn.phase == Phase::Established {
                // A new interval: an entry for the deadline it gives.
                conn.io.meta.keepalive_changed = false;
                let interval = conn.io.meta.keepalive(self.config.keepalive_interval);
                let at = conn.clock.keepalive_changed(self.now, interval);
                let generation = conn.generation;
                self.timers.arm(Timer { at, slot, generation, kind: TimerKind::Keepalive });
            }
            if let Some(error) = conn.io.tx.take_failure() {
                self.close(service, slot, CloseReason::Protocol(error));
                continue;
            }
            if conn.io.tx.queued_bytes() > self.config.send_queue_max_bytes {
                self.close(service, slot, CloseReason::SendQueueFull);
                continue;
            }
            self.start_send(slot);
        }
        self.touched.clear();
    }

    /// Re-arms the receives that ended (out of buffers, or the kernel ended the multishot).
    fn rearm_receives(&mut self) {
        while let Some((slot, generation)) = self.rearm.pop() {
            let Some(conn) = self.conns.get(slot as usize) else {
                continue;
            };
            if conn.generation == generation
                && conn.recv_rearm
                && !conn.recv_armed
                && conn.phase != Phase::Closing
            {
                self.arm_recv(slot);
            }
        }
    }
}

/// A link id's worker, slot and generation (the low 24 bits).
fn decode_link(id: LinkId) -> (u64, u32, u32) {
    (id.0 >> 56, id.0 as u32, (id.0 >> 32) as u32 & 0xff_ffff)
}

#[allow(clippy::disallowed_methods)] // the engine owns the clock
fn now() -> Instant {
    Instant::now()
}
