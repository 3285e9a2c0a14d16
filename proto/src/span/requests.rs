//! Seqno requests: served at a bounded rate per neighbour, coalesced per mount, a client's
//! clamped to one past the newest seqno known, and raised by an originator at most once per
//! interval.
//!
//! A request the originator honours re-floods the mount's advertisement through the whole
//! cluster, so a request is a cluster-wide amplifier. Each bound here keeps one neighbour (or
//! many) from working it: a neighbour's requests beyond [`SEQNO_REQUESTS_PER_SEC`] wait, one per
//! mount with the newest seqno asked, and are served as its budget refills (never dropped: a
//! starving node still recovers); an originator raises a mount's seqno at most once per
//! [`SEQNO_RAISE_INTERVAL_MS`]; and a client's request is taken as one for at most one past the
//! newest seqno this node knows of the mount (a client's only neighbour is this node, so it never
//! needs more), so clients cannot push a seqno ahead. A router or satellite may know a seqno this
//! node does not (from before the originator restarted, or from another path), and is taken at
//! its word: it is trusted with routes anyway.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{
    Entry, MountKey, Pending, Role, SEQNO_RAISE_INTERVAL_MS, SEQNO_REQUEST_BURST,
    SEQNO_REQUESTS_PER_SEC, Seqno, Table, Timer, satisfied,
};
use crate::error::{Error, Misuse};
use crate::ids::NeighbourId;

/// One neighbour's seqno-request budget: a token bucket, and the requests waiting for a token.
#[derive(Debug)]
pub(super) struct Budget {
    tokens: f64,
    /// When `tokens` was last brought up to date (`None`: never, the bucket is full).
    counted: Option<Instant>,
    /// Requests waiting for a token: the newest seqno asked, per mount. Ordered, so they are
    /// served in a deterministic order.
    waiting: BTreeMap<MountKey, Seqno>,
    /// Whether a [`Timer::Serve`] is armed for it.
    armed: bool,
    /// Requests that had to wait (each counted once, however often it was repeated).
    pub(super) delayed: u64,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            tokens: f64::from(SEQNO_REQUEST_BURST),
            counted: None,
            waiting: BTreeMap::new(),
            armed: false,
            delayed: 0,
        }
    }
}

impl Budget {
    /// Brings the bucket up to `now`.
    fn refill(&mut self, now: Instant) {
        if let Some(at) = self.counted {
            let elapsed = now.saturating_duration_since(at).as_secs_f64();
            self.tokens = (self.tokens + elapsed * f64::from(SEQNO_REQUESTS_PER_SEC))
                .min(f64::from(SEQNO_REQUEST_BURST));
        }
        self.counted = Some(now);
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// When the next token will be there.
    fn next_token(&self, now: Instant) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / f64::from(SEQNO_REQUESTS_PER_SEC))
    }
}

impl Table {
    /// A neighbour asks, at `now`, for an advertisement of `mount` with a seqno at least
    /// `seqno`. Served at once within the neighbour's budget, otherwise when it refills (the
    /// newest seqno asked per mount; see the module documentation). Serving it: the originator
    /// raises its seqno and re-advertises; a node whose selected route is already that new does
    /// nothing (its advertisement is on its way); anyone else remembers the request and passes
    /// it one hop toward the originator (along its selected route, or its shortest unfeasible
    /// one), once per seqno and next hop. A remembered request is passed on again when its next
    /// hop changes, until a route that new is selected.
    pub fn handle_seqno_request(
        &mut self,
        from: NeighbourId,
        mount: MountKey,
        seqno: Seqno,
        now: Instant,
    ) -> Result<(), Error> {
        let neighbour = self.neighbours.get_mut(&from).ok_or(Misuse::UnknownNeighbour(from))?;
        let budget = neighbour.budget.get_or_insert_with(Box::default);
        if budget.waiting.is_empty() && budget.take(now) {
            self.serve_request(from, mount, seqno, now);
            return Ok(());
        }
        // Waits for a token. At most one per mount, and only for mounts advertised to the
        // neighbour (the span link passes requests on our spans only), so the wait is bounded.
        match budget.waiting.get(&mount) {
            Some(&asked) if !seqno.is_newer_than(asked) => {}
            Some(_) => {
                budget.waiting.insert(mount, seqno);
            }
            None => {
                budget.delayed += 1;
                budget.waiting.insert(mount, seqno);
            }
        }
        if !budget.armed {
            budget.armed = true;
            let at = budget.next_token(now);
            self.timers.insert((at, Timer::Serve(from)));
        }
        Ok(())
    }

    /// Requests a neighbour sent that had to wait for its budget, since it came up.
    pub fn seqno_requests_delayed(&self, id: NeighbourId) -> u64 {
        self.neighbours.get(&id).and_then(|n| n.budget.as_ref()).map_or(0, |b| b.delayed)
    }

    /// The next time [`Table::handle_timeout`] has work: waiting seqno requests to serve, or a
    /// coalesced seqno raise.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(at, _)| at)
    }

    /// Serves what is due at `now`: neighbours' waiting seqno requests as their budgets allow,
    /// and coalesced seqno raises. Drain [`Table::poll_transmit`] afterwards.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Serve(id) => self.serve_waiting(id, now),
                Timer::Raise(mount) => self.raise_waiting(mount, now),
            }
        }
    }

    /// Serves a neighbour's waiting requests while its budget lasts; re-arms for the rest.
    fn serve_waiting(&mut self, id: NeighbourId, now: Instant) {
        loop {
            let Some(neighbour) = self.neighbours.get_mut(&id) else { return };
            let Some(budget) = neighbour.budget.as_deref_mut() else { return };
            budget.armed = false;
            if budget.waiting.is_empty() {
                return;
            }
            if !budget.take(now) {
                budget.armed = true;
                let at = budget.next_token(now);
                self.timers.insert((at, Timer::Serve(id)));
                return;
            }
            let Some((mount, seqno)) = budget.waiting.pop_first() else { return };
            self.serve_request(id, mount, seqno, now);
        }
    }

    /// One request, within its neighbour's budget.
    fn serve_request(&mut self, from: NeighbourId, mount: MountKey, seqno: Seqno, now: Instant) {
        let from_client = self.neighbours.get(&from).is_some_and(|n| n.role == Role::Client);
        let Some(entry) = self.mounts.get_mut(&mount) else { return };
        let seqno = if from_client { clamp(entry, seqno) } else { seqno };
        if entry.local.is_some() {
            let own = entry.own_seqno.unwrap_or(Seqno(0));
            if seqno.is_newer_than(own) {
                self.raise(mount, seqno, now);
            }
            return;
        }
        if satisfied(entry, seqno) {
            return;
        }
        match entry.request {
            Some(p) if !seqno.is_newer_than(p.seqno) => {}
            _ => entry.request = Some(Pending { seqno, via: None }),
        }
        self.pass_request(mount);
    }

    /// Raises a local mount's seqno to `target` now, or, within the interval since the last
    /// raise, when it has passed (coalescing every request meanwhile into one raise).
    fn raise(&mut self, mount: MountKey, target: Seqno, now: Instant) {
        let Some(entry) = self.mounts.get_mut(&mount) else { return };
        let Some(local) = entry.local.as_deref_mut() else { return };
        let interval = Duration::from_millis(SEQNO_RAISE_INTERVAL_MS);
        if let Some(at) = local.raised_at
            && now < at + interval
        {
            let armed = local.raise_to.is_some();
            match local.raise_to {
                Some(pending) if !target.is_newer_than(pending) => {}
                _ => local.raise_to = Some(target),
            }
            if !armed {
                self.timers.insert((at + interval, Timer::Raise(mount)));
            }
            return;
        }
        local.raised_at = Some(now);
        local.raise_to = None;
        entry.own_seqno = Some(target);
        self.advertise(mount, None);
    }

    /// A coalesced raise falls due.
    fn raise_waiting(&mut self, mount: MountKey, now: Instant) {
        let Some(entry) = self.mounts.get_mut(&mount) else { return };
        let Some(local) = entry.local.as_deref_mut() else { return };
        let Some(target) = local.raise_to.take() else { return };
        let own = entry.own_seqno.unwrap_or(Seqno(0));
        if target.is_newer_than(own) {
            local.raised_at = None;
            self.raise(mount, target, now);
        }
    }
}

/// A client's request asks for at most one past the newest seqno this node knows of the mount:
/// no client can push a seqno ahead through us.
fn clamp(entry: &Entry, seqno: Seqno) -> Seqno {
    match entry.newest_seqno() {
        Some(newest) if seqno.is_newer_than(newest.next()) => newest.next(),
        _ => seqno,
    }
}
