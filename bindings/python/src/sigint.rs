//! Ctrl-C during a blocking call on Python's main thread.
//!
//! Python's own SIGINT handler only sets a flag that the main thread looks
//! at between bytecodes, and that thread is blocked in Rust until the guest
//! ends. So while a blocking call runs there, a handler of ours stands in
//! for Python's: it stops the guest (a kill is atomic stores and a signal
//! to the vCPU thread: async-signal-safe) and notes the interrupt. When
//! the call returns, Python's handler is put back and the signal raised
//! again, so Python handles it as it would have (by default,
//! `KeyboardInterrupt`). Elsewhere (other threads, SIGINT ignored or left
//! to the default action) nothing is changed.

use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::prelude::*;

/// What stops the guest of the call in progress.
pub enum Killer {
    /// A sandbox's current run, once `armed`: the call may first wait
    /// for the sandbox, whose run then is another thread's.
    Run(hvsandbox::InterruptHandle, Arc<AtomicBool>),
    /// One spawned process.
    Process(hvsandbox::KillHandle),
}

impl Killer {
    fn kill(&self) {
        match self {
            Killer::Run(h, armed) => {
                if armed.load(Ordering::SeqCst) {
                    h.kill()
                }
            }
            Killer::Process(h) => h.kill(),
        }
    }
}

/// The killer of the guarded call in progress (null: none).
static TARGET: AtomicPtr<Killer> = AtomicPtr::new(ptr::null_mut());
/// Handlers running now (the killer is freed only when none is).
static IN_HANDLER: AtomicUsize = AtomicUsize::new(0);
/// A SIGINT arrived during the guarded call.
static FIRED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    IN_HANDLER.fetch_add(1, Ordering::SeqCst);
    let target = TARGET.load(Ordering::SeqCst);
    if !target.is_null() {
        // SAFETY: `guarded` frees the killer only after clearing TARGET
        // and seeing IN_HANDLER at zero, so it is alive here.
        unsafe { (*target).kill() };
        FIRED.store(true, Ordering::SeqCst);
    }
    IN_HANDLER.fetch_sub(1, Ordering::SeqCst);
}

/// Whether this is the process's main thread (where Python runs its
/// signal handlers).
fn on_main_thread() -> bool {
    // SAFETY: getpid and gettid take no arguments and cannot fail.
    unsafe { libc::getpid() == libc::gettid() }
}

/// Runs `call` with the GIL released; a SIGINT meanwhile (on the main
/// thread, with a Python handler installed) kills the guest through
/// `killer`, and the call then raises what Python's handler raises.
pub fn guarded<T: Send>(
    py: Python<'_>,
    killer: impl FnOnce() -> Killer,
    call: impl FnOnce() -> T + Send,
) -> PyResult<T> {
    if !on_main_thread() {
        return Ok(py.detach(call));
    }
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`.
    if unsafe { libc::sigaction(libc::SIGINT, ptr::null(), old.as_mut_ptr()) } != 0 {
        return Ok(py.detach(call));
    }
    // SAFETY: sigaction succeeded, so it filled `old`.
    let old = unsafe { old.assume_init() };
    if old.sa_sigaction == libc::SIG_IGN || old.sa_sigaction == libc::SIG_DFL {
        return Ok(py.detach(call));
    }
    let target = Box::into_raw(Box::new(killer()));
    if TARGET.compare_exchange(ptr::null_mut(), target, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        // Another guarded call is in progress on this thread (cannot
        // happen: the GIL is released only inside one).
        // SAFETY: `target` came from Box::into_raw above and was not shared.
        drop(unsafe { Box::from_raw(target) });
        return Ok(py.detach(call));
    }
    FIRED.store(false, Ordering::SeqCst);
    // SAFETY: a zeroed sigaction is a valid value; we set a handler of the
    // right signature, keep Python's mask and restart interrupted calls.
    let installed = unsafe {
        let mut ours: libc::sigaction = std::mem::zeroed();
        ours.sa_sigaction = on_sigint as *const () as libc::sighandler_t;
        ours.sa_mask = old.sa_mask;
        ours.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGINT, &ours, ptr::null_mut()) == 0
    };
    let result = py.detach(call);
    if installed {
        // SAFETY: puts back the action read above.
        unsafe { libc::sigaction(libc::SIGINT, &old, ptr::null_mut()) };
    }
    TARGET.store(ptr::null_mut(), Ordering::SeqCst);
    while IN_HANDLER.load(Ordering::SeqCst) != 0 {
        std::hint::spin_loop();
    }
    // SAFETY: TARGET no longer points at it and no handler is using it.
    drop(unsafe { Box::from_raw(target) });
    if FIRED.swap(false, Ordering::SeqCst) {
        // SAFETY: raise sends SIGINT to this thread, now to Python's own
        // handler, which notes it for check_signals.
        unsafe { libc::raise(libc::SIGINT) };
        py.check_signals()?;
    }
    Ok(result)
}
