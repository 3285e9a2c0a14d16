//! What a scripted peer can say on the link protocol: hello, span and seqno request payloads,
//! mostly well formed from a small pool of values (so that mounts, origins and seqnos collide
//! and compete), now and then with bytes changed or made up. Shared by the span and relay
//! drivers: when a payload format changes, this is the place to follow it.

#![allow(dead_code)] // Each fuzz target includes only what its driver uses.

use ringspan::ids::{ClusterId, MountId, NodeId};
use ringspan::span::{
    Advert, Clusters, Hello, KindSet, Label, Metric, MountKey, MountKind, Role, Seqno, Wants,
};
use ringspan::wire::{ADVERT_LEN_MAX, HELLO_LEN_MAX, TRACE_LEN, TraceRequest};

use crate::input::Input;

/// The mounts peers talk about: three in each of two clusters.
pub fn mount(input: &mut Input<'_>) -> MountKey {
    let n = input.below(6) as u128;
    MountKey { cluster: ClusterId(1 + n / 3), mount: MountId(1 + n % 3) }
}

/// A role.
pub fn role(input: &mut Input<'_>) -> Role {
    input.pick(&[Role::Router, Role::Satellite, Role::Client])
}

/// A hello: its payload, and the hello it encodes (`None` when the bytes are made up).
pub fn hello(input: &mut Input<'_>) -> (Vec<u8>, Option<Hello>) {
    if input.one_in(12) {
        return (input.vec(40), None);
    }
    let kinds = if input.bool() {
        KindSet::ALL
    } else {
        KindSet::from_bits(input.u8() & KindSet::ALL.bits()).expect("defined kinds only")
    };
    let clusters = if input.bool() {
        Clusters::All
    } else {
        Clusters::Only((0..input.below(3)).map(|_| ClusterId(1 + input.below(3) as u128)).collect())
    };
    let wants = Wants::new(kinds, clusters).expect("few clusters");
    let mut hello = Hello::new(role(input), wants);
    // Now and then an idle timeout a node refuses (under 30 ms) or a short one it keeps up with.
    hello.idle_timeout_ms = input.pick(&[5_000, 5_000, 5_000, 1, 29, 30, 200, u32::MAX]);
    let mut buf = [0u8; HELLO_LEN_MAX];
    let len = hello.encode(&mut buf);
    let mut payload = buf[..len].to_vec();
    if input.one_in(12) {
        let at = input.below(payload.len());
        payload[at] ^= input.u8() | 1;
        return (payload, None);
    }
    (payload, Some(hello))
}

/// A hello that decodes, wanting everything.
pub fn hello_clean(role: Role) -> (Vec<u8>, Option<Hello>) {
    let hello = Hello::new(role, Wants::all());
    let mut buf = [0u8; HELLO_LEN_MAX];
    let len = hello.encode(&mut buf);
    (buf[..len].to_vec(), Some(hello))
}

/// An advertisement of `mount` (or of any mount), as a peer might send it.
pub fn advert_of(input: &mut Input<'_>, mount: MountKey, origins: &[NodeId]) -> Advert {
    let label = match input.below(4) {
        0 => Label::new(&[0xab; 64]).expect("64 bytes fit"),
        1 => Label::new(b"pfs").expect("3 bytes fit"),
        _ => Label::EMPTY,
    };
    Advert {
        mount,
        kind: MountKind::from_index(input.below(7) as u8).expect("seven kinds"),
        label,
        origin: input.pick(origins),
        seqno: Seqno(input.pick(&[0, 1, 2, 3, 0x7fff, 0x8000, 0x8001, 0xffff])),
        metric: Metric(input.pick(&[0, 1, 2, 3, 5, 0xfffd, 0xfffe])),
    }
}

/// An advertisement's payload, well formed.
pub fn advert_clean(advert: &Advert) -> Vec<u8> {
    let mut buf = [0u8; ADVERT_LEN_MAX];
    let len = advert.encode(&mut buf);
    buf[..len].to_vec()
}

/// An advertisement's payload: well formed, or with a byte changed or made up.
pub fn advert_payload(input: &mut Input<'_>, advert: &Advert) -> Vec<u8> {
    let mut buf = [0u8; ADVERT_LEN_MAX];
    let len = advert.encode(&mut buf);
    let mut payload = buf[..len].to_vec();
    match input.below(16) {
        0 => input.vec(80),
        1 => {
            let at = input.below(payload.len());
            payload[at] ^= input.u8() | 1;
            payload
        }
        2 => {
            payload[50..52].copy_from_slice(&Metric::INFINITY.0.to_le_bytes());
            payload
        }
        _ => payload,
    }
}

/// A seqno request's payload, well formed.
pub fn seqno_clean(input: &mut Input<'_>) -> Vec<u8> {
    Seqno::encode_request(Seqno(input.pick(&[0, 1, 2, 4, 0x8000, 0xffff]))).to_vec()
}

/// A seqno request's payload: well formed, or made up.
pub fn seqno_payload(input: &mut Input<'_>) -> Vec<u8> {
    if input.one_in(12) {
        return input.vec(12);
    }
    Seqno::encode_request(Seqno(input.pick(&[0, 1, 2, 4, 0x8000, 0xffff]))).to_vec()
}

/// A trace request's bytes (`LINK_TRACE`): a hop count and limit from a few values, valid or not
/// (a limit of 0 or past 64, hops at the limit), a target among `origins` or none, and now and
/// then a reserved byte set.
pub fn trace_request(input: &mut Input<'_>, origins: &[NodeId]) -> [u8; TRACE_LEN] {
    let hops = input.pick(&[0u8, 0, 1, 2, 63, 64]);
    let limit = input.pick(&[1u8, 2, 3, 30, 64, 0, 65]);
    let target = if input.bool() { Some(input.pick(origins)) } else { None };
    // Emitted raw: `TraceRequest` holds only valid values, and these need not be.
    let mut bytes = TraceRequest { hops: 0, limit: 1, target }.emit();
    (bytes[0], bytes[1]) = (hops, limit);
    if input.one_in(16) {
        bytes[2 + input.below(6)] = input.u8() | 1;
    }
    bytes
}
