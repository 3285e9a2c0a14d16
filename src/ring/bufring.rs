//! A provided-buffer ring: receive buffers shared by all the links of one worker.
//!
//! The kernel picks a free buffer when data arrives on any socket with a multishot receive in
//! flight, so an idle link holds no receive buffer at all. A buffer is either the kernel's (in
//! the ring) or ours (reported by a completion, until [`BufRing::recycle`] gives it back).
//!
//! A buffer of ours may be lent to sends: a relay forwards a received record from where it lies
//! ([`Lender::lend`]), and the buffer goes back to the kernel only when the receive that filled
//! it has been handled and every send from it has completed (or its link was released). Each
//! buffer counts its holders: the receive, and one per record lent.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::IoUring;
use io_uring::types::BufRingEntry;

const PAGE: usize = 4096;

/// A registered ring of `entries` receive buffers of `buf_size` bytes each.
pub struct BufRing {
    ring: *mut BufRingEntry,
    ring_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    entries: u16,
    buf_size: u32,
    group: u16,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    /// Holders of each buffer: 0 while it is the kernel's; the receive that reported it (until
    /// [`BufRing::recycle`]) and each record lent from it (until [`BufRing::unlend`]).
    holds: Vec<u16>,
    /// Records lent, over all buffers.
    lent: u32,
    /// The most records lent at once.
    lent_max: u32,
}

/// What a relay needs to lend records of one buffer to sends, while that buffer's bytes are
/// borrowed: see [`BufRing::lender`].
pub struct Lender<'a> {
    holds: &'a mut u16,
    lent: &'a mut u32,
    lent_max: &'a mut u32,
    /// The buffer.
    pub buffer: u16,
}

impl Lender<'_> {
    /// Records lent, over all buffers of the ring.
    pub fn lent(&self) -> u32 {
        *self.lent
    }

    /// `n` more records of the buffer are lent to sends: the buffer stays ours until each
    /// comes back ([`BufRing::unlend`]). At most a share of the ring, far below `u16::MAX`.
    pub fn lend(&mut self, n: u16) {
        *self.holds += n;
        *self.lent += u32::from(n);
        *self.lent_max = (*self.lent_max).max(*self.lent);
    }
}

impl BufRing {
    /// Allocates and registers `entries` buffers (a power of two, at most 32,768) of
    /// `buf_size` bytes as buffer group `group` of `ring`, all handed to the kernel.
    ///
    /// The ring must outlive this value's registration: drop the `IoUring` first, or keep both
    /// in one struct with the ring declared before the buffers.
    pub fn new(ring: &IoUring, group: u16, entries: u16, buf_size: u32) -> io::Result<BufRing> {
        if !entries.is_power_of_two() || entries > 32_768 || buf_size == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let ring_layout =
            Layout::from_size_align((entries as usize * size_of::<BufRingEntry>()).max(PAGE), PAGE)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let bufs_layout = Layout::from_size_align(entries as usize * buf_size as usize, PAGE)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: both layouts have non-zero sizes.
        let ring_mem = unsafe { alloc_zeroed(ring_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if ring_mem.is_null() || bufs.is_null() {
            // SAFETY: each pointer, if not null, came from alloc_zeroed with its layout.
            unsafe {
                if !ring_mem.is_null() {
                    dealloc(ring_mem.cast(), ring_layout);
                }
                if !bufs.is_null() {
                    dealloc(bufs, bufs_layout);
                }
            }
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut this = BufRing {
            ring: ring_mem,
            ring_layout,
            bufs,
            bufs_layout,
            entries,
            buf_size,
            group,
            tail: 0,
            holds: vec![1; entries as usize],
            lent: 0,
            lent_max: 0,
        };
        // SAFETY: `ring_mem` is page aligned, zeroed, holds `entries` entries, and lives until
        // `Drop`, which the caller orders after the ring's destruction (see above).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(ring_mem as u64, entries, group, 0)?;
        }
        for bid in 0..entries {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id to name in receive operations.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Bytes in each buffer.
    pub fn buf_size(&self) -> u32 {
        self.buf_size
    }

    /// Bytes of memory the buffers take.
    pub fn bytes(&self) -> usize {
        self.bufs_layout.size() + self.ring_layout.size()
    }

    /// Takes buffer `bid`, which a completion reported holding `len` bytes: it is ours until
    /// [`BufRing::recycle`]. Returns `None` if the completion is impossible (an unknown buffer,
    /// one already ours, or a length past its end).
    pub fn take(&mut self, bid: u16, len: usize) -> Option<()> {
        let holds = self.holds.get_mut(bid as usize)?;
        if *holds > 0 || len > self.buf_size as usize {
            return None;
        }
        *holds = 1;
        Some(())
    }

    /// The bytes of a buffer a receive just reported, to handle them in place, and its
    /// [`Lender`].
    ///
    /// # Panics
    /// If the buffer is the kernel's: a local bug (only [`BufRing::take`]n buffers are read).
    pub fn lender(&mut self, bid: u16) -> (&mut [u8], Lender<'_>) {
        let holds = &mut self.holds[bid as usize];
        assert!(*holds > 0, "buffer {bid} belongs to the kernel");
        let start = bid as usize * self.buf_size as usize;
        // SAFETY: the range lies inside the `bufs` allocation; the buffer is ours (not in the
        // ring, so the kernel does not write it) and `&mut self` makes this borrow exclusive.
        // No send reads it: a buffer goes back to the ring only once nothing holds it, so the
        // receive that reported it found no record of it lent, and records lent while it is
        // handled are sent only after this borrow ends (sends start at the end of the turn).
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(self.bufs.add(start), self.buf_size as usize) };
        (bytes, Lender { holds, lent: &mut self.lent, lent_max: &mut self.lent_max, buffer: bid })
    }

    /// The bytes of a buffer a receive just reported (as [`BufRing::lender`]).
    ///
    /// # Panics
    /// If the buffer is the kernel's: a local bug (only [`BufRing::take`]n buffers are read).
    pub fn bytes_mut(&mut self, bid: u16) -> &mut [u8] {
        self.lender(bid).0
    }

    /// `len` bytes from `offset` of a buffer lent to a send, for the kernel to read.
    ///
    /// # Panics
    /// If the buffer is the kernel's or the range leaves it: a local bug.
    pub fn lent_bytes(&self, bid: u16, offset: u32, len: u32) -> &[u8] {
        assert!(self.holds[bid as usize] > 0, "buffer {bid} belongs to the kernel");
        let (offset, len) = (offset as usize, len as usize);
        assert!(offset + len <= self.buf_size as usize, "a lent range leaves buffer {bid}");
        let start = bid as usize * self.buf_size as usize + offset;
        // SAFETY: the range lies inside the buffer (checked), inside the `bufs` allocation; the
        // buffer is ours, so the kernel does not write it, and nothing of ours writes a lent
        // record until it comes back (`&self` excludes `lender` meanwhile).
        unsafe { std::slice::from_raw_parts(self.bufs.add(start), len) }
    }

    /// Records lent, over all buffers.
    pub fn lent(&self) -> u32 {
        self.lent
    }

    /// The most records lent at once so far.
    pub fn lent_max(&self) -> u32 {
        self.lent_max
    }

    /// Buffers that are ours (handled now, or held by records lent).
    pub fn held(&self) -> usize {
        self.holds.iter().filter(|&&holds| holds > 0).count()
    }

    /// The receive that reported a buffer is handled: the buffer goes back to the kernel
    /// unless records of it are lent. Call [`BufRing::publish`] once after a batch.
    pub fn recycle(&mut self, bid: u16) {
        self.release(bid);
    }

    /// A record lent from a buffer came back (its send completed, or its link was released):
    /// the buffer goes back to the kernel once nothing holds it.
    pub fn unlend(&mut self, bid: u16) {
        if self.holds.get(bid as usize).is_some_and(|&holds| holds > 0) {
            self.lent -= 1;
            self.release(bid);
        }
    }

    fn release(&mut self, bid: u16) {
        if let Some(holds) = self.holds.get_mut(bid as usize)
            && *holds > 0
        {
            *holds -= 1;
            if *holds == 0 {
                self.push(bid);
            }
        }
    }

    /// Makes recycled buffers visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: `ring` points at the first of `entries` initialised entries; the tail field
        // overlays the first entry's reserved word, which the kernel reads atomically.
        let tail = unsafe { &*BufRingEntry::tail(self.ring).cast::<AtomicU16>() };
        tail.store(self.tail, Ordering::Release);
    }

    fn push(&mut self, bid: u16) {
        let index = (self.tail & (self.entries - 1)) as usize;
        // SAFETY: `index < entries`, inside the ring allocation; the kernel only reads entries
        // between its head and our published tail, and this one is past the published tail.
        let entry = unsafe { &mut *self.ring.add(index) };
        // SAFETY: `bid < entries`, so the buffer lies inside the `bufs` allocation.
        let addr = unsafe { self.bufs.add(bid as usize * self.buf_size as usize) };
        entry.set_addr(addr as u64);
        entry.set_len(self.buf_size);
        entry.set_bid(bid);
        self.holds[bid as usize] = 0;
        self.tail = self.tail.wrapping_add(1);
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both pointers came from alloc_zeroed with these layouts; the owner drops the
        // io_uring (ending the registration) before this value.
        unsafe {
            dealloc(self.ring.cast(), self.ring_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}
