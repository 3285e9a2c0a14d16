//! The seqno request: the payload of a `LINK_SPAN_REQUEST` (PROTOCOL.md 8.4).
//!
//! ```text
//!  0       2                       8
//!  +-------+-----------------------+
//!  | seqno | reserved              |
//!  +-------+-----------------------+
//!   u16 LE  6 zero
//! ```
//!
//! Exactly 8 bytes; the mount is the span's. Anything else is [`Malformed::LinkPayload`].

use crate::error::{Error, Malformed};

use super::get_u16;

mod field {
    use core::ops::Range;

    pub const SEQNO: Range<usize> = 0..2;
    pub const RESERVED: Range<usize> = 2..8;
}

/// Bytes of a seqno request.
pub const SEQNO_REQUEST_LEN: usize = 8;

const WHAT: &str = "LINK_SPAN_REQUEST";

/// A seqno request: the seqno wanted, at least.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqnoRequest {
    /// The seqno wanted (at least).
    pub seqno: u16,
}

impl SeqnoRequest {
    /// Parses a seqno request (the whole of `bytes`).
    pub fn parse(bytes: &[u8]) -> Result<SeqnoRequest, Error> {
        let malformed = |reason| Malformed::LinkPayload { what: WHAT, reason };
        if bytes.len() != SEQNO_REQUEST_LEN {
            return Err(malformed("not 8 bytes long").into());
        }
        if bytes[field::RESERVED].iter().any(|&b| b != 0) {
            return Err(malformed("reserved bytes set").into());
        }
        Ok(SeqnoRequest { seqno: get_u16(bytes, field::SEQNO.start) })
    }

    /// The request's bytes.
    pub fn emit(&self) -> [u8; SEQNO_REQUEST_LEN] {
        let mut bytes = [0u8; SEQNO_REQUEST_LEN];
        bytes[field::SEQNO].copy_from_slice(&self.seqno.to_le_bytes());
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md 8.4's example: seqno 0x1235.
    static GOLDEN: [u8; 8] = [0x35, 0x12, 0, 0, 0, 0, 0, 0];

    #[test]
    fn deconstruct() {
        assert_eq!(SeqnoRequest::parse(&GOLDEN), Ok(SeqnoRequest { seqno: 0x1235 }));
    }

    #[test]
    fn construct() {
        assert_eq!(SeqnoRequest { seqno: 0x1235 }.emit(), GOLDEN);
        assert_eq!(SeqnoRequest { seqno: 0xbeef }.emit(), [0xef, 0xbe, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn refusals() {
        let reason = |bytes: &[u8]| match SeqnoRequest::parse(bytes) {
            Err(Error::Malformed(Malformed::LinkPayload { what: WHAT, reason })) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(reason(&GOLDEN[..7]).contains("8 bytes"));
        assert!(reason(&[GOLDEN.as_slice(), &[0]].concat()).contains("8 bytes"));
        assert!(reason(&[]).contains("8 bytes"));
        for at in 2..8 {
            let mut bad = GOLDEN;
            bad[at] = 0x80;
            assert!(reason(&bad).contains("reserved"), "byte {at}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..20)) {
            if let Ok(request) = SeqnoRequest::parse(&bytes) {
                proptest::prop_assert_eq!(&request.emit()[..], &bytes[..]);
            }
        }
    }
}
