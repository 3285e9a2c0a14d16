//! The kernel-facing primitives of a worker: creating its ring and listening sockets, the
//! encoding of `user_data`, and the `sendmsg` descriptor the kernel reads during a send.

use std::io;
use std::net::SocketAddr;

use io_uring::IoUring;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Creates a ring with the flags the engine uses.
pub(crate) fn new_ring(entries: u32) -> io::Result<IoUring> {
    IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_submit_all()
        .build(entries)
}

/// Binds one listening socket to `addr` and returns a handle to it for each of `workers`
/// workers (duplicated descriptors of the same socket: each worker keeps its own accept in
/// flight on it), with the bound address (the real port if 0 was asked for). With `only_v6`,
/// an IPv6 socket takes IPv6 connections only (IPV6_V6ONLY), leaving the port's IPv4 side to
/// another socket; without it, the system's default (on Linux, `[::]` takes both).
///
/// No SO_REUSEPORT: with it, any other process of the same user could bind the same port and
/// be dealt a share of the connections. Without it, a second bind fails, here or there.
/// SO_REUSEADDR only lets a restarted node bind while its old connections linger in TIME_WAIT.
pub(crate) fn bind_listener(
    addr: SocketAddr,
    workers: usize,
    only_v6: bool,
) -> io::Result<(Vec<Socket>, SocketAddr)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if only_v6 && addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&SockAddr::from(addr)).map_err(in_use)?;
    socket.listen(crate::limits::LISTEN_BACKLOG).map_err(in_use)?;
    let bound = socket.local_addr()?.as_socket().unwrap_or(addr);
    let mut sockets = Vec::with_capacity(workers.max(1));
    for _ in 1..workers.max(1) {
        sockets.push(socket.try_clone()?);
    }
    sockets.push(socket);
    Ok((sockets, bound))
}

/// Says plainly what EADDRINUSE means for a listener.
fn in_use(error: io::Error) -> io::Error {
    if error.kind() == io::ErrorKind::AddrInUse {
        io::Error::new(
            io::ErrorKind::AddrInUse,
            "the address is in use by another process (or another socket of this one)",
        )
    } else {
        error
    }
}

/// What an operation is, in the top byte of its `user_data`.
pub(crate) mod op {
    pub const ACCEPT: u64 = 1;
    pub const CONNECT: u64 = 2;
    pub const RECV: u64 = 3;
    pub const SEND: u64 = 4;
    pub const WAKE: u64 = 5;
    /// Cancellations and shutdowns: their completions need nothing.
    pub const IGNORE: u64 = 6;

    pub fn encode(kind: u64, slot: u32, generation: u32) -> u64 {
        kind << 56 | u64::from(generation & 0xff_ffff) << 32 | u64::from(slot)
    }

    pub fn decode(user_data: u64) -> (u64, u32, u32) {
        (user_data >> 56, user_data as u32, (user_data >> 32) as u32 & 0xff_ffff)
    }
}

/// Chunks one `sendmsg` takes at most.
pub const SEND_IOVECS: usize = 16;

/// The `msghdr` and iovecs of one send in flight. Boxed, so the kernel's view of it stays put;
/// a worker keeps the free ones for reuse.
pub(crate) struct SendVec {
    hdr: libc::msghdr,
    iov: [libc::iovec; SEND_IOVECS],
}

impl SendVec {
    pub(crate) fn new() -> Box<SendVec> {
        let iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; SEND_IOVECS];
        // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid empty header
        // (no name, no control data); its iovec fields are set before each use.
        let hdr = unsafe { std::mem::zeroed::<libc::msghdr>() };
        Box::new(SendVec { hdr, iov })
    }

    /// Points the descriptor at up to [`SEND_IOVECS`] chunks (the kernel sends them in order)
    /// and returns the `msghdr` to hand to `sendmsg`.
    pub(crate) fn prepare<'a>(
        &mut self,
        chunks: impl Iterator<Item = &'a [u8]>,
    ) -> *const libc::msghdr {
        let mut count = 0;
        for (iov, chunk) in self.iov.iter_mut().zip(chunks) {
            *iov =
                libc::iovec { iov_base: chunk.as_ptr() as *mut libc::c_void, iov_len: chunk.len() };
            count += 1;
        }
        self.hdr.msg_iov = self.iov.as_mut_ptr();
        self.hdr.msg_iovlen = count;
        &self.hdr
    }
}

/// Sets IP_BIND_ADDRESS_NO_PORT on a socket about to be bound to a source address with port
/// 0: the kernel then picks the port at connect, unique per destination, instead of at bind,
/// unique per source address (which would cap a source address at one ephemeral range in all).
pub(crate) fn bind_address_no_port(socket: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: passes a pointer to a live c_int and its exact size; the kernel only reads it.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}
