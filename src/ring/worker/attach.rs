//! Local links (DESIGN 7g): a connection accepted on the attach socket becomes a link at once,
//! with no handshake, its records framed and counted but not encrypted, and a peer key made up
//! for it. It has no keepalive or idle deadline: the application's death is seen as the end of
//! its connection (EOF or reset). Its send queue is bounded like any link's.

use super::*;
use crate::cipher::record::{attach_peer_key, record_layer_for_attach};
use crate::limits::{ATTACH_LINKS_MAX, ATTACH_LINKS_PER_UID_MAX};
use crate::ring::attach::peer_cred;

impl Worker {
    /// Makes a local link of a connection accepted on the attach socket, if its process may
    /// attach, the engine holds fewer than `ATTACH_LINKS_MAX` local links and its uid fewer
    /// than `ATTACH_LINKS_PER_UID_MAX`; closes it at once otherwise, counted
    /// (`AttachConfig::max_links`, `max_links_per_uid`).
    pub(super) fn adopt_attached(&mut self, service: &mut impl Service, socket: Socket) {
        let cred = match peer_cred(&socket) {
            Ok(cred) => cred,
            Err(error) => {
                tracing::warn!(worker = self.index, %error, "attach: no peer credentials");
                self.stats.attach_refused_cred += 1;
                return;
            }
        };
        let Some(attach) = self.config.attach.as_ref() else { return };
        let allowed = attach.allows(&cred);
        let max_links = attach.max_links.min(ATTACH_LINKS_MAX);
        let uid_share = attach.max_links_per_uid.min(ATTACH_LINKS_PER_UID_MAX);
        if !allowed {
            tracing::info!(pid = cred.pid, uid = cred.uid, gid = cred.gid, "attach: refused");
            self.stats.attach_refused_cred += 1;
            return;
        }
        if self.attached_links >= max_links {
            tracing::warn!(pid = cred.pid, uid = cred.uid, "attach: refused, at the bound");
            self.stats.attach_refused_max += 1;
            return;
        }
        let held = self.attached_by_uid.get(&cred.uid).copied().unwrap_or(0);
        if held >= uid_share {
            tracing::warn!(
                pid = cred.pid,
                uid = cred.uid,
                held,
                "attach: refused, uid at its share"
            );
            self.stats.attach_refused_share += 1;
            return;
        }
        let (sealer, opener) = match record_layer_for_attach(self.now) {
            Ok(layer) => layer,
            Err(error) => {
                tracing::error!(worker = self.index, %error, "attach: no record layer");
                return;
            }
        };
        let key = attach_peer_key(&self.cipher.identity().public_key(), self.attach_counter);
        self.attach_counter += 1;
        self.attached_links += 1;
        *self.attached_by_uid.entry(cred.uid).or_default() += 1;
        self.stats.attached += 1;
        let slot =
            self.new_conn(socket, Phase::Established, Crypto::Established { sealer, opener });
        let conn = &mut self.conns[slot as usize];
        conn.peer = Some(key);
        conn.attached = Some(Box::new(cred));
        self.arm_recv(slot);
        self.with_link(slot, |ctx| service.link_up(ctx));
        self.touch(slot);
    }
}
