//! A `ringspan run` node of a process test: its name, loopback port, key file and config path
//! (its control socket and log sit beside the config), with what tests ask of it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ringspan::cipher::identity::write_new_key_file;
use ringspan::cipher::{PrivateKey, PublicKey};
use ringspan::daemon::{PeerSpec, Snapshot, control};

use super::process::{Proc, free_port, run_node};

/// A fresh key written to `<dir>/<name>.key`, for a node or any process that takes a key file.
pub fn key_file(dir: &Path, name: &str) -> PrivateKey {
    let key = PrivateKey::generate().unwrap();
    write_new_key_file(&dir.join(format!("{name}.key")), &key).unwrap();
    key
}

pub struct Node {
    pub name: &'static str,
    pub port: u16,
    pub key: PrivateKey,
    /// `<dir>/<name>.toml`, written by the test.
    pub config: PathBuf,
}

impl Node {
    /// A node named `name` in `dir`: a fresh key in `<name>.key`, a free port.
    pub fn new(dir: &Path, name: &'static str) -> Node {
        let key = key_file(dir, name);
        Node { name, port: free_port(), key, config: dir.join(format!("{name}.toml")) }
    }

    pub fn public(&self) -> PublicKey {
        self.key.public_key().unwrap()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// How an application (the mount API) dials it.
    pub fn peer(&self) -> PeerSpec {
        PeerSpec::router(Some(self.addr()), self.public())
    }

    /// Its snapshot from its control socket, if it answers.
    pub fn try_snapshot(&self) -> Option<Snapshot> {
        serde_json::from_str(&control::fetch(&self.config.with_extension("sock")).ok()?).ok()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.try_snapshot().unwrap_or_else(|| panic!("{} does not answer on its socket", self.name))
    }

    /// `ringspan run` on its config.
    pub fn run(&self) -> Proc {
        run_node(&self.config)
    }
}
