//! Where a configured peer is dialled: an IP address and port, dialled as it is, or a host name
//! and port, which the caller resolves anew before each dial (sans-IO: nothing here resolves).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Longest host name, without a final dot: a DNS name's limit in its text form (RFC 1035
/// 2.3.4 bounds a name at 255 bytes on the wire, which is 253 characters written out).
const NAME_MAX: usize = 253;

/// Longest label of a host name (RFC 1035 2.3.4).
const LABEL_MAX: usize = 63;

/// Where a configured peer is dialled.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PeerAddr {
    /// An IP address and port, dialled as it is.
    Ip(SocketAddr),
    /// A host name and port, resolved before each dial: a peer that moved to another address
    /// is found at the next one.
    Name {
        /// The host name, as written (a final dot kept).
        host: String,
        /// The port.
        port: u16,
    },
}

impl PeerAddr {
    /// The IP address and port, if this is one (not a name).
    pub fn ip(&self) -> Option<SocketAddr> {
        match self {
            PeerAddr::Ip(addr) => Some(*addr),
            PeerAddr::Name { .. } => None,
        }
    }

    /// The host name, if this is one.
    pub fn host(&self) -> Option<&str> {
        match self {
            PeerAddr::Ip(_) => None,
            PeerAddr::Name { host, .. } => Some(host),
        }
    }
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> PeerAddr {
        PeerAddr::Ip(addr)
    }
}

impl fmt::Display for PeerAddr {
    /// As it is written in a configuration: `127.0.0.1:7401`, `[::1]:7401`, `node-b:7401`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(addr) => write!(f, "{addr}"),
            PeerAddr::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Why a text is not a [`PeerAddr`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeerAddrError {
    /// No `:port` at the end.
    #[error("no port (write HOST:PORT)")]
    NoPort,
    /// What follows the last `:` is not a port number.
    #[error("the port is not a number from 0 to 65535")]
    Port,
    /// An IPv6 address without brackets, or something else with a `:` in its host part.
    #[error("not an IP address (an IPv6 address goes in brackets, as in [::1]:7401)")]
    Colon,
    /// The host part is not a host name.
    #[error("{0}")]
    Name(&'static str),
}

impl FromStr for PeerAddr {
    type Err = PeerAddrError;

    /// `IP:port` (`127.0.0.1:7401`, `[::1]:7401`) or `host.name:port` (`node-b.example:7401`,
    /// `localhost:7401`). A host name is letters, digits, `-` and `_` in dot-separated labels
    /// of 1 to 63 characters, none starting or ending with `-`, 253 characters at most (a final
    /// dot allowed), and its last label is not all digits (`10.1.2:7401` is a mistyped address,
    /// which a resolver would read as 10.1.0.2).
    fn from_str(text: &str) -> Result<PeerAddr, PeerAddrError> {
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(PeerAddr::Ip(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or(PeerAddrError::NoPort)?;
        if host.contains(':') || host.starts_with('[') {
            return Err(PeerAddrError::Colon);
        }
        if port.is_empty() {
            return Err(PeerAddrError::NoPort);
        }
        let port = port.parse::<u16>().map_err(|_| PeerAddrError::Port)?;
        check_name(host)?;
        Ok(PeerAddr::Name { host: host.to_owned(), port })
    }
}

/// Whether `host` is a host name as [`PeerAddr::from_str`] takes it.
fn check_name(host: &str) -> Result<(), PeerAddrError> {
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.is_empty() {
        return Err(PeerAddrError::Name("the host name is empty"));
    }
    if name.len() > NAME_MAX {
        return Err(PeerAddrError::Name("the host name is longer than 253 characters"));
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(PeerAddrError::Name("the host name has an empty label (two dots)"));
        }
        if label.len() > LABEL_MAX {
            return Err(PeerAddrError::Name("a label of the host name is over 63 characters"));
        }
        if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(PeerAddrError::Name(
                "the host name has a character other than letters, digits, '-', '_' and '.'",
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(PeerAddrError::Name("a label of the host name starts or ends with '-'"));
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PeerAddrError::Name(
            "not an IP address, and a host name's last label is not all digits",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(host: &str, port: u16) -> PeerAddr {
        PeerAddr::Name { host: host.to_owned(), port }
    }

    #[test]
    fn ip_addresses_and_host_names_with_ports_parse() {
        let v4: SocketAddr = "127.0.0.1:7401".parse().unwrap();
        let v6: SocketAddr = "[::1]:7401".parse().unwrap();
        assert_eq!("127.0.0.1:7401".parse(), Ok(PeerAddr::Ip(v4)));
        assert_eq!("[::1]:7401".parse(), Ok(PeerAddr::Ip(v6)));
        assert_eq!("localhost:7401".parse(), Ok(name("localhost", 7401)));
        assert_eq!("node-b.example.org:1".parse(), Ok(name("node-b.example.org", 1)));
        assert_eq!("_svc.b.example.:9".parse(), Ok(name("_svc.b.example.", 9)));
        assert_eq!("b.invalid:65535".parse(), Ok(name("b.invalid", 65535)));
        // Shown as written.
        for text in ["127.0.0.1:7401", "[::1]:7401", "node-b.example.org:7401"] {
            assert_eq!(text.parse::<PeerAddr>().unwrap().to_string(), text);
        }
        assert_eq!(name("a", 1).ip(), None);
        assert_eq!(PeerAddr::Ip(v4).ip(), Some(v4));
        assert_eq!(name("a", 1).host(), Some("a"));
    }

    #[test]
    fn what_is_neither_is_refused_with_the_reason() {
        use PeerAddrError::*;
        let long_label = format!("{}.example:1", "a".repeat(64));
        let long_name = format!("{}:1", ["abcdefghi"; 26].join("."));
        let cases: [(&str, PeerAddrError); 16] = [
            ("localhost", NoPort),
            ("localhost:", NoPort),
            ("localhost:http", Port),
            ("localhost:65536", Port),
            ("localhost:-1", Port),
            ("::1:7401", Colon),
            ("[::1:7401", Colon),
            ("[fe80::1%lo]:7401", Colon),
            (":7401", Name("the host name is empty")),
            ("a..b:7401", Name("the host name has an empty label (two dots)")),
            ("-a.b:7401", Name("a label of the host name starts or ends with '-'")),
            (
                "a b:7401",
                Name("the host name has a character other than letters, digits, '-', '_' and '.'"),
            ),
            (
                "1.2.3:7401",
                Name("not an IP address, and a host name's last label is not all digits"),
            ),
            (
                "300.1.1.1:7401",
                Name("not an IP address, and a host name's last label is not all digits"),
            ),
            (long_label.as_str(), Name("a label of the host name is over 63 characters")),
            (long_name.as_str(), Name("the host name is longer than 253 characters")),
        ];
        for (text, error) in cases {
            assert_eq!(text.parse::<PeerAddr>(), Err(error), "{text}");
        }
    }
}
