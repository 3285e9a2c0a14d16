//! Applications' mounts through the attach socket (PROTOCOL.md 8.11), with real `ringspan run`
//! processes and the Rust client (`clients/rust`, no engine, no key): an application attaches
//! a mount on the node `a`, a caller two hops away (through `b`) reaches it and is answered; a
//! second application asking for the same mount is refused; when the application goes mid-call
//! (its socket closed, as the kernel closes a dead process's), the call ends once with
//! `LOST_LINK`, the mount is withdrawn from the cluster, and another application attaches it.
//! A second test streams one call both ways between two applications on one node, and refuses
//! another with a code.
//!
//! ```text
//! app ~ a — b — caller
//! ```

use std::sync::mpsc;
use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::CallEvent;
use ringspan::span::Role;
use ringspan::wire::ErrorCode;
use ringspan_attach::{Client, ClientError, Kind, mount};

use crate::support::calls::{WAIT, app};
use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::wait::wait_for;

const LIMITS: &str =
    "keepalive_ms = 200\nidle_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 500\n";

#[test]
fn an_application_attaches_a_mount_the_cluster_calls_and_its_death_ends_its_calls_once() {
    let dir = scratch("attach-mounts");
    let [a, b] = ["a", "b"].map(|n| Node::new(&dir, n));
    let socket = dir.join("a-attach.sock");
    let caller_id = Identity::generate().unwrap();
    let attach = format!("attach = \"{}\"\n", socket.display());
    config::write(&a, &attach, LIMITS, &config::peer(&b, true));
    let allow = config::allow(&[(caller_id.public_key(), "client")]);
    config::write(&b, &allow, LIMITS, &config::peer(&a, false));
    let _a = a.run();
    let _b = b.run();
    let kv = mount(1, 0x10);

    // The application: attaches, then serves on its own thread until told to go.
    wait_for("a's attach socket", WAIT, || socket.exists());
    let mut application = Client::connect(&socket).unwrap();
    application.attach(kv, Kind::Master, "kv", WAIT).unwrap();
    let caller = app(caller_id, Role::Client, &b);
    assert!(caller.wait_for_route(kv, WAIT), "the caller hears the application's mount");

    // A second application may not take the same mount.
    let mut rival = Client::connect(&socket).unwrap();
    match rival.attach(kv, Kind::Master, "rival", WAIT) {
        Err(ClientError::Refused(code)) => assert_eq!(code, ErrorCode::REFUSED),
        other => panic!("a held mount attached twice: {other:?}"),
    }

    let (go, gone) = mpsc::channel::<()>();
    let serving = std::thread::spawn(move || {
        // Answers every call with its payload reversed, until told to go mid-call: then the
        // call it holds is left unanswered and the socket closed.
        loop {
            let Some(request) = application.accept(Duration::from_millis(50)).unwrap() else {
                continue;
            };
            if gone.try_recv().is_ok() {
                drop(application);
                return;
            }
            let answer: Vec<u8> = request.payload.iter().rev().copied().collect();
            application.reply(&request, &answer).unwrap();
        }
    });
    for i in 0..50u32 {
        let payload = format!("call {i}").into_bytes();
        let call = caller.open(kv, ringspan::daemon::CALL, &payload, true).unwrap();
        let reversed: Vec<u8> = payload.iter().rev().copied().collect();
        match call.recv(WAIT) {
            Some(CallEvent::Message { payload, .. }) => assert_eq!(payload, reversed),
            other => panic!("call {i}: {other:?}"),
        }
    }

    // The application goes while it holds a call: the call ends once, with LOST_LINK.
    go.send(()).unwrap();
    let call = caller.open(kv, ringspan::daemon::CALL, b"last", true).unwrap();
    serving.join().unwrap();
    let end = loop {
        match call.recv(WAIT) {
            Some(CallEvent::Ended(code)) => break code,
            // The forced close the node sends for the lost link, then the end.
            Some(CallEvent::Message { abort: true, error, .. }) => {
                assert_eq!(error, ErrorCode::LOST_LINK)
            }
            Some(CallEvent::Message { .. }) => panic!("the application answered after it went"),
            None => panic!("the call hangs"),
        }
    };
    assert_eq!(end, ErrorCode::LOST_LINK);
    assert!(call.recv(Duration::ZERO).is_none(), "ended exactly once");
    wait_for("the cluster to forget the mount", WAIT, || {
        caller.routes().iter().all(|r| r.mount != format!("{:x}", kv.mount.0))
    });
    // Nothing of it is left at a: the rival attaches it now.
    let mut rival = Client::connect(&socket).unwrap();
    rival.attach(kv, Kind::Master, "rival", WAIT).unwrap();
    assert!(caller.wait_for_route(kv, WAIT));
}

#[test]
fn a_call_streams_both_ways_between_two_applications_and_a_refusal_carries_its_code() {
    let dir = scratch("attach-stream");
    let a = Node::new(&dir, "a");
    let socket = dir.join("a-attach.sock");
    config::write(&a, &format!("attach = \"{}\"\n", socket.display()), LIMITS, "");
    let _a = a.run();
    wait_for("a's attach socket", WAIT, || socket.exists());
    let echo = mount(1, 0x40);
    let (part, other) = (ringspan::wire::Command::new(3, 1), ringspan::wire::Command::new(3, 2));

    // The server: gathers a call's request parts until the caller's last, then answers with
    // each part reversed, one message each, and ends with their count; refuses command 3:2.
    let mut server = Client::connect(&socket).unwrap();
    server.attach(echo, Kind::Master, "stream", WAIT).unwrap();
    let serving = std::thread::spawn(move || {
        let mut parts = Vec::new();
        for _ in 0..2 {
            loop {
                let request = server.accept(WAIT).unwrap().expect("the call's parts come");
                if request.command == other {
                    server.refuse(&request, ErrorCode::REFUSED).unwrap();
                    break;
                }
                assert_eq!(request.first, parts.is_empty());
                parts.push(request.payload.clone());
                if request.last {
                    for p in &parts {
                        let reversed: Vec<u8> = p.iter().rev().copied().collect();
                        server.stream(&request, part, &reversed).unwrap();
                    }
                    server.reply(&request, format!("{} parts", parts.len()).as_bytes()).unwrap();
                    break;
                }
            }
        }
        server
    });

    let mut caller = Client::connect(&socket).unwrap();
    caller.wait_for_route(echo, WAIT).unwrap();
    let call = caller.open(echo, part, b"abc", false).unwrap();
    caller.send(call, part, b"de", false).unwrap();
    caller.send(call, part, b"f", true).unwrap();
    let answer = caller.wait(call, WAIT).unwrap();
    let want: [&[u8]; 4] = [b"cba", b"ed", b"f", b"3 parts"];
    assert_eq!(answer, want.map(<[u8]>::to_vec));

    let refused = caller.open(echo, other, b"?", true).unwrap();
    match caller.wait(refused, WAIT) {
        Err(ClientError::Refused(code)) => assert_eq!(code, ErrorCode::REFUSED),
        other => panic!("a refused call: {other:?}"),
    }
    drop(serving.join().unwrap());
}
