//! The standard `process_*` series of the Prometheus client libraries, and the build's, for the
//! metrics endpoint: the node process's CPU time, memory, descriptors and start time, read from the
//! kernel at each scrape (`/proc/self`, `getrusage`). A value the kernel does not give is left
//! out, never made up.

use std::fmt::Write as _;

use crate::ring::sys;

/// The process series in the Prometheus text format, each family with its HELP and TYPE, and
/// `ringspan_build_info` (the version and the commit built, as `ringspan --version` says them).
pub fn process_series() -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ringspan_build_info The version and commit of the build, as labels.\n\
         # TYPE ringspan_build_info gauge\n\
         ringspan_build_info{{version=\"{}\",commit=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        env!("RINGSPAN_COMMIT")
    );
    let mut family = |name: &str, help: &str, kind: &str, value: Option<f64>| {
        if let Some(value) = value {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // `VmRSS:     1234 kB`: bytes.
    let kib = |key: &str| {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024.0)
    };
    let cpu = sys::cpu_time().ok().map(|t| t.as_secs_f64());
    family("process_cpu_seconds_total", "User and system CPU time spent.", "counter", cpu);
    family("process_resident_memory_bytes", "Resident memory.", "gauge", kib("VmRSS:"));
    family("process_virtual_memory_bytes", "Virtual memory.", "gauge", kib("VmSize:"));
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as f64);
    family("process_open_fds", "Open file descriptors.", "gauge", fds);
    let max_fds = sys::nofile_limit().ok().map(|(soft, _)| soft as f64);
    family("process_max_fds", "The file descriptor limit (soft).", "gauge", max_fds);
    family(
        "process_start_time_seconds",
        "When the process started, seconds since the Unix epoch.",
        "gauge",
        start_time(),
    );
    out
}

/// The process's start: its start in clock ticks after boot (`/proc/self/stat`, field 22) and
/// the boot time (`/proc/stat`, `btime`).
fn start_time() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let ticks: f64 = after_name.split_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = boot.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
    Some(btime + ticks / sys::clock_ticks_per_sec()? as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_process_series_are_there_with_plausible_values() {
        let text = process_series();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0, "{text}");
        assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
        assert!(value("process_open_fds") >= 3.0, "stdin, stdout, stderr at least");
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_cpu_seconds_total") > 0.0);
        let build = text.lines().find(|l| l.starts_with("ringspan_build_info{")).unwrap();
        assert!(build.starts_with("ringspan_build_info{version=\"") && build.ends_with("\"} 1"));
        #[allow(clippy::disallowed_methods)] // compared with the wall clock's now
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        let started = value("process_start_time_seconds");
        assert!(started <= now.as_secs_f64() + 1.0 && started > now.as_secs_f64() - 86_400.0);
        for name in ["process_cpu_seconds_total", "process_open_fds"] {
            assert!(
                text.contains(&format!("# HELP {name} "))
                    && text.contains(&format!("# TYPE {name} "))
            );
        }
    }
}
