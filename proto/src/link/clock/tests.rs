use super::*;

const PERIODS: Periods = Periods {
    idle_timeout: Duration::from_millis(600),
    send_stall_timeout: Duration::from_millis(400),
    shed_keys_after: Duration::from_millis(1_000),
    record_completion_timeout: Duration::from_millis(300),
};
const KEEPALIVE: Duration = Duration::from_millis(200);

fn epoch() -> Instant {
    #[allow(clippy::disallowed_methods)] // a test's fixed epoch
    Instant::now()
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// A clock established at `t0`, with the entries it asked for.
fn up(t0: Instant) -> LinkClock {
    let mut clock = LinkClock::new(t0);
    let armed = clock.established(t0, KEEPALIVE, &PERIODS);
    assert_eq!(
        armed,
        [
            (Deadline::Keepalive, ms(t0, 200)),
            (Deadline::Idle, ms(t0, 600)),
            (Deadline::Shed, ms(t0, 1_000))
        ]
    );
    clock
}

fn fire(clock: &mut LinkClock, deadline: Deadline, at: Instant) -> Fired {
    clock.fire(deadline, at, KEEPALIVE, false, RxState::default(), &PERIODS)
}

#[test]
fn the_idle_deadline_follows_what_arrives() {
    let t0 = epoch();
    let mut clock = up(t0);
    clock.received(ms(t0, 500));
    assert_eq!(fire(&mut clock, Deadline::Idle, ms(t0, 600)), Fired::Later(ms(t0, 1_100)));
    assert_eq!(fire(&mut clock, Deadline::Idle, ms(t0, 1_100)), Fired::Expired(Expiry::Idle));
}

#[test]
fn a_keepalive_moved_later_by_sends_has_one_live_entry() {
    let t0 = epoch();
    let mut clock = up(t0);
    // Records go out at 50 and 150: the entry armed for 200 finds the keepalive due at 350,
    // and follows it once.
    assert!(clock.sealed(ms(t0, 50), false, &PERIODS).is_none(), "a shed entry is armed");
    clock.sealed(ms(t0, 150), false, &PERIODS);
    assert_eq!(fire(&mut clock, Deadline::Keepalive, ms(t0, 200)), Fired::Later(ms(t0, 350)));
    // The interval changes to 100 at 220: an entry at 250; the one at 350 is stale then.
    let short = Duration::from_millis(100);
    assert_eq!(clock.keepalive_changed(ms(t0, 220), short), ms(t0, 250));
    let fired =
        clock.fire(Deadline::Keepalive, ms(t0, 250), short, false, RxState::default(), &PERIODS);
    assert_eq!(fired, Fired::Ping { next: ms(t0, 350) });
    // Two entries are due at 350 now (the one that followed the sends, and the ping's): the
    // first sends the next keepalive, the second is dropped.
    let fired =
        clock.fire(Deadline::Keepalive, ms(t0, 350), short, false, RxState::default(), &PERIODS);
    assert_eq!(fired, Fired::Ping { next: ms(t0, 450) });
    let fired =
        clock.fire(Deadline::Keepalive, ms(t0, 350), short, false, RxState::default(), &PERIODS);
    assert_eq!(fired, Fired::Stale);
}

#[test]
fn an_entry_left_from_before_a_send_is_dropped_when_another_follows_the_deadline() {
    let t0 = epoch();
    let mut clock = up(t0);
    clock.sealed(ms(t0, 100), false, &PERIODS);
    // The first entry follows the sends; a second one left early (an interval change that was
    // set back) finds the deadline armed already.
    assert_eq!(fire(&mut clock, Deadline::Keepalive, ms(t0, 200)), Fired::Later(ms(t0, 300)));
    assert_eq!(fire(&mut clock, Deadline::Keepalive, ms(t0, 210)), Fired::Stale);
}

#[test]
fn a_quiet_link_sheds_its_keys_after_its_keepalive_is_sealed() {
    let t0 = epoch();
    let mut clock = up(t0);
    // Only keepalives cross: the one at 1,000 is alone in its record, past the shed period.
    let mut at = 200;
    while at < 1_000 {
        assert_eq!(
            fire(&mut clock, Deadline::Keepalive, ms(t0, at)),
            Fired::Ping { next: ms(t0, at + 200) }
        );
        assert!(clock.sealed(ms(t0, at), false, &PERIODS).is_none(), "a ping is not data");
        assert!(!clock.end_turn(), "not quiet for long enough at {at}");
        at += 200;
    }
    assert_eq!(
        fire(&mut clock, Deadline::Keepalive, ms(t0, 1_000)),
        Fired::Ping { next: ms(t0, 1_200) }
    );
    clock.sealed(ms(t0, 1_000), false, &PERIODS);
    assert!(clock.end_turn(), "quiet since 0: shed once the ping is sealed");
    assert!(!clock.end_turn(), "once");
    // The shed entry armed at establishment agrees.
    assert_eq!(fire(&mut clock, Deadline::Shed, ms(t0, 1_000)), Fired::ShedKeys);
}

#[test]
fn a_keepalive_riding_with_data_is_data() {
    let t0 = epoch();
    let mut clock = up(t0);
    let fired = clock.fire(
        Deadline::Keepalive,
        ms(t0, 1_200),
        KEEPALIVE,
        true,
        RxState::default(),
        &PERIODS,
    );
    assert_eq!(fired, Fired::Ping { next: ms(t0, 1_400) });
    clock.sealed(ms(t0, 1_200), false, &PERIODS);
    assert!(!clock.end_turn(), "the record carried data too");
    assert_eq!(clock.last_data(), ms(t0, 1_200));
}

#[test]
fn data_written_after_a_keepalive_in_the_same_turn_is_data() {
    // The keepalive fires alone (nothing built yet), then the application writes into the
    // same record before the turn ends: the record is data, and the keys stay.
    let t0 = epoch();
    let mut clock = up(t0);
    assert_eq!(
        fire(&mut clock, Deadline::Keepalive, ms(t0, 1_200)),
        Fired::Ping { next: ms(t0, 1_400) }
    );
    clock.data_written();
    clock.sealed(ms(t0, 1_200), false, &PERIODS);
    assert!(!clock.end_turn(), "the record carried data too");
    assert_eq!(clock.last_data(), ms(t0, 1_200));
}

#[test]
fn the_shed_entry_follows_data_and_is_armed_again_after_a_shed() {
    let t0 = epoch();
    let mut clock = up(t0);
    // Data at 600 (received) and 800 (sent): the entry at 1,000 follows to 1,800.
    assert_eq!(clock.received_data(ms(t0, 600), &PERIODS), None, "one entry is armed");
    assert_eq!(clock.sealed(ms(t0, 800), false, &PERIODS), None);
    assert_eq!(fire(&mut clock, Deadline::Shed, ms(t0, 1_000)), Fired::Later(ms(t0, 1_800)));
    assert_eq!(fire(&mut clock, Deadline::Shed, ms(t0, 1_800)), Fired::ShedKeys);
    // Shed: the next data arms an entry again, a forwarded record as well as a built one.
    assert_eq!(clock.sealed(ms(t0, 2_000), true, &PERIODS), Some(ms(t0, 3_000)));
    assert_eq!(clock.received_data(ms(t0, 2_100), &PERIODS), None);
    assert_eq!(fire(&mut clock, Deadline::Shed, ms(t0, 3_000)), Fired::Later(ms(t0, 3_100)));
}

#[test]
fn a_send_that_does_not_complete_within_the_stall_timeout_closes_the_link() {
    let t0 = epoch();
    let mut clock = up(t0);
    assert_eq!(clock.send_started(ms(t0, 100), &PERIODS), Some(ms(t0, 500)));
    clock.send_done();
    // A later send: the one entry follows it.
    assert_eq!(clock.send_started(ms(t0, 300), &PERIODS), None);
    assert!(clock.sending());
    assert_eq!(fire(&mut clock, Deadline::SendStall, ms(t0, 500)), Fired::Later(ms(t0, 700)));
    assert_eq!(
        fire(&mut clock, Deadline::SendStall, ms(t0, 700)),
        Fired::Expired(Expiry::SendStall)
    );
    // No send in flight: an entry is stale, and the next send arms one.
    clock.send_done();
    let mut clock2 = up(t0);
    assert_eq!(clock2.send_started(ms(t0, 10), &PERIODS), Some(ms(t0, 410)));
    clock2.send_done();
    assert_eq!(fire(&mut clock2, Deadline::SendStall, ms(t0, 410)), Fired::Stale);
    assert_eq!(clock2.send_started(ms(t0, 420), &PERIODS), Some(ms(t0, 820)));
}

#[test]
fn a_record_unfinished_past_its_period_closes_the_link_and_a_finished_one_does_not() {
    let t0 = epoch();
    let mut clock = up(t0);
    assert_eq!(clock.arm_reassembly(ms(t0, 10), false, &PERIODS), None, "nothing held");
    assert_eq!(clock.arm_reassembly(ms(t0, 10), true, &PERIODS), Some(ms(t0, 310)));
    assert_eq!(clock.arm_reassembly(ms(t0, 20), true, &PERIODS), None, "one entry at most");
    // That record completed and another took a buffer: the entry gives way, and the new
    // record gets a period of its own.
    let finished = RxState { unfinished: false };
    let fired = clock.fire(Deadline::Reassembly, ms(t0, 310), KEEPALIVE, false, finished, &PERIODS);
    assert_eq!(fired, Fired::Stale);
    assert_eq!(clock.arm_reassembly(ms(t0, 310), true, &PERIODS), Some(ms(t0, 610)));
    let stuck = RxState { unfinished: true };
    let fired = clock.fire(Deadline::Reassembly, ms(t0, 610), KEEPALIVE, false, stuck, &PERIODS);
    assert_eq!(fired, Fired::Expired(Expiry::Reassembly));
}

#[test]
fn the_clock_stays_small() {
    assert!(std::mem::size_of::<LinkClock>() <= 72, "{}", std::mem::size_of::<LinkClock>());
}
