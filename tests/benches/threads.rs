//! Guest threads: a contended lock hand-off between two threads (each
//! increment wakes the other), and what time slices cost a single busy
//! task — each beside the same program run natively in the same process.
//!
//! `cargo bench -p hvsandbox-tests --bench threads [-- --quick]`

use std::time::{Duration, Instant};

use hvsandbox::{Command, Sandbox};
use hvsandbox_tests::musl;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 5 } else { 20 };
    let handoffs = if quick { 2000 } else { 10000 };
    let prog = musl("lock_handoff");
    let arg = handoffs.to_string();
    let expect = format!("{handoffs} hand-offs\n");
    let mut sb = Sandbox::builder().timeout(Duration::from_secs(120)).build().unwrap();
    let (mut native, mut guest) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let t = Instant::now();
        let out = std::process::Command::new(&prog).arg(&arg).output().unwrap();
        native.push(t.elapsed());
        assert_eq!(String::from_utf8_lossy(&out.stdout), expect);
        let t = Instant::now();
        let out = sb.run(&Command::new(&prog).arg(&arg)).unwrap();
        guest.push(t.elapsed());
        assert_eq!(out.stdout_str(), expect);
    }
    let (n, g) = (median(native), median(guest));
    println!("contended lock hand-off between two threads, {handoffs} hand-offs ({runs} runs, medians)");
    println!("  native                 {}  ({:.2} µs per hand-off)", ms(n), n.as_secs_f64() * 1e6 / handoffs as f64);
    println!(
        "  sandbox (cold)         {}  ({:.2} µs per hand-off)  {:.2}x native",
        ms(g),
        g.as_secs_f64() * 1e6 / handoffs as f64,
        g.as_secs_f64() / n.as_secs_f64()
    );

    // One busy task and no system calls: the host still stops the guest
    // every 10 ms to look (a slice ends only with more than one task).
    let spin = musl("spin");
    let millions = if quick { "300" } else { "1000" };
    let (mut native, mut guest) = (Vec::new(), Vec::new());
    for _ in 0..runs.min(10) {
        let t = Instant::now();
        let out = std::process::Command::new(&spin).arg(millions).output().unwrap();
        native.push(t.elapsed());
        assert_eq!(out.stdout, b"spun\n");
        let t = Instant::now();
        let out = sb.run(&Command::new(&spin).arg(millions)).unwrap();
        guest.push(t.elapsed());
        assert_eq!(out.stdout, b"spun\n");
    }
    let (n, g) = (median(native), median(guest));
    println!("one busy task, {millions}M loop iterations ({} runs, medians)", runs.min(10));
    println!("  native                 {}", ms(n));
    println!("  sandbox (cold)         {}  {:.3}x native", ms(g), g.as_secs_f64() / n.as_secs_f64());
}
