//! File locks on the lock table `locks.rs`: fcntl's record locks
//! (F_GETLK, F_SETLK, F_SETLKW and their open-file-description forms) and
//! flock.

use crate::errno::*;
use crate::file::OpenFile;
use crate::locks;
use crate::uaccess::*;

use super::SysResult;

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
pub(super) fn record_lock(f: &OpenFile, cmd: u64, arg: u64) -> SysResult {
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
