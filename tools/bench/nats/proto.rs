//! The NATS client protocol, as far as the baselines need it: the server's operations parsed
//! from a byte buffer ([`parse`], which never panics on odd input: an unknown operation, a
//! malformed length or a missing `\r\n` is an error), one client connection ([`Conn`]) and
//! `PUB` lines ([`write_pub`]).

use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::{BUFFER, SETUP_TIMEOUT, clock};

/// The longest control line accepted (nats-server's default `max_control_line`).
pub const CONTROL_LINE_MAX: usize = 4096;
/// The largest payload accepted.
pub const PAYLOAD_MAX: usize = 64 << 20;

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
pub(super) fn max_payload(info: &[u8]) -> Option<usize> {
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
