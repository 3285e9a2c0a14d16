//! Traces opened by the harness's applications ([`Net::trace`]): the reports each gets back,
//! booked until it ends ([`Net::traced`]).

use std::collections::BTreeMap;

use crate::ids::NodeId;
use crate::relay::CallId;
use crate::sim::cluster::Failure;
use crate::span::MountKey;
use crate::wire::{Command, ErrorCode, Flags, TraceReport, TraceRequest};

use super::{CallIdKey, Net, fail, key_of, mount};
use crate::sim::lend::Lent;

/// The traces a node's application has open: the mount each is for, and its reports so far.
pub(super) type Open = BTreeMap<CallIdKey, (MountKey, Vec<TraceReport>)>;

/// A trace that ended: who opened it, to which mount, the reports that came back in the order
/// they came, and the error it ended with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traced {
    /// The node whose application opened it.
    pub node: usize,
    /// The mount traced.
    pub mount: MountKey,
    /// Each node's report, in the order they arrived.
    pub reports: Vec<TraceReport>,
    /// How it ended.
    pub error: ErrorCode,
}

impl Net {
    /// Node `i`'s application traces mount `n` (to its holder, or to `target` if that node is
    /// on the path), ending at hop `limit` at the latest. Whether it was opened (no route: not,
    /// and nothing is booked). It ends in [`Net::traced`].
    pub fn trace(
        &mut self,
        i: usize,
        n: u128,
        target: Option<NodeId>,
        limit: u8,
    ) -> Result<bool, Failure> {
        if !self.nodes[i].alive {
            return Ok(false);
        }
        let request = TraceRequest { hops: 0, limit, target }.emit();
        let links = &mut Lent::all_with(&mut self.links, &self.shared, i);
        let opened =
            self.nodes[i].node.open(mount(n), Command::LINK_TRACE, &request, Flags::DELETE, links);
        if let Ok(call) = opened {
            self.nodes[i].traces.insert(key_of(call), (mount(n), Vec::new()));
        }
        self.settle(i)?;
        Ok(opened.is_ok())
    }
}

/// A message on one of node `i`'s open traces: a report, which must parse (every node here is
/// ours), or a forced close's empty payload.
pub(super) fn report(
    open: &mut Open,
    i: usize,
    call: CallId,
    payload: &[u8],
) -> Result<(), Failure> {
    let Some((_, reports)) = open.get_mut(&key_of(call)) else { return Ok(()) };
    if payload.is_empty() {
        return Ok(());
    }
    let report = TraceReport::parse(payload)
        .map_err(|e| fail(format!("node {i}: trace {call:?} got a bad report: {e}")))?;
    reports.push(report);
    Ok(())
}

/// One of node `i`'s open traces ended with `error`.
pub(super) fn ended(open: &mut Open, i: usize, call: CallId, error: ErrorCode) -> Traced {
    let (mount, reports) = open.remove(&key_of(call)).unwrap_or_default();
    Traced { node: i, mount, reports, error }
}
