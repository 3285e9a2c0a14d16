//! The rows of a [`Snapshot`](super::Snapshot): links, routes, configured peers, and the
//! counters they carry, as `show`, `--json` and the metrics read them.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::relay::LinkCounters;
use crate::relay::redial::{Failure, LastError, PeerAddr, PeerState, PeerStatus};
use crate::ring::CloseReason;

/// What a link's peer was refused or lost for exceeding its share (one link's, or the client
/// links' in all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusals {
    /// Circuits refused for a limit: its share of the node's circuits or of the next link's,
    /// or its calls as a client.
    pub circuits_limited: u64,
    /// Its circuits aborted to make room for a peer holding fewer.
    pub circuits_preempted: u64,
    /// Its circuits aborted after carrying nothing for the idle bound.
    pub circuits_idle: u64,
    /// Spans refused past its share or a full table.
    pub spans_limited: u64,
    /// Client spans refused: a cluster not served here, or a mount another client holds.
    pub spans_refused: u64,
    /// Seqno requests that waited for its budget.
    pub seqno_delayed: u64,
}

impl Refusals {
    pub(in crate::daemon) fn of(c: &LinkCounters) -> Refusals {
        Refusals {
            circuits_limited: c.circuits_limited,
            circuits_preempted: c.circuits_preempted,
            circuits_idle: c.circuits_idle,
            spans_limited: c.spans_limited,
            spans_refused: c.spans_refused,
            seqno_delayed: c.seqno_delayed,
        }
    }

    pub(in crate::daemon) fn add(&mut self, other: Refusals) {
        self.circuits_limited += other.circuits_limited;
        self.circuits_preempted += other.circuits_preempted;
        self.circuits_idle += other.circuits_idle;
        self.spans_limited += other.spans_limited;
        self.spans_refused += other.spans_refused;
        self.seqno_delayed += other.seqno_delayed;
    }
}

/// Links that were up and went down, by cause, since the node started. Links that fail before
/// their handshake completes are in [`Snapshot::handshake_failures`](super::Snapshot::handshake_failures) instead.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closes {
    /// The peer's fault, found by the engine or by the node: bytes that do not parse, a record
    /// that fails authentication, a rule or bound of the transaction, span or client protocol.
    pub misbehaved: u64,
    /// The peer closed the connection, or closed the link with a notice.
    pub peer_closed: u64,
    /// Nothing received within the idle timeout.
    pub idle: u64,
    /// The peer did not read: a send stalled, or the send queue was full.
    pub not_reading: u64,
    /// A socket error.
    pub io: u64,
    /// Closed by this node: on request, at shutdown, or on an error of its own.
    pub local: u64,
}

impl Closes {
    pub(in crate::daemon) fn add(&mut self, other: &Closes) {
        self.misbehaved += other.misbehaved;
        self.peer_closed += other.peer_closed;
        self.idle += other.idle;
        self.not_reading += other.not_reading;
        self.io += other.io;
        self.local += other.local;
    }

    pub(in crate::daemon) fn count(&mut self, reason: CloseReason) {
        let counter = match reason {
            CloseReason::Protocol(error) if error.closes_link() => &mut self.misbehaved,
            CloseReason::PeerClosed | CloseReason::PeerSaid(_) => &mut self.peer_closed,
            CloseReason::IdleTimeout => &mut self.idle,
            CloseReason::SendStall | CloseReason::SendQueueFull => &mut self.not_reading,
            CloseReason::Io(_) => &mut self.io,
            CloseReason::Protocol(_) | CloseReason::Local(_) | CloseReason::Internal(_) => {
                &mut self.local
            }
        };
        *counter += 1;
    }
}

/// Node-wide counters, as shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counters {
    /// Circuits relayed through this node.
    pub relayed: u64,
    /// Calls served by local mounts.
    pub served: u64,
    /// Calls opened by local clients.
    pub opened: u64,
    /// Transactions refused for lack of a route.
    pub no_route: u64,
    /// Circuit ends that lost a link.
    pub lost: u64,
    /// Transactions refused by policy (a client calling another client, not inside a span).
    #[serde(default)]
    pub refused: u64,
    /// Received records forwarded whole: every message in them continued on one link.
    #[serde(default)]
    pub whole_records: u64,
    /// Of those, records sent on from where they lay: the receive buffer they arrived in, or the
    /// buffer they were put together in (no copy).
    #[serde(default)]
    pub records_in_place: u64,
    /// Circuits refused for a limit (a peer's share, a client's calls).
    #[serde(default)]
    pub limited: u64,
    /// Circuits aborted to make room for a peer holding fewer.
    #[serde(default)]
    pub preempted: u64,
    /// Circuits aborted after carrying nothing for the idle bound.
    #[serde(default)]
    pub idle: u64,
    /// Second links to an already linked node, closed.
    #[serde(default)]
    pub duplicates: u64,
    /// Traces this node ended itself with its report (`ringspan trace`, PROTOCOL.md 8.10): it
    /// holds the mount, is the target, or is at the hop limit (a trace passed on is relayed).
    #[serde(default)]
    pub traced: u64,
}

impl Counters {
    pub(in crate::daemon) fn add(&mut self, other: &Counters) {
        self.relayed += other.relayed;
        self.served += other.served;
        self.opened += other.opened;
        self.no_route += other.no_route;
        self.lost += other.lost;
        self.refused += other.refused;
        self.whole_records += other.whole_records;
        self.records_in_place += other.records_in_place;
        self.limited += other.limited;
        self.preempted += other.preempted;
        self.idle += other.idle;
        self.duplicates += other.duplicates;
        self.traced += other.traced;
    }
}

/// One link, as shown.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LinkRow {
    /// The engine's link id.
    pub link: u64,
    /// The worker it lives on.
    #[serde(default)]
    pub worker: usize,
    /// The peer's node id.
    pub peer: String,
    /// The configuration's name for the peer, if it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The name the peer announced in its hello, if it did (a key granted more than a client):
    /// said by the peer, not proven.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announced: Option<String>,
    /// What the peer said it is.
    pub role: String,
    /// What the peer's key is granted (the most it may say it is).
    #[serde(default)]
    pub granted: String,
    /// Spans it has open to us / we to it.
    pub spans_in: usize,
    /// Spans we have open to it.
    pub spans_out: usize,
    /// Bytes received / sent.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Records opened / sealed.
    pub records_in: u64,
    /// Records sealed.
    pub records_out: u64,
    /// Circuits the peer opened through this link.
    pub circuits_in: u64,
    /// Circuits we opened on it.
    pub circuits_out: u64,
    /// Forced closes received.
    pub aborts_in: u64,
    /// Forced closes sent.
    pub aborts_out: u64,
    /// Circuits and calls we have open on it.
    #[serde(default)]
    pub circuits_open: usize,
    /// What its peer was refused or lost for exceeding its share.
    #[serde(default)]
    pub refusals: Refusals,
    /// For a local link (an application attached through the attach socket), the process id
    /// of the application, as the kernel gave it at connect. Listed whatever its role (other
    /// client links are only counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attached: Option<u32>,
}

/// One mount, as shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouteRow {
    /// Cluster id, hex.
    pub cluster: String,
    /// Mount id, hex.
    pub mount: String,
    /// Kind.
    pub kind: String,
    /// Label.
    pub label: String,
    /// Originating node.
    pub origin: String,
    /// The configuration's name for the originating node, if it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin_name: Option<String>,
    /// Hops.
    pub metric: u16,
    /// "local" or the link id and peer of the best path.
    pub via: String,
    /// The node the best path goes to first (none if the mount is attached here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via_node: Option<String>,
    /// The standby path's link and peer, if any.
    pub standby: Option<String>,
    /// The node the standby path goes to first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_node: Option<String>,
    /// The standby path's hops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby_metric: Option<u16>,
    /// For a mount of this node an application attached through the attach socket, the
    /// application holding it (DESIGN 7c.7); none for a configured mount, one the mount API
    /// attached, or another node's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<Holder>,
}

/// The application holding a mount: its process and its local link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The application's process id, as the kernel gave it when it connected.
    pub pid: u32,
    /// Its local link (its row in `links`).
    pub link: u64,
}

/// One configured peer, as shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PeerRow {
    /// Its address, as configured: an IP address and port, or a host name and port.
    pub address: String,
    /// For a peer given by host name, the address its latest dial went to (what the name
    /// resolved to then); `None` before its name first resolved, and for an IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// The configuration's name for it, if it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its node id.
    pub peer: String,
    /// "up (link N)" (linked), "resolving" (its host name, for a dial), "dialling", "waiting"
    /// (for the next dial), "refused" (waiting, after the peer refused the link or ended it
    /// before it was stable, as a node that does not allow this node's key does), or "standby"
    /// (failover mode: another peer is in use).
    pub state: String,
    /// Its key, base64 (as `ringspan pubkey` prints it).
    #[serde(default)]
    pub key: String,
    /// While waiting (or refused): how long until its next dial, in milliseconds.
    #[serde(default)]
    pub next_dial_ms: Option<u64>,
    /// The latest wait scheduled before dialling it, in milliseconds: the backoff step for
    /// its failures in a row, jittered down by up to half.
    #[serde(default)]
    pub backoff_ms: u64,
    /// Dials and links that failed in a row (a link counts when the peer refused it or it went
    /// down before it was stable).
    #[serde(default)]
    pub failures: u32,
    /// How its latest dial or link ended, if one has.
    #[serde(default)]
    pub last_error: Option<String>,
    /// How long ago that was, in milliseconds.
    #[serde(default)]
    pub last_error_ago_ms: Option<u64>,
}

impl PeerRow {
    /// The row of a configured peer as its redialler sees it at `now`.
    pub(in crate::daemon) fn of(p: &PeerStatus, now: Instant) -> PeerRow {
        let refused = p.last_error.as_ref().is_some_and(LastError::is_refusal);
        let (state, next_dial_ms) = match p.state {
            PeerState::Up(link) => (format!("up ({link})"), None),
            PeerState::Resolving => ("resolving".into(), None),
            PeerState::Dialling => ("dialling".into(), None),
            PeerState::Waiting(at) => {
                let state = if refused { "refused" } else { "waiting" };
                (state.into(), Some(millis(at.saturating_duration_since(now))))
            }
            PeerState::Standby => ("standby".into(), None),
        };
        let resolved = match p.addr {
            PeerAddr::Name { .. } => p.dialled.map(|addr| addr.to_string()),
            PeerAddr::Ip(_) => None,
        };
        PeerRow {
            address: p.addr.to_string(),
            resolved,
            name: None,
            peer: p.key.node_id().to_string(),
            state,
            key: p.key.to_base64(),
            next_dial_ms,
            backoff_ms: millis(p.wait),
            failures: p.failures,
            last_error: p.last_error.as_ref().map(describe),
            last_error_ago_ms: p
                .last_error
                .as_ref()
                .map(|e| millis(now.saturating_duration_since(e.at))),
        }
    }
}

/// A peer's latest error in words: the reason, whether it was a dial or a link, and for a link
/// ended by the peer before it was stable, what that usually means. A name that did not
/// resolve says so itself (`cannot resolve NAME: ...`).
fn describe(e: &LastError) -> String {
    let reason = match &e.reason {
        Failure::Closed(reason) => *reason,
        Failure::Unresolved(why) => return why.clone(),
    };
    match e.lived {
        None => format!("dial failed: {reason}"),
        Some(lived) => {
            let lived = millis(lived);
            let hint = match reason {
                CloseReason::PeerClosed | CloseReason::Io(_) if e.is_refusal() => {
                    " (the peer may not allow this node's key)"
                }
                _ => "",
            };
            format!("link down {lived} ms after its handshake: {reason}{hint}")
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Limit, Malformed, Misuse, Violation};
    use crate::ids::LinkId;
    use crate::wire::ErrorCode;

    #[test]
    fn peer_rows_say_state_backoff_and_last_error() {
        use crate::cipher::PublicKey;
        use crate::relay::redial::PeerStatus;
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let now = Instant::now();
        let ms = Duration::from_millis;
        let refused = PeerStatus {
            addr: "127.0.0.1:7".parse().unwrap(),
            dialled: Some("127.0.0.1:7".parse().unwrap()),
            key: PublicKey([1; 32]),
            state: PeerState::Waiting(now + ms(900)),
            failures: 3,
            wait: ms(1100),
            last_error: Some(LastError {
                reason: Failure::Closed(CloseReason::PeerClosed),
                at: now - ms(200),
                lived: Some(ms(4)),
            }),
        };
        let row = PeerRow::of(&refused, now);
        assert_eq!(row.state, "refused");
        assert_eq!(row.key, PublicKey([1; 32]).to_base64());
        assert_eq!((row.next_dial_ms, row.backoff_ms, row.failures), (Some(900), 1100, 3));
        assert_eq!(
            row.last_error.as_deref(),
            Some(
                "link down 4 ms after its handshake: peer closed the connection (the peer may \
                 not allow this node's key)"
            )
        );
        assert_eq!(row.last_error_ago_ms, Some(200));
        assert_eq!((row.address.as_str(), row.resolved), ("127.0.0.1:7", None));
        // A dial refused by the kernel: waiting, not refused by the peer.
        let failed = PeerStatus {
            last_error: Some(LastError {
                reason: Failure::Closed(CloseReason::Io(111)),
                at: now,
                lived: None,
            }),
            ..refused.clone()
        };
        let row = PeerRow::of(&failed, now);
        assert_eq!(row.state, "waiting");
        assert!(
            row.last_error.unwrap().starts_with("dial failed: socket error: Connection refused")
        );
        // The peer said REFUSED after a long while: still a refusal.
        let told = PeerStatus {
            last_error: Some(LastError {
                reason: Failure::Closed(CloseReason::PeerSaid(ErrorCode::REFUSED)),
                at: now,
                lived: Some(ms(60_000)),
            }),
            ..refused.clone()
        };
        assert_eq!(PeerRow::of(&told, now).state, "refused");
        // A name that did not resolve: waiting, the resolver's reason as the last error.
        let unresolved = PeerStatus {
            addr: "b.invalid:7".parse().unwrap(),
            dialled: None,
            last_error: Some(LastError {
                reason: Failure::Unresolved("cannot resolve b.invalid: no such name".into()),
                at: now,
                lived: None,
            }),
            ..refused.clone()
        };
        let row = PeerRow::of(&unresolved, now);
        assert_eq!((row.address.as_str(), row.state.as_str()), ("b.invalid:7", "waiting"));
        assert_eq!(row.last_error.as_deref(), Some("cannot resolve b.invalid: no such name"));
        assert_eq!(row.resolved, None);
        // A name that resolved: where its dial went.
        let resolving = PeerStatus {
            state: PeerState::Resolving,
            dialled: Some("127.0.0.1:7".parse().unwrap()),
            ..unresolved
        };
        let row = PeerRow::of(&resolving, now);
        assert_eq!(
            (row.state.as_str(), row.resolved.as_deref()),
            ("resolving", Some("127.0.0.1:7"))
        );
        let up = PeerStatus { state: PeerState::Up(LinkId(3)), last_error: None, ..refused };
        let row = PeerRow::of(&up, now);
        assert_eq!((row.state.as_str(), row.next_dial_ms), ("up (link 0:3.0)", None));
    }

    #[test]
    fn a_peer_row_from_an_older_node_reads_with_defaults() {
        let old = r#"{"address":"127.0.0.1:1","peer":"bbbb1111","state":"waiting"}"#;
        let row: PeerRow = serde_json::from_str(old).unwrap();
        assert_eq!((row.state.as_str(), row.failures, row.last_error), ("waiting", 0, None));
    }

    #[test]
    fn closes_are_counted_by_whose_fault_they_are() {
        let mut closes = Closes::default();
        for reason in [
            CloseReason::Protocol(crate::Error::Decrypt),
            CloseReason::Protocol(Malformed::MessagePadding.into()),
            CloseReason::Protocol(Violation::LinkProtocol("a second LINK_CONN").into()),
            CloseReason::Protocol(Limit::PeerTransactions(1).into()),
            CloseReason::PeerClosed,
            CloseReason::PeerSaid(ErrorCode::LOST_LINK),
            CloseReason::IdleTimeout,
            CloseReason::SendStall,
            CloseReason::SendQueueFull,
            // ECONNRESET.
            CloseReason::Io(104),
            CloseReason::Local(ErrorCode::REFUSED),
            CloseReason::Internal("bug"),
            // Not the peer's fault: a local misuse that reached a close.
            CloseReason::Protocol(Misuse::LinkDown.into()),
        ] {
            closes.count(reason);
        }
        assert_eq!(
            closes,
            Closes { misbehaved: 4, peer_closed: 2, idle: 1, not_reading: 2, io: 1, local: 3 }
        );
    }
}
