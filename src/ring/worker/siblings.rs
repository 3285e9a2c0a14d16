//! Internal links (DESIGN 7c.3): each pair of workers of an engine is joined by a link made at
//! start, whose records go through the pair's lanes instead of a socket. To the service it is a
//! link like any other, to this node's own key ([`LinkCtx::sibling`] names the worker at its
//! other end): a relay node takes it up as a link to another plane of itself. Its records are
//! sealed with keys drawn for it at start (`cipher::record::lane_secrets`), so every layer above
//! the socket handles it unchanged; what it sends is copied into the lane at the end of the turn
//! (what does not fit stays queued, in order, until the other worker makes room and wakes this
//! one), and what arrives is opened where it lies in the lane.
//!
//! An internal link has no keepalive or idle deadline (its other end is a thread of this
//! process, not a peer that may vanish) and is closed only at shutdown.

use socket2::{Domain, Type};

use super::*;
use crate::cipher::record::record_layer_for_lane;
use crate::limits::{LANE_QUEUE_PAUSE_BYTES, LANE_QUEUE_RECORDS, LANE_QUEUE_RESUME_BYTES};

impl Worker {
    /// Makes this worker's internal link to each other worker and tells the service each is up.
    pub(super) fn join_siblings(&mut self, service: &mut impl Service) {
        if !self.lanes.meshed() {
            return;
        }
        let own = self.cipher.identity().public_key();
        for to in 0..self.lanes.workers() {
            let Some([send, receive]) = self.lanes.keys[to].take() else { continue };
            let made = record_layer_for_lane(&send, &receive, self.now)
                .map_err(|e| e.to_string())
                .and_then(|keys| {
                    // A placeholder the link's code can name: never connected, never read.
                    let socket = Socket::new(Domain::UNIX, Type::DGRAM, None);
                    Ok((keys, socket.map_err(|e| e.to_string())?))
                });
            let ((sealer, opener), socket) = match made {
                Ok(made) => made,
                Err(error) => {
                    tracing::error!(worker = self.index, to, %error, "cannot make an internal link");
                    continue;
                }
            };
            let rekey_at = sealer.poll_timeout();
            let slot =
                self.new_conn(socket, Phase::Established, Crypto::Established { sealer, opener });
            let conn = &mut self.conns[slot as usize];
            conn.peer = Some(own);
            conn.sibling = Some(to as u16);
            // Its queue runs deeper than a socket's while the other worker lags.
            conn.link.reserve_send_queue(LANE_QUEUE_RECORDS);
            self.lanes.links[to] = Some(self.link_id(slot));
            if let Some(at) = rekey_at {
                self.arm_timer(slot, TimerKind::Rekey, at);
            }
            self.with_link(slot, |ctx| service.link_up(ctx));
            self.touch(slot);
        }
    }

    /// Copies what internal link `slot` has to send into the lane to worker `to`, as much as
    /// fits; the rest waits for room.
    pub(super) fn send_to_sibling(&mut self, slot: u32, to: usize) {
        let Worker { conns, lanes, bufring, pool, stats, .. } = self;
        let conn = &mut conns[slot as usize];
        let mut sent = 0;
        for chunk in conn.link.transmit() {
            let bytes = match chunk {
                Chunk::Bytes(bytes) => bytes,
                Chunk::Lent { buffer, offset, len } => bufring.lent_bytes(buffer, offset, len),
            };
            let n = lanes.write(to, bytes);
            sent += n;
            if n < bytes.len() {
                break;
            }
        }
        if sent > 0 {
            conn.link.sent(sent, pool.get_mut(), &mut |at| bufring.unlend(at.buffer));
            stats.bytes_out += sent as u64;
        }
    }

    /// At the end of a turn: the internal links that still hold bytes (their lane was full)
    /// try again.
    pub(super) fn send_siblings(&mut self) {
        for to in 0..self.lanes.workers() {
            let Some(id) = self.lanes.links[to] else { continue };
            let Some(slot) = self.slot_of(id) else { continue };
            if !self.conns[slot as usize].link.is_idle() {
                self.send_to_sibling(slot, to);
            }
        }
    }

    /// Hands each internal link what the worker at its other end wrote to this one: every byte
    /// waiting, opened in place (a record cut where the lane wraps is put together as one cut
    /// by a socket's buffers is).
    pub(super) fn deliver_lanes(&mut self, service: &mut impl Service) {
        if !self.lanes.meshed() {
            return;
        }
        for from in 0..self.lanes.workers() {
            let Some(mut rx) = self.lanes.take_from(from) else { continue };
            let mut slot = self.lanes.links[from].and_then(|id| self.slot_of(id));
            loop {
                let bytes = rx.peek_mut();
                let len = bytes.len();
                if len == 0 {
                    break;
                }
                // A closed link's bytes are dropped (only at shutdown).
                let result = match slot {
                    Some(slot) if self.conns[slot as usize].phase == Phase::Established => {
                        let id = self.link_id(slot);
                        self.conns[slot as usize].link.received_bytes(len, self.now);
                        self.stats.bytes_in += len as u64;
                        let records = Records {
                            conns: &mut self.conns,
                            pool: &self.pool,
                            touched: &mut self.touched,
                            worker: self.index,
                            now: self.now,
                            periods: &self.periods,
                        };
                        Some(records.handle(service, slot, id, bytes, None))
                    }
                    _ => None,
                };
                if rx.consume(len) {
                    self.lanes.room[from] = true;
                }
                match (slot, result) {
                    (Some(slot), Some(Ok(count))) => self.records_handled(slot, count),
                    (Some(at), Some(Err(reason))) => {
                        tracing::error!(worker = self.index, from, %reason, "internal link failed");
                        self.close(service, at, reason);
                        slot = None;
                    }
                    _ => {}
                }
            }
            self.lanes.put_from(from, rx);
        }
    }
}

impl Worker {
    /// At the end of a turn: stops reading the worker's sockets if its internal links hold more
    /// than `LANE_QUEUE_PAUSE_BYTES` unsent (another worker does not take what this one hands
    /// it as fast as it comes), and reads them again once they hold less than
    /// `LANE_QUEUE_RESUME_BYTES`. While stopped, what arrived stays in the kernel's socket
    /// buffers and TCP slows the peers that send it; the lanes are still read, so the workers
    /// cannot wait on each other.
    pub(super) fn pace_sockets(&mut self) {
        if !self.lanes.meshed() {
            return;
        }
        let mut queued = 0;
        for to in 0..self.lanes.workers() {
            let Some(slot) = self.lanes.links[to].and_then(|id| self.slot_of(id)) else { continue };
            queued += self.conns[slot as usize].link.queued_bytes();
        }
        self.stats.lane_queued_max = self.stats.lane_queued_max.max(queued as u64);
        if !self.lanes.paused && queued > LANE_QUEUE_PAUSE_BYTES {
            self.lanes.paused = true;
            self.stats.lane_pauses += 1;
            tracing::debug!(worker = self.index, queued, "another worker lags: sockets paused");
            // Each armed receive of a link to another node is cancelled; its last completion
            // (ECANCELED) leaves it waiting to be re-armed.
            let armed: Vec<(u32, u32)> = self
                .conns
                .iter()
                .filter(|(_, c)| {
                    c.sibling.is_none() && c.recv_armed && c.phase == Phase::Established
                })
                .map(|(slot, c)| (slot as u32, c.generation))
                .collect();
            for (slot, generation) in armed {
                let cancel = opcode::AsyncCancel::new(op::encode(op::RECV, slot, generation))
                    .build()
                    .user_data(op::encode(op::IGNORE, slot, 0));
                self.push(cancel);
            }
        } else if self.lanes.paused && queued < LANE_QUEUE_RESUME_BYTES {
            self.lanes.paused = false;
            tracing::debug!(worker = self.index, queued, "sockets read again");
            for (slot, conn) in self.conns.iter_mut() {
                let idle = !conn.recv_armed && !conn.recv_rearm;
                if conn.sibling.is_none() && conn.phase == Phase::Established && idle {
                    conn.recv_rearm = true;
                    self.rearm.push((slot as u32, conn.generation));
                }
            }
        }
    }
}
