//! The fixed costs of one `hvsandbox run` process, and that cutting them
//! changed nothing a user sees: stdin from /dev/null is no input (no
//! thread passes it through) and still the end of input for the program;
//! piped stdin still reaches it; the CLI starts no background thread for
//! VMs; its vCPU thread is jailed as every vCPU thread is. And, for the
//! library, a process without the background VM thread
//! (`set_background_vm_thread(false)`) runs sandboxes as any other.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hvsandbox_tests::{hvsandbox_bin, BUSYBOX};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `hvsandbox run -- busybox ARGS` with the given stdin; (status, stdout, stderr).
fn run_busybox(args: &[&str], stdin: Stdio, input: Option<&[u8]>) -> (Option<i32>, String, String) {
    let mut child = Command::new(hvsandbox_bin())
        .args(["run", "--timeout", "20s", "--", BUSYBOX])
        .args(args)
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        let _ = child.stdin.take().unwrap().write_all(input);
    }
    let out = child.wait_with_output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn stdin_from_dev_null_is_the_end_of_input() {
    assert_eq!(run_busybox(&["wc", "-c"], Stdio::null(), None), (Some(0), "0\n".into(), String::new()));
    assert_eq!(run_busybox(&["cat"], Stdio::null(), None), (Some(0), String::new(), String::new()));
    // A shell's `read` sees the end (status 1), then the script goes on.
    let script = "read x; echo read=$? x=[$x]; read y; echo again=$?";
    let (code, out, err) = run_busybox(&["sh", "-c", script], Stdio::null(), None);
    assert_eq!((code, out.as_str()), (Some(0), "read=1 x=[]\nagain=1\n"), "{err}");
}

#[test]
fn piped_stdin_still_reaches_the_program() {
    let (code, out, err) = run_busybox(&["wc", "-l"], Stdio::piped(), Some(b"a\nb\nc\n"));
    assert_eq!((code, out.as_str()), (Some(0), "3\n"), "{err}");
    // A pipe closed at once: the end of input, as /dev/null.
    let (code, out, err) = run_busybox(&["wc", "-c"], Stdio::piped(), Some(b""));
    assert_eq!((code, out.as_str()), (Some(0), "0\n"), "{err}");
    // A file on stdin is passed through as read, whatever its size.
    let dir = hvsandbox_tests::TempDir::new("cli-cold-stdin");
    let path = dir.0.join("input");
    std::fs::write(&path, "x".repeat(100_000)).unwrap();
    let (code, out, err) = run_busybox(&["wc", "-c"], Stdio::from(std::fs::File::open(&path).unwrap()), None);
    assert_eq!((code, out.as_str()), (Some(0), "100000\n"), "{err}");
}

/// The names of the threads of process `pid`.
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_string())
        .collect();
    names.sort();
    names
}

/// A field of /proc/<pid>/task/<tid>/status.
fn status_field(pid: u32, tid: &str, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_default().trim().to_string()
}

/// The thread id of `pid`'s thread named `name`.
fn thread_id(pid: u32, name: &str) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().find_map(|t| {
        let t = t.ok()?;
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        (comm.trim() == name).then(|| t.file_name().to_string_lossy().into_owned())
    })
}

/// Starts `hvsandbox run` of a guest that says `ready` and then waits
/// (bounded by the run's own timeout); returns it once `ready` came.
fn start_waiting_guest(stdin: Stdio) -> Child {
    let mut child = Command::new(hvsandbox_bin())
        .args(["run", "--timeout", "20s", "--", BUSYBOX, "sh", "-c", "echo ready; sleep 15"])
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    child
}

/// Ends a `start_waiting_guest` run with SIGTERM (a cancelled run: 130).
fn cancel(mut child: Child) {
    // SAFETY: kill(2) on the PID of a child this test started and has not reaped.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    assert_eq!(status.code(), Some(130), "{err}");
}

#[test]
fn the_cli_starts_no_background_vm_thread_and_no_stdin_thread_for_dev_null() {
    let child = start_waiting_guest(Stdio::null());
    let names = thread_names(child.id());
    assert!(names.iter().any(|n| n == "hvsandbox-vcpu"), "{names:?}");
    assert!(!names.iter().any(|n| n == "hvsandbox-vms" || n == "hvsandbox-stdin"), "{names:?}");
    // Its vCPU thread is in the jail: no capabilities (the bounding set
    // too, where the CLI may drop it), no_new_privs, a seccomp filter.
    let pid = child.id();
    let vcpu = thread_id(pid, "hvsandbox-vcpu").unwrap();
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status_field(pid, &vcpu, set), "0000000000000000", "{set}");
    }
    if status_field(pid, &pid.to_string(), "CapEff") != "0000000000000000" {
        assert_eq!(status_field(pid, &vcpu, "CapBnd"), "0000000000000000");
    }
    assert_eq!(status_field(pid, &vcpu, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, &vcpu, "Seccomp"), "2");
    // The main thread keeps what it had.
    assert_eq!(status_field(pid, &pid.to_string(), "Seccomp"), "0");
    cancel(child);

    // With a stdin that may still bring input, a thread passes it through.
    let mut child = start_waiting_guest(Stdio::piped());
    let names = thread_names(child.id());
    assert!(names.iter().any(|n| n == "hvsandbox-stdin"), "{names:?}");
    assert!(!names.iter().any(|n| n == "hvsandbox-vms"), "{names:?}");
    drop(child.stdin.take());
    cancel(child);
}

#[test]
fn without_the_background_vm_thread_sandboxes_run_as_any_other() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_background_vm_thread_child", "--ignored", "--nocapture", "--test-threads=1"])
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("1 passed"), "{stdout}");
}

/// Run by `without_the_background_vm_thread_sandboxes_run_as_any_other`
/// in a child process: the setting is the process's.
#[test]
#[ignore = "run in a child process"]
fn no_background_vm_thread_child() {
    use hvsandbox::{Command, Sandbox};
    hvsandbox::set_background_vm_thread(false);
    // SAFETY: getpid has no arguments.
    let pid = unsafe { libc::getpid() } as u32;
    for boot_ahead in [false, true] {
        let mut sb = Sandbox::builder().timeout(Duration::from_secs(10)).boot_ahead(boot_ahead).build().unwrap();
        for i in 0..3 {
            let out = sb.run(&Command::new(BUSYBOX).args(["echo", &format!("run {i}")])).unwrap();
            assert_eq!(out.stdout, format!("run {i}\n").as_bytes());
        }
        let vcpu = sb.vcpu_thread_id().to_string();
        assert_eq!(status_field(pid, &vcpu, "Seccomp"), "2");
        // A snapshot and runs from it (the VM a snapshot run leaves is
        // destroyed on the thread that lets it go).
        let snap = sb.snapshot(&Command::new(BUSYBOX).args(["echo", "snap"]), hvsandbox::SnapshotPoint::Entry).unwrap();
        let mut from = Sandbox::from_snapshot(&snap).unwrap();
        for _ in 0..2 {
            assert_eq!(from.run(&Command::resume().args(snap.args())).unwrap().stdout, b"snap\n");
        }
    }
    hvsandbox::wait_for_reaper();
    let names = thread_names(pid);
    assert!(!names.iter().any(|n| n == "hvsandbox-vms"), "{names:?}");
}
