//! The production link under the simulator: keepalives, the idle deadline, bad bytes, close
//! notices, and seeded replay, on virtual time.

use std::time::Duration;

use super::{Closed, Net, Outcomes, Timing};
use crate::link::CloseReason;
use crate::sim::rng::Rng;
use crate::wire::ErrorCode;

const KEEPALIVE: Duration = Duration::from_millis(100);
const IDLE: Duration = Duration::from_millis(500);
const MS: Duration = Duration::from_millis(1);

/// Production's ratio of keepalive to idle timeout, on a scale a test can wait out.
fn short() -> Timing {
    let default = Timing::default();
    let periods = crate::link::Periods { idle_timeout: IDLE, ..default.periods };
    Timing { keepalive: KEEPALIVE, periods }
}

/// 0 – 1 – 2 (links 0 and 1), mount 7 at node 2, and `streams` streamed calls from node 0 to
/// it, open at both ends.
fn line_with_streams(streams: usize, seed: u64) -> (Net, Vec<crate::relay::CallId>) {
    line_with_streams_timed(streams, seed, short())
}

/// [`line_with_streams`] with the links' `timing`.
fn line_with_streams_timed(
    streams: usize,
    seed: u64,
    timing: Timing,
) -> (Net, Vec<crate::relay::CallId>) {
    let mut net = Net::new(3, seed).with_timing(timing);
    net.connect(0, 1).unwrap();
    net.connect(1, 2).unwrap();
    net.attach(2, 7).unwrap();
    net.run(10_000).unwrap();
    let calls = (0..streams).map(|_| net.open_stream(0, 7, b"stream").unwrap().unwrap()).collect();
    net.run(10_000).unwrap();
    assert_eq!(net.open_calls(0), streams);
    (net, calls)
}

#[test]
fn keepalives_keep_a_link_with_nothing_to_say_up() {
    let mut net = Net::new(2, 1).with_timing(short());
    net.connect(0, 1).unwrap();
    net.attach(1, 7).unwrap();
    net.run(10_000).unwrap();
    // Forty idle timeouts with no traffic but keepalives (and a rekey at two minutes).
    net.run_for(IDLE * 40).unwrap();
    assert!(net.is_up(0), "{:?}", net.closes);
    for side in 0..2 {
        // A record of keepalives every interval, at least.
        let records = net.link_stats(0, side).records_in;
        assert!(records >= 190, "end {side}: {records} records received");
    }
    net.run_for(Duration::from_secs(120)).unwrap();
    assert!(net.is_up(0), "{:?}", net.closes);
    net.call(0, 7, b"still there").unwrap();
    net.run(10_000).unwrap();
    assert_eq!(net.outcomes.completed, 1);
    net.check_quiet().unwrap();
}

#[test]
fn a_silent_link_is_cut_by_its_idle_deadline_and_calls_across_it_end_once() {
    let (mut net, calls) = line_with_streams(3, 2);
    // Node 2 still hears node 1, but nothing it sends arrives any more.
    net.mute(1, 1);
    let due = net.heard(1, 0) + IDLE;
    // The callers go on sending: the messages reach node 2, its echoes are lost.
    for &call in &calls {
        net.stream_send(0, call, false).unwrap();
    }
    net.run_for(due - MS - net.now()).unwrap();
    assert!(net.is_up(1), "cut before its idle deadline: {:?}", net.closes);
    assert!(net.closes.is_empty());
    net.run_for(MS).unwrap();
    assert!(!net.is_up(1), "not cut at its idle deadline");
    let closed = Closed { link: 1, node: 1, reason: CloseReason::IdleTimeout, at: due };
    assert_eq!(net.closes, [closed]);
    // Keepalives kept the other link up all along.
    assert!(net.is_up(0));
    net.run(10_000).unwrap();
    // Each call ended once at each end, with the lost link.
    let lost = Outcomes { lost_link: 3, ..Outcomes::default() };
    assert_eq!((net.outcomes, net.served), (lost, lost));
    net.check_quiet().unwrap();
}

#[test]
fn a_peer_that_stops_reading_is_cut_at_the_send_stall_deadline_and_calls_end_once() {
    // A send stall shorter than the idle timeout, so the end whose sends stall finds out first.
    const STALL: Duration = Duration::from_millis(200);
    let mut timing = short();
    timing.periods.send_stall_timeout = STALL;
    let (mut net, calls) = line_with_streams_timed(3, 5, timing);
    // Node 2 takes nothing more from link 1; what it sends still arrives at node 1.
    net.stop_reading(1, 1);
    for &call in &calls {
        net.stream_send(0, call, false).unwrap();
    }
    net.run(10_000).unwrap();
    let since = net.stalled_since(1, 0).expect("node 1's send on link 1 stalled");
    assert!(net.is_up(1));
    net.run_for(since + STALL - MS - net.now()).unwrap();
    assert!(net.is_up(1), "cut before its send-stall deadline: {:?}", net.closes);
    net.run_for(MS).unwrap();
    assert!(!net.is_up(1), "not cut at its send-stall deadline");
    let closed = Closed { link: 1, node: 1, reason: CloseReason::SendStall, at: since + STALL };
    assert_eq!(net.closes, [closed]);
    assert!(net.is_up(0));
    net.run(10_000).unwrap();
    // Each call ended once at each end, with the lost link.
    let lost = Outcomes { lost_link: 3, ..Outcomes::default() };
    assert_eq!((net.outcomes, net.served), (lost, lost));
    net.check_quiet().unwrap();
}

#[test]
fn a_record_that_fails_to_authenticate_closes_its_link() {
    let (mut net, calls) = line_with_streams(2, 3);
    net.stream_send(0, calls[0], false).unwrap();
    // The batch node 0 just sent to node 1.
    assert!(net.corrupt(0, 0));
    net.run(10_000).unwrap();
    assert!(!net.is_up(0));
    assert!(net.is_up(1));
    assert!(
        matches!(
            net.closes[..],
            [Closed { link: 0, node: 1, reason: CloseReason::Protocol(_), .. }]
        ),
        "{:?}",
        net.closes
    );
    let lost = Outcomes { lost_link: 2, ..Outcomes::default() };
    assert_eq!((net.outcomes, net.served), (lost, lost));
    net.check_quiet().unwrap();
}

type Transcript = (u64, Duration, Outcomes, Outcomes, Vec<(usize, usize, CloseReason, Duration)>);

#[test]
fn a_close_notice_closes_the_far_end_when_it_arrives_or_its_idle_deadline_if_lost() {
    for lost in [false, true] {
        let (mut net, _) = line_with_streams(3, 4);
        if lost {
            net.mute(1, 0);
        }
        let due = net.heard(1, 1) + IDLE;
        // Node 1 closes its link to node 2, saying why: its end of every call across it ends
        // with that code at once (and node 0's with it).
        assert!(net.close_with_notice(1, 0, ErrorCode::REFUSED).unwrap());
        assert!(net.is_up(1), "the far end stays open until it hears");
        net.run(10_000).unwrap();
        if lost {
            assert!(net.is_up(1));
            net.run_for(due - net.now()).unwrap();
        }
        assert!(!net.is_up(1), "lost: {lost}");
        let reason =
            if lost { CloseReason::IdleTimeout } else { CloseReason::PeerSaid(ErrorCode::REFUSED) };
        assert!(
            matches!(net.closes[..], [Closed { link: 1, node: 2, reason: r, .. }] if r == reason),
            "lost: {lost}: {:?}",
            net.closes
        );
        net.run(10_000).unwrap();
        // Each call ended once at each end: with the notice's code at the callers' end, with
        // the lost link at the mount's.
        assert_eq!(net.served, Outcomes { lost_link: 3, ..Outcomes::default() });
        assert_eq!(net.outcomes, Outcomes { other: 3, ..Outcomes::default() });
        assert!(net.is_up(0));
        net.check_quiet().unwrap();
    }
}

/// A run with calls, cuts, mutes, corrupted batches and close notices, picked by `seed`: what it did (steps,
/// virtual time, outcomes at both ends, the links' own closes).
fn faulty_run(seed: u64) -> Transcript {
    let mut rng = Rng::new(seed);
    let mut net = Net::new(5, seed).with_timing(short());
    let start = net.now();
    for (a, b) in [(0, 1), (1, 2), (2, 3), (3, 4), (4, 0), (0, 2)] {
        net.connect(a, b).unwrap();
    }
    net.attach(3, 1).unwrap();
    net.run(100_000).unwrap();
    for _ in 0..6 {
        for _ in 0..8 {
            net.call(rng.index(3), 1, b"x").unwrap();
        }
        for _ in 0..rng.below(10) {
            net.step().unwrap();
        }
        let up: Vec<usize> = (0..net.link_count()).filter(|&l| net.is_up(l)).collect();
        let Some(&l) = up.get(rng.index(up.len().max(1))) else { break };
        match rng.below(4) {
            0 => net.mute(l, rng.index(2)),
            1 => {
                net.corrupt(l, rng.index(2));
            }
            2 => {
                net.close_with_notice(l, rng.index(2), ErrorCode::REFUSED).unwrap();
            }
            _ => net.cut(l).unwrap(),
        }
        net.run_for(IDLE * 2).unwrap();
        net.run(100_000).unwrap();
        net.check_quiet().unwrap();
    }
    let closes = net.closes.iter().map(|c| (c.link, c.node, c.reason, c.at - start)).collect();
    (net.steps, net.now() - start, net.outcomes, net.served, closes)
}

#[test]
fn a_seed_replays_the_same_run_whatever_the_ephemeral_keys() {
    let mut closes = 0;
    for seed in 0..4 {
        let first = faulty_run(seed);
        closes += first.4.len();
        assert_eq!(first, faulty_run(seed), "seed {seed}");
    }
    assert!(closes > 4, "links closed themselves (idle, bad bytes, notices): {closes}");
}
