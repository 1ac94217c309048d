//! System-call site rewriting (on by default where a raw `syscall` is
//! slow; `HVSANDBOX_REWRITE=1`/`0` force it on/off): with it on, programs
//! behave as with it off and as natively — results, the 128-byte red
//! zone, NULL reads, fork, signals, restarted calls, code written at run
//! time, bytes that only look like a site — and the run's statistics
//! still count every call (and the sites rewritten); snapshots keep
//! rewritten code and the reset undoes what a run rewrote. Most runs go
//! through the `hvsandbox` command so that each can set the switch; the
//! snapshot test sets it for this process (every run here wants it on).

use std::process::{Command, Output};

use hvsandbox::{Command as Cmd, Sandbox, SnapshotPoint};
use hvsandbox_tests::{hvsandbox_bin, musl, stat, BUSYBOX};

/// What a run of `rewrite <args>` gave.
struct Run {
    stdout: String,
    code: Option<i32>,
    /// The `syscalls` field of the --stats line.
    syscalls: u64,
    /// Its `rewritten_sites`.
    rewritten: u64,
    /// Its `slow_syscalls`.
    slow: u64,
    /// The whole --stats line.
    stats: String,
}

fn guest(rewrite: bool, args: &[&str]) -> Run {
    guest_with(Some(rewrite), args)
}

/// A run with rewriting forced on or off, or (None) as the runtime
/// decides (on where a raw `syscall` is slow).
fn guest_with(rewrite: Option<bool>, args: &[&str]) -> Run {
    let mut cmd = Command::new(hvsandbox_bin());
    match rewrite {
        Some(on) => cmd.env("HVSANDBOX_REWRITE", if on { "1" } else { "0" }),
        None => cmd.env_remove("HVSANDBOX_REWRITE"),
    };
    let out: Output =
        cmd.args(["run", "--stats", "--timeout", "30s", "--"]).arg(musl("rewrite")).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stats = stderr.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no stats line:\n{stderr}"));
    let syscalls = stat(stats, "syscalls");
    let rewritten = stat(stats, "rewritten_sites");
    let slow = stat(stats, "slow_syscalls");
    let stats = stats.to_string();
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        code: out.status.code(),
        syscalls,
        rewritten,
        slow,
        stats,
    }
}

fn native(args: &[&str]) -> (String, std::process::ExitStatus) {
    let out = Command::new(musl("rewrite")).args(args).output().unwrap();
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status)
}

/// Runs `args` natively, in the guest with rewriting off and on: the same
/// output and exit code each time, and (with `counted`) the same count of
/// system calls with and without rewriting.
fn same_everywhere(args: &[&str], want: &str, counted: bool) {
    let (n, status) = native(args);
    assert_eq!(n, want, "natively");
    let off = guest(false, args);
    let on = guest(true, args);
    assert_eq!(off.stdout, want, "rewriting off");
    assert_eq!(on.stdout, want, "rewriting on");
    assert_eq!(off.code, status.code(), "rewriting off");
    assert_eq!(on.code, status.code(), "rewriting on");
    if counted {
        assert_eq!(on.syscalls, off.syscalls, "every call is counted");
    }
}

#[test]
fn a_getpid_loop_gives_the_same_results_and_counts() {
    same_everywhere(&["loop", "5000"], "loop: 5000 of 5000 calls agree\n", true);
    let off = guest(false, &["loop", "5000"]);
    let more = guest(true, &["loop", "10000"]);
    assert_eq!(more.syscalls, off.syscalls + 5000, "each rewritten call is still served and counted");
    assert_eq!(off.rewritten, 0, "off: {}", off.stats);
    // getpid at least (and whatever else ran often enough from one site).
    assert!(more.rewritten >= 1, "on: {}", more.stats);
    // Off, every call takes the slow path; on, the loop's calls leave it
    // after their site's first few (those, and the program's other calls,
    // are the slow ones).
    assert_eq!(off.slow, off.syscalls, "off: {}", off.stats);
    assert!(more.slow > 0 && more.slow < off.syscalls - 4000, "on: {}", more.stats);
}

#[test]
fn by_default_the_runtime_decides_and_results_stay_the_same() {
    let off = guest(false, &["loop", "3000"]);
    let auto = guest_with(None, &["loop", "3000"]);
    assert_eq!(auto.stdout, "loop: 3000 of 3000 calls agree\n");
    assert_eq!(auto.syscalls, off.syscalls, "every call is counted");
    // Rewritten (a slow `syscall` here) or not: the code shows which.
    let code = guest_with(None, &["code"]).stdout;
    let on = guest(true, &["code"]).stdout;
    assert!(code == on || code == guest(false, &["code"]).stdout, "{code}");
    assert_eq!(auto.rewritten > 0, code == on, "{}", auto.stats);
}

#[test]
fn a_files_tables_are_read_only_once_a_site_is_hotter() {
    let (n, _) = native(&["firstsite"]);
    assert_eq!(n, "firstsite: after 2 calls b8, after 10 calls b8\n");
    assert_eq!(guest(false, &["firstsite"]).stdout, n);
    // The first site of a file waits for 8 calls (reading the file's
    // unwind table and symbols costs more than two calls save).
    let on = guest(true, &["firstsite"]);
    assert_eq!(on.stdout, "firstsite: after 2 calls b8, after 10 calls e9\n", "{}", on.stats);
}

#[test]
fn rewritten_code_enters_by_a_jump_and_only_with_the_switch() {
    let getpid_code = "b8 27 00 00 00 0f 05";
    let (n, _) = native(&["code"]);
    assert_eq!(n, format!("before: {getpid_code}\nafter: {getpid_code}\n"));
    assert_eq!(guest(false, &["code"]).stdout, n, "off: the code is left alone");
    // On: once it has run a few times (its fourth slow call rewrites it),
    // `mov eax, 39` is `jmp rel32`; the `syscall` after it is still there.
    let on = guest(true, &["code"]).stdout;
    let after = on.strip_prefix(&format!("before: {getpid_code}\nafter: e9 ")).unwrap_or_else(|| panic!("{on}"));
    assert!(after.ends_with(" 0f 05\n"), "{on}");
}

#[test]
fn bytes_that_only_look_like_mov_eax_before_a_syscall_are_left_alone() {
    // `movl $39, -0x48(%rsp); syscall`: the store's last five bytes read
    // `b8 27 00 00 00`, and EAX is 39. Rewriting them would change the
    // store (its displacement and value), not a `mov eax`.
    same_everywhere(&["falsematch"], "falsematch: 0 bad rounds of 5, code unchanged\n", true);
}

#[test]
fn a_syscall_whose_number_is_in_a_register_becomes_a_short_jump_and_restarts_there() {
    // Alarms interrupt the blocked read a varying number of times: the
    // count of calls differs from run to run.
    same_everywhere(&["regsite"], "regsite: 0 bad calls of 3, read 1 'x' after alarms\n", false);
    let line = "regsite: 0 bad calls of 3, read 1 'x' after alarms\nregsite code:";
    assert_eq!(guest(false, &["regsite-code"]).stdout, format!("{line} 0f\n"), "off: `syscall` stays");
    let on = guest(true, &["regsite-code"]);
    assert_eq!(on.stdout, format!("{line} eb\n"), "on: jmp rel8 to padding");
    assert!(on.rewritten >= 1, "{}", on.stats);
}

/// Runs `mode` natively, in the guest with rewriting off (both must print
/// `want(before)`: the site's code as compiled) and on (`want(after)`:
/// the code rewritten); returns the run with rewriting on.
fn code_rewritten(mode: &str, want: impl Fn(&str) -> String, before: &str, after: &str, what: &str) -> Run {
    assert_eq!(native(&[mode]).0, want(before), "native");
    assert_eq!(guest(false, &[mode]).stdout, want(before), "off: the code stays");
    let on = guest(true, &[mode]);
    assert_eq!(on.stdout, want(after), "on: {what}");
    on
}

#[test]
fn two_sites_whose_only_padding_is_one_gap_both_get_a_slot_of_it() {
    let want = |code: &str| format!("sharedgap: 0 bad calls of 24, code {code}\n");
    let on = code_rewritten("sharedgap", want, "0f 0f", "eb eb", "both: jmp rel8 to the gap");
    assert!(on.rewritten >= 2, "{}", on.stats);
}

#[test]
fn with_no_padding_in_reach_the_instruction_before_the_syscall_moves_to_the_stub() {
    let want = |code: &str| {
        format!("thirdform: 0 bad calls of 24, code {code}\nthirdform: writable 0, code 41, 0 bad calls of 6\n")
    };
    let what = "jmp rel32 where the `mov` was; the `syscall` still works";
    let on = code_rewritten("thirdform", want, "41", "e9", what);
    assert!(on.rewritten >= 1, "{}", on.stats);
}

#[test]
fn a_syscall_across_a_page_boundary_is_rewritten_by_moving_the_instruction_before_it() {
    let want = |code: &str, after: &str| {
        format!(
            "straddle: syscall at page offset 4095, 0 bad calls of 24, code {code}\n\
             straddle: next page writable 0, code {after}, 0 bad calls of 6\n\
             straddle: code again {code}; next page not executable: SIGSEGV\n"
        )
    };
    assert_eq!(native(&["straddle"]).0, want("41", "41"), "native");
    assert_eq!(guest(false, &["straddle"]).stdout, want("41", "41"), "off: the code stays");
    // The `mov` before it becomes the jump; the page the `syscall` ends
    // in made writable puts it back, and made not executable too (the
    // call faults before its `syscall` runs, as natively).
    let on = guest(true, &["straddle"]);
    assert_eq!(on.stdout, want("e9", "41"), "on: {}", on.stats);
}

#[test]
fn a_fault_in_a_moved_instruction_shows_the_programs_own_address() {
    let want = |code: &str| {
        format!("faultform: 0 bad calls of 12, code {code}, faulted 1 at the mov 1, address 0x8 si_code 1\n")
    };
    code_rewritten("faultform", want, "c7", "e9", "the `mov` moved to the stub, its fault shown where it was");
}

#[test]
fn the_red_zone_and_argument_registers_survive_a_rewritten_call() {
    same_everywhere(&["redzone"], "redzone: 0 bad rounds of 8\n", true);
}

#[test]
fn unknown_calls_from_a_rewritten_site_are_still_enosys_and_counted() {
    same_everywhere(&["enosys"], "enosys: -38 -38 -38\n", true);
    for rewrite in [false, true] {
        let r = guest(rewrite, &["enosys"]);
        assert!(r.stats.ends_with("\"unknown_syscalls\":{\"500\":3}}"), "rewrite={rewrite}: {}", r.stats);
    }
}

#[test]
fn unmapping_the_stubs_puts_the_original_code_back() {
    // (The program is static, non-PIE, at 0x400000: its stubs lie below.)
    same_everywhere(&["unmap"], "after munmap: b8 27 00 00 00 0f 05\nunmap: ret=0 getpid ok\n", true);
}

#[test]
fn a_null_read_is_still_sigsegv() {
    let (n, status) = native(&["null"]);
    assert_eq!(n, "null: reading\n");
    assert!(status.code().is_none(), "natively killed by a signal: {status:?}");
    for rewrite in [false, true] {
        let r = guest(rewrite, &["null"]);
        assert_eq!(r.stdout, n, "rewrite={rewrite}");
        assert_eq!(r.code, Some(128 + 11), "rewrite={rewrite}: SIGSEGV");
    }
}

#[test]
fn fork_signals_and_code_written_at_run_time() {
    // (How often the parent's wait4 blocks, and is counted again when it
    // runs on, depends on which process runs first.)
    same_everywhere(&["fork"], "fork: child ok, parent ok\n", false);
    let (n, _) = native(&["signals"]);
    assert_eq!(n, "signals: 3 handled, restorer intact\n");
    for rewrite in [false, true] {
        assert_eq!(guest(rewrite, &["signals"]).stdout, n, "rewrite={rewrite}");
    }
    same_everywhere(&["jit"], "jit: getpid ok, writable code shows its bytes: yes, changed call ok\n", true);
}

/// Whether a line of code bytes shows getpid rewritten: `jmp rel32` and
/// the `syscall` after it.
fn rewritten(line: &str) -> bool {
    line.split_once(": ").is_some_and(|(_, b)| b.starts_with("e9 ") && b.ends_with(" 0f 05"))
}

#[test]
fn snapshots_keep_rewritten_code_and_resets_undo_a_runs_rewriting() {
    static ON: std::sync::Once = std::sync::Once::new();
    // Before this process's first sandbox reads it (std's environment
    // lock orders this with the other tests' spawns).
    ON.call_once(|| std::env::set_var("HVSANDBOX_REWRITE", "1"));
    let prog = musl("rewrite");
    let mut sb = Sandbox::builder().memory_mib(64).build().unwrap();
    // At entry nothing has run, but the program's sites are rewritten
    // before the snapshot (tests/eager_rewrite.rs): every run starts with
    // them fast, and the reset keeps them (and the page accounting).
    let snap = sb.snapshot(&Cmd::new(&prog).arg("code"), SnapshotPoint::Entry).unwrap();
    let mut warm = Sandbox::from_snapshot(&snap).unwrap();
    let mut used = None;
    for round in 0..3 {
        let out = warm.run(&Cmd::resume().arg("code")).unwrap();
        let text = out.stdout_str();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.first().is_some_and(|l| l.starts_with("before:") && rewritten(l)), "round {round}: {text}");
        assert!(lines.get(1).is_some_and(|l| l.starts_with("after:") && rewritten(l)), "round {round}: {text}");
        // Every run uses the same memory: nothing of a run's rewriting stays.
        let now = out.stats.memory_used;
        assert_eq!(*used.get_or_insert(now), now, "round {round}");
    }
    // At a checkpoint after getpid ran: runs start with the fast site.
    let snap = sb.snapshot(&Cmd::new(&prog).arg("checkpoint"), SnapshotPoint::Checkpoint).unwrap();
    let mut warm = Sandbox::from_snapshot(&snap).unwrap();
    for round in 0..2 {
        let out = warm.run(&Cmd::resume().arg("checkpoint")).unwrap();
        let text = out.stdout_str();
        assert!(text.lines().all(rewritten), "round {round}: {text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}

/// A program started again and again (a shell's children) finds the
/// `syscall` sites its earlier processes called rewritten before its code
/// runs: a static program's own at the execve, a dynamic one's libraries'
/// at their mmap. Later starts then make few slow calls (each site of a
/// short process runs too few times for the lazy path), and every output
/// is as before.
#[test]
fn later_starts_of_a_file_find_the_sites_it_called_rewritten() {
    let run = |system: bool, shell: &[&str], command: &str, n: usize| -> (String, u64) {
        let script: String = (0..n).map(|i| command.replace("{i}", &i.to_string())).collect();
        let mut cmd = Command::new(hvsandbox_bin());
        cmd.env("HVSANDBOX_REWRITE", "1").args(["run", "--stats", "--timeout", "30s"]);
        if system {
            cmd.arg("--system");
        }
        let out = cmd.arg("--").args(shell).args(["-c", &script]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let stats = stderr.lines().find(|l| l.starts_with('{')).unwrap_or_else(|| panic!("no stats:\n{stderr}"));
        (String::from_utf8_lossy(&out.stdout).into_owned(), stat(stats, "slow_syscalls"))
    };
    // busybox (static): its own sites; /bin/true (dynamic): libc's. (The
    // shell's builtin echo shows each ran.)
    let busybox = format!("{BUSYBOX} echo {{i}}; ");
    let cases: [(bool, &[&str], &str, &str); 2] = [
        (false, &[BUSYBOX, "sh"], &busybox, "0\n1\n2\n3\n4\n5\n"),
        (true, &["/bin/sh"], "/bin/true; echo {i}; ", "0\n1\n2\n3\n4\n5\n"),
    ];
    for (system, shell, command, want) in cases {
        let (one, slow_one) = run(system, shell, command, 1);
        let (six, slow_six) = run(system, shell, command, 6);
        assert_eq!(one, "0\n", "{command}");
        assert_eq!(six, want, "{command}");
        // Each start made ~26 (busybox) or ~30 (/bin/true) slow calls
        // before; now a handful.
        let per_start = slow_six.saturating_sub(slow_one) / 5;
        assert!(
            per_start <= 12,
            "{command}: {per_start} slow calls a later start ({slow_one} with one, {slow_six} with six)"
        );
    }
}
