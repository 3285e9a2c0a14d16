//! The daemon's application on its host, driven without the engine: one scripted peer (a bare
//! transaction link) calls the node's mounts, and the application answers in
//! [`DaemonApp::answer`].

use std::collections::HashMap;
use std::time::Instant;

use super::{DaemonApp, Host, Settings};
use crate::cipher::Identity;
use crate::ids::{ClusterId, LinkId, MountId, NodeId, TxnId};
use crate::relay::{BareLink, NoLinks, OneLink};
use crate::span::{Advert, Hello, Label, MountKey, MountKind, Role, Wants};
use crate::txn::{self, Event, Received};
use crate::wire::HELLO_LEN_MAX;
use crate::wire::{Command, ErrorCode, Flags, Messages};

const LINK: LinkId = LinkId(7);

/// A message the peer received on a call, owned.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    flags: Flags,
    command: Command,
    error: ErrorCode,
    payload: Vec<u8>,
}

struct Peer {
    /// The peer's transactions.
    txn: txn::Link,
    /// The node's transactions on the link.
    ours: BareLink,
    to_node: Vec<u8>,
    to_peer: Vec<u8>,
    /// The node's spans, by mount.
    spans: HashMap<MountKey, TxnId>,
    /// What arrived on each transaction the peer opened.
    answers: HashMap<TxnId, Vec<Answer>>,
}

fn key(mount: u128) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(mount) }
}

fn service(now: Instant) -> Host<DaemonApp> {
    let settings = Settings::new(Identity::generate().unwrap());
    Host::new(&settings, DaemonApp::new(&settings, None), now)
}

/// A router peer linked to the service's node, its hello exchanged.
fn connect(svc: &mut Host<DaemonApp>) -> Peer {
    let mut peer = Peer {
        txn: txn::Link::new(),
        ours: BareLink::default(),
        to_node: Vec::new(),
        to_peer: Vec::new(),
        spans: HashMap::new(),
        answers: HashMap::new(),
    };
    let links = &mut OneLink::new(LINK, &mut peer.ours, &mut peer.to_peer);
    svc.state_mut().node.link_up(LINK, NodeId(2), Role::Router, false, links).unwrap();
    let mut hello = [0u8; HELLO_LEN_MAX];
    let n = Hello::new(Role::Router, Wants::all()).encode(&mut hello);
    peer.txn.open(&mut peer.to_node, None, Command::LINK_CONN, &hello[..n], Flags::NONE).unwrap();
    pump(svc, &mut peer);
    peer
}

/// Moves everything both ways, the service's application answering in between, until nothing
/// moves.
fn pump(svc: &mut Host<DaemonApp>, peer: &mut Peer) {
    loop {
        let bytes = std::mem::take(&mut peer.to_node);
        for message in Messages::new(&bytes) {
            let received =
                peer.ours.txn.handle_message(&mut peer.to_peer, &message.unwrap()).unwrap();
            if let Some(received) = received {
                let links = &mut OneLink::new(LINK, &mut peer.ours, &mut peer.to_peer);
                svc.state_mut().node.received(LINK, links, received).unwrap();
            }
            while let Some(event) = peer.ours.txn.poll_event() {
                let links = &mut OneLink::new(LINK, &mut peer.ours, &mut peer.to_peer);
                svc.state_mut().node.event(LINK, links, event).unwrap();
            }
        }
        let now = svc.state().now();
        let links = &mut OneLink::new(LINK, &mut peer.ours, &mut peer.to_peer);
        let (state, app) = svc.parts_mut();
        app.answer(&mut state.node, now, links);
        let bytes = std::mem::take(&mut peer.to_peer);
        if bytes.is_empty() {
            return;
        }
        for message in Messages::new(&bytes) {
            let received = peer.txn.handle_message(&mut peer.to_node, &message.unwrap()).unwrap();
            if let Some(Received::Txn(d)) = received {
                if d.opens() && d.command == Command::LINK_SPAN {
                    let advert = Advert::decode(d.payload).unwrap();
                    peer.spans.insert(advert.mount, d.txn);
                }
                let answer = Answer {
                    flags: d.flags,
                    command: d.command,
                    error: d.error,
                    payload: d.payload.to_vec(),
                };
                peer.answers.entry(d.txn).or_default().push(answer);
            }
            while let Some(event) = peer.txn.poll_event() {
                assert!(matches!(event, Event::Ended { .. }), "{event:?}");
            }
        }
    }
}

#[test]
fn echo_mounts_and_unserved_mounts_answer_with_the_calls_own_command() {
    // PROTOCOL.md 8.8: a reply carries the transaction's command, whatever the caller chose.
    let now = {
        #[allow(clippy::disallowed_methods)] // the test's time starts here
        Instant::now()
    };
    let mut svc = service(now);
    let (echo, unserved) = (key(5), key(6));
    let node = &mut svc.state_mut().node;
    node.attach(echo, MountKind::Master, Label::EMPTY, &mut NoLinks).unwrap();
    node.attach(unserved, MountKind::Master, Label::EMPTY, &mut NoLinks).unwrap();
    svc.app_mut().echo(echo);
    let mut peer = connect(&mut svc);
    let command = Command::new(7, 3);
    let mut call = |mount: MountKey, peer: &mut Peer| {
        let span = peer.spans[&mount];
        let call =
            peer.txn.open(&mut peer.to_node, Some(span), command, b"ping", Flags::DELETE).unwrap();
        pump(&mut svc, peer);
        peer.answers.remove(&call).unwrap_or_default()
    };
    assert_eq!(
        call(echo, &mut peer),
        [Answer {
            flags: Flags::REPLY | Flags::CREATE | Flags::DELETE,
            command,
            error: ErrorCode::NONE,
            payload: b"ping".to_vec(),
        }]
    );
    assert_eq!(
        call(unserved, &mut peer),
        [Answer {
            flags: Flags::REPLY | Flags::CREATE | Flags::ABORT | Flags::DELETE,
            command,
            error: ErrorCode::REFUSED,
            payload: Vec::new(),
        }]
    );
}

#[test]
fn a_trace_whose_path_sends_more_reports_than_its_limit_is_aborted() {
    use super::{Request, TraceEvent};
    use crate::wire::{TraceReport, TraceStatus};
    let now = {
        #[allow(clippy::disallowed_methods)] // the test's time starts here
        Instant::now()
    };
    // The configuration names one node: its report comes with the name.
    let named = Identity::generate().unwrap().public_key();
    let mut settings = Settings::new(Identity::generate().unwrap());
    settings.names = vec![(named, "far".to_string())];
    let mut svc = Host::new(&settings, DaemonApp::new(&settings, None), now);
    let mut peer = connect(&mut svc);
    // The peer advertises a mount, and the node traces it with a hop limit of 2.
    let mount = key(9);
    let advert = Advert {
        mount,
        kind: MountKind::Master,
        label: Label::EMPTY,
        origin: NodeId(2),
        seqno: crate::span::Seqno(1),
        metric: crate::span::Metric(0),
    };
    let mut buf = [0u8; crate::wire::ADVERT_LEN_MAX];
    let len = advert.encode(&mut buf);
    peer.txn.open(&mut peer.to_node, None, Command::LINK_SPAN, &buf[..len], Flags::NONE).unwrap();
    pump(&mut svc, &mut peer);
    let (events, heard) = std::sync::mpsc::channel();
    let (state, app) = svc.parts_mut();
    let links = &mut OneLink::new(LINK, &mut peer.ours, &mut peer.to_peer);
    let request = Request::Trace { mount, target: None, limit: 2, events };
    app.traces_mut().open(&mut state.node, now, request, links);
    pump(&mut svc, &mut peer);
    let trace = peer
        .answers
        .iter()
        .find(|(_, seen)| seen[0].command == Command::LINK_TRACE)
        .map(|(&txn, _)| txn)
        .expect("the trace reached the peer");
    // A hostile path: three reports for a limit of two.
    for hop in 1..=3 {
        let node = if hop == 2 { named.node_id() } else { NodeId(u128::from(hop)) };
        let report = TraceReport { hop, status: TraceStatus::Relayed, node };
        let payload = report.emit();
        peer.txn
            .send(
                &mut peer.to_node,
                trace,
                Command::LINK_TRACE,
                &payload,
                Flags::NONE,
                ErrorCode::NONE,
            )
            .unwrap();
    }
    pump(&mut svc, &mut peer);
    let (state, app) = svc.parts_mut();
    app.traces_mut().flush(state);
    let heard: Vec<TraceEvent> = heard.try_iter().collect();
    assert_eq!(heard.len(), 3, "{heard:?}");
    for (at, event) in heard[..2].iter().enumerate() {
        let TraceEvent::Hop { report: Ok(report), name, .. } = event else { panic!("{event:?}") };
        assert_eq!(usize::from(report.hop), at + 1);
        assert_eq!(name.as_deref(), (at == 1).then_some("far"), "named as configured");
    }
    assert_eq!(heard[2], TraceEvent::Ended(ErrorCode::ABORTED));
    let aborted = peer.answers[&trace]
        .iter()
        .any(|a| a.flags.contains(Flags::ABORT | Flags::DELETE) && a.error == ErrorCode::ABORTED);
    assert!(aborted, "the node aborted the trace: {:?}", peer.answers[&trace]);
}
