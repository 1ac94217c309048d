//! The `hvsandbox` command line: pass-through of stdio and exit codes, and
//! one error line with a distinct exit code for each kind of failure.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use hvsandbox_tests::{hvsandbox_bin, musl, TempDir, BUSYBOX};

fn hv(args: &[&str], stdin: &[u8]) -> Output {
    hv_in(".", &[], args, stdin)
}

/// Runs hvsandbox with `args`, `env` added to its environment and `dir`
/// its working directory, `stdin` written to its stdin.
fn hv_in(dir: &str, env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(hvsandbox_bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // (It may refuse the input before reading all of it.)
    let _ = child.stdin.take().unwrap().write_all(stdin);
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn runs_musl_hello() {
    let hello = musl("hello");
    let out = hv(&["run", "--", hello.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello, world\n");
    assert_eq!(text(&out.stderr), "");
}

#[test]
fn runs_busybox_echo_with_options() {
    let out = hv(&["run", "--memory", "32M", "--timeout", "2s", "--", BUSYBOX, "echo", "-n", "hi", "--there"], b"");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hi --there");
}

#[test]
fn passes_stdin_and_env() {
    let out = hv(&["run", "--", BUSYBOX, "wc", "-l"], b"a\nb\nc\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout).trim(), "3");

    let args_env = musl("args_env");
    let out = hv(&["run", "--env", "A=1", "-e", "B=x=y", "--", args_env.to_str().unwrap(), "z"], b"");
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("argv[1]=z\n"), "{stdout}");
    assert!(stdout.contains("env:A=1\nenv:B=x=y\n"), "{stdout}");
    assert!(!stdout.contains("env:PATH="), "the host environment must not leak: {stdout}");
}

#[test]
fn exit_codes_pass_through() {
    let exit_code = musl("exit_code");
    let out = hv(&["run", "--", exit_code.to_str().unwrap(), "42"], b"");
    assert_eq!(out.status.code(), Some(42));
    let out = hv(&["run", "--", BUSYBOX, "sh", "-c", "exit 3"], b"");
    assert_eq!(out.status.code(), Some(3));
    // Death by a signal: 128 + signal, as a shell reports it.
    let segv = musl("segv");
    let out = hv(&["run", "--", segv.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(128 + 11));
    assert_eq!(text(&out.stdout), "before the fault\n");
}

#[test]
fn stats_are_one_json_line() {
    let hello = musl("hello");
    let out = hv(&["run", "--stats", "--", hello.to_str().unwrap()], b"");
    assert_eq!(out.status.code(), Some(0));
    let stderr = text(&out.stderr);
    let line = stderr.lines().last().unwrap();
    assert!(line.starts_with("{\"exit_code\":0,\"signal\":null,\"wall_us\":"), "{line}");
    assert!(line.contains("\"syscalls\":") && line.contains("\"stdout_bytes\":13,"), "{line}");
    assert!(line.ends_with("\"unknown_syscalls\":{}}"), "{line}");
}

#[test]
fn errors_are_one_line_with_distinct_codes() {
    let check = |args: &[&str], code: i32, needle: &str| {
        let out = hv(args, b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        let first = stderr.lines().next().unwrap_or("");
        assert!(first.contains(needle), "{args:?}: {stderr}");
    };
    let looping = musl("loop");
    check(
        &["run", "--timeout", "200ms", "--", looping.to_str().unwrap()],
        124,
        "hvsandbox: the run exceeded its timeout",
    );
    check(&["run", "--", "/etc/hostname-does-not-exist"], 126, "hvsandbox: invalid program");
    check(&["run", "--", "/etc/passwd"], 126, "not an ELF");
    check(&["run", "--memory", "3M", "--", BUSYBOX, "true"], 125, "hvsandbox: invalid configuration");
    check(&["run", "--memory", "lots", "--", BUSYBOX, "true"], 125, "invalid size");
    check(&["run", "--timeout", "2 weeks", "--", BUSYBOX, "true"], 125, "invalid duration");
    check(&["run"], 125, "required");
    check(&["frobnicate"], 125, "unrecognized subcommand");
}

#[test]
fn output_cap_truncates_and_says_so() {
    let flood = musl("flood");
    let out = hv(&["run", "--max-output", "64K", "--", flood.to_str().unwrap(), "1", "0"], b"");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), 64 * 1024);
    assert!(text(&out.stderr).contains("hvsandbox: output truncated"), "{}", text(&out.stderr));
}

#[test]
fn sigterm_cancels_the_run() {
    let looping = musl("loop");
    let child = Command::new(hvsandbox_bin())
        .args(["run", "--timeout", "20s", "--", looping.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("hvsandbox: the run was cancelled"));
}

/// Runs hvsandbox with its stdin fed by `feeder` (a command writing to a
/// pipe), which is killed and reaped afterwards.
fn hv_fed_by(args: &[&str], feeder: &mut Command) -> Output {
    let mut feed = feeder.stdout(Stdio::piped()).stdin(Stdio::null()).spawn().unwrap();
    let out = Command::new(hvsandbox_bin())
        .args(args)
        .stdin(Stdio::from(feed.stdout.take().unwrap()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let _ = feed.kill();
    feed.wait().unwrap();
    out
}

#[test]
fn input_is_read_as_the_program_reads_it_files_up_to_max_input_and_all_within_the_timeout() {
    // An endless stdin is read only as far as the program reads it.
    let out = hv_fed_by(&["run", "--max-input", "1M", "--", BUSYBOX, "head", "-n1"], &mut Command::new("yes"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "y\n");
    // More stdin than --max-input in all is fine: the cap bounds what is
    // read ahead of the program, not the stream.
    let out = hv(&["run", "--max-input", "64K", "--", BUSYBOX, "wc", "-c"], &vec![b'y'; 1 << 20]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "1048576");
    let too_large = "the input (stdin and files) is larger than max_input";
    // An endless --file source.
    let out = hv(&["run", "--max-input", "1M", "--file", "/z=/dev/zero", "--", BUSYBOX, "true"], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("--file /z: {too_large}")), "{}", text(&out.stderr));
    // The cap is on the files together.
    let dir = std::env::temp_dir().join(format!("hvsandbox-cli-input-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f");
    std::fs::write(&file, vec![b'x'; 600 << 10]).unwrap();
    let spec = format!("/f={}", file.display());
    let count = ["run", "--max-input", "1M", "--file", &spec, "--", BUSYBOX, "sh", "-c", "wc -c < /f; wc -c"];
    let out = hv(&count, &vec![b'y'; 400 << 10]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).split_whitespace().collect::<Vec<_>>(), ["614400", "409600"]);
    let two =
        ["run", "--max-input", "1M", "--file", &spec, "--file", &spec.replace("/f=", "/g="), "--", BUSYBOX, "true"];
    let out = hv(&two, b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(too_large), "{}", text(&out.stderr));
    std::fs::remove_dir_all(&dir).unwrap();
    // A stdin that neither ends nor writes: the timeout covers the wait.
    let out = hv_fed_by(&["run", "--timeout", "300ms", "--", BUSYBOX, "cat"], Command::new("sleep").arg("60"));
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "hvsandbox: the run exceeded its timeout of 300ms\n");
}

/// Reads `from` until what was read contains `want` (the run's own
/// timeout ends the stream otherwise); returns all that was read.
fn read_until(from: &mut impl std::io::Read, seen: &mut String, want: &str) {
    let mut buf = [0u8; 4096];
    while !seen.contains(want) {
        let n = from.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended before {want:?}; read {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

#[test]
fn stdio_passes_through_live_over_pipes() {
    let script = "for i in 1 2 3; do echo question$i; read a; echo answer$i:$a; done";
    let mut child = Command::new(hvsandbox_bin())
        .args(["run", "--timeout", "60s", "--", BUSYBOX, "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    for i in 1..=3 {
        // Each question is read before its answer is written.
        read_until(&mut stdout, &mut seen, &format!("question{i}\n"));
        stdin.write_all(format!("r{i}\n").as_bytes()).unwrap();
        read_until(&mut stdout, &mut seen, &format!("answer{i}:r{i}\n"));
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn stdio_passes_through_live_on_a_terminal() {
    // `script` gives hvsandbox a pseudo-terminal as stdin and stdout.
    let inner =
        format!("{} run --timeout 60s -- {BUSYBOX} sh -c 'echo ready; read x; echo got:$x'", hvsandbox_bin().display());
    let mut child = Command::new("script")
        .args(["-qfec", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut stdout, &mut seen, "ready");
    stdin.write_all(b"typed\n").unwrap();
    read_until(&mut stdout, &mut seen, "got:typed");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}{}", seen, text(&out.stderr));
}

#[test]
fn from_snapshot_refuses_bad_files_and_checks_mounts_and_limits() {
    let dir = std::env::temp_dir().join(format!("hvsandbox-cli-snap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (sub, text) in [("a", "from a\n"), ("b", "from b\n")] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join("f"), text).unwrap();
    }
    let path = |p: &str| dir.join(p).to_str().unwrap().to_string();
    // Not snapshots: refused from their header.
    let sparse = path("sparse");
    std::fs::File::create(&sparse).unwrap().set_len(1 << 30).unwrap();
    for file in ["/dev/zero", &sparse] {
        let out = hv(&["run", "--from-snapshot", file], b"");
        assert_eq!(out.status.code(), Some(125), "{file}: {}", text(&out.stderr));
        assert_eq!(text(&out.stderr), format!("hvsandbox: snapshot {file}: not an hvsandbox snapshot file\n"));
    }
    let snap = path("s.snap");
    let (mount_a, mount_b) = (format!("{}:/m", path("a")), format!("{}:/m", path("b")));
    let script = "read x < /dev/hvsandbox/checkpoint; cat /m/f";
    let args = ["snapshot", "-o", &snap, "--memory", "32M", "--mount", &mount_a, "--", BUSYBOX, "sh", "-c", script];
    let out = hv(&args, b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The snapshot's mount must be given again; the directory given is
    // the one mounted.
    let out = hv(&["run", "--from-snapshot", &snap], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("has a mount at /m"), "{}", text(&out.stderr));
    let out = hv(&["run", "--from-snapshot", &snap, "--mount", &mount_b], b"");
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "from b\n".into()), "{}", text(&out.stderr));
    // Memory and the guest's limits are the snapshot's: the same value
    // may be given, another is refused.
    let out = hv(&["run", "--from-snapshot", &snap, "--mount", &mount_a, "--memory", "32M"], b"");
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "from a\n".into()), "{}", text(&out.stderr));
    for (flag, value, needle) in
        [("--memory", "64M", "memory"), ("--max-processes", "9", "max_processes"), ("--mount", &mount_a, "two mounts")]
    {
        let out = hv(&["run", "--from-snapshot", &snap, "--mount", &mount_a, flag, value], b"");
        assert_eq!(out.status.code(), Some(125), "{flag}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{flag}: {}", text(&out.stderr));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn snapshot_takes_the_run_options_and_old_files_are_refused() {
    let dir = std::env::temp_dir().join(format!("hvsandbox-cli-snapopts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let snap = dir.join("s.snap").to_str().unwrap().to_string();
    // The options that describe the sandbox mean for `snapshot` what they
    // mean for `run`.
    let chatty = "echo hello there; read x < /dev/hvsandbox/checkpoint";
    let limited = [
        (&["--max-output", "4", "--fail-on-output-limit"][..], chatty, 122, "more than 4 bytes"),
        (&["--cpu-time", "100ms"], "while :; do :; done", 124, "CPU-time limit"),
        (&["--seccomp", "sometimes"], "true", 125, "invalid value 'sometimes'"),
    ];
    for (opts, script, code, needle) in limited {
        let args = [&["snapshot", "-o", &snap][..], opts, &["--", BUSYBOX, "sh", "-c", script]].concat();
        let out = hv(&args, b"");
        assert_eq!(out.status.code(), Some(code), "{opts:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{opts:?}: {}", text(&out.stderr));
    }
    let out = hv(&["snapshot", "-o", &snap, "--seccomp", "log", "--", BUSYBOX, "sh", "-c", chatty], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A file of another format (format 2 had another checksum) is refused
    // from its header.
    let mut file = std::fs::read(&snap).unwrap();
    file[8..12].copy_from_slice(&2u32.to_le_bytes());
    std::fs::write(&snap, &file).unwrap();
    let out = hv(&["run", "--from-snapshot", &snap], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("hvsandbox: snapshot {snap}: snapshot format 2; this build reads format ")),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_entry_snapshot_without_args_runs_as_it_was_taken() {
    let tmp = TempDir::new("cli-entry-args");
    let snap = tmp.path("sh.snap");
    let out = hv(&["snapshot", "-o", &snap, "--at", "entry", "-e", "G=at-snapshot", "--", BUSYBOX, "sh"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // No `-- ARGS`: busybox sh, reading its script from stdin, in the
    // snapshot's environment (not busybox's usage).
    let out = hv(&["run", "--from-snapshot", &snap], b"echo \"G=$G\"; echo \"$0\"\n");
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "G=at-snapshot\nsh\n".into()),
        "{}",
        text(&out.stderr)
    );
    // Arguments given replace the snapshot's; --env goes over its environment.
    let out = hv(&["run", "--from-snapshot", &snap, "-e", "G=run", "--", "sh", "-c", "echo \"$G $0\"", "x"], b"");
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "run x\n".into()), "{}", text(&out.stderr));
    let out = hv(&["run", "--from-snapshot", &snap, "--", "echo", "only", "args"], b"");
    assert_eq!(text(&out.stdout), "only args\n", "{}", text(&out.stderr));
}

#[test]
fn snapshot_honours_each_run_option_or_refuses_it() {
    let tmp = TempDir::new("cli-snapshot-options");
    let snap = tmp.path("s.snap");
    let input = tmp.path("in.txt");
    std::fs::write(&input, "from a host file\n").unwrap();
    let big = tmp.path("big");
    std::fs::write(&big, vec![b'x'; 2048]).unwrap();
    let file = format!("/in.txt={input}");
    let at_checkpoint = |script: &str| format!("read x < /dev/hvsandbox/checkpoint; {script}");
    let (cat, pwd, echo) = (at_checkpoint("cat /in.txt"), at_checkpoint("pwd"), at_checkpoint("echo $G"));
    let flood = "echo before; read x < /dev/hvsandbox/checkpoint; echo after";
    // (options, program, then a run from the snapshot prints this).
    let kept: [(&[&str], &[&str], &str); 8] = [
        (&["--at", "entry", "--file", &file], &["cat", "/in.txt"], "from a host file\n"),
        (&["--file", &file], &["sh", "-c", &cat], "from a host file\n"),
        (&["--at", "entry", "--cwd", "/work/here"], &["pwd"], "/work/here\n"),
        (&["--cwd", "/work/here"], &["sh", "-c", &pwd], "/work/here\n"),
        (&["--at", "entry", "-e", "G=v"], &["sh", "-c", "echo $G"], "v\n"),
        (&["-e", "G=v"], &["sh", "-c", &echo], "v\n"),
        // The host's value of a name given alone.
        (&["--at", "entry", "-e", "G"], &["sh", "-c", "echo $G"], "from the host\n"),
        // The snapshot run's output limit is its own: the runs from the
        // snapshot write under theirs.
        (&["--max-output", "3"], &["sh", "-c", flood], "after\n"),
    ];
    for (opts, program, want) in kept {
        let args = [&["snapshot", "-o", &snap][..], opts, &["--", BUSYBOX], program].concat();
        let out = hv_in("/", &[("G", "from the host")], &args, b"");
        assert_eq!(out.status.code(), Some(0), "{opts:?}: {}", text(&out.stderr));
        let out = hv(&["run", "--from-snapshot", &snap], b"");
        assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), want.into()), "{opts:?}: {}", text(&out.stderr));
    }
    // The guest's limits are kept in the snapshot (another value is refused).
    let args = ["snapshot", "-o", &snap, "--max-processes", "9", "--max-open-files", "16", "--", BUSYBOX, "true"];
    assert_eq!(hv(&args, b"").status.code(), Some(0));
    for (flag, value, code) in
        [("--max-processes", "9", 0), ("--max-processes", "10", 125), ("--max-open-files", "17", 125)]
    {
        let out = hv(&["run", "--from-snapshot", &snap, flag, value], b"");
        assert_eq!(out.status.code(), Some(code), "{flag} {value}: {}", text(&out.stderr));
    }
    // Limits of the run that takes the snapshot.
    let failing: [(&[&str], &str, i32, &str); 3] = [
        (&["--timeout", "300ms"], "sleep 5", 124, "the run exceeded its timeout of 300ms"),
        (&["--cpu-time", "100ms"], "while :; do :; done", 124, "CPU-time limit"),
        (&["--max-input", "1K", "--file", &format!("/big={big}")], "true", 125, "larger than max_input"),
    ];
    // Options that mean nothing to a snapshot.
    let collect_dir = tmp.path("collected");
    let refused: [(&[&str], &str, i32, &str); 4] = [
        (&["--stats"], "true", 125, "does not take --stats"),
        (&["--collect", "/tmp", "--collect-dir", &collect_dir], "true", 125, "does not take --collect"),
        (&["--from-snapshot", &snap], "true", 125, "does not take --from-snapshot"),
        (&["--max-output", "4", "--fail-on-output-limit"], "echo hello there", 122, "more than 4 bytes"),
    ];
    for (opts, script, code, needle) in failing.into_iter().chain(refused) {
        let out_file = tmp.path("refused.snap");
        let args = [&["snapshot", "-o", &out_file][..], opts, &["--", BUSYBOX, "sh", "-c", script]].concat();
        let out = hv(&args, b"");
        assert_eq!(out.status.code(), Some(code), "{opts:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(needle), "{opts:?}: {}", text(&out.stderr));
        assert!(!std::path::Path::new(&out_file).exists(), "{opts:?} saved a snapshot");
    }
    assert!(!std::path::Path::new(&collect_dir).exists());
}

#[test]
fn bare_program_names_are_looked_up_on_the_guests_path() {
    let hello = musl("hello");
    let tools = format!("/tools/hello={}", hello.display());
    let found: [(&[&str], &str); 3] = [
        (&["--mount", "/bin:/bin", "--", "busybox", "echo", "hi"], "hi\n"),
        (&["--file", &tools, "-e", "PATH=/nowhere:/tools", "--", "hello"], "hello, world\n"),
        // A name with a slash is a host path, as is (here relative to /).
        (&["--", &BUSYBOX[1..], "echo", "relative"], "relative\n"),
    ];
    for (args, want) in found {
        let out = hv_in("/", &[], &[&["run"][..], args].concat(), b"");
        assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), want.into()), "{args:?}: {}", text(&out.stderr));
    }
    let out = hv(&["run", "--file", &tools, "--", "hello"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "hvsandbox: invalid program hello: not found on the guest's PATH \
         (/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin)\n"
    );
    // `snapshot` looks names up too.
    let tmp = TempDir::new("cli-bare-snapshot");
    let snap = tmp.path("s.snap");
    let out = hv(&["snapshot", "-o", &snap, "--at", "entry", "--mount", "/bin:/bin", "--", "busybox", "sh"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = hv(&["run", "--from-snapshot", &snap, "--mount", "/bin:/bin"], b"busybox echo ok\n");
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "ok\n".into()), "{}", text(&out.stderr));
}

#[test]
fn stats_are_printed_also_when_the_run_fails() {
    let looping = musl("loop");
    let cases: [(&[&str], i32, &str); 3] = [
        (&["--timeout", "300ms", "--", BUSYBOX, "sh", "-c", "echo hi; while :; do :; done"], 124, "TIMEOUT"),
        (&["--", "no-such-program"], 126, "INVALID_PROGRAM"),
        (&["--memory", "3M", "--", looping.to_str().unwrap()], 125, "INVALID_CONFIG"),
    ];
    for (args, code, kind) in cases {
        let out = hv(&[&["run", "--stats"][..], args].concat(), b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {stderr}");
        // The stats line, in the success line's format, then the error line.
        let lines: Vec<&str> = stderr.lines().collect();
        let [line, error] = lines[..] else { panic!("{args:?}: {stderr}") };
        assert!(line.starts_with("{\"exit_code\":null,\"signal\":null,\"wall_us\":"), "{line}");
        assert!(line.contains(",\"cpu_us\":null,\"exits\":null,"), "{line}");
        assert!(line.contains(&format!(",\"unknown_syscalls\":null,\"error\":\"{kind}\",\"message\":\"")), "{line}");
        assert!(error.starts_with("hvsandbox: ") && line.ends_with(&format!("{:?}}}", &error["hvsandbox: ".len()..])));
        // The output so far passed through.
        if kind == "TIMEOUT" {
            assert_eq!(text(&out.stdout), "hi\n");
        }
    }
}

#[test]
fn system_gives_the_host_programs_a_shell_and_no_secrets() {
    let script = "echo hi | tr a-z A-Z; \
                  python3 -c 'import subprocess; print(subprocess.run(\"echo shell-out\", shell=True, capture_output=True, text=True).stdout, end=\"\")'; \
                  test -e /etc/ssl/certs && echo certs; \
                  test -e /etc/ssl/openssl.cnf && echo openssl-config; \
                  test -e /etc/shadow || echo no-shadow; test -e /etc/ssl/private || echo no-private; \
                  echo $HOME $USER; touch $HOME/w && echo home-writable";
    let out = hv(&["run", "--system", "--timeout", "60s", "--", "sh", "-c", script], b"");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // OpenSSL's configuration is there when the host has it.
    let config = if std::path::Path::new("/etc/ssl/openssl.cnf").is_file() { "openssl-config\n" } else { "" };
    assert_eq!(
        text(&out.stdout),
        format!("HI\nshell-out\ncerts\n{config}no-shadow\nno-private\n/tmp sandbox\nhome-writable\n")
    );
}

#[test]
fn trace_lines_from_the_vcpu_thread_do_not_stall_the_run() {
    // The vCPU thread writes HVSANDBOX_TRACE lines to stderr while the
    // main thread passes the program's output through: it used to hold
    // the stderr lock for the whole run, and the run never ended.
    let mut child = Command::new(hvsandbox_bin())
        .args(["run", "--", BUSYBOX, "echo", "traced"])
        .env("HVSANDBOX_TRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{:?} {}", out.status, text(&out.stderr));
    assert_eq!(text(&out.stdout), "traced\n");
    assert!(text(&out.stderr).contains("hvsandbox trace:"), "{}", text(&out.stderr));
}

/// Under a subreaper (the harness below), the command's orphans come back
/// to it: what the run left behind when `hvsandbox` exited.
const ORPHAN_HARNESS: &str = r#"
import ctypes, os, subprocess, sys
assert ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
r, w = os.pipe()
p = subprocess.Popen(sys.argv[1:], stdout=w, stdin=subprocess.DEVNULL)
os.close(w)
code = p.wait()
# hvsandbox has exited: its output has ended, although its VM's helper may
# still run (it is ours now).
out = b""
while chunk := os.read(r, 4096):
    out += chunk
print("code", code, "out", out.decode().strip())
helpers = 0
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:
        break
    helpers += 1
    print("helper exit", os.waitstatus_to_exitcode(status))
print("helpers", helpers)
"#;

#[test]
fn the_status_comes_before_the_vms_teardown_which_a_helper_finishes() {
    // The output pipe ends when hvsandbox exits (the helper that tears its
    // VM down holds none of the caller's descriptors), and the helper ends
    // on its own, with status 0.
    let cli = hvsandbox_bin();
    let out = Command::new("python3")
        .args(["-c", ORPHAN_HARNESS, cli.to_str().unwrap(), "run", "--", BUSYBOX, "sh", "-c", "echo ran; exit 7"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "code 7 out ran\nhelper exit 0\nhelpers 1\n");
    // A run that fails hands on the VM made ahead for it the same way.
    let harness = |args: &[&str]| {
        let out = Command::new("python3")
            .args(["-c", ORPHAN_HARNESS, cli.to_str().unwrap()])
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        (text(&out.stdout), text(&out.stderr))
    };
    let (got, err) = harness(&["run", "--", "/nonexistent"]);
    assert_eq!(got, "code 126 out \nhelper exit 0\nhelpers 1\n", "{err}");
    // Refused before any VM is made: nothing to hand on.
    let (got, err) = harness(&["run", "--memory", "1K", "--", BUSYBOX, "true"]);
    assert_eq!(got, "code 125 out \nhelpers 0\n", "{err}");
}

#[test]
fn a_reader_that_goes_away_ends_the_run_as_sigpipe_would() {
    // `yes | head -1`: the reader closes the pipe after a line; natively
    // `yes` dies of SIGPIPE (128 + 13), and so does the run, at once
    // rather than at its timeout.
    let mut child = Command::new(hvsandbox_bin())
        .args(["run", "--timeout", "60s", "--", BUSYBOX, "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "y\n");
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(128 + 13), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
}
