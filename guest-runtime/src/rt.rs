//! The runtime's core state, below everything else: the single-threaded
//! global cell, the boot information, guest RAM through the physmap, the
//! program's saved registers and what the entry assembly writes.

use core::cell::UnsafeCell;

use hvsandbox_abi as abi;

use crate::hc;

/// The program's RSP at the last `syscall` (written by the entry asm).
#[no_mangle]
pub static mut SAVED_USER_RSP: u64 = 0;

/// What the ring-0 handler saw when the program took an exception:
/// vector, error code, RIP, CR2, RSP, RFLAGS (written by the entry asm).
#[no_mangle]
pub static mut PROGRAM_FAULT: [u64; 6] = [0; 6];

/// Where the frame exit jumps and the stack it leaves on (written by the
/// entry asm just before it restores the registers).
#[no_mangle]
pub static mut RESUME_RIP: u64 = 0;
#[no_mangle]
pub static mut RESUME_RSP: u64 = 0;

/// Global state of the single-threaded runtime. The runtime runs one
/// thing at a time on one vCPU with no interrupts, so a `&mut` handed out
/// by [`Global::get`] is never aliased as long as callers do not hold one
/// across a call that takes the same global again.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: the runtime has exactly one thread of execution (one vCPU, no
// interrupts reach CPL3 code), so there is no concurrent access.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(v: T) -> Global<T> {
        Global(UnsafeCell::new(v))
    }
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut T {
        // SAFETY: single thread of execution (see the type's docs); each
        // use is short and does not re-enter the same global.
        unsafe { &mut *self.0.get() }
    }
}

/// The boot information the host wrote (copied at start).
pub static BOOT: Global<Option<abi::BootInfo>> = Global::new(None);

pub fn boot() -> &'static abi::BootInfo {
    match BOOT.get() {
        Some(b) => b,
        None => hc::panic(b"boot info used before start"),
    }
}

/// The environment this run was given (`KEY=VALUE` strings, each ending
/// in NUL), as `/dev/hvsandbox/env` reads it: the boot environment, or a
/// restored run's.
pub static RUN_ENV: Global<alloc::vec::Vec<u8>> = Global::new(alloc::vec::Vec::new());

/// The strings after the first `skip` NUL-terminated ones.
pub fn after_strings(bytes: &[u8], skip: usize) -> &[u8] {
    let mut at = 0;
    for _ in 0..skip {
        match bytes[at..].iter().position(|&c| c == 0) {
            Some(i) => at += i + 1,
            None => return &[],
        }
    }
    &bytes[at..]
}

/// A pointer into guest RAM through the physmap.
pub fn phys_ptr(gpa: u64) -> *mut u8 {
    abi::phys_to_virt(gpa) as *mut u8
}

/// The bytes `[gpa, gpa + len)` of guest RAM, checked against its size.
pub fn phys_slice(gpa: u64, len: u64) -> &'static [u8] {
    let mem = boot().mem_size;
    match gpa.checked_add(len) {
        Some(end) if end <= mem => {}
        _ => hc::panic(b"physical range outside RAM"),
    }
    // SAFETY: the range lies inside guest RAM, which is mapped in full at
    // PHYS_BASE for the whole life of the runtime.
    unsafe { core::slice::from_raw_parts(phys_ptr(gpa), len as usize) }
}

/// A fixed-capacity byte buffer implementing `fmt::Write` (truncates).
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        FixedBuf { buf: [0; N], len: 0 }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

impl<const N: usize> Default for FixedBuf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Registers saved by `syscall_entry`, lowest address first.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r9: u64,
    pub r8: u64,
    pub r10: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// The program's RCX and R11: after a `syscall` they are RIP and
    /// RFLAGS; after a fault or a preemption, its own.
    pub r11: u64,
    pub rcx: u64,
    pub rax: u64,
    pub rflags: u64,
    pub rip: u64,
    pub rsp: u64,
}

/// The user id the program runs as (and owns what it creates).
pub const UID: u64 = 1000;
