//! Stopping a running vCPU from outside: a signal aimed at the vCPU thread
//! whose handler sets `immediate_exit` in that thread's `kvm_run`, so
//! `KVM_RUN` returns `EINTR` at once — even if the signal lands just before
//! the thread enters the guest. Deadlines use a POSIX timer that sends the
//! same signal to the same thread, so no watchdog thread is needed.

use std::cell::Cell;
use std::sync::Once;
use std::time::Duration;

use crate::error::{Result, VmError};

thread_local! {
    /// `immediate_exit` byte of the kvm_run of the VM this thread runs.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// The real-time signal used to kick vCPU threads.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

extern "C" fn on_kick(_: libc::c_int) {
    // `try_with` avoids a panic during thread teardown; the thread-local is
    // a const-initialised Cell, which needs no allocation, so this is
    // async-signal-safe.
    let _ = IMMEDIATE_EXIT.try_with(|p| {
        let p = p.get();
        if !p.is_null() {
            // SAFETY: the pointer is set by `bind_immediate_exit` on this
            // thread to a kvm_run mapping that stays alive while bound.
            unsafe { p.write_volatile(1) };
        }
    });
}

/// Installs the kick signal's handler once per process. No `SA_RESTART`:
/// `KVM_RUN` and host sleeps must return `EINTR`.
pub fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting value; we set the
        // handler to a function with the right signature and install it
        // for our own real-time signal only.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_kick as *const () as usize;
            // SA_RESTART: a kick that lands outside KVM_RUN (creating a VM,
            // serving a hypercall) must not fail the system call it hits;
            // KVM_RUN itself still returns EINTR, which is the point.
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(kick_signal(), &sa, std::ptr::null_mut());
        }
    });
}

/// Points this thread's kick handler at `ptr` (or nothing, with null).
pub(crate) fn bind_immediate_exit(ptr: *mut u8) {
    IMMEDIATE_EXIT.with(|p| p.set(ptr));
}

/// Identifies a thread to kick. `Copy`, `Send`, `Sync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadKicker {
    tid: libc::pid_t,
}

impl ThreadKicker {
    /// The calling thread.
    pub fn current() -> ThreadKicker {
        // SAFETY: gettid has no preconditions.
        ThreadKicker { tid: unsafe { libc::gettid() } }
    }

    /// Sends the kick signal to the thread. Harmless if the thread is not
    /// in the guest: the next `KVM_RUN` then returns at once.
    pub fn kick(&self) {
        // SAFETY: tgkill with our own pid only targets threads of this
        // process; a stale tid of an exited thread gets ESRCH.
        unsafe {
            libc::syscall(libc::SYS_tgkill, libc::getpid(), self.tid, kick_signal());
        }
    }
}

/// A one-shot POSIX timer that kicks the thread that created it.
#[derive(Debug)]
pub struct DeadlineTimer {
    timer: libc::timer_t,
}

// SAFETY: a timer_t is a kernel timer id; it can be armed, disarmed and
// deleted from any thread of the process.
unsafe impl Send for DeadlineTimer {}

impl DeadlineTimer {
    /// A timer on CLOCK_MONOTONIC aimed at the calling thread.
    pub fn for_current_thread() -> Result<DeadlineTimer> {
        Self::on_clock(libc::CLOCK_MONOTONIC)
    }

    /// A timer on the calling thread's CPU-time clock, aimed at it: it
    /// fires once the thread has used the armed amount of CPU.
    pub fn for_current_thread_cpu() -> Result<DeadlineTimer> {
        Self::on_clock(libc::CLOCK_THREAD_CPUTIME_ID)
    }

    fn on_clock(clock: libc::clockid_t) -> Result<DeadlineTimer> {
        install_kick_handler();
        // SAFETY: sigevent is plain data; zeroed is valid. SIGEV_THREAD_ID
        // is set with our own tid, and the kernel writes the new timer id
        // into `timer`.
        unsafe {
            let mut sev: libc::sigevent = std::mem::zeroed();
            sev.sigev_notify = libc::SIGEV_THREAD_ID;
            sev.sigev_signo = kick_signal();
            sev.sigev_notify_thread_id = libc::gettid();
            let mut timer: libc::timer_t = std::ptr::null_mut();
            if libc::timer_create(clock, &mut sev, &mut timer) != 0 {
                return Err(VmError::Timer(std::io::Error::last_os_error()));
            }
            Ok(DeadlineTimer { timer })
        }
    }

    /// Fires once after `after` (a zero duration disarms).
    pub fn arm(&self, after: Duration) -> Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `self.timer` is a live timer id owned by self.
        let rc = unsafe { libc::timer_settime(self.timer, 0, &spec, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(VmError::Timer(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    pub fn disarm(&self) -> Result<()> {
        self.arm(Duration::ZERO)
    }
}

impl Drop for DeadlineTimer {
    fn drop(&mut self) {
        // SAFETY: the timer id is owned by self and deleted exactly once.
        unsafe {
            libc::timer_delete(self.timer);
        }
    }
}

/// CPU time used by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
