//! The wire format: every byte format of the protocol, as typed views over byte buffers and
//! the values they hold.
//!
//! A link's byte stream starts with three [`handshake`] frames, then is a sequence of
//! [`record`]s; a record's plaintext is a sequence of [`message`]s. The span protocol's messages
//! carry a [`hello`] (`LINK_CONN`), an [`advert`]isement (`LINK_SPAN`) or a [`seqno_request`]
//! (`LINK_SPAN_REQUEST`); a call to a satellite's aggregate starts with a [`client_address`];
//! a [`trace`] circuit carries a request and, back, a report from each node on its path.
//! Views (`Record<T>`, `Message<T>`, `HelloPayload<T>`, `AdvertPayload<T>`) wrap a caller's
//! buffer and read or write fields in place; `new_checked` validates untrusted input once, after
//! which accessors cannot fail. Fixed-size parts (`RecordHeader`, `HandshakeHeader`,
//! `SeqnoRequest`, `ClientAddress`, `TraceRequest`, `TraceReport`) are parsed and emitted
//! whole. `Repr` values hold field combinations and emit them. Nothing here allocates or keeps state, or knows what a value
//! means to the layers above (`span` turns the span payloads' raw fields into its roles, kinds
//! and wants). `docs/PROTOCOL.md` describes every byte.

#![forbid(unsafe_code)]

pub mod advert;
pub mod attach;
pub mod client_address;
pub mod handshake;
pub mod hello;
pub mod message;
pub mod record;
pub mod seqno_request;
pub mod trace;

pub use advert::{ADVERT_LEN_MAX, AdvertPayload, AdvertRepr};
pub use attach::{ATTACH_LEN_MAX, AttachRequest};
pub use client_address::{CLIENT_ADDRESS_LEN, ClientAddress};
pub use handshake::HandshakeHeader;
pub use hello::{HELLO_LEN_MAX, HelloPayload, HelloRepr};
pub use message::{Command, ErrorCode, Flags, Message, Messages, Repr, Sink};
pub use record::{Record, RecordHeader};
pub use seqno_request::{SEQNO_REQUEST_LEN, SeqnoRequest};
pub use trace::{TRACE_LEN, TraceReport, TraceRequest, TraceStatus};

/// Reads a little-endian `u16` at `at`. The caller has checked the length.
#[inline]
fn get_u16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// Reads a little-endian `u32` at `at`. The caller has checked the length.
#[inline]
fn get_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// Reads a little-endian `u64` at `at`. The caller has checked the length.
#[inline]
fn get_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// Reads a little-endian `u128` at `at`. The caller has checked the length.
#[inline]
fn get_u128(bytes: &[u8], at: usize) -> u128 {
    let mut word = [0; 16];
    word.copy_from_slice(&bytes[at..at + 16]);
    u128::from_le_bytes(word)
}

/// Rounds `len` up to the message alignment.
#[inline]
pub const fn align_up(len: usize) -> usize {
    (len + crate::limits::MESSAGE_ALIGN - 1) & !(crate::limits::MESSAGE_ALIGN - 1)
}
