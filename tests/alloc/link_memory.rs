//! What an idle established link costs a listening engine in user-space memory: every heap byte
//! its worker thread holds per link (the slab slot with the link's state inline, the transaction
//! tables, the send queue, timer entries), measured by an allocator that follows that thread,
//! with links set up as a satellite's are (each side's `LINK_CONN` hello open, nothing else).
//!
//! The figure excludes what the node's service keeps per link (the relay and span state of a
//! `ringspan run` node) and what the kernel keeps per socket; `perf/clients.sh` measures the
//! whole satellite process.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use ringspan::cipher::{self, Identity};
use ringspan::ring::{self, Engine, LinkCtx, Service};
use ringspan::span::{Hello, Role, Wants};
use ringspan::txn::Received;
use ringspan::wire::HELLO_LEN_MAX;
use ringspan::wire::{Command, Flags};

use crate::support::counting;
use crate::support::host::raise_nofile_limit;
use crate::support::wait::wait_until;

/// The heap bytes the listening worker's thread holds (`counting::follow`).
static WORKER_BYTES: AtomicI64 = AtomicI64::new(0);

/// Links set up in the measurement.
const LINKS: u64 = 2_000;

/// How long the links may take to come up.
const WAIT: Duration = Duration::from_secs(30);

/// How long the listener's links stay quiet before shedding their record key schedules: short,
/// so that they shed them within the test. The keepalive interval is a minute, so no keepalive
/// crosses during the test: the links shed through their quiet timer alone.
const SHED_AFTER: Duration = Duration::from_millis(150);
const KEEPALIVE: Duration = Duration::from_secs(60);

/// The most heap bytes the listening worker may hold per idle link once it has shed its record
/// key schedules (the links here are idle once their hellos have crossed, and shed them
/// `SHED_AFTER` later): the connection's state, the transaction tables of two open `LINK_CONN`s, timer
/// entries and the slab's growth slack, about 1.1 KiB. The bound catches a change that adds a
/// preallocated structure per link, or keys that are no longer shed.
const PER_LINK_MAX: i64 = 1_600;

/// Opens a `LINK_CONN` hello on every link that comes up, as a node does, and counts links and
/// hellos received.
struct Hellos {
    role: Role,
    up: Arc<AtomicU64>,
    hellos: Arc<AtomicU64>,
}

impl Service for Hellos {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let hello = Hello::new(self.role, Wants::all());
        let mut buf = [0u8; HELLO_LEN_MAX];
        let len = hello.encode(&mut buf);
        link.txn.open(&mut link.out, None, Command::LINK_CONN, &buf[..len], Flags::NONE).unwrap();
        self.up.fetch_add(1, Ordering::Relaxed);
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, received: Received<'_>) {
        if let Received::Txn(delivery) = received
            && delivery.command == Command::LINK_CONN
        {
            self.hellos.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn an_idle_established_link_costs_the_engine_about_one_kib() {
    // Both ends of every link are in this process.
    let open = raise_nofile_limit(2 * LINKS + 256);
    let links = LINKS.min(open.saturating_sub(256) / 2);
    assert!(links >= 200, "the descriptor limit ({open}) leaves room for only {links} links");

    let server_id = Identity::generate().unwrap();
    let server_key = server_id.public_key();
    let mut server_cipher = cipher::Config::new(server_id).unwrap();
    server_cipher.accept_unknown_keys = true;
    let client_cipher = cipher::Config::new(Identity::generate().unwrap()).unwrap();
    let (server_up, server_hellos) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (up, hellos) = (server_up.clone(), server_hellos.clone());
    let server = Engine::start(
        ring::Config {
            workers: 1,
            pin_workers: false,
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            keepalive_interval: KEEPALIVE,
            shed_keys_after: SHED_AFTER,
            ..ring::Config::default()
        },
        Arc::new(server_cipher),
        move |_| {
            // The factory runs on the worker's thread: follow what that thread allocates.
            counting::follow(&WORKER_BYTES);
            Hellos { role: Role::Satellite, up: up.clone(), hellos: hellos.clone() }
        },
    )
    .unwrap();
    let client_up = Arc::new(AtomicU64::new(0));
    let up = client_up.clone();
    let client = Engine::start(
        ring::Config {
            workers: 1,
            pin_workers: false,
            keepalive_interval: KEEPALIVE,
            ..ring::Config::default()
        },
        Arc::new(client_cipher),
        move |_| Hellos { role: Role::Client, up: up.clone(), hellos: Arc::default() },
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let before = WORKER_BYTES.load(Ordering::Relaxed);

    let addr = server.local_addr().unwrap();
    for _ in 0..links {
        client.connect(addr, Some(server_key));
    }
    wait_until("every link up and every hello in", WAIT, Duration::from_millis(10), || {
        client_up.load(Ordering::Relaxed) == links && server_hellos.load(Ordering::Relaxed) == links
    });
    // Let the last sends complete and their buffers return to the pool, and the links' quiet
    // timers fire, after which every link has shed its record key schedules.
    std::thread::sleep(SHED_AFTER * 4);
    let after = WORKER_BYTES.load(Ordering::Relaxed);
    let per_link = (after - before) / links as i64;
    println!(
        "{links} idle links: the listening worker holds {} more bytes, {per_link} per link",
        after - before
    );

    client.shutdown();
    client.join();
    server.shutdown();
    let stats = server.join();
    assert_eq!(stats[0].established, links);
    assert_eq!(stats[0].pool_misses, 0);
    assert!(per_link > 500, "the measurement sees the links' state ({per_link} bytes)");
    assert!(per_link <= PER_LINK_MAX, "{per_link} bytes per idle link (at most {PER_LINK_MAX})");
}
