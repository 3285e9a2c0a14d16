//! Busy polling (`ring::Config::busy_poll`): after a turn that moved data a worker polls its
//! ring instead of sleeping, finds the next completion that way, and once the poll runs out it
//! sleeps — an idle engine burns no CPU; and a worker whose core is taken by a busy thread stops
//! polling. Its own test binary, so the process's CPU time is these engines' alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use ringspan::ring::{self, Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::Received;
use ringspan::wire::{Command, Flags};

#[path = "support/mod.rs"]
mod support;
use support::engines::Echo;
use support::keys;

const REQUEST: Command = Command::new(16, 1);

/// The tests run one at a time: one measures the process's CPU time, the other keeps a core
/// busy.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Opens one request when told to and reports its reply.
struct Caller {
    replies: Sender<()>,
    up: Sender<()>,
}

impl Service for Caller {
    fn link_up(&mut self, _link: &mut LinkCtx<'_>) {
        let _ = self.up.send(());
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, received: Received<'_>) {
        if let Received::Txn(_) = received {
            let _ = self.replies.send(());
        }
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, _command: Box<dyn std::any::Any + Send>) {
        let mut links = Vec::new();
        worker.links(&mut links);
        for id in links {
            if let Some(mut link) = worker.link(id) {
                link.txn.open(&mut link.out, None, REQUEST, b"ping", Flags::DELETE).unwrap();
            }
        }
    }
}

struct Pair {
    server: Engine,
    client: Engine,
    replies: Receiver<()>,
}

/// Two engines of one worker each, pinned to `core` if given. A poll that finds the core taken
/// ends, but polling goes on at the next turn (no backoff): on a shared test machine any thread
/// may take the core for a moment.
fn pair(busy_poll: Duration, core: Option<usize>) -> Pair {
    let config = |listen: Option<SocketAddr>| ring::Config {
        workers: 1,
        pin_workers: core.is_some(),
        first_core: core.unwrap_or(0),
        listen: listen.into_iter().collect(),
        busy_poll,
        busy_poll_backoff: Duration::ZERO,
        ..ring::Config::default()
    };
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Engine::start(config(listen), server_cipher, |_| Echo::default()).unwrap();
    let (replies_tx, replies) = channel();
    let (up_tx, up) = channel();
    let client = Engine::start(config(None), client_cipher, move |_| Caller {
        replies: replies_tx.clone(),
        up: up_tx.clone(),
    })
    .unwrap();
    client.connect(server.local_addr().unwrap(), Some(server_key));
    up.recv_timeout(Duration::from_secs(10)).expect("the link comes up");
    Pair { server, client, replies }
}

impl Pair {
    /// `n` requests, one at a time, each answered before the next.
    fn ping_pong(&self, n: usize) {
        for _ in 0..n {
            self.client.send(0, ring::Command::Service(Box::new(())));
            self.replies.recv_timeout(Duration::from_secs(10)).expect("a reply");
        }
    }

    /// Both engines' counters (client's first).
    fn stop(self) -> [ring::WorkerStats; 2] {
        self.client.shutdown();
        self.server.shutdown();
        [self.client.join()[0], self.server.join()[0]]
    }
}

/// User plus system CPU time this process has used.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

#[test]
fn polling_finds_replies_and_an_idle_engine_sleeps() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // A poll long enough that every reply of a loopback ping-pong lands inside it.
    let polling = pair(Duration::from_millis(20), None);
    polling.ping_pong(200);

    // Idle: each worker polls out its last 20 ms, then sleeps until a keepalive (every second
    // by default) or the test's end. Two workers that never slept would use ~1.5 s of CPU here.
    let before = process_cpu();
    std::thread::sleep(Duration::from_millis(1_500));
    let idle = process_cpu() - before;
    assert!(idle < Duration::from_millis(300), "{idle:?} of CPU in 1.5 s of idling");

    let [client, server] = polling.stop();
    // Most replies were found by polling; the engines slept when the traffic stopped.
    assert!(client.busy_poll_hits >= 100, "client: {client:?}");
    assert!(server.busy_poll_hits >= 100, "server: {server:?}");
    // Every poll ended, by running out or (the test machine being shared) by finding the core
    // taken: either way the engine went to sleep.
    let ended = |s: &ring::WorkerStats| s.busy_poll_misses + s.busy_poll_contended;
    assert!(ended(&client) >= 1 && ended(&server) >= 1, "{client:?} {server:?}");

    // Without polling, the same traffic is carried and nothing polls.
    let sleeping = pair(Duration::ZERO, None);
    sleeping.ping_pong(200);
    let [client, server] = sleeping.stop();
    assert_eq!((client.busy_poll_hits, client.busy_poll_misses), (0, 0));
    assert_eq!((server.busy_poll_hits, server.busy_poll_misses), (0, 0));
}

#[test]
fn a_worker_whose_core_is_taken_stops_polling() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Both engines' workers and a thread that never sleeps, all on core 0: a worker that
    // yields while polling gets the core back only after the busy thread's time slice.
    let core = core_affinity::get_core_ids().unwrap()[0];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let busy = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            core_affinity::set_for_current(core);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };
    let polling = pair(Duration::from_millis(20), Some(core.id));
    polling.ping_pong(100);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    busy.join().unwrap();
    let [client, server] = polling.stop();
    // Every reply still came; at least one poll noticed the busy thread and gave up.
    assert!(
        client.busy_poll_contended + server.busy_poll_contended >= 1,
        "client: {client:?}, server: {server:?}"
    );
}
