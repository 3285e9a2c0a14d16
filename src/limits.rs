//! Every bound in ringspan, in one place.
//!
//! Nothing a peer sends can make a table, queue or buffer grow past a number written here. Each
//! limit says why it has its value; `const` assertions at the bottom tie dependent limits together
//! so that changing one cannot silently break another.

/// Bytes of a record's header: length (4), flags (1), reserved (3). See `docs/PROTOCOL.md`.
pub const RECORD_HEADER_LEN: usize = 8;

/// Bytes of the AES-256-GCM tag that ends every record.
pub const RECORD_TAG_LEN: usize = 16;

/// Largest plaintext in one record. 64 KiB: large enough that a bulk stream pays the per-record
/// AEAD cost (~70–130 ns) on at most 0.2% of its bytes, small enough that a receive buffer for
/// a whole record is cheap to pool.
pub const RECORD_PLAINTEXT_MAX: usize = 64 * 1024;

/// Largest record on the wire: header, plaintext and tag.
pub const RECORD_WIRE_MAX: usize = RECORD_HEADER_LEN + RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN;

/// Bytes of a message header. See `docs/PROTOCOL.md`.
pub const MESSAGE_HEADER_LEN: usize = 32;

/// Messages start on multiples of this within a record's plaintext; payloads are zero-padded to
/// it. Eight keeps every header field naturally aligned when the record buffer is.
pub const MESSAGE_ALIGN: usize = 8;

/// Largest payload of one message: a message never spans records. Larger application data is
/// streamed as several messages of one transaction.
pub const MESSAGE_PAYLOAD_MAX: usize = RECORD_PLAINTEXT_MAX - MESSAGE_HEADER_LEN;

/// Transactions open at once on one link, counting both sides' and stacked ones. A peer that
/// opens more is refused with `LimitReached`. 65,536 covers a core link carrying thousands of
/// spans plus the circuits stacked in them; the table grows to what is used, so an idle link
/// costs nothing for this bound.
pub const TXNS_PER_LINK_MAX: usize = 65_536;

/// How deep transactions may be stacked (a circuit inside a span is depth 2; an application
/// transaction inside that circuit is depth 3). Bounds every walk over a transaction's ancestors.
pub const TXN_DEPTH_MAX: u32 = 8;

const _: () = assert!(MESSAGE_HEADER_LEN.is_multiple_of(MESSAGE_ALIGN));
const _: () = assert!(RECORD_HEADER_LEN.is_multiple_of(MESSAGE_ALIGN));
const _: () = assert!(RECORD_PLAINTEXT_MAX.is_multiple_of(MESSAGE_ALIGN));
const _: () = assert!(MESSAGE_PAYLOAD_MAX.is_multiple_of(MESSAGE_ALIGN));
// A record length must fit its u32 field.
const _: () = assert!(RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN <= u32::MAX as usize);
// Slot numbers are u32 in `TxnId`.
const _: () = assert!(TXNS_PER_LINK_MAX <= u32::MAX as usize);
