//! Accepting and dialling: a worker's handles to the listening sockets and the accept on each,
//! admission of accepted connections, dials, and the handshakes they start.

use super::*;

/// One listening socket as a worker accepts on it: the worker's own handle to the socket
/// (every worker has one), the accept in flight on it and its state. A worker has one per
/// listen address ([`Config::listen`]), at the index its accepts carry in their `user_data`.
pub(crate) struct Listener {
    /// This worker's handle to the socket; `None` once accepting on it has ended (shutdown).
    socket: Option<Socket>,
    /// The generation of the accept in flight (in its `user_data`): completions of earlier
    /// ones, cancelled to move this worker to the back of the socket's queue, re-arm nothing;
    /// only the cancelled one's last completion arms the next (`Worker::accepted`).
    generation: u32,
    /// A connection was accepted on it this turn (see `Worker::rotate_accept`).
    accepted_in_turn: bool,
    /// Accepting on it resumes then, after a failure such as running out of descriptors.
    paused_until: Option<Instant>,
}

impl Listener {
    /// This worker's handle `socket` to a listening socket, no accept armed yet.
    pub(crate) fn new(socket: Socket) -> Listener {
        Listener {
            socket: Some(socket),
            generation: 0,
            accepted_in_turn: false,
            paused_until: None,
        }
    }
}

impl Worker {
    pub(super) fn accepted(
        &mut self,
        service: &mut impl Service,
        index: u32,
        result: i32,
        flags: u32,
        generation: u32,
    ) {
        let Some(listener) = self.listeners.get_mut(index as usize) else { return };
        if result >= 0 {
            listener.accepted_in_turn = true;
            // SAFETY: a successful accept returns a new descriptor that nothing else owns.
            let socket = unsafe { Socket::from_raw_fd(result) };
            if self.shutdown_deadline.is_some() {
                // Shutting down: a connection that raced the end of accepting is dropped.
                drop(socket);
            } else if self.attach_index == Some(index) {
                self.adopt_attached(service, socket);
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
                self.listeners[index as usize].paused_until = Some(self.now + ACCEPT_PAUSE);
            }
        }
        // The last completion of the accept in flight (cancelled by `rotate_accept` or at
        // shutdown, or ended by the kernel): the next one is armed only now, once the kernel
        // has let go of this one.
        let listener = &mut self.listeners[index as usize];
        let current = generation == listener.generation & 0xff_ffff;
        if current && !cqueue::more(flags) && listener.socket.is_some() {
            if self.shutdown_deadline.is_some() {
                listener.socket = None;
            } else if listener.paused_until.is_none() {
                self.arm_accept(index);
            }
        }
    }

    /// Arms an accept on every listening socket this worker has (at start).
    pub(super) fn arm_accepts(&mut self) {
        for index in 0..self.listeners.len() {
            self.arm_accept(index as u32);
        }
    }

    /// Arms a multishot accept on this worker's handle to listening socket `index`, under a
    /// new generation.
    pub(super) fn arm_accept(&mut self, index: u32) {
        let Some(listener) = self.listeners.get_mut(index as usize) else { return };
        if let Some(socket) = &listener.socket {
            listener.generation = listener.generation.wrapping_add(1);
            let entry = opcode::AcceptMulti::new(Fd(socket.as_raw_fd()))
                .build()
                .user_data(op::encode(op::ACCEPT, index, listener.generation));
            self.push(entry);
        }
    }

    /// Resumes accepting on the listening sockets whose pause is over.
    pub(super) fn resume_accepts(&mut self) {
        for index in 0..self.listeners.len() {
            let listener = &mut self.listeners[index];
            if listener.paused_until.is_some_and(|until| self.now >= until) {
                listener.paused_until = None;
                if self.shutdown_deadline.is_none() {
                    self.arm_accept(index as u32);
                }
            }
        }
    }

    /// When accepting on a paused listening socket resumes, the earliest if several are.
    pub(super) fn accept_resumes_at(&self) -> Option<Instant> {
        self.listeners.iter().filter_map(|l| l.paused_until).min()
    }

    /// Whether this worker accepts on no listening socket any more (or never did).
    pub(super) fn listeners_closed(&self) -> bool {
        self.listeners.iter().all(|l| l.socket.is_none())
    }

    /// After a turn that accepted connections, moves this worker to the back of each listening
    /// socket's queue of waiting accepts it accepted on, so the next connections go to the
    /// other workers. The kernel wakes one waiting accept per connection, always the first in
    /// its queue, and a multishot accept keeps its place: without this, one worker would take
    /// every connection. The accept in flight is cancelled, and the next one (a new
    /// generation) is armed by [`Worker::accepted`] when the cancelled one's last completion
    /// arrives: it queues behind the others, and first takes whatever connections are already
    /// waiting. One submission per socket and turn that accepted on it, however many
    /// connections it took, and one more when the cancellation completes. A lone worker has
    /// nowhere to move to, and does nothing. Each listening socket has its own queue, rotated
    /// alone.
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
        let rotates = self.mailboxes.len() >= 2 && self.shutdown_deadline.is_none();
        for index in 0..self.listeners.len() {
            let listener = &mut self.listeners[index];
            // The attach socket has one worker accepting on it: nowhere to rotate to.
            if !std::mem::take(&mut listener.accepted_in_turn)
                || !rotates
                || self.attach_index == Some(index as u32)
                || listener.socket.is_none()
                || listener.paused_until.is_some()
            {
                continue;
            }
            let accept = op::encode(op::ACCEPT, index as u32, listener.generation);
            let cancel =
                opcode::AsyncCancel::new(accept).build().user_data(op::encode(op::IGNORE, 0, 0));
            self.push(cancel);
        }
    }

    /// At shutdown: ends accepting on every listening socket. A paused one's handle is dropped
    /// at once (no accept is in flight to complete); otherwise the accept in flight is
    /// cancelled, and its last completion drops the handle. The sockets are shared by every
    /// worker (each closes with its last handle), so they are not shut down: the other workers
    /// accept until their own shutdown.
    pub(super) fn stop_accepting(&mut self) {
        for index in 0..self.listeners.len() {
            let listener = &mut self.listeners[index];
            if listener.socket.is_none() {
                continue;
            }
            if listener.paused_until.take().is_some() {
                listener.socket = None;
                continue;
            }
            let accept = op::encode(op::ACCEPT, index as u32, listener.generation);
            let cancel =
                opcode::AsyncCancel::new(accept).build().user_data(op::encode(op::IGNORE, 0, 0));
            self.push(cancel);
        }
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

    /// The first worker of an engine of `workers`, listening on each of `listen`, not running:
    /// the test takes its turns. The addresses bound, in order.
    fn worker(workers: usize, listen: &[&str]) -> (Worker, Vec<SocketAddr>) {
        let config = Config { workers, pin_workers: false, recv_buffers: 64, ..Config::default() };
        let identity = Identity::generate().unwrap();
        let cipher = Arc::new(cipher::Config::new(identity).unwrap());
        let mailboxes: Arc<[Arc<Mailbox>]> =
            (0..workers).map(|_| Arc::new(Mailbox::new().unwrap())).collect();
        let mut listeners = Vec::new();
        let mut addrs = Vec::new();
        for addr in listen {
            let (mut socket, addr) = bind_listener(addr.parse().unwrap(), 1, false).unwrap();
            listeners.append(&mut socket);
            addrs.push(addr);
        }
        let lanes = super::mesh(1, 64).unwrap().pop().unwrap();
        let worker =
            Worker::new(0, Arc::new(config), cipher, mailboxes, listeners, None, lanes).unwrap();
        (worker, addrs)
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
        let (mut worker, addrs) = worker(2, &["127.0.0.1:0"]);
        let addr = addrs[0];
        worker.arm_accepts();
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
        let (mut worker, addrs) = worker(1, &["127.0.0.1:0"]);
        let addr = addrs[0];
        worker.arm_accepts();
        let generation = worker.listeners[0].generation;
        let _first = TcpStream::connect(addr).unwrap();
        accept_until(&mut worker, 1);
        let _second = TcpStream::connect(addr).unwrap();
        accept_until(&mut worker, 2);
        assert_eq!(worker.listeners[0].generation, generation, "the same accept took both");
    }

    #[test]
    fn a_worker_accepts_on_each_listening_socket_and_rotates_each_alone() {
        // One of two workers, so it rotates; two sockets, IPv4 and IPv6.
        let (mut worker, addrs) = worker(2, &["127.0.0.1:0", "[::1]:0"]);
        worker.arm_accepts();
        let before: Vec<u32> = worker.listeners.iter().map(|l| l.generation).collect();
        let _v6 = TcpStream::connect(addrs[1]).unwrap();
        accept_until(&mut worker, 1);
        // The IPv6 socket's accept is rotated (a new generation once the cancelled one ended);
        // the IPv4 socket's, which took nothing, is left where it is.
        let deadline = now() + Duration::from_secs(20);
        while worker.listeners[1].generation == before[1] {
            assert!(now() < deadline, "the accept on the second socket was never rotated");
            turn(&mut worker);
        }
        assert_eq!(worker.listeners[0].generation, before[0]);
        let _v4 = TcpStream::connect(addrs[0]).unwrap();
        accept_until(&mut worker, 2);
        let _v6_again = TcpStream::connect(addrs[1]).unwrap();
        accept_until(&mut worker, 3);
        // Admission took each, whichever socket it came to.
        assert_eq!(worker.stats.refused_handshake_rate + worker.stats.refused_max_links, 0);
        assert_eq!(worker.live_links, 3);
    }
}
