//! Who may start a handshake on an accepted connection, decided in the accept completion before
//! any session, buffer or timer exists for it.
//!
//! A peer's key is known only at the end of the handshake (the third Noise XX message), after
//! the work admission is there to ration, so admission goes by the connection's source
//! address. Two classes:
//!
//! - **Trusted sources**: the addresses in `Config::trusted_sources` (the configured peers'),
//!   and those a service vouched for at run time ([`Admission::trust`], e.g. because a link from
//!   there proved an authorized key), the least recently vouched for forgotten first beyond
//!   [`TRUSTED_SOURCES_MAX`].
//! - **Strangers**: everyone else.
//!
//! Both take a token from the common bucket (`Config::max_handshakes_per_sec`) while it has
//! one; when it is empty, a trusted source takes one from a bucket of its own
//! (`Config::trusted_handshakes_per_sec`), which strangers never touch. Strangers are refused
//! once the worker holds [`Config::max_stranger_links`] links; trusted sources only at
//! `Config::max_links`. So a flood of strangers, however large, leaves the trusted sources
//! their reserved rate and link slots. While no source is trusted at all, nothing is reserved
//! for nobody: strangers may take every slot.
//!
//! Sans-IO: the caller passes the time and the source address (one `getpeername` per accept).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use crate::limits::TRUSTED_SOURCES_MAX;

use super::{Config, WorkerStats};

type Hasher = foldhash::fast::RandomState;

/// A worker's admission state: its two token buckets and the trusted sources.
pub(crate) struct Admission {
    max_links: usize,
    max_stranger_links: usize,
    common: Bucket,
    reserve: Bucket,
    trusted: TrustedSources,
}

impl Admission {
    /// Admission as `config` says, both buckets full at `now`.
    pub(crate) fn new(config: &Config, now: Instant) -> Admission {
        let mut trusted = TrustedSources::new(TRUSTED_SOURCES_MAX);
        for &ip in &config.trusted_sources {
            trusted.fix(ip);
        }
        Admission {
            max_links: config.max_links,
            max_stranger_links: config.max_stranger_links(),
            common: Bucket::full(config.max_handshakes_per_sec, now),
            reserve: Bucket::full(config.trusted_handshakes_per_sec, now),
            trusted,
        }
    }

    /// Whether a connection accepted from `source` (`None`: unknown, so a stranger) may start
    /// a handshake while the worker holds `live_links` links; takes the token it uses. Counts
    /// the outcome in `stats`.
    pub(crate) fn admit(
        &mut self,
        now: Instant,
        source: Option<IpAddr>,
        live_links: usize,
        stats: &mut WorkerStats,
    ) -> bool {
        let trusted = source.is_some_and(|ip| self.trusted.contains(ip));
        let max_stranger_links =
            if self.trusted.is_empty() { self.max_links } else { self.max_stranger_links };
        if !trusted {
            if live_links >= max_stranger_links {
                stats.refused_max_links += 1;
                return false;
            }
            if !self.common.take(now) {
                stats.refused_handshake_rate += 1;
                return false;
            }
            return true;
        }
        if live_links >= self.max_links {
            stats.trusted_refused_max_links += 1;
            return false;
        }
        if self.common.take(now) {
            // The reserve is for when the common bucket is empty.
        } else if self.reserve.take(now) {
            stats.trusted_reserved_tokens += 1;
        } else {
            stats.trusted_refused_handshake_rate += 1;
            return false;
        }
        if live_links >= max_stranger_links {
            stats.trusted_reserved_links += 1;
        }
        stats.trusted_accepted += 1;
        true
    }

    /// Takes `config`'s bounds and configured sources (a reload): the links and rates from
    /// now on, each bucket keeping the tokens it holds up to its new size, the configured
    /// sources replaced, those vouched for at run time kept.
    pub(crate) fn reconfigure(&mut self, config: &Config) {
        self.max_links = config.max_links;
        self.max_stranger_links = config.max_stranger_links();
        self.common.resize(config.max_handshakes_per_sec);
        self.reserve.resize(config.trusted_handshakes_per_sec);
        self.trusted.fixed.clear();
        for &ip in &config.trusted_sources {
            self.trusted.fix(ip);
        }
    }

    /// Trusts `ip` from now on (see [`TrustedSources::trust`]).
    pub(crate) fn trust(&mut self, ip: IpAddr) {
        self.trusted.trust(ip);
    }
}

/// A token bucket refilled continuously at `rate` a second, holding at most one second's worth.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(rate: u32, now: Instant) -> Bucket {
        let rate = f64::from(rate);
        Bucket { rate, tokens: rate, at: now }
    }

    /// Refills at `rate` from now on, holding at most that many: the tokens it holds are kept
    /// up to the new size.
    fn resize(&mut self, rate: u32) {
        self.rate = f64::from(rate);
        self.tokens = self.tokens.min(self.rate);
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = self.at.max(now);
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// Source addresses whose connections are trusted: a fixed set (the configuration's), and at
/// most `max` more vouched for at run time, of which the least recently vouched for is
/// forgotten first. Looking one up never allocates; vouching allocates only while the set
/// grows towards its bound.
///
/// IPv4 addresses seen mapped into IPv6 (a dual-stack listener) are the same source as the
/// plain IPv4 address: every address is kept and looked up in its canonical form.
pub(crate) struct TrustedSources {
    fixed: HashSet<IpAddr, Hasher>,
    /// Vouched-for addresses, each with the stamp of its latest vouching.
    recent: HashMap<IpAddr, u64, Hasher>,
    /// Vouchings in order, oldest first; one whose stamp is no longer its address's latest is
    /// stale (the address was vouched for again since) and skipped.
    order: VecDeque<(IpAddr, u64)>,
    stamp: u64,
    max: usize,
}

impl TrustedSources {
    /// An empty set that keeps at most `max` vouched-for addresses.
    pub(crate) fn new(max: usize) -> TrustedSources {
        TrustedSources {
            fixed: HashSet::default(),
            recent: HashMap::default(),
            order: VecDeque::new(),
            stamp: 0,
            max,
        }
    }

    /// Trusts `ip` for good (a configured source).
    pub(crate) fn fix(&mut self, ip: IpAddr) {
        self.fixed.insert(ip.to_canonical());
    }

    /// Trusts `ip` as the most recently vouched-for address; beyond the bound, the least
    /// recently vouched-for one is forgotten.
    pub(crate) fn trust(&mut self, ip: IpAddr) {
        let ip = ip.to_canonical();
        if self.max == 0 || self.fixed.contains(&ip) {
            return;
        }
        self.stamp += 1;
        self.recent.insert(ip, self.stamp);
        self.order.push_back((ip, self.stamp));
        while self.recent.len() > self.max {
            let Some((old, stamp)) = self.order.pop_front() else { break };
            if self.recent.get(&old) == Some(&stamp) {
                self.recent.remove(&old);
            }
        }
        if self.order.len() > 2 * self.max {
            // Mostly stale vouchings of addresses vouched for again: drop them, in place.
            let recent = &self.recent;
            self.order.retain(|(ip, stamp)| recent.get(ip) == Some(stamp));
        }
    }

    /// Whether connections from `ip` are trusted.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.fixed.contains(&ip) || self.recent.contains_key(&ip)
    }

    /// Whether no address is trusted at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.fixed.is_empty() && self.recent.is_empty()
    }

    /// Vouched-for addresses held (the fixed ones not included).
    #[cfg(test)]
    fn recent_len(&self) -> usize {
        self.recent.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::time::Duration;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[allow(clippy::disallowed_methods)] // a test's fixed epoch
    fn epoch() -> Instant {
        Instant::now()
    }

    fn config(max_links: usize, reserved: usize, rate: u32, trusted_rate: u32) -> Config {
        Config {
            max_links,
            reserved_links: reserved,
            max_handshakes_per_sec: rate,
            trusted_handshakes_per_sec: trusted_rate,
            trusted_sources: vec![ip(1)],
            ..Config::default()
        }
    }

    #[test]
    fn a_reload_takes_new_bounds_and_sources_and_keeps_those_vouched_for() {
        let t0 = epoch();
        let mut admission = Admission::new(&config(4, 0, 100, 3), t0);
        let mut stats = WorkerStats::default();
        admission.trust(ip(7));
        // Four links held: a fifth is refused to all.
        assert!(!admission.admit(t0, Some(ip(1)), 4, &mut stats));
        let mut bigger = config(8, 2, 2, 3);
        bigger.trusted_sources = vec![ip(2)];
        admission.reconfigure(&bigger);
        // More room now, of which two slots are only the trusted sources'.
        assert!(admission.admit(t0, Some(ip(9)), 5, &mut stats), "a stranger below 6 links");
        assert!(!admission.admit(t0, Some(ip(9)), 6, &mut stats), "not a stranger at 6");
        assert!(admission.admit(t0, Some(ip(2)), 6, &mut stats), "the new configured source");
        assert!(!admission.admit(t0, Some(ip(1)), 6, &mut stats), "the old one is not trusted");
        assert!(admission.admit(t0, Some(ip(7)), 7, &mut stats), "one vouched for is kept");
        // The common bucket shrank to two tokens a second, both taken above; the trusted
        // sources had theirs from the reserve.
        assert!(!admission.admit(t0, Some(ip(9)), 0, &mut stats), "the common bucket is empty");
    }

    #[test]
    fn trusted_sources_keep_a_reserved_rate_when_strangers_empty_the_common_bucket() {
        let t0 = epoch();
        let mut admission = Admission::new(&config(1_000, 0, 10, 3), t0);
        let mut stats = WorkerStats::default();
        // Strangers take the whole common bucket, then are refused.
        let strangers = (0..50).filter(|_| admission.admit(t0, Some(ip(2)), 0, &mut stats));
        assert_eq!(strangers.count(), 10);
        assert_eq!(stats.refused_handshake_rate, 40);
        // A trusted source still gets the reserve's 3, then is refused too.
        let trusted = (0..5).filter(|_| admission.admit(t0, Some(ip(1)), 0, &mut stats));
        assert_eq!(trusted.count(), 3);
        assert_eq!(stats.trusted_accepted, 3);
        assert_eq!(stats.trusted_reserved_tokens, 3);
        assert_eq!(stats.trusted_refused_handshake_rate, 2);
        // Half a second later the common bucket has 5 again: a trusted source takes from it
        // first (the reserve, 1.5 tokens by then, is kept for when it is empty).
        let t1 = t0 + Duration::from_millis(500);
        assert!(admission.admit(t1, Some(ip(1)), 0, &mut stats));
        assert_eq!(stats.trusted_reserved_tokens, 3);
        let strangers = (0..10).filter(|_| admission.admit(t1, Some(ip(2)), 0, &mut stats));
        assert_eq!(strangers.count(), 4);
        assert!(admission.admit(t1, Some(ip(1)), 0, &mut stats));
        assert_eq!(stats.trusted_reserved_tokens, 4);
        // A source with no address known is a stranger.
        assert!(!admission.admit(t1, None, 0, &mut stats));
        assert_eq!(stats.refused_handshake_rate, 47);
        assert_eq!(stats.refused_max_links + stats.trusted_refused_max_links, 0);
    }

    #[test]
    fn reserved_link_slots_are_for_trusted_sources_only() {
        let t0 = epoch();
        let mut admission = Admission::new(&config(100, 10, 1_000, 1_000), t0);
        let mut stats = WorkerStats::default();
        assert!(admission.admit(t0, Some(ip(2)), 89, &mut stats));
        assert!(!admission.admit(t0, Some(ip(2)), 90, &mut stats));
        assert_eq!(stats.refused_max_links, 1);
        assert!(admission.admit(t0, Some(ip(1)), 90, &mut stats));
        assert!(admission.admit(t0, Some(ip(1)), 99, &mut stats));
        assert_eq!(stats.trusted_reserved_links, 2);
        assert!(!admission.admit(t0, Some(ip(1)), 100, &mut stats));
        assert_eq!(stats.trusted_refused_max_links, 1);
        assert_eq!(stats.trusted_accepted, 2);
    }

    #[test]
    fn nothing_is_reserved_while_no_source_is_trusted() {
        let t0 = epoch();
        let config = Config { trusted_sources: vec![], ..config(100, 10, 1_000, 1_000) };
        let mut admission = Admission::new(&config, t0);
        let mut stats = WorkerStats::default();
        assert!(admission.admit(t0, Some(ip(2)), 99, &mut stats));
        assert!(!admission.admit(t0, Some(ip(2)), 100, &mut stats));
        // Once a source is trusted, the reserve holds against strangers.
        admission.trust(ip(1));
        assert!(!admission.admit(t0, Some(ip(2)), 90, &mut stats));
        assert!(admission.admit(t0, Some(ip(1)), 90, &mut stats));
        assert_eq!((stats.refused_max_links, stats.trusted_reserved_links), (2, 1));
    }

    #[test]
    fn at_most_half_of_a_small_max_links_is_reserved() {
        assert_eq!(config(150, 4_096, 1, 1).max_stranger_links(), 75);
        assert_eq!(config(150, 10, 1, 1).max_stranger_links(), 140);
        assert_eq!(config(1, 4_096, 1, 1).max_stranger_links(), 1);
        assert_eq!(Config::default().max_stranger_links(), (1 << 20) - 4_096);
    }

    #[test]
    fn sources_vouched_for_at_run_time_are_kept_most_recent_first() {
        let t0 = epoch();
        let mut admission = Admission::new(&config(1_000, 0, 0, 1_000), t0);
        let mut stats = WorkerStats::default();
        // Not trusted yet: the common bucket is empty (rate 0) and strangers get nothing.
        assert!(!admission.admit(t0, Some(ip(7)), 0, &mut stats));
        admission.trust(ip(7));
        assert!(admission.admit(t0, Some(ip(7)), 0, &mut stats));
        // The same address seen through a dual-stack listener.
        let mapped = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 7).to_ipv6_mapped());
        assert!(admission.admit(t0, Some(mapped), 0, &mut stats));
        assert_eq!(stats.trusted_accepted, 2);

        let mut trusted = TrustedSources::new(3);
        trusted.fix(ip(1));
        for last in 10..13 {
            trusted.trust(ip(last));
        }
        // 10 is vouched for again, so 11 is now the least recent and goes first.
        trusted.trust(ip(10));
        trusted.trust(ip(13));
        assert!(!trusted.contains(ip(11)));
        assert!([1, 10, 12, 13].into_iter().all(|last| trusted.contains(ip(last))));
        // A fixed address is never pushed out, nor counted against the bound.
        trusted.trust(ip(1));
        assert_eq!(trusted.recent_len(), 3);
        // Vouching for the same few addresses again and again keeps the order queue bounded.
        for round in 0..1_000u32 {
            trusted.trust(ip(10 + (round % 4) as u8));
        }
        assert!(trusted.order.len() <= 2 * 3 + 1);
        assert_eq!(trusted.recent_len(), 3);
        assert!(trusted.contains(ip(1)));
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert!(!trusted.contains(v6));
        let mut none = TrustedSources::new(0);
        none.trust(v6);
        assert!(!none.contains(v6));
    }
}
