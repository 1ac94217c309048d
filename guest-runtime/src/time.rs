//! Clocks from the TSC. On this host `rdtsc` at CPL3 reads the host's TSC
//! directly, so one (tsc, realtime) pair from the host and the TSC rate
//! give wall-clock and monotonic time without leaving the guest. They live
//! in the clock page (`vdso/clock.rs`), which every program also sees
//! read-only, below its vDSO: the system calls here and the vDSO compute
//! the same values from the same page.

#[path = "../vdso/clock.rs"]
mod clock;

use crate::rt::Global;

/// The clock page, alone in its frame (the programs map that frame).
#[repr(C, align(4096))]
pub struct ClockFrame(clock::ClockPage);

static CLOCK: Global<ClockFrame> = Global::new(ClockFrame(clock::ClockPage {
    seq: 0,
    ready: 0,
    tsc_base: 0,
    mult: 0,
    realtime_base: 0,
    monotonic_base: 0,
}));

/// Monotonic clock origin: Linux's CLOCK_MONOTONIC counts from boot; ours
/// counts from the VM's start plus a fixed offset so it is never zero.
const MONOTONIC_START_NS: u64 = 1_000_000_000;

fn page() -> *mut clock::ClockPage {
    &mut CLOCK.get().0 as *mut clock::ClockPage
}

/// The clock page's address in the runtime (through the physmap).
pub fn clock_page_va() -> u64 {
    page() as u64
}

/// Starts the clocks from the host's boot information.
pub fn init(tsc_khz: u64, tsc: u64, realtime_ns: u64) {
    // SAFETY: the page is the runtime's; programs only read it.
    unsafe { clock::publish(page(), tsc, clock::mult_for_khz(tsc_khz), realtime_ns, MONOTONIC_START_NS) };
}

fn now() -> clock::Now {
    // SAFETY: the page is a static of the runtime.
    match unsafe { clock::read(page()) } {
        Some(n) => n,
        None => crate::hc::panic(b"clocks used before start"),
    }
}

/// Nanoseconds since this run's clocks started (boot or resume).
pub fn elapsed_ns() -> u64 {
    now().elapsed
}

pub fn realtime_ns() -> u64 {
    now().realtime
}

pub fn monotonic_ns() -> u64 {
    now().monotonic
}

/// A restored guest's clocks: a new (TSC, realtime) origin from this run's
/// host (maybe another machine, with another TSC); the monotonic clock
/// continues from `monotonic_ns`, its value when the snapshot was taken,
/// so it never goes back (and counts no time the snapshot lay unused).
pub fn rebase(tsc_khz: u64, tsc: u64, realtime_ns: u64, monotonic_ns: u64) {
    let mult = if tsc_khz != 0 {
        clock::mult_for_khz(tsc_khz)
    } else {
        // SAFETY: the page is a static of the runtime.
        unsafe { core::ptr::addr_of!((*page()).mult).read_volatile() }
    };
    // SAFETY: as in `init`.
    unsafe { clock::publish(page(), tsc, mult, realtime_ns, monotonic_ns) };
}

#[cfg(test)]
mod tests {
    use super::clock::*;

    #[test]
    fn ticks_convert_at_the_tsc_rate() {
        let khz = 2_445_428;
        let mult = mult_for_khz(khz);
        // One second of ticks is one second, to well under a microsecond.
        let ns = ticks_to_ns(khz * 1000, mult);
        assert!(ns.abs_diff(1_000_000_000) < 100, "{ns}");
        // A day of ticks, still within a few µs.
        let ns = ticks_to_ns(khz * 1000 * 86_400, mult);
        assert!(ns.abs_diff(86_400_000_000_000) < 10_000, "{ns}");
        // Unknown rate: 1 GHz.
        assert!(ticks_to_ns(1_000_000_000, mult_for_khz(0)).abs_diff(1_000_000_000) <= 1);
        // Slow and fast counters keep mult in range.
        assert!(mult_for_khz(1) < 1 << 63);
        assert!(mult_for_khz(u32::MAX as u64) > 0);
    }

    #[test]
    fn a_consistent_page_reads_and_a_rebase_moves_seq_by_two() {
        let mut p = ClockPage { seq: 0, ready: 0, tsc_base: 0, mult: 0, realtime_base: 0, monotonic_base: 0 };
        // SAFETY: a local page.
        assert_eq!(unsafe { read(&p) }, None, "not ready");
        let tsc = read_tsc();
        // SAFETY: as above.
        unsafe { publish(&mut p, tsc, mult_for_khz(1_000_000), 5_000, 7_000) };
        assert_eq!(p.seq, 2);
        // SAFETY: as above.
        let n = unsafe { read(&p) }.unwrap();
        assert!(n.realtime >= 5_000 && n.monotonic >= 7_000);
        assert_eq!(n.realtime - 5_000, n.elapsed);
        assert_eq!(n.monotonic - 7_000, n.elapsed);
        // A base ahead of the TSC (another host's): no time has passed.
        // SAFETY: as above.
        unsafe { publish(&mut p, u64::MAX, mult_for_khz(1_000_000), 5_000, 7_000) };
        assert_eq!(p.seq, 4);
        // SAFETY: as above.
        let n = unsafe { read(&p) }.unwrap();
        assert_eq!((n.elapsed, n.realtime, n.monotonic), (0, 5_000, 7_000));
        // A page left half-written reads as not ready.
        p.seq = 5;
        // SAFETY: as above.
        assert_eq!(unsafe { read(&p) }, None);
    }
}
