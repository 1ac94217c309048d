//! The clock page: what the runtime publishes for the vDSO (and reads
//! itself, so a system call and the vDSO agree to the nanosecond), and the
//! one computation of time from it. Shared, as source, by the runtime
//! (`src/time.rs`) and the vDSO (`vdso.rs`), which is linked without any
//! library: nothing here may panic, divide by a variable or allocate.
//!
//! Time is `base + ((tsc - tsc_base) * mult) >> SHIFT`, with `mult`
//! derived from the host's TSC rate. The runtime rewrites the page only
//! while no program code runs, but a program thread may be stopped inside
//! the vDSO (a time slice ends) while the runtime rebases the clocks (a
//! snapshot is resumed): readers therefore retry when `seq` moved.

/// Fixed point of `mult`: 2^40 keeps `mult` below 2^63 for any TSC rate
/// of at least 1 kHz and the rounding error below 10 µs per hour.
pub const SHIFT: u32 = 40;

/// The layout the vDSO reads (one page, read-only in every program).
#[repr(C)]
pub struct ClockPage {
    /// Even when the fields below are consistent; the writer makes it odd
    /// while it changes them and even again (one more than before) after.
    pub seq: u64,
    /// Nonzero once the fields are valid; until then the vDSO makes the
    /// real system call.
    pub ready: u64,
    /// The TSC value the bases refer to.
    pub tsc_base: u64,
    /// Nanoseconds per TSC tick, times 2^[`SHIFT`].
    pub mult: u64,
    /// CLOCK_REALTIME at `tsc_base`, ns since the epoch.
    pub realtime_base: u64,
    /// CLOCK_MONOTONIC at `tsc_base`, ns.
    pub monotonic_base: u64,
}

/// What one consistent read of the page gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Nanoseconds since `tsc_base`.
    pub elapsed: u64,
    pub realtime: u64,
    pub monotonic: u64,
}

/// The `mult` for a TSC rate in kHz (0: unknown, taken as 1 GHz).
pub const fn mult_for_khz(khz: u64) -> u64 {
    let khz = if khz == 0 { 1_000_000 } else { khz };
    ((1_000_000u128 << SHIFT) / khz as u128) as u64
}

/// Nanoseconds for `ticks` at `mult`.
#[inline(always)]
pub fn ticks_to_ns(ticks: u64, mult: u64) -> u64 {
    ((ticks as u128 * mult as u128) >> SHIFT) as u64
}

/// The TSC, read after every earlier instruction has completed (so a
/// later read never returns an older value than an earlier one).
#[inline(always)]
pub fn read_tsc() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: lfence and rdtsc only read the time stamp counter; rdtsc is
    // allowed at CPL3 here (CR4.TSD is clear) and changes no memory.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (hi as u64) << 32 | lo as u64
}

/// Reads the clocks from `page`, or None while it is not ready.
///
/// # Safety
/// `page` points at a readable `ClockPage`.
#[inline(always)]
pub unsafe fn read(page: *const ClockPage) -> Option<Now> {
    use core::ptr::addr_of;
    use core::sync::atomic::{compiler_fence, Ordering};
    loop {
        // SAFETY: the caller's promise; the reads are volatile because the
        // runtime may change the page between two of them (see the module
        // docs), and fenced so the compiler keeps them between the two
        // reads of `seq`.
        let (seq, ready, tsc_base, mult, realtime_base, monotonic_base, tsc, again) = unsafe {
            let seq = addr_of!((*page).seq).read_volatile();
            compiler_fence(Ordering::Acquire);
            let ready = addr_of!((*page).ready).read_volatile();
            let tsc_base = addr_of!((*page).tsc_base).read_volatile();
            let mult = addr_of!((*page).mult).read_volatile();
            let realtime_base = addr_of!((*page).realtime_base).read_volatile();
            let monotonic_base = addr_of!((*page).monotonic_base).read_volatile();
            let tsc = read_tsc();
            compiler_fence(Ordering::Acquire);
            let again = addr_of!((*page).seq).read_volatile();
            (seq, ready, tsc_base, mult, realtime_base, monotonic_base, tsc, again)
        };
        // The runtime never runs while program code does, so no reader
        // can see an odd `seq` unless the page was scribbled on (programs
        // can reach any guest frame through the physmap): then the clocks
        // are not ready, rather than a wait for a writer that never comes.
        if seq & 1 != 0 || ready == 0 {
            return None;
        }
        if seq != again {
            continue;
        }
        // A TSC a little behind the base (another host CPU's, at a
        // rebase) counts as no time passed: never before the base.
        let elapsed = ticks_to_ns(tsc.saturating_sub(tsc_base), mult);
        return Some(Now {
            elapsed,
            realtime: realtime_base.wrapping_add(elapsed),
            monotonic: monotonic_base.wrapping_add(elapsed),
        });
    }
}

/// Rewrites the page's fields (with `seq` odd meanwhile).
///
/// # Safety
/// `page` points at a writable `ClockPage` no one else writes.
pub unsafe fn publish(page: *mut ClockPage, tsc_base: u64, mult: u64, realtime_base: u64, monotonic_base: u64) {
    // SAFETY: the caller's promise (all writes are to the page).
    unsafe {
        let odd = core::ptr::addr_of!((*page).seq).read_volatile() | 1;
        core::ptr::addr_of_mut!((*page).seq).write_volatile(odd);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
        core::ptr::addr_of_mut!((*page).tsc_base).write_volatile(tsc_base);
        core::ptr::addr_of_mut!((*page).mult).write_volatile(mult);
        core::ptr::addr_of_mut!((*page).realtime_base).write_volatile(realtime_base);
        core::ptr::addr_of_mut!((*page).monotonic_base).write_volatile(monotonic_base);
        core::ptr::addr_of_mut!((*page).ready).write_volatile(1);
        core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::Release);
        core::ptr::addr_of_mut!((*page).seq).write_volatile(odd.wrapping_add(1));
    }
}
