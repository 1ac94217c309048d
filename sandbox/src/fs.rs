//! The host side of the guest's filesystem: the read-only host
//! directories and in-memory files a run is given, served to the guest
//! runtime through the FS hypercalls, and the files it sends back.
//!
//! One file of ~1,000 lines because the fuzz targets compile it on its own,
//! by path (`fuzz/src/lib.rs`, with `fs_check.rs` and `kernel_fs.rs`): it
//! may name nothing of the crate but what it holds. (Its unit tests are in
//! `fs_tests.rs`; the ABI records' encoders and decoders are in
//! `core/abi`'s `fs` module.)
//!
//! The no-escape guarantee is structural: the host only ever opens one
//! plain name (no `/`, not `.` or `..`) relative to a directory it
//! already holds, with `O_NOFOLLOW`, so it never resolves `..` or a
//! symlink for the guest. The guest resolves both in its own view of the
//! tree, where a mount's `..` is a guest directory and a symlink's target
//! is a guest path.
//!
//! What the guest may read is what a user who is neither a file's owner
//! nor in its group may read on Linux — the guest runtime shows host files
//! as root's and runs the program as uid 1000, so it applies their "other"
//! permission bits — and the host applies the same rule itself, whoever
//! the host process is (root reads everything through its owner bits):
//! looking a name up needs "other" search (`x`) on the directory, listing
//! one needs "other" read, reading a file needs "other" read when its fd
//! is (re)opened. Kernel filesystems (procfs, sysfs, ...) are not entered
//! unless the mount opts in (see `kernel_fs.rs`).
//!
//! Nothing here knows KVM: the hypercall handler in `sandbox.rs` checks
//! the guest's buffers and calls in with plain bytes, so this is tested
//! on its own.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hvsandbox_core::abi;
use hvsandbox_core::abi::fs::{Stat, FIRST_HANDLE, NAME_MAX, PATH_MAX};

#[path = "kernel_fs.rs"]
mod kernel_fs;

/// A read-only host directory grafted into the guest's tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mount {
    pub host: PathBuf,
    /// Absolute, normalised guest path.
    pub guest: String,
    /// Whether kernel filesystems may be entered below it (or be its root).
    pub kernel_fs: bool,
}

/// A positive errno value; the guest receives its negation.
pub(crate) type Errno = i32;

/// The hypercall result that carries `-errno`.
pub(crate) fn errno_result(errno: Errno) -> u64 {
    (-(errno as i64)) as u64
}

/// Handles one run may hold (the guest gets `EMFILE` beyond). Handles are
/// never closed during a run; repeated lookups reuse theirs.
pub(crate) const MAX_HANDLES: usize = 65536;
/// Host file descriptors one run keeps open besides its mount roots; the
/// least recently used is closed past this and reopened when needed, so
/// a guest walking a large tree cannot exhaust the host process's fds.
pub(crate) const MAX_OPEN_FDS: usize = 64;

/// Inode numbers of in-memory files (distinct from host ones in practice).
const BLOB_INO_BASE: u64 = 1 << 63;

/// Size of a stat record as the guest sees it.
pub(crate) use hvsandbox_core::abi::fs::STAT_SIZE;

/// A [`Stat`] as the guest reads it (the ABI's one encoder).
pub(crate) fn stat_bytes(st: &Stat) -> [u8; STAT_SIZE] {
    abi::fs::encode_stat(st)
}

// The host does not decode the records it writes for the guest; the
// property tests (`fs_check.rs`) and the fuzz targets (`fuzz/`) check the
// encoders here against the ABI's decoders, which the guest runtime uses.

/// A [`Stat`] from the bytes [`stat_bytes`] makes (the ABI's decoder).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn decode_stat(b: &[u8; STAT_SIZE]) -> Stat {
    // A whole record always decodes.
    abi::fs::decode_stat(b).unwrap_or_default()
}

// ---------------------------------------------------------------------
// Guest paths and the manifest
// ---------------------------------------------------------------------

/// Checks that `path` is an absolute, normalised guest path: `/`, or
/// `/`-separated non-empty components that are not `.` or `..`, with no
/// trailing `/` and no NUL, within Linux's name and path limits.
pub(crate) fn check_guest_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("must be absolute (start with /)");
    }
    if path.len() >= PATH_MAX {
        return Err("is too long");
    }
    if path.contains('\0') {
        return Err("contains a NUL byte");
    }
    if path == "/" {
        return Ok(());
    }
    for part in path[1..].split('/') {
        match part {
            "" => return Err("must be normalised (no empty components or trailing /)"),
            "." | ".." => return Err("must be normalised (no . or .. components)"),
            p if p.len() > NAME_MAX => return Err("has a component longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// Checks one name the guest asks a host directory for: 1..=NAME_MAX
/// bytes, no `/` or NUL, not `.` or `..` (the host never resolves either).
pub(crate) fn check_name(name: &[u8]) -> Result<(), Errno> {
    match name {
        [] => Err(libc::ENOENT),
        b"." | b".." => Err(libc::EINVAL),
        n if n.len() > NAME_MAX => Err(libc::ENAMETOOLONG),
        n if n.contains(&b'/') || n.contains(&0) => Err(libc::EINVAL),
        _ => Ok(()),
    }
}

/// Whether guest path `path` is `dir` or inside it (both normalised).
pub(crate) fn path_is_within(path: &str, dir: &str) -> bool {
    dir == "/" || path == dir || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// One record of the boot manifest (see [`abi::fs::ManifestEntry`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ManifestRecord {
    pub kind: u32,
    pub mode: u32,
    pub handle: u64,
    pub size: u64,
    /// Absolute, normalised guest path.
    pub path: String,
    /// A mount's root status (the guest needs not ask for it); None for
    /// every other kind.
    pub root: Option<Stat>,
}

/// Encodes the manifest the runtime reads at boot: [`abi::fs::ManifestEntry`]
/// records, each followed by its path and padded to 8 bytes (the ABI's
/// encoder). An error for a record the ABI refuses (a kind it does not
/// define, a path too long): the caller's records are checked before.
pub(crate) fn encode_manifest(records: &[ManifestRecord]) -> Result<Vec<u8>, &'static str> {
    let mut out = vec![0; records.iter().map(|r| abi::fs::entry_size(r.kind, r.path.len())).sum()];
    let mut at = 0;
    for r in records {
        let view = abi::fs::ManifestView {
            kind: r.kind,
            mode: r.mode,
            handle: r.handle,
            size: r.size,
            path: r.path.as_bytes(),
            root: r.root,
        };
        // The buffer has room for every record.
        at += abi::fs::encode_manifest_entry(&mut out[at..], &view).map_err(abi::fs::CodecError::as_str)?;
    }
    Ok(out)
}

/// Decodes a manifest with the ABI's decoder, strictly: every record
/// whole, of a known kind, with a UTF-8 absolute normalised path and zero
/// padding, so that a manifest this accepts is exactly what
/// [`encode_manifest`] makes of the result.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn decode_manifest(bytes: &[u8]) -> Result<Vec<ManifestRecord>, &'static str> {
    let mut out = Vec::new();
    for r in abi::fs::manifest_entries(bytes) {
        let r = r.map_err(abi::fs::CodecError::as_str)?;
        let path = std::str::from_utf8(r.path).map_err(|_| "path is not UTF-8")?;
        check_guest_path(path)?;
        out.push(ManifestRecord {
            kind: r.kind,
            mode: r.mode,
            handle: r.handle,
            size: r.size,
            path: path.to_string(),
            root: r.root,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------
// Thin, safe wrappers of the host calls used below
// ---------------------------------------------------------------------

fn last_errno() -> Errno {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<OwnedFd, Errno> {
    loop {
        // SAFETY: `name` is NUL-terminated and `dir` is an open fd borrowed
        // for the call.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: openat returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        match last_errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

fn fstat(fd: BorrowedFd<'_>) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call and `st` is a writable stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_errno());
    }
    Ok(st)
}

/// Reads at `offset` until `buf` is full or the file ends.
fn pread_full(fd: BorrowedFd<'_>, buf: &mut [u8], offset: i64) -> Result<usize, Errno> {
    let mut done = 0;
    while done < buf.len() {
        let at = offset.checked_add(done as i64).ok_or(libc::EINVAL)?;
        let rest = &mut buf[done..];
        // SAFETY: the pointer and length describe `rest`, writable and
        // owned by this frame; `fd` is open for the call.
        let n = unsafe { libc::pread(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len(), at) };
        match n {
            0 => break,
            n if n > 0 => done += n as usize,
            _ => match last_errno() {
                libc::EINTR => continue,
                e => return Err(e),
            },
        }
    }
    Ok(done)
}

/// The target of the symlink an `O_PATH | O_NOFOLLOW` fd refers to.
fn readlink_fd(fd: BorrowedFd<'_>) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; PATH_MAX];
    // SAFETY: an empty path makes readlinkat read the link `fd` itself
    // refers to; the buffer is writable for its length.
    let n = unsafe { libc::readlinkat(fd.as_raw_fd(), c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(last_errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// One entry of a host directory listing (and of an FS_READDIR record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Listed {
    pub ino: u64,
    pub dtype: u8,
    /// 1..=NAME_MAX bytes.
    pub name: Vec<u8>,
}

/// Packs whole [`abi::fs::Dirent`] records of `listing`, from entry `start` on,
/// into at most `max_len` bytes (the ABI's encoder): empty past the last
/// entry, `EINVAL` when not even one record fits.
pub(crate) fn pack_dirents(listing: &[Listed], start: u64, max_len: usize) -> Result<Vec<u8>, Errno> {
    let rest = listing.get(usize::try_from(start).unwrap_or(usize::MAX)..).unwrap_or_default();
    let mut out = Vec::new();
    for e in rest {
        let size = abi::fs::dirent_size(e.name.len());
        if out.len() + size > max_len {
            if out.is_empty() {
                return Err(libc::EINVAL); // not even one record fits
            }
            break;
        }
        let at = out.len();
        out.resize(at + size, 0);
        let view = abi::fs::DirentView { ino: e.ino, dtype: e.dtype, name: &e.name };
        // Names are at most NAME_MAX bytes and the room is there.
        abi::fs::encode_dirent(&mut out[at..], &view).map_err(|_| libc::ENAMETOOLONG)?;
    }
    Ok(out)
}

/// Decodes packed [`abi::fs::Dirent`] records as the guest reads them (the ABI's
/// decoder).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn decode_dirents(bytes: &[u8]) -> Result<Vec<Listed>, &'static str> {
    abi::fs::dirents(bytes)
        .map(|d| d.map(|d| Listed { ino: d.ino, dtype: d.dtype, name: d.name.to_vec() }).map_err(|e| e.as_str()))
        .collect()
}

/// Lists the directory an `O_PATH` fd refers to, sorted by name, without
/// `.` and `..`, and without entries the guest could not look up anyway
/// (devices, FIFOs, sockets).
fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<Listed>, Errno> {
    // "." relative to the O_PATH fd is that very directory: no race.
    let fd = openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY)?.into_raw_fd();
    // SAFETY: `fd` is an open directory fd; on success the DIR owns it.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        let e = last_errno();
        // SAFETY: fdopendir failed, so `fd` is still ours to close.
        unsafe { libc::close(fd) };
        return Err(e);
    }
    struct DirStream(*mut libc::DIR);
    impl Drop for DirStream {
        fn drop(&mut self) {
            // SAFETY: the DIR came from fdopendir and is closed only here.
            unsafe { libc::closedir(self.0) };
        }
    }
    let stream = DirStream(d);
    let mut out = Vec::new();
    loop {
        // SAFETY: errno is thread-local; clearing it tells the end of the
        // stream from an error after readdir returns null.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: the DIR is open and used by this thread only.
        let ent = unsafe { libc::readdir(stream.0) };
        if ent.is_null() {
            match last_errno() {
                0 => break,
                e => return Err(e),
            }
        }
        // SAFETY: readdir returned a valid entry, live until the next
        // readdir call; d_name is NUL-terminated.
        let (ino, dtype, name) = unsafe { ((*ent).d_ino, (*ent).d_type, CStr::from_ptr((*ent).d_name.as_ptr())) };
        let name = name.to_bytes();
        if name == b"." || name == b".." || name.is_empty() || name.len() > NAME_MAX {
            continue;
        }
        let dtype = match dtype {
            libc::DT_DIR | libc::DT_REG | libc::DT_LNK | libc::DT_UNKNOWN => dtype,
            _ => continue,
        };
        out.push(Listed { ino, dtype, name: name.to_vec() });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Whether the guest's user may do `bits` (`S_IROTH`, `S_IXOTH`) to a
/// host object: its "other" permission bits, as the guest runtime checks
/// them (`EACCES` otherwise).
fn other_may(st: &libc::stat, bits: u32) -> Result<(), Errno> {
    if st.st_mode & bits == bits {
        Ok(())
    } else {
        Err(libc::EACCES)
    }
}

/// Opens mount root `host_dir` (an `O_PATH` directory fd) and checks it
/// is not a kernel filesystem unless `kernel_fs`.
pub(crate) fn open_mount_root(host_dir: &Path, kernel_fs: bool) -> std::io::Result<(OwnedFd, libc::stat)> {
    let path =
        CString::new(host_dir.as_os_str().as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `path` is NUL-terminated; the result is checked below.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let st = fstat(fd.as_fd()).map_err(std::io::Error::from_raw_os_error)?;
    if !kernel_fs {
        if let Some(name) = kernel_fs::of_root(fd.as_fd(), st.st_dev).map_err(std::io::Error::from_raw_os_error)? {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("it is on {name}, a kernel filesystem (mount_with_kernel_fs allows that)"),
            ));
        }
    }
    Ok((fd, st))
}

fn abi_stat(st: &libc::stat) -> Stat {
    Stat {
        // Set-id bits mean nothing in the guest.
        mode: st.st_mode & (libc::S_IFMT | 0o1777),
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        size: u64::try_from(st.st_size).unwrap_or(0),
        ino: st.st_ino,
        mtime_sec: st.st_mtime,
        mtime_nsec: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
        _pad: 0,
    }
}

// ---------------------------------------------------------------------
// The handle table
// ---------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FdSlot {
    /// The node's `O_PATH` fd.
    Path,
    /// An `O_RDONLY` fd of a regular file, opened on first read.
    Read,
}

/// A file, directory or symlink on the host.
struct HostNode {
    /// Parent directory handle and name in it; `None` for a mount root,
    /// whose fd stays open for the whole run.
    origin: Option<(u64, CString)>,
    /// Identity checked whenever the node is reopened by name.
    dev: u64,
    ino: u64,
    /// `S_IFDIR`, `S_IFREG` or `S_IFLNK`.
    fmt: u32,
    /// Kernel filesystems may be entered below (its mount opted in).
    kernel_fs: bool,
    path_fd: Option<OwnedFd>,
    path_tick: u64,
    read_fd: Option<OwnedFd>,
    read_tick: u64,
    listing: Option<Vec<Listed>>,
}

enum Node {
    Host(HostNode),
    /// A file given by the caller as bytes.
    Blob {
        data: Arc<[u8]>,
        mode: u32,
    },
}

/// A regular file's bytes, for reading (see [`HostFs::read_source`]).
pub(crate) enum ReadSource<'a> {
    Bytes(&'a [u8]),
    Host(BorrowedFd<'a>),
}

/// The part of `data` from `offset` on (empty past its end).
pub(crate) fn bytes_from(data: &[u8], offset: u64) -> &[u8] {
    &data[usize::try_from(offset).unwrap_or(usize::MAX).min(data.len())..]
}

/// The host objects one run can reach, by handle number.
pub(crate) struct HostFs {
    nodes: Vec<Node>,
    max_handles: usize,
    max_open: usize,
    /// (directory handle, name) -> handle, so lookups do not grow the table.
    lookups: HashMap<(u64, Vec<u8>), u64>,
    /// Open evictable fds by last use: tick -> (handle, slot).
    lru: BTreeMap<u64, (u64, FdSlot)>,
    tick: u64,
    /// Devices met this run -> the kernel filesystem they are, if any.
    kinds: HashMap<u64, Option<&'static str>>,
}

impl Default for HostFs {
    fn default() -> Self {
        HostFs::with_limits(MAX_HANDLES, MAX_OPEN_FDS)
    }
}

impl HostFs {
    /// An empty table with at most `max_handles` handles and
    /// `max_open` (at least 1) evictable open fds.
    pub(crate) fn with_limits(max_handles: usize, max_open: usize) -> HostFs {
        HostFs {
            nodes: Vec::new(),
            max_handles,
            max_open: max_open.max(1),
            lookups: HashMap::new(),
            lru: BTreeMap::new(),
            tick: 0,
            kinds: HashMap::new(),
        }
    }

    /// Number of handles in use.
    #[cfg(test)]
    pub(crate) fn handles(&self) -> usize {
        self.nodes.len()
    }

    fn push(&mut self, node: Node) -> Result<u64, Errno> {
        if self.nodes.len() >= self.max_handles {
            return Err(libc::EMFILE);
        }
        self.nodes.push(node);
        Ok(self.nodes.len() as u64 - 1 + FIRST_HANDLE)
    }

    /// Opens `host_dir` as a mount root; returns its handle. Kernel
    /// filesystems are refused at and below it unless `kernel_fs`.
    pub(crate) fn add_mount(&mut self, host_dir: &Path, kernel_fs: bool) -> std::io::Result<u64> {
        let (fd, st) = open_mount_root(host_dir, kernel_fs)?;
        self.push(Node::Host(HostNode {
            origin: None,
            dev: st.st_dev,
            ino: st.st_ino,
            fmt: libc::S_IFDIR,
            kernel_fs,
            path_fd: Some(fd),
            path_tick: 0,
            read_fd: None,
            read_tick: 0,
            listing: None,
        }))
        .map_err(std::io::Error::from_raw_os_error)
    }

    /// Registers an in-memory file; returns its handle.
    pub(crate) fn add_blob(&mut self, data: Arc<[u8]>, mode: u32) -> Result<u64, Errno> {
        self.push(Node::Blob { data, mode: mode & 0o7777 })
    }

    fn node(&self, handle: u64) -> Result<&Node, Errno> {
        let index = handle.checked_sub(FIRST_HANDLE).ok_or(libc::EBADF)?;
        self.nodes.get(usize::try_from(index).map_err(|_| libc::EBADF)?).ok_or(libc::EBADF)
    }

    fn host(&self, handle: u64) -> Result<&HostNode, Errno> {
        match self.node(handle)? {
            Node::Host(n) => Ok(n),
            Node::Blob { .. } => Err(libc::ENOTDIR),
        }
    }

    fn host_mut(&mut self, handle: u64) -> Option<&mut HostNode> {
        let index = usize::try_from(handle.checked_sub(FIRST_HANDLE)?).ok()?;
        match self.nodes.get_mut(index)? {
            Node::Host(n) => Some(n),
            Node::Blob { .. } => None,
        }
    }

    /// Marks an open fd as just used.
    fn touch(&mut self, handle: u64, slot: FdSlot) {
        let tick = self.tick + 1;
        let Some(n) = self.host_mut(handle) else { return };
        let t = match slot {
            FdSlot::Path => &mut n.path_tick,
            FdSlot::Read => &mut n.read_tick,
        };
        if *t == 0 {
            return; // a mount root: not evictable
        }
        let old = std::mem::replace(t, tick);
        self.tick = tick;
        self.lru.remove(&old);
        self.lru.insert(tick, (handle, slot));
    }

    /// Stores a newly opened fd, closing the least recently used ones
    /// beyond the limit. Any fd borrowed earlier may be closed here.
    fn install(&mut self, handle: u64, slot: FdSlot, fd: OwnedFd) {
        while self.lru.len() >= self.max_open {
            let Some((_, (h, s))) = self.lru.pop_first() else { break };
            if let Some(n) = self.host_mut(h) {
                match s {
                    FdSlot::Path => (n.path_fd, n.path_tick) = (None, 0),
                    FdSlot::Read => (n.read_fd, n.read_tick) = (None, 0),
                }
            }
        }
        self.tick += 1;
        let tick = self.tick;
        if let Some(n) = self.host_mut(handle) {
            match slot {
                FdSlot::Path => (n.path_fd, n.path_tick) = (Some(fd), tick),
                FdSlot::Read => (n.read_fd, n.read_tick) = (Some(fd), tick),
            }
            self.lru.insert(tick, (handle, slot));
        }
    }

    /// Opens node `handle` again by name from its parent directory, which
    /// the guest's user must still be able to search, and checks it is
    /// still the object the handle was made for; returns the fd and its
    /// status.
    fn reopen(&mut self, handle: u64, flags: i32) -> Result<(OwnedFd, libc::stat), Errno> {
        let n = self.host(handle)?;
        let (parent, name) = n.origin.clone().ok_or(libc::EIO)?;
        let (dev, ino, kernel_fs, fmt) = (n.dev, n.ino, n.kernel_fs, n.fmt);
        let fd = {
            let dir = self.path_fd(parent)?;
            other_may(&fstat(dir)?, libc::S_IXOTH)?;
            let stale = |e| match e {
                // The name is gone or is now something else.
                libc::ENOENT | libc::ELOOP | libc::ENOTDIR => libc::ESTALE,
                e => e,
            };
            if (dev, ino) == (0, 0) && flags & libc::O_PATH == 0 {
                // No identity to compare after the open: make sure first
                // that opening it has no side effects (not a device or a
                // FIFO) and that it is what the snapshot says.
                let probe = openat(dir, &name, libc::O_PATH | libc::O_NOFOLLOW).map_err(stale)?;
                if fstat(probe.as_fd())?.st_mode & libc::S_IFMT != fmt {
                    return Err(libc::ESTALE);
                }
            }
            openat(dir, &name, flags | libc::O_NOFOLLOW).map_err(stale)?
        };
        let st = fstat(fd.as_fd())?;
        if st.st_mode & libc::S_IFMT != fmt {
            return Err(libc::ESTALE);
        }
        if (dev, ino) == (0, 0) {
            // A node restored from a snapshot file made on another host,
            // whose identity is unknown: the name decides, so check what
            // it is now.
            if !kernel_fs {
                self.check_kernel_fs(fd.as_fd(), st.st_dev)?;
            }
        } else if (st.st_dev, st.st_ino) != (dev, ino) {
            return Err(libc::ESTALE);
        }
        Ok((fd, st))
    }

    /// Refuses (`EACCES`) an object on a kernel filesystem; `fd` is it, on
    /// device `dev`.
    fn check_kernel_fs(&mut self, fd: BorrowedFd<'_>, dev: u64) -> Result<(), Errno> {
        let kind = match self.kinds.get(&dev) {
            Some(&kind) => kind,
            None => {
                let kind = kernel_fs::of_fd(fd, dev)?;
                self.kinds.insert(dev, kind);
                kind
            }
        };
        match kind {
            Some(_) => Err(libc::EACCES),
            None => Ok(()),
        }
    }

    /// The node's `O_PATH` fd, reopened (by name from its parent, which
    /// may itself need reopening) if it was closed.
    fn path_fd(&mut self, handle: u64) -> Result<BorrowedFd<'_>, Errno> {
        // The closed nodes from `handle` up to the nearest open ancestor.
        // Parents have smaller handles than their children, so this ends.
        let mut chain = Vec::new();
        let mut cur = handle;
        loop {
            let n = self.host(cur)?;
            if n.path_fd.is_some() {
                break;
            }
            chain.push(cur);
            cur = n.origin.as_ref().ok_or(libc::EIO)?.0;
        }
        self.touch(cur, FdSlot::Path);
        for &child in chain.iter().rev() {
            let (fd, _) = self.reopen(child, libc::O_PATH)?;
            self.install(child, FdSlot::Path, fd);
        }
        self.host(handle)?.path_fd.as_ref().map(|fd| fd.as_fd()).ok_or(libc::EIO)
    }

    /// The `O_RDONLY` fd of a regular file, opened by name from its parent
    /// on first use (and again after eviction), if the guest's user may
    /// read the file then.
    fn read_fd(&mut self, handle: u64) -> Result<BorrowedFd<'_>, Errno> {
        let n = self.host(handle)?;
        if n.read_fd.is_some() {
            self.touch(handle, FdSlot::Read);
        } else {
            if n.origin.is_none() {
                return Err(libc::EISDIR); // a mount root
            }
            // O_NONBLOCK: should the name have been swapped for a FIFO,
            // the open must not hang (the identity check then fails).
            let flags = libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY;
            let (fd, st) = self.reopen(handle, flags)?;
            other_may(&st, libc::S_IROTH)?;
            self.install(handle, FdSlot::Read, fd);
        }
        self.host(handle)?.read_fd.as_ref().map(|fd| fd.as_fd()).ok_or(libc::EIO)
    }

    /// Looks up one name in directory `dir`, without following symlinks.
    /// The guest's user must be able to search `dir`; kernel filesystems
    /// are refused unless the mount opted in (`EACCES` for both).
    pub(crate) fn lookup(&mut self, dir: u64, name: &[u8]) -> Result<(u64, Stat), Errno> {
        check_name(name)?;
        let d = self.host(dir)?;
        let (fmt, dir_dev, kernel_fs) = (d.fmt, d.dev, d.kernel_fs);
        if fmt != libc::S_IFDIR {
            return Err(libc::ENOTDIR);
        }
        other_may(&fstat(self.path_fd(dir)?)?, libc::S_IXOTH)?;
        let key = (dir, name.to_vec());
        if let Some(&h) = self.lookups.get(&key) {
            return Ok((h, self.stat(h)?));
        }
        if self.nodes.len() >= self.max_handles {
            return Err(libc::EMFILE);
        }
        let cname = CString::new(name).map_err(|_| libc::EINVAL)?;
        let fd = openat(self.path_fd(dir)?, &cname, libc::O_PATH | libc::O_NOFOLLOW)?;
        let st = fstat(fd.as_fd())?;
        let fmt = st.st_mode & libc::S_IFMT;
        if !matches!(fmt, libc::S_IFDIR | libc::S_IFREG | libc::S_IFLNK) {
            // Devices, FIFOs and sockets are not shared with the guest.
            return Err(libc::EACCES);
        }
        // Another device: a mount crossing (or overlayfs's per-file
        // devices). An unknown parent device (0) counts as another.
        if !kernel_fs && st.st_dev != dir_dev {
            self.check_kernel_fs(fd.as_fd(), st.st_dev)?;
        }
        let h = self.push(Node::Host(HostNode {
            origin: Some((dir, cname)),
            dev: st.st_dev,
            ino: st.st_ino,
            fmt,
            kernel_fs,
            path_fd: None,
            path_tick: 0,
            read_fd: None,
            read_tick: 0,
            listing: None,
        }))?;
        self.install(h, FdSlot::Path, fd);
        self.lookups.insert(key, h);
        Ok((h, abi_stat(&st)))
    }

    /// Reads a regular file at `offset` into `buf`; returns the bytes read
    /// (0 at the end of the file).
    pub(crate) fn read(&mut self, handle: u64, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let buf_len = buf.len().min(abi::HCALL_MAX_LEN as usize);
        let buf = &mut buf[..buf_len];
        match self.read_source(handle)? {
            ReadSource::Bytes(data) => {
                let data = bytes_from(data, offset);
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Ok(n)
            }
            ReadSource::Host(fd) => pread_full(fd, buf, i64::try_from(offset).map_err(|_| libc::EINVAL)?),
        }
    }

    /// Where a regular file's bytes are: the caller's bytes, or a host
    /// descriptor open for reading (for reads straight into guest RAM).
    pub(crate) fn read_source(&mut self, handle: u64) -> Result<ReadSource<'_>, Errno> {
        match self.node(handle)? {
            Node::Host(n) if n.fmt == libc::S_IFREG => Ok(ReadSource::Host(self.read_fd(handle)?)),
            Node::Host(n) if n.fmt == libc::S_IFDIR => Err(libc::EISDIR),
            Node::Host(_) => Err(libc::EINVAL),
            Node::Blob { .. } => match self.node(handle)? {
                Node::Blob { data, .. } => Ok(ReadSource::Bytes(data)),
                Node::Host(_) => Err(libc::EIO),
            },
        }
    }

    /// Packs whole [`abi::fs::Dirent`] records, from entry `start` on, into at
    /// most `max_len` bytes; empty past the last entry. The guest's user
    /// must be able to read the directory.
    pub(crate) fn readdir(&mut self, handle: u64, start: u64, max_len: usize) -> Result<Vec<u8>, Errno> {
        if self.host(handle)?.fmt != libc::S_IFDIR {
            return Err(libc::ENOTDIR);
        }
        other_may(&fstat(self.path_fd(handle)?)?, libc::S_IROTH)?;
        if self.host(handle)?.listing.is_none() {
            let listing = list_dir(self.path_fd(handle)?)?;
            if let Some(n) = self.host_mut(handle) {
                n.listing = Some(listing);
            }
        }
        pack_dirents(self.host(handle)?.listing.as_deref().unwrap_or_default(), start, max_len)
    }

    /// The target of a symlink.
    pub(crate) fn readlink(&mut self, handle: u64) -> Result<Vec<u8>, Errno> {
        match self.node(handle)? {
            Node::Host(n) if n.fmt == libc::S_IFLNK => readlink_fd(self.path_fd(handle)?),
            _ => Err(libc::EINVAL),
        }
    }

    /// The host's own stat of a host file's node (`ENOENT` for one of
    /// the run's files, which is no host file).
    pub(crate) fn host_stat(&mut self, handle: u64) -> Result<libc::stat, Errno> {
        match self.node(handle)? {
            Node::Blob { .. } => Err(libc::ENOENT),
            Node::Host(_) => fstat(self.path_fd(handle)?),
        }
    }

    /// The status of a handle's object.
    pub(crate) fn stat(&mut self, handle: u64) -> Result<Stat, Errno> {
        match self.node(handle)? {
            Node::Blob { data, mode } => Ok(Stat {
                mode: libc::S_IFREG | mode,
                nlink: 1,
                size: data.len() as u64,
                ino: BLOB_INO_BASE | handle,
                ..Stat::default()
            }),
            Node::Host(_) => Ok(abi_stat(&fstat(self.path_fd(handle)?)?)),
        }
    }
}

// ---------------------------------------------------------------------
// Files sent back by the guest
// ---------------------------------------------------------------------

/// Collects the files the guest sends back with FILE_OUT, within caps.
#[derive(Debug)]
pub(crate) struct FileCollector {
    /// Guest directories (or files) whose contents may be sent back.
    roots: Vec<String>,
    files: BTreeMap<String, Vec<u8>>,
    /// Bytes held, file contents plus paths.
    bytes: u64,
    max_bytes: u64,
    max_files: usize,
    truncated: bool,
}

impl FileCollector {
    pub(crate) fn new(roots: Vec<String>, max_bytes: u64, max_files: usize) -> FileCollector {
        FileCollector { roots, files: BTreeMap::new(), bytes: 0, max_bytes, max_files, truncated: false }
    }

    /// Stores `data` at `offset` in file `path` (zero-filling any gap).
    /// Refused with `ENOSPC` (and the collection flagged truncated) when
    /// the caps would be exceeded; with `EPERM` for a path that was not
    /// asked for.
    pub(crate) fn file_out(&mut self, path: &[u8], offset: u64, data: &[u8]) -> Result<(), Errno> {
        let path = std::str::from_utf8(path).map_err(|_| libc::EILSEQ)?;
        check_guest_path(path).map_err(|_| libc::EINVAL)?;
        if path == "/" {
            return Err(libc::EINVAL);
        }
        if !self.roots.iter().any(|root| path_is_within(path, root)) {
            return Err(libc::EPERM);
        }
        let end = offset.checked_add(data.len() as u64).ok_or(libc::EFBIG)?;
        let (current, new_file) = match self.files.get(path) {
            Some(f) => (f.len() as u64, false),
            None => (0, true),
        };
        if new_file && self.files.len() >= self.max_files {
            self.truncated = true;
            return Err(libc::ENOSPC);
        }
        // Saturating: `end` is the guest's number and may be near 2^64.
        let grow = end.saturating_sub(current).saturating_add(if new_file { path.len() as u64 } else { 0 });
        if self.bytes.saturating_add(grow) > self.max_bytes {
            self.truncated = true;
            return Err(libc::ENOSPC);
        }
        self.bytes += grow;
        let file = self.files.entry(path.to_string()).or_default();
        // Both fit in memory: `end` is within the byte cap checked above.
        let (offset, end) = (offset as usize, end as usize);
        if file.len() < end {
            file.resize(end, 0);
        }
        file[offset..end].copy_from_slice(data);
        Ok(())
    }

    /// Takes the files collected, and whether any were refused for the caps.
    pub(crate) fn take(&mut self) -> (BTreeMap<String, Vec<u8>>, bool) {
        (std::mem::take(&mut self.files), self.truncated)
    }
}

#[cfg(test)]
#[path = "fs_check.rs"]
mod check;

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;

/// One handle of a [`HostFs`] table as a snapshot keeps it: the guest it
/// snapshots refers to host objects by these numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FsEntry {
    /// A mount root, by its index in the snapshot's mount list.
    Mount(usize),
    /// A name looked up in directory handle `parent`.
    Child { parent: u64, name: Vec<u8>, dev: u64, ino: u64, fmt: u32 },
    /// A file the caller gave (its contents live in the guest).
    Blob,
}

impl HostFs {
    /// The table as a snapshot keeps it; `mount_index` maps a mount root's
    /// handle order to its index.
    pub(crate) fn export(&self) -> Vec<FsEntry> {
        let mut mounts = 0;
        self.nodes
            .iter()
            .map(|n| match n {
                Node::Host(h) => match &h.origin {
                    None => {
                        mounts += 1;
                        FsEntry::Mount(mounts - 1)
                    }
                    Some((parent, name)) => FsEntry::Child {
                        parent: *parent,
                        name: name.as_bytes().to_vec(),
                        dev: h.dev,
                        ino: h.ino,
                        fmt: h.fmt,
                    },
                },
                Node::Blob { .. } => FsEntry::Blob,
            })
            .collect()
    }

    /// A table with the same handles as `entries`: mount roots opened from
    /// `mounts` (in order, each with its kernel filesystem choice, checked
    /// again), every other node reopened by name on first use.
    pub(crate) fn import(entries: &[FsEntry], mounts: &[Mount]) -> std::io::Result<HostFs> {
        let mut fs = HostFs::default();
        for e in entries {
            match e {
                FsEntry::Mount(i) => {
                    let m = mounts.get(*i).ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
                    fs.add_mount(&m.host, m.kernel_fs)?;
                }
                FsEntry::Child { parent, name, dev, ino, fmt } => {
                    if *parent >= FIRST_HANDLE + fs.nodes.len() as u64 {
                        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
                    }
                    let name =
                        CString::new(name.clone()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
                    let key = (*parent, name.as_bytes().to_vec());
                    let kernel_fs = fs.host(*parent).is_ok_and(|p| p.kernel_fs);
                    let h = fs
                        .push(Node::Host(HostNode {
                            origin: Some((*parent, name)),
                            dev: *dev,
                            ino: *ino,
                            fmt: *fmt,
                            kernel_fs,
                            path_fd: None,
                            path_tick: 0,
                            read_fd: None,
                            read_tick: 0,
                            listing: None,
                        }))
                        .map_err(std::io::Error::from_raw_os_error)?;
                    fs.lookups.insert(key, h);
                }
                FsEntry::Blob => {
                    fs.add_blob(Arc::from(&[][..]), 0).map_err(std::io::Error::from_raw_os_error)?;
                }
            }
        }
        Ok(fs)
    }
}
