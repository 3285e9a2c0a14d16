//! Span-table benches: updates processed per second on a table of 10,000 mounts, each
//! advertised by all of 8 neighbours (80,000 routes).
//!
//! Run with `cargo bench --bench span`. Two kinds of update:
//! - `new_seqno`: a neighbour advertises a newer seqno for a mount (as after the originator
//!   bumps it): always feasible, the mount is reselected and re-advertised to every neighbour
//!   whose view changed; the output is drained each time;
//! - `worse_metric`: a neighbour that is not the best one re-advertises with another metric:
//!   reselection only, nothing to send.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ringspan::ids::{ClusterId, MountId, NeighbourId, NodeId};
use ringspan::span::{Advert, Label, Metric, MountKey, MountKind, Role, Seqno, Table, Wants};

const MOUNTS: usize = 10_000;
const NEIGHBOURS: u64 = 8;

fn key(i: usize) -> MountKey {
    MountKey { cluster: ClusterId(1), mount: MountId(i as u128) }
}

fn advert(i: usize, seqno: u16, metric: u16) -> Advert {
    Advert {
        mount: key(i),
        kind: MountKind::Master,
        label: Label::EMPTY,
        origin: NodeId(1),
        seqno: Seqno(seqno),
        metric: Metric(metric),
    }
}

/// A table with 8 router neighbours, each advertising every mount (neighbour k at metric k + 1,
/// so neighbour 0 is best everywhere). Output drained.
fn full_table() -> Table {
    let mut t = Table::new(NodeId(0));
    for k in 0..NEIGHBOURS {
        t.handle_neighbour_up(NeighbourId(k), NodeId(u128::from(k)), Role::Router, Wants::all())
            .unwrap();
    }
    for i in 0..MOUNTS {
        for k in 0..NEIGHBOURS {
            t.handle_advert(NeighbourId(k), &advert(i, 1, k as u16 + 1)).unwrap();
        }
    }
    while t.poll_transmit().is_some() {}
    t
}

fn updates(c: &mut Criterion) {
    let mut group = c.benchmark_group("span/update");
    group.throughput(Throughput::Elements(MOUNTS as u64));

    let mut table = full_table();
    let mut seqno = vec![1u16; MOUNTS];
    let mut pass = 0u64;
    group.bench_function("new_seqno", |b| {
        b.iter(|| {
            pass += 1;
            for (i, s) in seqno.iter_mut().enumerate() {
                *s = s.wrapping_add(1);
                let from = NeighbourId((i as u64 + pass) % NEIGHBOURS);
                table.handle_advert(from, &advert(i, *s, 2)).unwrap();
                while let Some(out) = table.poll_transmit() {
                    black_box(out);
                }
            }
        })
    });

    let mut table = full_table();
    let mut flip = false;
    group.bench_function("worse_metric", |b| {
        b.iter(|| {
            flip = !flip;
            for i in 0..MOUNTS {
                let metric = if flip { 20 } else { 21 };
                table.handle_advert(NeighbourId(7), &advert(i, 1, metric)).unwrap();
                while let Some(out) = table.poll_transmit() {
                    black_box(out);
                }
            }
        })
    });
    group.finish();
}

criterion_group!(benches, updates);
criterion_main!(benches);
