//! The operator's surfaces of real `ringspan run` processes: a second node started on a running
//! node's control socket exits and leaves the first reachable, a node removes its socket when
//! it stops and replaces a stale one after a crash; a label a peer chose reaches
//! `ringspan show` escaped in every output; the metrics endpoint answers `/healthz` and
//! `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::Duration;

use ringspan::daemon::control;

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::{BIN, Proc, exit_of, free_port, run_node, signal};
use crate::support::wait::wait_for;

/// How long any condition is waited for: generous, so that only a real failure fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether `child` catches SIGTERM yet (its handler is installed once the node is up, a little
/// after its control socket answers): `SigCgt` in `/proc/PID/status`.
fn catches_sigterm(child: &Child) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", child.id())) else {
        return false;
    };
    let caught = status.lines().find_map(|line| line.strip_prefix("SigCgt:"));
    let mask = caught.and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok());
    mask.is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
}

/// Stops a node with SIGTERM, as an operator would; it must exit cleanly.
fn stop(mut proc: Proc, name: &str) {
    wait_for(&format!("{name} to catch SIGTERM"), PATIENCE, || catches_sigterm(&proc.0));
    signal(&proc.0, libc::SIGTERM);
    let status = exit_of(&mut proc, &format!("{name} to stop"), PATIENCE);
    assert!(status.success(), "{name} exits 0 after SIGTERM: {status:?}");
}

#[test]
fn one_node_per_control_socket() {
    let dir = scratch("ctlp-one");
    let a = Node::new(&dir, "a");
    let socket = dir.join("a.sock");
    // A second copy of a's config that differs only in its listen port, so that nothing but
    // the control socket stands in its way.
    let config = |port: u16| {
        format!("[node]\nkey = \"a.key\"\nlisten = [\"127.0.0.1:{port}\"]\ncontrol = \"a.sock\"\n")
    };
    std::fs::write(&a.config, config(a.port)).unwrap();
    let copy = dir.join("copy.toml");
    std::fs::write(&copy, config(free_port())).unwrap();

    let id = a.public().node_id().to_string();
    let first = a.run();
    // Its first snapshot published (the socket answers an empty one before).
    wait_for("a to answer on its control socket", PATIENCE, || {
        a.try_snapshot().is_some_and(|s| s.node == id)
    });
    let mut second = run_node(&copy);
    let status = exit_of(&mut second, "the second node to give up", PATIENCE);
    assert!(!status.success(), "the second node refuses to run: {status:?}");
    let log = std::fs::read_to_string(copy.with_extension("log")).unwrap();
    assert!(
        log.contains(&format!("another node is running with control socket {}", socket.display())),
        "{log}"
    );
    // The first still answers `ringspan show`, on its own socket.
    assert_eq!(a.snapshot().node, id);
    stop(first, "a");
    assert!(!socket.exists(), "a node removes its control socket when it stops");

    // A node that crashed leaves a stale socket, which the next one replaces.
    let mut crashed = a.run();
    wait_for("a to answer again", PATIENCE, || a.try_snapshot().is_some());
    crashed.0.kill().unwrap();
    exit_of(&mut crashed, "a to die", PATIENCE);
    assert!(socket.exists() && a.try_snapshot().is_none(), "a stale socket is left behind");
    let copy_node = run_node(&copy);
    wait_for("the copy to answer on the socket", PATIENCE, || a.try_snapshot().is_some());
    stop(copy_node, "the copy");
    assert!(!socket.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends a GET and reads the answer to its end: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

fn show(config: &Path, args: &[&str]) -> Output {
    let output = Command::new(BIN).arg("show").args(args).arg("--config").arg(config).output();
    let output = output.unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    output
}

#[test]
fn a_peers_label_reaches_show_escaped_and_metrics_answer() {
    let dir = scratch("ctlp-label");
    let [a, b] = ["a", "b"].map(|n| Node::new(&dir, n));
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    // a advertises a mount whose label would clear the screen, retitle the terminal, ring the
    // bell and (as a C1 CSI) colour what follows, were it printed raw.
    let mount = "\n[[mount]]\ncluster = \"0x1\"\nid = \"0x10\"\nkind = \"master\"\n\
                 label = \"\\u001b[2J\\u001b]0;pwned\\u0007\\u009b31m\"\n";
    config::write(&a, "", "", &(config::peer(&b, false) + mount));
    config::write(&b, &format!("metrics = \"{metrics}\"\n"), "", &config::peer(&a, true));
    let _a = a.run();
    let _b = b.run();
    wait_for("b to learn a's mount", PATIENCE, || {
        b.try_snapshot().is_some_and(|s| s.routes.iter().any(|r| r.mount == "10"))
    });
    let shown = r"\x1b[2J\x1b]0;pwned\x07\u{9b}31m";
    let raw = |c: char| c != '\n' && c.is_control();

    let routes = String::from_utf8(show(&b.config, &["routes"]).stdout).unwrap();
    assert!(!routes.chars().any(raw), "{routes:?}");
    assert_eq!(routes.lines().filter(|l| l.contains(shown)).count(), 1, "{routes}");
    let dot = String::from_utf8(show(&b.config, &["--dot"]).stdout).unwrap();
    assert!(!dot.chars().any(raw), "{dot:?}");
    assert!(dot.contains(r"\n\\x1b[2J\\x1b]0;pwned\\x07\\u{9b}31m"), "{dot}");
    let json = String::from_utf8(show(&b.config, &["--json"]).stdout).unwrap();
    assert!(json.is_ascii(), "{json:?}");
    assert!(json.contains(r#""label":"\u001b[2J\u001b]0;pwned\u0007\u009b31m""#), "{json}");
    let fetched = control::fetch(&b.config.with_extension("sock")).unwrap();
    assert_eq!(fetched.trim_end(), json.trim_end());
    // The configuration's name for the peer, beside its id, in show and the metrics.
    let links = String::from_utf8(show(&b.config, &["links"]).stdout).unwrap();
    let a_id = a.public().node_id().to_string();
    assert!(links.lines().any(|l| l.contains(&format!("{a_id}  a "))), "{links}");
    assert!(links.contains(&format!("  a  {a_id}  up (link ")), "the peer row: {links}");

    let mut health = None;
    wait_for("b's metrics endpoint", PATIENCE, || {
        health = get(metrics, "/healthz");
        health.is_some()
    });
    assert_eq!(health.unwrap(), ("HTTP/1.0 200 OK".into(), "ok\n".into()));
    let (status, body) = get(metrics, "/metrics").unwrap();
    assert_eq!(status, "HTTP/1.0 200 OK");
    let node = b.public().node_id().to_string();
    assert!(body.contains(&format!("ringspan_routes{{node=\"{node}\"}} 1\n")), "{body}");
    let up =
        format!("ringspan_peer_up{{node=\"{node}\",peer=\"{}\",name=\"a\",", a.public().node_id());
    assert!(body.lines().any(|l| l.starts_with(&up) && l.ends_with("} 1")), "{body}");
    // The process series beside the node's, the node's own resident memory among them.
    let rss = body.lines().find_map(|l| l.strip_prefix("process_resident_memory_bytes "));
    assert!(rss.and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0), "{body}");
    assert!(body.contains("# TYPE process_cpu_seconds_total counter\n"), "{body}");
    assert_eq!(get(metrics, "/").unwrap().0, "HTTP/1.0 404 Not Found");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_name_a_node_announces_is_shown_marked_where_the_configuration_gives_none() {
    let dir = scratch("ctlp-announced");
    let [a, b] = ["a", "b"].map(|n| Node::new(&dir, n));
    config::write(&a, "name = \"alpha\"\n", "", &config::peer(&b, false));
    // b lists a's key with no name.
    let unnamed =
        format!("\n[[peer]]\nkey = \"{}\"\naddress = \"{}\"\n", a.public().to_base64(), a.addr());
    let c_id = ringspan::cipher::Identity::generate().unwrap();
    let c_allow = config::allow(&[(c_id.public_key(), "client")]);
    let key = ringspan::span::MountKey {
        cluster: ringspan::ids::ClusterId(1),
        mount: ringspan::ids::MountId(0x10),
    };
    config::write(&b, &c_allow, "", &(unnamed + &config::echo_mount(key, "master", "")));
    let _a = a.run();
    let _b = b.run();
    // A client announcing a name: not kept (a satellite may hold very many).
    let mut settings = ringspan::daemon::Settings::new(c_id);
    settings.role = ringspan::span::Role::Client;
    settings.peers = vec![b.peer()];
    settings.name = Some("client-c".into());
    let c = ringspan::daemon::Handle::start(settings).unwrap();
    let a_id = a.public().node_id().to_string();
    wait_for("b to hear a's name", PATIENCE, || {
        b.try_snapshot().is_some_and(|s| {
            s.links.iter().any(|l| l.peer == a_id && l.announced.as_deref() == Some("alpha"))
        })
    });
    let links = String::from_utf8(show(&b.config, &["links"]).stdout).unwrap();
    assert!(links.lines().any(|l| l.contains(&format!("{a_id}  ~alpha "))), "{links}");
    // b advertises to c once it has c's hello (which says what c wants).
    assert!(c.wait_for_route(key, PATIENCE), "c hears b's mount");
    let log = std::fs::read_to_string(b.config.with_extension("log")).unwrap();
    assert!(log.contains("announces its name: \"alpha\""), "{log}");
    assert!(!log.contains("client-c"), "a client's name is not kept: {log}");
    c.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
