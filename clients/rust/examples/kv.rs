//! The kv example (the engine's `examples/kv.rs`) over a node's attach socket: the Rust twin of
//! `clients/python/kv.py`, with the same commands, output and exit codes, so either side may be
//! either language.
//!
//! A key-value *master* attaches mount 7:1 to the node it runs beside and serves PUT, GET and
//! SCAN (a streamed answer); a *client* calls it from any node of the cluster (through that
//! node's own attach socket).
//!
//! ```sh
//! cargo run -p ringspan-attach --example kv -- master /run/ringspan/attach.sock
//! cargo run -p ringspan-attach --example kv -- put    /run/ringspan/attach.sock fruit/apple red
//! cargo run -p ringspan-attach --example kv -- get    /run/ringspan/attach.sock fruit/apple
//! cargo run -p ringspan-attach --example kv -- scan   /run/ringspan/attach.sock fruit/
//! cargo run -p ringspan-attach --example kv -- demo   /run/ringspan/attach.sock  # both, one process
//! ```
//!
//! Protocol 2: PUT 1 ("key=value" -> "ok"), GET 2 ("key" -> the value, empty if none), SCAN 3
//! ("prefix" -> one "key=value" message per entry, then an empty last message). Anything else
//! is refused (REFUSED).
//!
//! A client prints the answer's non-empty messages (PUT and GET on one line, SCAN one per
//! line). Errors go to stderr with exit status 1, e.g. `kv: no route to 7:1 (is a master
//! attached?)` when no master is reachable within 5 s.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;

use ringspan_attach::{Client, ClientError, Command, ErrorCode, Kind, Mount, Request, mount};

// The items a test uses are `pub`: tests/process/attach_python_process.rs includes this file
// to run it against real nodes and kv.py.
pub const PUT: Command = Command::new(2, 1);
pub const GET: Command = Command::new(2, 2);
pub const SCAN: Command = Command::new(2, 3);
const CLUSTER: u128 = 7;
const MOUNT: u128 = 1;
const WAIT: Duration = Duration::from_secs(5);
/// Kind names by wire number, as kv.py prints them.
const KINDS: [&str; 7] =
    ["master", "slave", "soft-master", "soft-slave", "cache", "client", "aggregate"];

const USAGE: &str = "usage: kv master SOCKET
       kv put    SOCKET KEY VALUE
       kv get    SOCKET KEY
       kv scan   SOCKET PREFIX
       kv demo   SOCKET   (master and client in one process)";

fn kv() -> Mount {
    mount(CLUSTER, MOUNT)
}

/// Why kv stops early; each exits with status 1.
#[derive(Debug)]
pub enum Failure {
    Usage,
    NoRoute,
    Client(ClientError),
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        Failure::Client(error)
    }
}

/// The master's data and its answers to calls.
#[derive(Default)]
struct Store(BTreeMap<String, String>);

impl Store {
    fn handle(&mut self, node: &mut Client, request: &Request) -> Result<(), ClientError> {
        // Each call here is one message; a call its caller already ended needs no answer.
        if !request.first || request.forced {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&request.payload);
        match request.command {
            PUT => {
                let (key, value) = text.split_once('=').unwrap_or((&text, ""));
                self.0.insert(key.to_string(), value.to_string());
                node.reply(request, b"ok")
            }
            GET => node.reply(request, self.0.get(&*text).map_or(&b""[..], |v| v.as_bytes())),
            SCAN => {
                for (key, value) in self.0.range(text.to_string()..) {
                    if !key.starts_with(&*text) {
                        break;
                    }
                    node.stream(request, SCAN, format!("{key}={value}").as_bytes())?;
                }
                node.reply(request, b"")
            }
            _ => node.refuse(request, ErrorCode::REFUSED),
        }
    }
}

/// Serves the store's mount on `node` until the link fails; returns why it did.
pub fn serve(node: &mut Client) -> ClientError {
    let mut store = Store::default();
    loop {
        match node.accept(Duration::from_secs(3600)) {
            Ok(None) => {}
            Ok(Some(request)) => match store.handle(node, &request) {
                // Refused: the caller is gone, nothing to answer; the link itself is fine.
                Ok(()) | Err(ClientError::Refused(_)) => {}
                Err(error) => return error,
            },
            Err(error) => return error,
        }
    }
}

pub fn attach_master(path: &str) -> Result<Client, Failure> {
    let mut node = Client::connect(path)?;
    node.attach(kv(), Kind::Master, "kv/master", WAIT)?;
    Ok(node)
}

fn master(path: &str) -> Result<(), Failure> {
    let mut node = attach_master(path)?;
    println!("kv master: serving {CLUSTER}:{MOUNT}");
    Err(serve(&mut node).into())
}

pub fn connect_client(path: &str) -> Result<Client, Failure> {
    let mut client = Client::connect(path)?;
    match client.wait_for_route(kv(), WAIT) {
        Ok(()) => Ok(client),
        Err(ClientError::TimedOut) => Err(Failure::NoRoute),
        Err(error) => Err(error.into()),
    }
}

/// One call to the store; the answer's non-empty messages, as strings.
pub fn ask(client: &mut Client, command: Command, text: &str) -> Result<Vec<String>, ClientError> {
    let call = client.open(kv(), command, text.as_bytes(), true)?;
    let answer = client.wait(call, WAIT)?;
    Ok(answer
        .iter()
        .filter(|message| !message.is_empty())
        .map(|message| String::from_utf8_lossy(message).into_owned())
        .collect())
}

/// A list of strings as Python prints it (for plain strings: no quotes or escapes in them).
fn py_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|item| format!("'{item}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Master and client over two local links of one node.
fn demo(path: &str) -> Result<(), Failure> {
    let mut server = attach_master(path)?;
    // The master serves until the process ends.
    thread::spawn(move || serve(&mut server));
    let mut client = connect_client(path)?;
    let mut routes = client.routes();
    routes.sort_by(|a, b| (a.mount, a.kind, &a.label).cmp(&(b.mount, b.kind, &b.label)));
    for route in routes {
        let kind = KINDS.get(usize::from(route.kind.index())).unwrap_or(&"?");
        let (cluster, id) = (route.mount.cluster.0, route.mount.mount.0);
        println!("client sees mount {cluster}:{id} ({kind}, b'{}')", route.label);
    }
    for (key, value) in [("fruit/apple", "red"), ("fruit/kiwi", "green"), ("veg/leek", "white")] {
        ask(&mut client, PUT, &format!("{key}={value}"))?;
    }
    println!("GET fruit/kiwi -> {}", py_list(&ask(&mut client, GET, "fruit/kiwi")?));
    println!("SCAN fruit/    -> {}", py_list(&ask(&mut client, SCAN, "fruit/")?));
    Ok(())
}

fn run(mode: &str, path: &str, args: &[String]) -> Result<(), Failure> {
    match (mode, args) {
        ("master", _) => master(path),
        ("demo", _) => demo(path),
        ("put", [key, value]) => {
            let answer = ask(&mut connect_client(path)?, PUT, &format!("{key}={value}"))?;
            println!("{}", answer.join(" "));
            Ok(())
        }
        ("get", [key]) => {
            println!("{}", ask(&mut connect_client(path)?, GET, key)?.join(" "));
            Ok(())
        }
        ("scan", [prefix]) => {
            println!("{}", ask(&mut connect_client(path)?, SCAN, prefix)?.join("\n"));
            Ok(())
        }
        _ => Err(Failure::Usage),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let Some([mode, path, rest @ ..]) = args.get(1..) else {
        eprintln!("{USAGE}");
        return ExitCode::FAILURE;
    };
    match run(mode, path, rest) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            match failure {
                Failure::Usage => eprintln!("{USAGE}"),
                Failure::NoRoute => {
                    eprintln!("kv: no route to {CLUSTER}:{MOUNT} (is a master attached?)")
                }
                Failure::Client(error) => eprintln!("kv: {path}: {error}"),
            }
            ExitCode::FAILURE
        }
    }
}
