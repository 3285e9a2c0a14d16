//! The worker's timer heap: arming entries for each link's deadlines and acting on those
//! that come due (what a link's own deadlines call for is its clock's answer, `link::LinkClock`).

use super::*;

impl Worker {
    /// Arms the handshake deadline (the session's timeout, unless it is "never").
    pub(super) fn arm_handshake_timer(&mut self, slot: u32) {
        if let Some(at) = self.now.checked_add(self.cipher.handshake_timeout) {
            self.arm_timer(slot, TimerKind::Handshake, at);
        }
    }

    /// Arms the link's reassembly deadline if it holds a record in a full-size buffer that has
    /// none. One timer per link at most: one armed for an earlier record, when it fires, gives
    /// the record it then finds a period of its own (`TimerKind::Reassembly`).
    pub(super) fn arm_reassembly(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if let Some(at) = conn.link.arm_reassembly(self.now, &self.periods) {
            self.arm_timer(slot, TimerKind::Reassembly, at);
        }
    }

    pub(super) fn arm_timer(&mut self, slot: u32, kind: TimerKind, at: Instant) {
        let generation = self.conns[slot as usize].generation;
        self.timers.arm(Timer { at, slot, generation, kind });
    }

    pub(super) fn fire_timers(&mut self, service: &mut impl Service) {
        while let Some(timer) = self.timers.pop_due(self.now) {
            let Some(conn) = self.conns.get_mut(timer.slot as usize) else {
                continue;
            };
            if conn.generation != timer.generation || conn.phase == Phase::Closing {
                continue;
            }
            let slot = timer.slot;
            match timer.kind {
                TimerKind::Handshake => {
                    if matches!(conn.phase, Phase::Connecting | Phase::Handshake) {
                        let error = Error::from(crate::error::Handshake::Timeout);
                        self.close(service, slot, CloseReason::Protocol(error));
                    }
                }
                TimerKind::Rekey => match conn.link.handle_rekey(self.now) {
                    Ok(Some(at)) => self.arm_timer(slot, TimerKind::Rekey, at),
                    Ok(None) => {}
                    Err(reason) => self.close(service, slot, reason),
                },
                TimerKind::Keepalive
                | TimerKind::Idle
                | TimerKind::SendStall
                | TimerKind::Shed
                | TimerKind::Reassembly => {
                    let deadline = match timer.kind {
                        TimerKind::Keepalive => Deadline::Keepalive,
                        TimerKind::Idle => Deadline::Idle,
                        TimerKind::SendStall => Deadline::SendStall,
                        TimerKind::Shed => Deadline::Shed,
                        _ => Deadline::Reassembly,
                    };
                    let keepalive = self.config.keepalive_interval;
                    match conn.link.handle_timeout(
                        deadline,
                        self.now,
                        keepalive,
                        &self.pool,
                        &self.periods,
                    ) {
                        Timeout::Nothing => {}
                        Timeout::Arm(deadline, at) => self.arm_timer(slot, kind_of(deadline), at),
                        Timeout::Pinged(next) => {
                            self.touch(slot);
                            self.arm_timer(slot, TimerKind::Keepalive, next);
                        }
                        Timeout::Close(reason) => self.close(service, slot, reason),
                    }
                }
            }
        }
    }
}

/// The heap's kind for one of a link's own deadlines.
pub(super) fn kind_of(deadline: Deadline) -> TimerKind {
    match deadline {
        Deadline::Keepalive => TimerKind::Keepalive,
        Deadline::Idle => TimerKind::Idle,
        Deadline::SendStall => TimerKind::SendStall,
        Deadline::Shed => TimerKind::Shed,
        Deadline::Reassembly => TimerKind::Reassembly,
    }
}
