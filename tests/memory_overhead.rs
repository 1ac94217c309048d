//! Host memory per sandbox: a guest that touches all it can makes the
//! host's resident memory grow by at most its RAM plus a small overhead.
//! Alone in its test binary so no other test's memory counts.

use std::sync::Mutex;

use hvsandbox::{Command, ErrorKind, Sandbox};
use hvsandbox_tests::musl;

/// The tests measure this process's memory: one at a time, and without
/// the process-wide blank VMs made ahead for new sandboxes (a cache of the
/// process, not a sandbox's cost: BENCHMARKS.md measures it).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    hvsandbox::set_blank_vms(0);
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Peak resident memory of this process (VmHWM), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[test]
fn host_memory_stays_within_the_limit_plus_overhead() {
    let _one = serial();
    // A guest that touches as much memory as it can: the host's resident
    // memory grows by at most the guest's RAM plus a small fixed overhead.
    // Reset the peak to now (Linux: writing 5 to clear_refs resets VmHWM).
    hvsandbox::wait_for_reaper();
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let before = peak_rss();
    let mut sb = Sandbox::builder().memory_mib(64).build().unwrap();
    let err = sb.run(&Command::new(musl("oom"))).map(|o| o.status);
    assert!(matches!(&err, Err(e) if e.kind() == ErrorKind::MemoryLimitExceeded) || err.is_ok(), "{err:?}");
    drop(sb);
    hvsandbox::wait_for_reaper();
    let grew = peak_rss().saturating_sub(before);
    eprintln!("host peak RSS grew by {} KiB for a 64 MiB guest", grew / 1024);
    assert!(grew <= (64 + 8) << 20, "host grew by {grew} bytes");
}

/// Resident memory now (VmRSS), bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn an_idle_sandbox_costs_little_and_a_finished_run_gives_its_memory_back() {
    let _one = serial();
    let hello = musl("hello");
    let mut sb = Sandbox::builder().memory_mib(64).build().unwrap();
    sb.run(&Command::new(&hello)).unwrap();
    // An idle sandbox that has run makes its next blank VM after 0.2 ms:
    // let it, so both measurements include it.
    std::thread::sleep(std::time::Duration::from_millis(50));
    hvsandbox::wait_for_reaper();
    let base = rss();
    // Between runs a sandbox holds no VM: its memory went back.
    for _ in 0..20 {
        sb.run(&Command::new(&hello)).unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    hvsandbox::wait_for_reaper();
    let after = rss();
    eprintln!("RSS after 20 more runs: {} KiB more than after the first", after.saturating_sub(base) / 1024);
    assert!(after <= base + (4 << 20), "RSS grew from {base} to {after}");
}
