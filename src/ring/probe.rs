//! Can this process use io_uring as the engine needs it? One probe at start-up, and one clear
//! error naming the cause and what to change.
//!
//! The probe gathers facts ([`Facts`]); [`diagnose`] turns them into a verdict. The split lets a
//! test feed invented facts (an old kernel, `kernel.io_uring_disabled`, a seccomp filter, a low
//! memlock limit) and check each message without needing such a machine.

use std::fmt;

/// What the probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The errno of creating a ring with the flags the engine uses (0 on success).
    pub setup_errno: i32,
    /// The errno of creating a plain ring with no flags (0 on success), tried when the first
    /// failed, to tell "no io_uring" from "no DEFER_TASKRUN".
    pub plain_setup_errno: i32,
    /// The errno of registering a provided-buffer ring (0 on success).
    pub buf_ring_errno: i32,
    /// `/proc/sys/kernel/io_uring_disabled`, if readable (0 enabled, 1 restricted, 2 disabled).
    pub io_uring_disabled: Option<u32>,
    /// The soft `RLIMIT_MEMLOCK` in bytes (`None`: unlimited).
    pub memlock_limit: Option<u64>,
    /// Whether the process may exceed the memlock limit (CAP_IPC_LOCK, e.g. root).
    pub can_exceed_memlock: bool,
    /// The kernel release (`uname -r`).
    pub kernel: String,
}

/// Why the engine cannot run here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unavailable {
    /// The cause, in one line.
    pub cause: String,
    /// What to change.
    pub remedy: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "io_uring is unavailable: {}. {}", self.cause, self.remedy)
    }
}

impl std::error::Error for Unavailable {}

/// Probes this machine: tries the ring flags the engine uses and a buffer-ring registration,
/// and reads the sysctl, the memlock limit and the kernel release.
pub fn probe() -> Facts {
    let errno = |error: std::io::Error| error.raw_os_error().unwrap_or(-1);
    let mut facts = Facts {
        setup_errno: 0,
        plain_setup_errno: 0,
        buf_ring_errno: 0,
        io_uring_disabled: std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
            .ok()
            .and_then(|text| text.trim().parse().ok()),
        memlock_limit: None,
        can_exceed_memlock: false,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    };
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0
        && limit.rlim_cur != libc::RLIM_INFINITY
    {
        facts.memlock_limit = Some(limit.rlim_cur);
    }
    // SAFETY: geteuid has no preconditions. Root holds CAP_IPC_LOCK unless dropped; a process
    // without it that exceeds the limit still gets the precise ENOMEM diagnosis at start-up.
    facts.can_exceed_memlock = unsafe { libc::geteuid() } == 0;
    match super::worker::new_ring(8) {
        Ok(ring) => {
            if let Err(error) = super::bufring::BufRing::new(&ring, 0, 8, 4096) {
                facts.buf_ring_errno = errno(error);
            }
        }
        Err(error) => {
            facts.setup_errno = errno(error);
            if let Err(error) = io_uring::IoUring::new(8) {
                facts.plain_setup_errno = errno(error);
            }
        }
    }
    facts
}

const EPERM: i32 = 1;
const ENOMEM: i32 = 12;
const EINVAL: i32 = 22;
const ENOSYS: i32 = 38;

/// Judges the facts: `Ok` if the engine can run with `locked_bytes` of pinned memory in the
/// process, otherwise the first reason it cannot.
pub fn diagnose(facts: &Facts, locked_bytes: u64) -> Result<(), Unavailable> {
    let unavailable =
        |cause: String, remedy: &str| Err(Unavailable { cause, remedy: remedy.to_string() });
    if facts.setup_errno != 0 {
        let errno = facts.setup_errno;
        return match (errno, facts.io_uring_disabled) {
            (ENOSYS, _) => unavailable(
                format!("the kernel ({}) has no io_uring (ENOSYS)", facts.kernel),
                "Run on Linux 6.1 or newer built with CONFIG_IO_URING=y.",
            ),
            (EPERM, Some(2)) => unavailable(
                "io_uring is disabled system-wide (kernel.io_uring_disabled = 2)".into(),
                "Set `sysctl kernel.io_uring_disabled=0`.",
            ),
            (EPERM, Some(1)) => unavailable(
                "io_uring is restricted to a group this process is not in \
                 (kernel.io_uring_disabled = 1)"
                    .into(),
                "Add the user to the group in kernel.io_uring_group, or set \
                 `sysctl kernel.io_uring_disabled=0`.",
            ),
            (EPERM, _) => unavailable(
                "io_uring_setup was refused (EPERM) although the sysctl allows it: a seccomp \
                 filter or a container runtime blocks it"
                    .into(),
                "Allow the io_uring_setup, io_uring_enter and io_uring_register syscalls in \
                 the seccomp profile (for Docker: a custom --security-opt seccomp=...).",
            ),
            (EINVAL, _) if facts.plain_setup_errno == 0 => unavailable(
                format!(
                    "the kernel ({}) has io_uring but not SINGLE_ISSUER/DEFER_TASKRUN",
                    facts.kernel
                ),
                "Run on Linux 6.1 or newer.",
            ),
            (ENOMEM, _) => unavailable(
                "creating the ring failed for lack of locked memory (ENOMEM)".into(),
                "Raise the memlock limit (`ulimit -l`, or LimitMEMLOCK= in a systemd unit).",
            ),
            _ => unavailable(
                format!("io_uring_setup failed with errno {errno}"),
                "Check the kernel log and seccomp profile.",
            ),
        };
    }
    if facts.buf_ring_errno != 0 {
        return unavailable(
            format!(
                "registering a provided-buffer ring failed (errno {}): the kernel ({}) is older \
                 than 5.19",
                facts.buf_ring_errno, facts.kernel
            ),
            "Run on Linux 6.1 or newer.",
        );
    }
    if let Some(limit) = facts.memlock_limit
        && !facts.can_exceed_memlock
        && limit < locked_bytes
    {
        {
            return unavailable(
                format!(
                    "the configured rings need {} KiB of locked memory but RLIMIT_MEMLOCK is \
                     {} KiB",
                    locked_bytes / 1024,
                    limit / 1024
                ),
                "Raise the memlock limit (`ulimit -l`, LimitMEMLOCK= in a systemd unit), run \
                 with CAP_IPC_LOCK, or configure fewer buffers.",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> Facts {
        Facts {
            setup_errno: 0,
            plain_setup_errno: 0,
            buf_ring_errno: 0,
            io_uring_disabled: Some(0),
            memlock_limit: Some(8 << 20),
            can_exceed_memlock: false,
            kernel: "6.18.0".into(),
        }
    }

    fn cause(facts: Facts) -> String {
        diagnose(&facts, 4 << 20).unwrap_err().to_string()
    }

    #[test]
    fn a_healthy_machine_passes() {
        assert_eq!(diagnose(&healthy(), 4 << 20), Ok(()));
    }

    #[test]
    fn each_cause_is_named() {
        let old = Facts {
            setup_errno: ENOSYS,
            plain_setup_errno: ENOSYS,
            kernel: "4.19".into(),
            ..healthy()
        };
        assert!(cause(old).contains("kernel (4.19) has no io_uring"));

        let disabled = Facts { setup_errno: EPERM, io_uring_disabled: Some(2), ..healthy() };
        assert!(cause(disabled).contains("kernel.io_uring_disabled = 2"));

        let restricted = Facts { setup_errno: EPERM, io_uring_disabled: Some(1), ..healthy() };
        assert!(cause(restricted).contains("io_uring_group"));

        let seccomp = Facts { setup_errno: EPERM, ..healthy() };
        assert!(cause(seccomp).contains("seccomp"));

        let no_defer = Facts { setup_errno: EINVAL, kernel: "5.15".into(), ..healthy() };
        assert!(cause(no_defer).contains("not SINGLE_ISSUER/DEFER_TASKRUN"));

        let no_buf_ring = Facts { buf_ring_errno: EINVAL, kernel: "5.10".into(), ..healthy() };
        assert!(cause(no_buf_ring).contains("older than 5.19"));

        let memlock = Facts { memlock_limit: Some(64 << 10), ..healthy() };
        let message = cause(memlock);
        assert!(message.contains("4096 KiB of locked memory but RLIMIT_MEMLOCK is 64 KiB"));
        assert!(message.contains("ulimit -l"));
    }

    #[test]
    fn root_may_exceed_the_memlock_limit() {
        let root = Facts { memlock_limit: Some(64 << 10), can_exceed_memlock: true, ..healthy() };
        assert_eq!(diagnose(&root, 4 << 20), Ok(()));
        let unlimited = Facts { memlock_limit: None, ..healthy() };
        assert_eq!(diagnose(&unlimited, u64::MAX), Ok(()));
    }
}
