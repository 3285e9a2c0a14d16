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
use crate::limits::{POOL_SMALL_RECORDS, SEND_VECS, SHUTDOWN_GRACE_MS};
use crate::link::{Chunk, Deadline, Input, Lent, Link, Periods, RecordsIn, Timeout};
use crate::txn;
use crate::wire::ErrorCode;

use super::admission::Admission;
use super::bufring::BufRing;
use super::conn::{CloseReason, Conn, Crypto, Dial, Phase};
use super::mailbox::{Command, Mailbox};
use super::timer::{Timer, TimerKind, Timers};
use super::uring::{SendVec, op};
pub(crate) use super::uring::{bind_listener, new_ring};
use super::{Config, LinkCtx, Service};
use crate::link::pool::Pool;
use crate::link::stream::TxSink;
use accept::Listener;
use ctx::Lending;

mod accept;
mod attach;
mod close;
mod ctx;
mod deadlines;
mod lanes;
mod siblings;
mod stats;
mod wait;

pub(crate) use lanes::{Lanes, mesh};

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
    /// Its handle to each listening socket, in the order of `Config::listen`, then the attach
    /// socket's if this worker accepts on it (`attach_index`).
    listeners: Vec<Listener>,
    /// The index in `listeners` of the attach socket, on the worker that accepts on it.
    attach_index: Option<u32>,
    /// Local links open (from the attach socket), against `ATTACH_LINKS_MAX`.
    attached_links: usize,
    /// Local links open by uid, against `ATTACH_LINKS_PER_UID_MAX`; at most one entry per
    /// local link.
    attached_by_uid: std::collections::HashMap<u32, usize>,
    /// Local links made so far: the counter their peer keys are derived from.
    attach_counter: u64,
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
    /// When the service asked to be ticked ([`WorkerCtx::wake_at`]).
    service_wake: Option<Instant>,
    /// When a turn last moved data (see `Config::busy_poll`).
    busy_at: Instant,
    /// No busy polling before then: the core was contended (see `Worker::busy_poll`).
    poll_backoff_until: Option<Instant>,
    /// Its lanes to and from the engine's other workers.
    lanes: Lanes,
    stats: WorkerStats,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        config: Arc<Config>,
        cipher: Arc<cipher::Config>,
        mailboxes: Arc<[Arc<Mailbox>]>,
        listeners: Vec<Socket>,
        attach: Option<Socket>,
        lanes: Lanes,
    ) -> io::Result<Worker> {
        let ring = new_ring(config.ring_entries)?;
        let bufring = BufRing::new(&ring, 0, config.recv_buffers, config.recv_buffer_size)?;
        let now = now();
        let admission = Admission::new(&config, now);
        let attach_index = attach.is_some().then_some(listeners.len() as u32);
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
            listeners: listeners.into_iter().chain(attach).map(Listener::new).collect(),
            attach_index,
            attached_links: 0,
            attached_by_uid: std::collections::HashMap::new(),
            attach_counter: 0,
            conns: Slab::new(),
            next_generation: 0,
            timers: Timers::new(now, 1024),
            completions: Vec::with_capacity(1024),
            touched: Vec::with_capacity(1024),
            rearm: Vec::with_capacity(64),
            send_vecs: (0..SEND_VECS).map(|_| SendVec::new()).collect(),
            deferred_closes: Vec::new(),
            draining: std::collections::HashMap::new(),
            dial_errors: Vec::new(),
            live_links: 0,
            admission,
            now,
            shutdown_deadline: None,
            service_wake: None,
            busy_at: now,
            poll_backoff_until: None,
            lanes,
            stats: WorkerStats::default(),
        })
    }

    /// Runs until shut down; returns the worker's counters.
    pub(crate) fn run(&mut self, service: &mut impl Service) -> WorkerStats {
        self.arm_wake();
        self.arm_accepts();
        self.join_siblings(service);
        // One turn before waiting, so a service can start work (dial, attach) on its own.
        service.tick(&mut WorkerCtx { worker: self });
        self.report_dial_errors(service);
        self.flush_touched(service);
        self.send_siblings();
        self.wake_lanes();
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
            self.resume_accepts();
            if self.service_wake.is_some_and(|at| self.now >= at) {
                self.service_wake = None;
            }
            self.deliver_lanes(service);
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
            self.send_siblings();
            self.pace_sockets();
            self.wake_lanes();
            self.rearm_receives();
            self.bufring.publish();
            if let Some(deadline) = self.shutdown_deadline {
                if self.conns.is_empty() && self.listeners_closed() {
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
        self.current_stats()
    }

    /// The counters so far, with the gauges read now.
    fn current_stats(&self) -> WorkerStats {
        WorkerStats {
            pool_misses: self.pool.borrow().misses(),
            lent_records: u64::from(self.bufring.lent()),
            lent_records_max: u64::from(self.bufring.lent_max()),
            recv_buffers_held: self.bufring.held() as u64,
            ..self.stats
        }
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
            op::ACCEPT => self.accepted(service, slot, result, flags, generation),
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
            link: Link::new(crypto, now),
            peer: None,
            dial: None,
            send_vec: None,
            sibling: None,
            attached: None,
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
            conn.link.received_bytes(0, self.now);
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
                conn.link.received_bytes(len, self.now);
                self.stats.bytes_in += len as u64;
                self.on_bytes(service, slot, bid, len)
            }
            (0, _) => Err(CloseReason::PeerClosed),
            (error, _) if error == -libc::ENOBUFS => {
                // Every provided buffer is in use: receive again once some come back.
                self.stats.recv_buffer_shortages += 1;
                Ok(())
            }
            // Cancelled while the worker does not read its sockets (`Worker::pace_sockets`).
            (error, _) if error == -libc::ECANCELED => Ok(()),
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
            let bytes = &self.bufring.bytes_mut(bid)[..len];
            let conn = &mut self.conns[slot as usize];
            let (used, done) =
                conn.link.handle_handshake_bytes(bytes, self.now, self.pool.get_mut())?;
            start = used;
            self.touch(slot);
            if !done {
                return Ok(());
            }
            self.establish(service, slot)?;
        }
        if start == len {
            return Ok(());
        }
        let id = self.link_id(slot);
        let (bytes, mut lender) = self.bufring.lender(bid);
        let bytes = &mut bytes[start..len];
        // The buffer is lent to other links' sends, record by record, within the shares.
        let mut lending = Lending::new(lender.lent(), self.config.recv_buffers);
        let at = Lent { buffer: bid, offset: start as u32 };
        let records = Records {
            conns: &mut self.conns,
            pool: &self.pool,
            touched: &mut self.touched,
            worker: self.index,
            now: self.now,
            periods: &self.periods,
        };
        let result = records.handle(service, slot, id, bytes, Some((at, &mut lending)));
        // Counted as lent now, before any of them can come back: a send completes, or a link
        // is released, only after the turn's receives are handled.
        lender.lend(lending.records);
        self.stats.records_in_place += u64::from(lending.records) + lending.moved;
        self.records_handled(slot, result?);
        Ok(())
    }

    /// After a link's records were handled: the counters, its deadlines, its flush.
    fn records_handled(&mut self, slot: u32, count: RecordsIn) {
        self.stats.messages_in += count.messages;
        self.stats.records_reassembled += count.reassembled;
        if let Some(at) = count.shed_at {
            self.arm_timer(slot, TimerKind::Shed, at);
        }
        self.arm_reassembly(slot);
        self.touch(slot);
    }

    /// The handshake finished: switch to records and tell the service.
    fn establish(&mut self, service: &mut impl Service, slot: u32) -> Result<(), CloseReason> {
        let now = self.now;
        let conn = &mut self.conns[slot as usize];
        let keepalive = self.config.keepalive_interval;
        let (peer, deadlines, rekey_at) = conn.link.establish(now, keepalive, &self.periods)?;
        conn.phase = Phase::Established;
        conn.peer = Some(peer);
        // The connect is long complete: the dial's address and identity are not needed again.
        conn.dial = None;
        self.stats.established += 1;
        for (deadline, at) in deadlines {
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
        let sibling = conn.sibling;
        let attached = conn.attached.as_deref().copied();
        let mut link = std::mem::replace(&mut conn.link, Link::new(Crypto::None, now));
        let (pool, conns, touched) = (&self.pool, &mut self.conns, &mut self.touched);
        let result = link.parts(pool).map(|parts| {
            let mut ctx = LinkCtx {
                id,
                peer,
                txn: parts.txn,
                span: parts.span,
                out: parts.out,
                now,
                peers: Peers::new(conns, pool, touched, self.index),
                fd,
                meta: parts.meta,
                sibling,
                attached,
            };
            f(&mut ctx)
        });
        self.conns[slot as usize].link = link;
        result
    }

    fn sent(&mut self, service: &mut impl Service, slot: u32, result: i32) {
        let conn = &mut self.conns[slot as usize];
        conn.ops -= 1;
        if let Some(vec) = conn.send_vec.take() {
            self.send_vecs.push(vec);
        }
        let sent = usize::try_from(result).unwrap_or(0);
        let bufring = &mut self.bufring;
        conn.link.sent(sent, self.pool.get_mut(), &mut |at| bufring.unlend(at.buffer));
        if conn.phase == Phase::Closing {
            self.maybe_free(slot);
            return;
        }
        if result < 0 {
            return self.close(service, slot, CloseReason::Io(-result));
        }
        self.busy_at = self.now;
        self.stats.bytes_out += result as u64;
        if conn.phase == Phase::Draining && conn.link.is_idle() {
            let code = self.draining.remove(&slot).unwrap_or(ErrorCode::SHUTDOWN);
            return self.close(service, slot, CloseReason::Local(code));
        }
        self.start_send(slot);
    }

    /// Sends everything queued on a link (up to `SEND_IOVECS` chunks in one `sendmsg`), unless
    /// a send is already in flight: one at a time keeps the byte stream in order.
    fn start_send(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.link.sending() || conn.phase == Phase::Closing {
            return;
        }
        if let Some(to) = conn.sibling {
            return self.send_to_sibling(slot, usize::from(to));
        }
        let bufring = &self.bufring;
        let mut chunks = conn
            .link
            .transmit()
            .map(|chunk| match chunk {
                Chunk::Bytes(bytes) => bytes,
                Chunk::Lent { buffer, offset, len } => bufring.lent_bytes(buffer, offset, len),
            })
            .peekable();
        if chunks.peek().is_none() {
            return;
        }
        let mut vec = self.send_vecs.pop().unwrap_or_else(SendVec::new);
        let msg = vec.prepare(chunks);
        let entry = opcode::SendMsg::new(Fd(conn.socket.as_raw_fd()), msg)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(op::encode(op::SEND, slot, conn.generation));
        conn.send_vec = Some(vec);
        conn.ops += 1;
        let stall = conn.link.send_started(self.now, &self.periods);
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
            // An internal link is not closed for its queue: what its lane cannot take yet waits
            // in it (DESIGN 7c.3 says what bounds it, and what does not yet).
            let queue_max = match conn.sibling {
                Some(_) => usize::MAX,
                None => self.config.send_queue_max_bytes,
            };
            let end = conn.link.end_turn(
                self.now,
                self.config.keepalive_interval,
                queue_max,
                self.pool.get_mut(),
                &self.periods,
            );
            self.stats.records_out += end.records;
            let generation = conn.generation;
            if let Some(at) = end.shed_at {
                self.timers.arm(Timer { at, slot, generation, kind: TimerKind::Shed });
            }
            if let Some(at) = end.keepalive_at {
                self.timers.arm(Timer { at, slot, generation, kind: TimerKind::Keepalive });
            }
            if let Some(reason) = end.close {
                self.close(service, slot, reason);
                continue;
            }
            self.start_send(slot);
        }
        self.touched.clear();
    }

    /// Re-arms the receives that ended (out of buffers, or the kernel ended the multishot).
    fn rearm_receives(&mut self) {
        if self.lanes.paused {
            // Not while another worker cannot take what this one hands it: the receives wait.
            return;
        }
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

/// What handling a link's received records needs of its worker besides the bytes: borrowed
/// field by field, so the bytes can lie in the worker's receive buffers or in a lane.
struct Records<'a> {
    conns: &'a mut Slab<Conn>,
    pool: &'a RefCell<Pool>,
    touched: &'a mut Vec<u32>,
    worker: usize,
    now: Instant,
    periods: &'a crate::link::Periods,
}

impl Records<'_> {
    /// Hands the records in `bytes`, received on link `slot` (`id`), to `service`: each whole
    /// first, then message by message. With `lent`, `bytes` start at that place of a receive
    /// buffer, which may be lent to other links' sends within `Lending`'s shares.
    fn handle(
        self,
        service: &mut impl Service,
        slot: u32,
        id: LinkId,
        bytes: &mut [u8],
        lent: Option<(Lent, &mut Lending)>,
    ) -> Result<RecordsIn, CloseReason> {
        let Records { conns, pool, touched, worker, now, periods } = self;
        let conn = &mut conns[slot as usize];
        let Some(peer) = conn.peer else {
            return Err(CloseReason::Internal("records on a link without a peer"));
        };
        let fd = conn.socket.as_raw_fd();
        let sibling = conn.sibling;
        let attached = conn.attached.as_deref().copied();
        // Lift the link out of the slab while its records are handled, so the service can reach
        // the worker's other links meanwhile (`Peers`: a relayed message goes straight to the
        // link it continues on). Its place holds an empty link, which `Peers` does not lend.
        let mut link = std::mem::replace(&mut conn.link, Link::new(Crypto::None, now));
        let (at, mut lending) = match lent {
            Some((at, lending)) => (Some(at), Some(lending)),
            None => (None, None),
        };
        let result = link.handle_records(bytes, at, pool, now, periods, |parts, input| {
            let mut peers = Peers::new(conns, pool, touched, worker);
            if let Some(lending) = lending.as_deref_mut() {
                peers = peers.lending(lending);
            }
            let mut ctx = LinkCtx {
                id,
                peer,
                txn: &mut *parts.txn,
                span: &mut *parts.span,
                out: parts.out.reborrow(),
                now,
                peers,
                fd,
                meta: &mut *parts.meta,
                sibling,
                attached,
            };
            match input {
                Input::Record(record) => service.record(&mut ctx, record),
                Input::Received(received) => {
                    service.received(&mut ctx, received);
                    None
                }
                Input::Event(event) => {
                    service.event(&mut ctx, event);
                    None
                }
            }
        });
        conns[slot as usize].link = link;
        result
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
