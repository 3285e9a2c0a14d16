//! The client address: how a call to a satellite's aggregate names the client it is for
//! (PROTOCOL.md 8.6). The CREATE payload of such a circuit starts with it.
//!
//! ```text
//!  0                 16
//!  +-----------------+--------------------------+
//!  | client mount id | the application's payload |
//!  +-----------------+--------------------------+
//!    u128 LE
//! ```
//!
//! The satellite strips the address and passes the rest on. A payload too short to hold one is
//! not a broken link but a refused call (`REFUSED`), so [`ClientAddress::parse`] answers
//! `None`, not an error.

use crate::ids::MountId;

use super::get_u128;

/// Bytes that name the client at the start of a call to a satellite's aggregate.
pub const CLIENT_ADDRESS_LEN: usize = 16;

/// The client a call to an aggregate is for: its mount id within the aggregate's cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's mount.
    pub client: MountId,
}

impl ClientAddress {
    /// Splits an addressed payload into the address and the application's payload, or `None`
    /// if it is shorter than [`CLIENT_ADDRESS_LEN`].
    pub fn parse(payload: &[u8]) -> Option<(ClientAddress, &[u8])> {
        let (address, rest) = payload.split_at_checked(CLIENT_ADDRESS_LEN)?;
        Some((ClientAddress { client: MountId(get_u128(address, 0)) }, rest))
    }

    /// The address's bytes, to put before the application's payload.
    pub fn emit(&self) -> [u8; CLIENT_ADDRESS_LEN] {
        self.client.0.to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Client 0x0102 addressed, then the payload `hi`.
    static GOLDEN: [u8; 18] = [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b'h', b'i'];

    #[test]
    fn deconstruct() {
        let (address, rest) = ClientAddress::parse(&GOLDEN).unwrap();
        assert_eq!(address, ClientAddress { client: MountId(0x0102) });
        assert_eq!(rest, b"hi");
        let (address, rest) = ClientAddress::parse(&GOLDEN[..16]).unwrap();
        assert_eq!(address.client, MountId(0x0102));
        assert!(rest.is_empty());
    }

    #[test]
    fn construct() {
        assert_eq!(ClientAddress { client: MountId(0x0102) }.emit(), GOLDEN[..16]);
    }

    #[test]
    fn too_short_is_refused() {
        for len in 0..CLIENT_ADDRESS_LEN {
            assert_eq!(ClientAddress::parse(&GOLDEN[..len]), None, "{len} bytes");
        }
    }
}
