//! The prefault pass of a clone made ahead (policy; the mechanism is
//! `Vm::prefault`): once a first run from a snapshot has measured the
//! pages it touched, each clone made ahead has its guest read them, so the
//! hypervisor's translations exist before the clone's first run. Bounded
//! by the thread's deadline timer; a pass that does not report back is
//! undone by mapping the snapshot afresh.

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hvsandbox_core::{DeadlineTimer, Vm};

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;

/// Counts of passes in this process (see [`prefault_counts`]).
struct Counts {
    passes: AtomicU64,
    pages: AtomicU64,
    failures: AtomicU64,
    cut: AtomicU64,
    micros: AtomicU64,
}

static COUNTS: Counts = Counts {
    passes: AtomicU64::new(0),
    pages: AtomicU64::new(0),
    failures: AtomicU64::new(0),
    cut: AtomicU64::new(0),
    micros: AtomicU64::new(0),
};

/// How long a pass may take, µs (0: no passes); `u64::MAX`: not set yet
/// (from `HVSANDBOX_PREFAULT=0`, or the default).
static LIMIT_US: AtomicU64 = AtomicU64::new(u64::MAX);

/// A pass reads a few hundred pages at ~15–20 µs each on current hosts;
/// this only bounds a snapshot whose guest never reports back.
const DEFAULT_LIMIT: Duration = Duration::from_millis(250);

fn limit() -> Duration {
    let us = LIMIT_US.load(Ordering::Relaxed);
    if us != u64::MAX {
        return Duration::from_micros(us);
    }
    let off = std::env::var_os("HVSANDBOX_PREFAULT").is_some_and(|v| v == "0");
    let limit = if off { Duration::ZERO } else { DEFAULT_LIMIT };
    LIMIT_US.store(limit.as_micros() as u64, Ordering::Relaxed);
    limit
}

/// Resets without a measurement after which runs stop measuring.
const TOUCHED_TRIES: u32 = 3;

/// Whether a run from `snap` should measure the pages it touches: clones
/// made ahead have a pass, the pages are not known yet, and measuring has
/// not been given up on.
pub(crate) fn measures(snap: &Snapshot) -> bool {
    !limit().is_zero()
        && snap.0.touched.get().is_none()
        && snap.0.touched_misses.load(Ordering::Relaxed) < TOUCHED_TRIES
}

/// After a run from `snap` in `vm`, before its reset: keeps the pages the
/// run measured with the snapshot (see `Vm::touched_pages`; `pagemap` adds
/// the runtime's own), or counts a run that left no measurement.
pub(crate) fn learn(vm: &Vm, snap: &Snapshot, pagemap: Option<BorrowedFd<'_>>) {
    if !measures(snap) {
        return;
    }
    match vm.touched_pages(pagemap) {
        Ok(Some(touched)) => {
            let _ = snap.0.touched.set(touched);
        }
        _ => {
            snap.0.touched_misses.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sets how long the prefault pass of a clone made ahead may run (default
/// 250 ms; `HVSANDBOX_PREFAULT=0` sets zero). Zero turns the passes off,
/// and with them the measuring that a snapshot's first run in the process
/// does for them: a program that makes no clones ahead (no
/// [`SandboxPool`](crate::SandboxPool), no [`Sandbox::warm`](crate::Sandbox::warm),
/// no process-wide pool), like the `hvsandbox` command, saves that work
/// (measured: ~20 ms of a `python3 -c` run from a snapshot file).
pub fn set_prefault_limit(limit: Duration) {
    LIMIT_US.store(limit.as_micros().min(u64::MAX as u128 - 1) as u64, Ordering::Relaxed);
}

/// Prefault passes of clones made ahead in this process.
#[doc(hidden)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrefaultCounts {
    /// Passes done.
    pub passes: u64,
    /// Pages the guests read in them.
    pub pages: u64,
    /// Passes that failed (no report in time) and were undone.
    pub failures: u64,
    /// Passes stopped early because a run wanted the clone.
    pub cut: u64,
    /// Time spent in passes, µs.
    pub micros: u64,
}

#[doc(hidden)]
pub fn prefault_counts() -> PrefaultCounts {
    PrefaultCounts {
        passes: COUNTS.passes.load(Ordering::Relaxed),
        pages: COUNTS.pages.load(Ordering::Relaxed),
        failures: COUNTS.failures.load(Ordering::Relaxed),
        cut: COUNTS.cut.load(Ordering::Relaxed),
        micros: COUNTS.micros.load(Ordering::Relaxed),
    }
}

/// Runs the pass on `vm`, a clone of `snap` in its state, if the pages a
/// first run touched are known; leaves it in the snapshot's state.
/// `hurry` stops it early (looked at every millisecond); returns whether
/// it did.
pub(crate) fn pass(vm: &mut Vm, snap: &Snapshot, timer: &DeadlineTimer, hurry: &dyn Fn() -> bool) -> Result<bool> {
    let limit = limit();
    let Some(touched) = snap.0.touched.get().filter(|t| !t.is_empty() && !limit.is_zero()) else {
        return Ok(false);
    };
    let start = Instant::now();
    let done = vm.prefault(touched, timer, limit, hurry);
    COUNTS.micros.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
    match &done {
        Ok(Some(pages)) => {
            COUNTS.passes.fetch_add(1, Ordering::Relaxed);
            COUNTS.pages.fetch_add(*pages, Ordering::Relaxed);
        }
        Ok(None) => {
            COUNTS.cut.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            // The guest did not do what was asked: throw away anything it
            // changed.
            COUNTS.failures.fetch_add(1, Ordering::Relaxed);
            vm.reset_memory(snap.memory_fd()?).map_err(Error::from)?;
            if let Some(hot) = snap.0.hot.get() {
                vm.touch_pages(hot);
            }
        }
    }
    snap.restore_vcpu_in(vm)?;
    Ok(matches!(done, Ok(None)))
}
