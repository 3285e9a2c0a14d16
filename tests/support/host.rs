//! What the tests of one binary share of the host. They run in parallel threads of one process:
//! what each takes must not be another's, and a process-wide setting must not be undone by
//! another test between its read and its write.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// A fresh, empty directory for one test's files (configs, keys, sockets, logs):
/// `ringspan-<pid>-<name>` in the temporary directory. A name is taken once per process, so two
/// tests of one binary never share a directory.
pub fn scratch(name: &str) -> PathBuf {
    static TAKEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let fresh = TAKEN.lock().unwrap_or_else(PoisonError::into_inner).insert(name.to_string());
    assert!(fresh, "two tests of this binary use the scratch directory {name:?}");
    let dir = std::env::temp_dir().join(format!("ringspan-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `ringspan::ring::sys::raise_nofile_limit`, one caller at a time: it reads the soft limit,
/// then sets it, so two tests raising it at once could lower it below what the first asked for
/// (and what a node it starts inherits).
pub fn raise_nofile_limit(want: u64) -> u64 {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    ringspan::ring::sys::raise_nofile_limit(want).unwrap()
}
