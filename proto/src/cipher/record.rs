//! The record layer: AES-256-GCM sealing and opening of records in place, with an implicit
//! counter nonce and a key schedule that rekeys without a pause.
//!
//! # Key schedule
//!
//! Each direction has a chain of secrets. From the handshake (Noise split key `k` for that
//! direction, handshake hash `h`):
//!
//! ```text
//! S_0     = HKDF-Extract(salt = h, ikm = k)                      (HKDF-SHA256)
//! K_n     = HKDF-Expand(S_n, "ringspan/1 record key", 32)        AES-256-GCM key number n
//! S_{n+1} = HKDF-Expand(S_n, "ringspan/1 next secret", 32)
//! ```
//!
//! Record *i* sealed under key *n* uses nonce `0u32 ‖ i as u64 big-endian` (the counter
//! restarts at 0 with each key) and carries key phase `n mod 2` in its header. The sender moves
//! from `K_n` to `K_{n+1}` after [`RekeyLimits::records_per_key`] records or
//! [`RekeyLimits::rekey_after`] of time, whichever comes first; a time switch is skipped while
//! the current key has sealed nothing, so there is always a record between two switches and the
//! one phase bit is enough for the receiver to follow. A record whose phase differs from the
//! current one is opened with `K_{n+1}` (derived then: two HKDF expansions and a key schedule,
//! a few microseconds) at counter 0 and, only if it authenticates, the receiver moves on. So a
//! key switch costs no round trip, and an attacker flipping the phase bit only makes the record
//! fail. Old keys and secrets are forgotten at once (forward secrecy within a session). An idle
//! link may shed its expanded schedules and keep only the 32-byte key and secret per direction
//! (`shed_keys`); they are rebuilt at the next record.
//!
//! A counter never wraps: sealing at `u64::MAX` is refused ([`Limit::SendCounter`]), and a
//! receiver refuses a peer that uses one key for more than
//! [`RekeyLimits::reject_after_records`] records ([`Limit::PeerKeyUse`]).

use core::time::Duration;
use std::time::Instant;

use aws_lc_rs::hkdf;

use super::PublicKey;
use super::aead::{Backend, Key, NonceBytes};
use crate::error::{Error, Limit, Misuse};
use crate::limits::{
    MESSAGE_ALIGN, MESSAGE_HEADER_LEN, RECORD_HEADER_LEN, RECORD_PLAINTEXT_MAX, RECORDS_PER_KEY,
    RECORDS_PER_KEY_REJECT, REKEY_AFTER_MS,
};
use crate::wire::record::{Record, RecordHeader};

/// When keys change. The defaults come from `src/limits.rs`; tests shrink them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RekeyLimits {
    /// Records the sender seals under one key before switching to the next.
    pub records_per_key: u64,
    /// Age of a sending key after which the sender switches at its next timeout.
    pub rekey_after: Duration,
    /// Records the receiver opens under one key before refusing the peer.
    pub reject_after_records: u64,
}

impl Default for RekeyLimits {
    fn default() -> Self {
        RekeyLimits {
            records_per_key: RECORDS_PER_KEY,
            rekey_after: Duration::from_millis(REKEY_AFTER_MS),
            reject_after_records: RECORDS_PER_KEY_REJECT,
        }
    }
}

const LABEL_KEY: &[u8] = b"ringspan/1 record key";
const LABEL_NEXT: &[u8] = b"ringspan/1 next secret";

/// One direction's keys: the current key's bytes and (while in use) its expanded schedule, and
/// the secret the next key derives from.
///
/// The schedule is a few hundred bytes of AES round keys and GHASH tables; an idle link sheds it
/// ([`RecordSealer::shed_keys`]) and keeps only the 64 secret bytes, and it is rebuilt at the
/// next record (about a microsecond). That is what lets a satellite hold very many idle client
/// links in little memory.
struct Chain {
    /// `K_n`.
    key: [u8; 32],
    /// `K_n` expanded; `None` after a shed, until the next record.
    schedule: Option<Box<Key>>,
    /// `S_{n+1}`, which `K_{n+1}` and `S_{n+2}` derive from.
    secret_next: [u8; 32],
    /// `n mod 2`.
    phase: bool,
    /// Counter of the next record under `K_n`.
    counter: u64,
}

impl Chain {
    fn new(split_key: &[u8; 32], handshake_hash: &[u8]) -> Result<Chain, Error> {
        let s0 = hkdf::Salt::new(hkdf::HKDF_SHA256, handshake_hash).extract(split_key);
        let mut chain =
            Chain { key: [0; 32], schedule: None, secret_next: [0; 32], phase: false, counter: 0 };
        expand(&s0, LABEL_KEY, &mut chain.key)?;
        expand(&s0, LABEL_NEXT, &mut chain.secret_next)?;
        // Built now, so a link's first record in either direction allocates nothing.
        chain.schedule = Some(Box::new(Key::new(Backend::fastest(), &chain.key)?));
        Ok(chain)
    }

    /// `K_n`'s schedule, built if it was shed.
    fn current(&mut self) -> Result<&Key, Error> {
        if self.schedule.is_none() {
            self.schedule = Some(Box::new(Key::new(Backend::fastest(), &self.key)?));
        }
        self.schedule.as_deref().ok_or(Error::Crypto("aes key"))
    }

    /// `K_{n+1}` and `S_{n+2}`.
    fn derive_next(&self) -> Result<([u8; 32], [u8; 32]), Error> {
        let s = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, &self.secret_next);
        let (mut key, mut secret) = ([0u8; 32], [0u8; 32]);
        expand(&s, LABEL_KEY, &mut key)?;
        expand(&s, LABEL_NEXT, &mut secret)?;
        Ok((key, secret))
    }

    /// Moves to `K_{n+1}`, given its bytes, `S_{n+2}`, and its schedule. The schedule goes
    /// into the existing box if there is one: a rekey allocates nothing.
    fn advance_to(&mut self, key: [u8; 32], secret: [u8; 32], schedule: Key) {
        self.key = key;
        self.secret_next = secret;
        match &mut self.schedule {
            Some(boxed) => **boxed = schedule,
            None => self.schedule = Some(Box::new(schedule)),
        }
        self.phase = !self.phase;
        self.counter = 0;
    }

    /// Moves from `K_n` to `K_{n+1}`.
    fn advance(&mut self) -> Result<(), Error> {
        let (mut key, mut secret) = self.derive_next()?;
        let schedule = Key::new(Backend::fastest(), &key)?;
        self.advance_to(key, secret, schedule);
        key.fill(0);
        secret.fill(0);
        Ok(())
    }

    fn shed(&mut self) {
        self.schedule = None;
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.key.fill(0);
        self.secret_next.fill(0);
        core::hint::black_box((&mut self.key, &mut self.secret_next));
    }
}

fn expand(prk: &hkdf::Prk, label: &[u8], out: &mut [u8; 32]) -> Result<(), Error> {
    let labels = [label];
    prk.expand(&labels, hkdf::HKDF_SHA256)
        .and_then(|okm| okm.fill(out))
        .map_err(|_| Error::Crypto("hkdf expand"))
}

/// The record nonce: four zero bytes and the 64-bit counter, big-endian (Noise's AESGCM
/// convention).
pub fn record_nonce(counter: u64) -> NonceBytes {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    bytes
}

/// Seals `body` in place under `key`, authenticating `aad`, and returns the tag. The one AEAD
/// call of the sending path (the known-answer tests go through it).
pub fn seal_in_place(
    key: &Key,
    nonce: NonceBytes,
    aad: &[u8],
    body: &mut [u8],
) -> Result<[u8; 16], Error> {
    key.seal_in_place(nonce, aad, body)
}

/// Opens `body` in place under `key`. The one AEAD call of the receiving path. On failure the
/// body holds garbage.
pub fn open_in_place(
    key: &Key,
    nonce: NonceBytes,
    aad: &[u8],
    tag: &[u8],
    body: &mut [u8],
) -> Result<(), Error> {
    key.open_in_place(nonce, aad, tag, body)
}

/// The sending half of a session's record layer.
pub struct RecordSealer {
    chain: Chain,
    /// [`RekeyLimits::records_per_key`] (each half keeps only the limits it uses: one pair per
    /// link, and a satellite has very many links).
    records_per_key: u64,
    /// [`RekeyLimits::rekey_after`].
    rekey_after: Duration,
    /// `None` when `rekey_after` reaches past what an `Instant` can hold: never.
    rekey_at: Option<Instant>,
    /// Records are framed and counted but not encrypted: only for the internal link between two
    /// workers of one process ([`record_layer_for_lane`]), whose bytes never leave it.
    plain: bool,
}

impl RecordSealer {
    pub(crate) fn new(
        split_key: &[u8; 32],
        handshake_hash: &[u8],
        limits: RekeyLimits,
        now: Instant,
    ) -> Result<RecordSealer, Error> {
        let chain = Chain::new(split_key, handshake_hash)?;
        Ok(RecordSealer {
            chain,
            records_per_key: limits.records_per_key,
            rekey_after: limits.rekey_after,
            rekey_at: now.checked_add(limits.rekey_after),
            plain: false,
        })
    }

    /// Seals one record in place. `buf` holds, from its start, room for the 8-byte header, the
    /// `plaintext_len` plaintext bytes (already written at offset 8), and room for the 16-byte
    /// tag. Writes the header and the tag, encrypts the plaintext, and returns the record's
    /// length on the wire. Allocates nothing.
    ///
    /// `plaintext_len` must be a valid record length: at least one message header, at most
    /// [`RECORD_PLAINTEXT_MAX`], a multiple of 8.
    pub fn seal(&mut self, buf: &mut [u8], plaintext_len: usize) -> Result<usize, Error> {
        if !(MESSAGE_HEADER_LEN..=RECORD_PLAINTEXT_MAX).contains(&plaintext_len)
            || !plaintext_len.is_multiple_of(MESSAGE_ALIGN)
        {
            return Err(Misuse::RecordLength(plaintext_len).into());
        }
        let header = RecordHeader { plaintext_len, key_phase: self.chain.phase };
        let wire_len = header.wire_len();
        if buf.len() < wire_len {
            return Err(Misuse::BufferTooSmall { needed: wire_len, actual: buf.len() }.into());
        }
        // The hard stop comes first: with volume rekeying disabled (`records_per_key` at
        // u64::MAX) the last nonce is never used and sealing stops rather than wrapping.
        if self.chain.counter == u64::MAX {
            return Err(Limit::SendCounter.into());
        }
        // At least one record per key, so that two switches never happen without a record
        // between them (see `handle_timeout`).
        if self.chain.counter >= self.records_per_key.max(1) {
            self.chain.advance()?;
        }
        let counter = self.chain.counter;
        let header = RecordHeader { plaintext_len, key_phase: self.chain.phase };
        header.emit(buf);
        let (aad, rest) = buf[..wire_len].split_at_mut(RECORD_HEADER_LEN);
        let (body, tag) = rest.split_at_mut(plaintext_len);
        if self.plain {
            tag.fill(0);
        } else {
            let sealed = seal_in_place(self.chain.current()?, record_nonce(counter), aad, body)?;
            tag.copy_from_slice(&sealed);
        }
        self.chain.counter = counter + 1;
        Ok(wire_len)
    }

    /// Switches to the next key if the current one is older than [`RekeyLimits::rekey_after`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), Error> {
        if self.rekey_at.is_some_and(|at| now >= at) {
            // A key that sealed nothing has protected nothing: keep it. Switching again would
            // move the sender two keys ahead of the receiver, which would see the same phase
            // bit and open with the wrong key. So there is always a record between switches.
            if self.chain.counter > 0 {
                self.chain.advance()?;
            }
            self.rekey_at = now.checked_add(self.rekey_after);
        }
        Ok(())
    }

    /// When the current key reaches its age limit (`None`: never).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rekey_at
    }

    /// Drops the expanded key schedule, keeping only the key's bytes: for an idle link. The
    /// next [`RecordSealer::seal`] rebuilds it (about a microsecond, one allocation).
    pub fn shed_keys(&mut self) {
        self.chain.shed();
    }

    /// How many keys this direction has gone through: the key phase of the next record is its
    /// lowest bit. For tests and metrics.
    pub fn key_phase(&self) -> bool {
        self.chain.phase
    }

    /// Sets the counter of the next record. Only tests use it, to reach the end of the counter
    /// space without sealing 2^64 records.
    #[cfg(test)]
    pub(crate) fn set_counter_for_test(&mut self, counter: u64) {
        self.chain.counter = counter;
    }
}

/// The receiving half of a session's record layer.
pub struct RecordOpener {
    chain: Chain,
    /// [`RekeyLimits::reject_after_records`].
    reject_after_records: u64,
    /// See [`RecordSealer`]'s.
    plain: bool,
}

impl RecordOpener {
    pub(crate) fn new(
        split_key: &[u8; 32],
        handshake_hash: &[u8],
        limits: RekeyLimits,
    ) -> Result<RecordOpener, Error> {
        let chain = Chain::new(split_key, handshake_hash)?;
        Ok(RecordOpener { chain, reject_after_records: limits.reject_after_records, plain: false })
    }

    /// Opens the record at the start of `record` in place and returns its plaintext (a slice of
    /// `record`). `record` may hold more bytes after the record; the caller learns the record's
    /// length from [`crate::wire::record::peek_wire_len`].
    ///
    /// A record that was tampered with, replayed, reordered, or follows a dropped one fails
    /// with [`Error::Decrypt`]; so does one sealed under any other key. A malformed header or
    /// a truncated record fails with [`Error::Malformed`] before any cryptography. After any
    /// failure the link must be closed: the expected counter has not moved and the record's
    /// bytes are garbage.
    pub fn open<'a>(&mut self, record: &'a mut [u8]) -> Result<&'a mut [u8], Error> {
        let header = Record::new_checked(&*record)?.header();
        let switching = header.key_phase != self.chain.phase;
        let counter = if switching { 0 } else { self.chain.counter };
        if counter >= self.reject_after_records || counter == u64::MAX {
            return Err(Limit::PeerKeyUse(counter).into());
        }
        let (aad, rest) = record[..header.wire_len()].split_at_mut(RECORD_HEADER_LEN);
        let (body, tag) = rest.split_at_mut(header.plaintext_len);
        if self.plain {
            // Framed and counted only (an internal link: see `record_layer_for_lane`).
            if switching {
                self.chain.phase = header.key_phase;
            }
        } else if switching {
            // The peer moved to the next key: derive it, and keep it only if the record opens.
            let (mut key, mut secret) = self.chain.derive_next()?;
            let schedule = Key::new(Backend::fastest(), &key)?;
            let opened = open_in_place(&schedule, record_nonce(counter), aad, tag, body);
            if opened.is_ok() {
                self.chain.advance_to(key, secret, schedule);
            }
            key.fill(0);
            secret.fill(0);
            opened?;
        } else {
            open_in_place(self.chain.current()?, record_nonce(counter), aad, tag, body)?;
        }
        self.chain.counter = counter + 1;
        Ok(body)
    }

    /// The key phase the receiver is at. For tests and metrics.
    pub fn key_phase(&self) -> bool {
        self.chain.phase
    }

    /// Drops the expanded key schedule, keeping only the key's bytes: for an idle link. The
    /// next [`RecordOpener::open`] rebuilds it.
    pub fn shed_keys(&mut self) {
        self.chain.shed();
    }

    /// Sets the counter of the next expected record. Only tests use it.
    #[cfg(test)]
    pub(crate) fn set_counter_for_test(&mut self, counter: u64) {
        self.chain.counter = counter;
    }
}

/// Fresh random secrets for the two directions of an internal link between two workers of one
/// process (DESIGN 7c.3): drawn from the operating system's generator each time, so no key
/// repeats across links or runs. Each worker keys its sealer with the secret of its direction and
/// its opener with the other's ([`record_layer_for_lane`]).
pub fn lane_secrets() -> Result<[[u8; 32]; 2], Error> {
    let mut secrets = [[0u8; 32]; 2];
    for secret in &mut secrets {
        aws_lc_rs::rand::fill(secret).map_err(|_| Error::Crypto("random source failed"))?;
    }
    Ok(secrets)
}

/// The record layer of one end of an internal link, keyed from [`lane_secrets`]: `send` for
/// this end's direction, `receive` for the other's. The bytes never leave the process (they go
/// through memory shared by two threads of it), so records are framed and counted as on any
/// link, but not encrypted: an internal link is a link like any other to every layer above, at
/// the cost of no AES pass. Never use it for bytes that leave the process.
pub fn record_layer_for_lane(
    send: &[u8; 32],
    receive: &[u8; 32],
    now: Instant,
) -> Result<(RecordSealer, RecordOpener), Error> {
    const LANE: [u8; 32] = *b"ringspan/1 lane between workers!";
    let limits = RekeyLimits::default();
    let mut sealer = RecordSealer::new(send, &LANE, limits, now)?;
    let mut opener = RecordOpener::new(receive, &LANE, limits)?;
    sealer.plain = true;
    opener.plain = true;
    Ok((sealer, opener))
}

/// The record layer of the node's end of a local link (an application attached through the
/// node's attach socket, DESIGN 7g): records framed and counted exactly as on any link, with a
/// zero tag and no encryption, and no rekeying by age or volume (the key phase stays 0 on our
/// side and follows the other end's on its). The bytes never leave the host: the socket file's
/// mode and the peer's credentials are what is trusted. Never use it for bytes that leave the
/// host.
pub fn record_layer_for_attach(now: Instant) -> Result<(RecordSealer, RecordOpener), Error> {
    const ATTACH: [u8; 32] = *b"ringspan/1 attach: local links!!";
    let limits = RekeyLimits {
        records_per_key: u64::MAX,
        rekey_after: Duration::MAX,
        reject_after_records: u64::MAX,
    };
    let mut sealer = RecordSealer::new(&ATTACH, &ATTACH, limits, now)?;
    let mut opener = RecordOpener::new(&ATTACH, &ATTACH, limits)?;
    sealer.plain = true;
    opener.plain = true;
    Ok((sealer, opener))
}

/// The key a local link's peer is known by: SHA-256 over a domain string, the node's own key
/// and `counter` (one number per local link the engine made), so each local link has a key of
/// its own, whose private key no one knows (so no handshake can prove it).
pub fn attach_peer_key(node: &PublicKey, counter: u64) -> PublicKey {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"ringspan/1 attached application");
    ctx.update(&node.0);
    ctx.update(&counter.to_le_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(ctx.finish().as_ref());
    PublicKey(key)
}

/// A sealer and an opener keyed from raw secrets instead of a handshake, for fuzzing and
/// benchmarks. **Dangerous**: keys that do not come from a fresh handshake may repeat across
/// runs, and a repeated (key, nonce) pair breaks AES-GCM. Never use it on a network.
pub fn dangerous_record_layer_from_secrets(
    send_secret: &[u8; 32],
    receive_secret: &[u8; 32],
    limits: RekeyLimits,
    now: Instant,
) -> Result<(RecordSealer, RecordOpener), Error> {
    const NO_HASH: [u8; 32] = [0; 32];
    Ok((
        RecordSealer::new(send_secret, &NO_HASH, limits, now)?,
        RecordOpener::new(receive_secret, &NO_HASH, limits)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Malformed;
    use crate::limits::RECORD_TAG_LEN;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn nonce(bytes: &[u8]) -> NonceBytes {
        bytes.try_into().unwrap()
    }

    /// NIST SP 800-38D / the GCM specification's AES-256 test cases 13, 14 and 16 (the last
    /// with associated data), through the seal and open functions the record layer uses.
    #[test]
    #[allow(clippy::type_complexity)] // One table row per test case.
    fn aes_256_gcm_known_answers() {
        let zero_key = [0u8; 32];
        let zero_iv = [0u8; 12];
        let k16 = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let iv16 = hex("cafebabefacedbaddecaf888");
        let cases: [(&[u8], &[u8], &str, &str, &str, &str); 3] = [
            (&zero_key, &zero_iv, "", "", "", "530f8afbc74536b9a963b4f1c4cb738b"),
            (
                &zero_key,
                &zero_iv,
                "",
                "00000000000000000000000000000000",
                "cea7403d4d606b6e074ec5d3baf39d18",
                "d0d1c8a799996bf0265b98b5d48ab919",
            ),
            (
                &k16,
                &iv16,
                "feedfacedeadbeeffeedfacedeadbeefabaddad2",
                "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
                 1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
                 8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
                "76fc6ece0f4e1768cddf8853bb2d551b",
            ),
        ];
        for (backend, (k, iv, aad, plain, cipher, tag)) in
            Backend::ALL.into_iter().flat_map(|b| cases.map(|case| (b, case)))
        {
            let key = Key::new(backend, k.try_into().unwrap()).unwrap();
            assert_eq!(key.backend(), backend);
            let (aad, plain, cipher, tag) = (hex(aad), hex(plain), hex(cipher), hex(tag));
            let mut body = plain.clone();
            let sealed = seal_in_place(&key, nonce(iv), &aad, &mut body).unwrap();
            assert_eq!(body, cipher, "{backend:?}");
            assert_eq!(&sealed[..], &tag[..], "{backend:?}");
            open_in_place(&key, nonce(iv), &aad, &tag, &mut body).unwrap();
            assert_eq!(body, plain);
            // One flipped tag bit is refused, and so is a short tag.
            let mut bad_tag = tag.clone();
            bad_tag[0] ^= 1;
            let mut body = cipher.clone();
            assert_eq!(
                open_in_place(&key, nonce(iv), &aad, &bad_tag, &mut body),
                Err(Error::Decrypt)
            );
            assert_eq!(
                open_in_place(&key, nonce(iv), &aad, &tag[..15], &mut body),
                Err(Error::Decrypt)
            );
        }
    }

    #[test]
    fn nonce_is_zero_then_big_endian_counter() {
        let key = Key::new(Backend::fastest(), &[9u8; 32]).unwrap();
        let mut a = [0u8; 16];
        let mut b = [0u8; 16];
        let ta = seal_in_place(&key, record_nonce(0x0102_0304_0506_0708), b"", &mut a).unwrap();
        let explicit = nonce(&[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let tb = seal_in_place(&key, explicit, b"", &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(ta, tb);
    }

    fn pair(limits: RekeyLimits) -> (RecordSealer, RecordOpener, Instant) {
        let now = start();
        let (s, o) = dangerous_record_layer_from_secrets(&[1; 32], &[1; 32], limits, now).unwrap();
        (s, o, now)
    }

    /// Tests need one real instant to offset virtual time from.
    #[allow(clippy::disallowed_methods)]
    fn start() -> Instant {
        Instant::now()
    }

    fn record(sealer: &mut RecordSealer, fill: u8) -> Vec<u8> {
        let mut buf = vec![fill; RECORD_HEADER_LEN + 32 + RECORD_TAG_LEN];
        let len = sealer.seal(&mut buf, 32).unwrap();
        assert_eq!(len, buf.len());
        buf
    }

    #[test]
    fn counter_wrap_refused() {
        let limits = RekeyLimits {
            records_per_key: u64::MAX,
            rekey_after: Duration::MAX,
            reject_after_records: u64::MAX,
        };
        let (mut sealer, mut opener, start) = pair(limits);
        // Time-based rekeying is off too: its deadline is past what an Instant can hold.
        assert_eq!(sealer.poll_timeout(), None);
        sealer.handle_timeout(start + Duration::from_secs(1 << 40)).unwrap();
        sealer.set_counter_for_test(u64::MAX - 2);
        opener.set_counter_for_test(u64::MAX - 2);
        for fill in [1, 2] {
            let mut rec = record(&mut sealer, fill);
            assert_eq!(opener.open(&mut rec).unwrap(), &[fill; 32][..]);
        }
        // The last nonce value, u64::MAX, is never used: sealing stops, and so does opening.
        let mut buf = [0u8; 56];
        assert_eq!(sealer.seal(&mut buf, 32), Err(Limit::SendCounter.into()));
        assert_eq!(sealer.seal(&mut buf, 32), Err(Limit::SendCounter.into()));
        RecordHeader { plaintext_len: 32, key_phase: false }.emit(&mut buf);
        assert_eq!(opener.open(&mut buf), Err(Limit::PeerKeyUse(u64::MAX).into()));
    }

    #[test]
    fn peer_overusing_a_key_refused() {
        let limits =
            RekeyLimits { records_per_key: 10, reject_after_records: 5, ..RekeyLimits::default() };
        let (mut sealer, mut opener, _) = pair(limits);
        for _ in 0..5 {
            let mut rec = record(&mut sealer, 0);
            opener.open(&mut rec).unwrap();
        }
        let mut rec = record(&mut sealer, 0);
        assert_eq!(opener.open(&mut rec), Err(Limit::PeerKeyUse(5).into()));
    }

    #[test]
    fn rekey_by_time_switches_phase_without_a_pause() {
        let limits =
            RekeyLimits { rekey_after: Duration::from_secs(120), ..RekeyLimits::default() };
        let (mut sealer, mut opener, start) = pair(limits);
        assert_eq!(sealer.poll_timeout(), Some(start + Duration::from_secs(120)));
        let mut first = record(&mut sealer, 1);
        sealer.handle_timeout(start + Duration::from_secs(119)).unwrap();
        assert!(!sealer.key_phase());
        sealer.handle_timeout(start + Duration::from_secs(120)).unwrap();
        assert!(sealer.key_phase());
        assert_eq!(sealer.poll_timeout(), Some(start + Duration::from_secs(240)));
        let mut second = record(&mut sealer, 2);
        assert_eq!(second[4], 1, "key phase bit set");
        assert_eq!(opener.open(&mut first).unwrap(), &[1; 32][..]);
        assert_eq!(opener.open(&mut second).unwrap(), &[2; 32][..]);
        assert!(opener.key_phase());
    }

    #[test]
    fn shed_keys_are_rebuilt_at_the_next_record_across_rekeys() {
        let limits = RekeyLimits { records_per_key: 3, ..RekeyLimits::default() };
        let (mut sealer, mut opener, _) = pair(limits);
        for i in 0..20u8 {
            if i % 2 == 0 {
                sealer.shed_keys();
            }
            if i % 3 == 0 {
                opener.shed_keys();
            }
            let mut wire = record(&mut sealer, i);
            let plaintext = opener.open(&mut wire).expect("opens after a shed");
            assert!(plaintext.iter().all(|&b| b == i));
        }
        assert!(sealer.key_phase() == opener.key_phase());
        // A flipped phase bit still fails, and leaves the receiver where it was.
        let mut wire = record(&mut sealer, 99);
        wire[4] ^= 1;
        opener.shed_keys();
        assert!(opener.open(&mut wire).is_err());
    }

    #[test]
    fn an_idle_sender_never_gets_two_keys_ahead() {
        let limits =
            RekeyLimits { rekey_after: Duration::from_secs(120), ..RekeyLimits::default() };
        let (mut sealer, mut opener, start) = pair(limits);
        let mut first = record(&mut sealer, 1);
        assert_eq!(opener.open(&mut first).unwrap(), &[1; 32][..]);
        // Three deadlines pass with no record: one switch (the used key), then none.
        for minutes in [2, 4, 6] {
            sealer.handle_timeout(start + Duration::from_secs(60 * minutes)).unwrap();
            assert!(sealer.key_phase(), "after {minutes} min");
        }
        let mut second = record(&mut sealer, 2);
        assert_eq!(opener.open(&mut second).unwrap(), &[2; 32][..]);
        // With a volume limit of 0 (treated as 1), every record has its own key.
        let limits = RekeyLimits { records_per_key: 0, ..RekeyLimits::default() };
        let (mut sealer, mut opener, start) = pair(limits);
        for n in 0..6u8 {
            sealer.handle_timeout(start + limits.rekey_after * u32::from(n)).unwrap();
            let mut rec = record(&mut sealer, n);
            assert_eq!(rec[4], n % 2, "record {n}");
            assert_eq!(opener.open(&mut rec).unwrap(), &[n; 32][..]);
        }
    }

    #[test]
    fn bad_lengths_and_small_buffers_refused() {
        let (mut sealer, _, _) = pair(RekeyLimits::default());
        let mut buf = vec![0u8; RECORD_HEADER_LEN + RECORD_PLAINTEXT_MAX + RECORD_TAG_LEN + 8];
        for len in [0, 8, 24, 33, RECORD_PLAINTEXT_MAX + 8] {
            assert_eq!(sealer.seal(&mut buf, len), Err(Misuse::RecordLength(len).into()));
        }
        assert_eq!(
            sealer.seal(&mut buf[..55], 32),
            Err(Misuse::BufferTooSmall { needed: 56, actual: 55 }.into())
        );
        assert_eq!(sealer.seal(&mut buf, RECORD_PLAINTEXT_MAX), Ok(RECORD_PLAINTEXT_MAX + 24));
    }

    #[test]
    fn flipped_phase_bit_refused() {
        let (mut sealer, mut opener, _) = pair(RekeyLimits::default());
        let mut rec = record(&mut sealer, 3);
        rec[4] ^= 1;
        assert_eq!(opener.open(&mut rec), Err(Error::Decrypt));
        // The receiver did not move to the next key.
        assert!(!opener.key_phase());
    }

    #[test]
    fn malformed_header_refused_before_crypto() {
        let (mut sealer, mut opener, _) = pair(RekeyLimits::default());
        let mut rec = record(&mut sealer, 3);
        assert_eq!(
            opener.open(&mut rec[..50]),
            Err(Malformed::RecordTruncated { expected: 56, actual: 50 }.into())
        );
        // The counter did not move: the intact record still opens.
        assert_eq!(opener.open(&mut rec).unwrap(), &[3; 32][..]);
    }

    #[test]
    fn a_local_links_records_carry_a_zero_tag_and_never_rekey() {
        let now = start();
        let (mut sealer, mut opener) = record_layer_for_attach(now).unwrap();
        assert_eq!(sealer.poll_timeout(), None, "no rekey by age");
        let mut first = record(&mut sealer, 5);
        // The header says 32 + 16 bytes, key phase 0; the plaintext lies as it is; the tag is 0.
        assert_eq!(&first[..8], &[48, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&first[8..40], &[5; 32][..]);
        assert_eq!(&first[40..], &[0; 16][..]);
        assert_eq!(opener.open(&mut first).unwrap(), &[5; 32][..]);
        // A record built by hand with the other key phase opens too: the opener follows it.
        let mut by_hand = vec![48, 0, 0, 0, 1, 0, 0, 0];
        by_hand.extend_from_slice(&[6; 32]);
        by_hand.extend_from_slice(&[0; 16]);
        assert_eq!(opener.open(&mut by_hand).unwrap(), &[6; 32][..]);
        sealer.handle_timeout(now + Duration::from_secs(1 << 30)).unwrap();
        assert!(!sealer.key_phase());
    }

    #[test]
    fn each_local_link_has_a_key_of_its_own() {
        let node = PublicKey([7; 32]);
        let a = attach_peer_key(&node, 0);
        assert_ne!(a, attach_peer_key(&node, 1));
        assert_ne!(a, attach_peer_key(&PublicKey([8; 32]), 0));
        assert_eq!(a, attach_peer_key(&node, 0));
    }

    #[test]
    fn a_lanes_records_are_framed_and_counted_but_not_encrypted() {
        let [a, b] = lane_secrets().unwrap();
        let now = start();
        let (mut sealer, _) = record_layer_for_lane(&a, &b, now).unwrap();
        let (_, mut opener) = record_layer_for_lane(&b, &a, now).unwrap();
        let mut first = record(&mut sealer, 3);
        // The plaintext lies as it is, the tag is zeros: such a record can never pass for an
        // encrypted one (a network link's opener refuses it).
        assert_eq!(&first[8..40], &[3; 32][..]);
        assert_eq!(&first[40..], &[0; 16][..]);
        let (_, mut keyed) =
            dangerous_record_layer_from_secrets(&a, &a, RekeyLimits::default(), now).unwrap();
        assert_eq!(keyed.open(&mut first.clone()), Err(Error::Decrypt));
        assert_eq!(opener.open(&mut first).unwrap(), &[3; 32][..]);
        // The next one opens too (each is counted, as on any link).
        let mut second = record(&mut sealer, 4);
        assert_eq!(opener.open(&mut second).unwrap(), &[4; 32][..]);
    }
}
