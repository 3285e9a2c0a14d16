//! Relay behaviour on the simulator's network of full nodes (`sim::net`).

use crate::error::{Error, Limit};
use crate::ids::LinkId;
use crate::limits::MESSAGE_PAYLOAD_MAX;
use crate::sim::net::{ECHO, Net, mount};
use crate::span::{Metric, NextHop};
use crate::wire::{ErrorCode, Flags};

fn line(n: usize) -> Net {
    let mut net = Net::new(n, 1);
    for i in 0..n - 1 {
        net.connect(i, i + 1).unwrap();
    }
    net.run(10_000).unwrap();
    net
}

#[test]
fn a_call_crosses_three_relays_and_ends_at_both_ends() {
    let mut net = line(5);
    net.attach(4, 7).unwrap();
    net.run(10_000).unwrap();
    assert_eq!(net.node(0).route(mount(7)).unwrap().metric, Metric(4));
    for _ in 0..10 {
        net.call(0, 7, b"hello through the cluster").unwrap();
    }
    net.run(10_000).unwrap();
    assert_eq!(net.outcomes.completed, 10);
    for relay in 1..4 {
        assert_eq!(net.node(relay).counters().relayed, 10, "relay {relay}");
    }
    assert_eq!(net.node(4).counters().served, 10);
    net.check_quiet().unwrap();
}

#[test]
fn no_route_is_refused_at_once() {
    let mut net = line(2);
    net.call(0, 99, b"x").unwrap();
    assert_eq!(net.outcomes.no_route, 1);
    net.check_quiet().unwrap();
}

#[test]
fn a_cut_link_ends_every_call_across_it_with_lost_link() {
    let mut net = line(4);
    net.attach(3, 1).unwrap();
    net.run(10_000).unwrap();
    for _ in 0..20 {
        net.call(0, 1, b"x").unwrap();
    }
    // A few steps in, some calls are mid-way: cut the middle link.
    for _ in 0..3 {
        net.step().unwrap();
    }
    net.cut(1).unwrap();
    net.run(10_000).unwrap();
    // Each ends exactly once: answered, lost on the cut link, or refused by node 1 for lack of a
    // route once the cut reached its table.
    let o = net.outcomes;
    assert_eq!(o.completed + o.lost_link + o.no_route, 20, "{o:?}");
    assert!(o.lost_link > 0, "{o:?}");
    assert_eq!(o.other, 0);
    net.check_quiet().unwrap();
}

#[test]
fn circuits_stay_on_their_path_when_a_better_one_appears() {
    // 0–1–2–3 with the mount at 3; calls go out; then a direct link 0–3 appears before they are
    // answered. They complete on the old path; later calls take the new one.
    let mut net = line(4);
    net.attach(3, 5).unwrap();
    net.run(10_000).unwrap();
    for _ in 0..5 {
        net.call(0, 5, b"old path").unwrap();
    }
    net.step().unwrap();
    let direct = net.connect(0, 3).unwrap();
    net.run(10_000).unwrap();
    assert_eq!(net.outcomes.completed, 5);
    assert_eq!(net.node(1).counters().relayed, 5);
    assert_eq!(
        net.node(0).route(mount(5)).unwrap().next_hop,
        NextHop::Neighbour(crate::ids::NeighbourId(LinkId(direct as u64).0))
    );
    for _ in 0..5 {
        net.call(0, 5, b"new path").unwrap();
    }
    net.run(10_000).unwrap();
    assert_eq!(net.outcomes.completed, 10);
    assert_eq!(net.node(1).counters().relayed, 5, "new calls do not cross node 1");
    net.check_quiet().unwrap();
}

#[test]
fn a_crashed_relay_ends_calls_through_it_and_traffic_reroutes() {
    // A square 0–1–3, 0–2–3: crash 1 mid-calls; the calls through it end with LOST_LINK, new
    // ones go through 2, and the restarted node carries traffic again once relinked.
    let mut net = Net::new(4, 3);
    let _ = net.connect(0, 1).unwrap();
    let _ = net.connect(1, 3).unwrap();
    net.run(10_000).unwrap();
    net.connect(0, 2).unwrap();
    net.connect(2, 3).unwrap();
    net.attach(3, 9).unwrap();
    net.run(10_000).unwrap();
    assert_eq!(net.node(0).route(mount(9)).unwrap().metric, Metric(2));
    for _ in 0..10 {
        net.call(0, 9, b"x").unwrap();
    }
    net.step().unwrap();
    net.crash(1).unwrap();
    net.run(10_000).unwrap();
    net.check_quiet().unwrap();
    let done = net.outcomes.completed + net.outcomes.lost_link;
    assert_eq!(done, 10, "{:?}", net.outcomes);
    for _ in 0..10 {
        net.call(0, 9, b"y").unwrap();
    }
    net.run(10_000).unwrap();
    assert_eq!(net.outcomes.completed + net.outcomes.lost_link, 20);
    assert!(net.node(2).counters().relayed >= 10, "new calls go through node 2");
    net.restart(1).unwrap();
    net.connect(0, 1).unwrap();
    net.connect(1, 3).unwrap();
    net.run(10_000).unwrap();
    net.check_quiet().unwrap();
}

#[test]
fn a_payload_no_message_can_carry_is_refused_at_once() {
    let mut net = line(3);
    net.attach(2, 7).unwrap();
    net.run(10_000).unwrap();
    let big = vec![0u8; MESSAGE_PAYLOAD_MAX + 1];
    let too_big = |result: Result<_, Error>| matches!(result, Err(Error::LimitReached(Limit::PayloadTooLarge(n))) if n == big.len());
    {
        let (node, mut links) = net.node_and_links(0);
        assert!(too_big(node.open(mount(7), ECHO, &big, Flags::DELETE, &mut links).map(|_| ())));
    }
    assert_eq!(net.node(0).circuits(), 0, "nothing opened");
    // On a call: refused, and the call goes on as if it had not been tried.
    let call = net.open_stream(0, 7, b"fits").unwrap().unwrap();
    net.run(10_000).unwrap();
    {
        let (node, mut links) = net.node_and_links(0);
        assert!(too_big(node.send(call, ECHO, &big, Flags::NONE, ErrorCode::NONE, &mut links)));
        assert!(too_big(node.send(call, ECHO, &big, Flags::DELETE, ErrorCode::NONE, &mut links)));
    }
    net.stream_send(0, call, true).unwrap();
    net.run(10_000).unwrap();
    assert_eq!(net.outcomes.completed, 1, "{:?}", net.outcomes);
    net.check_quiet().unwrap();
}
