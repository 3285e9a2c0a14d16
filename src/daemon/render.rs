//! The views of a snapshot printed for operators: text tables ([`render`]), Graphviz
//! ([`dot`], and the whole cluster's, [`cluster_dot`], in `render/cluster.rs`) and the
//! Prometheus text format ([`prometheus`], in `render/exposition.rs`), and the
//! escaping they share with the control socket; re-exported from [`control`](super::control).
//!
//! # What peers write reaches the operator escaped
//!
//! Mount labels are chosen by peers (64 arbitrary bytes in a span advertisement). Every string
//! of a snapshot passes through [`printable`] before it reaches a terminal ([`render`]) or a
//! Graphviz file ([`dot`]), through the exposition format's escaping in [`prometheus`], and the
//! control socket's JSON carries no raw control or invisible character either (they are sent as
//! `\u` escapes, so `ringspan show --json` prints them as such).

use std::borrow::Cow;
use std::fmt::Write as _;

use super::Snapshot;
use crate::ids::LinkId;

mod cluster;
mod exposition;
mod process;

pub use cluster::cluster_dot;
pub use exposition::prometheus;
pub use process::process_series;

/// `text` as it may be shown on a terminal: each character that is not printable written as a
/// visible escape — `\t`, `\n`, `\r`, `\xNN` for other ASCII controls and DEL, `\u{N}` for C1
/// controls, the invisible and direction-changing characters (zero-width spaces, joiners,
/// bidirectional overrides, the byte order mark, line and paragraph separators, ...) and
/// U+FFFD, which stands for bytes that were not UTF-8 — and a backslash as `\\`, so an escape
/// cannot be forged. Borrows `text` when nothing needs escaping.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || hidden(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if hidden(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` would not be seen as itself on a terminal: a control character (C0, DEL, C1),
/// which a terminal may obey, or a character that is invisible or reorders the text around it,
/// which can make one label look like another; or U+FFFD, which stands for bytes that were not
/// UTF-8.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'                        // soft hyphen
            | '\u{34f}'                     // combining grapheme joiner
            | '\u{61c}'                     // Arabic letter mark
            | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers
            | '\u{17b4}' | '\u{17b5}'       // Khmer inherent vowels
            | '\u{180b}'..='\u{180f}'       // Mongolian variation selectors and vowel separator
            | '\u{200b}'..='\u{200f}'       // zero-width space, joiners, direction marks
            | '\u{2028}'..='\u{202e}'       // line and paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{206f}'       // word joiner, invisible operators, bidi isolates
            | '\u{fe00}'..='\u{fe0f}'       // variation selectors
            | '\u{feff}'                    // byte order mark
            | '\u{fff0}'..='\u{ffff}'       // specials, U+FFFD, non-characters
            | '\u{1d173}'..='\u{1d17a}'     // musical formatting
            | '\u{e0000}'..='\u{e0fff}' // tags, variation selectors supplement
        )
}

/// JSON text with every hidden character (see [`hidden`]) but the whitespace of the text's own
/// layout written as a `\u` escape. JSON has no raw control character in its strings, and
/// outside them only ASCII, so the document means the same.
pub(super) fn json_safe(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| hidden(c) && !matches!(c, '\n' | '\r' | '\t');
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` inside a Graphviz string: [`printable`], then `\` and `"` escaped, so Graphviz shows
/// the escapes as they are and no quote ends the string.
fn dot_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in printable(text).chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as a quoted Graphviz string.
fn dot_string(text: &str) -> String {
    format!("\"{}\"", dot_text(text))
}

/// A link's name in the LINKS table: the configuration's, else the one its peer announced
/// marked `~` (said by the peer, not proven), else `-`; [`printable`] either way. A local link
/// is `attached pid N` (its application's process), with the announced name after it.
fn link_name(link: &super::LinkRow) -> String {
    if let Some(pid) = link.attached {
        return match &link.announced {
            Some(announced) => format!("attached pid {pid} ~{}", printable(announced)),
            None => format!("attached pid {pid}"),
        };
    }
    match (&link.name, &link.announced) {
        (Some(name), _) => printable(name).into_owned(),
        (None, Some(announced)) => format!("~{}", printable(announced)),
        (None, None) => "-".to_owned(),
    }
}

/// What `ringspan show` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Links, configured peers, and the workers' load.
    Links,
    /// Routes.
    Routes,
    /// Circuits and counters.
    Circuits,
    /// Mounts (routes grouped by origin).
    Mounts,
    /// The cluster as this node knows it: nodes, and each mount's active and standby paths.
    Cluster,
    /// Everything.
    All,
}

/// The snapshot as text tables, every string in it [`printable`].
pub fn render(s: &Snapshot, view: View) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "node {}", printable(&s.node));
    if matches!(view, View::Links | View::All) {
        let _ = writeln!(out, "\nLINKS");
        let rows: Vec<Vec<String>> = s
            .links
            .iter()
            .map(|l| {
                let counts = [
                    l.spans_in as u64,
                    l.spans_out as u64,
                    l.bytes_in,
                    l.bytes_out,
                    l.circuits_in,
                    l.circuits_out,
                    l.aborts_in,
                    l.aborts_out,
                ];
                let mut row = vec![
                    link_text(l.link),
                    l.worker.to_string(),
                    printable(&l.peer).into_owned(),
                    link_name(l),
                    printable(&l.role).into_owned(),
                ];
                row.extend(counts.iter().map(u64::to_string));
                row
            })
            .collect();
        let header = [
            "link",
            "worker",
            "peer",
            "name",
            "role",
            "spans in",
            "out",
            "bytes in",
            "bytes out",
            "circ in",
            "out",
            "abort in",
            "out",
        ];
        write_table(&mut out, &header, &[0, 2, 3, 4], &rows);
        // What each peer was refused for its share; only links that were refused anything.
        let refused = |r: &super::Refusals| {
            format!(
                "circuits limited {}  preempted {}  idle {}  spans limited {}  refused {}  \
                 seqno requests delayed {}",
                r.circuits_limited,
                r.circuits_preempted,
                r.circuits_idle,
                r.spans_limited,
                r.spans_refused,
                r.seqno_delayed
            )
        };
        for l in s.links.iter().filter(|l| l.refusals != super::Refusals::default()) {
            let _ = writeln!(
                out,
                "{}  granted {}: {}",
                link_text(l.link),
                printable(&l.granted),
                refused(&l.refusals)
            );
        }
        if s.clients > 0 {
            let _ = writeln!(
                out,
                "\n{} client links, {} client mounts; refused in all: {}",
                s.clients,
                s.client_mounts,
                refused(&s.client_refusals)
            );
        }
        if !s.peers.is_empty() {
            let _ = writeln!(out, "\nPEERS");
            for p in &s.peers {
                // A name with the address its latest dial went to.
                let address = match &p.resolved {
                    Some(resolved) => format!("{} ({resolved})", p.address),
                    None => p.address.clone(),
                };
                let _ = write!(
                    out,
                    "  {:<22} {}  {}  {}",
                    printable(&address),
                    printable(p.name.as_deref().unwrap_or("-")),
                    printable(&p.peer),
                    printable(&p.state)
                );
                if let Some(next) = p.next_dial_ms {
                    let _ = write!(
                        out,
                        "  next dial in {next} ms (backoff {} ms, {} failures in a row)",
                        p.backoff_ms, p.failures
                    );
                }
                let _ = writeln!(out);
                if let (Some(error), Some(ago)) = (&p.last_error, p.last_error_ago_ms) {
                    let _ = writeln!(out, "    last error {ago} ms ago: {}", printable(error));
                }
            }
        }
        // Each worker's plane and its load (none from a node that does not say).
        if !s.workers.is_empty() {
            let _ = writeln!(out, "\nWORKERS");
            let rows: Vec<Vec<String>> = s
                .workers
                .iter()
                .map(|w| {
                    let counts = [
                        w.worker as u64,
                        w.links as u64,
                        w.clients as u64,
                        w.circuits as u64,
                        w.messages_in,
                        w.bytes_in,
                        w.bytes_out,
                        w.internal_bytes_in,
                        w.internal_bytes_out,
                        w.accepted,
                        w.established,
                    ];
                    counts.iter().map(u64::to_string).collect()
                })
                .collect();
            let header = [
                "worker",
                "links",
                "clients",
                "circuits",
                "messages in",
                "bytes in",
                "bytes out",
                "internal in",
                "internal out",
                "accepted",
                "established",
            ];
            write_table(&mut out, &header, &[], &rows);
        }
    }
    if matches!(view, View::Routes | View::Mounts | View::All) {
        let _ = writeln!(out, "\nROUTES");
        let mut routes: Vec<_> = s.routes.iter().collect();
        if view == View::Mounts {
            routes.sort_by(|a, b| (&a.origin, &a.mount).cmp(&(&b.origin, &b.mount)));
        }
        // A column naming the application that holds each, when an application holds any.
        let held = routes.iter().any(|r| r.held_by.is_some());
        // Ids as the commands take them back (`ringspan call --mount 0x1:0x10`).
        let rows: Vec<Vec<String>> = routes
            .iter()
            .map(|r| {
                let mut row = vec![
                    format!("0x{}", printable(&r.cluster)),
                    format!("0x{}", printable(&r.mount)),
                    printable(&r.kind).into_owned(),
                    printable(&r.label).into_owned(),
                    r.metric.to_string(),
                    printable(&r.via).into_owned(),
                    printable(r.standby.as_deref().unwrap_or("-")).into_owned(),
                ];
                if held {
                    row.push(r.held_by.map_or_else(|| "-".to_owned(), holder_text));
                }
                row
            })
            .collect();
        let mut header = vec!["cluster", "mount", "kind", "label", "metric", "via", "standby"];
        if held {
            header.push("held by");
        }
        write_table(&mut out, &header, &[0, 1, 2, 3, 5, 6, 7], &rows);
    }
    if matches!(view, View::Circuits | View::All) {
        let c = &s.counters;
        let _ = writeln!(
            out,
            "\nCIRCUITS\nopen {}  relayed {}  served {}  opened {}  no route {}  lost {}\n\
             handshakes in progress {}  failed {}\n\
             records forwarded whole {} (from where they arrived {}; lent now {}, at most {})\n\
             refused for a share {}  preempted {}  idle {}  duplicate links closed {}  tombstones {}\n\
             traces ended here {}",
            s.circuits,
            c.relayed,
            c.served,
            c.opened,
            c.no_route,
            c.lost,
            s.handshaking,
            s.handshake_failures,
            c.whole_records,
            c.records_in_place,
            s.lent_records,
            s.lent_records_max,
            c.limited,
            c.preempted,
            c.idle,
            c.duplicates,
            s.tombstones,
            c.traced
        );
        let d = &s.closes;
        let _ = writeln!(
            out,
            "links closed: misbehaved {}  peer closed {}  idle {}  not reading {}  io {}  local {}\n\
             connections accepted {} (trusted {}), refused at accept: strangers at max_links {}  \
             handshake rate {}, trusted {}",
            d.misbehaved,
            d.peer_closed,
            d.idle,
            d.not_reading,
            d.io,
            d.local,
            s.accepted,
            s.trusted_accepted,
            s.refused_max_links,
            s.refused_handshake_rate,
            s.trusted_refused
        );
        if s.attached + s.attach_refused > 0 {
            let _ = writeln!(
                out,
                "applications attached {}, refused at the attach socket {}",
                s.attached, s.attach_refused
            );
        }
    }
    if view == View::Cluster {
        cluster::text(&mut out, s);
    }
    out
}

/// The application holding a mount as `show` names it: `app pid 4242 (link 0:3.1)`.
fn holder_text(holder: super::Holder) -> String {
    format!("app pid {} (link {})", holder.pid, link_text(holder.link))
}

/// A link id as everything the node prints it: `worker:slot.generation` (`LinkId`'s form, which
/// sentences prefix with "link").
pub(super) fn link_text(id: u64) -> String {
    let text = LinkId(id).to_string();
    text.strip_prefix("link ").map_or_else(|| text.clone(), str::to_owned)
}

/// A table whose columns are as wide as their widest cell: two spaces between columns, numbers
/// right-aligned, the columns in `left` left-aligned (the last one not padded).
fn write_table(out: &mut String, header: &[&str], left: &[usize], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, cell) in cells.enumerate() {
            let pad = widths[i].saturating_sub(cell.chars().count());
            if i > 0 {
                text.push_str("  ");
            }
            if left.contains(&i) {
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', pad));
            } else {
                text.extend(std::iter::repeat_n(' ', pad));
                text.push_str(cell);
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

/// The topology around a node as Graphviz: the node, its links to peers, and for each mount the
/// active path (solid) and standby (dashed) first hops. Every string in it is [`printable`] and
/// quoted: a label shows its escapes, and nothing in it ends a Graphviz string.
pub fn dot(s: &Snapshot) -> String {
    let mut out = String::from("digraph ringspan {\n  rankdir=LR;\n");
    let short = |id: &str| dot_string(&id.chars().take(8).collect::<String>());
    let node = short(&s.node);
    let _ = writeln!(out, "  {node} [shape=box, style=bold];");
    for l in &s.links {
        let _ = writeln!(
            out,
            "  {node} -> {} [dir=none, label=\"link {}\"];",
            short(&l.peer),
            link_text(l.link)
        );
    }
    let via_peer = |via: &str| {
        via.split_once('(').map_or_else(|| node.clone(), |(_, p)| short(p.trim_end_matches(')')))
    };
    for r in &s.routes {
        let name = format!("0x{}:0x{} ({})", r.cluster, r.mount, r.kind);
        let mount = dot_string(&name);
        if r.label.is_empty() {
            let _ = writeln!(out, "  {mount} [shape=ellipse];");
        } else {
            // `\n` here is Graphviz's line break; any in the label itself is shown escaped.
            let label = format!("{}\\n{}", dot_text(&name), dot_text(&r.label));
            let _ = writeln!(out, "  {mount} [shape=ellipse, label=\"{label}\"];");
        }
        let _ = writeln!(
            out,
            "  {} -> {mount} [label=\"active, {} hops\"];",
            via_peer(&r.via),
            r.metric
        );
        if let Some(standby) = &r.standby {
            let _ = writeln!(
                out,
                "  {} -> {mount} [style=dashed, label=\"standby\"];",
                via_peer(standby)
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::snapshot::WorkerRow;
    use super::super::{Counters, LinkRow, PeerRow, RouteRow};
    use super::*;

    pub(crate) fn snapshot() -> Snapshot {
        Snapshot {
            node: "aaaa0000".into(),
            links: vec![LinkRow {
                link: 3,
                worker: 0,
                peer: "bbbb1111".into(),
                name: Some("b".into()),
                announced: Some("not-b".into()),
                role: "router".into(),
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
            routes: vec![RouteRow {
                cluster: "1".into(),
                mount: "10".into(),
                kind: "master".into(),
                label: "e/master".into(),
                origin: "cccc".into(),
                metric: 2,
                via: "link 3 (bbbb1111)".into(),
                via_node: Some("bbbb1111".into()),
                standby: Some("link 4 (dddd2222)".into()),
                standby_node: Some("dddd2222".into()),
                standby_metric: Some(3),
                ..Default::default()
            }],
            peers: vec![
                PeerRow {
                    address: "127.0.0.1:1".into(),
                    name: Some("b".into()),
                    peer: "bbbb1111".into(),
                    state: "up (link 3)".into(),
                    ..Default::default()
                },
                PeerRow {
                    address: "127.0.0.1:2".into(),
                    peer: "eeee3333".into(),
                    state: "refused".into(),
                    next_dial_ms: Some(1200),
                    backoff_ms: 1500,
                    failures: 4,
                    last_error: Some("link down 2 ms after its handshake: peer closed".into()),
                    last_error_ago_ms: Some(300),
                    ..Default::default()
                },
            ],
            circuits: 11,
            counters: Counters {
                relayed: 12,
                served: 13,
                opened: 14,
                no_route: 15,
                lost: 16,
                refused: 18,
                whole_records: 28,
                ..Default::default()
            },
            handshake_failures: 17,
            clients: 0,
            accepted: 27,
            refused_max_links: 19,
            refused_handshake_rate: 20,
            closes: super::super::Closes {
                misbehaved: 21,
                peer_closed: 22,
                idle: 23,
                not_reading: 24,
                io: 25,
                local: 26,
            },
            workers: vec![
                WorkerRow {
                    worker: 0,
                    links: 1,
                    clients: 0,
                    circuits: 7,
                    messages_in: 29,
                    bytes_in: 100,
                    bytes_out: 200,
                    accepted: 27,
                    established: 1,
                    internal_bytes_out: 30,
                    internal_bytes_in: 31,
                    lane_pauses: 32,
                },
                WorkerRow {
                    worker: 1,
                    circuits: 4,
                    internal_bytes_out: 31,
                    internal_bytes_in: 30,
                    ..Default::default()
                },
            ],
            ..Default::default()
        }
    }

    #[test]
    fn text_views_show_what_they_name() {
        let s = snapshot();
        let links = render(&s, View::Links);
        assert!(links.contains("bbbb1111") && links.contains("up (link 3)"));
        assert!(links.contains("  b  bbbb1111  up (link 3)"), "the peer's name: {links}");
        assert!(links.contains(
            "eeee3333  refused  next dial in 1200 ms (backoff 1500 ms, 4 failures in a row)\n    \
             last error 300 ms ago: link down 2 ms after its handshake: peer closed\n"
        ));
        assert!(!links.contains("ROUTES"));
        let routes = render(&s, View::Routes);
        assert!(routes.contains("e/master") && routes.contains("link 4 (dddd2222)"));
        let circuits = render(&s, View::Circuits);
        assert!(circuits.contains("open 11") && circuits.contains("relayed 12"));
        assert!(circuits.contains("misbehaved 21") && circuits.contains("local 26"));
        assert!(circuits.contains("records forwarded whole 28"));
        assert!(circuits.contains(
            "accepted 27 (trusted 0), refused at accept: strangers at max_links 19  handshake \
             rate 20, trusted 0"
        ));
        let all = render(&s, View::All);
        assert!(all.contains("LINKS") && all.contains("ROUTES") && all.contains("CIRCUITS"));
        assert!(all.contains("WORKERS") && !routes.contains("WORKERS"));
    }

    /// The lines of `text`'s table headed `title`: its header, then its rows.
    fn table<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
        let mut lines = text.lines().skip_while(|l| *l != title).skip(1);
        lines.by_ref().take_while(|l| !l.is_empty()).collect()
    }

    #[test]
    fn links_say_their_worker_and_workers_their_load() {
        let s = snapshot();
        let shown = render(&s, View::Links);
        let links = table(&shown, "LINKS");
        // Columns as wide as their content; the link id in the form every table and log uses.
        assert_eq!(
            links,
            [
                concat!(
                    "link   worker  peer      name  role    spans in  out  bytes in  bytes out  ",
                    "circ in  out  abort in  out"
                ),
                concat!(
                    "0:3.0       0  bbbb1111  b     router         1    2       100        200  ",
                    "      6    7         8    9"
                ),
            ],
            "{shown}"
        );
        let workers = table(&shown, "WORKERS");
        assert_eq!(
            workers,
            [
                concat!(
                    "worker  links  clients  circuits  messages in  bytes in  bytes out  ",
                    "internal in  internal out  accepted  established"
                ),
                concat!(
                    "     0      1        0         7           29       100        200  ",
                    "         31            30        27            1"
                ),
                concat!(
                    "     1      0        0         4            0         0          0  ",
                    "         30            31         0            0"
                ),
            ],
            "{shown}"
        );
        // A node that does not say its workers: no table.
        let none = render(&Snapshot { workers: Vec::new(), ..s }, View::Links);
        assert!(!none.contains("WORKERS"), "{none}");
    }

    #[test]
    fn dot_draws_active_and_standby_first_hops() {
        let dot = dot(&snapshot());
        assert!(dot.starts_with("digraph ringspan {"));
        assert!(dot.contains("\"aaaa0000\" -> \"bbbb1111\" [dir=none, label=\"link 0:3.0\"]"));
        let active = "\"bbbb1111\" -> \"0x1:0x10 (master)\" [label=\"active, 2 hops\"]";
        assert!(dot.contains(active), "{dot}");
        assert!(dot.contains("\"dddd2222\" -> \"0x1:0x10 (master)\" [style=dashed"));
    }

    #[test]
    fn refusals_are_shown_and_exported_per_link_and_for_the_clients() {
        let mut s = snapshot();
        s.links[0].refusals.circuits_preempted = 5;
        s.links[0].refusals.spans_limited = 6;
        s.clients = 2;
        s.client_refusals.spans_refused = 7;
        s.counters.preempted = 5;
        let text = prometheus(&s);
        for line in [
            "ringspan_link_refusals_total{node=\"aaaa0000\",link=\"0:3.0\",peer=\"bbbb1111\",worker=\"0\",kind=\"circuits_preempted\"} 5",
            "ringspan_link_refusals_total{node=\"aaaa0000\",link=\"0:3.0\",peer=\"bbbb1111\",worker=\"0\",kind=\"spans_limited\"} 6",
            "ringspan_client_refusals_total{node=\"aaaa0000\",kind=\"spans_refused\"} 7",
            "ringspan_preempted_total{node=\"aaaa0000\"} 5",
            "ringspan_peer_up{node=\"aaaa0000\",peer=\"bbbb1111\",name=\"b\",address=\"127.0.0.1:1\"} 1",
            "ringspan_peer_up{node=\"aaaa0000\",peer=\"eeee3333\",name=\"\",address=\"127.0.0.1:2\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        let shown = render(&s, View::Links);
        assert!(shown.contains("granted router: circuits limited 0  preempted 5"), "{shown}");
        assert!(shown.contains("2 client links, 0 client mounts; refused in all"), "{shown}");
    }

    #[test]
    fn a_link_is_named_by_the_configuration_else_by_its_peer_marked_so() {
        let mut link = snapshot().links.remove(0);
        assert_eq!(link_name(&link), "b", "the configuration's name wins");
        link.name = None;
        assert_eq!(link_name(&link), "~not-b");
        link.announced = Some("\u{202e}evil".into());
        assert!(link_name(&link).starts_with("~\\u{202e}"), "{}", link_name(&link));
        link.announced = None;
        assert_eq!(link_name(&link), "-");
        // A local link says whose process it is.
        link.attached = Some(4242);
        assert_eq!(link_name(&link), "attached pid 4242");
        link.announced = Some("app".into());
        assert_eq!(link_name(&link), "attached pid 4242 ~app");
    }

    #[test]
    fn a_mount_an_application_holds_names_its_pid_and_link() {
        let mut s = snapshot();
        let configured = render(&s, View::Mounts);
        assert!(!configured.contains("held by"), "no column when no application holds one");
        let link = (1 << 32) | 3; // link 0:3.1
        s.routes.push(RouteRow {
            cluster: "1".into(),
            mount: "7".into(),
            kind: "master".into(),
            label: "kv".into(),
            origin: "aaaa0000".into(),
            via: "local".into(),
            held_by: Some(super::super::Holder { pid: 4242, link }),
            ..Default::default()
        });
        let shown = render(&s, View::Mounts);
        let rows = table(&shown, "ROUTES");
        assert!(rows[0].starts_with("cluster") && rows[0].ends_with("  held by"), "{shown}");
        let held = rows.iter().find(|r| r.contains("0x7")).unwrap();
        assert!(
            held.contains(" local ") && held.ends_with("  app pid 4242 (link 0:3.1)"),
            "{shown}"
        );
        let other = rows.iter().find(|r| r.contains("0x10")).unwrap();
        assert!(other.ends_with("  -"), "{shown}");
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains(&format!("\"held_by\":{{\"pid\":4242,\"link\":{link}}}")), "{json}");
        let back: Snapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(back.routes[1].held_by, s.routes[1].held_by);
        assert_eq!(back.routes[0].held_by, None);
        // And the metrics count it.
        let metrics = exposition::prometheus(&s);
        assert!(metrics.contains("ringspan_attached_mounts{node=\"aaaa0000\"} 1"), "{metrics}");
        let none = exposition::prometheus(&snapshot());
        assert!(none.contains("ringspan_attached_mounts{node=\"aaaa0000\"} 0"), "{none}");
    }
}
