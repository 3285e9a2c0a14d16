//! Satellites at scale and under abuse, as real processes: a 3-node core (`ringspan run`, a
//! triangle, a with an echo master mount in cluster 0x1) and two satellites, s1 under b and s2
//! under c, each taking clients from a `ringspan-bench clients --mount-cluster 0x1` child (one
//! key, one link and one advertised client mount per client):
//!
//! ```text
//!          a (echo master)
//!         / \
//!        b — c
//!        |    \
//!   app, s1    s2
//!   5+5,000     5+5,000 clients
//! ```
//!
//! 1. With 5 clients per satellite, the core converges on three routes: the master and one
//!    aggregate per satellite.
//! 2. With 5,000 more per satellite (10,010 clients), the core holds exactly the routes it held
//!    with 10 (sampled all along), while each satellite's client directory grew by its clients'
//!    mounts (never its table); an
//!    application client (the mount API) attached through s1 still calls the master.
//! 3. Clients that complete a real handshake and say hello, then send a record that fails
//!    authentication or one that authenticates but does not parse, are cut off by s1 one by one
//!    and counted as misbehaving; nothing else on s1 goes down.
//! 4. A flood of raw connections from one source against s1 (`max_handshakes_per_sec` set low in
//!    its config) is refused at accept beyond the handshake bucket; connections to s2 (its
//!    `max_links` set to exactly what it holds) are all refused at accept; no established link
//!    goes down and the application client's calls go on.
//!
//! Debug builds: the satellites take their 5,000 clients at 400 dials a second each, in parallel.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ringspan::cipher::{self, Identity, Session};
use ringspan::daemon::{CallEvent, Closes, Handle, Settings, Snapshot};
use ringspan::ids::{ClusterId, MountId};
use ringspan::limits::{HANDSHAKE_FRAME_MAX, RECORD_HEADER_LEN, RECORD_TAG_LEN};
use ringspan::span::{Hello, MountKey, Role, Wants};
use ringspan::wire::HELLO_LEN_MAX;
use ringspan::wire::{Command as Cmd, ErrorCode, Flags};

use crate::support::config;
use crate::support::host::{raise_nofile_limit, scratch};
use crate::support::node::Node;
use crate::support::process::{BENCH, Proc, run_node};
use crate::support::wait::{now, wait_until};

const CALL: Cmd = Cmd::new(1, 1);
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const WAIT: Duration = Duration::from_secs(30);
/// Clients per satellite in phase 1.
const FEW: usize = 5;
/// Clients added per satellite in phase 2.
const MANY: usize = 5_000;
/// Dials per second of each phase-2 client load: a debug build keeps up with two at once.
const DIAL_RATE: u32 = 400;
/// s1's `max_handshakes_per_sec`: well above its client load's dial rate, and well below what
/// the flood asks for.
const S1_HANDSHAKES_PER_SEC: u32 = 1_000;
/// Raw connections in the flood against s1, from one source, as fast as they go.
const FLOOD: usize = 3_000;
/// Connections tried against s2 once it holds `max_links` links.
const PROBES: usize = 20;
/// The links s2 holds at the end: its link to c and its clients. Its `max_links`.
const S2_LINKS: usize = 1 + FEW + MANY;
/// How long to wait for the phase-2 clients (generous for a debug build on two busy cores).
const PHASE_2_WAIT: Duration = Duration::from_secs(240);

/// The address strangers connect from. The nodes, the application and the client loads dial
/// from 127.0.0.1 and 127.0.0.2 on: a node trusts its configured peers' addresses (127.0.0.1
/// here), and a flood from there would be a trusted one.
const STRANGER: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 99);

/// A connection to `to` from source address `from`.
fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&std::net::SocketAddr::from((from, 0)).into())?;
    socket.connect(&to.into())?;
    Ok(socket.into())
}

/// A node's routes as (cluster, mount, kind, origin), sorted.
fn route_set(s: &Snapshot) -> Vec<(String, String, String, String)> {
    let mut routes: Vec<_> = s
        .routes
        .iter()
        .map(|r| (r.cluster.clone(), r.mount.clone(), r.kind.clone(), r.origin.clone()))
        .collect();
    routes.sort();
    routes
}

/// Clients' mounts a satellite holds: in its client directory, never among its routes.
fn client_mounts(s: &Snapshot) -> usize {
    assert!(!s.routes.iter().any(|r| r.kind == "client"), "a client mount became a route");
    s.client_mounts
}

/// A one-shot call to the echo master from the application client: it must be answered.
fn call_master(app: &Handle, payload: &[u8]) {
    let call = app.open(MASTER, CALL, payload, true).unwrap_or_else(|e| panic!("cannot open: {e}"));
    let mut answer = None;
    loop {
        match call.recv(WAIT) {
            Some(CallEvent::Message { payload, .. }) => answer = Some(payload),
            Some(CallEvent::Ended(error)) => {
                assert_eq!(error, ErrorCode::NONE, "the call to the master failed");
                break;
            }
            None => panic!("the call to the master hangs"),
        }
    }
    assert_eq!(answer.as_deref(), Some(payload), "the master's answer");
}

/// `ringspan-bench clients`: `count` clients to `sat`, each advertising a client mount in
/// cluster 0x1, held for an hour (the test kills it).
fn client_load(dir: &Path, sat: &Node, tag: &str, count: usize, rate: u32) -> (Proc, PathBuf) {
    let log = dir.join(format!("{}-{tag}.log", sat.name));
    let load = Command::new(BENCH)
        .args(["clients", "--connect", &sat.addr().to_string()])
        .args(["--peer-key", &sat.public().to_base64(), "--clients", &count.to_string()])
        .args(["--rate", &rate.to_string(), "--mount-cluster", "0x1", "--hold", "3600", "--json"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Proc(load), log)
}

/// Panics if a client load has exited (it holds its links until killed).
fn assert_holding(loads: &mut [(Proc, PathBuf)]) {
    for (load, log) in loads {
        if let Some(status) = load.0.try_wait().unwrap() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            panic!("a client load exited ({status}): {text}");
        }
    }
}

/// A client speaking the protocol by hand over a blocking socket: a real handshake, a real
/// hello, then whatever record the test wants to send.
struct RawClient {
    stream: TcpStream,
    session: Session,
}

impl RawClient {
    /// Connects to `sat` and completes the handshake, expecting `sat`'s key.
    fn handshake(sat: &Node) -> RawClient {
        let config = cipher::Config::new(Identity::generate().unwrap()).unwrap();
        let mut session = Session::initiator(Arc::new(config), Some(sat.public()), now()).unwrap();
        let mut stream = connect_from(STRANGER, sat.addr()).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        let mut frame = [0u8; HANDSHAKE_FRAME_MAX];
        loop {
            let len = session.poll_transmit(&mut frame).unwrap();
            stream.write_all(&frame[..len]).unwrap();
            if session.is_established() {
                break;
            }
            // The responder sends nothing but its handshake frame before our last one.
            let mut bytes = [0u8; HANDSHAKE_FRAME_MAX];
            let got = loop {
                match stream.read(&mut bytes) {
                    // Interrupted by a signal: tried again.
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    read => break read.unwrap(),
                }
            };
            assert!(got > 0, "the satellite closed during the handshake");
            assert_eq!(session.handle_handshake_bytes(&bytes[..got], now()).unwrap(), got);
        }
        RawClient { stream, session }
    }

    /// Seals `plaintext` (whole messages) into one record.
    fn seal(&mut self, plaintext: &[u8]) -> Vec<u8> {
        let mut record = vec![0u8; RECORD_HEADER_LEN + plaintext.len() + RECORD_TAG_LEN];
        record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + plaintext.len()].copy_from_slice(plaintext);
        let len = self.session.seal(&mut record, plaintext.len()).unwrap();
        assert_eq!(len, record.len());
        record
    }

    /// Opens the `LINK_CONN` a client node opens: role client, every kind, every cluster.
    fn hello(&mut self) {
        let mut hello = [0u8; HELLO_LEN_MAX];
        let len = Hello::new(Role::Client, Wants::all()).encode(&mut hello);
        let mut messages = Vec::new();
        ringspan::txn::Link::new()
            .open(&mut messages, None, Cmd::LINK_CONN, &hello[..len], Flags::NONE)
            .unwrap();
        let record = self.seal(&messages);
        self.stream.write_all(&record).unwrap();
    }

    /// Sends `bytes` and expects the satellite to close the connection (reading past whatever
    /// it sent before: its hello and spans).
    fn send_and_expect_close(mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        let mut sink = [0u8; 4096];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("the satellite did not close the link: {e}"),
            }
        }
    }
}

#[test]
fn the_core_does_not_grow_with_ten_thousand_clients_and_abusive_ones_are_cut_off_alone() {
    let _alone = crate::alone();
    // Each satellite inherits this limit (its clients, the flood's admitted connections); the
    // flood's sockets are this process's. The client loads raise their own.
    let want = (MANY + FLOOD + 3_000) as u64;
    let open = raise_nofile_limit(want);
    assert!(open >= want, "this test needs {want} open files; the hard limit allows {open}");

    let dir = scratch("sat-scale");
    let [a, b, c, s1, s2] = ["a", "b", "c", "s1", "s2"].map(|n| Node::new(&dir, n));

    // Thousands of idle links: keepalives every 15 s, not every second.
    let limits = "keepalive_ms = 15000\nidle_timeout_ms = 60000\nredial_min_ms = 50\n\
                  redial_max_ms = 500\n";
    let peer = |n: &Node, dial: bool| {
        // Satellites are granted what they are, routers a router's rights.
        let role = if n.name.starts_with('s') { "satellite" } else { "router" };
        config::peer_as(n, role, dial)
    };
    let write = |n: &Node, role: &str, extra: &str, more_limits: &str, tables: String| {
        let node_lines = format!("workers = 1\nrole = \"{role}\"\n{extra}");
        config::write(n, &node_lines, &format!("{limits}{more_limits}"), &tables);
    };
    let unknown = "accept_unknown_keys = true\nclient_clusters = [\"0x1\"]\n";
    let master = config::echo_mount(MASTER, "master", "");
    write(&a, "router", "", "", peer(&b, true) + &peer(&c, true) + &master);
    write(&b, "router", "", "", peer(&a, false) + &peer(&c, true) + &peer(&s1, false));
    write(&c, "router", "", "", peer(&a, false) + &peer(&b, false) + &peer(&s2, false));
    let s1_limits = format!("max_handshakes_per_sec = {S1_HANDSHAKES_PER_SEC}\n");
    write(&s1, "satellite", unknown, &s1_limits, peer(&b, true));
    // Its links are all it may hold: none is reserved for trusted addresses.
    let s2_limits = format!("max_links = {S2_LINKS}\nreserved_links = 0\n");
    write(&s2, "satellite", unknown, &s2_limits, peer(&c, true));
    let nodes: Vec<Proc> = [&a, &b, &c, &s1, &s2].iter().map(|n| run_node(&n.config)).collect();
    let started = now();

    // Snapshots of a satellite with thousands of clients are large: not fetched every 50 ms.
    let fast = Duration::from_millis(100);
    for sat in [&s1, &s2] {
        wait_until("a satellite to link to the core", WAIT, fast, || {
            sat.try_snapshot().is_some_and(|s| s.links.len() == 1)
        });
    }

    // The application client, attached through s1 only (no failover to hide a failure).
    let mut settings = Settings::new(Identity::generate().unwrap());
    settings.role = Role::Client;
    settings.peers = vec![s1.peer()];
    settings.recv_buffers = 8;
    settings.limits.keepalive = Duration::from_secs(5);
    settings.limits.idle_timeout = Duration::from_secs(60);
    let app = Handle::start(settings).unwrap();
    assert!(app.wait_for_route(MASTER, WAIT), "the application client reaches the master");
    call_master(&app, b"before any client");

    // Phase 1: a few clients per satellite; the core converges on the master and one aggregate
    // per satellite.
    let mut loads =
        vec![client_load(&dir, &s1, "few", FEW, 1_000), client_load(&dir, &s2, "few", FEW, 1_000)];
    let aggregate = |sat: &Node| format!("{:x}", sat.public().node_id().0);
    // s1 also counts the application client.
    let held = |sat: &Node, clients: usize| {
        let extra = usize::from(sat.name == "s1");
        let s = sat.snapshot();
        s.clients == clients + extra && client_mounts(&s) == clients
    };
    for sat in [&s1, &s2] {
        wait_until("the first clients at the satellites", WAIT, fast, || held(sat, FEW));
    }
    let core = [&a, &b, &c];
    for n in core {
        wait_until("the core to hear both aggregates", WAIT, fast, || {
            let s = n.snapshot();
            let has = |mount: &str| s.routes.iter().any(|r| r.mount == mount);
            s.routes.len() == 3 && has("10") && has(&aggregate(&s1)) && has(&aggregate(&s2))
        });
    }
    // Settled: the routes each core node holds with 10 clients.
    std::thread::sleep(Duration::from_millis(500));
    let core_before: Vec<_> = core.iter().map(|n| route_set(&n.snapshot())).collect();
    for (n, routes) in core.iter().zip(&core_before) {
        assert_eq!(routes.len(), 3, "{}: {routes:?}", n.name);
        assert!(routes.iter().all(|r| r.2 != "client"), "{} hears a client: {routes:?}", n.name);
    }
    let sat_before: Vec<_> = [&s1, &s2].iter().map(|n| n.snapshot().routes.len()).collect();
    assert_eq!(sat_before, [3, 3], "the master and both aggregates; clients' mounts are no routes");
    let phase_1 = now() - started;

    // Phase 2: 5,000 more clients per satellite, in parallel; the core's tables are sampled all
    // along and never change.
    loads.push(client_load(&dir, &s1, "many", MANY, DIAL_RATE));
    loads.push(client_load(&dir, &s2, "many", MANY, DIAL_RATE));
    wait_until("every client to be held", PHASE_2_WAIT, Duration::from_secs(1), || {
        assert_holding(&mut loads);
        for (n, before) in core.iter().zip(&core_before) {
            assert_eq!(&route_set(&n.snapshot()), before, "{}'s routes changed", n.name);
        }
        held(&s1, FEW + MANY) && held(&s2, FEW + MANY)
    });
    let phase_2 = now() - started - phase_1;
    for (n, before) in core.iter().zip(&core_before) {
        assert_eq!(&route_set(&n.snapshot()), before, "{}'s routes changed", n.name);
    }
    // Each satellite's table is unchanged; its directory holds every client's mount.
    for (sat, before) in [&s1, &s2].iter().zip(&sat_before) {
        let s = sat.snapshot();
        assert_eq!(s.routes.len(), *before, "{}'s table", sat.name);
        assert_eq!(client_mounts(&s), FEW + MANY, "{}'s client mounts", sat.name);
    }
    call_master(&app, b"with ten thousand clients held");
    // s1's snapshot now lists thousands of routes: fetched a few times a second at most.
    let fast = Duration::from_millis(300);

    // Bad records from clients that completed a real handshake and said hello: each is cut off
    // alone, counted as misbehaving.
    let before = s1.snapshot();
    let settled = |expect: &Closes, clients: usize| {
        wait_until("s1 to count the close", WAIT, fast, || {
            let s = s1.snapshot();
            s.closes == *expect && s.clients == clients
        });
    };
    let mut tampered = RawClient::handshake(&s1);
    tampered.hello();
    wait_until("s1 to count the hand-made client", WAIT, fast, || {
        s1.snapshot().clients == before.clients + 1
    });
    // A record that fails authentication: one bit of a real one's ciphertext flipped.
    let mut record = tampered.seal(&[0u8; 32]);
    record[RECORD_HEADER_LEN] ^= 0x01;
    tampered.send_and_expect_close(&record);
    let mut expect = Closes { misbehaved: before.closes.misbehaved + 1, ..before.closes.clone() };
    settled(&expect, before.clients);

    let mut garbled = RawClient::handshake(&s1);
    garbled.hello();
    wait_until("s1 to count the hand-made client", WAIT, fast, || {
        s1.snapshot().clients == before.clients + 1
    });
    // A record that authenticates but whose message header does not parse.
    let record = garbled.seal(&[0xa5; 32]);
    garbled.send_and_expect_close(&record);
    expect.misbehaved += 1;
    settled(&expect, before.clients);
    assert_holding(&mut loads);
    call_master(&app, b"after the bad records");

    // A flood of raw connections against s1, from one source, far beyond its handshake rate.
    let before = s1.snapshot();
    let flood_start = now();
    let mut flood = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        // A refused connection is reset, usually after connect returned, but the reset may
        // also beat the return: connect then fails, though s1 did accept and refuse it.
        if let Ok(stream) = connect_from(STRANGER, s1.addr()) {
            flood.push(stream);
        }
    }
    let connected = flood.len() as u64;
    let mut after = before.clone();
    wait_until("s1 to accept or refuse every connection", WAIT, fast, || {
        after = s1.snapshot();
        let accepted = after.accepted - before.accepted;
        let refused = after.refused_handshake_rate - before.refused_handshake_rate;
        accepted + refused >= connected
    });
    let elapsed = (now() - flood_start).as_secs_f64();
    let admitted = after.accepted - before.accepted;
    let refused = after.refused_handshake_rate - before.refused_handshake_rate;
    println!(
        "flood: {FLOOD} connections tried against s1 ({connected} connected) in {elapsed:.2} s: \
         {admitted} admitted, {refused} refused by the handshake rate"
    );
    // Every connection that connected was admitted or refused (and some that failed to).
    assert!(
        (connected..=FLOOD as u64).contains(&(admitted + refused)),
        "{connected} connected, {FLOOD} tried, {admitted} admitted, {refused} refused"
    );
    assert!(refused > 0, "nothing was refused by the handshake rate");
    // At most the bucket (one second's worth) plus its refill while the flood lasted.
    let allowed = f64::from(S1_HANDSHAKES_PER_SEC) * (1.0 + elapsed);
    assert!(admitted as f64 <= allowed, "{admitted} handshakes started, at most {allowed:.0}");
    assert_eq!(after.refused_max_links, before.refused_max_links);
    // No established link went down, and the application client's calls go on.
    assert_eq!(after.closes, before.closes);
    assert_eq!(after.clients, before.clients);
    call_master(&app, b"during the flood");
    drop(flood);

    // s2 holds exactly `max_links` links: every further connection is refused at accept.
    let before = s2.snapshot();
    assert_eq!(before.links.len() + before.clients, S2_LINKS);
    // As in the flood, a probe's connect may fail when the reset beats its return.
    let probes: Vec<TcpStream> =
        (0..PROBES).filter_map(|_| connect_from(STRANGER, s2.addr()).ok()).collect();
    let connected = probes.len() as u64;
    let mut after = before.clone();
    wait_until("s2 to refuse the probes", WAIT, fast, || {
        after = s2.snapshot();
        after.refused_max_links - before.refused_max_links >= connected.max(1)
    });
    let refused = after.refused_max_links - before.refused_max_links;
    assert!(refused <= PROBES as u64, "{refused} refused of {PROBES} probes");
    assert_eq!(after.accepted, before.accepted, "s2 started a handshake past max_links");
    assert_eq!(after.refused_handshake_rate, before.refused_handshake_rate);
    assert_eq!(after.closes, before.closes);
    assert_eq!(after.clients, before.clients);
    drop(probes);

    // Everything held to the end.
    assert_holding(&mut loads);
    for (n, before) in core.iter().zip(&core_before) {
        assert_eq!(&route_set(&n.snapshot()), before, "{}'s routes changed", n.name);
    }
    assert!(held(&s1, FEW + MANY) && held(&s2, FEW + MANY), "a client was lost");
    call_master(&app, b"at the end");
    println!(
        "phase 1 (core up, 10 clients) {phase_1:.1?}, phase 2 (10,000 more) {phase_2:.1?}, \
         whole test {:.1?}",
        now() - started
    );
    app.shutdown();
    drop(loads);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
