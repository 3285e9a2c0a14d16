//! The operator's surfaces in one process: the control socket's claim on its path (one node per
//! socket, a stale socket replaced, nothing else touched, only its own file removed), the
//! metrics endpoint under idle, slow, oversized, malformed and too many connections, and
//! hostile peer-chosen strings through every view.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ringspan::daemon::control::{
    self, METRICS_CONNECTIONS_MAX, METRICS_REQUEST_MAX_BYTES, MetricsLimits, View, cluster_dot,
    dot, printable, prometheus, render, serve_control, serve_metrics_with,
};
use ringspan::daemon::{Closes, Counters, LinkRow, PeerRow, RouteRow, Shared, Snapshot};

use crate::support::host::scratch;
use crate::support::wait;

/// How long any condition is waited for: generous, so that only a real failure fails.
const PATIENCE: Duration = Duration::from_secs(60);

/// Polls `ok` every 20 ms until it holds; panics naming `what` after [`PATIENCE`].
fn wait_until(what: &str, ok: impl FnMut() -> bool) {
    wait::wait_until(what, PATIENCE, Duration::from_millis(20), ok);
}

fn shared() -> Arc<Shared> {
    Arc::new(Shared::default())
}

fn answers(path: &Path) -> bool {
    // A node not yet running answers that it is starting; a running one, its snapshot.
    control::fetch(path).is_ok_and(|text| {
        serde_json::from_str::<Snapshot>(&text).is_ok() || text.contains("the node is starting")
    })
}

#[test]
fn a_live_control_socket_is_refused_and_left_in_place() {
    let dir = scratch("ctl-live");
    let path = dir.join("n.sock");
    let first = serve_control(&path, shared()).unwrap();
    let refused = serve_control(&path, shared()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AddrInUse);
    assert_eq!(
        refused.to_string(),
        format!("another node is running with control socket {}", path.display())
    );
    assert!(answers(&path), "the first node still answers");
    drop(first);
    assert!(!path.exists(), "a node removes its own socket");

    // Something else listening there is just as live.
    let other = UnixListener::bind(&path).unwrap();
    let refused = serve_control(&path, shared()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AddrInUse);
    assert!(path.exists());
    let _client = UnixStream::connect(&path).unwrap();
    other.accept().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_live_socket_with_a_full_backlog_is_refused_without_waiting() {
    use socket2::{Domain, SockAddr, Socket, Type};
    let dir = scratch("ctl-backlog");
    let path = dir.join("n.sock");
    let listener = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
    listener.bind(&SockAddr::unix(&path).unwrap()).unwrap();
    listener.listen(0).unwrap();
    // Connect until the backlog is full: a connect that would block.
    let mut held = Vec::new();
    loop {
        let client = Socket::new(Domain::UNIX, Type::STREAM, None).unwrap();
        client.set_nonblocking(true).unwrap();
        match client.connect(&SockAddr::unix(&path).unwrap()) {
            Ok(()) => held.push(client),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("connect: {e}"),
        }
        assert!(held.len() < 10_000, "the backlog never fills");
    }
    let refused = serve_control(&path, shared()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AddrInUse);
    assert!(path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stale_control_socket_is_replaced() {
    let dir = scratch("ctl-stale");
    let path = dir.join("n.sock");
    // A socket whose process is gone: the file stays, connections are refused.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    assert_eq!(UnixStream::connect(&path).unwrap_err().kind(), ErrorKind::ConnectionRefused);
    let socket = serve_control(&path, shared()).unwrap();
    assert!(answers(&path));
    assert!(socket.close());
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn what_is_not_a_socket_is_refused_and_left_alone() {
    let dir = scratch("ctl-notsocket");
    let file = dir.join("file.sock");
    std::fs::write(&file, "precious").unwrap();
    let refused = serve_control(&file, shared()).unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::AlreadyExists);
    assert!(refused.to_string().contains("is not a socket"), "{refused}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");

    let subdir = dir.join("dir.sock");
    std::fs::create_dir(&subdir).unwrap();
    assert_eq!(serve_control(&subdir, shared()).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert!(subdir.is_dir());

    // A symbolic link is not followed, even to a stale socket.
    let stale = dir.join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let link = dir.join("link.sock");
    std::os::unix::fs::symlink(&stale, &link).unwrap();
    assert_eq!(serve_control(&link, shared()).unwrap_err().kind(), ErrorKind::AlreadyExists);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(stale.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_control_socket_removes_only_its_own_file() {
    let dir = scratch("ctl-own");
    let path = dir.join("n.sock");
    let a = serve_control(&path, shared()).unwrap();
    // Someone removes a's file and another node takes the path (perhaps on the same inode).
    std::fs::remove_file(&path).unwrap();
    let b = serve_control(&path, shared()).unwrap();
    assert!(!a.close(), "a does not remove b's socket");
    assert!(answers(&path), "b still answers");
    // Nor does dropping it.
    let c_path = dir.join("c.sock");
    let c = serve_control(&c_path, shared()).unwrap();
    std::fs::remove_file(&c_path).unwrap();
    drop(UnixListener::bind(&c_path).unwrap());
    drop(c);
    assert!(c_path.exists());
    assert_eq!(b.path(), path);
    drop(b);
    assert!(!path.exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_closed_control_socket_stops_its_thread() {
    let dir = scratch("ctl-thread");
    let shared = shared();
    let socket = serve_control(&dir.join("n.sock"), shared.clone()).unwrap();
    assert_eq!(Arc::strong_count(&shared), 2, "the control thread holds the snapshot");
    assert!(socket.close());
    wait_until("the control thread to end", || Arc::strong_count(&shared) == 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Metrics limits whose timeout never expires within a test: nothing depends on speed.
fn patient() -> MetricsLimits {
    MetricsLimits { timeout: Duration::from_secs(600), ..MetricsLimits::default() }
}

fn metrics(limits: MetricsLimits) -> SocketAddr {
    serve_metrics_with(SocketAddr::from(([127, 0, 0, 1], 0)), shared(), limits).unwrap()
}

/// An HTTP answer: the status line, the headers, the body.
struct Answer {
    status: String,
    headers: String,
    body: String,
}

/// Reads an answer to its end (the server closes), checking its Content-Length.
fn read_answer(mut stream: TcpStream) -> Answer {
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{text:?}"));
    let (status, headers) = head.split_once("\r\n").unwrap();
    assert!(headers.contains(&format!("Content-Length: {}\r\n", body.len())), "{text:?}");
    assert!(headers.contains("Connection: close"), "{text:?}");
    Answer { status: status.into(), headers: headers.into(), body: body.into() }
}

fn exchange(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request).unwrap();
    read_answer(stream)
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: */*\r\n\r\n");
    exchange(addr, request.as_bytes())
}

#[test]
fn metrics_health_and_unknown_paths() {
    let addr = metrics(patient());
    let health = get(addr, "/healthz");
    assert_eq!((health.status.as_str(), health.body.as_str()), ("HTTP/1.0 200 OK", "ok\n"));
    let scrape = get(addr, "/metrics");
    assert_eq!(scrape.status, "HTTP/1.0 200 OK");
    assert!(scrape.headers.contains("Content-Type: text/plain; version=0.0.4"));
    assert!(scrape.body.contains("# TYPE ringspan_circuits gauge\nringspan_circuits{node=\"\"} 0"));
    assert_eq!(get(addr, "/metrics?debug=1").status, "HTTP/1.0 200 OK");
    assert_eq!(exchange(addr, b"GET /healthz HTTP/1.0\n\n").status, "HTTP/1.0 200 OK");
    assert_eq!(get(addr, "/").status, "HTTP/1.0 404 Not Found");
    assert_eq!(get(addr, "/metricsx").status, "HTTP/1.0 404 Not Found");
    let post = exchange(addr, b"POST /metrics HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
    assert_eq!(post.status, "HTTP/1.0 405 Method Not Allowed");
    assert!(post.headers.contains("Allow: GET"));
}

#[test]
fn malformed_and_oversized_requests_are_refused() {
    let addr = metrics(patient());
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /metrics\r\n\r\n",
        b"GET /metrics HTTP/3\r\n\r\n",
        b"GET /met\x1brics HTTP/1.1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\n\xff\xfe\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    ] {
        assert_eq!(exchange(addr, bad).status, "HTTP/1.0 400 Bad Request", "{bad:?}");
    }
    // A request cut short by its client.
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_answer(stream).status, "HTTP/1.0 400 Bad Request");
    // Headers that never end within the bound.
    let mut huge = b"GET /metrics HTTP/1.1\r\nX-Pad: ".to_vec();
    huge.resize(METRICS_REQUEST_MAX_BYTES + 4096, b'a');
    assert_eq!(exchange(addr, &huge).status, "HTTP/1.0 431 Request Header Fields Too Large");
    // The endpoint still serves.
    assert_eq!(get(addr, "/healthz").body, "ok\n");
}

#[test]
fn a_request_not_sent_in_time_is_answered_408() {
    let addr = metrics(MetricsLimits { timeout: Duration::from_millis(100), ..patient() });
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metr").unwrap();
    assert_eq!(read_answer(slow).status, "HTTP/1.0 408 Request Timeout");
    let silent = TcpStream::connect(addr).unwrap();
    assert_eq!(read_answer(silent).status, "HTTP/1.0 408 Request Timeout");
}

/// Whether the server has neither answered nor closed `stream`.
fn still_waiting(stream: &mut TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn idle_connections_do_not_delay_a_scrape() {
    let addr = metrics(patient());
    let mut idle: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: a\r\n").unwrap();
    idle.push(slow);
    let scrape = get(addr, "/metrics");
    assert_eq!(scrape.status, "HTTP/1.0 200 OK");
    assert!(scrape.body.contains("ringspan_circuits"));
    // The scrape did not wait for any of them: each is still open, unanswered.
    for (i, stream) in idle.iter_mut().enumerate() {
        assert!(still_waiting(stream), "idle connection {i} was answered or closed first");
    }
}

#[test]
fn connections_past_the_bound_are_answered_503_at_once() {
    let addr = metrics(patient());
    // Accepted in order: these take every slot before the next is accepted.
    let mut idle: Vec<TcpStream> =
        (0..METRICS_CONNECTIONS_MAX).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let refused = read_answer(TcpStream::connect(addr).unwrap());
    assert_eq!(refused.status, "HTTP/1.0 503 Service Unavailable");
    assert!(idle.iter_mut().all(still_waiting));
    // A slot freed is taken again.
    drop(idle.pop());
    wait_until("a freed slot to serve a scrape", || get(addr, "/healthz").body == "ok\n");
    assert!(idle.iter_mut().all(still_waiting));
}

/// `s` with two workers: its link on worker 1, and what each carried.
fn on_two_workers(mut s: Snapshot) -> Snapshot {
    s.links[0].worker = 1;
    // The rows' type is not named outside the crate: each is made from its default.
    s.workers.resize_with(2, Default::default);
    for (i, w) in s.workers.iter_mut().enumerate() {
        let i = i as u64;
        w.worker = i as usize;
        w.links = i as usize;
        w.circuits = 1 - i as usize;
        w.messages_in = 10 + i;
        w.bytes_in = 100 * i;
        w.bytes_out = 200 * i;
        w.established = i;
        w.internal_bytes_out = 40 + i;
        w.internal_bytes_in = 41 - i;
    }
    s
}

#[test]
fn workers_reach_the_control_socket_and_the_metrics_endpoint() {
    let mut s = on_two_workers(hostile());
    s.node = "aaaa0000".into();
    s.links[0].peer = "bbbb1111".into();
    let shared = Arc::new(Shared::fixed(s));
    // What `ringspan show --json` prints.
    let dir = scratch("ctl-workers");
    let _socket = serve_control(&dir.join("n.sock"), shared.clone()).unwrap();
    let json = control::fetch(&dir.join("n.sock")).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back.links[0].worker, 1, "{json}");
    let loads: Vec<_> = back.workers.iter().map(|w| (w.worker, w.links, w.bytes_in)).collect();
    assert_eq!(loads, [(0, 0, 0), (1, 1, 100)], "{json}");
    // What `ringspan show` prints of it.
    let shown = render(&back, View::Links);
    assert!(shown.contains("\nWORKERS\nworker  links  clients  circuits"), "{shown}");
    assert!(shown.lines().any(|l| l.starts_with("0:3.0       1  bbbb1111")), "{shown}");
    // What a scrape gets.
    let addr = serve_metrics_with(SocketAddr::from(([127, 0, 0, 1], 0)), shared, patient());
    let scrape = get(addr.unwrap(), "/metrics");
    assert_eq!(scrape.status, "HTTP/1.0 200 OK");
    let lines: Vec<&str> = scrape.body.lines().collect();
    for line in [
        "# TYPE ringspan_worker_links gauge",
        r#"ringspan_worker_links{node="aaaa0000",worker="1"} 1"#,
        r#"ringspan_worker_circuits{node="aaaa0000",worker="0"} 1"#,
        r#"ringspan_worker_messages_in_total{node="aaaa0000",worker="1"} 11"#,
        r#"ringspan_worker_bytes_out_total{node="aaaa0000",worker="1"} 200"#,
        r#"ringspan_worker_internal_bytes_in_total{node="aaaa0000",worker="0"} 41"#,
        r#"ringspan_worker_internal_bytes_out_total{node="aaaa0000",worker="0"} 40"#,
        r#"ringspan_link_bytes_in_total{node="aaaa0000",link="0:3.0",peer="bbbb1111",worker="1"} 100"#,
    ] {
        assert!(lines.contains(&line), "{line} missing from\n{}", scrape.body);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A snapshot whose every string is hostile, with the labels of the issue.
fn hostile() -> Snapshot {
    let route = |mount: &str, label: &str| RouteRow {
        cluster: "1".into(),
        mount: mount.into(),
        kind: "master".into(),
        label: label.into(),
        origin: "\u{1b}[5morigin".into(),
        metric: 2,
        origin_name: Some("o\u{1b}[1m\"rigin".into()),
        via: "link 3 (bbbb\u{1b}[31m1111)".into(),
        via_node: Some("bbbb\u{1b}[31m1111".into()),
        standby: Some("link 4 (dd\u{9b}2J\"2222)".into()),
        standby_node: Some("dd\u{9b}2J\"2222".into()),
        standby_metric: Some(2),
        held_by: None,
    };
    Snapshot {
        node: "aa\"bb\\cc\ndd\u{1b}c".into(),
        links: vec![LinkRow {
            name: Some("b\u{1b}]0;x\u{7}".into()),
            announced: Some("b\u{1b}[2J".into()),
            link: 3,
            worker: 0,
            peer: "bbbb\u{1b}[31m1111".into(),
            role: "router\u{7}".into(),
            spans_in: 1,
            spans_out: 2,
            bytes_in: 100,
            bytes_out: 200,
            records_in: 4,
            records_out: 5,
            circuits_in: 6,
            circuits_out: 7,
            aborts_in: 8,
            aborts_out: 9,
            granted: "router".into(),
            circuits_open: 0,
            refusals: Default::default(),
            attached: None,
        }],
        routes: vec![
            route("10", "\u{1b}[2J\u{1b}]0;pwned\u{7}"),
            route("11", "a\"b\\c\nd"),
            route("12", "\u{9b}31m"),
            route("13", "\u{202e}evil\u{200b}\u{fffd}\u{7f}\r\t"),
        ],
        peers: vec![PeerRow {
            address: "127.0.0.1:1\u{1b}[A".into(),
            peer: "bbbb\u{85}1111".into(),
            state: "up\u{2028}(link 3)".into(),
            ..Default::default()
        }],
        circuits: 1,
        counters: Counters::default(),
        handshake_failures: 0,
        clients: 0,
        accepted: 0,
        refused_max_links: 0,
        refused_handshake_rate: 0,
        closes: Closes::default(),
        ..Default::default()
    }
}

/// A character a terminal would obey or not show as itself (line feeds aside: the views' own).
fn raw(c: char) -> bool {
    c != '\n' && (c.is_control() || matches!(c, '\u{202e}' | '\u{200b}' | '\u{2028}' | '\u{fffd}'))
}

#[test]
fn printable_shows_every_hidden_character_as_an_escape() {
    assert!(matches!(printable("e/master ü 名"), std::borrow::Cow::Borrowed("e/master ü 名")));
    let cases = [
        ("\u{1b}[2J\u{1b}]0;pwned\u{7}", r"\x1b[2J\x1b]0;pwned\x07"),
        ("a\"b\\c\nd", r#"a"b\\c\nd"#),
        ("\u{9b}31m", r"\u{9b}31m"),
        ("\0\u{7f}\t\r", r"\x00\x7f\t\r"),
        ("\u{202e}txt.exe\u{200b}\u{feff}\u{2028}", r"\u{202e}txt.exe\u{200b}\u{feff}\u{2028}"),
        ("\u{fffd}\u{e0041}", r"\u{fffd}\u{e0041}"),
        (r"\x1b", r"\\x1b"),
    ];
    for (text, shown) in cases {
        assert_eq!(printable(text), shown, "{text:?}");
    }
}

#[test]
fn hostile_strings_are_escaped_in_every_text_view() {
    let s = hostile();
    for view in [View::Links, View::Routes, View::Circuits, View::Mounts, View::All, View::Cluster]
    {
        let text = render(&on_two_workers(s.clone()), view);
        assert!(!text.chars().any(raw), "{view:?}: {text:?}");
        assert!(text.starts_with("node aa\"bb\\\\cc\\ndd\\x1bc\n"), "{view:?}: {text:?}");
    }
    let routes = render(&s, View::Routes);
    for shown in [r"\x1b[2J\x1b]0;pwned\x07", r#"a"b\\c\nd"#, r"\u{9b}31m"] {
        // Each on one line: no label breaks the table.
        assert_eq!(routes.lines().filter(|l| l.contains(shown)).count(), 1, "{shown}: {routes}");
    }
    assert!(routes.contains(r"\u{202e}evil\u{200b}\u{fffd}\x7f\r\t"));
    assert!(routes.contains(r#"link 4 (dd\u{9b}2J"2222)"#));
    let links = render(&s, View::Links);
    assert!(links.contains(r"bbbb\x1b[31m1111") && links.contains(r"router\x07"));
    assert!(links.contains(r"127.0.0.1:1\x1b[A") && links.contains(r"bbbb\u{85}1111"));
    assert!(links.contains(r"up\u{2028}(link 3)"));
    let cluster = render(&s, View::Cluster);
    assert!(cluster.contains(r#"\x1b[5morigin (o\x1b[1m"rigin)"#), "{cluster}");
    assert!(cluster.contains(r#"dd\u{9b}2J"2222 (2 hops)"#), "{cluster}");
}

/// Whether every line's Graphviz strings are closed by its end: no quote left unescaped.
fn quotes_balanced(line: &str) -> bool {
    let (mut inside, mut chars) = (false, line.chars());
    while let Some(c) = chars.next() {
        match c {
            '\\' if inside => {
                chars.next();
            }
            '"' => inside = !inside,
            _ => {}
        }
    }
    !inside
}

#[test]
fn hostile_strings_are_escaped_in_dot() {
    let text = dot(&hostile());
    assert!(!text.chars().any(raw), "{text}");
    for line in text.lines() {
        assert!(quotes_balanced(line), "{line}");
    }
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        r#"  "aa\"bb\\\\cc" [shape=box, style=bold];"#,
        r#"  "0x1:0x10 (master)" [shape=ellipse, label="0x1:0x10 (master)\n\\x1b[2J\\x1b]0;pwned\\x07"];"#,
        r#"  "0x1:0x11 (master)" [shape=ellipse, label="0x1:0x11 (master)\na\"b\\\\c\\nd"];"#,
        r#"  "0x1:0x12 (master)" [shape=ellipse, label="0x1:0x12 (master)\n\\u{9b}31m"];"#,
        r#"  "bbbb\\x1b[31" -> "0x1:0x10 (master)" [label="active, 2 hops"];"#,
        r#"  "dd\\u{9b}2J\"22" -> "0x1:0x11 (master)" [style=dashed, label="standby"];"#,
    ] {
        assert!(lines.contains(&expected), "{expected}\nnot in\n{text}");
    }
}

#[test]
fn hostile_strings_are_escaped_in_the_clusters_dot() {
    let text = cluster_dot(&hostile());
    assert!(!text.chars().any(raw), "{text}");
    for line in text.lines() {
        assert!(quotes_balanced(line), "{line}");
    }
    let lines: Vec<&str> = text.lines().collect();
    for expected in [
        r#"  "\\x1b[5morigin" [label="\\x1b[5morig\no\\x1b[1m\"rigin"];"#,
        r#"  "bbbb\\x1b[31m1111" [label="bbbb\\x1b[31\nb\\x1b]0;x\\x07"];"#,
        r#"  "aa\"bb\\\\cc\\ndd\\x1bc" -> "dd\\u{9b}2J\"2222" [style=dashed, label="0x1:0x10 standby, 2 hops"];"#,
    ] {
        assert!(lines.contains(&expected), "{expected}\nnot in\n{text}");
    }
}

#[test]
fn hostile_strings_are_escaped_in_prometheus_labels() {
    let text = prometheus(&on_two_workers(hostile()));
    assert!(!text.chars().any(raw), "{text}");
    for line in text.lines() {
        assert!(line.starts_with("# ") || line.starts_with("ringspan_"), "{line:?}");
    }
    // The value is the printable form (`aa"bb\\cc\ndd\x1bc`) in the format's escaping.
    let node = r#"node="aa\"bb\\\\cc\\ndd\\x1bc""#;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&format!("ringspan_circuits{{{node}}} 1").as_str()), "{text}");
    let link = format!(
        r#"ringspan_link_bytes_in_total{{{node},link="0:3.0",peer="bbbb\\x1b[31m1111",worker="1"}} 100"#
    );
    assert!(lines.contains(&link.as_str()), "{text}");
    let worker = format!(r#"ringspan_worker_links{{{node},worker="1"}} 1"#);
    assert!(lines.contains(&worker.as_str()), "{text}");
}
