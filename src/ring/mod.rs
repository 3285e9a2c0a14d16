//! The io_uring engine: threads, rings, sockets, buffers and time. It drives the sans-IO layers.
//!
//! # Model
//!
//! One worker thread per core, pinned. Each owns one io_uring (SINGLE_ISSUER, DEFER_TASKRUN,
//! COOP_TASKRUN), its links, a provided-buffer ring for receives, a pool of record buffers, a
//! timer heap and a [`Service`] instance. Workers share nothing. A link lives on the worker that
//! accepted or dialled it for its whole life. The engine binds a listening socket per listen
//! address (no SO_REUSEPORT, so no other process can share the port) and every worker keeps an
//! accept in flight on its own handle to each, so incoming connections go to whichever worker
//! is ready, admitted alike whichever address they came to; [`Engine::connect`] deals outgoing
//! ones round robin.
//!
//! Other threads reach a worker only through its [`mailbox`]: a bounded queue of commands and an
//! eventfd that wakes the worker. A command carries owned values (addresses, buffers), never a
//! reference into another worker's state. Workers of one engine also share a [`lane`] per
//! ordered pair, a byte ring that carries the *internal link* between the two: a link like any
//! other to the service ([`LinkCtx::sibling`] says which worker is at its other end), made at
//! start, whose records go through the lanes instead of a socket. A wake-up of a thread on the other core costs
//! ~20 µs on our development VM (the task's machine notes), so hand-offs are for control and
//! batches, never for single messages: a worker wakes another for its lane at most once a turn,
//! and only if it said it would sleep.
//!
//! # One turn of a worker
//!
//! 1. Submit queued operations and wait for at least one completion or the next deadline.
//! 2. Collect the completions, then dispatch them one by one (never recursively): accepts make
//!    links; receives feed handshakes and records (opened in place in the provided buffer);
//!    send completions advance the send queues.
//! 3. Fire due timers (handshake timeout, keepalive, idle timeout, rekey, send stall).
//! 4. Hand the internal links what other workers wrote to this one, then let the service act
//!    ([`Service::tick`]).
//! 5. Seal each touched link's pending record (every message written during the turn goes into
//!    one record: batching) and start its send if none is in flight; wake the workers this turn
//!    wrote to that sleep (and those waiting for room it made in their lanes); re-arm receives
//!    that ran out of buffers; give consumed receive buffers back to the kernel.
//!
//! `user_data` of every operation encodes its kind, the link's table slot and generation, so a
//! completion for a link that has since been replaced is recognised and ignored.

mod admission;
pub mod attach;
pub mod bufring;
mod conn;
pub mod lane;
pub mod mailbox;
pub mod probe;
pub mod sys;
pub mod timer;
mod uring;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cipher::{self, PublicKey};
use crate::ids::LinkId;
use crate::limits;
use crate::span::SpanLink;
use crate::txn::{self, Event, Received};

pub use crate::link::RecordIn;
pub use crate::link::stream::TxSink;
pub use attach::{AttachConfig, PeerCred};
use conn::LinkMeta;
pub use conn::{CloseReason, LinkStats};
pub use mailbox::{Command, Mailbox};
pub use worker::{Peers, WorkerCtx, WorkerStats};

/// How an engine runs. [`Config::default`] takes every value from `src/limits.rs`.
#[derive(Clone, Debug)]
pub struct Config {
    /// Worker threads (default: one per core).
    pub workers: usize,
    /// Pin each worker to its own core.
    pub pin_workers: bool,
    /// Worker `i` is pinned to core `first_core + i` (modulo the cores there are).
    pub first_core: usize,
    /// Where to accept links: a listening socket for each address, every worker accepting on
    /// each (none: the engine only dials). When the list holds an IPv4 address, its IPv6 ones
    /// take IPv6 connections only (IPV6_V6ONLY), so `0.0.0.0:P` and `[::]:P` can both be
    /// listed; an IPv6 address alone keeps the system's default (on Linux, `[::]` takes IPv4
    /// connections too).
    pub listen: Vec<SocketAddr>,
    /// Submission queue entries per worker.
    pub ring_entries: u32,
    /// Provided receive buffers per worker (a power of two).
    pub recv_buffers: u16,
    /// Bytes per provided receive buffer.
    pub recv_buffer_size: u32,
    /// Record buffers pooled per worker.
    pub pool_records: usize,
    /// A link that sent nothing for this long sends a keepalive.
    pub keepalive_interval: Duration,
    /// A link that received nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A link whose send has not completed for this long (the peer does not read) is closed.
    pub send_stall_timeout: Duration,
    /// A record being reassembled in a full-size buffer (more than 512 bytes of it arrived)
    /// that has not completed this long after is closed as a protocol violation: a peer cannot
    /// pin 64 KiB per link by starting a record and trickling the rest. Checked once per
    /// period, so a buffer is held at most twice this.
    pub record_completion_timeout: Duration,
    /// A link with more bytes than this sealed and unsent is closed (the peer does not read).
    pub send_queue_max_bytes: usize,
    /// A link on which nothing but keepalives has crossed for this long keeps its record keys
    /// as bytes only, not as expanded schedules (rebuilt at the next record).
    pub shed_keys_after: Duration,
    /// Links per worker, established and handshaking, dialled ones included. A connection
    /// accepted when the worker holds this many is closed at once, before any handshake work,
    /// and counted in [`WorkerStats::trusted_refused_max_links`]; one from a stranger is
    /// refused earlier, at [`Config::max_stranger_links`] ([`WorkerStats::refused_max_links`]).
    /// Dials are never refused by it.
    pub max_links: usize,
    /// Handshakes a worker starts per second on accepted connections: a token bucket refilled
    /// continuously, holding at most one second's worth (so a burst of this many is taken at
    /// once). A connection accepted with no token left is closed at once and counted in
    /// [`WorkerStats::refused_handshake_rate`] (or, from a trusted source with none left in
    /// its own bucket either, [`WorkerStats::trusted_refused_handshake_rate`]). Dials are not
    /// limited.
    pub max_handshakes_per_sec: u32,
    /// Source addresses whose connections are trusted (e.g. the configured peers'), besides
    /// those a service adds at run time ([`WorkerCtx::trust_source`]). A peer's key is known
    /// only at the end of its handshake, so admission goes by address: a trusted source may
    /// take [`Config::reserved_links`] link slots that strangers cannot, and handshake tokens
    /// from a bucket of its own ([`Config::trusted_handshakes_per_sec`]) when the common one is
    /// empty. IPv4 addresses match their IPv4-mapped IPv6 form.
    pub trusted_sources: Vec<IpAddr>,
    /// Handshakes a worker starts per second on connections from trusted sources when the
    /// common bucket ([`Config::max_handshakes_per_sec`]) is empty: a second token bucket,
    /// refilled the same way, that strangers never touch.
    pub trusted_handshakes_per_sec: u32,
    /// Link slots of `max_links` that only connections from trusted sources may take:
    /// strangers are refused at [`Config::max_stranger_links`]. At most half of `max_links`
    /// is reserved, whatever this says, so a small `max_links` set alone still admits
    /// strangers; and nothing is reserved while no source is trusted at all (none configured
    /// and none trusted at run time yet).
    pub reserved_links: usize,
    /// After a turn that moved data, a worker polls its ring this long before it sleeps,
    /// yielding the core to any other runnable thread between looks (zero: it sleeps at once).
    /// Trades idle cycles for the ~20 µs a sleeping thread takes to wake.
    pub busy_poll: Duration,
    /// How long a worker does not poll at all after it found its core taken by another thread
    /// while polling (it sleeps at once instead, and so is woken, preempting that thread, when
    /// data comes).
    pub busy_poll_backoff: Duration,
    /// Where to accept local links, if anywhere: a Unix-domain stream socket through which an
    /// application on this host attaches (see [`attach`]). Worker 0 alone accepts on it, so
    /// [`limits::ATTACH_LINKS_MAX`] is counted in one place without shared state; the
    /// application's traffic reaches the other workers over the internal links.
    pub attach: Option<AttachConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            pin_workers: true,
            first_core: 0,
            listen: Vec::new(),
            ring_entries: limits::RING_ENTRIES,
            recv_buffers: limits::RECV_BUFFERS,
            recv_buffer_size: limits::RECV_BUFFER_SIZE,
            pool_records: limits::POOL_RECORDS,
            keepalive_interval: Duration::from_millis(limits::KEEPALIVE_INTERVAL_MS),
            idle_timeout: Duration::from_millis(limits::IDLE_TIMEOUT_MS),
            send_stall_timeout: Duration::from_millis(limits::SEND_STALL_TIMEOUT_MS),
            record_completion_timeout: Duration::from_millis(limits::RECORD_COMPLETION_TIMEOUT_MS),
            send_queue_max_bytes: limits::SEND_QUEUE_MAX_BYTES,
            shed_keys_after: Duration::from_millis(limits::SHED_KEYS_AFTER_MS),
            max_links: limits::MAX_LINKS_PER_WORKER,
            max_handshakes_per_sec: limits::HANDSHAKES_PER_SEC,
            trusted_sources: Vec::new(),
            trusted_handshakes_per_sec: limits::TRUSTED_HANDSHAKES_PER_SEC,
            reserved_links: limits::RESERVED_LINKS,
            busy_poll: Duration::from_micros(limits::BUSY_POLL_US),
            busy_poll_backoff: Duration::from_millis(limits::BUSY_POLL_BACKOFF_MS),
            attach: None,
        }
    }
}

impl Config {
    /// The periods a link's own deadlines are set by ([`crate::link::LinkClock`]).
    pub fn periods(&self) -> crate::link::Periods {
        crate::link::Periods {
            idle_timeout: self.idle_timeout,
            send_stall_timeout: self.send_stall_timeout,
            shed_keys_after: self.shed_keys_after,
            record_completion_timeout: self.record_completion_timeout,
        }
    }

    /// The links a worker may hold before it refuses connections from strangers (sources not
    /// trusted), while some source is trusted: `max_links` less the reserved slots, of which
    /// there are at most half of `max_links`. (While none is, strangers may take all of
    /// `max_links`.)
    pub fn max_stranger_links(&self) -> usize {
        self.max_links - self.reserved_links.min(self.max_links / 2)
    }

    /// Bytes of receive buffers each worker provides to the kernel.
    pub fn recv_bytes(&self) -> u64 {
        u64::from(self.recv_buffers) * u64::from(self.recv_buffer_size)
    }

    /// Bytes the engine pins (counted against RLIMIT_MEMLOCK): each worker's buffer-ring
    /// entries, a page at least. The buffers themselves are ordinary memory: the kernel copies
    /// into them and does not pin them.
    pub fn locked_bytes(&self) -> u64 {
        let ring = (u64::from(self.recv_buffers) * 16).next_multiple_of(4096);
        ring * self.workers.max(1) as u64
    }
}

/// What runs on each worker: the application of the links. One instance per worker, made on
/// the worker's thread by the factory given to [`Engine::start`].
pub trait Service: 'static {
    /// A link finished its handshake; records may flow.
    fn link_up(&mut self, _link: &mut LinkCtx<'_>) {}
    /// A message arrived on a link. Link-level one-way messages (keepalive, close) are handled
    /// by the engine and never reach the service.
    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>);
    /// A record arrived on a link, opened in the receive buffer it arrived in: `record` holds its
    /// messages, not yet handled. A service that can take the record whole (a relay forwarding
    /// every message in it to one other link,
    /// [`relay::Node::forward_record`](crate::relay::Node::forward_record), which sends it from
    /// where it lies when the link's share of receive buffers allows) does so and returns how
    /// many messages it held; `None` (the default) has them handed to [`Service::received`] one
    /// by one, and the record must then be as it arrived. Only messages the link's transaction
    /// layer would merely deliver may be taken so ([`txn::Link::in_stream`]).
    fn record(&mut self, _link: &mut LinkCtx<'_>, _record: &mut RecordIn<'_>) -> Option<usize> {
        None
    }
    /// A lifecycle event of a link's transactions. When a link goes down, every transaction on
    /// it arrives here as a synthesized close and an end, exactly like real ones.
    fn event(&mut self, _link: &mut LinkCtx<'_>, _event: Event) {}
    /// A link is gone (after its transactions' events). The worker's other links can be
    /// written through `worker`.
    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, _link: LinkId, _reason: CloseReason) {}
    /// A link we dialled to `addr` failed before its handshake completed (refused, timed out,
    /// wrong key...): `link` is the id the dial returned, or `None` for a dial that could not
    /// start (and returned none). No `link_up` or `link_down` is called for it.
    fn dial_failed(&mut self, _link: Option<LinkId>, _addr: SocketAddr, _reason: CloseReason) {}
    /// A handshake failed because of the key the peer proved, `key`: not allowed here
    /// (`Handshake::UnknownKey`, as a responder or a dialler without an expected key), or not
    /// the one a dial expected (`Handshake::WrongKey`). `addr` is the other end's address, if
    /// known. Called before [`Service::dial_failed`] for a dialled link; no `link_up` or
    /// `link_down` is called for it.
    fn key_refused(
        &mut self,
        _worker: &mut WorkerCtx<'_>,
        _key: PublicKey,
        _addr: Option<SocketAddr>,
        _reason: CloseReason,
    ) {
    }
    /// Once per turn of the worker's loop, after completions and timers.
    fn tick(&mut self, _worker: &mut WorkerCtx<'_>) {}
    /// A command for the service from another thread ([`Command::Service`]).
    fn command(&mut self, _worker: &mut WorkerCtx<'_>, _command: Box<dyn std::any::Any + Send>) {}
}

/// One link, as a service sees it: its transactions and the sink to send with.
pub struct LinkCtx<'a> {
    id: LinkId,
    peer: PublicKey,
    /// The link's transactions.
    pub txn: &'a mut txn::Link,
    /// The link's span protocol state (its relay node's).
    pub span: &'a mut SpanLink,
    /// Where messages sent on the link go (pass `&mut link.out` to `txn` methods).
    pub out: TxSink<'a>,
    now: Instant,
    /// The worker's other links, while a received message is handled (none otherwise).
    pub peers: Peers<'a>,
    /// The link's socket (open while the context exists: a link's socket is closed only when
    /// the link is freed, after every callback on it).
    fd: RawFd,
    meta: &'a mut LinkMeta,
    sibling: Option<u16>,
    attached: Option<PeerCred>,
}

impl LinkCtx<'_> {
    /// The link.
    pub fn id(&self) -> LinkId {
        self.id
    }

    /// The peer's authenticated key.
    pub fn peer(&self) -> PublicKey {
        self.peer
    }

    /// The time of the current turn.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Bytes written and not yet sent (sealed, or in the record being built): a service should
    /// stop producing while this is high.
    pub fn queued_bytes(&self) -> usize {
        self.out.queued_bytes()
    }

    /// Makes room in the link's send queue for `chunks` records behind the one being sent, so
    /// that a queue that deep allocates nothing (it grows past that once, if ever).
    pub fn reserve_send_queue(&mut self, chunks: usize) {
        self.out.reserve(chunks);
    }

    /// For an internal link, the worker at its other end: the link joins this worker's
    /// service to that worker's (DESIGN 7c.3), its bytes carried by their lanes and sealed with
    /// keys made for it at start, its peer this node's own key. `None` for a link to another
    /// node.
    pub fn sibling(&self) -> Option<usize> {
        self.sibling.map(usize::from)
    }

    /// For a local link (an application attached through the attach socket,
    /// [`Config::attach`]), the credentials of the process at its other end: the link had no
    /// handshake, its records are not encrypted, and its peer key ([`LinkCtx::peer`]) is made
    /// up for it, unique to it. `None` for any other link.
    pub fn attached(&self) -> Option<PeerCred> {
        self.attached
    }

    /// Whether this worker dialled the link (`false`: it accepted it). When two nodes dial each
    /// other at once, each can keep the one link of the pair that the same rule picks at both
    /// ends.
    pub fn dialled(&self) -> bool {
        self.meta.dialled
    }

    /// The address of the other end of the link: where a dialled link was dialled, or where an
    /// accepted one came from. Asked of the kernel (`getpeername`) on each call, so a link
    /// keeps no copy; `None` once the connection is gone (reset by the peer, say). A service
    /// that sees an authorized key on a link can trust its source address for admission
    /// ([`WorkerCtx::trust_source`]).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        // SAFETY: `fd` is the link's socket, which stays open at least as long as this
        // context borrows the link (a socket is closed only when its link is freed, after
        // every callback on it); the borrow does not outlive this call.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        socket2::SockRef::from(&fd).peer_addr().ok()?.as_socket()
    }

    /// Sends this link's keepalives at `interval` from now on, instead of
    /// [`Config::keepalive_interval`]: the other end's idle timeout may be shorter than ours
    /// (see [`WorkerCtx::set_keepalive`]). In whole milliseconds, at least
    /// [`limits::KEEPALIVE_INTERVAL_MIN_MS`]. Takes effect at the end of the turn.
    pub fn set_keepalive(&mut self, interval: Duration) {
        self.meta.keepalive_ms = keepalive_ms(interval);
        self.meta.keepalive_changed = true;
    }

    /// The keepalive interval set for this link ([`LinkCtx::set_keepalive`],
    /// [`WorkerCtx::set_keepalive`]); `None`: the engine's [`Config::keepalive_interval`].
    pub fn keepalive(&self) -> Option<Duration> {
        (self.meta.keepalive_ms > 0).then(|| Duration::from_millis(self.meta.keepalive_ms.into()))
    }
}

/// A link's keepalive interval as stored: whole milliseconds, within
/// [`limits::KEEPALIVE_INTERVAL_MIN_MS`] and what a `u32` holds (49 days). Never 0, which
/// stands for the engine's default.
fn keepalive_ms(interval: Duration) -> u32 {
    let ms = interval.as_millis().max(u128::from(limits::KEEPALIVE_INTERVAL_MIN_MS));
    u32::try_from(ms).unwrap_or(u32::MAX)
}

/// Why an engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// io_uring cannot be used here.
    #[error(transparent)]
    Unavailable(#[from] probe::Unavailable),
    /// The attach socket could not be set up.
    #[error("cannot serve the attach socket {}: {error}", path.display())]
    Attach {
        /// Its path.
        path: std::path::PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// A socket could not be set up.
    #[error("cannot listen on {addr}: {error}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// What the system said.
        error: std::io::Error,
    },
    /// A worker failed to start.
    #[error("worker {index} failed to start: {error}")]
    Worker {
        /// Which worker.
        index: usize,
        /// What failed.
        error: std::io::Error,
    },
}

/// A way to reach one worker from any thread, kept apart from the [`Engine`] (which is joined by
/// value).
#[derive(Clone)]
pub struct Remote {
    mailbox: Arc<Mailbox>,
}

impl Remote {
    /// Sends a command, waiting up to 2 s while the worker's mailbox is full; hands it back if it
    /// stays full (the worker is stuck or gone). A command queued after the worker exited is
    /// never run.
    pub fn send(&self, mut command: Command) -> Result<(), Command> {
        for attempt in 0..2_000 {
            match self.mailbox.send(command) {
                Ok(()) => return Ok(()),
                Err(back) => command = back,
            }
            if attempt < 100 {
                std::thread::yield_now();
            } else {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Err(command)
    }
}

/// A running engine: its workers, and the way to reach them.
pub struct Engine {
    threads: Vec<JoinHandle<WorkerStats>>,
    mailboxes: Arc<[Arc<Mailbox>]>,
    local_addrs: Vec<SocketAddr>,
    next_worker: AtomicUsize,
    /// The attach socket's file, removed (if still ours) when the engine is dropped or joined,
    /// after its workers have exited.
    _attach_file: Option<attach::AttachFile>,
}

impl Engine {
    /// Probes io_uring, binds a listening socket per listen address, and starts
    /// `config.workers` workers, each running the service `factory(index)` makes on its thread
    /// and accepting on every listening socket.
    pub fn start<S, F>(
        config: Config,
        cipher: Arc<cipher::Config>,
        factory: F,
    ) -> Result<Engine, StartError>
    where
        S: Service,
        F: Fn(usize) -> S + Send + Sync + 'static,
    {
        probe::diagnose(&probe::probe(), config.locked_bytes())?;
        let workers = config.workers.max(1);
        // Each worker's handles, one per listen address in the configuration's order.
        let mut listeners: Vec<Vec<socket2::Socket>> =
            (0..workers).map(|_| Vec::with_capacity(config.listen.len())).collect();
        let mut local_addrs = Vec::with_capacity(config.listen.len());
        let only_v6 = config.listen.iter().any(SocketAddr::is_ipv4);
        for &addr in &config.listen {
            let (sockets, local) = worker::bind_listener(addr, workers, only_v6)
                .map_err(|error| StartError::Listen { addr, error })?;
            for (handles, socket) in listeners.iter_mut().zip(sockets) {
                handles.push(socket);
            }
            local_addrs.push(local);
        }
        let (mut attach_socket, attach_file) = match &config.attach {
            Some(attach) => {
                let (socket, file) = attach::bind(attach)
                    .map_err(|error| StartError::Attach { path: attach.path.clone(), error })?;
                (Some(socket), Some(file))
            }
            None => (None, None),
        };
        let config = Arc::new(config);
        let factory = Arc::new(factory);
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let mut lanes = worker::mesh(workers, limits::LANE_BYTES)
            .map_err(|e| StartError::Worker { index: 0, error: std::io::Error::other(e) })?
            .into_iter();
        let mut threads = Vec::with_capacity(workers);
        let mailboxes: Arc<[Arc<Mailbox>]> = (0..workers)
            .map(|index| {
                Mailbox::new().map(Arc::new).map_err(|error| StartError::Worker { index, error })
            })
            .collect::<Result<_, _>>()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        for (index, listener) in listeners.into_iter().enumerate() {
            let (config, cipher, factory) = (config.clone(), cipher.clone(), factory.clone());
            let lanes = lanes.next().expect("one worker's lanes per worker");
            let mailboxes = mailboxes.clone();
            let core = (config.pin_workers && !cores.is_empty())
                .then(|| cores[(config.first_core + index) % cores.len()]);
            let ready = ready_tx.clone();
            let attach = if index == 0 { attach_socket.take() } else { None };
            let thread = std::thread::Builder::new()
                .name(format!("ringspan-w{index}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    match worker::Worker::new(
                        index, config, cipher, mailboxes, listener, attach, lanes,
                    ) {
                        Ok(mut worker) => {
                            let _ = ready.send(Ok(()));
                            let mut service = factory(index);
                            worker.run(&mut service)
                        }
                        Err(error) => {
                            let _ = ready.send(Err((index, error)));
                            WorkerStats::default()
                        }
                    }
                })
                .map_err(|error| StartError::Worker { index, error })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let engine = Engine {
            threads,
            mailboxes,
            local_addrs,
            next_worker: AtomicUsize::new(0),
            _attach_file: attach_file,
        };
        for _ in 0..workers {
            if let Ok(Err((index, error))) = ready_rx.recv() {
                engine.shutdown();
                let _ = engine.join();
                return Err(StartError::Worker { index, error });
            }
        }
        Ok(engine)
    }

    /// The addresses the engine accepts links on, in the order of [`Config::listen`] (with the
    /// real port where 0 was asked for); empty if it only dials.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The first of [`Engine::local_addrs`], if it listens at all.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.local_addrs.first().copied()
    }

    /// Workers running.
    pub fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// Dials `addr` from one of the workers (round robin). With `peer`, only that key is
    /// accepted from the other side.
    pub fn connect(&self, addr: SocketAddr, peer: Option<PublicKey>) {
        self.connect_from(addr, None, peer);
    }

    /// Dials `addr` from source address `from` (bound with port 0 before connecting; `None`:
    /// the system's choice), from one of the workers (round robin). With `peer`, only that key
    /// is accepted from the other side.
    pub fn connect_from(&self, addr: SocketAddr, from: Option<IpAddr>, peer: Option<PublicKey>) {
        let index = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.mailboxes.len();
        self.send(index, Command::Connect { addr, from, peer });
    }

    /// Trusts connections from source address `ip` on every worker from now on (see
    /// [`WorkerCtx::trust_source`]). Blocks briefly if a mailbox is full.
    pub fn trust_source(&self, ip: IpAddr) {
        for mailbox in self.mailboxes.iter() {
            mailbox.send_blocking(Command::TrustSource(ip));
        }
    }

    /// Sends a command to worker `index`. Blocks briefly if its mailbox is full.
    pub fn send(&self, index: usize, command: Command) {
        self.mailboxes[index].send_blocking(command);
    }

    /// A handle other threads can keep to send commands to worker `index` (`None` if there is
    /// no such worker).
    pub fn remote(&self, index: usize) -> Option<Remote> {
        self.mailboxes.get(index).map(|mailbox| Remote { mailbox: mailbox.clone() })
    }

    /// Asks every worker to stop: stop accepting, close links with a reason, and exit.
    pub fn shutdown(&self) {
        for mailbox in self.mailboxes.iter() {
            mailbox.send_blocking(Command::Shutdown);
        }
    }

    /// Waits for every worker to exit, returning their counters.
    pub fn join(self) -> Vec<WorkerStats> {
        self.threads.into_iter().map(|thread| thread.join().unwrap_or_default()).collect()
    }

    /// Runs until SIGINT or SIGTERM, then shuts down gracefully and returns the counters.
    pub fn run_until_signal(self) -> std::io::Result<Vec<WorkerStats>> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])?;
        if let Some(signal) = signals.forever().next() {
            tracing::info!(signal, "shutting down");
        }
        self.shutdown();
        Ok(self.join())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_links_keepalive_interval_is_kept_in_whole_milliseconds_within_bounds() {
        assert_eq!(keepalive_ms(Duration::from_millis(300)), 300);
        assert_eq!(keepalive_ms(Duration::from_micros(300_900)), 300);
        // Never below the floor, never 0 (the engine's default), never wrapped.
        assert_eq!(keepalive_ms(Duration::ZERO), limits::KEEPALIVE_INTERVAL_MIN_MS as u32);
        assert_eq!(keepalive_ms(Duration::from_secs(u64::MAX)), u32::MAX);
        let meta = LinkMeta::default();
        assert_eq!(meta.keepalive(Duration::from_secs(7)), Duration::from_secs(7));
        let meta = LinkMeta { keepalive_ms: 250, ..meta };
        assert_eq!(meta.keepalive(Duration::from_secs(7)), Duration::from_millis(250));
    }
}
