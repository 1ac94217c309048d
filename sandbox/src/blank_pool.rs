//! Blank VMs made ahead, process-wide, for the first run of new sandboxes.
//!
//! A sandbox that runs again makes its next VM itself while idle; a new
//! sandbox has had no idle time yet. When a cold sandbox is built, it asks
//! this pool to keep VMs of its memory size ready; its first run takes one
//! instead of creating it on the caller's path. The background thread that
//! destroys VMs makes them when it has nothing to destroy, and boots the
//! runtime in them as far as it goes without a program (see
//! `Vm::preboot`). Bounded: a few VMs for each of the few most recently
//! asked sizes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use hvsandbox_core::Vm;

/// VMs kept ready for each size (see [`set_blank_vms`]).
static PER_SIZE: AtomicUsize = AtomicUsize::new(usize::MAX);
const DEFAULT_PER_SIZE: usize = 2;
/// Sizes kept (the most recently asked for).
const SIZES: usize = 4;
/// Failures in a row after which the pool stops trying.
const MAX_FAILURES: u32 = 3;

#[derive(Default)]
struct State {
    /// Sizes asked for, most recent first.
    sizes: Vec<u64>,
    ready: Vec<(u64, Vm)>,
    /// The size of the VM being made now.
    making: Option<u64>,
    failures: u32,
    /// The pool cannot make VMs here: do not ask again.
    broken: bool,
}

static STATE: Mutex<State> =
    Mutex::new(State { sizes: Vec::new(), ready: Vec::new(), making: None, failures: 0, broken: false });
/// Signalled when a VM is put in the pool (or making one failed).
static MADE: Condvar = Condvar::new();
/// How long a run waits for a VM being made rather than make its own at
/// the same time (two VMs made at once in one process stall each other).
const WAIT_FOR_MAKING: Duration = Duration::from_millis(3);

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many blank VMs the process keeps ready for each memory size its
/// new sandboxes use (default 2; `HVSANDBOX_BLANK_VMS` overrides the
/// default). 0 turns the pool off: a program that runs one sandbox once,
/// like the CLI, gains nothing from it. Call before building sandboxes.
pub fn set_blank_vms(per_size: usize) {
    PER_SIZE.store(per_size.min(16), Ordering::SeqCst);
}

fn per_size() -> usize {
    let n = PER_SIZE.load(Ordering::SeqCst);
    if n != usize::MAX {
        return n;
    }
    let n = std::env::var("HVSANDBOX_BLANK_VMS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_PER_SIZE);
    let _ = PER_SIZE.compare_exchange(usize::MAX, n.min(16), Ordering::SeqCst, Ordering::SeqCst);
    PER_SIZE.load(Ordering::SeqCst)
}

/// A sandbox of `mem` bytes is being built: keep VMs of that size ready.
pub(crate) fn prime(mem: u64) {
    if per_size() == 0 {
        return;
    }
    let dropped = {
        let mut st = lock();
        if st.broken || st.sizes.first() == Some(&mem) {
            return;
        }
        st.sizes.retain(|&s| s != mem);
        st.sizes.insert(0, mem);
        let mut dropped = Vec::new();
        if st.sizes.len() > SIZES {
            let gone = st.sizes.pop();
            let (keep, out): (Vec<_>, Vec<_>) =
                std::mem::take(&mut st.ready).into_iter().partition(|(s, _)| Some(*s) != gone);
            st.ready = keep;
            dropped = out;
        }
        dropped
    };
    for (_, vm) in dropped {
        crate::sandbox::reap(vm);
    }
    crate::sandbox::wake_reaper();
}

/// A ready VM of `mem` bytes, if there is one or one is being made.
pub(crate) fn take(mem: u64) -> Option<Vm> {
    if per_size() == 0 {
        return None;
    }
    let deadline = Instant::now() + WAIT_FOR_MAKING;
    let vm = {
        let mut st = lock();
        loop {
            if let Some(i) = st.ready.iter().position(|(s, _)| *s == mem) {
                break st.ready.swap_remove(i).1;
            }
            let now = Instant::now();
            if st.making != Some(mem) || now >= deadline {
                return None;
            }
            st = MADE.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    };
    crate::sandbox::wake_reaper();
    Some(vm)
}

/// The size that is short of ready VMs, if any: the caller makes one now.
pub(crate) fn wanted() -> Option<u64> {
    let mut st = lock();
    if st.broken {
        return None;
    }
    let n = per_size();
    let mem = st.sizes.iter().copied().find(|&s| st.ready.iter().filter(|(r, _)| *r == s).count() < n);
    st.making = mem;
    mem
}

/// A VM made for the pool.
pub(crate) fn put(mem: u64, vm: Vm) {
    let extra = {
        let mut st = lock();
        st.making = None;
        st.failures = 0;
        if st.sizes.contains(&mem) {
            st.ready.push((mem, vm));
            None
        } else {
            Some(vm)
        }
    };
    MADE.notify_all();
    if let Some(vm) = extra {
        crate::sandbox::reap(vm);
    }
}

/// Making a VM for the pool failed.
pub(crate) fn failed() {
    let mut st = lock();
    st.making = None;
    MADE.notify_all();
    st.failures += 1;
    if st.failures >= MAX_FAILURES {
        st.broken = true;
        st.sizes.clear();
    }
}

/// The pool cannot work in this process.
pub(crate) fn give_up() {
    let mut st = lock();
    st.making = None;
    MADE.notify_all();
    st.broken = true;
    st.sizes.clear();
}
