//! The guest's vDSO: `clock_gettime`, `gettimeofday`, `time`, `getcpu` and
//! `clock_getres` served in user mode from the clock page the runtime
//! keeps (mapped one page below the vDSO's first byte), and the legacy
//! vsyscall entry points. Built by `build.rs` into a freestanding shared
//! object (`vdso.lds` lays it out and versions its symbols) that the
//! runtime embeds and maps into every process.
//!
//! No library is linked: no panics (no indexing, no division by a
//! variable), no data (the object is mapped read-only and shared), no
//! relocations (`build.rs` refuses an image with any).
#![no_std]
#![allow(clippy::missing_safety_doc)]

// The writer's half is the runtime's.
#[allow(dead_code)]
#[path = "clock.rs"]
mod clock;

use clock::ClockPage;

/// The clock page: the page below the vDSO (`__hv_vvar` in `vdso.lds`).
#[inline(always)]
fn page() -> *const ClockPage {
    let p: *const ClockPage;
    // SAFETY: computes an address (RIP-relative lea), touches nothing.
    unsafe { core::arch::asm!("lea {}, [rip + __hv_vvar]", out(reg) p, options(pure, nomem, nostack, preserves_flags)) };
    p
}

const SYS_GETTIMEOFDAY: u64 = 96;
const SYS_TIME: u64 = 201;
const SYS_CLOCK_GETTIME: u64 = 228;
const SYS_CLOCK_GETRES: u64 = 229;

/// The real system call, for what the page cannot answer.
#[inline(always)]
unsafe fn syscall3(nr: u64, a: u64, b: u64, c: u64) -> i64 {
    let ret: i64;
    // SAFETY: a Linux system call with plain integer arguments; it
    // clobbers RCX and R11 only.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as i64 => ret,
            in("rdi") a,
            in("rsi") b,
            in("rdx") c,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack)
        )
    };
    ret
}

/// Which clock the page serves for a clock id.
enum Kind {
    Realtime,
    Monotonic,
}

fn kind(clock: i32) -> Option<Kind> {
    match clock {
        // REALTIME, REALTIME_COARSE, TAI (as the runtime's system call).
        0 | 5 | 11 => Some(Kind::Realtime),
        // MONOTONIC, MONOTONIC_RAW, MONOTONIC_COARSE, BOOTTIME.
        1 | 4 | 6 | 7 => Some(Kind::Monotonic),
        // CPU-time clocks, alarms, dynamic ids and the unknown: the
        // system call decides.
        _ => None,
    }
}

#[repr(C)]
pub struct Timespec {
    sec: i64,
    nsec: i64,
}

#[repr(C)]
pub struct Timeval {
    sec: i64,
    usec: i64,
}

#[no_mangle]
pub unsafe extern "C" fn hv_vdso_clock_gettime(clock: i32, ts: *mut Timespec) -> i32 {
    if !ts.is_null() {
        if let Some(k) = kind(clock) {
            // SAFETY: the clock page is mapped below the vDSO.
            if let Some(now) = unsafe { clock::read(page()) } {
                let ns = match k {
                    Kind::Realtime => now.realtime,
                    Kind::Monotonic => now.monotonic,
                };
                // SAFETY: the caller passed a timespec to fill (as with
                // Linux's vDSO, a bad pointer faults in the caller).
                unsafe {
                    ts.write(Timespec { sec: (ns / 1_000_000_000) as i64, nsec: (ns % 1_000_000_000) as i64 })
                };
                return 0;
            }
        }
    }
    // SAFETY: the system call checks its arguments.
    unsafe { syscall3(SYS_CLOCK_GETTIME, clock as i64 as u64, ts as u64, 0) as i32 }
}

/// `struct timezone`: minutes west of Greenwich and a DST type.
#[repr(C)]
pub struct Timezone {
    minuteswest: i32,
    dsttime: i32,
}

#[no_mangle]
pub unsafe extern "C" fn hv_vdso_gettimeofday(tv: *mut Timeval, tz: *mut Timezone) -> i32 {
    // SAFETY: the clock page is mapped below the vDSO.
    if let Some(now) = unsafe { clock::read(page()) } {
        if !tv.is_null() {
            let ns = now.realtime;
            // SAFETY: the caller passed a timeval to fill (as with Linux's
            // vDSO, a bad pointer faults in the caller).
            unsafe {
                tv.write(Timeval { sec: (ns / 1_000_000_000) as i64, usec: (ns % 1_000_000_000 / 1000) as i64 })
            };
        }
        if !tz.is_null() {
            // The guest's zone is UTC, no DST (the runtime's system call
            // says the same).
            // SAFETY: the caller passed a timezone to fill.
            unsafe { tz.write(Timezone { minuteswest: 0, dsttime: 0 }) };
        }
        return 0;
    }
    // SAFETY: the system call checks its arguments.
    unsafe { syscall3(SYS_GETTIMEOFDAY, tv as u64, tz as u64, 0) as i32 }
}

#[no_mangle]
pub unsafe extern "C" fn hv_vdso_time(t: *mut i64) -> i64 {
    // SAFETY: the clock page is mapped below the vDSO.
    match unsafe { clock::read(page()) } {
        Some(now) => {
            let secs = (now.realtime / 1_000_000_000) as i64;
            if !t.is_null() {
                // SAFETY: the caller passed a time_t to fill.
                unsafe { t.write(secs) };
            }
            secs
        }
        // SAFETY: the system call checks its argument.
        None => unsafe { syscall3(SYS_TIME, t as u64, 0, 0) },
    }
}

#[no_mangle]
pub unsafe extern "C" fn hv_vdso_getcpu(cpu: *mut u32, node: *mut u32, _cache: *mut u8) -> i32 {
    // One vCPU, one node (the runtime's getcpu says the same).
    if !cpu.is_null() {
        // SAFETY: the caller passed a place for the CPU number.
        unsafe { cpu.write(0) };
    }
    if !node.is_null() {
        // SAFETY: the caller passed a place for the node number.
        unsafe { node.write(0) };
    }
    0
}

#[no_mangle]
pub unsafe extern "C" fn hv_vdso_clock_getres(clock: i32, res: *mut Timespec) -> i32 {
    if kind(clock).is_some() {
        if !res.is_null() {
            // SAFETY: the caller passed a timespec to fill.
            unsafe { res.write(Timespec { sec: 0, nsec: 1 }) };
        }
        return 0;
    }
    // SAFETY: the system call checks its arguments.
    unsafe { syscall3(SYS_CLOCK_GETRES, clock as i64 as u64, res as u64, 0) as i32 }
}

// The exported names (each also without the `__vdso_` prefix, as Linux's
// vDSO has them: glibc, musl and Go look up the prefixed ones, some
// programs the plain ones), and the vsyscall page: the page of this
// image that the runtime also maps at 0xffffffffff600000, with the three
// legacy entry points at their fixed offsets jumping to the functions
// above (a near jump within the image: no relocation).
core::arch::global_asm!(
    ".globl __vdso_clock_gettime, clock_gettime",
    ".globl __vdso_gettimeofday, gettimeofday",
    ".globl __vdso_time, time",
    ".globl __vdso_getcpu, getcpu",
    ".globl __vdso_clock_getres, clock_getres",
    ".type __vdso_clock_gettime, @function",
    ".type clock_gettime, @function",
    ".type __vdso_gettimeofday, @function",
    ".type gettimeofday, @function",
    ".type __vdso_time, @function",
    ".type time, @function",
    ".type __vdso_getcpu, @function",
    ".type getcpu, @function",
    ".type __vdso_clock_getres, @function",
    ".type clock_getres, @function",
    ".set __vdso_clock_gettime, hv_vdso_clock_gettime",
    ".set clock_gettime, hv_vdso_clock_gettime",
    ".set __vdso_gettimeofday, hv_vdso_gettimeofday",
    ".set gettimeofday, hv_vdso_gettimeofday",
    ".set __vdso_time, hv_vdso_time",
    ".set time, hv_vdso_time",
    ".set __vdso_getcpu, hv_vdso_getcpu",
    ".set getcpu, hv_vdso_getcpu",
    ".set __vdso_clock_getres, hv_vdso_clock_getres",
    ".set clock_getres, hv_vdso_clock_getres",
    ".pushsection .vsyscall, \"ax\", @progbits",
    ".globl __hv_vsyscall_page",
    "__hv_vsyscall_page:",
    "jmp hv_vdso_gettimeofday",
    ".org __hv_vsyscall_page + 0x400, 0xcc",
    "jmp hv_vdso_time",
    ".org __hv_vsyscall_page + 0x800, 0xcc",
    "jmp hv_vdso_getcpu",
    ".org __hv_vsyscall_page + 0x1000, 0xcc",
    ".popsection",
);
