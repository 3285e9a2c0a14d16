//! Receive buffers at a relay, against real `ringspan run` processes. A relay sends a forwarded
//! record from the receive buffer it arrived in, which holds that buffer until the next link's
//! send completes (DESIGN 7c.2): a peer that stops reading must hold no more than its link's
//! share of them, peers that stop reading together no more than the worker's share, the node's
//! other links must go on, and every buffer must come back.
//!
//! Nothing here waits for time to pass: every wait is on a condition, with a generous timeout.

use std::sync::mpsc;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, LoadReport, Request};
use ringspan::ids::{ClusterId, MountId, TxnId};
use ringspan::limits::{MESSAGE_PAYLOAD_MAX, RECV_BUFFERS, RECV_LENT_LINK_SHARE, RECV_LENT_SHARE};
use ringspan::ring;
use ringspan::span::{MountKey, MountKind, Role, Wants};
use ringspan::wire::{ErrorCode, Flags};

use crate::support::config::{allow, echo_mount, peer_as};
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::rogue::Rogue;
use crate::support::shares::*;
use crate::support::wait::wait_for;

/// The mount the `i`th reader that stops reading serves.
fn sink_mount(i: usize) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(0x20 + i as u128) }
}

/// Honest calls through the relay while it is flooded.
const CALLS: u64 = 20_000;

/// A relay x linked to an echo node e (the master), `sinks` routers that each serve a mount of
/// their own and read nothing once x has its route, a client flooding the largest messages to
/// every sink's mount (one call each, in turn) until x has closed every sink's link for not
/// reading, and an honest client calling the master through x meanwhile. Returns x's snapshot
/// once every buffer is back, and the honest load's report.
fn flood_readers_that_stop(name: &str, sinks: usize) -> (ringspan::daemon::Snapshot, LoadReport) {
    let dir = scratch(name);
    let sink_ids: Vec<Identity> = (0..sinks).map(|_| Identity::generate().unwrap()).collect();
    let [flood_id, app_id] = [(); 2].map(|_| Identity::generate().unwrap());
    let (x, e) = (Node::new(&dir, "x"), Node::new(&dir, "e"));
    let e_tail = peer_as(&x, "router", false) + &echo_mount(MASTER, "master", "echo");
    configure(&e, "router", "", "", &e_tail);
    let mut keys: Vec<_> = sink_ids.iter().map(|id| (id.public_key(), "router")).collect();
    keys.extend([(flood_id.public_key(), "client"), (app_id.public_key(), "client")]);
    configure(&x, "router", &allow(&keys), "", &peer_as(&e, "router", true));
    let _procs: [Proc; 2] = [e.run(), x.run()];
    let knows = |mount: MountKey| {
        let id = format!("{:x}", mount.mount.0);
        x.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == id))
    };
    wait_for("x to learn the master from e", WAIT, || knows(MASTER));

    let mut readers = Vec::new();
    for (i, id) in sink_ids.iter().enumerate() {
        let mut sink = Rogue::connect(x.addr(), id, Some(x.public())).unwrap();
        sink.hello(Role::Router, Wants::all());
        sink.advertise(&sink.own_advert(sink_mount(i), MountKind::Master));
        sink.pump_until(WAIT, |_| knows(sink_mount(i))).unwrap();
        readers.push(sink);
    }

    let app = honest(app_id, Role::Client, &x);
    assert!(app.wait_for_route(MASTER, WAIT), "the honest client hears of the master");
    let (reply, report) = mpsc::channel();
    let request = Request::Load { mount: MASTER, calls: CALLS, concurrency: 16, size: 64, reply };
    assert!(app.remote().send(ring::Command::Service(Box::new(request))).is_ok());

    let mut flood = rogue_at(&x, &flood_id, Role::Client, sink_mount(sinks - 1));
    let calls: Vec<TxnId> = (0..sinks)
        .map(|i| {
            let span = flood.span_of(sink_mount(i)).unwrap();
            flood.open(span, CALL, b"flood", Flags::NONE)
        })
        .collect();
    let payload = vec![0x5a; MESSAGE_PAYLOAD_MAX];
    let mut every = Every::new();
    let mut sent = 0u64;
    let mut open: Vec<TxnId> = calls.clone();
    while !open.is_empty() {
        let call = open[sent as usize % open.len()];
        let result = flood
            .send(|txn, out| txn.send(out, call, CALL, &payload, Flags::NONE, ErrorCode::NONE));
        sent += 1;
        flood.pump(Duration::ZERO).expect("the flood's own link stays up");
        // A call ends when x, having closed its sink's link, aborts it.
        if result.is_err() || flood.ended(call).is_some() {
            open.retain(|&c| c != call);
        }
        if every.due() && x.try_snapshot().is_some_and(|s| s.closes.not_reading == sinks as u64) {
            break;
        }
    }
    wait_for("x to close every sink's link for not reading", WAIT, || {
        x.try_snapshot().is_some_and(|s| s.closes.not_reading == sinks as u64)
    });
    wait_for("x to have every receive buffer back", WAIT, || {
        x.try_snapshot().is_some_and(|s| s.lent_records == 0 && s.recv_buffers_held == 0)
    });
    let s = x.snapshot();
    assert!(s.counters.records_in_place > 0, "{sent} sent, none forwarded in place");
    // Only the sinks' links closed, each once, for not reading.
    assert_eq!(s.closes.not_reading, sinks as u64);
    assert_eq!(s.closes.misbehaved + s.closes.idle + s.closes.io, 0, "{:?}", s.closes);
    flood.pump(Duration::ZERO).expect("the flood's link is up");
    drop(readers);
    (s, report.recv_timeout(WAIT).expect("the honest load ends"))
}

#[test]
fn a_peer_that_stops_reading_holds_no_more_than_its_share_of_receive_buffers() {
    let (s, report) = flood_readers_that_stop("buffers-reader", 1);
    // Only the flood's records qualify (the honest calls are one-shot, never forwarded whole).
    let share = u64::from(RECV_BUFFERS / RECV_LENT_LINK_SHARE);
    assert!(
        (1..=share).contains(&s.lent_records_max),
        "at most {} records lent at once, against a link's share of {share}",
        s.lent_records_max
    );
    assert_good(&report, CALLS);
}

#[test]
fn peers_that_stop_reading_together_hold_no_more_than_half_the_receive_buffers() {
    // Three links could hold three links' shares; together they get the worker's.
    let (s, report) = flood_readers_that_stop("buffers-readers", 3);
    let link_share = u64::from(RECV_BUFFERS / RECV_LENT_LINK_SHARE);
    let share = u64::from(RECV_BUFFERS / RECV_LENT_SHARE);
    assert!(3 * link_share > share, "the test needs the links' shares to add up past the worker's");
    assert!(
        (1..=share).contains(&s.lent_records_max),
        "at most {} records lent at once, against the worker's share of {share}",
        s.lent_records_max
    );
    assert_good(&report, CALLS);
}
