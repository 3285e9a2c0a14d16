//! An application's mount through a reload of its node's configuration, with real `ringspan run`
//! processes and the Rust client (`clients/rust`) in this process: the application attaches X
//! on `a`, `show mounts` on `a` names its pid and local link, and `b` routes X. Then `a` takes a
//! file that adds a configured mount, removes the other, and also lists X: X stays the
//! application's (the reload says it is held and not attached, `b` still routes it), and the
//! calls to it from `b`'s side are answered before, during and after. When the application
//! detaches, X goes from `b`'s routes; a later reload that still lists X attaches it as
//! configured.
//!
//! ```text
//! app ~ a — b — caller
//!   (echo M1, then M3 instead; X listed too)
//! ```
//!
//! Nothing waits on the clock: each step waits for the calls' progress or a node's view.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::Snapshot;
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, Role};
use ringspan_attach::{Client, Kind, mount};

use crate::support::calls::{StopOnDrop, WAIT, app, load};
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::BIN;
use crate::support::wait::wait_for;

const M1: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const M3: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x30) };
/// The application's mount.
const X: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x70) };
const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";

fn has_route(snapshot: &Snapshot, mount: MountKey) -> bool {
    let mount = format!("{:x}", mount.mount.0);
    snapshot.routes.iter().any(|r| r.mount == mount)
}

/// `node`'s snapshot, asked again while it does not answer (a busy machine).
fn snapshot_of(node: &Node) -> Snapshot {
    let mut snapshot = None;
    wait_for("a snapshot", WAIT, || {
        snapshot = node.try_snapshot().filter(|s| !s.node.is_empty());
        snapshot.is_some()
    });
    snapshot.unwrap()
}

/// `ringspan <args> --config <node's file>`, which must succeed; what it printed.
fn ringspan(args: &[&str], node: &Node) -> String {
    let out = Command::new(BIN).args(args).arg("--config").arg(&node.config).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn an_application_keeps_its_mount_through_a_reload_that_lists_it_and_its_calls_go_on() {
    let dir = scratch("attach-reload");
    let [a, b] = ["a", "b"].map(|n| Node::new(&dir, n));
    let socket = dir.join("a-attach.sock");
    let caller_id = Identity::generate().unwrap();
    let a_node = a.public().node_id().to_string();
    let attach = format!("attach = \"{}\"\n", socket.display());
    let m1 = config::echo_mount(M1, "master", "a/m1");
    let a_with = |mounts: &str| {
        config::write(&a, &attach, LIMITS, &(config::peer(&b, true) + mounts));
    };
    a_with(&m1);
    let allow = config::allow(&[(caller_id.public_key(), "client")]);
    config::write(&b, &allow, LIMITS, &config::peer(&a, false));
    let _a = a.run();
    let _b = b.run();

    // The application, in this process: attaches X, then answers each call with its payload
    // until told to go, when it detaches X and closes its socket.
    wait_for("a's attach socket", WAIT, || socket.exists());
    let mut application = Client::connect(&socket).unwrap();
    let attachment = application.attach(mount(1, 0x70), Kind::Master, "app/x", WAIT).unwrap();
    let (go, gone) = mpsc::channel::<()>();
    let serving = std::thread::spawn(move || {
        while gone.try_recv().is_err() {
            if let Some(request) = application.accept(Duration::from_millis(50)).unwrap() {
                let payload = request.payload.clone();
                application.reply(&request, &payload).unwrap();
            }
        }
        application.detach(attachment).unwrap();
    });
    let pid = std::process::id();

    // `show mounts` on a names the application: its pid and its local link.
    let held = |s: &Snapshot| {
        let row = s.routes.iter().find(|r| r.mount == "70")?;
        let holder = row.held_by?;
        let link = s.links.iter().find(|l| l.link == holder.link)?;
        Some((holder.pid, link.attached, row.origin.clone()))
    };
    wait_for("a to show X held by the application", WAIT, || {
        a.try_snapshot().is_some_and(|s| held(&s).is_some())
    });
    assert_eq!(held(&snapshot_of(&a)), Some((pid, Some(pid), a_node.clone())));
    let a_m1 = snapshot_of(&a).routes.into_iter().find(|r| r.mount == "10").unwrap();
    assert_eq!(a_m1.held_by, None, "a configured mount is no application's");
    let mut shown = String::new();
    wait_for("`show mounts` to name the application", WAIT, || {
        shown = ringspan(&["show", "mounts"], &a);
        shown.contains("held by")
    });
    eprintln!("`show mounts` on a:\n{shown}");
    let row = shown.lines().find(|l| l.starts_with("0x1") && l.contains(" 0x70 ")).unwrap();
    assert!(row.contains(&format!("app pid {pid} (link 0:")), "{shown}");
    let row = shown.lines().find(|l| l.starts_with("0x1") && l.contains(" 0x10 ")).unwrap();
    assert!(row.ends_with("  -"), "a configured mount's holder: {shown}");

    // b routes X (as a's own mount) and its caller is answered.
    let caller = app(caller_id, Role::Client, &b);
    assert!(caller.wait_for_route(X, WAIT) && caller.wait_for_route(M1, WAIT));
    let b_x = snapshot_of(&b).routes.into_iter().find(|r| r.mount == "70").unwrap();
    assert_eq!((b_x.origin, b_x.held_by), (a_node.clone(), None), "held on a, not b");

    let stop = AtomicBool::new(false);
    let completed = [AtomicU64::new(0)];
    let (stop, completed) = (&stop, &completed);
    let (tally, caller) = std::thread::scope(|scope| {
        // The caller is the load's while it runs (a handle is not shared between threads).
        let running = scope.spawn(move || (load(&caller, &[X], 4, stop, completed), caller));
        let _stop = StopOnDrop(stop);
        let progress = |what: &str| {
            let from = completed[0].load(Ordering::Relaxed);
            wait_for(what, WAIT, || completed[0].load(Ordering::Relaxed) >= from + 50);
        };
        progress("calls to X before the reload");

        // The reload: M3 added, M1 removed, and X listed as a configured mount.
        let x = config::echo_mount(X, "master", "a/x");
        a_with(&(config::echo_mount(M3, "master", "a/m3") + &x));
        let said = ringspan(&["reload"], &a);
        eprintln!("a's reload said:\n{said}");
        assert!(!said.contains("closed"), "the application's local link stays: {said}");
        let says = format!("mount 0x1:0x70 is held by application pid {pid} (link 0:");
        assert!(said.contains(&says) && said.contains("; not attached"), "{said}");
        assert!(!said.contains("mount 0x1:0x70 attached"), "{said}");
        assert!(said.contains("mount 0x1:0x30 attached"), "{said}");
        assert!(said.contains("mount 0x1:0x10 detached"), "{said}");
        progress("calls to X after the reload");
        wait_for("b to hear of M3 and to forget M1", WAIT, || {
            b.try_snapshot().is_some_and(|s| has_route(&s, M3) && !has_route(&s, M1))
        });
        // X is still the application's, on a and as b routes it.
        assert_eq!(held(&snapshot_of(&a)), Some((pid, Some(pid), a_node.clone())));
        assert!(has_route(&snapshot_of(&b), X));
        progress("calls to X once the reload settled");
        stop.store(true, Ordering::Relaxed);
        running.join().unwrap()
    });
    tally.assert_every_call_answered("calls to an application's mount through a reload");

    // The application detaches and goes: X goes from b's routes, though a's file lists it.
    go.send(()).unwrap();
    serving.join().unwrap();
    wait_for("b to forget X", WAIT, || b.try_snapshot().is_some_and(|s| !has_route(&s, X)));
    assert!(!has_route(&snapshot_of(&a), X), "a took nothing of it");

    // A reload that still lists X attaches it now, as the configured echo mount.
    let said = ringspan(&["reload"], &a);
    assert!(said.contains("mount 0x1:0x70 attached"), "{said}");
    assert!(caller.wait_for_route(X, WAIT), "b routes X again, a's configured mount");
    let call = caller.open(X, ringspan::daemon::CALL, b"echo", true).unwrap();
    match call.recv(WAIT) {
        Some(ringspan::daemon::CallEvent::Message { payload, .. }) => assert_eq!(payload, b"echo"),
        other => panic!("the configured X does not echo: {other:?}"),
    }
    let row = snapshot_of(&a).routes.into_iter().find(|r| r.mount == "70").unwrap();
    assert_eq!(row.held_by, None, "configured now, no application's");
}
