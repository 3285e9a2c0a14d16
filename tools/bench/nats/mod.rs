//! Baselines ringspan is compared against (`ringspan-bench nats`, `perf/baselines.sh`): a load
//! generator speaking the NATS client protocol over plain blocking TCP, and a bulk TCP
//! sender/receiver pair that can be pointed through a relay such as socat.
//!
//! - [`one_way`]: a subscriber connection counts what a publisher connection (possibly to
//!   another server) publishes as fast as it can through a 64 KiB buffered writer; the rate is
//!   taken over the subscriber's window, from the first delivered message to the last.
//! - [`round_trips`]: a responder answers each request on its reply subject; a requester sends
//!   one request at a time to it from a unique inbox and records every round trip. Percentiles
//!   are exact, from the sorted samples ([`percentile`]).
//! - [`bulk`]: one TCP stream of `size`-byte writes, counted by a receiver from the first byte to
//!   the last (end of stream).
//!
//! The parser ([`parse`]) takes the server's operations from a byte buffer and never panics on
//! odd input: an unknown operation, a malformed length or a missing `\r\n` is an error.

use crate::percentile;
use std::fmt::Write as _;
use std::io::{self, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The longest control line accepted (nats-server's default `max_control_line`).
pub const CONTROL_LINE_MAX: usize = 4096;
/// The largest payload accepted.
pub const PAYLOAD_MAX: usize = 64 << 20;
/// Buffered writer size of every connection.
const BUFFER: usize = 64 * 1024;
/// How long a connection waits for the server during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the subscriber waits, once the publisher is done, for messages still in flight.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

/// What went wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    /// The socket failed.
    #[error("{0}")]
    Io(io::Error),
    /// The server sent something that is not the NATS protocol as this client reads it.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The server sent `-ERR`.
    #[error("the server sent -ERR {0}")]
    Server(String),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// The measurement cannot run as asked.
    #[error("{0}")]
    Invalid(String),
    /// The server did not answer in time.
    #[error("timed out {0}")]
    Timeout(&'static str),
}

impl From<io::Error> for NatsError {
    fn from(e: io::Error) -> NatsError {
        use io::ErrorKind::*;
        match e.kind() {
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => NatsError::Closed,
            _ => NatsError::Io(e),
        }
    }
}

fn protocol(what: &str, line: &[u8]) -> NatsError {
    let shown: String =
        String::from_utf8_lossy(&line[..line.len().min(64)]).escape_debug().collect();
    NatsError::Protocol(format!("{what}: \"{shown}\""))
}

/// One operation from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// `INFO {json}`.
    Info(&'a [u8]),
    /// `MSG subject sid [reply] len` (or `HMSG`; the payload is then the part after the headers).
    Msg {
        /// The subject.
        subject: &'a [u8],
        /// The subscription id.
        sid: &'a [u8],
        /// The reply subject, if any.
        reply: Option<&'a [u8]>,
        /// The payload.
        payload: &'a [u8],
    },
    /// `PING`: to be answered with `PONG`.
    Ping,
    /// `PONG`.
    Pong,
    /// `+OK`.
    Ok,
    /// `-ERR 'reason'`.
    Err(&'a [u8]),
}

fn number(field: &[u8], line: &[u8]) -> Result<usize, NatsError> {
    if field.is_empty() || field.len() > 10 || !field.iter().all(u8::is_ascii_digit) {
        return Err(protocol("bad length", line));
    }
    let n = field.iter().fold(0usize, |n, d| n * 10 + usize::from(d - b'0'));
    if n > PAYLOAD_MAX {
        return Err(protocol("payload too large", line));
    }
    Ok(n)
}

/// Parses the operation at the start of `buf`: `Ok(None)` if it is not complete yet, else the
/// operation and how many bytes it took.
pub fn parse(buf: &[u8]) -> Result<Option<(Op<'_>, usize)>, NatsError> {
    let window = &buf[..buf.len().min(CONTROL_LINE_MAX + 2)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() > CONTROL_LINE_MAX + 1 {
            return Err(protocol("control line too long", buf));
        }
        return Ok(None);
    };
    let after = nl + 1;
    let line = &buf[..nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let split = line.iter().position(|&b| b == b' ' || b == b'\t').unwrap_or(line.len());
    let (verb, rest) = line.split_at(split);
    let rest = rest.trim_ascii();
    let op = if verb.eq_ignore_ascii_case(b"MSG") || verb.eq_ignore_ascii_case(b"HMSG") {
        let headers = verb.len() == 4;
        let mut fields: [&[u8]; 5] = [&[]; 5];
        let mut count = 0;
        for field in rest.split(|&b| b == b' ' || b == b'\t').filter(|f| !f.is_empty()) {
            if count == fields.len() {
                return Err(protocol("too many fields", line));
            }
            fields[count] = field;
            count += 1;
        }
        let (reply, lengths) = match (headers, count) {
            (false, 3) => (None, &fields[2..3]),
            (false, 4) => (Some(fields[2]), &fields[3..4]),
            (true, 4) => (None, &fields[2..4]),
            (true, 5) => (Some(fields[2]), &fields[3..5]),
            _ => return Err(protocol("wrong number of fields", line)),
        };
        let total = number(lengths[lengths.len() - 1], line)?;
        let skip = if headers { number(lengths[0], line)? } else { 0 };
        if skip > total {
            return Err(protocol("header length past the total", line));
        }
        let end = after + total;
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(protocol("payload not followed by \\r\\n", line));
        }
        let payload = &buf[after + skip..end];
        return Ok(Some((Op::Msg { subject: fields[0], sid: fields[1], reply, payload }, end + 2)));
    } else if verb.eq_ignore_ascii_case(b"PING") {
        Op::Ping
    } else if verb.eq_ignore_ascii_case(b"PONG") {
        Op::Pong
    } else if verb.eq_ignore_ascii_case(b"+OK") {
        Op::Ok
    } else if verb.eq_ignore_ascii_case(b"-ERR") {
        Op::Err(rest)
    } else if verb.eq_ignore_ascii_case(b"INFO") {
        Op::Info(rest)
    } else {
        return Err(protocol("unknown operation", line));
    };
    Ok(Some((op, after)))
}

/// A message delivered to a connection, as handed to the reader's callback (each connection
/// holds one subscription, so its id is not passed on).
pub struct Delivery<'a> {
    /// The reply subject, if any.
    pub reply: Option<&'a [u8]>,
    /// The payload.
    pub payload: &'a [u8],
}

/// One client connection: a read buffer the parser runs over and a 64 KiB buffered writer.
pub struct Conn {
    stream: TcpStream,
    out: BufWriter<TcpStream>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    pongs: u64,
    max_payload: Option<usize>,
}

impl Conn {
    /// Connects, reads the server's `INFO`, sends `CONNECT` and waits for the `PONG` to a `PING`.
    pub fn connect(addr: SocketAddr) -> Result<Conn, NatsError> {
        let stream = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT)
            .map_err(|e| NatsError::Io(io::Error::new(e.kind(), format!("{addr}: {e}"))))?;
        Conn::handshake(stream)
    }

    fn handshake(stream: TcpStream) -> Result<Conn, NatsError> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
        let out = BufWriter::with_capacity(BUFFER, stream.try_clone()?);
        let mut conn = Conn {
            stream,
            out,
            buf: vec![0; 4 * BUFFER],
            start: 0,
            end: 0,
            pongs: 0,
            max_payload: None,
        };
        loop {
            match parse(&conn.buf[conn.start..conn.end])? {
                Some((Op::Info(info), used)) => {
                    conn.max_payload = max_payload(info);
                    conn.start += used;
                    break;
                }
                Some((Op::Err(reason), _)) => {
                    return Err(NatsError::Server(String::from_utf8_lossy(reason).into_owned()));
                }
                Some((_, _)) => {
                    let line = &conn.buf[conn.start..conn.end];
                    return Err(protocol("expected INFO first", line));
                }
                None => {
                    if !conn.fill()? {
                        return Err(NatsError::Timeout("waiting for the server's INFO"));
                    }
                }
            }
        }
        conn.out.write_all(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"lang\":\"rust\",\"version\":\"ringspan-bench\"}\r\n")?;
        conn.sync(SETUP_TIMEOUT)?;
        Ok(conn)
    }

    /// Reads more bytes into the buffer: `Ok(false)` if the read timed out.
    fn fill(&mut self) -> Result<bool, NatsError> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                (self.start, self.end) = (0, self.end - self.start);
            } else {
                // One operation larger than the buffer (parse bounds it).
                let grown = self.buf.len() * 2;
                self.buf.resize(grown, 0);
            }
        }
        match self.stream.read(&mut self.buf[self.end..]) {
            Ok(0) => Err(NatsError::Closed),
            Ok(n) => {
                self.end += n;
                Ok(true)
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Sets how long one read waits.
    pub fn set_read_timeout(&self, timeout: Duration) -> Result<(), NatsError> {
        Ok(self.stream.set_read_timeout(Some(timeout))?)
    }

    /// Reads once (waiting at most the read timeout) and handles every complete operation:
    /// messages go to `on_msg` (which may write to the connection), `PING` is answered, `-ERR`
    /// ends with an error. Flushes what was written. `Ok(false)` if the read timed out.
    pub fn read_some(
        &mut self,
        on_msg: &mut dyn FnMut(Delivery<'_>, &mut BufWriter<TcpStream>) -> io::Result<()>,
    ) -> Result<bool, NatsError> {
        let got = self.fill()?;
        while let Some((op, used)) = parse(&self.buf[self.start..self.end])? {
            match op {
                Op::Msg { reply, payload, .. } => {
                    on_msg(Delivery { reply, payload }, &mut self.out)?;
                }
                Op::Ping => self.out.write_all(b"PONG\r\n")?,
                Op::Pong => self.pongs += 1,
                Op::Ok | Op::Info(_) => {}
                Op::Err(reason) => {
                    return Err(NatsError::Server(String::from_utf8_lossy(reason).into_owned()));
                }
            }
            self.start += used;
        }
        if !self.out.buffer().is_empty() {
            self.out.flush()?;
        }
        Ok(got)
    }

    /// Sends `PING` and handles what arrives until its `PONG`; messages are dropped.
    pub fn sync(&mut self, timeout: Duration) -> Result<(), NatsError> {
        let want = self.pongs + 1;
        self.out.write_all(b"PING\r\n")?;
        self.out.flush()?;
        let deadline = clock() + timeout;
        while self.pongs < want {
            if clock() > deadline {
                return Err(NatsError::Timeout("waiting for PONG"));
            }
            self.read_some(&mut |_, _| Ok(()))?;
        }
        Ok(())
    }

    /// Fails if the server's INFO said it takes no payload of `size` bytes.
    pub fn check_payload(&self, size: usize) -> Result<(), NatsError> {
        match self.max_payload {
            Some(max) if size > max => Err(NatsError::Invalid(format!(
                "the server takes payloads of at most {max} bytes (max_payload), not {size}"
            ))),
            _ => Ok(()),
        }
    }

    /// The buffered writer, for `PUB` and `SUB` lines.
    pub fn out(&mut self) -> &mut BufWriter<TcpStream> {
        &mut self.out
    }
}

/// `max_payload` from an INFO's JSON, if it is there.
fn max_payload(info: &[u8]) -> Option<usize> {
    let key = b"\"max_payload\":";
    let at = info.windows(key.len()).position(|w| w == key)? + key.len();
    let digits: Vec<u8> = info[at..]
        .iter()
        .skip_while(|b| b.is_ascii_whitespace())
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Writes `PUB subject [reply] len\r\npayload\r\n`.
pub fn write_pub(
    out: &mut impl Write,
    subject: &[u8],
    reply: Option<&[u8]>,
    payload: &[u8],
) -> io::Result<()> {
    out.write_all(b"PUB ")?;
    out.write_all(subject)?;
    if let Some(reply) = reply {
        out.write_all(b" ")?;
        out.write_all(reply)?;
    }
    write!(out, " {}\r\n", payload.len())?;
    out.write_all(payload)?;
    out.write_all(b"\r\n")
}

/// A subject no other run uses: the process id and a counter.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("{prefix}.{}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// What a one-way run delivered.
#[derive(Clone, Debug)]
pub struct OneWay {
    /// Messages published.
    pub sent: u64,
    /// Messages of the measured size the subscriber received.
    pub received: u64,
    /// From the subscriber's first read holding a measured message to its last.
    pub window: Duration,
    /// Messages received within the window, i.e. after that first read.
    pub in_window: u64,
}

impl OneWay {
    /// Messages per second delivered, over the subscriber's window.
    pub fn rate(&self) -> f64 {
        let seconds = self.window.as_secs_f64();
        if seconds > 0.0 { self.in_window as f64 / seconds } else { 0.0 }
    }
}

/// Publishes `size`-byte messages to `publish` for `duration` as fast as a 64 KiB buffered
/// writer goes, and counts them on a subscriber connected to `subscribe`. Before measuring, the
/// publisher sends empty messages until one reaches the subscriber, so the subscription has
/// propagated (to a leaf node, say).
pub fn one_way(
    publish: SocketAddr,
    subscribe: SocketAddr,
    size: usize,
    duration: Duration,
) -> Result<OneWay, NatsError> {
    if size == 0 {
        return Err(NatsError::Protocol(
            "--size must be at least 1 (empty messages warm up)".into(),
        ));
    }
    let subject = unique("ringspan.bench.oneway");
    let mut sub = Conn::connect(subscribe)?;
    write!(sub.out(), "SUB {subject} 1\r\n")?;
    sub.sync(SETUP_TIMEOUT)?;
    sub.set_read_timeout(Duration::from_millis(50))?;

    let warm = Arc::new(AtomicBool::new(false));
    // Messages published, once the publisher is done (u64::MAX until then).
    let sent = Arc::new(AtomicU64::new(u64::MAX));
    let failed = Arc::new(AtomicBool::new(false));
    let (sub_warm, sub_sent, sub_failed) = (warm.clone(), sent.clone(), failed.clone());
    let subscriber = thread::spawn(move || -> Result<OneWay, NatsError> {
        let mut received = 0u64;
        let (mut first, mut last) = (None, None);
        let mut at_first = 0;
        let mut idle_since = clock();
        let mut done = None;
        loop {
            let before = received;
            let mut warmups = 0u64;
            let result = sub.read_some(&mut |m, _| {
                if m.payload.len() == size {
                    received += 1;
                } else {
                    warmups += 1;
                }
                Ok(())
            });
            if let Err(e) = result {
                sub_failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
            let now = clock();
            if warmups > 0 {
                sub_warm.store(true, Ordering::Relaxed);
            }
            if received > before {
                if first.is_none() {
                    (first, at_first) = (Some(now), received);
                }
                last = Some(now);
                idle_since = now;
            }
            let target = sub_sent.load(Ordering::Relaxed);
            if received >= target {
                break;
            }
            if target != u64::MAX {
                // The publisher is done: wait for what is in flight, then count the rest lost.
                let since = *done.get_or_insert(now);
                if now.duration_since(since.max(idle_since)) > DRAIN_IDLE {
                    break;
                }
            }
        }
        let window = match (first, last) {
            (Some(first), Some(last)) => last.duration_since(first),
            _ => Duration::ZERO,
        };
        let sent = sub_sent.load(Ordering::Relaxed);
        Ok(OneWay { sent, received, window, in_window: received - at_first })
    });

    let publisher = thread::spawn(move || -> Result<u64, NatsError> {
        let mut conn = Conn::connect(publish)?;
        if let Err(e) = conn.check_payload(size) {
            failed.store(true, Ordering::Relaxed);
            return Err(e);
        }
        let deadline = clock() + SETUP_TIMEOUT;
        while !warm.load(Ordering::Relaxed) {
            if failed.load(Ordering::Relaxed) {
                return Ok(0);
            }
            if clock() > deadline {
                return Err(NatsError::Timeout("waiting for the subscription to propagate"));
            }
            write_pub(conn.out(), subject.as_bytes(), None, &[])?;
            conn.out().flush()?;
            thread::sleep(Duration::from_millis(10));
        }
        let mut message = Vec::with_capacity(size + subject.len() + 32);
        write_pub(&mut message, subject.as_bytes(), None, &vec![0x5a; size])?;
        let batch = (BUFFER / message.len()).clamp(1, 1024) as u64;
        let mut count = 0u64;
        let start = clock();
        while clock().duration_since(start) < duration {
            for _ in 0..batch {
                conn.out().write_all(&message)?;
            }
            count += batch;
        }
        conn.out().flush()?;
        conn.sync(Duration::from_secs(120))?;
        Ok(count)
    });
    let published = publisher.join().map_err(|_| NatsError::Protocol("publisher panicked".into()));
    match published {
        Ok(Ok(count)) => sent.store(count, Ordering::Relaxed),
        Ok(Err(e)) | Err(e) => {
            sent.store(0, Ordering::Relaxed);
            let _ = subscriber.join();
            return Err(e);
        }
    }
    let result =
        subscriber.join().map_err(|_| NatsError::Protocol("subscriber panicked".into()))?;
    let result = result?;
    if result.received == 0 {
        return Err(NatsError::Timeout("no measured message reached the subscriber"));
    }
    Ok(result)
}

/// Request-reply round trips of `size`-byte payloads, one at a time, for `duration`: the
/// requester on `request`, the responder on `respond`. Returns every round trip in nanoseconds,
/// sorted.
pub fn round_trips(
    request: SocketAddr,
    respond: SocketAddr,
    size: usize,
    duration: Duration,
) -> Result<Vec<u64>, NatsError> {
    if size < 8 {
        return Err(NatsError::Invalid("--size must be at least 8 (a sequence number)".into()));
    }
    let service = unique("ringspan.bench.rr");
    let mut responder = Conn::connect(respond)?;
    write!(responder.out(), "SUB {service} 1\r\n")?;
    responder.sync(SETUP_TIMEOUT)?;
    responder.set_read_timeout(Duration::from_millis(50))?;
    let stop = Arc::new(AtomicBool::new(false));
    let responder_stop = stop.clone();
    let responder = thread::spawn(move || -> Result<u64, NatsError> {
        let mut answered = 0u64;
        while !responder_stop.load(Ordering::Relaxed) {
            responder.read_some(&mut |m, out| {
                if let Some(reply) = m.reply {
                    write_pub(out, reply, None, m.payload)?;
                    answered += 1;
                }
                Ok(())
            })?;
        }
        Ok(answered)
    });

    let result = (|| -> Result<Vec<u64>, NatsError> {
        let inbox = unique("_INBOX.ringspan");
        let mut conn = Conn::connect(request)?;
        conn.check_payload(size)?;
        write!(conn.out(), "SUB {inbox} 1\r\n")?;
        conn.sync(SETUP_TIMEOUT)?;
        let mut payload = vec![0x5a; size];
        let mut seq = 0u64;
        // One request, answered within `patience`, or None.
        let mut ask = |conn: &mut Conn, patience: Duration| -> Result<Option<u64>, NatsError> {
            seq += 1;
            payload[..8].copy_from_slice(&seq.to_le_bytes());
            let sent = clock();
            write_pub(conn.out(), service.as_bytes(), Some(inbox.as_bytes()), &payload)?;
            conn.out().flush()?;
            let mut answered = false;
            loop {
                conn.read_some(&mut |m, _| {
                    answered |= m.payload.get(..8) == Some(&seq.to_le_bytes()[..]);
                    Ok(())
                })?;
                let now = clock();
                if answered {
                    return Ok(Some(now.duration_since(sent).as_nanos() as u64));
                }
                if now.duration_since(sent) > patience {
                    return Ok(None);
                }
            }
        };
        // Warm up until the responder's and the inbox's interest have propagated.
        conn.set_read_timeout(Duration::from_millis(20))?;
        let deadline = clock() + SETUP_TIMEOUT;
        while ask(&mut conn, Duration::from_millis(200))?.is_none() {
            if clock() > deadline {
                return Err(NatsError::Timeout("waiting for the first reply"));
            }
        }
        conn.set_read_timeout(Duration::from_secs(1))?;
        for _ in 0..200 {
            ask(&mut conn, SETUP_TIMEOUT)?.ok_or(NatsError::Timeout("waiting for a reply"))?;
        }
        let mut samples = Vec::with_capacity(1 << 16);
        let start = clock();
        while clock().duration_since(start) < duration {
            let rtt =
                ask(&mut conn, SETUP_TIMEOUT)?.ok_or(NatsError::Timeout("waiting for a reply"))?;
            samples.push(rtt.max(1));
        }
        samples.sort_unstable();
        Ok(samples)
    })();
    stop.store(true, Ordering::Relaxed);
    let answered = responder.join().map_err(|_| NatsError::Protocol("responder panicked".into()));
    let samples = result?;
    answered??;
    Ok(samples)
}

/// What a bulk run delivered.
#[derive(Clone, Debug)]
pub struct Bulk {
    /// Bytes received.
    pub bytes: u64,
    /// From the first byte received to the end of the stream.
    pub window: Duration,
}

/// One TCP stream of `size`-byte writes for `duration`: a receiver listens on `listen` and
/// reads up to 256 KiB (or `size`) at a time, a sender connects to `connect` (a relay in front
/// of `listen`; `listen` itself if None), retrying for a few seconds while the relay starts.
pub fn bulk(
    listen: SocketAddr,
    connect: Option<SocketAddr>,
    size: usize,
    duration: Duration,
) -> Result<Bulk, NatsError> {
    if size == 0 {
        return Err(NatsError::Invalid("--size must be at least 1".into()));
    }
    let listener = TcpListener::bind(listen)?;
    let target = connect.unwrap_or(listener.local_addr()?);
    listener.set_nonblocking(true)?;
    let receiver = thread::spawn(move || -> Result<Bulk, NatsError> {
        let deadline = clock() + SETUP_TIMEOUT;
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if clock() > deadline {
                        return Err(NatsError::Timeout("waiting for the sender"));
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(SETUP_TIMEOUT))?;
        let mut buf = vec![0u8; size.max(4 * BUFFER)];
        let mut bytes = 0u64;
        let mut first = None;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    first.get_or_insert_with(clock);
                    bytes += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let window = first.map_or(Duration::ZERO, |first| clock().duration_since(first));
        Ok(Bulk { bytes, window })
    });
    let sent = (|| -> Result<(), NatsError> {
        let deadline = clock() + SETUP_TIMEOUT;
        let mut stream = loop {
            match TcpStream::connect(target) {
                Ok(stream) => break stream,
                Err(_) if clock() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.into()),
            }
        };
        let chunk = vec![0x5au8; size];
        let start = clock();
        while clock().duration_since(start) < duration {
            stream.write_all(&chunk)?;
        }
        stream.shutdown(Shutdown::Write)?;
        Ok(())
    })();
    let received = receiver.join().map_err(|_| NatsError::Protocol("receiver panicked".into()))?;
    sent?;
    received
}

/// What `ringspan-bench nats` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// [`one_way`].
    OneWay,
    /// [`round_trips`].
    RoundTrip,
    /// Plain TCP ping-pong ([`super::direct::round_trips`]), no server.
    TcpRoundTrip,
    /// [`bulk`].
    Bulk,
}

impl std::str::FromStr for Test {
    type Err = String;
    fn from_str(text: &str) -> Result<Test, String> {
        match text {
            "one-way" => Ok(Test::OneWay),
            "rtt" => Ok(Test::RoundTrip),
            "tcp-rtt" => Ok(Test::TcpRoundTrip),
            "bulk" => Ok(Test::Bulk),
            _ => Err(format!("unknown test {text:?}: one-way, rtt, tcp-rtt or bulk")),
        }
    }
}

/// Options of one `ringspan-bench nats` run.
#[derive(Clone, Debug)]
pub struct Options {
    /// What to measure.
    pub test: Test,
    /// The publisher's / requester's server (bulk: where the sender connects).
    pub server: Option<SocketAddr>,
    /// The subscriber's / responder's server; default: `server`.
    pub to: Option<SocketAddr>,
    /// Where the bulk receiver listens.
    pub listen: Option<SocketAddr>,
    /// Payload or write size in bytes.
    pub size: usize,
    /// How long to measure.
    pub duration: Duration,
}

/// Runs one measurement; returns one line of `key=value` fields.
pub fn run(options: &Options) -> Result<String, String> {
    let nats_default: SocketAddr = ([127, 0, 0, 1], 4222).into();
    let server = options.server.unwrap_or(nats_default);
    let to = options.to.unwrap_or(server);
    let (size, duration) = (options.size, options.duration);
    let mut line = String::new();
    let rtt_fields = |line: &mut String, sorted: &[u64]| {
        let us = |q| percentile(sorted, q) as f64 / 1e3;
        let _ = write!(
            line,
            "samples={} p50_us={:.1} p99_us={:.1} p999_us={:.1}",
            sorted.len(),
            us(0.5),
            us(0.99),
            us(0.999)
        );
    };
    match options.test {
        Test::OneWay => {
            let r = one_way(server, to, size, duration).map_err(|e| e.to_string())?;
            let _ = write!(
                line,
                "sent={} received={} seconds={:.3} msgs_per_sec={:.0}",
                r.sent,
                r.received,
                r.window.as_secs_f64(),
                r.rate()
            );
        }
        Test::RoundTrip => {
            let sorted = round_trips(server, to, size, duration).map_err(|e| e.to_string())?;
            rtt_fields(&mut line, &sorted);
        }
        Test::TcpRoundTrip => {
            let histogram = super::direct::round_trips(size, duration, (0, 1))
                .map_err(|e| format!("plain TCP round trips: {e}"))?;
            let us = |q| histogram.value_at_quantile(q) as f64 / 1e3;
            let _ = write!(
                line,
                "samples={} p50_us={:.1} p99_us={:.1} p999_us={:.1}",
                histogram.len(),
                us(0.5),
                us(0.99),
                us(0.999)
            );
        }
        Test::Bulk => {
            let listen = options.listen.unwrap_or(([127, 0, 0, 1], 0).into());
            let r = bulk(listen, options.server, size, duration).map_err(|e| e.to_string())?;
            let seconds = r.window.as_secs_f64();
            let rate = if seconds > 0.0 { r.bytes as f64 / seconds / 1e9 } else { 0.0 };
            let _ = write!(line, "bytes={} seconds={seconds:.3} gb_per_sec={rate:.3}", r.bytes);
        }
    }
    Ok(line)
}

/// Options of `ringspan-bench nats`.
#[derive(clap::Args)]
pub struct NatsArgs {
    /// What to measure: one-way, rtt (request-reply through NATS), tcp-rtt (plain TCP
    /// ping-pong, no server) or bulk (one TCP stream of --size writes).
    test: Test,
    /// The publisher's / requester's NATS server (default 127.0.0.1:4222); for bulk, where the
    /// sender connects (a relay in front of --listen; default --listen itself).
    #[arg(long)]
    server: Option<SocketAddr>,
    /// The subscriber's / responder's NATS server (default: --server).
    #[arg(long)]
    to: Option<SocketAddr>,
    /// bulk: where the receiver listens (default: any loopback port).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Payload bytes (bulk: bytes per write).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds to measure.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
}

/// Runs `ringspan-bench nats`: one measurement, printed as one line of `key=value` fields.
pub fn command(a: NatsArgs) -> Result<(), String> {
    if !(a.seconds.is_finite() && a.seconds > 0.0) {
        return Err("--seconds must be a positive number".into());
    }
    let options = Options {
        test: a.test,
        server: a.server,
        to: a.to,
        listen: a.listen,
        size: a.size,
        duration: Duration::from_secs_f64(a.seconds),
    };
    println!("{}", run(&options)?);
    Ok(())
}

#[allow(clippy::disallowed_methods)] // a benchmark reads the clock by design
fn clock() -> Instant {
    Instant::now()
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::sync::Mutex;

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
}
