//! Status: fstat, newfstatat (stat, lstat), statx; of the filesystem,
//! statfs and fstatfs.

use alloc::rc::Rc;

use crate::file::{self, FileKind, OpenFile};
use crate::mm;
use crate::rt::UID;
use crate::uaccess::*;
use crate::vfs::{self, Dev, NodeKind, NodeRef, S_IFIFO, S_IFSOCK};

use super::{resolve_at, NodeOrFile, SysResult};

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

pub fn sys_fstatfs(fd: u64, buf: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    sys_statfs(buf, f.node().is_some_and(|n| n.readonly()))
}
