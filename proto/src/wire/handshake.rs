//! Handshake frames: how the three Noise messages travel before any record (PROTOCOL.md 2.2).
//!
//! ```text
//!  0       2         3      4                      4+len
//!  +-------+---------+------+----------------------+
//!  | len   | version | step | Noise message (len)  |
//!  +-------+---------+------+----------------------+
//!   u16 LE   u8        u8
//! ```
//!
//! `len` does not count the header. Protocol version 1 carries no handshake payloads, so each
//! step's message has one exact length ([`MESSAGE_LEN`]) and each frame one exact size. A
//! receiver checks a header as soon as its 4 bytes have arrived ([`HandshakeHeader::parse`]),
//! before buffering the body; what the message says is Noise's (`cipher::Session`).

use crate::error::{Error, Handshake};
use crate::limits::{HANDSHAKE_FRAME_HEADER_LEN, HANDSHAKE_MESSAGE_MAX, PROTOCOL_VERSION};

use super::get_u16;

mod field {
    use core::ops::Range;

    pub const LENGTH: Range<usize> = 0..2;
    pub const VERSION: usize = 2;
    pub const STEP: usize = 3;
}

/// The exact length of each Noise message of the XX pattern with empty payloads, indexed by
/// step - 1: `-> e` (32), `<- e, ee, s, es` (32 + 48 + 16), `-> s, se` (48 + 16).
pub const MESSAGE_LEN: [usize; 3] = [32, 96, 64];

const _: () = assert!(MESSAGE_LEN[0] <= HANDSHAKE_MESSAGE_MAX);
const _: () = assert!(MESSAGE_LEN[1] <= HANDSHAKE_MESSAGE_MAX);
const _: () = assert!(MESSAGE_LEN[2] <= HANDSHAKE_MESSAGE_MAX);

/// The exact length of step `step`'s Noise message, or `None` for a step that does not exist.
pub const fn message_len(step: u8) -> Option<usize> {
    match step {
        1..=3 => Some(MESSAGE_LEN[step as usize - 1]),
        _ => None,
    }
}

/// The valid contents of a handshake frame header; the version is always [`PROTOCOL_VERSION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandshakeHeader {
    /// Length of the Noise message after the header.
    pub len: u16,
    /// Which message of the pattern: 1, 2 or 3.
    pub step: u8,
}

impl HandshakeHeader {
    /// Parses a frame header, refusing, in this order: another version, another step than
    /// `expected` (the one this end waits for), a length other than that step's.
    pub fn parse(
        bytes: &[u8; HANDSHAKE_FRAME_HEADER_LEN],
        expected: u8,
    ) -> Result<HandshakeHeader, Error> {
        let version = bytes[field::VERSION];
        if version != PROTOCOL_VERSION {
            return Err(Handshake::Version(version).into());
        }
        let got = bytes[field::STEP];
        let exact = match message_len(expected) {
            Some(exact) if got == expected => exact,
            _ => return Err(Handshake::UnexpectedStep { expected, got }.into()),
        };
        let len = get_u16(bytes, field::LENGTH.start);
        if usize::from(len) < exact {
            return Err(Handshake::Truncated { step: expected, len }.into());
        }
        if usize::from(len) > exact {
            return Err(Handshake::TooLong { step: expected, len }.into());
        }
        Ok(HandshakeHeader { len, step: got })
    }

    /// Bytes the whole frame takes: the header and the message.
    pub fn frame_len(&self) -> usize {
        HANDSHAKE_FRAME_HEADER_LEN + usize::from(self.len)
    }

    /// Writes the header into the first [`HANDSHAKE_FRAME_HEADER_LEN`] bytes of `bytes`.
    ///
    /// # Panics
    /// If `bytes` is shorter than a header: a local bug, never peer input.
    pub fn emit(&self, bytes: &mut [u8]) {
        bytes[field::LENGTH].copy_from_slice(&self.len.to_le_bytes());
        bytes[field::VERSION] = PROTOCOL_VERSION;
        bytes[field::STEP] = self.step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers of the three frames of PROTOCOL.md 2.2: 32, 96 and 64 message bytes.
    static GOLDEN: [[u8; 4]; 3] = [[32, 0, 1, 1], [96, 0, 1, 2], [64, 0, 1, 3]];

    #[test]
    fn deconstruct() {
        for (i, bytes) in GOLDEN.iter().enumerate() {
            let step = i as u8 + 1;
            let header = HandshakeHeader::parse(bytes, step).unwrap();
            assert_eq!(header, HandshakeHeader { len: MESSAGE_LEN[i] as u16, step });
        }
        let frames: usize = GOLDEN
            .iter()
            .enumerate()
            .map(|(i, bytes)| HandshakeHeader::parse(bytes, i as u8 + 1).unwrap().frame_len())
            .sum();
        assert_eq!(frames, 204, "a whole handshake on the wire");
    }

    #[test]
    fn construct() {
        for (i, golden) in GOLDEN.iter().enumerate() {
            let mut bytes = [0xa5u8; 4];
            HandshakeHeader { len: MESSAGE_LEN[i] as u16, step: i as u8 + 1 }.emit(&mut bytes);
            assert_eq!(&bytes, golden);
        }
    }

    #[test]
    fn refusals_in_order() {
        let parse = |bytes: [u8; 4], expected| HandshakeHeader::parse(&bytes, expected);
        let refused = |error: Handshake| Err(Error::Handshake(error));
        // Version first, even with a wrong step and length.
        assert_eq!(parse([0, 0, 2, 9], 1), refused(Handshake::Version(2)));
        assert_eq!(parse([32, 0, 0, 1], 1), refused(Handshake::Version(0)));
        // Then the step.
        assert_eq!(
            parse([0, 0, 1, 3], 1),
            refused(Handshake::UnexpectedStep { expected: 1, got: 3 })
        );
        assert_eq!(
            parse([96, 0, 1, 2], 3),
            refused(Handshake::UnexpectedStep { expected: 3, got: 2 })
        );
        // Then the length, exact for the step.
        assert_eq!(parse([31, 0, 1, 1], 1), refused(Handshake::Truncated { step: 1, len: 31 }));
        assert_eq!(parse([33, 0, 1, 1], 1), refused(Handshake::TooLong { step: 1, len: 33 }));
        assert_eq!(
            parse([0xff, 0xff, 1, 2], 2),
            refused(Handshake::TooLong { step: 2, len: 0xffff })
        );
        assert_eq!(parse([64, 0, 1, 3], 3), Ok(HandshakeHeader { len: 64, step: 3 }));
    }

    #[test]
    fn a_step_that_does_not_exist_is_never_expected() {
        for step in [0, 4, 0xff] {
            assert_eq!(message_len(step), None);
            assert_eq!(
                HandshakeHeader::parse(&[32, 0, 1, step], step),
                Err(Handshake::UnexpectedStep { expected: step, got: step }.into())
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes: [u8; 4], expected: u8) {
            if let Ok(header) = HandshakeHeader::parse(&bytes, expected) {
                let mut again = [0u8; 4];
                header.emit(&mut again);
                proptest::prop_assert_eq!(again, bytes);
                proptest::prop_assert!(header.frame_len() <= crate::limits::HANDSHAKE_FRAME_MAX);
            }
        }
    }
}
