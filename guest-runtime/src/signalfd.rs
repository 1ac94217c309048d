//! signalfd: a descriptor that reads the caller's pending signals of a
//! set (usually blocked ones) as `signalfd_siginfo` records, and polls
//! readable while one is pending. Reading takes the signal, as its
//! delivery would. And rt_sigtimedwait, which takes them the same way.

use crate::errno::*;
use crate::file::{FileKind, OpenFile, O_CLOEXEC, O_NONBLOCK, O_RDONLY};
use crate::task::{self, SIGKILL, SIGSTOP};
use crate::uaccess::*;

type SysResult = Result<u64, i64>;

/// The size of a `signalfd_siginfo`.
const RECORD: usize = 128;

fn settable(mask: u64) -> u64 {
    mask & !((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1)))
}

/// signalfd(2)/signalfd4(2): a new descriptor (`fd` -1) or a new set for
/// an existing one.
pub fn sys_signalfd4(fd: u64, mask: u64, size: u64, flags: u64) -> SysResult {
    if size != 8 || flags & !(O_CLOEXEC as u64 | O_NONBLOCK as u64) != 0 {
        return Err(EINVAL);
    }
    let set = settable(get_u64(mask)?);
    if fd as i32 != -1 {
        let f = crate::fds::get(fd)?;
        let FileKind::SignalFd(m) = &f.kind else { return Err(EINVAL) };
        m.set(set);
        crate::wait::notify();
        return Ok(fd);
    }
    crate::file::set_signalfd_read(read);
    let of = OpenFile::new(
        FileKind::SignalFd(core::cell::Cell::new(set)),
        O_RDONLY | (flags as u32 & O_NONBLOCK),
        b"anon_inode:[signalfd]".to_vec(),
    );
    crate::fds::install(of, flags & O_CLOEXEC as u64 != 0, 0)
}

/// The signals of `mask` pending for the current thread.
fn pending(mask: u64) -> u64 {
    let t = task::current();
    let p = t.process.borrow();
    (t.pending.get() | p.pending.get()) & mask
}

/// poll(2): readable while a signal of the set is pending.
pub fn readable(mask: u64) -> bool {
    pending(mask) != 0
}

/// What a taken signal carried.
enum Taken {
    /// The siginfo it was sent with (kill, tgkill, sigqueue).
    Info([u8; 128]),
    /// A POSIX timer's.
    Timer(crate::timer::Queued),
    /// Nothing of its own.
    Plain,
}

/// Takes the first pending signal of `mask` for the current thread (its
/// own first), with what it carried.
fn take(mask: u64) -> Option<(u32, Taken)> {
    let t = task::current();
    let p = t.process.borrow().clone();
    let pend = pending(mask);
    if pend == 0 {
        return None;
    }
    let sig = pend.trailing_zeros() + 1;
    let taken = match task::take_signal(&t, sig) {
        Some(info) => Taken::Info(info),
        None => p.timers.take(sig, t.tid()).map_or(Taken::Plain, Taken::Timer),
    };
    Some((sig, taken))
}

/// Reads records of pending signals of `mask` into `out` (room for one
/// at least): the bytes written, None when none is pending.
fn read(mask: u64, out: &mut [u8]) -> Option<usize> {
    let p = task::current_process();
    let mut n = 0;
    while n + RECORD <= out.len() {
        let Some((sig, taken)) = take(mask) else { break };
        let mut r = [0u8; RECORD];
        r[0..4].copy_from_slice(&sig.to_le_bytes());
        if let Taken::Info(si) = taken {
            // signalfd_siginfo from siginfo: ssi_code, ssi_pid, ssi_uid
            // and the value (ssi_int, ssi_ptr).
            r[8..12].copy_from_slice(&si[8..12]);
            r[12..16].copy_from_slice(&si[16..20]);
            r[16..20].copy_from_slice(&si[20..24]);
            r[44..48].copy_from_slice(&si[24..28]);
            r[48..56].copy_from_slice(&si[24..32]);
        } else if let Taken::Timer(q) = taken {
            r[8..12].copy_from_slice(&crate::timer::SI_TIMER.to_le_bytes());
            r[24..28].copy_from_slice(&(q.timer as u32).to_le_bytes()); // ssi_tid: the timer
            r[32..36].copy_from_slice(&q.overrun.to_le_bytes());
            r[44..48].copy_from_slice(&(q.value as u32).to_le_bytes()); // ssi_int
            r[48..56].copy_from_slice(&q.value.to_le_bytes()); // ssi_ptr
        } else if sig == task::SIGCHLD {
            // Which child: one that is a zombie now (what waitid would say).
            if let Some((pid, code, status)) = crate::signal::child_exit(&p) {
                r[8..12].copy_from_slice(&code.to_le_bytes());
                r[12..16].copy_from_slice(&pid.to_le_bytes());
                r[16..20].copy_from_slice(&(crate::rt::UID as u32).to_le_bytes());
                r[40..44].copy_from_slice(&status.to_le_bytes());
            }
        }
        out[n..n + RECORD].copy_from_slice(&r);
        n += RECORD;
    }
    (n > 0).then_some(n)
}

/// rt_sigtimedwait(2) (sigwaitinfo, sigtimedwait, sigwait): takes a
/// pending signal of the set, writing its siginfo; otherwise waits for
/// one until the timeout (EAGAIN), or EINTR when a handler runs first.
pub fn sys_rt_sigtimedwait(set: u64, info: u64, timeout: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let mask = settable(get_u64(set)?);
    let limit = if timeout == 0 { None } else { Some(read_timespec(timeout)?) };
    if info != 0 {
        user_bytes_mut(info, 128)?;
    }
    if let Some((sig, taken)) = take(mask) {
        if info != 0 {
            let si = match taken {
                Taken::Info(si) => si,
                Taken::Timer(q) => crate::timer::siginfo(&q),
                Taken::Plain => crate::signal::plain_info(sig),
            };
            user_bytes_mut(info, 128)?.copy_from_slice(&si);
        }
        return Ok(sig as u64);
    }
    if limit == Some(0) {
        return Err(EAGAIN);
    }
    // A call run again after a wake keeps the deadline it started with.
    let now = crate::time::monotonic_ns();
    let deadline = task::current().restart_deadline.take().or_else(|| limit.map(|ns| now.saturating_add(ns)));
    if deadline.is_some_and(|d| now >= d) {
        return Err(EAGAIN);
    }
    task::block(crate::wait::Wait::SignalOf(mask), deadline, true)
}
