//! `[limits]`: the node's timers and bounds, each checked alone and then against each other.

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::daemon::Limits;
use crate::limits;
use toml::Spanned;

use super::ConfigError;
use super::raw::RawLimits;
use super::source::Source;

impl Source<'_> {
    /// `[limits]`: the defaults ([`Limits::default`]), with each value given checked in place.
    pub(super) fn limits(&self, raw: Option<&RawLimits>) -> Result<Limits, ConfigError> {
        let mut limits = Limits::default();
        let Some(raw) = raw else {
            return Ok(limits);
        };
        let millis = [
            (&raw.keepalive_ms, "keepalive_ms", &mut limits.keepalive),
            (&raw.idle_timeout_ms, "idle_timeout_ms", &mut limits.idle_timeout),
            (&raw.handshake_timeout_ms, "handshake_timeout_ms", &mut limits.handshake_timeout),
            (&raw.redial_min_ms, "redial_min_ms", &mut limits.redial_min),
            (&raw.redial_max_ms, "redial_max_ms", &mut limits.redial_max),
        ];
        for (value, field, duration) in millis {
            if let Some(value) = value {
                *duration = self.millis(value, field)?;
            }
        }
        if let Some(value) = &raw.send_queue_max_bytes {
            let bytes = *value.get_ref();
            // On the 64-bit targets the engine runs on, only a negative value fails to convert.
            limits.send_queue_max_bytes = match usize::try_from(bytes) {
                Ok(n) if n >= limits::RECORD_WIRE_MAX => n,
                _ => {
                    return Err(self.error(
                        value.span(),
                        format!(
                            "limits.send_queue_max_bytes must be at least {} (one full record), \
                             not {bytes}",
                            limits::RECORD_WIRE_MAX
                        ),
                    ));
                }
            };
        }
        let links_max = limits::MAX_LINKS_PER_WORKER as u64;
        let rate_max = u64::from(u32::MAX);
        // Each count is checked against a bound of its type, so the conversions cannot fail.
        if let Some(value) = &raw.max_links {
            limits.max_links = self.count(value, "max_links", 1..=links_max)? as usize;
        }
        if let Some(value) = &raw.max_handshakes_per_sec {
            let rate = self.count(value, "max_handshakes_per_sec", 1..=rate_max)?;
            limits.max_handshakes_per_sec = u32::try_from(rate).unwrap_or(u32::MAX);
        }
        if let Some(value) = &raw.trusted_handshakes_per_sec {
            let rate = self.count(value, "trusted_handshakes_per_sec", 1..=rate_max)?;
            limits.trusted_handshakes_per_sec = u32::try_from(rate).unwrap_or(u32::MAX);
        }
        if let Some(value) = &raw.reserved_links {
            limits.reserved_links = self.count(value, "reserved_links", 0..=links_max)? as usize;
        }
        if let Some(value) = &raw.busy_poll_us {
            let us = self.count(value, "busy_poll_us", 0..=limits::BUSY_POLL_US_MAX)?;
            limits.busy_poll = Duration::from_micros(us);
        }
        if let Some(value) = &raw.circuit_idle_ms {
            limits.circuit_idle = self.millis(value, "circuit_idle_ms")?;
        }
        if let Some(value) = &raw.drain_grace_ms {
            // 0: no drain, the node stops at once.
            let ms = self.count(value, "drain_grace_ms", 0..=limits::CONFIG_MILLIS_MAX)?;
            limits.drain_grace = Duration::from_millis(ms);
        }

        // A limit's value for a message, marked when it is the default.
        let shown = |value: Duration, given: &Option<Spanned<i64>>| match given {
            Some(_) => value.as_millis().to_string(),
            None => format!("{}, the default", value.as_millis()),
        };
        // The span of the first of two values that was given (one was, or both are defaults,
        // which are in order).
        let either = |a: &Option<Spanned<i64>>, b: &Option<Spanned<i64>>| {
            a.as_ref().or(b.as_ref()).map_or(0..0, Spanned::span)
        };
        if limits.idle_timeout <= limits.keepalive {
            return Err(self.error(
                either(&raw.idle_timeout_ms, &raw.keepalive_ms),
                format!(
                    "limits.idle_timeout_ms ({}) must be greater than limits.keepalive_ms ({}): \
                     links would be closed as idle before they send a keepalive",
                    shown(limits.idle_timeout, &raw.idle_timeout_ms),
                    shown(limits.keepalive, &raw.keepalive_ms)
                ),
            ));
        }
        if limits.redial_min > limits.redial_max {
            return Err(self.error(
                either(&raw.redial_min_ms, &raw.redial_max_ms),
                format!(
                    "limits.redial_min_ms ({}) must not be greater than limits.redial_max_ms ({})",
                    shown(limits.redial_min, &raw.redial_min_ms),
                    shown(limits.redial_max, &raw.redial_max_ms)
                ),
            ));
        }
        Ok(limits)
    }

    /// A count in `range`.
    fn count(
        &self,
        value: &Spanned<i64>,
        field: &str,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let n = *value.get_ref();
        match u64::try_from(n) {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(self.error(
                value.span(),
                format!(
                    "limits.{field} must be between {} and {}, not {n}",
                    range.start(),
                    range.end()
                ),
            )),
        }
    }

    /// A duration in milliseconds, 1 to [`limits::CONFIG_MILLIS_MAX`].
    fn millis(&self, value: &Spanned<i64>, field: &str) -> Result<Duration, ConfigError> {
        let ms = *value.get_ref();
        if ms <= 0 {
            return Err(self
                .error(value.span(), format!("limits.{field} must be greater than 0, not {ms}")));
        }
        match u64::try_from(ms) {
            Ok(ms) if ms <= limits::CONFIG_MILLIS_MAX => Ok(Duration::from_millis(ms)),
            _ => Err(self.error(
                value.span(),
                format!(
                    "limits.{field} is {ms}, more than one day ({} ms)",
                    limits::CONFIG_MILLIS_MAX
                ),
            )),
        }
    }
}
