//! Timers as data, below the scheduler: a process's CPU-time interval
//! timers (ITIMER_VIRTUAL, ITIMER_PROF) and POSIX timers, the timer
//! signals waiting to be delivered with their `siginfo`, and timerfds.
//!
//! Nothing here reads a clock or posts a signal: the scheduler
//! (`task.rs`) asks what expired at the times it gives and posts the
//! signals; the system calls are `sys_timer.rs`. No interrupt reaches
//! the guest: wall-clock timers are looked at when a system call returns
//! and bound how long the runtime idles; CPU-time timers are looked at
//! when a system call returns or the host ends a time slice (it is asked
//! for slices while one is armed).

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::errno::*;
use crate::rt::Global;

/// Timers a process may have (timer_create beyond: EAGAIN).
pub const MAX_TIMERS: usize = 256;

pub const SIGALRM: u32 = 14;
pub const SIGVTALRM: u32 = 26;
pub const SIGPROF: u32 = 27;

/// `si_code` of a POSIX timer's signal.
pub const SI_TIMER: i32 = -2;

/// What a timer counts.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Clock {
    Real,
    Mono,
    /// The owning process's CPU time.
    ProcessCpu,
    /// One thread's CPU time (by thread id).
    ThreadCpu(u32),
}

impl Clock {
    pub fn is_cpu(self) -> bool {
        matches!(self, Clock::ProcessCpu | Clock::ThreadCpu(_))
    }
}

/// When a timer expires next (on its clock) and its period (0: once).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub struct Arm {
    pub due: Option<u64>,
    pub interval: u64,
}

impl Arm {
    /// Counts the expirations up to `now` and moves `due` past it (or
    /// disarms a one-shot timer).
    pub fn expire(&mut self, now: u64) -> u64 {
        let Some(due) = self.due.filter(|&d| now >= d) else { return 0 };
        if self.interval == 0 {
            self.due = None;
            return 1;
        }
        let n = ((now - due) / self.interval).saturating_add(1);
        self.due = Some(due.saturating_add(n.saturating_mul(self.interval)));
        n
    }

    /// Time left at `now` (0: disarmed; an armed timer shows at least 1).
    pub fn left(&self, now: u64) -> u64 {
        self.due.map_or(0, |d| d.saturating_sub(now).max(1))
    }
}

/// How a POSIX timer tells its process.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Notify {
    /// SIGEV_NONE: only timer_gettime shows it.
    None,
    /// SIGEV_SIGNAL (tid None) or SIGEV_THREAD_ID: `sig` with `value` in
    /// `si_value`.
    Signal { sig: u32, value: u64, tid: Option<u32> },
}

pub struct PosixTimer {
    pub id: i32,
    pub clock: Clock,
    pub notify: Notify,
    pub arm: Arm,
    /// The overrun of the last signal delivered (timer_getoverrun).
    pub last_overrun: u32,
}

/// A timer signal posted and not yet delivered, with what its `siginfo`
/// says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Queued {
    pub sig: u32,
    pub tid: Option<u32>,
    pub timer: i32,
    pub value: u64,
    pub overrun: u32,
}

/// What expired: a signal to post (`timer` None: an interval timer's,
/// without siginfo).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Fired {
    pub sig: u32,
    pub tid: Option<u32>,
    pub timer: Option<i32>,
    pub value: u64,
    /// Expirations beyond the first.
    pub missed: u32,
}

/// A process's CPU time and timers (ITIMER_REAL is the scheduler's alarm).
#[derive(Default)]
pub struct ProcTimers {
    /// CPU time of the process (all its threads, the dead ones too).
    pub cpu_ns: Cell<u64>,
    /// CPU time of its reaped children (and theirs).
    pub children_cpu_ns: Cell<u64>,
    /// ITIMER_VIRTUAL and ITIMER_PROF on the process's CPU time.
    pub itimers: Cell<[Arm; 2]>,
    pub posix: RefCell<Vec<PosixTimer>>,
    pub queued: RefCell<Vec<Queued>>,
}

fn clamp32(n: u64) -> u32 {
    n.min(i32::MAX as u64) as u32
}

impl ProcTimers {
    /// Whether a timer on a CPU clock is armed.
    pub fn cpu_armed(&self) -> bool {
        self.itimers.get().iter().any(|a| a.due.is_some())
            || self.posix.borrow().iter().any(|t| t.clock.is_cpu() && t.arm.due.is_some())
    }

    /// The earliest wall-clock expiry, on the monotonic clock
    /// (`real_minus_mono`: CLOCK_REALTIME - CLOCK_MONOTONIC now).
    pub fn next_wall(&self, real_minus_mono: u64) -> Option<u64> {
        self.posix
            .borrow()
            .iter()
            .filter_map(|t| match (t.clock, t.arm.due) {
                (Clock::Mono, Some(d)) => Some(d),
                (Clock::Real, Some(d)) => Some(d.saturating_sub(real_minus_mono)),
                _ => None,
            })
            .min()
    }

    /// A new POSIX timer (disarmed): its id, the lowest free one.
    pub fn create(&self, clock: Clock, notify: impl FnOnce(i32) -> Notify) -> Result<i32, i64> {
        let mut v = self.posix.borrow_mut();
        if v.len() >= MAX_TIMERS {
            return Err(EAGAIN);
        }
        let mut id = 0;
        while v.iter().any(|t| t.id == id) {
            id += 1;
        }
        v.try_reserve(1).map_err(|_| EAGAIN)?;
        v.push(PosixTimer { id, clock, notify: notify(id), arm: Arm::default(), last_overrun: 0 });
        Ok(id)
    }

    /// Runs `f` on timer `id` (EINVAL if there is none).
    pub fn with<R>(&self, id: i32, f: impl FnOnce(&mut PosixTimer) -> R) -> Result<R, i64> {
        let mut v = self.posix.borrow_mut();
        v.iter_mut().find(|t| t.id == id).map(f).ok_or(EINVAL)
    }

    /// timer_delete: the timer and a signal of it not yet delivered.
    pub fn delete(&self, id: i32) -> Result<(), i64> {
        let mut v = self.posix.borrow_mut();
        let i = v.iter().position(|t| t.id == id).ok_or(EINVAL)?;
        v.remove(i);
        self.queued.borrow_mut().retain(|q| q.timer != id);
        Ok(())
    }

    /// execve: POSIX timers are deleted (interval timers stay).
    pub fn exec(&self) {
        self.posix.borrow_mut().clear();
    }

    /// What expired of the timers on CPU clocks (`cpu`) or on wall clocks,
    /// at the times `now` gives (None: the clock is gone, e.g. its thread
    /// ended; that timer stays as it is).
    pub fn expire(&self, cpu: bool, now: impl Fn(Clock) -> Option<u64>) -> Vec<Fired> {
        let mut out = Vec::new();
        if cpu {
            let mut its = self.itimers.get();
            if let Some(n) = now(Clock::ProcessCpu) {
                for (arm, sig) in its.iter_mut().zip([SIGVTALRM, SIGPROF]) {
                    if arm.expire(n) > 0 {
                        out.push(Fired { sig, tid: None, timer: None, value: 0, missed: 0 });
                    }
                }
            }
            self.itimers.set(its);
        }
        for t in self.posix.borrow_mut().iter_mut() {
            if t.clock.is_cpu() != cpu || t.arm.due.is_none() {
                continue;
            }
            let Some(n) = now(t.clock) else { continue };
            let k = t.arm.expire(n);
            if let (true, Notify::Signal { sig, value, tid }) = (k > 0, t.notify) {
                out.push(Fired { sig, tid, timer: Some(t.id), value, missed: clamp32(k - 1) });
            }
        }
        out
    }

    /// A timer's signal that is still pending (`pending(sig, tid)` says
    /// whether it is) takes the new expirations as overruns: returns
    /// true. Otherwise false: the caller posts the signal and then
    /// [`ProcTimers::queue`]s it.
    pub fn merge(&self, f: &Fired, pending: impl Fn(u32, Option<u32>) -> bool) -> bool {
        let Some(id) = f.timer else { return false };
        let mut q = self.queued.borrow_mut();
        q.retain(|e| pending(e.sig, e.tid));
        match q.iter_mut().find(|e| e.timer == id) {
            Some(e) => {
                e.overrun = clamp32(e.overrun as u64 + 1 + f.missed as u64);
                true
            }
            None => false,
        }
    }

    /// Remembers the siginfo of a timer signal just posted.
    pub fn queue(&self, f: &Fired) {
        if let Some(timer) = f.timer {
            let mut q = self.queued.borrow_mut();
            if q.try_reserve(1).is_ok() {
                q.push(Queued { sig: f.sig, tid: f.tid, timer, value: f.value, overrun: f.missed });
            }
        }
    }

    /// The siginfo of signal `sig` being delivered to thread `tid`, if a
    /// timer posted it; the timer's overrun count is then that signal's.
    pub fn take(&self, sig: u32, tid: u32) -> Option<Queued> {
        let mut q = self.queued.borrow_mut();
        let i = q.iter().position(|e| e.sig == sig && e.tid.is_none_or(|t| t == tid))?;
        let e = q.remove(i);
        drop(q);
        let _ = self.with(e.timer, |t| t.last_overrun = e.overrun);
        Some(e)
    }
}

/// The 128-byte siginfo of a timer signal.
pub fn siginfo(q: &Queued) -> [u8; 128] {
    let mut b = [0u8; 128];
    b[0..4].copy_from_slice(&q.sig.to_le_bytes());
    b[8..12].copy_from_slice(&SI_TIMER.to_le_bytes());
    b[16..20].copy_from_slice(&q.timer.to_le_bytes());
    b[20..24].copy_from_slice(&q.overrun.to_le_bytes());
    b[24..32].copy_from_slice(&q.value.to_le_bytes());
    b
}

// --- timerfd --------------------------------------------------------------------------

/// A timerfd's timer and the expirations not yet read.
pub struct TimerFd {
    pub clock: Clock,
    pub arm: Cell<Arm>,
    pub ticks: Cell<u64>,
}

/// The time on a wall clock (a CPU clock reads as the monotonic one:
/// timerfds have none).
pub fn wall_now(c: Clock) -> u64 {
    match c {
        Clock::Real => crate::time::realtime_ns(),
        _ => crate::time::monotonic_ns(),
    }
}

/// Live timerfds (their deadlines bound how long the runtime idles).
static TIMERFDS: Global<Vec<Weak<TimerFd>>> = Global::new(Vec::new());

impl TimerFd {
    pub fn new(clock: Clock) -> Result<Rc<TimerFd>, i64> {
        let t = Rc::new(TimerFd { clock, arm: Cell::new(Arm::default()), ticks: Cell::new(0) });
        let all = TIMERFDS.get();
        all.retain(|w| w.strong_count() > 0);
        all.try_reserve(1).map_err(|_| ENOMEM)?;
        all.push(Rc::downgrade(&t));
        Ok(t)
    }

    /// Moves the expirations up to `now` (on its clock) into `ticks`;
    /// whether there were any.
    pub fn update(&self, now: u64) -> bool {
        let mut a = self.arm.get();
        let n = a.expire(now);
        self.arm.set(a);
        self.ticks.set(self.ticks.get().saturating_add(n));
        n > 0
    }
}

/// The earliest timerfd expiry on the monotonic clock.
pub fn timerfds_next(real_minus_mono: u64) -> Option<u64> {
    TIMERFDS
        .get()
        .iter()
        .filter_map(|w| w.upgrade())
        .filter_map(|t| match (t.clock, t.arm.get().due) {
            (Clock::Real, Some(d)) => Some(d.saturating_sub(real_minus_mono)),
            (_, d) => d,
        })
        .min()
}

/// Counts the expirations of every timerfd; whether any expired.
pub fn timerfds_fire(mono: u64, real: u64) -> bool {
    let mut any = false;
    for t in TIMERFDS.get().iter().filter_map(|w| w.upgrade()) {
        any |= t.update(if t.clock == Clock::Real { real } else { mono });
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_count_missed_periods() {
        let mut a = Arm { due: Some(100), interval: 10 };
        assert_eq!(a.expire(99), 0);
        assert_eq!(a.expire(100), 1);
        assert_eq!(a.due, Some(110));
        assert_eq!(a.expire(145), 4, "110, 120, 130, 140");
        assert_eq!(a.due, Some(150));
        assert_eq!(a.left(149), 1);
        let mut once = Arm { due: Some(5), interval: 0 };
        assert_eq!(once.expire(1000), 1);
        assert_eq!(once.due, None);
        assert_eq!(once.left(0), 0);
        let mut huge = Arm { due: Some(0), interval: 1 };
        assert_eq!(huge.expire(u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn timer_ids_are_reused_and_bounded() {
        let p = ProcTimers::default();
        let none = |_| Notify::None;
        assert_eq!(p.create(Clock::Mono, none), Ok(0));
        assert_eq!(p.create(Clock::Mono, none), Ok(1));
        assert_eq!(p.delete(0), Ok(()));
        assert_eq!(p.delete(0), Err(EINVAL));
        assert_eq!(p.create(Clock::Real, none), Ok(0));
        while p.posix.borrow().len() < MAX_TIMERS {
            p.create(Clock::Mono, none).unwrap();
        }
        assert_eq!(p.create(Clock::Mono, none), Err(EAGAIN));
        p.exec();
        assert!(p.posix.borrow().is_empty());
    }

    #[test]
    fn a_pending_timer_signal_takes_overruns() {
        let p = ProcTimers::default();
        let id = p.create(Clock::ProcessCpu, |id| Notify::Signal { sig: 34, value: 7 + id as u64, tid: None }).unwrap();
        p.with(id, |t| t.arm = Arm { due: Some(10), interval: 10 }).unwrap();
        assert!(p.cpu_armed());
        assert!(p.expire(false, |_| Some(1000)).is_empty(), "not a wall-clock timer");
        let f = p.expire(true, |_| Some(35));
        assert_eq!(f, [Fired { sig: 34, tid: None, timer: Some(id), value: 7, missed: 2 }]);
        assert!(!p.merge(&f[0], |_, _| true));
        p.queue(&f[0]);
        let f2 = p.expire(true, |_| Some(40));
        assert!(p.merge(&f2[0], |_, _| true), "still pending");
        let q = p.take(34, 1).unwrap();
        assert_eq!((q.overrun, q.value), (3, 7));
        assert_eq!(p.with(id, |t| t.last_overrun), Ok(3));
        let info = siginfo(&q);
        assert_eq!(i32::from_le_bytes(info[8..12].try_into().unwrap()), SI_TIMER);
        // A queued entry whose signal is no longer pending is dropped.
        p.queue(&f2[0]);
        assert!(!p.merge(&f2[0], |_, _| false));
    }

    #[test]
    fn interval_timers_send_their_signals() {
        let p = ProcTimers::default();
        p.itimers.set([Arm { due: Some(5), interval: 0 }, Arm { due: Some(50), interval: 5 }]);
        let f = p.expire(true, |_| Some(10));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].sig, SIGVTALRM);
        assert_eq!(p.expire(true, |_| Some(60))[0].sig, SIGPROF);
        assert_eq!(p.next_wall(0), None);
    }
}
