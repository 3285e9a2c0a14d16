//! The handshake responder fed arbitrary bytes, cut into arbitrary chunks, with the clock
//! moving: it must never panic, never consume more than it is given, never emit a frame larger
//! than `HANDSHAKE_FRAME_MAX`, and stay failed once it fails.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use ringspan::cipher::{Config, Identity, PrivateKey, Session};
use ringspan::limits::HANDSHAKE_FRAME_MAX;

fn config() -> Arc<Config> {
    static CONFIG: OnceLock<Arc<Config>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let identity = Identity::new(PrivateKey::from_bytes([0x11; 32])).unwrap();
        let mut config = Config::new(identity).unwrap();
        // Accept anyone, so that an input that gets through message 3 goes the whole way.
        config.accept_unknown_keys = true;
        Arc::new(config)
    }))
}

#[allow(clippy::disallowed_methods)] // The fuzzer needs one real instant; time is virtual after.
fn start() -> Instant {
    Instant::now()
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunking, mut rest)) = data.split_first() else {
        return;
    };
    let start = start();
    let mut now = start;
    let mut session = Session::responder(config(), now).unwrap();
    let mut out = [0u8; HANDSHAKE_FRAME_MAX];
    let mut failed = None;
    let chunk = usize::from(chunking % 32) + 1;
    while !rest.is_empty() {
        let (piece, tail) = rest.split_at(chunk.min(rest.len()));
        rest = tail;
        // Every chunk also moves the clock by up to 255 ms.
        now += Duration::from_millis(u64::from(piece[0]));
        match session.handle_handshake_bytes(piece, now) {
            Ok(used) => {
                assert!(failed.is_none(), "a failed session accepted bytes");
                assert!(used <= piece.len());
            }
            Err(error) => {
                if let Some(first) = failed {
                    assert_eq!(error, first, "the failure changed");
                }
                failed = Some(error);
            }
        }
        let sent = session.poll_transmit(&mut out).unwrap();
        assert!(sent <= HANDSHAKE_FRAME_MAX);
        let _ = session.handle_timeout(now);
        if session.is_established() {
            // Whatever follows the handshake goes to the record opener.
            let mut record = rest.to_vec();
            let _ = session.open(&mut record);
            break;
        }
    }
    if now < start + Duration::from_secs(10) {
        assert!(session.poll_timeout().is_some() || failed.is_some());
    }
});
