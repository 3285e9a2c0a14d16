//! Accepting and dialling: admission of accepted connections, dials, and the handshakes they
//! start.

use super::*;

impl Worker {
    pub(super) fn accepted(&mut self, result: i32, flags: u32, generation: u32) {
        if result >= 0 {
            self.accepted_in_turn = true;
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            let socket = unsafe { Socket::from_raw_fd(result) };
            if self.shutdown_deadline.is_some() {
                // Shutting down: a connection that raced the end of accepting is dropped.
                drop(socket);
            } else if self.admit(&socket) {
                let _ = socket.set_tcp_nodelay(true);
                self.adopt(socket);
            } else {
                // Refused before any handshake work: a reset tells the peer at once, and this
                // side keeps no TIME_WAIT state for it.
                let _ = socket.set_linger(Some(Duration::ZERO));
                drop(socket);
            }
        } else if result != -libc::ECANCELED && result != -libc::EINVAL {
            // Out of descriptors or memory: pause accepting briefly instead of spinning.
            tracing::warn!(error = %io::Error::from_raw_os_error(-result), "accept failed");
            if !cqueue::more(flags) {
                self.accept_paused_until = Some(self.now + ACCEPT_PAUSE);
            }
        }
        // The last completion of the accept in flight (cancelled by `rotate_accept` or at
        // shutdown, or ended by the kernel): the next one is armed only now, once the kernel
        // has let go of this one.
        let current = generation == self.accept_generation & 0xff_ffff;
        if current && !cqueue::more(flags) && self.listener.is_some() {
            if self.shutdown_deadline.is_some() {
                self.listener = None;
            } else if self.accept_paused_until.is_none() {
                self.arm_accept();
            }
        }
    }

    /// Arms a multishot accept on this worker's handle to the listening socket, under a new
    /// generation.
    pub(super) fn arm_accept(&mut self) {
        if let Some(listener) = &self.listener {
            self.accept_generation = self.accept_generation.wrapping_add(1);
            let entry = opcode::AcceptMulti::new(Fd(listener.as_raw_fd()))
                .build()
                .user_data(op::encode(op::ACCEPT, 0, self.accept_generation));
            self.push(entry);
        }
    }

    /// After a turn that accepted connections, moves this worker to the back of the
    /// listening socket's queue of waiting accepts, so the next connections go to the other
    /// workers. The kernel wakes one waiting accept per connection, always the first in its
    /// queue, and a multishot accept keeps its place: without this, one worker would take every
    /// connection. The accept in flight is cancelled, and the next one (a new generation) is
    /// armed by [`Worker::accepted`] when the cancelled one's last completion arrives: it queues
    /// behind the others, and first takes whatever connections are already waiting. One
    /// submission per turn that accepted, however many connections it took, and one more when
    /// the cancellation completes. A lone worker has nowhere to move to, and does nothing.
    ///
    /// Never a new accept beside the cancelled one: with `DEFER_TASKRUN` the cancelled accept
    /// leaves the socket's wait queue only when the worker next waits in the kernel, and until
    /// then it is still first in that queue and takes the (exclusive) wakeup of every connection
    /// that arrives, and completes as cancelled without accepting it. An accept armed beside it
    /// is not woken for those connections; they wait in the backlog until a later connection
    /// wakes it, and after the last connection of a burst none does. A worker preempted between
    /// its submission and its next wait (a loaded host) then leaves the burst's tail in the
    /// backlog until the peers give up: a satellite under load held 240 of 300 clients, the
    /// other 60 connections queued in its backlog (`ss`: Recv-Q 60) until the clients'
    /// handshakes timed out.
    pub(super) fn rotate_accept(&mut self) {
        if !std::mem::take(&mut self.accepted_in_turn)
            || self.mailboxes.len() < 2
            || self.listener.is_none()
            || self.shutdown_deadline.is_some()
            || self.accept_paused_until.is_some()
        {
            return;
        }
        let cancel = opcode::AsyncCancel::new(op::encode(op::ACCEPT, 0, self.accept_generation))
            .build()
            .user_data(op::encode(op::IGNORE, 0, 0));
        self.push(cancel);
    }

    /// Whether an accepted connection may start a handshake, by its source address (one
    /// `getpeername`): a link slot and a handshake token for its class (see `admission`).
    /// Counts the outcome.
    pub(super) fn admit(&mut self, socket: &Socket) -> bool {
        let source = socket.peer_addr().ok().and_then(|addr| addr.as_socket()).map(|a| a.ip());
        let admitted = self.admission.admit(self.now, source, self.live_links, &mut self.stats);
        if !admitted {
            tracing::debug!(worker = self.index, ?source, links = self.live_links, "refused");
        }
        admitted
    }

    /// Starts the responder's handshake on an accepted connection.
    pub(super) fn adopt(&mut self, socket: Socket) {
        match Session::responder(self.cipher.clone(), self.now) {
            Ok(session) => {
                self.stats.accepted += 1;
                let slot =
                    self.new_conn(socket, Phase::Handshake, Crypto::Handshake(Box::new(session)));
                self.arm_recv(slot);
                self.arm_handshake_timer(slot);
            }
            Err(error) => tracing::warn!(%error, "cannot start a handshake"),
        }
    }

    /// Dials `addr`, from source address `from` if given (port chosen at connect), with
    /// `cipher` as the identity if given (else the engine's). Returns the link's id; a dial that
    /// cannot start returns `None` and is reported to the service's `dial_failed` after the
    /// turn's callbacks.
    pub(super) fn connect(
        &mut self,
        addr: SocketAddr,
        from: Option<IpAddr>,
        peer: Option<PublicKey>,
        cipher: Option<Arc<cipher::Config>>,
    ) -> Option<LinkId> {
        self.stats.dialled += 1;
        let socket = match self.dial_socket(addr, from) {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%addr, ?from, %error, "cannot start a dial");
                self.stats.handshake_failures += 1;
                let errno = error.raw_os_error().unwrap_or(libc::EIO);
                self.dial_errors.push((addr, CloseReason::Io(errno)));
                return None;
            }
        };
        let slot = self.new_conn(socket, Phase::Connecting, Crypto::None);
        let conn = &mut self.conns[slot as usize];
        conn.link.meta_mut().dialled = true;
        let dial = conn.dial.insert(Box::new(Dial {
            addr: SockAddr::from(addr),
            expected_peer: peer,
            cipher,
        }));
        let entry = opcode::Connect::new(
            Fd(conn.socket.as_raw_fd()),
            dial.addr.as_ptr().cast(),
            dial.addr.len(),
        )
        .build()
        .user_data(op::encode(op::CONNECT, slot, conn.generation));
        conn.ops += 1;
        self.push(entry);
        self.arm_handshake_timer(slot);
        Some(self.link_id(slot))
    }

    /// A socket for dialling `addr`, bound to source address `from` if given.
    pub(super) fn dial_socket(&self, addr: SocketAddr, from: Option<IpAddr>) -> io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        let _ = socket.set_tcp_nodelay(true);
        if let Some(ip) = from {
            // The port is then chosen at connect, per destination, so one source address
            // serves as many links as the ephemeral range holds to each destination.
            // Best effort: without it the port is picked at bind, which still works.
            let _ = crate::ring::uring::bind_address_no_port(&socket);
            socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
        }
        Ok(socket)
    }

    /// Reports the dials that failed before they had a link.
    pub(super) fn report_dial_errors(&mut self, service: &mut impl Service) {
        while let Some((addr, reason)) = self.dial_errors.pop() {
            service.dial_failed(None, addr, reason);
        }
    }

    pub(super) fn connected(&mut self, service: &mut impl Service, slot: u32, result: i32) {
        let conn = &mut self.conns[slot as usize];
        conn.ops -= 1;
        if conn.phase == Phase::Closing {
            self.maybe_free(slot);
            return;
        }
        if result < 0 {
            return self.close(service, slot, CloseReason::Io(-result));
        }
        let (cipher, expected) = match &conn.dial {
            Some(dial) => {
                (dial.cipher.clone().unwrap_or_else(|| self.cipher.clone()), dial.expected_peer)
            }
            None => (self.cipher.clone(), None),
        };
        match Session::initiator(cipher, expected, self.now) {
            Ok(session) => {
                conn.link.start_handshake(Box::new(session), self.pool.get_mut());
                conn.phase = Phase::Handshake;
                self.touch(slot);
                self.arm_recv(slot);
            }
            Err(error) => self.close(service, slot, CloseReason::Protocol(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;
    use crate::cipher::Identity;
    use crate::txn::Received;

    struct Nothing;
    impl Service for Nothing {
        fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}
    }

    /// The first worker of an engine of `workers`, listening, not running: the test takes its
    /// turns.
    fn worker(workers: usize) -> (Worker, SocketAddr) {
        let config = Config { workers, pin_workers: false, recv_buffers: 64, ..Config::default() };
        let identity = Identity::generate().unwrap();
        let cipher = Arc::new(cipher::Config::new(identity).unwrap());
        let mailboxes: Arc<[Arc<Mailbox>]> =
            (0..workers).map(|_| Arc::new(Mailbox::new().unwrap())).collect();
        let (mut listener, addr) = bind_listener("127.0.0.1:0".parse().unwrap(), 1).unwrap();
        let lanes = super::mesh(1, 64).unwrap().pop().unwrap();
        let worker =
            Worker::new(0, Arc::new(config), cipher, mailboxes, listener.pop(), lanes).unwrap();
        (worker, addr)
    }

    /// One turn, as `Worker::run` takes it as far as accepting goes: waits (a little) for
    /// completions, dispatches them, rotates the accept.
    fn turn(worker: &mut Worker) {
        let ts = Timespec::from(Duration::from_millis(20));
        let args = SubmitArgs::new().timespec(&ts);
        let _ = worker.ring.submitter().submit_with_args(1, &args);
        worker.now = now();
        let completions: Vec<_> =
            worker.ring.completion().map(|c| (c.user_data(), c.result(), c.flags())).collect();
        for (user_data, result, flags) in completions {
            worker.dispatch(&mut Nothing, user_data, result, flags);
        }
        worker.rotate_accept();
    }

    /// Turns until `accepted` connections have been accepted; panics after 20 s without.
    fn accept_until(worker: &mut Worker, accepted: u64) {
        let deadline = now() + Duration::from_secs(20);
        while worker.stats.accepted < accepted {
            assert!(now() < deadline, "a connection waits in the backlog, never accepted");
            turn(worker);
        }
    }

    #[test]
    fn a_connection_that_arrives_while_the_accept_rotates_is_accepted() {
        // One of two workers, so it rotates its accept.
        let (mut worker, addr) = worker(2);
        worker.arm_accept();
        let _first = TcpStream::connect(addr).unwrap();
        accept_until(&mut worker, 1);
        // The turn that accepted it rotated the accept. Its submissions reach the kernel, and
        // a connection arrives before the worker waits in the kernel again, as when the worker
        // is preempted between the two on a loaded host.
        worker.ring.submit().unwrap();
        let _second = TcpStream::connect(addr).unwrap();
        // No later connection wakes an accept: this one is taken all the same.
        accept_until(&mut worker, 2);
        assert_eq!(worker.stats.refused_handshake_rate + worker.stats.refused_max_links, 0);
    }

    #[test]
    fn a_lone_worker_keeps_its_accept() {
        let (mut worker, addr) = worker(1);
        worker.arm_accept();
        let generation = worker.accept_generation;
        let _first = TcpStream::connect(addr).unwrap();
        accept_until(&mut worker, 1);
        let _second = TcpStream::connect(addr).unwrap();
        accept_until(&mut worker, 2);
        assert_eq!(worker.accept_generation, generation, "the same accept took both");
    }
}
