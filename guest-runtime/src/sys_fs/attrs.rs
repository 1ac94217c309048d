//! A file's attributes: its size (truncate, ftruncate, fallocate), times
//! (utimensat), mode (fchmodat, and umask for new files), owner (the
//! chown family) and extended attributes (the xattr calls).

use crate::errno::*;
use crate::inotify;
use crate::rt::UID;
use crate::uaccess::*;
use crate::vfs::{self, NodeKind, NodeRef, S_IFMT};

use super::{parent_at, resolve_at, NodeOrFile, SysResult, AT_EMPTY_PATH, AT_FDCWD, AT_SYMLINK_NOFOLLOW};

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
