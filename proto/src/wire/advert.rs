//! The advertisement: the payload of a `LINK_SPAN` (PROTOCOL.md 8.3).
//!
//! ```text
//!  0          16         32         48     50     52   53   54     56
//!  +----------+----------+----------+------+------+----+----+------+-----------------+
//!  | cluster  | mount    | origin   |seqno |metric|kind|len | rsvd | label (len)     |
//!  +----------+----------+----------+------+------+----+----+------+-----------------+
//!   u128 LE    u128 LE    u128 LE    u16 LE u16 LE u8   u8   zero   bytes
//! ```
//!
//! The view checks every byte the layout defines: a finite metric (a span is retracted by its
//! DELETE, never by an infinite metric), a known kind (below [`MOUNT_KINDS`]), reserved bytes
//! zero, a label of at most [`SPAN_LABEL_MAX`] bytes, an exact length. `span::Advert` converts
//! to and from these fields. Anything refused is [`Malformed::LinkPayload`].

use crate::error::{Error, Malformed};
use crate::ids::{ClusterId, MountId, NodeId};
use crate::limits::SPAN_LABEL_MAX;

use super::{get_u16, get_u128};

mod field {
    use core::ops::Range;

    pub const CLUSTER: Range<usize> = 0..16;
    pub const MOUNT: Range<usize> = 16..32;
    pub const ORIGIN: Range<usize> = 32..48;
    pub const SEQNO: Range<usize> = 48..50;
    pub const METRIC: Range<usize> = 50..52;
    pub const KIND: usize = 52;
    pub const LABEL_LEN: usize = 53;
    pub const RESERVED: Range<usize> = 54..56;
    pub const LABEL: usize = 56;
}

/// Bytes of an advertisement's fixed part (the label follows).
pub const ADVERT_HEADER_LEN: usize = field::LABEL;
/// The longest advertisement.
pub const ADVERT_LEN_MAX: usize = ADVERT_HEADER_LEN + SPAN_LABEL_MAX;
/// How many mount kinds there are: a kind byte is below this.
pub const MOUNT_KINDS: u8 = 7;
/// The metric no advertisement carries.
pub const METRIC_INFINITE: u16 = u16::MAX;

const WHAT: &str = "LINK_SPAN advertisement";

fn malformed(reason: &'static str) -> Error {
    Malformed::LinkPayload { what: WHAT, reason }.into()
}

/// A checked view of an advertisement. After [`AdvertPayload::new_checked`] no accessor can
/// fail.
#[derive(Debug, Clone)]
pub struct AdvertPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> AdvertPayload<T> {
    /// Checks every byte of an advertisement (the whole of `buffer`).
    pub fn new_checked(buffer: T) -> Result<AdvertPayload<T>, Error> {
        let bytes = buffer.as_ref();
        if bytes.len() < ADVERT_HEADER_LEN {
            return Err(malformed("shorter than its 56-byte header"));
        }
        if get_u16(bytes, field::METRIC.start) == METRIC_INFINITE {
            return Err(malformed("infinite metric (a span is retracted by its DELETE)"));
        }
        if bytes[field::KIND] >= MOUNT_KINDS {
            return Err(malformed("unknown mount kind"));
        }
        if bytes[field::RESERVED].iter().any(|&b| b != 0) {
            return Err(malformed("reserved bytes set"));
        }
        let label_len = usize::from(bytes[field::LABEL_LEN]);
        if label_len > SPAN_LABEL_MAX {
            return Err(malformed("label longer than the protocol allows"));
        }
        if bytes.len() != ADVERT_HEADER_LEN + label_len {
            return Err(malformed("length does not match its label"));
        }
        Ok(AdvertPayload { buffer })
    }

    /// The mount's cluster.
    pub fn cluster(&self) -> ClusterId {
        ClusterId(get_u128(self.buffer.as_ref(), field::CLUSTER.start))
    }

    /// The mount's id within its cluster.
    pub fn mount(&self) -> MountId {
        MountId(get_u128(self.buffer.as_ref(), field::MOUNT.start))
    }

    /// The node the mount is attached to.
    pub fn origin(&self) -> NodeId {
        NodeId(get_u128(self.buffer.as_ref(), field::ORIGIN.start))
    }

    /// The originator's sequence number.
    pub fn seqno(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SEQNO.start)
    }

    /// The sender's metric to the mount, never [`METRIC_INFINITE`].
    pub fn metric(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::METRIC.start)
    }

    /// The kind byte, below [`MOUNT_KINDS`].
    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::KIND]
    }

    /// The label, at most [`SPAN_LABEL_MAX`] bytes.
    pub fn label(&self) -> &[u8] {
        &self.buffer.as_ref()[field::LABEL..]
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The fields of an advertisement to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdvertRepr<'a> {
    /// The mount's cluster.
    pub cluster: ClusterId,
    /// The mount's id within its cluster.
    pub mount: MountId,
    /// The node the mount is attached to.
    pub origin: NodeId,
    /// The originator's sequence number.
    pub seqno: u16,
    /// The sender's metric, not [`METRIC_INFINITE`].
    pub metric: u16,
    /// The kind byte, below [`MOUNT_KINDS`].
    pub kind: u8,
    /// The label, at most [`SPAN_LABEL_MAX`] bytes.
    pub label: &'a [u8],
}

impl AdvertRepr<'_> {
    /// Writes the advertisement into `buf`, returning its length.
    ///
    /// # Panics
    /// If the label is longer than [`SPAN_LABEL_MAX`]: a local bug, never peer input
    /// (`span::Label` holds no more).
    pub fn emit(&self, buf: &mut [u8; ADVERT_LEN_MAX]) -> usize {
        assert!(self.label.len() <= SPAN_LABEL_MAX, "advertisement label too long");
        debug_assert!(self.metric != METRIC_INFINITE && self.kind < MOUNT_KINDS);
        buf[field::CLUSTER].copy_from_slice(&self.cluster.0.to_le_bytes());
        buf[field::MOUNT].copy_from_slice(&self.mount.0.to_le_bytes());
        buf[field::ORIGIN].copy_from_slice(&self.origin.0.to_le_bytes());
        buf[field::SEQNO].copy_from_slice(&self.seqno.to_le_bytes());
        buf[field::METRIC].copy_from_slice(&self.metric.to_le_bytes());
        buf[field::KIND] = self.kind;
        // At most SPAN_LABEL_MAX (64), asserted above.
        buf[field::LABEL_LEN] = self.label.len() as u8;
        buf[field::RESERVED].fill(0);
        let end = field::LABEL + self.label.len();
        buf[field::LABEL..end].copy_from_slice(self.label);
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md 8.3's example: cluster 0x0102, mount 0x0a0b, origin 0xfeed, seqno 0x1234,
    /// metric 3, kind 2 (soft-master), label `pfs`.
    static GOLDEN: [u8; 59] = {
        let mut bytes = [0u8; 59];
        bytes[0] = 0x02;
        bytes[1] = 0x01;
        bytes[16] = 0x0b;
        bytes[17] = 0x0a;
        bytes[32] = 0xed;
        bytes[33] = 0xfe;
        bytes[48] = 0x34;
        bytes[49] = 0x12;
        bytes[50] = 3;
        bytes[52] = 2;
        bytes[53] = 3;
        bytes[56] = b'p';
        bytes[57] = b'f';
        bytes[58] = b's';
        bytes
    };

    fn repr() -> AdvertRepr<'static> {
        AdvertRepr {
            cluster: ClusterId(0x0102),
            mount: MountId(0x0a0b),
            origin: NodeId(0xfeed),
            seqno: 0x1234,
            metric: 3,
            kind: 2,
            label: b"pfs",
        }
    }

    fn reason(bytes: &[u8]) -> &'static str {
        match AdvertPayload::new_checked(bytes) {
            Err(Error::Malformed(Malformed::LinkPayload { what, reason })) => {
                assert_eq!(what, WHAT);
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn deconstruct() {
        let advert = AdvertPayload::new_checked(&GOLDEN[..]).unwrap();
        assert_eq!(advert.cluster(), ClusterId(0x0102));
        assert_eq!(advert.mount(), MountId(0x0a0b));
        assert_eq!(advert.origin(), NodeId(0xfeed));
        assert_eq!(advert.seqno(), 0x1234);
        assert_eq!(advert.metric(), 3);
        assert_eq!(advert.kind(), 2);
        assert_eq!(advert.label(), b"pfs");
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; ADVERT_LEN_MAX];
        assert_eq!(repr().emit(&mut buf), 59);
        assert_eq!(buf[..59], GOLDEN);
        let longest = [b'x'; SPAN_LABEL_MAX];
        let n = AdvertRepr { label: &longest, ..repr() }.emit(&mut buf);
        assert_eq!(n, ADVERT_LEN_MAX);
        assert_eq!(AdvertPayload::new_checked(&buf[..]).unwrap().label(), longest);
    }

    #[test]
    fn refusals() {
        let good = GOLDEN;
        let n = good.len();
        assert!(reason(&good[..40]).contains("shorter"));
        assert!(reason(&good[..n - 1]).contains("length"));
        let mut long = good.to_vec();
        long.push(0);
        assert!(reason(&long).contains("length"));
        let mut bad = good;
        bad[50..52].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(reason(&bad).contains("infinite"));
        let mut bad = good;
        bad[52] = 7;
        assert!(reason(&bad).contains("kind"));
        for at in [54, 55] {
            let mut bad = good;
            bad[at] = 1;
            assert!(reason(&bad).contains("reserved"));
        }
        let mut bad = good.to_vec();
        bad[53] = 65;
        bad.resize(ADVERT_HEADER_LEN + 65, 0);
        assert!(reason(&bad).contains("label"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(advert) = AdvertPayload::new_checked(&bytes[..]) {
                let repr = AdvertRepr {
                    cluster: advert.cluster(),
                    mount: advert.mount(),
                    origin: advert.origin(),
                    seqno: advert.seqno(),
                    metric: advert.metric(),
                    kind: advert.kind(),
                    label: advert.label(),
                };
                let mut buf = [0u8; ADVERT_LEN_MAX];
                let n = repr.emit(&mut buf);
                proptest::prop_assert_eq!(&buf[..n], &bytes[..]);
            }
        }
    }
}
