//! Two engine processes on loopback: this test's process dials a real `ringspan-bench serve`
//! child over an encrypted link, exchanges transactions, then kills the child with SIGKILL.
//! Every transaction still open must end with LOST_LINK, promptly.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use ringspan::cipher::identity::write_new_key_file;
use ringspan::cipher::{self, Identity, PrivateKey};
use ringspan::ids::LinkId;
use ringspan::ring::{self, CloseReason, Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command as WireCommand, ErrorCode, Flags};

use crate::support::host::scratch;
use crate::support::process::{Proc, signal};
use crate::support::wait::{now, poll};

#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug when a test fails
enum Report {
    Up,
    Reply,
    Ended(ErrorCode),
    Down(CloseReason),
}

struct Client {
    report: Sender<Report>,
}

/// Open `requests` one-shot requests (answered and closed by the server) and `held`
/// transactions the server keeps open.
struct Open {
    requests: usize,
    held: usize,
}

impl Service for Client {
    fn link_up(&mut self, _link: &mut LinkCtx<'_>) {
        let _ = self.report.send(Report::Up);
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, received: Received<'_>) {
        if let Received::Txn(d) = received
            && d.closes()
            && !d.is_forced_close()
        {
            let _ = self.report.send(Report::Reply);
        }
    }

    fn event(&mut self, _link: &mut LinkCtx<'_>, event: Event) {
        if let Event::Ended { error, .. } = event {
            let _ = self.report.send(Report::Ended(error));
        }
    }

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, _link: LinkId, reason: CloseReason) {
        let _ = self.report.send(Report::Down(reason));
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        let Ok(open) = command.downcast::<Open>() else { return };
        let mut links = Vec::new();
        worker.links(&mut links);
        for id in links {
            let Some(mut link) = worker.link(id) else { continue };
            let command = WireCommand::new(32, 1);
            for _ in 0..open.requests {
                link.txn.open(&mut link.out, None, command, b"ping", Flags::DELETE).unwrap();
            }
            for _ in 0..open.held {
                link.txn.open(&mut link.out, None, command, b"hold", Flags::NONE).unwrap();
            }
        }
    }
}

/// Starts a one-worker client engine with `config`, dials `addr` expecting `key`, and waits
/// until the link is up.
fn client(
    config: ring::Config,
    addr: std::net::SocketAddr,
    key: cipher::PublicKey,
) -> (Engine, std::sync::mpsc::Receiver<Report>) {
    let (report, reports) = channel();
    let config = ring::Config { workers: 1, pin_workers: false, ..config };
    let client_cipher = Arc::new(cipher::Config::new(Identity::generate().unwrap()).unwrap());
    let engine =
        Engine::start(config, client_cipher, move |_| Client { report: report.clone() }).unwrap();
    engine.connect(addr, Some(key));
    let up = reports.recv_timeout(Duration::from_secs(10)).expect("a report");
    assert!(matches!(up, Report::Up), "{up:?}");
    (engine, reports)
}

/// Counts transaction ends until the link goes down; every end must be a LOST_LINK.
fn lost_until_down(reports: &std::sync::mpsc::Receiver<Report>) -> (usize, Option<CloseReason>) {
    let mut lost = 0;
    loop {
        match reports.recv_timeout(Duration::from_secs(10)).expect("a report") {
            Report::Ended(error) => {
                assert_eq!(error, ErrorCode::LOST_LINK);
                lost += 1;
            }
            Report::Down(reason) => return (lost, Some(reason)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_peer_killed_with_sigkill_ends_every_open_transaction() {
    let (mut reaper, addr, server_public, dir) = serve("kill");

    let (client, reports) = client(ring::Config::default(), addr, server_public);
    let next = || reports.recv_timeout(Duration::from_secs(10)).expect("a report");

    // Requests are answered and end cleanly across the process boundary.
    client.send(0, ring::Command::Service(Box::new(Open { requests: 1_000, held: 0 })));
    let (mut replies, mut ended) = (0, 0);
    while replies < 1_000 || ended < 1_000 {
        match next() {
            Report::Reply => replies += 1,
            Report::Ended(ErrorCode::NONE) => ended += 1,
            other => panic!("unexpected {other:?}"),
        }
    }

    // 100 transactions stay open; then the server dies without a word.
    client.send(0, ring::Command::Service(Box::new(Open { requests: 0, held: 100 })));
    std::thread::sleep(Duration::from_millis(200));
    let killed_at = now();
    reaper.0.kill().unwrap();
    let _ = reaper.0.wait();

    let (lost, down) = lost_until_down(&reports);
    assert_eq!(lost, 100, "every open transaction ended with LOST_LINK");
    assert!(
        matches!(down, Some(CloseReason::PeerClosed | CloseReason::Io(_))),
        "the link closed because the peer went away: {down:?}"
    );
    // The kernel reports a killed peer's socket at once; keepalive is the backstop.
    assert!(now() - killed_at < Duration::from_millis(ringspan::limits::IDLE_TIMEOUT_MS));
    client.shutdown();
    client.join();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Starts `ringspan-bench serve` on a fresh key; returns the child, its address and key.
fn serve(name: &str) -> (Proc, std::net::SocketAddr, cipher::PublicKey, std::path::PathBuf) {
    let dir = scratch(&format!("serve-{name}"));
    let key_path = dir.join("server.key");
    let key = PrivateKey::generate().unwrap();
    write_new_key_file(&key_path, &key).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringspan-bench"))
        .args(["serve", "--listen", "127.0.0.1:0", "--key"])
        .arg(&key_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ringspan-bench runs");
    let stdout = child.stdout.take().unwrap();
    // Killed when the test ends, passed or failed.
    let reaper = Proc(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr =
        line.trim().strip_prefix("listening ").expect("the server says where").parse().unwrap();
    (reaper, addr, key.public_key().unwrap(), dir)
}

#[test]
fn a_silent_peer_is_found_by_keepalive() {
    let (reaper, addr, key, dir) = serve("silent");
    let config = ring::Config {
        keepalive_interval: Duration::from_millis(200),
        idle_timeout: Duration::from_millis(3_000),
        ..Default::default()
    };
    let (client, reports) = client(config, addr, key);
    client.send(0, ring::Command::Service(Box::new(Open { requests: 0, held: 10 })));
    // The link stays up across several idle periods while the peer answers keepalives...
    std::thread::sleep(Duration::from_millis(3_500));
    assert!(reports.try_recv().is_err(), "nothing happened to a healthy idle link");
    // ...and is found dead once the peer stops (its socket stays open: no error, just silence).
    signal(&reaper.0, libc::SIGSTOP);
    let (lost, down) = lost_until_down(&reports);
    assert_eq!((lost, down), (10, Some(CloseReason::IdleTimeout)));
    signal(&reaper.0, libc::SIGCONT);
    client.shutdown();
    client.join();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_that_does_not_read_is_cut_off_with_a_reason() {
    let (reaper, addr, key, dir) = serve("stalled");
    let counters = Arc::new(ringspan::link_load::Counters::default());
    let rtt = Arc::new(std::sync::Mutex::new(ringspan::link_load::new_histogram()));
    let config = ring::Config {
        workers: 1,
        pin_workers: false,
        send_stall_timeout: Duration::from_millis(1_000),
        idle_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let client_cipher = Arc::new(cipher::Config::new(Identity::generate().unwrap()).unwrap());
    let shared = counters.clone();
    let client = Engine::start(config, client_cipher, move |_| {
        ringspan::link_load::Source::new(
            ringspan::link_load::Mode::OneWay,
            16_000,
            shared.clone(),
            rtt.clone(),
        )
    })
    .unwrap();
    // Once the link is up and streaming, the peer process stops: its kernel buffers fill, the
    // send in flight stops completing, and the stall timer cuts the link.
    client.connect(addr, Some(key));
    let deadline = std::time::Duration::from_secs(10);
    let every = Duration::from_millis(10);
    let waited =
        poll(deadline, every, || counters.links_up.load(std::sync::atomic::Ordering::Relaxed) == 1);
    assert!(waited, "the link came up");
    signal(&reaper.0, libc::SIGSTOP);
    let down = poll(Duration::from_secs(20), every, || {
        counters.links_down.load(std::sync::atomic::Ordering::Relaxed) == 1
    });
    signal(&reaper.0, libc::SIGCONT);
    assert!(down, "a peer that stopped reading was cut off");
    let reasons = counters.close_reasons.lock().unwrap().clone();
    assert_eq!(reasons, [CloseReason::SendStall]);
    client.shutdown();
    let stats = client.join();
    assert_eq!(stats[0].closed, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_closes_links_with_a_reason_and_exits_zero() {
    let (mut reaper, addr, key, dir) = serve("sigterm");
    let (client, reports) = client(ring::Config::default(), addr, key);
    client.send(0, ring::Command::Service(Box::new(Open { requests: 0, held: 3 })));
    std::thread::sleep(Duration::from_millis(100));
    signal(&reaper.0, libc::SIGTERM);
    let (ended, down) = lost_until_down(&reports);
    assert_eq!(ended, 3);
    assert_eq!(down, Some(CloseReason::PeerSaid(ErrorCode::SHUTDOWN)), "the peer said why");
    let status = reaper.0.wait().unwrap();
    assert!(status.success(), "ringspan exits 0 after SIGTERM: {status:?}");
    client.shutdown();
    client.join();
    let _ = std::fs::remove_dir_all(&dir);
}
