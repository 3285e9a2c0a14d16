//! Readiness for a service manager: systemd's notification protocol (`sd_notify`), spoken
//! directly. When `NOTIFY_SOCKET` names a socket (systemd sets it for a `Type=notify` unit), the
//! node sends `STATUS=` lines as it comes up and `READY=1` once it is listening and linked to one
//! of the peers it dials (at once if it dials none), so that units ordered after it start when
//! it can carry calls. Without `NOTIFY_SOCKET` nothing is sent. `contrib/ringspan.service` is a
//! unit that uses it.

use std::os::unix::net::UnixDatagram;
use std::sync::Arc;
use std::time::Duration;

use ringspan::daemon::Shared;
use ringspan::daemon::config::NodeConfig;

/// Where notifications go: `NOTIFY_SOCKET`, a path, or an abstract name written with a leading
/// `@`.
struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
}

impl Notifier {
    fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = name.as_encoded_bytes();
        let target = match bytes.strip_prefix(b"@") {
            Some(abstract_name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(abstract_name).ok()?
            }
            None => std::os::unix::net::SocketAddr::from_pathname(&name).ok()?,
        };
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, target })
    }

    /// Sends one notification; a failure is logged and otherwise ignored (the node runs on).
    fn send(&self, text: &str) {
        if let Err(error) = self.socket.send_to_addr(text.as_bytes(), &self.target) {
            tracing::warn!(%error, "cannot notify the service manager");
        }
    }
}

/// Tells the service manager, if there is one, that the node is starting, and then that it is
/// ready as soon as it is (on a thread of its own, which ends then).
pub fn when_ready(shared: Arc<Shared>, config: &NodeConfig) {
    let Some(notifier) = Notifier::from_env() else { return };
    let dials = config.peers.iter().any(|p| p.spec.address.is_some());
    let listening = super::run::listening(&config.listen);
    notifier.send(&format!("STATUS=listening on {listening}, waiting for a peer to link"));
    std::thread::spawn(move || {
        // Looked at every 50 ms, or every ten times as long as a snapshot took (it is a round
        // trip to the workers, which walk every link).
        loop {
            #[allow(clippy::disallowed_methods)] // a thread outside the protocol layers
            let asked = std::time::Instant::now();
            if !dials || !shared.snapshot().links.is_empty() {
                break;
            }
            std::thread::sleep((asked.elapsed() * 10).max(Duration::from_millis(50)));
        }
        notifier.send("READY=1\nSTATUS=running");
    });
}
