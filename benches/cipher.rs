//! The record layer against raw aws-lc-rs, and handshakes per second.
//!
//! `cargo bench --bench cipher -- --warm-up-time 1 --measurement-time 3`
//!
//! - `seal/{ours,raw}/N`: seal N plaintext bytes in place (ours: through `RecordSealer`, which
//!   also writes the header and checks limits; raw: `LessSafeKey::seal_in_place_separate_tag`
//!   with the same nonce and AAD shapes, tag copied after the body).
//! - `open/{ours,raw}/N`: open one sealed record in place; sealing happens in untimed setup.
//! - `handshake/*`: one full XX handshake, both sides in this thread: our `Session`s; raw snow
//!   with our aws-lc-rs resolver; raw snow with its default pure-Rust resolver. Plus, for
//!   scale, the X25519 key generation and agreement a handshake is built from.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, UnboundKey};
use aws_lc_rs::agreement;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ringspan::cipher::record::{dangerous_record_layer_from_secrets, record_nonce};
use ringspan::cipher::resolver::AwsLcResolver;
use ringspan::cipher::session::{NOISE_PATTERN, PROLOGUE};
use ringspan::cipher::{Config, Identity, RekeyLimits, Session};
use ringspan::limits::{HANDSHAKE_FRAME_MAX, RECORD_HEADER_LEN, RECORD_TAG_LEN};

const SIZES: [usize; 4] = [64, 1024, 16 * 1024, 64 * 1024];
/// Records per timed batch in the open benches: 32 x 64 KiB stays within a large L2.
const BATCH: BatchSize = BatchSize::NumIterations(32);

#[allow(clippy::disallowed_methods)] // A bench needs one real instant; time is virtual after.
fn start() -> Instant {
    Instant::now()
}

fn raw_key() -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap())
}

fn raw_seal(key: &LessSafeKey, counter: u64, buf: &mut [u8], len: usize) {
    let (aad, rest) = buf.split_at_mut(RECORD_HEADER_LEN);
    let (body, tag) = rest.split_at_mut(len);
    let sealed =
        key.seal_in_place_separate_tag(record_nonce(counter), Aad::from(&*aad), body).unwrap();
    tag[..RECORD_TAG_LEN].copy_from_slice(sealed.as_ref());
}

fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; RECORD_HEADER_LEN + size + RECORD_TAG_LEN];
        let (mut sealer, _) = dangerous_record_layer_from_secrets(
            &[1; 32],
            &[2; 32],
            RekeyLimits::default(),
            start(),
        )
        .unwrap();
        group.bench_with_input(BenchmarkId::new("ours", size), &size, |b, &size| {
            b.iter(|| black_box(sealer.seal(black_box(&mut buf), size).unwrap()))
        });
        let key = raw_key();
        let mut counter = 0u64;
        group.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
            b.iter(|| {
                raw_seal(&key, counter, black_box(&mut buf), size);
                counter += 1;
            })
        });
    }
    group.finish();
}

fn open(c: &mut Criterion) {
    let mut group = c.benchmark_group("open");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let wire = RECORD_HEADER_LEN + size + RECORD_TAG_LEN;
        let (mut sealer, mut opener) = dangerous_record_layer_from_secrets(
            &[1; 32],
            &[1; 32],
            RekeyLimits::default(),
            start(),
        )
        .unwrap();
        // Criterion runs every setup of a batch, then every routine in the same order, so the
        // setup's sealer and the routine's opener stay in step.
        group.bench_with_input(BenchmarkId::new("ours", size), &size, |b, &size| {
            b.iter_batched_ref(
                || {
                    let mut buf = vec![0u8; wire];
                    sealer.seal(&mut buf, size).unwrap();
                    buf
                },
                |buf| black_box(opener.open(buf).unwrap().len()),
                BATCH,
            )
        });
        let key = raw_key();
        let (mut sealed, mut opened) = (0u64, 0u64);
        group.bench_with_input(BenchmarkId::new("raw", size), &size, |b, &size| {
            b.iter_batched_ref(
                || {
                    let mut buf = vec![0u8; wire];
                    raw_seal(&key, sealed, &mut buf, size);
                    sealed += 1;
                    buf
                },
                |buf| {
                    let (aad, rest) = buf.split_at_mut(RECORD_HEADER_LEN);
                    let (body, tag) = rest.split_at_mut(size);
                    let nonce = record_nonce(opened);
                    opened += 1;
                    let plain =
                        key.open_in_place_separate_tag(nonce, Aad::from(&*aad), tag, body).unwrap();
                    black_box(plain.len())
                },
                BATCH,
            )
        });
    }
    group.finish();
}

fn handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("handshake");
    group.throughput(Throughput::Elements(1));
    let (a, b) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (mut ca, mut cb) = (Config::new(a.clone()).unwrap(), Config::new(b.clone()).unwrap());
    ca.allowlist.insert(b.public_key());
    cb.allowlist.insert(a.public_key());
    let (ca, cb) = (Arc::new(ca), Arc::new(cb));
    let now = start();
    group.bench_function("session", |bench| {
        bench.iter(|| {
            let mut i =
                Session::initiator(Arc::clone(&ca), Some(cb.identity().public_key()), now).unwrap();
            let mut r = Session::responder(Arc::clone(&cb), now).unwrap();
            let mut buf = [0u8; HANDSHAKE_FRAME_MAX];
            for _ in 0..2 {
                let n = i.poll_transmit(&mut buf).unwrap();
                r.handle_handshake_bytes(&buf[..n], now).unwrap();
                let n = r.poll_transmit(&mut buf).unwrap();
                if n > 0 {
                    i.handle_handshake_bytes(&buf[..n], now).unwrap();
                }
            }
            assert!(i.is_established() && r.is_established());
            black_box((i, r))
        })
    });

    // For scale: the X25519 operations a handshake is made of (each side does one key
    // generation and three agreements).
    group.bench_function("x25519-generate", |bench| {
        bench.iter(|| {
            let key = agreement::PrivateKey::generate(&agreement::X25519).unwrap();
            black_box(key.compute_public_key().unwrap())
        })
    });
    let mine = agreement::PrivateKey::generate(&agreement::X25519).unwrap();
    let theirs = b.public_key().0;
    group.bench_function("x25519-agree", |bench| {
        bench.iter(|| {
            let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, black_box(&theirs));
            agreement::agree(&mine, peer, (), |secret| Ok(black_box(secret[0]))).unwrap()
        })
    });

    let params: snow::params::NoiseParams = NOISE_PATTERN.parse().unwrap();
    let raw = |bench: &mut criterion::Bencher, make: &dyn Fn(bool) -> snow::HandshakeState| {
        bench.iter(|| {
            let (mut i, mut r) = (make(true), make(false));
            let (mut msg, mut payload) = ([0u8; 128], [0u8; 128]);
            for turn in 0..3 {
                let (from, to) = if turn % 2 == 0 { (&mut i, &mut r) } else { (&mut r, &mut i) };
                let len = from.write_message(b"", &mut msg).unwrap();
                to.read_message(&msg[..len], &mut payload).unwrap();
            }
            black_box((i.dangerously_get_raw_split(), r.dangerously_get_raw_split()))
        })
    };
    group.bench_function("snow+aws-lc-resolver", |bench| {
        raw(bench, &|initiator| {
            let me = if initiator { &a } else { &b };
            let builder = snow::Builder::with_resolver(
                params.clone(),
                Box::new(AwsLcResolver::with_identity(me)),
            )
            .local_private_key(me.private_key().as_bytes())
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap();
            if initiator { builder.build_initiator() } else { builder.build_responder() }.unwrap()
        })
    });
    group.bench_function("snow+default-resolver", |bench| {
        raw(bench, &|initiator| {
            let me = if initiator { &a } else { &b };
            let builder = snow::Builder::with_resolver(
                params.clone(),
                Box::new(snow::resolvers::DefaultResolver),
            )
            .local_private_key(me.private_key().as_bytes())
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap();
            if initiator { builder.build_initiator() } else { builder.build_responder() }.unwrap()
        })
    });
    group.finish();
}

criterion_group!(benches, seal, open, handshake);
criterion_main!(benches);
