//! What the hostile process tests of shares (`hostile_shares*.rs`) share: node configs, honest
//! applications and their call loads, snapshot rows, and a running tally of what a rogue
//! received.

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ringspan::cipher::Identity;
use ringspan::daemon::{CALL, Handle, LinkRow, LoadReport, Request, Snapshot};
use ringspan::ids::{ClusterId, MountId, NodeId, TxnId};
use ringspan::ring;
use ringspan::span::{MountKey, Role, Wants};
use ringspan::wire::{ErrorCode, Flags};

use super::config;
use super::node::Node;
use super::rogue::{Rogue, Seen, pump_all_until};
use super::wait::now;

/// Every wait on a condition: generous, for two busy cores and a debug build.
pub const WAIT: Duration = Duration::from_secs(60);
/// The echo master of cluster 1.
pub const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };

/// Timers that leave a rogue unpumped for a while alone.
const LIMITS: &str =
    "keepalive_ms = 1000\nidle_timeout_ms = 30000\nredial_min_ms = 50\nredial_max_ms = 500\n";

/// Writes `node`'s config: a listener, `role`, `node_extra` in `[node]` (allow, client
/// clusters), timers that leave a rogue unpumped for a while alone, `limits_extra` in
/// `[limits]`, and `tail` (peers, mounts).
pub fn configure(node: &Node, role: &str, node_extra: &str, limits_extra: &str, tail: &str) {
    let node_lines = format!("role = \"{role}\"\n{node_extra}");
    config::write(node, &node_lines, &format!("{LIMITS}{limits_extra}"), tail);
}

/// An honest application: a node of its own linked to `at`, saying it is `role`.
pub fn honest(identity: Identity, role: Role, at: &Node) -> Handle {
    let (keepalive, idle) = (Duration::from_millis(1_000), Duration::from_millis(30_000));
    super::calls::app_timed(identity, role, at, keepalive, idle)
}

/// Runs `calls` one-shot calls of 64 bytes to `mount` from `app`, `concurrency` at a time,
/// pumping `rogues` meanwhile (they answer what the node sends and keep their links alive).
pub fn load(
    app: &Handle,
    mount: MountKey,
    calls: u64,
    concurrency: u32,
    rogues: &mut [&mut Rogue],
) -> LoadReport {
    let (reply, report) = mpsc::channel();
    let request = Request::Load { mount, calls, concurrency, size: 64, reply };
    assert!(app.remote().send(ring::Command::Service(Box::new(request))).is_ok());
    if rogues.is_empty() {
        return report.recv_timeout(WAIT).expect("the honest load ends");
    }
    let mut done = None;
    pump_all_until(rogues, WAIT, |_| {
        done = done.take().or_else(|| report.try_recv().ok());
        done.is_some()
    })
    .unwrap();
    done.unwrap()
}

/// Every honest call answered with its own payload, none lost or refused.
pub fn assert_good(report: &LoadReport, calls: u64) {
    assert_eq!(
        (report.completed, report.corrupted, report.other, report.lost_link, report.no_route),
        (calls, 0, 0, 0, 0),
        "the honest load: {report:?}"
    );
}

/// The row of the link to `peer` in a snapshot.
pub fn row(snapshot: &Snapshot, peer: NodeId) -> Option<&LinkRow> {
    let peer = peer.to_string();
    snapshot.links.iter().find(|row| row.peer == peer)
}

/// A node's snapshot, asked at most every 200 ms from inside a pump's condition (a snapshot of
/// a node with thousands of circuits or routes is not free).
pub struct Every {
    last: Option<Instant>,
}

impl Every {
    pub fn new() -> Every {
        Every { last: None }
    }

    pub fn due(&mut self) -> bool {
        let due = self.last.is_none_or(|at| now() >= at + Duration::from_millis(200));
        if due {
            self.last = Some(now());
        }
        due
    }
}

/// What a rogue's calls met, read from its log as it grows (the log is long: it is read once).
#[derive(Default)]
pub struct Tally {
    pub at: usize,
    /// Calls (and spans) the node answered without forcing them closed.
    pub answered: HashSet<TxnId>,
    /// Forced closes, by transaction: their code, and whether an answer came before.
    pub forced: HashMap<TxnId, (ErrorCode, bool)>,
    /// Transactions ended at the rogue, and how.
    pub ended: HashMap<TxnId, ErrorCode>,
}

impl Tally {
    pub fn update(&mut self, rogue: &Rogue) {
        let log = rogue.log();
        for seen in &log[self.at..] {
            match seen {
                Seen::Delivery(d) if d.synthesized => {}
                Seen::Delivery(d) if d.is_forced_close() => {
                    let answered = self.answered.contains(&d.txn);
                    self.forced.entry(d.txn).or_insert((d.error, answered));
                }
                Seen::Delivery(d) => {
                    self.answered.insert(d.txn);
                }
                Seen::Ended { txn, error } => {
                    self.ended.insert(*txn, *error);
                }
                Seen::OneWay { .. } => {}
            }
        }
        self.at = log.len();
    }

    /// Whether the node has said something on each of `txns`.
    pub fn heard_all(&self, txns: &[TxnId]) -> bool {
        txns.iter().all(|t| self.answered.contains(t) || self.forced.contains_key(t))
    }

    /// Forced closes with `code` on transactions answered before (`after_answer`) or not.
    pub fn forced_with(&self, code: ErrorCode, after_answer: bool) -> usize {
        self.forced.values().filter(|&&(c, answered)| c == code && answered == after_answer).count()
    }
}

/// Opens `count` calls to the node's span `span` in one go (`flags`: DELETE for one-shot
/// requests, none to hold them open), each with its own payload.
pub fn open_calls(rogue: &mut Rogue, span: TxnId, count: usize, flags: Flags) -> Vec<TxnId> {
    rogue.send(|link, out| {
        (0..count)
            .map(|i| {
                let payload = format!("rogue call {i}");
                link.open(out, Some(span), CALL, payload.as_bytes(), flags)
                    .unwrap_or_else(|e| panic!("the rogue cannot open call {i}: {e}"))
            })
            .collect()
    })
}

/// A rogue linked to `node` with `identity`, its hello said as `role`, that heard the node's
/// span for `mount`.
pub fn rogue_at(node: &Node, identity: &Identity, role: Role, mount: MountKey) -> Rogue {
    let mut rogue = Rogue::connect(node.addr(), identity, Some(node.public())).unwrap();
    rogue.hello(role, Wants::all());
    rogue.pump_until(WAIT, |r| r.span_of(mount).is_some()).unwrap();
    rogue
}
