//! Live processes: output streamed as it is produced, stdin written while
//! the program runs, kill, backpressure, and the same from snapshots and
//! pools. No test asserts a duration: each waits for what it needs and is
//! bounded by the sandbox's own timeout.

use std::io::{Read, Write};
use std::time::Duration;

use hvsandbox::{Command, ErrorKind, Process, ProcessEvent, Sandbox, SandboxPool, SnapshotPoint};
use hvsandbox_tests::{musl, BUSYBOX};

fn sandbox(timeout_s: u64) -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(timeout_s)).build().expect("build sandbox")
}

fn sh(script: &str) -> Command {
    Command::new(BUSYBOX).args(["sh", "-c", script])
}

/// Reads stdout events until the text read (after what earlier calls
/// consumed) contains `want`; panics if the run ends first. Returns what
/// was read up to and including `want`; the rest stays in `pending`.
fn read_until(p: &mut Process, pending: &mut String, want: &str) -> String {
    while !pending.contains(want) {
        match p.next_event() {
            Some(ProcessEvent::Stdout(b)) => pending.push_str(&String::from_utf8_lossy(&b)),
            Some(ProcessEvent::Stderr(_)) => {}
            Some(ProcessEvent::Exited(r)) => panic!("ended before {want:?} (read {pending:?}): {r:?}"),
            None => panic!("no more events before {want:?}"),
        }
    }
    let end = pending.find(want).unwrap_or(0) + want.len();
    pending.drain(..end).collect()
}

#[test]
fn a_line_arrives_while_the_program_still_sleeps() {
    let mut sb = sandbox(60);
    let mut p = sb.spawn(&sh("echo first; sleep 1000; echo never")).expect("spawn");
    let mut seen = String::new();
    assert_eq!(read_until(&mut p, &mut seen, "first\n"), "first\n");
    // The program is asleep, not done: the line came before its end.
    assert!(matches!(p.try_wait(), Ok(None)), "the program should still run");
    p.kill();
    let err = p.wait().expect_err("killed");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    // A kill never reaches the next run.
    let out = sb.run(&sh("echo again")).expect("run after kill");
    assert_eq!(out.stdout, b"again\n");
}

#[test]
fn a_line_arrives_while_the_program_spins_without_system_calls() {
    let mut sb = sandbox(60);
    let mut p = sb.spawn(&Command::new(musl("print_then_loop"))).expect("spawn");
    let mut out = String::new();
    let mut err = String::new();
    while !(out.contains("partial line\n") && err.contains("err line\n")) {
        match p.next_event().expect("event") {
            ProcessEvent::Stdout(b) => out.push_str(&String::from_utf8_lossy(&b)),
            ProcessEvent::Stderr(b) => err.push_str(&String::from_utf8_lossy(&b)),
            ProcessEvent::Exited(r) => panic!("ended: {r:?}"),
        }
    }
    assert!(matches!(p.try_wait(), Ok(None)));
    p.kill();
    assert_eq!(p.wait().expect_err("killed").kind(), ErrorKind::Cancelled);
}

#[test]
fn a_conversation_over_stdin_and_stdout() {
    let mut sb = sandbox(60);
    let script = "for i in 1 2 3; do echo \"question $i?\"; read a; echo \"answer $i: $a\"; done; echo bye";
    let mut p = sb.spawn(&sh(script)).expect("spawn");
    let mut seen = String::new();
    let mut stdin = p.take_stdin().expect("stdin");
    for i in 1..=3 {
        // Each answer is written only after its question was read.
        read_until(&mut p, &mut seen, &format!("question {i}?\n"));
        stdin.write_all(format!("reply-{i}\n").as_bytes()).expect("write");
        read_until(&mut p, &mut seen, &format!("answer {i}: reply-{i}\n"));
    }
    drop(stdin);
    let out = p.wait().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    // What was not read through events is in the output.
    assert_eq!(seen + &out.stdout_str(), "bye\n");
}

#[test]
fn closing_stdin_is_the_end_of_input() {
    let mut sb = sandbox(60);
    let mut p = sb.spawn(&Command::new(BUSYBOX).args(["wc", "-c"])).expect("spawn");
    let mut stdin = p.take_stdin().expect("stdin");
    stdin.write_all(&[b'x'; 100_000]).expect("write");
    drop(stdin);
    let out = p.wait().expect("wait");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
}

#[test]
fn wait_closes_stdin_that_was_not_taken_and_collects_the_output() {
    let mut sb = sandbox(60);
    let mut p = sb.spawn(&Command::new(BUSYBOX).args(["cat"])).expect("spawn");
    let out = p.wait().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    // Given stdin is exactly what the program reads.
    let mut p = sb.spawn(&Command::new(BUSYBOX).arg("cat").stdin("given\n")).expect("spawn");
    assert!(p.take_stdin().is_some());
    let out = p.wait().expect("wait");
    assert_eq!(out.stdout, b"given\n");
    // wait can be asked again: the same status, the bytes handed out once.
    let again = p.wait().expect("again");
    assert_eq!(again.status, out.status);
    assert!(again.stdout.is_empty());
}

#[test]
fn a_reader_of_a_slow_consumer_keeps_host_memory_bounded() {
    let mut sb = sandbox(120);
    let mib = 64;
    let cmd = Command::new(musl("flood")).args([mib.to_string(), "0".into()]).unlimited_streaming(true);
    let mut p = sb.spawn(&cmd).expect("spawn");
    let mut reader = p.stdout();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    let mut peak = 0usize;
    while total < mib << 20 {
        // A slow consumer: the guest waits for it instead of the host
        // holding what it cannot take.
        if total % (8 << 20) < buf.len() {
            std::thread::sleep(Duration::from_millis(50));
        }
        peak = peak.max(p.queued_output_bytes());
        let n = reader.read(&mut buf).expect("read");
        assert!(n > 0, "stream ended after {total} bytes");
        assert!(buf[..n].iter().all(|&c| c == b'x'));
        total += n;
    }
    assert_eq!(reader.read(&mut buf).expect("read"), 0, "nothing after the flood");
    let out = p.wait().expect("wait");
    assert_eq!(out.status.code(), Some(0));
    assert!(!out.stdout_truncated);
    assert_eq!(total, mib << 20);
    // At most the queue's bound plus one guest buffer's worth.
    assert!(peak <= (1 << 20) + (64 << 10), "queued {peak} bytes");
}

#[test]
fn streamed_output_is_capped_at_max_output_unless_the_caller_says_so() {
    let mut sb =
        Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(60)).max_output(1 << 20).build().expect("sb");
    let mut p = sb.spawn(&Command::new(musl("flood")).args(["3", "0"])).expect("spawn");
    let mut streamed = Vec::new();
    p.stdout().read_to_end(&mut streamed).expect("read");
    let out = p.wait().expect("wait");
    assert_eq!(streamed.len(), 1 << 20);
    assert!(out.stdout_truncated);
    assert_eq!(out.status.code(), Some(0));

    let cmd = Command::new(musl("flood")).args(["3", "0"]).unlimited_streaming(true);
    let mut p = sb.spawn(&cmd).expect("spawn");
    let mut streamed = Vec::new();
    p.stdout().read_to_end(&mut streamed).expect("read");
    let out = p.wait().expect("wait");
    assert_eq!(streamed.len(), 3 << 20);
    assert!(!out.stdout_truncated);
}

#[test]
fn kill_while_streaming_returns_the_partial_output() {
    let mut sb = sandbox(60);
    let mut p = sb.spawn(&Command::new(BUSYBOX).arg("yes")).expect("spawn");
    let mut seen = String::new();
    read_until(&mut p, &mut seen, "y\ny\n");
    p.kill();
    let mut saw_exit = false;
    while let Some(ev) = p.next_event() {
        if let ProcessEvent::Exited(r) = ev {
            assert_eq!(r.expect_err("killed").kind(), ErrorKind::Cancelled);
            saw_exit = true;
        }
    }
    assert!(saw_exit);
    assert!(p.has_ended());
    assert_eq!(sb.run(&sh("echo ok")).expect("run").stdout, b"ok\n");
}

#[test]
fn the_sandbox_is_busy_while_a_process_runs_and_free_after() {
    let mut sb = sandbox(60);
    let mut p = sb.spawn(&sh("read x; echo $x")).expect("spawn");
    assert!(sb.is_busy());
    let err = sb.run(&sh("echo no")).expect_err("busy");
    assert_eq!(err.kind(), ErrorKind::SandboxBusy, "{err}");
    assert_eq!(sb.spawn(&sh("echo no")).expect_err("busy").kind(), ErrorKind::SandboxBusy);
    p.take_stdin().expect("stdin").write_all(b"done\n").expect("write");
    assert_eq!(p.wait().expect("wait").stdout, b"done\n");
    assert_eq!(sb.run(&sh("echo yes")).expect("run").stdout, b"yes\n");
    // A process dropped while it runs is killed; the sandbox goes on.
    let p = sb.spawn(&sh("sleep 1000")).expect("spawn");
    drop(p);
    assert_eq!(sb.run(&sh("echo after")).expect("run").stdout, b"after\n");
}

#[test]
fn the_timeout_covers_a_run_waiting_for_input() {
    let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(2)).build().expect("sb");
    let mut p = sb.spawn(&sh("echo waiting; read x; echo never")).expect("spawn");
    let _stdin = p.take_stdin();
    let err = p.wait().expect_err("timeout");
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert_eq!(err.partial_output().expect("partial").stdout, b"waiting\n");
}

#[test]
fn poll_on_stdin_wakes_when_input_comes_and_other_processes_run_meanwhile() {
    let mut sb = sandbox(60);
    // A background job keeps writing while the foreground shell waits for
    // input; `timeout`-less read through poll: busybox's read -t polls.
    let script = "(for i in 1 2 3; do echo tick$i; sleep 0.05; done) & read -t 100 x; echo got:$x; wait";
    let mut p = sb.spawn(&sh(script)).expect("spawn");
    let mut seen = String::new();
    let mut stdin = p.take_stdin().expect("stdin");
    read_until(&mut p, &mut seen, "tick3\n");
    stdin.write_all(b"hello\n").expect("write");
    read_until(&mut p, &mut seen, "got:hello\n");
    drop(stdin);
    assert_eq!(p.wait().expect("wait").status.code(), Some(0));
}

#[test]
fn streaming_from_a_snapshot_and_from_a_pooled_clone() {
    let mut sb = sandbox(60);
    let snap = sb.snapshot(&Command::new(BUSYBOX).arg("sh"), SnapshotPoint::Entry).expect("snapshot");
    let builder = Sandbox::builder().timeout(Duration::from_secs(60));
    let mut clone = builder.clone().build_from(&snap).expect("clone");
    for _ in 0..2 {
        let mut p =
            clone.spawn(&Command::resume().args(["sh", "-c", "echo ready; read x; echo got:$x"])).expect("spawn");
        let mut seen = String::new();
        read_until(&mut p, &mut seen, "ready\n");
        p.take_stdin().expect("stdin").write_all(b"one\n").expect("write");
        read_until(&mut p, &mut seen, "got:one\n");
        assert_eq!(p.wait().expect("wait").status.code(), Some(0));
    }
    let pool = SandboxPool::new(builder, &snap, 2).expect("pool");
    let mut pooled = pool.get().expect("get");
    let mut p = pooled.spawn(&Command::resume().args(["sh", "-c", "echo ready; read x; echo got:$x"])).expect("spawn");
    let mut seen = String::new();
    read_until(&mut p, &mut seen, "ready\n");
    p.take_stdin().expect("stdin").write_all(b"two\n").expect("write");
    read_until(&mut p, &mut seen, "got:two\n");
    assert_eq!(p.wait().expect("wait").status.code(), Some(0));
    // Returned to the pool with a process still running: it is killed and
    // the next borrower gets a free sandbox.
    let _running = pooled.spawn(&Command::resume().args(["sh", "-c", "sleep 1000"])).expect("spawn");
    drop(pooled);
    let mut next = pool.get().expect("get");
    assert_eq!(next.run(&Command::resume().args(["sh", "-c", "echo free"])).expect("run").stdout, b"free\n");
}

#[test]
fn a_writer_to_stdin_waits_while_the_program_does_not_read() {
    // max_input 64 KiB: at most half of it is written ahead of the program.
    let mut sb =
        Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(60)).max_input(64 << 10).build().expect("sb");
    let mut p = sb.spawn(&sh("echo started; sleep 1000")).expect("spawn");
    let mut stdin = p.take_stdin().expect("stdin");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let writer = std::thread::spawn(move || {
        let chunk = [b'z'; 1024];
        loop {
            match stdin.write(&chunk) {
                Ok(n) => counter.fetch_add(n, std::sync::atomic::Ordering::SeqCst),
                Err(e) => return e.kind(),
            };
        }
    });
    let mut seen = String::new();
    read_until(&mut p, &mut seen, "started\n");
    std::thread::sleep(Duration::from_millis(200));
    let taken = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(taken <= 32 << 10, "{taken} bytes accepted ahead of a program that reads nothing");
    p.kill();
    assert_eq!(p.wait().expect_err("killed").kind(), ErrorKind::Cancelled);
    // The writer learns the program is gone.
    assert_eq!(writer.join().expect("writer"), std::io::ErrorKind::BrokenPipe);
}

#[test]
fn start_runs_as_run_and_its_kill_handle_stops_that_run_only() {
    let mut sb = sandbox(60);
    // Output collected as `run` collects it, stdin the command's.
    let mut p = sb.start(&sh("cat; echo done").stdin("in\n")).expect("start");
    let out = p.wait().expect("wait");
    assert_eq!(out.stdout, b"in\ndone\n");
    // A kill from another thread while this thread waits: Cancelled with
    // the partial output.
    let mut p = sb.start(&sh("echo before; sleep 1000")).expect("start");
    let kill = p.kill_handle();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        kill.kill();
        kill
    });
    let err = p.wait().expect_err("killed");
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    // (what it printed before the kill, if it got that far)
    assert!(b"before\n".starts_with(&err.partial_output().expect("partial").stdout), "{err:?}");
    let stale = killer.join().expect("killer thread");
    drop(p);
    // The handle of an ended run never reaches the next one.
    let mut next = sb.start(&sh("sleep 0.2; echo later")).expect("start again");
    stale.kill();
    assert_eq!(next.wait().expect("not killed").stdout, b"later\n");
}

#[test]
fn stats_count_output_bytes_collected_or_streamed_and_a_huge_timeout_is_no_deadline() {
    let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::MAX).build().expect("sb");
    let out = sb.run(&sh("echo hi; echo err >&2")).expect("run");
    assert_eq!((out.stats.stdout_bytes, out.stats.stderr_bytes), (3, 4));
    let mut p = sb.spawn(&sh("echo hi; echo err >&2")).expect("spawn");
    let mut streamed = 0;
    while let Some(ev) = p.next_event() {
        match ev {
            ProcessEvent::Stdout(b) | ProcessEvent::Stderr(b) => streamed += b.len(),
            ProcessEvent::Exited(r) => {
                let out = r.expect("exited");
                assert_eq!((out.stats.stdout_bytes, out.stats.stderr_bytes), (3, 4));
            }
        }
    }
    assert_eq!(streamed, 7);
}

/// Reads the end-of-run eventfd's counter (0 when it is not readable).
fn drain_end_fd() -> u64 {
    use std::os::fd::AsRawFd;
    let fd = hvsandbox::end_event_fd().unwrap().as_raw_fd();
    let mut n = 0u64;
    // SAFETY: reads 8 bytes into a live u64 from a non-blocking eventfd.
    let r = unsafe { libc::read(fd, (&mut n as *mut u64).cast(), 8) };
    if r == 8 {
        n
    } else {
        0
    }
}

#[test]
fn a_process_that_asks_makes_the_end_eventfd_readable_when_it_ends() {
    use std::os::fd::AsRawFd;
    let fd = hvsandbox::end_event_fd().unwrap().as_raw_fd();
    let mut sb = Sandbox::builder().timeout(Duration::from_secs(60)).build().unwrap();
    // Other tests in this binary may signal it too: only "readable after
    // our end" is asserted, and that our process has ended then.
    let mut p = sb
        .start(&Command::new(BUSYBOX).args(["sh", "-c", "read x; echo got $x"]).stdin("hi\n").notify_on_end(true))
        .unwrap();
    let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    while !p.has_ended() {
        drain_end_fd();
        if p.has_ended() {
            break;
        }
        // SAFETY: one valid pollfd; the run's own timeout bounds the wait.
        let n = unsafe { libc::poll(&mut poll, 1, 60_000) };
        assert!(n >= 0);
    }
    let out = p.wait().unwrap();
    assert_eq!(out.stdout, b"got hi\n");
    // Its end was signalled: the fd is readable (or was drained by the loop above after it ended).
    let mut p = sb.start(&Command::new(BUSYBOX).arg("true").notify_on_end(true)).unwrap();
    let out = p.wait().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // SAFETY: one valid pollfd; 0 ms timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    assert_eq!(ready, 1, "the end of a notifying process leaves the eventfd readable");
    assert!(drain_end_fd() >= 1);
}

#[test]
fn input_written_at_any_moment_wakes_a_reader_that_sleeps_for_it() {
    // Many turns of "ask, wait for the answer" in several sandboxes at once,
    // each answer written at a slightly different moment: some land while
    // the guest is between being told "nothing yet" and going to sleep, a
    // window in which a tick could clear the host's note that it waits (a
    // lost wake-up left such a reader sleeping until its deadline).
    const TURNS: usize = 60;
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut sb = sandbox(120);
                let script = format!(
                    "i=0; while [ $i -lt {TURNS} ]; do echo \"q$i\"; read a; echo \"a$i:$a\"; i=$((i+1)); done; echo done"
                );
                let mut p = sb.spawn(&sh(&script)).expect("spawn");
                let mut stdin = p.take_stdin().expect("stdin");
                let mut seen = String::new();
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                for i in 0..TURNS {
                    read_until(&mut p, &mut seen, &format!("q{i}\n"));
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    std::thread::sleep(Duration::from_micros((seed >> 33) % 3000));
                    stdin.write_all(format!("{t}-{i}\n").as_bytes()).expect("write");
                    read_until(&mut p, &mut seen, &format!("a{i}:{t}-{i}\n"));
                }
                drop(stdin);
                let out = p.wait().expect("no reader was left waiting until the deadline");
                assert_eq!(seen + &out.stdout_str(), "done\n");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a sandbox's conversation");
    }
}
