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
        let rx = &mut conn.io.rx;
        let needs = rx.holds_large_buffer() && !rx.deadline_armed();
        if let Some(at) = conn.clock.arm_reassembly(self.now, needs, &self.periods) {
            rx.arm_deadline();
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
                TimerKind::Rekey => {
                    if let Crypto::Established { sealer, .. } = &mut conn.io.crypto {
                        match sealer.handle_timeout(self.now) {
                            Ok(()) => {
                                if let Some(at) = sealer.poll_timeout() {
                                    self.arm_timer(slot, TimerKind::Rekey, at);
                                }
                            }
                            Err(error) => self.close(service, slot, CloseReason::Protocol(error)),
                        }
                    }
                }
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
                    let interval = conn.io.meta.keepalive(self.config.keepalive_interval);
                    let rx = RxState { unfinished: conn.io.rx.deadline_armed() };
                    let pending = conn.io.tx.has_pending();
                    match conn.clock.fire(deadline, self.now, interval, pending, rx, &self.periods)
                    {
                        Fired::Stale => {
                            if deadline == Deadline::Reassembly {
                                // A later record (or none) holds the buffer now: it gets a
                                // period of its own.
                                self.arm_reassembly(slot);
                            }
                        }
                        Fired::Later(at) => self.arm_timer(slot, timer.kind, at),
                        Fired::Ping { next } => {
                            if let Crypto::Established { sealer, .. } = &mut conn.io.crypto {
                                let mut sink = conn.io.tx.sink(sealer, &self.pool);
                                let _ = conn.io.txn.send_oneway(
                                    &mut sink,
                                    WireCommand::LINK_PING,
                                    ErrorCode::NONE,
                                    &[],
                                );
                            }
                            self.touch(slot);
                            self.arm_timer(slot, TimerKind::Keepalive, next);
                        }
                        Fired::ShedKeys => {
                            if let Crypto::Established { sealer, opener } = &mut conn.io.crypto {
                                // Quiet for a while: keep the keys' bytes, not their expanded
                                // schedules (rebuilt at the next record).
                                sealer.shed_keys();
                                opener.shed_keys();
                            }
                        }
                        Fired::Expired(expiry) => {
                            let reason = match expiry {
                                Expiry::Idle => CloseReason::IdleTimeout,
                                Expiry::SendStall => CloseReason::SendStall,
                                Expiry::Reassembly => {
                                    let stalled =
                                        "a record stayed unfinished past the reassembly deadline";
                                    let violation = crate::error::Violation::LinkProtocol(stalled);
                                    CloseReason::Protocol(Error::from(violation))
                                }
                            };
                            self.close(service, slot, reason);
                        }
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
