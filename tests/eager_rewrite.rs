//! Eager system-call site rewriting at an entry snapshot (issue 20): with
//! rewriting on, the program's own `syscall` sites are rewritten before
//! the snapshot is taken, so every run from it starts with them fast (and
//! a reset keeps them); runs behave as natively (busybox echo, pipelines,
//! signals, a fork); with rewriting off the snapshot's code is the file's.
//! The library runs here force rewriting on for this process
//! (`HVSANDBOX_REWRITE` is read once per process); the off case goes
//! through the `hvsandbox` command, which sets its own.

use std::process::Command as Std;

use hvsandbox::{Command, ExitStatus};
use hvsandbox_tests::{from_entry_snapshot, hvsandbox_bin, musl, BUSYBOX};

const GETPID: &str = "b8 27 00 00 00 0f 05";

/// Forces rewriting on for this process's sandboxes (before the first
/// one reads the switch).
fn rewriting_on() {
    static ON: std::sync::Once = std::sync::Once::new();
    ON.call_once(|| std::env::set_var("HVSANDBOX_REWRITE", "1"));
}

/// Whether a line of `rewrite code`'s output shows getpid rewritten:
/// `jmp rel32` and the `syscall` after it.
fn rewritten(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(_, b)| b.starts_with("e9 ") && b.ends_with(" 0f 05"))
}

#[test]
fn runs_from_an_entry_snapshot_start_with_the_programs_sites_rewritten() {
    rewriting_on();
    let prog = musl("rewrite");
    let mut warm = from_entry_snapshot(&Command::new(&prog).arg("code"));
    let mut used = None;
    for round in 0..3 {
        let out = warm.run(&Command::resume().arg("code")).unwrap();
        let text = out.stdout_str();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "round {round}: {text}");
        // Before getpid ever ran, in the very first run: the snapshot's code.
        assert!(lines.iter().all(|l| rewritten(l)), "round {round}: {text}");
        assert_eq!(out.status, ExitStatus::Code(0));
        // Nothing left to rewrite in the run, and every run the same memory.
        assert_eq!(out.stats.rewritten_sites, 0, "round {round}: {:?}", out.stats);
        let now = out.stats.memory_used;
        assert_eq!(*used.get_or_insert(now), now, "round {round}");
    }
}

#[test]
fn rewritten_programs_from_an_entry_snapshot_behave_as_natively() {
    rewriting_on();
    let prog = musl("rewrite");
    let mut warm = from_entry_snapshot(&Command::new(&prog).arg("loop"));
    // Signals (the restorer's rt_sigreturn keeps its bytes), fork, the red
    // zone, restarted calls from a register-numbered site, bytes that only
    // look like a site, code written at run time, unknown calls.
    for args in [
        &["signals"][..],
        &["fork"],
        &["redzone"],
        &["regsite"],
        &["falsematch"],
        &["jit"],
        &["enosys"],
        &["loop", "3000"],
    ] {
        let native = Std::new(&prog).args(args).output().unwrap();
        let out = warm.run(&Command::resume().args(args)).unwrap();
        assert_eq!(out.stdout_str(), String::from_utf8_lossy(&native.stdout), "{args:?}");
        assert_eq!(out.status.code(), native.status.code(), "{args:?}");
    }
}

#[test]
fn busybox_from_an_entry_snapshot_gives_native_output() {
    rewriting_on();
    let mut warm = from_entry_snapshot(&Command::new(BUSYBOX).args(["echo", "snap"]));
    let scripts = [
        "seq 1 1000 | sort -rn | head -3",
        "x=$(echo hi | tr a-z A-Z); echo \"[$x]\"; (exit 3); echo $?",
        "for w in apple banana; do echo $w | tr a-z A-Z; done",
        "trap 'echo got usr1' USR1; kill -USR1 $$; echo after",
        "sleep 5 & kill -TERM $!; wait $!; echo status=$?",
        "printf 'a 1\\nb 2\\n' | awk '{s += $2} END {print s}'",
    ];
    for round in 0..2 {
        let out = warm.run(&Command::resume().args(["echo", "hi"])).unwrap();
        assert_eq!(out.stdout_str(), "hi\n", "round {round}");
        assert_eq!(out.status, ExitStatus::Code(0));
        // Most of its calls come from sites the snapshot rewrote ahead
        // (2 of 21 were still slow when this was written).
        assert!(out.stats.slow_syscalls * 3 < out.stats.syscalls, "round {round}: {:?}", out.stats);
        for script in scripts {
            let native = Std::new(BUSYBOX).args(["sh", "-c", script]).output().unwrap();
            let out = warm.run(&Command::resume().args(["sh", "-c", script])).unwrap();
            assert_eq!(out.stdout_str(), String::from_utf8_lossy(&native.stdout), "{script}: {}", out.stderr_str());
            assert_eq!(out.status.code(), native.status.code(), "{script}");
        }
    }
}

/// `hvsandbox snapshot --at entry` of `rewrite code`, then a run from it,
/// both with `HVSANDBOX_REWRITE` = `switch`: the run's output.
fn cli_entry_snapshot_code(switch: &str) -> String {
    let dir = std::env::temp_dir().join(format!("hvsandbox-eager-{}-{switch}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("entry.snap");
    let hv = |args: &[&std::ffi::OsStr]| {
        let out = Std::new(hvsandbox_bin()).env("HVSANDBOX_REWRITE", switch).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let prog = musl("rewrite");
    hv(&[
        "snapshot".as_ref(),
        "-o".as_ref(),
        snap.as_os_str(),
        "--at".as_ref(),
        "entry".as_ref(),
        "--".as_ref(),
        prog.as_os_str(),
        "code".as_ref(),
    ]);
    let text = hv(&["run".as_ref(), "--from-snapshot".as_ref(), snap.as_os_str()]);
    let _ = std::fs::remove_dir_all(&dir);
    text
}

#[test]
fn an_entry_snapshot_has_rewritten_code_only_with_the_switch() {
    let native = Std::new(musl("rewrite")).arg("code").output().unwrap();
    let want = format!("before: {GETPID}\nafter: {GETPID}\n");
    assert_eq!(String::from_utf8_lossy(&native.stdout), want);
    assert_eq!(cli_entry_snapshot_code("0"), want, "off: the file's code");
    let on = cli_entry_snapshot_code("1");
    assert!(on.lines().count() == 2 && on.lines().all(rewritten), "on: {on}");
}
