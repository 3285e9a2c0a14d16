//! Node identities: x25519 static key pairs, their key files, and the node id derived from them.
//!
//! A key file holds the base64 (standard alphabet, padded) of the 32-byte private key and one
//! newline: 45 bytes, the format of `wg genkey`. Public keys print the same way.
//!
//! Parsing ([`PrivateKey::from_key_text`]) is pure. Reading a file and checking that its
//! permissions are not open to group or others is I/O and lives apart, in [`read_key_file`] and
//! [`write_new_key_file`]; they touch the file system only, never a socket or the clock.

use std::fmt;
use std::path::Path;

use aws_lc_rs::agreement;
use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::error::{Error, KeyFile};
pub use crate::ids::NodeId;

/// Bytes of an x25519 key, private or public.
pub const KEY_LEN: usize = 32;

/// An x25519 private key. Its `Debug` never shows the bytes; its memory is zeroed on drop (on a
/// best-effort basis: copies made by moves are not tracked).
#[derive(Clone)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A new random private key from the operating system's generator, clamped as RFC 7748 §5
    /// and `wg genkey` do (the clamping is also applied by every X25519 operation).
    pub fn generate() -> Result<PrivateKey, Error> {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Error::Crypto("random source failed"))?;
        bytes[0] &= 248;
        bytes[31] &= 127;
        bytes[31] |= 64;
        Ok(PrivateKey(bytes))
    }

    /// A private key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> PrivateKey {
        PrivateKey(bytes)
    }

    /// Parses key-file text: base64 of 32 bytes, optionally followed by one newline (`\n` or
    /// `\r\n`). Refuses anything else with [`KeyFile::Encoding`], and a key of another size with
    /// [`KeyFile::Length`].
    pub fn from_key_text(text: &[u8]) -> Result<PrivateKey, Error> {
        decode_key_text(text).map(PrivateKey)
    }

    /// The key-file text: base64 and a newline.
    pub fn to_key_text(&self) -> String {
        let mut text = BASE64.encode(self.0);
        text.push('\n');
        text
    }

    /// The raw bytes. Handle with care.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The public key: the X25519 base-point multiple of this key.
    pub fn public_key(&self) -> Result<PublicKey, Error> {
        let key = agreement::PrivateKey::from_private_key(&agreement::X25519, &self.0)
            .map_err(|_| Error::Crypto("x25519 private key refused"))?;
        public_of(&key)
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.0.fill(0);
        core::hint::black_box(&mut self.0);
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(..)")
    }
}

/// An x25519 public key: a peer's identity on the wire.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl PublicKey {
    /// Parses base64 text (as [`PublicKey::to_base64`] prints it, a trailing newline allowed).
    pub fn from_base64(text: &[u8]) -> Result<PublicKey, Error> {
        decode_key_text(text).map(PublicKey)
    }

    /// Base64 (standard, padded): 44 characters.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The node id this key names.
    pub fn node_id(&self) -> NodeId {
        NodeId::of(self)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl NodeId {
    /// The id of the node holding `key`.
    pub fn of(key: &PublicKey) -> NodeId {
        let digest = digest::digest(&digest::SHA256, &key.0);
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_ref()[..16]);
        NodeId(u128::from_be_bytes(first))
    }
}

/// A node's static key pair, parsed once for the crypto library so that every handshake reuses
/// it (parsing an X25519 private key costs a scalar multiplication).
#[derive(Clone)]
pub struct Identity {
    private: PrivateKey,
    public: PublicKey,
    parsed: std::sync::Arc<agreement::PrivateKey>,
}

impl Identity {
    /// The identity holding `private`.
    pub fn new(private: PrivateKey) -> Result<Identity, Error> {
        let parsed =
            agreement::PrivateKey::from_private_key(&agreement::X25519, private.as_bytes())
                .map_err(|_| Error::Crypto("x25519 private key refused"))?;
        let public = public_of(&parsed)?;
        Ok(Identity { private, public, parsed: std::sync::Arc::new(parsed) })
    }

    /// A new random identity.
    pub fn generate() -> Result<Identity, Error> {
        Identity::new(PrivateKey::generate()?)
    }

    /// The private key.
    pub fn private_key(&self) -> &PrivateKey {
        &self.private
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The node id.
    pub fn node_id(&self) -> NodeId {
        self.public.node_id()
    }

    /// The parsed private key, shared with the handshake resolver.
    pub(crate) fn parsed(&self) -> &std::sync::Arc<agreement::PrivateKey> {
        &self.parsed
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("public", &self.public).finish_non_exhaustive()
    }
}

/// Reads a private key file, refusing it if its group or other permission bits are set
/// ([`KeyFile::Permissions`]), then parses it as [`PrivateKey::from_key_text`] does.
pub fn read_key_file(path: &Path) -> Result<PrivateKey, Error> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;

    let io = |e: std::io::Error| Error::KeyFile(KeyFile::Io(e.kind()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mode = file.metadata().map_err(io)?.permissions().mode();
    check_mode(mode)?;
    // A key file is 45 bytes; read a little more so that an oversized file is refused by the
    // parser rather than silently truncated, but never an unbounded amount.
    let mut text = Vec::with_capacity(128);
    file.by_ref().take(4096).read_to_end(&mut text).map_err(io)?;
    PrivateKey::from_key_text(&text)
}

/// Writes `key` to a new file at `path` with mode 0600. Refuses to overwrite an existing file
/// ([`KeyFile::Exists`]).
pub fn write_new_key_file(path: &Path, key: &PrivateKey) -> Result<(), Error> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::KeyFile(KeyFile::Exists),
        kind => Error::KeyFile(KeyFile::Io(kind)),
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(key.to_key_text().as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// Refuses a file mode with any group or other bit set.
pub fn check_mode(mode: u32) -> Result<(), Error> {
    if mode & 0o077 != 0 {
        return Err(KeyFile::Permissions(mode & 0o7777).into());
    }
    Ok(())
}

fn decode_key_text(text: &[u8]) -> Result<[u8; KEY_LEN], Error> {
    let body = text.strip_suffix(b"\r\n").or_else(|| text.strip_suffix(b"\n")).unwrap_or(text);
    // Any whitespace left (spaces, a second newline) is not part of the format.
    let decoded = BASE64.decode(body).map_err(|_| Error::KeyFile(KeyFile::Encoding))?;
    <[u8; KEY_LEN]>::try_from(decoded.as_slice())
        .map_err(|_| Error::KeyFile(KeyFile::Length(decoded.len())))
}

fn public_of(key: &agreement::PrivateKey) -> Result<PublicKey, Error> {
    let public = key.compute_public_key().map_err(|_| Error::Crypto("x25519 public key"))?;
    <[u8; KEY_LEN]>::try_from(public.as_ref())
        .map(PublicKey)
        .map_err(|_| Error::Crypto("x25519 public key length"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn key_text_round_trips() {
        let key = PrivateKey::generate().unwrap();
        let text = key.to_key_text();
        assert_eq!(text.len(), 45);
        assert!(text.ends_with('\n'));
        assert_eq!(PrivateKey::from_key_text(text.as_bytes()).unwrap().as_bytes(), key.as_bytes());
        // Without the newline, and with a CRLF, it is the same key.
        let bare = text.trim_end();
        assert_eq!(PrivateKey::from_key_text(bare.as_bytes()).unwrap().as_bytes(), key.as_bytes());
        let crlf = format!("{bare}\r\n");
        assert_eq!(PrivateKey::from_key_text(crlf.as_bytes()).unwrap().as_bytes(), key.as_bytes());
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let a = PrivateKey::generate().unwrap();
        let b = PrivateKey::generate().unwrap();
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.as_bytes()[0] & 7, 0);
        assert_eq!(a.as_bytes()[31] & 0xc0, 0x40);
    }

    #[test]
    fn wrong_encoding_refused() {
        for text in [&b"not base64 at all!\n"[..], b"", b"\n", b" AAAA\n", b"AAAA\n\n"] {
            let err = PrivateKey::from_key_text(text).unwrap_err();
            let ok = matches!(err, Error::KeyFile(KeyFile::Encoding | KeyFile::Length(0)));
            assert!(ok, "{text:?}: {err:?}");
        }
        // 44 characters but with a character outside the alphabet.
        let mut text = PrivateKey::generate().unwrap().to_key_text().into_bytes();
        text[3] = b'*';
        assert_eq!(PrivateKey::from_key_text(&text).unwrap_err(), KeyFile::Encoding.into());
    }

    #[test]
    fn wrong_length_refused() {
        let short = BASE64.encode([7u8; 31]);
        assert_eq!(
            PrivateKey::from_key_text(short.as_bytes()).unwrap_err(),
            KeyFile::Length(31).into()
        );
        let long = BASE64.encode([7u8; 33]);
        assert_eq!(
            PrivateKey::from_key_text(long.as_bytes()).unwrap_err(),
            KeyFile::Length(33).into()
        );
    }

    #[test]
    fn loose_modes_refused() {
        assert_eq!(check_mode(0o100600), Ok(()));
        assert_eq!(check_mode(0o100400), Ok(()));
        assert_eq!(check_mode(0o100640), Err(KeyFile::Permissions(0o640).into()));
        assert_eq!(check_mode(0o100604), Err(KeyFile::Permissions(0o604).into()));
        assert_eq!(check_mode(0o100601), Err(KeyFile::Permissions(0o601).into()));
    }

    /// RFC 7748 §6.1: Alice's key pair, through the code that derives our public keys.
    #[test]
    fn public_key_known_answer() {
        let alice = hex32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
        let public = PrivateKey::from_bytes(alice).public_key().unwrap();
        assert_eq!(
            public.0,
            hex32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        let identity = Identity::new(PrivateKey::from_bytes(alice)).unwrap();
        assert_eq!(identity.public_key(), public);
    }

    #[test]
    fn node_id_is_sha256_prefix() {
        let key = PublicKey([0u8; 32]);
        // SHA-256 of 32 zero bytes starts 66687aadf862bd776c8fc18b8e9f8e20.
        assert_eq!(key.node_id().to_string(), "66687aadf862bd776c8fc18b8e9f8e20");
    }

    pub(crate) fn hex32(hex: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }
}
