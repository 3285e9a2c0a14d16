//! An application process killed mid-call (issue 19's "ends its calls exactly once"), with real
//! processes on both ends: the application is `ringspan-bench attach serve --hold`, a process of
//! its own on the `ringspan-attach` client, serving an echo mount through `a`'s attach socket;
//! the caller is another application, at `b`'s attach socket, with several calls in flight.
//! A call the caller gives up on is ended by force and forgotten. SIGKILL takes the server
//! while it holds calls: each held call ends exactly once, with `LOST_LINK`; the calls it had answered stay answered; the cluster forgets the mount; a new
//! process attaches it again and is called.
//!
//! ```text
//! server ~ a — b ~ caller
//! ```

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use ringspan::wire::ErrorCode;
use ringspan_attach::{Client, ClientError, Ended, mount};

use crate::support::calls::WAIT;
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::{BENCH, Proc};

const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";

/// The echo application, and the lines it prints (`attached`, `holding`).
fn serve(socket: &std::path::Path, mount: &str) -> (Proc, mpsc::Receiver<String>) {
    let mut child = Command::new(BENCH)
        .args(["attach", "serve", "--hold", "--mount", mount, "--socket"])
        .arg(socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("ringspan-bench starts");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (Proc(child), lines)
}

fn expect_line(lines: &mpsc::Receiver<String>, want: &str) {
    match lines.recv_timeout(WAIT) {
        Ok(line) => assert_eq!(line, want),
        Err(error) => panic!("the application did not say {want:?}: {error}"),
    }
}

#[test]
fn an_application_killed_mid_call_ends_each_held_call_once() {
    let dir = scratch("attach-kill");
    let [a, b] = ["a", "b"].map(|n| Node::new(&dir, n));
    let (a_socket, b_socket) = (dir.join("a-attach.sock"), dir.join("b-attach.sock"));
    let attach = |s: &std::path::Path| format!("attach = \"{}\"\n", s.display());
    config::write(&a, &attach(&a_socket), LIMITS, &config::peer(&b, true));
    config::write(&b, &attach(&b_socket), LIMITS, &config::peer(&a, false));
    let _a = a.run();
    let _b = b.run();
    crate::support::wait::wait_for("the attach sockets", WAIT, || {
        a_socket.exists() && b_socket.exists()
    });
    let echo = mount(1, 0x30);

    let (mut server, lines) = serve(&a_socket, "0x1:0x30");
    expect_line(&lines, "attached");
    let mut caller = Client::connect(&b_socket).unwrap();
    caller.wait_for_route(echo, WAIT).unwrap();

    // Twenty answered calls and five the server holds, all in flight at once.
    let answered: Vec<_> = (0..20u8)
        .map(|i| caller.open(echo, ringspan_attach::CALL, &[i; 8], true).unwrap())
        .collect();
    let held: HashSet<_> =
        (0..5).map(|_| caller.open(echo, ringspan_attach::CALL, b"hold", true).unwrap()).collect();
    caller.flush().unwrap();
    for (i, call) in answered.into_iter().enumerate() {
        assert_eq!(caller.wait(call, WAIT).unwrap(), vec![vec![i as u8; 8]], "call {i}");
    }
    for _ in 0..5 {
        expect_line(&lines, "holding");
    }
    // A call given up on is ended by force and forgotten: it never comes out of next_ended.
    match caller.call(echo, b"hold", Duration::from_millis(100)) {
        Err(ClientError::TimedOut) => {}
        other => panic!("a call held past its timeout: {other:?}"),
    }

    // SIGKILL while it holds five calls: each ends once, with LOST_LINK, and nothing else does.
    server.0.kill().unwrap();
    server.0.wait().unwrap();
    let mut ended = HashSet::new();
    while ended.len() < held.len() {
        let Some(Ended { call, result }) = caller.next_ended(WAIT).unwrap() else {
            panic!("{} held calls never ended", held.len() - ended.len());
        };
        assert!(held.contains(&call), "a call not held ended: {call:?}");
        assert!(ended.insert(call), "a call ended twice");
        assert_eq!(result, Err(ErrorCode::LOST_LINK));
    }
    assert_eq!(caller.next_ended(Duration::from_millis(300)).unwrap(), None, "ended once");

    // The cluster forgets the mount: b refuses calls to it for lack of a route.
    caller.wait_for_no_route(echo, WAIT).expect("b forgets the mount");
    match caller.call(echo, b"anyone?", WAIT) {
        Err(ClientError::Refused(code)) => assert_eq!(code, ErrorCode::NO_ROUTE),
        other => panic!("a call to a mount nobody holds: {other:?}"),
    }

    // Nothing of it is left at a: a new process attaches the mount and is called.
    let (_server, lines) = serve(&a_socket, "0x1:0x30");
    expect_line(&lines, "attached");
    caller.wait_for_route(echo, WAIT).unwrap();
    assert_eq!(caller.call(echo, b"again", WAIT).unwrap(), b"again");
}
