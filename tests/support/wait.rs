//! Real time, and waiting on it for a condition. Tests read the clock here (the library takes
//! time as a parameter, and clippy keeps `Instant::now` out of it).

use std::time::{Duration, Instant};

/// The time now.
#[allow(clippy::disallowed_methods)]
pub fn now() -> Instant {
    Instant::now()
}

/// Asks `ok` every `every` until it holds (true) or `timeout` has passed (false).
pub fn poll(timeout: Duration, every: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let deadline = now() + timeout;
    loop {
        if ok() {
            return true;
        }
        if now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Asks `ok` every `every` until it holds; panics naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, every: Duration, ok: impl FnMut() -> bool) {
    assert!(poll(timeout, every, ok), "timed out waiting for {what}");
}

/// [`wait_until`], asking every 50 ms.
pub fn wait_for(what: &str, timeout: Duration, ok: impl FnMut() -> bool) {
    wait_until(what, timeout, Duration::from_millis(50), ok);
}
