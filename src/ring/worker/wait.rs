//! How a worker waits for completions: one `io_uring_enter` that submits and waits (with a
//! deadline), or a busy poll first after a turn that moved data.

use super::*;

/// A busy poll's look that comes this long after the previous one means another thread held
/// the core meanwhile (an uncontended look takes about a microsecond; another ringspan worker
/// gives the core back within its own poll window).
const POLL_CONTENDED: Duration = Duration::from_micros(500);

impl Worker {
    /// Submits what the turn queued and waits for the next completion, or the next timer.
    pub(super) fn submit_and_wait(&mut self) -> io::Result<()> {
        if self.busy_poll() {
            return Ok(());
        }
        if self.lanes_say_sleep() {
            // Bytes from another worker wait: submit, and take the next turn at once.
            return self.ring.submit().map(|_| ());
        }
        let result = self.wait_in_kernel();
        self.lanes_awake();
        result
    }

    /// One `io_uring_enter` that submits and waits for a completion or the next deadline.
    fn wait_in_kernel(&mut self) -> io::Result<()> {
        let next = [
            self.timers.next(),
            self.shutdown_deadline,
            self.accept_resumes_at(),
            self.service_wake,
        ]
        .into_iter()
        .flatten()
        .min();
        let result = match next {
            Some(at) => {
                let wait = at.saturating_duration_since(now());
                let ts = Timespec::from(wait.max(Duration::from_micros(1)));
                let args = SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submitter().submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(error)
                if matches!(
                    error.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// Within `Config::busy_poll` of the last turn that moved data: submits, then looks for
    /// work without sleeping until some arrives (true) or the poll runs out (false). Deferred
    /// completions (a receive the network stack made ready) wait as task work until the worker
    /// enters the kernel: the ring's TASKRUN flag says when there is some, and the blocking
    /// wait that follows then returns at once. Between looks the core goes to any other
    /// runnable thread.
    ///
    /// A thread that never sleeps loses what the scheduler gives a sleeper: woken by data, it
    /// would run at once; polling, it waits for its turn behind any CPU-bound thread on its
    /// core, a whole time slice (milliseconds). So when a yield comes back late — later than
    /// `POLL_CONTENDED`, and the thread was switched out meanwhile (a late look without a
    /// switch is the hypervisor's doing, which sleeping would not change) — the worker stops
    /// polling and sleeps, and polls again only after `Config::busy_poll_backoff`.
    pub(super) fn busy_poll(&mut self) -> bool {
        let until = self.busy_at + self.config.busy_poll;
        if self.now >= until || self.poll_backoff_until.is_some_and(|at| self.now < at) {
            return false;
        }
        if let Err(error) = self.ring.submit() {
            tracing::error!(worker = self.index, %error, "submit failed");
            return false;
        }
        let mut looked = now();
        // Taken before the first yield only: a poll that finds work at once costs no syscall.
        let mut switches = None;
        loop {
            if !self.ring.completion().is_empty() || self.lanes_waiting() {
                self.stats.busy_poll_hits += 1;
                return true;
            }
            if self.ring.submission().taskrun() {
                self.stats.busy_poll_hits += 1;
                return false;
            }
            let at = now();
            if at >= looked + POLL_CONTENDED
                && switches.is_some_and(|before| context_switches() != before)
            {
                // The core is contended: sleeping serves this thread better for a while.
                self.stats.busy_poll_contended += 1;
                self.poll_backoff_until = Some(at + self.config.busy_poll_backoff);
                return false;
            }
            if at >= until {
                self.stats.busy_poll_misses += 1;
                return false;
            }
            switches.get_or_insert_with(context_switches);
            // SAFETY: sched_yield takes no arguments and only gives up the core.
            unsafe { libc::sched_yield() };
            looked = at;
        }
    }
}

/// Times the calling thread has been switched out, voluntarily or not.
fn context_switches() -> i64 {
    // SAFETY: getrusage writes one `rusage` through the pointer, to a zeroed value we own.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    usage.ru_nvcsw + usage.ru_nivcsw
}
