//! Ids as operators write them, in the configuration file and on the command line. Both
//! binaries read them so: `ringspan` (the config, `call --mount`, the demo) and
//! `ringspan-bench` (`clients --mount-cluster`, `hops --mount`). Text for people, beside the
//! configuration that reads it; it keeps no state and needs nothing beyond the id types.

use crate::ids::{ClusterId, MountId};
use crate::span::MountKey;

/// Parses a 128-bit id: `0x` and hexadecimal digits, decimal digits, or a UUID
/// (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, read as one big-endian number). Command-line ids
/// (`ringspan-bench clients --mount-cluster`) are read the same way.
pub fn parse_id(text: &str) -> Result<u128, String> {
    const HOW: &str = "write hexadecimal with 0x (\"0x1f\"), decimal (\"31\") or a UUID \
                       (\"xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx\")";
    let too_large = |_| format!("{text:?} does not fit in 128 bits");
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{text:?} is not a hexadecimal number; {HOW}"));
        }
        // Only digits were let through, so the one possible failure is overflow.
        return u128::from_str_radix(hex, 16).map_err(too_large);
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<u128>().map_err(too_large);
    }
    let bytes = text.as_bytes();
    let is_uuid = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if is_uuid {
        let digits: String = text.chars().filter(|&c| c != '-').collect();
        // 32 hexadecimal digits: always fits.
        return u128::from_str_radix(&digits, 16).map_err(too_large);
    }
    Err(format!("{text:?} is not a number; {HOW}"))
}

/// Parses `CLUSTER:MOUNT`, each id as [`parse_id`] reads it.
pub fn parse_mount(text: &str) -> Result<MountKey, String> {
    let (cluster, mount) =
        text.split_once(':').ok_or_else(|| format!("mount {text:?}: expected CLUSTER:MOUNT"))?;
    let id = |part: &str| parse_id(part).map_err(|error| format!("mount {text:?}: {error}"));
    Ok(MountKey { cluster: ClusterId(id(cluster)?), mount: MountId(id(mount)?) })
}
