//! Helpers for the tests that run `ringspan` (and `ringspan-bench`) processes: a child killed
//! when the test ends (a failing test leaves no process behind), `ringspan run` with its log
//! beside its config, and free ports.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::wait::wait_for;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_ringspan");

/// The benchmark binary (link, serve, clients, hops, nats), which some tests drive as load.
pub const BENCH: &str = env!("CARGO_BIN_EXE_ringspan-bench");

/// A child process, killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port free at the time of asking, for a node to listen on: below the ephemeral
/// range when there is room (the 10,000 ports under it), so that no outgoing connection of this
/// or another test takes it between now and the node's bind, or while its node is down. Never
/// one this process was given before: the tests of a binary run side by side, and a port given
/// to one stays its own until the process ends (its node may not have bound it yet, or be down
/// for a restart).
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range");
    let low = range.ok().and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok());
    let below_ephemeral = low.filter(|&low| low >= 12_000).map(|to| (to - 10_000, to));
    loop {
        let port = match below_ephemeral {
            Some((from, to)) => {
                let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
                from + (random % u64::from(to - from)) as u16
            }
            None => TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port(),
        };
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
}

/// Sends `signal` to `child` (our own child, so its pid is not reused while we hold it).
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let result = unsafe { libc::kill(child.id() as i32, signal) };
    assert_eq!(result, 0);
}

/// Waits up to `timeout` for `proc` to exit (`what`, if it does not); its status.
pub fn exit_of(proc: &mut Proc, what: &str, timeout: Duration) -> ExitStatus {
    let mut status = None;
    wait_for(what, timeout, || {
        status = proc.0.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap()
}

/// Starts `ringspan run --config config`; its log (RUST_LOG=info) is appended to the config's
/// path with the extension `log`, across restarts.
pub fn run_node(config: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(config.with_extension("log"))
        .unwrap();
    Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}
