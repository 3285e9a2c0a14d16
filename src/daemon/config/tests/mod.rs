//! The configuration file's tests: every field, every refusal with its line and reason. The
//! lists' (`lists.rs`) and the `[limits]` table's (`limits_table.rs`) have files of their own.

mod doc;
mod limits_table;
mod lists;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cipher::{Identity, PublicKey};
use crate::daemon::{Limits, MountService, MountSpec, PeerSpec, control};
use crate::ids::{ClusterId, MountId};
use crate::limits;
use crate::ring::AttachConfig;
use crate::span::{Label, MountKey, MountKind, Role};
use proptest::prelude::*;

use super::source::line_column;
use super::{ConfigError, LogFormat, NodeConfig, Peer};

/// Where the test configs claim to live.
const CONFIG: &str = "/etc/ringspan/node.toml";

/// The smallest valid config.
const MINIMAL: &str = "[node]\nkey = \"node.key\"\n";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn mount_key(cluster: u128, mount: u128) -> MountKey {
    MountKey { cluster: ClusterId(cluster), mount: MountId(mount) }
}

fn key(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn b64(n: u8) -> String {
    key(n).to_base64()
}

fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
    NodeConfig::parse(Path::new(CONFIG), text)
}

/// Parses `text`, expecting a refusal on `line` whose reason contains `reason`.
#[track_caller]
fn refused(text: &str, line: usize, reason: &str) -> ConfigError {
    let error = match parse(text) {
        Ok(config) => panic!("accepted: {config:?}\n{text}"),
        Err(error) => error,
    };
    assert_eq!(error.line, Some(line), "{error}");
    assert!(error.column.is_some(), "{error}");
    assert!(error.reason.contains(reason), "{error:?} lacks {reason:?}");
    assert_eq!(error.path, Path::new(CONFIG));
    error
}

/// The complete file of `docs/CONFIG.md`.
fn doc_example() -> String {
    doc::complete_file().to_owned()
}

#[test]
fn the_documented_example_parses_to_its_values() {
    let config = parse(&doc_example()).unwrap();
    let expected = NodeConfig {
        path: PathBuf::from(CONFIG),
        key: PathBuf::from("/etc/ringspan/node.key"),
        listen: vec!["127.0.0.1:7401".parse().unwrap(), "[::1]:7401".parse().unwrap()],
        workers: Some(2),
        role: Role::Router,
        control: Some(PathBuf::from("/etc/ringspan/node.sock")),
        metrics: Some("127.0.0.1:9401".parse().unwrap()),
        accept_unknown_keys: false,
        allow: vec![
            (
                PublicKey::from_base64(b"BteBEaiYoKJNlrpUJ6jod75DMNzRJ8EISy9iPr5HIrs=").unwrap(),
                Role::Client,
            ),
            (
                PublicKey::from_base64(b"K3cBnqCLpXXl5y+BUu2pHvD9UpRWfmVw2Ldz6OKq1mA=").unwrap(),
                Role::Router,
            ),
        ],
        client_clusters: vec![ClusterId(1)],
        peers: vec![Peer {
            name: Some("b".to_owned()),
            spec: PeerSpec {
                address: Some("127.0.0.1:7402".parse().unwrap()),
                key: PublicKey::from_base64(b"UTN4L3rO3PFCCDdgT33zWvJrYKCYE3R5v3pb0Mm4pSo=")
                    .unwrap(),
                role: Role::Router,
            },
        }],
        mounts: vec![MountSpec {
            key: mount_key(1, 0x10),
            kind: MountKind::Master,
            label: Label::new(b"a/master").unwrap(),
            service: MountService::Echo,
        }],
        limits: Limits::default(),
        log_format: Some(LogFormat::Text),
        log_level: Some("warn".to_owned()),
        name: Some("a".to_owned()),
        attach: Some(AttachConfig {
            uids: vec![1000],
            ..AttachConfig::new("/etc/ringspan/attach.sock")
        }),
        attach_role: Role::Client,
    };
    assert_eq!(config, expected);
}

#[test]
fn a_full_config_parses_to_its_values() {
    let text = format!(
        r#"[node]
key = "/var/lib/ringspan/a.key"
listen = ["0.0.0.0:7401", "[::]:7401"]
workers = 4
role = "satellite"
control = "run/a.sock"
metrics = "[::1]:9401"
accept_unknown_keys = true
allow = ["{k3}", {{ key = "{k4}", role = "satellite" }}]
client_clusters = [7, "0x8"]

[[peer]]
name = "b"
address = "10.0.0.2:7401"
key = "{k1}"

[[peer]]
key = "{k2}"
role = "client"

[[mount]]
cluster = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
id = "42"
kind = "soft-slave"
label = "pfs/home"

[[mount]]
cluster = 7
id = "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
kind = "client"
service = "none"

[limits]
keepalive_ms = 250
idle_timeout_ms = 1000
handshake_timeout_ms = 3000
send_queue_max_bytes = 1048576
redial_min_ms = 50
redial_max_ms = 50
max_links = 20000
max_handshakes_per_sec = 150
trusted_handshakes_per_sec = 20
reserved_links = 0
busy_poll_us = 0
circuit_idle_ms = 60000
drain_grace_ms = 0
"#,
        k1 = b64(1),
        k2 = b64(2),
        k3 = b64(3),
        k4 = b64(4),
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.key, Path::new("/var/lib/ringspan/a.key"));
    assert_eq!(
        config.listen,
        ["0.0.0.0:7401".parse::<SocketAddr>().unwrap(), "[::]:7401".parse().unwrap()]
    );
    assert_eq!(config.workers, Some(4));
    assert_eq!(config.role, Role::Satellite);
    assert_eq!(config.control, Some(PathBuf::from("/etc/ringspan/run/a.sock")));
    assert_eq!(config.metrics, Some("[::1]:9401".parse().unwrap()));
    assert!(config.accept_unknown_keys);
    assert_eq!(config.allow, [(key(3), Role::Client), (key(4), Role::Satellite),]);
    assert_eq!(config.client_clusters, [ClusterId(7), ClusterId(8)]);
    assert_eq!(
        config.peers,
        [
            Peer {
                name: Some("b".to_owned()),
                spec: PeerSpec {
                    address: Some("10.0.0.2:7401".parse().unwrap()),
                    key: key(1),
                    role: Role::Router,
                },
            },
            Peer { name: None, spec: PeerSpec { address: None, key: key(2), role: Role::Client } },
        ]
    );
    assert_eq!(
        config.mounts,
        [
            MountSpec {
                key: mount_key(0x3f2504e0_4f89_11d3_9a0c_0305e82c3301, 42),
                kind: MountKind::SoftSlave,
                label: Label::new(b"pfs/home").unwrap(),
                service: MountService::App,
            },
            MountSpec {
                key: mount_key(7, u128::MAX),
                kind: MountKind::Client,
                label: Label::EMPTY,
                service: MountService::App,
            },
        ]
    );
    assert_eq!(
        config.limits,
        Limits {
            keepalive: ms(250),
            idle_timeout: ms(1000),
            handshake_timeout: ms(3000),
            send_queue_max_bytes: 1 << 20,
            redial_min: ms(50),
            redial_max: ms(50),
            max_links: 20_000,
            max_handshakes_per_sec: 150,
            trusted_handshakes_per_sec: 20,
            reserved_links: 0,
            busy_poll: Duration::ZERO,
            circuit_idle: ms(60_000),
            drain_grace: Duration::ZERO,
        }
    );
}

#[test]
fn a_minimal_config_gets_the_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(
        config,
        NodeConfig {
            path: PathBuf::from(CONFIG),
            key: PathBuf::from("/etc/ringspan/node.key"),
            listen: vec![],
            workers: None,
            role: Role::Router,
            control: None,
            metrics: None,
            accept_unknown_keys: false,
            allow: vec![],
            client_clusters: vec![],
            peers: vec![],
            mounts: vec![],
            limits: Limits::default(),
            log_format: None,
            log_level: None,
            name: None,
            attach: None,
            attach_role: Role::Client,
        }
    );
    assert_eq!(
        Limits::default(),
        Limits {
            keepalive: ms(limits::KEEPALIVE_INTERVAL_MS),
            idle_timeout: ms(limits::IDLE_TIMEOUT_MS),
            handshake_timeout: ms(limits::HANDSHAKE_TIMEOUT_MS),
            send_queue_max_bytes: limits::SEND_QUEUE_MAX_BYTES,
            redial_min: ms(limits::REDIAL_MIN_MS),
            redial_max: ms(limits::REDIAL_MAX_MS),
            max_links: limits::MAX_LINKS_PER_WORKER,
            max_handshakes_per_sec: limits::HANDSHAKES_PER_SEC,
            trusted_handshakes_per_sec: limits::TRUSTED_HANDSHAKES_PER_SEC,
            reserved_links: limits::RESERVED_LINKS,
            busy_poll: Duration::from_micros(limits::BUSY_POLL_US),
            circuit_idle: ms(limits::CIRCUIT_IDLE_MS),
            drain_grace: ms(limits::DRAIN_GRACE_MS),
        }
    );
    // An empty [limits] table is the defaults too.
    assert_eq!(parse(&format!("{MINIMAL}[limits]\n")).unwrap().limits, Limits::default());
}

#[test]
fn every_kind_role_and_service_has_its_name() {
    for (name, kind) in [
        ("master", MountKind::Master),
        ("slave", MountKind::Slave),
        ("soft-master", MountKind::SoftMaster),
        ("soft-slave", MountKind::SoftSlave),
        ("cache", MountKind::Cache),
        ("client", MountKind::Client),
    ] {
        let text = format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"{name}\"\n");
        assert_eq!(parse(&text).unwrap().mounts[0].kind, kind, "{name}");
    }
    for (name, role) in
        [("router", Role::Router), ("satellite", Role::Satellite), ("client", Role::Client)]
    {
        let text = format!("[node]\nkey = \"k\"\nrole = \"{name}\"\n");
        assert_eq!(parse(&text).unwrap().role, role, "{name}");
        // The name `show` prints is the one the config takes.
        assert_eq!(role.name(), name);
    }
    for (name, service) in [("echo", MountService::Echo), ("none", MountService::App)] {
        let text = format!(
            "{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"cache\"\nservice = \"{name}\"\n"
        );
        assert_eq!(parse(&text).unwrap().mounts[0].service, service, "{name}");
    }
}

#[test]
fn the_settings_carry_what_the_file_says() {
    let config = parse(&doc_example()).unwrap();
    let settings = config.settings(Identity::generate().unwrap());
    assert_eq!(settings.role, Role::Router);
    // Every listen address.
    let listen: [SocketAddr; 2] =
        ["127.0.0.1:7401".parse().unwrap(), "[::1]:7401".parse().unwrap()];
    assert_eq!(settings.listen, listen);
    assert_eq!(settings.peers, [config.peers[0].spec.clone()]);
    assert_eq!(settings.allow, config.allow);
    assert!(!settings.accept_unknown_keys);
    assert_eq!(settings.client_clusters, [ClusterId(1)]);
    assert_eq!(settings.mounts, config.mounts);
    assert_eq!(settings.limits, Limits::default());
    assert_eq!(settings.control, Some(PathBuf::from("/etc/ringspan/node.sock")));
    assert_eq!(settings.metrics, Some("127.0.0.1:9401".parse().unwrap()));

    // Without `control`, the socket is the default one beside the file.
    let text = format!("{MINIMAL}role = \"client\"\naccept_unknown_keys = true\n");
    let config = parse(&text).unwrap();
    let settings = config.settings(Identity::generate().unwrap());
    assert_eq!(settings.control, Some(control::default_socket(Path::new(CONFIG))));
    assert_eq!(config.control_socket(), control::default_socket(Path::new(CONFIG)));
    assert_eq!((settings.role, settings.listen), (Role::Client, vec![]));
    assert!(settings.accept_unknown_keys);
}

#[test]
fn relative_paths_are_taken_from_the_config_directory() {
    let at = |config: &str, text: &str| NodeConfig::parse(Path::new(config), text).unwrap();
    let relative = "[node]\nkey = \"node.key\"\ncontrol = \"sock/node.sock\"\n";
    let config = at("/etc/ringspan/a.toml", relative);
    assert_eq!(config.key, Path::new("/etc/ringspan/node.key"));
    assert_eq!(config.control.unwrap(), Path::new("/etc/ringspan/sock/node.sock"));
    assert_eq!(config.path, Path::new("/etc/ringspan/a.toml"));

    let absolute = "[node]\nkey = \"/srv/keys/node.key\"\ncontrol = \"/run/ringspan.sock\"\n";
    let config = at("/etc/ringspan/a.toml", absolute);
    assert_eq!(config.key, Path::new("/srv/keys/node.key"));
    assert_eq!(config.control.unwrap(), Path::new("/run/ringspan.sock"));

    // A config named without a directory: paths stay relative to the working directory, as
    // the config's own path is.
    assert_eq!(at("a.toml", relative).key, Path::new("node.key"));
    assert_eq!(at("conf/a.toml", relative).key, Path::new("conf/node.key"));
    assert_eq!(at("../a.toml", "[node]\nkey = \"k\"\n").key, Path::new("../k"));
}

#[test]
fn a_missing_node_table_is_refused_for_the_whole_file() {
    for text in ["", "# nothing\n", "[limits]\nkeepalive_ms = 1000\n"] {
        let error = parse(text).unwrap_err();
        assert_eq!((error.line, error.column), (None, None), "{error}");
        assert!(error.reason.contains("no [node] table"), "{error}");
    }
}

#[test]
fn a_missing_key_is_refused_at_the_node_table() {
    let error = refused("# a node\n\n[node]\nlisten = []\n", 3, "[node] has no `key`");
    assert_eq!(error.column, Some(1));
    refused("[node]\nkey = \"\"\n", 2, "[node] key: the path is empty");
    refused("[node]\nkey = \"a\\u0000b\"\n", 2, "NUL");
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let error = refused("[node]\nkey = \"k\"\nlisen = []\n", 3, "unknown field `lisen`");
    assert_eq!(error.column, Some(1));
    refused("[node]\nkey = \"k\"\n\n[peers]\n", 4, "unknown field `peers`");
    refused("tls = true\n[node]\nkey = \"k\"\n", 1, "unknown field `tls`");
    refused("[node]\nkey = \"k\"\n[node.extra]\n", 3, "unknown field `extra`");
    refused(
        &format!("{MINIMAL}[[peer]]\nkey = \"{}\"\nport = 7401\n", b64(1)),
        5,
        "unknown field `port`",
    );
    refused(
        &format!("{MINIMAL}[[mount]]\ncluster = 1\nid = 1\nkind = \"master\"\nlable = \"x\"\n"),
        7,
        "unknown field `lable`",
    );
    refused(&format!("{MINIMAL}[limits]\nkeepalive = 5\n"), 4, "unknown field `keepalive`");
}

#[test]
fn syntax_errors_report_their_line() {
    // An unterminated string: the closing quote was expected at the end of line 2.
    let error = refused("[node]\nkey = \"node.key\nworkers = 2\n", 2, "string");
    assert_eq!(error.column, Some(16));
    refused("[node]\nkey = \"k\"\nkey = \"j\"\n", 3, "duplicate key");
    refused("[node]\nkey = \"k\"\nworkers = \n", 3, "");
    refused("[node\nkey = \"k\"\n", 1, "");
}

#[test]
fn wrong_types_report_their_line() {
    refused("[node]\nkey = \"k\"\nworkers = \"two\"\n", 3, "invalid type: string");
    refused("[node]\nkey = 7\n", 2, "invalid type: integer");
    refused("[node]\nkey = \"k\"\nlisten = \"127.0.0.1:1\"\n", 3, "invalid type");
    refused("[node]\nkey = \"k\"\naccept_unknown_keys = \"yes\"\n", 3, "invalid type");
    refused("[node]\nkey = \"k\"\nrole = \"routr\"\n", 3, "unknown variant `routr`");
    let error = refused(
        &format!("{MINIMAL}[peer]\nkey = \"{}\"\n", b64(1)),
        3,
        "each peer is a [[peer]] table",
    );
    assert_eq!(error.column, Some(1));
}

#[test]
fn addresses_must_be_socket_addresses_and_say_which_field() {
    let error = refused(
        "[node]\nkey = \"k\"\nlisten = [\"127.0.0.1:7401\", \"localhost:7401\"]\n",
        3,
        "[node] listen address: \"localhost:7401\" is not an IP address and port",
    );
    assert_eq!(error.column, Some(29));
    refused("[node]\nkey = \"k\"\nlisten = [\"127.0.0.1\"]\n", 3, "[node] listen address");
    refused("[node]\nkey = \"k\"\nmetrics = \"9401\"\n", 3, "[node] metrics: \"9401\"");
    refused(
        &format!("{MINIMAL}\n[[peer]]\naddress = \"10.0.0.1:99999\"\nkey = \"{}\"\n", b64(1)),
        5,
        "peer address: \"10.0.0.1:99999\"",
    );
}

#[test]
fn listen_addresses_may_not_repeat() {
    let text = "[node]\nkey = \"k\"\nlisten = [\n  \"127.0.0.1:7401\",\n  \"[::1]:7401\",\n  \
                \"127.0.0.1:7401\",\n]\n";
    let error = refused(text, 6, "listen address 127.0.0.1:7401 is listed twice");
    assert!(error.reason.contains("first on line 4"), "{error}");
    assert_eq!(error.column, Some(3));
}

#[test]
fn metrics_and_peers_may_not_use_a_listen_address() {
    refused(
        "[node]\nkey = \"k\"\nlisten = [\"127.0.0.1:7401\"]\nmetrics = \"127.0.0.1:7401\"\n",
        4,
        "metrics address 127.0.0.1:7401 is also a listen address",
    );
    refused(
        &format!(
            "[node]\nkey = \"k\"\nlisten = [\"127.0.0.1:7401\"]\n[[peer]]\n\
             address = \"127.0.0.1:7401\"\nkey = \"{}\"\n",
            b64(1)
        ),
        5,
        "would dial itself",
    );
}

#[test]
fn workers_are_between_1_and_256() {
    let workers = |n: i64| format!("[node]\nkey = \"k\"\nworkers = {n}\n");
    assert_eq!(parse(&workers(1)).unwrap().workers, Some(1));
    assert_eq!(parse(&workers(256)).unwrap().workers, Some(256));
    let error = refused(&workers(0), 3, "[node] workers must be between 1 and 256, not 0");
    assert_eq!(error.column, Some(11));
    refused(&workers(257), 3, "not 257");
    refused(&workers(-1), 3, "not -1");
    refused(&workers(i64::MIN), 3, "between 1 and 256");
}

#[test]
fn the_log_format_is_text_or_json() {
    let format = |name: &str| format!("[node]\nkey = \"k\"\nlog_format = \"{name}\"\n");
    assert_eq!(parse(&format("text")).unwrap().log_format, Some(LogFormat::Text));
    assert_eq!(parse(&format("json")).unwrap().log_format, Some(LogFormat::Json));
    for name in LogFormat::NAMES {
        assert_eq!(name.parse::<LogFormat>().unwrap().name(), name);
    }
    let error =
        refused(&format("JSON"), 3, "[node] log_format must be \"text\" or \"json\", not \"JSON\"");
    assert_eq!(error.column, Some(14));
    refused(&format(""), 3, "not \"\"");
    refused("[node]\nkey = \"k\"\nlog_format = 1\n", 3, "invalid type: integer");
}

#[test]
fn the_log_level_is_a_filter_the_subscriber_takes() {
    let level = |filter: &str| format!("[node]\nkey = \"k\"\nlog_level = \"{filter}\"\n");
    assert_eq!(parse(&level("info")).unwrap().log_level.as_deref(), Some("info"));
    let both = "warn,ringspan::daemon=debug";
    assert_eq!(parse(&level(both)).unwrap().log_level.as_deref(), Some(both));
    let error =
        refused(&level("ringspan=loud"), 3, "[node] log_level \"ringspan=loud\": not a filter");
    assert_eq!(error.column, Some(13));
    refused(&level(" "), 3, "[node] log_level is empty");
}

#[test]
fn the_node_name_is_short_printable_text() {
    let named = |name: &str| format!("[node]\nkey = \"k\"\nname = \"{name}\"\n");
    assert_eq!(parse(&named("core-1")).unwrap().name.as_deref(), Some("core-1"));
    assert_eq!(parse(&named(&"n".repeat(32))).unwrap().name.map(|n| n.len()), Some(32));
    let error = refused(&named(&"n".repeat(33)), 3, "[node] name is longer than 32 bytes");
    assert_eq!(error.column, Some(8));
    refused(&named(""), 3, "[node] name is empty");
    refused(&named("a\\tb"), 3, "[node] name holds a control character");
}

#[test]
fn the_control_path_must_fit_a_socket_address() {
    let longest = format!("/{}", "s".repeat(limits::CONTROL_PATH_MAX - 1));
    let text = format!("[node]\nkey = \"k\"\ncontrol = \"{longest}\"\n");
    assert_eq!(parse(&text).unwrap().control.unwrap(), Path::new(&longest));
    let text = format!("[node]\nkey = \"k\"\ncontrol = \"{longest}s\"\n");
    refused(&text, 3, "is 108 bytes; a Unix socket path holds at most 107");
    // The length counted is the resolved one: 14 bytes of "/etc/ringspan/" and 94 more.
    let text = format!("[node]\nkey = \"k\"\ncontrol = \"{}\"\n", "s".repeat(94));
    refused(&text, 3, "is 108 bytes");
    refused("[node]\nkey = \"k\"\ncontrol = \"\"\n", 3, "[node] control: the path is empty");
}

#[test]
fn the_attach_socket_is_not_the_control_socket() {
    // CONFIG is /etc/ringspan/node.toml: its default control socket is node.sock beside it.
    refused(
        "[node]\nkey = \"k\"\nattach = \"node.sock\"\n",
        3,
        "[node] attach /etc/ringspan/node.sock is also the default control socket",
    );
    refused(
        "[node]\nkey = \"k\"\ncontrol = \"a.sock\"\nattach = \"a.sock\"\n",
        4,
        "is also [node] control",
    );
    let text = "[node]\nkey = \"k\"\ncontrol = \"node.sock\"\nattach = \"attach.sock\"\n";
    assert!(parse(text).is_ok());
    assert!(parse("[node]\nkey = \"k\"\nattach = \"attach.sock\"\n").is_ok());
}

#[test]
fn errors_display_as_path_line_column_reason() {
    let error = ConfigError {
        path: PathBuf::from("node.toml"),
        line: Some(12),
        column: Some(9),
        reason: "peer key: not valid base64".to_owned(),
    };
    assert_eq!(error.to_string(), "node.toml:12:9: peer key: not valid base64");
    let error = ConfigError { column: None, ..error };
    assert_eq!(error.to_string(), "node.toml:12: peer key: not valid base64");
    let error = ConfigError { line: None, ..error };
    assert_eq!(error.to_string(), "node.toml: peer key: not valid base64");

    // As parse reports one.
    let error = NodeConfig::parse(
        Path::new("conf/node.toml"),
        &format!("{MINIMAL}\n[[peer]]\nname = \"b\"\nkey = \"not base64\"\n"),
    )
    .unwrap_err();
    assert!(
        error.to_string().starts_with("conf/node.toml:6:7: peer key: not valid base64 ("),
        "{error}"
    );
    let boxed: Box<dyn std::error::Error> = Box::new(error);
    assert!(boxed.to_string().starts_with("conf/node.toml:6:7:"));
}

#[test]
fn load_reads_the_file_and_reports_one_it_cannot_read() {
    let dir = std::env::temp_dir().join(format!("ringspan-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, MINIMAL).unwrap();
    let config = NodeConfig::load(&path);
    let missing = NodeConfig::load(&dir.join("absent.toml"));
    std::fs::write(&path, b"[node]\nkey = \"\xff\"\n").unwrap();
    let not_utf8 = NodeConfig::load(&path);
    std::fs::remove_dir_all(&dir).unwrap();

    let config = config.unwrap();
    assert_eq!(config.path, path);
    assert_eq!(config.key, dir.join("node.key"));

    let missing = missing.unwrap_err();
    assert_eq!(missing.path, dir.join("absent.toml"));
    assert_eq!((missing.line, missing.column), (None, None));
    assert!(missing.reason.starts_with("cannot read the configuration: "), "{missing}");

    assert!(not_utf8.unwrap_err().reason.starts_with("cannot read the configuration: "));
}

#[test]
fn positions_count_lines_and_characters() {
    let text = "ab\ncdé\nfg";
    assert_eq!(line_column(text, 0), (1, 1));
    assert_eq!(line_column(text, 2), (1, 3));
    assert_eq!(line_column(text, 3), (2, 1));
    assert_eq!(line_column(text, 5), (2, 3));
    // 'é' takes two bytes but one column.
    assert_eq!(line_column(text, 7), (2, 4));
    assert_eq!(line_column(text, 8), (3, 1));
    // Inside a character (counted), or past the end: no panic.
    assert_eq!(line_column(text, 6), (2, 4));
    assert_eq!(line_column(text, 1000), (3, 3));
}

/// Every error's position is within the text.
fn check_position(text: &str, result: Result<NodeConfig, ConfigError>) {
    if let Err(error) = result
        && let Some(line) = error.line
    {
        assert!(line >= 1 && line <= text.split('\n').count(), "{error}");
        assert!(error.column.is_some_and(|c| c >= 1), "{error}");
    }
}

proptest! {
    #[test]
    fn any_text_gives_a_result_not_a_panic(text in "\\PC*") {
        check_position(&text, parse(&text));
    }

    #[test]
    fn an_edited_example_gives_a_result_not_a_panic(
        at in any::<prop::sample::Index>(),
        cut in 0usize..16,
        insert in "[\\[\\]\"=#,.0-9a-z\n -]{0,8}",
    ) {
        let example = doc_example();
        // The example is ASCII, so every byte offset is a character boundary.
        let start = at.index(example.len());
        let end = (start + cut).min(example.len());
        let text = format!("{}{insert}{}", &example[..start], &example[end..]);
        check_position(&text, parse(&text));
    }
}
