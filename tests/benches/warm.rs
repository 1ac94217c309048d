//! Warm starts and reuse: runs from a snapshot (reset in place, clones,
//! pools), a reused cold sandbox (blank VM made ahead), python3 from a
//! checkpoint taken after its imports, throughput on 1 and 2 threads, and
//! host memory per idle sandbox — each beside its honest baseline measured
//! in the same run (fork+exec of the same binary; the native interpreter).
//!
//! `cargo bench -p hvsandbox-tests --bench warm [-- --quick]`

use std::path::Path;
use std::time::{Duration, Instant};

use hvsandbox::{Command, Sandbox, SandboxPool, Snapshot, SnapshotPoint};
use hvsandbox_tests::{musl, BUSYBOX};

const PYTHON: &str = "/usr/bin/python3";

fn pick(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let n = samples.len();
    samples[((n as f64 * q).ceil() as usize).clamp(1, n) - 1]
}

fn us(d: Duration) -> String {
    format!("{:9.1} µs", d.as_secs_f64() * 1e6)
}

fn line(what: &str, samples: &mut [Duration], baseline: Option<Duration>) -> Duration {
    let median = pick(samples, 0.5);
    let p99 = pick(samples, 0.99);
    let ratio =
        baseline.map(|b| format!("  {:6.2}x baseline", median.as_secs_f64() / b.as_secs_f64())).unwrap_or_default();
    println!("  {what:<44} median {}  p99 {}{ratio}", us(median), us(p99));
    median
}

fn native(path: &Path, args: &[&str], runs: usize, expect: &[u8]) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            let out = std::process::Command::new(path).args(args).output().unwrap();
            let d = t.elapsed();
            assert_eq!(out.stdout, expect);
            d
        })
        .collect()
}

fn timed(runs: usize, mut f: impl FnMut()) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

/// Like [`timed`], with `idle` before each run (not timed): requests that
/// come with time between them, as a server's do. A sandbox resets to its
/// snapshot right after each run, so this measures a run from a sandbox
/// that was ready for it.
fn timed_after_idle(runs: usize, idle: Duration, mut f: impl FnMut()) -> Vec<Duration> {
    (0..runs)
        .map(|_| {
            std::thread::sleep(idle);
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect()
}

fn static_program(name: &str, path: &Path, args: &[&str], expect: &[u8], runs: usize) {
    println!("{name} ({runs} runs each)");
    let base = line("fork+exec (baseline)", &mut native(path, args, runs, expect), None);
    let cmd = Command::new(path).args(args);
    // A new Sandbox for every run: back to back, and with 2 ms between runs
    // (not timed) as between requests, when the process-wide blank VMs and
    // the vCPU threads earlier sandboxes left are ready.
    let mut new_each_run = || {
        let mut sb = Sandbox::builder().build().unwrap();
        assert_eq!(sb.run(&cmd).unwrap().stdout, expect);
    };
    line("cold: new Sandbox, run, drop (back to back)", &mut timed(runs, &mut new_each_run), Some(base));
    hvsandbox::wait_for_reaper();
    line(
        "cold: new Sandbox, run, drop (2 ms between)",
        &mut timed_after_idle(runs, Duration::from_millis(2), &mut new_each_run),
        Some(base),
    );
    // Each line starts once the VMs the previous one left are destroyed.
    hvsandbox::wait_for_reaper();
    let mut reused = Sandbox::builder().build().unwrap();
    reused.run(&cmd).unwrap();
    line(
        "cold: reused Sandbox (VM made ahead)",
        // With time between runs (2 ms, not timed), as between requests:
        // the sandbox makes the next run's VM in it.
        &mut timed_after_idle(runs, Duration::from_millis(2), || {
            assert_eq!(reused.run(&cmd).unwrap().stdout, expect);
        }),
        Some(base),
    );
    let mut snap_sb = Sandbox::builder().build().unwrap();
    let snap = snap_sb.snapshot(&Command::new(path).args(args), SnapshotPoint::Entry).unwrap();
    let resume = Command::resume().args(args);
    let mut warm = Sandbox::from_snapshot(&snap).unwrap();
    warm.warm().unwrap();
    hvsandbox::wait_for_reaper();
    line(
        "warm: reset to the entry snapshot, run",
        &mut timed(runs, || {
            assert_eq!(warm.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
    line(
        "warm, 1 ms idle between runs (reset ahead)",
        &mut timed_after_idle(runs, Duration::from_millis(1), || {
            assert_eq!(warm.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
    // Clones made (and warmed) ahead, as a pool does: each one's first run.
    let mut ahead: Vec<Sandbox> = (0..runs.min(100))
        .map(|_| {
            let mut c = Sandbox::from_snapshot(&snap).unwrap();
            c.warm().unwrap();
            c
        })
        .collect();
    let mut next = ahead.iter_mut();
    line(
        "clone made ahead: its first run",
        &mut timed_after_idle(runs.min(100), Duration::from_millis(1), || {
            let c = next.next().unwrap();
            assert_eq!(c.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
    drop(ahead);
    hvsandbox::wait_for_reaper();
    line(
        "clone: Sandbox::from_snapshot, run, drop",
        &mut timed(runs.min(100), || {
            let mut c = Sandbox::from_snapshot(&snap).unwrap();
            assert_eq!(c.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
    // A sandbox that runs once (as the CLI's): no reset after its run,
    // its VM mapping the snapshot or with its own copy of it.
    for copy in [false, true] {
        snap.copy_memory(copy);
        line(
            if copy { "  the same, run once, copied memory" } else { "  the same, run once (no reset ahead)" },
            &mut timed(runs.min(100), || {
                let mut c = Sandbox::builder().reset_ahead(false).build_from(&snap).unwrap();
                assert_eq!(c.run(&resume).unwrap().stdout, expect);
            }),
            Some(base),
        );
    }
    snap.copy_memory(false);
    let pool = SandboxPool::new(Sandbox::builder(), &snap, 4).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    line(
        "pool: get, run, return",
        &mut timed(runs, || {
            let mut sb = pool.get().unwrap();
            assert_eq!(sb.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
    throughput(&snap, &resume, expect);
}

/// Warm runs per second on one thread and on two (one sandbox each).
fn throughput(snap: &Snapshot, resume: &Command, expect: &[u8]) {
    let window = Duration::from_millis(1000);
    let count = |threads: usize| -> f64 {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let snap = snap.clone();
                let resume = resume.clone();
                let expect = expect.to_vec();
                std::thread::spawn(move || {
                    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
                    sb.warm().unwrap();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < window {
                        assert_eq!(sb.run(&resume).unwrap().stdout, expect);
                        n += 1;
                    }
                    n as f64 / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    };
    println!("  warm runs/s: {:.0} on 1 thread, {:.0} on 2 threads", count(1), count(2));
}

fn python(runs: usize) {
    if !Path::new(PYTHON).exists() {
        println!("python3: not installed, skipped");
        return;
    }
    let code = "import json; print(json.dumps({\"a\": [1,2,3]}))";
    let expect = b"{\"a\": [1, 2, 3]}\n";
    println!("python3 JSON one-liner ({runs} runs each)");
    let base = line("native python3 -c (baseline)", &mut native(Path::new(PYTHON), &["-c", code], runs, expect), None);
    let builder = || Sandbox::builder().mount("/usr", "/usr").mount("/lib", "/lib").mount("/lib64", "/lib64");
    let cmd = Command::new(PYTHON).args(["-c", code]);
    line(
        "cold: new Sandbox, run, drop",
        &mut timed(runs.min(30), || {
            let mut sb = builder().build().unwrap();
            assert_eq!(sb.run(&cmd).unwrap().stdout, expect);
        }),
        Some(base),
    );
    let prog =
        "import sys, json, re, collections\nopen('/dev/hvsandbox/checkpoint', 'rb').read()\nexec(sys.stdin.read())";
    let mut sb = builder().build().unwrap();
    let snap = sb.snapshot(&Command::new(PYTHON).args(["-c", prog]), SnapshotPoint::Checkpoint).unwrap();
    let mut warm = Sandbox::from_snapshot(&snap).unwrap();
    warm.warm().unwrap();
    let resume = Command::resume().stdin("print(json.dumps({\"a\": [1,2,3]}))");
    hvsandbox::wait_for_reaper();
    line(
        "warm: checkpoint after imports, reset, run",
        &mut timed(runs, || {
            assert_eq!(warm.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
    line(
        "warm, 1 ms idle between runs (reset ahead)",
        &mut timed_after_idle(runs, Duration::from_millis(1), || {
            assert_eq!(warm.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
    // The same with the resumed code skipping Python's teardown.
    let prog = "import sys, os, json, re, collections\nopen('/dev/hvsandbox/checkpoint', 'rb').read()\n\
                exec(sys.stdin.read())\nsys.stdout.flush()\nos._exit(0)";
    let snap = sb.snapshot(&Command::new(PYTHON).args(["-c", prog]), SnapshotPoint::Checkpoint).unwrap();
    let mut warm = Sandbox::from_snapshot(&snap).unwrap();
    warm.warm().unwrap();
    line(
        "warm, ending in os._exit, 1 ms idle between",
        &mut timed_after_idle(runs, Duration::from_millis(1), || {
            assert_eq!(warm.run(&resume).unwrap().stdout, expect);
        }),
        Some(base),
    );
}

/// Proportional set size of this process (smaps_rollup), bytes.
fn pss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn memory() {
    let n = 100;
    let hello = musl("hello");
    let mut sb = Sandbox::builder().build().unwrap();
    let snap = sb.snapshot(&Command::new(&hello), SnapshotPoint::Entry).unwrap();
    hvsandbox::wait_for_reaper();
    let (r0, p0) = (rss(), pss());
    let mut clones = Vec::new();
    for _ in 0..n {
        let mut c = Sandbox::from_snapshot(&snap).unwrap();
        c.run(&Command::resume()).unwrap();
        clones.push(c);
    }
    let (r1, p1) = (rss(), pss());
    println!(
        "host memory per idle clone that has run once ({n} clones of one snapshot): RSS {} KiB, PSS {} KiB",
        (r1.saturating_sub(r0)) / n / 1024,
        (p1.saturating_sub(p0)) / n / 1024
    );
    drop(clones);
    hvsandbox::wait_for_reaper();
    let (r0, p0) = (rss(), pss());
    let mut cold = Vec::new();
    for _ in 0..n {
        let mut c = Sandbox::builder().build().unwrap();
        c.run(&Command::new(&hello)).unwrap();
        cold.push(c);
    }
    std::thread::sleep(Duration::from_millis(200));
    let (r1, p1) = (rss(), pss());
    println!(
        "host memory per idle cold sandbox that has run once (blank VM made ahead): RSS {} KiB, PSS {} KiB",
        (r1.saturating_sub(r0)) / n / 1024,
        (p1.saturating_sub(p0)) / n / 1024
    );
}

/// The figure (ns) a program printed.
fn ns(stdout: &[u8]) -> f64 {
    String::from_utf8_lossy(stdout).trim().parse::<f64>().unwrap_or(f64::NAN)
}

/// getpid in the guest, averaged in the program itself (ns).
fn guest_getpid() -> f64 {
    let mut sb = Sandbox::builder().build().unwrap();
    ns(&sb.run(&Command::new(musl("syscall_cost"))).unwrap().stdout)
}

/// The cost of one system call served in the guest, beside the same call
/// made natively (getpid, averaged in the program itself): from a
/// rewritten site, and from one left as it is (rewriting off, in a child
/// process: the setting is read once a process), which is the raw
/// `syscall` round trip through the hypervisor plus the runtime's
/// dispatch.
fn syscall_cost() {
    let native = std::process::Command::new(musl("syscall_cost")).output().unwrap();
    let n = ns(&native.stdout);
    let g = guest_getpid();
    println!("system call (getpid) in the guest: {g:.0} ns; native: {n:.0} ns ({:.2}x)", g / n);
    let exe = std::env::current_exe().unwrap();
    let child = std::process::Command::new(exe).arg("--getpid-only").env("HVSANDBOX_REWRITE", "0").output().unwrap();
    let u = ns(&child.stdout);
    println!("  the same from a site left as it is (HVSANDBOX_REWRITE=0): {u:.0} ns ({:.1}x native)", u / n);
}

fn main() {
    if std::env::args().any(|a| a == "--getpid-only") {
        println!("{}", guest_getpid());
        return;
    }
    let quick = std::env::args().any(|a| a == "--quick");
    syscall_cost();
    let runs = if quick { 50 } else { 300 };
    static_program("musl static hello", &musl("hello"), &[], b"hello, world\n", runs);
    static_program("Debian busybox-static echo", Path::new(BUSYBOX), &["echo", "hi"], b"hi\n", runs);
    python(if quick { 10 } else { 50 });
    memory();
}
