//! Is SEND_ZC worth it here? Sends 2 GiB over loopback TCP with io_uring, first with plain
//! `send`, then with `send_zc`, at several buffer sizes, twice each, and prints GB/s.
//!
//! `cargo run --release --example sendzc`
//!
//! On loopback the kernel copies even for SEND_ZC, and the extra notification per send costs
//! more than it saves; the engine therefore sends with plain `sendmsg` (docs/DESIGN.md).

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Instant;

use io_uring::{IoUring, cqueue, opcode, types};

/// Bytes per run.
const TOTAL: usize = 2 << 30;
/// Buffers in rotation, and sends in flight at most (a buffer is reused only after four more
/// sends, by when its zero-copy notification has long arrived).
const BUFFERS: usize = 8;
const IN_FLIGHT: usize = 4;

fn run(size: usize, zero_copy: bool) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let reader = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < TOTAL {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
    });
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let fd = types::Fd(stream.as_raw_fd());
    let mut ring = IoUring::new(64).expect("io_uring");
    let bufs: Vec<Vec<u8>> = (0..BUFFERS).map(|_| vec![0x5a; size]).collect();
    #[allow(clippy::disallowed_methods)] // a measurement reads the clock
    let start = Instant::now();
    let (mut sent, mut queued, mut in_flight, mut next) = (0, 0, 0, 0);
    while sent < TOTAL {
        while in_flight < IN_FLIGHT && queued < TOTAL {
            let buf = &bufs[next % BUFFERS];
            next += 1;
            let entry = if zero_copy {
                opcode::SendZc::new(fd, buf.as_ptr(), size as u32).build()
            } else {
                opcode::Send::new(fd, buf.as_ptr(), size as u32).build()
            };
            // SAFETY: `buf` lives in `bufs` until the end of this function, after every send
            // and notification has completed; no buffer is rewritten.
            unsafe { ring.submission().push(&entry).expect("queue has room") };
            in_flight += 1;
            queued += size;
        }
        ring.submit_and_wait(1).expect("submit");
        for cqe in ring.completion() {
            if cqueue::notif(cqe.flags()) {
                continue;
            }
            let n = usize::try_from(cqe.result()).expect("send succeeded");
            sent += n;
            queued -= size - n;
            in_flight -= 1;
        }
    }
    let gbs = TOTAL as f64 / start.elapsed().as_secs_f64() / 1e9;
    drop(stream);
    let _ = reader.join();
    gbs
}

fn main() {
    println!("{:>8}  {:>17}  {:>17}", "buffer", "send GB/s", "send_zc GB/s");
    for size in [4096, 16384, 65536, 262144] {
        let (a, b, c, d) = (run(size, false), run(size, true), run(size, false), run(size, true));
        println!("{size:>8}  {a:>8.2} {c:>8.2}  {b:>8.2} {d:>8.2}");
    }
}
