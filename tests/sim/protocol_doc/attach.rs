//! Section 8.11's examples: an application A attaches a mount through a local link to a node
//! N, N's own application calls it, A answers, and A detaches it. N is a real `relay::Node`, so
//! its answers are what `relay/attach.rs` writes; A's messages are its `txn::Link`'s, its
//! request `wire::AttachRequest`'s; and one of them is framed as the local links' record layer
//! (`record_layer_for_attach`) frames it.

use ringspan::cipher::record::record_layer_for_attach;
use ringspan::ids::{ClusterId, LinkId, MountId, NodeId, TxnId};
use ringspan::limits::{RECORD_HEADER_LEN, RECORD_TAG_LEN};
use ringspan::relay::{AppEvent, BareLink, Node, OneLink};
use ringspan::span::{Advert, Hello, Metric, MountKey, Role, Wants};
use ringspan::txn::{self, Received};
use ringspan::wire::{ATTACH_LEN_MAX, AttachRequest, Command, ErrorCode, Flags, Message, Messages};

use super::examples::{CALL, hello_message};
use crate::support::wait::now as t0;

const LINK: LinkId = LinkId(1);
/// Section 8.3's mount: cluster 0x0102, mount 0x0a0b, soft-master (kind 2), label `pfs`.
const MOUNT: MountKey = MountKey { cluster: ClusterId(0x0102), mount: MountId(0x0a0b) };

/// N with a local link up to A, whose transaction layer the test drives.
struct Local {
    node: Node,
    n: BareLink,
    a: txn::Link,
}

impl Local {
    /// N's output for one step, written on `n` through a one-link set.
    fn node_step<R>(
        &mut self,
        step: impl FnOnce(&mut Node, &mut OneLink<'_, Vec<u8>>) -> R,
    ) -> (R, Vec<u8>) {
        let mut out = Vec::new();
        let result = step(&mut self.node, &mut OneLink::new(LINK, &mut self.n, &mut out));
        (result, out)
    }

    /// Hands A's bytes to N as the engine does; returns what N wrote back.
    fn send_to_node(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for message in Messages::new(bytes) {
            let message = message.unwrap();
            if let Some(received) = self.n.txn.handle_message(&mut out, &message).unwrap() {
                let links = &mut OneLink::new(LINK, &mut self.n, &mut out);
                self.node.received(LINK, links, received).unwrap();
            }
            while let Some(event) = self.n.txn.poll_event() {
                let links = &mut OneLink::new(LINK, &mut self.n, &mut out);
                self.node.event(LINK, links, event).unwrap();
            }
        }
        out
    }

    /// Hands N's bytes to A; returns each message's transaction, command and flags, as A sees
    /// them.
    fn send_to_app(&mut self, bytes: &[u8]) -> Vec<(TxnId, Command, Flags)> {
        let mut answers = Vec::new();
        let mut seen = Vec::new();
        for message in Messages::new(bytes) {
            let message: Message<&[u8]> = message.unwrap();
            if let Some(Received::Txn(d)) = self.a.handle_message(&mut answers, &message).unwrap() {
                seen.push((d.txn, d.command, d.flags));
            }
        }
        assert!(answers.is_empty(), "A's transaction layer answers nothing here");
        seen
    }
}

/// The one message of `bytes` on a `LINK_ATTACH`; the others (N's span for the mount, which
/// it advertises to A too) are left out of the example.
fn attach_message(bytes: &[u8]) -> Vec<u8> {
    let mut found = Vec::new();
    for message in Messages::new(bytes) {
        let message: Message<&[u8]> = message.unwrap();
        if message.command() == Command::LINK_ATTACH {
            found.push(message.into_inner().to_vec());
        }
    }
    assert_eq!(found.len(), 1, "one LINK_ATTACH message");
    found.remove(0)
}

/// A plain record of a local link holding `plaintext`, as the node frames one, checked to open
/// back to it.
fn local_record(plaintext: &[u8]) -> Vec<u8> {
    let (mut sealer, _) = record_layer_for_attach(t0()).unwrap();
    // Filled with a non-zero byte, so that the zero tag is the sealer's doing.
    let mut record = vec![0xa5; RECORD_HEADER_LEN + plaintext.len() + RECORD_TAG_LEN];
    record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + plaintext.len()].copy_from_slice(plaintext);
    let len = sealer.seal(&mut record, plaintext.len()).unwrap();
    assert_eq!(len, record.len());
    let (_, mut opener) = record_layer_for_attach(t0()).unwrap();
    assert_eq!(opener.open(&mut record.clone()).unwrap(), plaintext);
    record
}

/// Section 8.11's blocks, by name.
pub fn examples() -> Vec<(&'static str, Vec<u8>)> {
    let router = Hello::new(Role::Router, Wants::all());
    let mut local = Local {
        node: Node::new(NodeId(0xfeed), router, t0()),
        n: BareLink::default(),
        a: txn::Link::new(),
    };
    // The link comes up as the daemon takes up a connection to its attach socket; N's hello
    // is its msgid 1, A's its msgid 1.
    let (up, to_a) =
        local.node_step(|node, links| node.link_up(LINK, NodeId(2), Role::Client, false, links));
    up.unwrap();
    local.node.set_local(LINK);
    local.send_to_app(&to_a);
    let client = Hello::new(Role::Client, Wants::all());
    let hello = hello_message(&mut local.a, &client);
    assert!(local.send_to_node(&hello).is_empty(), "N has no mount to advertise yet");

    // A attaches the mount, its msgid 2; N answers, and advertises the mount (its msgid 2) to
    // every neighbour that wants it, A included.
    let request =
        AttachRequest { cluster: MOUNT.cluster, mount: MOUNT.mount, kind: 2, label: b"pfs" };
    let mut payload = [0u8; ATTACH_LEN_MAX];
    let len = request.emit(&mut payload);
    let mut create = Vec::new();
    let attach = local
        .a
        .open(&mut create, None, Command::LINK_ATTACH, &payload[..len], Flags::NONE)
        .unwrap();
    let to_a = local.send_to_node(&create);
    let seen = local.send_to_app(&to_a);
    let span = seen[0].0;
    assert_eq!(
        seen,
        [
            (span, Command::LINK_SPAN, Flags::CREATE),
            (attach, Command::LINK_ATTACH, Flags::REPLY | Flags::CREATE)
        ]
    );
    let advert = Messages::new(&to_a).next().unwrap().unwrap().payload().to_vec();
    let advert = Advert::decode(&advert).unwrap();
    assert_eq!((advert.mount, advert.origin, advert.metric), (MOUNT, NodeId(0xfeed), Metric(0)));
    let answer = attach_message(&to_a);

    // N's application calls the mount: a one-shot request inside A's LINK_ATTACH, N's msgid 3.
    let (call, call_create) =
        local.node_step(|node, links| node.open(MOUNT, CALL, b"ping", Flags::DELETE, links));
    let call = call.unwrap();
    let seen = local.send_to_app(&call_create);
    assert_eq!(seen.len(), 1);
    // A answers it with the only reply.
    let mut call_reply = Vec::new();
    local
        .a
        .send(&mut call_reply, seen[0].0, CALL, b"ping", Flags::DELETE, ErrorCode::NONE)
        .unwrap();
    assert!(local.send_to_node(&call_reply).is_empty());
    let mut heard = Vec::new();
    while let Some(event) = local.node.poll_app() {
        heard.push(match event {
            AppEvent::Message { call: c, payload, .. } => (c, payload.to_vec(), None),
            AppEvent::Ended { call: c, error } => (c, Vec::new(), Some(error)),
            AppEvent::Opened { .. } => panic!("nothing is opened to N's application"),
        });
    }
    assert_eq!(heard, [(call, b"ping".to_vec(), None), (call, Vec::new(), Some(ErrorCode::NONE))]);

    // A detaches: its DELETE; N retracts its span and answers with its own DELETE.
    let mut detach = Vec::new();
    local.a.close(&mut detach, attach, ErrorCode::NONE).unwrap();
    let to_a = local.send_to_node(&detach);
    let detached = attach_message(&to_a);
    assert_eq!(
        local.send_to_app(&to_a),
        [
            (span, Command::LINK_SPAN, Flags::DELETE),
            (attach, Command::LINK_ATTACH, Flags::REPLY | Flags::DELETE)
        ]
    );
    assert!(!local.a.contains(attach), "the attach has ended at A");
    assert!(local.node.route(MOUNT).is_none(), "the mount is detached");

    let record = local_record(&create);
    vec![
        ("attach-create", create),
        ("attach-answer", answer),
        ("attach-call-create", call_create),
        ("attach-call-reply", call_reply),
        ("attach-detach", detach),
        ("attach-detach-answer", detached),
        ("attach-record", record),
    ]
}
