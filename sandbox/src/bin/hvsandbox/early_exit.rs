//! The run's exit status reaches the caller before its VM is torn down.
//!
//! Destroying a KVM VM and unmapping its memory take about a millisecond
//! on a nested host, a tenth of a cold `hvsandbox run`, and a process's
//! exit does them before its parent's wait returns. So once the run's
//! output is written, [`exit`] hands the VM to a helper process that
//! shares this one's memory and descriptors (a `clone` without a copy of
//! either: tens of microseconds) and exits at once: this process's exit
//! then only drops its references. The helper waits (on a pidfd) until
//! this process has fully exited, then exits itself, and its exit tears
//! the VM down, beside whatever the caller does next.
//!
//! Before that, stdin, stdout and stderr are pointed at /dev/null, so the
//! helper holds none of the caller's pipes or terminals open: a reader of
//! the output sees its end when this process exits. Nothing else changes
//! for the caller: signals, the exit status, the process it waits for.
//! Where the helper cannot be made, the process exits as before, tearing
//! the VM down itself.

use std::ffi::c_void;

/// The helper's stack: it makes four system calls.
const HELPER_STACK: usize = 16 << 10;

/// Writes out what is buffered, hands the run's VM (in `keep`, never
/// dropped here) to a helper process and exits with `code`.
pub(crate) fn exit<T>(code: u8, keep: T) -> ! {
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let _ = std::io::Write::flush(&mut std::io::stderr());
    // SAFETY: open(2) of a constant path; dup2(2) over this process's own
    // standard descriptors; getpid(2) has no preconditions.
    let me = unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        libc::getpid()
    };
    // The helper's stack lives in the memory it shares with this process,
    // which outlives both.
    let stack = Box::leak(vec![0u8; HELPER_STACK].into_boxed_slice());
    let top = stack.as_mut_ptr().wrapping_add(HELPER_STACK).cast::<c_void>();
    let flags = libc::CLONE_VM | libc::CLONE_FILES | libc::CLONE_FS;
    // SAFETY: `helper` runs on its own stack in the shared memory, uses no
    // thread-local state and makes raw system calls only; the exit signal
    // is 0, so no one is told of its end.
    unsafe { libc::clone(helper, top, flags, me as usize as *mut c_void) };
    std::mem::forget(keep);
    // SAFETY: _exit(2): no destructor runs (the VM is the helper's now).
    unsafe { libc::_exit(i32::from(code)) }
}

/// The helper: waits until process `arg` has exited (all its threads),
/// then returns, and with its exit the shared memory and descriptors go.
extern "C" fn helper(arg: *mut c_void) -> libc::c_int {
    let pid = arg as usize as i64;
    let fd = raw_syscall(libc::SYS_pidfd_open, pid, 0, 0);
    if fd < 0 {
        // No pidfd: the last one out tears the VM down, perhaps this one.
        return 0;
    }
    let mut poll = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
    loop {
        let n = raw_syscall(libc::SYS_poll, (&raw mut poll) as i64, 1, -1);
        if n != -i64::from(libc::EINTR) {
            return 0;
        }
    }
}

/// A system call that leaves errno alone: the helper shares the exiting
/// thread's thread-local storage.
fn raw_syscall(nr: i64, a: i64, b: i64, c: i64) -> i64 {
    let ret: i64;
    // SAFETY: the syscall instruction with the kernel's x86-64 convention;
    // it clobbers rcx and r11 only, and reads memory the arguments name.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}
