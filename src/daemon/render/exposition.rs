//! The snapshot in the Prometheus text exposition format, for the metrics endpoint: node-wide
//! gauges and counters, and series per link and per worker. Every label value is
//! [`printable`], then escaped as the format says; each series has its `# HELP` and `# TYPE`
//! lines, and every counter's name ends in `_total`.

use std::borrow::Cow;
use std::fmt::Write as _;

use super::super::snapshot::WorkerRow;
use super::super::{LinkRow, Refusals, Snapshot};
use super::printable;

/// The snapshot in Prometheus text exposition format. Label values are [`printable`], then
/// escaped as the format says.
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::new();
    let node = label_value(&s.node);
    let mut gauge = |name: &str, help: &str, kind: &str, rows: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP ringspan_{name} {help}\n# TYPE ringspan_{name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "ringspan_{name}{{node=\"{node}\"{labels}}} {value}");
        }
    };
    gauge("circuits", "Circuits and calls open.", "gauge", &[(String::new(), s.circuits as u64)]);
    gauge(
        "links",
        "Established links to routers and satellites.",
        "gauge",
        &[(String::new(), s.links.len() as u64)],
    );
    gauge("clients", "Established client links.", "gauge", &[(String::new(), s.clients as u64)]);
    gauge("routes", "Mounts with a route.", "gauge", &[(String::new(), s.routes.len() as u64)]);
    gauge(
        "client_mounts",
        "Clients' mounts held in the client directory.",
        "gauge",
        &[(String::new(), s.client_mounts as u64)],
    );
    gauge(
        "handshaking",
        "Links still connecting or handshaking, accepted or dialled.",
        "gauge",
        &[(String::new(), s.handshaking)],
    );
    gauge(
        "lent_records",
        "Records forwarded from the receive buffers they arrived in, their sends not complete.",
        "gauge",
        &[(String::new(), s.lent_records)],
    );
    gauge(
        "recv_buffers_held",
        "Receive buffers out of the kernel's hands (being handled, or holding lent records).",
        "gauge",
        &[(String::new(), s.recv_buffers_held)],
    );
    gauge(
        "attached_mounts",
        "Mounts this node holds for applications attached through its attach socket.",
        "gauge",
        &[(String::new(), s.routes.iter().filter(|r| r.held_by.is_some()).count() as u64)],
    );
    gauge(
        "tombstones",
        "Mounts that went away, remembered for their feasibility distance.",
        "gauge",
        &[(String::new(), s.tombstones as u64)],
    );
    let c = &s.counters;
    for (name, help, value) in [
        ("relayed_total", "Circuits relayed through this node.", c.relayed),
        ("served_total", "Calls served by local mounts.", c.served),
        ("opened_total", "Calls opened by local clients.", c.opened),
        ("no_route_total", "Transactions refused for lack of a route.", c.no_route),
        ("lost_total", "Circuit ends that lost a link.", c.lost),
        ("refused_total", "Transactions refused by policy.", c.refused),
        (
            "whole_records_total",
            "Received records forwarded whole (every message in them continued on one link).",
            c.whole_records,
        ),
        (
            "records_in_place_total",
            "Of the records forwarded whole, those sent from where they lay (no copy).",
            c.records_in_place,
        ),
        ("limited_total", "Circuits refused for a limit (a peer's share).", c.limited),
        ("preempted_total", "Circuits aborted to make room for a peer holding fewer.", c.preempted),
        ("idle_total", "Circuits aborted after carrying nothing for the idle bound.", c.idle),
        ("duplicates_total", "Second links to an already linked node, closed.", c.duplicates),
        ("traced_total", "Traces this node ended with its report (held, target, limit).", c.traced),
        ("handshake_failures_total", "Handshakes that failed.", s.handshake_failures),
        ("accepted_total", "Accepted connections admitted (handshakes started).", s.accepted),
        (
            "refused_max_links_total",
            "Connections from untrusted addresses reset because strangers held all the links they may.",
            s.refused_max_links,
        ),
        (
            "refused_handshake_rate_total",
            "Connections from untrusted addresses reset because max_handshakes_per_sec was used up.",
            s.refused_handshake_rate,
        ),
        (
            "trusted_accepted_total",
            "Connections from trusted addresses admitted (also in accepted_total).",
            s.trusted_accepted,
        ),
        (
            "trusted_refused_total",
            "Connections from trusted addresses reset (max_links, or both handshake buckets empty).",
            s.trusted_refused,
        ),
        (
            "attached_total",
            "Applications attached through the attach socket (local links).",
            s.attached,
        ),
        (
            "attach_refused_total",
            "Connections to the attach socket closed: uid/gid not allowed, ATTACH_LINKS_MAX held, or their uid's share.",
            s.attach_refused,
        ),
    ] {
        gauge(name, help, "counter", &[(String::new(), value)]);
    }
    let closes = &s.closes;
    let by_reason: Vec<(String, u64)> = [
        ("misbehaved", closes.misbehaved),
        ("peer_closed", closes.peer_closed),
        ("idle", closes.idle),
        ("not_reading", closes.not_reading),
        ("io", closes.io),
        ("local", closes.local),
    ]
    .into_iter()
    .map(|(reason, value)| (format!(",reason=\"{reason}\""), value))
    .collect();
    gauge(
        "links_closed_total",
        "Links that were up and went down, by cause.",
        "counter",
        &by_reason,
    );
    // A link's labels: its id, its peer and the worker it lives on.
    let link_labels = |l: &LinkRow| {
        let link = super::link_text(l.link);
        format!(",link=\"{link}\",peer=\"{}\",worker=\"{}\"", label_value(&l.peer), l.worker)
    };
    type Field = fn(&LinkRow) -> u64;
    let per_link: [(&str, &str, Field); 8] = [
        ("link_bytes_in_total", "Bytes received on a link.", |l| l.bytes_in),
        ("link_bytes_out_total", "Bytes sent on a link.", |l| l.bytes_out),
        ("link_records_in_total", "Records opened on a link.", |l| l.records_in),
        ("link_records_out_total", "Records sealed on a link.", |l| l.records_out),
        ("link_circuits_in_total", "Circuits the peer opened through a link.", |l| l.circuits_in),
        ("link_circuits_out_total", "Circuits opened on a link.", |l| l.circuits_out),
        ("link_aborts_in_total", "Forced closes received on a link.", |l| l.aborts_in),
        ("link_aborts_out_total", "Forced closes sent on a link.", |l| l.aborts_out),
    ];
    for (name, help, field) in per_link {
        let rows: Vec<(String, u64)> = s.links.iter().map(|l| (link_labels(l), field(l))).collect();
        gauge(name, help, "counter", &rows);
    }
    // What each link's peer was refused for its share, and the client links' in all.
    let kinds = |r: &Refusals| {
        [
            ("circuits_limited", r.circuits_limited),
            ("circuits_preempted", r.circuits_preempted),
            ("circuits_idle", r.circuits_idle),
            ("spans_limited", r.spans_limited),
            ("spans_refused", r.spans_refused),
            ("seqno_delayed", r.seqno_delayed),
        ]
    };
    let mut rows = Vec::new();
    for l in &s.links {
        for (kind, value) in kinds(&l.refusals) {
            rows.push((format!("{},kind=\"{kind}\"", link_labels(l)), value));
        }
    }
    gauge(
        "link_refusals_total",
        "What a link's peer was refused or lost for exceeding its share, by kind.",
        "counter",
        &rows,
    );
    let rows: Vec<(String, u64)> = kinds(&s.client_refusals)
        .into_iter()
        .map(|(kind, value)| (format!(",kind=\"{kind}\""), value))
        .collect();
    gauge(
        "client_refusals_total",
        "What the client links were refused or lost for exceeding their shares, in all, by kind.",
        "counter",
        &rows,
    );
    type WorkerField = fn(&WorkerRow) -> u64;
    let per_worker: [(&str, &str, &str, WorkerField); 11] = [
        ("worker_links", "Links on a worker, clients included.", "gauge", |w| w.links as u64),
        ("worker_clients", "Client links on a worker.", "gauge", |w| w.clients as u64),
        ("worker_circuits", "Circuits and calls a worker's plane holds.", "gauge", |w| {
            w.circuits as u64
        }),
        (
            "worker_messages_in_total",
            "Messages received on a worker, from its sockets and from other workers.",
            "counter",
            |w| w.messages_in,
        ),
        ("worker_bytes_in_total", "Bytes received from sockets on a worker.", "counter", |w| {
            w.bytes_in
        }),
        ("worker_bytes_out_total", "Bytes sent on sockets on a worker.", "counter", |w| {
            w.bytes_out
        }),
        (
            "worker_internal_bytes_in_total",
            "Bytes other workers handed to a worker through internal links.",
            "counter",
            |w| w.internal_bytes_in,
        ),
        (
            "worker_internal_bytes_out_total",
            "Bytes a worker handed to other workers through internal links.",
            "counter",
            |w| w.internal_bytes_out,
        ),
        (
            "worker_accepted_total",
            "Accepted connections a worker admitted (handshakes started).",
            "counter",
            |w| w.accepted,
        ),
        (
            "worker_established_total",
            "Links that completed their handshake on a worker.",
            "counter",
            |w| w.established,
        ),
        (
            "worker_lane_pauses_total",
            "Times a worker stopped reading its sockets: another worker lagged behind its hand-offs.",
            "counter",
            |w| w.lane_pauses,
        ),
    ];
    for (name, help, kind, field) in per_worker {
        let rows: Vec<(String, u64)> =
            s.workers.iter().map(|w| (format!(",worker=\"{}\"", w.worker), field(w))).collect();
        gauge(name, help, kind, &rows);
    }
    // Each configured peer the node dials: linked or not, by id, name and address.
    if !s.peers.is_empty() {
        let rows: Vec<(String, u64)> = s
            .peers
            .iter()
            .map(|p| {
                let labels = format!(
                    ",peer=\"{}\",name=\"{}\",address=\"{}\"",
                    label_value(&p.peer),
                    label_value(p.name.as_deref().unwrap_or("")),
                    label_value(&p.address)
                );
                (labels, u64::from(p.state.starts_with("up")))
            })
            .collect();
        gauge("peer_up", "Whether a peer the node dials is linked (1) or not (0).", "gauge", &rows);
    }
    out
}

/// A Prometheus label value: [`printable`] (so that the text is safe on a terminal too), then
/// `\`, `"` and line feeds escaped as the text exposition format says.
fn label_value(text: &str) -> String {
    exposition_escaped(&printable(text)).into_owned()
}

/// `\`, `"` and line feeds escaped as the text exposition format says for label values.
fn exposition_escaped(text: &str) -> Cow<'_, str> {
    if !text.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::snapshot;
    use super::*;

    #[test]
    fn prometheus_text_has_counters_per_node_and_link() {
        let text = prometheus(&snapshot());
        assert!(text.contains("# TYPE ringspan_relayed_total counter"));
        assert!(text.contains("ringspan_relayed_total{node=\"aaaa0000\"} 12"));
        assert!(text.contains("ringspan_circuits{node=\"aaaa0000\"} 11"));
        assert!(text.contains(
            "ringspan_link_aborts_out_total{node=\"aaaa0000\",link=\"0:3.0\",peer=\"bbbb1111\",\
             worker=\"0\"} 9"
        ));
        assert!(text.contains("ringspan_handshake_failures_total{node=\"aaaa0000\"} 17"));
        assert!(text.contains("ringspan_accepted_total{node=\"aaaa0000\"} 27"));
        assert!(text.contains("ringspan_whole_records_total{node=\"aaaa0000\"} 28"));
        assert!(text.contains("ringspan_refused_max_links_total{node=\"aaaa0000\"} 19"));
        assert!(text.contains("ringspan_refused_handshake_rate_total{node=\"aaaa0000\"} 20"));
        assert!(
            text.contains(
                "ringspan_links_closed_total{node=\"aaaa0000\",reason=\"misbehaved\"} 21"
            )
        );
        assert!(
            text.contains("ringspan_links_closed_total{node=\"aaaa0000\",reason=\"local\"} 26")
        );
    }

    #[test]
    fn each_worker_has_its_series() {
        let text = prometheus(&snapshot());
        let lines: Vec<&str> = text.lines().collect();
        for (name, kind, values) in [
            ("worker_links", "gauge", [1, 0]),
            ("worker_clients", "gauge", [0, 0]),
            ("worker_circuits", "gauge", [7, 4]),
            ("worker_messages_in_total", "counter", [29, 0]),
            ("worker_bytes_in_total", "counter", [100, 0]),
            ("worker_bytes_out_total", "counter", [200, 0]),
            ("worker_internal_bytes_in_total", "counter", [31, 30]),
            ("worker_internal_bytes_out_total", "counter", [30, 31]),
            ("worker_accepted_total", "counter", [27, 0]),
            ("worker_established_total", "counter", [1, 0]),
            ("worker_lane_pauses_total", "counter", [32, 0]),
        ] {
            // HELP, TYPE, then the series of each worker, in order.
            let at = lines.iter().position(|l| *l == format!("# TYPE ringspan_{name} {kind}"));
            let at = at.unwrap_or_else(|| panic!("no TYPE for {name} in\n{text}"));
            assert!(lines[at - 1].starts_with(&format!("# HELP ringspan_{name} ")), "{name}");
            for (worker, value) in values.into_iter().enumerate() {
                let series =
                    format!("ringspan_{name}{{node=\"aaaa0000\",worker=\"{worker}\"}} {value}");
                assert_eq!(lines[at + 1 + worker], series, "{text}");
            }
        }
    }

    /// What promtool checks of the format here: each family's HELP, then its TYPE, then its
    /// samples, once and together; counters' names end in `_total`, no other does.
    #[test]
    fn every_family_is_announced_once_and_kept_together() {
        let text = prometheus(&snapshot());
        let mut seen = std::collections::HashSet::new();
        let mut family: Option<(String, String)> = None;
        let mut lines = text.lines().peekable();
        while let Some(line) = lines.next() {
            if let Some(help) = line.strip_prefix("# HELP ") {
                let (name, _) = help.split_once(' ').unwrap();
                assert!(seen.insert(name.to_owned()), "{name} announced twice");
                let kind = lines.next().unwrap().strip_prefix(&format!("# TYPE {name} "));
                let kind = kind.unwrap_or_else(|| panic!("no TYPE after HELP of {name}"));
                assert!(matches!(kind, "gauge" | "counter"), "{name}: {kind}");
                assert_eq!(kind == "counter", name.ends_with("_total"), "{name} is a {kind}");
                family = Some((name.to_owned(), kind.to_owned()));
            } else {
                let (name, _) = family.as_ref().expect("a sample before any HELP");
                let (series, value) = line.rsplit_once(' ').unwrap();
                assert!(series.starts_with(&format!("{name}{{")), "{line} is not of {name}");
                assert!(value.parse::<u64>().is_ok(), "{line}");
            }
        }
        assert!(seen.contains("ringspan_worker_internal_bytes_out_total"));
    }
}
