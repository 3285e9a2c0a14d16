//! What an engine tells a service about one link (who dialled it, where its other end is) and
//! lets it set (its keepalive interval, for the other end's idle timeout), and what it does to
//! a peer that holds its memory: the reassembly deadline.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use ringspan::cipher::{self, PublicKey, Session};
use ringspan::ids::LinkId;
use ringspan::limits::{RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN};
use ringspan::ring::{self, CloseReason, Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::Received;

use crate::support::wait::now;
use crate::support::{engines, keys};

/// What a service saw.
#[derive(Debug)]
enum Seen {
    Up(LinkId),
    Down(LinkId, CloseReason),
}

/// Reports links going up and down.
struct Reporter {
    seen: Sender<Seen>,
}

impl Service for Reporter {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let _ = self.seen.send(Seen::Up(link.id()));
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        let _ = self.seen.send(Seen::Down(link, reason));
    }
}

fn next(seen: &Receiver<Seen>) -> Seen {
    seen.recv_timeout(Duration::from_secs(30)).expect("a report within 30 s")
}

/// A handshake as the initiator on a plain socket: the stream, ready for records.
fn dial_raw(addr: SocketAddr, cipher: Arc<cipher::Config>, server: PublicKey) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut session = Session::initiator(cipher, Some(server), now()).unwrap();
    let mut frame = [0u8; 256];
    loop {
        while let Ok(len @ 1..) = session.poll_transmit(&mut frame) {
            stream.write_all(&frame[..len]).unwrap();
        }
        if session.is_established() {
            return stream;
        }
        // A read may be interrupted by a signal (seen under load): it is tried again.
        let len = match stream.read(&mut frame) {
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            read => read.unwrap(),
        };
        assert!(len > 0, "the server closed during the handshake");
        session.handle_handshake_bytes(&frame[..len], now()).unwrap();
    }
}

#[test]
fn a_record_left_unfinished_in_a_full_size_buffer_closes_the_link() {
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let (seen_tx, seen) = channel();
    let config = ring::Config {
        workers: 1,
        pin_workers: false,
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        // Only the reassembly deadline may close the link in this test.
        keepalive_interval: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        record_completion_timeout: Duration::from_millis(200),
        ..ring::Config::default()
    };
    let server =
        Engine::start(config, server_cipher, move |_| Reporter { seen: seen_tx.clone() }).unwrap();
    let addr = server.local_addr().unwrap();

    // A record header announcing the largest record, then just over 512 bytes of it: the
    // server holds a full-size buffer for it.
    let mut stream = dial_raw(addr, client_cipher, server_key);
    let Seen::Up(link) = next(&seen) else { panic!("expected the link up") };
    let mut start = vec![0u8; RECORD_HEADER_LEN + 600];
    let sealed = (RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN) as u32;
    start[..4].copy_from_slice(&sealed.to_le_bytes());
    stream.write_all(&start).unwrap();

    match next(&seen) {
        Seen::Down(down, CloseReason::Protocol(error)) => {
            assert_eq!(down, link);
            assert!(error.to_string().contains("reassembly deadline"), "{error}");
            assert!(error.closes_link(), "the peer's fault");
        }
        other => panic!("expected the link closed for its unfinished record, got {other:?}"),
    }
    server.shutdown();
    let stats = server.join();
    assert_eq!(stats[0].pool_misses, 0);
}

/// What a link's service reports about it at `link_up`.
#[derive(Debug)]
struct Facts {
    link: LinkId,
    dialled: bool,
    remote: Option<SocketAddr>,
}

/// Reports each link's facts; on a [`Probe`], a link's counters; sets every link's keepalive
/// interval at `link_up` if told one.
struct Prober {
    facts: Sender<Facts>,
    seen: Sender<Seen>,
    keepalive: Option<Duration>,
}

/// Asks a [`Prober`] for a link's counters (`None` once it is gone), or tells it to set a
/// link's keepalive interval.
enum Probe {
    Stats(LinkId, Sender<Option<ring::LinkStats>>),
    Keepalive(LinkId, Duration),
}

impl Service for Prober {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        if let Some(interval) = self.keepalive {
            link.set_keepalive(interval);
            assert_eq!(link.keepalive(), Some(interval));
        }
        let facts = Facts { link: link.id(), dialled: link.dialled(), remote: link.remote_addr() };
        let _ = self.facts.send(facts);
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        let _ = self.seen.send(Seen::Down(link, reason));
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        let Ok(probe) = command.downcast::<Probe>() else { return };
        match *probe {
            Probe::Stats(link, reply) => {
                // Only while the link is up (a closing one still has counters).
                let up = worker.link(link).is_some();
                let _ = reply.send(up.then(|| worker.link_stats(link)).flatten());
            }
            Probe::Keepalive(link, interval) => worker.set_keepalive(link, interval),
        }
    }
}

/// An engine running a [`Prober`], with what it reports.
struct Probed {
    engine: Engine,
    facts: Receiver<Facts>,
    seen: Receiver<Seen>,
}

fn probed(
    config: ring::Config,
    cipher: Arc<cipher::Config>,
    keepalive: Option<Duration>,
) -> Probed {
    let (facts_tx, facts) = channel();
    let (seen_tx, seen) = channel();
    let engine = Engine::start(config, cipher, move |_| Prober {
        facts: facts_tx.clone(),
        seen: seen_tx.clone(),
        keepalive,
    })
    .unwrap();
    Probed { engine, facts, seen }
}

impl Probed {
    fn facts(&self) -> Facts {
        self.facts.recv_timeout(Duration::from_secs(30)).expect("a link up within 30 s")
    }

    fn stats(&self, link: LinkId) -> Option<ring::LinkStats> {
        let (tx, rx) = channel();
        self.engine.send(0, ring::Command::Service(Box::new(Probe::Stats(link, tx))));
        rx.recv_timeout(Duration::from_secs(30)).expect("an answer")
    }

    fn stop(self) {
        self.engine.shutdown();
        self.engine.join();
    }
}

fn one_worker(listen: Option<SocketAddr>) -> ring::Config {
    engines::config(1, listen)
}

#[test]
fn a_link_tells_who_dialled_it_and_where_its_other_end_is() {
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let server = probed(one_worker(Some("127.0.0.1:0".parse().unwrap())), server_cipher, None);
    let addr = server.engine.local_addr().unwrap();
    let client = probed(one_worker(None), client_cipher, None);
    let from: IpAddr = "127.0.0.5".parse().unwrap();
    client.engine.connect_from(addr, Some(from), Some(server_key));
    let (dialled, accepted) = (client.facts(), server.facts());
    assert!(dialled.dialled && !accepted.dialled, "{dialled:?} {accepted:?}");
    // Each end sees the other's address: the one dialled, and the source it was dialled from.
    assert_eq!(dialled.remote, Some(addr));
    let remote = accepted.remote.expect("the dialler's address");
    assert_eq!(remote.ip(), from);
    assert_ne!(remote.port(), 0);
    client.stop();
    server.stop();
}

/// B's idle timeout in the keepalive tests; A's own timers are far longer than it.
const B_IDLE: Duration = Duration::from_millis(900);

/// A's keepalive interval unless its link's is set: longer than [`B_IDLE`].
const A_KEEPALIVE: Duration = Duration::from_millis(1_200);

/// A dials B. A keeps alive every [`A_KEEPALIVE`] unless its link's interval is set (at
/// `link_up`, or through `WorkerCtx::set_keepalive` once the link is up); B closes a link it
/// hears nothing on for [`B_IDLE`]. Returns B's counters of the link if it outlived `periods`
/// of B's idle periods, as those counters tell: that many idle periods' worth of A's
/// keepalives received on a link still up. (`None`: B closed it for being idle.)
fn a_keeps_b_alive(
    at_link_up: Option<Duration>,
    later: Option<Duration>,
    periods: u64,
) -> Option<ring::LinkStats> {
    let (b_cipher, a_cipher, b_key, _) = keys::server_and_client();
    let b = probed(
        ring::Config {
            idle_timeout: B_IDLE,
            // B keeps A alive as usual: A's idle timeout is a minute.
            keepalive_interval: Duration::from_millis(300),
            ..one_worker(Some("127.0.0.1:0".parse().unwrap()))
        },
        b_cipher,
        None,
    );
    let a = probed(
        ring::Config {
            keepalive_interval: A_KEEPALIVE,
            idle_timeout: Duration::from_secs(60),
            ..one_worker(None)
        },
        a_cipher,
        at_link_up,
    );
    a.engine.connect(b.engine.local_addr().unwrap(), Some(b_key));
    let a_link = a.facts().link;
    let b_link = b.facts().link;
    if let Some(interval) = later {
        a.engine.send(0, ring::Command::Service(Box::new(Probe::Keepalive(a_link, interval))));
    }
    // A's keepalives come a third of B's idle timeout apart if A keeps B alive.
    let wanted = 3 * periods;
    let outlived = loop {
        match b.seen.try_recv() {
            Ok(Seen::Down(link, reason)) => {
                assert_eq!((link, reason), (b_link, CloseReason::IdleTimeout));
                break None;
            }
            Ok(other) => panic!("unexpected {other:?}"),
            Err(_) => {}
        }
        match b.stats(b_link) {
            // Records from A: its keepalives (A sends nothing else).
            Some(stats) if stats.records_in >= wanted => break Some(stats),
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            // Gone: its link_down report is on its way.
            None => {
                let down = b.seen.recv_timeout(Duration::from_secs(30)).expect("link_down");
                assert!(matches!(down, Seen::Down(_, CloseReason::IdleTimeout)), "{down:?}");
                break None;
            }
        }
    };
    a.stop();
    b.stop();
    outlived
}

#[test]
fn a_link_kept_alive_for_the_other_ends_idle_timeout_stays_up() {
    // Set at link_up, through the link's context.
    let stats = a_keeps_b_alive(Some(B_IDLE / 3), None, 3).expect("the link outlived B's timeout");
    // One keepalive per record: never two due at once.
    assert_eq!(stats.messages_in, stats.records_in, "{stats:?}");
}

#[test]
fn a_keepalive_interval_set_later_is_armed_sooner() {
    // Set once the link is up, while A's first keepalive is still A_KEEPALIVE away: a sooner
    // deadline is armed, or B would time out. The entry armed for the old interval fires
    // within the test and finds itself stale: still one keepalive per record.
    let stats = a_keeps_b_alive(None, Some(B_IDLE / 3), 4).expect("the link outlived B's timeout");
    assert_eq!(stats.messages_in, stats.records_in, "{stats:?}");
}

#[test]
fn a_link_kept_alive_for_our_own_idle_timeout_only_times_out_at_the_other_end() {
    assert!(a_keeps_b_alive(None, None, 3).is_none());
}
