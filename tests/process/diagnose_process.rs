//! What an operator sees of a refused link, with real `ringspan run` processes: node b does not
//! allow a's key, and a dials b. b logs a WARN line naming a's key and address (rate-limited);
//! a's `show` says b refused it, with the last error and when the next dial is due, and a's
//! backoff grows to its longest wait instead of redialling at the first step forever.

use std::time::Duration;

use ringspan::daemon::{PeerRow, Snapshot};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::wait::wait_for;

const WAIT: Duration = Duration::from_secs(30);
const REDIAL_MIN_MS: u64 = 50;
const REDIAL_MAX_MS: u64 = 800;

/// a's row for b, once a answers.
fn row_of(a: &Node) -> Option<PeerRow> {
    let snapshot: Snapshot = a.try_snapshot()?;
    snapshot.peers.into_iter().next()
}

#[test]
fn a_refused_key_is_logged_by_the_refuser_and_shown_by_the_dialler_backing_off() {
    let dir = scratch("diagnose");
    let [a, b] = ["a", "b"].map(|n| Node::new(&dir, n));
    let limits = format!(
        "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = {REDIAL_MIN_MS}\n\
         redial_max_ms = {REDIAL_MAX_MS}\n"
    );
    // b names no peer and allows no key: a's is refused at the end of each handshake.
    config::write(&b, "", &limits, "");
    config::write(&a, "", &limits, &config::peer(&b, true));
    let _b = b.run();
    let _a = a.run();

    // b's log names a's key (as `ringspan pubkey` prints it) and where it came from.
    let key = a.public().to_base64();
    let log = b.config.with_extension("log");
    let mut line = String::new();
    wait_for("b to log the refusal of a's key", WAIT, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        match text.lines().find(|l| l.contains("refused a link") && l.contains(&key)) {
            Some(found) => {
                line = found.to_string();
                true
            }
            None => false,
        }
    });
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("its key is not allowed"), "{line}");
    assert!(line.contains("127.0.0.1:"), "the address: {line}");

    // a: b refused it several times in a row, and the wait before the next dial grew. With
    // four failures or more the step is redial_max_ms, jittered down by at most half.
    let mut row = PeerRow::default();
    wait_for("a to show b refusing it, backing off", WAIT, || {
        row_of(&a).is_some_and(|r| {
            row = r;
            row.state == "refused" && row.failures >= 4
        })
    });
    assert_eq!(row.key, b.public().to_base64());
    assert!(row.backoff_ms >= REDIAL_MAX_MS / 2, "backoff grew past redial_min: {row:?}");
    assert!(row.backoff_ms > REDIAL_MIN_MS, "{row:?}");
    let next = row.next_dial_ms.unwrap_or_else(|| panic!("a refused peer waits: {row:?}"));
    assert!(next <= row.backoff_ms, "{row:?}");
    let error = row.last_error.clone().unwrap_or_else(|| panic!("no last error: {row:?}"));
    assert!(error.contains("after its handshake"), "{error}");
    assert!(error.contains("may not allow this node's key"), "{error}");
    assert!(row.last_error_ago_ms.is_some(), "{row:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
