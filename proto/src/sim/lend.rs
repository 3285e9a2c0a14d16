//! A node's in-memory links lent to it while it handles input that arrived on one of them, as
//! the engine lends a worker's links (`relay::LinkSet`): used by the simulator and by tests that
//! join nodes with byte vectors.

use crate::ids::LinkId;
use crate::relay::LinkSet;
use crate::txn;

/// An in-memory link between two nodes: each end's transactions and the bytes it wrote.
pub trait Wire {
    /// Which end of the wire `node` holds (0 or 1), if the wire can be written now.
    fn end_of(&self, node: usize) -> Option<usize>;
    /// That end's transactions and output.
    fn end_mut(&mut self, end: usize) -> (&mut txn::Link, &mut Vec<u8>);
}

/// The wires lent to `node`, a link id being a wire's index: all of them, or all but the one
/// the input being handled came on.
pub struct Lent<'a, W> {
    before: &'a mut [W],
    after: &'a mut [W],
    /// The wire the input came on (not lent), or `wires.len()` if none.
    current: usize,
    node: usize,
}

impl<'a, W: Wire> Lent<'a, W> {
    /// Wire `current`, and the others lent to `node`.
    pub fn split(wires: &'a mut [W], current: usize, node: usize) -> Option<(&'a mut W, Self)> {
        let (before, rest) = wires.split_at_mut(current);
        let (wire, after) = rest.split_first_mut()?;
        Some((wire, Lent { before, after, current, node }))
    }

    /// Every wire lent to `node` (its application's own output, not input from a wire).
    pub fn all(wires: &'a mut [W], node: usize) -> Self {
        let current = wires.len();
        Lent { before: wires, after: &mut [], current, node }
    }

    /// Wire `link`, if lent and writable, and the node's end of it.
    fn get(&mut self, link: LinkId) -> Option<(&mut W, usize)> {
        let l = usize::try_from(link.0).ok()?;
        let wire = match l.cmp(&self.current) {
            std::cmp::Ordering::Less => self.before.get_mut(l)?,
            std::cmp::Ordering::Greater => self.after.get_mut(l - self.current - 1)?,
            std::cmp::Ordering::Equal => return None,
        };
        let end = wire.end_of(self.node)?;
        Some((wire, end))
    }
}

impl<W: Wire> LinkSet for Lent<'_, W> {
    type Out<'b>
        = Vec<u8>
    where
        Self: 'b;

    fn with<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut txn::Link, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        let (wire, end) = self.get(link)?;
        let (txn, out) = wire.end_mut(end);
        Some(f(txn, out))
    }

    /// The copy is appended to the wire's bytes, and taken off again if `edit` refuses it.
    fn with_record<R>(
        &mut self,
        link: LinkId,
        plaintext: &[u8],
        edit: impl FnOnce(&txn::Link, &mut [u8]) -> Option<R>,
    ) -> Option<R> {
        let (wire, end) = self.get(link)?;
        let (txn, out) = wire.end_mut(end);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let result = edit(txn, &mut out[start..]);
        if result.is_none() {
            out.truncate(start);
        }
        result
    }
}
