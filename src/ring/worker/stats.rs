//! A worker's counters.

/// Counters of one worker over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Links accepted.
    pub accepted: u64,
    /// Links dialled.
    pub dialled: u64,
    /// Links that completed the handshake.
    pub established: u64,
    /// Links that failed before completing the handshake, and dials that could not start (no
    /// socket, or the source address would not bind).
    pub handshake_failures: u64,
    /// Accepted connections from strangers (sources not trusted) closed at once because the
    /// worker held `Config::max_stranger_links()` links (`max_links` while no source is
    /// trusted).
    pub refused_max_links: u64,
    /// Accepted connections from strangers closed at once because the handshake rate
    /// (`Config::max_handshakes_per_sec`) was used up.
    pub refused_handshake_rate: u64,
    /// Accepted connections from trusted sources (`Config::trusted_sources`,
    /// [`WorkerCtx::trust_source`](super::WorkerCtx::trust_source)) that started a handshake; also counted in `accepted`,
    /// which less this is the strangers' count.
    pub trusted_accepted: u64,
    /// Of `trusted_accepted`, those that took a token from the trusted sources' own bucket
    /// (`Config::trusted_handshakes_per_sec`) because the common one was empty.
    pub trusted_reserved_tokens: u64,
    /// Of `trusted_accepted`, those that took one of the link slots strangers cannot
    /// (`Config::reserved_links`): the worker held `max_stranger_links()` links or more.
    pub trusted_reserved_links: u64,
    /// Accepted connections from trusted sources closed at once because the worker held
    /// `Config::max_links` links.
    pub trusted_refused_max_links: u64,
    /// Accepted connections from trusted sources closed at once because both the common
    /// handshake bucket and the trusted sources' own were empty.
    pub trusted_refused_handshake_rate: u64,
    /// Local links accepted on the attach socket (`Config::attach`); not counted in `accepted`.
    pub attached: u64,
    /// Connections to the attach socket closed at once because the process's uid and gid were
    /// not allowed (`AttachConfig::uids`, `gids`), or its credentials could not be read.
    pub attach_refused_cred: u64,
    /// Connections to the attach socket closed at once because the engine held
    /// `ATTACH_LINKS_MAX` local links.
    pub attach_refused_max: u64,
    /// Connections to the attach socket closed at once because the processes of their uid held
    /// `ATTACH_LINKS_PER_UID_MAX` local links.
    pub attach_refused_share: u64,
    /// Links closed (for any reason).
    pub closed: u64,
    /// Bytes received and sent.
    pub bytes_in: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Messages received.
    pub messages_in: u64,
    /// Records sealed.
    pub records_out: u64,
    /// Record buffers allocated because the pool was empty.
    pub pool_misses: u64,
    /// Receives re-armed because the provided buffers ran out.
    pub recv_buffer_shortages: u64,
    /// Records that arrived cut across two receive buffers and were copied whole before being
    /// opened (the rest are opened where the kernel put them).
    pub records_reassembled: u64,
    /// Records forwarded from where they lay: the receive buffer they arrived in, or the pooled
    /// buffer a record cut across two receive buffers was put together in (opened, rewritten
    /// and sealed there, and sent from there): no copy at the relay.
    pub records_in_place: u64,
    /// Records lent to sends now (forwarded from the receive buffer they arrived in, their
    /// send not yet complete): a gauge.
    pub lent_records: u64,
    /// The most records lent to sends at once so far.
    pub lent_records_max: u64,
    /// Receive buffers out of the kernel's hands now (being handled, or holding records lent
    /// to sends): a gauge.
    pub recv_buffers_held: u64,
    /// Busy polls (`Config::busy_poll`) that found work before the worker would have slept.
    pub busy_poll_hits: u64,
    /// Busy polls that ran out, after which the worker slept.
    pub busy_poll_misses: u64,
    /// Busy polls given up because another thread held the core (polling then pauses).
    pub busy_poll_contended: u64,
    /// Times the worker stopped reading its sockets because its internal links held more than
    /// `LANE_QUEUE_PAUSE_BYTES` unsent (another worker did not keep up).
    pub lane_pauses: u64,
    /// The most bytes its internal links held unsent at once (checked at the end of each turn).
    pub lane_queued_max: u64,
}

impl WorkerStats {
    /// Links still connecting or handshaking: started (accepted or dialled) and neither
    /// established nor failed yet.
    pub fn handshaking(&self) -> u64 {
        (self.accepted + self.dialled).saturating_sub(self.established + self.handshake_failures)
    }
}
