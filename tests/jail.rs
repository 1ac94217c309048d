//! The jail around the vCPU thread: capabilities dropped, no_new_privs,
//! the seccomp allow-list enforced, and a refused call reported as a
//! typed error that poisons only its own sandbox.

use hvsandbox::{Command, ErrorKind, Sandbox, SeccompMode};
use hvsandbox_tests::musl;

/// A field of /proc/self/task/<tid>/status.
fn status_field(tid: i64, field: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).expect("vCPU thread status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("no {field} in {status}"))
        .trim()
        .to_string()
}

#[test]
fn vcpu_thread_has_no_capabilities_and_a_filter() {
    let mut sb = Sandbox::builder().build().unwrap();
    // A run first, so the thread is past its setup.
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
    let tid = sb.vcpu_thread_id();
    assert!(tid > 0);
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(status_field(tid, set), "0000000000000000", "{set} of the vCPU thread");
    }
    assert_eq!(status_field(tid, "NoNewPrivs"), "1");
    assert_eq!(status_field(tid, "Seccomp"), "2", "filter mode");
    // The caller's own thread is untouched.
    // SAFETY: gettid has no arguments.
    let me = unsafe { libc::gettid() } as i64;
    assert_eq!(status_field(me, "Seccomp"), "0");
}

#[test]
fn refused_call_is_a_typed_violation_that_poisons_only_its_sandbox() {
    let mut sb = Sandbox::builder().build().unwrap();
    // getpid is not on the list: the VMM has no business asking.
    let err = sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JailViolation, "{err}");
    assert!(err.to_string().contains("getpid (39)"), "{err}");
    assert_eq!(err.kind().code(), "JAIL_VIOLATION");
    // The sandbox is unusable from now on.
    let again = sb.run(&Command::new(musl("hello"))).unwrap_err();
    assert_eq!(again.kind(), ErrorKind::SandboxPoisoned, "{again}");
    drop(sb);
    // Other sandboxes in the process are fine.
    let mut other = Sandbox::builder().build().unwrap();
    assert_eq!(other.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn calls_the_c_library_makes_on_its_own_fail_quietly() {
    // glibc's malloc reads /sys to count CPUs once per process, in whichever
    // thread gets there first: refused without poisoning the sandbox.
    let mut sb = Sandbox::builder().build().unwrap();
    for nr in [libc::SYS_read, libc::SYS_sched_getaffinity] {
        assert_eq!(sb.debug_syscall_on_vcpu_thread(nr).unwrap(), -1, "{nr}");
    }
    assert!(!sb.is_poisoned());
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn allowed_calls_pass_and_the_modes_do_what_they_say() {
    // An allowed call goes through under the filter (getrandom of 0 bytes).
    let mut sb = Sandbox::builder().build().unwrap();
    assert_eq!(sb.debug_syscall_on_vcpu_thread(libc::SYS_getrandom).unwrap(), 0);
    // getuid is not on the list.
    let err = sb.debug_syscall_on_vcpu_thread(libc::SYS_getuid).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JailViolation);
    assert!(err.to_string().contains("getuid"), "{err}");

    // Log mode: the call is allowed (and logged by the kernel).
    let mut sb = Sandbox::builder().seccomp(SeccompMode::Log).build().unwrap();
    // SAFETY: getpid has no arguments.
    let pid = unsafe { libc::getpid() } as i64;
    assert_eq!(sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid).unwrap(), pid);
    assert_eq!(status_field(sb.vcpu_thread_id(), "Seccomp"), "2");
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");

    // Disabled: no filter, capabilities still dropped.
    let mut sb = Sandbox::builder().seccomp(SeccompMode::Disabled).build().unwrap();
    assert_eq!(sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid).unwrap(), pid);
    assert_eq!(status_field(sb.vcpu_thread_id(), "Seccomp"), "0");
    assert_eq!(status_field(sb.vcpu_thread_id(), "CapEff"), "0000000000000000");
}

#[test]
fn the_allow_list_is_short() {
    let list = hvsandbox::jail::allowlist();
    assert!(list.len() <= 25, "{} calls: {list:?}", list.len());
    for must_not in ["execve", "fork", "clone", "socket", "connect", "ptrace", "getpid", "kill", "open"] {
        assert!(!list.contains(&must_not), "{must_not} must not be allowed");
    }
}

#[test]
fn vcpu_threads_serve_later_sandboxes_but_never_after_a_refused_call() {
    // Tests in this binary run in parallel and share the idle threads: look
    // at this test's own threads only.
    let hello = musl("hello");
    let mut first = Sandbox::builder().build().unwrap();
    assert_eq!(first.run(&Command::new(&hello)).unwrap().stdout, b"hello, world\n");
    let tid = first.vcpu_thread_id();
    drop(first);
    // The thread waits for the next sandbox, still jailed.
    assert_eq!(status_field(tid, "Seccomp"), "2");
    assert_eq!(status_field(tid, "CapEff"), "0000000000000000");
    // Sandboxes built one after the other mostly get a thread already
    // running (other tests may take some).
    let mut tids: Vec<i64> = (0..6)
        .map(|_| {
            let mut sb = Sandbox::builder().build().unwrap();
            assert_eq!(sb.run(&Command::new(&hello)).unwrap().stdout, b"hello, world\n");
            sb.vcpu_thread_id()
        })
        .collect();
    tids.sort();
    tids.dedup();
    assert!(tids.len() < 6, "no vCPU thread was used twice: {tids:?}");
    let mut seen = Vec::new();
    for _ in 0..8 {
        let mut sb = Sandbox::builder().build().unwrap();
        assert_eq!(sb.run(&Command::new(&hello)).unwrap().stdout, b"hello, world\n");
        seen.push(sb.vcpu_thread_id());
        // A refused call in a reused thread is this sandbox's.
        let err = sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::JailViolation, "{err}");
        let bad = sb.vcpu_thread_id();
        drop(sb);
        // ... and that thread is never used again: it has ended.
        let gone = (0..200).any(|_| {
            if !std::path::Path::new(&format!("/proc/self/task/{bad}")).exists() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
            false
        });
        assert!(gone, "thread {bad} still alive after its sandbox's refused call");
    }
    // A later sandbox is fine.
    let mut sb = Sandbox::builder().build().unwrap();
    assert_eq!(sb.run(&Command::new(&hello)).unwrap().stdout, b"hello, world\n");
    assert!(!seen.is_empty());
}
