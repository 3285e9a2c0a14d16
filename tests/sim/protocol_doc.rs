//! `docs/PROTOCOL.md`'s byte examples, checked against what the node's own code produces.
//!
//! Every example of bytes in the document is a fenced block with the info string
//! `hex name=NAME`. In such a block a line holds bytes as two-digit hex tokens, optionally
//! after an offset (`1c:`, hex, checked against the bytes before it) and before a comment
//! (from `#` to the end of the line); a line starting with `#` is a comment. This test:
//!
//! - reads every such block, and refuses a block with a malformed line, a name used twice,
//!   a name it has no check for, or hex bytes anywhere else in the document (a fenced block
//!   without the marker, or an inline code span), so no example escapes the check;
//! - builds each named example with the node's code — the wire encoders (`wire::Repr`),
//!   `txn::Link`, the span payloads (`span::Hello`, `span::Advert`, over `wire`), and
//!   `cipher::Session` for the handshake and sealed records (with fixed ephemeral keys, feature
//!   `test-vectors`), a real `relay::Node` for the node's side of an attach (section 8.11), and
//!   `record_layer_for_attach` for the records of local links — and compares it byte for byte;
//! - checks the handshake and key-schedule vectors once more against independent code: snow's
//!   pure-Rust resolver (curve25519-dalek, RustCrypto AES-GCM) for the handshake, and `ring`'s
//!   HMAC and AES-GCM for the HKDF chain and the records.
//!
//! It also drives a real `relay::Node` through the rules of section 8.9 (what a node does with
//! transactions and one-way messages sections 6 and 8 give no role), which the document states
//! without bytes.
//!
//! The vectors' inputs (the four private keys) are read from the document too. On a mismatch
//! the test prints the block as it should read; `PROTOCOL_DOC_PRINT=1` prints every block.

mod attach;
mod examples;
mod parse;
mod rules;

use std::collections::{BTreeMap, BTreeSet};

use parse::{Block, format_block};

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

fn doc_blocks() -> BTreeMap<String, Block> {
    let blocks = parse::blocks(DOC).unwrap_or_else(|e| panic!("docs/PROTOCOL.md: {e}"));
    let mut named = BTreeMap::new();
    for block in blocks {
        let line = block.line;
        if let Some(earlier) = named.insert(block.name.clone(), block) {
            panic!(
                "docs/PROTOCOL.md:{line}: block name {} already used at line {}",
                earlier.name, earlier.line
            );
        }
    }
    named
}

#[test]
fn every_byte_example_is_a_named_hex_block() {
    let named = doc_blocks();
    assert!(named.len() >= 30, "only {} named blocks found", named.len());
}

#[test]
fn every_block_is_what_the_node_produces() {
    let named = doc_blocks();
    let input = |name: &str| -> Vec<u8> {
        named.get(name).unwrap_or_else(|| panic!("no block named {name}")).bytes.clone()
    };
    let expected = examples::all(&input);
    let print = std::env::var_os("PROTOCOL_DOC_PRINT").is_some();
    let mut failures = Vec::new();
    let mut checked = BTreeSet::new();
    for (name, bytes) in &expected {
        assert!(checked.insert(name.clone()), "the test builds {name} twice");
        if print {
            println!("{}", format_block(name, bytes));
        }
        match named.get(name) {
            None => failures.push(format!("missing block {name}; it should read:\n{}", format_block(name, bytes))),
            Some(block) if block.bytes != *bytes => failures.push(format!(
                "docs/PROTOCOL.md:{}: block {name} differs from what the node produces; it should read:\n{}",
                block.line,
                format_block(name, bytes)
            )),
            Some(_) => {}
        }
    }
    for (name, block) in &named {
        if !checked.contains(name) {
            failures.push(format!("docs/PROTOCOL.md:{}: no check for block {name}", block.line));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_handshake_vectors_agree_with_an_independent_noise() {
    let named = doc_blocks();
    let input = |name: &str| named[name].bytes.clone();
    examples::check_handshake_independently(&input);
}

#[test]
fn the_record_vectors_agree_with_an_independent_key_schedule_and_aead() {
    let named = doc_blocks();
    let input = |name: &str| named[name].bytes.clone();
    examples::check_records_independently(&input);
}

/// Sections 8.9, 6.2 and 5.4: what a node does with what sections 6 and 8 give no role.
#[test]
fn what_the_node_does_with_everything_else() {
    use ringspan::wire::{Command, Flags};
    let app = Command::new(5, 1);
    let (mut peer, seen) = rules::Peer::new();
    let span = rules::span_of(&seen);
    let node_hello = seen.iter().find(|s| s.command == Command::LINK_CONN).unwrap().txn;

    // One-way messages of any command but the engine's two are dropped, link protocol included.
    for command in [app, Command::LINK_CONN, Command::LINK_SPAN, Command::LINK_SPAN_REQUEST] {
        assert_eq!(peer.oneway(command).unwrap(), [], "{command:?}");
    }
    assert_eq!(peer.opened(), []);

    // A top-level transaction of another command is refused alone.
    let (txn, seen) = peer.open(None, app, Flags::NONE);
    assert!(rules::refused(&seen.unwrap(), txn, app));

    // A call inside the node's span reaches its application whatever its command, protocol 0's
    // included.
    for command in [Command::LINK_CONN, Command::LINK_SPAN, Command::LINK_PING, app] {
        let (_, seen) = peer.open(Some(span), command, Flags::NONE);
        assert_eq!(seen.unwrap(), []);
        assert_eq!(peer.opened().iter().map(|c| c.1).collect::<Vec<_>>(), [command]);
    }

    // A child of a call, or of anything but the node's span, is refused alone.
    let (call, _) = peer.open(Some(span), app, Flags::NONE);
    assert_eq!(peer.opened().len(), 1);
    for parent in [call, node_hello, peer.hello] {
        let (child, seen) = peer.open(Some(parent), app, Flags::NONE);
        assert!(rules::refused(&seen.unwrap(), child, app), "under {parent:?}");
    }
    assert_eq!(peer.opened(), [], "no refused child reached the application");

    // The link is still up; a top-level LINK_SPAN_REQUEST is what closes it.
    let (_, seen) = peer.open(Some(span), app, Flags::DELETE);
    assert_eq!(seen.unwrap(), []);
    assert_eq!(peer.opened().len(), 1);
    let (_, closed) = peer.open(None, Command::LINK_SPAN_REQUEST, Flags::NONE);
    assert!(closed.is_err());
}

/// Section 8.10: a trace of a mount the node holds is answered by the node itself, with its
/// report and its DELETE in one message; its application never hears of it. A malformed one is
/// refused alone with `MALFORMED`.
#[test]
fn the_node_answers_a_trace_of_its_mount_itself() {
    use ringspan::ids::NodeId;
    use ringspan::wire::{Command, ErrorCode, Flags, TraceReport, TraceRequest, TraceStatus};
    let (mut peer, seen) = rules::Peer::new();
    let span = rules::span_of(&seen);
    let request = TraceRequest { hops: 0, limit: 30, target: None }.emit();
    let (trace, seen) = peer.open_with(Some(span), Command::LINK_TRACE, &request, Flags::DELETE);
    let seen = seen.unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let answer = &seen[0];
    assert_eq!(
        (answer.txn, answer.command, answer.error),
        (trace, Command::LINK_TRACE, ErrorCode::NONE)
    );
    assert_eq!(answer.flags, Flags::REPLY | Flags::CREATE | Flags::DELETE);
    let report = TraceReport { hop: 1, status: TraceStatus::Holder, node: NodeId(1) };
    assert_eq!(answer.payload, report.emit());
    assert_eq!(peer.opened(), [], "the application never hears of it");
    let (bad, seen) = peer.open_with(Some(span), Command::LINK_TRACE, &request[..8], Flags::DELETE);
    let seen = seen.unwrap();
    assert!(seen.iter().any(|s| s.txn == bad
        && s.flags == Flags::REPLY | Flags::CREATE | Flags::ABORT | Flags::DELETE
        && s.error == ErrorCode::MALFORMED));
    // The link carries on.
    let (_, seen) = peer.open_with(Some(span), Command::LINK_TRACE, &request, Flags::DELETE);
    assert_eq!(seen.unwrap().len(), 1);
}

/// Sections 8.2 and 8.3: a hello listing clusters beside `ALL_CLUSTERS`, and an advertisement of
/// kind 7 or more, are malformed payloads: errors that close the link (the host sends
/// `LINK_CLOSE` with `REFUSED` for every error the node returns, section 3.5).
#[test]
fn the_node_refuses_what_sections_8_2_and_8_3_refuse() {
    use ringspan::error::{Error, Malformed};
    use ringspan::wire::{Command, Flags};
    let named = doc_blocks();
    let malformed = |result: Result<_, Error>, why: &str| match result {
        Err(error @ Error::Malformed(Malformed::LinkPayload { reason, .. })) => {
            assert!(reason.contains(why), "{reason}");
            assert!(error.closes_link());
        }
        other => panic!("expected a malformed payload, got {other:?}"),
    };
    // hello-router wants every cluster; list one beside it.
    let mut hello = named["hello-router"].bytes.clone();
    hello[4] = 1;
    hello.extend_from_slice(&[7; 16]);
    malformed(rules::Peer::saying(&hello).1, "lists clusters");
    // advert-example is of kind 2; make it 7.
    let mut advert = named["advert-example"].bytes.clone();
    advert[52] = 7;
    let (mut peer, _) = rules::Peer::new();
    malformed(peer.open_with(None, Command::LINK_SPAN, &advert, Flags::NONE).1, "kind");
}

#[test]
fn the_parser_refuses_what_it_cannot_check() {
    let ok = "```hex name=a\n# comment\n00: 01 02  03 # three\n03: 04\n```\n";
    let blocks = parse::blocks(ok).unwrap();
    assert_eq!(blocks[0].bytes, [1, 2, 3, 4]);
    for bad in [
        "```hex name=a\n00: 01 02 x3\n```\n",
        "```hex name=a\n01: 01\n```\n",
        "```hex\n01\n```\n",
        "```hex name=a\n```\n",
        "```hex name=a\n01\n",
        "```\n00 01 02 03 04 05 06 07 08\n```\n",
        "The AAD is `30 00 00 00 01 00 00 00`.\n",
    ] {
        assert!(parse::blocks(bad).is_err(), "accepted: {bad:?}");
    }
}
