//! `ringspan show cluster`: the cluster as this node knows it — itself, its neighbours, and the
//! node each mount is attached to (its origin), and each mount with its active and standby
//! paths — as text tables ([`text`]) or Graphviz ([`cluster_dot`]). A snapshot knows each
//! path's first hop and length and its mount's origin, not the nodes in between: a path is
//! drawn as this node → its first hop → (the hops left) → the origin. Every string is
//! [`printable`]; in Graphviz, quoted and escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::super::{RouteRow, Snapshot};
use super::{dot_string, dot_text, link_text, printable, write_table};

/// What this node knows of one node of the cluster.
#[derive(Default)]
struct Known {
    name: Option<String>,
    /// This node itself.
    us: bool,
    /// The links to it, if it is a neighbour.
    links: Vec<u64>,
    /// Mounts attached to it.
    origin_of: usize,
}

/// The node a path goes to first: the row's field, or (from a node that does not send it) the
/// peer in its `via` text, `"link L (PEER)"`.
fn first_hop(field: &Option<String>, via: Option<&str>) -> Option<String> {
    field.clone().or_else(|| {
        let (_, peer) = via?.split_once('(')?;
        Some(peer.trim_end_matches(')').to_owned()).filter(|p| !p.is_empty())
    })
}

fn active(r: &RouteRow) -> Option<String> {
    first_hop(&r.via_node, Some(&r.via))
}

fn standby(r: &RouteRow) -> Option<String> {
    first_hop(&r.standby_node, r.standby.as_deref())
}

/// The nodes of the cluster this node knows, by id.
fn nodes(s: &Snapshot) -> BTreeMap<String, Known> {
    let mut nodes: BTreeMap<String, Known> = BTreeMap::new();
    nodes.entry(s.node.clone()).or_default().us = true;
    for l in &s.links {
        let known = nodes.entry(l.peer.clone()).or_default();
        known.links.push(l.link);
        known.name = known.name.take().or_else(|| l.name.clone());
    }
    for r in &s.routes {
        let known = nodes.entry(r.origin.clone()).or_default();
        known.origin_of += 1;
        known.name = known.name.take().or_else(|| r.origin_name.clone());
        for hop in [active(r), standby(r)].into_iter().flatten() {
            nodes.entry(hop).or_default();
        }
    }
    // Where the configuration names a neighbour not, the name it announced, marked `~` (said by
    // the peer, not proven), as the LINKS table shows it.
    for l in &s.links {
        let known = nodes.entry(l.peer.clone()).or_default();
        if known.name.is_none() {
            known.name = l.announced.as_ref().map(|name| format!("~{name}"));
        }
    }
    nodes
}

/// A mount's name as the commands take it back (`0x1:0x10`).
fn mount_name(r: &RouteRow) -> String {
    format!("0x{}:0x{}", r.cluster, r.mount)
}

/// The cluster as text: its nodes, then its mounts with their paths.
pub(super) fn text(out: &mut String, s: &Snapshot) {
    let nodes = nodes(s);
    let _ = writeln!(out, "\nNODES");
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|(id, known)| {
            let mut what = Vec::new();
            if known.us {
                what.push("this node".to_string());
            }
            if !known.links.is_empty() {
                let links: Vec<String> = known.links.iter().map(|&l| link_text(l)).collect();
                what.push(format!("neighbour (link {})", links.join(", ")));
            }
            match known.origin_of {
                0 => {}
                1 => what.push("1 mount attached".to_string()),
                n => what.push(format!("{n} mounts attached")),
            }
            if what.is_empty() {
                what.push("on a path".to_string());
            }
            vec![
                printable(id).into_owned(),
                printable(known.name.as_deref().unwrap_or("-")).into_owned(),
                what.join(", "),
            ]
        })
        .collect();
    write_table(out, &["node", "name", "known as"], &[0, 1, 2], &rows);
    let _ = writeln!(out, "\nMOUNTS");
    let path = |hop: Option<String>, metric: Option<u16>| match (hop, metric) {
        (None, _) => "-".to_string(),
        (Some(hop), Some(metric)) => format!("{} ({metric} hops)", printable(&hop)),
        (Some(hop), None) => printable(&hop).into_owned(),
    };
    let rows: Vec<Vec<String>> = s
        .routes
        .iter()
        .map(|r| {
            let origin = match &r.origin_name {
                Some(name) => format!("{} ({})", printable(&r.origin), printable(name)),
                None => printable(&r.origin).into_owned(),
            };
            let active = match r.via.as_str() {
                "local" => "attached here".to_string(),
                _ => path(active(r), Some(r.metric)),
            };
            vec![
                printable(&mount_name(r)).into_owned(),
                printable(&r.kind).into_owned(),
                printable(&r.label).into_owned(),
                origin,
                active,
                path(standby(r), r.standby_metric),
            ]
        })
        .collect();
    let header = ["mount", "kind", "label", "attached to", "active path via", "standby via"];
    write_table(out, &header, &[0, 1, 2, 3, 4, 5], &rows);
}

/// The cluster as Graphviz: nodes as boxes (this node bold, with its links to its neighbours),
/// mounts as ellipses attached to their origin, and each mount's active path (solid) and
/// standby path (dashed) from this node through its first hop to the origin.
pub fn cluster_dot(s: &Snapshot) -> String {
    let mut out = String::from("digraph cluster {\n  rankdir=LR;\n  node [shape=box];\n");
    let short = |id: &str| id.chars().take(8).collect::<String>();
    for (id, known) in &nodes(s) {
        let mut label = dot_text(&short(id));
        if let Some(name) = &known.name {
            // `\n` here is Graphviz's line break; any in the name itself is shown escaped.
            let _ = write!(label, "\\n{}", dot_text(name));
        }
        let style = if known.us { ", style=bold" } else { "" };
        let _ = writeln!(out, "  {} [label=\"{label}\"{style}];", dot_string(id));
    }
    let us = dot_string(&s.node);
    for l in &s.links {
        let (peer, link) = (dot_string(&l.peer), link_text(l.link));
        let _ = writeln!(out, "  {us} -> {peer} [dir=none, color=gray, label=\"link {link}\"];");
    }
    for r in &s.routes {
        let name = format!("{} ({})", mount_name(r), r.kind);
        let mount = dot_string(&name);
        let origin = dot_string(&r.origin);
        if r.label.is_empty() {
            let _ = writeln!(out, "  {mount} [shape=ellipse];");
        } else {
            let label = format!("{}\\n{}", dot_text(&name), dot_text(&r.label));
            let _ = writeln!(out, "  {mount} [shape=ellipse, label=\"{label}\"];");
        }
        let _ = writeln!(out, "  {origin} -> {mount} [dir=none, style=bold, label=\"attached\"];");
        let paths = [
            ("active", "solid", active(r), Some(r.metric)),
            ("standby", "dashed", standby(r), r.standby_metric),
        ];
        for (what, style, hop, metric) in paths {
            let Some(hop) = hop else { continue };
            let tag = dot_text(&mount_name(r));
            let hops = metric.map_or(String::new(), |m| format!(", {m} hops"));
            let hop_id = dot_string(&hop);
            let _ =
                writeln!(out, "  {us} -> {hop_id} [style={style}, label=\"{tag} {what}{hops}\"];");
            if hop != r.origin {
                let _ = writeln!(
                    out,
                    "  {hop_id} -> {origin} [style={style}, label=\"{tag} {what}\"];"
                );
            }
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::snapshot;
    use super::super::{View, render};
    use super::*;

    #[test]
    fn text_lists_nodes_and_each_mounts_paths() {
        let mut s = snapshot();
        s.routes[0].origin_name = Some("c".into());
        // The configuration's name wins over the announced one; without it, the announced one.
        let mut unnamed = s.links[0].clone();
        (unnamed.link, unnamed.peer, unnamed.name) = (4, "dddd2222".into(), None);
        unnamed.announced = Some("d".into());
        s.links.push(unnamed);
        let shown = render(&s, View::Cluster);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines.contains(&"aaaa0000  -     this node"), "{shown}");
        assert!(lines.contains(&"bbbb1111  b     neighbour (link 0:3.0)"), "{shown}");
        assert!(lines.contains(&"cccc      c     1 mount attached"), "{shown}");
        assert!(lines.contains(&"dddd2222  ~d    neighbour (link 0:4.0)"), "{shown}");
        let mount = lines.iter().find(|l| l.starts_with("0x1:0x10")).unwrap();
        assert_eq!(
            *mount,
            "0x1:0x10  master  e/master  cccc (c)     bbbb1111 (2 hops)  dddd2222 (3 hops)"
        );
        assert!(!shown.contains("LINKS") && !shown.contains("ROUTES"), "{shown}");
    }

    #[test]
    fn dot_draws_nodes_mounts_and_both_paths_to_the_origin() {
        let dot = cluster_dot(&snapshot());
        assert!(dot.starts_with("digraph cluster {"), "{dot}");
        for line in [
            "  \"aaaa0000\" [label=\"aaaa0000\", style=bold];",
            "  \"bbbb1111\" [label=\"bbbb1111\\nb\"];",
            "  \"cccc\" [label=\"cccc\"];",
            "  \"aaaa0000\" -> \"bbbb1111\" [dir=none, color=gray, label=\"link 0:3.0\"];",
            "  \"cccc\" -> \"0x1:0x10 (master)\" [dir=none, style=bold, label=\"attached\"];",
            "  \"aaaa0000\" -> \"bbbb1111\" [style=solid, label=\"0x1:0x10 active, 2 hops\"];",
            "  \"bbbb1111\" -> \"cccc\" [style=solid, label=\"0x1:0x10 active\"];",
            "  \"aaaa0000\" -> \"dddd2222\" [style=dashed, label=\"0x1:0x10 standby, 3 hops\"];",
            "  \"dddd2222\" -> \"cccc\" [style=dashed, label=\"0x1:0x10 standby\"];",
        ] {
            assert!(dot.lines().any(|l| l == line), "{line} missing from\n{dot}");
        }
        // A node that does not send the first hops as fields: read from the `via` text.
        let mut old = snapshot();
        (old.routes[0].via_node, old.routes[0].standby_node) = (None, None);
        assert_eq!(cluster_dot(&old), dot);
    }
}
