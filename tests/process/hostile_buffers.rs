//! Receive buffers at a relay, against real `ringspan run` processes. A relay sends a forwarded
//! record from the receive buffer it arrived in, which holds that buffer until the next link's
//! send completes (DESIGN 7c.2): a peer that stops reading must hold no more than its link's
//! share of them, the node's other links must go on, and every buffer must come back.
//!
//! Nothing here waits for time to pass: every wait is on a condition, with a generous timeout.

use std::sync::mpsc;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, Request};
use ringspan::ids::{ClusterId, MountId};
use ringspan::limits::{MESSAGE_PAYLOAD_MAX, RECV_BUFFERS, RECV_LENT_LINK_SHARE};
use ringspan::ring;
use ringspan::span::{MountKey, MountKind, Role, Wants};
use ringspan::wire::{ErrorCode, Flags};

use crate::support::config::{allow, echo_mount, peer_as};
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::rogue::Rogue;
use crate::support::shares::*;
use crate::support::wait::wait_for;

/// The mount the reader that stops reading serves.
const SINK: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x20) };

#[test]
fn a_peer_that_stops_reading_holds_no_more_than_its_share_of_receive_buffers() {
    let dir = scratch("buffers-reader");
    let [sink_id, flood_id, app_id] = [(); 3].map(|_| Identity::generate().unwrap());
    let (x, e) = (Node::new(&dir, "x"), Node::new(&dir, "e"));
    let e_tail = peer_as(&x, "router", false) + &echo_mount(MASTER, "master", "echo");
    configure(&e, "router", "", "", &e_tail);
    let keys = [
        (sink_id.public_key(), "router"),
        (flood_id.public_key(), "client"),
        (app_id.public_key(), "client"),
    ];
    configure(&x, "router", &allow(&keys), "", &peer_as(&e, "router", true));
    let _procs = [e.run(), x.run()];
    let knows =
        |mount: &str| x.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == mount));
    wait_for("x to learn the master from e", WAIT, || knows("10"));

    // The sink: a router serving a mount of its own, which reads nothing once x has the route.
    let mut sink = Rogue::connect(x.addr(), &sink_id, Some(x.public())).unwrap();
    sink.hello(Role::Router, Wants::all());
    sink.advertise(&sink.own_advert(SINK, MountKind::Master));
    sink.pump_until(WAIT, |_| knows("20")).unwrap();

    // An honest client calls the echo master through x all along.
    let app = honest(app_id, Role::Client, &x);
    assert!(app.wait_for_route(MASTER, WAIT), "the honest client hears of the master");
    const CALLS: u64 = 20_000;
    let (reply, report) = mpsc::channel();
    let request = Request::Load { mount: MASTER, calls: CALLS, concurrency: 16, size: 64, reply };
    assert!(app.remote().send(ring::Command::Service(Box::new(request))).is_ok());

    // The flood: a client streaming the largest messages to the sink in one call, until x
    // closes the sink's link for not reading (its send queue past the bound) and the call ends.
    let mut flood = rogue_at(&x, &flood_id, Role::Client, SINK);
    let span = flood.span_of(SINK).unwrap();
    let call = flood.open(span, CALL, b"flood", Flags::NONE);
    let payload = vec![0x5a; MESSAGE_PAYLOAD_MAX];
    let mut every = Every::new();
    let mut sent = 0u64;
    loop {
        let result = flood
            .send(|txn, out| txn.send(out, call, CALL, &payload, Flags::NONE, ErrorCode::NONE));
        if result.is_err() || flood.pump(Duration::ZERO).is_err() || flood.ended(call).is_some() {
            break;
        }
        sent += 1;
        if every.due() && x.try_snapshot().is_some_and(|s| s.closes.not_reading > 0) {
            break;
        }
    }
    wait_for("x to close the sink's link for not reading", WAIT, || {
        x.try_snapshot().is_some_and(|s| s.closes.not_reading == 1)
    });

    // Records went from where they arrived, and never more of them at once than one link's
    // share (only the flood's records qualify: the honest calls are one-shot, never forwarded
    // whole); once the sink's link is gone, every buffer is back with the kernel.
    wait_for("x to have every receive buffer back", WAIT, || {
        x.try_snapshot().is_some_and(|s| s.lent_records == 0 && s.recv_buffers_held == 0)
    });
    let s = x.snapshot();
    let share = u64::from(RECV_BUFFERS / RECV_LENT_LINK_SHARE);
    assert!(s.counters.records_in_place > 0, "{sent} sent, none forwarded in place");
    assert!(
        (1..=share).contains(&s.lent_records_max),
        "at most {} records lent at once, against a share of {share}",
        s.lent_records_max
    );
    // The flood's own link and e's stayed up; the honest client lost nothing.
    assert_eq!(s.closes.not_reading, 1);
    assert_eq!(s.closes.misbehaved + s.closes.idle + s.closes.io, 0, "{:?}", s.closes);
    let report = report.recv_timeout(WAIT).expect("the honest load ends");
    assert_good(&report, CALLS);
    flood.pump(Duration::ZERO).expect("the flood's link is up");
    drop(sink);
}
