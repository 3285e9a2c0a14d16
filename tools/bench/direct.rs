//! The reference: plain blocking TCP on loopback, no encryption, no transactions.
//!
//! Messages are framed as `len: u32 LE | payload` and go through 64 KiB buffered readers and
//! writers, so small messages are batched into large writes just as the engine batches them into
//! records. This is what a careful plain program gets from the kernel; the engine's figures are
//! read against it.

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

const BUFFER: usize = 64 * 1024;

/// Messages of `size` bytes sent one way for `duration`; returns (messages, payload bytes)
/// counted by the receiver, and the time it measured over.
pub fn one_way(
    size: usize,
    duration: Duration,
    cores: (usize, usize),
) -> io::Result<(u64, u64, Duration)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let writer_stop = stop.clone();
    let writer = thread::spawn(move || -> io::Result<()> {
        pin(cores.1);
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        let mut out = BufWriter::with_capacity(BUFFER, stream);
        let payload = vec![0x5au8; size];
        let header = (size as u32).to_le_bytes();
        while !writer_stop.load(Ordering::Relaxed) {
            for _ in 0..64 {
                out.write_all(&header)?;
                out.write_all(&payload)?;
            }
        }
        out.flush()
    });
    let (stream, _) = listener.accept()?;
    pin(cores.0);
    let mut input = BufReader::with_capacity(BUFFER, stream);
    let mut payload = vec![0u8; size];
    let (mut messages, mut bytes) = (0u64, 0u64);
    let start = clock();
    while clock() - start < duration {
        for _ in 0..64 {
            let mut header = [0u8; 4];
            input.read_exact(&mut header)?;
            let len = u32::from_le_bytes(header) as usize;
            input.read_exact(&mut payload[..len])?;
            messages += 1;
            bytes += len as u64;
        }
    }
    let elapsed = clock() - start;
    stop.store(true, Ordering::Relaxed);
    drop(input);
    let _ = writer.join();
    Ok((messages, bytes, elapsed))
}

/// Request-reply round trips of `size` bytes, one at a time, for `duration`.
pub fn round_trips(
    size: usize,
    duration: Duration,
    cores: (usize, usize),
) -> io::Result<Histogram<u64>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = thread::spawn(move || -> io::Result<()> {
        pin(cores.0);
        let (mut stream, _) = listener.accept()?;
        stream.set_nodelay(true)?;
        let mut buf = vec![0u8; 4 + size];
        loop {
            if stream.read_exact(&mut buf).is_err() {
                return Ok(());
            }
            stream.write_all(&buf)?;
        }
    });
    pin(cores.1);
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut message = vec![0x5au8; 4 + size];
    message[..4].copy_from_slice(&(size as u32).to_le_bytes());
    let mut reply = vec![0u8; 4 + size];
    let mut histogram = ringspan::link_load::new_histogram();
    let start = clock();
    while clock() - start < duration {
        let sent = clock();
        stream.write_all(&message)?;
        stream.read_exact(&mut reply)?;
        let _ = histogram.record((clock() - sent).as_nanos() as u64);
    }
    drop(stream);
    let _ = echo.join();
    Ok(histogram)
}

fn pin(core: usize) {
    if let Some(ids) = core_affinity::get_core_ids()
        && let Some(&id) = ids.get(core % ids.len().max(1))
    {
        core_affinity::set_for_current(id);
    }
}

#[allow(clippy::disallowed_methods)] // a benchmark reads the clock by design
fn clock() -> Instant {
    Instant::now()
}
