//! Peers given by host name (`[[peer]] address = "node-b.example:7401"`): each name resolved
//! anew before each dial, so a peer that moved to another address is found at the next one, and
//! never on a worker's thread, whose loop must not block.
//!
//! A [`Resolver`] per node (shared by its planes) keeps a bounded queue of names
//! ([`RESOLVE_QUEUE_MAX`]) and up to [`RESOLVER_THREADS_MAX`] threads, started when names wait
//! and ended when idle ([`RESOLVER_IDLE_MS`]), that resolve them with the system's resolver
//! (`getaddrinfo`, through `ToSocketAddrs`: `/etc/hosts`, DNS, whatever `nsswitch.conf` says).
//! Each answer goes back to the worker that asked, through its mailbox, as a
//! `ring::Command::Service` carrying a [`Resolved`].
//!
//! On the worker, [`Lookups`] (one per plane, in its host) drives the redialler's named peers:
//! when a named peer is due ([`PeerState::Resolving`](crate::relay::redial::PeerState)), its name
//! is queued; the answer dials one of the addresses found ([`Redial::resolved`]), or tells the
//! redialler why there are none ([`Redial::unresolved`]: a failed dial, backing off, its last
//! error `cannot resolve NAME: ...` in `show`). At most one resolution per peer is in flight: a
//! name that gives no answer within [`RESOLVE_TIMEOUT_MS`] counts as a failed dial, and its next
//! dial waits for the same resolution rather than queueing another behind it. The addresses a
//! name resolves to are trusted by admission as they are learned (`WorkerCtx::trust_source`), as
//! a configured IP address is from the start.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::cipher::PublicKey;
use crate::limits::{
    RESOLVE_QUEUE_MAX, RESOLVE_TIMEOUT_MS, RESOLVED_ADDRS_MAX, RESOLVER_IDLE_MS,
    RESOLVER_THREADS_MAX,
};
use crate::relay::redial::{PeerAddr, Redial};
use crate::ring::{self, Remote, WorkerCtx};

/// A node's resolver threads and their queue, none until a name is queued. See the module
/// documentation. Dropping it ends its threads (each once its resolution under way, if any,
/// returns).
#[derive(Debug, Default)]
pub struct Resolver {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<Queue>,
    /// Signalled when a name is queued, and when the resolver is dropped.
    wake: Condvar,
    /// How a name is resolved: [`resolve`], but in tests.
    lookup: Lookup,
}

/// A blocking resolution of `host:port`: its addresses, or why there are none.
type Lookup = fn(&str, u16) -> Result<Vec<SocketAddr>, String>;

impl Default for Shared {
    fn default() -> Shared {
        Shared { state: Mutex::default(), wake: Condvar::new(), lookup: resolve }
    }
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Threads running.
    threads: usize,
    /// Of them, those waiting for a name.
    idle: usize,
    /// The resolver was dropped: threads end.
    closed: bool,
}

/// One name to resolve, and where the answer goes.
struct Job {
    host: String,
    port: u16,
    key: PublicKey,
    reply: Remote,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({}:{})", self.host, self.port)
    }
}

/// The answer to one resolution, for the worker that asked ([`Lookups::answer`]).
#[derive(Debug)]
pub struct Resolved {
    /// The peer whose name it is.
    pub key: PublicKey,
    /// The addresses found, at most [`RESOLVED_ADDRS_MAX`], in the resolver's order, each once;
    /// or why there are none, in words (`cannot resolve NAME: ...`).
    pub addrs: Result<Vec<SocketAddr>, String>,
}

impl Resolver {
    /// Queues `host:port`, the name of the peer with `key`, its answer to go to `reply`;
    /// starts a thread if more names wait than idle threads will take and fewer than
    /// [`RESOLVER_THREADS_MAX`] run. `false` if [`RESOLVE_QUEUE_MAX`] names wait already, or no
    /// thread can be started to take it.
    fn submit(&self, host: &str, port: u16, key: PublicKey, reply: Remote) -> bool {
        let mut queue = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        if queue.jobs.len() >= RESOLVE_QUEUE_MAX {
            return false;
        }
        queue.jobs.push_back(Job { host: host.to_owned(), port, key, reply });
        // Idle threads woken for earlier names still count as idle until they run: a thread is
        // started whenever more names wait than idle threads will take.
        if queue.jobs.len() <= queue.idle || queue.threads >= RESOLVER_THREADS_MAX {
            // An idle thread takes it, or the next thread to finish.
            self.shared.wake.notify_one();
            return true;
        }
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("ringspan-resolve".into())
            .spawn(move || work(&shared));
        match spawned {
            Ok(_) => {
                queue.threads += 1;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot start a resolver thread");
                if queue.threads > 0 {
                    // A running thread takes it when it is done.
                    true
                } else {
                    queue.jobs.pop_back();
                    false
                }
            }
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let mut queue = self.shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        queue.closed = true;
        queue.jobs.clear();
        self.shared.wake.notify_all();
    }
}

/// A resolver thread: takes names until the resolver is dropped or none comes for
/// [`RESOLVER_IDLE_MS`].
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut queue = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if queue.closed {
                    queue.threads -= 1;
                    return;
                }
                if let Some(job) = queue.jobs.pop_front() {
                    break job;
                }
                queue.idle += 1;
                let idle = Duration::from_millis(RESOLVER_IDLE_MS);
                let (back, waited) =
                    shared.wake.wait_timeout(queue, idle).unwrap_or_else(PoisonError::into_inner);
                queue = back;
                queue.idle -= 1;
                if waited.timed_out() && queue.jobs.is_empty() {
                    queue.threads -= 1;
                    return;
                }
            }
        };
        let addrs = (shared.lookup)(&job.host, job.port);
        let answer = Resolved { key: job.key, addrs };
        // A worker that is gone, or stuck with a full mailbox for 2 s, loses the answer: its
        // peer's dial times out instead.
        if job.reply.send(ring::Command::Service(Box::new(answer))).is_err() {
            tracing::debug!(host = %job.host, "a resolution's answer could not be handed back");
        }
    }
}

/// `host:port`'s addresses (the system's resolver, blocking), at most [`RESOLVED_ADDRS_MAX`],
/// each once; or why there are none.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    let found =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(RESOLVED_ADDRS_MAX);
    for addr in found {
        if !addrs.contains(&addr) {
            addrs.push(addr);
            if addrs.len() == RESOLVED_ADDRS_MAX {
                break;
            }
        }
    }
    if addrs.is_empty() {
        return Err(format!("cannot resolve {host}: the name has no address"));
    }
    Ok(addrs)
}

/// A plane's named peers and their resolutions (see the module documentation).
#[derive(Debug)]
pub struct Lookups {
    resolver: Arc<Resolver>,
    /// Each peer with a resolution in flight, or whose dial waits for one.
    pending: HashMap<PublicKey, Pending>,
    /// The addresses each named peer's name last resolved to, trusted by admission.
    trusted: HashMap<PublicKey, Vec<IpAddr>>,
}

#[derive(Debug)]
struct Pending {
    /// The name, for the reason given when it times out.
    host: String,
    /// A resolution was queued and has not answered yet.
    in_flight: bool,
    /// The peer's dial waits for an answer until then (`None`: it no longer does).
    wanted_until: Option<Instant>,
}

impl Lookups {
    /// A plane's named peers, resolved by the node's `resolver`.
    pub fn new(resolver: Arc<Resolver>) -> Lookups {
        Lookups { resolver, pending: HashMap::new(), trusted: HashMap::new() }
    }

    /// Dials every peer due now: one given by address at once, one given by name once its name
    /// resolves (queued here). Fails the dials whose names gave no answer in time, and asks the
    /// worker to wake for the next such deadline.
    pub fn dial(&mut self, redial: &mut Redial, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        self.expire(redial, now);
        while let Some((addr, key)) = redial.poll_dial(now) {
            match addr {
                PeerAddr::Ip(addr) => {
                    tracing::debug!(%addr, "dialling");
                    worker.connect(addr, Some(key));
                }
                PeerAddr::Name { host, port } => self.resolve(host, port, key, redial, worker),
            }
        }
        if let Some(at) = self.pending.values().filter_map(|p| p.wanted_until).min() {
            worker.wake_at(at);
        }
    }

    /// What a resolution answered (the worker's command): the peer's dial goes to one of the
    /// addresses, or fails with the reason; either way the addresses are trusted. An answer
    /// the dial no longer waits for (it timed out, or the peer linked meanwhile) dials nothing.
    pub fn answer(&mut self, resolved: Resolved, redial: &mut Redial, worker: &mut WorkerCtx<'_>) {
        let now = worker.now();
        let Resolved { key, addrs } = resolved;
        let wanted = match self.pending.remove(&key) {
            Some(pending) => pending.wanted_until.is_some(),
            None => false,
        };
        match addrs {
            Ok(addrs) => {
                self.trust(key, &addrs, worker);
                if wanted && let Some(addr) = redial.resolved(&key, &addrs) {
                    tracing::debug!(%addr, "dialling (resolved)");
                    worker.connect(addr, Some(key));
                }
            }
            Err(why) => {
                tracing::debug!(%why, "a peer's name did not resolve");
                if wanted {
                    redial.unresolved(&key, why, now);
                }
            }
        }
    }

    /// Queues the name of the peer with `key`, whose dial is due, unless a resolution of it is
    /// in flight already (its answer will do); a full queue fails the dial at once.
    fn resolve(
        &mut self,
        host: String,
        port: u16,
        key: PublicKey,
        redial: &mut Redial,
        worker: &mut WorkerCtx<'_>,
    ) {
        let now = worker.now();
        let until = now + Duration::from_millis(RESOLVE_TIMEOUT_MS);
        if let Some(pending) = self.pending.get_mut(&key) {
            pending.wanted_until = Some(until);
            return;
        }
        if !self.resolver.submit(&host, port, key, worker.remote()) {
            let why = format!(
                "cannot resolve {host}: the resolver is busy ({RESOLVE_QUEUE_MAX} names waiting)"
            );
            redial.unresolved(&key, why, now);
            return;
        }
        self.pending.insert(key, Pending { host, in_flight: true, wanted_until: Some(until) });
    }

    /// Fails the dials whose names gave no answer by their deadline. The resolutions stay in
    /// flight: the next dial of each takes its answer.
    fn expire(&mut self, redial: &mut Redial, now: Instant) {
        for (key, pending) in &mut self.pending {
            if pending.wanted_until.is_some_and(|at| at <= now) {
                pending.wanted_until = None;
                let why = format!(
                    "cannot resolve {}: no answer within {RESOLVE_TIMEOUT_MS} ms",
                    pending.host
                );
                redial.unresolved(key, why, now);
            }
        }
        self.pending.retain(|_, p| p.in_flight || p.wanted_until.is_some());
    }

    /// Trusts the addresses a named peer's name resolved to that it did not resolve to last
    /// time, on every worker.
    fn trust(&mut self, key: PublicKey, addrs: &[SocketAddr], worker: &mut WorkerCtx<'_>) {
        let ips: Vec<IpAddr> = addrs.iter().map(SocketAddr::ip).collect();
        let known = self.trusted.get(&key);
        for &ip in &ips {
            if known.is_none_or(|known| !known.contains(&ip)) {
                worker.trust_source(ip);
            }
        }
        self.trusted.insert(key, ips);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::cipher::{self, Identity};
    use crate::ring::{Engine, LinkCtx, Service};
    use crate::txn::Received;

    /// Hands the resolutions its worker is sent to the test.
    struct Forward(mpsc::Sender<Resolved>);

    impl Service for Forward {
        fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

        fn command(&mut self, _worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
            if let Ok(resolved) = command.downcast::<Resolved>() {
                let _ = self.0.send(*resolved);
            }
        }
    }

    /// Names starting with "slow" block until [`open_gate`]; the rest resolve to 127.0.0.1.
    fn gated(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if host.starts_with("slow") {
            let (open, changed) = &GATE;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
        }
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    static GATE: (Mutex<bool>, Condvar) = (Mutex::new(false), Condvar::new());

    fn open_gate() {
        *GATE.0.lock().unwrap() = true;
        GATE.1.notify_all();
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a test's own deadline
    fn slow_names_hold_a_thread_each_and_the_queue_is_bounded() {
        let (tx, answers) = mpsc::channel();
        let identity = Identity::generate().unwrap();
        let config = ring::Config {
            workers: 1,
            pin_workers: false,
            recv_buffers: 8,
            ..ring::Config::default()
        };
        let engine =
            Engine::start(config, Arc::new(cipher::Config::new(identity).unwrap()), move |_| {
                Forward(tx.clone())
            })
            .unwrap();
        let reply = engine.remote(0).unwrap();
        let shared = Shared { lookup: gated, ..Shared::default() };
        let resolver = Resolver { shared: Arc::new(shared) };
        let key = |n: u16| PublicKey([(n % 256) as u8; 32]);
        let wait = Duration::from_secs(20);
        // A slow name holds a thread: with one left, a quick name still gets through.
        let slow_threads = RESOLVER_THREADS_MAX as u16;
        for n in 0..slow_threads - 1 {
            assert!(resolver.submit("slow.example", n, key(n), reply.clone()));
        }
        assert!(resolver.submit("quick.example", 7401, key(999), reply.clone()));
        let quick = answers.recv_timeout(wait).expect("the quick name answered");
        let expected = Ok(vec![SocketAddr::from(([127, 0, 0, 1], 7401))]);
        assert_eq!((quick.key, quick.addrs), (key(999), expected));
        // One more holds the last thread (once it has taken it from the queue).
        assert!(resolver.submit("slow.example", slow_threads, key(slow_threads), reply.clone()));
        let deadline = std::time::Instant::now() + wait;
        while !resolver.shared.state.lock().unwrap().jobs.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no thread took the last slow name");
            std::thread::sleep(Duration::from_millis(5));
        }
        // With every thread held, names wait in the queue, up to its bound.
        let mut queued = 0;
        while resolver.submit("slow.example", 1000 + queued as u16, key(1000), reply.clone()) {
            queued += 1;
            assert!(queued <= RESOLVE_QUEUE_MAX, "the queue takes more than its bound");
        }
        assert_eq!(queued, RESOLVE_QUEUE_MAX);
        let threads = resolver.shared.state.lock().unwrap().threads;
        assert_eq!(threads, RESOLVER_THREADS_MAX);
        // Once the slow names answer, every name queued does.
        open_gate();
        for _ in 0..RESOLVER_THREADS_MAX + RESOLVE_QUEUE_MAX {
            let answer = answers.recv_timeout(wait).expect("every name answered");
            assert!(answer.addrs.is_ok());
        }
        drop(resolver);
        engine.shutdown();
        engine.join();
    }

    #[test]
    fn localhost_resolves_and_an_invalid_name_says_why() {
        let addrs = resolve("localhost", 7401).unwrap();
        assert!(!addrs.is_empty() && addrs.len() <= RESOLVED_ADDRS_MAX);
        assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 7401), "{addrs:?}");
        // RFC 2606: never resolves.
        let why = resolve("nope.invalid", 7401).unwrap_err();
        assert!(why.starts_with("cannot resolve nope.invalid: "), "{why}");
    }
}
