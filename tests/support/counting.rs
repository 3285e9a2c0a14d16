//! A counting global allocator for the allocation and memory tests. A test binary installs it
//! with `#[global_allocator] static GLOBAL: counting::Counting = counting::Counting;` and
//! measures with [`on_this_thread`] (allocations of the calling thread only, so parallel tests
//! do not disturb each other), [`on_every_thread`] (every thread of the process, for the
//! engine's workers: nothing else may run beside it), or [`follow`] (the heap bytes that the
//! threads a test follows hold, into a counter of that test's own).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

/// The allocator: the system's, plus counting.
pub struct Counting;

thread_local! {
    static THREAD_ON: Cell<bool> = const { Cell::new(false) };
    static THREAD_COUNT: Cell<u64> = const { Cell::new(0) };
    static THREAD_BYTES: Cell<Option<&'static AtomicI64>> = const { Cell::new(None) };
}

static PROCESS_ON: AtomicBool = AtomicBool::new(false);
static PROCESS_COUNT: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; counting uses atomics and
// const-initialised thread-local `Cell`s, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        bytes(layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bytes(-(layout.size() as i64));
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        bytes(layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        bytes(new_size as i64 - layout.size() as i64);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

fn count() {
    if PROCESS_ON.load(Ordering::Relaxed) {
        PROCESS_COUNT.fetch_add(1, Ordering::Relaxed);
    }
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    if THREAD_ON.try_with(Cell::get).unwrap_or(false) {
        let _ = THREAD_COUNT.try_with(|n| n.set(n.get() + 1));
    }
}

/// Adds `delta` bytes to the counter the calling thread is followed into, if any.
fn bytes(delta: i64) {
    // `try_with`: the thread-locals may already be gone while a thread shuts down.
    if let Ok(Some(counter)) = THREAD_BYTES.try_with(Cell::get) {
        counter.fetch_add(delta, Ordering::Relaxed);
    }
}

/// From now on, the heap bytes the calling thread allocates and frees are added to and taken
/// from `counter` (a test's own, which no other test's threads touch). Memory one thread
/// allocates and another frees counts only where the followed thread did it.
pub fn follow(counter: &'static AtomicI64) {
    THREAD_BYTES.with(|followed| followed.set(Some(counter)));
}

/// Counts the allocations `f` makes on the calling thread.
pub fn on_this_thread(f: impl FnOnce()) -> u64 {
    THREAD_COUNT.with(|n| n.set(0));
    THREAD_ON.with(|on| on.set(true));
    f();
    THREAD_ON.with(|on| on.set(false));
    THREAD_COUNT.with(Cell::get)
}

/// Counts the allocations every thread of the process makes while `f` runs.
pub fn on_every_thread(f: impl FnOnce()) -> u64 {
    PROCESS_COUNT.store(0, Ordering::Relaxed);
    PROCESS_ON.store(true, Ordering::Relaxed);
    f();
    PROCESS_ON.store(false, Ordering::Relaxed);
    PROCESS_COUNT.load(Ordering::Relaxed)
}
