//! Cold runs from the command line, timed as a shell sees them: the whole
//! `hvsandbox run ...` process (its start, the VM, the boot, the program,
//! the exit) beside the same program started natively, interleaved run by
//! run so both see the same machine noise. Issue 20's targets: `busybox
//! true` ≤ 3 ms and ≤ 2x native; `python3 -c` ≤ 1.5x native; `node -e 0`
//! ≤ 2x native.
//!
//! `cargo bench -p hvsandbox-tests --bench cli [-- --quick] [-- --runs N]`

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hvsandbox_tests::bench::summarize;
use hvsandbox_tests::{hvsandbox_bin, BUSYBOX};

fn ms(d: Duration) -> String {
    format!("{:8.3} ms", d.as_secs_f64() * 1e3)
}

/// One case: the CLI's options before `--`, the program and its
/// arguments, the stdout both must print, the target ratio.
struct Case {
    name: &'static str,
    options: &'static [&'static str],
    argv: &'static [&'static str],
    expect: &'static str,
    target: f64,
    /// Runs per `runs` of the quickest case (slow programs run fewer).
    share: usize,
}

fn timed(cmd: &mut Command, expect: &str, what: &str) -> Duration {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("start the process");
    let took = start.elapsed();
    assert!(out.status.success(), "{what}: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expect, "{what}: stdout");
    took
}

fn bench(case: &Case, runs: usize) {
    if !Path::new(case.argv[0]).exists() {
        println!("{}: skipped ({} is not on this host)", case.name, case.argv[0]);
        return;
    }
    let cli = hvsandbox_bin();
    let sandboxed = || {
        let mut c = Command::new(&cli);
        c.arg("run").args(case.options).arg("--").args(case.argv);
        timed(&mut c, case.expect, "hvsandbox run")
    };
    let native = || timed(Command::new(case.argv[0]).args(&case.argv[1..]), case.expect, "native");
    let runs = (runs / case.share).max(5);
    // Warm up both (page cache, the CLI's image cache).
    for _ in 0..3 {
        sandboxed();
        native();
    }
    let (mut vm, mut host) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        vm.push(sandboxed());
        host.push(native());
    }
    let (v, n) = (summarize(vm), summarize(host));
    println!("{} ({runs} runs)", case.name);
    println!("  hvsandbox run   median {}  p99 {}  min {}", ms(v.median), ms(v.p99), ms(v.min));
    println!("  native          median {}  p99 {}  min {}", ms(n.median), ms(n.p99), ms(n.min));
    println!(
        "  ratio (median)  {:.2}x native   [target: <= {:.1}x]",
        v.median.as_secs_f64() / n.median.as_secs_f64(),
        case.target
    );
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut runs = if argv.iter().any(|a| a == "--quick") { 60 } else { 300 };
    if let Some(i) = argv.iter().position(|a| a == "--runs") {
        runs = argv.get(i + 1).and_then(|v| v.parse().ok()).expect("--runs N");
    }
    let cases = [
        Case { name: "busybox true", options: &[], argv: &[BUSYBOX, "true"], expect: "", target: 2.0, share: 1 },
        Case {
            name: "python3 -c 'print(1)' (--system)",
            options: &["--system", "--memory", "256M"],
            argv: &["/usr/bin/python3", "-c", "print(1)"],
            expect: "1\n",
            target: 1.5,
            share: 4,
        },
        Case {
            name: "node -e 'console.log(1)' (--system)",
            options: &["--system", "--memory", "512M"],
            argv: &["/usr/bin/node", "-e", "console.log(1)"],
            expect: "1\n",
            target: 2.0,
            share: 10,
        },
    ];
    for case in &cases {
        bench(case, runs);
    }
}
