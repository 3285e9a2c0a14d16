//! User-space memory a satellite's protocol state keeps per idle client link: the link's
//! transactions and span protocol (`txn::Link` and `SpanLink`, inline in the link), the relay's
//! per-link state and the
//! span table's per-neighbour state, counted in bytes by the allocator on the test's thread,
//! where the satellite runs. (The engine's own per-connection state is measured by
//! `link_memory`; `perf/clients.sh` measures the whole process.)
//!
//! Each client says hello and advertises one client mount (kept in the satellite's client
//! directory, never in its span table); the satellite has one mount of its own to advertise to
//! every client (as it would the cluster's master).

use std::sync::atomic::{AtomicI64, Ordering};

use ringspan::ids::{ClusterId, LinkId, MountId, NodeId};
use ringspan::relay::{BareLink, LinkSet, Node};
use ringspan::span::Hello;
use ringspan::span::{Advert, Label, Metric, MountKey, MountKind, Role, Seqno, SpanLink, Wants};
use ringspan::txn::{self, Received};
use ringspan::wire::{ADVERT_LEN_MAX, HELLO_LEN_MAX};
use ringspan::wire::{Command, Flags, Messages};

use crate::support::counting;

/// The heap bytes the test's thread holds (`counting::follow`): the satellite's protocol state
/// is built there, and nowhere else.
static LIVE: AtomicI64 = AtomicI64::new(0);

/// What one client sends: its hello and its mount's span, as encoded messages.
fn client_bytes(i: u128) -> Vec<u8> {
    let mut peer = txn::Link::new();
    let mut out = Vec::new();
    let mut hello = [0u8; HELLO_LEN_MAX];
    let wants = Wants::all();
    let n = Hello::new(Role::Client, wants).encode(&mut hello);
    peer.open(&mut out, None, Command::LINK_CONN, &hello[..n], Flags::NONE).unwrap();
    let advert = Advert {
        mount: MountKey { cluster: ClusterId(1), mount: MountId(1_000_000 + i) },
        kind: MountKind::Client,
        label: Label::EMPTY,
        origin: NodeId(i + 10),
        seqno: Seqno(0),
        metric: Metric::ZERO,
    };
    let mut buf = [0u8; ADVERT_LEN_MAX];
    let n = advert.encode(&mut buf);
    peer.open(&mut out, None, Command::LINK_SPAN, &buf[..n], Flags::NONE).unwrap();
    out
}

/// The satellite's client links (link `i + 1` is `links[i]`, preallocated: the engine holds each
/// inline in its connection), all writing into one scratch buffer.
struct Clients {
    links: Vec<BareLink>,
    out: Vec<u8>,
}

impl Clients {
    fn get(&mut self, link: LinkId) -> Option<&mut BareLink> {
        self.links.get_mut(usize::try_from(link.0).ok()?.checked_sub(1)?)
    }
}

impl LinkSet for Clients {
    type Out<'b> = Vec<u8>;

    fn with_span<R>(
        &mut self,
        link: LinkId,
        f: impl FnOnce(&mut SpanLink, &mut txn::Link, &mut Vec<u8>) -> R,
    ) -> Option<R> {
        let Clients { links, out } = self;
        let link = links.get_mut(usize::try_from(link.0).ok()?.checked_sub(1)?)?;
        Some(f(&mut link.span, &mut link.txn, out))
    }

    fn span(&mut self, link: LinkId) -> Option<&mut SpanLink> {
        Some(&mut self.get(link)?.span)
    }
}

#[test]
fn protocol_state_per_idle_client_link() {
    counting::follow(&LIVE);
    // Enough for the per-link figure to settle, and just under a power-of-two table size (hash
    // maps then carry the least slack); small enough for a debug `cargo test`.
    const CLIENTS: usize = 14_000;
    let inputs: Vec<Vec<u8>> = (0..CLIENTS as u128).map(client_bytes).collect();
    // The node's time starts here and does not move.
    let now = crate::support::wait::now();
    let mut satellite = Node::new(NodeId(1), Hello::new(Role::Satellite, Wants::all()), now);
    satellite.serve_client_clusters([ClusterId(1)]);
    let master = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
    let label = Label::new(b"cluster/master").unwrap();
    let mut links =
        Clients { links: Vec::with_capacity(CLIENTS), out: Vec::with_capacity(1 << 20) };
    satellite.attach(master, MountKind::Master, label, &mut links).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    for (i, bytes) in inputs.iter().enumerate() {
        let id = LinkId(i as u64 + 1);
        links.links.push(BareLink::default());
        satellite.link_up(id, NodeId(i as u128 + 10), Role::Client, false, &mut links).unwrap();
        for message in Messages::new(bytes) {
            let message = message.unwrap();
            let Clients { links: all, out } = &mut links;
            if let Some(Received::Txn(d)) = all[i].txn.handle_message(out, &message).unwrap() {
                satellite.received(id, &mut links, Received::Txn(d)).unwrap();
            }
            while let Some(event) = links.links[i].txn.poll_event() {
                satellite.event(id, &mut links, event).unwrap();
            }
        }
        links.out.clear();
    }
    let after = LIVE.load(Ordering::Relaxed);
    // The `links` vector (allocated before counting began) stands for the engine's connections,
    // which hold each link's transactions and span state inline: count their size, not the
    // vector.
    let per_link =
        (after - before) as f64 / CLIENTS as f64 + std::mem::size_of::<BareLink>() as f64;
    let table_routes = satellite.table().mounts().count();
    println!(
        "{CLIENTS} idle client links: {per_link:.0} bytes each of protocol state \
         (txn::Link and SpanLink inline {} B, the rest on the heap); {table_routes} mounts in \
         the table, {} in the client directory",
        std::mem::size_of::<BareLink>(),
        satellite.clients().len()
    );
    assert_eq!(table_routes, 2, "the master and the aggregate: no client mount is a route");
    assert_eq!(satellite.clients().len(), CLIENTS, "each client's mount, in the directory");
    // Regression bound for this share of the ≤ 2 KiB per idle client budget.
    assert!(per_link < 2048.0, "{per_link:.0} bytes per idle client link");
}
