//! Identities for two engines in one test: a server that admits the client's key, and the
//! client.

use std::sync::Arc;

use ringspan::cipher::{self, Identity, PublicKey};

/// The server's and the client's cipher configurations (the server's allowlist holds the
/// client's key), then the server's key and the client's.
pub fn server_and_client() -> (Arc<cipher::Config>, Arc<cipher::Config>, PublicKey, PublicKey) {
    let server = Identity::generate().unwrap();
    let client = Identity::generate().unwrap();
    let (server_key, client_key) = (server.public_key(), client.public_key());
    let mut server_config = cipher::Config::new(server).unwrap();
    server_config.allowlist.insert(client_key);
    let client_config = cipher::Config::new(client).unwrap();
    (Arc::new(server_config), Arc::new(client_config), server_key, client_key)
}
