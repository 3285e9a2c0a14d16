//! One link on a worker: its socket, its session, its transactions, its byte streams, its
//! timers and counters.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use socket2::{SockAddr, Socket};

use crate::cipher::{self, PublicKey};
use crate::ids::LinkId;
use crate::link::Link;
use crate::link::pool::Pool;

use super::{LinkCtx, Peers};

pub use crate::link::{CloseReason, Crypto, LinkMeta, LinkStats};

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
    /// Everything of the link that is protocol: keys, streams, transactions, deadlines,
    /// counters (sans-IO; lifted out while a received record is handled).
    pub link: Link,
    pub peer: Option<PublicKey>,
    /// For an outgoing link, until it is up.
    pub dial: Option<Box<Dial>>,
    /// The descriptor of the send in flight (the kernel reads it until the send completes).
    pub send_vec: Option<Box<super::uring::SendVec>>,
    /// For an internal link (DESIGN 7c.3): the worker at its other end, whose lanes carry its
    /// bytes instead of the socket (a placeholder, never connected).
    pub sibling: Option<u16>,
    /// For a local link (the attach socket): its peer's credentials. Boxed: few links have one.
    pub attached: Option<Box<super::PeerCred>>,
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

impl Conn {
    /// The link as a service sees it, once records flow on it (with no other link reachable).
    pub fn ctx<'a>(
        &'a mut self,
        id: LinkId,
        pool: &'a RefCell<Pool>,
        now: Instant,
    ) -> Option<LinkCtx<'a>> {
        let peer = self.peer?;
        let fd = self.socket.as_raw_fd();
        let parts = self.link.parts(pool)?;
        Some(LinkCtx {
            id,
            peer,
            txn: parts.txn,
            span: parts.span,
            out: parts.out,
            now,
            peers: Peers::none(),
            fd,
            meta: parts.meta,
            sibling: self.sibling,
            attached: self.attached.as_deref().copied(),
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
        use crate::link::LinkClock;
        use crate::link::stream::{Rx, Tx};
        use crate::txn;
        let crypto = size_of::<Crypto>();
        let txn = size_of::<txn::Link>();
        let span = size_of::<crate::span::SpanLink>();
        let streams = size_of::<Rx>() + size_of::<Tx>();
        let meta = size_of::<LinkMeta>();
        let clock = size_of::<LinkClock>();
        let stats = size_of::<LinkStats>();
        let link = size_of::<Link>();
        let conn = size_of::<Conn>();
        let rest = conn - link;
        println!(
            "Conn {conn} bytes: link {link} (crypto {crypto}, txn {txn}, span {span}, rx+tx \
             {streams}, meta {meta}, clock {clock}, stats {stats}), the rest {rest}"
        );
        // Four AES-256-GCM key schedules (both directions, current and next key each).
        assert!(crypto <= 2_352, "crypto state {crypto}");
        // Who the peer is and what it was granted, the LINK_CONN pair, the idle timeout it asked
        // for, four small maps of spans (a vector each until it grows past eight), the counters.
        assert!(span <= 176, "span state {span}");
        // Two buffers, their lengths, the send queue, and the count of records sealed this turn.
        assert!(streams <= 128, "streams {streams}");
        // Who dialled, and the link's own keepalive interval.
        assert!(meta <= 8, "meta {meta}");
        // Four instants and the clock's flags.
        assert!(clock <= 72, "clock {clock}");
        // The parts, the count of records queued whole, and padding.
        assert!(link <= crypto + txn + span + streams + meta + clock + stats + 8, "link {link}");
        // Socket, phase, flags, generation, operations, peer key, the boxed dial and send, and
        // the worker at the other end of an internal link.
        assert!(rest <= 80, "other fields {rest}");
    }
}
