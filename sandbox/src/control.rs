//! What a sandbox's caller, its interrupt handles and its vCPU thread
//! share about the run in progress.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hvsandbox_core::ThreadKicker;

use crate::error::Error;
use crate::jail;
use crate::live::Live;

/// Shared between a sandbox's worker and its interrupt handles.
#[derive(Debug)]
pub(crate) struct RunControl {
    /// Odd while a run is in progress; each run has its own number.
    pub(crate) generation: AtomicU64,
    /// The generation a kill was aimed at.
    pub(crate) cancelled: AtomicU64,
    pub(crate) kicker: OnceLock<ThreadKicker>,
    /// The system call the vCPU thread's jail refused (-1: none).
    pub(crate) violation: AtomicI64,
    /// The vCPU thread's kernel thread id.
    pub(crate) vcpu_tid: AtomicI64,
    /// Why the sandbox is unusable, once a failure poisoned it.
    pub(crate) poisoned: Mutex<Option<String>>,
    /// The process whose run is current (its waits are woken by a kill).
    pub(crate) live: Mutex<Option<Arc<Live>>>,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            generation: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            kicker: OnceLock::new(),
            violation: AtomicI64::new(-1),
            vcpu_tid: AtomicI64::new(0),
            poisoned: Mutex::new(None),
            live: Mutex::new(None),
        }
    }
}

impl RunControl {
    /// Records `e` if it leaves the sandbox unusable.
    pub(crate) fn note_failure(&self, e: &Error) {
        if e.poisons() {
            let mut p = self.poisoned.lock().unwrap_or_else(|e| e.into_inner());
            p.get_or_insert_with(|| e.to_string());
        }
    }

    /// Why the sandbox is unusable, if it is.
    pub(crate) fn poisoned(&self) -> Option<String> {
        self.poisoned.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Kills `live`'s run if it has not ended: its flag is set, its waits
    /// end, and the vCPU thread is kicked out of the guest.
    pub(crate) fn kill_process(&self, live: &Live) {
        if !live.ended() {
            live.kill();
            self.kick();
        }
    }

    /// Kicks the vCPU thread out of the guest and out of a wait for its
    /// process's reader or writer.
    pub(crate) fn kick(&self) {
        if let Some(k) = self.kicker.get() {
            k.kick();
        }
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(live) = live {
            live.poke();
        }
    }
}

/// Stops the sandbox's current run from any thread. It never affects a
/// run that starts after the call.
#[derive(Clone, Debug)]
pub struct InterruptHandle {
    pub(crate) control: Arc<RunControl>,
}

impl InterruptHandle {
    /// Stops the run in progress, if any; that run returns
    /// [`Error::Cancelled`]. Does nothing when the sandbox is idle.
    pub fn kill(&self) {
        let c = &self.control;
        let generation = c.generation.load(Ordering::SeqCst);
        if generation % 2 == 1 {
            c.cancelled.store(generation, Ordering::SeqCst);
            c.kick();
        }
    }
}

/// The error for a system call the vCPU thread's jail refused, if any.
pub(crate) fn jail_violation(control: &RunControl) -> Option<Error> {
    let nr = control.violation.load(Ordering::SeqCst);
    (nr >= 0).then(|| Error::JailViolation { syscall: jail::describe(nr) })
}
