//! The issue's end-to-end case with nothing but Python's standard library on the application
//! side (`clients/python`): a key-value master (`kv.py master`, a real process) attaches its
//! mount through node `a`'s attach socket; clients on another node, `c`, two relays away
//! (`c`, `r`), put, get and scan through `c`'s attach socket. When the master is killed
//! (SIGKILL), the cluster forgets its mount and a client's call fails with a reason; a new
//! master attaches it again.
//!
//! ```text
//! kv.py master ~ a — r — c ~ kv.py put/get/scan
//! ```
//!
//! A second test runs the Rust client's kv example (`clients/rust/examples/kv.rs`, included
//! here as a module) against kv.py over the same cluster: each serves the other's clients.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::calls::WAIT;
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::wait::wait_for;

/// The Rust twin of kv.py, its functions called as its `main` calls them.
#[allow(dead_code)] // its `main`, usage and demo are the example's own
#[path = "../../clients/rust/examples/kv.rs"]
mod rust_kv;

const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";

/// `clients/python/kv.py`.
fn kv_py() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/kv.py")
}

/// `python3 kv.py ARGS...`, run to its end.
fn kv(args: &[&str]) -> Output {
    Command::new("python3").arg(kv_py()).args(args).output().expect("python3 runs")
}

/// [`kv`], which must succeed: its standard output.
fn kv_ok(args: &[&str]) -> String {
    let out = kv(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kv {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// A kv master serving through `socket`, in a process of its own.
fn master(socket: &Path) -> Proc {
    Proc(
        Command::new("python3")
            .arg(kv_py())
            .arg("master")
            .arg(socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs"),
    )
}

/// Whether `node` routes the kv mount (cluster 7, mount 1).
fn routes_kv(node: &Node) -> bool {
    node.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.cluster == "7" && r.mount == "1"))
}

/// `a — r — c`, `a` and `c` with attach sockets: the nodes (running), and the sockets.
fn cluster(dir: &Path) -> ([Node; 3], [Proc; 3], PathBuf, PathBuf) {
    let [a, r, c] = ["a", "r", "c"].map(|n| Node::new(dir, n));
    let (a_sock, c_sock) = (dir.join("a-attach.sock"), dir.join("c-attach.sock"));
    let attach = |socket: &Path| format!("attach = \"{}\"\n", socket.display());
    config::write(&a, &attach(&a_sock), LIMITS, &config::peer(&r, true));
    config::write(&r, "", LIMITS, &(config::peer(&a, false) + &config::peer(&c, false)));
    config::write(&c, &attach(&c_sock), LIMITS, &config::peer(&r, true));
    let procs = [a.run(), r.run(), c.run()];
    wait_for("the attach sockets", WAIT, || a_sock.exists() && c_sock.exists());
    ([a, r, c], procs, a_sock, c_sock)
}

#[test]
fn a_python_master_serves_python_clients_two_relays_away_and_its_death_is_seen() {
    let dir = scratch("attach-python");
    let ([_a, _r, c], _procs, a_sock, c_sock) = cluster(&dir);

    let mut kv_master = master(&a_sock);
    wait_for("c to route the kv mount", WAIT, || routes_kv(&c));
    let c_sock = c_sock.to_str().unwrap();
    assert_eq!(kv_ok(&["put", c_sock, "fruit/apple", "red"]).trim(), "ok");
    assert_eq!(kv_ok(&["put", c_sock, "fruit/kiwi", "green"]).trim(), "ok");
    assert_eq!(kv_ok(&["get", c_sock, "fruit/kiwi"]).trim(), "green");
    assert_eq!(kv_ok(&["scan", c_sock, "fruit/"]).trim(), "fruit/apple=red\nfruit/kiwi=green");

    // Killed: the cluster forgets the mount; a client says why it cannot reach it.
    kv_master.0.kill().unwrap();
    kv_master.0.wait().unwrap();
    wait_for("c to forget the kv mount", WAIT, || !routes_kv(&c));
    let out = kv(&["get", c_sock, "fruit/kiwi"]);
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(why.contains("no route to 7:1"), "{why}");

    // A new master attaches the mount again (its store starts empty).
    let _again = master(&a_sock);
    wait_for("c to route the kv mount again", WAIT, || routes_kv(&c));
    assert_eq!(kv_ok(&["get", c_sock, "fruit/kiwi"]).trim(), "");
}

/// A call with a command the kv master does not serve is refused with `REFUSED`.
fn assert_refuses_unknown_commands(client: &mut ringspan_attach::Client) {
    let unknown = ringspan_attach::Command::new(2, 9);
    let call = client.open(ringspan_attach::mount(7, 1), unknown, b"", true).unwrap();
    match client.wait(call, WAIT) {
        Err(ringspan_attach::ClientError::Refused(code)) => {
            assert_eq!(code, ringspan::wire::ErrorCode::REFUSED)
        }
        other => panic!("an unknown command: {other:?}"),
    }
}

#[test]
fn the_rust_kv_example_and_kv_py_serve_each_other_two_relays_away() {
    let dir = scratch("attach-kv-rust");
    let ([_a, _r, c], _procs, a_sock, c_sock) = cluster(&dir);
    let (a_path, c_path) = (a_sock.to_str().unwrap(), c_sock.to_str().unwrap());

    // kv.py's master, the Rust example's client.
    let mut py_master = master(&a_sock);
    wait_for("c to route the kv mount", WAIT, || routes_kv(&c));
    let mut client = rust_kv::connect_client(c_path).unwrap();
    let ask = |client: &mut _, command, text: &str| rust_kv::ask(client, command, text).unwrap();
    assert_eq!(ask(&mut client, rust_kv::PUT, "fruit/apple=red"), ["ok"]);
    assert_eq!(ask(&mut client, rust_kv::PUT, "fruit/kiwi=green"), ["ok"]);
    assert_eq!(ask(&mut client, rust_kv::GET, "fruit/kiwi"), ["green"]);
    let scan = ask(&mut client, rust_kv::SCAN, "fruit/");
    assert_eq!(scan, ["fruit/apple=red", "fruit/kiwi=green"]);
    // An unknown command: kv.py refuses it, as the Rust master does below.
    assert_refuses_unknown_commands(&mut client);
    py_master.0.kill().unwrap();
    py_master.0.wait().unwrap();
    wait_for("c to forget the kv mount", WAIT, || !routes_kv(&c));

    // The Rust example's master, kv.py's clients; and an unknown command refused the same way.
    let mut rust_master = rust_kv::attach_master(a_path).unwrap();
    std::thread::spawn(move || rust_kv::serve(&mut rust_master));
    wait_for("c to route the Rust master's mount", WAIT, || routes_kv(&c));
    assert_eq!(kv_ok(&["put", c_path, "veg/leek", "white"]).trim(), "ok");
    assert_eq!(kv_ok(&["put", c_path, "veg/kale", "dark"]).trim(), "ok");
    assert_eq!(kv_ok(&["get", c_path, "veg/leek"]).trim(), "white");
    assert_eq!(kv_ok(&["scan", c_path, "veg/"]).trim(), "veg/kale=dark\nveg/leek=white");
    let mut client = rust_kv::connect_client(c_path).unwrap();
    assert_refuses_unknown_commands(&mut client);
}
