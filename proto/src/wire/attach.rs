//! The payload of a `LINK_ATTACH` (PROTOCOL.md 8.11): the mount an application attaches
//! through its local link.
//!
//! ```text
//!  0                16               32     33      34          40
//!  +----------------+----------------+------+-------+-----------+---------------+
//!  | cluster        | mount          | kind | label | reserved  | label bytes   |
//!  |                |                |      | len   |           |               |
//!  +----------------+----------------+------+-------+-----------+---------------+
//!    u128 LE          u128 LE          u8     u8      6 zero      label len
//! ```
//!
//! The kind is a mount kind's index (master 0 … cache 4; client 5 and aggregate 6 are not
//! attached this way), the label at most [`SPAN_LABEL_MAX`] bytes, the reserved bytes zero,
//! and the length exact. Anything else is [`Malformed::LinkPayload`].

use crate::error::{Error, Malformed};
use crate::ids::{ClusterId, MountId};
use crate::limits::SPAN_LABEL_MAX;

use super::get_u128;

mod field {
    use core::ops::Range;

    pub const CLUSTER: Range<usize> = 0..16;
    pub const MOUNT: Range<usize> = 16..32;
    pub const KIND: usize = 32;
    pub const LABEL_LEN: usize = 33;
    pub const RESERVED: Range<usize> = 34..40;
    pub const LABEL: usize = 40;
}

/// Bytes of an attach request without its label.
pub const ATTACH_HEADER_LEN: usize = field::LABEL;
/// The longest attach request.
pub const ATTACH_LEN_MAX: usize = ATTACH_HEADER_LEN + SPAN_LABEL_MAX;
/// Kind indices an application may attach (master, slave, soft-master, soft-slave, cache).
pub const ATTACH_KINDS: u8 = 5;

/// An attach request: the payload of a `LINK_ATTACH` CREATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttachRequest<'a> {
    /// The mount's cluster.
    pub cluster: ClusterId,
    /// The mount's id in its cluster.
    pub mount: MountId,
    /// Its kind's index, below [`ATTACH_KINDS`].
    pub kind: u8,
    /// Its label, at most [`SPAN_LABEL_MAX`] bytes.
    pub label: &'a [u8],
}

impl<'a> AttachRequest<'a> {
    /// Parses an attach request (the whole of `bytes`).
    pub fn parse(bytes: &'a [u8]) -> Result<AttachRequest<'a>, Error> {
        let malformed = |reason| Malformed::LinkPayload { what: "LINK_ATTACH request", reason };
        if bytes.len() < ATTACH_HEADER_LEN {
            return Err(malformed("shorter than its 40-byte header").into());
        }
        let kind = bytes[field::KIND];
        if kind >= ATTACH_KINDS {
            return Err(malformed("not a kind an application attaches").into());
        }
        let label_len = usize::from(bytes[field::LABEL_LEN]);
        if label_len > SPAN_LABEL_MAX {
            return Err(malformed("a label longer than the protocol allows").into());
        }
        if bytes[field::RESERVED].iter().any(|&b| b != 0) {
            return Err(malformed("reserved bits set").into());
        }
        if bytes.len() != ATTACH_HEADER_LEN + label_len {
            return Err(malformed("length does not match its label length").into());
        }
        Ok(AttachRequest {
            cluster: ClusterId(get_u128(bytes, field::CLUSTER.start)),
            mount: MountId(get_u128(bytes, field::MOUNT.start)),
            kind,
            label: &bytes[field::LABEL..],
        })
    }

    /// Writes the request into `buf`, returning its length.
    ///
    /// # Panics
    /// If the label is longer than [`SPAN_LABEL_MAX`] or the kind not below
    /// [`ATTACH_KINDS`]: a local bug, never peer input.
    pub fn emit(&self, buf: &mut [u8; ATTACH_LEN_MAX]) -> usize {
        assert!(self.label.len() <= SPAN_LABEL_MAX && self.kind < ATTACH_KINDS);
        buf[..ATTACH_HEADER_LEN].fill(0);
        buf[field::CLUSTER].copy_from_slice(&self.cluster.0.to_le_bytes());
        buf[field::MOUNT].copy_from_slice(&self.mount.0.to_le_bytes());
        buf[field::KIND] = self.kind;
        // At most SPAN_LABEL_MAX (64), asserted above.
        buf[field::LABEL_LEN] = self.label.len() as u8;
        let end = ATTACH_HEADER_LEN + self.label.len();
        buf[field::LABEL..end].copy_from_slice(self.label);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(bytes: &[u8]) -> &'static str {
        match AttachRequest::parse(bytes) {
            Err(Error::Malformed(Malformed::LinkPayload { reason, .. })) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn an_attach_request_round_trips_and_every_byte_is_checked() {
        let request =
            AttachRequest { cluster: ClusterId(1), mount: MountId(0x10), kind: 0, label: b"kv" };
        let mut buf = [0u8; ATTACH_LEN_MAX];
        let n = request.emit(&mut buf);
        assert_eq!(n, 42);
        assert_eq!((buf[0], buf[16], buf[32], buf[33], &buf[40..42]), (1, 0x10, 0, 2, &b"kv"[..]));
        assert_eq!(AttachRequest::parse(&buf[..n]), Ok(request));
        let with = |at: usize, value: u8| {
            let mut bytes = buf[..n].to_vec();
            bytes[at] = value;
            bytes
        };
        assert!(reason(&buf[..39]).contains("shorter"));
        assert!(reason(&with(32, 5)).contains("kind"), "a client mount is not attached");
        assert!(reason(&with(33, 65)).contains("label longer"));
        assert!(reason(&with(33, 3)).contains("length"));
        assert!(reason(&with(37, 1)).contains("reserved"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..120)) {
            if let Ok(request) = AttachRequest::parse(&bytes) {
                let mut buf = [0u8; ATTACH_LEN_MAX];
                let n = request.emit(&mut buf);
                proptest::prop_assert_eq!(&buf[..n], &bytes[..]);
            }
        }
    }
}
