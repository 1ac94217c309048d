//! Many sandboxes at once: N clones of one snapshot alive together, each
//! warmed and run once, in one process and spread over worker processes
//! (every VM in a process adds to the cost of that process's page-table
//! changes, so spreading should scale better). Reports time, runs/s and
//! host memory per sandbox.
//!
//! `cargo bench -p hvsandbox-tests --bench scale [-- --quick] [-- --n 1000]`

use std::time::{Duration, Instant};

use hvsandbox::{Command, Sandbox, Snapshot, SnapshotPoint};
use hvsandbox_tests::musl;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn pss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Makes `n` live clones, warms and runs each once; returns (create+warm
/// time, run time, RSS KiB, PSS KiB) with all of them still alive.
fn hold(snap: &Snapshot, n: usize) -> (Duration, Duration, u64, u64) {
    let (r0, p0) = (status_kib("VmRSS:"), pss_kib());
    let t = Instant::now();
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        let mut sb = Sandbox::from_snapshot(snap).expect("clone");
        sb.warm().expect("warm");
        all.push(sb);
    }
    let created = t.elapsed();
    let t = Instant::now();
    for sb in &mut all {
        assert_eq!(sb.run(&Command::resume()).expect("run").stdout, b"hello, world\n");
    }
    let ran = t.elapsed();
    let (r1, p1) = (status_kib("VmRSS:"), pss_kib());
    drop(all);
    (created, ran, r1.saturating_sub(r0), p1.saturating_sub(p0))
}

fn snapshot() -> Snapshot {
    let mut sb = Sandbox::builder().memory_mib(16).build().unwrap();
    sb.snapshot(&Command::new(musl("hello")), SnapshotPoint::Entry).unwrap()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // A worker process: hold its share and print one line of figures.
    if let Ok(n) = std::env::var("HVSANDBOX_SCALE_WORKER") {
        let n: usize = n.parse().unwrap();
        let snap = Snapshot::load(std::env::var("HVSANDBOX_SCALE_SNAP").unwrap()).unwrap();
        let (c, r, rss, pss) = hold(&snap, n);
        println!("{} {} {} {}", c.as_micros(), r.as_micros(), rss, pss);
        return;
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut n = if quick { 100 } else { 1000 };
    if let Some(i) = args.iter().position(|a| a == "--n") {
        n = args.get(i + 1).and_then(|v| v.parse().ok()).expect("--n N");
    }
    let snap = snapshot();
    println!("{n} live clones of one 16 MiB snapshot (musl hello), each warmed and run once");
    let (c, r, rss, pss) = hold(&snap, n);
    println!(
        "  one process:   create+warm {:7.1} ms ({:6.1} µs each), runs {:7.1} ms ({:6.0} runs/s), per sandbox RSS {} KiB PSS {} KiB",
        c.as_secs_f64() * 1e3,
        c.as_secs_f64() * 1e6 / n as f64,
        r.as_secs_f64() * 1e3,
        n as f64 / r.as_secs_f64(),
        rss / n as u64,
        pss / n as u64
    );
    // The same spread over worker processes.
    let workers = 4;
    let file = std::env::temp_dir().join(format!("hvsandbox-scale-{}.snap", std::process::id()));
    snap.save(&file).unwrap();
    let exe = std::env::current_exe().unwrap();
    let t = Instant::now();
    let children: Vec<_> = (0..workers)
        .map(|_| {
            std::process::Command::new(&exe)
                .env("HVSANDBOX_SCALE_WORKER", (n / workers).to_string())
                .env("HVSANDBOX_SCALE_SNAP", &file)
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut lines = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        lines.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let wall = t.elapsed();
    let _ = std::fs::remove_file(&file);
    let sums = lines.iter().fold([0u64; 4], |mut acc, l| {
        for (a, v) in acc.iter_mut().zip(l.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0))) {
            *a += v;
        }
        acc
    });
    println!(
        "  {workers} processes: wall {:7.1} ms for all (create+warm+run), per sandbox RSS {} KiB PSS {} KiB",
        wall.as_secs_f64() * 1e3,
        sums[2] / n as u64,
        sums[3] / n as u64
    );
}
