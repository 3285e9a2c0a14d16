//! Turning spans into error positions, and the checks of single values: addresses, paths,
//! keys, ids and the worker count.

use std::net::SocketAddr;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use crate::cipher::PublicKey;
use crate::error::KeyFile;
use crate::limits;
use crate::relay::redial::PeerAddr;
use toml::Spanned;

use super::parse_id;
use super::raw::IdText;
use super::{ConfigError, LogFormat};

/// The text being checked, for turning spans into error positions.
pub(super) struct Source<'a> {
    /// The file, named in errors.
    pub(super) path: &'a Path,
    /// Its text.
    pub(super) text: &'a str,
    /// The directory relative paths are taken from.
    pub(super) dir: &'a Path,
}

impl Source<'_> {
    /// An error about the value at `span`.
    pub(super) fn error(&self, span: Range<usize>, reason: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError {
            path: self.path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            reason: reason.into(),
        }
    }

    /// An error about the file as a whole.
    pub(super) fn whole(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            path: self.path.to_path_buf(),
            line: None,
            column: None,
            reason: reason.into(),
        }
    }

    /// A syntax or type error found while deserializing.
    pub(super) fn toml_error(&self, error: &toml::de::Error) -> ConfigError {
        let mut reason = error.message().trim_end().to_owned();
        if reason == "invalid type: map, expected a sequence" {
            // The likely cause: `[peer]` or `[mount]` where `[[peer]]` or `[[mount]]` was meant.
            reason.push_str(" (each peer is a [[peer]] table and each mount a [[mount]] table)");
        }
        match error.span() {
            Some(span) => self.error(span, reason),
            None => self.whole(reason),
        }
    }

    /// The 1-based line `span` starts on.
    pub(super) fn line(&self, span: Range<usize>) -> usize {
        line_column(self.text, span.start).0
    }

    pub(super) fn address(
        &self,
        text: &Spanned<String>,
        field: &str,
    ) -> Result<SocketAddr, ConfigError> {
        text.get_ref().parse().map_err(|_| {
            self.error(
                text.span(),
                format!(
                    "{field}: {:?} is not an IP address and port (e.g. \"127.0.0.1:7401\" or \
                     \"[::1]:7401\"; host names are not taken here)",
                    text.get_ref()
                ),
            )
        })
    }

    /// A peer's address: an IP address and port, or a host name and port (resolved when the
    /// node dials, never here).
    pub(super) fn peer_address(&self, text: &Spanned<String>) -> Result<PeerAddr, ConfigError> {
        text.get_ref().parse().map_err(|why| {
            self.error(
                text.span(),
                format!(
                    "peer address: {:?} is neither an IP address and port nor a host name and \
                     port ({why}; e.g. \"127.0.0.1:7401\", \"[::1]:7401\" or \
                     \"node-b.example:7401\")",
                    text.get_ref()
                ),
            )
        })
    }

    /// A path from the file: not empty, relative ones taken from the config's directory.
    pub(super) fn path(&self, text: &Spanned<String>, field: &str) -> Result<PathBuf, ConfigError> {
        let value = text.get_ref();
        if value.is_empty() {
            return Err(self.error(text.span(), format!("{field}: the path is empty")));
        }
        if value.contains('\0') {
            return Err(self.error(text.span(), format!("{field}: the path contains a NUL byte")));
        }
        let path = Path::new(value);
        Ok(if path.is_absolute() { path.to_path_buf() } else { self.dir.join(path) })
    }

    pub(super) fn control(&self, text: &Spanned<String>) -> Result<PathBuf, ConfigError> {
        self.socket_path(text, "[node] control")
    }

    /// A Unix socket's path: a path ([`Source::path`]) that fits a socket address once
    /// resolved.
    pub(super) fn socket_path(
        &self,
        text: &Spanned<String>,
        field: &str,
    ) -> Result<PathBuf, ConfigError> {
        let path = self.path(text, field)?;
        let len = path.as_os_str().as_bytes().len();
        if len > limits::CONTROL_PATH_MAX {
            return Err(self.error(
                text.span(),
                format!(
                    "{field}: the socket path {} is {len} bytes; a Unix socket path \
                     holds at most {}",
                    path.display(),
                    limits::CONTROL_PATH_MAX
                ),
            ));
        }
        Ok(path)
    }

    pub(super) fn workers(&self, value: &Spanned<i64>) -> Result<usize, ConfigError> {
        let workers = *value.get_ref();
        match usize::try_from(workers) {
            Ok(n) if (1..=limits::CONFIG_WORKERS_MAX).contains(&n) => Ok(n),
            _ => Err(self.error(
                value.span(),
                format!(
                    "[node] workers must be between 1 and {}, not {workers}",
                    limits::CONFIG_WORKERS_MAX
                ),
            )),
        }
    }

    pub(super) fn log_format(&self, text: &Spanned<String>) -> Result<LogFormat, ConfigError> {
        text.get_ref().parse().map_err(|why| self.error(text.span(), format!("[node] {why}")))
    }

    /// The name the node announces: printable UTF-8, at most [`limits::NODE_NAME_MAX`] bytes.
    pub(super) fn node_name(&self, text: &Spanned<String>) -> Result<String, ConfigError> {
        let name = text.get_ref();
        let why = if name.is_empty() {
            "is empty"
        } else if name.len() > limits::NODE_NAME_MAX {
            "is longer than 32 bytes"
        } else if name.chars().any(char::is_control) {
            "holds a control character"
        } else {
            return Ok(name.clone());
        };
        Err(self.error(text.span(), format!("[node] name {why}: it is announced to neighbours")))
    }

    /// A `RUST_LOG`-style filter (`"info"`, `"warn,ringspan::daemon=debug"`), checked as the
    /// log subscriber will take it.
    pub(super) fn log_level(&self, text: &Spanned<String>) -> Result<String, ConfigError> {
        let filter = text.get_ref();
        if filter.trim().is_empty() {
            return Err(self.error(text.span(), "[node] log_level is empty"));
        }
        match tracing_subscriber::EnvFilter::builder().parse(filter) {
            Ok(_) => Ok(filter.clone()),
            Err(e) => Err(self.error(
                text.span(),
                format!("[node] log_level {filter:?}: not a filter such as \"info\" or \"warn,ringspan=debug\" ({e})"),
            )),
        }
    }

    pub(super) fn public_key(
        &self,
        text: &Spanned<String>,
        field: &str,
    ) -> Result<PublicKey, ConfigError> {
        if text.get_ref().is_empty() {
            return Err(self.error(text.span(), format!("{field}: the key is empty")));
        }
        PublicKey::from_base64(text.get_ref().as_bytes()).map_err(|e| {
            let why = match e {
                crate::Error::KeyFile(KeyFile::Encoding) => {
                    "not valid base64 (expected the 44 characters `ringspan pubkey` prints)"
                        .to_owned()
                }
                crate::Error::KeyFile(KeyFile::Length(n)) => {
                    format!("the base64 decodes to {n} bytes; a public key has 32")
                }
                other => other.to_string(),
            };
            self.error(text.span(), format!("{field}: {why}"))
        })
    }

    pub(super) fn id(&self, value: &Spanned<IdText>, field: &str) -> Result<u128, ConfigError> {
        let parsed = match value.get_ref() {
            IdText::Integer(n) => u128::try_from(*n).map_err(|_| format!("{n} is negative")),
            IdText::Text(text) => parse_id(text),
        };
        parsed.map_err(|why| self.error(value.span(), format!("{field}: {why}")))
    }
}

/// The 1-based line and column (in characters) of byte `offset` in `text`. An offset inside a
/// character counts that character; one past the end gives the position after the last.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for (i, c) in text.char_indices() {
        if i >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}
