//! A lane: one direction of a byte stream between two workers of one process, for what a node's
//! links on one worker hand to its links on another (DESIGN 7c.3).
//!
//! A lane is a single-producer single-consumer ring of bytes in memory the two threads share. The
//! producer copies bytes in and publishes them with one store; the consumer reads them where they
//! lie and frees them with one store. Nothing is allocated after [`lane`] makes the ring, and
//! neither side ever waits on the other: a full lane takes fewer bytes than offered (the writer
//! keeps the rest and applies backpressure upstream), an empty one yields none.
//!
//! Waking the consumer costs ~20 µs on this machine when it sleeps on another core, so a
//! producer never wakes per message. The consumer says when it is about to sleep
//! ([`Sleeper::about_to_sleep`]) and checks its lanes once more; a producer that published a
//! batch then wakes it only if it said so ([`Sleeper::wake_if_sleeping`]): at most one wake-up
//! per destination worker per turn, and none while the destination is busy. The two sides'
//! sequentially consistent store-then-load pairs (Dekker's pattern) make sure a batch is never
//! left unseen by a consumer gone to sleep.
//!
//! The other way round, a producer that found its lane full says it wants room; the consumer
//! that frees some next learns so from [`LaneRx::consume`] and wakes the producer, which then
//! writes the rest. Only a full lane costs that wake-up.

use std::cell::UnsafeCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};

/// A position counter on a cache line of its own, so the producer's and the consumer's stores do
/// not contend for one line.
#[repr(align(64))]
struct Padded(AtomicUsize);

/// What both ends share.
struct Ring {
    /// The bytes; `capacity` of them, a power of two.
    bytes: Box<[UnsafeCell<u8>]>,
    mask: usize,
    /// Bytes ever consumed (the consumer's store; wraps).
    head: Padded,
    /// Bytes ever published (the producer's store; wraps).
    tail: Padded,
    /// The producer found the lane full and waits for room.
    wants_room: AtomicBool,
}

// SAFETY: the producer writes only bytes in [tail, head + capacity) and the consumer reads only
// bytes in [head, tail); each publishes its counter with release ordering after its accesses and
// reads the other's with acquire ordering before them, so no byte is accessed by both threads
// at once, and the handles that reach a ring are `Send` but not `Clone` (one of each).
unsafe impl Sync for Ring {}
// SAFETY: the ring owns its bytes; moving it between threads moves plain memory.
unsafe impl Send for Ring {}

/// The producing end of a lane.
pub struct LaneTx {
    ring: Arc<Ring>,
    /// Our copy of the tail (only we store it).
    tail: usize,
    /// The consumer's head as last read (it only grows: re-read when the space seems short).
    head: usize,
}

/// The consuming end of a lane.
pub struct LaneRx {
    ring: Arc<Ring>,
    /// Our copy of the head (only we store it).
    head: usize,
    /// The producer's tail as last read.
    tail: usize,
}

/// A lane of `capacity` bytes (rounded up to a power of two, at least 64): its two ends.
pub fn lane(capacity: usize) -> (LaneTx, LaneRx) {
    let capacity = capacity.max(64).next_power_of_two();
    let bytes: Box<[UnsafeCell<u8>]> = (0..capacity).map(|_| UnsafeCell::new(0)).collect();
    let ring = Arc::new(Ring {
        bytes,
        mask: capacity - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
        wants_room: AtomicBool::new(false),
    });
    (LaneTx { ring: ring.clone(), tail: 0, head: 0 }, LaneRx { ring, head: 0, tail: 0 })
}

impl Ring {
    fn capacity(&self) -> usize {
        self.mask + 1
    }

    /// The ring's first byte, as a pointer writes and reads go through.
    fn base(&self) -> *mut u8 {
        // `UnsafeCell<u8>` has the layout of `u8`, so the cells are one contiguous byte array.
        UnsafeCell::raw_get(self.bytes.as_ptr())
    }
}

impl LaneTx {
    /// Bytes that can be written now without waiting for the consumer.
    pub fn free(&mut self) -> usize {
        self.head = self.ring.head.0.load(Ordering::Acquire);
        self.ring.capacity() - self.tail.wrapping_sub(self.head)
    }

    /// Copies as much of `bytes` as fits and publishes it. Returns how many were taken: fewer
    /// than offered when the lane is full (the caller keeps the rest, in order, and the consumer
    /// is told to wake this side when it frees room: see [`LaneRx::consume`]).
    pub fn write(&mut self, bytes: &[u8]) -> usize {
        self.write_all_of(&[bytes])
    }

    /// [`LaneTx::write`] of several slices in order, published once: stops at the first that
    /// does not fit whole (it is taken in part). Returns the bytes taken.
    pub fn write_all_of(&mut self, parts: &[&[u8]]) -> usize {
        let offered: usize = parts.iter().map(|part| part.len()).sum();
        let mut taken = self.copy_parts(parts, 0);
        if taken < offered {
            // Full: ask for a wake-up when room is made, then look once more, in case the
            // consumer made it before it could see the request (Dekker's pattern again).
            self.ring.wants_room.store(true, Ordering::SeqCst);
            fence(Ordering::SeqCst);
            taken += self.copy_parts(parts, taken);
        }
        if taken > 0 {
            self.ring.tail.0.store(self.tail, Ordering::SeqCst);
        }
        taken
    }

    /// Copies `parts` from byte `skip` of their concatenation, as far as they fit, without
    /// publishing; stops at the first part that does not fit whole.
    fn copy_parts(&mut self, parts: &[&[u8]], mut skip: usize) -> usize {
        let mut taken = 0;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
                continue;
            }
            let rest = &part[skip..];
            skip = 0;
            let n = self.copy_in(rest);
            taken += n;
            if n < rest.len() {
                break;
            }
        }
        taken
    }

    /// Copies what fits of `bytes` after the tail, without publishing.
    fn copy_in(&mut self, bytes: &[u8]) -> usize {
        let mut free = self.ring.capacity() - self.tail.wrapping_sub(self.head);
        if free < bytes.len() {
            free = self.free();
        }
        let n = bytes.len().min(free);
        if n == 0 {
            return 0;
        }
        let ring = &*self.ring;
        let at = self.tail & ring.mask;
        let first = n.min(ring.capacity() - at);
        // SAFETY: [tail, tail + n) lies within [tail, head + capacity), which the consumer does
        // not read until we publish a tail past it (see `Ring`'s `Sync`); `at + first` and
        // `n - first` stay within the ring's `capacity` bytes, and `bytes` is another object.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), ring.base().add(at), first);
            std::ptr::copy_nonoverlapping(bytes.as_ptr().add(first), ring.base(), n - first);
        }
        self.tail = self.tail.wrapping_add(n);
        n
    }
}

impl LaneRx {
    /// The bytes waiting, in order: up to two slices (the second where the ring wraps), empty if
    /// none. They stay until [`LaneRx::consume`]d.
    pub fn peek(&mut self) -> (&[u8], &[u8]) {
        self.tail = self.ring.tail.0.load(Ordering::Acquire);
        let ring = &*self.ring;
        let len = self.tail.wrapping_sub(self.head);
        let at = self.head & ring.mask;
        let first = len.min(ring.capacity() - at);
        // SAFETY: [head, tail) was published by the producer (acquire load of `tail` above), which
        // writes no byte of it again until we publish a head past it; both ranges lie within the
        // ring, and the slices borrow `self`, so they end before `consume` moves the head.
        unsafe {
            (
                std::slice::from_raw_parts(ring.base().add(at), first),
                std::slice::from_raw_parts(ring.base(), len - first),
            )
        }
    }

    /// The first run of bytes waiting (up to where the ring wraps), to change in place: the
    /// consumer owns them until it [`LaneRx::consume`]s them (an internal link opens its records
    /// where they lie). Empty if none wait.
    pub fn peek_mut(&mut self) -> &mut [u8] {
        self.tail = self.ring.tail.0.load(Ordering::Acquire);
        let ring = &*self.ring;
        let len = self.tail.wrapping_sub(self.head);
        let at = self.head & ring.mask;
        let first = len.min(ring.capacity() - at);
        // SAFETY: as in `peek`: [head, head + first) was published by the producer, which does
        // not touch it again until we publish a head past it, and no other reference to those
        // bytes exists while the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(ring.base().add(at), first) }
    }

    /// Frees the first `n` bytes waiting (at most what [`LaneRx::peek`] showed) for the
    /// producer. Returns `true` if the producer had found the lane full and waits for room:
    /// wake it (once; the request is taken).
    pub fn consume(&mut self, n: usize) -> bool {
        let n = n.min(self.tail.wrapping_sub(self.head));
        if n == 0 {
            return false;
        }
        self.head = self.head.wrapping_add(n);
        self.ring.head.0.store(self.head, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.ring.wants_room.load(Ordering::Relaxed)
            && self.ring.wants_room.swap(false, Ordering::AcqRel)
    }

    /// Whether nothing is waiting, as of now (a fresh read of the producer's tail). Sequentially
    /// consistent, for the check after [`Sleeper::about_to_sleep`].
    pub fn is_empty(&mut self) -> bool {
        self.tail = self.ring.tail.0.load(Ordering::SeqCst);
        self.tail == self.head
    }
}

/// Whether a worker is going to sleep, which the producers of its inbound lanes read to decide
/// whether a batch needs a wake-up. One per worker, shared with every worker that writes to it.
#[derive(Default)]
pub struct Sleeper {
    sleeping: AtomicBool,
}

impl Sleeper {
    /// The consumer is about to wait: call before checking each inbound lane once more
    /// ([`LaneRx::is_empty`]); if one has bytes, do not wait (and call [`Sleeper::awake`]).
    pub fn about_to_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The consumer is running again.
    pub fn awake(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// A producer published a batch to this worker's lane: whether it must wake the worker (it
    /// said it was going to sleep, and no other producer has claimed the wake-up since). Call
    /// once per batch, after a [`LaneTx::write`] that took bytes, and wake the worker if it
    /// returns `true`: a claim not followed by a wake-up leaves the worker asleep with bytes
    /// waiting (so never call it after a write that took nothing).
    pub fn wake_if_sleeping(&self) -> bool {
        fence(Ordering::SeqCst);
        self.sleeping.load(Ordering::Relaxed) && self.sleeping.swap(false, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `i`th byte of the test stream.
    fn byte(i: usize) -> u8 {
        (i.wrapping_mul(31) ^ (i >> 7)) as u8
    }

    fn drain(rx: &mut LaneRx, into: &mut Vec<u8>) -> usize {
        let (a, b) = rx.peek();
        let n = a.len() + b.len();
        into.extend_from_slice(a);
        into.extend_from_slice(b);
        rx.consume(n);
        n
    }

    #[test]
    fn a_full_lane_takes_what_fits_and_bytes_come_out_in_order_across_the_wrap() {
        let (mut tx, mut rx) = lane(64);
        assert_eq!(tx.free(), 64);
        let stream: Vec<u8> = (0..1_000).map(byte).collect();
        let mut sent = 0;
        let mut got = Vec::new();
        while got.len() < stream.len() {
            // Writes of odd sizes, so they straddle the wrap at every offset.
            let end = (sent + 23).min(stream.len());
            let n = tx.write(&stream[sent..end]);
            sent += n;
            if sent - got.len() == 64 {
                assert_eq!(tx.write(&stream[sent..end]), 0, "a full lane takes nothing");
            }
            // Read less than is there, some of the time.
            if sent % 3 == 0 {
                let (a, _) = rx.peek();
                let n = a.len().min(5);
                got.extend_from_slice(&a[..n]);
                rx.consume(n);
            } else {
                drain(&mut rx, &mut got);
            }
        }
        assert_eq!(got, stream);
        assert!(rx.is_empty());
        assert_eq!(tx.free(), 64);
    }

    #[test]
    fn several_slices_are_written_in_order_up_to_the_first_that_does_not_fit() {
        let (mut tx, mut rx) = lane(64);
        assert_eq!(tx.write_all_of(&[b"abc", b"defg"]), 7);
        let big = [b'x'; 60];
        assert_eq!(tx.write_all_of(&[b"h", &big, b"never"]), 57, "57 bytes were free");
        let mut got = Vec::new();
        drain(&mut rx, &mut got);
        assert_eq!(&got[..8], b"abcdefgh");
        assert_eq!(got.len(), 64);
        assert!(got[8..].iter().all(|&b| b == b'x'));
    }

    #[test]
    fn consuming_more_than_was_shown_frees_only_what_was_there() {
        let (mut tx, mut rx) = lane(64);
        tx.write(b"12345");
        rx.consume(3);
        assert_eq!(tx.free(), 59, "nothing was shown yet: nothing consumed");
        assert_eq!(rx.peek(), (&b"12345"[..], &b""[..]));
        rx.consume(1_000);
        assert!(rx.is_empty());
        assert_eq!(tx.free(), 64);
        tx.write(b"6");
        assert_eq!(rx.peek(), (&b"6"[..], &b""[..]));
    }

    #[test]
    fn a_producer_that_found_the_lane_full_is_woken_once_when_room_is_made() {
        let (mut tx, mut rx) = lane(64);
        assert_eq!(tx.write(&[1; 40]), 40);
        let (a, _) = rx.peek();
        let n = a.len();
        assert!(!rx.consume(n), "nobody waits for room");
        assert_eq!(tx.write(&[2; 100]), 64, "full");
        rx.peek();
        assert!(rx.consume(10), "the producer waits: wake it");
        rx.peek();
        assert!(!rx.consume(10), "woken once");
    }

    /// A producer and a consumer on two threads, the consumer sleeping on a real eventfd whenever
    /// its lane is empty and the producer waking it only when it said it would sleep: every byte
    /// arrives, in order, and no batch is left unseen (a lost wake-up would leave the consumer
    /// asleep: the test then fails at its poll's 20 s bound instead of passing).
    #[test]
    fn batches_cross_threads_in_order_and_a_sleeping_consumer_is_always_woken() {
        const TOTAL: usize = 4 << 20;
        let (mut tx, mut rx) = lane(4096);
        let sleeper = Arc::new(Sleeper::default());
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        assert!(fd >= 0);
        let producer = {
            let sleeper = sleeper.clone();
            std::thread::spawn(move || {
                let stream: Vec<u8> = (0..TOTAL).map(byte).collect();
                let (mut sent, mut wakes, mut batch) = (0, 0u64, 1usize);
                let mut batches = 0u64;
                while sent < TOTAL {
                    // Batches of growing, uneven sizes; every 16th waits until the consumer has
                    // said it will sleep (it has drained the lane), so the wake-up path runs.
                    batch = batch % 5_000 + 7;
                    batches += 1;
                    while batches.is_multiple_of(16) && !sleeper.sleeping.load(Ordering::SeqCst) {
                        std::hint::spin_loop();
                    }
                    let end = (sent + batch).min(TOTAL);
                    let n = tx.write(&stream[sent..end]);
                    sent += n;
                    if n > 0 && sleeper.wake_if_sleeping() {
                        wakes += 1;
                        let one = 1u64.to_ne_bytes();
                        // SAFETY: `fd` is the eventfd above, open until both threads are joined;
                        // `one` is 8 readable bytes.
                        let r = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
                        assert_eq!(r, 8);
                    }
                    if sent < end {
                        std::thread::yield_now();
                    }
                }
                wakes
            })
        };
        let mut got = Vec::with_capacity(TOTAL);
        let (mut claims, mut sleeps) = (0u64, 0u64);
        while got.len() < TOTAL {
            if drain(&mut rx, &mut got) > 0 {
                continue;
            }
            sleeper.about_to_sleep();
            claims += 1;
            if !rx.is_empty() {
                sleeper.awake();
                continue;
            }
            sleeps += 1;
            let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: `pfd` is one valid pollfd.
            let ready = unsafe { libc::poll(&mut pfd, 1, 20_000) };
            assert_eq!(ready, 1, "asleep with bytes waiting: a wake-up was lost");
            let mut count = [0u8; 8];
            // SAFETY: `fd` is open; `count` is 8 writable bytes.
            let r = unsafe { libc::read(fd, count.as_mut_ptr().cast(), 8) };
            assert_eq!(r, 8);
            sleeper.awake();
        }
        let wakes = producer.join().unwrap();
        // SAFETY: both threads are done with the descriptor.
        unsafe { libc::close(fd) };
        assert!(got.iter().enumerate().all(|(i, &b)| b == byte(i)), "bytes out of order");
        // At most one wake-up per time the consumer said it would sleep, never one per batch.
        assert!(wakes <= claims, "{wakes} wake-ups for {claims} announced sleeps");
        assert!(wakes > 0, "the wake-up path ran");
        assert!(sleeps <= claims);
    }
}
