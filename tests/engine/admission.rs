//! Admission control on a listening engine: a storm of connections (raw TCP connects that never
//! say a word, and real handshakes far beyond the rate) against a worker with a small link
//! bound and handshake rate, while an established link keeps exchanging transactions. The storm
//! is refused at accept, counted by cause, and the established link loses nothing.
//!
//! Then the same kind of flood from one source address while another, trusted, source dials:
//! configured as trusted, or vouched for by the service once a link from there showed the
//! authorized key, its handshakes all complete; untrusted, every one of them is refused.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::time::Duration;

use ringspan::cipher::{self, Identity, PublicKey};
use ringspan::ids::LinkId;
use ringspan::ring::{self, CloseReason, Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command, Flags};
use socket2::{Domain, SockAddr, Socket, Type};

use crate::support::engines::{self, Echo};
use crate::support::host::raise_nofile_limit;
use crate::support::wait::{self, now};

const REQUEST: Command = Command::new(16, 1);

/// The listener's link bound in this test.
const MAX_LINKS: usize = 150;
/// The listener's handshake rate in this test (and its burst).
const RATE: u32 = 100;
/// How long the storm lasts.
const STORM: Duration = Duration::from_secs(3);
/// Requests the established link keeps in flight.
const IN_FLIGHT: usize = 8;
/// How long any condition is waited for, and how often it is asked.
const WAIT: Duration = Duration::from_secs(20);
const EVERY: Duration = Duration::from_millis(5);

fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    wait::wait_until(what, WAIT, EVERY, ok);
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

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, _link: LinkId, _reason: CloseReason) {
        self.tally.down.fetch_add(1, Ordering::Relaxed);
    }
}

/// Dials and does nothing else: the storm's real handshakes.
struct Quiet;

impl Service for Quiet {
    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}
}

#[test]
fn a_connection_storm_is_refused_at_accept_and_established_links_lose_nothing() {
    let fds = raise_nofile_limit(4_096);
    // Raw connects held open, the listener's side of admitted ones, the storm's dials.
    let waves = 30u32;
    // A burst of twice the handshake rate opens the storm, so the rate refuses some whatever
    // the machine's speed (accepting is cheap; the bucket refills at RATE a second).
    let burst = 2 * RATE as usize;
    let budget = fds.saturating_sub(400 + burst as u64);
    let per_wave = ((budget / 3) / u64::from(waves)).min(20) as usize;
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
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            max_links: MAX_LINKS,
            max_handshakes_per_sec: RATE,
            ..ring::Config::default()
        },
        Arc::new(server_cipher),
        |_| Echo::default(),
    )
    .unwrap();
    let addr: SocketAddr = server.local_addr().unwrap();
    let started = now();

    // The established link, exchanging transactions before, during and after the storm.
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let (t, s) = (tally.clone(), stop.clone());
    let client = Engine::start(
        engines::config(1, None),
        Arc::new(cipher::Config::new(Identity::generate().unwrap()).unwrap()),
        move |_| Pinger { tally: t.clone(), stop: s.clone() },
    )
    .unwrap();
    client.connect(addr, Some(server_key));
    wait_until("the established link", || tally.answered.load(Ordering::Relaxed) >= 100);

    // The storm: every 100 ms, raw connects that never speak and real handshakes.
    let storm = Engine::start(
        engines::config(1, None),
        Arc::new(cipher::Config::new(Identity::generate().unwrap()).unwrap()),
        |_| Quiet,
    )
    .unwrap();
    let answered_before = tally.answered.load(Ordering::Relaxed);
    let mut silent = Vec::new();
    let storm_start = now();
    for _ in 0..burst {
        if let Ok(stream) = TcpStream::connect(addr) {
            silent.push(stream);
        }
    }
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
        burst + per_wave * waves as usize,
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

/// The listener's link bound in the trusted-source tests.
const FLOOD_MAX_LINKS: usize = 40;
/// Of which only trusted sources may take the last ones: strangers are refused at 30.
const FLOOD_RESERVED_LINKS: usize = 10;
/// The common handshake rate in the trusted-source tests (and its burst), and the trusted
/// sources' own.
const FLOOD_RATE: u32 = 10;
/// Handshakes the trusted source dials during the flood.
const TRUSTED_DIALS: usize = 8;
/// Raw connects the flood holds open at most (the descriptors they take).
const FLOOD_RAW_MAX: usize = 400;

const STRANGER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const TRUSTED: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// A source trusted by configuration in the scenario without trust, so that the listener
/// reserves the same slots there (nothing is reserved while no source is trusted at all).
const ELSEWHERE: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 9));

/// How the listener comes to trust the trusted source, if at all.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Trust {
    /// Not at all: its connections are strangers' (another source is trusted instead).
    Never,
    /// Listed in `Config::trusted_sources`.
    Configured,
    /// Trusted at run time by the service, once a link from there showed the authorized key.
    Vouched,
}

/// What the listener's service is asked and tells.
enum Gate {
    /// The worker's counters and live links.
    Query(Sender<(ring::WorkerStats, usize)>),
}

/// The listener's service: trusts the source of any link that shows `authorized`, and answers
/// queries.
struct Gatekeeper {
    authorized: PublicKey,
    to_trust: Vec<IpAddr>,
    trusted: Sender<IpAddr>,
}

impl Service for Gatekeeper {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        assert!(!link.dialled(), "the listener dials nothing");
        if link.peer() == self.authorized
            && let Some(addr) = link.remote_addr()
        {
            self.to_trust.push(addr.ip());
        }
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        for ip in self.to_trust.drain(..) {
            worker.trust_source(ip);
            let _ = self.trusted.send(ip);
        }
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        if let Ok(gate) = command.downcast::<Gate>() {
            let Gate::Query(reply) = *gate;
            let _ = reply.send((worker.stats(), worker.live_links()));
        }
    }
}

/// The trusted source's dialler: counts its links up and its dials that failed.
#[derive(Default)]
struct Outcomes {
    up: AtomicU64,
    failed: AtomicU64,
}

struct Dialler {
    outcomes: Arc<Outcomes>,
}

impl Service for Dialler {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        assert!(link.dialled());
        self.outcomes.up.fetch_add(1, Ordering::Relaxed);
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn dial_failed(&mut self, _link: Option<LinkId>, _addr: SocketAddr, _reason: CloseReason) {
        self.outcomes.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// What one flood scenario ended with.
struct Flooded {
    /// The trusted source's dials during the flood that came up, and that failed.
    up: u64,
    failed: u64,
    /// The listener's counters at the end.
    stats: ring::WorkerStats,
}

fn query(engine: &Engine) -> (ring::WorkerStats, usize) {
    let (tx, rx) = std::sync::mpsc::channel();
    engine.send(0, ring::Command::Service(Box::new(Gate::Query(tx))));
    rx.recv_timeout(Duration::from_secs(20)).expect("the listener's answer")
}

/// A listener with a small link bound and handshake rate; a flood from [`STRANGER`] (raw
/// connects that never speak, and real handshakes from unknown keys) until the strangers'
/// link slots are full and both kinds of refusal happened; then, while the flood goes on,
/// [`TRUSTED_DIALS`] real handshakes from [`TRUSTED`]. Every wait is on a condition.
fn flood(trust: Trust) -> Flooded {
    let server_id = Identity::generate().unwrap();
    let server_key = server_id.public_key();
    let mut server_cipher = cipher::Config::new(server_id).unwrap();
    // Strangers' handshakes complete: only admission stands in their way.
    server_cipher.accept_unknown_keys = true;
    // The silent connections admitted hold their slots for the whole scenario.
    server_cipher.handshake_timeout = Duration::from_secs(120);
    let trusted_id = Identity::generate().unwrap();
    let authorized = trusted_id.public_key();
    let (trusted_tx, trusted_rx) = std::sync::mpsc::channel();
    let server = Engine::start(
        ring::Config {
            workers: 1,
            pin_workers: false,
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            max_links: FLOOD_MAX_LINKS,
            reserved_links: FLOOD_RESERVED_LINKS,
            max_handshakes_per_sec: FLOOD_RATE,
            trusted_handshakes_per_sec: FLOOD_RATE,
            trusted_sources: match trust {
                Trust::Never => vec![ELSEWHERE],
                Trust::Configured => vec![TRUSTED],
                Trust::Vouched => vec![],
            },
            ..ring::Config::default()
        },
        Arc::new(server_cipher),
        move |_| Gatekeeper { authorized, to_trust: Vec::new(), trusted: trusted_tx.clone() },
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let outcomes = Arc::new(Outcomes::default());
    let o = outcomes.clone();
    let trusted = Engine::start(
        engines::config(1, None),
        Arc::new(cipher::Config::new(trusted_id).unwrap()),
        move |_| Dialler { outcomes: o.clone() },
    )
    .unwrap();
    if trust == Trust::Vouched {
        // One link first: it shows the authorized key, and the listener trusts its source.
        trusted.connect_from(addr, Some(TRUSTED), Some(server_key));
        let ip = trusted_rx.recv_timeout(Duration::from_secs(20)).expect("a source trusted");
        assert_eq!(ip, TRUSTED);
        assert_eq!(outcomes.up.swap(0, Ordering::Relaxed), 1);
    }

    // The flood, on its own thread until told to stop.
    let storm = Engine::start(
        engines::config(1, None),
        Arc::new(cipher::Config::new(Identity::generate().unwrap()).unwrap()),
        |_| Quiet,
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let (storm, stop) = (Arc::new(storm), stop.clone());
        let handle = storm.clone();
        let thread = std::thread::spawn(move || {
            let mut silent = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                if silent.len() < FLOOD_RAW_MAX {
                    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                    socket.bind(&SockAddr::from(SocketAddr::new(STRANGER, 0))).unwrap();
                    // A refused connection may be reset before the connect returns.
                    if socket.connect(&SockAddr::from(addr)).is_ok() {
                        silent.push(socket);
                    }
                }
                storm.connect_from(addr, Some(STRANGER), Some(server_key));
                std::thread::sleep(Duration::from_millis(5));
            }
            silent
        });
        (handle, thread)
    };
    let stranger_slots = FLOOD_MAX_LINKS - FLOOD_RESERVED_LINKS;
    let mut before = None;
    wait_until("the strangers' slots full and both refusals", || {
        let (s, live) = query(&server);
        before = Some(s);
        live >= stranger_slots && s.refused_max_links > 0 && s.refused_handshake_rate > 0
    });
    let before = before.unwrap();

    // The trusted source's handshakes, while the flood goes on.
    for _ in 0..TRUSTED_DIALS {
        trusted.connect_from(addr, Some(TRUSTED), Some(server_key));
    }
    wait_until("every trusted dial's outcome", || {
        outcomes.up.load(Ordering::Relaxed) + outcomes.failed.load(Ordering::Relaxed)
            == TRUSTED_DIALS as u64
    });
    // The flood went on meanwhile: strangers are still being refused.
    let refused = before.refused_max_links + TRUSTED_DIALS as u64;
    wait_until("more strangers refused", || query(&server).0.refused_max_links > refused);
    stop.store(true, Ordering::Relaxed);
    let (storm, thread) = flooder;
    let silent = thread.join().unwrap();
    let (stats, _) = query(&server);
    println!(
        "{trust:?}: trusted dials {} up, {} failed; {} raw connects held; listener: {stats:?}",
        outcomes.up.load(Ordering::Relaxed),
        outcomes.failed.load(Ordering::Relaxed),
        silent.len(),
    );
    trusted.shutdown();
    trusted.join();
    if let Ok(storm) = Arc::try_unwrap(storm) {
        storm.shutdown();
        storm.join();
    }
    drop(silent);
    server.shutdown();
    server.join();
    Flooded {
        up: outcomes.up.load(Ordering::Relaxed),
        failed: outcomes.failed.load(Ordering::Relaxed),
        stats,
    }
}

fn enough_descriptors() {
    let fds = raise_nofile_limit(8_192);
    assert!(fds >= 4_096, "the descriptor limit ({fds}) is too low for this test");
}

/// Strangers were refused both ways, and the trusted source's handshakes were not.
fn assert_trusted_kept_their_share(flooded: &Flooded) {
    let s = &flooded.stats;
    assert_eq!((flooded.up, flooded.failed), (TRUSTED_DIALS as u64, 0));
    assert!(s.refused_max_links > 0 && s.refused_handshake_rate > 0, "{s:?}");
    assert_eq!(s.trusted_accepted, TRUSTED_DIALS as u64, "{s:?}");
    // They came in over strangers holding every slot strangers may take.
    assert_eq!(s.trusted_reserved_links, TRUSTED_DIALS as u64, "{s:?}");
    assert_eq!(s.trusted_refused_max_links + s.trusted_refused_handshake_rate, 0, "{s:?}");
}

#[test]
fn configured_trusted_sources_keep_their_handshakes_through_a_flood_of_strangers() {
    enough_descriptors();
    assert_trusted_kept_their_share(&flood(Trust::Configured));
}

#[test]
fn a_source_vouched_for_at_run_time_keeps_its_handshakes_through_a_flood_of_strangers() {
    enough_descriptors();
    assert_trusted_kept_their_share(&flood(Trust::Vouched));
}

#[test]
fn without_trust_the_same_handshakes_are_refused_in_a_flood_of_strangers() {
    enough_descriptors();
    let flooded = flood(Trust::Never);
    let s = &flooded.stats;
    assert_eq!((flooded.up, flooded.failed), (0, TRUSTED_DIALS as u64));
    assert_eq!(s.trusted_accepted, 0, "{s:?}");
}
