//! Notifications a program asks for: inotify's system calls
//! (`inotify.rs` keeps the watches and events: inotify_init and
//! inotify_init1, inotify_add_watch, inotify_rm_watch), and fcntl's
//! commands for a descriptor's signals: its owner (F_SETOWN,
//! F_SETOWN_EX and their F_GET forms), the signal of its notifications
//! (F_SETSIG, F_GETSIG), and directory notifications (F_NOTIFY).

use alloc::rc::Rc;

use crate::errno::*;
use crate::file::{FileKind, OpenFile, O_CLOEXEC, O_NONBLOCK, O_RDONLY};
use crate::inotify::{self, Inotify};
use crate::uaccess::{path_arg, put_user, user_bytes};
use crate::vfs;
use crate::wait::{Owner, F_OWNER_PGRP, F_OWNER_PID, F_OWNER_TID};

pub const F_SETOWN: u64 = 8;
pub const F_GETOWN: u64 = 9;
pub const F_SETSIG: u64 = 10;
pub const F_GETSIG: u64 = 11;
pub const F_SETOWN_EX: u64 = 15;
pub const F_GETOWN_EX: u64 = 16;
pub const F_NOTIFY: u64 = 1026;

/// fcntl's owner, signal and notification commands on `f`, open as `fd`.
pub fn fcntl(f: &Rc<OpenFile>, fd: u64, cmd: u64, arg: u64) -> SysResult {
    match cmd {
        F_SETOWN => {
            // A pid, or minus a process group's id; 0: nobody.
            let who = arg as i32;
            let owner = match who {
                0 => Owner::default(),
                w if w > 0 => Owner { kind: F_OWNER_PID, id: w as u32 },
                w => Owner { kind: F_OWNER_PGRP, id: w.unsigned_abs() },
            };
            set_owner(f, owner)
        }
        F_GETOWN => {
            let o = f.owner.get();
            Ok(if o.kind == F_OWNER_PGRP { (-(o.id as i64)) as u64 } else { o.id as u64 })
        }
        F_SETOWN_EX => {
            let b = user_bytes(arg, 8)?;
            let kind = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            let id = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            if kind > F_OWNER_PGRP || id < 0 {
                return Err(EINVAL);
            }
            set_owner(f, Owner { kind, id: id as u32 })
        }
        F_GETOWN_EX => {
            let o = f.owner.get();
            // (No owner reads as F_OWNER_PID 0, as on Linux.)
            let kind = if o.id == 0 { F_OWNER_PID } else { o.kind };
            let mut out = [0u8; 8];
            out[..4].copy_from_slice(&kind.to_le_bytes());
            out[4..].copy_from_slice(&o.id.to_le_bytes());
            put_user(arg, out)?;
            Ok(0)
        }
        F_SETSIG => {
            if arg > 64 {
                return Err(EINVAL);
            }
            f.sig.set(arg as u32);
            Ok(0)
        }
        F_GETSIG => Ok(f.sig.get() as u64),
        F_NOTIFY => {
            let dir = f.node().filter(|n| n.is_dir()).ok_or(ENOTDIR)?.clone();
            let me = Owner { kind: F_OWNER_PID, id: crate::task::current_process().pid };
            crate::dnotify::dir_notify(f, fd as u32, &dir, arg as u32, me)?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

/// F_SETOWN/F_SETOWN_EX: ESRCH for a thread, process or group that is
/// not there. A socket's owner also gets SIGURG for its urgent data.
fn set_owner(f: &OpenFile, owner: Owner) -> SysResult {
    let there = match owner.kind {
        _ if owner.id == 0 => true,
        F_OWNER_TID | F_OWNER_PID => crate::task::find_task(owner.id).is_some(),
        _ => crate::task::live_processes().iter().any(|p| p.pgid.get() == owner.id),
    };
    if !there {
        return Err(ESRCH);
    }
    f.owner.set(owner);
    if let FileKind::Socket(s) = &f.kind {
        s.set_owner(owner);
    }
    Ok(0)
}

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
