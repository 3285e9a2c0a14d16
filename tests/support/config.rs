//! The configuration files of the `ringspan run` nodes that process tests start, written a
//! TOML table at a time, so that a test says only what its nodes differ in.

use ringspan::cipher::PublicKey;
use ringspan::span::MountKey;

use super::node::Node;

/// Writes `node`'s configuration: `[node]` with its key file (`<name>.key`) and its loopback
/// listener, then `node_lines` (a role, `allow`, `accept_unknown_keys`...); `[limits]` with
/// `limits`; then `tables` (peers, mounts).
pub fn write(node: &Node, node_lines: &str, limits: &str, tables: &str) {
    let text = format!(
        "[node]\nkey = \"{}.key\"\nlisten = [\"{}\"]\n{node_lines}\n[limits]\n{limits}\n{tables}",
        node.name,
        node.addr()
    );
    std::fs::write(&node.config, text).unwrap();
}

/// A `[[peer]]` table for `peer`: its name and key, and its address if the node dials it.
pub fn peer(peer: &Node, dial: bool) -> String {
    let address = if dial { format!("address = \"{}\"\n", peer.addr()) } else { String::new() };
    format!(
        "\n[[peer]]\nname = \"{}\"\nkey = \"{}\"\n{address}",
        peer.name,
        peer.public().to_base64()
    )
}

/// [`peer`], granted `role`.
pub fn peer_as(peer: &Node, role: &str, dial: bool) -> String {
    let address = if dial { format!("address = \"{}\"\n", peer.addr()) } else { String::new() };
    format!(
        "\n[[peer]]\nname = \"{}\"\nkey = \"{}\"\nrole = \"{role}\"\n{address}",
        peer.name,
        peer.public().to_base64()
    )
}

/// A `[[mount]]` table served by the node's echo service: `mount`, of `kind`, labelled `label`
/// (empty: no label).
pub fn echo_mount(mount: MountKey, kind: &str, label: &str) -> String {
    format!(
        "\n[[mount]]\ncluster = \"{:#x}\"\nid = \"{:#x}\"\nkind = \"{kind}\"\nlabel = \"{label}\"\n\
         service = \"echo\"\n",
        mount.cluster.0, mount.mount.0
    )
}

/// An `allow` line naming each key with the role it is granted (client keys are listed bare).
pub fn allow(keys: &[(PublicKey, &str)]) -> String {
    let entries: Vec<String> = keys
        .iter()
        .map(|(key, role)| {
            let key = key.to_base64();
            if *role == "client" {
                format!("\"{key}\"")
            } else {
                format!("{{ key = \"{key}\", role = \"{role}\" }}")
            }
        })
        .collect();
    format!("allow = [{}]\n", entries.join(", "))
}
