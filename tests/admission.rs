//! Admission control on a listening engine: a storm of connections (raw TCP connects that never
//! say a word, and real handshakes far beyond the rate) against a worker with a small link
//! bound and handshake rate, while an established link keeps exchanging transactions. The storm
//! is refused at accept, counted by cause, and the established link loses nothing.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ringspan::cipher::{self, Identity};
use ringspan::ids::LinkId;
use ringspan::ring::{self, CloseReason, Engine, LinkCtx, Service};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command, ErrorCode, Flags};

const REQUEST: Command = Command::new(16, 1);

/// The listener's link bound in this test.
const MAX_LINKS: usize = 150;
/// The listener's handshake rate in this test (and its burst).
const RATE: u32 = 100;
/// How long the storm lasts.
const STORM: Duration = Duration::from_secs(3);
/// Requests the established link keeps in flight.
const IN_FLIGHT: usize = 8;

#[allow(clippy::disallowed_methods)] // the test measures real time
fn now() -> Instant {
    Instant::now()
}

/// Answers every request with its payload.
struct Echo;

impl Service for Echo {
    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        if let Received::Txn(d) = received
            && d.opens()
        {
            let _ = link.txn.send(
                &mut link.out,
                d.txn,
                REQUEST,
                d.payload,
                Flags::DELETE,
                ErrorCode::NONE,
            );
        }
    }
}

/// What the established link's client saw.
#[derive(Default)]
struct Tally {
    up: AtomicU64,
    opened: AtomicU64,
    answered: AtomicU64,
    /// Transactions that ended with an error (none may).
    failed: AtomicU64,
    /// Transactions that ended, whatever the outcome.
    ended: AtomicU64,
    down: AtomicU64,
}

/// Keeps [`IN_FLIGHT`] one-shot requests in flight on each of its links until told to stop;
/// checks every answer.
struct Pinger {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
}

impl Pinger {
    fn open(&self, link: &mut LinkCtx<'_>) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        let payload = self.tally.opened.load(Ordering::Relaxed).to_le_bytes();
        if link.txn.open(&mut link.out, None, REQUEST, &payload, Flags::DELETE).is_ok() {
            self.tally.opened.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Service for Pinger {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        self.tally.up.fetch_add(1, Ordering::Relaxed);
        for _ in 0..IN_FLIGHT {
            self.open(link);
        }
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, received: Received<'_>) {
        if let Received::Txn(d) = received
            && d.closes()
            && d.payload.len() == 8
        {
            self.tally.answered.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn event(&mut self, link: &mut LinkCtx<'_>, event: Event) {
        if let Event::Ended { error, .. } = event {
            self.tally.ended.fetch_add(1, Ordering::Relaxed);
            if !error.is_none() {
                self.tally.failed.fetch_add(1, Ordering::Relaxed);
            }
            self.open(link);
        }
    }

    fn link_down(&mut self, _link: LinkId, _reason: CloseReason) {
        self.tally.down.fetch_add(1, Ordering::Relaxed);
    }
}

/// Dials and does nothing else: the storm's real handshakes.
struct Quiet;

impl Service for Quiet {
    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}
}

fn wait_until(what: &str, ok: impl Fn() -> bool) {
    let deadline = now() + Duration::from_secs(20);
    while !ok() {
        assert!(now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_connection_storm_is_refused_at_accept_and_established_links_lose_nothing() {
    let fds = ring::sys::raise_nofile_limit(4_096).unwrap();
    // Raw connects held open, the listener's side of admitted ones, the storm's dials.
    let waves = 30u32;
    let per_wave = ((fds.saturating_sub(400) / 3) / u64::from(waves)).min(20) as usize;
    assert!(per_wave >= 5, "the descriptor limit ({fds}) is too low for this test");

    let server_id = Identity::generate().unwrap();
    let server_key = server_id.public_key();
    let mut server_cipher = cipher::Config::new(server_id).unwrap();
    server_cipher.accept_unknown_keys = true;
    // The silent connections that are admitted hold their slot for the whole test.
    server_cipher.handshake_timeout = Duration::from_secs(60);
    let server = Engine::start(
        ring::Config {
            workers: 1,
            pin_workers: false,
            listen: Some("127.0.0.1:0".parse().unwrap()),
            max_links: MAX_LINKS,
            max_handshakes_per_sec: RATE,
            ..ring::Config::default()
        },
        Arc::new(server_cipher),
        |_| Echo,
    )
    .unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let started = now();

    // The established link, exchanging transactions before, during and after the storm.
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let (t, s) = (tally.clone(), stop.clone());
    let client = Engine::start(
        ring::Config { workers: 1, pin_workers: false, ..ring::Config::default() },
        Arc::new(cipher::Config::new(Identity::generate().unwrap()).unwrap()),
        move |_| Pinger { tally: t.clone(), stop: s.clone() },
    )
    .unwrap();
    client.connect(addr, Some(server_key));
    wait_until("the established link", || tally.answered.load(Ordering::Relaxed) >= 100);

    // The storm: every 100 ms, raw connects that never speak and real handshakes.
    let storm = Engine::start(
        ring::Config { workers: 1, pin_workers: false, ..ring::Config::default() },
        Arc::new(cipher::Config::new(Identity::generate().unwrap()).unwrap()),
        |_| Quiet,
    )
    .unwrap();
    let answered_before = tally.answered.load(Ordering::Relaxed);
    let mut silent = Vec::new();
    let storm_start = now();
    for wave in 0..waves {
        for _ in 0..per_wave {
            // A refused connection may be reset before the connect returns.
            if let Ok(stream) = TcpStream::connect(addr) {
                silent.push(stream);
            }
            storm.connect(addr, Some(server_key));
        }
        let next = storm_start + STORM * (wave + 1) / waves;
        std::thread::sleep(next.saturating_duration_since(now()));
    }
    let answered_during = tally.answered.load(Ordering::Relaxed) - answered_before;
    // Let the last of the storm's handshakes finish, the pinger go on a little, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    wait_until("every request answered", || {
        tally.ended.load(Ordering::Relaxed) == tally.opened.load(Ordering::Relaxed)
    });
    let elapsed = now() - started;

    storm.shutdown();
    let storm_stats = storm.join();
    client.shutdown();
    client.join();
    drop(silent);
    server.shutdown();
    let stats = server.join();
    let s = stats[0];
    println!(
        "storm: {} raw connects and {} dials in {STORM:?}; listener: {} handshakes started, \
         {} refused at max_links, {} refused by rate; the established link answered {} requests \
         ({answered_during} during the storm)",
        per_wave * waves as usize,
        storm_stats[0].dialled,
        s.accepted,
        s.refused_max_links,
        s.refused_handshake_rate,
        tally.answered.load(Ordering::Relaxed),
    );

    // The established link: up once, never down before shutdown, nothing lost, and it kept
    // working through the storm.
    assert_eq!(tally.up.load(Ordering::Relaxed), 1);
    assert_eq!(tally.failed.load(Ordering::Relaxed), 0, "a transaction failed");
    assert_eq!(tally.answered.load(Ordering::Relaxed), tally.opened.load(Ordering::Relaxed));
    assert!(answered_during >= 100, "only {answered_during} requests answered during the storm");
    // Both refusals happened, and the handshakes started stayed within the bucket: a burst of
    // RATE plus RATE a second (the established link took one token).
    assert!(s.refused_handshake_rate > 0, "nothing was refused by the handshake rate");
    assert!(s.refused_max_links > 0, "nothing was refused at max_links");
    let allowed = f64::from(RATE) * (1.0 + elapsed.as_secs_f64());
    assert!((s.accepted as f64) <= allowed, "{} handshakes started, at most {allowed}", s.accepted);
    assert!(s.accepted <= MAX_LINKS as u64 + s.closed, "more links than max_links at once");
    // Refused connections cost no handshake: every handshake started was a link admitted.
    assert!(s.established <= s.accepted);
}
