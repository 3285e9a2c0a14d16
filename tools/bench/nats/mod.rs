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
//! The client protocol (the parser and one connection) is in [`proto`].

use crate::percentile;
use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

mod proto;

use proto::{Conn, NatsError, write_pub};

/// Buffered writer size of every connection.
const BUFFER: usize = 64 * 1024;
/// How long a connection waits for the server during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the subscriber waits, once the publisher is done, for messages still in flight.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

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
mod tests;
