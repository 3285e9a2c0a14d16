//! Workers of one engine handing each other bytes through their lanes (`WorkerCtx::lane_write`,
//! `Service::lane`; DESIGN 7c.3), with real worker threads that sleep in the kernel when idle:
//! a worker streams to another far more than a lane holds, so the stream stalls on a full lane
//! many times and goes on only because the reader wakes the writer when it makes room, and the
//! reader, idle between batches, sleeps and is woken by the writer; one way, then both ways at
//! once. Every byte arrives, in order. A lost wake-up leaves a stream stuck: the test then fails
//! at its (generous) bound instead of passing.

use std::sync::mpsc::{Sender, channel};
use std::time::Duration;

use ringspan::limits::LANE_BYTES;
use ringspan::ring::{Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::Received;

use crate::support::engines::config;
use crate::support::keys;

/// Bytes each worker streams to the other: many times a lane.
const STREAM: usize = 64 * LANE_BYTES + 12_345;

/// The `i`th byte of the stream worker `from` sends.
fn byte(from: usize, i: usize) -> u8 {
    (i.wrapping_mul(131) ^ (i >> 9) ^ (from * 77)) as u8
}

/// Streams to the other worker (if it `sends`) and checks what the other streams to it.
struct Streamer {
    sends: bool,
    sent: usize,
    got: usize,
    /// The stream arrived whole and in order (reported once).
    done: Option<Sender<(usize, usize)>>,
    scratch: Vec<u8>,
}

impl Service for Streamer {
    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        let (me, other) = (worker.index(), 1 - worker.index());
        if !self.sends {
            return;
        }
        // Writes in pieces of uneven size while the lane takes them; a short write means the
        // lane is full: the rest waits for the reader to make room (and wake us).
        while self.sent < STREAM {
            let piece = (self.sent % 7_919 + 1_000).min(STREAM - self.sent);
            self.scratch.clear();
            self.scratch.extend((self.sent..self.sent + piece).map(|i| byte(me, i)));
            let n = worker.lane_write(other, &self.scratch);
            self.sent += n;
            if n < piece {
                break;
            }
        }
    }

    fn lane(&mut self, worker: &mut WorkerCtx<'_>, from: usize, bytes: &[u8]) -> usize {
        assert_eq!(from, 1 - worker.index(), "bytes from the other worker only");
        for (k, &b) in bytes.iter().enumerate() {
            assert_eq!(b, byte(from, self.got + k), "byte {} from worker {from}", self.got + k);
        }
        // Take a little less than offered now and then: the rest must come again first.
        let take = if self.got.is_multiple_of(3) && bytes.len() > 1 {
            bytes.len() - 1
        } else {
            bytes.len()
        };
        self.got += take;
        if self.got == STREAM
            && let Some(done) = self.done.take()
        {
            let _ = done.send((worker.index(), self.got));
        }
        take
    }
}

/// Runs two workers, those listed in `senders` streaming to the other, until each stream has
/// arrived whole.
fn stream(senders: &'static [usize]) {
    let (cipher, _, _, _) = keys::server_and_client();
    let (tx, rx) = channel();
    let engine = Engine::start(config(2, None), cipher, move |index| Streamer {
        sends: senders.contains(&index),
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
