//! The span protocol's payloads on the wire: the hello a link's `LINK_CONN` opens with, the
//! advertisement a `LINK_SPAN` carries, and the seqno request. Layouts are in
//! `docs/PROTOCOL.md` ("Spans"); every integer is little-endian and every reserved byte zero.
//!
//! Decoding is strict: an exact length, known values only, reserved bytes zero. Anything else
//! is [`Malformed::LinkPayload`], which closes the link.

use crate::error::{Error, Malformed};
use crate::ids::{ClusterId, MountId, NodeId};
use crate::limits::{IDLE_TIMEOUT_MS, SPAN_LABEL_MAX, SPAN_WANTED_CLUSTERS_MAX};

use super::{Advert, Clusters, KindSet, Label, Metric, MountKey, MountKind, Role, Seqno, Wants};

/// What one side of a link says about itself in its `LINK_CONN`: what it is, which spans it
/// wants to hear, and how soon it closes a silent link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// What the sender is (at most what its key was granted by the receiver).
    pub role: Role,
    /// The spans it wants.
    pub wants: Wants,
    /// The sender's idle timeout: it closes the link when it has received nothing for this many
    /// milliseconds, so the receiver must send something (a keepalive at least) more often.
    pub idle_timeout_ms: u32,
}

impl Hello {
    /// A hello with the default idle timeout ([`IDLE_TIMEOUT_MS`]).
    pub fn new(role: Role, wants: Wants) -> Hello {
        // The default fits: a const assertion in `limits` ties it below u32::MAX.
        Hello { role, wants, idle_timeout_ms: IDLE_TIMEOUT_MS as u32 }
    }
}

/// Bytes of a hello's fixed part.
pub const HELLO_HEADER_LEN: usize = 16;
/// The longest hello: the fixed part and every wanted cluster.
pub const HELLO_LEN_MAX: usize = HELLO_HEADER_LEN + 16 * SPAN_WANTED_CLUSTERS_MAX;
/// Bytes of an advertisement's fixed part (the label follows).
pub const ADVERT_HEADER_LEN: usize = 56;
/// The longest advertisement.
pub const ADVERT_LEN_MAX: usize = ADVERT_HEADER_LEN + SPAN_LABEL_MAX;
/// Bytes of a seqno request.
pub const SEQNO_REQUEST_LEN: usize = 8;

/// Hello flag: every cluster is wanted (the cluster list is then empty).
const ALL_CLUSTERS: u8 = 0x01;

fn malformed(what: &'static str, reason: &'static str) -> Error {
    Malformed::LinkPayload { what, reason }.into()
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Router => 0,
        Role::Satellite => 1,
        Role::Client => 2,
    }
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

fn u128_at(bytes: &[u8], at: usize) -> u128 {
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&bytes[at..at + 16]);
    u128::from_le_bytes(raw)
}

impl Hello {
    /// Writes the hello into `buf`, returning its length.
    pub fn encode(&self, buf: &mut [u8; HELLO_LEN_MAX]) -> usize {
        let (flags, list): (u8, &[ClusterId]) = match self.wants.clusters() {
            Clusters::All => (ALL_CLUSTERS, &[]),
            Clusters::Only(list) => (0, list),
        };
        buf[..HELLO_HEADER_LEN].fill(0);
        buf[0] = role_byte(self.role);
        buf[1] = self.wants.kinds().bits();
        buf[2] = flags;
        // `Wants::new` bounds the list to SPAN_WANTED_CLUSTERS_MAX (64).
        buf[4..6].copy_from_slice(&(list.len() as u16).to_le_bytes());
        buf[8..12].copy_from_slice(&self.idle_timeout_ms.to_le_bytes());
        let mut at = HELLO_HEADER_LEN;
        for cluster in list {
            buf[at..at + 16].copy_from_slice(&cluster.0.to_le_bytes());
            at += 16;
        }
        at
    }

    /// Parses a hello.
    pub fn decode(bytes: &[u8]) -> Result<Hello, Error> {
        const WHAT: &str = "LINK_CONN hello";
        if bytes.len() < HELLO_HEADER_LEN {
            return Err(malformed(WHAT, "shorter than its 16-byte header"));
        }
        let role = match bytes[0] {
            0 => Role::Router,
            1 => Role::Satellite,
            2 => Role::Client,
            _ => return Err(malformed(WHAT, "unknown role")),
        };
        let kinds =
            KindSet::from_bits(bytes[1]).ok_or(malformed(WHAT, "unknown mount kind bit"))?;
        let flags = bytes[2];
        if flags & !ALL_CLUSTERS != 0
            || bytes[3] != 0
            || bytes[6..8] != [0, 0]
            || bytes[12..16] != [0, 0, 0, 0]
        {
            return Err(malformed(WHAT, "reserved bits set"));
        }
        let idle_timeout_ms = u32_at(bytes, 8);
        if idle_timeout_ms == 0 {
            return Err(malformed(WHAT, "an idle timeout of zero"));
        }
        let count = usize::from(u16_at(bytes, 4));
        if count > SPAN_WANTED_CLUSTERS_MAX {
            return Err(malformed(WHAT, "more wanted clusters than the protocol allows"));
        }
        if bytes.len() != HELLO_HEADER_LEN + 16 * count {
            return Err(malformed(WHAT, "length does not match its cluster count"));
        }
        let clusters = if flags & ALL_CLUSTERS != 0 {
            if count != 0 {
                return Err(malformed(WHAT, "lists clusters but also wants all of them"));
            }
            Clusters::All
        } else {
            let list =
                (0..count).map(|i| ClusterId(u128_at(bytes, HELLO_HEADER_LEN + 16 * i))).collect();
            Clusters::Only(list)
        };
        Ok(Hello { role, wants: Wants::new(kinds, clusters)?, idle_timeout_ms })
    }
}

/// Writes an advertisement into `buf`, returning its length.
pub fn encode_advert(advert: &Advert, buf: &mut [u8; ADVERT_LEN_MAX]) -> usize {
    buf[0..16].copy_from_slice(&advert.mount.cluster.0.to_le_bytes());
    buf[16..32].copy_from_slice(&advert.mount.mount.0.to_le_bytes());
    buf[32..48].copy_from_slice(&advert.origin.0.to_le_bytes());
    buf[48..50].copy_from_slice(&advert.seqno.0.to_le_bytes());
    buf[50..52].copy_from_slice(&advert.metric.0.to_le_bytes());
    buf[52] = advert.kind.index();
    let label = advert.label.as_bytes();
    // A `Label` holds at most SPAN_LABEL_MAX (64) bytes.
    buf[53] = label.len() as u8;
    buf[54..56].fill(0);
    buf[ADVERT_HEADER_LEN..ADVERT_HEADER_LEN + label.len()].copy_from_slice(label);
    ADVERT_HEADER_LEN + label.len()
}

/// Parses an advertisement. An infinite metric is refused: a span is retracted by closing it.
pub fn decode_advert(bytes: &[u8]) -> Result<Advert, Error> {
    const WHAT: &str = "LINK_SPAN advertisement";
    if bytes.len() < ADVERT_HEADER_LEN {
        return Err(malformed(WHAT, "shorter than its 56-byte header"));
    }
    let metric = Metric(u16_at(bytes, 50));
    if !metric.is_finite() {
        return Err(malformed(WHAT, "infinite metric (a span is retracted by its DELETE)"));
    }
    let kind = MountKind::from_index(bytes[52]).ok_or(malformed(WHAT, "unknown mount kind"))?;
    let label_len = usize::from(bytes[53]);
    if bytes[54] != 0 || bytes[55] != 0 {
        return Err(malformed(WHAT, "reserved bytes set"));
    }
    if label_len > SPAN_LABEL_MAX {
        return Err(malformed(WHAT, "label longer than the protocol allows"));
    }
    if bytes.len() != ADVERT_HEADER_LEN + label_len {
        return Err(malformed(WHAT, "length does not match its label"));
    }
    Ok(Advert {
        mount: MountKey {
            cluster: ClusterId(u128_at(bytes, 0)),
            mount: MountId(u128_at(bytes, 16)),
        },
        kind,
        label: Label::new(&bytes[ADVERT_HEADER_LEN..])?,
        origin: NodeId(u128_at(bytes, 32)),
        seqno: Seqno(u16_at(bytes, 48)),
        metric,
    })
}

/// A seqno request's payload.
pub fn encode_seqno_request(seqno: Seqno) -> [u8; SEQNO_REQUEST_LEN] {
    let mut buf = [0u8; SEQNO_REQUEST_LEN];
    buf[0..2].copy_from_slice(&seqno.0.to_le_bytes());
    buf
}

/// Parses a seqno request.
pub fn decode_seqno_request(bytes: &[u8]) -> Result<Seqno, Error> {
    const WHAT: &str = "LINK_SPAN_REQUEST";
    if bytes.len() != SEQNO_REQUEST_LEN {
        return Err(malformed(WHAT, "not 8 bytes long"));
    }
    if bytes[2..].iter().any(|&b| b != 0) {
        return Err(malformed(WHAT, "reserved bytes set"));
    }
    Ok(Seqno(u16_at(bytes, 0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert() -> Advert {
        Advert {
            mount: MountKey { cluster: ClusterId(0x0102), mount: MountId(0x0a0b) },
            kind: MountKind::SoftMaster,
            label: Label::new(b"pfs").unwrap(),
            origin: NodeId(0xfeed),
            seqno: Seqno(0x1234),
            metric: Metric(3),
        }
    }

    fn le16(v: u128) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    #[test]
    fn advert_golden_bytes() {
        let mut buf = [0u8; ADVERT_LEN_MAX];
        let n = encode_advert(&advert(), &mut buf);
        let mut want = Vec::new();
        want.extend(le16(0x0102));
        want.extend(le16(0x0a0b));
        want.extend(le16(0xfeed));
        want.extend([0x34, 0x12, 3, 0, 2, 3, 0, 0]);
        want.extend(b"pfs");
        assert_eq!(&buf[..n], &want[..]);
        assert_eq!(decode_advert(&want), Ok(advert()));
    }

    #[test]
    fn advert_refusals() {
        let mut buf = [0u8; ADVERT_LEN_MAX];
        let n = encode_advert(&advert(), &mut buf);
        let good = buf[..n].to_vec();
        let reason = |bytes: &[u8]| match decode_advert(bytes) {
            Err(Error::Malformed(Malformed::LinkPayload { reason, .. })) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(reason(&good[..40]).contains("shorter"));
        assert!(reason(&good[..n - 1]).contains("length"));
        let mut long = good.clone();
        long.push(0);
        assert!(reason(&long).contains("length"));
        let mut bad = good.clone();
        bad[50..52].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(reason(&bad).contains("infinite"));
        let mut bad = good.clone();
        bad[52] = 7;
        assert!(reason(&bad).contains("kind"));
        let mut bad = good.clone();
        bad[55] = 1;
        assert!(reason(&bad).contains("reserved"));
        let mut bad = good.clone();
        bad[53] = 65;
        assert!(reason(&bad).contains("label"));
    }

    #[test]
    fn hello_golden_bytes() {
        let only = Wants::new(
            KindSet::NONE.with(MountKind::Master).with(MountKind::Cache),
            Clusters::Only(vec![ClusterId(7), ClusterId(9)]),
        )
        .unwrap();
        let hello = Hello { role: Role::Client, wants: only, idle_timeout_ms: 5_000 };
        let mut buf = [0u8; HELLO_LEN_MAX];
        let n = hello.encode(&mut buf);
        let mut want = vec![2, 0b01_0001, 0, 0, 2, 0, 0, 0, 0x88, 0x13, 0, 0, 0, 0, 0, 0];
        want.extend(le16(7));
        want.extend(le16(9));
        assert_eq!(&buf[..n], &want[..]);
        assert_eq!(Hello::decode(&want), Ok(hello));

        let all = Hello { role: Role::Router, wants: Wants::all(), idle_timeout_ms: 0x0102_0304 };
        let n = all.encode(&mut buf);
        assert_eq!(&buf[..n], &[0, 0b111_1111, 1, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]);
        assert_eq!(Hello::decode(&buf[..n]), Ok(all));
        assert_eq!(Hello::new(Role::Router, Wants::all()).idle_timeout_ms, 5_000);
    }

    #[test]
    fn hello_refusals() {
        let reason = |bytes: &[u8]| match Hello::decode(bytes) {
            Err(Error::Malformed(Malformed::LinkPayload { reason, .. })) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        };
        // A good header to break one byte at a time: a router wanting all, idle 1 s.
        let good = [0u8, 1, 1, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0, 0, 0, 0, 0];
        assert!(Hello::decode(&good).is_ok());
        let with = |at: usize, value: u8| {
            let mut bytes = good;
            bytes[at] = value;
            bytes
        };
        assert!(reason(&good[..15]).contains("shorter"));
        assert!(reason(&with(0, 3)).contains("role"));
        assert!(reason(&with(1, 0x80)).contains("kind"));
        assert!(reason(&with(2, 2)).contains("reserved"));
        assert!(reason(&with(3, 1)).contains("reserved"));
        assert!(reason(&with(7, 1)).contains("reserved"));
        assert!(reason(&with(15, 1)).contains("reserved"));
        let mut zero = good;
        zero[8..12].fill(0);
        assert!(reason(&zero).contains("idle timeout"));
        let mut listed = with(2, 0);
        listed[4] = 1;
        assert!(reason(&listed).contains("length"));
        listed[4] = 65;
        assert!(reason(&listed).contains("more wanted clusters"));
        let mut both = with(4, 1).to_vec();
        both.extend([0; 16]);
        assert!(reason(&both).contains("also wants all"));
    }

    #[test]
    fn seqno_request_round_trip_and_refusals() {
        let bytes = encode_seqno_request(Seqno(0xbeef));
        assert_eq!(bytes, [0xef, 0xbe, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_seqno_request(&bytes), Ok(Seqno(0xbeef)));
        assert!(decode_seqno_request(&bytes[..7]).is_err());
        assert!(decode_seqno_request(&[1, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = decode_advert(&bytes);
            let _ = Hello::decode(&bytes);
            let _ = decode_seqno_request(&bytes);
        }

        #[test]
        fn adverts_round_trip(
            cluster: u128, mount: u128, origin: u128, seqno: u16, metric in 0u16..u16::MAX,
            kind in 0u8..7, label in proptest::collection::vec(proptest::num::u8::ANY, 0..=64),
        ) {
            let advert = Advert {
                mount: MountKey { cluster: ClusterId(cluster), mount: MountId(mount) },
                kind: MountKind::from_index(kind).unwrap(),
                label: Label::new(&label).unwrap(),
                origin: NodeId(origin),
                seqno: Seqno(seqno),
                metric: Metric(metric),
            };
            let mut buf = [0u8; ADVERT_LEN_MAX];
            let n = encode_advert(&advert, &mut buf);
            proptest::prop_assert_eq!(decode_advert(&buf[..n]), Ok(advert));
        }
    }
}
