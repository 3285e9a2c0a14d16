//! `docs/CONFIG.md` against the parser: every key each table takes has a row in its table there
//! and is in its complete file (which `the_documented_example_parses_to_its_values` parses, with
//! the defaults it shows), and every other example on the page parses.

use super::parse;

const DOC: &str = include_str!("../../../../docs/CONFIG.md");

/// The page's first TOML block: the complete file.
pub(super) fn complete_file() -> &'static str {
    let start = DOC.find("```toml\n").expect("a TOML block") + "```toml\n".len();
    let end = start + DOC[start..].find("```").expect("the block's end");
    &DOC[start..end]
}

/// The keys a table takes, as the parser names them when it refuses an unknown one (serde's
/// "unknown field `x`, expected one of `a`, `b`, …").
fn keys_taken(file_with_unknown_key: &str) -> Vec<String> {
    let error = parse(file_with_unknown_key).expect_err("an unknown key is refused").reason;
    let expected = error.split("expected").nth(1).unwrap_or_else(|| panic!("{error}"));
    expected.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

#[test]
fn every_key_the_parser_takes_has_a_row_and_is_in_the_complete_file() {
    let node = "[node]\nkey = \"k\"\nbogus = 1\n";
    let peer = "[node]\nkey = \"k\"\n[[peer]]\nbogus = 1\n";
    let mount = "[node]\nkey = \"k\"\n[[mount]]\nbogus = 1\n";
    let limits = "[node]\nkey = \"k\"\n[limits]\nbogus = 1\n";
    let file = "bogus = 1\n[node]\nkey = \"k\"\n";
    let mut checked = 0;
    for (table, text) in [("node", node), ("peer", peer), ("mount", mount), ("limits", limits)] {
        for key in keys_taken(text) {
            assert!(DOC.contains(&format!("| `{key}` |")), "[{table}] {key}: no row in CONFIG.md");
            assert!(
                complete_file().contains(&format!("\n{key} = ")),
                "[{table}] {key}: not in CONFIG.md's complete file"
            );
            checked += 1;
        }
    }
    for table in keys_taken(file) {
        assert!(complete_file().contains(&format!("[{table}]")), "[{table}]: not in CONFIG.md");
    }
    assert!(checked >= 25, "only {checked} keys found: has the error message changed?");
}

/// Every TOML block of the page, in order.
fn toml_blocks() -> Vec<&'static str> {
    DOC.split("```toml\n").skip(1).map(|rest| &rest[..rest.find("```").expect("its end")]).collect()
}

#[test]
fn every_example_on_the_page_parses() {
    let blocks = toml_blocks();
    assert!(blocks.len() >= 2, "the complete file and the addresses' example");
    for block in &blocks {
        if let Err(error) = parse(block) {
            panic!("CONFIG.md's example is refused: {error}\n{block}");
        }
    }
    // The addresses' example: two listen addresses on one port, a peer by name.
    let example = blocks.iter().find(|b| b.contains("[::]:7401")).expect("the example");
    let config = parse(example).unwrap();
    assert_eq!(config.listen.len(), 2);
    let by_name = config.peers[0].spec.address.as_ref().and_then(|a| a.host());
    assert_eq!(by_name, Some("node-b.example.org"));
}
