//! Ctrl-C during a blocking call on Python's main thread.
//!
//! Python's own SIGINT handler only sets a flag that the main thread looks
//! at between bytecodes, and that thread is blocked in Rust until the guest
//! ends. So while a blocking call runs there, a handler of ours stands in
//! for Python's. A signal handler may do little (kills take locks), so it
//! only notes the interrupt and writes the call's number to a pipe; a
//! helper thread reading the pipe kills the guest of that call if it is
//! still the one in progress. When the call returns, Python's handler is
//! put back and the signal raised again, so Python handles it as it would
//! have (by default, `KeyboardInterrupt`). Elsewhere (other threads,
//! SIGINT ignored or left to the default action) nothing is changed.

use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use pyo3::prelude::*;

/// What stops the guest of the call in progress.
pub enum Killer {
    /// A sandbox's current run, once `armed`: the call may first wait
    /// for the sandbox, whose run then is another thread's.
    Run(hvsandbox::InterruptHandle, Arc<AtomicBool>),
    /// One spawned process.
    Process(hvsandbox::ProcessKillHandle),
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

/// The guarded call in progress: its number and its killer.
static CURRENT: Mutex<Option<(u64, Killer)>> = Mutex::new(None);
/// Numbers the guarded calls.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// The number of the call in progress, for the signal handler.
static CALL: AtomicU64 = AtomicU64::new(0);
/// A SIGINT arrived during the guarded call.
static FIRED: AtomicBool = AtomicBool::new(false);
/// The pipe's write end (non-blocking), -1 until the helper runs.
static WAKE: AtomicI32 = AtomicI32::new(-1);
/// Starts the helper once.
static HELPER: OnceLock<bool> = OnceLock::new();

extern "C" fn on_sigint(_: libc::c_int) {
    // SAFETY: errno is this thread's; it is put back before returning, as
    // a signal handler must.
    let errno = unsafe { *libc::__errno_location() };
    FIRED.store(true, Ordering::SeqCst);
    let fd = WAKE.load(Ordering::SeqCst);
    if fd >= 0 {
        let call = CALL.load(Ordering::SeqCst).to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; the buffer is a local
        // array; the pipe is non-blocking (a full pipe drops the wake-up:
        // earlier ones are pending anyway).
        unsafe { libc::write(fd, call.as_ptr().cast(), call.len()) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Kills the guest of each call a SIGINT was noted for, while that call
/// is still in progress.
fn helper(read_end: RawFd) {
    let mut buf = [0u8; 8];
    loop {
        // SAFETY: reads into a local buffer of its length from our pipe.
        let n = unsafe { libc::read(read_end, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 8 {
            let call = u64::from_ne_bytes(buf);
            let current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((n, killer)) = current.as_ref() {
                if *n == call {
                    killer.kill();
                }
            }
        } else if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        } else if n <= 0 {
            return;
        }
    }
}

/// Starts the helper thread and its pipe; false if they cannot be made.
fn start_helper() -> bool {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two descriptors of the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return false;
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: sets O_NONBLOCK on our own pipe's write end.
    unsafe {
        let flags = libc::fcntl(write_end, libc::F_GETFL);
        libc::fcntl(write_end, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    let started = std::thread::Builder::new().name("hvsandbox-sigint".into()).spawn(move || helper(read_end));
    if started.is_err() {
        // SAFETY: closes the pipe made above, which nothing else uses.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
        }
        return false;
    }
    WAKE.store(write_end, Ordering::SeqCst);
    true
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
    if !on_main_thread() || !*HELPER.get_or_init(start_helper) {
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
    let number = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = Some((number, killer()));
    CALL.store(number, Ordering::SeqCst);
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
    *CURRENT.lock().unwrap_or_else(|e| e.into_inner()) = None;
    if FIRED.swap(false, Ordering::SeqCst) {
        // SAFETY: raise sends SIGINT to this thread, now to Python's own
        // handler, which notes it for check_signals.
        unsafe { libc::raise(libc::SIGINT) };
        py.check_signals()?;
    }
    Ok(result)
}
