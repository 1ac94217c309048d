//! The Rust side of bench.mjs's binding-overhead comparison: the same
//! pooled warm run of busybox `true` as the Node benchmark makes, from
//! Rust, printed as "<name>\t<median µs>\t<caller CPU µs per call>" lines.
//!   cargo run --release --example pool_rate -- [seconds]
use std::time::{Duration, Instant};

use hvsandbox::{Command, Sandbox, SandboxPool, SnapshotPoint};

/// CPU time of the calling thread so far, in µs.
fn thread_cpu_us() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split(' ').next().and_then(|n| n.parse::<f64>().ok()))
        .map_or(0.0, |ns| ns / 1000.0)
}

fn rate(name: &str, seconds: f64, once: &mut dyn FnMut()) {
    for _ in 0..20 {
        once();
    }
    let mut times = Vec::new();
    let cpu = thread_cpu_us();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    while Instant::now() < end {
        let start = Instant::now();
        once();
        times.push(start.elapsed());
    }
    let cpu = (thread_cpu_us() - cpu) / times.len() as f64;
    times.sort();
    println!("{name}\t{:.0}\t{cpu:.1}", times[times.len() / 2].as_secs_f64() * 1e6);
}

fn main() -> hvsandbox::Result<()> {
    let seconds: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let mut sb = Sandbox::builder().build()?;
    let snap = sb.snapshot(&Command::new("/bin/busybox").arg("true"), SnapshotPoint::Entry)?;
    drop(sb);
    let pool = SandboxPool::new(Sandbox::builder(), &snap, 8)?;
    let cmd = Command::resume().arg("true");
    rate("pool get/run/return", seconds, &mut || {
        let mut sb = pool.get().expect("a pooled sandbox");
        sb.run(&cmd).expect("a run");
    });
    let mut loan = pool.get()?;
    rate("one pooled sandbox, back to back", seconds, &mut || {
        loan.run(&cmd).expect("a run");
    });
    Ok(())
}
