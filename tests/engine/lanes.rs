//! The internal link between two workers of one engine (DESIGN 7c.3), with real worker threads
//! that sleep in the kernel when idle: each worker's service sees a link to its own key that
//! names the other worker, and a worker streams to the other far more than a lane holds, so the
//! stream stalls on a full lane many times and goes on only because the reader wakes the writer
//! when it makes room, and the reader, idle between batches, sleeps and is woken by the writer;
//! one way, then both ways at once. Every message arrives, in order. A lost wake-up leaves a
//! stream stuck: the test then fails at its (generous) bound instead of passing.

use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use ringspan::cipher::PublicKey;
use ringspan::ids::LinkId;
use ringspan::limits::LANE_BYTES;
use ringspan::ring::{Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::Received;
use ringspan::wire::{Command, ErrorCode};

use crate::support::engines::config;
use crate::support::keys;

/// Bytes each worker streams to the other: many times a lane.
const STREAM: usize = 64 * LANE_BYTES + 12_345;

/// The command of the stream's messages.
const PIECE: Command = Command::new(0x7e, 1);

/// The `i`th byte of the stream worker `from` sends.
fn byte(from: usize, i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 9) ^ (from * 77)) as u8
}

/// Streams to the other worker over their internal link (if it `sends`) and checks what the
/// other streams to it.
struct Streamer {
    /// The engine's own key: the internal link's peer.
    own: PublicKey,
    sends: bool,
    link: Option<LinkId>,
    sent: usize,
    got: usize,
    /// The stream arrived whole and in order (reported once).
    done: Option<Sender<(usize, usize)>>,
    scratch: Vec<u8>,
}

impl Service for Streamer {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        assert_eq!(link.peer(), self.own, "an internal link's peer is the node itself");
        assert!(link.sibling().is_some(), "the only links here are internal");
        assert!(link.remote_addr().is_none(), "an internal link has no address");
        self.link = Some(link.id());
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let Received::OneWay { command: PIECE, payload, .. } = received else {
            panic!("unexpected message {received:?}");
        };
        let from = link.sibling().expect("an internal link");
        for (k, &b) in payload.iter().enumerate() {
            assert_eq!(b, byte(from, self.got + k), "byte {} from worker {from}", self.got + k);
        }
        self.got += payload.len();
        if self.got == STREAM
            && let Some(done) = self.done.take()
        {
            let _ = done.send((1 - from, self.got));
        }
    }

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        let me = worker.index();
        let Some(mut link) = self.link.filter(|_| self.sends).and_then(|id| worker.link(id)) else {
            return;
        };
        // Writes pieces of uneven size while the link queues less than a few lanes' worth; the
        // lane takes what fits at the end of the turn and the rest waits for the reader to make
        // room (and wake us, for another turn).
        while self.sent < STREAM && link.queued_bytes() < 4 * LANE_BYTES {
            let piece = (self.sent % 7_919 + 1_000).min(STREAM - self.sent);
            self.scratch.clear();
            self.scratch.extend((self.sent..self.sent + piece).map(|i| byte(me, i)));
            let LinkCtx { txn, out, .. } = &mut link;
            txn.send_oneway(out, PIECE, ErrorCode::NONE, &self.scratch).unwrap();
            self.sent += piece;
        }
    }
}

/// Runs two workers, those listed in `senders` streaming to the other, until each stream has
/// arrived whole.
fn stream(senders: &'static [usize]) {
    let (cipher, _, _, _) = keys::server_and_client();
    let own = cipher.identity().public_key();
    let (tx, rx) = channel();
    let engine = Engine::start(config(2, None), cipher, move |index| Streamer {
        own,
        sends: senders.contains(&index),
        link: None,
        sent: 0,
        got: 0,
        done: Some(tx.clone()),
        scratch: Vec::with_capacity(16 << 10),
    })
    .unwrap();
    let mut finished = Vec::new();
    for _ in 0..senders.len() {
        // A bound for a hang, not a timing: the streams take well under a second.
        let (worker, got) =
            rx.recv_timeout(Duration::from_secs(60)).expect("a stream stopped: a wake-up was lost");
        assert_eq!(got, STREAM);
        finished.push(worker);
    }
    // The stream from worker w is finished at the other one.
    finished.sort_unstable();
    let mut readers: Vec<usize> = senders.iter().map(|&w| 1 - w).collect();
    readers.sort_unstable();
    assert_eq!(finished, readers);
    engine.shutdown();
    engine.join();
}

#[test]
fn a_stream_through_a_full_lane_goes_on_as_its_reader_makes_room() {
    stream(&[0]);
}

#[test]
fn two_workers_stream_to_each_other_and_lose_no_wake_up() {
    stream(&[0, 1]);
}
