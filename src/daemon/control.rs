//! The operator's surfaces: the control socket (`ringspan show`), the metrics endpoint
//! (Prometheus text format over HTTP), and the views of a [`Snapshot`] they print.
//!
//! # Control socket
//!
//! A client connects to the node's Unix socket and writes one line, `snapshot`; the node
//! answers with its [`Snapshot`] as one JSON document and closes. The socket file is created
//! mode 0600: only the node's user may ask. One node per socket: [`serve_control`] refuses a
//! path where something answers and a path that holds anything but a socket, replaces a stale
//! socket (its process is gone: a connection to it is refused), and returns a [`ControlSocket`]
//! that removes the file when the node stops, only if it is still the file it created.
//!
//! # Metrics endpoint
//!
//! [`serve_metrics`] answers `GET /metrics` (Prometheus text format) and `GET /healthz` (`ok`)
//! in HTTP/1.0 with `Connection: close`, each connection on a short-lived thread of its own, at
//! most [`METRICS_CONNECTIONS_MAX`] at once (one more is answered `503` at once and closed).
//! A connection has [`METRICS_TIMEOUT_MS`] to send a request of at most
//! [`METRICS_REQUEST_MAX_BYTES`]; a slow, idle or oversized one never delays another.
//!
//! # What peers write reaches the operator escaped
//!
//! Mount labels are chosen by peers (64 arbitrary bytes in a span advertisement). Every string
//! of a snapshot passes through [`printable`] before it reaches a terminal ([`render`]) or a
//! Graphviz file ([`dot`]), through the exposition format's escaping in [`prometheus`], and the
//! control socket's JSON carries no raw control or invisible character either (they are sent as
//! `\u` escapes, so `ringspan show --json` prints them as such).

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, BufRead as _, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use socket2::{Domain, SockAddr, SockRef, Socket, Type};

use super::{Shared, Snapshot};

/// Metrics connections served at once. Each holds a thread for at most [`METRICS_TIMEOUT_MS`]
/// while it sends its request, so a few Prometheus servers and health checkers fit with room
/// to spare, and a local flood of connections starts at most this many threads.
pub const METRICS_CONNECTIONS_MAX: usize = 16;

/// Bytes of a metrics request, its line and headers: Prometheus sends a few hundred.
pub const METRICS_REQUEST_MAX_BYTES: usize = 8 * 1024;

/// How long a metrics connection may take to send its request, and how long one write of the
/// answer may block.
pub const METRICS_TIMEOUT_MS: u64 = 5_000;

/// Bytes of a control request: `snapshot` and a newline, with room.
const CONTROL_REQUEST_MAX_BYTES: u64 = 64;

/// How long a control client may take to send its request, and one write of the answer may
/// block. The control socket serves one client at a time (only the node's user can connect).
const CONTROL_TIMEOUT_MS: u64 = 2_000;

/// The pause after a failed accept (no descriptor left, say), so that the loop does not spin.
const ACCEPT_RETRY_MS: u64 = 10;

/// Bytes read and thrown away after an answer, until the client closes, so that closing does
/// not reset a connection whose client sent more than its request.
const LINGER_MAX_BYTES: usize = 64 * 1024;

#[allow(clippy::disallowed_methods)] // the operator's surfaces run outside the protocol layers
fn now() -> Instant {
    Instant::now()
}

/// Serves the control socket at `path` on a thread of its own, until the returned
/// [`ControlSocket`] is dropped or closed: keep it for as long as the node runs.
///
/// If `path` exists: a socket something answers on (another node, or this one) is refused
/// (`AddrInUse`, "another node is running with control socket PATH") and left alone; a socket
/// whose connections are refused (its process is gone) is replaced; anything else (a file, a
/// directory, a symbolic link) is refused (`AlreadyExists`) and left alone.
pub fn serve_control(path: &Path, shared: Arc<Shared>) -> io::Result<ControlSocket> {
    claim(path)?;
    let listener = UnixListener::bind(path).map_err(|e| match e.kind() {
        // Another node bound it between our look and our bind.
        io::ErrorKind::AddrInUse => another_node(path),
        _ => e,
    })?;
    let file = FileId::of(&std::fs::symlink_metadata(path)?);
    let wake = match listener.try_clone() {
        Ok(wake) => wake,
        Err(e) => {
            remove_if(path, file);
            return Err(e);
        }
    };
    let socket = ControlSocket {
        path: path.to_path_buf(),
        file,
        stop: Arc::new(AtomicBool::new(false)),
        wake: Some(wake),
    };
    // From here an error drops `socket`, which removes the file.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    let stop = socket.stop.clone();
    std::thread::Builder::new()
        .name("ringspan-control".into())
        .spawn(move || control_loop(&listener, &shared, &stop))?;
    Ok(socket)
}

/// A node's control socket, from [`serve_control`]. Dropping it (or [`ControlSocket::close`])
/// stops serving and removes the socket file, if the file at the path is still the one
/// [`serve_control`] created (same device, inode and, where the file system records it, birth
/// time): a node that stops never removes another node's socket.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    file: FileId,
    stop: Arc<AtomicBool>,
    /// A second handle on the listener, to wake its thread; `None` once closed.
    wake: Option<UnixListener>,
}

impl ControlSocket {
    /// Where it is served.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops serving and removes the socket file if it is still ours. Returns whether it
    /// removed it.
    pub fn close(mut self) -> bool {
        self.release()
    }

    fn release(&mut self) -> bool {
        let Some(wake) = self.wake.take() else { return false };
        self.stop.store(true, Ordering::Release);
        // A listener shut down for reading fails its blocked accept at once (Linux: EINVAL),
        // and the thread, seeing `stop`, ends.
        let _ = SockRef::from(&wake).shutdown(Shutdown::Both);
        remove_if(&self.path, self.file)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.release();
    }
}

/// Which file a path names: what tells our socket file from another created at the same path
/// since. The birth time guards against a file system that reuses a freed inode number at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
    born: Option<SystemTime>,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> FileId {
        FileId { dev: meta.dev(), ino: meta.ino(), born: meta.created().ok() }
    }
}

/// Removes the file at `path` if it is `file`; says whether it did. (Between the look and the
/// removal another process could replace the file: a window of two system calls.)
fn remove_if(path: &Path, file: FileId) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if FileId::of(&meta) == file => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

fn another_node(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("another node is running with control socket {}", path.display()),
    )
}

/// Makes `path` free to bind, or says why it is not: see [`serve_control`].
fn claim(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; not replacing it", path.display()),
        ));
    }
    // Non-blocking, so that a live node with a full backlog answers "busy" (EAGAIN) instead of
    // keeping us waiting.
    let probe = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    probe.set_nonblocking(true)?;
    match probe.connect(&SockAddr::unix(path)?) {
        Ok(()) => Err(another_node(path)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(another_node(path)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Err(another_node(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Stale. Remove the file we probed, not one another node has bound since.
            if remove_if(path, FileId::of(&meta)) || !path.exists() {
                Ok(())
            } else {
                Err(another_node(path))
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether a node is running with control socket {}: {e}; not \
                 replacing it",
                path.display()
            ),
        )),
    }
}

fn control_loop(listener: &UnixListener, shared: &Shared, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        match stream {
            Ok(stream) => answer_control(stream, shared),
            Err(_) => std::thread::sleep(Duration::from_millis(ACCEPT_RETRY_MS)),
        }
    }
}

fn answer_control(mut stream: UnixStream, shared: &Shared) {
    let timeout = Some(Duration::from_millis(CONTROL_TIMEOUT_MS));
    let _ = stream.set_read_timeout(timeout);
    let _ = stream.set_write_timeout(timeout);
    let mut line = Vec::new();
    let read =
        BufReader::new((&stream).take(CONTROL_REQUEST_MAX_BYTES)).read_until(b'\n', &mut line);
    // Nothing asked (a node probing whether this one is alive, say): nothing to answer.
    if read.is_err() || line.is_empty() {
        return;
    }
    let request = String::from_utf8_lossy(&line);
    let answer = match request.trim() {
        "snapshot" => serde_json::to_string(&shared.snapshot())
            .unwrap_or_else(|e| error_json(&format!("cannot encode the snapshot: {e}"))),
        other => error_json(&format!("unknown request \"{}\"", printable(other))),
    };
    let _ = stream.write_all(json_safe(&answer).as_bytes());
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Asks the node at `path` for its snapshot, as JSON text (control and invisible characters in
/// it written as `\u` escapes, so it is safe to print).
pub fn fetch(path: &Path) -> Result<String, String> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        format!(
            "cannot reach the node's control socket {}: {e} (is `ringspan run` up?)",
            path.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    stream.write_all(b"snapshot\n").map_err(|e| e.to_string())?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(json_safe(&text).into_owned())
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
            &prometheus(&shared.snapshot()),
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

/// `text` as it may be shown on a terminal: each character that is not printable written as a
/// visible escape — `\t`, `\n`, `\r`, `\xNN` for other ASCII controls and DEL, `\u{N}` for C1
/// controls, the invisible and direction-changing characters (zero-width spaces, joiners,
/// bidirectional overrides, the byte order mark, line and paragraph separators, ...) and
/// U+FFFD, which stands for bytes that were not UTF-8 — and a backslash as `\\`, so an escape
/// cannot be forged. Borrows `text` when nothing needs escaping.
pub fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || hidden(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if hidden(c) && c.is_ascii() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if hidden(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` would not be seen as itself on a terminal: a control character (C0, DEL, C1),
/// which a terminal may obey, or a character that is invisible or reorders the text around it,
/// which can make one label look like another; or U+FFFD, which stands for bytes that were not
/// UTF-8.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{ad}'                        // soft hyphen
            | '\u{34f}'                     // combining grapheme joiner
            | '\u{61c}'                     // Arabic letter mark
            | '\u{115f}' | '\u{1160}' | '\u{3164}' | '\u{ffa0}' // Hangul fillers
            | '\u{17b4}' | '\u{17b5}'       // Khmer inherent vowels
            | '\u{180b}'..='\u{180f}'       // Mongolian variation selectors and vowel separator
            | '\u{200b}'..='\u{200f}'       // zero-width space, joiners, direction marks
            | '\u{2028}'..='\u{202e}'       // line and paragraph separators, bidi embeddings
            | '\u{2060}'..='\u{206f}'       // word joiner, invisible operators, bidi isolates
            | '\u{fe00}'..='\u{fe0f}'       // variation selectors
            | '\u{feff}'                    // byte order mark
            | '\u{fff0}'..='\u{ffff}'       // specials, U+FFFD, non-characters
            | '\u{1d173}'..='\u{1d17a}'     // musical formatting
            | '\u{e0000}'..='\u{e0fff}' // tags, variation selectors supplement
        )
}

/// JSON text with every hidden character (see [`hidden`]) but the whitespace of the text's own
/// layout written as a `\u` escape. JSON has no raw control character in its strings, and
/// outside them only ASCII, so the document means the same.
fn json_safe(text: &str) -> Cow<'_, str> {
    let escaped = |c: char| hidden(c) && !matches!(c, '\n' | '\r' | '\t');
    if !text.chars().any(escaped) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if escaped(c) {
            for unit in c.encode_utf16(&mut [0; 2]) {
                let _ = write!(out, "\\u{unit:04x}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// A Prometheus label value: [`printable`] (so that the text is safe on a terminal too), then
/// `\`, `"` and line feeds escaped as the text exposition format says.
fn label_value(text: &str) -> String {
    exposition_escaped(&printable(text)).into_owned()
}

/// `\`, `"` and line feeds escaped as the text exposition format says for label values.
fn exposition_escaped(text: &str) -> Cow<'_, str> {
    if !text.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `text` inside a Graphviz string: [`printable`], then `\` and `"` escaped, so Graphviz shows
/// the escapes as they are and no quote ends the string.
fn dot_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in printable(text).chars() {
        if matches!(c, '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `text` as a quoted Graphviz string.
fn dot_string(text: &str) -> String {
    format!("\"{}\"", dot_text(text))
}

/// The snapshot in Prometheus text exposition format. Label values are [`printable`], then
/// escaped as the format says.
pub fn prometheus(s: &Snapshot) -> String {
    let mut out = String::new();
    let node = label_value(&s.node);
    let mut gauge = |name: &str, help: &str, kind: &str, rows: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP ringspan_{name} {help}\n# TYPE ringspan_{name} {kind}");
        for (labels, value) in rows {
            let _ = writeln!(out, "ringspan_{name}{{node=\"{node}\"{labels}}} {value}");
        }
    };
    gauge("circuits", "Circuits and calls open.", "gauge", &[(String::new(), s.circuits as u64)]);
    gauge(
        "links",
        "Established links to routers and satellites.",
        "gauge",
        &[(String::new(), s.links.len() as u64)],
    );
    gauge("clients", "Established client links.", "gauge", &[(String::new(), s.clients as u64)]);
    gauge("routes", "Mounts with a route.", "gauge", &[(String::new(), s.routes.len() as u64)]);
    gauge(
        "client_mounts",
        "Clients' mounts held in the client directory.",
        "gauge",
        &[(String::new(), s.client_mounts as u64)],
    );
    gauge(
        "tombstones",
        "Mounts that went away, remembered for their feasibility distance.",
        "gauge",
        &[(String::new(), s.tombstones as u64)],
    );
    let c = &s.counters;
    for (name, help, value) in [
        ("relayed_total", "Circuits relayed through this node.", c.relayed),
        ("served_total", "Calls served by local mounts.", c.served),
        ("opened_total", "Calls opened by local clients.", c.opened),
        ("no_route_total", "Transactions refused for lack of a route.", c.no_route),
        ("lost_total", "Circuit ends that lost a link.", c.lost),
        ("refused_total", "Transactions refused by policy.", c.refused),
        (
            "whole_records_total",
            "Received records forwarded whole (every message in them continued on one link).",
            c.whole_records,
        ),
        ("limited_total", "Circuits refused for a limit (a peer's share).", c.limited),
        ("preempted_total", "Circuits aborted to make room for a peer holding fewer.", c.preempted),
        ("idle_total", "Circuits aborted after carrying nothing for the idle bound.", c.idle),
        ("duplicates_total", "Second links to an already linked node, closed.", c.duplicates),
        ("handshake_failures_total", "Handshakes that failed.", s.handshake_failures),
        ("accepted_total", "Accepted connections admitted (handshakes started).", s.accepted),
        (
            "refused_max_links_total",
            "Connections from untrusted addresses reset because strangers held all the links they may.",
            s.refused_max_links,
        ),
        (
            "refused_handshake_rate_total",
            "Connections from untrusted addresses reset because max_handshakes_per_sec was used up.",
            s.refused_handshake_rate,
        ),
        (
            "trusted_accepted_total",
            "Connections from trusted addresses admitted (also in accepted_total).",
            s.trusted_accepted,
        ),
        (
            "trusted_refused_total",
            "Connections from trusted addresses reset (max_links, or both handshake buckets empty).",
            s.trusted_refused,
        ),
    ] {
        gauge(name, help, "counter", &[(String::new(), value)]);
    }
    let closes = &s.closes;
    let by_reason: Vec<(String, u64)> = [
        ("misbehaved", closes.misbehaved),
        ("peer_closed", closes.peer_closed),
        ("idle", closes.idle),
        ("not_reading", closes.not_reading),
        ("io", closes.io),
        ("local", closes.local),
    ]
    .into_iter()
    .map(|(reason, value)| (format!(",reason=\"{reason}\""), value))
    .collect();
    gauge(
        "links_closed_total",
        "Links that were up and went down, by cause.",
        "counter",
        &by_reason,
    );
    type Field = fn(&super::LinkRow) -> u64;
    let per_link: [(&str, &str, Field); 8] = [
        ("link_bytes_in_total", "Bytes received on a link.", |l| l.bytes_in),
        ("link_bytes_out_total", "Bytes sent on a link.", |l| l.bytes_out),
        ("link_records_in_total", "Records opened on a link.", |l| l.records_in),
        ("link_records_out_total", "Records sealed on a link.", |l| l.records_out),
        ("link_circuits_in_total", "Circuits the peer opened through a link.", |l| l.circuits_in),
        ("link_circuits_out_total", "Circuits opened on a link.", |l| l.circuits_out),
        ("link_aborts_in_total", "Forced closes received on a link.", |l| l.aborts_in),
        ("link_aborts_out_total", "Forced closes sent on a link.", |l| l.aborts_out),
    ];
    for (name, help, field) in per_link {
        let rows: Vec<(String, u64)> = s
            .links
            .iter()
            .map(|l| (format!(",link=\"{}\",peer=\"{}\"", l.link, label_value(&l.peer)), field(l)))
            .collect();
        gauge(name, help, "counter", &rows);
    }
    // What each link's peer was refused for its share, and the client links' in all.
    let kinds = |r: &super::Refusals| {
        [
            ("circuits_limited", r.circuits_limited),
            ("circuits_preempted", r.circuits_preempted),
            ("circuits_idle", r.circuits_idle),
            ("spans_limited", r.spans_limited),
            ("spans_refused", r.spans_refused),
            ("seqno_delayed", r.seqno_delayed),
        ]
    };
    let mut rows = Vec::new();
    for l in &s.links {
        for (kind, value) in kinds(&l.refusals) {
            let labels =
                format!(",link=\"{}\",peer=\"{}\",kind=\"{kind}\"", l.link, label_value(&l.peer));
            rows.push((labels, value));
        }
    }
    gauge(
        "link_refusals_total",
        "What a link's peer was refused or lost for exceeding its share, by kind.",
        "counter",
        &rows,
    );
    let rows: Vec<(String, u64)> = kinds(&s.client_refusals)
        .into_iter()
        .map(|(kind, value)| (format!(",kind=\"{kind}\""), value))
        .collect();
    gauge(
        "client_refusals_total",
        "What the client links were refused or lost for exceeding their shares, in all, by kind.",
        "counter",
        &rows,
    );
    out
}

/// What `ringspan show` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// Links.
    Links,
    /// Routes.
    Routes,
    /// Circuits and counters.
    Circuits,
    /// Mounts (routes grouped by origin).
    Mounts,
    /// Everything.
    All,
}

/// The snapshot as text tables, every string in it [`printable`].
pub fn render(s: &Snapshot, view: View) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "node {}", printable(&s.node));
    if matches!(view, View::Links | View::All) {
        let _ = writeln!(
            out,
            "\nLINKS\n{:>5}  {:<32}  {:<9}  {:>8}  {:>8}  {:>12}  {:>12}  {:>8}  {:>8}  {:>6}  {:>6}",
            "link",
            "peer",
            "role",
            "spans in",
            "out",
            "bytes in",
            "bytes out",
            "circ in",
            "out",
            "abort in",
            "out"
        );
        for l in &s.links {
            let _ = writeln!(
                out,
                "{:>5}  {:<32}  {:<9}  {:>8}  {:>8}  {:>12}  {:>12}  {:>8}  {:>8}  {:>6}  {:>6}",
                l.link,
                printable(&l.peer),
                printable(&l.role),
                l.spans_in,
                l.spans_out,
                l.bytes_in,
                l.bytes_out,
                l.circuits_in,
                l.circuits_out,
                l.aborts_in,
                l.aborts_out
            );
        }
        // What each peer was refused for its share; only links that were refused anything.
        let refused = |r: &super::Refusals| {
            format!(
                "circuits limited {}  preempted {}  idle {}  spans limited {}  refused {}  \
                 seqno requests delayed {}",
                r.circuits_limited,
                r.circuits_preempted,
                r.circuits_idle,
                r.spans_limited,
                r.spans_refused,
                r.seqno_delayed
            )
        };
        for l in s.links.iter().filter(|l| l.refusals != super::Refusals::default()) {
            let _ = writeln!(
                out,
                "{:>5}  granted {}: {}",
                l.link,
                printable(&l.granted),
                refused(&l.refusals)
            );
        }
        if s.clients > 0 {
            let _ = writeln!(
                out,
                "\n{} client links, {} client mounts; refused in all: {}",
                s.clients,
                s.client_mounts,
                refused(&s.client_refusals)
            );
        }
        if !s.peers.is_empty() {
            let _ = writeln!(out, "\nPEERS");
            for p in &s.peers {
                let _ = writeln!(
                    out,
                    "  {:<22} {}  {}",
                    printable(&p.address),
                    printable(&p.peer),
                    printable(&p.state)
                );
            }
        }
    }
    if matches!(view, View::Routes | View::Mounts | View::All) {
        let _ = writeln!(
            out,
            "\nROUTES\n{:<8} {:<8} {:<11} {:<16} {:>6}  {:<48}  standby",
            "cluster", "mount", "kind", "label", "metric", "via"
        );
        let mut routes: Vec<_> = s.routes.iter().collect();
        if view == View::Mounts {
            routes.sort_by(|a, b| (&a.origin, &a.mount).cmp(&(&b.origin, &b.mount)));
        }
        for r in routes {
            let _ = writeln!(
                out,
                "{:<8} {:<8} {:<11} {:<16} {:>6}  {:<48}  {}",
                printable(&r.cluster),
                printable(&r.mount),
                printable(&r.kind),
                printable(&r.label),
                r.metric,
                printable(&r.via),
                printable(r.standby.as_deref().unwrap_or("-"))
            );
        }
    }
    if matches!(view, View::Circuits | View::All) {
        let c = &s.counters;
        let _ = writeln!(
            out,
            "\nCIRCUITS\nopen {}  relayed {}  served {}  opened {}  no route {}  lost {}  handshake failures {}\n\
             records forwarded whole {}\n\
             refused for a share {}  preempted {}  idle {}  duplicate links closed {}  tombstones {}",
            s.circuits,
            c.relayed,
            c.served,
            c.opened,
            c.no_route,
            c.lost,
            s.handshake_failures,
            c.whole_records,
            c.limited,
            c.preempted,
            c.idle,
            c.duplicates,
            s.tombstones
        );
        let d = &s.closes;
        let _ = writeln!(
            out,
            "links closed: misbehaved {}  peer closed {}  idle {}  not reading {}  io {}  local {}\n\
             connections accepted {} (trusted {}), refused at accept: strangers at max_links {}  \
             handshake rate {}, trusted {}",
            d.misbehaved,
            d.peer_closed,
            d.idle,
            d.not_reading,
            d.io,
            d.local,
            s.accepted,
            s.trusted_accepted,
            s.refused_max_links,
            s.refused_handshake_rate,
            s.trusted_refused
        );
    }
    out
}

/// The topology around a node as Graphviz: the node, its links to peers, and for each mount the
/// active path (solid) and standby (dashed) first hops. Every string in it is [`printable`] and
/// quoted: a label shows its escapes, and nothing in it ends a Graphviz string.
pub fn dot(s: &Snapshot) -> String {
    let mut out = String::from("digraph ringspan {\n  rankdir=LR;\n");
    let short = |id: &str| dot_string(&id.chars().take(8).collect::<String>());
    let node = short(&s.node);
    let _ = writeln!(out, "  {node} [shape=box, style=bold];");
    for l in &s.links {
        let _ =
            writeln!(out, "  {node} -> {} [dir=none, label=\"link {}\"];", short(&l.peer), l.link);
    }
    let via_peer = |via: &str| {
        via.split_once('(').map_or_else(|| node.clone(), |(_, p)| short(p.trim_end_matches(')')))
    };
    for r in &s.routes {
        let name = format!("{}:{} ({})", r.cluster, r.mount, r.kind);
        let mount = dot_string(&name);
        if r.label.is_empty() {
            let _ = writeln!(out, "  {mount} [shape=ellipse];");
        } else {
            // `\n` here is Graphviz's line break; any in the label itself is shown escaped.
            let label = format!("{}\\n{}", dot_text(&name), dot_text(&r.label));
            let _ = writeln!(out, "  {mount} [shape=ellipse, label=\"{label}\"];");
        }
        let _ = writeln!(
            out,
            "  {} -> {mount} [label=\"active, {} hops\"];",
            via_peer(&r.via),
            r.metric
        );
        if let Some(standby) = &r.standby {
            let _ = writeln!(
                out,
                "  {} -> {mount} [style=dashed, label=\"standby\"];",
                via_peer(standby)
            );
        }
    }
    out.push_str("}\n");
    out
}

/// The default control socket path for a config file: beside it, `<stem>.sock`.
pub fn default_socket(config: &Path) -> PathBuf {
    config.with_extension("sock")
}

#[cfg(test)]
mod tests {
    use super::super::{Counters, LinkRow, PeerRow, RouteRow};
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            node: "aaaa0000".into(),
            links: vec![LinkRow {
                link: 3,
                peer: "bbbb1111".into(),
                role: "router".into(),
                spans_in: 1,
                spans_out: 2,
                bytes_in: 100,
                bytes_out: 200,
                records_in: 4,
                records_out: 5,
                circuits_in: 6,
                circuits_out: 7,
                aborts_in: 8,
                aborts_out: 9,
                granted: "router".into(),
                circuits_open: 0,
                refusals: Default::default(),
            }],
            routes: vec![RouteRow {
                cluster: "1".into(),
                mount: "10".into(),
                kind: "master".into(),
                label: "e/master".into(),
                origin: "cccc".into(),
                metric: 2,
                via: "link 3 (bbbb1111)".into(),
                standby: Some("link 4 (dddd2222)".into()),
            }],
            peers: vec![PeerRow {
                address: "127.0.0.1:1".into(),
                peer: "bbbb1111".into(),
                state: "up (link 3)".into(),
            }],
            circuits: 11,
            counters: Counters {
                relayed: 12,
                served: 13,
                opened: 14,
                no_route: 15,
                lost: 16,
                refused: 18,
                whole_records: 28,
                ..Default::default()
            },
            handshake_failures: 17,
            clients: 0,
            accepted: 27,
            refused_max_links: 19,
            refused_handshake_rate: 20,
            closes: super::super::Closes {
                misbehaved: 21,
                peer_closed: 22,
                idle: 23,
                not_reading: 24,
                io: 25,
                local: 26,
            },
            ..Default::default()
        }
    }

    #[test]
    fn text_views_show_what_they_name() {
        let s = snapshot();
        let links = render(&s, View::Links);
        assert!(links.contains("bbbb1111") && links.contains("up (link 3)"));
        assert!(!links.contains("ROUTES"));
        let routes = render(&s, View::Routes);
        assert!(routes.contains("e/master") && routes.contains("link 4 (dddd2222)"));
        let circuits = render(&s, View::Circuits);
        assert!(circuits.contains("open 11") && circuits.contains("relayed 12"));
        assert!(circuits.contains("misbehaved 21") && circuits.contains("local 26"));
        assert!(circuits.contains("records forwarded whole 28"));
        assert!(circuits.contains(
            "accepted 27 (trusted 0), refused at accept: strangers at max_links 19  handshake \
             rate 20, trusted 0"
        ));
        let all = render(&s, View::All);
        assert!(all.contains("LINKS") && all.contains("ROUTES") && all.contains("CIRCUITS"));
    }

    #[test]
    fn dot_draws_active_and_standby_first_hops() {
        let dot = dot(&snapshot());
        assert!(dot.starts_with("digraph ringspan {"));
        assert!(dot.contains("\"aaaa0000\" -> \"bbbb1111\" [dir=none, label=\"link 3\"]"));
        assert!(dot.contains("\"bbbb1111\" -> \"1:10 (master)\" [label=\"active, 2 hops\"]"));
        assert!(dot.contains("\"dddd2222\" -> \"1:10 (master)\" [style=dashed"));
    }

    #[test]
    fn prometheus_text_has_counters_per_node_and_link() {
        let text = prometheus(&snapshot());
        assert!(text.contains("# TYPE ringspan_relayed_total counter"));
        assert!(text.contains("ringspan_relayed_total{node=\"aaaa0000\"} 12"));
        assert!(text.contains("ringspan_circuits{node=\"aaaa0000\"} 11"));
        assert!(text.contains(
            "ringspan_link_aborts_out_total{node=\"aaaa0000\",link=\"3\",peer=\"bbbb1111\"} 9"
        ));
        assert!(text.contains("ringspan_handshake_failures_total{node=\"aaaa0000\"} 17"));
        assert!(text.contains("ringspan_accepted_total{node=\"aaaa0000\"} 27"));
        assert!(text.contains("ringspan_whole_records_total{node=\"aaaa0000\"} 28"));
        assert!(text.contains("ringspan_refused_max_links_total{node=\"aaaa0000\"} 19"));
        assert!(text.contains("ringspan_refused_handshake_rate_total{node=\"aaaa0000\"} 20"));
        assert!(
            text.contains(
                "ringspan_links_closed_total{node=\"aaaa0000\",reason=\"misbehaved\"} 21"
            )
        );
        assert!(
            text.contains("ringspan_links_closed_total{node=\"aaaa0000\",reason=\"local\"} 26")
        );
    }

    #[test]
    fn refusals_are_shown_and_exported_per_link_and_for_the_clients() {
        let mut s = snapshot();
        s.links[0].refusals.circuits_preempted = 5;
        s.links[0].refusals.spans_limited = 6;
        s.clients = 2;
        s.client_refusals.spans_refused = 7;
        s.counters.preempted = 5;
        let text = prometheus(&s);
        for line in [
            "ringspan_link_refusals_total{node=\"aaaa0000\",link=\"3\",peer=\"bbbb1111\",kind=\"circuits_preempted\"} 5",
            "ringspan_link_refusals_total{node=\"aaaa0000\",link=\"3\",peer=\"bbbb1111\",kind=\"spans_limited\"} 6",
            "ringspan_client_refusals_total{node=\"aaaa0000\",kind=\"spans_refused\"} 7",
            "ringspan_preempted_total{node=\"aaaa0000\"} 5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        }
        let shown = render(&s, View::Links);
        assert!(shown.contains("granted router: circuits limited 0  preempted 5"), "{shown}");
        assert!(shown.contains("2 client links, 0 client mounts; refused in all"), "{shown}");
    }

    #[test]
    fn the_control_socket_answers_a_snapshot_and_refuses_the_rest() {
        let dir = std::env::temp_dir().join(format!("ringspan-control-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let shared = Arc::new(Shared::fixed(snapshot()));
        let _socket = serve_control(&path, shared).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = fetch(&path).unwrap();
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back.counters.relayed, 12);
        assert_eq!(back.closes, snapshot().closes);
        assert_eq!((back.refused_max_links, back.refused_handshake_rate), (19, 20));
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"bogus\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        assert!(answer.contains("unknown request"));
        let _ = std::fs::remove_dir_all(&dir);
    }

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

    #[test]
    fn json_from_the_control_socket_carries_no_raw_control_or_invisible_character() {
        let mut s = snapshot();
        s.routes[0].label = "\u{1b}[2J\u{9b}31m\u{7f}\u{202e}\u{feff}\u{e0041}\\\"".into();
        let dir =
            std::env::temp_dir().join(format!("ringspan-control-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("n.sock");
        let shared = Arc::new(Shared::fixed(s.clone()));
        let _socket = serve_control(&path, shared).unwrap();
        let text = fetch(&path).unwrap();
        assert!(text.is_ascii(), "{text}");
        assert!(text.contains(r#""label":"\u001b[2J\u009b31m\u007f\u202e\ufeff\udb40\udc41\\\"""#));
        let back: Snapshot = serde_json::from_str(&text).unwrap();
        assert_eq!(back.routes[0].label, s.routes[0].label);
        // A request is echoed back escaped, as JSON.
        let mut stream = UnixStream::connect(&path).unwrap();
        stream.write_all(b"\x1b]0;x\x07\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["error"], r#"unknown request "\x1b]0;x\x07""#);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
