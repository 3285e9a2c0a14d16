//! The operator's surfaces: the control socket (`ringspan show`), here; the metrics endpoint
//! (Prometheus text format over HTTP), in `metrics.rs`; and the views of a
//! [`Snapshot`](super::Snapshot) they print, in `render.rs`. The public items of those two are
//! re-exported here.
//!
//! # Control socket
//!
//! A client connects to the node's Unix socket and writes one line, `snapshot`; the node
//! answers with its [`Snapshot`](super::Snapshot) as one JSON document and closes. The socket
//! file is created mode 0600: only the node's user may ask. One node per socket:
//! [`serve_control`] refuses a path where something answers and a path that holds anything but
//! a socket, replaces a stale socket (its process is gone: a connection to it is refused), and
//! returns a [`ControlSocket`] that removes the file when the node stops, only if it is still
//! the file it created.

pub use super::metrics::{
    METRICS_CONNECTIONS_MAX, METRICS_REQUEST_MAX_BYTES, METRICS_TIMEOUT_MS, MetricsLimits,
    serve_metrics, serve_metrics_with,
};
pub use super::render::{View, cluster_dot, dot, printable, prometheus, render};

use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::SockRef;

use super::Shared;
use super::render::json_safe;
use crate::ring::attach::{FileId, claim, in_use, remove_if};

/// Bytes of a control request: `snapshot` and a newline, with room.
const CONTROL_REQUEST_MAX_BYTES: u64 = 64;

/// How long a control client may take to send its request, and one write of the answer may
/// block. The control socket serves one client at a time (only the node's user can connect).
const CONTROL_TIMEOUT_MS: u64 = 2_000;

/// The pause after a failed accept (no descriptor left, say), so that the loop does not spin.
pub(super) const ACCEPT_RETRY_MS: u64 = 10;

/// Serves the control socket at `path` on a thread of its own, until the returned
/// [`ControlSocket`] is dropped or closed: keep it for as long as the node runs.
///
/// If `path` exists: a socket something answers on (another node, or this one) is refused
/// (`AddrInUse`, "another node is running with control socket PATH") and left alone; a socket
/// whose connections are refused (its process is gone) is replaced; anything else (a file, a
/// directory, a symbolic link) is refused (`AlreadyExists`) and left alone.
pub fn serve_control(path: &Path, shared: Arc<Shared>) -> io::Result<ControlSocket> {
    claim(path, "control")?;
    let listener = UnixListener::bind(path).map_err(|e| match e.kind() {
        // Another node bound it between our look and our bind.
        io::ErrorKind::AddrInUse => in_use(path, "control"),
        _ => e,
    })?;
    let file = FileId::of(&std::fs::symlink_metadata(path)?);
    let wake = match listener.try_clone() {
        Ok(wake) => wake,
        Err(e) => {
            remove_if(path, file);
            return Err(e);
        }
    };
    let socket = ControlSocket {
        path: path.to_path_buf(),
        file,
        stop: Arc::new(AtomicBool::new(false)),
        wake: Some(wake),
    };
    // From here an error drops `socket`, which removes the file.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let stop = socket.stop.clone();
    std::thread::Builder::new()
        .name("ringspan-control".into())
        .spawn(move || control_loop(&listener, &shared, &stop))?;
    Ok(socket)
}

/// A node's control socket, from [`serve_control`]. Dropping it (or [`ControlSocket::close`])
/// stops serving and removes the socket file, if the file at the path is still the one
/// [`serve_control`] created (same device, inode and, where the file system records it, birth
/// time): a node that stops never removes another node's socket.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    file: FileId,
    stop: Arc<AtomicBool>,
    /// A second handle on the listener, to wake its thread; `None` once closed.
    wake: Option<UnixListener>,
}

impl ControlSocket {
    /// Where it is served.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file if it is still ours. Returns whether it
    /// removed it.
    pub fn close(mut self) -> bool {
        self.release()
    }

    fn release(&mut self) -> bool {
        let Some(wake) = self.wake.take() else { return false };
        self.stop.store(true, Ordering::Release);
        // A listener shut down for reading fails its blocked accept at once (Linux: EINVAL),
        // and the thread, seeing `stop`, ends.
        let _ = SockRef::from(&wake).shutdown(Shutdown::Both);
        remove_if(&self.path, self.file)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.release();
    }
}

fn control_loop(listener: &UnixListener, shared: &Shared, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(stream) => answer_control(stream, shared),
            Err(_) => std::thread::sleep(Duration::from_millis(ACCEPT_RETRY_MS)),
        }
    }
}

fn answer_control(mut stream: UnixStream, shared: &Shared) {
    let timeout = Some(Duration::from_millis(CONTROL_TIMEOUT_MS));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let mut line = Vec::new();
    let read =
        BufReader::new((&stream).take(CONTROL_REQUEST_MAX_BYTES)).read_until(b'\n', &mut line);
    // Nothing asked (a node probing whether this one is alive, say): nothing to answer.
    if read.is_err() || line.is_empty() {
        return;
    }
    let request = String::from_utf8_lossy(&line);
    let answer = match request.trim() {
        // The socket is served from before the engine starts (one node per socket is checked
        // first): until its workers run, there is nothing to show.
        "snapshot" if !shared.started() => error_json("the node is starting: ask again"),
        "snapshot" => serde_json::to_string(&shared.snapshot())
            .unwrap_or_else(|e| error_json(&format!("cannot encode the snapshot: {e}"))),
        "reload" if !shared.started() => error_json("the node is starting: ask again"),
        "reload" => match shared.reload_from_source() {
            Ok(report) => {
                serde_json::json!({ "reloaded": true, "changes": report.changes }).to_string()
            }
            Err(error) => error_json(&error),
        },
        "drain" if !shared.started() => error_json("the node is starting: ask again"),
        "drain" => {
            serde_json::json!({ "draining": true, "stopping": shared.drain_and_stop() }).to_string()
        }
        other => error_json(&format!("unknown request \"{}\"", printable(other))),
    };
    let _ = stream.write_all(json_safe(&answer).as_bytes());
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Asks the node at `path` for its snapshot, as JSON text (control and invisible characters in
/// it written as `\u` escapes, so it is safe to print).
pub fn fetch(path: &Path) -> Result<String, String> {
    ask(path, "snapshot")
}

/// Sends `request` (`snapshot`; `drain`: the node drains and, run by `ringspan run`, stops;
/// `reload`: the node re-reads its configuration file)
/// to the node at `path`; its answer, as JSON text safe to print.
pub fn ask(path: &Path, request: &str) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the node's control socket {}: {e} (is `ringspan run` up?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream.write_all(format!("{request}\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(json_safe(&text).into_owned())
}

/// The default control socket path for a config file: beside it, `<stem>.sock`.
pub fn default_socket(config: &Path) -> PathBuf {
    config.with_extension("sock")
}

#[cfg(test)]
mod tests {
    use super::super::Snapshot;
    use super::super::render::tests::snapshot;
    use super::*;

    #[test]
    fn the_control_socket_answers_a_snapshot_and_refuses_the_rest() {
        let dir = std::env::temp_dir().join(format!("ringspan-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let shared = Arc::new(Shared::fixed(snapshot()));
        let _socket = serve_control(&path, shared).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fetch(&path).unwrap();
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back.counters.relayed, 12);
        assert_eq!(back.closes, snapshot().closes);
        assert_eq!((back.refused_max_links, back.refused_handshake_rate), (19, 20));
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"bogus\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("unknown request"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_node_not_yet_running_says_so_instead_of_an_empty_snapshot() {
        let dir =
            std::env::temp_dir().join(format!("ringspan-control-start-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let _socket = serve_control(&path, Arc::new(Shared::default())).unwrap();
        let text = fetch(&path).unwrap();
        assert!(text.contains("the node is starting"), "{text}");
        assert!(serde_json::from_str::<Snapshot>(&text).is_err(), "not a snapshot: {text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn json_from_the_control_socket_carries_no_raw_control_or_invisible_character() {
        let mut s = snapshot();
        s.routes[0].label = "\u{1b}[2J\u{9b}31m\u{7f}\u{202e}\u{feff}\u{e0041}\\\"".into();
        let dir =
            std::env::temp_dir().join(format!("ringspan-control-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let shared = Arc::new(Shared::fixed(s.clone()));
        let _socket = serve_control(&path, shared).unwrap();
        let text = fetch(&path).unwrap();
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains(r#""label":"\u001b[2J\u009b31m\u007f\u202e\ufeff\udb40\udc41\\\"""#));
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back.routes[0].label, s.routes[0].label);
        // A request is echoed back escaped, as JSON.
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"\x1b]0;x\x07\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"], r#"unknown request "\x1b]0;x\x07""#);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
