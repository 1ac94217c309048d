//! Live processes: how soon a streamed line reaches the host (the program
//! then sleeps, or spins without system calls), and bulk output throughput
//! through `spawn` against `run` — each beside its baseline from the same
//! run (the same program natively, read through a pipe).
//!
//! `cargo bench -p hvsandbox-tests --bench streaming [-- --quick]`

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use hvsandbox::{Command, ProcessEvent, Sandbox, SnapshotPoint};
use hvsandbox_tests::{musl, BUSYBOX};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:8.2} ms", d.as_secs_f64() * 1e3)
}

/// Native: spawn, read the first line from its stdout pipe, kill.
fn native_first_line(program: &Path, args: &[&str]) -> Duration {
    let t = Instant::now();
    let mut child =
        std::process::Command::new(program).args(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let d = t.elapsed();
    assert!(!line.is_empty());
    let _ = child.kill();
    let _ = child.wait();
    d
}

/// In the sandbox: spawn, wait for the first stdout event, kill.
fn guest_first_line(sb: &mut Sandbox, cmd: &Command) -> Duration {
    let t = Instant::now();
    let mut p = sb.spawn(cmd).unwrap();
    loop {
        match p.next_event().unwrap() {
            ProcessEvent::Stdout(_) => break,
            ProcessEvent::Stderr(_) => {}
            ProcessEvent::Exited(r) => panic!("ended first: {r:?}"),
        }
    }
    let d = t.elapsed();
    p.kill();
    let _ = p.wait();
    d
}

fn first_byte(runs: usize) {
    println!("first line of output, program then sleeps / spins ({runs} runs each, medians)");
    let sleeper = ["sh", "-c", "echo first; sleep 100"];
    let base = median((0..runs).map(|_| native_first_line(Path::new(BUSYBOX), &sleeper)).collect());
    let mut sb = Sandbox::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let cmd = Command::new(BUSYBOX).args(sleeper);
    let cold = median((0..runs).map(|_| guest_first_line(&mut sb, &cmd)).collect());
    let snap = sb.snapshot(&Command::new(BUSYBOX).arg("sh"), SnapshotPoint::Entry).unwrap();
    let mut warm = Sandbox::builder().timeout(Duration::from_secs(60)).build_from(&snap).unwrap();
    let resume = Command::resume().args(sleeper);
    let warm_t = median((0..runs).map(|_| guest_first_line(&mut warm, &resume)).collect());
    println!("  native busybox sh (baseline)            {}", ms(base));
    println!(
        "  sandbox, cold                            {}  {:6.2}x",
        ms(cold),
        cold.as_secs_f64() / base.as_secs_f64()
    );
    println!(
        "  sandbox, warm from a snapshot            {}  {:6.2}x",
        ms(warm_t),
        warm_t.as_secs_f64() / base.as_secs_f64()
    );
    let spinner = musl("print_then_loop");
    let base = median((0..runs).map(|_| native_first_line(&spinner, &[])).collect());
    let spin_cmd = Command::new(&spinner);
    let spin = median((0..runs).map(|_| guest_first_line(&mut sb, &spin_cmd)).collect());
    println!("  native print-then-spin (baseline)        {}", ms(base));
    println!(
        "  sandbox, cold, print then spin           {}  {:6.2}x",
        ms(spin),
        spin.as_secs_f64() / base.as_secs_f64()
    );
}

fn throughput(mib: usize, runs: usize) {
    println!("bulk stdout, {mib} MiB ({runs} runs each, medians, MiB/s)");
    let flood = musl("flood");
    let args = [mib.to_string(), "0".to_string()];
    let rate = |d: Duration| mib as f64 / d.as_secs_f64();
    let native = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let mut child = std::process::Command::new(&flood).args(&args).stdout(Stdio::piped()).spawn().unwrap();
                let mut n = 0usize;
                let mut buf = vec![0u8; 64 << 10];
                let mut out = child.stdout.take().unwrap();
                loop {
                    let k = out.read(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                child.wait().unwrap();
                assert_eq!(n, mib << 20);
                t.elapsed()
            })
            .collect(),
    );
    let mut sb = Sandbox::builder().max_output((mib << 20) + 1).timeout(Duration::from_secs(120)).build().unwrap();
    let cmd = Command::new(&flood).args(&args);
    let run = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let out = sb.run(&cmd).unwrap();
                assert_eq!(out.stdout.len(), mib << 20);
                t.elapsed()
            })
            .collect(),
    );
    let spawn = median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                let mut p = sb.spawn(&cmd).unwrap();
                let mut r = p.stdout();
                let mut buf = vec![0u8; 64 << 10];
                let mut n = 0usize;
                loop {
                    let k = r.read(&mut buf).unwrap();
                    if k == 0 {
                        break;
                    }
                    n += k;
                }
                assert!(p.wait().unwrap().status.success());
                assert_eq!(n, mib << 20);
                t.elapsed()
            })
            .collect(),
    );
    println!("  native, read through a pipe (baseline)   {:8.0} MiB/s", rate(native));
    println!(
        "  sandbox run (collected)                  {:8.0} MiB/s  {:5.2}x baseline time",
        rate(run),
        run.as_secs_f64() / native.as_secs_f64()
    );
    println!(
        "  sandbox spawn (read as produced)         {:8.0} MiB/s  {:5.2}x baseline time, {:5.2}x run's",
        rate(spawn),
        spawn.as_secs_f64() / native.as_secs_f64(),
        spawn.as_secs_f64() / run.as_secs_f64()
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 5 } else { 30 };
    first_byte(runs);
    throughput(if quick { 64 } else { 256 }, runs);
}
