//! The span protocol's values to and from their payloads: [`Hello`] for a link's `LINK_CONN`,
//! [`Advert`] for a `LINK_SPAN`, [`Seqno`] for a `LINK_SPAN_REQUEST`. The byte layouts, and
//! every check of untrusted bytes, are in `wire` ([`crate::wire::hello`],
//! [`crate::wire::advert`], [`crate::wire::seqno_request`]); this module only gives their raw
//! fields meaning. A refused payload is [`Malformed::LinkPayload`], which closes the link.

use crate::error::{Error, Malformed};
use crate::ids::ClusterId;
use crate::limits::{IDLE_TIMEOUT_MS, NODE_NAME_MAX};
use crate::wire::advert::{self, ADVERT_LEN_MAX, AdvertPayload, AdvertRepr};
use crate::wire::hello::{self, HELLO_LEN_MAX, HelloPayload, HelloRepr};
use crate::wire::seqno_request::{SEQNO_REQUEST_LEN, SeqnoRequest};

use super::{Advert, Clusters, KindSet, Label, Metric, MountKey, MountKind, Role, Seqno, Wants};

// The kinds `span` knows are exactly those the wire layout admits.
const _: () = assert!(KindSet::ALL.bits() == hello::KINDS_ALL);
const _: () = assert!(MountKind::ALL.len() == advert::MOUNT_KINDS as usize);
const _: () = assert!(Metric::INFINITY.0 == advert::METRIC_INFINITE);

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
    /// The name it announces (`[node] name`): at most [`NODE_NAME_MAX`] bytes of printable
    /// UTF-8, empty for none. Said by the sender, not proven: a name for people.
    pub name: Label,
}

impl Hello {
    /// A hello with the default idle timeout ([`IDLE_TIMEOUT_MS`]).
    pub fn new(role: Role, wants: Wants) -> Hello {
        // The default fits: a const assertion in `limits` ties it below u32::MAX.
        Hello { role, wants, idle_timeout_ms: IDLE_TIMEOUT_MS as u32, name: Label::EMPTY }
    }

    /// The name to announce, if `name` is one: at most [`NODE_NAME_MAX`] bytes of printable
    /// UTF-8 (what a neighbour takes).
    pub fn named(mut self, name: &str) -> Result<Hello, Error> {
        if name.len() > NODE_NAME_MAX || name.chars().any(char::is_control) {
            return Err(Malformed::LinkPayload {
                what: "LINK_CONN hello",
                reason: "a name that is not printable UTF-8 of at most 32 bytes",
            }
            .into());
        }
        self.name = Label::new(name.as_bytes())?;
        Ok(self)
    }

    /// The name it announces, empty for none.
    pub fn name(&self) -> &str {
        // Only printable UTF-8 gets in (`named`, `decode`).
        std::str::from_utf8(self.name.as_bytes()).unwrap_or_default()
    }

    /// Writes the hello into `buf`, returning its length.
    pub fn encode(&self, buf: &mut [u8; HELLO_LEN_MAX]) -> usize {
        let (all_clusters, clusters): (bool, &[ClusterId]) = match self.wants.clusters() {
            Clusters::All => (true, &[]),
            Clusters::Only(list) => (false, list),
        };
        HelloRepr {
            role: role_byte(self.role),
            kinds: self.wants.kinds().bits(),
            all_clusters,
            clusters,
            idle_timeout_ms: self.idle_timeout_ms,
            name: self.name(),
        }
        .emit(buf)
    }

    /// Parses a hello.
    pub fn decode(bytes: &[u8]) -> Result<Hello, Error> {
        let hello = HelloPayload::new_checked(bytes)?;
        // The view admits only known roles and kind bits; these refusals cannot happen.
        let refused = |reason| Malformed::LinkPayload { what: "LINK_CONN hello", reason };
        let role = role_from_byte(hello.role()).ok_or(refused("unknown role"))?;
        let kinds = KindSet::from_bits(hello.kinds()).ok_or(refused("unknown mount kind bit"))?;
        let clusters = if hello.all_clusters() {
            Clusters::All
        } else {
            Clusters::Only(hello.clusters().collect())
        };
        Ok(Hello {
            role,
            wants: Wants::new(kinds, clusters)?,
            idle_timeout_ms: hello.idle_timeout_ms(),
            name: Label::new(hello.name().as_bytes())?,
        })
    }
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Router => hello::ROLE_ROUTER,
        Role::Satellite => hello::ROLE_SATELLITE,
        Role::Client => hello::ROLE_CLIENT,
    }
}

fn role_from_byte(byte: u8) -> Option<Role> {
    match byte {
        hello::ROLE_ROUTER => Some(Role::Router),
        hello::ROLE_SATELLITE => Some(Role::Satellite),
        hello::ROLE_CLIENT => Some(Role::Client),
        _ => None,
    }
}

impl Advert {
    /// Writes the advertisement into `buf`, returning its length.
    pub fn encode(&self, buf: &mut [u8; ADVERT_LEN_MAX]) -> usize {
        AdvertRepr {
            cluster: self.mount.cluster,
            mount: self.mount.mount,
            origin: self.origin,
            seqno: self.seqno.0,
            metric: self.metric.0,
            kind: self.kind.index(),
            label: self.label.as_bytes(),
        }
        .emit(buf)
    }

    /// Parses an advertisement. An infinite metric is refused: a span is retracted by closing it.
    pub fn decode(bytes: &[u8]) -> Result<Advert, Error> {
        let advert = AdvertPayload::new_checked(bytes)?;
        // The view admits only known kinds; this refusal cannot happen.
        let kind = MountKind::from_index(advert.kind()).ok_or(Malformed::LinkPayload {
            what: "LINK_SPAN advertisement",
            reason: "unknown mount kind",
        })?;
        Ok(Advert {
            mount: MountKey { cluster: advert.cluster(), mount: advert.mount() },
            kind,
            label: Label::new(advert.label())?,
            origin: advert.origin(),
            seqno: Seqno(advert.seqno()),
            metric: Metric(advert.metric()),
        })
    }
}

impl Seqno {
    /// The payload of a `LINK_SPAN_REQUEST` asking for this seqno (at least).
    pub fn encode_request(self) -> [u8; SEQNO_REQUEST_LEN] {
        SeqnoRequest { seqno: self.0 }.emit()
    }

    /// The seqno a `LINK_SPAN_REQUEST`'s payload asks for.
    pub fn decode_request(bytes: &[u8]) -> Result<Seqno, Error> {
        SeqnoRequest::parse(bytes).map(|request| Seqno(request.seqno))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{MountId, NodeId};

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
        let n = advert().encode(&mut buf);
        let mut want = Vec::new();
        want.extend(le16(0x0102));
        want.extend(le16(0x0a0b));
        want.extend(le16(0xfeed));
        want.extend([0x34, 0x12, 3, 0, 2, 3, 0, 0]);
        want.extend(b"pfs");
        assert_eq!(&buf[..n], &want[..]);
        assert_eq!(Advert::decode(&want), Ok(advert()));
        // A refusal of the wire layer is the decoder's.
        want[52] = 7;
        assert!(matches!(
            Advert::decode(&want),
            Err(Error::Malformed(Malformed::LinkPayload { reason: "unknown mount kind", .. }))
        ));
    }

    #[test]
    fn every_kind_has_its_index_on_the_wire() {
        let mut buf = [0u8; ADVERT_LEN_MAX];
        for (index, kind) in MountKind::ALL.into_iter().enumerate() {
            let n = Advert { kind, ..advert() }.encode(&mut buf);
            assert_eq!(usize::from(buf[52]), index);
            assert_eq!(Advert::decode(&buf[..n]).unwrap().kind, kind);
        }
    }

    #[test]
    fn hello_golden_bytes() {
        let only = Wants::new(
            KindSet::NONE.with(MountKind::Master).with(MountKind::Cache),
            Clusters::Only(vec![ClusterId(7), ClusterId(9)]),
        )
        .unwrap();
        let hello = Hello { idle_timeout_ms: 5_000, ..Hello::new(Role::Client, only) };
        let mut buf = [0u8; HELLO_LEN_MAX];
        let n = hello.encode(&mut buf);
        let mut want = vec![2, 0b01_0001, 0, 0, 2, 0, 0, 0, 0x88, 0x13, 0, 0, 0, 0, 0, 0];
        want.extend(le16(7));
        want.extend(le16(9));
        assert_eq!(&buf[..n], &want[..]);
        assert_eq!(Hello::decode(&want), Ok(hello));

        let all = Hello { idle_timeout_ms: 0x0102_0304, ..Hello::new(Role::Router, Wants::all()) };
        let n = all.encode(&mut buf);
        assert_eq!(&buf[..n], &[0, 0b111_1111, 1, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]);
        assert_eq!(Hello::decode(&buf[..n]), Ok(all));
        assert_eq!(Hello::new(Role::Router, Wants::all()).idle_timeout_ms, 5_000);

        buf[0] = 3;
        assert!(matches!(
            Hello::decode(&buf[..n]),
            Err(Error::Malformed(Malformed::LinkPayload { reason: "unknown role", .. }))
        ));
    }

    #[test]
    fn a_named_hello_carries_its_name_and_a_bad_one_is_refused_before_it_is_sent() {
        let named = Hello::new(Role::Router, Wants::all()).named("core-1").unwrap();
        let mut buf = [0u8; HELLO_LEN_MAX];
        let n = named.encode(&mut buf);
        assert_eq!((n, &buf[16..n]), (22, &b"core-1"[..]));
        assert_eq!(Hello::decode(&buf[..n]).unwrap().name(), "core-1");
        for bad in ["a-name-longer-than-thirty-two-bytes", "tab\there"] {
            assert!(Hello::new(Role::Router, Wants::all()).named(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_role_has_its_byte() {
        let mut buf = [0u8; HELLO_LEN_MAX];
        for (role, byte) in [(Role::Router, 0), (Role::Satellite, 1), (Role::Client, 2)] {
            let n = Hello::new(role, Wants::all()).encode(&mut buf);
            assert_eq!(buf[0], byte);
            assert_eq!(Hello::decode(&buf[..n]).unwrap().role, role);
        }
    }

    #[test]
    fn seqno_request_golden_bytes() {
        let bytes = Seqno(0xbeef).encode_request();
        assert_eq!(bytes, [0xef, 0xbe, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Seqno::decode_request(&bytes), Ok(Seqno(0xbeef)));
        assert!(Seqno::decode_request(&bytes[..7]).is_err());
        assert!(Seqno::decode_request(&[1, 0, 0, 0, 0, 0, 0, 1]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = Advert::decode(&bytes);
            let _ = Hello::decode(&bytes);
            let _ = Seqno::decode_request(&bytes);
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
            let n = advert.encode(&mut buf);
            proptest::prop_assert_eq!(Advert::decode(&buf[..n]), Ok(advert));
        }
    }
}
