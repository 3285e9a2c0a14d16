//! Process tests at ten thousand clients, each sized to take the whole machine (a debug build on
//! two cores): a satellite taking 10,000 client links, and two satellites under a 3-node core
//! taking 10,010. Their own binary, so that no other test runs beside them; and they run one at
//! a time.
//!
//! One test binary; each file is a module of it: `cargo test --test scale satellite_scale::`.

#[path = "../support/mod.rs"]
mod support;

mod clients_process;
mod satellite_scale;

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Held for the whole of each test here: one at a time, as each takes the machine.
fn alone() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner)
}
