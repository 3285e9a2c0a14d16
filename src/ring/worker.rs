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

/// Counters of one worker over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Links accepted.
    pub accepted: u64,
    /// Links dialled.
    pub dialled: u64,
    /// Links that completed the handshake.
    pub established: u64,
    /// Links that failed before completing the handshake, and dials that could not start (no
    /// socket, or the source address would not bind).
    pub handshake_failures: u64,
    /// Accepted connections from strangers (sources not trusted) closed at once because the
    /// worker held `Config::max_stranger_links()` links (`max_links` while no source is
    /// trusted).
    pub refused_max_links: u64,
    /// Accepted connections from strangers closed at once because the handshake rate
    /// (`Config::max_handshakes_per_sec`) was used up.
    pub refused_handshake_rate: u64,
    /// Accepted connections from trusted sources (`Config::trusted_sources`,
    /// [`WorkerCtx::trust_source`]) that started a handshake; also counted in `accepted`,
    /// which less this is the strangers' count.
    pub trusted_accepted: u64,
    /// Of `trusted_accepted`, those that took a token from the trusted sources' own bucket
    /// (`Config::trusted_handshakes_per_sec`) because the common one was empty.
    pub trusted_reserved_tokens: u64,
    /// Of `trusted_accepted`, those that took one of the link slots strangers cannot
    /// (`Config::reserved_links`): the worker held `max_stranger_links()` links or more.
    pub trusted_reserved_links: u64,
    /// Accepted connections from trusted sources closed at once because the worker held
    /// `Config::max_links` links.
    pub trusted_refused_max_links: u64,
    /// Accepted connections from trusted sources closed at once because both the common
    /// handshake bucket and the trusted sources' own were empty.
    pub trusted_refused_handshake_rate: u64,
    /// Links closed (for any reason).
    pub closed: u64,
    /// Bytes received and sent.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Records sealed.
    pub records_out: u64,
    /// Record buffers allocated because the pool was empty.
    pub pool_misses: u64,
    /// Receives re-armed because the provided buffers ran out.
    pub recv_buffer_shortages: u64,
    /// Records that arrived cut across two receive buffers and were copied whole before being
    /// opened (the rest are opened where the kernel put them).
    pub records_reassembled: u64,
    /// Busy polls (`Config::busy_poll`) that found work before the worker would have slept.
    pub busy_poll_hits: u64,
    /// Busy polls that ran out, after which the worker slept.
    pub busy_poll_misses: u64,
    /// Busy polls given up because another thread held the core (polling then pauses).
    pub busy_poll_contended: u64,
}

impl WorkerStats {
    /// Links still connecting or handshaking: started (accepted or dialled) and neither
    /// established nor failed yet.
    pub fn handshaking(&self) -> u64 {
        (self.accepted + self.dialled).saturating_sub(self.established + self.handshake_failures)
    }
}

/// How long accepting pauses after it fails (e.g. out of descriptors), instead of spinning.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A busy poll's look that comes this long after the previous one means another thread held
/// the core meanwhile (an uncontended look takes about a microsecond; another ringspan worker
/// gives the core back within its own poll window).
const POLL_CONTENDED: Duration = Duration::from_micros(500);

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

    /// Submits what the turn queued and waits for the next completion, or the next timer.
    fn submit_and_wait(&mut self) -> io::Result<()> {
        if self.busy_poll() {
            return Ok(());
        }
        let next = [
            self.timers.next(),
            self.shutdown_deadline,
            self.accept_paused_until,
            self.service_wake,
        ]
        .into_iter()
        .flatten()
        .min();
        let result = match next {
            Some(at) => {
                let wait = at.saturating_duration_since(now());
                let ts = Timespec::from(wait.max(Duration::from_micros(1)));
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Within `Config::busy_poll` of the last turn that moved data: submits, then looks for
    /// work without sleeping until some arrives (true) or the poll runs out (false). Deferred
    /// completions (a receive the network stack made ready) wait as task work until the worker
    /// enters the kernel: the ring's TASKRUN flag says when there is some, and the blocking
    /// wait that follows then returns at once. Between looks the core goes to any other
    /// runnable thread.
    ///
    /// A thread that never sleeps loses what the scheduler gives a sleeper: woken by data, it
    /// would run at once; polling, it waits for its turn behind any CPU-bound thread on its
    /// core, a whole time slice (milliseconds). So when a yield comes back late — later than
    /// `POLL_CONTENDED`, and the thread was switched out meanwhile (a late look without a
    /// switch is the hypervisor's doing, which sleeping would not change) — the worker stops
    /// polling and sleeps, and polls again only after `Config::busy_poll_backoff`.
    fn busy_poll(&mut self) -> bool {
        let until = self.busy_at + self.config.busy_poll;
        if self.now >= until || self.poll_backoff_until.is_some_and(|at| self.now < at) {
            return false;
        }
        if let Err(error) = self.ring.submit() {
            tracing::error!(worker = self.index, %error, "submit failed");
            return false;
        }
        let mut looked = now();
        // Taken before the first yield only: a poll that finds work at once costs no syscall.
        let mut switches = None;
        loop {
            if !self.ring.completion().is_empty() {
                self.stats.busy_poll_hits += 1;
                return true;
            }
            if self.ring.submission().taskrun() {
                self.stats.busy_poll_hits += 1;
                return false;
            }
            let at = now();
            if at >= looked + POLL_CONTENDED
                && switches.is_some_and(|before| context_switches() != before)
            {
                // The core is contended: sleeping serves this thread better for a while.
                self.stats.busy_poll_contended += 1;
                self.poll_backoff_until = Some(at + self.config.busy_poll_backoff);
                return false;
            }
            if at >= until {
                self.stats.busy_poll_misses += 1;
                return false;
            }
            switches.get_or_insert_with(context_switches);
            // SAFETY: sched_yield takes no arguments and only gives up the core.
            unsafe { libc::sched_yield() };
            looked = at;
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

    fn accepted(&mut self, result: i32, flags: u32, generation: u32) {
        if result >= 0 {
            self.accepted_in_turn = true;
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            let socket = unsafe { Socket::from_raw_fd(result) };
            if self.shutdown_deadline.is_some() {
                // Shutting down: a connection that raced the end of accepting is dropped.
                drop(socket);
            } else if self.admit(&socket) {
                let _ = socket.set_tcp_nodelay(true);
                self.adopt(socket);
            } else {
                // Refused before any handshake work: a reset tells the peer at once, and this
                // side keeps no TIME_WAIT state for it.
                let _ = socket.set_linger(Some(Duration::ZERO));
                drop(socket);
            }
        } else if result != -libc::ECANCELED && result != -libc::EINVAL {
            // Out of descriptors or memory: pause accepting briefly instead of spinning.
            tracing::warn!(error = %io::Error::from_raw_os_error(-result), "accept failed");
            if !cqueue::more(flags) {
                self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
            }
        }
        let current = generation == self.accept_generation & 0xff_ffff;
        if current && !cqueue::more(flags) && self.listener.is_some() {
            if self.shutdown_deadline.is_some() {
                self.listener = None;
            } else if self.accept_paused_until.is_none() {
                self.arm_accept();
            }
        }
    }

    /// Arms a multishot accept on this worker's handle to the listening socket, under a new
    /// generation.
    fn arm_accept(&mut self) {
        if let Some(listener) = &self.listener {
            self.accept_generation = self.accept_generation.wrapping_add(1);
            let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
                .build()
                .user_data(op::encode(op::ACCEPT, 0, self.accept_generation));
            self.push(entry);
        }
    }

    /// After a turn that accepted connections, moves this worker to the back of the
    /// listening socket's queue of waiting accepts, so the next connections go to the other
    /// workers. The kernel wakes one waiting accept per connection, always the first in its
    /// queue, and a multishot accept keeps its place: without this, one worker would take every
    /// connection. The accept in flight is cancelled (its last completion, of an older
    /// generation, is ignored) and a new one armed, which queues behind the others: two
    /// submissions per turn that accepted, however many connections it took.
    fn rotate_accept(&mut self) {
        if !std::mem::take(&mut self.accepted_in_turn)
            || self.listener.is_none()
            || self.shutdown_deadline.is_some()
            || self.accept_paused_until.is_some()
        {
            return;
        }
        let cancel = opcode::AsyncCancel::new(op::encode(op::ACCEPT, 0, self.accept_generation))
            .build()
            .user_data(op::encode(op::IGNORE, 0, 0));
        self.push(cancel);
        self.arm_accept();
    }

    /// Whether an accepted connection may start a handshake, by its source address (one
    /// `getpeername`): a link slot and a handshake token for its class (see `admission`).
    /// Counts the outcome.
    fn admit(&mut self, socket: &Socket) -> bool {
        let source = socket.peer_addr().ok().and_then(|addr| addr.as_socket()).map(|a| a.ip());
        let admitted = self.admission.admit(self.now, source, self.live_links, &mut self.stats);
        if !admitted {
            tracing::debug!(worker = self.index, ?source, links = self.live_links, "refused");
        }
        admitted
    }

    /// Starts the responder's handshake on an accepted connection.
    fn adopt(&mut self, socket: Socket) {
        match Session::responder(self.cipher.clone(), self.now) {
            Ok(session) => {
                self.stats.accepted += 1;
                let slot =
                    self.new_conn(socket, Phase::Handshake, Crypto::Handshake(Box::new(session)));
                self.arm_recv(slot);
                self.arm_handshake_timer(slot);
            }
            Err(error) => tracing::warn!(%error, "cannot start a handshake"),
        }
    }

    /// Dials `addr`, from source address `from` if given (port chosen at connect), with
    /// `cipher` as the identity if given (else the engine's). Returns the link's id; a dial that
    /// cannot start returns `None` and is reported to the service's `dial_failed` after the
    /// turn's callbacks.
    fn connect(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        peer: Option<PublicKey>,
        cipher: Option<Arc<cipher::Config>>,
    ) -> Option<LinkId> {
        self.stats.dialled += 1;
        let socket = match self.dial_socket(addr, from) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%addr, ?from, %error, "cannot start a dial");
                self.stats.handshake_failures += 1;
                let errno = error.raw_os_error().unwrap_or(libc::EIO);
                self.dial_errors.push((addr, CloseReason::Io(errno)));
                return None;
            }
        };
        let slot = self.new_conn(socket, Phase::Connecting, Crypto::None);
        let conn = &mut self.conns[slot as usize];
        conn.io.meta.dialled = true;
        let dial = conn.dial.insert(Box::new(Dial {
            addr: SockAddr::from(addr),
            expected_peer: peer,
            cipher,
        }));
        let entry = opcode::Connect::new(
            Fd(conn.socket.as_raw_fd()),
            dial.addr.as_ptr().cast(),
            dial.addr.len(),
        )
        .build()
        .user_data(op::encode(op::CONNECT, slot, conn.generation));
        conn.ops += 1;
        self.push(entry);
        self.arm_handshake_timer(slot);
        Some(self.link_id(slot))
    }

    /// A socket for dialling `addr`, bound to source address `from` if given.
    fn dial_socket(&self, addr: SocketAddr, from: Option<IpAddr>) -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let _ = socket.set_tcp_nodelay(true);
        if let Some(ip) = from {
            // The port is then chosen at connect, per destination, so one source address
            // serves as many links as the ephemeral range holds to each destination.
            // Best effort: without it the port is picked at bind, which still works.
            let _ = super::uring::bind_address_no_port(&socket);
            socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        Ok(socket)
    }

    /// Reports the dials that failed before they had a link.
    fn report_dial_errors(&mut self, service: &mut impl Service) {
        while let Some((addr, reason)) = self.dial_errors.pop() {
            service.dial_failed(addr, reason);
        }
    }

    fn connected(&mut self, service: &mut impl Service, slot: u32, result: i32) {
        let conn = &mut self.conns[slot as usize];
        conn.ops -= 1;
        if conn.phase == Phase::Closing {
            self.maybe_free(slot);
            return;
        }
        if result < 0 {
            return self.close(service, slot, CloseReason::Io(-result));
        }
        let (cipher, expected) = match &conn.dial {
            Some(dial) => {
                (dial.cipher.clone().unwrap_or_else(|| self.cipher.clone()), dial.expected_peer)
            }
            None => (self.cipher.clone(), None),
        };
        match Session::initiator(cipher, expected, self.now) {
            Ok(session) => {
                conn.io.crypto = Crypto::Handshake(Box::new(session));
                conn.phase = Phase::Handshake;
                self.pump_handshake(slot);
                self.arm_recv(slot);
            }
            Err(error) => self.close(service, slot, CloseReason::Protocol(error)),
        }
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
        let id = self.link_id(slot);
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
            self.arm_timer(slot, kind_of(deadline), at);
        }
        if let Some(at) = rekey_at {
            self.arm_timer(slot, TimerKind::Rekey, at);
        }
        if let Some(mut ctx) = self.conns[slot as usize].ctx(id, &self.pool, now) {
            service.link_up(&mut ctx);
        }
        self.touch(slot);
        Ok(())
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

    /// Arms the handshake deadline (the session's timeout, unless it is "never").
    fn arm_handshake_timer(&mut self, slot: u32) {
        if let Some(at) = self.now.checked_add(self.cipher.handshake_timeout) {
            self.arm_timer(slot, TimerKind::Handshake, at);
        }
    }

    /// Arms the link's reassembly deadline if it holds a record in a full-size buffer that has
    /// none. One timer per link at most: one armed for an earlier record, when it fires, gives
    /// the record it then finds a period of its own (`TimerKind::Reassembly`).
    fn arm_reassembly(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        let rx = &mut conn.io.rx;
        let needs = rx.holds_large_buffer() && !rx.deadline_armed();
        if let Some(at) = conn.clock.arm_reassembly(self.now, needs, &self.periods) {
            rx.arm_deadline();
            self.arm_timer(slot, TimerKind::Reassembly, at);
        }
    }

    fn arm_timer(&mut self, slot: u32, kind: TimerKind, at: Instant) {
        let generation = self.conns[slot as usize].generation;
        self.timers.arm(Timer { at, slot, generation, kind });
    }

    fn fire_timers(&mut self, service: &mut impl Service) {
        while let Some(timer) = self.timers.pop_due(self.now) {
            let Some(conn) = self.conns.get_mut(timer.slot as usize) else {
                continue;
            };
            if conn.generation != timer.generation || conn.phase == Phase::Closing {
                continue;
            }
            let slot = timer.slot;
            match timer.kind {
                TimerKind::Handshake => {
                    if matches!(conn.phase, Phase::Connecting | Phase::Handshake) {
                        let error = Error::from(crate::error::Handshake::Timeout);
                        self.close(service, slot, CloseReason::Protocol(error));
                    }
                }
                TimerKind::Rekey => {
                    if let Crypto::Established { sealer, .. } = &mut conn.io.crypto {
                        match sealer.handle_timeout(self.now) {
                            Ok(()) => {
                                if let Some(at) = sealer.poll_timeout() {
                                    self.arm_timer(slot, TimerKind::Rekey, at);
                                }
                            }
                            Err(error) => self.close(service, slot, CloseReason::Protocol(error)),
                        }
                    }
                }
                TimerKind::Keepalive
                | TimerKind::Idle
                | TimerKind::SendStall
                | TimerKind::Shed
                | TimerKind::Reassembly => {
                    let deadline = match timer.kind {
                        TimerKind::Keepalive => Deadline::Keepalive,
                        TimerKind::Idle => Deadline::Idle,
                        TimerKind::SendStall => Deadline::SendStall,
                        TimerKind::Shed => Deadline::Shed,
                        _ => Deadline::Reassembly,
                    };
                    let interval = conn.io.meta.keepalive(self.config.keepalive_interval);
                    let rx = RxState { unfinished: conn.io.rx.deadline_armed() };
                    let pending = conn.io.tx.has_pending();
                    match conn.clock.fire(deadline, self.now, interval, pending, rx, &self.periods)
                    {
                        Fired::Stale => {
                            if deadline == Deadline::Reassembly {
                                // A later record (or none) holds the buffer now: it gets a
                                // period of its own.
                                self.arm_reassembly(slot);
                            }
                        }
                        Fired::Later(at) => self.arm_timer(slot, timer.kind, at),
                        Fired::Ping { next } => {
                            if let Crypto::Established { sealer, .. } = &mut conn.io.crypto {
                                let mut sink = conn.io.tx.sink(sealer, &self.pool);
                                let _ = conn.io.txn.send_oneway(
                                    &mut sink,
                                    WireCommand::LINK_PING,
                                    ErrorCode::NONE,
                                    &[],
                                );
                            }
                            self.touch(slot);
                            self.arm_timer(slot, TimerKind::Keepalive, next);
                        }
                        Fired::ShedKeys => {
                            if let Crypto::Established { sealer, opener } = &mut conn.io.crypto {
                                // Quiet for a while: keep the keys' bytes, not their expanded
                                // schedules (rebuilt at the next record).
                                sealer.shed_keys();
                                opener.shed_keys();
                            }
                        }
                        Fired::Expired(expiry) => {
                            let reason = match expiry {
                                Expiry::Idle => CloseReason::IdleTimeout,
                                Expiry::SendStall => CloseReason::SendStall,
                                Expiry::Reassembly => {
                                    let stalled =
                                        "a record stayed unfinished past the reassembly deadline";
                                    let violation = crate::error::Violation::LinkProtocol(stalled);
                                    CloseReason::Protocol(Error::from(violation))
                                }
                            };
                            self.close(service, slot, reason);
                        }
                    }
                }
            }
        }
    }

    /// Closes a link: ends its transactions (the service sees each end), stops its operations,
    /// and frees it once the kernel is done with them.
    fn close(&mut self, service: &mut impl Service, slot: u32, reason: CloseReason) {
        let id = self.link_id(slot);
        let now = self.now;
        let conn = &mut self.conns[slot as usize];
        if conn.phase == Phase::Closing {
            return;
        }
        let was_up = matches!(conn.phase, Phase::Established | Phase::Draining);
        if conn.phase == Phase::Draining {
            self.draining.remove(&slot);
        }
        let connecting = conn.phase == Phase::Connecting;
        conn.phase = Phase::Closing;
        self.live_links -= 1;
        if was_up {
            let code = match reason {
                CloseReason::Local(code) => code,
                _ => ErrorCode::LOST_LINK,
            };
            conn.io.txn.handle_link_down(code);
            while let Some(event) = conn.io.txn.poll_event() {
                if let Some(mut ctx) = conn.ctx(id, &self.pool, now) {
                    service.event(&mut ctx, event);
                }
            }
            service.link_down(id, reason);
            tracing::debug!(link = id.0, %reason, "link closed");
        } else {
            self.stats.handshake_failures += 1;
            tracing::info!(link = id.0, %reason, "link failed before its handshake completed");
            if let Some(addr) = conn.dial.as_ref().and_then(|dial| dial.addr.as_socket()) {
                service.dial_failed(addr, reason);
            }
        }
        self.stats.closed += 1;
        let conn = &mut self.conns[slot as usize];
        conn.io.crypto = Crypto::None;
        if conn.ops > 0 {
            // Shutting the socket down ends its operations; the cancellations make sure. Each
            // names one operation by its `user_data`, which the kernel finds by hash: cancelling
            // by descriptor would scan every operation of the ring, once per link closed.
            let _ = conn.socket.shutdown(std::net::Shutdown::Both);
            let in_flight = [
                (op::RECV, conn.recv_armed),
                (op::SEND, conn.clock.sending()),
                (op::CONNECT, connecting),
            ];
            let generation = conn.generation;
            for (kind, _) in in_flight.into_iter().filter(|&(_, live)| live) {
                let cancel = opcode::AsyncCancel::new(op::encode(kind, slot, generation))
                    .build()
                    .user_data(op::encode(op::IGNORE, slot, 0));
                self.push(cancel);
            }
        }
        self.maybe_free(slot);
    }

    /// Frees a closed link once no operation of it is in flight.
    fn maybe_free(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.phase != Phase::Closing || conn.ops > 0 {
            return;
        }
        let mut conn = self.conns.remove(slot as usize);
        conn.io.rx.release(self.pool.get_mut());
        conn.io.tx.release(self.pool.get_mut());
        // Dropping the socket closes it.
    }

    /// Closes an established link with a notice: `LINK_CLOSE` carrying `code` (why) goes out,
    /// every transaction of the link ends here at once (nothing may follow the notice), and the
    /// link closes once the notice is sent. `false` (nothing done) if the link is not
    /// established.
    fn drain(&mut self, service: &mut impl Service, slot: u32, code: ErrorCode) -> bool {
        let conn = &mut self.conns[slot as usize];
        let (Crypto::Established { sealer, .. }, Phase::Established) =
            (&mut conn.io.crypto, conn.phase)
        else {
            return false;
        };
        let mut sink = conn.io.tx.sink(sealer, &self.pool);
        let _ = conn.io.txn.send_oneway(&mut sink, WireCommand::LINK_CLOSE, code, &[]);
        conn.io.txn.handle_link_down(code);
        let (id, now) = (self.link_id(slot), self.now);
        let conn = &mut self.conns[slot as usize];
        while let Some(event) = conn.io.txn.poll_event() {
            if let Some(mut ctx) = conn.ctx(id, &self.pool, now) {
                service.event(&mut ctx, event);
            }
        }
        conn.phase = Phase::Draining;
        self.draining.insert(slot, code);
        self.touch(slot);
        true
    }

    fn begin_shutdown(&mut self, service: &mut impl Service) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(self.now + Duration::from_millis(SHUTDOWN_GRACE_MS));
        if self.listener.is_some() {
            if self.accept_paused_until.take().is_some() {
                // No accept is in flight: nothing will complete to drop the handle.
                self.listener = None;
            } else {
                // Ends this worker's multishot accept; its last completion drops the handle.
                // The socket is shared by every worker (and closes with the last handle), so
                // it is not shut down: the others accept until their own shutdown.
                let accept = op::encode(op::ACCEPT, 0, self.accept_generation);
                let cancel = opcode::AsyncCancel::new(accept).build().user_data(op::encode(
                    op::IGNORE,
                    0,
                    0,
                ));
                self.push(cancel);
            }
        }
        let slots: Vec<u32> = self.conns.iter().map(|(slot, _)| slot as u32).collect();
        for slot in slots {
            let phase = self.conns[slot as usize].phase;
            if !matches!(phase, Phase::Closing | Phase::Draining)
                && !self.drain(service, slot, ErrorCode::SHUTDOWN)
            {
                self.close(service, slot, CloseReason::Local(ErrorCode::SHUTDOWN));
            }
        }
    }
}

/// A worker, as its service sees it during [`Service::tick`] and [`Service::command`].
pub struct WorkerCtx<'a> {
    worker: &'a mut Worker,
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
    pub fn link_stats(&self, id: LinkId) -> Option<super::LinkStats> {
        let slot = self.worker.slot_of(id)?;
        Some(self.worker.conns[slot as usize].stats)
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
        let meta = &mut self.worker.conns[slot as usize].io.meta;
        meta.keepalive_ms = super::keepalive_ms(interval);
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
        WorkerStats { pool_misses: self.worker.pool.borrow().misses(), ..self.worker.stats }
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
}

impl<'a> Peers<'a> {
    fn new(
        conns: &'a mut Slab<Conn>,
        pool: &'a RefCell<Pool>,
        touched: &'a mut Vec<u32>,
        worker: usize,
    ) -> Peers<'a> {
        Peers { inner: Some(PeersInner { conns, pool, touched, worker }) }
    }

    /// No link is lent.
    pub(crate) fn none() -> Peers<'a> {
        Peers { inner: None }
    }

    /// Runs `f` with link `id`'s transactions and output, if that link is lent: established,
    /// on this worker, and not the one whose message is being handled. What `f` writes is
    /// sealed and sent at the end of the turn, like anything else written to the link.
    pub fn with<R>(
        &mut self,
        id: LinkId,
        f: impl FnOnce(&mut txn::Link, &mut TxSink<'_>) -> R,
    ) -> Option<R> {
        let (conn, pool) = self.lent(id)?;
        let LinkIo { crypto: Crypto::Established { sealer, .. }, txn, tx, .. } = &mut conn.io
        else {
            return None;
        };
        Some(f(txn, &mut tx.sink(sealer, pool)))
    }

    /// Sends `plaintext` on link `id` as one record, if that link is lent (as for
    /// [`Peers::with`]): a copy is made in a pooled buffer, `edit` rewrites it with the link's
    /// transactions at hand, and it is sealed and queued, behind whatever the link wrote before,
    /// if `edit` returns `Some`. Sent at the end of the turn.
    pub fn with_record<R>(
        &mut self,
        id: LinkId,
        plaintext: &[u8],
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let (conn, pool) = self.lent(id)?;
        let LinkIo { crypto: Crypto::Established { sealer, .. }, txn, tx, .. } = &mut conn.io
        else {
            return None;
        };
        // The record being built, if any, is sealed ahead of this one: both count.
        let records = 1 + u16::from(tx.has_pending());
        let result = tx.queue_record(sealer, pool, plaintext, |body| edit(txn, body))?;
        conn.records_queued = conn.records_queued.saturating_add(records);
        Some(result)
    }

    /// Link `id`'s state and the pool, if the link is lent: on this worker, established, and
    /// not the one whose message is being handled (its state is lifted out, so it has no record
    /// keys). It is marked as touched: whatever is written to it is sent at the end of the turn.
    fn lent(&mut self, id: LinkId) -> Option<(&mut Conn, &'a RefCell<Pool>)> {
        let inner = self.inner.as_mut()?;
        let (worker, slot, generation) = decode_link(id);
        let conn = inner.conns.get_mut(slot as usize)?;
        if worker != inner.worker as u64
            || conn.generation & 0xff_ffff != generation
            || conn.phase != Phase::Established
            || !matches!(conn.io.crypto, Crypto::Established { .. })
        {
            return None;
        }
        if !conn.touched {
            conn.touched = true;
            inner.touched.push(slot);
        }
        Some((conn, inner.pool))
    }
}

/// Times the calling thread has been switched out, voluntarily or not.
/// The heap's kind for one of a link's own deadlines.
fn kind_of(deadline: Deadline) -> TimerKind {
    match deadline {
        Deadline::Keepalive => TimerKind::Keepalive,
        Deadline::Idle => TimerKind::Idle,
        Deadline::SendStall => TimerKind::SendStall,
        Deadline::Shed => TimerKind::Shed,
        Deadline::Reassembly => TimerKind::Reassembly,
    }
}

fn context_switches() -> i64 {
    // SAFETY: getrusage writes one `rusage` through the pointer, to a zeroed value we own.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    usage.ru_nvcsw + usage.ru_nivcsw
}

/// A link id's worker, slot and generation (the low 24 bits).
fn decode_link(id: LinkId) -> (u64, u32, u32) {
    (id.0 >> 56, id.0 as u32, (id.0 >> 32) as u32 & 0xff_ffff)
}

#[allow(clippy::disallowed_methods)] // the engine owns the clock
fn now() -> Instant {
    Instant::now()
}
