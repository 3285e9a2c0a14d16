//! `[node]`'s attach socket keys: `attach`, `attach_mode`, `attach_uids`, `attach_gids` and
//! `attach_role`.

use toml::Spanned;

use crate::limits;
use crate::ring::AttachConfig;
use crate::span::Role;

use super::ConfigError;
use super::raw::RawNode;
use super::source::Source;

impl Source<'_> {
    /// The attach socket `[node]` configures, if any, and the role an attached application is
    /// granted (client by default).
    pub(super) fn attach(
        &self,
        node: &RawNode,
    ) -> Result<(Option<AttachConfig>, Role), ConfigError> {
        let role = node.attach_role.as_ref().map_or(Role::Client, |r| *r.get_ref());
        let Some(path) = &node.attach else {
            let orphan = [
                node.attach_mode.as_ref().map(|m| ("attach_mode", m.span())),
                node.attach_uids.first().map(|u| ("attach_uids", u.span())),
                node.attach_gids.first().map(|g| ("attach_gids", g.span())),
                node.attach_role.as_ref().map(|r| ("attach_role", r.span())),
            ];
            if let Some((key, span)) = orphan.into_iter().flatten().next() {
                return Err(self.error(
                    span,
                    format!("[node] {key} without `attach`: name the attach socket's path too"),
                ));
            }
            return Ok((None, role));
        };
        let path = self.socket_path(path, "[node] attach")?;
        let mode = match &node.attach_mode {
            None => 0o600,
            Some(text) => self.attach_mode(text)?,
        };
        let uids = self.ids(&node.attach_uids, "[node] attach_uids")?;
        let gids = self.ids(&node.attach_gids, "[node] attach_gids")?;
        Ok((Some(AttachConfig { mode, uids, gids, ..AttachConfig::new(path) }), role))
    }

    /// Permission bits as an octal string: "0660", "600", "0o640".
    fn attach_mode(&self, text: &Spanned<String>) -> Result<u32, ConfigError> {
        let value = text.get_ref();
        let digits = value.strip_prefix("0o").unwrap_or(value);
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if !digits.is_empty() && digits.len() <= 4 && mode <= 0o777 => Ok(mode),
            _ => Err(self.error(
                text.span(),
                format!(
                    "[node] attach_mode: {value:?} is not permission bits in octal (e.g. \"0600\" \
                     or \"0660\"; at most 0777)"
                ),
            )),
        }
    }

    /// A list of user or group ids: each a number a `uid_t` holds (not -1), each once, at
    /// most [`limits::ATTACH_IDS_MAX`].
    fn ids(&self, values: &[Spanned<i64>], field: &str) -> Result<Vec<u32>, ConfigError> {
        if let Some(extra) = values.get(limits::ATTACH_IDS_MAX) {
            return Err(self.error(
                extra.span(),
                format!("{field}: more than {} ids", limits::ATTACH_IDS_MAX),
            ));
        }
        let mut ids = Vec::with_capacity(values.len());
        for value in values {
            let id = match u32::try_from(*value.get_ref()) {
                Ok(id) if id != u32::MAX => id,
                _ => {
                    return Err(self.error(
                        value.span(),
                        format!("{field}: {} is not a user or group id", value.get_ref()),
                    ));
                }
            };
            if ids.contains(&id) {
                return Err(self.error(value.span(), format!("{field}: {id} is listed twice")));
            }
            ids.push(id);
        }
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::daemon::config::NodeConfig;

    fn parse(node: &str) -> Result<NodeConfig, ConfigError> {
        let text = format!("[node]\nkey = \"node.key\"\n{node}\n");
        NodeConfig::parse(Path::new("/etc/ringspan/node.toml"), &text)
    }

    #[test]
    fn the_attach_socket_takes_its_path_mode_ids_and_role() {
        let config = parse(
            "attach = \"run/attach.sock\"\nattach_mode = \"0660\"\nattach_uids = [1000, 0]\n\
             attach_gids = [100]\nattach_role = \"router\"",
        )
        .unwrap();
        let attach = config.attach.unwrap();
        assert_eq!(attach.path, Path::new("/etc/ringspan/run/attach.sock"));
        assert_eq!((attach.mode, attach.uids, attach.gids), (0o660, vec![1000, 0], vec![100]));
        assert_eq!(attach.max_links, limits::ATTACH_LINKS_MAX);
        assert_eq!(config.attach_role, Role::Router);
        let plain = parse("attach = \"/run/a.sock\"").unwrap();
        assert_eq!(plain.attach.unwrap().mode, 0o600);
        assert_eq!(plain.attach_role, Role::Client);
        assert_eq!(parse("").unwrap().attach, None);
    }

    #[test]
    fn attach_keys_are_refused_with_their_position() {
        let cases = [
            ("attach_mode = \"0600\"", "3:15", "attach_mode without `attach`"),
            ("attach = \"a\"\nattach_mode = \"0999\"", "4:15", "not permission bits"),
            ("attach = \"a\"\nattach_mode = \"1777\"", "4:15", "not permission bits"),
            ("attach = \"a\"\nattach_uids = [1, -1]", "4:19", "not a user or group id"),
            ("attach = \"a\"\nattach_gids = [7, 7]", "4:19", "7 is listed twice"),
            ("attach = \"\"", "3:10", "the path is empty"),
            ("attach_role = \"router\"", "3:15", "attach_role without"),
        ];
        for (node, at, why) in cases {
            let error = parse(node).unwrap_err().to_string();
            assert!(error.contains(&format!("node.toml:{at}:")), "{node}: {error}");
            assert!(error.contains(why), "{node}: {error}");
        }
        let long = format!("attach = \"/{}\"", "x".repeat(200));
        assert!(parse(&long).unwrap_err().to_string().contains("a Unix socket path holds"));
    }
}
