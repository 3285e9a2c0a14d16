//! The byte-stream side of a link, free of io_uring: cutting received bytes into records
//! ([`Rx`]) and building, sealing and queueing outgoing records ([`Tx`]).
//!
//! Received bytes arrive in kernel-provided buffers. Every record that lies whole in one buffer
//! is opened right there, in place. Only a record cut by a buffer boundary is copied, into a
//! pooled buffer held until the record completes: a small one while what has arrived of the
//! record fits there, a full-size one after. Outgoing messages are written straight into
//! the record being built; at each flush (once per event-loop turn, or when a record is full)
//! the record is sealed in place and queued for sending.

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::cipher::RecordSealer;
use crate::error::Error;
use crate::limits::{RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN};
use crate::wire::record::peek_wire_len;
use crate::wire::{Repr, Sink};

use super::pool::{Pool, RecordBuf};

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

    /// Feeds received bytes. Calls `on_record` with each complete record, in order, as a
    /// mutable slice (to be opened in place). Stops at the first error, which closes the link
    /// (the buffer held, if any, is back in the pool by then).
    /// The pool is borrowed only between records (`on_record` may write to links meanwhile).
    pub fn feed<E: From<Error>>(
        &mut self,
        bytes: &mut [u8],
        pool: &RefCell<Pool>,
        mut on_record: impl FnMut(&mut [u8]) -> Result<(), E>,
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
                    let result = on_record(&mut buf[..wanted]);
                    pool.borrow_mut().give(buf);
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
                    on_record(&mut rest[..len])?;
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
    /// The chunk being sent (or next to be), with its length.
    front: Option<(RecordBuf, u32)>,
    /// Sealed records (or handshake frames) behind the front one, in order, with their lengths.
    queue: VecDeque<(RecordBuf, u32)>,
    queued_bytes: usize,
    /// Records sealed since [`Tx::take_sealed`] (at the end of a turn, or when one filled up).
    sealed: u32,
    /// A sealing failure, to close the link with after the current callback. Boxed: it
    /// happens at most once in a link's life, and closes it.
    failed: Option<Box<Error>>,
}

impl Tx {
    /// A sink writing into this link's pending record, sealing full records with `sealer`.
    pub fn sink<'a>(
        &'a mut self,
        sealer: &'a mut RecordSealer,
        pool: &'a RefCell<Pool>,
    ) -> TxSink<'a> {
        TxSink { tx: self, sealer, pool }
    }

    fn push(&mut self, buf: RecordBuf, len: usize) {
        self.queued_bytes += len;
        // A chunk is at most one record on the wire, far below 4 GiB.
        let chunk = (buf, len as u32);
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
        self.push(buf, bytes.len());
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
                self.push(buf, wire_len);
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
    pub fn chunks(&self) -> impl Iterator<Item = &[u8]> {
        let front = self.front.iter().map(|(buf, len)| &buf[self.sent as usize..*len as usize]);
        front.chain(self.queue.iter().map(|(buf, len)| &buf[..*len as usize]))
    }

    /// Whether anything sealed waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    /// `n` bytes from the front of [`Tx::chunks`] were sent: finished chunks go back to the
    /// pool.
    pub fn advance(&mut self, n: usize, pool: &mut Pool) {
        self.queued_bytes -= n;
        let mut n = n;
        while n > 0 {
            let Some((_, len)) = &self.front else { return };
            let rest = (*len - self.sent) as usize;
            if n < rest {
                // `n` is below the front chunk's length, itself a u32.
                self.sent += n as u32;
                return;
            }
            n -= rest;
            self.sent = 0;
            if let Some((buf, _)) = std::mem::replace(&mut self.front, self.queue.pop_front()) {
                pool.give(buf);
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
        self.queue.capacity() * std::mem::size_of::<(RecordBuf, u32)>()
    }

    /// Returns every buffer to the pool (the link is closed and no send is in flight).
    pub fn release(&mut self, pool: &mut Pool) {
        if let Some(buf) = self.building.take() {
            pool.give(buf);
        }
        if let Some((buf, _)) = self.front.take() {
            pool.give(buf);
        }
        for (buf, _) in self.queue.drain(..) {
            pool.give(buf);
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
mod tests {
    use super::*;
    use crate::cipher::RekeyLimits;
    use crate::cipher::record::dangerous_record_layer_from_secrets;
    use crate::ids::MsgId;
    use crate::limits::SMALL_RECORD_BUF;
    use crate::wire::record::peek_wire_len;
    use crate::wire::{Command, Messages};

    #[allow(clippy::disallowed_methods)] // a test's fixed epoch
    fn now() -> std::time::Instant {
        std::time::Instant::now()
    }

    /// Builds a stream of records holding `count` messages of assorted sizes.
    fn stream(count: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
        let (mut sealer, _) =
            dangerous_record_layer_from_secrets(&[1; 32], &[2; 32], RekeyLimits::default(), now())
                .unwrap();
        let pool = RefCell::new(Pool::new(4, 4));
        let mut tx = Tx::default();
        let mut payloads = Vec::new();
        for i in 0..count {
            let payload = vec![i as u8; (i * 37) % 3000];
            let repr = Repr {
                command: Command::new(1, 1),
                payload_len: payload.len() as u32,
                ..Repr::default()
            };
            tx.sink(&mut sealer, &pool).put(&repr, &payload);
            payloads.push(payload);
            if i % 7 == 6 {
                tx.flush(&mut sealer, &mut pool.borrow_mut());
            }
        }
        tx.flush(&mut sealer, &mut pool.borrow_mut());
        let mut bytes = Vec::new();
        // Send in odd-sized pieces that cut across chunks, as partial sends do.
        while !tx.is_empty() {
            let all: Vec<u8> = tx.chunks().flatten().copied().collect();
            let n = all.len().min(bytes.len() % 9_999 + 1_234);
            bytes.extend_from_slice(&all[..n]);
            tx.advance(n, &mut pool.borrow_mut());
        }
        assert_eq!(tx.queued_bytes(), 0);
        (bytes, payloads)
    }

    /// Feeds `bytes` cut at `cuts` and returns every payload opened, in order.
    fn receive(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let (_, mut opener) =
            dangerous_record_layer_from_secrets(&[2; 32], &[1; 32], RekeyLimits::default(), now())
                .unwrap();
        let pool = RefCell::new(Pool::new(2, 2));
        let mut rx = Rx::default();
        let mut got = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let mut piece = bytes[start..end].to_vec();
            rx.feed(&mut piece, &pool, |record| -> Result<(), Error> {
                let plaintext = opener.open(record)?;
                for message in Messages::new(plaintext) {
                    let message = message?;
                    assert_eq!(message.msgid(), MsgId::ROOT);
                    got.push(message.payload().to_vec());
                }
                Ok(())
            })
            .unwrap();
            // Memory in proportion to what arrived: a full-size buffer only past a small one.
            assert_eq!(rx.holds_large_buffer(), rx.partial_len() > SMALL_RECORD_BUF);
            start = end;
        }
        assert!(!rx.holds_buffer(), "the stream ended on a record boundary");
        got
    }

    #[test]
    fn records_survive_every_cut() {
        let (bytes, payloads) = stream(60);
        assert_eq!(receive(&bytes, &[]), payloads);
        // One cut at every position of the first 300 bytes, then a sample of the rest.
        for cut in (1..300).chain((300..bytes.len()).step_by(97)) {
            assert_eq!(receive(&bytes, &[cut]), payloads, "cut at {cut}");
        }
        // Byte by byte.
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(receive(&bytes, &cuts), payloads);
    }

    #[test]
    fn full_records_are_sealed_as_they_fill() {
        let (mut sealer, _) =
            dangerous_record_layer_from_secrets(&[1; 32], &[2; 32], RekeyLimits::default(), now())
                .unwrap();
        let pool = RefCell::new(Pool::new(4, 4));
        let mut tx = Tx::default();
        let payload = [0u8; 1000];
        let repr = Repr { payload_len: 1000, ..Repr::default() };
        for _ in 0..200 {
            tx.sink(&mut sealer, &pool).put(&repr, &payload);
        }
        // 63 messages of 1,032 bytes fit a 64 KiB record: three are full, one is still open.
        assert_eq!(tx.queued_chunks(), 3);
        assert!(tx.has_pending());
        tx.flush(&mut sealer, &mut pool.borrow_mut());
        assert_eq!(tx.queued_chunks(), 4);
        assert_eq!(tx.take_failure(), None);
    }

    #[test]
    fn a_whole_record_is_queued_edited_and_behind_what_was_built() {
        let (mut sealer, mut opener) =
            dangerous_record_layer_from_secrets(&[1; 32], &[1; 32], RekeyLimits::default(), now())
                .unwrap();
        let pool = RefCell::new(Pool::new(4, 4));
        let mut tx = Tx::default();
        let message = |byte: u8| {
            let mut bytes = Vec::new();
            let repr = Repr { payload_len: 3, ..Repr::default() };
            bytes.put(&repr, &[byte; 3]);
            bytes
        };
        tx.sink(&mut sealer, &pool).put(&Repr { payload_len: 3, ..Repr::default() }, &[1; 3]);
        // Refused by its edit: nothing changes, the buffer goes back.
        let available = pool.borrow().available();
        assert_eq!(tx.queue_record(&mut sealer, &pool, &message(2), |_| None::<()>), None);
        assert_eq!((tx.queued_chunks(), pool.borrow().available()), (0, available));
        assert!(tx.has_pending());
        // Taken: the record being built is sealed first, then the edited copy.
        let original = [message(2), message(3)].concat();
        let edited = tx.queue_record(&mut sealer, &pool, &original, |body| {
            body[32] = 9;
            Some(body.len())
        });
        assert_eq!(edited, Some(original.len()));
        assert_eq!(original[32], 2, "the original is left as it was");
        assert!(!tx.has_pending());
        let mut wire: Vec<u8> = tx.chunks().flatten().copied().collect();
        let mut payloads = Vec::new();
        let rx_pool = RefCell::new(Pool::new(1, 1));
        Rx::default()
            .feed(&mut wire, &rx_pool, |record| -> Result<(), Error> {
                for message in Messages::new(opener.open(record)?) {
                    payloads.push(message?.payload().to_vec());
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(payloads, [vec![1; 3], vec![9, 2, 2], vec![3; 3]]);
    }

    /// A record header announcing the largest record, sealed length included.
    fn largest_header() -> [u8; RECORD_HEADER_LEN] {
        let mut header = [0u8; RECORD_HEADER_LEN];
        let sealed = (RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN) as u32;
        header[..4].copy_from_slice(&sealed.to_le_bytes());
        header
    }

    fn nothing(_: &mut [u8]) -> Result<(), Error> {
        panic!("no record is complete")
    }

    #[test]
    fn a_record_announced_large_holds_a_small_buffer_until_more_than_that_arrives() {
        let pool = RefCell::new(Pool::new(2, 2));
        let mut rx = Rx::default();
        // A header announcing 64 KiB, and a few bytes of it.
        let mut start = [largest_header().as_slice(), &[7; 5]].concat();
        rx.feed(&mut start, &pool, nothing).unwrap();
        assert!(rx.holds_buffer() && !rx.holds_large_buffer());
        assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (2, 1));
        // Up to a small buffer's worth, in pieces: still small.
        let mut arrived = start.len();
        while arrived < SMALL_RECORD_BUF {
            let mut piece = vec![7; (SMALL_RECORD_BUF - arrived).min(100)];
            rx.feed(&mut piece, &pool, nothing).unwrap();
            arrived += piece.len();
            assert!(!rx.holds_large_buffer(), "{arrived} bytes arrived");
        }
        assert_eq!(rx.partial_len(), SMALL_RECORD_BUF);
        // One byte more: a full-size buffer, and the small one back in the pool.
        rx.feed(&mut [7], &pool, nothing).unwrap();
        assert!(rx.holds_large_buffer());
        assert_eq!(rx.partial_len(), SMALL_RECORD_BUF + 1);
        assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (1, 2));
        // Closing gives it back.
        rx.release(&mut pool.borrow_mut());
        assert!(!rx.holds_buffer());
        assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (2, 2));
        assert_eq!(pool.borrow().misses(), 0);
    }

    #[test]
    fn a_record_that_starts_past_a_small_buffer_takes_a_large_one_at_once() {
        let pool = RefCell::new(Pool::new(1, 1));
        let mut rx = Rx::default();
        let mut start = [largest_header().as_slice(), &[0; SMALL_RECORD_BUF]].concat();
        rx.feed(&mut start, &pool, nothing).unwrap();
        assert!(rx.holds_large_buffer());
        assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (0, 1));
        // The deadline note belongs to this buffer only.
        assert!(!rx.deadline_armed());
        rx.arm_deadline();
        assert!(rx.deadline_armed());
        rx.release(&mut pool.borrow_mut());
        assert!(!rx.deadline_armed());
        assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (1, 1));
    }

    #[test]
    fn a_failed_record_gives_its_buffer_back_whatever_its_size() {
        // A record that fails to open (here: any record) after it was reassembled, in a small
        // buffer and in a large one.
        let (bytes, _) = stream(60);
        let first = peek_wire_len(&bytes).unwrap().unwrap();
        for cut in [3, 100, first - 1] {
            let pool = RefCell::new(Pool::new(2, 2));
            let mut rx = Rx::default();
            let fail = |_: &mut [u8]| {
                Err::<(), _>(Error::from(crate::error::Malformed::RecordReserved(0)))
            };
            rx.feed(&mut bytes[..cut].to_vec(), &pool, fail).unwrap();
            assert_eq!(rx.holds_large_buffer(), cut > SMALL_RECORD_BUF);
            rx.arm_deadline();
            assert!(rx.feed(&mut bytes[cut..first].to_vec(), &pool, fail).is_err());
            assert!(!rx.holds_buffer() && !rx.deadline_armed());
            assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (2, 2));
            assert_eq!(pool.borrow().misses(), 0);
        }
    }

    #[test]
    fn garbage_is_refused_and_buffers_return() {
        let pool = RefCell::new(Pool::new(1, 1));
        let mut rx = Rx::default();
        let mut bytes = [0xffu8; 20];
        let error = rx.feed(&mut bytes, &pool, |_| Ok::<_, Error>(())).unwrap_err();
        assert!(error.closes_link());
        // A partial header, then garbage completing it.
        let mut rx = Rx::default();
        rx.feed(&mut [0x30, 0, 0], &pool, |_| Ok::<_, Error>(())).unwrap();
        assert!(rx.holds_buffer() && !rx.holds_large_buffer());
        assert!(rx.feed(&mut [0, 0xff, 0, 0, 0, 0], &pool, |_| Ok::<_, Error>(())).is_err());
        assert!(!rx.holds_buffer());
        assert_eq!((pool.borrow().available(), pool.borrow().available_small()), (1, 1));
    }
}
