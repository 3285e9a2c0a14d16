//! The engine allocates nothing per message once warm: an encrypted link between two engines
//! carries 100k messages of mixed sizes (many records cut across receive buffers, some larger
//! than a buffer) while a counting allocator watches every thread of the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ringspan::ids::{LinkId, TxnId};
use ringspan::link_load::{Counters, Sink};
use ringspan::ring::{self, Engine, LinkCtx, Service, WorkerCtx};
use ringspan::txn::Received;
use ringspan::wire::{Command, ErrorCode, Flags};

#[path = "support/mod.rs"]
mod support;
use support::{counting, keys};

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

/// Payload sizes, cycled: small ones batch many to a record; 30,000 and 65,504 cross the
/// 64 KiB receive buffers (the largest record is longer than a buffer).
const SIZES: [usize; 7] = [16, 100, 1_000, 5_000, 64, 30_000, 65_504];

/// The link pauses between warming up and the measured 100k (nothing wakes the sender until
/// its next keepalive), and on a loaded machine that pause passed the default second after which
/// a quiet link sheds its key schedules: the burst after it rebuilt them, three allocations
/// once per burst by design (`SHED_KEYS_AFTER_MS`), not per message. Shedding is kept out of
/// the window; `tests/link_memory.rs` measures it.
const KEEP_KEYS: Duration = Duration::from_secs(3_600);

/// Streams messages inside one transaction until it has sent `budget` of them.
struct Mixed {
    budget: Arc<AtomicU64>,
    sent: u64,
    payload: Vec<u8>,
    links: Vec<(LinkId, Option<TxnId>)>,
}

impl Service for Mixed {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        self.links.push((link.id(), None));
    }

    fn received(&mut self, _link: &mut LinkCtx<'_>, _received: Received<'_>) {}

    fn tick(&mut self, worker: &mut WorkerCtx<'_>) {
        let budget = self.budget.load(Ordering::Relaxed);
        for i in 0..self.links.len() {
            let (id, stream) = self.links[i];
            let Some(mut link) = worker.link(id) else {
                continue;
            };
            let txn = match stream {
                Some(txn) => txn,
                None => link
                    .txn
                    .open(&mut link.out, None, Command::new(9, 9), &[], Flags::NONE)
                    .unwrap(),
            };
            self.links[i].1 = Some(txn);
            while self.sent < budget && link.queued_bytes() < 1 << 20 {
                let size = SIZES[(self.sent % SIZES.len() as u64) as usize];
                link.txn
                    .send(
                        &mut link.out,
                        txn,
                        Command::new(9, 9),
                        &self.payload[..size],
                        Flags::NONE,
                        ErrorCode::NONE,
                    )
                    .unwrap();
                self.sent += 1;
            }
        }
    }
}

#[test]
fn zero_allocations_per_message_on_an_encrypted_engine_link() {
    // The counter sees other threads (checked here, not in a parallel test: the process-wide
    // counter is shared).
    let seen = counting::on_every_thread(|| {
        std::thread::scope(|s| {
            s.spawn(|| drop(std::hint::black_box(vec![1u8; 100])));
        });
    });
    assert!(seen >= 1, "the process-wide counter counts other threads");

    let (server_cipher, client_cipher, server_key, _) = keys::server_and_client();

    let counters = Arc::new(Counters::default());
    let sink_counters = counters.clone();
    let server = Engine::start(
        ring::Config {
            workers: 1,
            pin_workers: false,
            listen: Some("127.0.0.1:0".parse().unwrap()),
            shed_keys_after: KEEP_KEYS,
            ..Default::default()
        },
        server_cipher,
        move |_| Sink::new(sink_counters.clone()),
    )
    .unwrap();
    let budget = Arc::new(AtomicU64::new(0));
    let client_budget = budget.clone();
    let client = Engine::start(
        ring::Config {
            workers: 1,
            pin_workers: false,
            shed_keys_after: KEEP_KEYS,
            ..Default::default()
        },
        client_cipher,
        move |_| Mixed {
            budget: client_budget.clone(),
            sent: 0,
            payload: vec![0x42; 65_504],
            links: Vec::with_capacity(4),
        },
    )
    .unwrap();
    client.connect(server.local_addr().unwrap(), Some(server_key));

    let wait_for = |messages: u64| {
        for _ in 0..6_000 {
            if counters.snapshot().0 >= messages {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("only {} of {messages} messages arrived", counters.snapshot().0);
    };

    // Warm up: tables, queues and pools grow to their working size.
    budget.store(30_000, Ordering::Relaxed);
    wait_for(30_000);
    std::thread::sleep(Duration::from_millis(100));

    let allocations = counting::on_every_thread(|| {
        budget.store(130_000, Ordering::Relaxed);
        wait_for(130_000);
    });

    let (messages, bytes) = counters.snapshot();
    println!(
        "{messages} messages, {bytes} payload bytes; {allocations} allocations in the last 100k"
    );
    client.shutdown();
    client.join();
    server.shutdown();
    let stats = server.join();
    assert!(bytes > 1_000_000_000, "the stream really carried large records ({bytes} bytes)");
    assert_eq!(stats[0].pool_misses, 0, "the record pool was large enough");
    assert_eq!(allocations, 0, "allocations while 100k messages crossed a warm link");
}
