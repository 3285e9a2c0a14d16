//! For the tests that run engines in their own process: an engine's configuration, and an
//! echo service.

use std::net::SocketAddr;
use std::sync::mpsc::Sender;

use ringspan::cipher::PublicKey;
use ringspan::ids::LinkId;
use ringspan::ring::{self, LinkCtx, Service};
use ringspan::txn::Received;
use ringspan::wire::{ErrorCode, Flags};

/// An engine of `workers` workers, listening on `listen` if given. Workers are not pinned:
/// the tests of a binary share the machine's cores.
pub fn config(workers: usize, listen: Option<SocketAddr>) -> ring::Config {
    ring::Config {
        workers,
        pin_workers: false,
        listen: listen.into_iter().collect(),
        ..ring::Config::default()
    }
}

/// Answers every transaction opened to it with its payload, with the request's command: in
/// one reply that closes its direction too if the request closed the peer's (a one-shot
/// request), else in a first reply, closing its direction once the peer closes its own.
/// Tells each link that comes up, with the peer's key, if given a channel.
#[derive(Default)]
pub struct Echo {
    up: Option<Sender<(LinkId, PublicKey)>>,
}

impl Echo {
    /// An echo that sends each link that comes up to `up`.
    pub fn reporting(up: Sender<(LinkId, PublicKey)>) -> Echo {
        Echo { up: Some(up) }
    }
}

impl Service for Echo {
    fn link_up(&mut self, link: &mut LinkCtx<'_>) {
        if let Some(up) = &self.up {
            let _ = up.send((link.id(), link.peer()));
        }
    }

    fn received(&mut self, link: &mut LinkCtx<'_>, received: Received<'_>) {
        let Received::Txn(d) = received else { return };
        if d.opens() {
            let flags = if d.closes() { Flags::DELETE } else { Flags::NONE };
            link.txn
                .send(&mut link.out, d.txn, d.command, d.payload, flags, ErrorCode::NONE)
                .expect("an echo answers a transaction just opened");
        } else if d.closes() && !d.is_forced_close() {
            let _ = link.txn.close(&mut link.out, d.txn, ErrorCode::NONE);
        }
    }
}
