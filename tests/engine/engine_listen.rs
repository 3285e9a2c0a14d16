//! One node per port: an engine binds each listening socket without SO_REUSEPORT, shared by its
//! workers, so no other process (of the same user or not) can bind the port and be dealt a
//! share of the node's connections. An engine listening on several addresses accepts on each
//! with every worker, and admits what comes to any of them by the same rules.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;

use ringspan::cipher::PublicKey;
use ringspan::ids::LinkId;
use ringspan::ring::{Engine, LinkCtx, Service, StartError};
use ringspan::txn::Received;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::support::engines::config;
use crate::support::keys;

/// Reports each link that comes up.
struct Up {
    up: Sender<LinkId>,
}

impl Service for Up {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        let _ = self.up.send(link.id());
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}
}

#[test]
fn no_other_socket_can_bind_an_engines_port() {
    let (server_cipher, client_cipher, _, _) = keys::server_and_client();
    let (tx, _rx) = channel();
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let server =
        Engine::start(config(2, listen), server_cipher.clone(), move |_| Up { up: tx.clone() })
            .unwrap();
    let addr = server.local_addr().unwrap();

    // A socket that asks to share the port (SO_REUSEPORT, as the engine itself used to).
    let sharer = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    sharer.set_reuse_address(true).unwrap();
    sharer.set_reuse_port(true).unwrap();
    let error = sharer.bind(&SockAddr::from(addr)).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");
    // A plain listener.
    let error = TcpListener::bind(addr).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{error}");

    // A second engine on the same address is refused, saying why.
    let (tx, _rx) = channel();
    let second =
        Engine::start(config(1, Some(addr)), client_cipher, move |_| Up { up: tx.clone() });
    match second {
        Err(error @ StartError::Listen { .. }) => {
            let text = error.to_string();
            assert!(text.contains("in use by another process"), "{text}");
            assert!(text.contains(&addr.to_string()), "{text}");
        }
        Err(other) => panic!("expected a listen error, got {other}"),
        Ok(_) => panic!("a second engine bound {addr}"),
    }

    server.shutdown();
    server.join();
    // Once the engine is gone, the port is free again.
    drop(TcpListener::bind(addr).unwrap());
}

/// Dials `addr` from `client` until each of the server's two workers has accepted a link there
/// (each link's id names its worker); how many each accepted.
fn dial_until_both_workers_accept(
    client: &Engine,
    client_rx: &Receiver<LinkId>,
    server_rx: &Receiver<LinkId>,
    addr: SocketAddr,
    server_key: PublicKey,
) -> [u32; 2] {
    let mut accepted_by = [0u32; 2];
    let mut dialled = 0;
    while accepted_by.contains(&0) {
        assert!(dialled < 200, "{addr}: 200 links and one worker accepted none: {accepted_by:?}");
        client.connect(addr, Some(server_key));
        dialled += 1;
        client_rx.recv_timeout(Duration::from_secs(20)).expect("the client's link up");
        let link = server_rx.recv_timeout(Duration::from_secs(20)).expect("the server's link up");
        accepted_by[link.worker()] += 1;
    }
    accepted_by
}

#[test]
fn every_worker_accepts_on_every_listening_socket() {
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let (server_tx, server_rx) = channel();
    let mut server_config = config(2, None);
    server_config.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    let server =
        Engine::start(server_config, server_cipher, move |_| Up { up: server_tx.clone() }).unwrap();
    let addrs = server.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
    assert!(addrs[0].is_ipv4() && addrs[1].is_ipv6(), "in the configuration's order: {addrs:?}");
    assert!(addrs.iter().all(|a| a.port() != 0), "the real ports: {addrs:?}");
    assert_eq!(server.local_addr(), Some(addrs[0]));
    let (client_tx, client_rx) = channel();
    let client =
        Engine::start(config(1, None), client_cipher, move |_| Up { up: client_tx.clone() })
            .unwrap();
    for addr in &addrs {
        let accepted_by =
            dial_until_both_workers_accept(&client, &client_rx, &server_rx, *addr, server_key);
        println!("{addr}: links accepted by each worker: {accepted_by:?}");
    }
    // Each port is the engine's alone.
    for addr in &addrs {
        let error = TcpListener::bind(addr).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse, "{addr}: {error}");
    }
    client.shutdown();
    client.join();
    server.shutdown();
    server.join();
    // Every socket closes with the engine.
    for addr in &addrs {
        drop(TcpListener::bind(addr).unwrap());
    }
}

#[test]
fn one_port_on_ipv4_and_ipv6_at_once() {
    // `0.0.0.0:P` and `[::]:P` together: the IPv6 socket takes IPv6 only, so both bind.
    let port = TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let (server_tx, server_rx) = channel();
    let mut server_config = config(1, None);
    server_config.listen =
        vec![SocketAddr::from(([0, 0, 0, 0], port)), SocketAddr::from(([0u16; 8], port))];
    let server =
        Engine::start(server_config, server_cipher, move |_| Up { up: server_tx.clone() }).unwrap();
    let (client_tx, client_rx) = channel();
    let client =
        Engine::start(config(1, None), client_cipher, move |_| Up { up: client_tx.clone() })
            .unwrap();
    for addr in [
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
    ] {
        client.connect(addr, Some(server_key));
        client_rx.recv_timeout(Duration::from_secs(20)).expect("the client's link up");
        server_rx.recv_timeout(Duration::from_secs(20)).expect("the server's link up");
    }
    client.shutdown();
    client.join();
    server.shutdown();
    let stats = server.join();
    assert_eq!(stats[0].accepted, 2, "{stats:?}");
}

#[test]
fn admission_counts_the_links_of_every_listening_socket() {
    // One link slot: the link taken through the first address leaves none for a connection to
    // the second, which is reset before any handshake work.
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let (server_tx, server_rx) = channel();
    let mut server_config = config(1, None);
    server_config.listen = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
    server_config.max_links = 1;
    let server =
        Engine::start(server_config, server_cipher, move |_| Up { up: server_tx.clone() }).unwrap();
    let addrs = server.local_addrs().to_vec();
    let (client_tx, client_rx) = channel();
    let client =
        Engine::start(config(1, None), client_cipher, move |_| Up { up: client_tx.clone() })
            .unwrap();
    client.connect(addrs[0], Some(server_key));
    client_rx.recv_timeout(Duration::from_secs(20)).expect("the client's link up");
    server_rx.recv_timeout(Duration::from_secs(20)).expect("the server's link up");
    let mut stranger = TcpStream::connect(addrs[1]).unwrap();
    stranger.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // Reset (an error) or closed (0 bytes): never a handshake byte, never the timeout.
    match stranger.read(&mut [0; 64]) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes from a connection past max_links"),
        Err(error) => {
            use std::io::ErrorKind::{TimedOut, WouldBlock};
            assert!(!matches!(error.kind(), WouldBlock | TimedOut), "no answer: {error}");
        }
    }
    client.shutdown();
    client.join();
    server.shutdown();
    let stats = server.join();
    assert_eq!((stats[0].accepted, stats[0].refused_max_links), (1, 1), "{stats:?}");
}

#[test]
fn every_worker_accepts_on_the_shared_socket() {
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let (server_tx, server_rx) = channel();
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let server =
        Engine::start(config(2, listen), server_cipher, move |_| Up { up: server_tx.clone() })
            .unwrap();
    let (client_tx, client_rx) = channel();
    let client = Engine::start(config(1, None), Arc::clone(&client_cipher), move |_| Up {
        up: client_tx.clone(),
    })
    .unwrap();
    let addr = server.local_addr().unwrap();
    // Dial until both workers have accepted a link (each link's id names its worker).
    let mut accepted_by = [0u32; 2];
    let mut dialled = 0;
    while accepted_by.contains(&0) {
        assert!(dialled < 200, "200 links and one worker accepted none: {accepted_by:?}");
        client.connect(addr, Some(server_key));
        dialled += 1;
        client_rx.recv_timeout(Duration::from_secs(20)).expect("the client's link up");
        let link = server_rx.recv_timeout(Duration::from_secs(20)).expect("the server's link up");
        accepted_by[link.worker()] += 1;
    }
    println!("links accepted by each worker: {accepted_by:?}");
    client.shutdown();
    client.join();
    server.shutdown();
    let stats = server.join();
    assert!(stats.iter().all(|s| s.accepted > 0), "{stats:?}");
}
