//! One link on a worker: its socket, its session, its transactions, its byte streams, its
//! timers and counters.

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::link::LinkClock;

use std::os::fd::AsRawFd;

use socket2::{SockAddr, Socket};

use crate::cipher::{self, PublicKey, RecordOpener, RecordSealer, Session};
use crate::error::Error;
use crate::ids::LinkId;
use crate::txn;
use crate::wire::ErrorCode;

use super::{LinkCtx, Peers};
use crate::link::pool::Pool;
use crate::link::stream::{Rx, Tx};

/// Why a link closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed the connection (end of stream) without saying why.
    PeerClosed,
    /// The peer said why it closed the link.
    PeerSaid(ErrorCode),
    /// A socket error (errno).
    Io(i32),
    /// The peer's bytes broke the protocol, failed to authenticate, or a limit was hit.
    Protocol(Error),
    /// Nothing was received for longer than the idle timeout.
    IdleTimeout,
    /// A send made no progress for longer than the send-stall timeout: the peer does not read.
    SendStall,
    /// More bytes were queued than the send-queue limit: the peer does not read.
    SendQueueFull,
    /// The local node closed the link (a service request, or shutdown).
    Local(ErrorCode),
    /// A broken invariant of the engine itself (a bug): only this link is closed.
    Internal(&'static str),
}

impl From<Error> for CloseReason {
    fn from(error: Error) -> CloseReason {
        CloseReason::Protocol(error)
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::PeerSaid(code) => write!(f, "peer closed the link: {code}"),
            CloseReason::Io(errno) => {
                write!(f, "socket error: {}", std::io::Error::from_raw_os_error(*errno))
            }
            CloseReason::Protocol(error) => write!(f, "{error}"),
            CloseReason::IdleTimeout => f.write_str("nothing received within the idle timeout"),
            CloseReason::SendStall => {
                f.write_str("peer not reading: a send made no progress within the stall timeout")
            }
            CloseReason::SendQueueFull => f.write_str("peer not reading: send queue full"),
            CloseReason::Local(code) => write!(f, "closed locally: {code}"),
            CloseReason::Internal(what) => write!(f, "internal error: {what}"),
        }
    }
}

/// Counters of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Records opened.
    pub records_in: u64,
    /// Records sealed.
    pub records_out: u64,
    /// Messages received.
    pub messages_in: u64,
}

/// Where a link is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Dialling.
    Connecting,
    /// Exchanging handshake frames.
    Handshake,
    /// Records flow.
    Established,
    /// Sending its last records (a close notice) before closing.
    Draining,
    /// Closed; waiting for the kernel to finish with its operations before it is freed.
    Closing,
}

/// The link's cryptographic state.
// The established variant is the common case and is read on every record: it stays inline,
// and the rare, larger-in-code handshake state is boxed instead.
#[allow(clippy::large_enum_variant)]
#[derive(Default)]
pub enum Crypto {
    /// The handshake is in progress.
    Handshake(Box<Session>),
    /// Records flow.
    Established {
        /// The sending half.
        sealer: RecordSealer,
        /// The receiving half.
        opener: RecordOpener,
    },
    /// Closed.
    #[default]
    None,
}

/// What a dialled link needs until its handshake is done. Boxed and dropped once the link is
/// up, so an established link does not carry it (an accepted one never has it).
pub struct Dial {
    /// The address being dialled (the kernel reads it until the connect completes, wherever
    /// the link's state moves: hence the box).
    pub addr: SockAddr,
    /// The key the other side must show, if one is expected.
    pub expected_peer: Option<PublicKey>,
    /// The identity to dial with instead of the engine's, if any.
    pub cipher: Option<Arc<cipher::Config>>,
}

/// A link's state on its worker. Every link of a worker has one, inline in the worker's slab:
/// fields needed only for a while (dialling, a send in flight, a handshake) are boxed.
pub struct Conn {
    pub generation: u32,
    /// Operations in flight on the ring; the link is freed only when this reaches zero.
    pub ops: u32,
    pub socket: Socket,
    pub phase: Phase,
    pub recv_armed: bool,
    pub recv_rearm: bool,
    /// In the worker's list of links to flush this turn.
    pub touched: bool,
    pub io: LinkIo,
    pub peer: Option<PublicKey>,
    /// For an outgoing link, until it is up.
    pub dial: Option<Box<Dial>>,
    /// The descriptor of the send in flight (the kernel reads it until the send completes).
    pub send_vec: Option<Box<super::uring::SendVec>>,
    /// The link's deadlines: keepalive, idle, send stall, key shedding, reassembly.
    pub clock: LinkClock,
    /// Records queued whole this turn (`Peers::with_record`), counted at the flush.
    pub records_queued: u16,
    pub stats: LinkStats,
}

/// What handling a message touches on its link: the record keys, the transactions and the
/// byte streams. Apart from the rest of [`Conn`] so that the worker can lift it out while it
/// handles a received record, and lend the other links meanwhile (`Peers`): a relayed message
/// is then written straight into the link it goes to.
#[derive(Default)]
pub struct LinkIo {
    pub crypto: Crypto,
    pub txn: txn::Link,
    pub rx: Rx,
    pub tx: Tx,
    pub meta: LinkMeta,
}

/// What a service reads or sets about its link besides its traffic (through [`LinkCtx`]).
/// Eight bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct LinkMeta {
    /// This worker dialled the link (it did not accept it).
    pub dialled: bool,
    /// The link's own keepalive interval in milliseconds; 0: `Config::keepalive_interval`.
    pub keepalive_ms: u32,
    /// `keepalive_ms` was set since the worker last armed the keepalive timer by it.
    pub keepalive_changed: bool,
}

impl LinkMeta {
    /// The link's keepalive interval: its own if a service set one, else `default` (the
    /// engine's).
    pub fn keepalive(&self, default: Duration) -> Duration {
        match self.keepalive_ms {
            0 => default,
            ms => Duration::from_millis(ms.into()),
        }
    }
}

impl Conn {
    /// The link as a service sees it, once records flow on it (with no other link reachable).
    pub fn ctx<'a>(
        &'a mut self,
        id: LinkId,
        pool: &'a RefCell<Pool>,
        now: Instant,
    ) -> Option<LinkCtx<'a>> {
        let LinkIo { crypto: Crypto::Established { sealer, .. }, txn, tx, meta, .. } = &mut self.io
        else {
            return None;
        };
        let peer = self.peer?;
        Some(LinkCtx {
            id,
            peer,
            txn,
            out: tx.sink(sealer, pool),
            now,
            peers: Peers::none(),
            fd: self.socket.as_raw_fd(),
            meta,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    /// The inline part of an idle link's state (its slab slot), by field group. Guards against
    /// a field that makes every link larger; `tests/alloc/link_memory.rs` measures the heap
    /// around it.
    #[test]
    fn a_link_state_stays_small() {
        let crypto = size_of::<Crypto>();
        let txn = size_of::<txn::Link>();
        let streams = size_of::<Rx>() + size_of::<Tx>();
        let meta = size_of::<LinkMeta>();
        assert_eq!(size_of::<LinkIo>(), crypto + txn + streams + meta);
        let conn = size_of::<Conn>();
        let rest = conn - size_of::<LinkIo>();
        println!(
            "Conn {conn} bytes: crypto {crypto}, txn {txn}, rx+tx {streams}, meta {meta}, \
             the rest {rest}"
        );
        // Four AES-256-GCM key schedules (both directions, current and next key each).
        assert!(crypto <= 2_352, "crypto state {crypto}");
        assert!(streams <= 120, "streams {streams}");
        // Who dialled, and the link's own keepalive interval.
        assert!(meta <= 8, "meta {meta}");
        // The link's clock is 72 of these (four instants and its flags): 8 more than the same
        // fields took loose in `Conn`, where the flags filled padding.
        assert!(std::mem::size_of::<LinkClock>() <= 72);
        assert!(rest <= 184, "other fields");
    }
}
