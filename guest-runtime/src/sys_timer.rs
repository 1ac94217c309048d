//! The timer and CPU-time system calls: setitimer/getitimer (all three
//! kinds), POSIX timers (timer_create .. timer_delete), timerfds, the
//! CPU-time clocks, getrusage and times. The timers themselves are
//! `timer.rs`; the scheduler fires them (`task.rs`).

use alloc::rc::Rc;

use crate::errno::*;
use crate::file::{FileKind, OpenFile, O_CLOEXEC, O_NONBLOCK, O_RDONLY};
use crate::task::{self, Process};
use crate::time;
use crate::timer::{Arm, Clock, Notify, TimerFd};
use crate::uaccess::*;

type SysResult = Result<u64, i64>;

const ITIMER_REAL: u64 = 0;
const ITIMER_VIRTUAL: u64 = 1;
const ITIMER_PROF: u64 = 2;
const TIMER_ABSTIME: u64 = 1;

fn timeval_ns(sec: u64, usec: u64) -> Result<u64, i64> {
    if sec > i64::MAX as u64 || usec >= 1_000_000 {
        return Err(EINVAL);
    }
    Ok(sec.saturating_mul(1_000_000_000).saturating_add(usec * 1000))
}

fn words<const N: usize>(va: u64) -> Result<[u64; N], i64> {
    let b = user_bytes(va, 8 * N as u64)?;
    let mut w = [0u64; N];
    for (i, x) in w.iter_mut().enumerate() {
        *x = u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().map_err(|_| EFAULT)?);
    }
    Ok(w)
}

/// (value, interval) as an itimerval {interval, value}.
fn put_itimerval(va: u64, (value, interval): (u64, u64)) -> SysResult {
    let us = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000 / 1000];
    let (i, v) = (us(interval), us(value));
    put_u64s(va, &[i[0], i[1], v[0], v[1]])?;
    Ok(0)
}

/// (value, interval) as an itimerspec {interval, value}.
fn put_itimerspec(va: u64, (value, interval): (u64, u64)) -> SysResult {
    let ts = |ns: u64| [ns / 1_000_000_000, ns % 1_000_000_000];
    let (i, v) = (ts(interval), ts(value));
    put_u64s(va, &[i[0], i[1], v[0], v[1]])?;
    Ok(0)
}

/// An itimerspec's (value, interval), checked.
fn get_itimerspec(va: u64) -> Result<(u64, u64), i64> {
    let w = words::<4>(va)?;
    Ok((timespec_ns(w[2], w[3])?, timespec_ns(w[0], w[1])?))
}

fn process_cpu(p: &Process) -> u64 {
    task::clock_now(p, Clock::ProcessCpu).unwrap_or(0)
}

/// setitimer(2): ITIMER_REAL is the alarm; ITIMER_VIRTUAL and ITIMER_PROF
/// count the process's CPU time (both the same here: user and system
/// time are not told apart).
pub fn sys_setitimer(which: u64, new: u64, old: u64) -> SysResult {
    let (value, interval) = if new == 0 {
        (0, 0)
    } else {
        let w = words::<4>(new)?;
        (timeval_ns(w[2], w[3])?, timeval_ns(w[0], w[1])?)
    };
    let was = match which {
        ITIMER_REAL => task::set_alarm(value, interval),
        ITIMER_VIRTUAL | ITIMER_PROF => {
            let p = task::current_process();
            let now = process_cpu(&p);
            let mut its = p.timers.itimers.get();
            let a = &mut its[which as usize - 1];
            let was = (a.left(now), a.interval);
            *a = Arm { due: (value > 0).then(|| now.saturating_add(value)), interval };
            p.timers.itimers.set(its);
            task::recompute_next_alarm();
            was
        }
        _ => return Err(EINVAL),
    };
    if old != 0 {
        put_itimerval(old, was)?;
    }
    Ok(0)
}

pub fn sys_getitimer(which: u64, cur: u64) -> SysResult {
    let v = match which {
        ITIMER_REAL => task::get_alarm(),
        ITIMER_VIRTUAL | ITIMER_PROF => {
            let p = task::current_process();
            let now = process_cpu(&p);
            let a = p.timers.itimers.get()[which as usize - 1];
            (a.left(now), a.interval)
        }
        _ => return Err(EINVAL),
    };
    put_itimerval(cur, v)
}

// --- CPU-time clocks -------------------------------------------------------------------

/// A CPU-time clock id: CLOCK_PROCESS_CPUTIME_ID (2), CLOCK_THREAD_CPUTIME_ID
/// (3), or a negative id of a process or thread (clock_getcpuclockid,
/// pthread_getcpuclockid: `~pid << 3 | thread << 2 | kind`, pid 0 = self).
/// Returns (process, Some(tid) for a thread's clock).
fn cpu_clock_target(clock: u64) -> Result<(Rc<Process>, Option<u32>), i64> {
    let c = clock as i32;
    match c {
        2 => Ok((task::current_process(), None)),
        3 => Ok((task::current_process(), Some(task::current().tid()))),
        c if c < 0 => {
            if c & 3 == 3 {
                return Err(EINVAL);
            }
            let id = !(c >> 3) as u32;
            let me = task::current();
            if c & 4 != 0 {
                let tid = if id == 0 { me.tid() } else { id };
                let t = task::find_task(tid).ok_or(EINVAL)?;
                let p = t.process.borrow().clone();
                // A thread's clock is readable only inside its process.
                if !Rc::ptr_eq(&p, &me.process.borrow()) {
                    return Err(EINVAL);
                }
                Ok((p, Some(tid)))
            } else if id == 0 {
                Ok((task::current_process(), None))
            } else {
                Ok((task::find_process(id).ok_or(EINVAL)?, None))
            }
        }
        _ => Err(EINVAL),
    }
}

/// The value of a CPU-time clock (see [`cpu_clock_target`]).
pub fn cpu_clock_ns(clock: u64) -> Result<u64, i64> {
    let (p, tid) = cpu_clock_target(clock)?;
    task::clock_now(&p, tid.map_or(Clock::ProcessCpu, Clock::ThreadCpu)).ok_or(EINVAL)
}

/// Whether `clock` names a CPU-time clock.
pub fn is_cpu_clock(clock: u64) -> bool {
    matches!(clock as i32, 2 | 3) || (clock as i32) < 0
}

/// getrusage(2): CPU time as user time (the guest measures it itself;
/// system time is not told apart), and the peak memory.
pub fn sys_getrusage(who: u64, usage: u64) -> SysResult {
    const RUSAGE_CHILDREN: i32 = -1;
    let p = task::current_process();
    let mut r = [0u64; 18];
    let ns = match who as i32 {
        0 => process_cpu(&p),
        1 => task::clock_now(&p, Clock::ThreadCpu(task::current().tid())).unwrap_or(0),
        RUSAGE_CHILDREN => p.timers.children_cpu_ns.get(),
        _ => return Err(EINVAL),
    };
    r[0] = ns / 1_000_000_000;
    r[1] = ns % 1_000_000_000 / 1000;
    if who as i32 != RUSAGE_CHILDREN {
        r[4] = crate::mm::peak_bytes() / 1024; // ru_maxrss, KiB
    }
    put_u64s(usage, &r)?;
    Ok(0)
}

/// times(2): the process's and its reaped children's CPU time as user
/// time, in clock ticks (100 per second); returns the ticks since the
/// run started.
pub fn sys_times(buf: u64) -> SysResult {
    let ticks = time::elapsed_ns() / 10_000_000;
    if buf != 0 {
        let p = task::current_process();
        let own = process_cpu(&p) / 10_000_000;
        let children = p.timers.children_cpu_ns.get() / 10_000_000;
        put_u64s(buf, &[own, 0, children, 0])?;
    }
    Ok(ticks)
}

// --- POSIX timers -------------------------------------------------------------------------

const SIGEV_SIGNAL: i32 = 0;
const SIGEV_NONE: i32 = 1;
const SIGEV_THREAD_ID: i32 = 4;

/// The clock a timer (or timerfd, `fd`) on `clock` counts.
fn timer_clock(clock: u64, fd: bool) -> Result<Clock, i64> {
    match clock as i32 {
        0 => Ok(Clock::Real),
        11 if !fd => Ok(Clock::Real), // TAI
        1 | 7 => Ok(Clock::Mono),     // MONOTONIC, BOOTTIME
        8 | 9 => Err(EPERM),          // *_ALARM: needs CAP_WAKE_ALARM
        _ if !fd && is_cpu_clock(clock) => {
            let (p, tid) = cpu_clock_target(clock)?;
            // Only the caller's own CPU clocks here.
            if !Rc::ptr_eq(&p, &task::current_process()) {
                return Err(EINVAL);
            }
            Ok(tid.map_or(Clock::ProcessCpu, Clock::ThreadCpu))
        }
        _ => Err(EINVAL),
    }
}

/// timer_create(2). Without a sigevent: SIGALRM with the timer's id as
/// its value. SIGEV_THREAD is the C library's (it asks for
/// SIGEV_THREAD_ID); given here it is EINVAL, as on Linux.
pub fn sys_timer_create(clock: u64, sevp: u64, idp: u64) -> SysResult {
    let clock = timer_clock(clock, false)?;
    user_bytes_mut(idp, 4)?;
    let notify = if sevp == 0 {
        None
    } else {
        let b = user_bytes(sevp, 20)?;
        let int = |o: usize| i32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let value = u64::from_le_bytes(b[0..8].try_into().map_err(|_| EFAULT)?);
        let (sig, how, tid) = (int(8), int(12), int(16));
        let tid = match how {
            SIGEV_NONE => {
                return create(clock, |_| Notify::None, idp);
            }
            SIGEV_SIGNAL => None,
            SIGEV_THREAD_ID => {
                let t = task::find_task(tid as u32).ok_or(EINVAL)?;
                if !Rc::ptr_eq(&t.process.borrow(), &task::current_process()) {
                    return Err(EINVAL);
                }
                Some(tid as u32)
            }
            _ => return Err(EINVAL),
        };
        if !(1..=64).contains(&sig) {
            return Err(EINVAL);
        }
        Some((sig as u32, value, tid))
    };
    create(
        clock,
        |id| match notify {
            Some((sig, value, tid)) => Notify::Signal { sig, value, tid },
            None => Notify::Signal { sig: crate::timer::SIGALRM, value: id as u64, tid: None },
        },
        idp,
    )
}

fn create(clock: Clock, notify: impl FnOnce(i32) -> Notify, idp: u64) -> SysResult {
    let p = task::current_process();
    let id = p.timers.create(clock, notify)?;
    if let Err(e) = put_user(idp, id.to_le_bytes()) {
        let _ = p.timers.delete(id);
        return Err(e);
    }
    Ok(0)
}

fn timer_id(id: u64) -> i32 {
    id as i32
}

/// timer_settime(2): relative or TIMER_ABSTIME, with an interval.
pub fn sys_timer_settime(id: u64, flags: u64, new: u64, old: u64) -> SysResult {
    let (value, interval) = get_itimerspec(new)?;
    let p = task::current_process();
    let clock = p.timers.with(timer_id(id), |t| t.clock)?;
    let now = task::clock_now(&p, clock).ok_or(EINVAL)?;
    let due = (value > 0).then(|| if flags & TIMER_ABSTIME != 0 { value } else { now.saturating_add(value) });
    let was = p.timers.with(timer_id(id), |t| {
        let was = (t.arm.left(now), t.arm.interval);
        t.arm = Arm { due, interval: if due.is_some() { interval } else { 0 } };
        was
    })?;
    task::recompute_next_alarm();
    if old != 0 {
        put_itimerspec(old, was)?;
    }
    Ok(0)
}

pub fn sys_timer_gettime(id: u64, cur: u64) -> SysResult {
    let p = task::current_process();
    let clock = p.timers.with(timer_id(id), |t| t.clock)?;
    let now = task::clock_now(&p, clock).ok_or(EINVAL)?;
    let v = p.timers.with(timer_id(id), |t| (t.arm.left(now), t.arm.interval))?;
    put_itimerspec(cur, v)
}

pub fn sys_timer_getoverrun(id: u64) -> SysResult {
    task::current_process().timers.with(timer_id(id), |t| t.last_overrun as u64)
}

pub fn sys_timer_delete(id: u64) -> SysResult {
    task::current_process().timers.delete(timer_id(id))?;
    task::recompute_next_alarm();
    Ok(0)
}

// --- timerfd ------------------------------------------------------------------------------

const TFD_TIMER_ABSTIME: u64 = 1;
const TFD_TIMER_CANCEL_ON_SET: u64 = 2;

pub fn sys_timerfd_create(clock: u64, flags: u64) -> SysResult {
    if flags & !(O_CLOEXEC as u64 | O_NONBLOCK as u64) != 0 {
        return Err(EINVAL);
    }
    let clock = timer_clock(clock, true)?;
    let t = TimerFd::new(clock)?;
    let of =
        OpenFile::new(FileKind::TimerFd(t), O_RDONLY | (flags as u32 & O_NONBLOCK), b"anon_inode:[timerfd]".to_vec());
    crate::fds::install(of, flags & O_CLOEXEC as u64 != 0, 0)
}

fn timerfd(fd: u64) -> Result<Rc<TimerFd>, i64> {
    match &crate::fds::get(fd)?.kind {
        FileKind::TimerFd(t) => Ok(t.clone()),
        _ => Err(EINVAL),
    }
}

/// timerfd_settime(2): a new setting drops the expirations not yet read.
pub fn sys_timerfd_settime(fd: u64, flags: u64, new: u64, old: u64) -> SysResult {
    if flags & !(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET) != 0 {
        return Err(EINVAL);
    }
    let t = timerfd(fd)?;
    let (value, interval) = get_itimerspec(new)?;
    let now = crate::timer::wall_now(t.clock);
    let a = t.arm.get();
    let was = (a.left(now), a.interval);
    let due = (value > 0).then(|| if flags & TFD_TIMER_ABSTIME != 0 { value } else { now.saturating_add(value) });
    t.arm.set(Arm { due, interval: if due.is_some() { interval } else { 0 } });
    t.ticks.set(0);
    task::recompute_next_alarm();
    if old != 0 {
        put_itimerspec(old, was)?;
    }
    Ok(0)
}

pub fn sys_timerfd_gettime(fd: u64, cur: u64) -> SysResult {
    let t = timerfd(fd)?;
    let now = crate::timer::wall_now(t.clock);
    t.update(now);
    let a = t.arm.get();
    put_itimerspec(cur, (a.left(now), a.interval))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timevals_are_checked() {
        assert_eq!(timeval_ns(1, 500_000), Ok(1_500_000_000));
        assert_eq!(timeval_ns(0, 1_000_000), Err(EINVAL));
        assert_eq!(timeval_ns(-1i64 as u64, 0), Err(EINVAL));
        assert_eq!(timeval_ns(i64::MAX as u64, 0), Ok(u64::MAX));
    }

    #[test]
    fn cpu_clock_ids() {
        assert!(is_cpu_clock(2) && is_cpu_clock(3));
        // clock_getcpuclockid(0): ~0 << 3 | 2 (CPUCLOCK_SCHED).
        assert!(is_cpu_clock((!0i32 << 3 | 2) as u32 as u64));
        assert!(!is_cpu_clock(0) && !is_cpu_clock(1) && !is_cpu_clock(7));
    }
}
