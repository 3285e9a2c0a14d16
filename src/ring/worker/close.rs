//! Closing links: at once, with a notice (draining), and every link at shutdown.

use super::*;
use crate::error::Handshake;

impl Worker {
    /// Closes a link: ends its transactions (the service sees each end), stops its operations,
    /// and frees it once the kernel is done with them.
    pub(super) fn close(&mut self, service: &mut impl Service, slot: u32, reason: CloseReason) {
        let id = self.link_id(slot);
        let conn = &mut self.conns[slot as usize];
        if conn.phase == Phase::Closing {
            return;
        }
        let was_up = matches!(conn.phase, Phase::Established | Phase::Draining);
        if conn.phase == Phase::Draining {
            self.draining.remove(&slot);
        }
        let connecting = conn.phase == Phase::Connecting;
        conn.phase = Phase::Closing;
        self.live_links -= 1;
        if let Some(cred) = &conn.attached {
            self.attached_links -= 1;
            if let Some(held) = self.attached_by_uid.get_mut(&cred.uid) {
                *held -= 1;
                if *held == 0 {
                    self.attached_by_uid.remove(&cred.uid);
                }
            }
        }
        if was_up {
            let code = match reason {
                CloseReason::Local(code) => code,
                _ => ErrorCode::LOST_LINK,
            };
            conn.link.handle_link_down(code);
            self.with_link(slot, |ctx| {
                while let Some(event) = ctx.txn.poll_event() {
                    service.event(ctx, event);
                }
            });
            service.link_down(&mut WorkerCtx { worker: self }, id, reason);
            tracing::debug!(link = id.0, %reason, "link closed");
        } else {
            self.stats.handshake_failures += 1;
            tracing::info!(link = id.0, %reason, "link failed before its handshake completed");
            let dialled = conn.dial.as_ref().and_then(|dial| dial.addr.as_socket());
            let refused = matches!(
                reason,
                CloseReason::Protocol(crate::Error::Handshake(
                    Handshake::UnknownKey | Handshake::WrongKey
                ))
            );
            if refused && let Some(key) = conn.link.handshake_key() {
                // An accepted link's address is asked of the kernel: the socket is still open.
                let addr = dialled.or_else(|| conn.socket.peer_addr().ok()?.as_socket());
                service.key_refused(&mut WorkerCtx { worker: self }, key, addr, reason);
            }
            if let Some(addr) = dialled {
                service.dial_failed(Some(id), addr, reason);
            }
        }
        self.stats.closed += 1;
        let conn = &mut self.conns[slot as usize];
        conn.link.close();
        if conn.ops > 0 {
            // Shutting the socket down ends its operations; the cancellations make sure. Each
            // names one operation by its `user_data`, which the kernel finds by hash: cancelling
            // by descriptor would scan every operation of the ring, once per link closed.
            let _ = conn.socket.shutdown(std::net::Shutdown::Both);
            let in_flight = [
                (op::RECV, conn.recv_armed),
                (op::SEND, conn.link.sending()),
                (op::CONNECT, connecting),
            ];
            let generation = conn.generation;
            for (kind, _) in in_flight.into_iter().filter(|&(_, live)| live) {
                let cancel = opcode::AsyncCancel::new(op::encode(kind, slot, generation))
                    .build()
                    .user_data(op::encode(op::IGNORE, slot, 0));
                self.push(cancel);
            }
        }
        self.maybe_free(slot);
    }

    /// Frees a closed link once no operation of it is in flight.
    pub(super) fn maybe_free(&mut self, slot: u32) {
        let conn = &mut self.conns[slot as usize];
        if conn.phase != Phase::Closing || conn.ops > 0 {
            return;
        }
        let mut conn = self.conns.remove(slot as usize);
        let bufring = &mut self.bufring;
        conn.link.release(self.pool.get_mut(), &mut |at| bufring.unlend(at.buffer));
        // Dropping the socket closes it.
    }

    /// Closes an established link with a notice: `LINK_CLOSE` carrying `code` (why) goes out,
    /// every transaction of the link ends here at once (nothing may follow the notice), and the
    /// link closes once the notice is sent. `false` (nothing done) if the link is not
    /// established.
    pub(super) fn drain(&mut self, service: &mut impl Service, slot: u32, code: ErrorCode) -> bool {
        if !self.notify_close(slot, code) {
            return false;
        }
        self.end_transactions(service, slot, code);
        true
    }

    /// Sends `LINK_CLOSE` carrying `code` on an established link and marks it draining: from
    /// now on it is not lent, and it closes once the notice is sent. `false` (nothing done) if
    /// the link is not established.
    fn notify_close(&mut self, slot: u32, code: ErrorCode) -> bool {
        let conn = &mut self.conns[slot as usize];
        if conn.phase != Phase::Established || !conn.link.send_close_notice(code, &self.pool) {
            return false;
        }
        conn.phase = Phase::Draining;
        self.draining.insert(slot, code);
        self.touch(slot);
        true
    }

    /// Ends every transaction of a draining link with `code` (the service sees each end).
    fn end_transactions(&mut self, service: &mut impl Service, slot: u32, code: ErrorCode) {
        self.conns[slot as usize].link.handle_link_down(code);
        self.with_link(slot, |ctx| {
            while let Some(event) = ctx.txn.poll_event() {
                service.event(ctx, event);
            }
        });
    }

    pub(super) fn begin_shutdown(&mut self, service: &mut impl Service) {
        if self.shutdown_deadline.is_some() {
            return;
        }
        self.shutdown_deadline = Some(self.now + Duration::from_millis(SHUTDOWN_GRACE_MS));
        self.stop_accepting();
        // Every link is told first, and only then are their transactions ended: a circuit end
        // forced closed on one link is not forwarded onto another link that is closing too
        // (each far end ends its calls as on any link loss, alike whichever link went first).
        let slots: Vec<u32> = self.conns.iter().map(|(slot, _)| slot as u32).collect();
        let mut told = Vec::with_capacity(slots.len());
        let mut siblings = Vec::new();
        for slot in slots {
            let phase = self.conns[slot as usize].phase;
            if matches!(phase, Phase::Closing | Phase::Draining) {
                continue;
            }
            if self.conns[slot as usize].sibling.is_some() {
                // Closed once the others are told (below); the other worker shuts down too.
                siblings.push(slot);
                continue;
            }
            if self.notify_close(slot, ErrorCode::SHUTDOWN) {
                told.push(slot);
            } else {
                self.close(service, slot, CloseReason::Local(ErrorCode::SHUTDOWN));
            }
        }
        for slot in told {
            self.end_transactions(service, slot, ErrorCode::SHUTDOWN);
        }
        for slot in siblings {
            self.close(service, slot, CloseReason::Local(ErrorCode::SHUTDOWN));
        }
    }
}
