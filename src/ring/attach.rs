//! The attach socket (DESIGN 7g): a Unix-domain stream socket through which an application on
//! the node's host attaches to the running node. A connection accepted on it is a *local link*:
//! no handshake, records framed and counted but not encrypted (a zero tag,
//! [`cipher::record::record_layer_for_attach`](crate::cipher::record::record_layer_for_attach)),
//! a peer key made up for it, and no keepalive or idle deadline; to every layer above it is a
//! link like any other ([`LinkCtx::attached`](super::LinkCtx::attached) says it is local).
//!
//! What is trusted is the socket file's mode and the peer's credentials (`SO_PEERCRED`), checked
//! against [`AttachConfig`]'s lists at accept.
//!
//! The file is claimed as the daemon's control socket is: a stale socket (its process is gone)
//! is replaced, a live one (something answers) or anything not a socket is refused and left
//! alone, and at shutdown the file is removed only if it is still the one the engine bound.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use socket2::{Domain, SockAddr, Socket, Type};

/// Where and to whom the engine serves its attach socket ([`super::Config::attach`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachConfig {
    /// The socket file's path.
    pub path: PathBuf,
    /// The socket file's permission bits (e.g. `0o600`), set after bind whatever the umask.
    pub mode: u32,
    /// User ids whose processes may attach. With `gids`, a process is let in if its uid is in
    /// `uids` or its gid is in `gids`; both empty: any process that can open the file.
    pub uids: Vec<u32>,
    /// Group ids whose processes may attach (the process's effective gid): see `uids`.
    pub gids: Vec<u32>,
    /// Local links held at once; a connection beyond is closed at once, counted in
    /// [`WorkerStats::attach_refused_max`](super::WorkerStats::attach_refused_max). Default
    /// [`ATTACH_LINKS_MAX`](crate::limits::ATTACH_LINKS_MAX), never more (a test shrinks it).
    pub max_links: usize,
    /// Local links the processes of one uid hold at once; a connection beyond is closed at
    /// once, counted in
    /// [`WorkerStats::attach_refused_share`](super::WorkerStats::attach_refused_share). Default
    /// [`ATTACH_LINKS_PER_UID_MAX`](crate::limits::ATTACH_LINKS_PER_UID_MAX), never more.
    pub max_links_per_uid: usize,
}

impl AttachConfig {
    /// An attach socket at `path`, mode 0600 (the node's user only), any uid or gid, at most
    /// [`ATTACH_LINKS_MAX`](crate::limits::ATTACH_LINKS_MAX) local links,
    /// [`ATTACH_LINKS_PER_UID_MAX`](crate::limits::ATTACH_LINKS_PER_UID_MAX) of one uid.
    pub fn new(path: impl Into<PathBuf>) -> AttachConfig {
        AttachConfig {
            path: path.into(),
            mode: 0o600,
            uids: Vec::new(),
            gids: Vec::new(),
            max_links: crate::limits::ATTACH_LINKS_MAX,
            max_links_per_uid: crate::limits::ATTACH_LINKS_PER_UID_MAX,
        }
    }

    /// Whether a process with credentials `cred` may attach.
    pub fn allows(&self, cred: &PeerCred) -> bool {
        (self.uids.is_empty() && self.gids.is_empty())
            || self.uids.contains(&cred.uid)
            || self.gids.contains(&cred.gid)
    }
}

/// The credentials of the process at the other end of a local link, as the kernel gave them
/// at connect (`SO_PEERCRED`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// Its process id (in the node's pid namespace).
    pub pid: u32,
    /// Its effective user id.
    pub uid: u32,
    /// Its effective group id.
    pub gid: u32,
}

/// The credentials of the peer of Unix socket `socket`.
pub(crate) fn peer_cred(socket: &Socket) -> io::Result<PeerCred> {
    let mut cred = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `socket` is an open descriptor for the whole call; `cred` and `len` are valid for
    // writes of `len` bytes, which is `ucred`'s size, as SO_PEERCRED expects.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED returned a short answer"));
    }
    Ok(PeerCred { pid: cred.pid.max(0) as u32, uid: cred.uid, gid: cred.gid })
}

/// Claims `config.path`, binds and listens on it, and sets its mode. The listening socket, and
/// the claim that removes the file when dropped (if it is still ours).
pub(crate) fn bind(config: &AttachConfig) -> io::Result<(Socket, AttachFile)> {
    let path = &config.path;
    claim(path, "attach")?;
    let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    socket.bind(&SockAddr::unix(path)?).map_err(|e| match e.kind() {
        // Another process bound it between our look and our bind.
        io::ErrorKind::AddrInUse => in_use(path, "attach"),
        _ => e,
    })?;
    let file =
        AttachFile { path: path.clone(), file: FileId::of(&std::fs::symlink_metadata(path)?) };
    // From here an error drops `file`, which removes the socket file. The mode is set after
    // bind, so the umask does not matter; until then the file has the umask's mode, which is
    // never wider than the process's default, and nothing is accepted before `listen`.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(config.mode & 0o7777))?;
    socket.listen(crate::limits::LISTEN_BACKLOG)?;
    Ok((socket, file))
}

/// The engine's attach socket file: removed when dropped, if the file at the path is still the
/// one the engine bound (same device, inode and birth time), so an engine that stops never
/// removes another's.
#[derive(Debug)]
pub(crate) struct AttachFile {
    path: PathBuf,
    file: FileId,
}

impl Drop for AttachFile {
    fn drop(&mut self) {
        remove_if(&self.path, self.file);
    }
}

/// Which file a path names: what tells our socket file from another created at the same path
/// since. The birth time guards against a file system that reuses a freed inode number at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FileId {
    dev: u64,
    ino: u64,
    born: Option<SystemTime>,
}

impl FileId {
    pub(crate) fn of(meta: &std::fs::Metadata) -> FileId {
        FileId { dev: meta.dev(), ino: meta.ino(), born: meta.created().ok() }
    }
}

/// Removes the file at `path` if it is `file`; says whether it did. (Between the look and the
/// removal another process could replace the file: a window of two system calls.)
pub(crate) fn remove_if(path: &Path, file: FileId) -> bool {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if FileId::of(&meta) == file => std::fs::remove_file(path).is_ok(),
        _ => false,
    }
}

/// The error for a socket path another process serves (`what`: "control", "attach").
pub(crate) fn in_use(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("another node is running with {what} socket {}", path.display()),
    )
}

/// Makes `path` free to bind a Unix socket at (the attach socket, the daemon's control socket),
/// or says why it is not: nothing there is free; a socket something answers on is refused
/// (`AddrInUse`) and left alone; a socket whose connections are refused (its process is gone)
/// is removed; anything else (a file, a directory, a symbolic link) is refused
/// (`AlreadyExists`) and left alone. `what` names the socket in errors.
pub(crate) fn claim(path: &Path, what: &str) -> io::Result<()> {
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
        Ok(()) => Err(in_use(path, what)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(in_use(path, what)),
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Err(in_use(path, what)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Stale. Remove the file we probed, not one another node has bound since.
            if remove_if(path, FileId::of(&meta)) || !path.exists() {
                Ok(())
            } else {
                Err(in_use(path, what))
            }
        }
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "cannot tell whether a node is running with {what} socket {}: {e}; not \
                 replacing it",
                path.display()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ringspan-attach-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let _ = std::fs::remove_file(&path);
        path
    }

    #[test]
    fn the_socket_file_gets_its_mode_replaces_a_stale_one_and_refuses_a_live_one() {
        let path = temp("a.sock");
        // A stale socket: bound, then its listener gone.
        drop(UnixListener::bind(&path).unwrap());
        let config = AttachConfig { mode: 0o660, ..AttachConfig::new(&path) };
        let (socket, file) = bind(&config).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o660);
        // A live one is refused, and left alone.
        let error = bind(&config).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        let client = UnixStream::connect(&path).unwrap();
        let (accepted, _) = socket.accept().unwrap();
        let cred = peer_cred(&accepted).unwrap();
        assert_eq!(cred.pid, std::process::id());
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        assert_eq!((cred.uid, cred.gid), (uid, gid));
        drop(client);
        drop(file);
        assert!(!path.exists(), "removed at the end");
    }

    #[test]
    fn a_file_that_is_not_ours_is_neither_replaced_nor_removed() {
        let path = temp("b.sock");
        std::fs::write(&path, b"not a socket").unwrap();
        let error = bind(&AttachConfig::new(&path)).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists, "{error}");
        std::fs::remove_file(&path).unwrap();
        let (_socket, file) = bind(&AttachConfig::new(&path)).unwrap();
        // Replaced by another process's socket since: not removed.
        std::fs::remove_file(&path).unwrap();
        let _other = UnixListener::bind(&path).unwrap();
        drop(file);
        assert!(path.exists());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn uids_and_gids_let_a_process_in_by_either() {
        let cred = PeerCred { pid: 1, uid: 1000, gid: 100 };
        let any = AttachConfig::new("/x");
        assert!(any.allows(&cred));
        let uids = AttachConfig { uids: vec![1000], gids: vec![5], ..any.clone() };
        assert!(uids.allows(&cred));
        let gids = AttachConfig { uids: vec![0], gids: vec![100], ..any.clone() };
        assert!(gids.allows(&cred));
        let neither = AttachConfig { uids: vec![0], gids: vec![5], ..any };
        assert!(!neither.allows(&cred));
    }
}
