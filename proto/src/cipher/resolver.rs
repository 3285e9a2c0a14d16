//! A `snow` crypto resolver backed by aws-lc-rs: X25519, AES-256-GCM and SHA-256 (with HMAC).
//!
//! snow's default resolver is pure Rust (curve25519-dalek, RustCrypto aes-gcm 0.10, sha2); on
//! our machines aws-lc-rs does X25519 about twice as fast, which is most of a handshake's cost.
//! The resolver also carries the node's static key already parsed, so that building a handshake
//! does not pay one more scalar multiplication to re-derive the static public key.

use std::sync::Arc;

use aws_lc_rs::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, UnparsedPublicKey};
use aws_lc_rs::{digest, hmac};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};

use super::identity::{Identity, KEY_LEN};

/// Resolves `Noise_*_25519_AESGCM_SHA256` to aws-lc-rs primitives. Other choices resolve to
/// `None` (snow then refuses to build the handshake).
pub struct AwsLcResolver {
    static_key: Option<(Arc<agreement::PrivateKey>, [u8; KEY_LEN], [u8; KEY_LEN])>,
}

impl AwsLcResolver {
    /// A resolver that knows `identity`'s parsed static key, so that `local_private_key` with
    /// the same bytes reuses it.
    pub fn with_identity(identity: &Identity) -> AwsLcResolver {
        AwsLcResolver {
            static_key: Some((
                Arc::clone(identity.parsed()),
                *identity.private_key().as_bytes(),
                identity.public_key().0,
            )),
        }
    }

    /// A resolver with no cached key.
    pub fn new() -> AwsLcResolver {
        AwsLcResolver { static_key: None }
    }
}

impl Default for AwsLcResolver {
    fn default() -> Self {
        AwsLcResolver::new()
    }
}

impl CryptoResolver for AwsLcResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(AwsLcRandom))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(X25519 {
                key: None,
                private: [0; KEY_LEN],
                public: [0; KEY_LEN],
                cached: self.static_key.clone(),
            })),
            _ => None,
        }
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        match choice {
            HashChoice::SHA256 => Some(Box::new(Sha256(digest::Context::new(&digest::SHA256)))),
            _ => None,
        }
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        match choice {
            CipherChoice::AESGCM => Some(Box::new(AesGcm(None))),
            _ => None,
        }
    }
}

struct AwsLcRandom;

impl Random for AwsLcRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        aws_lc_rs::rand::fill(dest).map_err(|_| snow::Error::Rng)
    }
}

/// X25519 through aws-lc-rs. `cached` is the node's static key, parsed once.
struct X25519 {
    key: Option<Arc<agreement::PrivateKey>>,
    private: [u8; KEY_LEN],
    public: [u8; KEY_LEN],
    cached: Option<(Arc<agreement::PrivateKey>, [u8; KEY_LEN], [u8; KEY_LEN])>,
}

impl X25519 {
    fn clear(&mut self) {
        self.key = None;
        self.private.fill(0);
        self.public.fill(0);
    }
}

impl Drop for X25519 {
    fn drop(&mut self) {
        self.private.fill(0);
        core::hint::black_box(&mut self.private);
    }
}

/// Compares without an early exit, so the time taken does not depend on where keys differ.
fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Dh for X25519 {
    fn name(&self) -> &'static str {
        "25519"
    }

    fn pub_len(&self) -> usize {
        KEY_LEN
    }

    fn priv_len(&self) -> usize {
        KEY_LEN
    }

    fn set(&mut self, privkey: &[u8]) {
        if let Some((key, private, public)) = &self.cached
            && equal_in_constant_time(privkey, private)
        {
            self.key = Some(Arc::clone(key));
            self.private = *private;
            self.public = *public;
            return;
        }
        // snow hands us only keys it checked to be 32 bytes. Should parsing fail anyway, leave
        // no key: every later DH then fails and so does the handshake, never silently.
        self.clear();
        let Ok(key) = agreement::PrivateKey::from_private_key(&agreement::X25519, privkey) else {
            return;
        };
        let Ok(public) = key.compute_public_key() else {
            return;
        };
        if public.as_ref().len() != KEY_LEN || privkey.len() != KEY_LEN {
            return;
        }
        self.private.copy_from_slice(privkey);
        self.public.copy_from_slice(public.as_ref());
        self.key = Some(Arc::new(key));
    }

    fn generate(&mut self, _rng: &mut dyn Random) -> Result<(), snow::Error> {
        use aws_lc_rs::encoding::AsBigEndian as _;

        // aws-lc draws from its own generator (the same one `AwsLcRandom` uses).
        self.clear();
        let key =
            agreement::PrivateKey::generate(&agreement::X25519).map_err(|_| snow::Error::Rng)?;
        let public = key.compute_public_key().map_err(|_| snow::Error::Rng)?;
        let seed: aws_lc_rs::encoding::Curve25519SeedBin<'_> =
            key.as_be_bytes().map_err(|_| snow::Error::Rng)?;
        if public.as_ref().len() != KEY_LEN || seed.as_ref().len() != KEY_LEN {
            return Err(snow::Error::Rng);
        }
        self.private.copy_from_slice(seed.as_ref());
        self.public.copy_from_slice(public.as_ref());
        self.key = Some(Arc::new(key));
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        &self.private
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        let key = self.key.as_ref().ok_or(snow::Error::Dh)?;
        // snow passes its whole key buffer (longer than a 25519 key); the key is its start.
        let pubkey = pubkey.get(..KEY_LEN).ok_or(snow::Error::Dh)?;
        let out = out.get_mut(..KEY_LEN).ok_or(snow::Error::Dh)?;
        // aws-lc refuses a public key of the wrong length and a low-order point (an all-zero
        // shared secret), so a peer cannot force a known shared secret.
        agreement::agree(
            key,
            UnparsedPublicKey::new(&agreement::X25519, pubkey),
            snow::Error::Dh,
            |secret| {
                if secret.len() != KEY_LEN {
                    return Err(snow::Error::Dh);
                }
                out.copy_from_slice(secret);
                Ok(())
            },
        )
    }
}

/// SHA-256, with HMAC from aws-lc-rs rather than snow's generic construction over `input`.
struct Sha256(digest::Context);

impl Hash for Sha256 {
    fn name(&self) -> &'static str {
        "SHA256"
    }

    fn block_len(&self) -> usize {
        64
    }

    fn hash_len(&self) -> usize {
        32
    }

    fn reset(&mut self) {
        self.0 = digest::Context::new(&digest::SHA256);
    }

    fn input(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn result(&mut self, out: &mut [u8]) {
        let done = self.0.clone().finish();
        out[..32].copy_from_slice(done.as_ref());
    }

    fn hmac(&mut self, key: &[u8], data: &[u8], out: &mut [u8]) {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
        out[..32].copy_from_slice(tag.as_ref());
    }
}

/// AES-256-GCM with Noise's nonce: 4 zero bytes and the 64-bit counter, big-endian.
struct AesGcm(Option<LessSafeKey>);

const TAG_LEN: usize = 16;

impl Cipher for AesGcm {
    fn name(&self) -> &'static str {
        "AESGCM"
    }

    fn set(&mut self, key: &[u8; 32]) {
        self.0 = UnboundKey::new(&aead::AES_256_GCM, key).ok().map(LessSafeKey::new);
    }

    fn encrypt(&self, nonce: u64, authtext: &[u8], plaintext: &[u8], out: &mut [u8]) -> usize {
        let len = plaintext.len();
        out[..len].copy_from_slice(plaintext);
        let sealed = self.0.as_ref().and_then(|key| {
            key.seal_in_place_separate_tag(noise_nonce(nonce), Aad::from(authtext), &mut out[..len])
                .ok()
        });
        match sealed {
            Some(tag) => out[len..len + TAG_LEN].copy_from_slice(tag.as_ref()),
            // No key or a library failure: emit zeros, which the peer refuses. The trait gives
            // no way to return an error; failing closed beats panicking.
            None => out[..len + TAG_LEN].fill(0),
        }
        len + TAG_LEN
    }

    fn decrypt(
        &self,
        nonce: u64,
        authtext: &[u8],
        ciphertext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, snow::Error> {
        let key = self.0.as_ref().ok_or(snow::Error::Decrypt)?;
        let len = ciphertext.len().checked_sub(TAG_LEN).ok_or(snow::Error::Decrypt)?;
        let (body, tag) = ciphertext.split_at(len);
        let out = out.get_mut(..len).ok_or(snow::Error::Decrypt)?;
        key.open_separate_gather(noise_nonce(nonce), Aad::from(authtext), body, tag, out)
            .map_err(|_| snow::Error::Decrypt)?;
        Ok(len)
    }
}

fn noise_nonce(counter: u64) -> Nonce {
    let mut bytes = [0u8; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::identity::PrivateKey;
    use crate::cipher::identity::tests::hex32;

    fn dh_from(private: [u8; 32]) -> Box<dyn Dh> {
        let mut dh = AwsLcResolver::new().resolve_dh(&DHChoice::Curve25519).unwrap();
        dh.set(&private);
        dh
    }

    /// RFC 7748 §5.2, the first X25519 test vector, through the resolver's `dh`.
    #[test]
    fn x25519_rfc7748_5_2() {
        let dh = dh_from(hex32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"));
        let u = hex32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let mut out = [0u8; 32];
        dh.dh(&u, &mut out).unwrap();
        assert_eq!(out, hex32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"));
    }

    /// RFC 7748 §6.1: both key pairs and the shared secret, through `set`, `pubkey` and `dh`,
    /// with and without the identity cache.
    #[test]
    fn x25519_rfc7748_6_1() {
        let alice = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let alice_pub = hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
        let bob = hex32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
        let bob_pub = hex32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
        let shared = hex32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");

        let a = dh_from(alice);
        let identity = Identity::new(PrivateKey::from_bytes(bob)).unwrap();
        let mut b =
            AwsLcResolver::with_identity(&identity).resolve_dh(&DHChoice::Curve25519).unwrap();
        b.set(&bob);
        assert_eq!(a.pubkey(), alice_pub);
        assert_eq!(b.pubkey(), bob_pub);
        assert_eq!(b.privkey(), bob);
        let (mut ab, mut ba) = ([0u8; 32], [0u8; 32]);
        a.dh(&bob_pub, &mut ab).unwrap();
        b.dh(&alice_pub, &mut ba).unwrap();
        assert_eq!(ab, shared);
        assert_eq!(ba, shared);
    }

    #[test]
    fn x25519_refuses_low_order_and_short_points() {
        let dh = dh_from(hex32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"));
        let mut out = [0u8; 32];
        assert_eq!(dh.dh(&[0u8; 32], &mut out), Err(snow::Error::Dh));
        let mut one = [0u8; 32];
        one[0] = 1;
        assert_eq!(dh.dh(&one, &mut out), Err(snow::Error::Dh));
        assert_eq!(dh.dh(&[9u8; 31], &mut out), Err(snow::Error::Dh));
        // snow hands over its 56-byte key buffer: only the first 32 bytes are the key.
        let mut padded = [0xffu8; 56];
        padded[..32].copy_from_slice(&hex32(
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
        ));
        dh.dh(&padded, &mut out).unwrap();
        assert_eq!(out, hex32("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"));
    }

    #[test]
    fn generated_keys_agree() {
        let resolver = AwsLcResolver::new();
        let mut rng = resolver.resolve_rng().unwrap();
        let mut a = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        let mut b = resolver.resolve_dh(&DHChoice::Curve25519).unwrap();
        a.generate(&mut *rng).unwrap();
        b.generate(&mut *rng).unwrap();
        let (mut ab, mut ba) = ([0u8; 32], [0u8; 32]);
        a.dh(b.pubkey(), &mut ab).unwrap();
        b.dh(a.pubkey(), &mut ba).unwrap();
        assert_eq!(ab, ba);
        // The exported private key is the one in use.
        let again = dh_from(a.privkey().try_into().unwrap());
        assert_eq!(again.pubkey(), a.pubkey());
    }

    /// RFC 4231 test case 2 (HMAC-SHA-256), through the resolver's `hmac`.
    #[test]
    fn hmac_sha256_rfc4231() {
        let mut hash = AwsLcResolver::new().resolve_hash(&HashChoice::SHA256).unwrap();
        let mut out = [0u8; 32];
        hash.hmac(b"Jefe", b"what do ya want for nothing?", &mut out);
        assert_eq!(out, hex32("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    }

    #[test]
    fn cipher_round_trip_and_refusal() {
        let mut cipher = AwsLcResolver::new().resolve_cipher(&CipherChoice::AESGCM).unwrap();
        cipher.set(&[3u8; 32]);
        let mut sealed = [0u8; 21];
        assert_eq!(cipher.encrypt(7, b"ad", b"hello", &mut sealed), 21);
        let mut plain = [0u8; 5];
        assert_eq!(cipher.decrypt(7, b"ad", &sealed, &mut plain), Ok(5));
        assert_eq!(&plain, b"hello");
        assert_eq!(cipher.decrypt(8, b"ad", &sealed, &mut plain), Err(snow::Error::Decrypt));
        assert_eq!(cipher.decrypt(7, b"ad", &sealed[..15], &mut plain), Err(snow::Error::Decrypt));
    }

    /// Our resolver against snow's own pure-Rust one, each side once: the handshake completes
    /// and both derive the same transport keys, so the two implementations agree bit for bit.
    #[test]
    fn interoperates_with_snows_default_resolver() {
        for ours_initiates in [true, false] {
            let params: snow::params::NoiseParams = "Noise_XX_25519_AESGCM_SHA256".parse().unwrap();
            let ours_id = Identity::generate().unwrap();
            let theirs_key = [0x42u8; 32];
            let ours = snow::Builder::with_resolver(
                params.clone(),
                Box::new(AwsLcResolver::with_identity(&ours_id)),
            )
            .local_private_key(ours_id.private_key().as_bytes())
            .unwrap();
            let theirs =
                snow::Builder::with_resolver(params, Box::new(snow::resolvers::DefaultResolver))
                    .local_private_key(&theirs_key)
                    .unwrap();
            let (mut i, mut r) = if ours_initiates {
                (ours.build_initiator().unwrap(), theirs.build_responder().unwrap())
            } else {
                (theirs.build_initiator().unwrap(), ours.build_responder().unwrap())
            };
            let (mut msg, mut payload) = ([0u8; 128], [0u8; 128]);
            for turn in 0..3 {
                let (from, to) = if turn % 2 == 0 { (&mut i, &mut r) } else { (&mut r, &mut i) };
                let len = from.write_message(b"", &mut msg).unwrap();
                to.read_message(&msg[..len], &mut payload).unwrap();
            }
            assert!(i.is_handshake_finished() && r.is_handshake_finished());
            assert_eq!(i.get_handshake_hash(), r.get_handshake_hash());
            assert_eq!(i.dangerously_get_raw_split(), r.dangerously_get_raw_split());
        }
    }
}
