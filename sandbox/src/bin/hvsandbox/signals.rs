//! SIGINT and SIGTERM, taken by one thread that waits for them.

/// Blocks SIGINT and SIGTERM in this thread and every thread started after
/// (the sandbox's vCPU thread among them), and calls `on_signal` for each
/// from a thread that waits for them.
pub(crate) fn on_termination_signals(on_signal: impl Fn() + Send + 'static) -> std::io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t owned by this frame.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    std::thread::Builder::new().name("hvsandbox-signals".into()).spawn(move || loop {
        let mut sig = 0;
        // SAFETY: `set` and `sig` are valid for the call; the signals are
        // blocked in all threads, so sigwait receives them.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            on_signal();
        }
    })?;
    Ok(())
}
