//! Calls through a cluster of `ringspan run` processes from a node in the test's process: a
//! load that runs until told to stop, every call of it ending exactly once within [`WAIT`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, Call, CallEvent, Handle, Settings};
use ringspan::span::{MountKey, Role};
use ringspan::wire::ErrorCode;

use super::node::Node;

/// How long a call may take before the load calls it hung.
pub const WAIT: Duration = Duration::from_secs(20);

/// How the calls of [`load`] ended.
#[derive(Debug, Default)]
pub struct Tally {
    /// Calls opened.
    pub opened: u64,
    pub completed: u64,
    pub lost_link: u64,
    pub no_route: u64,
    pub other: u64,
    /// Answers whose payload differed from the request.
    pub corrupted: u64,
    /// Opens the node refused at once (no route at that moment); not calls.
    pub refused_at_open: u64,
}

impl Tally {
    /// Asserts that some calls were made and every one was answered, none refused or lost:
    /// what `what` (printed with the tally) promises.
    pub fn assert_every_call_answered(&self, what: &str) {
        eprintln!("{what}: {self:?}");
        assert!(self.completed > 0, "{what}: no call completed");
        assert_eq!(
            (self.lost_link, self.no_route, self.other, self.corrupted, self.refused_at_open),
            (0, 0, 0, 0, 0),
            "{what}: {self:?}"
        );
        assert_eq!(self.completed, self.opened, "{what}: {self:?}");
    }
}

/// Sets its flag when dropped, also when a panic unwinds.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A node in the test's process (the mount API, which `ringspan call` also runs on) with
/// `role`, linked to `peer`, whose allowlist holds `identity`'s key: keepalives every 200 ms, idle
/// after 1 s.
pub fn app(identity: Identity, role: Role, peer: &Node) -> Handle {
    app_timed(identity, role, peer, Duration::from_millis(200), Duration::from_millis(1000))
}

/// [`app`] with its own keepalive interval and idle timeout.
pub fn app_timed(
    identity: Identity,
    role: Role,
    peer: &Node,
    keepalive: Duration,
    idle_timeout: Duration,
) -> Handle {
    let mut settings = Settings::new(identity);
    settings.role = role;
    settings.peers = vec![peer.peer()];
    settings.recv_buffers = 8;
    settings.limits.keepalive = keepalive;
    settings.limits.idle_timeout = idle_timeout;
    settings.limits.redial_min = Duration::from_millis(50);
    settings.limits.redial_max = Duration::from_millis(500);
    Handle::start(settings).unwrap()
}

/// One-shot calls to `mounts` in turn, `concurrency` in flight, until `stop` is set; then the
/// last ones are waited for. Every call must end exactly once within [`WAIT`]. Each answered
/// call counts in `completed[i]` for `mounts[i]`, as it ends.
pub fn load(
    handle: &Handle,
    mounts: &[MountKey],
    concurrency: usize,
    stop: &AtomicBool,
    completed: &[AtomicU64],
) -> Tally {
    let mut tally = Tally::default();
    let mut in_flight: VecDeque<(Call, Vec<u8>, usize)> = VecDeque::new();
    let mut next = 0;
    loop {
        while !stop.load(Ordering::Relaxed) && in_flight.len() < concurrency {
            let which = next % mounts.len();
            next += 1;
            let payload = format!("{:0100}", tally.opened + tally.refused_at_open).into_bytes();
            match handle.open(mounts[which], CALL, &payload, true) {
                Ok(call) => {
                    tally.opened += 1;
                    in_flight.push_back((call, payload, which));
                }
                Err(_) => {
                    tally.refused_at_open += 1;
                    break;
                }
            }
        }
        let Some((call, payload, which)) = in_flight.pop_front() else {
            if stop.load(Ordering::Relaxed) {
                return tally;
            }
            // Every open was refused: no route this instant. Try again soon.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let error = loop {
            match call.recv(WAIT) {
                Some(CallEvent::Message { payload: answer, abort: false, .. }) => {
                    tally.corrupted += u64::from(answer != payload);
                }
                Some(CallEvent::Message { .. }) => {}
                Some(CallEvent::Ended(error)) => break error,
                None => panic!("a call hangs: not ended after {WAIT:?} ({tally:?})"),
            }
        };
        assert!(call.recv(Duration::ZERO).is_none(), "a call goes on after it ended");
        match error {
            ErrorCode::NONE => {
                tally.completed += 1;
                completed[which].fetch_add(1, Ordering::Relaxed);
            }
            ErrorCode::LOST_LINK => tally.lost_link += 1,
            ErrorCode::NO_ROUTE => tally.no_route += 1,
            _ => tally.other += 1,
        }
    }
}
