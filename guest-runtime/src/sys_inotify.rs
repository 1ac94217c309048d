//! inotify's system calls (`inotify.rs` keeps the watches and events):
//! inotify_init/inotify_init1, inotify_add_watch and inotify_rm_watch.

use alloc::rc::Rc;

use crate::errno::*;
use crate::file::{FileKind, OpenFile, O_CLOEXEC, O_NONBLOCK, O_RDONLY};
use crate::inotify::{self, Inotify};
use crate::sys_fs::path_arg;
use crate::vfs;

type SysResult = Result<u64, i64>;

/// inotify_init1(2) (and inotify_init: `flags` 0): a new descriptor;
/// IN_NONBLOCK and IN_CLOEXEC are O_NONBLOCK and O_CLOEXEC.
pub fn sys_inotify_init1(flags: u64) -> SysResult {
    let flags = u32::try_from(flags).map_err(|_| EINVAL)?;
    if flags & !(O_NONBLOCK | O_CLOEXEC) != 0 {
        return Err(EINVAL);
    }
    let i = inotify::new_instance()?;
    let of = OpenFile::new(FileKind::Inotify(i), O_RDONLY | (flags & O_NONBLOCK), b"anon_inode:inotify".to_vec());
    crate::fds::install(of, flags & O_CLOEXEC != 0, 0)
}

fn instance(fd: u64) -> Result<Rc<Inotify>, i64> {
    match &crate::fds::get(fd)?.kind {
        FileKind::Inotify(i) => Ok(i.clone()),
        _ => Err(EINVAL),
    }
}

/// inotify_add_watch(2): watches the file or directory at `path` (from
/// the working directory) for the events in `mask`; returns its watch
/// descriptor. The caller must be able to read it (EACCES).
pub fn sys_inotify_add_watch(fd: u64, path: u64, mask: u64) -> SysResult {
    let i = instance(fd)?;
    let mask = u32::try_from(mask).map_err(|_| EINVAL)?;
    let p = path_arg(path)?;
    if p.is_empty() {
        return Err(ENOENT);
    }
    let node = vfs::resolve(&crate::task::cwd(), p, inotify::follows(mask))?;
    if !vfs::permitted(&node, 4) {
        return Err(EACCES);
    }
    inotify::add_watch(&i, &node, mask)
}

/// inotify_rm_watch(2): ends watch `wd` (EINVAL: no such watch).
pub fn sys_inotify_rm_watch(fd: u64, wd: u64) -> SysResult {
    inotify::rm_watch(&*instance(fd)?, wd as i32)
}
