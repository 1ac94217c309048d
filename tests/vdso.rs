//! The vDSO and the vsyscall page: programs find the vDSO through
//! `AT_SYSINFO_EHDR` and parse it (as Go does, and as musl does), its
//! clocks agree with the system calls and never go back, glibc and musl
//! read the clocks without any system call, old binaries call the legacy
//! page, and the clocks stay right in a snapshot resumed later.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hvsandbox::{Command, ExitStatus, Sandbox, SnapshotPoint};
use hvsandbox_tests::{program, Flavor};

fn sandbox() -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(30)).build().expect("build sandbox")
}

fn host_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// The value of `key=` in `text`.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in:\n{text}"))
}

/// What `vdso` (no arguments) prints, natively and in the guest alike.
const EXPECT: &[&str] = &[
    "version LINUX_2.6: found",
    "symbols: all five, both hash tables agree",
    "wrong version: not found",
    "first clock 1: 0 went back, 0 errors",
    "first clock 7: 0 went back, 0 errors",
    "first realtime between syscalls: yes",
    "gettimeofday: ret=0 consistent=yes",
    "time: same=yes consistent=yes",
    "gettimeofday with tz: ret=0 tz=0,0",
    "gettimeofday syscall with tz: ret=0 tz=0,0",
    "gettimeofday(NULL, NULL): ret=0",
    "time(NULL): ok",
    "getcpu: ret=0 cpu=ok node=ok",
    "getres monotonic: ret=0 res=ok",
    "getres NULL: ret=0",
    "cputime clock: ret=0",
    "unknown clock: ret=-22",
    "maps: vdso=at AT_SYSINFO_EHDR vvar=yes",
    "fork child: ok",
    "exec child: ok",
    "wrecking child: exited",
    "after it: parent ok, new child ok",
];

#[test]
fn the_vdso_parses_and_answers_like_linux_natively_and_in_the_guest() {
    for flavor in [Flavor::MuslStatic, Flavor::MuslStaticPie] {
        let prog = program("vdso", flavor);
        let native = std::process::Command::new(&prog).output().expect("run natively");
        assert!(native.status.success(), "natively: {:?}", native.status);
        let native = String::from_utf8(native.stdout).unwrap();
        for line in EXPECT {
            assert!(native.lines().any(|l| l == *line), "natively lacks {line:?}:\n{native}");
        }
        let out = sandbox().run(&Command::new(&prog)).unwrap();
        assert_eq!(out.stdout_str(), native, "{flavor:?}: {}", out.stderr_str());
        assert_eq!(out.status, ExitStatus::Code(0));
        assert!(out.stats.unknown_syscalls.is_empty(), "{:?}", out.stats.unknown_syscalls);
    }
}

#[test]
fn musl_and_glibc_read_the_clocks_without_system_calls() {
    const ROUNDS: u64 = 10_000;
    let mut sb = sandbox();
    // musl: clock_gettime (two clocks), gettimeofday and time per round.
    let out = sb.run(&Command::new(program("vdso", Flavor::MuslStatic)).args(["loop", &ROUNDS.to_string()])).unwrap();
    assert_eq!(out.stdout_str(), format!("loop: {ROUNDS} rounds\n"), "{}", out.stderr_str());
    assert!(out.stats.syscalls < 50, "{} system calls for {} clock reads", out.stats.syscalls, 4 * ROUNDS);
    // glibc 2.36 (a static Rust program: std reads clocks through glibc).
    let out = sb.run(&Command::new(program("vdso_clock", Flavor::RustStatic)).arg(ROUNDS.to_string())).unwrap();
    let text = out.stdout_str();
    assert!(text.starts_with(&format!("rounds={ROUNDS} went_back=0\n")), "{text}{}", out.stderr_str());
    let t: i64 = field(&text, "realtime_s=").parse().unwrap();
    assert!((t - host_secs()).abs() <= 5, "guest realtime {t}, host {}", host_secs());
    assert!(out.stats.syscalls < 100, "{} system calls for {} clock reads", out.stats.syscalls, 2 * ROUNDS);
}

#[test]
fn old_binaries_call_the_vsyscall_page() {
    let out = sandbox().run(&Command::new(program("vdso", Flavor::MuslStatic)).arg("vsyscall")).unwrap();
    let text = out.stdout_str();
    // The last call passes a bad pointer: a fault of the program there,
    // not of the runtime.
    assert_eq!(out.status, ExitStatus::Signal(11), "{text}{}", out.stderr_str());
    for line in [
        "vsyscall gettimeofday: ret=0 consistent=yes",
        "vsyscall time: same=yes consistent=yes",
        "vsyscall getcpu: ret=0 cpu=ok",
        "vsyscall gettimeofday with tz: ret=0 tz=0,0",
    ] {
        assert!(text.lines().any(|l| l == line), "lacks {line:?}:\n{text}");
    }
    let t: i64 = field(&text, "realtime_s=").parse().unwrap();
    assert!((t - host_secs()).abs() <= 5, "guest realtime {t}, host {}", host_secs());
    assert!(!text.contains("no fault"), "{text}");
    // Four calls there, none of them a system call (the few the program
    // makes are its start-up's and its output).
    assert!(out.stats.syscalls < 10, "{}", out.stats.syscalls);
}

/// Snapshots `vdso <mode>` at its checkpoint, waits 1.1 s, resumes it
/// `runs` times and checks the clocks each run saw after the checkpoint;
/// returns the outputs.
fn resumed_later(sb: &mut Sandbox, mode: &str, runs: usize) -> Vec<String> {
    let prog = program("vdso", Flavor::MuslStatic);
    let snap = sb.snapshot(&Command::new(&prog).arg(mode), SnapshotPoint::Checkpoint).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let mut clone = Sandbox::from_snapshot(&snap).unwrap();
    let mut texts = Vec::new();
    for run in 0..runs {
        let out = clone.run(&Command::resume()).unwrap();
        let text = out.stdout_str();
        assert_eq!(out.status, ExitStatus::Code(0), "{text}{}", out.stderr_str());
        // Monotonic: the vDSO's and the system call's, read alternately,
        // never before the value read before the snapshot, never back.
        assert!(text.contains("monotonic after the checkpoint: not before it\n"), "run {run}: {text}");
        for clock in [1, 7] {
            assert!(text.contains(&format!("resumed clock {clock}: 0 went back, 0 errors\n")), "{text}");
        }
        assert!(text.contains("resumed realtime between syscalls: yes\n"), "{text}");
        // Realtime is this host's now: the sleep shows between the reads.
        let moved: i64 = field(&text, "realtime moved_ms=").parse().unwrap();
        assert!(moved >= 1000, "realtime moved {moved} ms across a 1.1 s sleep: {text}");
        let t: i64 = field(&text, "realtime_s=").parse().unwrap();
        assert!((t - host_secs()).abs() <= 5, "guest realtime {t}, host {}", host_secs());
        texts.push(text);
    }
    texts
}

#[test]
fn the_clocks_stay_right_in_a_snapshot_resumed_later() {
    let mut sb = sandbox();
    resumed_later(&mut sb, "checkpoint", 2);
    // With a second thread reading the clock through the vDSO all along
    // (time slices stop it anywhere, the snapshot too): its reads never
    // go back either, whether or not it was inside the vDSO then.
    for text in resumed_later(&mut sb, "threads", 3) {
        assert!(text.ends_with("reader thread: reads>1000=yes went back 0 times\n"), "{text}");
    }
    let prog = program("vdso", Flavor::MuslStatic);
    // An entry snapshot: the vDSO mapped then serves the restored runs.
    let snap = sb.snapshot(&Command::new(&prog), SnapshotPoint::Entry).unwrap();
    let out = Sandbox::from_snapshot(&snap).unwrap().run(&Command::resume()).unwrap();
    let text = out.stdout_str();
    for line in EXPECT {
        assert!(text.lines().any(|l| l == *line), "lacks {line:?}:\n{text}{}", out.stderr_str());
    }
}

#[test]
fn dynamic_glibc_finds_the_vdso_through_its_loader() {
    const PYTHON: &str = "/usr/bin/python3";
    if !std::path::Path::new(PYTHON).exists() {
        eprintln!("skipped: {PYTHON} does not exist on this host");
        return;
    }
    let mut sb = Sandbox::builder()
        .memory_mib(256)
        .timeout(Duration::from_secs(30))
        .mount("/usr", "/usr")
        .mount("/lib", "/lib")
        .mount("/lib64", "/lib64")
        .build()
        .unwrap();
    // The same script with 100 and with 20,100 clock reads: ld.so's vDSO
    // lookup serves the extra 20,000 with no system call.
    let mut calls = Vec::new();
    for n in [100, 20_100] {
        let script =
            format!("import time\nfor i in range({n}): time.monotonic(); time.time()\nprint(int(time.time()))\n");
        let out = sb.run(&Command::new(PYTHON).args(["-c", &script])).unwrap();
        assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
        let t: i64 = out.stdout_str().trim().parse().unwrap();
        assert!((t - host_secs()).abs() <= 5, "guest realtime {t}, host {}", host_secs());
        calls.push(out.stats.syscalls);
    }
    assert!(calls[1] < calls[0] + 50, "system calls with 100 reads: {}, with 20,100: {}", calls[0], calls[1]);
}
