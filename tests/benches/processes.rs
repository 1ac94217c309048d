//! Process-heavy cold runs: a busybox shell pipeline (sh + 3 forked and
//! exec'd applets) and Debian's dynamic python3 (ld.so, libc and the
//! stdlib read from read-only host mounts; once more filling 64 MiB in
//! order, memory first touched), each "create VM + boot + run +
//! exit + destroy" through the public API, beside the same command run
//! natively with std::process::Command, interleaved run by run.
//!
//! `cargo bench -p hvsandbox-tests --bench processes [-- --quick] [-- --runs N]`

use std::path::Path;
use std::time::{Duration, Instant};

use hvsandbox::{Command, Sandbox, SandboxBuilder};
use hvsandbox_tests::bench::summarize;
use hvsandbox_tests::BUSYBOX;

const PYTHON: &str = "/usr/bin/python3";

fn ms(d: Duration) -> String {
    format!("{:8.3} ms", d.as_secs_f64() * 1e3)
}

/// One benchmarked command: how to build its sandbox, the program and
/// arguments, and the exact stdout both runs must produce.
struct Case {
    name: &'static str,
    builder: fn() -> SandboxBuilder,
    program: &'static str,
    args: &'static [&'static str],
    expect: &'static [u8],
}

fn cold_run(case: &Case) -> Duration {
    let start = Instant::now();
    let mut sb = (case.builder)().build().expect("build sandbox");
    let out = sb.run(&Command::new(case.program).args(case.args)).expect("run");
    drop(sb);
    let took = start.elapsed();
    assert_eq!(out.stdout, case.expect, "{}: sandboxed output (stderr: {})", case.name, out.stderr_str());
    assert!(out.status.success(), "{}: {:?}", case.name, out.status);
    took
}

fn native_run(case: &Case) -> Duration {
    let start = Instant::now();
    let out = std::process::Command::new(case.program).args(case.args).output().expect("spawn");
    let took = start.elapsed();
    assert_eq!(out.stdout, case.expect, "{}: native output", case.name);
    assert!(out.status.success(), "{}: native {:?}", case.name, out.status);
    took
}

fn bench(case: &Case, runs: usize) {
    // Warm up both paths (page cache, image cache, KVM module state).
    for _ in 0..3 {
        cold_run(case);
        native_run(case);
    }
    let mut vm = Vec::with_capacity(runs);
    let mut native = Vec::with_capacity(runs);
    for _ in 0..runs {
        vm.push(cold_run(case));
        native.push(native_run(case));
    }
    let (v, n) = (summarize(vm), summarize(native));
    println!("{} ({runs} runs)", case.name);
    println!("  hvsandbox cold  median {}  p99 {}  min {}  mean {}", ms(v.median), ms(v.p99), ms(v.min), ms(v.mean));
    println!("  native          median {}  p99 {}  min {}  mean {}", ms(n.median), ms(n.p99), ms(n.min), ms(n.mean));
    println!("  ratio (median)  {:.2}x native", v.median.as_secs_f64() / n.median.as_secs_f64());
}

/// 256 MiB with the host's /usr, /lib and /lib64 mounted: Debian's python3.
fn python_sandbox() -> SandboxBuilder {
    Sandbox::builder().memory_mib(256).mount("/usr", "/usr").mount("/lib", "/lib").mount("/lib64", "/lib64")
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = if argv.iter().any(|a| a == "--quick") { 20 } else { 100 };
    if let Some(i) = argv.iter().position(|a| a == "--runs") {
        runs = argv.get(i + 1).and_then(|v| v.parse().ok()).expect("--runs N");
    }
    bench(
        &Case {
            name: "busybox sh -c 'seq 1 1000 | sort -rn | head -3'",
            builder: || Sandbox::builder().memory_mib(64),
            program: BUSYBOX,
            args: &["sh", "-c", "seq 1 1000 | sort -rn | head -3"],
            expect: b"1000\n999\n998\n",
        },
        runs,
    );
    if Path::new(PYTHON).exists() {
        bench(
            &Case {
                name: "python3 -c 'import json; print(json.dumps(...))' (dynamic, mounts /usr /lib /lib64)",
                builder: python_sandbox,
                program: PYTHON,
                args: &["-c", "import json; print(json.dumps({\"a\": [1,2,3]}))"],
                expect: b"{\"a\": [1, 2, 3]}\n",
            },
            runs,
        );
        bench(
            &Case {
                name: "python3 -c 'x = b\"a\" * (64 << 20)' (64 MiB filled in order; same mounts)",
                builder: python_sandbox,
                program: PYTHON,
                args: &["-c", "x = b'a' * (64 << 20); print(len(x), x[-1])"],
                expect: b"67108864 97\n",
            },
            runs,
        );
    } else {
        println!("python3: skipped ({PYTHON} does not exist on this host)");
    }
}
