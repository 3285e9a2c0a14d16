//! The rogue peer kit (`support/rogue.rs`) against real `ringspan run` processes: it completes
//! handshakes, speaks the span protocol, makes calls and is called, and its escape hatches get
//! it cut off while the node serves everyone else. Smoke tests of the kit, on today's
//! behaviour.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::CALL;
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{Advert, Label, Metric, MountKey, MountKind, Role, Seqno, Wants};
use ringspan::wire::{ErrorCode, Flags};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::rogue::{self, CloseSeen, Rogue, pump_all_until};
use crate::support::wait::wait_for;

const WAIT: Duration = Duration::from_secs(20);
/// The echo master of the tests' cluster 1.
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
/// The client mount the rogue client attaches.
const CLIENT: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x1000) };

/// Writes `node`'s config: a listener, `role`, any key let in, and `extra` (peers, mounts).
fn configure(node: &Node, role: &str, node_extra: &str, extra: &str) {
    let node_lines = format!("role = \"{role}\"\naccept_unknown_keys = true\n{node_extra}");
    let limits =
        "keepalive_ms = 200\nidle_timeout_ms = 5000\nredial_min_ms = 50\nredial_max_ms = 500\n";
    config::write(node, &node_lines, limits, extra);
}

/// A router with the echo master, running and listening.
fn echo_node(dir: &Path) -> (Node, Proc) {
    let node = Node::new(dir, "echo");
    configure(&node, "router", "", &config::echo_mount(MASTER, "master", "echo"));
    let proc = node.run();
    wait_for("the echo node to publish its master", WAIT, || {
        node.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    (node, proc)
}

/// A rogue that said hello as a client and heard the node's span for the echo master.
fn client_of(node: &Node, from: Option<IpAddr>) -> Rogue {
    let identity = Identity::generate().unwrap();
    let mut rogue = match from {
        None => Rogue::connect(node.addr(), &identity, Some(node.public())),
        Some(source) => Rogue::connect_from(source, node.addr(), &identity, Some(node.public())),
    }
    .unwrap();
    assert_eq!(rogue.peer(), node.public());
    rogue.hello(Role::Client, Wants::all());
    rogue.pump_until(WAIT, |r| r.peer_hello().is_some() && r.span_of(MASTER).is_some()).unwrap();
    rogue
}

#[test]
fn a_rogue_client_calls_the_echo_master_and_holds_a_call_open() {
    let dir = scratch("rogue-echo");
    let (node, _proc) = echo_node(&dir);
    let mut rogue = client_of(&node, None);

    // What the node said: a router, and its master as the originator (metric 0).
    assert_eq!(rogue.peer_hello().unwrap().role, Role::Router);
    let (_, advert) = rogue.spans()[&MASTER];
    assert_eq!(advert.kind, MountKind::Master);
    assert_eq!(advert.origin, rogue.peer_node_id());
    assert_eq!(advert.metric, Metric::ZERO);
    assert_eq!(advert.label.as_bytes(), b"echo");

    rogue.echo_call(MASTER, CALL, b"hello echo", WAIT);

    // A seqno request on the node's span: the originator bumps its seqno and sends the newer
    // advertisement as an update on the span.
    let (span, advert) = rogue.spans()[&MASTER];
    let wanted = advert.seqno.next();
    rogue.seqno_request(span, wanted);
    rogue.pump_until(WAIT, |r| r.spans()[&MASTER].1.seqno == wanted).unwrap();
    assert_eq!(rogue.spans()[&MASTER], (span, Advert { seqno: wanted, ..advert }));

    // A call whose direction the rogue keeps open: answered, and held open at the node until
    // the rogue closes it.
    let span = rogue.span_of(MASTER).unwrap();
    let held = rogue.open(span, CALL, b"held", Flags::NONE);
    rogue.pump_until(WAIT, |r| r.deliveries(held).any(|d| d.closes())).unwrap();
    rogue.pump_until(WAIT, |_| node.try_snapshot().is_some_and(|s| s.circuits == 1)).unwrap();
    assert_eq!(rogue.ended(held), None);
    rogue.send(|link, out| link.close(out, held, ErrorCode::NONE)).unwrap();
    rogue.pump_until(WAIT, |r| r.ended(held).is_some()).unwrap();
    assert_eq!(rogue.ended(held), Some(ErrorCode::NONE));
    rogue.pump_until(WAIT, |_| node.try_snapshot().is_some_and(|s| s.circuits == 0)).unwrap();

    // A transaction outside any span is refused with a forced close. The rogue withholds its
    // answer, so the node still holds the transaction; the late answer is then still valid (a
    // DELETE on a transaction the node had freed would get the link closed).
    rogue.policy().answer_forced_closes = false;
    let stray =
        rogue.send(|link, out| link.open(out, None, CALL, b"not in a span", Flags::NONE)).unwrap();
    rogue.pump_until(WAIT, |r| r.ended(stray).is_some()).unwrap();
    assert_eq!(rogue.ended(stray), Some(ErrorCode::REFUSED));
    assert!(rogue.deliveries(stray).all(|d| d.is_forced_close()));
    assert_eq!(rogue.withheld(), 1);
    rogue.policy().answer_forced_closes = true;
    rogue.release_withheld();
    assert_eq!(rogue.withheld(), 0);
    rogue.echo_call(MASTER, CALL, b"after the late answer", WAIT);

    // The node counted it all (its snapshot is refreshed every 200 ms), and the link stayed up
    // throughout: nothing the rogue did broke a rule.
    rogue
        .pump_until(WAIT, |_| {
            node.try_snapshot().is_some_and(|s| s.counters.served == 3 && s.counters.refused == 1)
        })
        .unwrap();
    assert_eq!(rogue.closed(), None);
    let snapshot = node.snapshot();
    assert_eq!(snapshot.clients, 1);
    assert_eq!(snapshot.closes.misbehaved, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rogue_sending_malformed_records_is_cut_off_and_the_node_serves_on() {
    let dir = scratch("rogue-malformed");
    let (node, _proc) = echo_node(&dir);
    // The well-behaved one comes from another address, and stays up throughout.
    let mut good = client_of(&node, Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2))));
    assert_eq!(good.local_addr().unwrap().ip(), IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    good.echo_call(MASTER, CALL, b"before", WAIT);

    // A sealed record that authenticates but holds a message with a reserved flag bit.
    let mut bad = client_of(&node, None);
    let mut message = [0u8; 32];
    message[0] = 0x20;
    bad.raw_record(&message);
    pump_all_until(&mut [&mut good, &mut bad], WAIT, |r| {
        r[1].closed().is_some()
            && node.try_snapshot().is_some_and(|s| s.closes.misbehaved == 1 && s.clients == 1)
    })
    .unwrap();
    assert!(
        matches!(bad.closed(), Some(CloseSeen::Eof | CloseSeen::Io(_))),
        "closed without a notice: {:?}",
        bad.closed()
    );
    // Its transactions ended on its side too, as on any lost link.
    let hello = bad.log().iter().find_map(|seen| match seen {
        rogue::Seen::Ended { txn, error } if *error == ErrorCode::LOST_LINK => Some(*txn),
        _ => None,
    });
    assert!(hello.is_some(), "{:?}", bad.log());
    good.echo_call(MASTER, CALL, b"after a malformed message", WAIT);

    // A record that does not authenticate: a valid header, then garbage.
    let mut forger = client_of(&node, None);
    let mut record = vec![0u8; 8 + 32 + 16];
    record[0] = 48;
    record[8..].fill(0x5a);
    forger.raw_bytes(&record);
    pump_all_until(&mut [&mut good, &mut forger], WAIT, |r| {
        r[1].closed().is_some()
            && node.try_snapshot().is_some_and(|s| s.closes.misbehaved == 2 && s.clients == 1)
    })
    .unwrap();
    good.echo_call(MASTER, CALL, b"after a forged record", WAIT);
    // The node keeps the good link alive too.
    good.pump_until(WAIT, |r| r.pings() > 0).unwrap();
    assert_eq!(good.closed(), None);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_rogue_client_of_a_satellite_shows_as_its_aggregate_and_is_called_through_it() {
    let dir = scratch("rogue-satellite");
    let router = Node::new(&dir, "router");
    let satellite = Node::new(&dir, "satellite");
    // The rogue router below is allowed at the router by name, with a router's rights (a key
    // let in only by accept_unknown_keys is a client); the satellite serves clients of cluster 1.
    let caller_id = Identity::generate().unwrap();
    let allow = config::allow(&[(caller_id.public_key(), "router")]);
    configure(&router, "router", &allow, &config::peer(&satellite, false));
    let clients_of_1 = "client_clusters = [\"0x1\"]\n";
    configure(&satellite, "satellite", clients_of_1, &config::peer(&router, true));
    let _procs = [router.run(), satellite.run()];
    wait_for("the satellite to link to the router", WAIT, || {
        satellite.try_snapshot().is_some_and(|s| s.links.len() == 1)
    });
    let satellite_id = satellite.public().node_id();
    let aggregate = MountKey { cluster: ClusterId(1), mount: MountId(satellite_id.0) };
    let is_aggregate = |row: &ringspan::daemon::RouteRow| {
        row.kind == "aggregate" && row.mount == format!("{:x}", satellite_id.0)
    };

    // A rogue client of the satellite attaches a client mount: the router hears of the
    // satellite's aggregate, never of the client mount.
    let mut client =
        Rogue::connect(satellite.addr(), &Identity::generate().unwrap(), Some(satellite.public()))
            .unwrap();
    client.hello(Role::Client, Wants::all());
    let span = client.advertise(&client.own_advert(CLIENT, MountKind::Client));
    client
        .pump_until(WAIT, |_| {
            router.try_snapshot().is_some_and(|s| s.routes.iter().any(is_aggregate))
                && satellite.try_snapshot().is_some_and(|s| s.clients == 1)
        })
        .unwrap();
    assert!(router.snapshot().routes.iter().all(|r| r.mount != "1000"));
    // The satellite holds the client mount in its client directory, never as a route; an
    // update of it (a new label) is taken without a fuss.
    let held = |s: &ringspan::daemon::Snapshot| {
        s.client_mounts == 1 && s.routes.iter().all(|r| r.mount != "1000")
    };
    assert!(satellite.try_snapshot().is_some_and(|s| held(&s)));
    let renamed = Advert {
        label: Label::new(b"renamed").unwrap(),
        seqno: Seqno(2),
        ..client.own_advert(CLIENT, MountKind::Client)
    };
    client.update(span, &renamed);
    let pings = client.pings();
    client.pump_until(WAIT, |r| r.pings() > pings).unwrap();
    assert_eq!(client.closed(), None);
    assert!(satellite.try_snapshot().is_some_and(|s| held(&s)));

    // A rogue router at the router calls the client through the aggregate: the satellite
    // takes the address off and opens the call inside the client's span.
    let mut caller = Rogue::connect(router.addr(), &caller_id, Some(router.public())).unwrap();
    caller.hello(Role::Router, Wants::all());
    pump_all_until(&mut [&mut client, &mut caller], WAIT, |r| r[1].span_of(aggregate).is_some())
        .unwrap();
    let (aggregate_span, advert) = caller.spans()[&aggregate];
    assert_eq!(
        (advert.kind, advert.origin, advert.metric),
        (MountKind::Aggregate, satellite_id, Metric(1))
    );
    let call =
        caller.call_client(aggregate_span, CLIENT.mount, CALL, b"to the client", Flags::DELETE);
    pump_all_until(&mut [&mut client, &mut caller], WAIT, |r| {
        r[0].opened_inside(span).next().is_some()
    })
    .unwrap();
    let incoming = client.opened_inside(span).next().unwrap().clone();
    assert_eq!(incoming.payload, b"to the client");
    assert_eq!(incoming.command, CALL);
    assert!(incoming.closes(), "a one-shot call");
    client.reply(incoming.txn, CALL, b"from the client", Flags::DELETE);
    pump_all_until(&mut [&mut client, &mut caller], WAIT, |r| {
        r[0].ended(incoming.txn).is_some() && r[1].ended(call).is_some()
    })
    .unwrap();
    assert_eq!(caller.ended(call), Some(ErrorCode::NONE));
    assert_eq!(client.ended(incoming.txn), Some(ErrorCode::NONE));
    let answer: Vec<_> = caller.deliveries(call).map(|d| d.payload.clone()).collect();
    assert_eq!(answer, [b"from the client".to_vec()]);

    // The client retracts its mount: the satellite answers, and the aggregate goes.
    client.retract(span);
    pump_all_until(&mut [&mut client, &mut caller], WAIT, |r| {
        r[0].ended(span).is_some()
            && r[1].span_of(aggregate).is_none()
            && router.try_snapshot().is_some_and(|s| !s.routes.iter().any(is_aggregate))
    })
    .unwrap();
    assert_eq!((client.closed(), caller.closed()), (None, None));
    let _ = std::fs::remove_dir_all(&dir);
}
