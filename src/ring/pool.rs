//! A worker's pool of record buffers: outgoing records being built or in flight, and incoming
//! records that arrived split across receive buffers.
//!
//! Buffers are allocated up front; taking and returning one never allocates. When the pool is
//! empty a buffer is allocated anyway and the miss is counted (and shown in metrics), so a pool
//! sized too small is visible instead of fatal. Buffers are boxed, so their address is stable
//! while the kernel reads or writes them, wherever the owner moves.

use crate::limits::RECORD_WIRE_MAX;

/// One buffer large enough for any record. A thin pointer (8 bytes): a link holds a few of
/// these slots whether or not they are filled.
pub struct RecordBuf(Box<[u8; RECORD_WIRE_MAX]>);

impl RecordBuf {
    fn new() -> RecordBuf {
        // Built on the heap: a 64 KiB array would not fit comfortably on the stack first.
        let boxed: Box<[u8]> = vec![0; RECORD_WIRE_MAX].into_boxed_slice();
        match boxed.try_into() {
            Ok(array) => RecordBuf(array),
            Err(_) => unreachable!("the vector has exactly RECORD_WIRE_MAX bytes"),
        }
    }
}

impl std::ops::Deref for RecordBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0[..]
    }
}

impl std::ops::DerefMut for RecordBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0[..]
    }
}

/// The pool.
pub struct Pool {
    free: Vec<RecordBuf>,
    capacity: usize,
    misses: u64,
}

impl Pool {
    /// A pool holding `capacity` buffers.
    pub fn new(capacity: usize) -> Pool {
        Pool { free: (0..capacity).map(|_| RecordBuf::new()).collect(), capacity, misses: 0 }
    }

    /// A buffer: from the pool, or newly allocated (a counted miss) if it is empty.
    pub fn take(&mut self) -> RecordBuf {
        self.free.pop().unwrap_or_else(|| {
            self.misses += 1;
            RecordBuf::new()
        })
    }

    /// Returns a buffer. Beyond the pool's capacity (buffers allocated on a miss) it is freed.
    pub fn give(&mut self, buf: RecordBuf) {
        if self.free.len() < self.capacity {
            self.free.push(buf);
        }
    }

    /// Buffers allocated because the pool was empty.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// Buffers in the pool now.
    pub fn available(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_counted_and_the_pool_keeps_its_size() {
        let mut pool = Pool::new(2);
        let (a, b, c) = (pool.take(), pool.take(), pool.take());
        assert_eq!(pool.misses(), 1);
        assert_eq!(a.len(), RECORD_WIRE_MAX);
        for buf in [a, b, c] {
            pool.give(buf);
        }
        assert_eq!(pool.available(), 2);
        assert_eq!(std::mem::size_of::<Option<RecordBuf>>(), 8);
    }
}
