//! Traces (PROTOCOL.md 8.10; DESIGN 7c.6): a `LINK_TRACE` circuit, opened inside a span like any
//! call, that every node on its path answers for itself. A node that passes it on first sends
//! back one report (its hop number, its id, "relayed") and opens the next hop with the request's
//! hop count raised to its own; the node where it ends (the mount's holder, the request's
//! target, the hop limit, or no route onward) answers with its report and its DELETE, or, with
//! no route, its report and a forced close with `NO_ROUTE`. The caller times each report's
//! arrival: the round trip to that node.
//!
//! What a trace costs a node, whoever sends it: one 24-byte report for a 24-byte request, and
//! no more (what comes back from further on is relayed like any call's replies); a trace that
//! goes on is a circuit in the pools like any other, admitted within its holder's shares; one
//! that ends here holds no circuit and is answered at once, as a refusal would be. A request
//! that does not parse, or that is not a one-shot (CREATE|DELETE), is refused alone with
//! `MALFORMED`. Planes of one node (DESIGN 7c.3) report once: a plane that passes a trace to
//! another plane says nothing and leaves the hop count as it is; the plane where it leaves the
//! node or ends reports.

use crate::error::Error;
use crate::ids::LinkId;
use crate::span::MountKey;
use crate::txn::Delivery;
use crate::wire::{ErrorCode, Flags, TRACE_LEN, TraceReport, TraceRequest, TraceStatus};

use super::Node;
use super::circuit::{Carry, Hop};
use super::output::LinkSet;
use super::share::Holder;

impl Node {
    /// A trace the peer on `link` opened inside our span for `mount`, held by `holder` if it goes
    /// on. See the module documentation.
    pub(super) fn trace<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &Delivery<'_>,
        mount: MountKey,
        from_client: bool,
        holder: Holder,
    ) -> Result<(), Error> {
        let one_shot =
            delivery.flags.contains(Flags::DELETE) && !delivery.flags.contains(Flags::ABORT);
        let request = match TraceRequest::parse(delivery.payload) {
            Ok(request) if one_shot => request,
            outcome => {
                let why =
                    outcome.err().map_or("not a one-shot request".to_string(), |e| e.to_string());
                tracing::debug!(%link, why, "trace refused");
                self.counters.refused += 1;
                return self.refuse(link, links, delivery, ErrorCode::MALFORMED);
            }
        };
        // `parse` holds `hops` below the limit, itself at most 64: no overflow.
        let hop = request.hops + 1;
        let report = |status| TraceReport { hop, status, node: self.id }.emit();
        if request.target == Some(self.id) {
            return self.answer_trace(link, links, delivery, &report(TraceStatus::Target));
        }
        if self.is_our_aggregate(mount) || self.attached_to(mount).is_some() {
            // An application's mount: the node holds it (the application answers calls only).
            return self.answer_trace(link, links, delivery, &report(TraceStatus::Holder));
        }
        match self.resolve(link, from_client, mount, delivery.payload, links) {
            Ok(Hop::Local) => {
                self.answer_trace(link, links, delivery, &report(TraceStatus::Holder))
            }
            Ok(onward_hop @ Hop::Link { link: next, .. }) => {
                if self.is_plane_link(next) {
                    // The node's own report is its other plane's to send (module documentation).
                    let hop = onward_hop;
                    let carry =
                        Carry { mount, holder, hop, payload: delivery.payload, report: None };
                    return self.carry(link, links, delivery, carry).map(|_| ());
                }
                if hop >= request.limit {
                    return self.answer_trace(link, links, delivery, &report(TraceStatus::Limit));
                }
                let onward = TraceRequest { hops: hop, ..request }.emit();
                let relayed = report(TraceStatus::Relayed);
                let carry = Carry {
                    mount,
                    holder,
                    hop: onward_hop,
                    payload: &onward,
                    report: Some(&relayed),
                };
                // Counted as relayed, as any circuit carried on.
                self.carry(link, links, delivery, carry).map(|_| ())
            }
            Err(ErrorCode::NO_ROUTE) => {
                self.counters.no_route += 1;
                let (id, command, status) = (delivery.txn, delivery.command, TraceStatus::NoRoute);
                let _ = links.with(link, |txn, out| {
                    txn.send(out, id, command, &report(status), Flags::NONE, ErrorCode::NONE)
                });
                self.refuse(link, links, delivery, ErrorCode::NO_ROUTE)
            }
            Err(code) => {
                self.counters.refused += 1;
                self.refuse(link, links, delivery, code)
            }
        }
    }

    /// Ends a trace here: our report, with our DELETE (the caller's came with its CREATE, so the
    /// transaction ends; no circuit is made). Counted as traced: each circuit that comes in is
    /// counted once, as relayed, served, refused for no route, a policy or a limit, or traced.
    fn answer_trace<L: LinkSet>(
        &mut self,
        link: LinkId,
        links: &mut L,
        delivery: &Delivery<'_>,
        report: &[u8; TRACE_LEN],
    ) -> Result<(), Error> {
        self.counters.traced += 1;
        let (id, command) = (delivery.txn, delivery.command);
        let sent = self.write(links, link, |txn, out| {
            txn.send(out, id, command, report, Flags::DELETE, ErrorCode::NONE)
        });
        match sent {
            // The link is going, or the transaction layer forced it already (PROTOCOL.md 6.5).
            Some(Err(Error::Misuse(_))) | None => Ok(()),
            Some(result) => result,
        }
    }
}
