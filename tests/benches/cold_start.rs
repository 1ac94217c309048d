//! Cold-start benchmark: "create VM + boot + run a static program + exit +
//! destroy" through the public API (`Sandbox::builder().build()`, `run`,
//! drop), beside fork+exec+wait of the same binary on the host, measured
//! in the same process and interleaved run by run so both see the same
//! machine noise.
//!
//! `cargo bench -p hvsandbox-tests --bench cold_start [-- --quick] [-- --runs N]`

use std::path::Path;
use std::time::{Duration, Instant};

use hvsandbox::{Command, Sandbox};
use hvsandbox_tests::bench::summarize;
use hvsandbox_tests::{musl, BUSYBOX};

fn ms(d: Duration) -> String {
    format!("{:7.3} ms", d.as_secs_f64() * 1e3)
}

fn cold_run(path: &Path, args: &[&str], expect: &[u8]) -> Duration {
    let start = Instant::now();
    let mut sb = Sandbox::builder().memory_mib(64).build().expect("build sandbox");
    let out = sb.run(&Command::new(path).args(args)).expect("run");
    drop(sb);
    let took = start.elapsed();
    assert_eq!(out.stdout, expect, "sandboxed output");
    assert!(out.status.success());
    took
}

fn native_run(path: &Path, args: &[&str], expect: &[u8]) -> Duration {
    let start = Instant::now();
    let out = std::process::Command::new(path).args(args).output().expect("fork+exec");
    let took = start.elapsed();
    assert_eq!(out.stdout, expect, "native output");
    took
}

fn bench(name: &str, path: &Path, args: &[&str], expect: &[u8], runs: usize) {
    // Warm up both paths (page cache, image cache, KVM module state).
    for _ in 0..5 {
        cold_run(path, args, expect);
        native_run(path, args, expect);
    }
    let mut vm = Vec::with_capacity(runs);
    let mut native = Vec::with_capacity(runs);
    for _ in 0..runs {
        vm.push(cold_run(path, args, expect));
        native.push(native_run(path, args, expect));
    }
    let (v, n) = (summarize(vm), summarize(native));
    println!("{name} ({runs} runs)");
    println!("  hvsandbox cold  median {}  p99 {}  min {}  mean {}", ms(v.median), ms(v.p99), ms(v.min), ms(v.mean));
    println!("  fork+exec       median {}  p99 {}  min {}  mean {}", ms(n.median), ms(n.p99), ms(n.min), ms(n.mean));
    println!(
        "  ratio (median)  {:.2}x fork+exec   [target: < 3 ms median cold]",
        v.median.as_secs_f64() / n.median.as_secs_f64()
    );
}

fn main() {
    // The truly cold path: no blank VMs made ahead (the warm bench measures
    // new sandboxes with them).
    hvsandbox::set_blank_vms(0);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = if argv.iter().any(|a| a == "--quick") { 200 } else { 500 };
    if let Some(i) = argv.iter().position(|a| a == "--runs") {
        runs = argv.get(i + 1).and_then(|v| v.parse().ok()).expect("--runs N");
    }
    let hello = musl("hello");
    bench("musl static hello", &hello, &[], b"hello, world\n", runs);
    bench("Debian busybox-static echo", Path::new(BUSYBOX), &["echo", "hi"], b"hi\n", runs);
}
