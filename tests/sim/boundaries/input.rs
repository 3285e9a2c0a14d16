//! Fuzz input read as a stream of choices: every byte string is a valid input, and running out
//! of bytes reads as zeros, so a driver never has to reject what the fuzzer (or proptest) gives
//! it. Shared by the drivers in this folder, which `tests/boundaries.rs` and the cargo-fuzz
//! targets in `fuzz/fuzz_targets/` both include with `#[path]`.

#![allow(dead_code)] // Each fuzz target includes this with only the driver it runs.

/// The unread rest of the input.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads choices from `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Bytes left.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// One byte (zero once the input is used up).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&byte, rest)) => {
                self.data = rest;
                byte
            }
            None => 0,
        }
    }

    /// A little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    /// A little-endian `u128`.
    pub fn u128(&mut self) -> u128 {
        u128::from(self.u64()) | u128::from(self.u64()) << 64
    }

    /// A coin.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// True with probability about `1 / n`.
    pub fn one_in(&mut self, n: u8) -> bool {
        self.u8().is_multiple_of(n.max(1))
    }

    /// A number in `0..n` (`n` at most 256; 0 if `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { usize::from(self.u8()) % n }
    }

    /// A number in `0..n` for any `n` (two bytes).
    pub fn below_wide(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { usize::from(self.u16()) % n }
    }

    /// One element of a non-empty slice.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }

    /// Up to `n` bytes as they come (fewer if the input runs out).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        taken
    }

    /// A byte string of length `0..=max`, its length read first.
    pub fn vec(&mut self, max: usize) -> Vec<u8> {
        let len = self.below_wide(max + 1);
        let mut out = self.bytes(len).to_vec();
        out.resize(len, 0);
        out
    }
}

/// Whether the drivers print what they do (`RINGSPAN_FUZZ_TRACE=1`), to read a failing input.
pub fn tracing() -> bool {
    static TRACING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACING.get_or_init(|| std::env::var_os("RINGSPAN_FUZZ_TRACE").is_some())
}

/// Prints a step of a driver when tracing.
#[macro_export]
macro_rules! trace {
    ($($arg:tt)*) => {
        if $crate::input::tracing() {
            eprintln!($($arg)*);
        }
    };
}
