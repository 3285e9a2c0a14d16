//! How other threads reach a worker: a bounded queue of owned commands and an eventfd.
//!
//! The worker keeps a read of the eventfd in flight on its ring, so a command wakes it from its
//! wait. Each wake-up of a thread on another core costs ~20 µs on our development VM (the task's
//! machine notes): commands are for control and for batches of work, never one per message.

use std::any::Any;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crossbeam_queue::ArrayQueue;

use crate::cipher::PublicKey;
use crate::limits::MAILBOX_COMMANDS;

/// Work for a worker.
pub enum Command {
    /// Dial `addr`; with `peer`, accept only that key.
    Connect {
        /// Where.
        addr: SocketAddr,
        /// The source address to dial from (bound with port 0 before connecting), if any.
        from: Option<IpAddr>,
        /// The key the other side must show.
        peer: Option<PublicKey>,
    },
    /// Stop accepting, close every link with a reason, and exit.
    Shutdown,
    /// Trust connections from this source address from now on
    /// ([`super::WorkerCtx::trust_source`]).
    TrustSource(IpAddr),
    /// Something for the worker's service ([`super::Service::command`]).
    Service(Box<dyn Any + Send>),
}

/// A worker's mailbox.
pub struct Mailbox {
    queue: ArrayQueue<Command>,
    eventfd: OwnedFd,
}

impl Mailbox {
    /// A mailbox holding up to [`MAILBOX_COMMANDS`] commands.
    pub fn new() -> io::Result<Mailbox> {
        // SAFETY: eventfd has no memory preconditions; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Mailbox { queue: ArrayQueue::new(MAILBOX_COMMANDS), eventfd })
    }

    /// Queues a command and wakes the worker; hands the command back if the queue is full.
    pub fn send(&self, command: Command) -> Result<(), Command> {
        self.queue.push(command)?;
        self.wake();
        Ok(())
    }

    /// Queues a command, waiting while the queue is full.
    pub fn send_blocking(&self, mut command: Command) {
        loop {
            match self.send(command) {
                Ok(()) => return,
                Err(back) => {
                    command = back;
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Takes the next command.
    pub fn recv(&self) -> Option<Command> {
        self.queue.pop()
    }

    /// The eventfd the worker reads to be woken.
    pub fn fd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    pub(crate) fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our own eventfd. A failure (the counter is
        // saturated) still leaves the worker due to wake, so it is ignored.
        unsafe {
            libc::write(self.eventfd.as_raw_fd(), (&raw const one).cast(), 8);
        }
    }
}
