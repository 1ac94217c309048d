//! File-related system calls: descriptors, paths, directories, pipes,
//! polling, file mappings.
//!
//! ~1,740 lines: one short, independent handler per file system call, on
//! the layers below (descriptors `fds.rs`, files `file.rs`, the tree
//! `vfs.rs`). Splitting it by call family is left for later.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::fds::*;
use crate::file::{self, FileKind, OpenFile, *};
use crate::inotify;
use crate::locks;
use crate::mm::{self, PROT_WRITE};
use crate::rt::UID;
use crate::uaccess::*;
use crate::vfs::{self, Dev, NodeKind, NodeRef, S_IFIFO, S_IFMT, S_IFSOCK};

pub type SysResult = Result<u64, i64>;

const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_EMPTY_PATH: u64 = 0x1000;

// --- arguments -------------------------------------------------------------------

/// Resolves `(dirfd, path)`; an empty path with AT_EMPTY_PATH means the
/// descriptor itself.
fn resolve_at(dirfd: u64, path: u64, flags: u64) -> Result<NodeOrFile, i64> {
    let p = path_arg(path)?;
    if p.is_empty() {
        if flags & AT_EMPTY_PATH == 0 {
            return Err(ENOENT);
        }
        if dirfd as i32 == AT_FDCWD {
            return Ok(NodeOrFile::Node(crate::task::cwd()));
        }
        return Ok(NodeOrFile::File(crate::fds::get(dirfd)?));
    }
    let base = if p[0] == b'/' { vfs::root() } else { base_dir(dirfd)? };
    let node = vfs::resolve(&base, p, flags & AT_SYMLINK_NOFOLLOW == 0)?;
    if let Some(fd) = vfs::fd_link(&node).filter(|_| flags & AT_SYMLINK_NOFOLLOW == 0) {
        // /proc/self/fd/N of a pipe or socket: the descriptor itself.
        return Ok(NodeOrFile::File(crate::fds::get(fd as u64)?));
    }
    Ok(NodeOrFile::Node(node))
}

enum NodeOrFile {
    Node(NodeRef),
    File(Rc<OpenFile>),
}

fn parent_at(dirfd: u64, path: u64) -> Result<(NodeRef, Vec<u8>), i64> {
    let p = path_arg(path)?;
    let base = if p.first() == Some(&b'/') { vfs::root() } else { base_dir(dirfd)? };
    vfs::resolve_parent(&base, p)
}

// --- open, close, read, write ---------------------------------------------------------

pub fn sys_openat(dirfd: u64, path: u64, flags: u64, mode: u64) -> SysResult {
    let flags = flags as u32;
    let p = path_arg(path)?;
    if p.is_empty() {
        return Err(ENOENT);
    }
    let base = if p[0] == b'/' { vfs::root() } else { base_dir(dirfd)? };
    let acc = flags & O_ACCMODE;
    if acc == 3 {
        return Err(EINVAL);
    }
    let wants_write = matches!(acc, O_WRONLY | O_RDWR) || flags & O_TRUNC != 0 && flags & O_PATH == 0;

    if flags & O_TMPFILE == O_TMPFILE {
        let dir = vfs::resolve(&base, p, true)?;
        if !dir.is_dir() {
            return Err(ENOTDIR);
        }
        if dir.readonly() {
            return Err(EROFS);
        }
        let node = vfs::new_file(mode as u32 & 0o7777 & !crate::task::umask());
        let of =
            OpenFile::new(FileKind::Node(node), flags & !(O_TMPFILE | O_CLOEXEC), vfs::absolute(&dir, b"#tmpfile"));
        return crate::fds::install(of, flags & O_CLOEXEC != 0, 0);
    }

    // A file this call creates is opened whatever its mode says (Linux
    // checks permissions only of a file that was there).
    let mut created = false;
    let node = if flags & O_CREAT != 0 {
        let (dir, name) = vfs::resolve_parent(&base, p)?;
        if p.last() == Some(&b'/') {
            return Err(EISDIR);
        }
        match vfs::lookup(&dir, &name) {
            Ok(existing) => {
                if flags & O_EXCL != 0 {
                    return Err(EEXIST);
                }
                if existing.is_symlink() {
                    if flags & O_NOFOLLOW != 0 {
                        return Err(ELOOP);
                    }
                    match vfs::resolve(&dir, &name, true) {
                        Ok(n) => n,
                        // A dangling link: create its target.
                        Err(ENOENT) => {
                            let target = vfs::readlink(&existing)?;
                            let (tdir, tname) = vfs::resolve_parent(&dir, &target)?;
                            if !vfs::permitted(&tdir, 3) {
                                return Err(EACCES);
                            }
                            created = true;
                            let node = vfs::create_file(&tdir, &tname, mode as u32 & !crate::task::umask())?;
                            inotify::entry_event(&tdir, &node, inotify::IN_CREATE, &tname);
                            node
                        }
                        Err(e) => return Err(e),
                    }
                } else {
                    existing
                }
            }
            Err(ENOENT) => {
                if name == b"." || name == b".." {
                    return Err(EISDIR);
                }
                if dir.readonly() {
                    return Err(EROFS);
                }
                if !vfs::permitted(&dir, 3) {
                    return Err(EACCES);
                }
                created = true;
                let node = vfs::create_file(&dir, &name, mode as u32 & !crate::task::umask())?;
                inotify::entry_event(&dir, &node, inotify::IN_CREATE, &name);
                node
            }
            Err(e) => return Err(e),
        }
    } else {
        let follow = flags & O_NOFOLLOW == 0;
        let n = vfs::resolve(&base, p, follow)?;
        if let Some(fd) = vfs::fd_link(&n).filter(|_| follow && flags & O_PATH == 0) {
            // /proc/self/fd/N (/dev/stdin, /dev/fd/N) of a pipe or socket
            // opens that pipe or socket again, as Linux does.
            let f = crate::fds::get(fd as u64)?;
            return crate::fds::install(f, flags & O_CLOEXEC != 0, 0);
        }
        if n.is_symlink() && flags & O_PATH == 0 {
            return Err(ELOOP);
        }
        n
    };

    if flags & O_DIRECTORY != 0 && !node.is_dir() {
        return Err(ENOTDIR);
    }
    if flags & O_PATH == 0 {
        if node.is_dir() && wants_write {
            return Err(EISDIR);
        }
        if wants_write && node.readonly() {
            return Err(EROFS);
        }
        let want = match acc {
            O_RDONLY => 4,
            O_WRONLY => 2,
            _ => 6,
        };
        if !created && !vfs::permitted(&node, want) {
            return Err(EACCES);
        }
        if flags & O_TRUNC != 0 && wants_write {
            if let NodeKind::File(f) = &node.kind {
                crate::shm::truncate(&node, f, 0)?;
                node.touch();
            }
        }
        if let NodeKind::File(f) = &node.kind {
            // So fstat, lseek and mmap see the size a read would; a failure
            // shows again on read.
            let _ = f.borrow_mut().learn_size();
        }
    }
    let path = vfs::absolute(&base, p);
    if matches!(node.kind, NodeKind::Dev(Dev::Socket)) && flags & O_PATH == 0 {
        return Err(ENXIO);
    }
    if matches!(node.kind, NodeKind::Dev(Dev::Fifo)) && flags & O_PATH == 0 {
        let of = file::open_fifo(&node, crate::task::current().tid(), flags, path)?;
        return crate::fds::install(of, flags & O_CLOEXEC != 0, 0);
    }
    if let (NodeKind::Dev(d @ (Dev::Ptmx | Dev::Pts(_) | Dev::Tty)), 0) = (&node.kind, flags & O_PATH) {
        return crate::sys_pty::open(*d, flags);
    }
    let keep = O_ACCMODE | O_APPEND | O_NONBLOCK | O_PATH | O_DIRECTORY;
    let truncated = flags & O_TRUNC != 0 && wants_write && flags & O_PATH == 0 && !created;
    let of = OpenFile::new(FileKind::Node(node), flags & keep, path);
    of.notify(inotify::IN_OPEN);
    if truncated {
        of.notify(inotify::IN_MODIFY);
    }
    crate::fds::install(of, flags & O_CLOEXEC != 0, 0)
}

pub fn sys_close(fd: u64) -> SysResult {
    crate::fds::close(fd).map(|_| 0)
}

pub fn sys_read(fd: u64, buf: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let out = user_bytes_mut(buf, len)?;
    f.read(out, None).map(|n| n as u64)
}

pub fn sys_write(fd: u64, buf: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let data = user_bytes(buf, len)?;
    if let FileKind::PipeWrite(p) | FileKind::FifoRdWr(p) = &f.kind {
        if f.flags.get() & O_NONBLOCK == 0 && data.len() > p.borrow().capacity {
            return write_whole(&f, p, data, (fd, buf, len));
        }
    }
    write_checked(&f, data, None)
}

/// A blocking write to a pipe larger than the pipe: it returns when all
/// of it is in, as on Linux (the reader making room bit by bit), or when
/// a handler interrupts it, with the count written (see
/// `Task::write_done`). The call runs again at each wake; `key` tells it
/// from another call.
fn write_whole(f: &OpenFile, p: &Rc<core::cell::RefCell<file::Pipe>>, data: &[u8], key: (u64, u64, u64)) -> SysResult {
    let t = crate::task::current();
    let done = match t.write_done.take() {
        Some((k, done)) if k == key => done,
        _ => 0,
    };
    let rest = &data[(done as usize).min(data.len())..];
    match f.write(rest, None) {
        Ok(n) if n as u64 + done >= data.len() as u64 => Ok(data.len() as u64),
        Ok(n) => {
            t.write_done.set(Some((key, done + n as u64)));
            crate::wait::block(crate::wait::Wait::PipeWrite(p.clone(), 1), None, true)
        }
        Err(crate::wait::BLOCKED) => {
            t.write_done.set(Some((key, done)));
            Err(crate::wait::BLOCKED)
        }
        Err(e) if done > 0 => {
            // (The reader went: part of it is in; SIGPIPE as for EPIPE.)
            if e == EPIPE {
                crate::signal::raise(crate::task::SIGPIPE);
            }
            Ok(done)
        }
        Err(EPIPE) => {
            crate::signal::raise(crate::task::SIGPIPE);
            Err(EPIPE)
        }
        Err(e) => Err(e),
    }
}

/// A write; EPIPE also raises SIGPIPE, as Linux does.
fn write_checked(f: &OpenFile, data: &[u8], at: Option<u64>) -> SysResult {
    match f.write(data, at) {
        Err(EPIPE) => {
            crate::signal::raise(crate::task::SIGPIPE);
            Err(EPIPE)
        }
        r => r.map(|n| n as u64),
    }
}

fn offset_arg(off: u64) -> Result<u64, i64> {
    if (off as i64) < 0 {
        Err(EINVAL)
    } else {
        Ok(off)
    }
}

pub fn sys_pread(fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let out = user_bytes_mut(buf, len)?;
    f.read(out, Some(offset_arg(off)?)).map(|n| n as u64)
}

pub fn sys_pwrite(fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let data = user_bytes(buf, len)?;
    write_checked(&f, data, Some(offset_arg(off)?))
}

const IOV_MAX: u64 = 1024;

fn iovecs(iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, i64> {
    if cnt > IOV_MAX {
        return Err(EINVAL);
    }
    let v = user_bytes(iov, cnt * 16)?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for c in v.chunks_exact(16) {
        let base = u64::from_le_bytes(c[0..8].try_into().map_err(|_| EFAULT)?);
        let len = u64::from_le_bytes(c[8..16].try_into().map_err(|_| EFAULT)?);
        total = total.checked_add(len).filter(|&t| t <= i64::MAX as u64).ok_or(EINVAL)?;
        out.push((base, len));
    }
    Ok(out)
}

pub fn sys_readv(fd: u64, iov: u64, cnt: u64, at: Option<u64>) -> SysResult {
    let f = crate::fds::get(fd)?;
    let v = iovecs(iov, cnt)?;
    let mut total = 0u64;
    for (base, len) in v {
        let out = user_bytes_mut(base, len)?;
        let n = match f.read(out, at.map(|a| a + total)) {
            Ok(n) => n as u64,
            Err(e) if total == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        };
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

pub fn sys_writev(fd: u64, iov: u64, cnt: u64, at: Option<u64>) -> SysResult {
    let f = crate::fds::get(fd)?;
    let v = iovecs(iov, cnt)?;
    // Validate everything first: a bad vector writes nothing.
    for &(base, len) in &v {
        user_bytes(base, len)?;
    }
    let mut total = 0u64;
    for (base, len) in v {
        let n = match write_checked(&f, user_bytes(base, len)?, at.map(|a| a + total)) {
            Ok(n) => n,
            Err(e) if total == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        };
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

pub fn sys_lseek(fd: u64, off: u64, whence: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let node = match &f.kind {
        FileKind::Node(n) => n.clone(),
        _ => return Err(ESPIPE),
    };
    let size = node.size() as i64;
    let cur = f.offset.get() as i64;
    let off = off as i64;
    let new = match whence {
        0 => Some(off),
        1 => cur.checked_add(off),
        2 => size.checked_add(off),
        3 => (off < size).then_some(off),  // SEEK_DATA: no holes reported
        4 => (off < size).then_some(size), // SEEK_HOLE: the end
        _ => return Err(EINVAL),
    };
    let new = match new {
        Some(n) if n >= 0 => n,
        None if whence >= 3 => return Err(ENXIO),
        _ => return Err(EINVAL),
    };
    if node.is_dir() {
        // rewinddir / seekdir: the listing is taken again from the start.
        *f.listing.borrow_mut() = None;
    }
    f.offset.set(new as u64);
    Ok(new as u64)
}

// --- status ---------------------------------------------------------------------------

struct StatInfo {
    dev: u64,
    ino: u64,
    mode: u32,
    nlink: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    size: u64,
    atime: (i64, u32),
    mtime: (i64, u32),
    ctime: (i64, u32),
}

fn node_stat(n: &NodeRef) -> StatInfo {
    let m = *n.meta.borrow();
    let rdev = match &n.kind {
        NodeKind::Dev(Dev::Null) => (1 << 8) | 3,
        NodeKind::Dev(Dev::Zero) => (1 << 8) | 5,
        NodeKind::Dev(Dev::Full) => (1 << 8) | 7,
        NodeKind::Dev(Dev::Random) => (1 << 8) | 9,
        NodeKind::Dev(Dev::Ptmx) => (5 << 8) | 2,
        NodeKind::Dev(Dev::Tty) => 5 << 8,
        &NodeKind::Dev(Dev::Pts(n)) => crate::sys_pty::slave_rdev(n),
        _ => 0,
    };
    StatInfo {
        dev: m.dev,
        ino: m.ino,
        mode: m.mode,
        nlink: m.nlink,
        uid: m.uid,
        gid: m.gid,
        rdev,
        size: n.size(),
        atime: m.atime,
        mtime: m.mtime,
        ctime: m.ctime,
    }
}

fn file_stat(f: &OpenFile) -> StatInfo {
    if let Some(n) = crate::sys_pty::node_of(f) {
        return node_stat(&n);
    }
    match &f.kind {
        FileKind::Node(n) => node_stat(n),
        other => {
            let anon = file::anon_number(&f.path);
            let ino = match other {
                FileKind::Stdin => 100,
                FileKind::Stdout => 101,
                FileKind::Stderr => 102,
                // The N of its `socket:[N]` or `pipe:[N]`, as on Linux.
                FileKind::Socket(_) | FileKind::PipeRead(_) | FileKind::PipeWrite(_) if anon != 0 => anon,
                FileKind::PipeRead(p) | FileKind::PipeWrite(p) | FileKind::FifoRdWr(p) => {
                    0x10_0000 + (Rc::as_ptr(p) as u64 & 0xfffff)
                }
                _ => 0x20_0000 + (f as *const OpenFile as u64 & 0xfffff),
            };
            let (kind, perm) = match other {
                FileKind::Epoll(_)
                | FileKind::EventFd(..)
                | FileKind::TimerFd(_)
                | FileKind::SignalFd(_)
                | FileKind::Pidfd(_) => (0, 0o600),
                FileKind::Inotify(_) => (0, 0o400),
                FileKind::Socket(_) => (S_IFSOCK, 0o777),
                _ => (S_IFIFO, 0o600),
            };
            let t = (crate::time::realtime_ns() / 1_000_000_000) as i64;
            StatInfo {
                dev: 0xc,
                ino,
                mode: kind | perm,
                nlink: 1,
                uid: UID as u32,
                gid: UID as u32,
                rdev: 0,
                size: 0,
                atime: (t, 0),
                mtime: (t, 0),
                ctime: (t, 0),
            }
        }
    }
}

fn put_stat(buf: u64, s: &StatInfo) -> SysResult {
    let mut st = [0u8; 144];
    let mut put = |off: usize, v: u64| st[off..off + 8].copy_from_slice(&v.to_le_bytes());
    put(0, s.dev);
    put(8, s.ino);
    put(16, s.nlink as u64);
    put(24, s.mode as u64 | ((s.uid as u64) << 32));
    put(32, s.gid as u64);
    put(40, s.rdev);
    put(48, s.size);
    put(56, 4096);
    put(64, s.size.div_ceil(512));
    put(72, s.atime.0 as u64);
    put(80, s.atime.1 as u64);
    put(88, s.mtime.0 as u64);
    put(96, s.mtime.1 as u64);
    put(104, s.ctime.0 as u64);
    put(112, s.ctime.1 as u64);
    put_user(buf, st)?;
    Ok(0)
}

fn stat_of(x: &NodeOrFile) -> StatInfo {
    match x {
        NodeOrFile::Node(n) => node_stat(n),
        NodeOrFile::File(f) => file_stat(f),
    }
}

pub fn sys_fstat(fd: u64, buf: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    put_stat(buf, &file_stat(&f))
}

pub fn sys_newfstatat(dirfd: u64, path: u64, buf: u64, flags: u64) -> SysResult {
    let x = resolve_at(dirfd, path, flags)?;
    put_stat(buf, &stat_of(&x))
}

pub fn sys_statx(dirfd: u64, path: u64, flags: u64, _mask: u64, buf: u64) -> SysResult {
    let x = resolve_at(dirfd, path, flags)?;
    let s = stat_of(&x);
    let mut st = [0u8; 256];
    st[0..4].copy_from_slice(&0x7ffu32.to_le_bytes()); // STATX_BASIC_STATS
    st[4..8].copy_from_slice(&4096u32.to_le_bytes());
    st[16..20].copy_from_slice(&s.nlink.to_le_bytes());
    st[20..24].copy_from_slice(&s.uid.to_le_bytes());
    st[24..28].copy_from_slice(&s.gid.to_le_bytes());
    st[28..30].copy_from_slice(&(s.mode as u16).to_le_bytes());
    st[32..40].copy_from_slice(&s.ino.to_le_bytes());
    st[40..48].copy_from_slice(&s.size.to_le_bytes());
    st[48..56].copy_from_slice(&s.size.div_ceil(512).to_le_bytes());
    for (off, t) in [(64, s.atime), (80, s.ctime), (96, s.ctime), (112, s.mtime)] {
        st[off..off + 8].copy_from_slice(&t.0.to_le_bytes());
        st[off + 8..off + 12].copy_from_slice(&t.1.to_le_bytes());
    }
    st[128..132].copy_from_slice(&((s.rdev >> 8) as u32).to_le_bytes());
    st[132..136].copy_from_slice(&((s.rdev & 0xff) as u32).to_le_bytes());
    st[136..140].copy_from_slice(&0u32.to_le_bytes());
    st[140..144].copy_from_slice(&(s.dev as u32).to_le_bytes());
    put_user(buf, st)?;
    Ok(0)
}

pub fn sys_getdents64(fd: u64, buf: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let node = f.node().filter(|n| n.is_dir()).ok_or(ENOTDIR)?.clone();
    if f.flags.get() & O_PATH != 0 {
        return Err(EBADF);
    }
    let out = user_bytes_mut(buf, len)?;
    let mut listing = f.listing.borrow_mut();
    if listing.is_none() {
        *listing = Some(vfs::list(&node)?);
    }
    let entries = listing.as_ref().ok_or(EIO)?;
    let mut idx = f.offset.get() as usize;
    let mut pos = 0usize;
    while let Some((name, ino, dtype)) = entries.get(idx) {
        let reclen = (19usize + name.len() + 1).next_multiple_of(8);
        if pos + reclen > out.len() {
            if pos == 0 {
                return Err(EINVAL);
            }
            break;
        }
        let rec = &mut out[pos..pos + reclen];
        rec.fill(0);
        rec[0..8].copy_from_slice(&ino.to_le_bytes());
        rec[8..16].copy_from_slice(&((idx + 1) as u64).to_le_bytes());
        rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
        rec[18] = *dtype;
        rec[19..19 + name.len()].copy_from_slice(name);
        pos += reclen;
        idx += 1;
    }
    f.offset.set(idx as u64);
    drop(listing);
    f.notify(inotify::IN_ACCESS);
    Ok(pos as u64)
}

pub fn sys_readlinkat(dirfd: u64, path: u64, buf: u64, size: u64) -> SysResult {
    if (size as i64) <= 0 {
        return Err(EINVAL);
    }
    let node = match resolve_at(dirfd, path, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)? {
        NodeOrFile::Node(n) => n,
        NodeOrFile::File(f) => f.node().cloned().ok_or(EINVAL)?,
    };
    let target = vfs::readlink(&node)?;
    let n = (target.len() as u64).min(size);
    user_bytes_mut(buf, n)?.copy_from_slice(&target[..n as usize]);
    Ok(n)
}

pub fn sys_faccessat(dirfd: u64, path: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 {
        return Err(EINVAL);
    }
    let node = match resolve_at(dirfd, path, flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH))? {
        NodeOrFile::Node(n) => n,
        NodeOrFile::File(f) => match f.node() {
            Some(n) => n.clone(),
            None => return Ok(0),
        },
    };
    if mode & 2 != 0 && node.readonly() {
        return Err(EROFS);
    }
    if vfs::permitted(&node, mode as u32) {
        Ok(0)
    } else {
        Err(EACCES)
    }
}

// --- directories --------------------------------------------------------------------

pub fn sys_getcwd(buf: u64, size: u64) -> SysResult {
    let mut p = vfs::path_of(&crate::task::cwd())?;
    p.push(0);
    if (p.len() as u64) > size {
        return Err(ERANGE);
    }
    user_bytes_mut(buf, p.len() as u64)?.copy_from_slice(&p);
    Ok(p.len() as u64)
}

pub fn sys_chdir(path: u64) -> SysResult {
    let p = path_arg(path)?;
    let n = vfs::resolve(&crate::task::cwd(), p, true)?;
    if !n.is_dir() {
        return Err(ENOTDIR);
    }
    if !vfs::permitted(&n, 1) {
        return Err(EACCES);
    }
    crate::task::set_cwd(n);
    Ok(0)
}

pub fn sys_fchdir(fd: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let n = f.node().filter(|n| n.is_dir()).ok_or(ENOTDIR)?.clone();
    crate::task::set_cwd(n);
    Ok(0)
}

pub fn sys_mkdirat(dirfd: u64, path: u64, mode: u64) -> SysResult {
    let (dir, name) = parent_at(dirfd, path)?;
    // An existing name is EEXIST before any permission check, as on Linux
    // (`mkdir -p /tmp/a/` relies on it for `/tmp` in a root-owned `/`).
    if name == b"." || name == b".." || vfs::lookup(&dir, &name).is_ok() {
        return Err(EEXIST);
    }
    if !dir.readonly() && !vfs::permitted(&dir, 3) {
        return Err(EACCES);
    }
    let node = vfs::mkdir(&dir, &name, mode as u32 & !crate::task::umask())?;
    inotify::entry_event(&dir, &node, inotify::IN_CREATE, &name);
    Ok(0)
}

/// Whether the user may remove or rename `name` in `dir`, or make it:
/// write and search permission on the directory, as Linux asks (EROFS,
/// ENOENT for a missing name to remove, EEXIST for one to make come first,
/// from the call itself). `exists`: what the call needs of the name.
fn may_change(dir: &NodeRef, name: &[u8], exists: bool) -> Result<(), i64> {
    if !dir.readonly() && vfs::lookup(dir, name).is_ok() == exists && !vfs::permitted(dir, 3) {
        return Err(EACCES);
    }
    Ok(())
}

pub fn sys_unlinkat(dirfd: u64, path: u64, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(EINVAL);
    }
    let (dir, name) = parent_at(dirfd, path)?;
    may_change(&dir, &name, true)?;
    let node = inotify::active().then(|| vfs::lookup(&dir, &name).ok()).flatten();
    vfs::remove(&dir, &name, flags & AT_REMOVEDIR != 0)?;
    if let Some(node) = node {
        inotify::removed(&dir, &node, &name);
    }
    Ok(0)
}

pub fn sys_renameat2(od: u64, op: u64, nd: u64, np: u64, flags: u64) -> SysResult {
    const RENAME_NOREPLACE: u64 = 1;
    if flags & !RENAME_NOREPLACE != 0 {
        return Err(EINVAL);
    }
    let (odir, oname) = parent_at(od, op)?;
    let (ndir, nname) = parent_at(nd, np)?;
    may_change(&odir, &oname, true)?;
    if !ndir.readonly() && vfs::lookup(&odir, &oname).is_ok() && !vfs::permitted(&ndir, 3) {
        return Err(EACCES);
    }
    let nodes = inotify::active().then(|| (vfs::lookup(&odir, &oname).ok(), vfs::lookup(&ndir, &nname).ok()));
    vfs::rename(&odir, &oname, &ndir, &nname, flags & RENAME_NOREPLACE != 0)?;
    if let Some((Some(node), replaced)) = nodes {
        let replaced = replaced.filter(|r| !Rc::ptr_eq(r, &node));
        if !Rc::ptr_eq(&odir, &ndir) || oname != nname {
            inotify::moved(&odir, &oname, &ndir, &nname, &node, replaced.as_ref());
        }
    }
    Ok(0)
}

pub fn sys_linkat(od: u64, op: u64, nd: u64, np: u64, flags: u64) -> SysResult {
    let follow = if flags & AT_SYMLINK_FOLLOW != 0 { 0 } else { AT_SYMLINK_NOFOLLOW };
    let node = match resolve_at(od, op, follow | (flags & AT_EMPTY_PATH))? {
        NodeOrFile::Node(n) => n,
        NodeOrFile::File(f) => f.node().cloned().ok_or(EXDEV)?,
    };
    if node.is_dir() {
        return Err(EPERM);
    }
    if node.readonly() {
        return Err(EXDEV);
    }
    let (ndir, nname) = parent_at(nd, np)?;
    may_change(&ndir, &nname, false)?;
    vfs::link_into(&ndir, &nname, node.clone())?;
    node.meta.borrow_mut().nlink += 1;
    inotify::event(&node, inotify::IN_ATTRIB, &[], 0);
    inotify::entry_event(&ndir, &node, inotify::IN_CREATE, &nname);
    Ok(0)
}

/// mknod/mknodat: regular files and named pipes (devices need privilege).
pub fn sys_mknodat(dirfd: u64, path: u64, mode: u64) -> SysResult {
    let mode = mode as u32;
    let (dir, name) = parent_at(dirfd, path)?;
    if dir.readonly() {
        return Err(EROFS);
    }
    if !vfs::permitted(&dir, 3) {
        return Err(EACCES);
    }
    if vfs::lookup(&dir, &name).is_ok() {
        return Err(EEXIST);
    }
    let perm = mode & 0o7777 & !crate::task::umask();
    match mode & vfs::S_IFMT {
        0 | vfs::S_IFREG => vfs::create_file(&dir, &name, perm).map(|_| ())?,
        vfs::S_IFIFO => vfs::create_fifo(&dir, &name, perm)?,
        vfs::S_IFSOCK => vfs::create_socket_node(&dir, &name, perm).map(|_| ())?,
        vfs::S_IFCHR | 0o060_000 => return Err(EPERM),
        _ => return Err(EINVAL),
    }
    created_at(&dir, &name);
    Ok(0)
}

/// Tells the watches of `dir` that its entry `name` was just made.
fn created_at(dir: &NodeRef, name: &[u8]) {
    if let Some(node) = inotify::active().then(|| vfs::lookup(dir, name).ok()).flatten() {
        inotify::entry_event(dir, &node, inotify::IN_CREATE, name);
    }
}

pub fn sys_symlinkat(target: u64, nd: u64, np: u64) -> SysResult {
    let t = path_arg(target)?.to_vec();
    let (dir, name) = parent_at(nd, np)?;
    may_change(&dir, &name, false)?;
    vfs::symlink(&dir, &name, &t)?;
    created_at(&dir, &name);
    Ok(0)
}

fn truncate_node(node: &NodeRef, len: u64) -> SysResult {
    if (len as i64) < 0 {
        return Err(EINVAL);
    }
    match &node.kind {
        NodeKind::File(f) => {
            if node.readonly() {
                return Err(EROFS);
            }
            crate::shm::truncate(node, f, len)?;
            node.touch();
            Ok(0)
        }
        NodeKind::Dir(_) | NodeKind::ProcFd(_) | NodeKind::Proc(_) => Err(EISDIR),
        _ => Err(EINVAL),
    }
}

pub fn sys_ftruncate(fd: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    if !f.writable() {
        return Err(EINVAL);
    }
    truncate_node(f.node().ok_or(EINVAL)?, len)?;
    f.notify(inotify::IN_MODIFY);
    Ok(0)
}

pub fn sys_truncate(path: u64, len: u64) -> SysResult {
    let n = vfs::resolve(&crate::task::cwd(), path_arg(path)?, true)?;
    if !vfs::permitted(&n, 2) {
        return Err(EACCES);
    }
    truncate_node(&n, len)?;
    changed(AT_FDCWD as u64, path, None, &n, inotify::IN_MODIFY);
    Ok(0)
}

pub fn sys_fallocate(fd: u64, mode: u64, off: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    if mode != 0 {
        return Err(EOPNOTSUPP);
    }
    let end = off.checked_add(len).ok_or(EFBIG)?;
    let node = f.node().ok_or(ESPIPE)?.clone();
    if node.size() < end {
        truncate_node(&node, end)?;
        f.notify(inotify::IN_MODIFY);
    }
    Ok(0)
}

// --- descriptors ----------------------------------------------------------------------

pub fn sys_dup(fd: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    crate::fds::install(f, false, 0)
}

pub fn sys_dup3(old: u64, new: u64, flags: u64, is_dup2: bool) -> SysResult {
    let f = crate::fds::get(old)?;
    if old == new {
        return if is_dup2 { Ok(new) } else { Err(EINVAL) };
    }
    if flags & !(O_CLOEXEC as u64) != 0 {
        return Err(EINVAL);
    }
    crate::fds::install_at(new, f, flags & O_CLOEXEC as u64 != 0)
}

pub fn sys_fcntl(fd: u64, cmd: u64, arg: u64) -> SysResult {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_GETLK: u64 = 5;
    const F_SETLK: u64 = 6;
    const F_SETLKW: u64 = 7;
    const F_OFD_GETLK: u64 = 36;
    const F_OFD_SETLK: u64 = 37;
    const F_OFD_SETLKW: u64 = 38;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    const F_SETPIPE_SZ: u64 = 1031;
    const F_GETPIPE_SZ: u64 = 1032;
    let f = crate::fds::get(fd)?;
    match cmd {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            if arg as usize >= max_fds() {
                return Err(EINVAL);
            }
            crate::fds::install(f, cmd == F_DUPFD_CLOEXEC, arg as usize)
        }
        F_GETFD => Ok(crate::fds::cloexec(fd)? as u64),
        F_SETFD => {
            crate::fds::set_cloexec(fd, arg & 1 != 0)?;
            Ok(0)
        }
        F_GETFL => Ok(f.flags.get() as u64),
        F_SETFL => {
            let changeable = O_APPEND | O_NONBLOCK;
            let fl = f.flags.get();
            f.flags.set((fl & !changeable) | (arg as u32 & changeable));
            crate::sigio::set_async(&f, fd as u32, arg as u32 & crate::sigio::O_ASYNC != 0);
            Ok(0)
        }
        F_GETLK | F_SETLK | F_SETLKW | F_OFD_GETLK | F_OFD_SETLK | F_OFD_SETLKW => record_lock(&f, cmd, arg),
        F_GETPIPE_SZ | F_SETPIPE_SZ => {
            let (FileKind::PipeRead(p) | FileKind::PipeWrite(p) | FileKind::FifoRdWr(p)) = &f.kind else {
                return Err(EBADF);
            };
            let mut p = p.borrow_mut();
            if cmd == F_SETPIPE_SZ {
                // A power of two pages, at least one; no less than what it
                // holds (EBUSY); at most `PIPE_MAX_CAPACITY` (EPERM).
                let want = usize::try_from(arg as u32).map_err(|_| EINVAL)?;
                let size = want.max(crate::mm::PAGE as usize).checked_next_power_of_two().ok_or(EPERM)?;
                if size > crate::pipe::PIPE_MAX_CAPACITY {
                    return Err(EPERM);
                }
                if p.buf.len() > size {
                    return Err(EBUSY);
                }
                p.capacity = size;
            }
            Ok(p.capacity as u64)
        }
        _ => crate::sys_notify::fcntl(&f, fd, cmd, arg),
    }
}

/// The owner of `f`'s record locks: the process, or (`ofd`) the open
/// file description.
fn lock_owner(f: &OpenFile, ofd: bool) -> locks::Owner {
    if ofd {
        locks::Owner::Description(f as *const OpenFile as usize)
    } else {
        locks::Owner::Process(crate::task::current_process().pid)
    }
}

/// fcntl's record locks (`locks.rs`): F_GETLK, F_SETLK, F_SETLKW and
/// their open-file-description forms (cmd 36..=38), on the `struct
/// flock` at `arg`.
fn record_lock(f: &OpenFile, cmd: u64, arg: u64) -> SysResult {
    const F_RDLCK: u16 = 0;
    const F_WRLCK: u16 = 1;
    const F_UNLCK: u16 = 2;
    let ofd = cmd >= 36;
    let (get, wait) = (cmd == 5 || cmd == 36, cmd == 7 || cmd == 38);
    // struct flock: l_type, l_whence (i16 each), l_start, l_len (i64, at
    // 8 and 16), l_pid (i32 at 24).
    let mut raw = [0u8; 32];
    raw.copy_from_slice(user_bytes(arg, 32)?);
    let word = |at: usize| i64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or_default());
    let ltype = u16::from_le_bytes([raw[0], raw[1]]);
    let whence = u16::from_le_bytes([raw[2], raw[3]]);
    let (lstart, llen) = (word(8), word(16));
    let lpid = i32::from_le_bytes([raw[24], raw[25], raw[26], raw[27]]);
    if ltype > F_UNLCK || (ofd && lpid != 0) || (get && ltype == F_UNLCK) {
        return Err(EINVAL);
    }
    let base = match whence {
        0 => 0,
        1 => f.offset.get() as i64,
        2 => f.node().map_or(0, |n| n.size()) as i64,
        _ => return Err(EINVAL),
    };
    let first = base.checked_add(lstart).ok_or(EOVERFLOW)?;
    let (start, end) = match llen {
        0 => (first, i64::MAX),
        n if n > 0 => (first, first.checked_add(n - 1).ok_or(EOVERFLOW)?),
        n => (first.checked_add(n).ok_or(EOVERFLOW)?, first - 1),
    };
    if start < 0 {
        return Err(EINVAL);
    }
    let (start, end) = (start as u64, if end == i64::MAX { u64::MAX } else { end as u64 });
    let Some(key) = f.lock_key() else {
        // Nothing to share a lock with: it is always free.
        if get {
            put_user(arg, F_UNLCK.to_le_bytes())?;
        }
        return Ok(0);
    };
    let owner = lock_owner(f, ofd);
    let write = ltype == F_WRLCK;
    let req = locks::Lock { space: locks::Space::Record, key, owner, start, end, write };
    if get {
        match req.blocker() {
            None => put_user(arg, F_UNLCK.to_le_bytes())?,
            Some(l) => {
                let mut out = raw;
                out[..2].copy_from_slice(&(if l.write { F_WRLCK } else { F_RDLCK }).to_le_bytes());
                out[2..4].copy_from_slice(&0u16.to_le_bytes());
                out[8..16].copy_from_slice(&(l.start as i64).to_le_bytes());
                let len = if l.end == u64::MAX { 0 } else { (l.end - l.start + 1) as i64 };
                out[16..24].copy_from_slice(&len.to_le_bytes());
                let pid = match l.owner {
                    locks::Owner::Process(pid) => pid as i32,
                    locks::Owner::Description(_) => -1,
                };
                out[24..28].copy_from_slice(&pid.to_le_bytes());
                put_user(arg, out)?;
            }
        }
        return Ok(0);
    }
    if ltype == F_UNLCK {
        return locks::set(locks::Space::Record, key, owner, start, end, None).map(|_| 0);
    }
    if (write && !f.writable()) || (!write && !f.readable()) {
        return Err(EBADF);
    }
    take_lock(req, wait)
}

/// Takes a lock once no other owner's conflicts with it: at once, or
/// EAGAIN (`wait` false), or after blocking until it is free (the call
/// then runs again; a signal interrupts it). A process's record lock
/// that would wait for a process waiting, through a chain of such
/// waits, for this one is EDEADLK instead, as Linux finds it.
fn take_lock(req: locks::Lock, wait: bool) -> SysResult {
    if req.blocker().is_none() {
        return req.take().map(|_| 0);
    }
    if !wait {
        return Err(EAGAIN);
    }
    if deadlocks(&req) {
        return Err(EDEADLK);
    }
    crate::wait::block(crate::wait::Wait::FileLock(req), None, true)
}

/// Whether process record lock `req` waiting would close a circle: its
/// blocker's process waits for a record lock whose blocker's process
/// waits ... for `req`'s (at most 10 steps, as Linux looks).
fn deadlocks(req: &locks::Lock) -> bool {
    let locks::Owner::Process(_) = req.owner else { return false };
    let mut blocker = req.blocker();
    for _ in 0..10 {
        let Some(locks::Lock { owner: locks::Owner::Process(pid), .. }) = blocker else { return false };
        let waits = crate::task::SCHED.get().tasks.iter().find_map(|t| match &*t.wait.borrow() {
            crate::wait::Wait::FileLock(r)
                if t.state.get() == crate::task::State::Blocked
                    && r.owner == locks::Owner::Process(pid)
                    && r.space == locks::Space::Record =>
            {
                Some(*r)
            }
            _ => None,
        });
        let Some(next) = waits else { return false };
        blocker = next.blocker();
        if blocker.is_some_and(|l| l.owner == req.owner) {
            return true;
        }
    }
    false
}

/// flock(2): a whole-file lock owned by the open file description,
/// shared (LOCK_SH) or exclusive (LOCK_EX), LOCK_NB not to wait, or
/// LOCK_UN. A conversion lets the old lock go first, as Linux does.
pub fn sys_flock(fd: u64, op: u64) -> SysResult {
    const LOCK_SH: u64 = 1;
    const LOCK_EX: u64 = 2;
    const LOCK_NB: u64 = 4;
    const LOCK_UN: u64 = 8;
    let f = crate::fds::get(fd)?;
    let kind = match op & !LOCK_NB {
        LOCK_SH => Some(false),
        LOCK_EX => Some(true),
        LOCK_UN => None,
        _ => return Err(EINVAL),
    };
    let Some(key) = f.lock_key() else { return Ok(0) };
    let owner = lock_owner(&f, true);
    let space = locks::Space::Flock;
    match kind {
        None => locks::set(space, key, owner, 0, u64::MAX, None).map(|_| 0),
        Some(write) => {
            let held = locks::held(space, key, owner);
            if held.is_some() && held != Some(write) {
                locks::set(space, key, owner, 0, u64::MAX, None)?;
            }
            take_lock(locks::Lock { space, key, owner, start: 0, end: u64::MAX, write }, op & LOCK_NB == 0)
        }
    }
}

pub fn sys_pipe2(fds: u64, flags: u64) -> SysResult {
    if flags & !((O_CLOEXEC | O_NONBLOCK) as u64) != 0 {
        return Err(EINVAL);
    }
    user_bytes_mut(fds, 8)?;
    let (r, w) = file::new_pipe(flags as u32);
    install_pair(r, w, flags & O_CLOEXEC as u64 != 0, fds)
}

/// Installs two new descriptors and stores their numbers as `int[2]` at
/// `fds` (pipe2, socketpair).
pub fn install_pair(a: Rc<OpenFile>, b: Rc<OpenFile>, cloexec: bool, fds: u64) -> SysResult {
    let afd = crate::fds::install(a, cloexec, 0)?;
    let bfd = match crate::fds::install(b, cloexec, 0) {
        Ok(b) => b,
        Err(e) => {
            let _ = crate::fds::close(afd);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    out[0..4].copy_from_slice(&(afd as u32).to_le_bytes());
    out[4..8].copy_from_slice(&(bfd as u32).to_le_bytes());
    put_user(fds, out)?;
    Ok(0)
}

pub fn sys_umask(mask: u64) -> SysResult {
    let p = crate::task::current_process();
    Ok(p.umask.replace(mask as u32 & 0o777) as u64)
}

pub fn sys_utimensat(dirfd: u64, path: u64, times: u64, flags: u64) -> SysResult {
    const UTIME_NOW: u64 = (1 << 30) - 1;
    const UTIME_OMIT: u64 = (1 << 30) - 2;
    let node = if path == 0 {
        crate::fds::get(dirfd)?.node().cloned().ok_or(EINVAL)?
    } else {
        match resolve_at(dirfd, path, flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH))? {
            NodeOrFile::Node(n) => n,
            NodeOrFile::File(f) => f.node().cloned().ok_or(EINVAL)?,
        }
    };
    if node.readonly() {
        return Err(EROFS);
    }
    let now_ns = crate::time::realtime_ns();
    let now = ((now_ns / 1_000_000_000) as i64, (now_ns % 1_000_000_000) as u32);
    let mut set = [Some(now), Some(now)];
    if times != 0 {
        let b = user_bytes(times, 32)?;
        for (i, slot) in set.iter_mut().enumerate() {
            let sec = u64::from_le_bytes(b[16 * i..16 * i + 8].try_into().map_err(|_| EFAULT)?);
            let nsec = u64::from_le_bytes(b[16 * i + 8..16 * i + 16].try_into().map_err(|_| EFAULT)?);
            *slot = match nsec {
                UTIME_NOW => Some(now),
                UTIME_OMIT => None,
                n if n < 1_000_000_000 => Some((sec as i64, n as u32)),
                _ => return Err(EINVAL),
            };
        }
    }
    let mut m = node.meta.borrow_mut();
    if let Some(a) = set[0] {
        m.atime = a;
    }
    if let Some(t) = set[1] {
        m.mtime = t;
    }
    m.ctime = now;
    drop(m);
    let by_fd = (path == 0 || path_arg(path).is_ok_and(|p| p.is_empty())).then_some(dirfd);
    changed(dirfd, path, by_fd, &node, inotify::IN_ATTRIB);
    Ok(0)
}

pub fn sys_fchmodat(dirfd: u64, path: u64, mode: u64, fd: Option<u64>) -> SysResult {
    let node = match fd {
        Some(fd) => crate::fds::get(fd)?.node().cloned().ok_or(EINVAL)?,
        None => match resolve_at(dirfd, path, 0)? {
            NodeOrFile::Node(n) => n,
            NodeOrFile::File(f) => f.node().cloned().ok_or(EINVAL)?,
        },
    };
    if node.readonly() {
        return Err(EROFS);
    }
    let mut m = node.meta.borrow_mut();
    if m.uid != UID as u32 {
        return Err(EPERM);
    }
    m.mode = (m.mode & S_IFMT) | (mode as u32 & 0o7777);
    drop(m);
    changed(dirfd, path, fd, &node, inotify::IN_ATTRIB);
    Ok(0)
}

/// chown family (`fd`: fchown; else `path` from `dirfd` with `flags`):
/// the file must be there (ENOENT, EBADF, as for any call on it); only to
/// the ids the sandbox user already has (EPERM); EROFS on a read-only
/// mount.
pub fn sys_chown(dirfd: u64, path: u64, fd: Option<u64>, uid: u64, gid: u64, flags: u64) -> SysResult {
    let node = match fd {
        Some(fd) => crate::fds::get(fd)?.node().cloned(),
        None => match resolve_at(dirfd, path, flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH))? {
            NodeOrFile::Node(n) => Some(n),
            NodeOrFile::File(f) => f.node().cloned(),
        },
    };
    let ok = |id: u64| id as u32 == u32::MAX || id == UID;
    if !(ok(uid) && ok(gid)) {
        return Err(EPERM);
    }
    if node.as_ref().is_some_and(|n| n.readonly()) {
        return Err(EROFS);
    }
    if let Some(node) = node {
        let by_fd = fd.or_else(|| path_arg(path).is_ok_and(|p| p.is_empty()).then_some(dirfd));
        changed(dirfd, path, by_fd, &node, inotify::IN_ATTRIB);
    }
    Ok(0)
}

/// Tells inotify watches that `mask` happened to `node`, reached through
/// descriptor `fd`, or as `path` from `dirfd` (its directory's watches
/// too, where that path still names it).
fn changed(dirfd: u64, path: u64, fd: Option<u64>, node: &NodeRef, mask: u32) {
    if !inotify::active() {
        return;
    }
    if let Some(fd) = fd {
        if let Ok(f) = crate::fds::get(fd) {
            f.notify(mask);
        }
        return;
    }
    inotify::child_event_at(parent_at(dirfd, path).ok(), node, mask);
}

pub fn sys_ioctl(fd: u64, req: u64, arg: u64) -> SysResult {
    const FIONREAD: u64 = 0x541b;
    const FIONBIO: u64 = 0x5421;
    const FIOCLEX: u64 = 0x5451;
    const FIONCLEX: u64 = 0x5450;
    const FIOASYNC: u64 = 0x5452;
    let f = crate::fds::get(fd)?;
    if let Some(r) = crate::sys_pty::ioctl(&f, req, arg) {
        return r;
    }
    if let FileKind::Socket(s) = &f.kind {
        const SIOCATMARK: u64 = 0x8905;
        if let Some(at) = s.at_mark().filter(|_| req == SIOCATMARK) {
            put_user(arg, (at as u32).to_le_bytes())?;
            return Ok(0);
        }
        if let Some(r) = crate::netlink::ioctl(req, arg) {
            return r;
        }
    }
    match req {
        FIONREAD => {
            let n = f.read_ready().0 as u32;
            put_user(arg, n.to_le_bytes())?;
            Ok(0)
        }
        FIONBIO => {
            let on = user_bytes(arg, 4)?.iter().any(|&b| b != 0);
            let fl = f.flags.get();
            f.flags.set(if on { fl | O_NONBLOCK } else { fl & !O_NONBLOCK });
            Ok(0)
        }
        FIOCLEX | FIONCLEX => {
            crate::fds::set_cloexec(fd, req == FIOCLEX)?;
            Ok(0)
        }
        FIOASYNC => {
            let on = user_bytes(arg, 4)?.iter().any(|&b| b != 0);
            crate::sigio::set_async(&f, fd as u32, on);
            Ok(0)
        }
        // No terminals here (TCGETS, TIOCGWINSZ, ...).
        _ => Err(ENOTTY),
    }
}

pub fn sys_fsync(fd: u64) -> SysResult {
    crate::fds::get(fd).map(|_| 0)
}

pub fn sys_statfs(buf: u64, readonly: bool) -> SysResult {
    let mut s = [0u8; 120];
    let (_, free) = mm::usage();
    let total = crate::rt::boot().mem_size / 4096;
    let vals: [(usize, u64); 8] = [
        (0, 0x0102_1994), // TMPFS_MAGIC
        (8, 4096),
        (16, total),
        (24, free / 4096),
        (32, free / 4096),
        (40, 1 << 20),
        (48, 1 << 19),
        (64, 255),
    ];
    for (off, v) in vals {
        s[off..off + 8].copy_from_slice(&v.to_le_bytes());
    }
    s[72..80].copy_from_slice(&4096u64.to_le_bytes());
    s[80..88].copy_from_slice(&(if readonly { 1u64 } else { 0 }).to_le_bytes());
    put_user(buf, s)?;
    Ok(0)
}

pub fn sys_statfs_path(path: u64, buf: u64) -> SysResult {
    let n = vfs::resolve(&crate::task::cwd(), path_arg(path)?, true)?;
    sys_statfs(buf, n.readonly())
}

/// The extended-attribute calls (188-199): no file here has any, and none
/// can be set (as on a filesystem without user xattrs): get and remove
/// are `ENODATA`, list is empty, set is `EOPNOTSUPP` — once the file (and,
/// for set, the name) is found, as on Linux.
pub fn sys_xattr(nr: u64, target: u64, name: u64) -> SysResult {
    let by = (nr - 188) % 3; // 0: path, 1: path without following, 2: fd
    match by {
        2 => drop(crate::fds::get(target)?),
        _ => drop(resolve_at(AT_FDCWD as u64, target, if by == 1 { AT_SYMLINK_NOFOLLOW } else { 0 })?),
    }
    match (nr - 188) / 3 {
        0 => {
            user_cstr(name, 256)?;
            Err(EOPNOTSUPP)
        }
        1 | 3 => {
            user_cstr(name, 256)?;
            Err(ENODATA)
        }
        _ => Ok(0),
    }
}

pub fn sys_fstatfs(fd: u64, buf: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    sys_statfs(buf, f.node().is_some_and(|n| n.readonly()))
}

pub fn sys_sendfile(out_fd: u64, in_fd: u64, offp: u64, count: u64) -> SysResult {
    let out = crate::fds::get(out_fd)?;
    let inp = crate::fds::get(in_fd)?;
    // (A negative offset is EINVAL, as on Linux.)
    let mut pos = if offp != 0 { Some(offset_arg(get_u64(offp)?)?) } else { None };
    let mut buf = Vec::new();
    buf.try_reserve(64 * 1024).map_err(|_| ENOMEM)?;
    buf.resize(64 * 1024, 0);
    let mut total = 0u64;
    while total < count {
        let want = ((count - total) as usize).min(buf.len());
        let n = match inp.read(&mut buf[..want], pos) {
            Ok(n) => n,
            Err(e) if total == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        };
        if n == 0 {
            break;
        }
        let w = match write_checked(&out, &buf[..n], None) {
            Ok(w) => w as usize,
            Err(e) if total == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        };
        total += w as u64;
        if let Some(p) = pos.as_mut() {
            *p += w as u64;
        }
        if w < n {
            break;
        }
    }
    if let Some(p) = pos {
        put_u64s(offp, &[p])?;
    }
    Ok(total)
}

pub fn sys_memfd_create(name: u64, flags: u64) -> SysResult {
    const MFD_CLOEXEC: u64 = 1;
    let n = user_cstr(name, 249).map_err(|_| EINVAL)?;
    let node = vfs::new_file(0o777);
    let mut path = b"/memfd:".to_vec();
    path.extend_from_slice(n);
    path.extend_from_slice(b" (deleted)");
    let of = OpenFile::new(FileKind::Node(node), O_RDWR, path);
    crate::fds::install(of, flags & MFD_CLOEXEC != 0, 0)
}

// --- poll and select ---------------------------------------------------------------------

const POLLIN: u16 = 0x1;
const POLLPRI: u16 = 0x2;
const POLLOUT: u16 = 0x4;
const POLLERR: u16 = 0x8;
const POLLHUP: u16 = 0x10;
const POLLNVAL: u16 = 0x20;
const POLL_MAX_FDS: u64 = 4096;

fn poll_one(fd: i32, events: u16) -> u16 {
    if fd < 0 {
        return 0;
    }
    let Ok(f) = crate::fds::get(fd as u64) else { return POLLNVAL };
    poll_file(&f, events)
}

/// What of `events` (and POLLERR, POLLHUP) holds for `f` now. (An epoll
/// descriptor's entries are descriptors of the current process.)
pub fn poll_file(f: &OpenFile, events: u16) -> u16 {
    let mut r = 0;
    match &f.kind {
        FileKind::PipeRead(p) => {
            let p = p.borrow();
            if !p.buf.is_empty() {
                r |= POLLIN;
            }
            if p.writers == 0 {
                r |= POLLHUP;
            }
        }
        FileKind::PipeWrite(p) => {
            let p = p.borrow();
            if p.readers == 0 {
                r |= POLLERR;
            } else if p.buf.len() < p.capacity {
                r |= POLLOUT;
            }
        }
        FileKind::Socket(s) => r |= s.poll(),
        FileKind::Stdin => {
            if crate::io::stdin_ready() {
                r |= POLLIN;
            }
        }
        FileKind::EventFd(count, _) => {
            if count.get() > 0 {
                r |= POLLIN;
            }
            if count.get() < u64::MAX - 1 {
                r |= POLLOUT;
            }
        }
        FileKind::FifoRdWr(p) => {
            // Itself a reader and a writer: never a hang-up.
            let p = p.borrow();
            if !p.buf.is_empty() {
                r |= POLLIN;
            }
            if p.buf.len() < p.capacity {
                r |= POLLOUT;
            }
        }
        FileKind::PtyMaster(_) | FileKind::PtySlave(_) => r = crate::sys_pty::poll(&f.kind),
        FileKind::SignalFd(mask) => {
            if crate::signalfd::readable(mask.get()) {
                r |= POLLIN;
            }
        }
        FileKind::Pidfd(p) => {
            if crate::pidfd::readable(p) {
                r |= POLLIN;
            }
        }
        FileKind::Inotify(i) => {
            if inotify::readable(i) {
                r |= POLLIN;
            }
        }
        FileKind::TimerFd(t) => {
            t.update(crate::timer::wall_now(t.clock));
            if t.ticks.get() > 0 {
                r |= POLLIN;
            }
        }
        FileKind::Epoll(list) => {
            let any = list.borrow().iter().any(|e| e.events != 0 && poll_one(e.fd, e.events as u16) != 0);
            if any {
                r |= POLLIN;
            }
        }
        _ => {
            if f.readable() {
                r |= POLLIN;
            }
            if f.writable() {
                r |= POLLOUT;
            }
        }
    }
    r & (events | POLLERR | POLLHUP)
}

pub fn sys_poll(fds: u64, nfds: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > POLL_MAX_FDS {
        return Err(EINVAL);
    }
    let entries = user_bytes_mut(fds, nfds * 8)?;
    let mut ready = 0;
    for e in entries.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let events = u16::from_le_bytes([e[4], e[5]]);
        let revents = poll_one(fd, events);
        e[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    if ready == 0 && timeout_ns != Some(0) {
        // Wait for activity of another task or the timeout (alone, the
        // host sleeps; an infinite wait ends at the run's deadline).
        return crate::task::wait_event(timeout_ns);
    }
    Ok(ready)
}

/// select/pselect6 over fd_set bitmaps.
pub fn sys_select(nfds: u64, rd: u64, wr: u64, ex: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > max_fds() as u64 {
        return Err(EINVAL);
    }
    let bytes = nfds.div_ceil(64) * 8;
    let load = |p: u64| -> Result<Option<Vec<u8>>, i64> {
        if p == 0 {
            Ok(None)
        } else {
            Ok(Some(user_bytes(p, bytes)?.to_vec()))
        }
    };
    let (r, w, x) = (load(rd)?, load(wr)?, load(ex)?);
    let mut out =
        [alloc::vec![0u8; bytes as usize], alloc::vec![0u8; bytes as usize], alloc::vec![0u8; bytes as usize]];
    let mut count = 0;
    for fd in 0..nfds as usize {
        let bit = |s: &Option<Vec<u8>>| s.as_ref().is_some_and(|s| s[fd / 8] & (1 << (fd % 8)) != 0);
        let (want_r, want_w, want_x) = (bit(&r), bit(&w), bit(&x));
        if !(want_r || want_w || want_x) {
            continue;
        }
        let ev = poll_one(fd as i32, POLLIN | POLLOUT | POLLPRI);
        if ev & POLLNVAL != 0 {
            return Err(EBADF);
        }
        // Exceptional: TCP urgent data.
        if want_x && ev & POLLPRI != 0 {
            out[2][fd / 8] |= 1 << (fd % 8);
            count += 1;
        }
        if want_r && ev & (POLLIN | POLLHUP | POLLERR) != 0 {
            out[0][fd / 8] |= 1 << (fd % 8);
            count += 1;
        }
        if want_w && ev & (POLLOUT | POLLERR) != 0 {
            out[1][fd / 8] |= 1 << (fd % 8);
            count += 1;
        }
    }
    if count == 0 && timeout_ns != Some(0) {
        // Blocked (Err), or the timeout is over: then, as on Linux, the
        // sets come back empty (they were left as given).
        crate::task::wait_event(timeout_ns)?;
    }
    for (p, o) in [(rd, &out[0]), (wr, &out[1]), (ex, &out[2])] {
        if p != 0 {
            user_bytes_mut(p, bytes)?.copy_from_slice(o);
        }
    }
    Ok(count)
}

// --- file mappings ----------------------------------------------------------------------------

/// mmap of a file: MAP_PRIVATE gets a private copy of the pages (or, read
/// only, the file's frames pinned in place); MAP_SHARED of an in-memory
/// file shows the file's own frames (`shm.rs`); MAP_SHARED of a read-only
/// host file is allowed read-only, as a private mapping (nothing writes
/// the file behind it while the program runs).
#[allow(clippy::too_many_arguments)] // mmap's own arguments
pub fn mmap_file(
    addr: u64,
    len: u64,
    prot: u32,
    shared: bool,
    fixed: bool,
    noreplace: bool,
    fd: u64,
    off: u64,
) -> SysResult {
    let f = crate::fds::get(fd)?;
    if !off.is_multiple_of(mm::PAGE) {
        return Err(EINVAL);
    }
    if !f.readable() {
        return Err(EACCES);
    }
    let node = f.node().ok_or(ENODEV)?.clone();
    let NodeKind::File(data) = &node.kind else {
        return match &node.kind {
            NodeKind::Dev(Dev::Zero) if shared => crate::shm::map_anon(addr, len, prot, fixed, noreplace),
            NodeKind::Dev(Dev::Zero) => mm::mmap_anon(addr, len, prot, fixed, noreplace),
            _ => Err(ENODEV),
        };
    };
    if shared && !node.readonly() {
        return crate::shm::map_file(&node, &f, addr, len, prot, fixed, noreplace, off);
    }
    if shared && prot & PROT_WRITE != 0 {
        return Err(EACCES);
    }
    // A file with shared mappings changes under them: a private mapping
    // gets copies rather than pinning its frames.
    let in_place = data.borrow().shared.maps == 0;
    let file_pages = node.size().div_ceil(mm::PAGE);
    let first = off / mm::PAGE;
    let mut frame = |i: u64| -> Result<Option<u64>, i64> {
        let index = first + i;
        if index >= file_pages {
            return Ok(None);
        }
        let mut d = data.borrow_mut();
        if prot & PROT_WRITE == 0 && in_place {
            d.pin();
        }
        d.frame(index as usize).map(Some)
    };
    mm::map_file(addr, len, prot, fixed, noreplace, in_place, &mut frame)
}

// --- epoll and eventfd ----------------------------------------------------------------------

pub fn sys_epoll_create1(flags: u64) -> SysResult {
    if flags & !(O_CLOEXEC as u64) != 0 {
        return Err(EINVAL);
    }
    let of = OpenFile::new(
        FileKind::Epoll(core::cell::RefCell::new(Vec::new())),
        O_RDWR,
        b"anon_inode:[eventpoll]".to_vec(),
    );
    crate::fds::install(of, flags & O_CLOEXEC as u64 != 0, 0)
}

pub fn sys_epoll_ctl(epfd: u64, op: u64, fd: u64, event: u64) -> SysResult {
    const ADD: u64 = 1;
    const DEL: u64 = 2;
    const MOD: u64 = 3;
    let ep = crate::fds::get(epfd)?;
    let FileKind::Epoll(list) = &ep.kind else { return Err(EINVAL) };
    let target = crate::fds::get(fd)?;
    if Rc::ptr_eq(&ep, &target) {
        return Err(EINVAL);
    }
    if matches!(target.kind, FileKind::Node(ref n) if n.mode() & S_IFMT == vfs::S_IFREG || n.is_dir()) {
        return Err(EPERM); // regular files are always ready: Linux refuses them
    }
    let (events, data) = if op == DEL {
        (0, 0)
    } else {
        let b = user_bytes(event, 12)?;
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u64::from_le_bytes(b[4..12].try_into().map_err(|_| EFAULT)?))
    };
    let mut list = list.borrow_mut();
    list.retain(|e| e.file.strong_count() > 0);
    let pos = list.iter().position(|e| e.fd == fd as i32 && e.file.upgrade().is_some_and(|f| Rc::ptr_eq(&f, &target)));
    match (op, pos) {
        (ADD, Some(_)) => Err(EEXIST),
        (ADD, None) => {
            if list.len() >= 65536 {
                return Err(ENOSPC);
            }
            if !crate::heap::has_room() {
                return Err(ENOMEM);
            }
            list.try_reserve(1).map_err(|_| ENOMEM)?;
            list.push(file::EpollEntry { fd: fd as i32, file: Rc::downgrade(&target), events, data, reported: (0, 0) });
            Ok(0)
        }
        (MOD, Some(i)) => {
            // (Re-armed: whatever is ready is reported again.)
            list[i].events = events;
            list[i].data = data;
            list[i].reported = (0, 0);
            Ok(0)
        }
        (DEL, Some(i)) => {
            list.remove(i);
            Ok(0)
        }
        (MOD | DEL, None) => Err(ENOENT),
        _ => Err(EINVAL),
    }
}

/// epoll_wait. An edge-triggered entry (EPOLLET) is reported when it has
/// events it did not have when last reported, or when anything a poller
/// may care about happened since (`wait::notify`: data came or went on
/// some file; Linux re-arms it on activity of its own file). That may
/// report an entry Linux would not (never one fewer), and an entry that
/// stays ready with nothing happening is not reported again: a program
/// waiting in epoll_wait sleeps instead of spinning.
pub fn sys_epoll_wait(epfd: u64, events: u64, max: u64, timeout_ns: Option<u64>) -> SysResult {
    const EPOLLONESHOT: u32 = 1 << 30;
    const EPOLLET: u32 = 1 << 31;
    if max == 0 || max > 65536 {
        return Err(EINVAL);
    }
    let ep = crate::fds::get(epfd)?;
    let FileKind::Epoll(list) = &ep.kind else { return Err(EINVAL) };
    let out = user_bytes_mut(events, max * 12)?;
    let mut n = 0usize;
    {
        let mut list = list.borrow_mut();
        list.retain(|e| e.file.strong_count() > 0);
        for e in list.iter_mut() {
            if n as u64 == max {
                break;
            }
            // The descriptor must still name the registered file.
            let same = crate::fds::get(e.fd as u64).ok().zip(e.file.upgrade()).is_some_and(|(a, b)| Rc::ptr_eq(&a, &b));
            if !same || e.events & 0xffff == 0 {
                continue;
            }
            let rev = poll_one(e.fd, e.events as u16) as u32 & (e.events | POLLERR as u32 | POLLHUP as u32);
            if e.events & EPOLLET != 0 {
                let now = crate::wait::event();
                let (last, then) = e.reported;
                if rev == 0 || (rev & !last == 0 && then == now) {
                    e.reported = (rev, then);
                    continue;
                }
                e.reported = (rev, now);
            }
            if rev != 0 {
                out[n * 12..n * 12 + 4].copy_from_slice(&rev.to_le_bytes());
                out[n * 12 + 4..n * 12 + 12].copy_from_slice(&e.data.to_le_bytes());
                n += 1;
                if e.events & EPOLLONESHOT != 0 {
                    e.events &= !0xffff;
                }
            }
        }
    }
    if n == 0 && timeout_ns != Some(0) {
        return crate::task::wait_event(timeout_ns);
    }
    Ok(n as u64)
}

pub fn sys_eventfd2(initval: u64, flags: u64) -> SysResult {
    const EFD_SEMAPHORE: u64 = 1;
    if flags & !(O_CLOEXEC as u64 | O_NONBLOCK as u64 | EFD_SEMAPHORE) != 0 {
        return Err(EINVAL);
    }
    let of = OpenFile::new(
        FileKind::EventFd(core::cell::Cell::new(initval & 0xffff_ffff), flags & EFD_SEMAPHORE != 0),
        O_RDWR | (flags as u32 & O_NONBLOCK),
        b"anon_inode:[eventfd]".to_vec(),
    );
    crate::fds::install(of, flags & O_CLOEXEC as u64 != 0, 0)
}
