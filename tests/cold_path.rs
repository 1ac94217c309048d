//! The cold path of a program given by host path: the file is read
//! straight into guest RAM at boot the first time (no copy in the host
//! process), from the process's image cache when it runs again, and what
//! runs is always the file as it is at that run; only its headers are
//! checked on the host; a path that is not a regular file is refused
//! without opening it for long. And `boot_ahead`: the first run's VM made
//! as soon as the sandbox is built.

use std::time::Duration;

use hvsandbox::{Command, ErrorKind, Sandbox};
use hvsandbox_tests::{musl, TempDir, BUSYBOX};

fn sandbox(boot_ahead: bool) -> Sandbox {
    Sandbox::builder()
        .memory_mib(64)
        .timeout(Duration::from_secs(10))
        .boot_ahead(boot_ahead)
        .build()
        .expect("build sandbox")
}

#[test]
fn each_run_reads_the_program_file_as_it_is_then() {
    let dir = TempDir::new("cold-reread");
    let prog = dir.0.join("prog");
    std::fs::copy(musl("hello"), &prog).unwrap();
    let mut sb = sandbox(false);
    // Read into guest RAM, then into the image cache, then from it.
    for _ in 0..3 {
        assert_eq!(sb.run(&Command::new(&prog)).unwrap().stdout, b"hello, world\n");
    }
    // Rewritten in place (same inode, another size): the next run runs
    // the new contents.
    std::fs::write(&prog, std::fs::read(musl("exit_code")).unwrap()).unwrap();
    let out = sb.run(&Command::new(&prog).args(["7"])).unwrap();
    assert_eq!((out.status.code(), &out.stdout[..]), (Some(7), &b""[..]));
    // And a bigger one (busybox dispatches on argv[0]'s name).
    let bb = dir.0.join("busybox");
    std::fs::write(&bb, std::fs::read(BUSYBOX).unwrap()).unwrap();
    let out = sb.run(&Command::new(&bb).args(["echo", "replaced"])).unwrap();
    assert_eq!(out.stdout, b"replaced\n");
    // Cut to a header: refused on the host, typed.
    std::fs::write(&prog, &std::fs::read(BUSYBOX).unwrap()[..40]).unwrap();
    let err = sb.run(&Command::new(&prog)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");
    // Emptied.
    std::fs::write(&prog, b"").unwrap();
    let err = sb.run(&Command::new(&prog)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");
    // None of it poisoned the sandbox.
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn a_fifo_or_a_directory_is_not_a_program() {
    let dir = TempDir::new("cold-fifo");
    let fifo = dir.0.join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let mut sb = sandbox(false);
    // No writer ever comes: refused at once, not waiting in open(2) (the
    // sandbox's own timeout bounds the test if it did wait).
    let err = sb.run(&Command::new(&fifo)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");
    assert!(err.to_string().contains("regular file"), "{err}");
    let err = sb.run(&Command::new(&dir.0)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn a_sandbox_that_boots_ahead_runs_as_any_other() {
    let mut sb = sandbox(true);
    let out = sb.run(&Command::new(BUSYBOX).args(["echo", "first"])).unwrap();
    assert_eq!(out.stdout, b"first\n");
    assert!(out.status.success());
    // Later runs of the same sandbox, and a spawned process.
    let out = sb.run(&Command::new(musl("hello"))).unwrap();
    assert_eq!(out.stdout, b"hello, world\n");
    let mut p = sb.spawn(&Command::new(BUSYBOX).args(["echo", "spawned"])).unwrap();
    let out = p.wait().unwrap();
    assert_eq!(out.stdout, b"spawned\n");
    // A failing first run of a fresh one leaves it usable.
    let mut sb = sandbox(true);
    let err = sb.run(&Command::new("/nonexistent/prog")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn a_sandbox_that_boots_ahead_may_be_dropped_unused() {
    for _ in 0..3 {
        drop(sandbox(true));
    }
    // Its VM went with it; a new sandbox runs.
    hvsandbox::wait_for_reaper();
    let mut sb = sandbox(true);
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}
