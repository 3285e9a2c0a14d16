//! The lists' tests: peers, allowed keys, client clusters, ids and mounts.

use crate::cipher::PublicKey;
use crate::ids::ClusterId;
use crate::limits;
use crate::relay::redial::PeerAddr;
use crate::span::Role;

use super::super::{parse_id, parse_mount};
use super::{MINIMAL, b64, key, parse, refused};

#[test]
fn peer_keys_must_be_public_keys() {
    let text = "[node]\nkey = \"node.key\"\n\n[[peer]]\nname = \"b\"\naddress = \
                \"127.0.0.1:7402\"\nkey = \"not a key!\"\n";
    let error = refused(text, 7, "peer key: not valid base64");
    assert_eq!(error.column, Some(7));
    // Base64, but of 31 bytes.
    let short = BASE64_31;
    refused(
        &format!("{MINIMAL}[[peer]]\nkey = \"{short}\"\n"),
        4,
        "peer key: the base64 decodes to 31 bytes; a public key has 32",
    );
    refused(&format!("{MINIMAL}[[peer]]\nkey = \"\"\n"), 4, "peer key: the key is empty");
    refused(&format!("{MINIMAL}[[peer]]\nname = \"b\"\n"), 3, "[[peer]] has no `key`");
}

/// Base64 of 31 zero bytes.
const BASE64_31: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

#[test]
fn two_peers_may_not_share_a_key_or_a_name() {
    let text = format!(
        "{MINIMAL}[[peer]]\nname = \"b\"\nkey = \"{a}\"\n\n[[peer]]\nname = \"c\"\nkey = \
         \"{a}\"\n",
        a = b64(1)
    );
    let error = refused(&text, 9, "is also the key of the peer on line 5");
    assert!(error.reason.contains(&b64(1)), "{error}");
    let text = format!(
        "{MINIMAL}[[peer]]\nname = \"b\"\nkey = \"{}\"\n[[peer]]\nname = \"b\"\nkey = \"{}\"\n",
        b64(1),
        b64(2)
    );
    refused(&text, 7, "peer name \"b\" is also the name of the peer on line 4");
}

#[test]
fn a_peer_address_is_an_ip_address_or_a_host_name_with_a_port() {
    let peer = |address: &str| {
        format!(
            "[node]\nkey = \"k\"\nlisten = [\"127.0.0.1:7401\"]\n[[peer]]\nkey = \"{}\"\naddress = \"{address}\"\n",
            b64(1)
        )
    };
    let address = |text: &str| parse(&peer(text)).unwrap().peers[0].spec.address.clone().unwrap();
    let name = |host: &str, port| PeerAddr::Name { host: host.to_owned(), port };
    assert_eq!(address("10.0.0.2:7402"), PeerAddr::Ip("10.0.0.2:7402".parse().unwrap()));
    assert_eq!(address("[fd00::2]:7402"), PeerAddr::Ip("[fd00::2]:7402".parse().unwrap()));
    assert_eq!(address("localhost:7402"), name("localhost", 7402));
    assert_eq!(address("node-b.example.org:7401"), name("node-b.example.org", 7401));
    // A name is not compared with the listen addresses: it is resolved at each dial, never here
    // (a name for this node is dialled, and refused as a link to itself).
    assert_eq!(address("localhost:7401"), name("localhost", 7401));
    // An IP address is.
    refused(&peer("127.0.0.1:7401"), 6, "would dial itself");
    // The file's line and column, and the reason.
    for (text, reason) in [
        ("node-b", "no port (write HOST:PORT)"),
        ("node-b:", "no port"),
        ("node-b:http", "the port is not a number from 0 to 65535"),
        ("::1:7402", "an IPv6 address goes in brackets"),
        ("node..b:7402", "an empty label"),
        ("node b:7402", "a character other than letters, digits"),
        ("10.0.2:7402", "last label is not all digits"),
        ("-b.example:7402", "starts or ends with '-'"),
    ] {
        let error = refused(&peer(text), 6, &format!("peer address: \"{text}\" is neither"));
        assert!(error.reason.contains(reason), "{text}: {error}");
        assert!(error.reason.contains("node-b.example:7401"), "an example: {error}");
        assert_eq!(error.column, Some(11), "{error}");
        let shown = error.to_string();
        assert!(shown.starts_with("/etc/ringspan/node.toml:6:11: peer address: "), "{shown}");
    }
    // Listen and metrics addresses stay IP addresses.
    refused(
        "[node]\nkey = \"k\"\nlisten = [\"localhost:7401\"]\n",
        3,
        "host names are not taken here",
    );
    refused(
        "[node]\nkey = \"k\"\nmetrics = \"localhost:9401\"\n",
        3,
        "host names are not taken here",
    );
}

#[test]
fn allowed_keys_must_be_public_keys_listed_once() {
    refused(
        &format!("[node]\nkey = \"k\"\nallow = [\"{}\", \"AAAA\"]\n", b64(1)),
        3,
        "[node] allow: the base64 decodes to 3 bytes",
    );
    let text = format!("[node]\nkey = \"k\"\nallow = [\n\"{a}\",\n\"{a}\",\n]\n", a = b64(9));
    refused(&text, 5, "is listed twice (first on line 4)");
    // A key both allowed and a peer's is fine, with one role.
    let text = format!(
        "[node]\nkey = \"k\"\nallow = [{{ key = \"{a}\", role = \"router\" }}]\n[[peer]]\nkey = \"{a}\"\n",
        a = b64(9)
    );
    assert_eq!(parse(&text).unwrap().allow, [(key(9), Role::Router)]);
    // Not with two.
    let text =
        format!("[node]\nkey = \"k\"\nallow = [\"{a}\"]\n[[peer]]\nkey = \"{a}\"\n", a = b64(9));
    refused(&text, 3, "is granted Client here but Router as a peer");
    // Entries as tables: a role from the three, and a key.
    let entry = |body: &str| format!("[node]\nkey = \"k\"\nallow = [{{ {body} }}]\n");
    refused(
        &entry(&format!("key = \"{}\", role = \"admin\"", b64(1))),
        3,
        "unknown role \"admin\"",
    );
    refused(&entry("role = \"router\""), 3, "an entry has no `key`");
    refused(&entry(&format!("key = \"{}\", rank = 1", b64(1))), 3, "unknown field `rank`");
    refused("[node]\nkey = \"k\"\nallow = [3]\n", 3, "a base64 key, or a table");
}

#[test]
fn client_clusters_are_ids_listed_once_and_bounded() {
    assert_eq!(
        parse(&format!("{MINIMAL}client_clusters = [\"0x10\", 3]\n")).unwrap().client_clusters,
        [ClusterId(16), ClusterId(3)]
    );
    refused(&format!("{MINIMAL}client_clusters = [1, \"0x1\"]\n"), 3, "listed twice");
    refused(&format!("{MINIMAL}client_clusters = [\"x\"]\n"), 3, "is not a number");
    let many: Vec<String> = (0..=limits::CLIENT_CLUSTERS_MAX).map(|i| i.to_string()).collect();
    refused(
        &format!("{MINIMAL}client_clusters = [{}]\n", many.join(", ")),
        3,
        "more than 64 clusters",
    );
}

#[test]
fn peers_are_routers_unless_their_role_says_otherwise() {
    let text = format!(
        "{MINIMAL}[[peer]]\nkey = \"{}\"\n[[peer]]\nkey = \"{}\"\nrole = \"satellite\"\n",
        b64(1),
        b64(2)
    );
    let roles: Vec<Role> = parse(&text).unwrap().peers.iter().map(|p| p.spec.role).collect();
    assert_eq!(roles, [Role::Router, Role::Satellite]);
    refused(
        &format!("{MINIMAL}[[peer]]\nkey = \"{}\"\nrole = \"god\"\n", b64(1)),
        5,
        "unknown variant",
    );
}

#[test]
fn too_many_peers_are_refused() {
    let mut text = MINIMAL.to_owned();
    for i in 0..limits::CONFIG_PEERS_MAX {
        let mut bytes = [0u8; 32];
        bytes[..2].copy_from_slice(&(i as u16).to_be_bytes());
        text.push_str(&format!("[[peer]]\nkey = \"{}\"\n", PublicKey(bytes).to_base64()));
    }
    assert_eq!(parse(&text).unwrap().peers.len(), limits::CONFIG_PEERS_MAX);
    text.push_str(&format!("[[peer]]\nkey = \"{}\"\n", b64(0xff)));
    refused(&text, 3 + 2 * limits::CONFIG_PEERS_MAX, "more than 4096 peers");
}

#[test]
fn a_mount_on_the_command_line_is_written_as_in_the_file_and_as_show_prints_it() {
    let key = |cluster: u128, mount: u128| crate::span::MountKey {
        cluster: crate::ids::ClusterId(cluster),
        mount: crate::ids::MountId(mount),
    };
    // `show` prints 0x1 and 0x10: typed back, the same mount.
    assert_eq!(parse_mount("0x1:0x10"), Ok(key(1, 0x10)));
    assert_eq!(parse_mount("1:16"), Ok(key(1, 0x10)));
    assert_eq!(
        parse_mount("3f2504e0-4f89-11d3-9a0c-0305e82c3301:0x10"),
        Ok(key(0x3f2504e0_4f89_11d3_9a0c_0305e82c3301, 0x10))
    );
    assert!(parse_mount("0x1").unwrap_err().contains("CLUSTER:MOUNT"));
}

#[test]
fn ids_are_hex_decimal_uuids_or_integers() {
    assert_eq!(parse_id("0x1"), Ok(1));
    assert_eq!(parse_id("0X1f"), Ok(31));
    assert_eq!(parse_id("0x0000000000000000000000000000000000000001"), Ok(1));
    assert_eq!(parse_id("0xffffffffffffffffffffffffffffffff"), Ok(u128::MAX));
    assert_eq!(parse_id("31"), Ok(31));
    assert_eq!(parse_id("0"), Ok(0));
    assert_eq!(parse_id("340282366920938463463374607431768211455"), Ok(u128::MAX));
    assert_eq!(
        parse_id("3F2504E0-4F89-11D3-9A0C-0305E82C3301"),
        Ok(0x3f2504e0_4f89_11d3_9a0c_0305e82c3301)
    );
    assert!(parse_id("340282366920938463463374607431768211456").unwrap_err().contains("128"));
    assert!(parse_id("0x1ffffffffffffffffffffffffffffffff").unwrap_err().contains("128"));
    for bad in [
        "",
        "0x",
        "0x+1",
        "+1",
        "-1",
        " 1",
        "1 ",
        "1_000",
        "0xg",
        "1e3",
        "3f2504e0-4f89-11d3-9a0c-0305e82c330",
        "3f2504e0-4f89-11d3-9a0c-0305e82c33011",
        "3f2504e04-f89-11d3-9a0c-0305e82c3301",
        "3f2504e0-4f89-11d3-9a0c-0305e82c330g",
        "{3f2504e0-4f89-11d3-9a0c-0305e82c3301}",
        "ünïcödé",
    ] {
        assert!(parse_id(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn mount_ids_must_parse() {
    let mount = |cluster: &str, id: &str| {
        format!("{MINIMAL}[[mount]]\ncluster = {cluster}\nid = {id}\nkind = \"master\"\n")
    };
    let error = refused(&mount("\"cluster-1\"", "1"), 4, "mount cluster: \"cluster-1\" is not");
    assert_eq!(error.column, Some(11));
    refused(&mount("1", "\"0xz\""), 5, "mount id: \"0xz\" is not a hexadecimal number");
    refused(&mount("-1", "1"), 4, "mount cluster: -1 is negative");
    refused(&mount("1", "\"1e40\""), 5, "mount id");
    refused(&mount("1", "1.5"), 5, "expected a 128-bit id");
    refused(&mount("[1]", "1"), 4, "expected a 128-bit id");
    refused(&format!("{MINIMAL}[[mount]]\nid = 1\nkind = \"cache\"\n"), 3, "no `cluster`");
    refused(&format!("{MINIMAL}[[mount]]\ncluster = 1\nkind = \"cache\"\n"), 3, "no `id`");
    refused(&format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\n"), 3, "no `kind`");
    refused(
        &format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"primary\"\n"),
        6,
        "unknown variant `primary`",
    );
    // An aggregate is a satellite's own doing: no config attaches one.
    refused(
        &format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"aggregate\"\n"),
        6,
        "unknown variant `aggregate`, expected one of `master`, `slave`, `soft-master`, \
         `soft-slave`, `cache`, `client`",
    );
    refused(
        &format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"cache\"\nservice = \"x\"\n"),
        7,
        "unknown variant `x`",
    );
}

#[test]
fn mounts_are_unique_by_cluster_and_id() {
    let text = format!(
        "{MINIMAL}[[mount]]\ncluster = \"0x1\"\nid = \"0x10\"\nkind = \"master\"\n\n\
         [[mount]]\ncluster = \"0x2\"\nid = \"0x10\"\nkind = \"master\"\n\n\
         [[mount]]\ncluster = \"1\"\nid = 16\nkind = \"slave\"\n"
    );
    let error = refused(&text, 15, "mount cluster 0x1 id 0x10 is also the mount on line 3");
    assert_eq!(error.column, Some(6));
}

#[test]
fn labels_hold_at_most_64_bytes() {
    let mount = |label: &str| {
        format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"master\"\nlabel = \"{label}\"\n")
    };
    let longest = "x".repeat(limits::SPAN_LABEL_MAX);
    assert_eq!(parse(&mount(&longest)).unwrap().mounts[0].label.as_bytes(), longest.as_bytes());
    refused(&mount(&"x".repeat(65)), 7, "mount label is 65 bytes; at most 64");
    // Bytes, not characters: 33 two-byte characters are 66 bytes.
    refused(&mount(&"é".repeat(33)), 7, "mount label is 66 bytes");
}

#[test]
fn too_many_mounts_are_refused() {
    let mut text = MINIMAL.to_owned();
    for i in 0..limits::SPAN_MOUNTS_MAX {
        text.push_str(&format!("[[mount]]\ncluster = 1\nid = {i}\nkind = \"cache\"\n"));
    }
    assert_eq!(parse(&text).unwrap().mounts.len(), limits::SPAN_MOUNTS_MAX);
    text.push_str("[[mount]]\ncluster = 2\nid = 0\nkind = \"cache\"\n");
    refused(&text, 3 + 4 * limits::SPAN_MOUNTS_MAX, "more than 16384 mounts");
}
