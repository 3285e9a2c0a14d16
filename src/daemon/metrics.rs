//! The metrics endpoint (Prometheus text format over HTTP), re-exported from
//! [`control`](super::control).
//!
//! [`serve_metrics`] answers `GET /metrics` (Prometheus text format) and `GET /healthz` (`ok`)
//! in HTTP/1.0 with `Connection: close`, each connection on a short-lived thread of its own, at
//! most [`METRICS_CONNECTIONS_MAX`] at once (one more is answered `503` at once and closed).
//! A connection has [`METRICS_TIMEOUT_MS`] to send a request of at most
//! [`METRICS_REQUEST_MAX_BYTES`]; a slow, idle or oversized one never delays another.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::Shared;
use super::control::ACCEPT_RETRY_MS;
use super::render::{process_series, prometheus};

/// Metrics connections served at once. Each holds a thread for at most [`METRICS_TIMEOUT_MS`]
/// while it sends its request, so a few Prometheus servers and health checkers fit with room
/// to spare, and a local flood of connections starts at most this many threads.
pub const METRICS_CONNECTIONS_MAX: usize = 16;

/// Bytes of a metrics request, its line and headers: Prometheus sends a few hundred.
pub const METRICS_REQUEST_MAX_BYTES: usize = 8 * 1024;

/// How long a metrics connection may take to send its request, and how long one write of the
/// answer may block.
pub const METRICS_TIMEOUT_MS: u64 = 5_000;

/// Bytes read and thrown away after an answer, until the client closes, so that closing does
/// not reset a connection whose client sent more than its request.
const LINGER_MAX_BYTES: usize = 64 * 1024;

#[allow(clippy::disallowed_methods)] // the operator's surfaces run outside the protocol layers
fn now() -> Instant {
    Instant::now()
}

/// How the metrics endpoint bounds its clients. [`serve_metrics`] uses the default:
/// [`METRICS_CONNECTIONS_MAX`], [`METRICS_TIMEOUT_MS`], [`METRICS_REQUEST_MAX_BYTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsLimits {
    /// Connections served at once; one more is answered `503 Service Unavailable` and closed.
    pub connections_max: usize,
    /// How long a connection may take to send its request (then it is answered
    /// `408 Request Timeout`), and how long one write of an answer may block.
    pub timeout: Duration,
    /// Bytes of a request, its line and headers; a longer one is answered
    /// `431 Request Header Fields Too Large`.
    pub request_max_bytes: usize,
}

impl Default for MetricsLimits {
    fn default() -> MetricsLimits {
        MetricsLimits {
            connections_max: METRICS_CONNECTIONS_MAX,
            timeout: Duration::from_millis(METRICS_TIMEOUT_MS),
            request_max_bytes: METRICS_REQUEST_MAX_BYTES,
        }
    }
}

/// Serves `GET /metrics` (Prometheus text format) and `GET /healthz` at `addr` on a thread of
/// its own, within the default [`MetricsLimits`]. Returns the address bound (with the real port
/// if 0 was asked for).
pub fn serve_metrics(addr: SocketAddr, shared: Arc<Shared>) -> io::Result<SocketAddr> {
    serve_metrics_with(addr, shared, MetricsLimits::default())
}

/// [`serve_metrics`] within `limits`.
///
/// Answers, in HTTP/1.0 with `Content-Length` and `Connection: close`: `GET /metrics` → `200`
/// and the Prometheus text; `GET /healthz` → `200` and `ok`; another path → `404`; another
/// method on one of these paths → `405`; a request that does not parse → `400`; one longer than
/// `request_max_bytes` → `431`; one not sent within `timeout` → `408`; a connection past
/// `connections_max` → `503` at once.
pub fn serve_metrics_with(
    addr: SocketAddr,
    shared: Arc<Shared>,
    limits: MetricsLimits,
) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let open = Arc::new(AtomicUsize::new(0));
    std::thread::Builder::new().name("ringspan-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let stream = match stream {
                Ok(stream) => stream,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(ACCEPT_RETRY_MS));
                    continue;
                }
            };
            let Some(slot) = Slot::take(&open, limits.connections_max) else {
                refuse_busy(stream);
                continue;
            };
            let shared = shared.clone();
            // A thread that cannot start drops the connection unanswered, and frees its slot.
            let _ = std::thread::Builder::new().name("ringspan-scrape".into()).spawn(move || {
                let _slot = slot;
                serve_http(stream, &shared, &limits);
            });
        }
    })?;
    Ok(local)
}

/// One of the metrics endpoint's connections served at once; freed when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a metrics request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Metrics,
    Health,
}

/// The statuses the metrics endpoint answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    RequestTimeout,
    TooLarge,
    Busy,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::RequestTimeout => "408 Request Timeout",
            Status::TooLarge => "431 Request Header Fields Too Large",
            Status::Busy => "503 Service Unavailable",
        }
    }

    /// An error's answer: its status line as the body.
    fn answer(self) -> Vec<u8> {
        response(self, "text/plain; charset=utf-8", &format!("{}\n", self.line()))
    }
}

fn response(status: Status, content_type: &str, body: &str) -> Vec<u8> {
    let allow = if status == Status::MethodNotAllowed { "Allow: GET\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.0 {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{allow}\r\n",
        status.line(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Answers `503` on a connection past the bound, without ever blocking the accept loop: one
/// write into the new connection's empty send buffer.
fn refuse_busy(mut stream: TcpStream) {
    let _ = stream.set_nonblocking(true);
    let _ = stream.write(&Status::Busy.answer());
    let _ = stream.shutdown(Shutdown::Write);
    // What the client sent already, read so that closing sends a FIN rather than a reset.
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

fn serve_http(mut stream: TcpStream, shared: &Shared, limits: &MetricsLimits) {
    let _ = stream.set_write_timeout(Some(limits.timeout));
    let deadline = now() + limits.timeout;
    let status = match read_head(&mut stream, deadline, limits.request_max_bytes) {
        Ok(head) => parse_request(&head),
        Err(HeadError::Closed) => return,
        Err(HeadError::TimedOut) => Err(Status::RequestTimeout),
        Err(HeadError::TooLarge) => Err(Status::TooLarge),
        Err(HeadError::Incomplete) => Err(Status::BadRequest),
    };
    let answer = match status {
        Ok(Target::Metrics) => response(
            Status::Ok,
            "text/plain; version=0.0.4; charset=utf-8",
            &(prometheus(&shared.snapshot()) + &process_series()),
        ),
        Ok(Target::Health) => response(Status::Ok, "text/plain; charset=utf-8", "ok\n"),
        Err(status) => status.answer(),
    };
    if stream.write_all(&answer).is_err() || stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    // Until the client closes (it has its whole answer), within the timeout and a byte bound.
    let deadline = now() + limits.timeout;
    let mut sink = [0u8; 1024];
    let mut drained = 0;
    while drained < LINGER_MAX_BYTES {
        let left = deadline.saturating_duration_since(now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

/// Why no request head was read.
#[derive(Debug)]
enum HeadError {
    /// The client closed (or failed) before sending anything.
    Closed,
    /// The client closed in the middle of its request.
    Incomplete,
    /// Not whole within the timeout.
    TimedOut,
    /// No end of headers within the byte bound.
    TooLarge,
}

/// Reads a request's line and headers, up to the empty line that ends them (which is not
/// returned), by `deadline` and within `max` bytes.
fn read_head(stream: &mut TcpStream, deadline: Instant, max: usize) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(max.min(1024));
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Err(HeadError::TimedOut);
        }
        let room = chunk.len().min(max - head.len());
        match stream.read(&mut chunk[..room]) {
            Ok(0) if head.is_empty() => return Err(HeadError::Closed),
            Ok(0) => return Err(HeadError::Incomplete),
            Ok(n) => {
                head.extend_from_slice(&chunk[..n]);
                if let Some(end) = end_of_head(&head) {
                    head.truncate(end);
                    return Ok(head);
                }
                if head.len() >= max {
                    return Err(HeadError::TooLarge);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut);
            }
            Err(_) if head.is_empty() => return Err(HeadError::Closed),
            Err(_) => return Err(HeadError::Incomplete),
        }
    }
}

/// Where the empty line ending a request's headers starts: the first `\r\n\r\n` or `\n\n`.
fn end_of_head(head: &[u8]) -> Option<usize> {
    let crlf = head.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = head.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parses a request's line and headers (RFC 9112, minimally): `METHOD SP TARGET SP VERSION`,
/// the method a token, the target an absolute path, the version HTTP/1.0 or 1.1, then
/// `name: value` lines. The path names what is asked; only `GET` is allowed.
fn parse_request(head: &[u8]) -> Result<Target, Status> {
    let text = std::str::from_utf8(head).map_err(|_| Status::BadRequest)?;
    let mut lines = text.split('\n').map(|line| line.strip_suffix('\r').unwrap_or(line));
    let line = lines.next().unwrap_or_default();
    if !line.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
        return Err(Status::BadRequest);
    }
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Status::BadRequest);
    };
    if !is_token(method) || !target.starts_with('/') || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
    {
        return Err(Status::BadRequest);
    }
    for header in lines {
        let Some((name, value)) = header.split_once(':') else {
            return Err(Status::BadRequest);
        };
        if !is_token(name) || value.chars().any(|c| c != '\t' && c.is_control()) {
            return Err(Status::BadRequest);
        }
    }
    let path = target.split_once('?').map_or(target, |(path, _query)| path);
    let asked = match path {
        "/metrics" => Target::Metrics,
        "/healthz" => Target::Health,
        _ => return Err(Status::NotFound),
    };
    if method != "GET" {
        return Err(Status::MethodNotAllowed);
    }
    Ok(asked)
}

/// An HTTP token (RFC 9110 5.6.2): a method or a header name.
fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_minimally_and_strictly() {
        let parse = |head: &str| parse_request(head.as_bytes());
        assert_eq!(parse("GET /metrics HTTP/1.1\r\nHost: a:1\r\nAccept: */*"), Ok(Target::Metrics));
        assert_eq!(parse("GET /metrics?name[]=x HTTP/1.0"), Ok(Target::Metrics));
        assert_eq!(parse("GET /healthz HTTP/1.0\nUser-Agent:\tcurl"), Ok(Target::Health));
        assert_eq!(parse("GET / HTTP/1.1"), Err(Status::NotFound));
        assert_eq!(parse("GET /metrics/ HTTP/1.1"), Err(Status::NotFound));
        assert_eq!(parse("POST /metrics HTTP/1.1"), Err(Status::MethodNotAllowed));
        assert_eq!(parse("get /healthz HTTP/1.1"), Err(Status::MethodNotAllowed));
        for bad in [
            "",
            "GET",
            "GET /metrics",
            "GET  /metrics HTTP/1.1",
            "GET /metrics HTTP/1.1 ",
            "GET metrics HTTP/1.1",
            "GET http://a/metrics HTTP/1.1",
            "GET /metrics HTTP/2.0",
            "GET /metrics http/1.1",
            "G(T /metrics HTTP/1.1",
            "GET /met\u{1b}rics HTTP/1.1",
            "GET /m\u{e9}trics HTTP/1.1",
            "GET /metrics HTTP/1.1\r\nno colon",
            "GET /metrics HTTP/1.1\r\n folded: header",
            "GET /metrics HTTP/1.1\r\nX: a\u{7}b",
        ] {
            assert_eq!(parse(bad), Err(Status::BadRequest), "{bad:?}");
        }
        assert_eq!(parse_request(b"GET /metrics HTTP/1.1\r\nX: \xff"), Err(Status::BadRequest));
    }

    #[test]
    fn the_head_ends_at_the_first_empty_line() {
        assert_eq!(end_of_head(b"GET / HTTP/1.0\r\n\r\nbody"), Some(14));
        assert_eq!(end_of_head(b"GET / HTTP/1.0\n\n"), Some(14));
        assert_eq!(end_of_head(b"GET / HTTP/1.0\r\nA: b\r\n"), None);
    }
}
