//! Clocks from the TSC. On this host `rdtsc` at CPL3 reads the host's TSC
//! directly, so one (tsc, realtime) pair from the host at boot and the TSC
//! rate give wall-clock and monotonic time without leaving the guest.

use crate::rt::{boot, Global};

/// Monotonic clock origin: Linux's CLOCK_MONOTONIC counts from boot; ours
/// counts from the VM's start plus a fixed offset so it is never zero. A
/// restored snapshot moves it so the clock goes on from where it was.
static MONOTONIC_BASE_NS: Global<u64> = Global::new(1_000_000_000);

fn tsc() -> u64 {
    // SAFETY: rdtsc has no preconditions.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Nanoseconds since boot.
pub fn elapsed_ns() -> u64 {
    let b = boot();
    let khz = if b.tsc_khz == 0 { 1_000_000 } else { b.tsc_khz };
    let ticks = tsc().saturating_sub(b.boot_tsc) as u128;
    (ticks * 1_000_000 / khz as u128) as u64
}

pub fn realtime_ns() -> u64 {
    boot().boot_realtime_ns + elapsed_ns()
}

pub fn monotonic_ns() -> u64 {
    *MONOTONIC_BASE_NS.get() + elapsed_ns()
}

/// A restored guest's clocks: a new (TSC, realtime) origin from this run's
/// host; the monotonic clock continues from its value at the snapshot.
pub fn rebase(tsc_khz: u64, tsc: u64, realtime_ns: u64) {
    let mono = monotonic_ns();
    if let Some(b) = crate::rt::BOOT.get().as_mut() {
        if tsc_khz != 0 {
            b.tsc_khz = tsc_khz;
        }
        b.boot_tsc = tsc;
        b.boot_realtime_ns = realtime_ns;
    }
    *MONOTONIC_BASE_NS.get() = mono;
}
