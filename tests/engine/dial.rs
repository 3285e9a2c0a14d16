//! Dialling from a chosen source address and as another identity than the engine's.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use ringspan::cipher::{self, Identity, PublicKey};
use ringspan::ids::LinkId;
use ringspan::ring::{self, CloseReason, Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::Received;

use crate::support::engines;

/// What the services saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Dialled(Option<LinkId>),
    Up(LinkId, PublicKey),
    Failed(SocketAddr, CloseReason),
}

/// A dial request for the dialling service: where, from where, and as whom.
struct Dial {
    addr: SocketAddr,
    from: Option<IpAddr>,
    peer: Option<PublicKey>,
    as_: Option<Arc<cipher::Config>>,
}

struct Reporter {
    seen: Sender<Seen>,
}

impl Service for Reporter {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let _ = self.seen.send(Seen::Up(link.id(), link.peer()));
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn dial_failed(&mut self, _link: Option<LinkId>, addr: SocketAddr, reason: CloseReason) {
        let _ = self.seen.send(Seen::Failed(addr, reason));
    }

    fn command(&mut self, worker: &mut WorkerCtx<'_>, command: Box<dyn std::any::Any + Send>) {
        let Ok(dial) = command.downcast::<Dial>() else { return };
        let id = match dial.as_ {
            Some(cipher) => worker.connect_as(dial.addr, dial.from, dial.peer, cipher),
            None => worker.connect_from(dial.addr, dial.from, dial.peer),
        };
        let _ = self.seen.send(Seen::Dialled(id));
    }
}

fn engine(listen: Option<SocketAddr>, cipher: cipher::Config, seen: Sender<Seen>) -> Engine {
    Engine::start(engines::config(1, listen), Arc::new(cipher), move |_| Reporter {
        seen: seen.clone(),
    })
    .unwrap()
}

#[test]
fn a_dial_leaves_from_the_source_address_asked_for() {
    // A plain listener that only looks at where connections come from.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (seen, _seen_rx) = channel();
    let client = engine(None, cipher::Config::new(Identity::generate().unwrap()).unwrap(), seen);
    for last in [2u8, 3] {
        let from = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
        client.connect_from(addr, Some(from), None);
        let (_stream, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), from);
    }
    client.shutdown();
    client.join();
}

#[test]
fn a_dial_can_show_another_identity_and_report_its_link() {
    let server_id = Identity::generate().unwrap();
    let server_key = server_id.public_key();
    let guest = Identity::generate().unwrap();
    let guest_key = guest.public_key();
    // The server admits only the guest's key, not the dialling engine's own.
    let mut server_cipher = cipher::Config::new(server_id).unwrap();
    server_cipher.allowlist.insert(guest_key);
    let (server_seen, server_rx) = channel();
    let server = engine(Some("127.0.0.1:0".parse().unwrap()), server_cipher, server_seen);
    let addr = server.local_addr().unwrap();
    let (client_seen, client_rx) = channel();
    let client =
        engine(None, cipher::Config::new(Identity::generate().unwrap()).unwrap(), client_seen);

    let as_guest = Arc::new(cipher::Config::new(guest).unwrap());
    let from = Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4)));
    let dial = Dial { addr, from, peer: Some(server_key), as_: Some(as_guest) };
    client.send(0, ring::Command::Service(Box::new(dial)));
    let recv = |rx: &std::sync::mpsc::Receiver<Seen>| rx.recv_timeout(Duration::from_secs(10));
    let Seen::Dialled(Some(id)) = recv(&client_rx).unwrap() else { panic!("no link id") };
    // The id the dial returned is the one the link comes up with.
    assert_eq!(recv(&client_rx).unwrap(), Seen::Up(id, server_key));
    assert!(matches!(recv(&server_rx).unwrap(), Seen::Up(_, key) if key == guest_key));

    // A source address this host does not have: no link, and the service hears why.
    let nowhere = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let dial = Dial { addr, from: nowhere, peer: Some(server_key), as_: None };
    client.send(0, ring::Command::Service(Box::new(dial)));
    assert_eq!(recv(&client_rx).unwrap(), Seen::Dialled(None));
    assert_eq!(recv(&client_rx).unwrap(), Seen::Failed(addr, CloseReason::Io(libc::EADDRNOTAVAIL)));

    client.shutdown();
    let stats = client.join();
    assert_eq!(stats[0].dialled, 2);
    assert_eq!(stats[0].established, 1);
    server.shutdown();
    server.join();
}
