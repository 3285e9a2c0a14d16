//! `ringspan keygen` and `ringspan pubkey`, through the real binary.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output, Stdio};

use crate::support::host::scratch;

fn ringspan(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringspan"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn keygen_writes_mode_0600_and_refuses_to_overwrite() {
    let dir = scratch("cli-keygen");
    let path = dir.join("node.key");
    let path_str = path.to_str().unwrap();
    let out = ringspan(&["keygen", "--out", path_str], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty(), "the key goes to the file only");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = std::fs::read(&path).unwrap();
    assert_eq!(key.len(), 45);
    assert_eq!(key.last(), Some(&b'\n'));

    let again = ringspan(&["keygen", "--out", path_str], b"");
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("refusing to overwrite"), "{}", text(&again.stderr));
    assert_eq!(std::fs::read(&path).unwrap(), key, "the key is untouched");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keygen_prints_to_stdout_without_out() {
    let a = ringspan(&["keygen"], b"");
    let b = ringspan(&["keygen"], b"");
    assert!(a.status.success() && b.status.success());
    assert_eq!(a.stdout.len(), 45);
    assert_ne!(a.stdout, b.stdout);
}

/// RFC 7748 §6.1: Alice's private key and its public key, in base64.
const ALICE_PRIVATE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n";
const ALICE_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n";

#[test]
fn pubkey_prints_the_right_key_from_stdin_and_from_a_file() {
    let out = ringspan(&["pubkey"], ALICE_PRIVATE.as_bytes());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), ALICE_PUBLIC);

    let dir = scratch("cli-pubkey");
    let path = dir.join("alice.key");
    std::fs::write(&path, ALICE_PRIVATE).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ringspan(&["pubkey", "--key", path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), ALICE_PUBLIC);
    // --id: the node id, as `show`, the logs and the metrics name the node.
    let out = ringspan(&["pubkey", "--id", "--key", path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let public = ringspan::cipher::PublicKey::from_base64(ALICE_PUBLIC.trim().as_bytes()).unwrap();
    assert_eq!(text(&out.stdout), format!("{}\n", public.node_id()));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keygen_then_pubkey_agree_with_the_library() {
    let dir = scratch("cli-roundtrip");
    let path = dir.join("node.key");
    assert!(ringspan(&["keygen", "--out", path.to_str().unwrap()], b"").status.success());
    let out = ringspan(&["pubkey", "--key", path.to_str().unwrap()], b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let private = ringspan::cipher::identity::read_key_file(&path).unwrap();
    assert_eq!(text(&out.stdout).trim_end(), private.public_key().unwrap().to_base64());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loose_permissions_refused() {
    let dir = scratch("cli-loose");
    let path = dir.join("alice.key");
    std::fs::write(&path, ALICE_PRIVATE).unwrap();
    for mode in [0o640, 0o604, 0o644, 0o660] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = ringspan(&["pubkey", "--key", path.to_str().unwrap()], b"");
        assert!(!out.status.success(), "mode {mode:o}");
        assert!(out.stdout.is_empty());
        let err = text(&out.stderr);
        assert!(err.contains("permissions") && err.contains(&format!("{mode:o}")), "{err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn wrong_length_and_wrong_encoding_refused_with_distinct_errors() {
    // 31 bytes of key.
    let short = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHg==\n";
    let out = ringspan(&["pubkey"], short.as_bytes());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("key of 31 bytes, expected 32"), "{}", text(&out.stderr));

    let out = ringspan(&["pubkey"], b"this is not a key\n");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("not base64"), "{}", text(&out.stderr));

    let out = ringspan(&["pubkey", "--key", "/nonexistent/ringspan.key"], b"");
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("I/O error"), "{}", text(&out.stderr));
}
