//! The byte-stream side of a link, free of io_uring: cutting received bytes into records
//! ([`Rx`]) and building, sealing and queueing outgoing records ([`Tx`]).
//!
//! Received bytes arrive in kernel-provided buffers. Every record that lies whole in one buffer
//! is opened right there, in place. Only a record cut by a buffer boundary is copied, into a
//! pooled buffer held until the record completes: a small one while what has arrived of the
//! record fits there, a full-size one after. Outgoing messages are written straight into
//! the record being built; at each flush (once per event-loop turn, or when a record is full)
//! the record is sealed in place and queued for sending.
//!
//! A relay forwards a record whose messages all continue on one link without copying it: the
//! record is opened in the receive buffer it arrived in, its headers rewritten there, sealed
//! there with the next link's key, and queued on that link as a [`Lent`] chunk: a place in a
//! receive buffer the driver lent to the send. The driver resolves it to bytes when it sends
//! ([`Chunk::Lent`]) and gets it back, to return the buffer to the kernel, when the chunk is
//! sent or the link released.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::cipher::RecordSealer;
use crate::error::Error;
use crate::limits::{RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN};
use crate::wire::record::peek_wire_len;
use crate::wire::{Repr, Sink};

use super::pool::{Pool, RecordBuf};

/// A complete record as [`Rx::feed`] hands it over.
pub enum Cut<'a> {
    /// Where it arrived, in the bytes fed.
    Arrived(&'a mut [u8]),
    /// Put together in a pooled buffer: its first `len` bytes. Whoever takes the buffer out
    /// keeps it (and gives it back to the pool in the end); one left here goes back at once.
    Reassembled(&'a mut Option<RecordBuf>, usize),
}

impl<'a> Cut<'a> {
    /// The record's bytes (none if its buffer was taken).
    pub fn bytes(self) -> &'a mut [u8] {
        match self {
            Cut::Arrived(bytes) => bytes,
            Cut::Reassembled(held, len) => held.as_mut().map_or(&mut [], |buf| &mut buf[..len]),
        }
    }
}

/// Reassembles records from received bytes.
///
/// A record cut by the end of a receive buffer is copied out and held until the rest arrives,
/// in memory in proportion to what has arrived: a small pooled buffer
/// ([`SMALL_RECORD_BUF`](crate::limits::SMALL_RECORD_BUF) bytes) while its bytes fit there, a full-size one only once more
/// than that has actually arrived. A peer that sends a header announcing 64 KiB and then
/// trickles, or stops, holds 512 bytes of this link, not 64 KiB.
#[derive(Default)]
pub struct Rx {
    /// A record cut by the end of a receive buffer: its first `partial_len` bytes.
    partial: Option<RecordBuf>,
    /// At most one record on the wire (64 KiB and 24 bytes).
    partial_len: u32,
    /// The worker armed a completion deadline for the full-size buffer held now.
    deadline_armed: bool,
}

impl Rx {
    /// Whether a reassembly buffer is held (an idle link holds none).
    pub fn holds_buffer(&self) -> bool {
        self.partial.is_some()
    }

    /// Whether the reassembly buffer held is a full-size one: more than
    /// [`SMALL_RECORD_BUF`](crate::limits::SMALL_RECORD_BUF) bytes of an unfinished record
    /// have arrived.
    pub fn holds_large_buffer(&self) -> bool {
        self.partial.as_ref().is_some_and(|buf| !buf.is_small())
    }

    /// Bytes of the unfinished record held.
    pub fn partial_len(&self) -> usize {
        self.partial_len as usize
    }

    /// Notes that a completion deadline is armed for the full-size buffer held now (the
    /// worker's business: see `RECORD_COMPLETION_TIMEOUT_MS`). Forgotten when that record
    /// completes or fails, so the next record's buffer starts without one.
    pub fn arm_deadline(&mut self) {
        self.deadline_armed = self.holds_large_buffer();
    }

    /// Whether [`Rx::arm_deadline`] was called for the full-size buffer held now.
    pub fn deadline_armed(&self) -> bool {
        self.deadline_armed && self.holds_large_buffer()
    }

    /// Feeds received bytes. Calls `on_record` with each complete record, in order, where it
    /// lies (to be opened in place): in `bytes`, or put together in a pooled buffer, which
    /// `on_record` may keep (a relay sends the record on from there). Stops at the first error,
    /// which closes the link (the buffer held, if any, is back in the pool by then).
    /// The pool is borrowed only between records (`on_record` may write to links meanwhile).
    pub fn feed<E: From<Error>>(
        &mut self,
        bytes: &mut [u8],
        pool: &RefCell<Pool>,
        mut on_record: impl FnMut(Cut<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut pos = 0;
        if let Some(mut buf) = self.partial.take() {
            // Complete the header, then the record.
            loop {
                let have = self.partial_len as usize;
                let wanted = match peek_wire_len(&buf[..have]) {
                    Ok(None) => RECORD_HEADER_LEN,
                    Ok(Some(len)) => len,
                    Err(error) => {
                        self.reset();
                        pool.borrow_mut().give(buf);
                        return Err(error.into());
                    }
                };
                let take = (wanted - have).min(bytes.len() - pos);
                if have + take > buf.len() {
                    // More than a small buffer holds has now arrived: move to a full one.
                    let mut pool = pool.borrow_mut();
                    let mut large = pool.take();
                    large[..have].copy_from_slice(&buf[..have]);
                    pool.give(std::mem::replace(&mut buf, large));
                }
                buf[have..have + take].copy_from_slice(&bytes[pos..pos + take]);
                // At most one record on the wire: far below 4 GiB.
                self.partial_len += take as u32;
                pos += take;
                if have + take == wanted && wanted > RECORD_HEADER_LEN {
                    self.reset();
                    let mut held = Some(buf);
                    let result = on_record(Cut::Reassembled(&mut held, wanted));
                    if let Some(buf) = held {
                        pool.borrow_mut().give(buf);
                    }
                    result?;
                    break;
                }
                if pos == bytes.len() {
                    self.partial = Some(buf);
                    return Ok(());
                }
            }
        }
        while pos < bytes.len() {
            let rest = &mut bytes[pos..];
            match peek_wire_len(rest)? {
                Some(len) if len <= rest.len() => {
                    on_record(Cut::Arrived(&mut rest[..len]))?;
                    pos += len;
                }
                _ => break,
            }
        }
        if pos < bytes.len() {
            // The start of a record (shorter than its announced length, which was checked,
            // or than a header): a small buffer unless more than one holds has arrived.
            let rest = &bytes[pos..];
            let mut buf = pool.borrow_mut().take_for(rest.len());
            buf[..rest.len()].copy_from_slice(rest);
            self.partial_len = rest.len() as u32;
            self.partial = Some(buf);
        }
        Ok(())
    }

    /// Returns any held buffer to the pool (the link is closing).
    pub fn release(&mut self, pool: &mut Pool) {
        if let Some(buf) = self.partial.take() {
            pool.give(buf);
        }
        self.reset();
    }

    fn reset(&mut self) {
        self.partial_len = 0;
        self.deadline_armed = false;
    }
}

/// Where a received record lies in a receive buffer its driver can lend to a send: the
/// buffer's id and the record's offset in it (the driver's own numbering; this layer never
/// reads the buffer through it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lent {
    /// The receive buffer.
    pub buffer: u16,
    /// The record's first byte in it.
    pub offset: u32,
}

/// A queued chunk and its length: a pooled buffer, or a record sealed in place in a lent
/// receive buffer. (The lengths inside let `Option<Queued>` take no more room than `Queued`.)
enum Queued {
    Pooled(RecordBuf, u32),
    Lent(Lent, u32),
}

impl Queued {
    fn len(&self) -> u32 {
        match self {
            Queued::Pooled(_, len) | Queued::Lent(_, len) => *len,
        }
    }
}

/// The next bytes to send, as [`Tx::chunks`] gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Bytes in one of the link's pooled buffers.
    Bytes(&'a [u8]),
    /// `len` bytes from `offset` of lent receive buffer `buffer`.
    Lent {
        /// The receive buffer.
        buffer: u16,
        /// The first byte to send.
        offset: u32,
        /// Bytes to send.
        len: u32,
    },
}

impl<'a> Chunk<'a> {
    /// The bytes, if they are the link's own (not in a lent buffer).
    pub fn bytes(self) -> Option<&'a [u8]> {
        match self {
            Chunk::Bytes(bytes) => Some(bytes),
            Chunk::Lent { .. } => None,
        }
    }

    /// Bytes in the chunk.
    pub fn len(&self) -> usize {
        match self {
            Chunk::Bytes(bytes) => bytes.len(),
            Chunk::Lent { len, .. } => *len as usize,
        }
    }

    /// Whether the chunk is empty (never, as queued).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The part of a queued chunk from byte `from`.
fn part(chunk: &Queued, from: u32) -> Chunk<'_> {
    match chunk {
        Queued::Pooled(buf, len) => Chunk::Bytes(&buf[from as usize..*len as usize]),
        Queued::Lent(at, len) => {
            Chunk::Lent { buffer: at.buffer, offset: at.offset + from, len: len - from }
        }
    }
}

/// Outgoing bytes of one link: the record being built, and sealed chunks waiting to be sent.
///
/// The send queue keeps its first chunk inline and only the chunks behind it in a `VecDeque`:
/// an idle link, which sends a keepalive now and then, never queues more than one chunk and
/// so never allocates a queue, while a busy link's queue grows once and is reused.
#[derive(Default)]
pub struct Tx {
    /// The record being built: header room, then `building_len` bytes of plaintext.
    building: Option<RecordBuf>,
    building_len: u32,
    /// Bytes of the front chunk already sent.
    sent: u32,
    /// The chunk being sent (or next to be).
    front: Option<Queued>,
    /// Sealed records (or handshake frames) behind the front one, in order.
    queue: VecDeque<Queued>,
    queued_bytes: usize,
    /// Chunks in lent receive buffers queued (and not yet handed back).
    lent: u32,
    /// Records sealed since [`Tx::take_sealed`] (at the end of a turn, or when one filled up).
    sealed: u32,
    /// A sealing failure, to close the link with after the current callback. Boxed: it
    /// happens at most once in a link's life, and closes it.
    failed: Option<Box<Error>>,
}

impl Tx {
    /// Makes room for `chunks` queued behind the one being sent, so that a queue that long
    /// allocates nothing.
    pub fn reserve(&mut self, chunks: usize) {
        self.queue.reserve(chunks);
    }

    /// A sink writing into this link's pending record, sealing full records with `sealer`.
    pub fn sink<'a>(
        &'a mut self,
        sealer: &'a mut RecordSealer,
        pool: &'a RefCell<Pool>,
    ) -> TxSink<'a> {
        TxSink { tx: self, sealer, pool }
    }

    fn push(&mut self, chunk: Queued) {
        self.queued_bytes += chunk.len() as usize;
        if self.front.is_none() {
            self.front = Some(chunk);
        } else {
            self.queue.push_back(chunk);
        }
    }

    /// Queues raw bytes to send as they are (handshake frames, before records flow).
    pub fn queue_raw(&mut self, bytes: &[u8], pool: &mut Pool) {
        let mut buf = pool.take_for(bytes.len());
        buf[..bytes.len()].copy_from_slice(bytes);
        // A chunk is at most one record on the wire, far below 4 GiB.
        self.push(Queued::Pooled(buf, bytes.len() as u32));
    }

    /// Seals the record being built, if any, and queues it.
    pub fn flush(&mut self, sealer: &mut RecordSealer, pool: &mut Pool) {
        let Some(buf) = self.building.take() else {
            return;
        };
        let len = std::mem::take(&mut self.building_len) as usize;
        self.seal_and_push(sealer, pool, buf, len);
    }

    /// Seals `buf`, holding `len` bytes of plaintext after its header room, and queues it; a
    /// sealing failure is kept to close the link with, and the buffer goes back to the pool.
    fn seal_and_push(
        &mut self,
        sealer: &mut RecordSealer,
        pool: &mut Pool,
        mut buf: RecordBuf,
        len: usize,
    ) {
        match sealer.seal(&mut buf, len) {
            Ok(wire_len) => {
                self.sealed = self.sealed.saturating_add(1);
                self.push(Queued::Pooled(buf, wire_len as u32));
            }
            Err(error) => {
                pool.give(buf);
                self.failed.get_or_insert_with(|| Box::new(error));
            }
        }
    }

    /// Queues one record made of `plaintext` (whole messages): a copy of it is taken into a
    /// pooled buffer and handed to `edit`, which may rewrite it in place; if `edit` returns
    /// `Some`, the record being built is sealed and queued first, then this one after it (so the
    /// link's output stays in order); if it returns `None` the copy goes back to the pool and
    /// nothing changes. A relay forwards whole records this way.
    pub fn queue_record<R>(
        &mut self,
        sealer: &mut RecordSealer,
        pool: &RefCell<Pool>,
        plaintext: &[u8],
        edit: impl FnOnce(&mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let len = plaintext.len();
        if len > RECORD_PLAINTEXT_MAX {
            return None;
        }
        let mut buf = pool.borrow_mut().take_for(RECORD_HEADER_LEN + len + RECORD_TAG_LEN);
        let body = &mut buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len];
        body.copy_from_slice(plaintext);
        let Some(result) = edit(body) else {
            pool.borrow_mut().give(buf);
            return None;
        };
        let mut pool = pool.borrow_mut();
        self.flush(sealer, &mut pool);
        self.seal_and_push(sealer, &mut pool, buf, len);
        Some(result)
    }

    /// Queues a received record that was opened and edited in place, in the lent receive buffer
    /// at `at`: `wire` is the whole record (header, `plaintext_len` bytes of plaintext, tag),
    /// sealed here with this link's key behind the record being built (sealed first). `false`,
    /// with nothing queued, if sealing failed (kept to close the link with) or the sealed
    /// record would not have the received one's length.
    pub fn queue_lent(
        &mut self,
        sealer: &mut RecordSealer,
        pool: &mut Pool,
        wire: &mut [u8],
        plaintext_len: usize,
        at: Lent,
    ) -> bool {
        if RECORD_HEADER_LEN + plaintext_len + RECORD_TAG_LEN != wire.len() {
            return false;
        }
        self.flush(sealer, pool);
        match sealer.seal(wire, plaintext_len) {
            Ok(wire_len) => {
                self.sealed = self.sealed.saturating_add(1);
                self.lent += 1;
                self.push(Queued::Lent(at, wire_len as u32));
                true
            }
            Err(error) => {
                self.failed.get_or_insert_with(|| Box::new(error));
                false
            }
        }
    }

    /// Queues a received record that was put together in pooled buffer `buf` and opened and
    /// edited there (`plaintext_len` bytes of plaintext after its header room): sealed in place
    /// with this link's key behind the record being built (sealed first), and sent from there.
    pub fn queue_reassembled(
        &mut self,
        sealer: &mut RecordSealer,
        pool: &mut Pool,
        buf: RecordBuf,
        plaintext_len: usize,
    ) {
        self.flush(sealer, pool);
        self.seal_and_push(sealer, pool, buf, plaintext_len);
    }

    /// Chunks in lent receive buffers queued and not yet handed back.
    pub fn lent_chunks(&self) -> usize {
        self.lent as usize
    }

    /// Whether a record is being built (messages written since the last flush).
    pub fn has_pending(&self) -> bool {
        self.building.is_some()
    }

    /// Plaintext bytes in the record being built.
    pub fn pending_len(&self) -> usize {
        self.building_len as usize
    }

    /// Records sealed since the last call: every one, whether sealed at the end of a turn, when
    /// it filled up, or whole (a forwarded record).
    pub fn take_sealed(&mut self) -> u32 {
        std::mem::take(&mut self.sealed)
    }

    /// The bytes to send next, in order: the unsent part of the front chunk, then the chunks
    /// after it.
    pub fn chunks(&self) -> impl Iterator<Item = Chunk<'_>> {
        let sent = self.sent;
        let front = self.front.iter().map(move |chunk| part(chunk, sent));
        front.chain(self.queue.iter().map(|chunk| part(chunk, 0)))
    }

    /// Whether anything sealed waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// `n` bytes from the front of [`Tx::chunks`] were sent: finished chunks go back to the
    /// pool, or to the driver through `unlend`.
    pub fn advance(&mut self, n: usize, pool: &mut Pool, unlend: &mut impl FnMut(Lent)) {
        self.queued_bytes -= n;
        let mut n = n;
        while n > 0 {
            let Some(front) = &self.front else { return };
            let rest = (front.len() - self.sent) as usize;
            if n < rest {
                // `n` is below the front chunk's length, itself a u32.
                self.sent += n as u32;
                return;
            }
            n -= rest;
            self.sent = 0;
            if let Some(chunk) = std::mem::replace(&mut self.front, self.queue.pop_front()) {
                self.give(chunk, pool, unlend);
            }
        }
    }

    fn give(&mut self, chunk: Queued, pool: &mut Pool, unlend: &mut impl FnMut(Lent)) {
        match chunk {
            Queued::Pooled(buf, _) => pool.give(buf),
            Queued::Lent(at, _) => {
                self.lent -= 1;
                unlend(at);
            }
        }
    }

    /// Sealed chunks waiting (including the one being sent).
    pub fn queued_chunks(&self) -> usize {
        usize::from(self.front.is_some()) + self.queue.len()
    }

    /// Bytes sealed and not yet sent.
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Takes the error of a failed seal, if any.
    pub fn take_failure(&mut self) -> Option<Error> {
        self.failed.take().map(|error| *error)
    }

    /// Bytes this link holds on the heap for its queue (not the pooled record buffers).
    pub fn heap_bytes(&self) -> usize {
        self.queue.capacity() * std::mem::size_of::<Queued>()
    }

    /// Returns every buffer to the pool, and every lent one through `unlend` (the link is
    /// closed and no send is in flight).
    pub fn release(&mut self, pool: &mut Pool, unlend: &mut impl FnMut(Lent)) {
        if let Some(buf) = self.building.take() {
            pool.give(buf);
        }
        if let Some(chunk) = self.front.take() {
            self.give(chunk, pool, unlend);
        }
        while let Some(chunk) = self.queue.pop_front() {
            self.give(chunk, pool, unlend);
        }
        self.building_len = 0;
        self.sent = 0;
        self.queued_bytes = 0;
    }
}

/// Writes messages into a link's pending record. Obtained from [`Tx::sink`].
pub struct TxSink<'a> {
    tx: &'a mut Tx,
    sealer: &'a mut RecordSealer,
    /// The worker's pool, shared by every link's sink (borrowed only inside `put`).
    pool: &'a RefCell<Pool>,
}

impl TxSink<'_> {
    /// Makes room for `chunks` queued behind the one being sent ([`Tx::reserve`]).
    pub fn reserve(&mut self, chunks: usize) {
        self.tx.reserve(chunks);
    }

    /// Bytes queued on the link: sealed and not yet sent, plus the record being built.
    pub fn queued_bytes(&self) -> usize {
        self.tx.queued_bytes + self.tx.building_len as usize
    }

    /// The same sink, borrowed for a shorter while.
    pub fn reborrow(&mut self) -> TxSink<'_> {
        TxSink { tx: self.tx, sealer: self.sealer, pool: self.pool }
    }
}

impl Sink for TxSink<'_> {
    fn put(&mut self, repr: &Repr, payload: &[u8]) {
        let len = repr.wire_len();
        if self.tx.building_len as usize + len > RECORD_PLAINTEXT_MAX {
            self.tx.flush(self.sealer, &mut self.pool.borrow_mut());
        }
        let tx = &mut *self.tx;
        let at = RECORD_HEADER_LEN + tx.building_len as usize;
        let needed = at + len + RECORD_TAG_LEN;
        let buf = match &mut tx.building {
            None => tx.building.insert(self.pool.borrow_mut().take_for(needed)),
            Some(buf) if buf.len() < needed => {
                // The record outgrew its small buffer: move what it holds to a large one.
                let mut pool = self.pool.borrow_mut();
                let mut large = pool.take();
                large[..at].copy_from_slice(&buf[..at]);
                pool.give(std::mem::replace(buf, large));
                buf
            }
            Some(buf) => buf,
        };
        repr.emit(payload, &mut buf[at..at + len]);
        // At most RECORD_PLAINTEXT_MAX (64 KiB) bytes are being built.
        tx.building_len += len as u32;
        debug_assert!(needed <= buf.len());
    }
}

#[cfg(test)]
mod tests;
