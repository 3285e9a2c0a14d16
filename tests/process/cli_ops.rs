//! What an operator installing a node meets, through the real binary: `ringspan --version` with
//! its commit, `ringspan check` on good and bad configurations, the log a node writes when its
//! standard error is a file (plain text, or one JSON object per line), shell completions and
//! the man page.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ringspan::cipher::PrivateKey;
use ringspan::cipher::identity::read_key_file;

use crate::support::host::scratch;
use crate::support::node::key_file;
use crate::support::process::{BIN, Proc, exit_of, free_port, signal};
use crate::support::wait::wait_for;

/// Long enough for a node to start and log on a busy machine; only a failure waits this long.
const WAIT: Duration = Duration::from_secs(60);

fn ringspan(args: &[&str]) -> Output {
    Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap()
}

/// [`ringspan`] with `RUST_LOG` set to `filter`.
fn ringspan_logging(filter: &str, args: &[&str]) -> Output {
    Command::new(BIN).args(args).env("RUST_LOG", filter).stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn version_names_the_commit_built() {
    let out = ringspan(&["--version"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = stdout.trim_end();
    let commit = line
        .strip_prefix(&format!("ringspan {} (commit ", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `ringspan VERSION (commit C)`: {line:?}"));
    if commit == "unknown" {
        return;
    }
    let hash = commit.strip_suffix("-dirty").unwrap_or(commit);
    assert!(
        hash.len() >= 7 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "not a short hash: {commit:?}"
    );
    // Where git can say, it is the commit checked out (the binary was built for this run).
    let head = Command::new("git")
        .args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success());
    if let Some(head) = head {
        assert!(text(&head.stdout).starts_with(hash), "{hash} is not HEAD {}", text(&head.stdout));
    }
}

/// The key in `<dir>/<name>.key`, made if there is none.
fn key(dir: &Path, name: &str) -> PrivateKey {
    let path = dir.join(format!("{name}.key"));
    if path.exists() { read_key_file(&path).unwrap() } else { key_file(dir, name) }
}

/// `<dir>/a.toml`: node a (key `a.key`) listening on `listen`, allowing key c, then `extra` on
/// line 5 of `[node]`; peer b (a satellite) dialled at `peer`, and an echo mount.
fn config(dir: &Path, listen: u16, peer: u16, extra: &str) -> PathBuf {
    key(dir, "a");
    let b = key(dir, "b").public_key().unwrap().to_base64();
    let c = key(dir, "c").public_key().unwrap().to_base64();
    let path = dir.join("a.toml");
    let text = format!(
        "[node]\nkey = \"a.key\"\nlisten = [\"127.0.0.1:{listen}\"]\nallow = [\"{c}\"]\n{extra}\n\
         [[peer]]\nname = \"b\"\naddress = \"127.0.0.1:{peer}\"\nkey = \"{b}\"\nrole = \"satellite\"\n\
         [[mount]]\ncluster = \"0x1\"\nid = \"0x10\"\nkind = \"master\"\nservice = \"echo\"\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn check_summarizes_a_good_config_without_starting_the_node() {
    let dir = scratch("cli-check-good");
    // The node's listen address, held here: a check that bound it would fail.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let path = config(&dir, port, free_port(), "");
    let id = key(&dir, "a").public_key().unwrap().node_id().to_string();
    let out = ringspan(&["check", "--config", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary = text(&out.stdout);
    for expected in [
        format!("node     {id}"),
        "role     router".to_owned(),
        format!("listen   127.0.0.1:{port}"),
        "peers    1".to_owned(),
        "  b  127.0.0.1:".to_owned(),
        "satellite".to_owned(),
        "mounts   1".to_owned(),
        "0x1:0x10  master".to_owned(),
        "allow    1 key(s)".to_owned(),
        "attach   none".to_owned(),
    ] {
        assert!(summary.contains(&expected), "no {expected:?} in:\n{summary}");
    }
    assert!(!dir.join("a.sock").exists(), "check made the control socket");
    drop(held);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_and_run_refuse_a_bad_config_with_the_same_position() {
    let dir = scratch("cli-check-bad");
    let path = config(&dir, free_port(), free_port(), "workers = 0");
    let path_str = path.to_str().unwrap();
    let expected = format!("{path_str}:5:11: [node] workers must be between 1 and");
    let check = ringspan(&["check", "--config", path_str]);
    assert!(!check.status.success());
    assert!(text(&check.stderr).contains(&expected), "{}", text(&check.stderr));
    assert!(check.stdout.is_empty(), "{}", text(&check.stdout));
    // `run` says the same, and starts nothing.
    let run = ringspan(&["run", "--config", path_str]);
    assert!(!run.status.success());
    assert_eq!(text(&run.stderr), text(&check.stderr));

    // In JSON the error is a JSON object, written whatever RUST_LOG says.
    let out = ringspan_logging("off", &["check", "--config", path_str, "--log-format", "json"]);
    assert!(!out.status.success());
    let error = json_lines(&text(&out.stderr));
    assert_eq!(error.len(), 1, "{}", text(&out.stderr));
    assert_eq!(error[0]["level"], "ERROR");
    assert!(error[0]["message"].as_str().unwrap().contains(&expected), "{:?}", error[0]);

    // A bad value of the log format is refused at its place too, and the key file is read.
    let path = config(&dir, free_port(), free_port(), "log_format = \"xml\"");
    let out = ringspan(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let expected = format!("{}:5:14: [node] log_format must be", path.display());
    assert!(text(&out.stderr).contains(&expected), "{}", text(&out.stderr));
    let path = config(&dir, free_port(), free_port(), "");
    std::fs::remove_file(dir.join("a.key")).unwrap();
    let out = ringspan(&["check", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("{}", dir.join("a.key").display())),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Each line of `log` parsed as a JSON object; panics at one that is not.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}\nin:\n{log}"));
            assert!(value.is_object(), "not an object: {line:?}");
            value
        })
        .collect()
}

/// Runs the node of `config` with RUST_LOG=info and `args`, its standard error a file; waits
/// for its start-up line and a log event of the engine's (its dials to the peer, which is not
/// there, fail), stops it with SIGTERM, and returns the log once it has exited.
fn log_of_a_run(config: &Path, args: &[&str]) -> String {
    let log_path = config.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut node = Proc(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let read = || std::fs::read_to_string(&log_path).unwrap();
    wait_for("the node's start-up line and a dial failure", WAIT, || {
        let log = read();
        log.contains(" up on ") && log.contains("link failed before its handshake completed")
    });
    signal(&node.0, libc::SIGTERM);
    let status = exit_of(&mut node, "the node to stop", WAIT);
    assert!(status.success(), "{status:?}\n{}", read());
    read()
}

#[test]
fn a_log_to_a_file_is_plain_text_or_json_lines() {
    let dir = scratch("cli-log-formats");
    let path = config(&dir, free_port(), free_port(), "");

    let log = log_of_a_run(&path, &[]);
    assert!(!log.as_bytes().contains(&0x1b), "escape codes in a log to a file:\n{log:?}");
    assert!(log.contains(" INFO ") && log.contains("shutting down"), "{log}");

    // --log-format json, and `log_format = "json"` in the file: every line an object.
    let json = log_of_a_run(&path, &["--log-format", "json"]);
    let path = config(&dir, free_port(), free_port(), "log_format = \"json\"");
    let from_file = log_of_a_run(&path, &[]);
    for log in [&json, &from_file] {
        let lines = json_lines(log);
        for line in &lines {
            assert!(line["timestamp"].is_string() && line["level"].is_string(), "{line}");
        }
        let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
        assert!(messages.iter().any(|m| m.contains(" up on ")), "{log}");
        assert!(messages.contains(&"shutting down"), "{log}");
    }

    // The command line wins over the file.
    let text = log_of_a_run(&path, &["--log-format", "text"]);
    assert!(text.lines().all(|line| !line.starts_with('{')), "{text}");
    assert!(text.contains("ringspan: node "), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn completions_and_the_man_page_come_from_the_command_line() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = ringspan(&["completions", shell]);
        let script = text(&out.stdout);
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        // Every subcommand is completed, the newest too.
        for sub in ["run", "check", "drain", "req", "ping"] {
            assert!(script.contains(sub), "{shell} completes no `{sub}`");
        }
    }
    assert!(!ringspan(&["completions", "tcsh"]).status.success(), "an unknown shell is refused");
    let man = ringspan(&["man"]);
    let page = text(&man.stdout);
    assert!(man.status.success());
    assert!(page.contains(".TH ringspan 1") && page.contains(".SH NAME"), "{page}");
    assert!(page.contains("drain"), "the subcommands are listed: {page}");
}
