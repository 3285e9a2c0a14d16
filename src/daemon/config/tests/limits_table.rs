//! The `[limits]` table's tests: each bound, the defaults they are checked against, and the
//! limits checked against each other.

use std::time::Duration;

use crate::daemon::Limits;
use crate::limits;

use super::{MINIMAL, ms, parse, refused};

fn with_limits(limits: &str) -> String {
    format!("{MINIMAL}[limits]\n{limits}")
}

#[test]
fn durations_are_positive_and_at_most_a_day() {
    for field in [
        "keepalive_ms",
        "idle_timeout_ms",
        "handshake_timeout_ms",
        "redial_min_ms",
        "redial_max_ms",
        "circuit_idle_ms",
    ] {
        refused(
            &with_limits(&format!("{field} = 0\n")),
            4,
            &format!("limits.{field} must be greater than 0, not 0"),
        );
        refused(&with_limits(&format!("{field} = -5\n")), 4, "greater than 0, not -5");
        refused(&with_limits(&format!("{field} = 86400001\n")), 4, "more than one day");
    }
    let day = with_limits("keepalive_ms = 1000\nidle_timeout_ms = 86400000\n");
    assert_eq!(parse(&day).unwrap().limits.idle_timeout, ms(limits::CONFIG_MILLIS_MAX));
}

#[test]
fn idle_timeout_must_exceed_keepalive() {
    let error = refused(
        &with_limits("keepalive_ms = 2000\nidle_timeout_ms = 2000\n"),
        5,
        "limits.idle_timeout_ms (2000) must be greater than limits.keepalive_ms (2000)",
    );
    assert_eq!(error.column, Some(19));
    // Only the keepalive given: the error points at it, and names the default it broke.
    refused(
        &with_limits("keepalive_ms = 6000\n"),
        4,
        "limits.idle_timeout_ms (5000, the default) must be greater than limits.keepalive_ms \
         (6000)",
    );
    refused(&with_limits("idle_timeout_ms = 1000\n"), 4, "keepalive_ms (1000, the default)");
    let ok = parse(&with_limits("keepalive_ms = 1\nidle_timeout_ms = 2\n")).unwrap();
    assert_eq!((ok.limits.keepalive, ok.limits.idle_timeout), (ms(1), ms(2)));
}

#[test]
fn handshake_timeout_must_be_positive() {
    refused(
        &with_limits("handshake_timeout_ms = 0\n"),
        4,
        "limits.handshake_timeout_ms must be greater than 0",
    );
    assert_eq!(
        parse(&with_limits("handshake_timeout_ms = 1\n")).unwrap().limits.handshake_timeout,
        ms(1)
    );
}

#[test]
fn redial_min_may_not_exceed_redial_max() {
    refused(
        &with_limits("redial_max_ms = 2000\nredial_min_ms = 2001\n"),
        5,
        "limits.redial_min_ms (2001) must not be greater than limits.redial_max_ms (2000)",
    );
    refused(&with_limits("redial_max_ms = 99\n"), 4, "redial_min_ms (100, the default)");
    refused(&with_limits("redial_min_ms = 5001\n"), 4, "redial_max_ms (5000, the default)");
}

#[test]
fn the_send_queue_holds_at_least_one_record() {
    let queue = |n: i64| with_limits(&format!("send_queue_max_bytes = {n}\n"));
    let least = limits::RECORD_WIRE_MAX as i64;
    assert_eq!(parse(&queue(least)).unwrap().limits.send_queue_max_bytes, limits::RECORD_WIRE_MAX);
    refused(&queue(least - 1), 4, "limits.send_queue_max_bytes must be at least 65560");
    refused(&queue(0), 4, "one full record), not 0");
    refused(&queue(-1), 4, "not -1");
}

#[test]
fn admission_bounds_are_counts_from_one() {
    let links = |n: i64| with_limits(&format!("max_links = {n}\n"));
    let rate = |n: i64| with_limits(&format!("max_handshakes_per_sec = {n}\n"));
    assert_eq!(parse(&links(1)).unwrap().limits.max_links, 1);
    let most = limits::MAX_LINKS_PER_WORKER as i64;
    assert_eq!(parse(&links(most)).unwrap().limits.max_links, limits::MAX_LINKS_PER_WORKER);
    assert_eq!(parse(&rate(1)).unwrap().limits.max_handshakes_per_sec, 1);
    let fastest = i64::from(u32::MAX);
    assert_eq!(parse(&rate(fastest)).unwrap().limits.max_handshakes_per_sec, u32::MAX);

    let error = refused(&links(0), 4, "limits.max_links must be between 1 and 1048576, not 0");
    assert_eq!(error.column, Some(13));
    refused(&links(-3), 4, "limits.max_links must be between 1 and 1048576, not -3");
    refused(&links(most + 1), 4, "not 1048577");
    let error = refused(
        &rate(0),
        4,
        "limits.max_handshakes_per_sec must be between 1 and 4294967295, not 0",
    );
    assert_eq!(error.column, Some(26));
    refused(&rate(-1), 4, "max_handshakes_per_sec must be between 1 and 4294967295, not -1");
    refused(&rate(fastest + 1), 4, "not 4294967296");
    refused(&with_limits("max_links = \"many\"\n"), 4, "invalid type: string");
    refused(&with_limits("max_handshakes_per_sec = 1.5\n"), 4, "invalid type: floating");

    // Busy polling: 0 (off) to 10 ms.
    let poll = |n: i64| with_limits(&format!("busy_poll_us = {n}\n"));
    assert_eq!(parse(&poll(0)).unwrap().limits.busy_poll, Duration::ZERO);
    let longest = limits::BUSY_POLL_US_MAX as i64;
    assert_eq!(
        parse(&poll(longest)).unwrap().limits.busy_poll,
        Duration::from_micros(limits::BUSY_POLL_US_MAX)
    );
    let error = refused(&poll(-1), 4, "limits.busy_poll_us must be between 0 and 10000, not -1");
    assert_eq!(error.column, Some(16));
    refused(&poll(longest + 1), 4, "not 10001");

    // The trusted bucket is a rate from one too; the reserve may be none.
    let trusted = |n: i64| with_limits(&format!("trusted_handshakes_per_sec = {n}\n"));
    assert_eq!(parse(&trusted(1)).unwrap().limits.trusted_handshakes_per_sec, 1);
    refused(
        &trusted(0),
        4,
        "limits.trusted_handshakes_per_sec must be between 1 and 4294967295, not 0",
    );
    refused(&trusted(fastest + 1), 4, "not 4294967296");
    let reserved = |n: i64| with_limits(&format!("reserved_links = {n}\n"));
    assert_eq!(parse(&reserved(most)).unwrap().limits.reserved_links, limits::MAX_LINKS_PER_WORKER);
    refused(&reserved(-1), 4, "limits.reserved_links must be between 0 and 1048576, not -1");
    refused(&reserved(most + 1), 4, "not 1048577");

    // Among the other limits, each keeps its own value.
    let both = parse(&with_limits(
        "keepalive_ms = 500\nmax_links = 7\nmax_handshakes_per_sec = 9\nredial_max_ms = 600\n",
    ))
    .unwrap()
    .limits;
    assert_eq!(
        both,
        Limits {
            keepalive: ms(500),
            redial_max: ms(600),
            max_links: 7,
            max_handshakes_per_sec: 9,
            ..Limits::default()
        }
    );
}
