//! A worker's lanes to and from each other worker of its engine (DESIGN 7c.3): what its service
//! writes for another worker goes into the lane to it during the turn, and wakes that worker at
//! the turn's end only if it said it would sleep; what other workers wrote is handed to the
//! service at each turn ([`Service::lane`]).

use std::sync::Arc;

use super::*;
use crate::ring::lane::{LaneRx, LaneTx, Sleeper, lane};

/// One worker's ends of the lanes between every pair of workers.
pub(crate) struct Lanes {
    /// To each worker, by index (none to itself).
    out: Vec<Option<LaneTx>>,
    /// From each worker, by index (none from itself).
    from: Vec<Option<LaneRx>>,
    /// Every worker's sleep flag, this one's at its index.
    sleepers: Arc<[Sleeper]>,
    /// Workers to wake at the end of the turn if they sleep: written to this turn.
    written: Vec<bool>,
    /// Workers to wake at the end of the turn whatever they do: they found their lane to us full
    /// and we made room.
    room: Vec<bool>,
}

/// The lanes of an engine of `workers` workers, each `capacity` bytes (none for one worker):
/// each worker's ends, by worker index.
pub(crate) fn mesh(workers: usize, capacity: usize) -> Vec<Lanes> {
    let sleepers: Arc<[Sleeper]> = (0..workers).map(|_| Sleeper::default()).collect();
    let mut all: Vec<Lanes> = (0..workers)
        .map(|_| Lanes {
            out: (0..workers).map(|_| None).collect(),
            from: (0..workers).map(|_| None).collect(),
            sleepers: sleepers.clone(),
            written: vec![false; workers],
            room: vec![false; workers],
        })
        .collect();
    for a in 0..workers {
        for b in (0..workers).filter(|&b| b != a) {
            let (tx, rx) = lane(capacity);
            all[a].out[b] = Some(tx);
            all[b].from[a] = Some(rx);
        }
    }
    all
}

impl Lanes {
    /// Writes what fits of `bytes` into the lane to worker `to`; the bytes taken. Nothing for
    /// an unknown worker or this one.
    pub(crate) fn write(&mut self, to: usize, bytes: &[u8]) -> usize {
        let Some(Some(tx)) = self.out.get_mut(to) else { return 0 };
        let n = tx.write(bytes);
        if n > 0 {
            self.written[to] = true;
        }
        n
    }

    /// Whether there are other workers to share lanes with (a lone worker has nothing to do
    /// for lanes, and does nothing).
    fn meshed(&self) -> bool {
        self.from.len() > 1
    }

    /// Whether a lane to this worker has bytes waiting (a fresh look, for the check before
    /// sleeping).
    fn any_waiting(&mut self) -> bool {
        self.from.iter_mut().flatten().any(|rx| !rx.is_empty())
    }
}

impl Worker {
    /// Hands the service what other workers wrote to this one, lane by lane, as long as it takes
    /// some; what it leaves stays for the next turn.
    pub(super) fn deliver_lanes(&mut self, service: &mut impl Service) {
        if !self.lanes.meshed() {
            return;
        }
        for from in 0..self.lanes.from.len() {
            let Some(mut rx) = self.lanes.from[from].take() else { continue };
            loop {
                let (bytes, _) = rx.peek();
                if bytes.is_empty() {
                    break;
                }
                let len = bytes.len();
                let taken = service.lane(&mut WorkerCtx { worker: self }, from, bytes).min(len);
                if rx.consume(taken) {
                    self.lanes.room[from] = true;
                }
                if taken < len {
                    break;
                }
            }
            self.lanes.from[from] = Some(rx);
        }
    }

    /// At the end of a turn: wakes each worker written to that said it would sleep, and each
    /// that waits for room we made.
    pub(super) fn wake_lanes(&mut self) {
        if !self.lanes.meshed() {
            return;
        }
        let lanes = &mut self.lanes;
        for to in 0..lanes.written.len() {
            let written = std::mem::take(&mut lanes.written[to]);
            let room = std::mem::take(&mut lanes.room[to]);
            if room || (written && lanes.sleepers[to].wake_if_sleeping()) {
                self.mailboxes[to].wake();
            }
        }
    }

    /// Before waiting in the kernel: says this worker will sleep, then looks at its lanes once
    /// more. `true` if bytes wait in one (do not sleep: the turn must deliver them).
    pub(super) fn lanes_say_sleep(&mut self) -> bool {
        if !self.lanes.meshed() {
            return false;
        }
        self.lanes.sleepers[self.index].about_to_sleep();
        if self.lanes.any_waiting() {
            self.lanes.sleepers[self.index].awake();
            return true;
        }
        false
    }

    /// Whether another worker's bytes wait in a lane to this one (for a busy poll, which does
    /// not say it sleeps, so no writer wakes it).
    pub(super) fn lanes_waiting(&mut self) -> bool {
        self.lanes.meshed() && self.lanes.any_waiting()
    }

    /// After waiting: this worker runs again.
    pub(super) fn lanes_awake(&mut self) {
        if self.lanes.meshed() {
            self.lanes.sleepers[self.index].awake();
        }
    }
}
