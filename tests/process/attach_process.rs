//! An application attached to a real `ringspan run` node through its attach socket: a raw
//! client (the rogue kit over the Unix socket: plain records, no handshake, no key) says hello,
//! hears the node's span for its echo master and calls through it; `show` lists its link as
//! attached, with its pid. When the application goes away mid-call the node carries on, its
//! other clients unaffected.

use std::path::Path;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::CALL;
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{Metric, MountKey, MountKind, Role, Wants};
use ringspan::wire::{ErrorCode, Flags};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::rogue::{CloseSeen, Rogue, pump_all_until};
use crate::support::wait::wait_for;

const WAIT: Duration = Duration::from_secs(30);
/// The echo master of the tests' cluster 1.
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };

/// A router on two workers with the echo master and an attach socket beside its config
/// (`<dir>/echo-attach.sock`), running. Any key may link over TCP, as a client.
fn echo_node(dir: &Path) -> (Node, Proc) {
    let node = Node::new(dir, "echo");
    let node_lines = "role = \"router\"\nworkers = 2\naccept_unknown_keys = true\n\
                      attach = \"echo-attach.sock\"\nattach_mode = \"0600\"\n";
    let limits = "keepalive_ms = 200\nidle_timeout_ms = 5000\n";
    config::write(&node, node_lines, limits, &config::echo_mount(MASTER, "master", "echo"));
    let proc = node.run();
    wait_for("the echo node to publish its master", WAIT, || {
        node.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    (node, proc)
}

/// An application attached through the node's socket, that said hello as a client and heard
/// the node's span for the echo master.
fn attached(dir: &Path) -> Rogue {
    let mut app = Rogue::attach(&dir.join("echo-attach.sock"), &Identity::generate().unwrap())
        .expect("the attach socket takes a connection");
    app.hello(Role::Client, Wants::all());
    app.pump_until(WAIT, |r| r.peer_hello().is_some() && r.span_of(MASTER).is_some()).unwrap();
    app
}

#[test]
fn an_attached_application_calls_the_echo_master_and_its_death_harms_no_one() {
    let dir = scratch("attach-process");
    let (node, _proc) = echo_node(&dir);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("echo-attach.sock")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // Another client, over TCP with a handshake, calls throughout.
    let identity = Identity::generate().unwrap();
    let mut other = Rogue::connect(node.addr(), &identity, Some(node.public())).unwrap();
    other.hello(Role::Client, Wants::all());
    other.pump_until(WAIT, |r| r.span_of(MASTER).is_some()).unwrap();
    other.echo_call(MASTER, CALL, b"before", WAIT);

    let mut app = attached(&dir);
    // The node's hello and its span, exactly as over any link.
    assert_eq!(app.peer_hello().unwrap().role, Role::Router);
    let (_, advert) = app.spans()[&MASTER];
    assert_eq!(advert.kind, MountKind::Master);
    assert_eq!(advert.origin, node.public().node_id());
    assert_eq!(advert.metric, Metric::ZERO);
    app.echo_call(MASTER, CALL, b"over the attach socket", WAIT);

    // `show` lists the local link (a client, yet listed) with the application's pid.
    let pid = std::process::id();
    wait_for("the node to list the attached link", WAIT, || {
        node.try_snapshot().is_some_and(|s| {
            s.links.iter().any(|l| l.attached == Some(pid) && l.granted == "client")
        })
    });

    // A call left open, answered; then the application goes away in the middle of it (its
    // socket closed, as the kernel closes it when a process dies).
    let span = app.span_of(MASTER).unwrap();
    let held = app.open(span, CALL, b"held", Flags::NONE);
    app.pump_until(WAIT, |r| r.deliveries(held).any(|d| d.closes())).unwrap();
    app.pump_until(WAIT, |_| node.try_snapshot().is_some_and(|s| s.circuits == 1)).unwrap();
    drop(app);

    // The node ends the call and forgets the link; the other client carries on.
    pump_all_until(&mut [&mut other], WAIT, |_| {
        node.try_snapshot()
            .is_some_and(|s| s.circuits == 0 && s.links.iter().all(|l| l.attached.is_none()))
    })
    .unwrap();
    other.echo_call(MASTER, CALL, b"after the application died", WAIT);
    assert_eq!(other.closed(), None);

    // Another application attaches, as a new link.
    let mut again = attached(&dir);
    again.echo_call(MASTER, CALL, b"a second application", WAIT);
    // An application that claims more than `attach_role` (client) is refused, as any peer.
    let mut greedy = Rogue::attach(&dir.join("echo-attach.sock"), &Identity::generate().unwrap())
        .expect("the attach socket takes a connection");
    greedy.hello(Role::Router, Wants::all());
    greedy.pump_until(WAIT, |r| r.closed().is_some()).unwrap();
    assert_eq!(greedy.closed(), Some(CloseSeen::Notice(ErrorCode::REFUSED)));
    again.echo_call(MASTER, CALL, b"after the greedy one", WAIT);

    // Three attached, none refused at the socket; the TCP client is counted among the clients,
    // the attached ones are listed instead (the snapshot is refreshed every 200 ms).
    wait_for("the node to count the attached applications", WAIT, || {
        node.try_snapshot().is_some_and(|s| (s.attached, s.attach_refused, s.clients) == (3, 0, 1))
    });
    let _ = std::fs::remove_dir_all(&dir);
}
