//! Local links as an application speaks them (PROTOCOL section 10, the attach socket): records
//! framed by hand around messages, as section 4 lays them out, with the key phase 0, a zero tag
//! and no encryption; no handshake before the first.

use ringspan::limits::{RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORD_TAG_LEN};

/// One plain record around `messages` (whole messages, as a `txn::Link` writes them into a
/// `Vec<u8>`): the 8-byte header (sealed length = plaintext + 16, u32 little-endian; flags 0;
/// three reserved zero bytes), the messages as they are, and 16 zero bytes where a tag would be.
pub fn plain_record(messages: &[u8]) -> Vec<u8> {
    assert!(!messages.is_empty() && messages.len() <= RECORD_PLAINTEXT_MAX);
    let sealed_len = (messages.len() + RECORD_TAG_LEN) as u32;
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + messages.len() + RECORD_TAG_LEN);
    record.extend_from_slice(&sealed_len.to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(messages);
    record.extend_from_slice(&[0; RECORD_TAG_LEN]);
    record
}

/// Cuts the plain records out of the bytes a node sends on a local link.
#[derive(Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    /// Bytes read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole record's plaintext (its messages), if one has arrived. Panics if the
    /// record is not a plain record (reserved bytes set, a tag that is not zeros, a length
    /// out of bounds): the node broke section 10.
    pub fn next(&mut self) -> Option<Vec<u8>> {
        if self.buf.len() < RECORD_HEADER_LEN {
            return None;
        }
        let sealed_len = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
        assert!(
            (RECORD_TAG_LEN + 32..=RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN).contains(&sealed_len),
            "a record's length out of bounds: {sealed_len}"
        );
        assert_eq!(self.buf[4] & !1, 0, "only the key phase flag is defined");
        assert_eq!(&self.buf[5..8], &[0; 3], "reserved bytes are zero");
        let wire_len = RECORD_HEADER_LEN + sealed_len;
        if self.buf.len() < wire_len {
            return None;
        }
        let record: Vec<u8> = self.buf.drain(..wire_len).collect();
        let (plaintext, tag) = record[RECORD_HEADER_LEN..].split_at(sealed_len - RECORD_TAG_LEN);
        assert_eq!(tag, &[0; RECORD_TAG_LEN], "a local link's tag is zeros");
        Some(plaintext.to_vec())
    }
}
