//! One node and scripted peers: bare transaction links standing for its neighbours, to feed the
//! node what a peer could send (within the protocol and past its rights or shares) and read what
//! it answers.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::{BareLink, LinkCounters, LinkInfo, LinkSet, LinkUp, Node};
use crate::error::{Error, Violation};
use crate::ids::{ClusterId, LinkId, MountId, NodeId, TxnId};
use crate::limits::{CLIENT_MOUNTS_PER_CLIENT, RELAY_CIRCUITS_PER_LINK_MAX};
use crate::link::RecordIn;
use crate::span::{
    Advert, ClientHolder, Hello, Label, Metric, MountKey, MountKind, Role, Seqno, SpanLink, Wants,
};
use crate::txn::{self, Event, Received};
use crate::wire::{ADVERT_LEN_MAX, HELLO_LEN_MAX};
use crate::wire::{Command, ErrorCode, Flags, Messages};

const CALL: Command = Command::new(1, 1);

// Mounts applications attach through local links (`attach.rs`).
mod attach;
// Traces through the node (`trace.rs`).
mod trace;

/// A message a scripted peer received, owned.
#[derive(Clone, Debug)]
struct Got {
    txn: TxnId,
    parent: Option<TxnId>,
    flags: Flags,
    error: ErrorCode,
    payload: Vec<u8>,
}

impl Got {
    fn of(d: &txn::Delivery<'_>) -> Got {
        Got {
            txn: d.txn,
            parent: d.parent,
            flags: d.flags,
            error: d.error,
            payload: d.payload.to_vec(),
        }
    }
}

struct Peer {
    link: LinkId,
    /// The peer's transactions.
    txn: txn::Link,
    /// The node's end of this link: its transactions and span state.
    ours: BareLink,
    to_node: Vec<u8>,
    to_peer: Vec<u8>,
    got: Vec<Got>,
    /// The node's spans as this peer hears them.
    spans: HashMap<MountKey, TxnId>,
    /// Why the node closed the link, if it did.
    closed: Option<Error>,
}

/// The node's ends of the peers' links, as the set it writes through: a link the node closed
/// is not written.
struct Ours<'a>(&'a mut [Peer]);

impl LinkSet for Ours<'_> {
    type Out<'b>
        = Vec<u8>
    where
        Self: 'b;

    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        let peer = self.0.iter_mut().find(|p| p.link == link && p.closed.is_none())?;
        Some(f(&mut peer.ours.span, &mut peer.ours.txn, &mut peer.to_peer))
    }

    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        Some(&mut self.0.iter_mut().find(|p| p.link == link)?.ours.span)
    }

    /// As the engine forwards a record from the receive buffer it arrived in: `edit` rewrites
    /// the received record itself.
    fn with_record<R>(
        &mut self,
        link: LinkId,
        record: &mut RecordIn<'_>,
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let peer = self.0.iter_mut().find(|p| p.link == link && p.closed.is_none())?;
        let result = edit(&peer.ours.txn, record.plaintext_mut())?;
        peer.to_peer.extend_from_slice(record.plaintext());
        Some(result)
    }
}

struct Bench {
    node: Node,
    peers: Vec<Peer>,
    now: Instant,
}

fn key(cluster: u128, mount: u128) -> MountKey {
    MountKey { cluster: ClusterId(cluster), mount: MountId(mount) }
}

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)] // the bench's time starts here; only durations are added
    Instant::now()
}

fn advert(mount: MountKey, kind: MountKind) -> Vec<u8> {
    let advert = Advert {
        mount,
        kind,
        label: Label::EMPTY,
        origin: NodeId(77),
        seqno: Seqno(1),
        metric: Metric(0),
    };
    let mut buf = [0u8; ADVERT_LEN_MAX];
    let n = advert.encode(&mut buf);
    buf[..n].to_vec()
}

impl Bench {
    /// A node (id 1) of `role`, serving clients of cluster 1.
    fn new(role: Role) -> Bench {
        let now = t0();
        let mut node = Node::new(NodeId(1), Hello::new(role, Wants::all()), now);
        node.serve_client_clusters([ClusterId(1)]);
        Bench { node, peers: Vec::new(), now }
    }

    /// A scripted peer on a new link, not yet known to the node. Its index.
    fn add_peer(&mut self) -> usize {
        self.peers.push(Peer {
            link: LinkId(self.peers.len() as u64 + 10),
            txn: txn::Link::new(),
            ours: BareLink::default(),
            to_node: Vec::new(),
            to_peer: Vec::new(),
            got: Vec::new(),
            spans: HashMap::new(),
            closed: None,
        });
        self.peers.len() - 1
    }

    /// A peer `id` whose key the node grants `granted`, saying hello as `claims`. Its index.
    fn connect(&mut self, id: u128, granted: Role, claims: Role) -> usize {
        let p = self.add_peer();
        let (link, peer) = (self.peers[p].link, &mut self.peers[p]);
        let mut hello = [0u8; HELLO_LEN_MAX];
        let n = Hello::new(claims, Wants::all()).encode(&mut hello);
        peer.txn
            .open(&mut peer.to_node, None, Command::LINK_CONN, &hello[..n], Flags::NONE)
            .unwrap();
        let (node, mut ours) = self.node();
        let up = node.link_up(link, NodeId(id), granted, false, &mut ours).unwrap();
        assert_eq!(up, LinkUp::Up);
        self.pump();
        p
    }

    /// A router peer (id 2) advertising `mount` as a master, heard by the node. Its index.
    fn advertising_server(&mut self, mount: MountKey) -> usize {
        let server = self.connect(2, Role::Router, Role::Router);
        self.send(server, |txn, out| {
            txn.open(out, None, Command::LINK_SPAN, &advert(mount, MountKind::Master), Flags::NONE)
                .unwrap()
        });
        self.pump();
        server
    }

    /// The node, and the set of links it writes through.
    fn node(&mut self) -> (&mut Node, Ours<'_>) {
        (&mut self.node, Ours(&mut self.peers))
    }

    /// What the node reports of its links.
    fn infos(&mut self) -> Vec<LinkInfo> {
        let (node, mut ours) = self.node();
        node.link_info(&mut ours).collect()
    }

    /// What the node reports of the link to peer `p`.
    fn info(&mut self, p: usize) -> LinkInfo {
        let link = self.peers[p].link;
        self.infos().into_iter().find(|i| i.link == link).unwrap()
    }

    /// What peer `p` sends next, written with its transactions.
    fn send<R>(&mut self, p: usize, f: impl FnOnce(&mut txn::Link, &mut Vec<u8>) -> R) -> R {
        let peer = &mut self.peers[p];
        f(&mut peer.txn, &mut peer.to_node)
    }

    /// Moves every byte both ways until nothing moves.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for p in 0..self.peers.len() {
                moved |= self.deliver_to_node(p);
            }
            for p in 0..self.peers.len() {
                moved |= self.deliver_to_peer(p);
            }
            if !moved {
                return;
            }
        }
    }

    /// What peer `p` wrote, handled by the node; a refusal closes the link as the engine would.
    fn deliver_to_node(&mut self, p: usize) -> bool {
        let peer = &mut self.peers[p];
        if peer.closed.is_some() || peer.to_node.is_empty() {
            return false;
        }
        let bytes = std::mem::take(&mut peer.to_node);
        let link = peer.link;
        let now = self.now;
        let (node, mut ours) = self.node();
        node.handle_timeout(now, &mut ours);
        let mut result = Ok(());
        for message in Messages::new(&bytes) {
            let message = message.unwrap();
            result = (|| {
                let peer = &mut ours.0[p];
                let received = peer.ours.txn.handle_message(&mut peer.to_peer, &message)?;
                if let Some(received) = received {
                    node.received(link, &mut ours, received)?;
                }
                while let Some(event) = ours.0[p].ours.txn.poll_event() {
                    node.event(link, &mut ours, event)?;
                }
                Ok(())
            })();
            if result.is_err() {
                break;
            }
        }
        if let Err(error) = result {
            self.link_lost(p, error);
        }
        true
    }

    /// Peer `p`'s link is gone (closed by the node for `why`, or cut): the node ends its
    /// transactions as the engine would.
    fn link_lost(&mut self, p: usize, why: Error) {
        let link = self.peers[p].link;
        self.peers[p].ours.txn.handle_link_down(ErrorCode::LOST_LINK);
        // Its synthesized closes are handled with the link still in the set, as the engine
        // hands a closing link's own state with them; what the node writes on it is dropped.
        while let Some(event) = self.peers[p].ours.txn.poll_event() {
            let (node, mut ours) = self.node();
            let _ = node.event(link, &mut ours, event);
        }
        self.peers[p].to_peer.clear();
        self.peers[p].closed = Some(why);
        let (node, mut ours) = self.node();
        node.link_down(link, &mut ours);
    }

    /// What the node wrote to peer `p`, handled by the peer's transactions and logged.
    fn deliver_to_peer(&mut self, p: usize) -> bool {
        let peer = &mut self.peers[p];
        if peer.closed.is_some() || peer.to_peer.is_empty() {
            return false;
        }
        let bytes = std::mem::take(&mut peer.to_peer);
        for message in Messages::new(&bytes) {
            let message = message.unwrap();
            let received = peer.txn.handle_message(&mut peer.to_node, &message).unwrap();
            if let Some(Received::Txn(d)) = received {
                if d.opens() && d.command == Command::LINK_SPAN {
                    let advert = Advert::decode(d.payload).unwrap();
                    peer.spans.insert(advert.mount, d.txn);
                }
                peer.got.push(Got::of(&d));
            }
            while let Some(event) = peer.txn.poll_event() {
                if let Event::Delivery(d) = event {
                    peer.got.push(Got::of(&d));
                }
            }
        }
        true
    }

    /// The forced closes peer `p` received on `txn`, with their error codes.
    fn forced(&self, p: usize, txn: TxnId) -> Vec<ErrorCode> {
        self.peers[p]
            .got
            .iter()
            .filter(|g| g.txn == txn && g.flags.contains(Flags::ABORT | Flags::DELETE))
            .map(|g| g.error)
            .collect()
    }
}

#[test]
fn a_hello_claiming_more_than_its_key_was_granted_closes_its_link_alone() {
    let mut b = Bench::new(Role::Satellite);
    let honest = b.connect(2, Role::Router, Role::Router);
    let modest = b.connect(3, Role::Router, Role::Client);
    let stranger = b.connect(4, Role::Client, Role::Router);
    assert_eq!(
        b.peers[stranger].closed,
        Some(Violation::RoleNotGranted { claimed: "router", granted: "client" }.into())
    );
    assert!(b.peers[stranger].closed.unwrap().closes_link(), "counted as the peer's fault");
    assert!(b.peers[honest].closed.is_none() && b.peers[modest].closed.is_none());
    let roles: Vec<Option<Role>> = b.infos().iter().map(|i| i.role).collect();
    assert_eq!(roles.len(), 2);
    assert!(roles.contains(&Some(Role::Router)) && roles.contains(&Some(Role::Client)));
}

#[test]
fn a_clients_mounts_are_refused_alone_outside_its_rights() {
    let mut b = Bench::new(Role::Satellite);
    let first = b.connect(2, Role::Client, Role::Client);
    let second = b.connect(3, Role::Client, Role::Client);
    let open = |b: &mut Bench, p: usize, mount: MountKey| {
        let span = b.send(p, |txn, out| {
            txn.open(out, None, Command::LINK_SPAN, &advert(mount, MountKind::Cache), Flags::NONE)
                .unwrap()
        });
        b.pump();
        span
    };
    // In a cluster the node serves: held. Another cluster: refused. Another client's: refused.
    let held = open(&mut b, first, key(1, 5));
    let other_cluster = open(&mut b, first, key(2, 6));
    let taken = open(&mut b, second, key(1, 5));
    assert!(b.forced(first, held).is_empty());
    assert_eq!(b.forced(first, other_cluster), [ErrorCode::REFUSED]);
    assert_eq!(b.forced(second, taken), [ErrorCode::REFUSED]);
    assert_eq!(
        b.node.clients().holder(key(1, 5)),
        Some(ClientHolder::Here(crate::ids::NeighbourId(b.peers[first].link.0)))
    );
    // Its share of mounts: one more is refused with LIMIT_REACHED.
    let more: Vec<TxnId> = (0..CLIENT_MOUNTS_PER_CLIENT as u128)
        .map(|n| open(&mut b, first, key(1, 100 + n)))
        .collect();
    let refused: Vec<&TxnId> = more.iter().filter(|t| !b.forced(first, **t).is_empty()).collect();
    assert_eq!(refused.len(), 1);
    assert_eq!(b.forced(first, *refused[0]), [ErrorCode::LIMIT_REACHED]);
    // None of it closed a link or reached the table; one aggregate stands for them.
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
    assert_eq!(b.node.clients().len(), CLIENT_MOUNTS_PER_CLIENT);
    let routes: Vec<MountKey> = b.node.table().mounts().map(|(k, _)| k).collect();
    assert_eq!(routes, [b.node.aggregate_of(ClusterId(1))]);
    let info = b.info(first);
    assert_eq!((info.counters.spans_refused, info.counters.spans_limited), (1, 1));
    // What the clients counted outlives their links: an operator's counters never go down.
    assert_eq!(b.node.clients_gone(), LinkCounters::default());
    b.link_lost(first, Error::Misuse(crate::error::Misuse::LinkDown));
    b.link_lost(second, Error::Misuse(crate::error::Misuse::LinkDown));
    let gone = b.node.clients_gone();
    assert_eq!((gone.spans_refused, gone.spans_limited), (2, 1));
    assert_eq!(b.infos().len(), 0);
}

#[test]
fn a_clients_updates_keep_its_mount_and_only_client_kinds_pass() {
    // PROTOCOL.md 8.6: the directory keeps only who holds a client mount, so an update (a new
    // label, cache to client) is accepted and changes nothing; a kind a client may not hold
    // closes its link, as at the span's CREATE.
    let mut b = Bench::new(Role::Satellite);
    let client = b.connect(2, Role::Client, Role::Client);
    let mount = key(1, 5);
    let span = b.send(client, |txn, out| {
        txn.open(out, None, Command::LINK_SPAN, &advert(mount, MountKind::Cache), Flags::NONE)
            .unwrap()
    });
    b.pump();
    let holder = Some(ClientHolder::Here(crate::ids::NeighbourId(b.peers[client].link.0)));
    assert_eq!(b.node.clients().holder(mount), holder);
    let update = |b: &mut Bench, kind: MountKind, label: &[u8]| {
        let label = Label::new(label).unwrap();
        let advert =
            Advert { mount, kind, label, origin: NodeId(2), seqno: Seqno(2), metric: Metric(0) };
        let mut buf = [0u8; ADVERT_LEN_MAX];
        let n = advert.encode(&mut buf);
        b.send(client, |txn, out| {
            txn.send(out, span, Command::LINK_SPAN, &buf[..n], Flags::NONE, ErrorCode::NONE)
                .unwrap()
        });
        b.pump();
    };
    update(&mut b, MountKind::Client, b"renamed");
    assert!(b.peers[client].closed.is_none() && b.forced(client, span).is_empty());
    assert_eq!(b.node.clients().holder(mount), holder);
    update(&mut b, MountKind::Master, b"");
    assert_eq!(
        b.peers[client].closed,
        Some(
            Violation::LinkProtocol("a client advertised a mount that is not a client or cache")
                .into()
        )
    );
    assert_eq!(b.node.clients().holder(mount), None, "its mounts go with its link");
}

#[test]
fn a_child_opened_under_a_circuit_the_node_forced_does_not_close_the_link() {
    // PROTOCOL.md 6.5: the node forces a call closed while the peer, not knowing yet, opens a
    // transaction inside it. The transaction layer forces the child itself; the node must not
    // then refuse it again (which used to close the link as a local misuse).
    let mut b = Bench::new(Role::Router);
    let (node, mut ours) = b.node();
    node.attach(key(1, 9), MountKind::Master, Label::EMPTY, &mut ours).unwrap();
    let peer = b.connect(2, Role::Router, Role::Router);
    b.pump();
    let span = b.peers[peer].spans[&key(1, 9)];
    let call = b.send(peer, |txn, out| txn.open(out, Some(span), CALL, b"x", Flags::NONE).unwrap());
    b.pump();
    let Some(super::AppEvent::Opened { call: app_call, .. }) = b.node.poll_app() else {
        panic!("the call reaches the application")
    };
    // The application refuses it; before the peer hears, it opens a child inside.
    let (node, mut ours) = b.node();
    node.send(app_call, CALL, &[], Flags::ABORT | Flags::DELETE, ErrorCode::REFUSED, &mut ours)
        .unwrap();
    b.send(peer, |txn, out| txn.open(out, Some(call), CALL, b"child", Flags::NONE).unwrap());
    b.pump();
    assert!(b.peers[peer].closed.is_none(), "{:?}", b.peers[peer].closed);
    assert_eq!(b.forced(peer, call), [ErrorCode::REFUSED]);
    let child = b.peers[peer].got.iter().find(|g| g.parent == Some(call)).map(|g| g.txn);
    assert!(child.is_some_and(|c| !b.forced(peer, c).is_empty()), "the child is forced too");
}

#[test]
fn a_path_lost_after_the_last_reply_still_reaches_the_caller() {
    // The server answers with its last message (DELETE) while the caller's side stays open;
    // then the server's link is lost. The caller must hear LOST_LINK (one forced close may
    // follow a DELETE: PROTOCOL.md 6.5), not keep a call that silently goes nowhere.
    let mut b = Bench::new(Role::Router);
    let mount = key(1, 7);
    let server = b.advertising_server(mount);
    let caller = b.connect(3, Role::Router, Role::Router);
    let span = b.peers[caller].spans[&mount];
    let call =
        b.send(caller, |txn, out| txn.open(out, Some(span), CALL, b"q", Flags::NONE).unwrap());
    b.pump();
    let upstream = b.peers[server].got.iter().find(|g| g.parent.is_some()).map(|g| g.txn).unwrap();
    b.send(server, |txn, out| {
        txn.send(out, upstream, CALL, b"a", Flags::DELETE, ErrorCode::NONE).unwrap()
    });
    b.pump();
    assert!(b.peers[caller].got.iter().any(|g| g.txn == call && g.flags.contains(Flags::DELETE)));
    // Further along, the path is lost: the server's end forces the call after its DELETE (as
    // a relay next to a lost link does). The node passes that on.
    b.send(server, |txn, out| {
        txn.send(out, upstream, CALL, &[], Flags::ABORT | Flags::DELETE, ErrorCode::LOST_LINK)
            .unwrap()
    });
    b.pump();
    assert_eq!(b.forced(caller, call), [ErrorCode::LOST_LINK]);
    assert_eq!(b.node.circuits(), 0, "nothing left once the caller answered");
    // The same when the server's own link is lost under a second such call.
    let call =
        b.send(caller, |txn, out| txn.open(out, Some(span), CALL, b"q", Flags::NONE).unwrap());
    b.pump();
    let upstream = b.peers[server].got.iter().rev().find(|g| g.parent.is_some()).unwrap().txn;
    b.send(server, |txn, out| {
        txn.send(out, upstream, CALL, b"a", Flags::DELETE, ErrorCode::NONE).unwrap()
    });
    b.pump();
    b.link_lost(server, Error::Misuse(crate::error::Misuse::LinkDown));
    b.pump();
    assert_eq!(b.forced(caller, call), [ErrorCode::LOST_LINK]);
    assert_eq!(b.node.circuits(), 0);
}

#[test]
fn a_link_full_of_one_peers_circuits_gives_way_to_a_peer_holding_fewer() {
    // A hog and an honest caller, both routers, calling a mount behind a third peer. The hog
    // opens as many circuits as the next link holds and never closes them.
    let mut b = Bench::new(Role::Router);
    let mount = key(1, 7);
    let server = b.advertising_server(mount);
    let hog = b.connect(3, Role::Router, Role::Router);
    let honest = b.connect(4, Role::Router, Role::Router);
    let span = |b: &Bench, p: usize| b.peers[p].spans[&mount];
    let hog_span = span(&b, hog);
    let hog_calls: Vec<TxnId> = (0..RELAY_CIRCUITS_PER_LINK_MAX)
        .map(|_| {
            b.send(hog, |txn, out| txn.open(out, Some(hog_span), CALL, b"", Flags::NONE).unwrap())
        })
        .collect();
    b.pump();
    let to_server = b.info(server);
    assert_eq!(to_server.circuits_open, RELAY_CIRCUITS_PER_LINK_MAX);
    // The hog's next one is refused; the honest caller's goes through, in place of the hog's
    // oldest, which is aborted back to the hog with LIMIT_REACHED.
    let extra =
        b.send(hog, |txn, out| txn.open(out, Some(hog_span), CALL, b"", Flags::NONE).unwrap());
    let honest_span = span(&b, honest);
    let fair = b
        .send(honest, |txn, out| txn.open(out, Some(honest_span), CALL, b"", Flags::NONE).unwrap());
    b.pump();
    assert_eq!(b.forced(hog, extra), [ErrorCode::LIMIT_REACHED]);
    assert!(b.forced(honest, fair).is_empty(), "the honest call is carried");
    assert_eq!(b.forced(hog, hog_calls[0]), [ErrorCode::LIMIT_REACHED], "the oldest gave way");
    assert!(b.forced(hog, hog_calls[1]).is_empty());
    assert_eq!(b.info(hog).counters.circuits_preempted, 1);
    assert_eq!(b.info(hog).counters.circuits_limited, 1);
    assert_eq!(b.info(honest).counters.circuits_limited, 0);
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
}

#[test]
fn circuits_idle_past_the_bound_are_aborted_at_both_ends() {
    let mut b = Bench::new(Role::Router);
    let mount = key(1, 7);
    let server = b.advertising_server(mount);
    let caller = b.connect(3, Role::Router, Role::Router);
    let idle = Duration::from_secs(10);
    b.node.set_circuit_idle(idle);
    let span = b.peers[caller].spans[&mount];
    let call =
        b.send(caller, |txn, out| txn.open(out, Some(span), CALL, b"", Flags::NONE).unwrap());
    b.pump();
    // Busy for a while: it stays.
    for _ in 0..4 {
        b.now += idle / 2;
        let now = b.now;
        let (node, mut ours) = b.node();
        node.handle_timeout(now, &mut ours);
        b.send(caller, |txn, out| {
            txn.send(out, call, CALL, b"tick", Flags::NONE, ErrorCode::NONE).unwrap()
        });
        b.pump();
    }
    assert!(b.forced(caller, call).is_empty());
    // Quiet past the bound (at most one and a half times it): aborted both ways.
    for _ in 0..3 {
        b.now += idle / 2;
        let now = b.now;
        let (node, mut ours) = b.node();
        node.handle_timeout(now, &mut ours);
        b.pump();
    }
    assert_eq!(b.forced(caller, call), [ErrorCode::IDLE]);
    let upstream = b.peers[server].got.iter().find(|g| g.parent.is_some()).map(|g| g.txn).unwrap();
    assert_eq!(b.forced(server, upstream), [ErrorCode::IDLE]);
    assert_eq!(b.node.counters().idle, 1);
}

#[test]
fn a_second_link_to_a_linked_node_is_resolved_alike_at_both_ends() {
    let now = t0();
    let node = |id: u128| Node::new(NodeId(id), Hello::new(Role::Router, Wants::all()), now);
    let (mut small, mut big) = (node(1), node(2));
    let up = |n: &mut Node, link: u64, peer: u128, dialled: bool| {
        let (mut ours, mut out) = (BareLink::default(), Vec::new());
        let links = &mut super::OneLink::new(LinkId(link), &mut ours, &mut out);
        n.link_up(LinkId(link), NodeId(peer), Role::Router, dialled, links).unwrap()
    };
    // Both dial at once: link 1 dialled by the smaller id, link 2 by the bigger. Each end sees
    // them in a different order, and both keep link 1.
    assert_eq!(up(&mut small, 1, 2, true), LinkUp::Up);
    assert_eq!(up(&mut small, 2, 2, false), LinkUp::Duplicate { keep: Some(LinkId(1)) });
    assert_eq!(up(&mut big, 2, 1, true), LinkUp::Up);
    assert_eq!(up(&mut big, 1, 1, false), LinkUp::Replaces { old: LinkId(2) });
    // Two links the same way (a second process with the same key): the older stays.
    assert_eq!(up(&mut small, 3, 2, true), LinkUp::Duplicate { keep: Some(LinkId(1)) });
    // A link to itself is refused.
    assert_eq!(up(&mut small, 4, 1, true), LinkUp::Duplicate { keep: None });
    assert_eq!(small.counters().duplicates, 3);
}

/// A router `server` advertising `mount`, and a router `caller` that heard of it: the bench and
/// both peers' indexes.
fn server_and_caller(mount: MountKey) -> (Bench, usize, usize) {
    let mut b = Bench::new(Role::Router);
    let server = b.advertising_server(mount);
    let caller = b.connect(3, Role::Router, Role::Router);
    (b, server, caller)
}

#[test]
fn a_close_written_into_the_next_link_ends_its_transaction_before_the_input_returns() {
    // The server has sent its last reply; the caller's DELETE, written straight into the server's
    // link, completes the pair there. That end is handled (the circuit freed) within the same
    // input, not left for later.
    let mount = key(1, 7);
    let (mut b, server, caller) = server_and_caller(mount);
    let span = b.peers[caller].spans[&mount];
    let before = b.peers[server].ours.txn.len();
    let call =
        b.send(caller, |txn, out| txn.open(out, Some(span), CALL, b"q", Flags::NONE).unwrap());
    b.pump();
    let upstream = b.peers[server].got.iter().find(|g| g.parent.is_some()).map(|g| g.txn).unwrap();
    b.send(server, |txn, out| {
        txn.send(out, upstream, CALL, b"a", Flags::DELETE, ErrorCode::NONE).unwrap()
    });
    b.pump();
    assert_eq!(b.node.circuits(), 1, "half closed: the circuit stays");
    b.send(caller, |txn, out| {
        txn.send(out, call, CALL, &[], Flags::DELETE, ErrorCode::NONE).unwrap()
    });
    assert!(b.deliver_to_node(caller));
    assert_eq!(b.node.circuits(), 0, "both ends over within the caller's input");
    assert_eq!(b.peers[server].ours.txn.len(), before, "the server link's transaction ended");
    b.pump();
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
    let closes = |p: usize, txn: TxnId| {
        b.peers[p].got.iter().filter(|g| g.txn == txn && g.flags.contains(Flags::DELETE)).count()
    };
    assert_eq!((closes(caller, call), closes(server, upstream)), (1, 1), "one close each way");
    assert!(b.forced(caller, call).is_empty() && b.forced(server, upstream).is_empty());
}

#[test]
fn an_application_close_that_ends_its_call_reports_the_end_before_it_returns() {
    // A call to the node's own mount: the caller closes its side first; the application's
    // last reply then ends the transaction on the caller's link, and the application hears
    // its call ended as soon as `send` returns (the event of the write is handled in it).
    let mut b = Bench::new(Role::Router);
    let (node, mut ours) = b.node();
    node.attach(key(1, 9), MountKind::Master, Label::EMPTY, &mut ours).unwrap();
    let peer = b.connect(2, Role::Router, Role::Router);
    b.pump();
    let span = b.peers[peer].spans[&key(1, 9)];
    let call =
        b.send(peer, |txn, out| txn.open(out, Some(span), CALL, b"x", Flags::DELETE).unwrap());
    b.pump();
    let Some(super::AppEvent::Opened { call: app_call, .. }) = b.node.poll_app() else {
        panic!("the call reaches the application")
    };
    assert_eq!(b.node.poll_app(), None);
    let (node, mut ours) = b.node();
    node.send(app_call, CALL, b"y", Flags::DELETE, ErrorCode::NONE, &mut ours).unwrap();
    assert_eq!(
        b.node.poll_app(),
        Some(super::AppEvent::Ended { call: app_call, error: ErrorCode::NONE })
    );
    assert_eq!(b.node.circuits(), 0);
    b.pump();
    let reply = b.peers[peer].got.iter().find(|g| g.txn == call && g.flags.contains(Flags::DELETE));
    assert!(reply.is_some(), "the reply reached the caller");
}

#[test]
fn a_record_forwarded_where_it_arrived_is_left_as_it_was_unless_all_of_it_goes_on() {
    // Two calls from one caller through the node, to mounts behind two servers.
    let (first, second) = (key(1, 7), key(1, 8));
    let mut b = Bench::new(Role::Router);
    let server = b.advertising_server(first);
    let other = b.connect(4, Role::Router, Role::Router);
    b.send(other, |txn, out| {
        txn.open(out, None, Command::LINK_SPAN, &advert(second, MountKind::Master), Flags::NONE)
            .unwrap()
    });
    let caller = b.connect(3, Role::Router, Role::Router);
    b.pump();
    let spans = &b.peers[caller].spans;
    let (to_first, to_second) = (spans[&first], spans[&second]);
    let calls = [to_first, to_second]
        .map(|span| b.send(caller, |txn, out| txn.open(out, Some(span), CALL, b"o", Flags::NONE)));
    let [one, two] = calls.map(Result::unwrap);
    b.pump();
    let upstream = b.peers[server].got.iter().find(|g| g.parent.is_some()).unwrap().txn;
    // A record as it arrived: two messages of the first call's stream, then one of the second's.
    let mut record = Vec::new();
    let caller_txn = &mut b.peers[caller].txn;
    for (call, payload) in [(one, b"a"), (one, b"b"), (two, b"c")] {
        caller_txn.send(&mut record, call, CALL, payload, Flags::NONE, ErrorCode::NONE).unwrap();
    }
    let arrived = record.clone();
    let link = b.peers[caller].link;
    let ours = std::mem::take(&mut b.peers[caller].ours);
    let forward = |b: &mut Bench, record: &mut Vec<u8>| {
        let (node, mut links) = b.node();
        node.forward_record(link, &ours.txn, &mut links, &mut RecordIn::plaintext_only(record))
    };
    // Not all of it continues on one link: nothing is sent, and not a byte of it changed.
    assert_eq!(forward(&mut b, &mut record), None);
    assert_eq!(record, arrived, "the record is as it arrived");
    // The first call's two messages alone go on, rewritten for the server's link.
    let two_messages: usize = Messages::new(&arrived).take(2).map(|m| m.unwrap().wire_len()).sum();
    record.truncate(two_messages);
    let before = b.peers[server].got.iter().filter(|g| g.txn == upstream).count();
    assert_eq!(forward(&mut b, &mut record), Some(2));
    b.peers[caller].ours = ours;
    b.pump();
    let after = b.peers[server].got.iter().filter(|g| g.txn == upstream).count();
    assert_eq!(after, before + 2, "the server's transaction took both");
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
}

#[test]
fn a_link_going_down_is_withdrawn_through_its_own_span_state() {
    let mut b = Bench::new(Role::Satellite);
    let server = b.advertising_server(key(1, 9));
    let client = b.connect(3, Role::Client, Role::Client);
    b.send(client, |txn, out| {
        txn.open(out, None, Command::LINK_SPAN, &advert(key(1, 5), MountKind::Client), Flags::NONE)
            .unwrap()
    });
    b.pump();
    // The span state is the link's: what the node reports of it comes from there.
    assert_eq!(b.peers[client].ours.span.spans_received(), 1);
    let info = b.info(client);
    assert_eq!((info.role, info.spans_in), (Some(Role::Client), 1));
    assert!(b.node.route(key(1, 9)).is_some());
    assert_eq!(b.node.clients().len(), 1);
    // Closed links cannot be written, yet the node reaches their span state to withdraw what
    // they advertised: the client's mount leaves the directory, the server's route the table.
    b.link_lost(client, Error::Misuse(crate::error::Misuse::LinkDown));
    assert_eq!(b.node.clients().len(), 0);
    assert_eq!(b.peers[client].ours.span.spans_received(), 0, "cleared at link down");
    b.link_lost(server, Error::Misuse(crate::error::Misuse::LinkDown));
    assert!(b.node.route(key(1, 9)).is_none());
}

#[test]
fn a_link_whose_span_state_is_gone_still_leaves_the_table() {
    let mut b = Bench::new(Role::Router);
    let server = b.advertising_server(key(1, 9));
    assert!(b.node.route(key(1, 9)).is_some());
    // A set that no longer holds the link (a driver that dropped it too early): the table
    // forgets the neighbour all the same, so no route points at a link that is gone.
    b.node.link_down(b.peers[server].link, &mut super::NoLinks);
    assert!(b.node.route(key(1, 9)).is_none());
    assert_eq!(b.infos().len(), 0);
}

#[test]
fn links_to_sibling_planes_are_never_duplicates_but_a_link_to_our_own_key_is() {
    let mut b = Bench::new(Role::Router);
    let own = b.node.id();
    // Two planes beside this one (internal links): both up, both with our own id.
    for plane in 1..3 {
        let p = b.add_peer();
        let link = b.peers[p].link;
        let (node, mut ours) = b.node();
        node.sibling_up(link, plane, &mut ours).unwrap();
        assert_eq!(b.peers[p].ours.span.granted(), Role::Router);
    }
    let infos = b.infos();
    assert_eq!(infos.len(), 2);
    assert!(infos.iter().all(|i| i.peer == own && i.granted == Role::Router));
    // Our hello went out on each.
    assert!(b.peers.iter().all(|p| !p.to_peer.is_empty()));
    // A link from outside showing our own key is refused as a link to ourselves.
    let mut lone = BareLink::default();
    let mut out = Vec::new();
    let links = &mut super::OneLink::new(LinkId(12), &mut lone, &mut out);
    let up = b.node.link_up(LinkId(12), own, Role::Router, false, links).unwrap();
    assert_eq!(up, LinkUp::Duplicate { keep: None });
}

#[test]
fn a_planes_note_names_who_holds_its_next_circuit_and_a_peers_is_dropped() {
    let mut b = Bench::new(Role::Router);
    b.advertising_server(key(1, 9));
    // Another plane of this node on an internal link, and a router peer: each opens a call to
    // the server's mount after a `LINK_HOLDER` note naming link 77 (on another plane).
    let plane = b.add_peer();
    let (link, peer) = (b.peers[plane].link, &mut b.peers[plane]);
    let mut hello = [0u8; HELLO_LEN_MAX];
    let n = Hello::new(Role::Router, Wants::all()).encode(&mut hello);
    peer.txn.open(&mut peer.to_node, None, Command::LINK_CONN, &hello[..n], Flags::NONE).unwrap();
    let (node, mut ours) = b.node();
    node.sibling_up(link, 1, &mut ours).unwrap();
    let router = b.connect(3, Role::Router, Role::Router);
    b.pump();
    for p in [plane, router] {
        let span = b.peers[p].spans[&key(1, 9)];
        b.send(p, |txn, out| {
            txn.send_oneway(out, Command::LINK_HOLDER, ErrorCode::NONE, &77u64.to_le_bytes())
                .unwrap();
            txn.open(out, Some(span), CALL, b"call", Flags::NONE).unwrap()
        });
        b.pump();
    }
    // The plane's circuit is held by link 77, not by the internal link; the router's note was
    // dropped, and its circuit is its own link's.
    assert_eq!(b.node.circuits(), 2);
    assert_eq!(b.node.circuits_from_planes(), 1);
    assert_eq!(b.info(plane).circuits_held, 0);
    assert_eq!(b.info(router).circuits_held, 1);
}
