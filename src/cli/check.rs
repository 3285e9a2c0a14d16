//! `ringspan check --config FILE`: the configuration checked as `ringspan run` checks it, the
//! key file read, and a summary printed, without starting the engine or opening a socket.

use std::path::Path;

use ringspan::daemon::config::{LogFormat, NodeConfig};
use ringspan::daemon::{MountService, Settings};
use ringspan::span::MountKind;

use super::run;

/// `ringspan check --config FILE`: prints the summary on standard output if the node would
/// start from it, or the error `ringspan run` would give. Logs in `log_format` (else as the file
/// says).
pub fn check(path: &Path, log_format: Option<LogFormat>) -> Result<(), String> {
    let config = run::load(path, log_format)?;
    let settings = run::settings(&config)?;
    print!("{}", summary(&config, &settings));
    Ok(())
}

/// What the node would run as: its id, role, workers, addresses, attach socket, peers, mounts
/// and keys allowed, one item a line.
fn summary(config: &NodeConfig, settings: &Settings) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("{}: ok", config.path.display()));
    line(format!("node     {}", settings.identity.public_key().node_id()));
    line(format!("key      {}", config.key.display()));
    line(format!("role     {}", config.role.name()));
    let workers = match config.workers {
        Some(_) => String::new(),
        None => " (one per core)".to_owned(),
    };
    let ignored = if settings.planes() < settings.workers { ", 1 used (a client)" } else { "" };
    line(format!("workers  {}{workers}{ignored}", settings.workers));
    let listen: Vec<String> = config.listen.iter().map(|a| a.to_string()).collect();
    line(format!(
        "listen   {}",
        if listen.is_empty() { "none (dials only)".to_owned() } else { listen.join(", ") }
    ));
    line(format!("control  {}", config.control_socket().display()));
    line(format!("metrics  {}", config.metrics.map_or("none".to_owned(), |a| a.to_string())));
    line(match &config.attach {
        None => "attach   none".to_owned(),
        Some(attach) => {
            let ids = |ids: &[u32]| {
                if ids.is_empty() {
                    "any".to_owned()
                } else {
                    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                }
            };
            let who = if attach.uids.is_empty() && attach.gids.is_empty() {
                "any process that can open it".to_owned()
            } else {
                format!("uids {}, gids {}", ids(&attach.uids), ids(&attach.gids))
            };
            format!(
                "attach   {}  mode {:04o}  {who}  as {}",
                attach.path.display(),
                attach.mode,
                config.attach_role.name()
            )
        }
    });
    line(format!("peers    {}", config.peers.len()));
    for peer in &config.peers {
        let address = peer
            .spec
            .address
            .as_ref()
            .map_or("(accepted, never dialled)".into(), |a| a.to_string());
        line(format!(
            "  {}  {address}  {}  {}",
            peer.name.as_deref().unwrap_or("(unnamed)"),
            peer.spec.role.name(),
            peer.spec.key.to_base64()
        ));
    }
    line(format!("mounts   {}", config.mounts.len()));
    for mount in &config.mounts {
        let service = match mount.service {
            MountService::Echo => "echo",
            MountService::App => "none",
        };
        line(format!(
            "  {:#x}:{:#x}  {}  service {service}  label \"{}\"",
            mount.key.cluster.0,
            mount.key.mount.0,
            kind_name(mount.kind),
            String::from_utf8_lossy(mount.label.as_bytes()).escape_debug()
        ));
    }
    line(format!(
        "allow    {} key(s); unknown keys {}",
        config.allow.len(),
        if config.accept_unknown_keys { "accepted as clients" } else { "refused" }
    ));
    out
}

/// A mount kind's name as the configuration writes it.
fn kind_name(kind: MountKind) -> &'static str {
    match kind {
        MountKind::Master => "master",
        MountKind::Slave => "slave",
        MountKind::SoftMaster => "soft-master",
        MountKind::SoftSlave => "soft-slave",
        MountKind::Cache => "cache",
        MountKind::Client => "client",
        // Never configured: a satellite makes its own.
        MountKind::Aggregate => "aggregate",
    }
}
