//! `hvsandbox serve` and `hvsandbox run --server`: a run through a server
//! prints, reads and exits as a cold `hvsandbox run` of the same command
//! does, also when it starts from a warm clone of the program's entry
//! snapshot (with its own arguments and environment, and none of the
//! state of the runs before it); the server's limits bound its runs; the
//! client refuses the options that describe the sandbox (the server's) and
//! a server it cannot reach; a client that dies takes its run with it;
//! the server serves only its own user and ends cleanly on SIGTERM.
//!
//! One file (~1,000 lines): every test here drives the same `Server` and
//! client helpers, and each file under `tests/` is a test binary of its
//! own to build.
//!
//! Each test starts its own server (a [`Server`], stopped and reaped when
//! dropped) in a scratch directory of its own. Waits are bounded by
//! generous deadlines, never asserted on: a hung run fails the test
//! instead of hanging it.

use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hvsandbox_tests::{hvsandbox_bin, musl, TempDir, BUSYBOX};

/// How long a server may take to say it serves, and to exit on SIGTERM.
const SERVER_DEADLINE: Duration = Duration::from_secs(20);
/// How long a client run may take before the test kills it and fails.
const CLIENT_DEADLINE: Duration = Duration::from_secs(60);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Sends `signal` to `child` (started by the caller and not yet reaped).
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on the PID of a child this test started and has not
    // reaped (so the PID is still that child's).
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({}, {signal}): {}", child.id(), std::io::Error::last_os_error());
}

/// Waits for `child` to exit, up to `deadline`; past it, kills and reaps
/// it and returns `None`.
fn wait_within(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("waitpid") {
            return Some(status);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads all of `from` in a thread; the bytes come through the receiver.
fn drain(mut from: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = from.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    rx
}

/// Feeds `stdin` to a spawned client (stdio piped) and collects its
/// output. A client still running after [`CLIENT_DEADLINE`] is killed and
/// the test fails, as it does when the client's stdout or stderr stay
/// open 10 s after it exited (someone, the server, kept them).
fn finish(mut child: Child, stdin: &[u8], what: &str) -> Output {
    let mut input = child.stdin.take().expect("piped stdin");
    let bytes = stdin.to_vec();
    // (A client may exit without reading all of it.)
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&bytes);
    });
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = wait_within(&mut child, CLIENT_DEADLINE);
    let collect = |rx: mpsc::Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("{what}: its {name} stayed open after it exited ({status:?})"))
    };
    let (stdout, stderr) = (collect(stdout, "stdout"), collect(stderr, "stderr"));
    let _ = writer.join();
    let Some(status) = status else {
        panic!(
            "{what}: still running after {CLIENT_DEADLINE:?}; killed. stdout {:?} stderr {:?}",
            text(&stdout),
            text(&stderr)
        )
    };
    Output { status, stdout, stderr }
}

/// A `hvsandbox` command with stdio piped.
fn hv_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(hvsandbox_bin());
    cmd.args(args)
        .env_remove("HVSANDBOX_SERVER")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `hvsandbox ARGS` (never through a server unless `env` names one),
/// `stdin` written to it.
fn hv(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let child = hv_command(args, env).spawn().expect("start hvsandbox");
    finish(child, stdin, &format!("hvsandbox {args:?}"))
}

/// A cold `hvsandbox run OPTIONS -- ARGV`.
fn cold(options: &[&str], argv: &[&str], stdin: &[u8]) -> Output {
    hv(&[&["run"][..], options, &["--"], argv].concat(), &[], stdin)
}

/// A running `hvsandbox serve --socket DIR/s.sock ...`: SIGTERMed (then,
/// past [`SERVER_DEADLINE`], killed) and reaped on drop.
struct Server {
    child: Child,
    socket: String,
    /// All it wrote to stderr so far.
    log: Arc<Mutex<String>>,
    reaped: Option<ExitStatus>,
}

impl Server {
    /// Starts a server on `tmp`/s.sock with `options` and waits until it
    /// says it serves.
    fn start(tmp: &TempDir, options: &[&str]) -> Server {
        let socket = tmp.path("s.sock");
        let mut child = Command::new(hvsandbox_bin())
            .args(["serve", "--socket", &socket])
            .args(options)
            .env_remove("HVSANDBOX_SERVER")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hvsandbox serve");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        // Reads its stderr for as long as it writes (so it never blocks
        // on a full pipe), line by line.
        std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(stderr);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut lines, &mut line).is_ok_and(|n| n > 0) {
                sink.lock().unwrap().push_str(&line);
                let _ = tx.send(line.trim_end().to_string());
                line.clear();
            }
        });
        let ready = format!("hvsandbox: serving on {socket}");
        let end = Instant::now() + SERVER_DEADLINE;
        loop {
            match rx.recv_timeout(Duration::from_millis(20)) {
                Ok(line) if line == ready => break,
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                // (Its stderr closed: it is exiting.)
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(20)),
            }
            if let Some(status) = child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(50));
                panic!("hvsandbox serve {options:?} exited with {status} before serving: {}", log.lock().unwrap());
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "hvsandbox serve {options:?} did not say {ready:?} in {SERVER_DEADLINE:?}: {}",
                    log.lock().unwrap()
                );
            }
        }
        Server { child, socket, log, reaped: None }
    }

    /// `hvsandbox run --server SOCKET OPTIONS -- ARGV`, `stdin` written to it.
    fn run(&self, options: &[&str], argv: &[&str], stdin: &[u8]) -> Output {
        let args = [&["run", "--server", &self.socket][..], options, &["--"], argv].concat();
        let child = hv_command(&args, &[]).spawn().expect("start hvsandbox run --server");
        finish(child, stdin, &format!("hvsandbox {args:?}"))
    }

    /// Checks a run through the server exits 0 and prints `want` alone.
    fn expect(&self, options: &[&str], argv: &[&str], want: &str) {
        let out = self.run(options, argv, b"");
        assert_eq!(
            (out.status.code(), text(&out.stdout), text(&out.stderr)),
            (Some(0), want.to_string(), String::new()),
            "{options:?} {argv:?}; the server said: {}",
            self.log()
        );
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Sends `sig`, waits for the server to exit (killing it past
    /// [`SERVER_DEADLINE`]) and returns how it ended (`None`: killed).
    fn stop(&mut self, sig: libc::c_int) -> Option<ExitStatus> {
        if self.reaped.is_some() {
            return self.reaped;
        }
        signal(&self.child, sig);
        let status = wait_within(&mut self.child, SERVER_DEADLINE);
        self.reaped = Some(status.unwrap_or_else(|| ExitStatus::from_raw(libc::SIGKILL)));
        status
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            let status = self.stop(libc::SIGTERM);
            if status.is_none_or(|s| !s.success()) {
                eprintln!("hvsandbox serve on {} ended with {status:?} on SIGTERM", self.socket);
            }
        }
        if std::thread::panicking() {
            eprintln!("hvsandbox serve on {} wrote:\n{}", self.socket, self.log());
        }
    }
}

/// Runs `options -- argv` cold and through `server` and checks both exit
/// alike and print the same on stdout and stderr; returns the output.
fn same_as_cold(server: &Server, options: &[&str], argv: &[&str], stdin: &[u8]) -> Output {
    let want = cold(options, argv, stdin);
    let got = server.run(options, argv, stdin);
    assert_eq!(
        (got.status.code(), got.status.signal(), text(&got.stdout), text(&got.stderr)),
        (want.status.code(), want.status.signal(), text(&want.stdout), text(&want.stderr)),
        "{options:?} {argv:?} through the server (left) and cold (right); the server said: {}",
        server.log()
    );
    got
}

#[test]
fn runs_through_the_server_exit_and_print_as_cold_runs_warm_ones_with_their_own_args() {
    let tmp = TempDir::new("server-same-as-cold");
    let server = Server::start(&tmp, &[]);
    let (segv, args_env) = (musl("segv"), musl("args_env"));
    let (segv, args_env) = (segv.to_str().unwrap(), args_env.to_str().unwrap());
    // The first run of each program is cold in the server too; the later
    // ones start from its warm clones, with other arguments and input.
    for i in 0..4 {
        let n = i.to_string();
        let out = same_as_cold(&server, &[], &[BUSYBOX, "echo", "hello", &n, "--there"], b"");
        assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), format!("hello {n} --there\n")));

        let exit = format!("exit {}", 3 + i);
        let out = same_as_cold(&server, &[], &[BUSYBOX, "sh", "-c", &exit], b"");
        assert_eq!(out.status.code(), Some(3 + i));

        let out = same_as_cold(&server, &[], &[segv], b"");
        assert_eq!((out.status.code(), text(&out.stdout)), (Some(128 + 11), "before the fault\n".into()));

        let env = format!("A={i}");
        let arg = format!("z{i}");
        let out = same_as_cold(&server, &["--env", "B=x=y", "-e", &env], &[args_env, &arg], b"");
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0));
        assert!(stdout.starts_with("argc=2\n") && stdout.contains(&format!("argv[1]={arg}\n")), "{stdout}");
        assert!(stdout.ends_with(&format!("env:B=x=y\nenv:A={i}\n")), "{stdout}");
        assert!(!stdout.contains("env:PATH="), "the host's environment must not leak: {stdout}");

        let lines = "a\nb\nc\n".repeat(i as usize + 1);
        let out = same_as_cold(&server, &[], &[BUSYBOX, "wc", "-l"], lines.as_bytes());
        assert_eq!((out.status.code(), text(&out.stdout).trim()), (Some(0), (3 * (i + 1)).to_string().as_str()));

        let script = format!("echo err{i} >&2; echo out{i}");
        let out = same_as_cold(&server, &[], &[BUSYBOX, "sh", "-c", &script], b"");
        assert_eq!(
            (out.status.code(), text(&out.stdout), text(&out.stderr)),
            (Some(0), format!("out{i}\n"), format!("err{i}\n"))
        );
    }
}

#[test]
fn programs_that_cannot_run_and_bad_usage_fail_as_cold_runs_do() {
    let tmp = TempDir::new("server-bad-programs");
    let server = Server::start(&tmp, &[]);
    for program in ["/etc/hostname-does-not-exist", "/etc/passwd"] {
        for _ in 0..2 {
            let out = server.run(&[], &[program], b"");
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(126), "{program}: {stderr}");
            assert!(stderr.starts_with("hvsandbox: "), "{program}: {stderr}");
        }
    }
    // No program.
    let out = hv(&["run", "--server", &server.socket], &[], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("hvsandbox: ") || text(&out.stderr).contains("required"));
    // The server still serves.
    server.expect(&[], &[BUSYBOX, "echo", "still"], "still\n");
}

#[test]
fn stdio_passes_through_live() {
    let tmp = TempDir::new("server-live");
    let server = Server::start(&tmp, &[]);
    let script = "for i in 1 2 3; do echo question$i; read a; echo answer$i:$a; done";
    // Twice: cold in the server, then from a warm clone.
    for round in 0..2 {
        let args = ["run", "--server", &server.socket, "--timeout", "60s", "--", BUSYBOX, "sh", "-c", script];
        let mut child = hv_command(&args, &[]).spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // Reads the answers in a thread (to fail, not hang, if they never come).
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut stdout = stdout;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(text(&buf[..n])).is_err() {
                    break;
                }
            }
        });
        let mut seen = String::new();
        let mut read_until = |want: &str| {
            let end = Instant::now() + CLIENT_DEADLINE;
            while !seen.contains(want) {
                let left = end.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(s) => seen.push_str(&s),
                    Err(_) => return Err(format!("round {round}: no {want:?}; read {seen:?}")),
                }
            }
            Ok(())
        };
        let mut result = Ok(());
        for i in 1..=3 {
            // Each question is read before its answer is written.
            result = result.and_then(|()| read_until(&format!("question{i}\n")));
            if result.is_ok() {
                stdin.write_all(format!("r{i}\n").as_bytes()).unwrap();
                result = read_until(&format!("answer{i}:r{i}\n"));
            }
        }
        drop(stdin);
        let status = wait_within(&mut child, CLIENT_DEADLINE);
        let mut stderr = String::new();
        if status.is_some() {
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        }
        let _ = reader.join();
        if let Err(e) = result {
            panic!("{e}; stderr {stderr:?}; the server said: {}", server.log());
        }
        assert_eq!(status.and_then(|s| s.code()), Some(0), "round {round}: {stderr}");
    }
}

#[test]
fn the_environment_does_not_leak_from_run_to_run() {
    let tmp = TempDir::new("server-env");
    let server = Server::start(&tmp, &[]);
    let show = [BUSYBOX, "sh", "-c", "echo \"[$FOO]\""];
    server.expect(&[], &show, "[]\n");
    server.expect(&["--env", "FOO=bar"], &show, "[bar]\n");
    server.expect(&[], &show, "[]\n");
    server.expect(&["-e", "FOO=baz"], &show, "[baz]\n");
    server.expect(&[], &show, "[]\n");
    // Nor does the client's own environment (as a cold run's).
    let out = hv(
        &["run", "--server", &server.socket, "--", BUSYBOX, "sh", "-c", "echo \"[$FOO]\""],
        &[("FOO", "from-the-client")],
        b"",
    );
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(0), "[]\n".into()), "{}", text(&out.stderr));
}

#[test]
fn the_guests_state_does_not_leak_from_run_to_run() {
    let tmp = TempDir::new("server-state");
    let server = Server::start(&tmp, &[]);
    let script = "cat /tmp/x 2>/dev/null; echo y > /tmp/x; echo done";
    for _ in 0..3 {
        server.expect(&[], &[BUSYBOX, "sh", "-c", script], "done\n");
    }
}

#[test]
fn timeouts_are_the_clients_up_to_the_servers() {
    let tmp = TempDir::new("server-timeout");
    let server = Server::start(&tmp, &[]);
    for _ in 0..2 {
        let out = server.run(&["--timeout", "300ms"], &[BUSYBOX, "sleep", "5"], b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(124), "{stderr}; the server said: {}", server.log());
        assert!(stderr.lines().any(|l| l.starts_with("hvsandbox: ")), "{stderr}");
    }
    // The output before the timeout passes through.
    let out = server.run(&["--timeout", "300ms"], &[BUSYBOX, "sh", "-c", "echo hi; sleep 5"], b"");
    assert_eq!((out.status.code(), text(&out.stdout)), (Some(124), "hi\n".into()), "{}", text(&out.stderr));
    server.expect(&["--timeout", "10s"], &[BUSYBOX, "echo", "in time"], "in time\n");
    drop(server);

    let tmp = TempDir::new("server-timeout-cap");
    let server = Server::start(&tmp, &["--timeout", "500ms"]);
    for options in [&["--timeout", "60s"][..], &[]] {
        let out = server.run(options, &[BUSYBOX, "sleep", "5"], b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(124), "{options:?}: {stderr}; the server said: {}", server.log());
        assert!(stderr.lines().any(|l| l.starts_with("hvsandbox: ")), "{options:?}: {stderr}");
    }
    server.expect(&["--timeout", "60s"], &[BUSYBOX, "echo", "quick"], "quick\n");
}

#[test]
fn a_killed_clients_run_is_killed_and_the_server_serves_on() {
    let tmp = TempDir::new("server-killed-client");
    // One run at a time, and runs up to 10 minutes long: were the killed
    // client's run left running, the next run would wait for it far past
    // the client deadline.
    let mut server = Server::start(&tmp, &["--jobs", "1", "--timeout", "600s"]);
    server.expect(&[], &[BUSYBOX, "echo", "first"], "first\n");
    for _ in 0..2 {
        let args = ["run", "--server", &server.socket, "--timeout", "600s", "--", BUSYBOX, "sleep", "600"];
        let mut client = hv_command(&args, &[]).stdin(Stdio::null()).spawn().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(client.try_wait().unwrap().is_none(), "the client of sleep 600 ended early");
        client.kill().unwrap();
        let status = client.wait().unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        server.expect(&["--timeout", "10s"], &[BUSYBOX, "echo", "ok"], "ok\n");
    }
    assert!(server.child.try_wait().unwrap().is_none(), "the server exited: {}", server.log());
    assert_eq!(server.stop(libc::SIGTERM).map(|s| s.code()), Some(Some(0)), "{}", server.log());
}

#[test]
fn a_replaced_program_is_run_anew() {
    let tmp = TempDir::new("server-replaced");
    let server = Server::start(&tmp, &["--log-runs"]);
    let prog = tmp.path("prog");
    let install = |from: &Path, to: &str| {
        std::fs::copy(from, to).unwrap();
        std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    install(&musl("hello"), &prog);
    // Until its runs come from warm clones: those must not outlive the file.
    run_until_warm(&server, &[], &[&prog, "7"], &prog, "hello, world\n");
    // Replaced by a rename (another inode).
    let new = tmp.path("prog.new");
    install(&musl("exit_code"), &new);
    std::fs::rename(&new, &prog).unwrap();
    for _ in 0..3 {
        let out = server.run(&[], &[&prog, "7"], b"");
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(7), String::new()),
            "{}; the server said: {}",
            text(&out.stderr),
            server.log()
        );
    }
    // Rewritten in place (the same inode, another size and mtime).
    install(&musl("hello"), &prog);
    for _ in 0..2 {
        server.expect(&[], &[&prog, "7"], "hello, world\n");
    }
}

#[test]
fn options_that_describe_the_sandbox_are_refused_with_server() {
    let tmp = TempDir::new("server-refused");
    let server = Server::start(&tmp, &[]);
    let plain = tmp.path("plain");
    std::fs::write(&plain, "x").unwrap();
    let mount = format!("{}:/b", tmp.0.display());
    let file = format!("/f={plain}");
    let refused: [&[&str]; 7] = [
        &["--mount", &mount],
        &["--cwd", "/tmp"],
        &["--memory", "64M"],
        &["--system"],
        &["--file", &file],
        &["--max-output", "1K"],
        &["--from-snapshot", "/nonexistent.snap"],
    ];
    for options in refused {
        let out = server.run(options, &[BUSYBOX, "true"], b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{options:?}: {stderr}");
        assert!(stderr.starts_with("hvsandbox: "), "{options:?}: {stderr}");
        assert_eq!(text(&out.stdout), "", "{options:?}");
    }
    server.expect(&[], &[BUSYBOX, "echo", "served"], "served\n");
}

#[test]
fn a_server_that_cannot_be_reached_is_a_usage_error() {
    let tmp = TempDir::new("server-unreachable");
    // No such socket.
    let nothing = tmp.path("nothing.sock");
    // A socket nobody listens on any more.
    let stale = tmp.path("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    // Not a socket.
    let plain = tmp.path("plain");
    std::fs::write(&plain, "").unwrap();
    for socket in [&nothing, &stale, &plain] {
        let out = hv(&["run", "--server", socket, "--", BUSYBOX, "true"], &[], b"");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "{socket}: {stderr}");
        assert!(stderr.starts_with("hvsandbox: "), "{socket}: {stderr}");
        let out = hv(&["run", "--", BUSYBOX, "true"], &[("HVSANDBOX_SERVER", socket)], b"");
        assert_eq!(out.status.code(), Some(125), "HVSANDBOX_SERVER={socket}: {}", text(&out.stderr));
        assert!(text(&out.stderr).starts_with("hvsandbox: "), "{socket}: {}", text(&out.stderr));
    }
}

#[test]
fn hvsandbox_server_in_the_environment_names_the_server() {
    let tmp = TempDir::new("server-env-var");
    // A cold run of `sleep 2` ends in time (its timeout is 10 s); through
    // this server it cannot.
    let server = Server::start(&tmp, &["--timeout", "500ms"]);
    let via_env = [("HVSANDBOX_SERVER", server.socket.as_str())];
    for i in 0..3 {
        let out = hv(&["run", "--", BUSYBOX, "echo", &format!("via env {i}")], &via_env, b"");
        assert_eq!(
            (out.status.code(), text(&out.stdout)),
            (Some(0), format!("via env {i}\n")),
            "{}; the server said: {}",
            text(&out.stderr),
            server.log()
        );
    }
    let out = hv(&["run", "--", BUSYBOX, "sleep", "2"], &via_env, b"");
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
}

#[test]
fn the_socket_is_its_users_alone() {
    let tmp = TempDir::new("server-other-user");
    let server = Server::start(&tmp, &[]);
    let meta = std::fs::metadata(&server.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped the run as another user: not running as root");
        return;
    }
    // The CLI where user 65534 may run it (the scratch directory is
    // world-readable; the checkout may not be).
    std::fs::set_permissions(&tmp.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cli = tmp.path("hvsandbox");
    std::fs::copy(hvsandbox_bin(), &cli).unwrap();
    std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |what: &str| {
        let child = Command::new(&cli)
            .args(["run", "--server", &server.socket, "--", BUSYBOX, "echo", "nobody"])
            .env_remove("HVSANDBOX_SERVER")
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish(child, b"", what);
        let stderr = text(&out.stderr);
        assert_eq!((out.status.code(), text(&out.stdout)), (Some(125), String::new()), "{what}: {stderr}");
        assert!(stderr.starts_with("hvsandbox: "), "{what}: {stderr}");
    };
    // The socket's mode keeps the other user out...
    as_nobody("user 65534, socket 0600");
    // ...and so does the server's check of its peer's credentials.
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    as_nobody("user 65534, socket 0666");
    server.expect(&[], &[BUSYBOX, "echo", "root"], "root\n");
}

#[test]
fn the_server_ends_with_status_0_and_removes_its_socket_on_sigterm_and_sigint() {
    for (name, sig) in [("server-sigterm", libc::SIGTERM), ("server-sigint", libc::SIGINT)] {
        let tmp = TempDir::new(name);
        let mut server = Server::start(&tmp, &[]);
        server.expect(&[], &[BUSYBOX, "echo", name], &format!("{name}\n"));
        let status = server.stop(sig);
        assert_eq!(status.map(|s| s.code()), Some(Some(0)), "{name}: {status:?}; it said: {}", server.log());
        assert!(!Path::new(&server.socket).exists(), "{name}: the socket is left: {}", server.log());
        // Nobody serves there now.
        let out = hv(&["run", "--server", &server.socket, "--", BUSYBOX, "true"], &[], b"");
        assert_eq!(out.status.code(), Some(125), "{name}: {}", text(&out.stderr));
    }
}

#[test]
fn parallel_clients_each_get_their_own_run() {
    let tmp = TempDir::new("server-parallel");
    let server = Server::start(&tmp, &["--jobs", "2"]);
    std::thread::scope(|s| {
        for t in 0..4 {
            let server = &server;
            s.spawn(move || {
                for r in 0..3 {
                    let word = format!("{t}-{r}");
                    let script = format!("echo {word}; echo {word} >&2; exit {}", 10 + t);
                    let out = server.run(&[], &[BUSYBOX, "sh", "-c", &script], b"");
                    assert_eq!(
                        (out.status.code(), text(&out.stdout), text(&out.stderr)),
                        (Some(10 + t), format!("{word}\n"), format!("{word}\n")),
                        "client {t} run {r}; the server said: {}",
                        server.log()
                    );
                    server.expect(&[], &[BUSYBOX, "echo", &word], &format!("{word}\n"));
                }
            });
        }
    });
}

#[test]
fn a_server_without_warm_clones_runs_each_anew() {
    let tmp = TempDir::new("server-warm-0");
    let server = Server::start(&tmp, &["--warm", "0"]);
    let script = "cat /tmp/x 2>/dev/null; echo y > /tmp/x; echo \"$FOO $1\"";
    for i in 0..4 {
        let n = i.to_string();
        server.expect(&[], &[BUSYBOX, "echo", &n], &format!("{n}\n"));
        let env = format!("FOO=f{i}");
        server.expect(&["-e", &env], &[BUSYBOX, "sh", "-c", script, "sh", &n], &format!("f{i} {n}\n"));
    }
}

#[test]
fn the_servers_options_apply_to_its_runs() {
    let tmp = TempDir::new("server-options");
    let shared = tmp.path("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(Path::new(&shared).join("f"), "from the host directory\n").unwrap();
    let mount = format!("{shared}:/m");
    let options = ["--mount", &mount, "--max-output", "8", "--max-processes", "4"];
    let server = Server::start(&tmp, &options);
    for _ in 0..3 {
        // The mount, and the output cap (truncation and its line).
        let argv = [BUSYBOX, "cat", "/m/f"];
        let want = cold(&options, &argv, b"");
        assert_eq!(text(&want.stdout), "from the", "cold: {}", text(&want.stderr));
        let got = server.run(&[], &argv, b"");
        assert_eq!(
            (got.status.code(), text(&got.stdout), text(&got.stderr)),
            (want.status.code(), text(&want.stdout), text(&want.stderr)),
            "through the server (left) and cold (right); the server said: {}",
            server.log()
        );
    }
}

/// How many of the server's `--log-runs` lines say `program` ran `how`
/// ("warm" or "cold").
fn logged(server: &Server, program: &str, how: &str) -> usize {
    let line = format!("hvsandbox serve: {program:?} {how} exit ");
    server.log().lines().filter(|l| l.starts_with(&line)).count()
}

#[test]
fn a_programs_later_runs_start_from_warm_clones_with_their_own_args_and_env() {
    let tmp = TempDir::new("server-warm");
    let server = Server::start(&tmp, &["--log-runs"]);
    let args_env = musl("args_env");
    let args_env = args_env.to_str().unwrap();
    // Its snapshot and clones are made in the background after its first
    // run: until then its runs are cold. Each run must be right either way.
    let want = format!("argc=2\nargv[0]={args_env}\nargv[1]=first\nenv:K=first\n");
    run_until_warm(&server, &["-e", "K=first"], &[args_env, "first"], args_env, &want);
    assert!(logged(&server, args_env, "cold") >= 1, "{}", server.log());
    // Warm runs from then on (a clone goes back to the pool after its run),
    // each with its own argv and environment, nothing of the one before.
    let before = logged(&server, args_env, "warm");
    for i in 0..3 {
        let (arg, env) = (format!("warm{i}"), format!("W{i}=v{i}"));
        let extra = if i == 1 { vec!["x y", ""] } else { vec![] };
        let argv: Vec<&str> = [args_env, arg.as_str()].into_iter().chain(extra.iter().copied()).collect();
        let want = cold(&["-e", &env], &argv, b"");
        let got = server.run(&["-e", &env], &argv, b"");
        assert_eq!((got.status.code(), text(&got.stdout)), (want.status.code(), text(&want.stdout)));
        assert!(!text(&got.stdout).contains("K=first"), "{}", text(&got.stdout));
    }
    assert!(logged(&server, args_env, "warm") > before, "{}", server.log());
}

#[test]
fn malformed_requests_are_closed_and_the_server_serves_on() {
    use std::os::unix::net::UnixStream;
    let tmp = TempDir::new("server-malformed");
    let server = Server::start(&tmp, &[]);
    let frame = |magic: &[u8], len: Option<u32>| {
        let mut body = magic.to_vec();
        body.extend_from_slice(&10_000_000u64.to_le_bytes());
        body.extend_from_slice(&1u32.to_le_bytes());
        body.extend_from_slice(&(BUSYBOX.len() as u32).to_le_bytes());
        body.extend_from_slice(BUSYBOX.as_bytes());
        body.extend_from_slice(&0u32.to_le_bytes());
        let mut f = len.unwrap_or(body.len() as u32).to_le_bytes().to_vec();
        f.extend_from_slice(&body);
        f
    };
    // None of these comes with stdin, stdout and stderr (plain writes
    // carry no descriptors), one has another protocol's magic, one claims
    // 4 GiB: each is closed without an exit code.
    for bytes in [b"garbage!".to_vec(), frame(b"HVS9", None), frame(b"HVS1", Some(u32::MAX)), frame(b"HVS1", None)] {
        let mut conn = UnixStream::connect(&server.socket).unwrap();
        conn.set_read_timeout(Some(CLIENT_DEADLINE)).unwrap();
        let _ = conn.write_all(&bytes);
        let mut answer = Vec::new();
        match conn.read_to_end(&mut answer) {
            Ok(_) => assert!(answer.is_empty(), "{bytes:?} was answered {answer:?}"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{bytes:?}: {e}"),
        }
    }
    server.expect(&[], &[BUSYBOX, "echo", "still"], "still\n");
}

/// Runs `options -- argv` through `server` (started with `--log-runs`)
/// until one of its runs of `argv0` (as the client named it) came from a
/// warm clone, each printing `want` and exiting 0.
fn run_until_warm(server: &Server, options: &[&str], argv: &[&str], argv0: &str, want: &str) {
    let mut runs = 0;
    while logged(server, argv0, "warm") == 0 {
        runs += 1;
        assert!(runs <= 400, "no warm run of {argv0} in 400; the server said: {}", server.log());
        server.expect(options, argv, want);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_bare_name_runs_warm_and_a_replaced_file_behind_it_is_run_anew() {
    let tmp = TempDir::new("server-bare");
    let dir = tmp.path("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let prog = format!("{dir}/prog");
    let install = |from: &Path| {
        let new = format!("{dir}/prog.new");
        std::fs::copy(from, &new).unwrap();
        std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&new, &prog).unwrap();
    };
    install(&musl("args_env"));
    let mount = format!("{dir}:/opt/bin");
    let server = Server::start(&tmp, &["--log-runs", "--mount", &mount]);
    // argv[0] is where the guest found it, warm or cold (the log names the
    // program as the client did).
    let want = "argc=2\nargv[0]=/opt/bin/prog\nargv[1]=x\nenv:PATH=/opt/bin\n";
    run_until_warm(&server, &["-e", "PATH=/opt/bin"], &["prog", "x"], "prog", want);
    let warm = logged(&server, "prog", "warm");
    server.expect(&["-e", "PATH=/opt/bin"], &["prog", "x"], want);
    assert!(logged(&server, "prog", "warm") > warm, "{}", server.log());
    // Another file behind the name: its own behaviour from the next run.
    install(&musl("exit_code"));
    for _ in 0..3 {
        let out = server.run(&["-e", "PATH=/opt/bin"], &["prog", "9"], b"");
        assert_eq!(out.status.code(), Some(9), "{}; the server said: {}", text(&out.stderr), server.log());
    }
    // Not on this PATH: the run's own error, as cold.
    let out = server.run(&["-e", "PATH=/nowhere"], &["prog"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", text(&out.stderr));
}

#[test]
fn a_server_that_cannot_start_says_why_and_leaves_no_socket() {
    let tmp = TempDir::new("server-cannot-start");
    let socket = tmp.path("s.sock");
    // A mount that is not there: refused before serving, socket removed.
    let out = hv(&["serve", "--socket", &socket, "--mount", "/no/such/dir:/x"], &[], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).starts_with("hvsandbox: "), "{}", text(&out.stderr));
    assert!(!Path::new(&socket).exists());
    // A second server on a socket in use is refused; the first serves on.
    let server = Server::start(&tmp, &[]);
    let out = hv(&["serve", "--socket", &server.socket], &[], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("another server is listening"), "{}", text(&out.stderr));
    server.expect(&[], &[BUSYBOX, "echo", "first"], "first\n");
    // Something that is not a socket is left alone.
    let plain = tmp.path("plain");
    std::fs::write(&plain, "keep").unwrap();
    let out = hv(&["serve", "--socket", &plain], &[], b"");
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep");
}

#[test]
fn stats_come_as_a_cold_runs_do() {
    let tmp = TempDir::new("server-stats");
    let server = Server::start(&tmp, &["--log-runs"]);
    let keys = |line: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        v.as_object().unwrap().keys().cloned().collect()
    };
    let exit = |line: &str| serde_json::from_str::<serde_json::Value>(line).unwrap()["exit_code"].as_i64();
    let want = cold(&["--stats"], &[BUSYBOX, "sh", "-c", "echo hi; exit 4"], b"");
    let want_line = text(&want.stderr);
    // Cold in the server, then warm: the same line's fields each time.
    run_until_warm(&server, &[], &[BUSYBOX, "true"], BUSYBOX, "");
    for _ in 0..2 {
        let got = server.run(&["--stats"], &[BUSYBOX, "sh", "-c", "echo hi; exit 4"], b"");
        assert_eq!((got.status.code(), text(&got.stdout)), (Some(4), "hi\n".to_string()));
        let line = text(&got.stderr);
        assert_eq!(line.lines().count(), 1, "{line}");
        assert_eq!(keys(&line), keys(&want_line));
        assert_eq!(exit(&line), Some(4));
    }
    // A failed run: its stats line (with the error's kind), then its error.
    let got = server.run(&["--stats", "--timeout", "200ms"], &[BUSYBOX, "sleep", "5"], b"");
    assert_eq!(got.status.code(), Some(124));
    let stderr = text(&got.stderr);
    let mut lines = stderr.lines();
    let stats: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(stats["error"], "TIMEOUT", "{stderr}");
    assert!(lines.next().unwrap().starts_with("hvsandbox: "), "{stderr}");
}

#[test]
fn a_relative_program_path_is_the_clients() {
    let tmp = TempDir::new("server-relative");
    let server = Server::start(&tmp, &[]);
    std::fs::create_dir_all(tmp.path("bin")).unwrap();
    std::fs::copy(musl("args_env"), tmp.path("bin/prog")).unwrap();
    let args = ["run", "--server", &server.socket, "--", "./bin/prog", "x"];
    let child = hv_command(&args, &[]).current_dir(&tmp.0).spawn().unwrap();
    let out = finish(child, b"", "a relative path");
    // Found from the client's directory (the server's is another); its
    // argv[0] is the absolute path sent.
    let want = format!("argc=2\nargv[0]={}\nargv[1]=x\n", tmp.path("bin/prog"));
    let got = text(&out.stdout);
    assert_eq!((out.status.code(), got.clone()), (Some(0), want), "{}", text(&out.stderr));
}

#[test]
fn a_client_that_never_reads_its_output_holds_no_worker_past_its_timeout() {
    let tmp = TempDir::new("server-no-reader");
    let server = Server::start(&tmp, &["--jobs", "1"]);
    // stdout is a pipe nobody reads: `yes` fills it, the run times out,
    // and what is left to write is dropped a little later.
    let args = ["run", "--server", &server.socket, "--timeout", "1s", "--", BUSYBOX, "yes"];
    let mut child = hv_command(&args, &[]).stdin(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let unread = child.stdout.take().unwrap();
    let status = wait_within(&mut child, CLIENT_DEADLINE);
    drop(unread);
    assert_eq!(status.and_then(|s| s.code()), Some(124), "the server said: {}", server.log());
    // The one worker is free again.
    server.expect(&["--timeout", "10s"], &[BUSYBOX, "echo", "next"], "next\n");
}

#[test]
fn a_request_of_another_version_is_told_why() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let tmp = TempDir::new("server-version");
    let server = Server::start(&tmp, &[]);
    let conn = UnixStream::connect(&server.socket).unwrap();
    let (mut err_read, err_write) = std::io::pipe().unwrap();
    // A frame with another protocol's magic, sent with stdin, stdout and
    // stderr as a client sends them.
    let mut frame = 12u32.to_le_bytes().to_vec();
    frame.extend_from_slice(b"HVS9\0\0\0\0\0\0\0\0");
    send_with_fds(&conn, &frame, err_write.as_raw_fd());
    drop(err_write);
    conn.set_read_timeout(Some(CLIENT_DEADLINE)).unwrap();
    let mut code = Vec::new();
    (&conn).read_to_end(&mut code).unwrap();
    assert_eq!(code, [125]);
    drop(conn);
    let mut said = String::new();
    err_read.read_to_string(&mut said).unwrap();
    assert!(said.starts_with("hvsandbox: the server refused the request: not an hvsandbox request"), "{said}");
}

#[test]
fn a_reader_that_goes_away_ends_the_run_as_sigpipe_would() {
    let tmp = TempDir::new("server-sigpipe");
    let server = Server::start(&tmp, &["--jobs", "1"]);
    for _ in 0..3 {
        // `yes | head -1`, cold then warm: 128 + SIGPIPE, not the timeout.
        let args = ["run", "--server", &server.socket, "--timeout", "60s", "--", BUSYBOX, "yes"];
        let mut child = hv_command(&args, &[]).stdin(Stdio::null()).spawn().unwrap();
        let stderr = drain(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        assert_eq!(line, "y\n");
        let status = wait_within(&mut child, CLIENT_DEADLINE);
        let stderr = text(&stderr.recv_timeout(CLIENT_DEADLINE).unwrap_or_default());
        assert_eq!(status.and_then(|s| s.code()), Some(128 + 13), "{stderr}; the server said: {}", server.log());
        assert_eq!(stderr, "");
    }
    server.expect(&[], &[BUSYBOX, "echo", "next"], "next\n");
}

/// Sends `bytes` on `conn` with `fd` as the request's stdin, stdout and
/// stderr, as a client sends them.
fn send_with_fds(conn: &std::os::unix::net::UnixStream, bytes: &[u8], fd: i32) {
    use std::os::fd::AsRawFd;
    let mut bytes = bytes.to_vec();
    let fds = [fd; 3];
    let mut iov = libc::iovec { iov_base: bytes.as_mut_ptr().cast(), iov_len: bytes.len() };
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is a valid value of this plain C struct.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of_val(&fds) as u32) } as usize;
    // SAFETY: `msg` points at `iov` (over `bytes`) and `control`, which
    // has room for one header and three descriptors; the header pointer
    // comes from CMSG_FIRSTHDR over it.
    let sent = unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(&fds) as u32) as usize;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast::<i32>(), 3);
        libc::sendmsg(conn.as_raw_fd(), &msg, 0)
    };
    assert_eq!(sent, bytes.len() as isize, "{}", std::io::Error::last_os_error());
}

#[test]
fn a_request_trickled_in_is_refused_when_its_time_is_up() {
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    let tmp = TempDir::new("server-trickle");
    let server = Server::start(&tmp, &["--jobs", "1"]);
    let conn = UnixStream::connect(&server.socket).unwrap();
    let (mut err_read, err_write) = std::io::pipe().unwrap();
    // A frame announced at 100 bytes, then a byte every second: each read
    // is quick, the whole request is not.
    send_with_fds(&conn, &100u32.to_le_bytes(), err_write.as_raw_fd());
    drop(err_write);
    conn.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let end = Instant::now() + CLIENT_DEADLINE;
    let mut answer = [0u8; 1];
    let code = loop {
        assert!(Instant::now() < end, "the trickled request was still being read; the server said: {}", server.log());
        let _ = (&conn).write_all(b"x");
        match (&conn).read(&mut answer) {
            Ok(1) => break answer[0],
            Ok(_) => panic!("closed without an answer"),
            Err(_) => {}
        }
    };
    assert_eq!(code, 125);
    let mut said = String::new();
    err_read.read_to_string(&mut said).unwrap();
    assert!(said.contains("did not come in time"), "{said}");
    // The one worker is free again.
    server.expect(&[], &[BUSYBOX, "echo", "next"], "next\n");
}

#[test]
fn a_zero_timeout_is_a_timeout_as_in_a_one_shot_run() {
    let tmp = TempDir::new("server-zero-timeout");
    let server = Server::start(&tmp, &[]);
    let want = cold(&["--timeout", "0"], &[BUSYBOX, "true"], b"");
    assert_eq!(want.status.code(), Some(124), "{}", text(&want.stderr));
    for _ in 0..3 {
        let got = server.run(&["--timeout", "0"], &[BUSYBOX, "true"], b"");
        assert_eq!(got.status.code(), Some(124), "{}", text(&got.stderr));
        assert!(text(&got.stderr).starts_with("hvsandbox: "), "{}", text(&got.stderr));
    }
}

#[test]
fn stats_of_a_run_that_never_reached_a_server_say_why() {
    let tmp = TempDir::new("server-stats-unreachable");
    let nothing = tmp.path("nothing.sock");
    // The client's quick path, and the full parser's (no `--` before the
    // program: the quick path leaves that to it).
    for args in [
        vec!["run", "--server", &nothing, "--stats", "--", BUSYBOX, "true"],
        vec!["run", "--stats", "--server", &nothing, BUSYBOX, "true"],
    ] {
        let out = hv(&args, &[], b"");
        assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
        let stderr = text(&out.stderr);
        let mut lines = stderr.lines();
        let stats: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(stats["error"], "INVALID_CONFIG", "{stderr}");
        assert!(lines.next().unwrap().starts_with("hvsandbox: "), "{stderr}");
    }
}
