//! File-related system calls: descriptors, paths, directories, pipes,
//! polling, file mappings.
//!
//! One short, independent handler per file system call, on the layers
//! below (descriptors `fds.rs`, files `file.rs`, the tree `vfs.rs`), a
//! file per call family:
//!
//! - `open.rs`: openat (open, creat), memfd_create;
//! - `rw.rs`: read, write, pread64, pwrite64, readv, writev (preadv,
//!   pwritev), lseek, sendfile;
//! - `stat.rs`: fstat, newfstatat (stat, lstat), statx, statfs, fstatfs;
//! - `dirs.rs`: getdents64, getcwd, chdir, fchdir;
//! - `paths.rs`: readlinkat, faccessat, mkdirat, unlinkat, renameat2,
//!   linkat, mknodat, symlinkat (and their older forms);
//! - `attrs.rs`: truncate, ftruncate, fallocate, umask, utimensat,
//!   fchmodat, the chown family, the xattr calls;
//! - `descriptors.rs`: close, dup, dup3, fcntl, ioctl, fsync;
//! - `locking.rs`: fcntl's record locks, flock;
//! - `pipes.rs`: pipe2, eventfd2;
//! - `poll.rs`: poll, select, the epoll calls;
//! - `mapping.rs`: mmap of a file.
//!
//! This file holds what several families share (`SysResult`, the `AT_*`
//! flags, the resolution of a `(dirfd, path)` argument pair) and
//! re-exports the handlers: callers name them `sys_fs::...`.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::fds::*;
use crate::file::OpenFile;
use crate::uaccess::*;
use crate::vfs::{self, NodeRef};

mod attrs;
mod descriptors;
mod dirs;
mod locking;
mod mapping;
mod open;
mod paths;
mod pipes;
mod poll;
mod rw;
mod stat;

pub use attrs::{
    sys_chown, sys_fallocate, sys_fchmodat, sys_ftruncate, sys_truncate, sys_umask, sys_utimensat, sys_xattr,
};
pub use descriptors::{sys_close, sys_dup, sys_dup3, sys_fcntl, sys_fsync, sys_ioctl};
pub use dirs::{sys_chdir, sys_fchdir, sys_getcwd, sys_getdents64};
pub use locking::sys_flock;
pub use mapping::mmap_file;
pub use open::{sys_memfd_create, sys_openat};
pub use paths::{
    sys_faccessat, sys_linkat, sys_mkdirat, sys_mknodat, sys_readlinkat, sys_renameat2, sys_symlinkat, sys_unlinkat,
};
pub use pipes::{install_pair, sys_eventfd2, sys_pipe2};
pub use poll::{poll_file, sys_epoll_create1, sys_epoll_ctl, sys_epoll_wait, sys_poll, sys_select};
pub use rw::{sys_lseek, sys_pread, sys_pwrite, sys_read, sys_readv, sys_sendfile, sys_write, sys_writev};
pub use stat::{sys_fstat, sys_fstatfs, sys_newfstatat, sys_statfs_path, sys_statx};

pub type SysResult = Result<u64, i64>;

const AT_FDCWD: i32 = -100;
const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_SYMLINK_FOLLOW: u64 = 0x400;
const AT_EMPTY_PATH: u64 = 0x1000;

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
