//! Rights bound to keys, against real `ringspan run` processes: strangers at a satellite are
//! clients whatever they say, and what a client names can neither reach the core nor shadow,
//! take or hide anyone else's mount.
//!
//! ```text
//!   core caller (router key) — r (echo master 0x1:0x10) — s (satellite, clients of 0x1)
//!                                                          |  good client app (0x1:0x1000)
//!                                                          |  rogues (unknown keys)
//! ```
//!
//! Each rogue completes a real handshake and speaks the protocol correctly: it is refused or
//! confined, and the honest calls through the same nodes (client → master, core → client)
//! lose and corrupt nothing.

use std::time::Duration;

use ringspan::cipher::Identity;
use ringspan::daemon::{CallEvent, Handle, LoadReport, Request, Settings, Snapshot};
use ringspan::ids::{ClusterId, MountId};
use ringspan::ring;
use ringspan::span::{Metric, MountKey, MountKind, Role, Wants};
use ringspan::wire::{Command, ErrorCode};

use crate::support::config;
use crate::support::host::scratch;
use crate::support::node::Node;
use crate::support::process::Proc;
use crate::support::rogue::{self, CloseSeen, Rogue, pump_all_until};
use crate::support::wait::wait_for;

const CALL: Command = Command::new(1, 1);
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const CLIENT_MOUNT: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x1000) };
const WAIT: Duration = Duration::from_secs(30);
const CALLS: u64 = 500;

struct Cluster {
    r: Node,
    s: Node,
    procs: [Proc; 2],
    dir: std::path::PathBuf,
    /// The honest client application at s, serving its client mount.
    client: Handle,
    /// An honest router application at r, calling clients through s's aggregate.
    caller: Handle,
}

fn app(identity: Identity, role: Role, peer: &Node) -> Handle {
    let mut settings = Settings::new(identity);
    settings.role = role;
    settings.peers = vec![peer.peer()];
    settings.recv_buffers = 8;
    settings.limits.redial_min = Duration::from_millis(50);
    Handle::start(settings).unwrap()
}

fn cluster(name: &str) -> Cluster {
    let dir = scratch(&format!("rights-{name}"));
    let [r, s] = ["r", "s"].map(|n| Node::new(&dir, n));
    let caller_id = Identity::generate().unwrap();
    let limits =
        "keepalive_ms = 200\nidle_timeout_ms = 5000\nredial_min_ms = 50\nredial_max_ms = 500\n";
    let r_lines =
        format!("role = \"router\"\n{}", config::allow(&[(caller_id.public_key(), "router")]));
    let r_tables =
        config::peer_as(&s, "satellite", false) + &config::echo_mount(MASTER, "master", "");
    config::write(&r, &r_lines, limits, &r_tables);
    let s_lines = "role = \"satellite\"\naccept_unknown_keys = true\nclient_clusters = [\"0x1\"]\n";
    config::write(&s, s_lines, limits, &config::peer(&r, true));
    let procs = [r.run(), s.run()];
    wait_for("the satellite to link to the core", WAIT, || {
        s.try_snapshot().is_some_and(|snap| snap.links.len() == 1)
    });
    let client = app(Identity::generate().unwrap(), Role::Client, &s);
    client.attach(CLIENT_MOUNT, MountKind::Client, "good client").unwrap();
    assert!(client.wait_for_route(MASTER, WAIT), "the client reaches the master");
    let caller = app(caller_id, Role::Router, &r);
    let aggregate = MountKey { cluster: ClusterId(1), mount: MountId(s.public().node_id().0) };
    assert!(caller.wait_for_route(aggregate, WAIT), "the core hears the satellite's aggregate");
    Cluster { r, s, procs, dir, client, caller }
}

impl Drop for Cluster {
    /// Stops the nodes and removes their directory, unless the test failed (kept to read).
    fn drop(&mut self) {
        for proc in &mut self.procs {
            let _ = proc.0.kill();
            let _ = proc.0.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    fn aggregate(&self) -> MountKey {
        MountKey { cluster: ClusterId(1), mount: MountId(self.s.public().node_id().0) }
    }

    /// A rogue with an unknown key at the satellite, its hello said as `role`.
    fn rogue(&self, role: Role) -> Rogue {
        let mut rogue =
            Rogue::connect(self.s.addr(), &Identity::generate().unwrap(), Some(self.s.public()))
                .unwrap();
        rogue.hello(role, Wants::all());
        rogue
    }

    /// The honest client's calls to the master: each answered with its own payload.
    fn load_to_master(&self, rogues: &mut [&mut Rogue]) -> LoadReport {
        let (reply, report) = std::sync::mpsc::channel();
        let request =
            Request::Load { mount: MASTER, calls: CALLS, concurrency: 16, size: 64, reply };
        assert!(self.client.remote().send(ring::Command::Service(Box::new(request))).is_ok());
        // The rogues are kept alive meanwhile (they answer keepalives as they pump).
        let mut done = None;
        pump_all_until(rogues, WAIT, |_| {
            done = done.take().or_else(|| report.try_recv().ok());
            done.is_some()
        })
        .unwrap();
        done.unwrap()
    }

    /// The core caller's calls to the good client through the satellite's aggregate, served by
    /// the client application (answered with their payload), one at a time.
    fn calls_to_client(&self, rogues: &mut [&mut Rogue], calls: usize) -> usize {
        let mut answered = 0;
        for i in 0..calls {
            let payload = format!("to the good client {i}");
            let call = self
                .caller
                .open_client(self.aggregate(), CLIENT_MOUNT.mount, CALL, payload.as_bytes(), true)
                .unwrap();
            let incoming = self.client.accept(WAIT).expect("the call reaches the good client");
            assert_eq!((incoming.mount, &incoming.payload[..]), (CLIENT_MOUNT, payload.as_bytes()));
            let served = incoming.payload.clone();
            incoming.into_call(&self.client).finish(CALL, &served);
            let mut answer = None;
            loop {
                // The rogues are kept alive while the answer comes back.
                for rogue in rogues.iter_mut() {
                    let _ = rogue.pump(Duration::ZERO);
                }
                match call.recv(Duration::from_millis(50)) {
                    Some(CallEvent::Message { payload, .. }) => answer = Some(payload),
                    Some(CallEvent::Ended(error)) => {
                        assert_eq!(error, ErrorCode::NONE, "a call to the good client");
                        break;
                    }
                    None => {}
                }
            }
            assert_eq!(answer.as_deref(), Some(payload.as_bytes()), "answered by the client");
            answered += 1;
        }
        answered
    }
}

fn good(report: &LoadReport) {
    assert_eq!(
        (report.completed, report.corrupted, report.no_route, report.lost_link, report.other),
        (CALLS, 0, 0, 0, 0),
        "the honest load through the satellite"
    );
}

/// The core's routes: the master and the satellite's one aggregate, never anything a client
/// named.
fn core_routes(s: &Snapshot) -> Vec<(String, String, String)> {
    let mut routes: Vec<_> =
        s.routes.iter().map(|r| (r.cluster.clone(), r.mount.clone(), r.kind.clone())).collect();
    routes.sort();
    routes
}

#[test]
fn a_stranger_saying_it_is_a_router_is_cut_off_alone() {
    let c = cluster("router");
    let before = c.s.snapshot();
    let mut liar = c.rogue(Role::Router);
    // It also advertises the master's key at metric 0, as a router would to draw its calls.
    let master = liar.own_advert(MASTER, MountKind::Master);
    assert_eq!(master.metric, Metric::ZERO);
    liar.advertise(&master);
    liar.pump_until(WAIT, |r| r.closed().is_some()).unwrap();
    assert_eq!(liar.closed(), Some(CloseSeen::Notice(ErrorCode::REFUSED)));
    // The satellite cut it for its fault, before anything it said was taken in.
    wait_for("the satellite to count the liar", WAIT, || {
        c.s.snapshot().closes.misbehaved == before.closes.misbehaved + 1
    });
    let after = c.s.snapshot();
    let via_r = |s: &Snapshot| s.routes.iter().find(|r| r.mount == "10").map(|r| r.via.clone());
    assert_eq!(via_r(&after), via_r(&before), "the master is still reached through r");
    assert_eq!(core_routes(&c.r.snapshot()).len(), 2, "the core: the master and one aggregate");
    // A client key saying what it is (a client) is fine; a satellite's is not.
    let mut modest = c.rogue(Role::Client);
    let mut satellite = c.rogue(Role::Satellite);
    pump_all_until(&mut [&mut modest, &mut satellite], WAIT, |r| {
        r[0].span_of(MASTER).is_some() && r[1].closed().is_some()
    })
    .unwrap();
    assert_eq!(modest.closed(), None);
    good(&c.load_to_master(&mut [&mut modest]));
    assert_eq!(c.calls_to_client(&mut [&mut modest], 20), 20);
    assert_eq!(c.s.snapshot().closes.misbehaved, before.closes.misbehaved + 2);
}

#[test]
fn what_a_client_names_never_shadows_takes_or_reaches_the_core() {
    let c = cluster("names");
    let core_before = core_routes(&c.r.snapshot());
    assert_eq!(core_before.len(), 2);
    let mut rogue = c.rogue(Role::Client);
    rogue.pump_until(WAIT, |r| r.span_of(MASTER).is_some()).unwrap();
    // 1. A cache with the master's key, at metric 0: held for the rogue alone, never a route.
    let shadow = rogue.advertise(&rogue.own_advert(MASTER, MountKind::Cache));
    // 2. The good client's mount: taken already, refused.
    let steal = rogue.advertise(&rogue.own_advert(CLIENT_MOUNT, MountKind::Client));
    // 3. Mounts in clusters the satellite does not serve: refused, each.
    let clusters: Vec<_> = (2..52u128)
        .map(|cluster| {
            let mount = MountKey { cluster: ClusterId(cluster), mount: MountId(7) };
            rogue.advertise(&rogue.own_advert(mount, MountKind::Client))
        })
        .collect();
    // 4. Its share of mounts: the sixteenth of cluster 1 and past it are refused.
    let many: Vec<_> = (0..20u128)
        .map(|i| {
            let mount = MountKey { cluster: ClusterId(1), mount: MountId(0x5000 + i) };
            rogue.advertise(&rogue.own_advert(mount, MountKind::Client))
        })
        .collect();
    rogue
        .pump_until(WAIT, |r| {
            r.ended(steal).is_some()
                && clusters.iter().all(|&s| r.ended(s).is_some())
                && many.iter().filter(|&&s| r.ended(s).is_some()).count() >= 5
        })
        .unwrap();
    let forced =
        |r: &Rogue, span| r.deliveries(span).find(|d| d.is_forced_close()).map(|d| d.error);
    assert_eq!(rogue.ended(shadow), None, "its own (shadowing) cache is held, for it alone");
    assert_eq!(forced(&rogue, steal), Some(ErrorCode::REFUSED));
    assert!(clusters.iter().all(|&s| forced(&rogue, s) == Some(ErrorCode::REFUSED)));
    // The shadow took one of its 16: 15 of the 20 held, 5 refused for its share.
    let limited = many.iter().filter(|&&s| forced(&rogue, s) == Some(ErrorCode::LIMIT_REACHED));
    assert_eq!(limited.count(), 5);
    assert_eq!(rogue.closed(), None, "refused alone: its link carries on");

    // The satellite: the master still through r, the directory holds the good client's mount
    // and the rogue's 16; its refusals are counted.
    let s = c.s.snapshot();
    let master = s.routes.iter().find(|r| r.mount == "10").unwrap();
    assert_eq!((master.kind.as_str(), master.metric), ("master", 1));
    assert_eq!(s.client_mounts, 1 + 16);
    assert_eq!(s.client_refusals.spans_refused, 1 + 50);
    assert_eq!(s.client_refusals.spans_limited, 5);
    assert_eq!(s.closes.misbehaved, 0);
    // The core carries what it carried: the master and the one aggregate.
    assert_eq!(core_routes(&c.r.snapshot()), core_before);

    // Honest calls: to the master (none reaches the rogue's shadow), and from the core to the
    // good client (none reaches the rogue that tried to take its mount).
    good(&c.load_to_master(&mut [&mut rogue]));
    assert_eq!(c.calls_to_client(&mut [&mut rogue], 50), 50);
    assert_eq!(rogue.opened_inside(shadow).count(), 0, "no call reached the shadow");
    assert!(
        rogue.log().iter().all(
            |seen| !matches!(seen, rogue::Seen::Delivery(d) if d.opens() && d.command == CALL)
        )
    );
    assert_eq!(c.s.snapshot().closes.misbehaved, 0);
}
