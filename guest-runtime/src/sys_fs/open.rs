//! Opening files: openat (open and creat too), memfd_create.

use crate::errno::*;
use crate::fds::*;
use crate::file::{self, FileKind, OpenFile, *};
use crate::inotify;
use crate::uaccess::*;
use crate::vfs::{self, Dev, NodeKind};

use super::SysResult;

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
