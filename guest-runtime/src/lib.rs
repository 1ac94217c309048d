//! hvsandbox guest runtime: a tiny library OS that runs at CPL3 inside the
//! micro-VM, loads a static Linux ELF program and serves its system calls.
//!
//! A library (this crate, `no_std`; its unit tests run on the host with
//! `cargo test --lib`) and a thin binary (`main.rs`: the entry assembly,
//! panic handler and allocator) that core/build.rs links at its fixed
//! address. The modules are layers that call only downwards (see
//! ARCHITECTURE.md); a lower layer that must reach a higher one does it
//! through a hook the higher one registers at start.
#![no_std]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod cpu;
mod cpuid;
mod ctl;
mod dnotify;
mod eager;
mod elf;
mod errno;
mod exec;
mod exec_cpuid;
mod fds;
mod file;
mod filerange;
mod fnindex;
mod futex;
mod hc;
mod heap;
mod inotify;
mod io;
mod iocount;
mod locks;
mod mapnames;
mod mm;
mod netlink;
mod pidfd;
mod pipe;
mod prctl;
mod prefault;
mod process;
mod procfs;
mod procnet;
mod pty;
mod random;
mod rewrite;
mod rt;
mod run;
mod shm;
mod sigio;
mod signal;
mod signalfd;
mod sigqueue;
mod sitefind;
mod sites;
mod snapshot;
mod sock;
mod sock_addr;
mod sock_msg;
mod socket;
mod stack;
mod start;
mod stats;
mod sys_fs;
mod sys_notify;
mod sys_pty;
mod sys_timer;
mod syscalls;
mod sysfs;
mod task;
mod time;
mod timer;
mod touched;
mod uaccess;
mod vdso;
mod vfs;
mod vma;
mod wait;
mod x86len;

/// What the binary's entry assembly names, and the pieces it is built of.
pub mod entry {
    pub use crate::cpuid::{CPUID_BACK, CPUID_RSP};
    pub use crate::hc::panic as runtime_panic;
    pub use crate::heap::RuntimeAllocator;
    pub use crate::mm::NEXT_CR3;
    pub use crate::rewrite::{REWRITE_FAST_ENTRY, REWRITE_PROBE};
    pub use crate::rt::FixedBuf;
    pub use crate::rt::{PROGRAM_FAULT, RESUME_RIP, RESUME_RSP, SAVED_USER_RSP};
    pub use crate::start::{program_fault, rust_start};
    pub use crate::syscalls::dispatch;
}

/// Shared set-up of the host unit tests.
#[cfg(test)]
mod testing {
    use std::sync::{Mutex, MutexGuard};

    use hvsandbox_abi as abi;

    static LOCK: Mutex<()> = Mutex::new(());

    /// The runtime's globals are one machine's: tests that use them run
    /// one at a time, each on a fresh boot information and filesystem
    /// (the standard tree; no frames for file data, which lives in guest
    /// RAM, but room for the tree itself).
    pub fn fresh_vfs() -> MutexGuard<'static, ()> {
        let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: BootInfo is plain integers and byte arrays; all-zero is
        // a valid value.
        let mut info: abi::BootInfo = unsafe { core::mem::zeroed() };
        info.mem_size = 64 << 20;
        info.tsc_khz = 1_000_000;
        *crate::rt::BOOT.get() = Some(info);
        crate::time::init(info.tsc_khz, info.boot_tsc, info.boot_realtime_ns);
        crate::mm::test_free_frames(crate::mm::HEAP_RESERVE - 1);
        crate::vfs::init(&info);
        guard
    }
}
