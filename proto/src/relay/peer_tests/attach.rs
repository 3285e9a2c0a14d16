//! Mounts applications attach through local links (PROTOCOL.md 8.11), with one node and
//! scripted peers: what the node advertises, where calls to the mount go, what it refuses, and
//! what an application's close or loss does.

use super::{Bench, key};
use crate::error::Violation;
use crate::ids::TxnId;
use crate::limits::ATTACH_MOUNTS_PER_LINK_MAX;
use crate::span::{MountKey, Role};
use crate::wire::{ATTACH_LEN_MAX, AttachRequest, Command, ErrorCode, Flags};

const CALL: Command = super::CALL;

/// An attach request for `mount` as a master labelled `kv`.
fn request(mount: MountKey) -> Vec<u8> {
    let request =
        AttachRequest { cluster: mount.cluster, mount: mount.mount, kind: 0, label: b"kv" };
    let mut buf = [0u8; ATTACH_LEN_MAX];
    let n = request.emit(&mut buf);
    buf[..n].to_vec()
}

impl Bench {
    /// An application on a local link (peer id `id`, granted a client). Its index.
    fn application(&mut self, id: u128) -> usize {
        let app = self.connect(id, Role::Client, Role::Client);
        let link = self.peers[app].link;
        self.node.set_local(link);
        app
    }

    /// Peer `p` opens a `LINK_ATTACH` with `payload` and `flags`, and everything moves.
    fn attach(&mut self, p: usize, payload: &[u8], flags: Flags) -> TxnId {
        let txn = self
            .send(p, |txn, out| txn.open(out, None, Command::LINK_ATTACH, payload, flags).unwrap());
        self.pump();
        txn
    }

    /// Application `p` answers the call the node opened inside its `attach` (whose first
    /// payload must be `asked`) with `answer`, and everything moves.
    fn answer_inside(&mut self, p: usize, attach: TxnId, asked: &[u8], answer: &[u8]) {
        let opened = self.peers[p].got.iter().find(|g| g.parent == Some(attach)).unwrap().clone();
        assert_eq!(opened.payload, asked);
        self.send(p, |txn, out| {
            txn.send(out, opened.txn, CALL, answer, Flags::DELETE, ErrorCode::NONE)
        })
        .unwrap();
        self.pump();
    }

    /// Whether peer `p` heard the node retract the span of `mount` it had advertised.
    fn retracted(&self, p: usize, mount: MountKey) -> bool {
        let span = self.peers[p].spans[&mount];
        self.peers[p].got.iter().any(|g| g.txn == span && g.flags.contains(Flags::DELETE))
    }
}

#[test]
fn an_attached_mount_is_advertised_as_the_nodes_and_its_calls_go_to_the_application() {
    let mount = key(1, 0x10);
    let mut b = Bench::new(Role::Router);
    let caller = b.connect(3, Role::Router, Role::Router);
    let app = b.application(4);
    let attach = b.attach(app, &request(mount), Flags::NONE);
    // Taken: answered with an empty LINK_ATTACH that leaves it open.
    let answer = b.peers[app].got.iter().find(|g| g.txn == attach).unwrap();
    assert_eq!(
        (answer.flags & (Flags::DELETE | Flags::ABORT), answer.error),
        (Flags::NONE, ErrorCode::NONE)
    );
    // The neighbour hears it from the node, as the node's own mount.
    let span = *b.peers[caller].spans.get(&mount).expect("the caller hears the mount");
    let route = b.node.table.route(mount).unwrap();
    assert_eq!(route.origin, b.node.id());
    // A call to it reaches the application, inside its LINK_ATTACH; the answer comes back.
    let call =
        b.send(caller, |txn, out| txn.open(out, Some(span), CALL, b"ping", Flags::DELETE).unwrap());
    b.pump();
    b.answer_inside(app, attach, b"ping", b"pong");
    let answered = b.peers[caller].got.iter().find(|g| g.txn == call).unwrap();
    assert_eq!(
        (answered.payload.as_slice(), answered.flags.contains(Flags::DELETE)),
        (&b"pong"[..], true)
    );
    assert_eq!(b.node.counters().relayed, 1);
}

#[test]
fn attaches_are_refused_alone_from_a_network_link_for_a_held_mount_or_malformed() {
    let mount = key(1, 0x10);
    let mut b = Bench::new(Role::Router);
    let router = b.connect(3, Role::Router, Role::Router);
    let first = b.application(4);
    let second = b.application(5);
    let refused = |b: &mut Bench, p: usize, payload: &[u8], flags: Flags| {
        let txn = b.attach(p, payload, flags);
        b.forced(p, txn)
    };
    assert_eq!(refused(&mut b, router, &request(mount), Flags::NONE), [ErrorCode::REFUSED]);
    b.attach(first, &request(mount), Flags::NONE);
    assert_eq!(refused(&mut b, second, &request(mount), Flags::NONE), [ErrorCode::REFUSED], "held");
    assert_eq!(
        refused(&mut b, second, &request(key(1, 0x11))[..39], Flags::NONE),
        [ErrorCode::MALFORMED]
    );
    assert_eq!(
        refused(&mut b, second, &request(key(1, 0x11)), Flags::DELETE),
        [ErrorCode::MALFORMED],
        "a one-shot"
    );
    // Stacked inside the node's span: not an attach.
    let span = b.peers[second].spans[&mount];
    let stacked = b.send(second, |txn, out| {
        txn.open(out, Some(span), Command::LINK_ATTACH, &request(key(1, 0x11)), Flags::NONE)
            .unwrap()
    });
    b.pump();
    assert_eq!(b.forced(second, stacked), [ErrorCode::MALFORMED]);
    // Every link is still up, and the second application may attach another mount.
    assert!(b.peers.iter().all(|p| p.closed.is_none()));
    let other = b.attach(second, &request(key(1, 0x11)), Flags::NONE);
    assert!(b.forced(second, other).is_empty());
    assert!(b.peers[router].spans.contains_key(&key(1, 0x11)));
}

#[test]
fn an_application_attaches_at_most_its_share_of_mounts() {
    let mut b = Bench::new(Role::Router);
    let app = b.application(4);
    for m in 0..ATTACH_MOUNTS_PER_LINK_MAX as u128 {
        let txn = b.attach(app, &request(key(2, m)), Flags::NONE);
        assert!(b.forced(app, txn).is_empty(), "mount {m}");
    }
    let over = b.attach(app, &request(key(2, u128::MAX)), Flags::NONE);
    assert_eq!(b.forced(app, over), [ErrorCode::LIMIT_REACHED]);
    // Another application has a share of its own.
    let other = b.application(5);
    let txn = b.attach(other, &request(key(2, u128::MAX)), Flags::NONE);
    assert!(b.forced(other, txn).is_empty());
}

#[test]
fn a_close_detaches_and_a_lost_application_ends_its_calls_once() {
    let (m1, m2) = (key(1, 0x10), key(1, 0x20));
    let mut b = Bench::new(Role::Router);
    let caller = b.connect(3, Role::Router, Role::Router);
    let app = b.application(4);
    let a1 = b.attach(app, &request(m1), Flags::NONE);
    b.attach(app, &request(m2), Flags::NONE);
    // A close detaches: retracted, answered with the node's close, and attachable again.
    b.send(app, |txn, out| {
        txn.send(out, a1, Command::LINK_ATTACH, &[], Flags::DELETE, ErrorCode::NONE)
    })
    .unwrap();
    b.pump();
    assert!(b.retracted(caller, m1));
    assert!(b.peers[app].got.iter().any(|g| g.txn == a1 && g.flags.contains(Flags::DELETE)));
    assert!(b.node.table.route(m1).is_none());
    // A call in flight to the other mount when the application is lost ends once, LOST_LINK.
    let span = b.peers[caller].spans[&m2];
    let call =
        b.send(caller, |txn, out| txn.open(out, Some(span), CALL, b"x", Flags::NONE).unwrap());
    b.pump();
    b.link_lost(app, Violation::LinkProtocol("gone").into());
    b.pump();
    assert_eq!(b.forced(caller, call), [ErrorCode::LOST_LINK]);
    assert!(b.retracted(caller, m2));
    assert!(b.node.table.route(m2).is_none());
    // Nothing of it is left: a new application attaches the same mount.
    let again = b.application(5);
    let txn = b.attach(again, &request(m2), Flags::NONE);
    assert!(b.forced(again, txn).is_empty());
}

#[test]
fn the_nodes_own_application_calls_an_attached_mount_inside_its_attach() {
    let mount = key(1, 0x10);
    let mut b = Bench::new(Role::Router);
    let app = b.application(4);
    let attach = b.attach(app, &request(mount), Flags::NONE);
    let (node, mut ours) = b.node();
    // The node's own application may call it, not take it or drop it.
    let held = crate::Error::from(crate::error::Misuse::HeldByApplication);
    let label = crate::span::Label::EMPTY;
    assert_eq!(node.attach(mount, crate::span::MountKind::Master, label, &mut ours), Err(held));
    assert_eq!(node.detach(mount, &mut ours), Err(held));
    let call = node.open(mount, CALL, b"ping", Flags::DELETE, &mut ours).unwrap();
    b.pump();
    b.answer_inside(app, attach, b"ping", b"pong");
    let mut answer = None;
    while let Some(event) = b.node.poll_app() {
        if let crate::relay::AppEvent::Message { call: c, payload, .. } = event
            && c == call
        {
            answer = Some(payload.to_vec());
        }
    }
    assert_eq!(answer.as_deref(), Some(&b"pong"[..]));
}

#[test]
fn the_link_holding_an_attached_mount_is_known_until_it_detaches() {
    let (m1, m2) = (key(1, 0x10), key(1, 0x11));
    let mut b = Bench::new(Role::Router);
    let app = b.application(4);
    let other = b.application(5);
    assert_eq!(b.node.attached_by(m1), None);
    let attach = b.attach(app, &request(m1), Flags::NONE);
    b.attach(other, &request(m2), Flags::NONE);
    let (app_link, other_link) = (b.peers[app].link, b.peers[other].link);
    assert_eq!(b.node.attached_by(m1), Some(app_link));
    assert_eq!(b.node.attached_by(m2), Some(other_link));
    // A mount the node's own application attached is not held by a link.
    let (node, mut ours) = b.node();
    let m3 = key(1, 0x12);
    node.attach(m3, crate::span::MountKind::Master, crate::span::Label::EMPTY, &mut ours).unwrap();
    assert_eq!(b.node.attached_by(m3), None);
    // The application closes its attach: the mount is no one's; the other stays held.
    b.send(app, |txn, out| {
        txn.send(out, attach, Command::LINK_ATTACH, &[], Flags::DELETE, ErrorCode::NONE)
    })
    .unwrap();
    b.pump();
    assert_eq!(b.node.attached_by(m1), None);
    assert_eq!(b.node.attached_by(m2), Some(other_link));
    // Its link lost: none.
    b.link_lost(other, Violation::LinkProtocol("gone").into());
    b.pump();
    assert_eq!(b.node.attached_by(m2), None);
}
