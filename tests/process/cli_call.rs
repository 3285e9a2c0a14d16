//! `ringspan call` and `ringspan req` as an operator runs them, against a real `ringspan run`
//! node. `call` exits 0 only when every call was answered, and 1 otherwise with a line per error
//! class on standard error (its counts still on standard output); a payload no message can carry
//! is refused before anything starts, and named as such. `req` writes the reply to one request
//! to standard output, and exits 1 with the error code when the call fails; `ping` times
//! requests one at a time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ringspan::ids::{ClusterId, MountId};
use ringspan::limits::MESSAGE_PAYLOAD_MAX;
use ringspan::span::MountKey;

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::{Node, key_file};
use crate::support::process::{BIN, Proc};
use crate::support::wait::wait_for;

const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };

fn call(config: &Path, mount: &str, size: usize) -> Output {
    Command::new(BIN)
        .args(["call", "--config"])
        .arg(config)
        .args(["--mount", mount, "--calls", "200", "--concurrency", "8", "--wait", "2"])
        .args(["--size", &size.to_string()])
        .output()
        .unwrap()
}

/// Node `a` running in `dir`, serving the echo master at 0x1:0x10 and, for an application that
/// is not attached, mount 0x1:0x11 (whose calls it refuses); and the path of a client's
/// configuration that links to it.
fn node_and_client(dir: &Path) -> (Node, Proc, PathBuf) {
    let a = Node::new(dir, "a");
    let client_key = key_file(dir, "client");
    let allow = config::allow(&[(client_key.public_key().unwrap(), "client")]);
    let unserved = "\n[[mount]]\ncluster = \"0x1\"\nid = \"0x11\"\nkind = \"master\"\n";
    config::write(&a, &allow, "", &(config::echo_mount(MASTER, "master", "") + unserved));
    let client = dir.join("client.toml");
    let text =
        format!("[node]\nkey = \"client.key\"\nrole = \"client\"\n{}", config::peer(&a, true));
    std::fs::write(&client, text).unwrap();
    let proc = a.run();
    wait_for("a to serve the master", std::time::Duration::from_secs(20), || {
        a.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    (a, proc, client)
}

#[test]
fn call_exits_non_zero_and_says_why_when_calls_fail() {
    let dir = scratch("cli-call");
    let (_a, _proc, client) = node_and_client(&dir);

    // Every call answered: exit 0.
    let ok = call(&client, "0x1:0x10", 100);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let counts: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(counts["completed"], 200, "{counts}");

    // A payload no message can carry: refused before any node starts, as such (not as no route).
    let big = call(&client, "0x1:0x10", MESSAGE_PAYLOAD_MAX + 1);
    let stderr = String::from_utf8_lossy(&big.stderr);
    assert_eq!(big.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("at most 65504 bytes"), "{stderr}");
    assert!(big.stdout.is_empty());

    // A mount nobody serves: exit 1, and why.
    let none = call(&client, "0x1:0x77", 100);
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no route to 0x1:0x77"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn req(config: &Path, mount: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .args(["req", "--config"])
        .arg(config)
        .args(["--mount", mount, "--wait", "2"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn req_prints_the_reply_and_fails_with_the_calls_error() {
    let dir = scratch("cli-req");
    let (_a, _proc, client) = node_and_client(&dir);

    let echo = req(&client, "0x1:0x10", &["--payload", "hello, master"]);
    assert!(echo.status.success(), "{}", String::from_utf8_lossy(&echo.stderr));
    assert_eq!(echo.stdout, b"hello, master");

    let from_file = dir.join("request.bin");
    std::fs::write(&from_file, [0u8, 1, 2, 255]).unwrap();
    let raw = req(&client, "0x1:0x10", &["--payload-file", from_file.to_str().unwrap()]);
    assert!(raw.status.success(), "{}", String::from_utf8_lossy(&raw.stderr));
    assert_eq!(raw.stdout, [0u8, 1, 2, 255]);

    let bad = req(&client, "0x1:0x10", &["--command", "1:99999"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CODE (0–65535)"), "{stderr}");

    let refused = req(&client, "0x1:0x11", &["--payload", "x"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("ended with refused (code 3)"), "{stderr}");
    assert!(refused.stdout.is_empty());

    // `ping`: each request timed, a summary, exit 0; exit 1 when a request is refused.
    let ping = |mount: &str| {
        Command::new(BIN)
            .args(["ping", "--config"])
            .arg(&client)
            .args(["--mount", mount, "--count", "3", "--interval-ms", "0", "--wait", "2"])
            .output()
            .unwrap()
    };
    let pinged = ping("0x1:0x10");
    let stdout = String::from_utf8_lossy(&pinged.stdout);
    assert!(pinged.status.success(), "{stdout} {}", String::from_utf8_lossy(&pinged.stderr));
    assert_eq!(stdout.matches(" time=").count(), 3, "{stdout}");
    assert!(stdout.contains("3 requests, 3 answered; round trip min/median/mean/max"), "{stdout}");
    let refused = ping("0x1:0x11");
    let stdout = String::from_utf8_lossy(&refused.stdout);
    assert_eq!(refused.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("refused (code 3)").count(), 3, "{stdout}");

    let none = req(&client, "0x1:0x77", &["--payload", "x"]);
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no route to 0x1:0x77"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
