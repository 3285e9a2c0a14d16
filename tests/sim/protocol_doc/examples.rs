//! Each byte example of `docs/PROTOCOL.md`, built with the node's code (see
//! `tests/protocol_doc.rs`), and the independent checks of the cryptographic vectors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ringspan::cipher::record::record_nonce;
use ringspan::cipher::{Config, Identity, PrivateKey, Session};
use ringspan::ids::{ClusterId, MountId, MsgId, NodeId, TxnId};
use ringspan::limits::{HANDSHAKE_FRAME_MAX, RECORD_HEADER_LEN, RECORD_TAG_LEN};
use ringspan::span::{
    Advert, Clusters, Hello, KindSet, Label, Metric, MountKey, MountKind, Role, Seqno, Wants,
};
use ringspan::txn::{self, Received};
use ringspan::wire::{ADVERT_LEN_MAX, HELLO_LEN_MAX};
use ringspan::wire::{Command, ErrorCode, Flags, Message, Messages, Repr};
use ringspan::wire::{TraceReport, TraceRequest, TraceStatus};

// One real instant to offset virtual time from.
use crate::support::wait::now as t0;

/// Where the vectors' inputs come from: a block of the document, by name.
pub type Input<'a> = dyn Fn(&str) -> Vec<u8> + 'a;

/// The command ringspan's calls use (`daemon::CALL`).
pub const CALL: Command = ringspan::daemon::CALL;

fn key32(bytes: Vec<u8>) -> [u8; 32] {
    bytes.try_into().expect("a 32-byte key")
}

/// The four private keys of the handshake vectors.
struct Keys {
    initiator: [u8; 32],
    responder: [u8; 32],
    initiator_e: [u8; 32],
    responder_e: [u8; 32],
}

impl Keys {
    fn read(input: &Input<'_>) -> Keys {
        Keys {
            initiator: key32(input("vector-initiator-static-private")),
            responder: key32(input("vector-responder-static-private")),
            initiator_e: key32(input("vector-initiator-ephemeral-private")),
            responder_e: key32(input("vector-responder-ephemeral-private")),
        }
    }
}

/// The node's handshake between the two vector identities, each trusting the other: the three
/// frames and the two established sessions.
struct Handshake {
    frames: [Vec<u8>; 3],
    initiator: Session,
    responder: Session,
    at: Instant,
}

fn identity(private: [u8; 32]) -> Identity {
    Identity::new(PrivateKey::from_bytes(private)).unwrap()
}

fn node_handshake(keys: &Keys) -> Handshake {
    let (i, r) = (identity(keys.initiator), identity(keys.responder));
    let mut ci = Config::new(i.clone()).unwrap();
    ci.allowlist.insert(r.public_key());
    let mut cr = Config::new(r.clone()).unwrap();
    cr.allowlist.insert(i.public_key());
    let at = t0();
    let mut initiator = Session::initiator_with_ephemeral(
        Arc::new(ci),
        Some(r.public_key()),
        &keys.initiator_e,
        at,
    )
    .unwrap();
    let mut responder =
        Session::responder_with_ephemeral(Arc::new(cr), &keys.responder_e, at).unwrap();
    let mut frames: [Vec<u8>; 3] = Default::default();
    for (step, frame) in frames.iter_mut().enumerate() {
        let (from, to) = if step == 1 {
            (&mut responder, &mut initiator)
        } else {
            (&mut initiator, &mut responder)
        };
        let mut buf = [0u8; HANDSHAKE_FRAME_MAX];
        let len = from.poll_transmit(&mut buf).unwrap();
        *frame = buf[..len].to_vec();
        assert_eq!(to.handle_handshake_bytes(frame, at).unwrap(), len);
    }
    assert!(initiator.is_established() && responder.is_established());
    assert_eq!(initiator.peer(), Some(r.public_key()));
    assert_eq!(responder.peer(), Some(i.public_key()));
    Handshake { frames, initiator, responder, at }
}

/// The handshake of the vectors run by snow with its own pure-Rust resolver: the Noise messages,
/// the handshake hash and the two split keys.
struct Independent {
    messages: [Vec<u8>; 3],
    hash: [u8; 32],
    k1: [u8; 32],
    k2: [u8; 32],
}

fn independent_handshake(keys: &Keys) -> Independent {
    let params: snow::params::NoiseParams = "Noise_XX_25519_AESGCM_SHA256".parse().unwrap();
    let build = |private: &[u8; 32], ephemeral: &[u8; 32], initiator: bool| {
        let builder = snow::Builder::with_resolver(
            params.clone(),
            Box::new(snow::resolvers::DefaultResolver),
        )
        .local_private_key(private)
        .unwrap()
        .prologue(b"ringspan/1")
        .unwrap()
        .fixed_ephemeral_key_for_testing_only(ephemeral);
        if initiator { builder.build_initiator() } else { builder.build_responder() }.unwrap()
    };
    let mut i = build(&keys.initiator, &keys.initiator_e, true);
    let mut r = build(&keys.responder, &keys.responder_e, false);
    let mut messages: [Vec<u8>; 3] = Default::default();
    for (turn, message) in messages.iter_mut().enumerate() {
        let (from, to) = if turn == 1 { (&mut r, &mut i) } else { (&mut i, &mut r) };
        let (mut buf, mut payload) = ([0u8; 128], [0u8; 128]);
        let len = from.write_message(b"", &mut buf).unwrap();
        *message = buf[..len].to_vec();
        assert_eq!(to.read_message(message, &mut payload).unwrap(), 0);
    }
    let (k1, k2) = i.dangerously_get_raw_split();
    assert_eq!((k1, k2), r.dangerously_get_raw_split());
    assert_eq!(i.get_handshake_hash(), r.get_handshake_hash());
    Independent { messages, hash: key32(i.get_handshake_hash().to_vec()), k1, k2 }
}

/// HMAC-SHA256 through `ring` (the node uses aws-lc-rs).
fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut context = ring::hmac::Context::with_key(&key);
    for part in parts {
        context.update(part);
    }
    key32(context.sign().as_ref().to_vec())
}

/// HKDF-Expand (RFC 5869) of one 32-byte block: T(1) = HMAC(PRK, info ‖ 0x01).
fn expand(prk: &[u8; 32], info: &[u8]) -> [u8; 32] {
    hmac(prk, &[info, &[1]])
}

/// A direction's chain as section 2.7 writes it: (S_0, K_0, S_1, K_1).
fn chain(hash: &[u8; 32], split: &[u8; 32]) -> [[u8; 32]; 4] {
    let s0 = hmac(hash, &[split]);
    let s1 = expand(&s0, b"ringspan/1 next secret");
    [s0, expand(&s0, b"ringspan/1 record key"), s1, expand(&s1, b"ringspan/1 record key")]
}

pub fn hello_message(link: &mut txn::Link, hello: &Hello) -> Vec<u8> {
    let mut payload = [0u8; HELLO_LEN_MAX];
    let len = hello.encode(&mut payload);
    let mut out = Vec::new();
    link.open(&mut out, None, Command::LINK_CONN, &payload[..len], Flags::NONE).unwrap();
    out
}

fn ping_message() -> Vec<u8> {
    let mut out = Vec::new();
    txn::Link::new().send_oneway(&mut out, Command::LINK_PING, ErrorCode::NONE, &[]).unwrap();
    out
}

/// The plaintexts of the three vector records: the initiator's hello (a router's), the
/// responder's hello (a satellite's), and a keepalive.
fn record_plaintexts() -> [Vec<u8>; 3] {
    let router = Hello::new(Role::Router, Wants::all());
    let satellite = Hello::new(Role::Satellite, Wants::all());
    [
        hello_message(&mut txn::Link::new(), &router),
        hello_message(&mut txn::Link::new(), &satellite),
        ping_message(),
    ]
}

fn seal(session: &mut Session, plaintext: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; RECORD_HEADER_LEN + plaintext.len() + RECORD_TAG_LEN];
    buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + plaintext.len()].copy_from_slice(plaintext);
    let len = session.seal(&mut buf, plaintext.len()).unwrap();
    assert_eq!(len, buf.len());
    buf
}

/// The three vector records as the node seals them, each opened by the other end.
fn node_records(handshake: &mut Handshake, plaintexts: &[Vec<u8>; 3]) -> [Vec<u8>; 3] {
    let i2r0 = seal(&mut handshake.initiator, &plaintexts[0]);
    let r2i0 = seal(&mut handshake.responder, &plaintexts[1]);
    // The initiator's rekey timer fires 120 s after the handshake: its next record is under K_1.
    handshake.initiator.handle_timeout(handshake.at + Duration::from_secs(120)).unwrap();
    let i2r1 = seal(&mut handshake.initiator, &plaintexts[2]);
    for (record, plaintext, opener) in [
        (&i2r0, &plaintexts[0], &mut handshake.responder),
        (&r2i0, &plaintexts[1], &mut handshake.initiator),
    ] {
        assert_eq!(opener.open(&mut record.clone()).unwrap(), &plaintext[..]);
    }
    assert_eq!(handshake.responder.open(&mut i2r1.clone()).unwrap(), &plaintexts[2][..]);
    [i2r0, r2i0, i2r1]
}

/// Every example block of the document, by name, as the node's code builds it (and, for the
/// handshake hash and the key chains, which the node does not expose, as snow's own resolver and
/// `ring` compute them from the document's formulas).
pub fn all(input: &Input<'_>) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut put = |name: &str, bytes: Vec<u8>| out.push((name.to_string(), bytes));

    // Section 2.9: the handshake.
    let keys = Keys::read(input);
    for (name, private) in
        [("vector-initiator-static", keys.initiator), ("vector-responder-static", keys.responder)]
    {
        // The inputs: every block below derives from them.
        put(&format!("{name}-private"), private.to_vec());
        let public = identity(private).public_key();
        put(&format!("{name}-public"), public.0.to_vec());
        let id = name.replace("-static", "-node-id");
        put(&id, NodeId::of(&public).0.to_be_bytes().to_vec());
    }
    for (name, private) in [
        ("vector-initiator-ephemeral", keys.initiator_e),
        ("vector-responder-ephemeral", keys.responder_e),
    ] {
        put(&format!("{name}-private"), private.to_vec());
        put(
            &format!("{name}-public"),
            PrivateKey::from_bytes(private).public_key().unwrap().0.to_vec(),
        );
    }
    let mut handshake = node_handshake(&keys);
    for (step, frame) in handshake.frames.iter().enumerate() {
        put(&format!("vector-frame-{}", step + 1), frame.clone());
    }
    let independent = independent_handshake(&keys);
    put("vector-handshake-hash", independent.hash.to_vec());
    put("vector-split-k1", independent.k1.to_vec());
    put("vector-split-k2", independent.k2.to_vec());
    let [s0, k0, s1, k1] = chain(&independent.hash, &independent.k1);
    for (name, value) in [("s0", s0), ("k0", k0), ("s1", s1), ("k1", k1)] {
        put(&format!("vector-i2r-{name}"), value.to_vec());
    }
    let [s0, k0, ..] = chain(&independent.hash, &independent.k2);
    put("vector-r2i-s0", s0.to_vec());
    put("vector-r2i-k0", k0.to_vec());

    // Section 4.7: records sealed under those keys.
    let plaintexts = record_plaintexts();
    let records = node_records(&mut handshake, &plaintexts);
    for ((name, plaintext), record) in
        ["record-i2r-0", "record-r2i-0", "record-i2r-1"].iter().zip(&plaintexts).zip(records)
    {
        put(&format!("{name}-plaintext"), plaintext.clone());
        put(name, record);
    }
    put("nonce-5", record_nonce(5).to_vec());
    // Section 10: a keepalive on a local link, as the node frames it (no encryption, zero tag).
    let (mut plain, _) = ringspan::cipher::record::record_layer_for_attach(t0()).unwrap();
    let keepalive = &plaintexts[2];
    let mut local = vec![0xa5; 8 + keepalive.len() + 16];
    local[8..8 + keepalive.len()].copy_from_slice(keepalive);
    let len = plain.seal(&mut local, keepalive.len()).unwrap();
    assert_eq!(len, local.len());
    put("local-record", local);

    // Sections 5.9 and 5.10: messages.
    for (name, example) in messages() {
        put(name, example);
    }
    // Sections 8.2 to 8.4: the span protocol's payloads.
    for (name, example) in span_payloads() {
        put(name, example);
    }
    // Section 8.8: a call inside a span, and its answer.
    for (name, example) in call() {
        put(name, example);
    }
    // Section 8.10: a trace's payloads, and a trace answered by the mount's holder.
    for (name, example) in trace() {
        put(name, example);
    }
    // Section 8.11: a mount attached through a local link, called, and detached.
    for (name, example) in super::attach::examples() {
        put(name, example);
    }
    out
}

fn emit(repr: Repr, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; repr.wire_len()];
    repr.emit(payload, &mut bytes);
    bytes
}

/// Hands every message in `bytes` to `link`, returning the transaction each one is on.
fn deliver(link: &mut txn::Link, bytes: &[u8]) -> Vec<ringspan::ids::TxnId> {
    let mut answers = Vec::new();
    let mut txns = Vec::new();
    for message in Messages::new(bytes) {
        let message: Message<&[u8]> = message.unwrap();
        if let Some(Received::Txn(delivery)) = link.handle_message(&mut answers, &message).unwrap()
        {
            txns.push(delivery.txn);
        }
    }
    assert!(answers.is_empty());
    txns
}

fn messages() -> Vec<(&'static str, Vec<u8>)> {
    let forced_reply = Repr {
        flags: Flags::CREATE | Flags::DELETE | Flags::REPLY | Flags::ABORT,
        command: Command::new(2, 0x0304),
        msgid: MsgId(0x0102_0304_0506_0708),
        parent: MsgId(0),
        error: ErrorCode::LOST_LINK,
        payload_len: 5,
    };
    let stacked = Repr {
        flags: Flags::CREATE | Flags::REV_PARENT,
        command: Command::new(0, 1),
        msgid: MsgId(9),
        parent: MsgId(7),
        ..Repr::default()
    };
    // A one-shot request from an end whose first transaction it is, and the single reply.
    let (mut a, mut b) = (txn::Link::new(), txn::Link::new());
    let mut request = Vec::new();
    a.open(&mut request, None, Command::new(7, 1), b"get k", Flags::DELETE).unwrap();
    let txn = deliver(&mut b, &request)[0];
    let mut reply = Vec::new();
    b.send(&mut reply, txn, Command::new(7, 1), b"v", Flags::DELETE, ErrorCode::NONE).unwrap();
    deliver(&mut a, &reply);
    let mut close = Vec::new();
    txn::Link::new()
        .send_oneway(&mut close, Command::LINK_CLOSE, ErrorCode::SHUTDOWN, &[])
        .unwrap();
    vec![
        ("message-forced-reply", emit(forced_reply, b"hello")),
        ("message-stacked-create", emit(stacked, &[])),
        ("message-request", request),
        ("message-reply", reply),
        ("message-ping", ping_message()),
        ("message-close-shutdown", close),
    ]
}

/// The advertisement of section 8.3: soft-master `pfs`, cluster 0x0102, mount 0x0a0b, from
/// origin 0xfeed, seqno 0x1234, metric 3.
fn example_advert() -> Advert {
    Advert {
        mount: MountKey { cluster: ClusterId(0x0102), mount: MountId(0x0a0b) },
        kind: MountKind::SoftMaster,
        label: Label::new(b"pfs").unwrap(),
        origin: NodeId(0xfeed),
        seqno: Seqno(0x1234),
        metric: Metric(3),
    }
}

fn span_payloads() -> Vec<(&'static str, Vec<u8>)> {
    let masters_and_caches = KindSet::NONE.with(MountKind::Master).with(MountKind::Cache);
    let wanted = Wants::new(masters_and_caches, Clusters::Only(vec![ClusterId(7), ClusterId(9)]));
    let client = Hello { idle_timeout_ms: 5_000, ..Hello::new(Role::Client, wanted.unwrap()) };
    let all = Hello::new(Role::Router, Wants::all());
    let router = Hello { idle_timeout_ms: 0x0102_0304, ..all.clone() };
    let named = all.named("core-1").unwrap();
    let mut hello = [0u8; HELLO_LEN_MAX];
    let mut encoded = |h: &Hello| {
        let len = h.encode(&mut hello);
        hello[..len].to_vec()
    };
    let (client, router, named) = (encoded(&client), encoded(&router), encoded(&named));
    let mut advert = [0u8; ADVERT_LEN_MAX];
    let len = example_advert().encode(&mut advert);
    vec![
        ("hello-client", client),
        ("hello-router", router),
        ("hello-named", named),
        ("advert-example", advert[..len].to_vec()),
        ("seqno-request-example", Seqno(0x1235).encode_request().to_vec()),
    ]
}

/// A node N and a peer P, each with its `LINK_CONN` open: N advertises the mount of section 8.3
/// in a span, P calls it with "ping" (ringspan's call command, a one-shot request), and N's
/// application answers "ping".
fn call() -> Vec<(&'static str, Vec<u8>)> {
    let (mut n, mut p, span, at_p) = spanned();
    let mut create = Vec::new();
    p.open(&mut create, Some(at_p), CALL, b"ping", Flags::DELETE).unwrap();
    let call = deliver(&mut n, &create)[0];
    let mut reply = Vec::new();
    n.send(&mut reply, call, CALL, b"ping", Flags::DELETE, ErrorCode::NONE).unwrap();
    deliver(&mut p, &reply);
    vec![("call-span", span), ("call-create", create), ("call-reply", reply)]
}

/// N and P with their hellos exchanged, and N's span for the mount of section 8.3 open: the two
/// links, the span's CREATE, and the span as P's link names it.
fn spanned() -> (txn::Link, txn::Link, Vec<u8>, TxnId) {
    let (mut n, mut p) = (txn::Link::new(), txn::Link::new());
    let hello = Hello::new(Role::Router, Wants::all());
    deliver(&mut p, &hello_message(&mut n, &hello));
    deliver(&mut n, &hello_message(&mut p, &hello));
    let mut advert = [0u8; ADVERT_LEN_MAX];
    let len = example_advert().encode(&mut advert);
    let mut span = Vec::new();
    n.open(&mut span, None, Command::LINK_SPAN, &advert[..len], Flags::NONE).unwrap();
    let at_p = deliver(&mut p, &span)[0];
    (n, p, span, at_p)
}

/// Section 8.10: a trace request and a report; then, as in section 8.8, P traces the mount,
/// and N, holding it (its id the advertisement's origin, 0xfeed), answers with its report.
fn trace() -> Vec<(&'static str, Vec<u8>)> {
    let request = TraceRequest { hops: 1, limit: 64, target: Some(NodeId(0x0a0b)) };
    let report = TraceReport { hop: 2, status: TraceStatus::Relayed, node: NodeId(0xfeed) };
    let (mut n, mut p, _, at_p) = spanned();
    let asked = TraceRequest { hops: 0, limit: 30, target: None }.emit();
    let mut create = Vec::new();
    p.open(&mut create, Some(at_p), Command::LINK_TRACE, &asked, Flags::DELETE).unwrap();
    let trace = deliver(&mut n, &create)[0];
    let holder = TraceReport { hop: 1, status: TraceStatus::Holder, node: NodeId(0xfeed) };
    let mut reply = Vec::new();
    n.send(&mut reply, trace, Command::LINK_TRACE, &holder.emit(), Flags::DELETE, ErrorCode::NONE)
        .unwrap();
    deliver(&mut p, &reply);
    vec![
        ("trace-request-example", request.emit().to_vec()),
        ("trace-report-example", report.emit().to_vec()),
        ("trace-create", create),
        ("trace-holder-reply", reply),
    ]
}

/// The document's handshake frames are snow's own messages (its pure-Rust resolver, not the
/// node's aws-lc-rs one) behind the 4-byte frame headers, and its public keys are
/// curve25519-dalek's.
pub fn check_handshake_independently(input: &Input<'_>) {
    let keys = Keys::read(input);
    let independent = independent_handshake(&keys);
    for (step, message) in independent.messages.iter().enumerate() {
        let frame = input(&format!("vector-frame-{}", step + 1));
        let len = u16::try_from(message.len()).unwrap().to_le_bytes();
        assert_eq!(frame[..4], [len[0], len[1], 1, step as u8 + 1], "frame {} header", step + 1);
        assert_eq!(frame[4..], message[..], "frame {} message", step + 1);
    }
    use snow::params::DHChoice;
    use snow::resolvers::CryptoResolver;
    for (name, private) in [
        ("vector-initiator-static", keys.initiator),
        ("vector-responder-static", keys.responder),
        ("vector-initiator-ephemeral", keys.initiator_e),
        ("vector-responder-ephemeral", keys.responder_e),
    ] {
        let mut dh = snow::resolvers::DefaultResolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        dh.set(&private);
        assert_eq!(dh.pubkey(), &input(&format!("{name}-public"))[..], "{name}");
    }
}

/// The document's records are its plaintexts sealed with `ring`'s AES-256-GCM under the
/// document's keys, with the nonces and associated data of section 4.4; and its key chains
/// follow from its handshake hash and split keys by section 2.7's formulas.
pub fn check_records_independently(input: &Input<'_>) {
    let hash = key32(input("vector-handshake-hash"));
    let [s0, k0, s1, k1] = chain(&hash, &key32(input("vector-split-k1")));
    for (name, value) in [("s0", s0), ("k0", k0), ("s1", s1), ("k1", k1)] {
        assert_eq!(input(&format!("vector-i2r-{name}")), value, "vector-i2r-{name}");
    }
    let [r_s0, r_k0, ..] = chain(&hash, &key32(input("vector-split-k2")));
    assert_eq!(input("vector-r2i-s0"), r_s0);
    assert_eq!(input("vector-r2i-k0"), r_k0);
    for (name, key, counter, phase) in
        [("record-i2r-0", k0, 0, 0), ("record-r2i-0", r_k0, 0, 0), ("record-i2r-1", k1, 0, 1)]
    {
        let plaintext = input(&format!("{name}-plaintext"));
        let mut header = [0u8; 8];
        header[..4].copy_from_slice(&(plaintext.len() as u32 + 16).to_le_bytes());
        header[4] = phase;
        let key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, &key).unwrap(),
        );
        // Four zero bytes and the counter, big-endian.
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&u64::to_be_bytes(counter));
        let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
        let mut body = plaintext.clone();
        let tag = key
            .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(&header), &mut body)
            .unwrap();
        let mut record = header.to_vec();
        record.extend_from_slice(&body);
        record.extend_from_slice(tag.as_ref());
        assert_eq!(input(name), record, "{name}");
    }
    let mut nonce = [0u8; 12];
    nonce[11] = 5;
    assert_eq!(input("nonce-5"), nonce);
}
