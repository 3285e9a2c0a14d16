//! Links refused because of who the peer is or what it said, logged where an operator sees
//! them: a WARN line naming the peer's key (base64, as `ringspan pubkey` prints it), its node
//! id and its address, at most one per reason per
//! [`REFUSAL_LOG_INTERVAL_MS`](crate::limits::REFUSAL_LOG_INTERVAL_MS), each saying how many
//! refusals for that reason went unlogged since the line before. The limiter's state is a
//! fixed array, one slot per reason, whatever the peers do; its time is the engine's turn time.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cipher::PublicKey;
use crate::error::{Error, Handshake, Violation};
use crate::limits::REFUSAL_LOG_INTERVAL_MS;

/// Why a link was refused, as logged: each reason has its own budget of lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The peer's key is not a configured peer's nor allowed, and `accept_unknown_keys` is off.
    KeyNotAllowed,
    /// A peer dialled showed another key than the one configured for it.
    WrongKey,
    /// The peer's hello claimed a role its key is not granted.
    RoleNotGranted,
    /// The application refused the link.
    Application,
    /// The peer broke another rule of the protocol as the node checks it.
    Protocol,
}

impl Refusal {
    const ALL: usize = 5;

    /// The reason for a link closed for `error` of the peer's.
    pub(super) fn of(error: &Error) -> Refusal {
        match error {
            Error::Handshake(Handshake::UnknownKey) => Refusal::KeyNotAllowed,
            Error::Handshake(Handshake::WrongKey) => Refusal::WrongKey,
            Error::PeerMisbehaved(Violation::RoleNotGranted { .. }) => Refusal::RoleNotGranted,
            _ => Refusal::Protocol,
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::KeyNotAllowed => {
                "its key is not allowed (not a peer's, not in `allow`, and accept_unknown_keys is off)"
            }
            Refusal::WrongKey => "its key is not the one configured for the peer dialled",
            Refusal::RoleNotGranted => "its hello claims more than its key is granted",
            Refusal::Application => "the application refused it",
            Refusal::Protocol => "it broke the protocol",
        })
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// When the latest line for this reason was written.
    logged_at: Option<Instant>,
    /// Refusals for this reason not logged since.
    suppressed: u64,
}

/// The log of refused links: see the module documentation.
#[derive(Clone, Debug)]
pub(super) struct RefusalLog {
    slots: [Slot; Refusal::ALL],
    interval: Duration,
}

impl Default for RefusalLog {
    fn default() -> RefusalLog {
        RefusalLog {
            slots: [Slot::default(); Refusal::ALL],
            interval: Duration::from_millis(REFUSAL_LOG_INTERVAL_MS),
        }
    }
}

impl RefusalLog {
    /// A refusal for `reason` at `now`: `Some(suppressed)` if a line is due (with the number of
    /// refusals for that reason left unlogged since the previous line), `None` if it is counted
    /// and not logged.
    pub(super) fn admit(&mut self, reason: Refusal, now: Instant) -> Option<u64> {
        let slot = &mut self.slots[reason.slot()];
        let due =
            slot.logged_at.is_none_or(|at| now.saturating_duration_since(at) >= self.interval);
        if !due {
            slot.suppressed = slot.suppressed.saturating_add(1);
            return None;
        }
        slot.logged_at = Some(now);
        Some(std::mem::take(&mut slot.suppressed))
    }

    /// Logs a link refused for `reason` (`detail`: the error, if it says more) from the peer
    /// with `key` at `addr`, if the reason's budget allows a line at `now`.
    pub(super) fn log(
        &mut self,
        reason: Refusal,
        key: &PublicKey,
        addr: Option<SocketAddr>,
        detail: Option<&dyn fmt::Display>,
        now: Instant,
    ) {
        let Some(suppressed) = self.admit(reason, now) else {
            return;
        };
        let addr = addr.map_or_else(|| "unknown".to_string(), |addr| addr.to_string());
        let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
        tracing::warn!(
            key = %key.to_base64(),
            node = %key.node_id(),
            %addr,
            suppressed,
            "refused a link: {reason}{detail}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_reason_per_interval_with_the_count_left_out() {
        #[allow(clippy::disallowed_methods)] // a fixed origin; nothing here reads the clock again
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut log = RefusalLog::default();
        assert_eq!(log.admit(Refusal::KeyNotAllowed, t0), Some(0));
        // A flood within the interval: counted, not logged; another reason has its own budget.
        for i in 1..1000 {
            assert_eq!(log.admit(Refusal::KeyNotAllowed, t0 + ms(i % 999)), None);
        }
        assert_eq!(log.admit(Refusal::RoleNotGranted, t0 + ms(5)), Some(0));
        // The next line says how many were left out.
        let next = t0 + ms(REFUSAL_LOG_INTERVAL_MS);
        assert_eq!(log.admit(Refusal::KeyNotAllowed, next), Some(999));
        assert_eq!(log.admit(Refusal::KeyNotAllowed, next), None);
        assert_eq!(log.admit(Refusal::KeyNotAllowed, next + ms(REFUSAL_LOG_INTERVAL_MS)), Some(1));
    }

    #[test]
    fn errors_map_to_their_reasons() {
        assert_eq!(Refusal::of(&Handshake::UnknownKey.into()), Refusal::KeyNotAllowed);
        assert_eq!(Refusal::of(&Handshake::WrongKey.into()), Refusal::WrongKey);
        let claim = Violation::RoleNotGranted { claimed: "router", granted: "client" };
        assert_eq!(Refusal::of(&claim.into()), Refusal::RoleNotGranted);
        assert_eq!(Refusal::of(&Error::Decrypt), Refusal::Protocol);
        // Every reason has a slot of its own.
        let all = [
            Refusal::KeyNotAllowed,
            Refusal::WrongKey,
            Refusal::RoleNotGranted,
            Refusal::Application,
            Refusal::Protocol,
        ];
        let mut slots: Vec<usize> = all.iter().map(|r| r.slot()).collect();
        slots.dedup();
        assert_eq!(slots, (0..Refusal::ALL).collect::<Vec<_>>());
    }
}
