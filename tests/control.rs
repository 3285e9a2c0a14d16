//! Hostile peer-chosen strings through every view of a node's snapshot: the text tables of
//! `ringspan show`, Graphviz and the Prometheus text.

use ringspan::daemon::control::{View, dot, printable, prometheus, render};
use ringspan::daemon::{Closes, Counters, LinkRow, PeerRow, RouteRow, Snapshot};

/// A snapshot whose every string is hostile, with the labels of the issue.
fn hostile() -> Snapshot {
    let route = |mount: &str, label: &str| RouteRow {
        cluster: "1".into(),
        mount: mount.into(),
        kind: "master".into(),
        label: label.into(),
        origin: "\u{1b}[5morigin".into(),
        metric: 2,
        via: "link 3 (bbbb\u{1b}[31m1111)".into(),
        standby: Some("link 4 (dd\u{9b}2J\"2222)".into()),
    };
    Snapshot {
        node: "aa\"bb\\cc\ndd\u{1b}c".into(),
        links: vec![LinkRow {
            link: 3,
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
        }],
        circuits: 1,
        counters: Counters::default(),
        handshake_failures: 0,
        clients: 0,
        accepted: 0,
        refused_max_links: 0,
        refused_handshake_rate: 0,
        closes: Closes::default(),
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
    for view in [View::Links, View::Routes, View::Circuits, View::Mounts, View::All] {
        let text = render(&s, view);
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
        r#"  "1:10 (master)" [shape=ellipse, label="1:10 (master)\n\\x1b[2J\\x1b]0;pwned\\x07"];"#,
        r#"  "1:11 (master)" [shape=ellipse, label="1:11 (master)\na\"b\\\\c\\nd"];"#,
        r#"  "1:12 (master)" [shape=ellipse, label="1:12 (master)\n\\u{9b}31m"];"#,
        r#"  "bbbb\\x1b[31" -> "1:10 (master)" [label="active, 2 hops"];"#,
        r#"  "dd\\u{9b}2J\"22" -> "1:11 (master)" [style=dashed, label="standby"];"#,
    ] {
        assert!(lines.contains(&expected), "{expected}\nnot in\n{text}");
    }
}

#[test]
fn hostile_strings_are_escaped_in_prometheus_labels() {
    let text = prometheus(&hostile());
    assert!(!text.chars().any(raw), "{text}");
    for line in text.lines() {
        assert!(line.starts_with("# ") || line.starts_with("ringspan_"), "{line:?}");
    }
    // The value is the printable form (`aa"bb\\cc\ndd\x1bc`) in the format's escaping.
    let node = r#"node="aa\"bb\\\\cc\\ndd\\x1bc""#;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.contains(&format!("ringspan_circuits{{{node}}} 1").as_str()), "{text}");
    let link =
        format!(r#"ringspan_link_bytes_in_total{{{node},link="3",peer="bbbb\\x1b[31m1111"}} 100"#);
    assert!(lines.contains(&link.as_str()), "{text}");
}
