//! A worker's lanes to and from each other worker of its engine (DESIGN 7c.3): they carry the
//! internal link between the two workers (`siblings.rs`). What the link sends goes into the lane
//! during the turn, and wakes the other worker at the turn's end only if it said it would sleep.

use std::sync::Arc;

use super::*;
use crate::cipher::record::lane_secrets;
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
    pub(super) room: Vec<bool>,
    /// The secrets of the internal link to each worker (ours to send with, theirs), until the
    /// link is made.
    pub(super) keys: Vec<Option<[[u8; 32]; 2]>>,
    /// The internal link to each worker, once made (and until it closes).
    pub(super) links: Vec<Option<LinkId>>,
    /// The worker stopped reading its sockets: its internal links hold too much unsent.
    pub(super) paused: bool,
}

/// The lanes of an engine of `workers` workers, each `capacity` bytes (none for one worker):
/// each worker's ends, by worker index, with fresh secrets for each pair's internal link.
pub(crate) fn mesh(workers: usize, capacity: usize) -> Result<Vec<Lanes>, crate::Error> {
    let sleepers: Arc<[Sleeper]> = (0..workers).map(|_| Sleeper::default()).collect();
    let mut all: Vec<Lanes> = (0..workers)
        .map(|_| Lanes {
            out: (0..workers).map(|_| None).collect(),
            from: (0..workers).map(|_| None).collect(),
            sleepers: sleepers.clone(),
            written: vec![false; workers],
            room: vec![false; workers],
            keys: vec![None; workers],
            links: vec![None; workers],
            paused: false,
        })
        .collect();
    for a in 0..workers {
        for b in (0..workers).filter(|&b| b != a) {
            let (tx, rx) = lane(capacity);
            all[a].out[b] = Some(tx);
            all[b].from[a] = Some(rx);
            if a < b {
                let [ab, ba] = lane_secrets()?;
                all[a].keys[b] = Some([ab, ba]);
                all[b].keys[a] = Some([ba, ab]);
            }
        }
    }
    Ok(all)
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

    /// The lane from worker `from`, taken out while its bytes are handled (put it back with
    /// [`Lanes::put_from`]).
    pub(super) fn take_from(&mut self, from: usize) -> Option<LaneRx> {
        self.from.get_mut(from)?.take()
    }

    /// Puts back the lane taken with [`Lanes::take_from`].
    pub(super) fn put_from(&mut self, from: usize, rx: LaneRx) {
        self.from[from] = Some(rx);
    }

    /// Workers of the engine.
    pub(super) fn workers(&self) -> usize {
        self.from.len()
    }

    /// Whether there are other workers to share lanes with (a lone worker has nothing to do
    /// for lanes, and does nothing).
    pub(super) fn meshed(&self) -> bool {
        self.from.len() > 1
    }

    /// Whether a lane to this worker has bytes waiting (a fresh look, for the check before
    /// sleeping).
    fn any_waiting(&mut self) -> bool {
        self.from.iter_mut().flatten().any(|rx| !rx.is_empty())
    }
}

impl Worker {
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
