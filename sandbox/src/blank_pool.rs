//! VMs made ahead, process-wide, for the first run of new sandboxes.
//!
//! A sandbox that runs again makes its next VM itself while idle (or, from
//! a snapshot, resets its own); a new sandbox has had no idle time yet.
//! When a sandbox is built it asks this pool to keep VMs of its kind ready
//! — blank ones of its memory size, or clones of its snapshot — and its
//! first run takes one instead of creating it on the caller's path. The
//! background thread that destroys VMs makes them when it has nothing to
//! destroy: blank ones with the runtime booted as far as it goes without a
//! program (see `Vm::preboot`), clones in the snapshot's state. Bounded: a
//! few VMs for each of the few kinds most recently asked for.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use hvsandbox_core::Vm;

use crate::snapshot::{Inner, Snapshot};

/// VMs kept ready for each kind (see [`set_blank_vms`]).
static PER_KIND: AtomicUsize = AtomicUsize::new(usize::MAX);
const DEFAULT_PER_KIND: usize = 2;
/// Kinds kept (the most recently asked for).
const KINDS: usize = 4;
/// Failures in a row after which the pool stops trying.
const MAX_FAILURES: u32 = 3;

/// What a pooled VM is for.
#[derive(Clone)]
enum Kind {
    /// A blank VM of this many bytes, booted ahead of its program.
    Blank(u64),
    /// A clone of a snapshot, in the snapshot's state (the pool does not
    /// keep the snapshot alive).
    Clone(Weak<Inner>),
}

impl Kind {
    fn is(&self, other: &Kind) -> bool {
        match (self, other) {
            (Kind::Blank(a), Kind::Blank(b)) => a == b,
            (Kind::Clone(a), Kind::Clone(b)) => a.ptr_eq(b),
            _ => false,
        }
    }
}

/// What the background thread is to make next.
pub(crate) enum Want {
    Blank(u64),
    Clone(Snapshot),
}

#[derive(Default)]
struct State {
    /// Kinds asked for, most recent first.
    kinds: Vec<Kind>,
    ready: Vec<(Kind, Vm)>,
    /// The kind of VM being made now.
    making: Option<Kind>,
    failures: u32,
    /// The pool cannot make VMs here: do not ask again.
    broken: bool,
}

static STATE: Mutex<State> =
    Mutex::new(State { kinds: Vec::new(), ready: Vec::new(), making: None, failures: 0, broken: false });
/// Signalled when a VM is put in the pool (or making one failed).
static MADE: Condvar = Condvar::new();
/// How long a run waits for a VM being made rather than make its own at
/// the same time (two VMs made at once in one process stall each other).
const WAIT_FOR_MAKING: Duration = Duration::from_millis(3);

fn lock() -> std::sync::MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// How many VMs the process keeps ready for each memory size (blank) and
/// each snapshot (clones) its new sandboxes use (default 2;
/// `HVSANDBOX_BLANK_VMS` overrides the default). 0 turns the pool off: a
/// program that runs one sandbox once, like the CLI, gains nothing from
/// it. Call before building sandboxes.
pub fn set_blank_vms(per_kind: usize) {
    PER_KIND.store(per_kind.min(16), Ordering::SeqCst);
}

fn per_kind() -> usize {
    let n = PER_KIND.load(Ordering::SeqCst);
    if n != usize::MAX {
        return n;
    }
    let n = std::env::var("HVSANDBOX_BLANK_VMS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_PER_KIND);
    let _ = PER_KIND.compare_exchange(usize::MAX, n.min(16), Ordering::SeqCst, Ordering::SeqCst);
    PER_KIND.load(Ordering::SeqCst)
}

/// A cold sandbox of `mem` bytes is being built: keep blank VMs ready.
pub(crate) fn prime_blank(mem: u64) {
    prime(Kind::Blank(mem));
}

/// A sandbox from `snap` is being built: keep clones of it ready.
pub(crate) fn prime_clone(snap: &Snapshot) {
    prime(Kind::Clone(std::sync::Arc::downgrade(&snap.0)));
}

fn prime(kind: Kind) {
    if per_kind() == 0 {
        return;
    }
    let dropped = {
        let mut st = lock();
        if st.broken || st.kinds.first().is_some_and(|k| k.is(&kind)) {
            return;
        }
        st.kinds.retain(|k| !k.is(&kind));
        st.kinds.insert(0, kind);
        let mut dropped = Vec::new();
        if st.kinds.len() > KINDS {
            if let Some(gone) = st.kinds.pop() {
                let (keep, out): (Vec<_>, Vec<_>) =
                    std::mem::take(&mut st.ready).into_iter().partition(|(k, _)| !k.is(&gone));
                st.ready = keep;
                dropped = out;
            }
        }
        dropped
    };
    for (_, vm) in dropped {
        crate::sandbox::reap(vm);
    }
    crate::sandbox::wake_reaper();
}

/// A ready blank VM of `mem` bytes, if there is one or one is being made.
pub(crate) fn take_blank(mem: u64) -> Option<Vm> {
    take(Kind::Blank(mem))
}

/// A ready clone of `snap` (in its state: memory mapped, vCPU restored),
/// if there is one or one is being made.
pub(crate) fn take_clone(snap: &Snapshot) -> Option<Vm> {
    take(Kind::Clone(std::sync::Arc::downgrade(&snap.0)))
}

fn take(kind: Kind) -> Option<Vm> {
    if per_kind() == 0 {
        return None;
    }
    let deadline = Instant::now() + WAIT_FOR_MAKING;
    let vm = {
        let mut st = lock();
        loop {
            if let Some(i) = st.ready.iter().position(|(k, _)| k.is(&kind)) {
                break st.ready.swap_remove(i).1;
            }
            let now = Instant::now();
            if !st.making.as_ref().is_some_and(|k| k.is(&kind)) || now >= deadline {
                return None;
            }
            st = MADE.wait_timeout(st, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    };
    crate::sandbox::wake_reaper();
    Some(vm)
}

/// The kind that is short of ready VMs, if any: the caller makes one now
/// and hands it to [`put`]. Kinds whose snapshot is gone are forgotten.
pub(crate) fn wanted() -> Option<Want> {
    let mut gone = Vec::new();
    let want = {
        let mut st = lock();
        if st.broken {
            return None;
        }
        let dead = |k: &Kind| matches!(k, Kind::Clone(w) if w.strong_count() == 0);
        st.kinds.retain(|k| !dead(k));
        let (keep, out): (Vec<_>, Vec<_>) = std::mem::take(&mut st.ready).into_iter().partition(|(k, _)| !dead(k));
        st.ready = keep;
        gone.extend(out.into_iter().map(|(_, vm)| vm));
        let n = per_kind();
        let short = st.kinds.iter().find(|k| st.ready.iter().filter(|(r, _)| r.is(k)).count() < n).cloned();
        let want = match &short {
            Some(Kind::Blank(mem)) => Some(Want::Blank(*mem)),
            Some(Kind::Clone(w)) => w.upgrade().map(|inner| Want::Clone(Snapshot(inner))),
            None => None,
        };
        st.making = short.filter(|_| want.is_some());
        want
    };
    for vm in gone {
        crate::sandbox::reap(vm);
    }
    want
}

/// A VM made for the pool (of the kind [`wanted`] asked for).
pub(crate) fn put(vm: Vm) {
    let extra = {
        let mut st = lock();
        st.failures = 0;
        match st.making.take() {
            Some(kind) if st.kinds.iter().any(|k| k.is(&kind)) => {
                st.ready.push((kind, vm));
                None
            }
            _ => Some(vm),
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
        st.kinds.clear();
    }
}

/// The pool cannot work in this process.
pub(crate) fn give_up() {
    let mut st = lock();
    st.making = None;
    MADE.notify_all();
    st.broken = true;
    st.kinds.clear();
}
