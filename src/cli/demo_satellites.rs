//! `ringspan demo --satellites`: a satellite with many clients beside a 3-node core.
//!
//! The core (n0 with an echo master mount, n1, n2) runs in this process; the satellite is a real
//! `ringspan run` child process, so its memory can be read from /proc; the crowd of clients is a
//! `ringspan-bench clients` child process (one key and one encrypted link each, idle after their
//! hello; the `ringspan-bench` binary beside this one), and two client applications with client mounts run here. The demo shows that the
//! core's table does not grow with the clients, that calls go client → master and master →
//! client through the satellite, and what an idle client costs the satellite.
//!
//! The crowd redials a client whose dial failed, as a client node does, and says when it has
//! dialled them all how many came up and why the others did not; the demo waits for that, then
//! for the satellite to hold them, as long as either makes progress. If some clients did not
//! attach, the demo says so with the crowd's reasons and the satellite's counters, carries on
//! with those that did, and exits non-zero.

use std::fmt::Write as _;
use std::io::BufRead as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ringspan::cipher::identity::write_new_key_file;
use ringspan::cipher::{Identity, PrivateKey};
use ringspan::daemon::{CallEvent, Handle, PeerSpec, Settings, Snapshot, control};
use ringspan::ids::{ClusterId, MountId};
use ringspan::span::{MountKey, MountKind, Role};
use ringspan::wire::{Command as Cmd, ErrorCode};

use super::demo::free_port;
use super::run::start;
use ringspan::daemon::config::NodeConfig;

const CALL: Cmd = Cmd::new(1, 1);
const MASTER: MountKey = MountKey { cluster: ClusterId(1), mount: MountId(0x10) };
const WAIT: Duration = Duration::from_secs(30);
/// How long the attaching may make no progress at all (the satellite holds no more clients and
/// the crowd has not said it is done) before the demo stops waiting: past the crowd's own bound,
/// a minute without any dial ending, and its handshake timeout.
const ATTACH_STALL: Duration = Duration::from_secs(90);

#[allow(clippy::disallowed_methods)] // the binary owns the clock
fn now() -> Instant {
    Instant::now()
}

/// Kills its child when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = now() + WAIT;
    while now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("timed out waiting for {what}"))
}

fn key(dir: &Path, name: &str) -> Result<PrivateKey, String> {
    let key = PrivateKey::generate().map_err(|e| e.to_string())?;
    write_new_key_file(&dir.join(format!("{name}.key")), &key).map_err(|e| e.to_string())?;
    Ok(key)
}

fn public(key: &PrivateKey) -> Result<String, String> {
    Ok(key.public_key().map_err(|e| e.to_string())?.to_base64())
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn call(call: Result<ringspan::daemon::Call, ringspan::Error>) -> ErrorCode {
    let Ok(call) = call else { return ErrorCode::NO_ROUTE };
    loop {
        match call.recv(WAIT) {
            Some(CallEvent::Ended(error)) => return error,
            Some(CallEvent::Message { .. }) => {}
            None => return ErrorCode::LOST_LINK,
        }
    }
}

/// Runs the satellite demo with `clients` idle clients.
pub fn run(dir: &Path, clients: u64) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bench = exe.with_file_name("ringspan-bench");
    if !bench.is_file() {
        return Err(format!(
            "the crowd of clients is a `ringspan-bench clients` process, and there is no {}: \
             build both binaries (`cargo build --release`, not only `--bin ringspan`)",
            bench.display()
        ));
    }
    let names = ["n0", "n1", "n2", "sat"];
    let keys = names.iter().map(|n| key(dir, n)).collect::<Result<Vec<_>, _>>()?;
    let ports = names.iter().map(|_| free_port()).collect::<Result<Vec<_>, _>>()?;
    let caller_id = Identity::generate().map_err(|e| e.to_string())?;
    let limits = "\n[limits]\nkeepalive_ms = 15000\nidle_timeout_ms = 60000\nredial_min_ms = 50\nredial_max_ms = 500\n";
    let peer = |i: usize, dial: bool| -> Result<String, String> {
        // The satellite is granted only what it is.
        let role = if names[i] == "sat" { "satellite" } else { "router" };
        let mut t = format!(
            "\n[[peer]]\nname = \"{}\"\nkey = \"{}\"\nrole = \"{role}\"\n",
            names[i],
            public(&keys[i])?
        );
        if dial {
            let _ = writeln!(t, "address = \"127.0.0.1:{}\"", ports[i]);
        }
        Ok(t)
    };
    let head = |i: usize, role: &str, extra: &str| {
        format!(
            "[node]\nkey = \"{}.key\"\nlisten = [\"127.0.0.1:{}\"]\nrole = \"{role}\"\n{extra}{limits}",
            names[i], ports[i]
        )
    };
    let caller_key = caller_id.public_key().to_base64();
    let texts = [
        head(0, "router", &format!("allow = [{{ key = \"{caller_key}\", role = \"router\" }}]\n"))
            + &peer(1, true)?
            + &peer(2, true)?
            + "\n[[mount]]\ncluster = \"0x1\"\nid = \"0x10\"\nkind = \"master\"\nlabel = \"demo/master\"\nservice = \"echo\"\n",
        head(1, "router", "") + &peer(0, false)? + &peer(2, true)? + &peer(3, false)?,
        head(2, "router", "") + &peer(0, false)? + &peer(1, false)?,
        head(3, "satellite", "accept_unknown_keys = true\nclient_clusters = [\"0x1\"]\n")
            + &peer(1, true)?,
    ];
    let mut core = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let path = dir.join(format!("{}.toml", names[i]));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        if i < 3 {
            let config = NodeConfig::parse(&path, text).map_err(|e| e.to_string())?;
            core.push(start(&config)?);
        }
    }
    let sat_config = dir.join("sat.toml");
    // Its log (warnings and errors) says why, if it does not join.
    let sat_log = dir.join("sat.log");
    let mut satellite = Kid(Command::new(&exe)
        .args(["run", "--config"])
        .arg(&sat_config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&sat_log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot start the satellite: {e}"))?);
    let sat_snapshot = || -> Option<Snapshot> {
        serde_json::from_str(&control::fetch(&sat_config.with_extension("sock")).ok()?).ok()
    };
    let sat_key = keys[3].public_key().map_err(|e| e.to_string())?;
    let sat_addr = format!("127.0.0.1:{}", ports[3]);
    println!("ringspan demo --satellites: a 3-node core (n0 holds an echo master) and a satellite");
    println!("  process on n1; {clients} idle clients and 2 client applications attach to it\n");
    let mut exited = None;
    let joined = wait_for("the satellite to join the core", || {
        exited = satellite.0.try_wait().ok().flatten();
        exited.is_some() || sat_snapshot().is_some_and(|s| s.links.len() == 1)
    });
    if exited.is_some() || joined.is_err() {
        let log = std::fs::read_to_string(&sat_log).unwrap_or_default();
        let log = log.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev();
        let log = log.collect::<Vec<_>>().join("\n  ");
        let what = match exited {
            Some(status) => format!("the satellite exited ({status})"),
            None => format!("the satellite did not join the core within {} s", WAIT.as_secs()),
        };
        return Err(format!("{what}; its log:\n  {log}"));
    }
    let core_routes = |core: &[Handle]| core[0].routes().len();
    println!("core routes at n0 with no client:       {}", core_routes(&core));

    // Two client applications with a client mount each, serving echo.
    let mut apps = Vec::new();
    for i in 0..2u128 {
        let mut settings = Settings::new(Identity::generate().map_err(|e| e.to_string())?);
        settings.role = Role::Client;
        settings.peers = vec![PeerSpec {
            address: Some(sat_addr.parse().map_err(|_| "address")?),
            key: sat_key,
            role: Role::Satellite,
        }];
        settings.recv_buffers = 8;
        let app = Handle::start(settings)?;
        let mount = MountKey { cluster: ClusterId(1), mount: MountId(0x1000 + i) };
        app.attach(mount, MountKind::Client, "client app").map_err(|e| e.to_string())?;
        apps.push((app, mount));
    }
    for (app, _) in &apps {
        if !app.wait_for_route(MASTER, WAIT) {
            return Err("a client application never reached the master".into());
        }
    }
    wait_for("the satellite's aggregate at the core", || core_routes(&core) == 2)?;
    println!(
        "core routes at n0 with 2 clients:       {}  (the master, the satellite's aggregate)",
        core_routes(&core)
    );
    let rss_before = rss_kib(satellite.0.id()).unwrap_or(0);

    // The crowd: it dials every client (again after a backoff if a dial fails, as a client
    // does), then holds the links until it is killed. Its `holding` line on stderr says how
    // many came up, and why the others did not.
    let t0 = now();
    let mut crowd = Kid(Command::new(&bench)
        .args(["clients", "--connect", &sat_addr, "--peer-key"])
        .arg(public(&keys[3])?)
        .args(["--clients", &clients.to_string(), "--rate", "2000", "--hold", "86400", "--json"])
        .args(["--keepalive-ms", "15000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the client crowd: {e}"))?);
    let crowd_lines = {
        let stderr = crowd.0.stderr.take().ok_or("the client crowd has no stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    };
    let total = clients as usize + 2;
    let attach = wait_for_clients(total, &mut crowd, &crowd_lines, &sat_snapshot);
    let attach_time = t0.elapsed();
    let held = attach.held;
    match &attach.short {
        None => println!(
            "\r  clients attached to the satellite: {total:>7} in {:.1} s",
            attach_time.as_secs_f64()
        ),
        Some(why) => println!(
            "\r  clients attached to the satellite: {held:>7} of {total}, after {:.1} s\n  \
             not all attached: {why}",
            attach_time.as_secs_f64()
        ),
    }
    // Let the links go quiet, as idle clients are, then read the satellite's memory.
    std::thread::sleep(Duration::from_secs(2));
    let rss_after = rss_kib(satellite.0.id()).unwrap_or(0);
    println!(
        "core routes at n0 with {held} clients: {}  (unchanged: no route per client)",
        core_routes(&core)
    );

    // Calls both ways through the satellite.
    let mut caller_settings = Settings::new(caller_id);
    caller_settings.peers = vec![PeerSpec::router(
        Some(format!("127.0.0.1:{}", ports[0]).parse().map_err(|_| "address")?),
        keys[0].public_key().map_err(|e| e.to_string())?,
    )];
    caller_settings.recv_buffers = 8;
    let caller = Handle::start(caller_settings)?;
    let sat_id = keys[3].public_key().map_err(|e| e.to_string())?.node_id();
    let aggregate = MountKey { cluster: ClusterId(1), mount: MountId(sat_id.0) };
    if !caller.wait_for_route(aggregate, WAIT) {
        return Err("the core-side caller never heard the satellite's aggregate".into());
    }
    let servers: Vec<_> = apps
        .into_iter()
        .map(|(app, mount)| {
            let server = std::thread::spawn(move || {
                let mut served = 0;
                while let Some(incoming) = app.accept(Duration::from_secs(2)) {
                    let payload = incoming.payload.clone();
                    incoming.into_call(&app).finish(CALL, &payload);
                    served += 1;
                }
                (app, served)
            });
            (server, mount)
        })
        .collect();
    let (mut up, mut down) = (0, 0);
    for (_, mount) in &servers {
        for _ in 0..50 {
            if call(caller.open_client(aggregate, mount.mount, CALL, b"from the core", true))
                == ErrorCode::NONE
            {
                down += 1;
            }
        }
    }
    let mut apps = Vec::new();
    for (server, _) in servers {
        let (app, _) = server.join().map_err(|_| "a client application failed")?;
        for _ in 0..50 {
            if call(app.open(MASTER, CALL, b"to the master", true)) == ErrorCode::NONE {
                up += 1;
            }
        }
        apps.push(app);
    }
    let snapshot = sat_snapshot().unwrap_or_default();
    println!("calls client -> master through the satellite: {up} of 100 answered");
    println!("calls core -> client through the satellite:   {down} of 100 answered");

    let crowd_held = held.saturating_sub(2).max(1) as u64;
    let per_client = (rss_after.saturating_sub(rss_before) * 1024) / crowd_held;
    println!("\nSUMMARY");
    println!("  {:<40} {}", "clients on the satellite", snapshot.clients);
    println!("  {:<40} {}", "routes in the core's table (n0)", core_routes(&core));
    println!(
        "  {:<40} {:.0}/s",
        "handshakes",
        held.saturating_sub(2) as f64 / attach_time.as_secs_f64()
    );
    println!(
        "  {:<40} {} -> {} KiB",
        "satellite RSS before -> with the crowd", rss_before, rss_after
    );
    println!(
        "  {:<40} {per_client} bytes (2 s after attaching; links shed their record keys after 10 s \
         quiet, see perf/clients.sh)",
        "satellite RSS per client"
    );
    println!("  {:<40} {up} + {down} of 200", "calls answered (up + down)");
    drop(crowd);
    drop(satellite);
    caller.shutdown();
    for app in apps {
        app.shutdown();
    }
    for node in core {
        node.shutdown();
    }
    if let Some(why) = attach.short {
        return Err(format!("only {held} of {total} clients attached: {why}"));
    }
    if up + down != 200 {
        return Err(format!("only {} of 200 calls were answered", up + down));
    }
    Ok(())
}

/// How the clients attached: how many the satellite holds, and if not all, why.
struct Attached {
    held: usize,
    short: Option<String>,
}

/// Waits for the satellite to hold `total` clients, printing its count as it grows. Ends
/// early once the crowd has said it is done dialling (or has exited) and the satellite holds
/// every client the crowd got up, or when nothing has progressed for [`ATTACH_STALL`]; the
/// reason then says what the crowd and the satellite saw.
fn wait_for_clients(
    total: usize,
    crowd: &mut Kid,
    crowd_lines: &std::sync::mpsc::Receiver<String>,
    sat_snapshot: &dyn Fn() -> Option<Snapshot>,
) -> Attached {
    let mut held = 0;
    let mut last_snapshot = None;
    let mut crowd_said: Option<String> = None;
    let mut crowd_up: Option<usize> = None;
    let mut crowd_log = Vec::new();
    let mut progress_at = now();
    loop {
        while let Ok(line) = crowd_lines.try_recv() {
            if let Some(rest) = line.strip_prefix("holding ") {
                crowd_up = rest.split_whitespace().next().and_then(|n| n.parse().ok());
                // What follows "holding N links idle for S s" says why links are missing.
                crowd_said = Some(match line.split_once("; ") {
                    Some((_, why)) => format!("the crowd: {why}"),
                    None => format!("the crowd: every link up ({rest})"),
                });
                progress_at = now();
            } else if !line.trim().is_empty() {
                crowd_log.push(line);
            }
        }
        if crowd_said.is_none()
            && let Ok(Some(status)) = crowd.0.try_wait()
        {
            crowd_up = Some(0);
            crowd_said =
                Some(format!("the client crowd exited ({status}): {}", crowd_log.join("; ")));
        }
        if let Some(snapshot) = sat_snapshot() {
            if snapshot.clients != held {
                held = snapshot.clients;
                progress_at = now();
                print!("\r  clients attached to the satellite: {held:>7}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            last_snapshot = Some(snapshot);
        }
        if held >= total {
            return Attached { held, short: None };
        }
        // Every client the crowd got up is here (two are the client applications).
        let all_it_got = crowd_up.is_some_and(|up| held >= up + 2);
        let stalled = now().duration_since(progress_at) > ATTACH_STALL;
        if all_it_got || stalled {
            let mut why = crowd_said.unwrap_or_else(|| {
                format!(
                    "the crowd has not finished dialling, and no client attached for {} s",
                    ATTACH_STALL.as_secs()
                )
            });
            if let Some(s) = last_snapshot {
                let _ = write!(
                    why,
                    "; the satellite: {} connections accepted, {} refused at accept (handshake \
                     rate {}, max links {}), {} handshakes failed, {} in progress",
                    s.accepted,
                    s.refused_handshake_rate + s.refused_max_links,
                    s.refused_handshake_rate,
                    s.refused_max_links,
                    s.handshake_failures,
                    s.handshaking
                );
            }
            return Attached { held, short: Some(why) };
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
