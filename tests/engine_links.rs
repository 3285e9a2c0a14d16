//! What an engine tells and lets a service do about one link, and what it does to a peer that
//! holds its memory: the reassembly deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, Instant};

use ringspan::cipher::{self, PublicKey, Session};
use ringspan::ids::LinkId;
use ringspan::limits::{RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN};
use ringspan::ring::{self, CloseReason, Engine, LinkCtx, Service};
use ringspan::txn::Received;

#[path = "support/keys.rs"]
mod keys;

#[allow(clippy::disallowed_methods)] // a real socket's handshake runs on real time
fn now() -> Instant {
    Instant::now()
}

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

    fn link_down(&mut self, link: LinkId, reason: CloseReason) {
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
        let len = stream.read(&mut frame).unwrap();
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
        listen: Some("127.0.0.1:0".parse().unwrap()),
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
