//! Handing messages from one worker's thread to another's (DESIGN 7c.3): what a 128-byte message
//! costs through a lane (`ringspan::ring::lane`) when the producer wakes the consumer for every
//! message, when it wakes it only if it said it would sleep, and when it also publishes a turn's
//! messages as one batch. Two threads, a real eventfd to sleep on; each measurement moves 100,000
//! messages and reports their rate.
//!
//!     cargo bench --bench lane

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringspan::ring::lane::{LaneRx, LaneTx, Sleeper, lane};

const MESSAGES: usize = 100_000;
const MESSAGE: usize = 128;
/// Messages a worker writes in one turn, in the batched mode.
const TURN: usize = 64;

#[derive(Clone, Copy)]
enum Mode {
    /// One eventfd write per message, as a command per message would cost.
    WakeEachMessage,
    /// Each message published alone, the consumer woken only if it said it would sleep.
    WakeIfSleeping,
    /// A turn's messages published at once, then woken only if it said it would sleep.
    BatchPerTurn,
}

struct EventFd(i32);

impl EventFd {
    fn new() -> EventFd {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        EventFd(fd)
    }

    fn signal(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: the descriptor is open while `self` lives; `one` is 8 readable bytes.
        let r = unsafe { libc::write(self.0, one.as_ptr().cast(), 8) };
        assert_eq!(r, 8);
    }

    fn wait(&self) {
        let mut count = [0u8; 8];
        // SAFETY: the descriptor is open while `self` lives; `count` is 8 writable bytes.
        let r = unsafe { libc::read(self.0, count.as_mut_ptr().cast(), 8) };
        assert_eq!(r, 8);
    }
}

impl Drop for EventFd {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor.
        unsafe { libc::close(self.0) };
    }
}

fn produce(mut tx: LaneTx, sleeper: &Sleeper, wake: &EventFd, mode: Mode) {
    let message = [0x5au8; MESSAGE];
    let batch = [&message[..]; TURN];
    let mut sent = 0;
    while sent < MESSAGES {
        let n = match mode {
            // Whole messages only (a lane would take the part of one that fits).
            Mode::BatchPerTurn => {
                let count = TURN.min(MESSAGES - sent).min(tx.free() / MESSAGE);
                tx.write_all_of(&batch[..count]) / MESSAGE
            }
            _ if tx.free() >= MESSAGE => tx.write(&message) / MESSAGE,
            _ => 0,
        };
        sent += n;
        if n == 0 {
            // Full: nothing published, so no wake-up to claim.
            std::thread::yield_now();
            continue;
        }
        let woken = match mode {
            Mode::WakeEachMessage => true,
            _ => sleeper.wake_if_sleeping(),
        };
        if woken {
            wake.signal();
        }
    }
}

fn consume(mut rx: LaneRx, sleeper: &Sleeper, wake: &EventFd, mode: Mode) {
    let mut got = 0;
    while got < MESSAGES * MESSAGE {
        let (a, b) = rx.peek();
        let n = a.len() + b.len();
        black_box((a, b));
        rx.consume(n);
        got += n;
        if n > 0 || got == MESSAGES * MESSAGE {
            continue;
        }
        match mode {
            // Every message comes with a wake-up to take.
            Mode::WakeEachMessage => wake.wait(),
            _ => {
                sleeper.about_to_sleep();
                if rx.is_empty() {
                    wake.wait();
                }
                sleeper.awake();
            }
        }
    }
}

#[allow(clippy::disallowed_methods)] // The bench times real threads: wall time is what it measures.
fn run(mode: Mode) -> Duration {
    let (tx, rx) = lane(256 << 10);
    let sleeper = Arc::new(Sleeper::default());
    let wake = Arc::new(EventFd::new());
    let start = Instant::now();
    let producer = {
        let (sleeper, wake) = (sleeper.clone(), wake.clone());
        std::thread::spawn(move || produce(tx, &sleeper, &wake, mode))
    };
    consume(rx, &sleeper, &wake, mode);
    producer.join().unwrap();
    start.elapsed()
}

fn lanes(c: &mut Criterion) {
    let mut group = c.benchmark_group("lane_128B");
    group.throughput(Throughput::Elements(MESSAGES as u64));
    group.sample_size(20);
    for (name, mode) in [
        ("wake_each_message", Mode::WakeEachMessage),
        ("wake_if_sleeping", Mode::WakeIfSleeping),
        ("batch_per_turn", Mode::BatchPerTurn),
    ] {
        group.bench_function(name, |b| b.iter_custom(|iters| (0..iters).map(|_| run(mode)).sum()));
    }
    group.finish();
}

criterion_group!(benches, lanes);
criterion_main!(benches);
