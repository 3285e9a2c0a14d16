//! The parser on every operation and on garbage, and each measurement against a tiny fake
//! server.

use std::io::{BufRead, BufReader, BufWriter};
use std::sync::Mutex;

use super::proto::{CONTROL_LINE_MAX, Op, max_payload, parse};
use super::*;

type Writer = Arc<Mutex<BufWriter<TcpStream>>>;
/// Subscriptions: subject, sid, the subscriber's writer.
type Subs = Arc<Mutex<Vec<(String, String, Writer)>>>;

/// A tiny NATS server: INFO, CONNECT, PING/PONG, SUB, and PUB delivered as MSG to every
/// subscription of exactly that subject.
fn fake_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let subs = Subs::default();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let subs = subs.clone();
            thread::spawn(move || serve(stream, subs));
        }
    });
    addr
}

fn serve(stream: TcpStream, subs: Subs) -> io::Result<()> {
    let out: Writer = Arc::new(Mutex::new(BufWriter::new(stream.try_clone()?)));
    let send = |w: &Writer, bytes: &[u8]| -> io::Result<()> {
        let mut w = w.lock().unwrap();
        w.write_all(bytes)?;
        w.flush()
    };
    send(&out, b"INFO {\"server_id\":\"fake\",\"max_payload\":1048576}\r\n")?;
    let mut input = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let fields: Vec<&str> = text.split_whitespace().collect();
        match fields.first().copied() {
            Some("CONNECT") => {}
            Some("PING") => {
                // Everything published before this PING goes out before its PONG.
                let writers: Vec<Writer> =
                    subs.lock().unwrap().iter().map(|s| s.2.clone()).collect();
                for w in writers {
                    w.lock().unwrap().flush()?;
                }
                send(&out, b"PONG\r\n")?;
            }
            Some("SUB") if fields.len() == 3 => {
                let sub = (fields[1].to_string(), fields[2].to_string(), out.clone());
                subs.lock().unwrap().push(sub);
            }
            Some("PUB") if fields.len() == 3 || fields.len() == 4 => {
                let len: usize = fields[fields.len() - 1].parse().unwrap();
                let mut payload = vec![0; len + 2];
                input.read_exact(&mut payload)?;
                let reply =
                    if fields.len() == 4 { format!("{} ", fields[2]) } else { String::new() };
                let targets: Vec<(String, Writer)> = subs
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|s| s.0 == fields[1])
                    .map(|s| (s.1.clone(), s.2.clone()))
                    .collect();
                for (sid, target) in targets {
                    let mut w = target.lock().unwrap();
                    write!(w, "MSG {} {sid} {reply}{len}\r\n", fields[1])?;
                    w.write_all(&payload)?;
                    if input.buffer().is_empty() {
                        w.flush()?;
                    }
                }
            }
            _ => send(&out, b"-ERR 'Unknown Protocol Operation'\r\n")?,
        }
    }
}

/// A server that runs `script` on the first connection.
fn scripted(script: impl FnOnce(TcpStream) + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        if let Ok((stream, _)) = listener.accept() {
            script(stream);
        }
    });
    addr
}

/// Reads lines from the client until one starts with `prefix`.
fn expect_line(input: &mut BufReader<TcpStream>, prefix: &str) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if line.starts_with(prefix) {
            return true;
        }
    }
}

#[test]
fn one_way_counts_every_message_through_a_fake_server() {
    let server = fake_server();
    for size in [16, 1024] {
        let r = one_way(server, server, size, Duration::from_millis(100)).unwrap();
        assert!(r.sent > 0);
        assert_eq!(r.received, r.sent, "size {size}");
        assert!(r.in_window <= r.received && r.rate().is_finite());
    }
}

#[test]
fn round_trips_through_a_fake_server() {
    let server = fake_server();
    let samples = round_trips(server, server, 16, Duration::from_millis(100)).unwrap();
    assert!(!samples.is_empty());
    assert!(samples.windows(2).all(|w| w[0] <= w[1]));
    assert!(percentile(&samples, 0.5) > 0);
}

#[test]
fn bulk_direct_delivers_whole_writes() {
    let listen = ([127, 0, 0, 1], 0).into();
    let r = bulk(listen, None, 65_536, Duration::from_millis(50)).unwrap();
    assert!(r.bytes > 0);
    assert_eq!(r.bytes % 65_536, 0);
}

fn parse_all(mut input: &[u8]) -> Vec<String> {
    let mut ops = Vec::new();
    while let Some((op, used)) = parse(input).unwrap() {
        ops.push(format!("{op:?}"));
        input = &input[used..];
    }
    assert!(input.is_empty(), "left over: {input:?}");
    ops
}

const STREAM: &[u8] =
    b"INFO {\"a\":1}\r\nMSG s 1 5\r\nhello\r\nPING\r\nmsg s.b 22 _INBOX.x 0\r\n\r\n\
    +OK\r\nHMSG s 3 r 12 14\r\nNATS/1.0\r\n\r\nhi\r\n-ERR 'Slow Consumer'\r\nPONG\r\n\
    MSG s 1 4\r\n\r\nab\r\n";

#[test]
fn parses_every_operation() {
    let ops = parse_all(STREAM);
    let want = [
        Op::Info(b"{\"a\":1}"),
        Op::Msg { subject: b"s", sid: b"1", reply: None, payload: b"hello" },
        Op::Ping,
        Op::Msg { subject: b"s.b", sid: b"22", reply: Some(b"_INBOX.x"), payload: b"" },
        Op::Ok,
        Op::Msg { subject: b"s", sid: b"3", reply: Some(b"r"), payload: b"hi" },
        Op::Err(b"'Slow Consumer'"),
        Op::Pong,
        Op::Msg { subject: b"s", sid: b"1", reply: None, payload: b"\r\nab" },
    ];
    assert_eq!(ops, want.iter().map(|op| format!("{op:?}")).collect::<Vec<_>>());
}

#[test]
fn incomplete_input_waits_for_more() {
    // Every prefix parses to the same operations as far as it goes, never to an error.
    let whole = parse_all(STREAM);
    for cut in 0..STREAM.len() {
        let ops = {
            let mut input = &STREAM[..cut];
            let mut ops = Vec::new();
            while let Some((op, used)) = parse(input).unwrap() {
                ops.push(format!("{op:?}"));
                input = &input[used..];
            }
            ops
        };
        assert_eq!(ops[..], whole[..ops.len()], "cut at {cut}");
    }
}

#[test]
fn garbage_is_a_clean_error() {
    let long = [b"MSG ".as_slice(), &[b'a'; CONTROL_LINE_MAX + 8]].concat();
    for bad in [
        b"HELLO world\r\n".as_slice(),
        b"MSG s 1 x\r\n",
        b"MSG s 1 -5\r\n",
        b"MSG s 1\r\n",
        b"MSG s 1 r q 5\r\n",
        b"MSG s 1 99999999999\r\n",
        b"MSG s 1 999999999\r\n",
        b"MSG s 1 2\r\nabcd\r\n",
        b"HMSG s 1 9 4\r\nabcd\r\n",
        b"\r\n",
        &long,
    ] {
        match parse(bad) {
            Err(NatsError::Protocol(_)) => {}
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let mut input = &bytes[..];
        while let Ok(Some((_, used))) = parse(input) {
            proptest::prop_assert!(used > 0 && used <= input.len());
            input = &input[used..];
        }
    }
}

#[test]
fn reads_max_payload_from_info() {
    assert_eq!(max_payload(b"{\"a\":1,\"max_payload\": 1048576,\"b\":2}"), Some(1_048_576));
    assert_eq!(max_payload(b"{\"a\":1}"), None);
    assert_eq!(max_payload(b"{\"max_payload\":}"), None);
    let server = fake_server();
    let e = one_way(server, server, 2 << 20, Duration::from_millis(10)).unwrap_err();
    assert!(e.to_string().contains("max_payload"), "{e}");
}

#[test]
fn connect_rejects_a_server_that_does_not_speak_nats() {
    let addr = scripted(|mut s| {
        let _ = s.write_all(b"SSH-2.0-OpenSSH\r\n");
        thread::sleep(Duration::from_millis(200));
    });
    assert!(matches!(Conn::connect(addr), Err(NatsError::Protocol(_))));
}

#[test]
fn connect_reports_err_and_close() {
    let addr = scripted(|s| {
        let mut input = BufReader::new(s.try_clone().unwrap());
        let mut s = s;
        let _ = s.write_all(b"INFO {}\r\n");
        if expect_line(&mut input, "CONNECT") {
            let _ = s.write_all(b"-ERR 'Authorization Violation'\r\n");
        }
        thread::sleep(Duration::from_millis(200));
    });
    match Conn::connect(addr) {
        Err(NatsError::Server(reason)) => assert!(reason.contains("Authorization")),
        other => panic!("{:?}", other.err()),
    }
    let addr = scripted(|mut s| {
        let _ = s.write_all(b"INFO {}\r\n");
    });
    assert!(matches!(Conn::connect(addr), Err(NatsError::Closed)));
}

#[test]
fn answers_the_servers_ping() {
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = scripted(move |s| {
        let mut input = BufReader::new(s.try_clone().unwrap());
        let mut s = s;
        let _ = s.write_all(b"INFO {}\r\n");
        if expect_line(&mut input, "PING") {
            let _ = s.write_all(b"PING\r\n+OK\r\nPONG\r\n");
            let _ = tx.send(expect_line(&mut input, "PONG"));
        }
    });
    let _conn = Conn::connect(addr).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)), Ok(true));
}
