//! A node's peers given by host name, in process: the addresses a name resolves to are trusted
//! by the node's admission as soon as they are learned, before the peer ever links, as a peer's
//! configured IP address is from the start.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{Handle, PeerSpec, Settings};
use ringspan::relay::redial::PeerAddr;
use ringspan::span::Role;

use crate::support::wait::wait_for;

const WAIT: Duration = Duration::from_secs(30);

/// A node listening on loopback that dials one peer at `address`, which never answers.
fn node(address: PeerAddr) -> Handle {
    let mut settings = Settings::new(Identity::generate().unwrap());
    settings.listen = vec!["127.0.0.1:0".parse().unwrap()];
    let key = Identity::generate().unwrap().public_key();
    settings.peers = vec![PeerSpec { address: Some(address), key, role: Role::Router }];
    settings.recv_buffers = 8;
    settings.limits.redial_min = Duration::from_millis(50);
    settings.limits.redial_max = Duration::from_millis(200);
    Handle::start(settings).unwrap()
}

/// A loopback port nothing listens on (bound, then let go).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Connects to `node` from 127.0.0.1 and waits until its admission has counted the connection;
/// whether it was counted as from a trusted source.
fn connect_counted_trusted(node: &Handle) -> bool {
    let before = node.snapshot().accepted;
    let _stream = TcpStream::connect(node.local_addr().unwrap()).unwrap();
    let mut trusted = 0;
    wait_for("the node to admit the connection", WAIT, || {
        let snapshot = node.snapshot();
        trusted = snapshot.trusted_accepted;
        snapshot.accepted > before
    });
    trusted > 0
}

#[test]
fn the_addresses_a_peers_name_resolves_to_are_trusted() {
    let name = PeerAddr::Name { host: "localhost".into(), port: closed_port() };
    let by_name = node(name);
    // The name resolved (to loopback) and its dial failed: nothing ever linked.
    wait_for("the name to resolve and its dial to fail", WAIT, || {
        by_name.snapshot().peers.first().is_some_and(|p| p.resolved.is_some() && p.failures > 0)
    });
    let row = by_name.snapshot().peers.remove(0);
    let resolved: SocketAddr = row.resolved.as_deref().unwrap().parse().unwrap();
    assert!(resolved.ip().is_loopback(), "{row:?}");
    assert!(by_name.snapshot().links.is_empty());
    assert!(
        connect_counted_trusted(&by_name),
        "127.0.0.1, which localhost resolved to, is trusted"
    );

    // A node whose one peer is at another address trusts that one, not 127.0.0.1.
    let elsewhere = node(PeerAddr::Ip(SocketAddr::from(([127, 0, 0, 2], closed_port()))));
    assert!(!connect_counted_trusted(&elsewhere), "127.0.0.1 is a stranger to it");
    by_name.shutdown();
    elsewhere.shutdown();
}
