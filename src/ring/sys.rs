//! Process-wide settings a program running very many links needs: the descriptor limit.

use std::io;

/// The descriptor limits of this process: (soft, hard). `u64::MAX` stands for no limit.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `limit`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` descriptors, raising the hard
/// limit too when it is lower (which needs CAP_SYS_RESOURCE, and stays within the system's
/// `fs.nr_open`). Never lowers a limit. Returns the soft limit in force afterwards, which is
/// below `want` when the hard limit could not be raised far enough: the caller decides whether
/// that is an error. Child processes inherit the limits.
pub fn raise_nofile_limit(want: u64) -> io::Result<u64> {
    let (soft, hard) = nofile_limit()?;
    if soft >= want {
        return Ok(soft);
    }
    let set = |soft: u64, hard: u64| {
        let limit = libc::rlimit { rlim_cur: soft, rlim_max: hard };
        // SAFETY: setrlimit reads one valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    };
    match set(want, hard.max(want)) {
        Ok(()) => Ok(want),
        // The hard limit could not be raised: go as far as it allows.
        Err(_) if hard > soft => set(hard, hard).map(|()| hard),
        Err(_) => Ok(soft),
    }
}

/// Large allocations (128 KiB and up: the tables that grow with the number of links) get
/// their own mappings, returned to the system when freed, instead of coming from the heap once
/// glibc's adaptive threshold has risen. That threshold rises to the size of each large block
/// freed, so after a link table's growth every later table, and every copy a growing table
/// leaves behind, is carved from the heap and stays resident after it is freed: at 18,000
/// clients that each advertise a mount, a satellite's heap held ~0.7 KiB per client of such holes. Returns whether the
/// allocator took the setting (glibc only; elsewhere nothing changes).
pub fn fix_mmap_threshold() -> bool {
    #[cfg(target_env = "gnu")]
    {
        // SAFETY: mallopt only changes a malloc tuning parameter; any value is accepted or
        // refused (returning 0) without touching memory.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) == 1 }
    }
    #[cfg(not(target_env = "gnu"))]
    {
        false
    }
}

/// CPU time this process has used, user and system, all threads: what `getrusage` says.
pub fn cpu_time() -> io::Result<std::time::Duration> {
    // SAFETY: an all-zero rusage is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes one rusage into the valid, exclusively borrowed `usage`.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let time = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    Ok(time(usage.ru_utime) + time(usage.ru_stime))
}

/// Clock ticks per second, the unit of the times in `/proc` (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks_per_sec() -> Option<u64> {
    // SAFETY: sysconf reads a configuration value; it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_never_goes_down() {
        let (soft, hard) = nofile_limit().unwrap();
        assert!(soft <= hard);
        assert_eq!(raise_nofile_limit(soft.min(64)).unwrap(), soft);
        let raised = raise_nofile_limit(soft.saturating_add(1).min(hard)).unwrap();
        assert!(raised >= soft);
        assert_eq!(nofile_limit().unwrap().0, raised);
    }

    #[test]
    fn glibc_takes_the_fixed_mmap_threshold() {
        assert_eq!(fix_mmap_threshold(), cfg!(target_env = "gnu"));
    }
}
