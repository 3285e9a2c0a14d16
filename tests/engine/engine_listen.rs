//! One node per port: an engine binds one listening socket without SO_REUSEPORT, shared by its
//! workers, so no other process (of the same user or not) can bind the port and be dealt a
//! share of the node's connections.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

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
