//! A trace's two payloads (PROTOCOL.md 8.10): the request a `LINK_TRACE` circuit opens with,
//! and the report each node on the path sends back for itself.
//!
//! ```text
//!  request                                          report
//!  0      1       2            8            24      0     1        2            8           24
//!  +------+-------+------------+------------+       +-----+--------+------------+-----------+
//!  | hops | limit | reserved   | target     |       | hop | status | reserved   | node      |
//!  +------+-------+------------+------------+       +-----+--------+------------+-----------+
//!    u8     u8      6 zero       u128 LE              u8    u8       6 zero       u128 LE
//! ```
//!
//! Both are exactly 24 bytes, so a node sends back toward the caller no more than the request
//! it was sent. Anything else is [`Malformed::LinkPayload`].

use crate::error::{Error, Malformed};
use crate::ids::NodeId;
use crate::limits::TRACE_HOPS_MAX;

use super::get_u128;

mod field {
    use core::ops::Range;

    pub const HOPS: usize = 0;
    pub const LIMIT: usize = 1;
    pub const HOP: usize = 0;
    pub const STATUS: usize = 1;
    pub const RESERVED: Range<usize> = 2..8;
    pub const NODE: Range<usize> = 8..24;
}

/// Bytes of a trace request, and of a trace report.
pub const TRACE_LEN: usize = 24;

/// A trace request: the payload of a `LINK_TRACE` circuit's CREATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRequest {
    /// Nodes on the path that have reported so far: 0 from the caller; each node that reports
    /// and passes the trace on writes its own hop number here.
    pub hops: u8,
    /// The hop number at which the trace ends even if it could go on: 1 to
    /// [`TRACE_HOPS_MAX`], above `hops`.
    pub limit: u8,
    /// A node at which the trace ends, if it is on the path (`None`: at the mount's holder).
    pub target: Option<NodeId>,
}

impl TraceRequest {
    /// Parses a trace request (the whole of `bytes`).
    pub fn parse(bytes: &[u8]) -> Result<TraceRequest, Error> {
        let malformed = |reason| Malformed::LinkPayload { what: "LINK_TRACE request", reason };
        check_len(bytes).map_err(malformed)?;
        let (hops, limit) = (bytes[field::HOPS], bytes[field::LIMIT]);
        if limit == 0 || usize::from(limit) > TRACE_HOPS_MAX {
            return Err(malformed("hop limit not between 1 and 64").into());
        }
        if hops >= limit {
            return Err(malformed("hops already at the hop limit").into());
        }
        let target = match get_u128(bytes, field::NODE.start) {
            0 => None,
            id => Some(NodeId(id)),
        };
        Ok(TraceRequest { hops, limit, target })
    }

    /// The request's bytes.
    pub fn emit(&self) -> [u8; TRACE_LEN] {
        let mut bytes = [0u8; TRACE_LEN];
        bytes[field::HOPS] = self.hops;
        bytes[field::LIMIT] = self.limit;
        bytes[field::NODE].copy_from_slice(&self.target.map_or(0, |n| n.0).to_le_bytes());
        bytes
    }
}

/// What a node on a trace's path did with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TraceStatus {
    /// It passed the trace on toward the mount (more reports follow).
    Relayed,
    /// The mount is attached here (or is this node's aggregate): the trace ends.
    Holder,
    /// This node is the request's target: the trace ends.
    Target,
    /// Its hop number is the request's limit and it would have passed the trace on: the trace
    /// ends.
    Limit,
    /// It has no route onward: the trace ends (a forced close with `NO_ROUTE` follows).
    NoRoute,
}

impl TraceStatus {
    /// Its byte.
    pub const fn code(self) -> u8 {
        match self {
            TraceStatus::Relayed => 0,
            TraceStatus::Holder => 1,
            TraceStatus::Target => 2,
            TraceStatus::Limit => 3,
            TraceStatus::NoRoute => 4,
        }
    }

    /// The status a byte stands for.
    pub const fn from_code(code: u8) -> Option<TraceStatus> {
        Some(match code {
            0 => TraceStatus::Relayed,
            1 => TraceStatus::Holder,
            2 => TraceStatus::Target,
            3 => TraceStatus::Limit,
            4 => TraceStatus::NoRoute,
            _ => return None,
        })
    }

    /// Whether the trace ends at the node that reports this.
    pub const fn is_last(self) -> bool {
        !matches!(self, TraceStatus::Relayed)
    }

    /// In words, for people.
    pub const fn describe(self) -> &'static str {
        match self {
            TraceStatus::Relayed => "relays",
            TraceStatus::Holder => "holds the mount",
            TraceStatus::Target => "target reached",
            TraceStatus::Limit => "hop limit reached",
            TraceStatus::NoRoute => "no route onward",
        }
    }
}

/// A trace report: what one node on the path says of itself, sent back toward the caller on
/// the trace's circuit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceReport {
    /// The node's hop number on the path: 1 for the caller's neighbour.
    pub hop: u8,
    /// What it did with the trace.
    pub status: TraceStatus,
    /// Its node id, as it says.
    pub node: NodeId,
}

impl TraceReport {
    /// Parses a trace report (the whole of `bytes`).
    pub fn parse(bytes: &[u8]) -> Result<TraceReport, Error> {
        let malformed = |reason| Malformed::LinkPayload { what: "LINK_TRACE report", reason };
        check_len(bytes).map_err(malformed)?;
        let hop = bytes[field::HOP];
        if hop == 0 || usize::from(hop) > TRACE_HOPS_MAX {
            return Err(malformed("hop not between 1 and 64").into());
        }
        let status =
            TraceStatus::from_code(bytes[field::STATUS]).ok_or(malformed("unknown status"))?;
        Ok(TraceReport { hop, status, node: NodeId(get_u128(bytes, field::NODE.start)) })
    }

    /// The report's bytes.
    pub fn emit(&self) -> [u8; TRACE_LEN] {
        let mut bytes = [0u8; TRACE_LEN];
        bytes[field::HOP] = self.hop;
        bytes[field::STATUS] = self.status.code();
        bytes[field::NODE].copy_from_slice(&self.node.0.to_le_bytes());
        bytes
    }
}

/// The checks both payloads share: the length, and the reserved bytes.
fn check_len(bytes: &[u8]) -> Result<(), &'static str> {
    if bytes.len() != TRACE_LEN {
        return Err("not 24 bytes long");
    }
    if bytes[field::RESERVED].iter().any(|&b| b != 0) {
        return Err("reserved bytes set");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PROTOCOL.md 8.10's request: one hop reported so far, limit 64, target 0x0a0b.
    static REQUEST: [u8; 24] = [
        1, 64, 0, 0, 0, 0, 0, 0, //
        0x0b, 0x0a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    /// Its report from hop 2, node 0xfeed, relaying.
    static REPORT: [u8; 24] = [
        2, 0, 0, 0, 0, 0, 0, 0, //
        0xed, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];

    fn reason<T: std::fmt::Debug>(result: Result<T, Error>) -> &'static str {
        match result {
            Err(Error::Malformed(Malformed::LinkPayload { reason, .. })) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn deconstruct() {
        let request = TraceRequest { hops: 1, limit: 64, target: Some(NodeId(0x0a0b)) };
        assert_eq!(TraceRequest::parse(&REQUEST), Ok(request));
        let report = TraceReport { hop: 2, status: TraceStatus::Relayed, node: NodeId(0xfeed) };
        assert_eq!(TraceReport::parse(&REPORT), Ok(report));
        let mut untargeted = REQUEST;
        untargeted[8..].fill(0);
        assert_eq!(TraceRequest::parse(&untargeted).unwrap().target, None);
    }

    #[test]
    fn construct() {
        let request = TraceRequest { hops: 1, limit: 64, target: Some(NodeId(0x0a0b)) };
        assert_eq!(request.emit(), REQUEST);
        let report = TraceReport { hop: 2, status: TraceStatus::Relayed, node: NodeId(0xfeed) };
        assert_eq!(report.emit(), REPORT);
        for status in [
            TraceStatus::Relayed,
            TraceStatus::Holder,
            TraceStatus::Target,
            TraceStatus::Limit,
            TraceStatus::NoRoute,
        ] {
            assert_eq!(TraceStatus::from_code(status.code()), Some(status));
            let report = TraceReport { status, ..report };
            assert_eq!(TraceReport::parse(&report.emit()), Ok(report));
        }
    }

    #[test]
    fn refusals() {
        for bad in [&REQUEST[..23], &[REQUEST.as_slice(), &[0]].concat(), &[]] {
            assert_eq!(reason(TraceRequest::parse(bad)), "not 24 bytes long");
            assert_eq!(reason(TraceReport::parse(bad)), "not 24 bytes long");
        }
        for at in 2..8 {
            let mut bad = REQUEST;
            bad[at] = 1;
            assert_eq!(reason(TraceRequest::parse(&bad)), "reserved bytes set", "byte {at}");
            assert_eq!(reason(TraceReport::parse(&bad)), "reserved bytes set", "byte {at}");
        }
        let request = |hops: u8, limit: u8| {
            let mut bytes = REQUEST;
            (bytes[0], bytes[1]) = (hops, limit);
            TraceRequest::parse(&bytes)
        };
        assert!(reason(request(0, 0)).contains("hop limit"));
        assert!(reason(request(0, 65)).contains("hop limit"));
        assert!(reason(request(3, 3)).contains("at the hop limit"));
        assert!(reason(request(4, 3)).contains("at the hop limit"));
        assert!(request(0, 1).is_ok() && request(63, 64).is_ok());
        let report = |hop: u8, status: u8| {
            let mut bytes = REPORT;
            (bytes[0], bytes[1]) = (hop, status);
            TraceReport::parse(&bytes)
        };
        assert!(reason(report(0, 0)).contains("hop not between"));
        assert!(reason(report(65, 0)).contains("hop not between"));
        assert_eq!(reason(report(1, 5)), "unknown status");
        assert!(report(64, 4).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..30)) {
            if let Ok(request) = TraceRequest::parse(&bytes) {
                proptest::prop_assert_eq!(&request.emit()[..], &bytes[..]);
            }
            if let Ok(report) = TraceReport::parse(&bytes) {
                proptest::prop_assert_eq!(&report.emit()[..], &bytes[..]);
            }
        }
    }
}
