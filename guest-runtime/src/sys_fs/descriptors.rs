//! Calls on a descriptor as such: close, dup, dup3 (dup2), fcntl (its
//! record locks are `locking.rs`'s), ioctl, fsync.

use crate::errno::*;
use crate::fds::*;
use crate::file::{FileKind, *};
use crate::uaccess::*;

use super::locking::record_lock;
use super::SysResult;

pub fn sys_close(fd: u64) -> SysResult {
    crate::fds::close(fd).map(|_| 0)
}

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
