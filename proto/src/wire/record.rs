//! Records: the unit of encryption on a link.
//!
//! ```text
//!  0       4     5        8                                  8+n
//!  +-------+-----+--------+----------------------------------+-----------+
//!  | len   |flags|reserved| ciphertext (n = len - 16 bytes)  | tag (16)  |
//!  +-------+-----+--------+----------------------------------+-----------+
//!    u32 LE       3 zero    plaintext: one or more messages
//! ```
//!
//! `len` counts the sealed body (ciphertext and tag), not the header. The 8 header bytes are the
//! AEAD's associated data, so a changed length or flag fails authentication. Flag bit 0 is the
//! key phase (which of two session keys sealed the record, for rekeying without a pause); the
//! other bits and the reserved bytes are zero.

use crate::error::{Error, Malformed};
use crate::limits::{
    MESSAGE_ALIGN, MESSAGE_HEADER_LEN, RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN,
};

mod field {
    use core::ops::Range;

    pub const LENGTH: Range<usize> = 0..4;
    pub const FLAGS: usize = 4;
    pub const RESERVED: Range<usize> = 5..8;
    pub const BODY: usize = 8;
}

/// Record flag: the record was sealed with the odd key of the session's key schedule.
pub const FLAG_KEY_PHASE: u8 = 0x01;

/// The valid contents of a record header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    /// Length of the plaintext (the sealed body is this plus the tag).
    pub plaintext_len: usize,
    /// Which key of the schedule sealed the record.
    pub key_phase: bool,
}

impl RecordHeader {
    /// Parses the first [`RECORD_HEADER_LEN`] bytes of `bytes`.
    ///
    /// Refuses a length that could not hold one message header, exceeds
    /// [`RECORD_PLAINTEXT_MAX`], or is not a whole number of 8-byte units, and any reserved bit.
    pub fn parse(bytes: &[u8]) -> Result<RecordHeader, Error> {
        if bytes.len() < RECORD_HEADER_LEN {
            return Err(Malformed::RecordHeaderTruncated(RECORD_HEADER_LEN).into());
        }
        let sealed_len = super::get_u32(bytes, field::LENGTH.start);
        let plaintext_len = (sealed_len as usize).wrapping_sub(RECORD_TAG_LEN);
        if (sealed_len as usize) < RECORD_TAG_LEN + MESSAGE_HEADER_LEN
            || plaintext_len > RECORD_PLAINTEXT_MAX
            || !plaintext_len.is_multiple_of(MESSAGE_ALIGN)
        {
            return Err(Malformed::RecordLength(sealed_len).into());
        }
        let flags = bytes[field::FLAGS];
        if flags & !FLAG_KEY_PHASE != 0 || bytes[field::RESERVED].iter().any(|&b| b != 0) {
            return Err(Malformed::RecordReserved(flags).into());
        }
        Ok(RecordHeader { plaintext_len, key_phase: flags & FLAG_KEY_PHASE != 0 })
    }

    /// Bytes the whole record takes on the wire.
    pub fn wire_len(&self) -> usize {
        RECORD_HEADER_LEN + self.plaintext_len + RECORD_TAG_LEN
    }

    /// Writes the header into the first [`RECORD_HEADER_LEN`] bytes of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than a header or the plaintext length is out of range: both are
    /// local bugs, never peer input.
    pub fn emit(&self, bytes: &mut [u8]) {
        assert!(self.plaintext_len <= RECORD_PLAINTEXT_MAX, "record plaintext too long");
        let sealed_len = (self.plaintext_len + RECORD_TAG_LEN) as u32;
        bytes[field::LENGTH].copy_from_slice(&sealed_len.to_le_bytes());
        bytes[field::FLAGS] = if self.key_phase { FLAG_KEY_PHASE } else { 0 };
        bytes[field::RESERVED].fill(0);
    }
}

/// How many bytes the record at the start of `stream` occupies, once its header has arrived.
///
/// `Ok(None)` means fewer than [`RECORD_HEADER_LEN`] bytes are buffered yet. This is the whole
/// deframer: a receiver reads until it holds that many bytes, then hands them to
/// [`Record::new_checked`].
pub fn peek_wire_len(stream: &[u8]) -> Result<Option<usize>, Error> {
    if stream.len() < RECORD_HEADER_LEN {
        return Ok(None);
    }
    RecordHeader::parse(stream).map(|header| Some(header.wire_len()))
}

/// The plaintexts of the records that carry `messages` (whole messages, as a transaction layer
/// writes them), in order: each cut between two messages, as long as it may be
/// ([`RECORD_PLAINTEXT_MAX`]); a message is never split. Its length comes from its header; a
/// header that is short or runs past the end ends the last plaintext there.
pub fn record_plaintexts(messages: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = messages;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = 0;
        while end < rest.len() {
            let len = if rest.len() - end < MESSAGE_HEADER_LEN {
                rest.len() - end
            } else {
                super::Message::new_unchecked(&rest[end..]).wire_len().min(rest.len() - end)
            };
            if end > 0 && end + len > RECORD_PLAINTEXT_MAX {
                break;
            }
            end += len.max(1);
        }
        let (plaintext, after) = rest.split_at(end);
        rest = after;
        Some(plaintext)
    })
}

/// A view of one record in a buffer (which may hold more bytes after it).
#[derive(Debug, Clone)]
pub struct Record<T: AsRef<[u8]>> {
    buffer: T,
    header: RecordHeader,
}

impl<T: AsRef<[u8]>> Record<T> {
    /// Checks the header and that the whole record is present.
    pub fn new_checked(buffer: T) -> Result<Record<T>, Error> {
        let header = RecordHeader::parse(buffer.as_ref())?;
        let actual = buffer.as_ref().len();
        if actual < header.wire_len() {
            return Err(Malformed::RecordTruncated { expected: header.wire_len(), actual }.into());
        }
        Ok(Record { buffer, header })
    }

    /// The parsed header.
    pub fn header(&self) -> RecordHeader {
        self.header
    }

    /// Bytes this record takes on the wire; the next record starts there.
    pub fn wire_len(&self) -> usize {
        self.header.wire_len()
    }

    /// The header bytes: the associated data of the record's AEAD.
    pub fn aad(&self) -> &[u8] {
        &self.buffer.as_ref()[..field::BODY]
    }

    /// The sealed body: ciphertext, or plaintext once opened in place.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[field::BODY..field::BODY + self.header.plaintext_len]
    }

    /// The tag after the body.
    pub fn tag(&self) -> &[u8] {
        let start = field::BODY + self.header.plaintext_len;
        &self.buffer.as_ref()[start..start + RECORD_TAG_LEN]
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Record<T> {
    /// Splits the record into its associated data, its body (to open or seal in place) and its
    /// tag, all borrowed at once.
    pub fn parts_mut(&mut self) -> (&[u8], &mut [u8], &mut [u8]) {
        let len = self.header.plaintext_len;
        let bytes = &mut self.buffer.as_mut()[..self.header.wire_len()];
        let (aad, rest) = bytes.split_at_mut(field::BODY);
        let (body, tag) = rest.split_at_mut(len);
        (aad, body, tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::RECORD_WIRE_MAX;

    /// A record of one 32-byte message with a zero payload, key phase 1, and a tag of 0xee.
    static GOLDEN: [u8; 56] = {
        let mut bytes = [0u8; 56];
        bytes[0] = 48; // sealed length: 32 plaintext + 16 tag
        bytes[4] = 0x01; // key phase
        bytes[8] = 0xaa; // first plaintext byte
        let mut i = 40;
        while i < 56 {
            bytes[i] = 0xee;
            i += 1;
        }
        bytes
    };

    #[test]
    fn deconstruct() {
        let record = Record::new_checked(&GOLDEN[..]).unwrap();
        assert_eq!(record.header(), RecordHeader { plaintext_len: 32, key_phase: true });
        assert_eq!(record.wire_len(), 56);
        assert_eq!(record.aad(), &GOLDEN[..8]);
        assert_eq!(record.body()[0], 0xaa);
        assert_eq!(record.body().len(), 32);
        assert_eq!(record.tag(), &[0xee; 16]);
    }

    #[test]
    fn construct() {
        let mut bytes = [0xa5u8; 56];
        RecordHeader { plaintext_len: 32, key_phase: true }.emit(&mut bytes);
        let mut record = Record::new_checked(&mut bytes[..]).unwrap();
        let (_, body, tag) = record.parts_mut();
        body.fill(0);
        body[0] = 0xaa;
        tag.fill(0xee);
        assert_eq!(bytes, GOLDEN);
    }

    #[test]
    fn trailing_bytes_belong_to_the_next_record() {
        let mut stream = GOLDEN.to_vec();
        stream.extend_from_slice(&[1, 2, 3]);
        assert_eq!(peek_wire_len(&stream), Ok(Some(56)));
        assert_eq!(Record::new_checked(&stream[..]).unwrap().wire_len(), 56);
    }

    #[test]
    fn short_header_waits() {
        assert_eq!(peek_wire_len(&GOLDEN[..7]), Ok(None));
        assert_eq!(
            Record::new_checked(&GOLDEN[..7]).unwrap_err(),
            Malformed::RecordHeaderTruncated(8).into()
        );
    }

    #[test]
    fn truncated_body_refused() {
        assert_eq!(
            Record::new_checked(&GOLDEN[..55]).unwrap_err(),
            Malformed::RecordTruncated { expected: 56, actual: 55 }.into()
        );
    }

    #[test]
    fn impossible_lengths_refused() {
        let with_len = |len: u32| {
            let mut bytes = GOLDEN;
            bytes[..4].copy_from_slice(&len.to_le_bytes());
            peek_wire_len(&bytes)
        };
        // Too short to hold a tag and one message header.
        for len in [0, 15, 16, 47] {
            assert_eq!(with_len(len), Err(Malformed::RecordLength(len).into()), "len {len}");
        }
        // Not a whole number of 8-byte units.
        assert_eq!(with_len(49), Err(Malformed::RecordLength(49).into()));
        // Larger than the maximum.
        let over = (RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN + 8) as u32;
        assert_eq!(with_len(over), Err(Malformed::RecordLength(over).into()));
        assert_eq!(with_len(u32::MAX), Err(Malformed::RecordLength(u32::MAX).into()));
        // The maximum itself is fine.
        let max = (RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN) as u32;
        assert_eq!(with_len(max), Ok(Some(RECORD_WIRE_MAX)));
    }

    #[test]
    fn reserved_bits_refused() {
        for (at, value) in [(4, 0x02), (4, 0x80), (5, 1), (6, 1), (7, 0x80)] {
            let mut bytes = GOLDEN;
            bytes[at] |= value;
            assert!(
                matches!(
                    peek_wire_len(&bytes),
                    Err(Error::Malformed(Malformed::RecordReserved(_)))
                ),
                "byte {at} bit {value:#x}"
            );
        }
    }

    #[test]
    fn messages_are_cut_into_records_between_messages_never_inside_one() {
        use crate::ids::MsgId;
        use crate::wire::{Command, ErrorCode, Flags, Repr};
        // Three messages of half a record's payload each: two records, the cut between the
        // second and third.
        let half = vec![7u8; RECORD_PLAINTEXT_MAX / 2 - MESSAGE_HEADER_LEN];
        let mut messages = Vec::new();
        for msgid in 1..=3 {
            let repr = Repr {
                flags: Flags::CREATE,
                command: Command::new(1, 1),
                msgid: MsgId(msgid),
                parent: MsgId::ROOT,
                error: ErrorCode::NONE,
                payload_len: half.len() as u32,
            };
            let at = messages.len();
            messages.resize(at + repr.wire_len(), 0);
            repr.emit(&half, &mut messages[at..]);
        }
        let cuts: Vec<usize> = record_plaintexts(&messages).map(<[u8]>::len).collect();
        assert_eq!(cuts, [RECORD_PLAINTEXT_MAX, messages.len() - RECORD_PLAINTEXT_MAX]);
        assert_eq!(record_plaintexts(&[]).count(), 0);
        // A header running past the end: the rest is one last plaintext.
        assert_eq!(record_plaintexts(&messages[..40]).map(<[u8]>::len).collect::<Vec<_>>(), [40]);
    }
}
