//! The internal link between two workers of one engine (DESIGN 7c.3), with real worker threads
//! that sleep in the kernel when idle: each worker's service sees a link to its own key that
//! names the other worker, and a worker streams to the other far more than a lane holds, so the
//! stream stalls on a full lane many times and goes on only because the reader wakes the writer
//! when it makes room, and the reader, idle between batches, sleeps and is woken by the writer;
//! one way, then both ways at once. Every message arrives, in order. A lost wake-up leaves a
//! stream stuck: the test then fails at its (generous) bound instead of passing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use ringspan::cipher::PublicKey;
use ringspan::ids::LinkId;
use ringspan::limits::LANE_BYTES;
use ringspan::ring::{CloseReason, Engine, LinkCtx, Service, WorkerCtx};
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

/// Bytes the outside peer streams to the engine in the backpressure test.
const FLOOD: usize = 24 << 20;
/// The size of each of its messages (an 8-byte sequence number, then filler).
const FLOOD_PIECE: usize = 16 << 10;

/// The outside peer: streams [`FLOOD`] to the engine in numbered pieces, keeping less than a MiB
/// queued (it never closes the link for a full queue).
struct Flooder {
    link: Option<LinkId>,
    sent: usize,
    piece: Vec<u8>,
}

impl Service for Flooder {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        self.link = Some(link.id());
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        // Nothing wakes this worker when its queue drains: it looks again in a millisecond.
        worker.wake_at(worker.now() + Duration::from_millis(1));
        let Some(mut link) = self.link.and_then(|id| worker.link(id)) else { return };
        while self.sent < FLOOD && link.queued_bytes() < 1 << 20 {
            let seq = (self.sent / FLOOD_PIECE) as u64;
            self.piece[..8].copy_from_slice(&seq.to_be_bytes());
            let LinkCtx { txn, out, .. } = &mut link;
            txn.send_oneway(out, PIECE, ErrorCode::NONE, &self.piece).unwrap();
            self.sent += FLOOD_PIECE;
        }
    }
}

/// Worker 0 hands each piece from the outside link to worker 1 over their internal link; worker
/// 1 is slow (a sleep per piece) and checks the order.
struct Relaying {
    internal: Option<LinkId>,
    /// The most worker 0's internal link held unsent right after a piece was handed to it.
    most_queued: Arc<AtomicUsize>,
    got: usize,
    next: u64,
    done: Option<Sender<usize>>,
}

impl Service for Relaying {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        if link.sibling().is_some() {
            self.internal = Some(link.id());
        }
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let Received::OneWay { command: PIECE, payload, .. } = received else { return };
        if link.sibling().is_none() {
            // From outside, on worker 0: on to worker 1.
            let internal = self.internal.expect("the internal link is up first");
            let queued = link.peers.with(internal, |txn, out| {
                txn.send_oneway(out, PIECE, ErrorCode::NONE, payload).unwrap();
                out.queued_bytes()
            });
            self.most_queued.fetch_max(queued.expect("the internal link"), Ordering::Relaxed);
            return;
        }
        // On worker 1, far slower than any machine sends over loopback: 32 MB/s.
        std::thread::sleep(Duration::from_micros(500));
        let seq = u64::from_be_bytes(payload[..8].try_into().unwrap());
        assert_eq!(seq, self.next, "pieces in order");
        self.next += 1;
        self.got += payload.len();
        if self.got == FLOOD
            && let Some(done) = self.done.take()
        {
            let _ = done.send(self.got);
        }
    }

    fn link_down(&mut self, _worker: &mut WorkerCtx<'_>, link: LinkId, reason: CloseReason) {
        // Only the shutdown closes links here: backpressure never does.
        let shutdown =
            [CloseReason::Local(ErrorCode::SHUTDOWN), CloseReason::PeerSaid(ErrorCode::SHUTDOWN)];
        assert!(shutdown.contains(&reason), "{link} closed ({reason})");
    }
}

#[test]
fn a_worker_whose_internal_link_backs_up_stops_reading_its_sockets() {
    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();
    let listen = Some("127.0.0.1:0".parse().unwrap());
    let outside = Engine::start(config(1, listen), server_cipher, |_| Flooder {
        link: None,
        sent: 0,
        piece: vec![0x5a; FLOOD_PIECE],
    })
    .unwrap();
    let (tx, rx) = channel();
    let most_queued = Arc::new(AtomicUsize::new(0));
    let most = most_queued.clone();
    let mut engine_config = config(2, None);
    engine_config.recv_buffers = 16;
    let recv_bytes =
        usize::from(engine_config.recv_buffers) * engine_config.recv_buffer_size as usize;
    let engine = Engine::start(engine_config, client_cipher, move |_| Relaying {
        internal: None,
        most_queued: most.clone(),
        got: 0,
        next: 0,
        done: Some(tx.clone()),
    })
    .unwrap();
    // The first dial goes from worker 0.
    engine.connect(outside.local_addr().unwrap(), Some(server_key));
    // A bound for a hang, not a timing.
    let got = rx.recv_timeout(Duration::from_secs(120)).expect("the flood arrives whole");
    assert_eq!(got, FLOOD);
    engine.shutdown();
    let stats = engine.join();
    outside.shutdown();
    outside.join();
    let most_queued = most_queued.load(Ordering::Relaxed);
    println!(
        "worker 0: {} pauses, at most {most_queued} bytes queued to worker 1 ({} at a turn's end)",
        stats[0].lane_pauses, stats[0].lane_queued_max
    );
    // At most the bound, plus what one turn can bring in from the receive buffers.
    let bound = ringspan::limits::LANE_QUEUE_PAUSE_BYTES + recv_bytes + (1 << 20);
    assert!(most_queued <= bound, "{most_queued} bytes queued to worker 1, more than {bound}");
    assert!(stats[0].lane_pauses > 0, "worker 0 stopped reading while worker 1 lagged");
}
