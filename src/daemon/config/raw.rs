//! The file as serde reads it, before any check: every value that is checked afterwards keeps
//! its span, and required keys are `Option`s so that their absence is reported with our own
//! words. Values the node's types take as they are written (roles, mount kinds) are
//! deserialized into those types here.

use std::fmt;

use crate::daemon::MountService;
use crate::span::{MountKind, Role};
use serde::Deserialize;
use toml::Spanned;

/// The whole file: its tables.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) node: Option<Spanned<RawNode>>,
    #[serde(default)]
    pub(super) peer: Vec<Spanned<RawPeer>>,
    #[serde(default)]
    pub(super) mount: Vec<Spanned<RawMount>>,
    pub(super) limits: Option<RawLimits>,
}

/// `[node]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) key: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) listen: Vec<Spanned<String>>,
    pub(super) workers: Option<Spanned<i64>>,
    pub(super) role: Option<Role>,
    pub(super) control: Option<Spanned<String>>,
    pub(super) metrics: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) accept_unknown_keys: bool,
    #[serde(default)]
    pub(super) allow: Vec<Spanned<RawAllow>>,
    #[serde(default)]
    pub(super) client_clusters: Vec<Spanned<IdText>>,
    pub(super) log_format: Option<Spanned<String>>,
    pub(super) log_level: Option<Spanned<String>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) attach: Option<Spanned<String>>,
    pub(super) attach_mode: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) attach_uids: Vec<Spanned<i64>>,
    #[serde(default)]
    pub(super) attach_gids: Vec<Spanned<i64>>,
    pub(super) attach_role: Option<Spanned<Role>>,
}

/// An `allow` entry: a bare key (a client), or `{ key = "...", role = "..." }`.
pub(super) enum RawAllow {
    Key(String),
    Entry { key: Option<String>, role: Option<String> },
}

impl<'de> Deserialize<'de> for RawAllow {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<RawAllow, D::Error> {
        struct Visitor;

        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RawAllow;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 key, or a table { key = \"...\", role = \"...\" }")
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<RawAllow, E> {
                Ok(RawAllow::Key(value.to_owned()))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<RawAllow, A::Error> {
                let (mut key, mut role) = (None, None);
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "key" => key = Some(map.next_value::<String>()?),
                        "role" => role = Some(map.next_value::<String>()?),
                        other => {
                            return Err(serde::de::Error::unknown_field(other, &["key", "role"]));
                        }
                    }
                }
                Ok(RawAllow::Entry { key, role })
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

/// A `[[peer]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) name: Option<Spanned<String>>,
    pub(super) address: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) role: Option<Role>,
}

/// A `[[mount]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMount {
    pub(super) cluster: Option<Spanned<IdText>>,
    pub(super) id: Option<Spanned<IdText>>,
    pub(super) kind: Option<MountKind>,
    pub(super) label: Option<Spanned<String>>,
    /// The node's own type, as written.
    #[serde(default)]
    pub(super) service: MountService,
}

/// `[limits]`: each value as written, in milliseconds unless its name says otherwise.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub(super) keepalive_ms: Option<Spanned<i64>>,
    pub(super) idle_timeout_ms: Option<Spanned<i64>>,
    pub(super) handshake_timeout_ms: Option<Spanned<i64>>,
    pub(super) send_queue_max_bytes: Option<Spanned<i64>>,
    pub(super) redial_min_ms: Option<Spanned<i64>>,
    pub(super) redial_max_ms: Option<Spanned<i64>>,
    pub(super) max_links: Option<Spanned<i64>>,
    pub(super) max_handshakes_per_sec: Option<Spanned<i64>>,
    pub(super) trusted_handshakes_per_sec: Option<Spanned<i64>>,
    pub(super) reserved_links: Option<Spanned<i64>>,
    pub(super) busy_poll_us: Option<Spanned<i64>>,
    pub(super) circuit_idle_ms: Option<Spanned<i64>>,
    pub(super) drain_grace_ms: Option<Spanned<i64>>,
}

/// A 128-bit id as written: a TOML integer, or a string parsed by [`super::parse_id`].
pub(super) enum IdText {
    Integer(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for IdText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<IdText, D::Error> {
        struct Visitor;

        impl serde::de::Visitor<'_> for Visitor {
            type Value = IdText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 128-bit id: a string (\"0x1f\", \"31\" or a UUID) or an integer")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<IdText, E> {
                Ok(IdText::Integer(value))
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<IdText, E> {
                i64::try_from(value)
                    .map(IdText::Integer)
                    .map_err(|_| E::custom("integer too large; write large ids as strings"))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<IdText, E> {
                Ok(IdText::Text(value.to_owned()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}
