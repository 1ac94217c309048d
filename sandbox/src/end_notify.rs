//! A process-wide eventfd that turns readable when a process started with
//! [`crate::Command::notify_on_end`] ends: for event loops (Node's libuv,
//! tokio, epoll) that must learn of a run's end without parking a thread
//! on it. The vCPU thread that served the run writes it; its jail allows
//! that one `write` (jail.rs), so the eventfd is made before any vCPU
//! thread is jailed and lives as long as the host process.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

use crate::error::{Error, Result};

static EVENT_FD: OnceLock<std::result::Result<OwnedFd, i32>> = OnceLock::new();

fn get() -> &'static std::result::Result<OwnedFd, i32> {
    EVENT_FD.get_or_init(|| {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
        } else {
            // SAFETY: `fd` was just opened above and is owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        }
    })
}

/// The eventfd's number for the jail's allow-list (None if it could not
/// be made; then processes cannot notify and [`end_event_fd`] says why).
pub(crate) fn raw_fd() -> Option<i32> {
    get().as_ref().ok().map(|fd| fd.as_raw_fd())
}

/// Makes the eventfd readable (on the vCPU thread, as a run ends).
pub(crate) fn signal() {
    if let Some(fd) = raw_fd() {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to an eventfd this module
        // owns for the life of the process. A failure (only a counter at
        // its maximum, which a reader's read resets) is harmless: the fd
        // stays readable.
        let _ = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// The process-wide eventfd (non-blocking, close-on-exec) that becomes
/// readable when a process started with [`crate::Command::notify_on_end`]
/// ends. Watch it in an event loop; when it is readable, read 8 bytes
/// from it (which makes it unreadable again) and then look at each such
/// process with [`crate::Process::has_ended`]: one readiness may stand for
/// several ends, and it may also come from processes of other callers in
/// this host process.
///
/// ```no_run
/// use hvsandbox::{end_event_fd, Command, Sandbox};
/// use std::os::fd::AsRawFd;
/// let fd = end_event_fd()?;
/// let mut sb = Sandbox::builder().build()?;
/// let p = sb.start(&Command::new("/bin/busybox").arg("true").notify_on_end(true))?;
/// let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
/// while !p.has_ended() {
///     // SAFETY: one valid pollfd.
///     unsafe { libc::poll(&mut poll, 1, 1000) };
/// }
/// # Ok::<(), hvsandbox::Error>(())
/// ```
pub fn end_event_fd() -> Result<BorrowedFd<'static>> {
    match get() {
        Ok(fd) => Ok(fd.as_fd()),
        Err(errno) => Err(Error::Internal {
            context: "cannot make the end-of-run eventfd".into(),
            source: Some(std::sync::Arc::new(std::io::Error::from_raw_os_error(*errno))),
        }),
    }
}
