//! The record layer against the bare AEAD call, the two AES-GCM backends against each other,
//! and handshakes per second.
//!
//! `cargo bench --bench cipher -- --warm-up-time 1 --measurement-time 3`, or, for a paired
//! comparison that resists a noisy machine, `RINGSPAN_BENCH_PAIRED=1 cargo bench --bench cipher`.
//!
//! - `seal/{ours,raw}/N`: seal N plaintext bytes in place (ours: through `RecordSealer`, which
//!   also writes the header and checks limits; raw: the backend's `seal_in_place_separate_tag`
//!   alone, on the backend `Backend::fastest` picks here, same nonce and AAD shapes).
//! - `backend/{aws-lc,ring}/N`: the bare seal on each backend, to see which CPU favours which.
//! - `open/{ours,raw}/N`: open one sealed record in place; sealing happens in untimed setup.
//! - `handshake/*`: one full XX handshake, both sides in this thread: our `Session`s; raw snow
//!   with our aws-lc-rs resolver; raw snow with its default pure-Rust resolver. Plus, for
//!   scale, the X25519 key generation and agreement a handshake is built from.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::agreement;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group};
use ringspan::cipher::aead::{Backend, Key};
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

fn raw_key() -> Key {
    Key::new(Backend::fastest(), &[7u8; 32]).unwrap()
}

fn raw_seal(key: &Key, counter: u64, buf: &mut [u8], len: usize) {
    let (aad, rest) = buf.split_at_mut(RECORD_HEADER_LEN);
    let (body, tag) = rest.split_at_mut(len);
    let sealed = key.seal_in_place(record_nonce(counter), aad, body).unwrap();
    tag[..RECORD_TAG_LEN].copy_from_slice(&sealed);
}

fn backend(c: &mut Criterion) {
    let mut group = c.benchmark_group("backend");
    for size in [16 * 1024, 64 * 1024] {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0u8; RECORD_HEADER_LEN + size + RECORD_TAG_LEN];
        for backend in Backend::ALL {
            let key = Key::new(backend, &[7u8; 32]).unwrap();
            let name = match backend {
                Backend::AwsLc => "aws-lc",
                Backend::Ring => "ring",
            };
            let mut counter = 0u64;
            group.bench_with_input(BenchmarkId::new(name, size), &size, |b, &size| {
                b.iter(|| {
                    raw_seal(&key, counter, black_box(&mut buf), size);
                    counter += 1;
                })
            });
        }
    }
    group.finish();
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
                    key.open_in_place(nonce, aad, tag, body).unwrap();
                    black_box(body.len())
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

    // One side's share of a full handshake: both sides run, only the responder's (then the
    // initiator's) calls are timed. A satellite under a reconnect storm pays the responder's.
    for responder_side in [true, false] {
        let name = if responder_side { "session-responder-side" } else { "session-initiator-side" };
        group.bench_function(name, |bench| {
            bench.iter_custom(|iters| {
                let mut spent = std::time::Duration::ZERO;
                let mut timed = |is_responder: bool, f: &mut dyn FnMut()| {
                    if is_responder == responder_side {
                        let t = start();
                        f();
                        spent += t.elapsed();
                    } else {
                        f();
                    }
                };
                for _ in 0..iters {
                    let (mut i, mut r) = (None, None);
                    let key = cb.identity().public_key();
                    timed(false, &mut || {
                        i = Some(Session::initiator(Arc::clone(&ca), Some(key), now).unwrap())
                    });
                    timed(true, &mut || {
                        r = Some(Session::responder(Arc::clone(&cb), now).unwrap())
                    });
                    let (mut i, mut r) = (i.unwrap(), r.unwrap());
                    let mut buf = [0u8; HANDSHAKE_FRAME_MAX];
                    let mut n = 0;
                    for _ in 0..2 {
                        timed(false, &mut || n = i.poll_transmit(&mut buf).unwrap());
                        timed(true, &mut || {
                            r.handle_handshake_bytes(&buf[..n], now).unwrap();
                            n = r.poll_transmit(&mut buf).unwrap();
                        });
                        if n > 0 {
                            timed(false, &mut || {
                                i.handle_handshake_bytes(&buf[..n], now).unwrap();
                            });
                        }
                    }
                    assert!(i.is_established() && r.is_established());
                    black_box((i, r));
                }
                spent
            })
        });
    }

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

/// Ours against raw aws-lc-rs, interleaved: alternating timed blocks in one process so that
/// machine-wide noise (a shared VM, a neighbour's build) hits both sides alike. Prints the
/// median ns per operation of each side and the median of the per-round ratios ours/raw.
fn paired() {
    const ROUNDS: usize = 201;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let limits = RekeyLimits::default();
    for size in SIZES {
        let ops = (4_000_000 / (size + 200)).max(50);
        let wire = RECORD_HEADER_LEN + size + RECORD_TAG_LEN;
        let (mut sealer, _) =
            dangerous_record_layer_from_secrets(&[1; 32], &[2; 32], limits, start()).unwrap();
        let (mut s2, mut o2) =
            dangerous_record_layer_from_secrets(&[3; 32], &[3; 32], limits, start()).unwrap();
        let key = raw_key();
        let mut raw_sealed = 0u64;
        let mut buf = vec![0u8; wire];
        let mut batch: Vec<Vec<u8>> = (0..ops.min(256)).map(|_| vec![0u8; wire]).collect();
        let per_op = |t: Instant, n: usize| t.elapsed().as_nanos() as f64 / n as f64;
        let mut v: [Vec<f64>; 6] = Default::default();
        for _ in 0..ROUNDS {
            let t = start();
            for _ in 0..ops {
                black_box(sealer.seal(black_box(&mut buf), size).unwrap());
            }
            let ours = per_op(t, ops);
            let t = start();
            for _ in 0..ops {
                raw_seal(&key, raw_sealed, black_box(&mut buf), size);
                raw_sealed += 1;
            }
            let raw = per_op(t, ops);
            v[0].push(ours);
            v[1].push(raw);
            v[2].push(ours / raw);

            for record in batch.iter_mut() {
                s2.seal(record, size).unwrap();
            }
            let t = start();
            for record in batch.iter_mut() {
                black_box(o2.open(record).unwrap().len());
            }
            let ours = per_op(t, batch.len());
            // The raw opener starts at the counter of the first record of this batch.
            let mut raw_opened = raw_sealed;
            for record in batch.iter_mut() {
                raw_seal(&key, raw_sealed, record, size);
                raw_sealed += 1;
            }
            let t = start();
            for record in batch.iter_mut() {
                let (aad, rest) = record.split_at_mut(RECORD_HEADER_LEN);
                let (body, tag) = rest.split_at_mut(size);
                let nonce = record_nonce(raw_opened);
                raw_opened += 1;
                key.open_in_place(nonce, aad, tag, body).unwrap();
                black_box(body.len());
            }
            let raw = per_op(t, batch.len());
            v[3].push(ours);
            v[4].push(raw);
            v[5].push(ours / raw);
        }
        let [a, b, c, d, e, f] = &mut v;
        println!(
            "{size:>6} B  seal ours {:>9.1} ns  raw {:>9.1} ns  ratio {:.3} | \
             open ours {:>9.1} ns  raw {:>9.1} ns  ratio {:.3}",
            median(a),
            median(b),
            median(c),
            median(d),
            median(e),
            median(f)
        );
    }
}

criterion_group!(benches, seal, open, backend, handshake);

/// `RINGSPAN_BENCH_PAIRED=1 cargo bench --bench cipher` runs the interleaved comparison
/// instead of criterion.
fn main() {
    if std::env::var_os("RINGSPAN_BENCH_PAIRED").is_some() {
        paired();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
