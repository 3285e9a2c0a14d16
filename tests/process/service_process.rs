//! `ringspan run` under a service manager: with `NOTIFY_SOCKET` set (as systemd sets it for a
//! `Type=notify` unit, `contrib/ringspan.service`), the node says it is starting, and says
//! `READY=1` only once it listens and a peer it dials has linked; a node that dials nobody is
//! ready at once. The socket here is the test's own datagram socket, standing in for systemd's.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::{BIN, Proc};

const WAIT: Duration = Duration::from_secs(20);

/// Starts `ringspan run` for `node`, notifying `socket`.
fn run_notifying(node: &Node, socket: &std::path::Path) -> Proc {
    Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&node.config)
            .env("NOTIFY_SOCKET", socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The next notification, as text.
fn next(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn the_node_is_ready_once_it_listens_and_a_peer_it_dials_has_linked() {
    let dir = scratch("service");
    let [a, b] = ["a", "b"].map(|n| Node::new(&dir, n));
    config::write(&a, "", "", &config::peer(&b, false));
    config::write(&b, "", "redial_min_ms = 50\nredial_max_ms = 200\n", &config::peer(&a, true));
    let path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();

    // b dials a, which is not up: b says it is starting, not that it is ready.
    let _b = run_notifying(&b, &path);
    let first = next(&socket);
    assert!(first.starts_with("STATUS=listening on"), "{first}");
    assert!(!first.contains("READY=1"), "{first}");
    // a comes up; b links to it, and is ready.
    let _a = a.run();
    let ready = next(&socket);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(b.try_snapshot().is_some_and(|s| !s.links.is_empty()), "linked when ready");

    // A node that dials nobody is ready once it listens.
    let c = Node::new(&dir, "c");
    config::write(&c, "", "", "");
    let _c = run_notifying(&c, &path);
    assert!(next(&socket).starts_with("STATUS="));
    assert!(next(&socket).contains("READY=1"));
    let _ = std::fs::remove_dir_all(&dir);
}
