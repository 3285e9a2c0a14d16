//! The node as a library: [`Handle::start`] runs a node on its own engine thread, and its
//! methods are the mount API — attach mounts and serve their calls ([`Handle::accept`]), list
//! what is reachable ([`Handle::routes`]), and open calls to any mount of the cluster
//! ([`Handle::open`]), streaming both ways.
//!
//! An application usually runs a small node of its own linked to its host's node over loopback
//! (its key in that node's `allow` list, with the role it may take): granted and running as
//! [`Role::Router`] its mounts are advertised to the whole cluster; as [`Role::Client`] it can
//! call every mount, and its client mounts are reachable through its host's aggregate.
//! `ringspan run` is this same handle, configured from a file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use super::{DaemonApp, Host, MountSpec, Plane, Request, RouteRow, Shared, Snapshot, control};
use crate::cipher::{self, Identity, PublicKey};
use crate::error::Misuse;
use crate::ids::{ClusterId, NodeId};
use crate::limits;
use crate::relay::CallId;
use crate::relay::redial::PeerAddr;
use crate::ring::{self, Engine, Remote};
use crate::span::{Label, MountKey, MountKind, Role};
use crate::wire::{Command, ErrorCode, Flags};

/// A neighbour to link to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerSpec {
    /// Where to dial it: an IP address and port, or a host name and port resolved anew before
    /// each dial (`daemon::resolve`); `None`: only accept it.
    pub address: Option<PeerAddr>,
    /// Its public key.
    pub key: PublicKey,
    /// The most its hello may claim to be.
    pub role: Role,
}

impl PeerSpec {
    /// A router peer at `address` with `key`.
    pub fn router(address: Option<SocketAddr>, key: PublicKey) -> PeerSpec {
        PeerSpec { address: address.map(PeerAddr::Ip), key, role: Role::Router }
    }
}

/// How to run a node.
#[derive(Clone)]
pub struct Settings {
    /// The node's key pair.
    pub identity: Identity,
    /// What it tells its neighbours it is.
    pub role: Role,
    /// Where to accept links, each address a listening socket every worker accepts on
    /// (`ring::Config::listen`); empty: dial only.
    pub listen: Vec<SocketAddr>,
    /// Its neighbours.
    pub peers: Vec<PeerSpec>,
    /// Other keys allowed to connect, each with the most its hello may claim to be.
    pub allow: Vec<(PublicKey, Role)>,
    /// Let any key connect (still authenticated), as a client.
    pub accept_unknown_keys: bool,
    /// Clusters whose client mounts the node accepts (one aggregate each toward the core).
    pub client_clusters: Vec<ClusterId>,
    /// Mounts attached at start (echo mounts, or mounts the application serves).
    pub mounts: Vec<MountSpec>,
    /// Timers and bounds (a configuration's `[limits]`).
    pub limits: Limits,
    /// Serve `ringspan show` on this Unix socket.
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics here.
    pub metrics: Option<SocketAddr>,
    /// Receive buffers the engine gives the kernel (each 256 KiB; 64 by default).
    pub recv_buffers: u16,
    /// Workers to run on (DESIGN 7c.3), one plane of the node each; see
    /// [`Settings::planes`] for when fewer are used.
    pub workers: usize,
    /// The names the configuration gives peers' keys (`[[peer]] name`), shown beside their
    /// node ids in `show`, the logs and the metrics.
    pub names: Vec<(PublicKey, String)>,
    /// The name the node announces in its hellos (`[node] name`; at most
    /// [`limits::NODE_NAME_MAX`] bytes of printable UTF-8), which neighbours show where their
    /// configuration names it not.
    pub name: Option<String>,
    /// The attach socket, through which applications on this host attach as local links
    /// (`ring::Config::attach`; `[node] attach`).
    pub attach: Option<ring::AttachConfig>,
    /// The most an attached application's hello may claim to be (`[node] attach_role`):
    /// granted to every local link, whatever its (made-up) key.
    pub attach_role: Role,
}

impl Settings {
    /// A router with no links, mounts or listener, and the default timers and bounds.
    pub fn new(identity: Identity) -> Settings {
        Settings {
            identity,
            role: Role::Router,
            listen: Vec::new(),
            peers: Vec::new(),
            allow: Vec::new(),
            accept_unknown_keys: false,
            client_clusters: Vec::new(),
            mounts: Vec::new(),
            limits: Limits::default(),
            control: None,
            metrics: None,
            recv_buffers: limits::RECV_BUFFERS,
            workers: 1,
            names: Vec::new(),
            name: None,
            attach: None,
            attach_role: Role::Client,
        }
    }

    /// The workers the node runs on: `workers`, except that a client runs on one. A client
    /// holds one link at a time (to a satellite, failing over down its list), so a second
    /// worker would only pass its traffic across; and its planes would each dial a satellite.
    pub fn planes(&self) -> usize {
        if self.role == Role::Client {
            1
        } else {
            self.workers.clamp(1, limits::CONFIG_WORKERS_MAX)
        }
    }
}

/// A node's timers and bounds: what a configuration's `[limits]` table sets. Every default is
/// a constant of [`crate::limits`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A link that sent nothing for this long sends a keepalive (a peer with a short idle
    /// timeout gets them more often).
    pub keepalive: Duration,
    /// A link that received nothing for this long is closed.
    pub idle_timeout: Duration,
    /// A handshake not done after this long is abandoned.
    pub handshake_timeout: Duration,
    /// A link with more sealed bytes than this waiting to be sent is closed.
    pub send_queue_max_bytes: usize,
    /// First wait before dialling a lost peer again.
    pub redial_min: Duration,
    /// Longest wait between two dials of a lost peer.
    pub redial_max: Duration,
    /// Links held at once, accepted and dialled, established or handshaking
    /// (`ring::Config::max_links`): a connection accepted at the bound is reset before any
    /// handshake work. Dials are never refused.
    pub max_links: usize,
    /// Handshakes started per second on accepted connections, a token bucket holding one
    /// second's worth (`ring::Config::max_handshakes_per_sec`): a connection accepted with no
    /// token left is reset.
    pub max_handshakes_per_sec: u32,
    /// Handshakes per second more, from trusted source addresses only (the configured peers'
    /// addresses, and those a configured key has linked from), when the common bucket is empty
    /// (`ring::Config::trusted_handshakes_per_sec`).
    pub trusted_handshakes_per_sec: u32,
    /// Link slots only trusted source addresses may take (`ring::Config::reserved_links`).
    pub reserved_links: usize,
    /// How long the worker polls after a turn that moved data before it sleeps
    /// (`ring::Config::busy_poll`; zero: never).
    pub busy_poll: Duration,
    /// A circuit carrying nothing for this long is aborted.
    pub circuit_idle: Duration,
    /// On SIGTERM, how long the node drains before it stops ([`Handle::run_until_signal`]);
    /// zero: it stops at once.
    pub drain_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            keepalive: Duration::from_millis(limits::KEEPALIVE_INTERVAL_MS),
            idle_timeout: Duration::from_millis(limits::IDLE_TIMEOUT_MS),
            handshake_timeout: Duration::from_millis(limits::HANDSHAKE_TIMEOUT_MS),
            send_queue_max_bytes: limits::SEND_QUEUE_MAX_BYTES,
            redial_min: Duration::from_millis(limits::REDIAL_MIN_MS),
            redial_max: Duration::from_millis(limits::REDIAL_MAX_MS),
            max_links: limits::MAX_LINKS_PER_WORKER,
            max_handshakes_per_sec: limits::HANDSHAKES_PER_SEC,
            trusted_handshakes_per_sec: limits::TRUSTED_HANDSHAKES_PER_SEC,
            reserved_links: limits::RESERVED_LINKS,
            busy_poll: Duration::from_micros(limits::BUSY_POLL_US),
            circuit_idle: Duration::from_millis(limits::CIRCUIT_IDLE_MS),
            drain_grace: Duration::from_millis(limits::DRAIN_GRACE_MS),
        }
    }
}

/// Something on a call, for the application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallEvent {
    /// A message from the other end.
    Message {
        /// Its command.
        command: Command,
        /// Its payload.
        payload: Vec<u8>,
        /// The other end's last message (DELETE).
        last: bool,
        /// An abort (with `last`: a forced close).
        abort: bool,
        /// Its error code.
        error: ErrorCode,
    },
    /// The call is over; nothing more will come. The error says why, if it did not end cleanly.
    Ended(ErrorCode),
}

/// A call to one of the application's mounts, from [`Handle::accept`].
pub struct Incoming {
    /// The mount called.
    pub mount: MountKey,
    /// The first message's command.
    pub command: Command,
    /// The first message's payload.
    pub payload: Vec<u8>,
    /// Whether the caller already closed its direction (a one-shot request).
    pub last: bool,
    pub(super) call: CallId,
    pub(super) events: Receiver<CallEvent>,
}

impl Incoming {
    /// The call, to answer on.
    pub fn into_call(self, handle: &Handle) -> Call {
        Call { id: self.call, remote: handle.remote.clone(), events: self.events }
    }
}

/// One call, opened by the application or to one of its mounts: send on it, receive what the
/// other end sends, until [`CallEvent::Ended`].
pub struct Call {
    id: CallId,
    remote: Remote,
    events: Receiver<CallEvent>,
}

impl Call {
    fn request(&self, command: Command, payload: &[u8], flags: Flags, error: ErrorCode) {
        let request =
            Request::Send { call: self.id, command, payload: payload.to_vec(), flags, error };
        // A node that is gone cannot take it; the call's events say so (it ended).
        let _ = self.remote.send(ring::Command::Service(Box::new(request)));
    }

    /// Sends a message.
    pub fn send(&self, command: Command, payload: &[u8]) {
        self.request(command, payload, Flags::NONE, ErrorCode::NONE);
    }

    /// Sends our last message (DELETE).
    pub fn finish(&self, command: Command, payload: &[u8]) {
        self.request(command, payload, Flags::DELETE, ErrorCode::NONE);
    }

    /// Force-closes the call with `error`.
    pub fn abort(&self, command: Command, error: ErrorCode) {
        self.request(command, &[], Flags::ABORT | Flags::DELETE, error);
    }

    /// The next event, waiting up to `timeout`; `None` on timeout or if the node is gone.
    pub fn recv(&self, timeout: Duration) -> Option<CallEvent> {
        self.events.recv_timeout(timeout).ok()
    }
}

/// A running node. See the module documentation.
pub struct Handle {
    engine: Engine,
    remote: Remote,
    shared: Arc<Shared>,
    id: NodeId,
    incoming: Receiver<Incoming>,
    /// Served while held; dropped at shutdown, which removes the socket file if still ours.
    control: Option<control::ControlSocket>,
}

/// The configured peers' IP addresses, each once (a peer given by name is trusted from the
/// addresses its name resolves to, as they are learned: `daemon::resolve`).
fn trusted_sources(peers: &[PeerSpec]) -> Vec<std::net::IpAddr> {
    let mut ips: Vec<std::net::IpAddr> =
        peers.iter().filter_map(|p| Some(p.address.as_ref()?.ip()?.ip())).collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

#[allow(clippy::disallowed_methods)] // the handle runs outside the protocol layers
fn now() -> Instant {
    Instant::now()
}

impl Settings {
    /// The handshake's configuration for these settings: the node's key pair, and the keys
    /// allowed in (every peer's and allowed key, or any with `accept_unknown_keys`).
    pub fn cipher_config(&self) -> Result<cipher::Config, String> {
        let mut cipher = cipher::Config::new(self.identity.clone()).map_err(|e| e.to_string())?;
        cipher.allowlist.extend(self.peers.iter().map(|p| p.key));
        cipher.allowlist.extend(self.allow.iter().map(|(key, _)| *key));
        cipher.accept_unknown_keys = self.accept_unknown_keys;
        cipher.handshake_timeout = self.limits.handshake_timeout;
        Ok(cipher)
    }

    /// The engine's configuration for these settings: a worker per plane ([`Settings::planes`]),
    /// not pinned, the listener, the timers and bounds.
    pub fn engine_config(&self) -> ring::Config {
        ring::Config {
            workers: self.planes(),
            // Several nodes may share a host: let the scheduler place them.
            pin_workers: false,
            listen: self.listen.clone(),
            keepalive_interval: self.limits.keepalive,
            idle_timeout: self.limits.idle_timeout,
            send_queue_max_bytes: self.limits.send_queue_max_bytes,
            recv_buffers: self.recv_buffers,
            max_links: self.limits.max_links,
            max_handshakes_per_sec: self.limits.max_handshakes_per_sec,
            // The configured peers' addresses are trusted from the start; the node trusts the
            // addresses other configured keys link from as they do.
            trusted_sources: trusted_sources(&self.peers),
            trusted_handshakes_per_sec: self.limits.trusted_handshakes_per_sec,
            reserved_links: self.limits.reserved_links,
            busy_poll: self.limits.busy_poll,
            attach: self.attach.clone(),
            ..ring::Config::default()
        }
    }
}

impl Handle {
    /// Starts the node on an engine thread of its own.
    pub fn start(settings: Settings) -> Result<Handle, String> {
        let id = settings.identity.public_key().node_id();
        let cipher = settings.cipher_config()?;
        let engine_config = settings.engine_config();
        let shared = Arc::new(Shared::default());
        let control = match &settings.control {
            Some(path) => Some(
                control::serve_control(path, shared.clone())
                    .map_err(|e| format!("control socket {}: {e}", path.display()))?,
            ),
            None => None,
        };
        if let Some(addr) = settings.metrics {
            control::serve_metrics(addr, shared.clone())
                .map_err(|e| format!("metrics address {addr}: {e}"))?;
        }
        let (incoming_tx, incoming) = mpsc::channel();
        shared.set_running(settings.clone(), engine_config.workers);
        let planes = Plane::all(engine_config.workers);
        let engine = Engine::start(engine_config, Arc::new(cipher), move |index| {
            let plane = planes[index].clone();
            // The application's calls come and go on the first plane (DESIGN 7c.3).
            let incoming = plane.is_first().then(|| incoming_tx.clone());
            let app = DaemonApp::new(&settings, incoming);
            Host::on_plane(&settings, app, now(), plane)
        })
        .map_err(|e| e.to_string())?;
        let remote = engine.remote(0).ok_or("the engine has no worker")?;
        // From now on snapshots are asked of the node's workers.
        shared.connect((0..engine.workers()).filter_map(|i| engine.remote(i)).collect());
        Ok(Handle { engine, remote, shared, id, incoming, control })
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// Where it accepts links, in the order of [`Settings::listen`] (with the real port where
    /// 0 was asked for); empty if it only dials.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.engine.local_addrs()
    }

    /// The first of [`Handle::local_addrs`], if it listens at all.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.engine.local_addr()
    }

    /// What other threads reach the node through for its snapshot, as its control socket does.
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// A snapshot of it now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot()
    }

    /// The mounts it can reach now, with their routes.
    pub fn routes(&self) -> Vec<RouteRow> {
        self.shared.snapshot().routes
    }

    /// Waits up to `timeout` until `mount` is reachable.
    pub fn wait_for_route(&self, mount: MountKey, timeout: Duration) -> bool {
        let want = (format!("{:x}", mount.cluster.0), format!("{:x}", mount.mount.0));
        let deadline = now() + timeout;
        loop {
            if self.routes().iter().any(|r| (r.cluster.clone(), r.mount.clone()) == want) {
                return true;
            }
            if now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ask<T>(&self, make: impl FnOnce(mpsc::Sender<T>) -> Request) -> Result<T, crate::Error> {
        let (reply, rx) = mpsc::channel();
        self.remote
            .send(ring::Command::Service(Box::new(make(reply))))
            .map_err(|_| crate::Error::from(Misuse::LinkDown))?;
        rx.recv_timeout(Duration::from_secs(10)).map_err(|_| Misuse::LinkDown.into())
    }

    /// Attaches a mount this application serves: calls to it arrive through
    /// [`Handle::accept`].
    pub fn attach(
        &self,
        mount: MountKey,
        kind: MountKind,
        label: &str,
    ) -> Result<(), crate::Error> {
        let label = Label::new(label.as_bytes())?;
        self.ask(|reply| Request::Attach { mount, kind, label, reply })?
    }

    /// Detaches a mount. Calls already open to it go on.
    pub fn detach(&self, mount: MountKey) -> Result<(), crate::Error> {
        self.ask(|reply| Request::Detach { mount, reply })?
    }

    /// Opens a call to `mount` (anywhere in the cluster) with a first message; with `last`, our
    /// direction is closed at once (a one-shot request).
    pub fn open(
        &self,
        mount: MountKey,
        command: Command,
        payload: &[u8],
        last: bool,
    ) -> Result<Call, crate::Error> {
        self.open_call(mount, None, command, payload, last)
    }

    /// Opens a call to the client mount `client` attached behind the satellite whose aggregate
    /// for the client's cluster is `aggregate` (a route of kind "aggregate"; its mount id is the
    /// satellite's node id). The satellite passes the call to its client.
    pub fn open_client(
        &self,
        aggregate: MountKey,
        client: crate::ids::MountId,
        command: Command,
        payload: &[u8],
        last: bool,
    ) -> Result<Call, crate::Error> {
        self.open_call(aggregate, Some(client), command, payload, last)
    }

    fn open_call(
        &self,
        mount: MountKey,
        client: Option<crate::ids::MountId>,
        command: Command,
        payload: &[u8],
        last: bool,
    ) -> Result<Call, crate::Error> {
        let (events, events_rx) = mpsc::channel();
        let payload = payload.to_vec();
        let id = self.ask(|reply| Request::Open {
            mount,
            command,
            payload,
            last,
            client,
            events,
            reply,
        })??;
        Ok(Call { id, remote: self.remote.clone(), events: events_rx })
    }

    /// The next call to one of the application's mounts, waiting up to `timeout`.
    pub fn accept(&self, timeout: Duration) -> Option<Incoming> {
        self.incoming.recv_timeout(timeout).ok()
    }

    /// Cuts the links to the node `peer` (no notice: as a failure looks), on every worker, and
    /// does not redial it for `hold`.
    pub fn cut(&self, peer: NodeId, hold: Duration) -> Result<(), String> {
        for worker in 0..self.engine.workers() {
            let request = Request::Cut { peer, hold };
            let remote = self.engine.remote(worker).ok_or("the node has stopped")?;
            remote
                .send(ring::Command::Service(Box::new(request)))
                .map_err(|_| "the node does not take requests".to_string())?;
        }
        Ok(())
    }

    /// Workers the node runs on (one plane each).
    pub fn workers(&self) -> usize {
        self.engine.workers()
    }

    /// The engine's first worker, which runs the application's work, for requests not covered
    /// here (`Request::Load`).
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Stops the node (links closed with a notice) and waits for it.
    pub fn shutdown(self) {
        self.engine.shutdown();
        let _ = self.engine.join();
        drop(self.control);
    }

    /// Runs the node with `settings` from now on, without a restart ([`Shared::reload`]): what
    /// changed, or why nothing did.
    pub fn reload(&self, settings: Settings) -> Result<super::ReloadReport, String> {
        self.shared.reload(settings)
    }

    /// Runs until SIGINT or SIGTERM, then drains for up to the settings' `drain_grace` (as a
    /// reload left it; [`Handle::drain`]; zero: not at all) and stops. A second signal while it
    /// drains stops it at once. SIGHUP reloads the node's settings from their source
    /// ([`Shared::reload_from_source`]) and runs on, whether they were taken or refused (the
    /// log says which).
    pub fn run_until_signal(self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
        self.shared.stop_on_signal();
        for signal in signals.forever() {
            if signal != SIGHUP {
                tracing::info!(signal, "shutting down");
                break;
            }
            // Refused or not, the reload logs what it did.
            if let Ok(report) = self.shared.reload_from_source() {
                tracing::info!(changes = report.changes.len(), "reloaded on SIGHUP");
            }
        }
        let grace = self.shared.drain_grace().unwrap_or_default();
        if !grace.is_zero() {
            let drained = self.drain(grace, || signals.pending().next().is_some());
            tracing::info!(drained, "stopping after the drain");
        }
        self.shutdown();
        Ok(())
    }

    /// Drains the node (DESIGN 7c.5): every plane withdraws its spans from its neighbours, so
    /// that new circuits go around it, and carries the circuits it has to their end. Waits
    /// until every plane is drained (no circuit left, every withdrawal answered), `grace` is
    /// over, or `stop` says so; whether it drained. The node runs on: [`Handle::shutdown`] stops
    /// it. It looks every 10 ms, or every ten times as long as a snapshot took (a snapshot
    /// walks every link: a satellite of very many clients is not kept busy building them).
    pub fn drain(&self, grace: Duration, mut stop: impl FnMut() -> bool) -> bool {
        self.shared.drain();
        #[allow(clippy::disallowed_methods)] // a thread outside the protocol layers
        let deadline = std::time::Instant::now() + grace;
        loop {
            #[allow(clippy::disallowed_methods)]
            let asked = std::time::Instant::now();
            let snapshot = self.shared.snapshot();
            let took = asked.elapsed();
            if snapshot.drained {
                return true;
            }
            #[allow(clippy::disallowed_methods)]
            if stop() || std::time::Instant::now() >= deadline {
                tracing::warn!(
                    circuits = snapshot.circuits,
                    "stopping before the drain ended: these circuits end with SHUTDOWN"
                );
                return false;
            }
            std::thread::sleep((took * 10).max(Duration::from_millis(10)));
        }
    }
}
