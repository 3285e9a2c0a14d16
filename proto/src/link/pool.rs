//! A worker's pool of record buffers: outgoing records being built or in flight, and incoming
//! records that arrived split across receive buffers.
//!
//! Two sizes: large buffers hold any record; small ones ([`SMALL_RECORD_BUF`] bytes) hold the
//! control records a link with nothing else to say sends (keepalives, close notices, handshake
//! frames, hellos, span adverts). A record starts in a small buffer and moves to a large one if
//! it outgrows it, so writing a few bytes to a hundred thousand links in one turn (a shutdown,
//! keepalives falling due together, an advert to every client) takes a hundred thousand small
//! buffers, not as many 64 KiB ones.
//!
//! Buffers are allocated up front; taking and returning one never allocates. When the pool is
//! empty a buffer is allocated anyway and the miss is counted (and shown in metrics), so a pool
//! sized too small is visible instead of fatal. Buffers are boxed, so their address is stable
//! while the kernel reads or writes them, wherever the owner moves.

use crate::limits::{RECORD_WIRE_MAX, SMALL_RECORD_BUF};

/// One buffer: large enough for any record, or small.
pub struct RecordBuf(Box<[u8]>);

impl RecordBuf {
    fn new(len: usize) -> RecordBuf {
        RecordBuf(vec![0; len].into_boxed_slice())
    }

    /// Whether this is a small buffer.
    pub fn is_small(&self) -> bool {
        self.0.len() < RECORD_WIRE_MAX
    }
}

impl std::ops::Deref for RecordBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl std::ops::DerefMut for RecordBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

/// The pool.
pub struct Pool {
    large: Vec<RecordBuf>,
    small: Vec<RecordBuf>,
    large_capacity: usize,
    small_capacity: usize,
    misses: u64,
}

impl Pool {
    /// A pool holding `large` buffers for any record and `small` ones of [`SMALL_RECORD_BUF`]
    /// bytes.
    pub fn new(large: usize, small: usize) -> Pool {
        Pool {
            large: (0..large).map(|_| RecordBuf::new(RECORD_WIRE_MAX)).collect(),
            small: (0..small).map(|_| RecordBuf::new(SMALL_RECORD_BUF)).collect(),
            large_capacity: large,
            small_capacity: small,
            misses: 0,
        }
    }

    /// A buffer for any record: from the pool, or newly allocated (a counted miss).
    pub fn take(&mut self) -> RecordBuf {
        self.large.pop().unwrap_or_else(|| {
            self.misses += 1;
            RecordBuf::new(RECORD_WIRE_MAX)
        })
    }

    /// A buffer of [`SMALL_RECORD_BUF`] bytes: from the pool, or newly allocated (a counted
    /// miss).
    pub fn take_small(&mut self) -> RecordBuf {
        self.small.pop().unwrap_or_else(|| {
            self.misses += 1;
            RecordBuf::new(SMALL_RECORD_BUF)
        })
    }

    /// A buffer holding at least `len` bytes: small if it fits one.
    pub fn take_for(&mut self, len: usize) -> RecordBuf {
        if len <= SMALL_RECORD_BUF { self.take_small() } else { self.take() }
    }

    /// Returns a buffer. Beyond the pool's capacity (buffers allocated on a miss) it is freed.
    pub fn give(&mut self, buf: RecordBuf) {
        let (free, capacity) = if buf.is_small() {
            (&mut self.small, self.small_capacity)
        } else {
            (&mut self.large, self.large_capacity)
        };
        if free.len() < capacity {
            free.push(buf);
        }
    }

    /// Buffers allocated because the pool was empty (either size).
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Large buffers in the pool now.
    pub fn available(&self) -> usize {
        self.large.len()
    }

    /// Small buffers in the pool now.
    pub fn available_small(&self) -> usize {
        self.small.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_counted_and_the_pool_keeps_its_size() {
        let mut pool = Pool::new(2, 1);
        let (a, b, c) = (pool.take(), pool.take(), pool.take());
        assert_eq!(pool.misses(), 1);
        assert_eq!(a.len(), RECORD_WIRE_MAX);
        let (d, e) = (pool.take_for(100), pool.take_small());
        assert_eq!((d.len(), e.len()), (SMALL_RECORD_BUF, SMALL_RECORD_BUF));
        assert_eq!(pool.misses(), 2);
        for buf in [a, b, c, d, e] {
            pool.give(buf);
        }
        assert_eq!((pool.available(), pool.available_small()), (2, 1));
        assert_eq!(pool.take_for(SMALL_RECORD_BUF + 1).len(), RECORD_WIRE_MAX);
    }
}
