//! pidfds: a descriptor naming a process (`pidfd_open`, or `clone`'s
//! `CLONE_PIDFD`), polled readable once the process has exited; signals
//! sent through it (`pidfd_send_signal`) and waits on it
//! (`waitid(P_PIDFD)`) reach that process and no other, even once its pid
//! is reused. Python's asyncio (its pidfd child watcher), Go's os package
//! and systemd use them.

use alloc::rc::Rc;

use crate::errno::*;
use crate::file::{FileKind, OpenFile, PidRef, O_NONBLOCK, O_RDWR};
use crate::task::{self, Process};
use crate::uaccess::*;
use crate::vfs::NodeKind;

type SysResult = Result<u64, i64>;

/// `PIDFD_NONBLOCK`: the only flag of pidfd_open.
const PIDFD_NONBLOCK: u64 = O_NONBLOCK as u64;
/// pidfd_send_signal's flags (Linux 6.9): to the thread the pidfd names
/// (a process's pidfd names its leader), its process (the default), or
/// the process's group.
const PIDFD_SIGNAL_THREAD: u64 = 1;
const PIDFD_SIGNAL_THREAD_GROUP: u64 = 2;
const PIDFD_SIGNAL_PROCESS_GROUP: u64 = 4;

/// A new pidfd for `p`, close-on-exec as Linux makes them.
pub fn install(p: &Rc<Process>, nonblock: bool) -> SysResult {
    let any: Rc<dyn core::any::Any> = p.clone();
    let of = OpenFile::new(
        FileKind::Pidfd(PidRef { pid: p.pid, process: Rc::downgrade(&any) }),
        O_RDWR | if nonblock { O_NONBLOCK } else { 0 },
        b"anon_inode:[pidfd]".to_vec(),
    );
    crate::fds::install(of, true, 0)
}

/// pidfd_open(2): a pidfd for process `pid`, alive or a zombie (ESRCH:
/// none; ENOENT: a thread that does not lead its process).
pub fn sys_pidfd_open(pid: u64, flags: u64) -> SysResult {
    if flags & !PIDFD_NONBLOCK != 0 || pid as i32 <= 0 || pid > u32::MAX as u64 {
        return Err(EINVAL);
    }
    let p = match task::find_process(pid as u32).or_else(|| zombie(pid as u32)) {
        Some(p) => p,
        // A thread that does not lead its process (Linux 6.9 on).
        None if task::find_task(pid as u32).is_some() => return Err(ENOENT),
        None => return Err(ESRCH),
    };
    install(&p, flags & PIDFD_NONBLOCK != 0)
}

/// Process `pid` if it exited and its parent has not reaped it.
fn zombie(pid: u32) -> Option<Rc<Process>> {
    task::live_processes()
        .iter()
        .find_map(|p| p.children.borrow().iter().find(|c| c.pid == pid && c.status.get().is_some()).cloned())
}

/// The process a pidfd names while it is still known (alive, or a zombie
/// not reaped).
fn process_of(r: &PidRef) -> Option<Rc<Process>> {
    r.process.upgrade()?.downcast::<Process>().ok()
}

/// Whether `p`, which exited, is still a zombie: its parent has not
/// reaped it.
fn unreaped(p: &Rc<Process>) -> bool {
    task::live_processes().iter().any(|q| q.children.borrow().iter().any(|c| Rc::ptr_eq(c, p)))
}

/// poll(2): readable once the process has exited.
pub fn readable(r: &PidRef) -> bool {
    process_of(r).is_none_or(|p| p.status.get().is_some())
}

/// The pid a pidfd names (`waitid(P_PIDFD)`); EBADF for another file.
pub fn pid_of(fd: u64) -> Result<u32, i64> {
    match &crate::fds::get(fd)?.kind {
        FileKind::Pidfd(r) => Ok(r.pid),
        _ => Err(EBADF),
    }
}

/// pidfd_send_signal(2): `sig` to the process the pidfd (or a `/proc/<pid>`
/// directory's descriptor) names (0: only
/// whether it is there), or as `flags` say its leader thread or its
/// process group. A `siginfo` must name the same signal and is delivered
/// as the caller gave it (to another process, only one rt_sigqueueinfo
/// would take: EPERM). A process that exited but was not reaped takes
/// the signal as Linux's zombies do (nothing happens); one reaped is
/// ESRCH.
pub fn sys_pidfd_send_signal(fd: u64, sig: u64, info: u64, flags: u64) -> SysResult {
    // A pidfd, or (as Linux takes too) a `/proc/<pid>` directory opened.
    let f = crate::fds::get(fd)?;
    let (p, pid) = match &f.kind {
        FileKind::Pidfd(r) => (process_of(r), r.pid),
        FileKind::Node(n) => match n.kind {
            NodeKind::Proc(Some(pid)) => (task::find_process(pid).or_else(|| zombie(pid)), pid),
            _ => return Err(EBADF),
        },
        _ => return Err(EBADF),
    };
    let scope = [0, PIDFD_SIGNAL_THREAD, PIDFD_SIGNAL_THREAD_GROUP, PIDFD_SIGNAL_PROCESS_GROUP];
    if !scope.contains(&flags) || sig > 64 {
        return Err(EINVAL);
    }
    // The caller's siginfo (as rt_sigqueueinfo's: another process may be
    // sent only a negative si_code other than SI_TKILL), else kill's.
    let given = if info != 0 {
        let mut si = [0u8; 128];
        si.copy_from_slice(user_bytes(info, 128)?);
        if u32::from_le_bytes([si[0], si[1], si[2], si[3]]) as u64 != sig {
            return Err(EINVAL);
        }
        Some(si)
    } else {
        None
    };
    let p = p.ok_or(ESRCH)?;
    if given.is_some_and(|si| !crate::sigqueue::caller_info_allowed(&si, Rc::ptr_eq(&p, &task::current_process()))) {
        return Err(EPERM);
    }
    if p.status.get().is_some() {
        return if unreaped(&p) { Ok(0) } else { Err(ESRCH) };
    }
    if sig == 0 {
        return Ok(0);
    }
    let sig = sig as u32;
    let info = || match given {
        Some(si) => task::Info::Queue(si),
        None => task::Info::With(task::sender_info(sig, crate::sigqueue::SI_USER)),
    };
    match flags {
        PIDFD_SIGNAL_THREAD => {
            let leader = task::find_task(pid).ok_or(ESRCH)?;
            task::send_signal_info(&p, Some(&leader), sig, info())?;
        }
        PIDFD_SIGNAL_PROCESS_GROUP => {
            for q in task::live_processes().iter().filter(|q| q.pgid.get() == p.pgid.get()) {
                task::send_signal_info(q, None, sig, info())?;
            }
        }
        _ => {
            task::send_signal_info(&p, None, sig, info())?;
        }
    }
    Ok(0)
}
