//! What a node does with what sections 6 and 8 give no role (PROTOCOL.md 8.9, 6.2, 5.4),
//! checked on a real `relay::Node` driven through a `txn::Link` the test speaks for its peer.

use ringspan::Error;
use ringspan::ids::{ClusterId, LinkId, MountId, NodeId, TxnId};
use ringspan::relay::{AppEvent, BareLink, CallId, NoLinks, Node, OneLink};
use ringspan::span::{Hello, Label, MountKey, MountKind, Role, Wants};
use ringspan::txn::{self, Received};
use ringspan::wire::HELLO_LEN_MAX;
use ringspan::wire::{Command, ErrorCode, Flags, Messages};

// One real instant to start from.
use crate::support::wait::now as t0;

const LINK: LinkId = LinkId(7);
const MOUNT: MountKey = MountKey { cluster: ClusterId(9), mount: MountId(2) };

/// What the peer saw of one message from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub txn: TxnId,
    pub parent: Option<TxnId>,
    pub flags: Flags,
    pub command: Command,
    pub error: ErrorCode,
    pub payload: Vec<u8>,
}

/// A node N with a mount attached, linked to a peer P whose transaction layer the test drives.
pub struct Peer {
    pub node: Node,
    n: BareLink,
    p: txn::Link,
    /// P's `LINK_CONN`.
    pub hello: TxnId,
}

impl Peer {
    /// N up with `MOUNT` attached, P's hello exchanged; returns what P saw (N's hello and span).
    pub fn new() -> (Peer, Vec<Seen>) {
        let hello = Hello::new(Role::Router, Wants::all());
        let mut payload = [0u8; HELLO_LEN_MAX];
        let len = hello.encode(&mut payload);
        let (peer, seen) = Peer::saying(&payload[..len]);
        (peer, seen.unwrap())
    }

    /// N up with `MOUNT` attached, and P's hello `payload` sent to it: what P saw, or what N
    /// made of the hello.
    pub fn saying(payload: &[u8]) -> (Peer, Result<Vec<Seen>, Error>) {
        let hello = Hello::new(Role::Router, Wants::all());
        let mut node = Node::new(NodeId(1), hello, t0());
        node.attach(MOUNT, MountKind::Master, Label::new(b"m").unwrap(), &mut NoLinks).unwrap();
        let (mut n, mut p) = (BareLink::default(), txn::Link::new());
        let mut to_p = Vec::new();
        let links = &mut OneLink::new(LINK, &mut n, &mut to_p);
        node.link_up(LINK, NodeId(2), Role::Router, false, links).unwrap();
        let mut bytes = Vec::new();
        let mine = p.open(&mut bytes, None, Command::LINK_CONN, payload, Flags::NONE);
        let mut peer = Peer { node, n, p, hello: mine.unwrap() };
        let mut seen = peer.send_to_peer(&to_p);
        let more = peer.send_to_node(&bytes).map(|more| {
            seen.extend(more);
            seen
        });
        (peer, more)
    }

    /// Hands P's bytes to the node's link, then everything the node writes back to P.
    pub fn send_to_node(&mut self, bytes: &[u8]) -> Result<Vec<Seen>, Error> {
        let mut to_p = Vec::new();
        for message in Messages::new(bytes) {
            let message = message.unwrap();
            if let Some(received) = self.n.txn.handle_message(&mut to_p, &message)? {
                let links = &mut OneLink::new(LINK, &mut self.n, &mut to_p);
                self.node.received(LINK, links, received)?;
            }
            while let Some(event) = self.n.txn.poll_event() {
                let links = &mut OneLink::new(LINK, &mut self.n, &mut to_p);
                self.node.event(LINK, links, event)?;
            }
        }
        Ok(self.send_to_peer(&to_p))
    }

    /// What P's transaction layer makes of the node's bytes (P answers nothing by itself here).
    fn send_to_peer(&mut self, bytes: &[u8]) -> Vec<Seen> {
        let mut answers = Vec::new();
        let mut seen = Vec::new();
        for message in Messages::new(bytes) {
            let message = message.unwrap();
            if let Some(Received::Txn(d)) = self.p.handle_message(&mut answers, &message).unwrap() {
                seen.push(Seen {
                    txn: d.txn,
                    parent: d.parent,
                    flags: d.flags,
                    command: d.command,
                    error: d.error,
                    payload: d.payload.to_vec(),
                });
            }
        }
        // P's transaction layer answers the node's forced closes at once.
        if !answers.is_empty() {
            let more = self.send_to_node(&answers).unwrap();
            seen.extend(more);
        }
        seen
    }

    /// P opens a transaction (inside `parent` if given) and sends it to the node.
    pub fn open(
        &mut self,
        parent: Option<TxnId>,
        command: Command,
        flags: Flags,
    ) -> (TxnId, Result<Vec<Seen>, Error>) {
        let mut bytes = Vec::new();
        let txn = self.p.open(&mut bytes, parent, command, b"x", flags).unwrap();
        (txn, self.send_to_node(&bytes))
    }

    /// P opens a transaction (inside `parent` if given) with `payload`, and sends it to the
    /// node.
    pub fn open_with(
        &mut self,
        parent: Option<TxnId>,
        command: Command,
        payload: &[u8],
        flags: Flags,
    ) -> (TxnId, Result<Vec<Seen>, Error>) {
        let mut bytes = Vec::new();
        let txn = self.p.open(&mut bytes, parent, command, payload, flags).unwrap();
        (txn, self.send_to_node(&bytes))
    }

    /// P sends a one-way message with `command`.
    pub fn oneway(&mut self, command: Command) -> Result<Vec<Seen>, Error> {
        let mut bytes = Vec::new();
        self.p.send_oneway(&mut bytes, command, ErrorCode::NONE, b"x").unwrap();
        self.send_to_node(&bytes)
    }

    /// The calls the node's application was handed since the last look.
    pub fn opened(&mut self) -> Vec<(CallId, Command)> {
        let mut calls = Vec::new();
        while let Some(event) = self.node.poll_app() {
            if let AppEvent::Opened { call, command, .. } = event {
                calls.push((call, command));
            }
        }
        calls
    }
}

/// The node's span for `MOUNT`, as P saw it open.
pub fn span_of(seen: &[Seen]) -> TxnId {
    seen.iter()
        .find(|s| s.command == Command::LINK_SPAN && s.flags == Flags::CREATE)
        .map(|s| s.txn)
        .expect("the node advertises its mount")
}

/// Whether `seen` holds the node's refusal of `txn`: a forced close carrying `REFUSED`.
pub fn refused(seen: &[Seen], txn: TxnId, command: Command) -> bool {
    seen.iter().any(|s| {
        s.txn == txn
            && s.flags == Flags::REPLY | Flags::CREATE | Flags::ABORT | Flags::DELETE
            && s.error == ErrorCode::REFUSED
            && s.command == command
    })
}
