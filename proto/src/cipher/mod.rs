//! Secure links: node identities, the Noise handshake, and in-place record encryption. Sans-IO:
//! no socket, no clock (time is a parameter), no `unsafe`.
//!
//! # Design
//!
//! **Pattern: `Noise_XX_25519_AESGCM_SHA256`**, prologue `b"ringspan/1"`. XX rather than IK:
//!
//! - the responder need not know the initiator (satellites accept unknown clients), and the
//!   initiator need not know the responder's key in advance either (it checks the key it is
//!   shown against the key it dialled or the allowlist);
//! - both static keys travel encrypted, so a passive observer learns neither identity; and the
//!   initiator only reveals its identity after it has authenticated the responder;
//! - each side does 3 X25519 operations plus one key generation, where IK needs 4 plus one: XX
//!   is the cheaper pattern for a satellite absorbing a reconnect storm. IK's advantage, data in
//!   the first flight (1 RTT instead of 1.5), matters little for long-lived links.
//!
//! **Handshake frames** (before any record): `len: u16 LE | version: u8 | step: u8 | noise
//! message (len bytes)`. Version is [`crate::limits::PROTOCOL_VERSION`] (1), checked before
//! Noise sees anything; step is 1, 2, 3 for `-> e`, `<- e, ee, s, es`, `-> s, se`. Version 1
//! carries empty payloads, so the messages have exact lengths 32, 96 and 64 bytes; any other
//! length is refused as soon as the 4-byte frame header arrives. After frame 3 the stream
//! carries records (see [`crate::wire::record`]) both ways.
//!
//! **Records**: see [`record`] for the key schedule (HKDF-SHA256 from Noise's split keys and
//! the handshake hash, a chain of keys per direction, key phase bit, implicit counter nonce) and
//! the rekey rules.
//!
//! **Crypto library**: aws-lc-rs for everything (AES-256-GCM at ~2x ring and ~5x RustCrypto
//! on our machines; X25519 at ~2x curve25519-dalek), including the handshake through
//! [`resolver::AwsLcResolver`].

#![forbid(unsafe_code)]

pub mod aead;
pub mod identity;
pub mod record;
pub mod resolver;
pub mod session;

pub use identity::{Identity, NodeId, PrivateKey, PublicKey};
pub use record::{RecordOpener, RecordSealer, RekeyLimits};
pub use session::{Config, Session};
