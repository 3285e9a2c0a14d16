//! The hello: the payload of the `LINK_CONN` each side of a link opens with (PROTOCOL.md 8.2).
//!
//! ```text
//!  0    1     2     3     4       6       8          12      16
//!  +----+-----+-----+-----+-------+-------+----------+-------+------------------------+------+
//!  |role|kinds|flags|nlen | count | rsvd  | idle ms  | rsvd  | clusters (16 × count)  | name |
//!  +----+-----+-----+-----+-------+-------+----------+-------+------------------------+------+
//!   u8   u8    u8    u8    u16 LE  zero    u32 LE     zero    u128 LE each             nlen
//! ```
//!
//! The view checks every byte the layout defines: known role and kind bits, flag bit 0
//! ([`FLAG_ALL_CLUSTERS`]) alone, reserved bytes zero, a non-zero idle timeout, at most
//! [`SPAN_WANTED_CLUSTERS_MAX`] clusters, a name of at most [`NODE_NAME_MAX`] bytes of
//! printable UTF-8 (no control character), an exact length, and no list beside
//! `ALL_CLUSTERS`. What the values mean (roles, kinds, wants) is `span`'s: `span::Hello`
//! converts to and from these raw fields. Anything refused is [`Malformed::LinkPayload`].

use crate::error::{Error, Malformed};
use crate::ids::ClusterId;
use crate::limits::{NODE_NAME_MAX, SPAN_WANTED_CLUSTERS_MAX};

use super::{get_u16, get_u32, get_u128};

mod field {
    use core::ops::Range;

    pub const ROLE: usize = 0;
    pub const KINDS: usize = 1;
    pub const FLAGS: usize = 2;
    pub const NAME_LEN: usize = 3;
    pub const COUNT: Range<usize> = 4..6;
    pub const RESERVED_6: Range<usize> = 6..8;
    pub const IDLE_TIMEOUT: Range<usize> = 8..12;
    pub const RESERVED_12: Range<usize> = 12..16;
    pub const CLUSTERS: usize = 16;
}

/// Bytes of a hello's fixed part.
pub const HELLO_HEADER_LEN: usize = field::CLUSTERS;
/// Bytes of one listed cluster.
pub const HELLO_CLUSTER_LEN: usize = 16;
/// The longest hello: the fixed part, every wanted cluster and the longest name.
pub const HELLO_LEN_MAX: usize =
    HELLO_HEADER_LEN + HELLO_CLUSTER_LEN * SPAN_WANTED_CLUSTERS_MAX + NODE_NAME_MAX;

/// Role byte: a router.
pub const ROLE_ROUTER: u8 = 0;
/// Role byte: a satellite.
pub const ROLE_SATELLITE: u8 = 1;
/// Role byte: a client.
pub const ROLE_CLIENT: u8 = 2;
/// Every defined bit of the kinds byte: bit *i* is mount kind *i*, of seven.
pub const KINDS_ALL: u8 = 0b111_1111;
/// Hello flag: every cluster is wanted (the cluster list is then empty).
pub const FLAG_ALL_CLUSTERS: u8 = 0x01;

const WHAT: &str = "LINK_CONN hello";

fn malformed(reason: &'static str) -> Error {
    Malformed::LinkPayload { what: WHAT, reason }.into()
}

/// A checked view of a hello. After [`HelloPayload::new_checked`] no accessor can fail.
#[derive(Debug, Clone)]
pub struct HelloPayload<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HelloPayload<T> {
    /// Checks every byte of a hello (the whole of `buffer`).
    pub fn new_checked(buffer: T) -> Result<HelloPayload<T>, Error> {
        let bytes = buffer.as_ref();
        if bytes.len() < HELLO_HEADER_LEN {
            return Err(malformed("shorter than its 16-byte header"));
        }
        if bytes[field::ROLE] > ROLE_CLIENT {
            return Err(malformed("unknown role"));
        }
        if bytes[field::KINDS] & !KINDS_ALL != 0 {
            return Err(malformed("unknown mount kind bit"));
        }
        if bytes[field::FLAGS] & !FLAG_ALL_CLUSTERS != 0
            || bytes[field::RESERVED_6].iter().any(|&b| b != 0)
            || bytes[field::RESERVED_12].iter().any(|&b| b != 0)
        {
            return Err(malformed("reserved bits set"));
        }
        if get_u32(bytes, field::IDLE_TIMEOUT.start) == 0 {
            return Err(malformed("an idle timeout of zero"));
        }
        let count = usize::from(get_u16(bytes, field::COUNT.start));
        if count > SPAN_WANTED_CLUSTERS_MAX {
            return Err(malformed("more wanted clusters than the protocol allows"));
        }
        let name_len = usize::from(bytes[field::NAME_LEN]);
        if name_len > NODE_NAME_MAX {
            return Err(malformed("a name longer than the protocol allows"));
        }
        if bytes.len() != HELLO_HEADER_LEN + HELLO_CLUSTER_LEN * count + name_len {
            return Err(malformed("length does not match its cluster count and name length"));
        }
        let name = &bytes[bytes.len() - name_len..];
        if !std::str::from_utf8(name).is_ok_and(|name| !name.chars().any(char::is_control)) {
            return Err(malformed("a name that is not printable UTF-8"));
        }
        if bytes[field::FLAGS] & FLAG_ALL_CLUSTERS != 0 && count != 0 {
            return Err(malformed("lists clusters but also wants all of them"));
        }
        Ok(HelloPayload { buffer })
    }

    /// The role byte: [`ROLE_ROUTER`], [`ROLE_SATELLITE`] or [`ROLE_CLIENT`].
    pub fn role(&self) -> u8 {
        self.buffer.as_ref()[field::ROLE]
    }

    /// The kinds byte: bit *i* wants mount kind *i*; no bit outside [`KINDS_ALL`].
    pub fn kinds(&self) -> u8 {
        self.buffer.as_ref()[field::KINDS]
    }

    /// Whether every cluster is wanted (then [`HelloPayload::clusters`] is empty).
    pub fn all_clusters(&self) -> bool {
        self.buffer.as_ref()[field::FLAGS] & FLAG_ALL_CLUSTERS != 0
    }

    /// The sender's idle timeout in milliseconds, never zero.
    pub fn idle_timeout_ms(&self) -> u32 {
        get_u32(self.buffer.as_ref(), field::IDLE_TIMEOUT.start)
    }

    /// The listed clusters, at most [`SPAN_WANTED_CLUSTERS_MAX`].
    pub fn clusters(&self) -> impl ExactSizeIterator<Item = ClusterId> + '_ {
        let bytes = self.buffer.as_ref();
        bytes[field::CLUSTERS..bytes.len() - usize::from(bytes[field::NAME_LEN])]
            .chunks_exact(HELLO_CLUSTER_LEN)
            .map(|raw| ClusterId(get_u128(raw, 0)))
    }

    /// The name the sender announces: at most [`NODE_NAME_MAX`] bytes of printable UTF-8,
    /// empty if it gives none.
    pub fn name(&self) -> &str {
        let bytes = self.buffer.as_ref();
        let name = &bytes[bytes.len() - usize::from(bytes[field::NAME_LEN])..];
        // Checked by `new_checked`.
        std::str::from_utf8(name).unwrap_or_default()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// The fields of a hello to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HelloRepr<'a> {
    /// The role byte ([`ROLE_ROUTER`], [`ROLE_SATELLITE`], [`ROLE_CLIENT`]).
    pub role: u8,
    /// The kinds byte, within [`KINDS_ALL`].
    pub kinds: u8,
    /// Every cluster wanted; `clusters` is then empty.
    pub all_clusters: bool,
    /// The clusters listed, at most [`SPAN_WANTED_CLUSTERS_MAX`].
    pub clusters: &'a [ClusterId],
    /// The sender's idle timeout in milliseconds, not zero.
    pub idle_timeout_ms: u32,
    /// The name it announces, at most [`NODE_NAME_MAX`] bytes of printable UTF-8 (empty:
    /// none).
    pub name: &'a str,
}

impl HelloRepr<'_> {
    /// Writes the hello into `buf`, returning its length.
    ///
    /// # Panics
    /// If more clusters are listed than [`SPAN_WANTED_CLUSTERS_MAX`], or the name is longer
    /// than [`NODE_NAME_MAX`]: a local bug, never peer input (`span::Wants` and `span::Hello`
    /// hold no more).
    pub fn emit(&self, buf: &mut [u8; HELLO_LEN_MAX]) -> usize {
        assert!(self.clusters.len() <= SPAN_WANTED_CLUSTERS_MAX, "too many wanted clusters");
        assert!(self.name.len() <= NODE_NAME_MAX, "a name too long");
        debug_assert!(self.role <= ROLE_CLIENT && self.kinds & !KINDS_ALL == 0);
        debug_assert!(!self.all_clusters || self.clusters.is_empty());
        debug_assert!(self.idle_timeout_ms != 0);
        buf[..HELLO_HEADER_LEN].fill(0);
        buf[field::ROLE] = self.role;
        buf[field::KINDS] = self.kinds;
        buf[field::FLAGS] = if self.all_clusters { FLAG_ALL_CLUSTERS } else { 0 };
        // At most SPAN_WANTED_CLUSTERS_MAX (64), asserted above.
        buf[field::COUNT].copy_from_slice(&(self.clusters.len() as u16).to_le_bytes());
        buf[field::IDLE_TIMEOUT].copy_from_slice(&self.idle_timeout_ms.to_le_bytes());
        // At most NODE_NAME_MAX (32), asserted above.
        buf[field::NAME_LEN] = self.name.len() as u8;
        let mut at = field::CLUSTERS;
        for cluster in self.clusters {
            buf[at..at + HELLO_CLUSTER_LEN].copy_from_slice(&cluster.0.to_le_bytes());
            at += HELLO_CLUSTER_LEN;
        }
        buf[at..at + self.name.len()].copy_from_slice(self.name.as_bytes());
        at + self.name.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md 8.2's client: kinds master and cache, clusters 7 and 9, idle 5 s.
    static CLIENT: [u8; 48] = {
        let mut bytes = [0u8; 48];
        bytes[0] = 2; // client
        bytes[1] = 0b01_0001; // master, cache
        bytes[4] = 2; // two clusters
        bytes[8] = 0x88; // 5,000 ms
        bytes[9] = 0x13;
        bytes[16] = 7;
        bytes[32] = 9;
        bytes
    };

    /// PROTOCOL.md 8.2's router: every kind, every cluster, idle 0x01020304 ms.
    static ROUTER: [u8; 16] = [0, 0x7f, 1, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0];

    fn reason(bytes: &[u8]) -> &'static str {
        match HelloPayload::new_checked(bytes) {
            Err(Error::Malformed(Malformed::LinkPayload { what, reason })) => {
                assert_eq!(what, WHAT);
                reason
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn deconstruct() {
        let hello = HelloPayload::new_checked(&CLIENT[..]).unwrap();
        assert_eq!(hello.role(), ROLE_CLIENT);
        assert_eq!(hello.kinds(), 0b01_0001);
        assert!(!hello.all_clusters());
        assert_eq!(hello.idle_timeout_ms(), 5_000);
        assert_eq!(hello.clusters().collect::<Vec<_>>(), [ClusterId(7), ClusterId(9)]);

        let hello = HelloPayload::new_checked(&ROUTER[..]).unwrap();
        assert_eq!(hello.role(), ROLE_ROUTER);
        assert_eq!(hello.kinds(), KINDS_ALL);
        assert!(hello.all_clusters());
        assert_eq!(hello.idle_timeout_ms(), 0x0102_0304);
        assert_eq!(hello.clusters().len(), 0);
    }

    #[test]
    fn construct() {
        let mut buf = [0xa5u8; HELLO_LEN_MAX];
        let client = HelloRepr {
            role: ROLE_CLIENT,
            kinds: 0b01_0001,
            all_clusters: false,
            clusters: &[ClusterId(7), ClusterId(9)],
            idle_timeout_ms: 5_000,
            name: "",
        };
        assert_eq!(client.emit(&mut buf), 48);
        assert_eq!(buf[..48], CLIENT);

        let router = HelloRepr {
            role: ROLE_ROUTER,
            kinds: KINDS_ALL,
            all_clusters: true,
            clusters: &[],
            idle_timeout_ms: 0x0102_0304,
            name: "",
        };
        assert_eq!(router.emit(&mut buf), 16);
        assert_eq!(buf[..16], ROUTER);
    }

    #[test]
    fn refusals() {
        // A good header to break one byte at a time: a router wanting all, idle 1 s.
        let good = [0u8, 1, 1, 0, 0, 0, 0, 0, 0xe8, 3, 0, 0, 0, 0, 0, 0];
        assert!(HelloPayload::new_checked(&good[..]).is_ok());
        let with = |at: usize, value: u8| {
            let mut bytes = good;
            bytes[at] = value;
            bytes
        };
        assert!(reason(&good[..15]).contains("shorter"));
        assert!(reason(&with(0, 3)).contains("role"));
        assert!(reason(&with(1, 0x80)).contains("kind"));
        assert!(reason(&with(2, 2)).contains("reserved"));
        assert!(reason(&with(3, 1)).contains("length"), "a name's length, and no name");
        assert!(reason(&with(3, 33)).contains("name longer"));
        assert!(reason(&with(6, 1)).contains("reserved"));
        assert!(reason(&with(7, 1)).contains("reserved"));
        assert!(reason(&with(12, 1)).contains("reserved"));
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
        let mut long = CLIENT.to_vec();
        long.push(0);
        assert!(reason(&long).contains("length"));
        assert!(reason(&CLIENT[..47]).contains("length"));
    }

    /// PROTOCOL.md 8.2's named router: every kind, every cluster, idle 5 s, named `core-1`.
    static NAMED: [u8; 22] = [
        0, 0x7f, 1, 6, 0, 0, 0, 0, 0x88, 0x13, 0, 0, 0, 0, 0, 0, b'c', b'o', b'r', b'e', b'-', b'1',
    ];

    #[test]
    fn a_name_follows_the_clusters() {
        let hello = HelloPayload::new_checked(&NAMED[..]).unwrap();
        assert_eq!((hello.name(), hello.clusters().len()), ("core-1", 0));
        let repr = HelloRepr {
            role: ROLE_ROUTER,
            kinds: KINDS_ALL,
            all_clusters: true,
            clusters: &[],
            idle_timeout_ms: 5_000,
            name: "core-1",
        };
        let mut buf = [0u8; HELLO_LEN_MAX];
        let n = repr.emit(&mut buf);
        assert_eq!(buf[..n], NAMED);
        // After listed clusters too.
        let mut listed = CLIENT.to_vec();
        listed[3] = 2;
        listed.extend(b"c1");
        let hello = HelloPayload::new_checked(&listed[..]).unwrap();
        assert_eq!((hello.name(), hello.clusters().len()), ("c1", 2));
        // Not printable UTF-8: refused, whatever it would show.
        for bad in [&b"\xff\xfe"[..], b"a\nb", b"\x1b[", b"\x7f"] {
            let mut named = ROUTER.to_vec();
            named[3] = bad.len() as u8;
            named.extend(bad);
            assert!(reason(&named).contains("printable"), "{bad:?}");
        }
        let mut unicode = ROUTER.to_vec();
        unicode[3] = "núcleo".len() as u8;
        unicode.extend("núcleo".as_bytes());
        assert_eq!(HelloPayload::new_checked(&unicode[..]).unwrap().name(), "núcleo");
    }

    #[test]
    fn the_longest_hello_fits() {
        let clusters: Vec<ClusterId> =
            (0..SPAN_WANTED_CLUSTERS_MAX as u128).map(ClusterId).collect();
        let repr = HelloRepr {
            role: ROLE_SATELLITE,
            kinds: 0,
            all_clusters: false,
            clusters: &clusters,
            idle_timeout_ms: 1,
            name: "a-name-as-long-as-they-come-0123",
        };
        let mut buf = [0u8; HELLO_LEN_MAX];
        assert_eq!(repr.emit(&mut buf), HELLO_LEN_MAX);
        let hello = HelloPayload::new_checked(&buf[..]).unwrap();
        assert!(hello.clusters().eq(clusters.iter().copied()));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            if let Ok(hello) = HelloPayload::new_checked(&bytes[..]) {
                let clusters: Vec<ClusterId> = hello.clusters().collect();
                let repr = HelloRepr {
                    role: hello.role(),
                    kinds: hello.kinds(),
                    all_clusters: hello.all_clusters(),
                    clusters: &clusters,
                    idle_timeout_ms: hello.idle_timeout_ms(),
                    name: hello.name(),
                };
                let mut buf = [0u8; HELLO_LEN_MAX];
                let n = repr.emit(&mut buf);
                proptest::prop_assert_eq!(&buf[..n], &bytes[..]);
            }
        }
    }
}
