//! AES-256-GCM, on whichever implementation is fastest on this CPU.
//!
//! Two well-kept implementations, one interface. Which is faster depends on the CPU:
//!
//! - **aws-lc-rs** has an AVX-512 VAES/VPCLMULQDQ path: ~20 GB/s at 16 KiB on a Zen 5 core that
//!   exposes AVX-512, about twice ring there (the project's reference measurements, see
//!   `../shared/reference/peers.md` §3.2).
//! - **ring** has a VAES/AVX2 path that aws-lc-rs 1.19 lacks: on a core with VAES but without
//!   AVX-512 (our 2-vCPU EPYC VM), ring sealed 64 KiB at 6.0 GiB/s and aws-lc-rs at 2.95 GiB/s
//!   in one quiet run of `cargo bench --bench cipher -- backend` (under load, 4.6 vs 3.2).
//!
//! [`Backend::fastest`] picks aws-lc-rs where AVX-512 with VAES is available and ring
//! elsewhere, once per process. Both produce the same bytes (the known-answer tests run through
//! each), so two nodes on different CPUs interoperate.

use std::sync::OnceLock;

use crate::error::Error;

/// An AES-256-GCM implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// aws-lc-rs (AWS-LC).
    AwsLc,
    /// ring.
    Ring,
}

impl Backend {
    /// Both backends, for tests and benches.
    pub const ALL: [Backend; 2] = [Backend::AwsLc, Backend::Ring];

    /// The faster backend on this CPU (decided once per process).
    pub fn fastest() -> Backend {
        static CHOICE: OnceLock<Backend> = OnceLock::new();
        *CHOICE.get_or_init(detect)
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> Backend {
    let wide = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("vaes")
        && std::arch::is_x86_feature_detected!("vpclmulqdq");
    if wide { Backend::AwsLc } else { Backend::Ring }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect() -> Backend {
    Backend::AwsLc
}

/// A 96-bit GCM nonce.
pub type NonceBytes = [u8; 12];

/// An AES-256-GCM key bound to one backend.
pub struct Key(Inner);

// Both variants are a few hundred bytes of key schedule; keys are made at handshake and rekey
// and never moved on the data path, so they stay inline rather than boxed.
#[allow(clippy::large_enum_variant)]
enum Inner {
    AwsLc(aws_lc_rs::aead::LessSafeKey),
    Ring(ring::aead::LessSafeKey),
}

impl Key {
    /// A key from its 32 bytes, on `backend`.
    pub fn new(backend: Backend, bytes: &[u8; 32]) -> Result<Key, Error> {
        let inner = match backend {
            Backend::AwsLc => {
                aws_lc_rs::aead::UnboundKey::new(&aws_lc_rs::aead::AES_256_GCM, bytes)
                    .map(|key| Inner::AwsLc(aws_lc_rs::aead::LessSafeKey::new(key)))
                    .map_err(|_| Error::Crypto("aes key"))
            }
            Backend::Ring => ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, bytes)
                .map(|key| Inner::Ring(ring::aead::LessSafeKey::new(key)))
                .map_err(|_| Error::Crypto("aes key")),
        }?;
        Ok(Key(inner))
    }

    /// Which backend the key runs on.
    pub fn backend(&self) -> Backend {
        match self.0 {
            Inner::AwsLc(_) => Backend::AwsLc,
            Inner::Ring(_) => Backend::Ring,
        }
    }

    /// Encrypts `body` in place, authenticating `aad` too, and returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: NonceBytes,
        aad: &[u8],
        body: &mut [u8],
    ) -> Result<[u8; 16], Error> {
        let mut out = [0u8; 16];
        match &self.0 {
            Inner::AwsLc(key) => {
                let nonce = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
                let tag = key
                    .seal_in_place_separate_tag(nonce, aws_lc_rs::aead::Aad::from(aad), body)
                    .map_err(|_| Error::Crypto("aes-gcm seal"))?;
                out.copy_from_slice(tag.as_ref());
            }
            Inner::Ring(key) => {
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                let tag = key
                    .seal_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), body)
                    .map_err(|_| Error::Crypto("aes-gcm seal"))?;
                out.copy_from_slice(tag.as_ref());
            }
        }
        Ok(out)
    }

    /// Decrypts `body` in place if `tag` authenticates it and `aad`; otherwise
    /// [`Error::Decrypt`], and `body` holds garbage.
    pub fn open_in_place(
        &self,
        nonce: NonceBytes,
        aad: &[u8],
        tag: &[u8],
        body: &mut [u8],
    ) -> Result<(), Error> {
        let result = match &self.0 {
            Inner::AwsLc(key) => {
                let nonce = aws_lc_rs::aead::Nonce::assume_unique_for_key(nonce);
                key.open_in_place_separate_tag(nonce, aws_lc_rs::aead::Aad::from(aad), tag, body)
                    .map(|_| ())
                    .map_err(|_| ())
            }
            Inner::Ring(key) => {
                let tag = ring::aead::Tag::try_from(tag).map_err(|_| Error::Decrypt)?;
                let nonce = ring::aead::Nonce::assume_unique_for_key(nonce);
                key.open_in_place_separate_tag(nonce, ring::aead::Aad::from(aad), tag, body, 0..)
                    .map(|_| ())
                    .map_err(|_| ())
            }
        };
        result.map_err(|()| Error::Decrypt)
    }
}
