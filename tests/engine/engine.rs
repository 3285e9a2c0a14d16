//! Two io_uring engines in one process, joined by a real encrypted TCP link on loopback.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use ringspan::cipher::PublicKey;
use ringspan::ids::{LinkId, TxnId};
use ringspan::ring::{self, CloseReason, Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::{Event, Received};
use ringspan::wire::{Command, ErrorCode, Flags};

use crate::support::engines::{Echo, config};
use crate::support::keys;

const REQUEST: Command = Command::new(16, 1);

/// What the clients' services tell the test.
#[derive(Debug)]
#[allow(dead_code)] // fields are read through Debug when a test fails
enum Report {
    Up(LinkId, PublicKey),
    Reply(TxnId, usize),
    Ended(TxnId, ErrorCode),
    Down(LinkId, CloseReason),
}

/// Opens transactions when told to, and reports replies and ends.
struct Client {
    report: Sender<Report>,
}

/// A command to the client's service: open `count` one-shot requests of `size` bytes on every
/// link, plus `held` transactions that stay open.
struct Open {
    count: usize,
    size: usize,
    held: usize,
}

impl Service for Client {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let _ = self.report.send(Report::Up(link.id(), link.peer()));
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, received: Received<'_>) {
        if let Received::Txn(d) = received {
            let _ = self.report.send(Report::Reply(d.txn, d.payload.len()));
        }
    }

    fn event(&mut self, _link: &mut LinkCtx<'_>, event: Event) {
        if let Event::Ended { txn, error } = event {
            let _ = self.report.send(Report::Ended(txn, error));
        }
    }

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        let _ = self.report.send(Report::Down(link, reason));
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        let Ok(open) = command.downcast::<Open>() else {
            return;
        };
        let mut links = Vec::new();
        worker.links(&mut links);
        let payload = vec![0xab; open.size];
        for id in links {
            let Some(mut link) = worker.link(id) else {
                continue;
            };
            for _ in 0..open.count {
                link.txn.open(&mut link.out, None, REQUEST, &payload, Flags::DELETE).unwrap();
            }
            for _ in 0..open.held {
                link.txn.open(&mut link.out, None, REQUEST, &payload, Flags::NONE).unwrap();
            }
        }
    }
}

fn expect_up(reports: &Receiver<Report>) -> (LinkId, PublicKey) {
    match reports.recv_timeout(Duration::from_secs(10)).expect("a report") {
        Report::Up(link, peer) => (link, peer),
        other => panic!("expected a link up, got {other:?}"),
    }
}

#[test]
fn encrypted_link_carries_transactions_and_ends_them_on_loss() {
    let (server_cipher, client_cipher, server_key, client_key) = keys::server_and_client();
    let (server_tx, server_rx) = channel();
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Engine::start(config(1, listen), server_cipher, move |_| {
        Echo::reporting(server_tx.clone())
    })
    .unwrap();
    let (client_tx, client_rx) = channel();
    let client = Engine::start(config(1, None), client_cipher, move |_| Client {
        report: client_tx.clone(),
    })
    .unwrap();
    client.connect(server.local_addr().unwrap(), Some(server_key));

    // Both ends authenticated each other.
    assert_eq!(expect_up(&client_rx).1, server_key);
    assert_eq!(server_rx.recv_timeout(Duration::from_secs(10)).expect("a link up").1, client_key);

    // 1,000 one-shot requests of assorted sizes, plus 10 held open.
    for size in [0, 64, 1_000, 20_000] {
        client.send(0, ring::Command::Service(Box::new(Open { count: 250, size, held: 0 })));
        let (mut replies, mut ended) = (0, 0);
        while replies < 250 || ended < 250 {
            match client_rx.recv_timeout(Duration::from_secs(10)).expect("replies") {
                Report::Reply(_, len) => {
                    assert_eq!(len, size);
                    replies += 1;
                }
                Report::Ended(_, error) => {
                    assert_eq!(error, ErrorCode::NONE);
                    ended += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    client.send(0, ring::Command::Service(Box::new(Open { count: 0, size: 8, held: 10 })));
    let mut replies = 0;
    while replies < 10 {
        if let Report::Reply(..) = client_rx.recv_timeout(Duration::from_secs(10)).unwrap() {
            replies += 1;
        }
    }

    // The server goes away: every held transaction ends with LOST_LINK, then the link.
    server.shutdown();
    server.join();
    let (mut lost, mut down) = (0, None);
    while down.is_none() {
        match client_rx.recv_timeout(Duration::from_secs(10)).expect("ends") {
            Report::Ended(_, error) => {
                // The peer closed the link: its transactions are lost with it.
                assert_eq!(error, ErrorCode::LOST_LINK);
                lost += 1;
            }
            Report::Down(_, reason) => down = Some(reason),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(lost, 10);
    assert_eq!(down, Some(CloseReason::PeerSaid(ErrorCode::SHUTDOWN)));
    client.shutdown();
    let stats = client.join();
    assert_eq!(stats[0].established, 1);
}

/// Opens `count` requests on every link of the worker that receives it, then hands the same
/// work to the next worker (one hand-off per worker, not per message).
struct Fanout {
    count: usize,
    hops_left: usize,
}

struct FanoutClient {
    report: Sender<Report>,
}

impl Service for FanoutClient {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        // The internal link between the two workers is not one of the server's.
        if link.sibling().is_none() {
            let _ = self.report.send(Report::Up(link.id(), link.peer()));
        }
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        if let Received::Txn(d) = received {
            let _ = self.report.send(Report::Reply(d.txn, link.id().worker()));
        }
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        let Ok(fanout) = command.downcast::<Fanout>() else { return };
        let mut links = Vec::new();
        worker.links(&mut links);
        for id in links {
            let Some(mut link) = worker.link(id).filter(|link| link.sibling().is_none()) else {
                continue;
            };
            for _ in 0..fanout.count {
                link.txn.open(&mut link.out, None, REQUEST, b"x", Flags::DELETE).unwrap();
            }
        }
        if fanout.hops_left > 0 {
            let next = (worker.index() + 1) % worker.workers();
            let more = Fanout { count: fanout.count, hops_left: fanout.hops_left - 1 };
            assert!(worker.send_to(next, ring::Command::Service(Box::new(more))).is_ok());
        }
    }
}

#[test]
fn links_spread_over_workers_and_work_crosses_by_mailbox() {
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let server = Engine::start(config(2, listen), server_cipher, |_| Echo::default()).unwrap();
    let (client_tx, client_rx) = channel();
    let client = Engine::start(config(2, None), client_cipher, move |_| FanoutClient {
        report: client_tx.clone(),
    })
    .unwrap();
    for _ in 0..4 {
        client.connect(server.local_addr().unwrap(), Some(server_key));
    }
    let mut workers = std::collections::HashSet::new();
    for _ in 0..4 {
        workers.insert(expect_up(&client_rx).0.worker());
    }
    assert_eq!(workers.len(), 2, "dialled links are dealt to both workers");

    // Worker 0 opens 100 requests per link, then hands the job to worker 1, which does the same.
    client.send(0, ring::Command::Service(Box::new(Fanout { count: 100, hops_left: 1 })));
    let mut replies_by_worker = [0; 2];
    for _ in 0..400 {
        match client_rx.recv_timeout(Duration::from_secs(10)).expect("replies") {
            Report::Reply(_, worker) => replies_by_worker[worker] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replies_by_worker, [200, 200]);
    client.shutdown();
    client.join();
    server.shutdown();
    server.join();
}

#[test]
fn a_connection_that_never_completes_its_handshake_is_closed() {
    use std::io::Read;
    let (server_cipher, _, _, _) = keys::server_and_client();
    let mut server_cipher = Arc::unwrap_or_clone(server_cipher);
    // The handshake deadline is the session's, enforced by the engine's timer on the socket.
    server_cipher.handshake_timeout = Duration::from_millis(300);
    let config = config(1, Some("127.0.0.1:0".parse().unwrap()));
    let server = Engine::start(config, Arc::new(server_cipher), |_| Echo::default()).unwrap();
    // A peer that connects and says nothing, and one that says garbage.
    let mut silent = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    let mut garbage = std::net::TcpStream::connect(server.local_addr().unwrap()).unwrap();
    std::io::Write::write_all(&mut garbage, &[0xff; 64]).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    garbage.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 256];
    // The server closes both: end of stream (or a reset) instead of the 10 s read timeout.
    for stream in [&mut garbage, &mut silent] {
        let closed = loop {
            match stream.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(error) => break error.kind() != std::io::ErrorKind::WouldBlock,
            }
        };
        assert!(closed);
    }
    server.shutdown();
    let stats = server.join();
    assert_eq!(stats[0].handshake_failures, 2);
    assert_eq!(stats[0].established, 0);
}
