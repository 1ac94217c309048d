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
    assert!(list.len() <= 27, "{} calls: {list:?}", list.len());
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

/// A host directory for one test (`base/inside/inside.txt`, mounted, and
/// `base/outside.txt`, not), removed on drop.
struct Tree(std::path::PathBuf);

impl Tree {
    fn new(name: &str) -> Tree {
        let base = std::env::temp_dir().join(format!("hvsandbox-jail-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("inside")).unwrap();
        std::fs::write(base.join("inside/inside.txt"), format!("inside {name}\n")).unwrap();
        std::fs::write(base.join("outside.txt"), "outside\n").unwrap();
        Tree(base)
    }
    fn inside(&self) -> std::path::PathBuf {
        self.0.join("inside")
    }
    fn outside_file(&self) -> std::path::PathBuf {
        self.0.join("outside.txt")
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `openat(AT_FDCWD, path, flags)` on the vCPU thread; the new fd is closed
/// again. Ok(fd) or Ok(-errno), or the jail's error.
fn open_on_vcpu_thread(sb: &mut Sandbox, path: &std::path::Path, flags: i32) -> hvsandbox::Result<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let args = [libc::AT_FDCWD as u64, c.as_ptr() as u64, (flags | libc::O_CLOEXEC) as u64, 0, 0, 0];
    let fd = sb.debug_syscall_with_args_on_vcpu_thread(libc::SYS_openat, args)?;
    if fd >= 0 {
        assert_eq!(sb.debug_syscall_with_args_on_vcpu_thread(libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0])?, 0);
    }
    Ok(fd)
}

/// `cat PATH` in the guest.
fn cat(sb: &mut Sandbox, path: &str) -> Vec<u8> {
    let out = sb.run(&Command::new(hvsandbox_tests::BUSYBOX).args(["cat", path])).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[test]
fn fcntl_allows_only_the_commands_the_vcpu_thread_uses() {
    const F_SETSIG: i32 = 10; // not in the libc crate
    let fcntl = |sb: &mut Sandbox, fd: u64, cmd: i32, arg: u64| {
        sb.debug_syscall_with_args_on_vcpu_thread(libc::SYS_fcntl, [fd, cmd as u64, arg, 0, 0, 0])
    };
    // What glibc's fdopendir and Rust's try_clone use pass.
    let mut sb = Sandbox::builder().build().unwrap();
    assert!(fcntl(&mut sb, 2, libc::F_GETFL, 0).unwrap() >= 0);
    let dup = fcntl(&mut sb, 2, libc::F_DUPFD_CLOEXEC, 3).unwrap();
    assert!(dup >= 3, "{dup}");
    assert_eq!(fcntl(&mut sb, dup as u64, libc::F_SETFD, libc::FD_CLOEXEC as u64).unwrap(), 0);
    assert_eq!(sb.debug_syscall_with_args_on_vcpu_thread(libc::SYS_close, [dup as u64, 0, 0, 0, 0, 0]).unwrap(), 0);
    assert!(!sb.is_poisoned());
    // Signal ownership, leases, and clearing close-on-exec are refused.
    for (cmd, arg) in [(libc::F_SETOWN, 1), (F_SETSIG, libc::SIGKILL as u64), (libc::F_SETLEASE, 0), (libc::F_SETFD, 0)]
    {
        let mut sb = Sandbox::builder().build().unwrap();
        let err = fcntl(&mut sb, 2, cmd, arg).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::JailViolation, "command {cmd}: {err}");
        assert!(err.to_string().contains("fcntl (72)"), "{err}");
    }
    // Mounts, whose directory listings use fcntl, still work.
    let tree = Tree::new("fcntl");
    let mut sb = Sandbox::builder().mount(tree.inside(), "/data").build().unwrap();
    let out = sb.run(&Command::new(hvsandbox_tests::BUSYBOX).args(["ls", "/data"])).unwrap();
    assert_eq!(out.stdout, b"inside.txt\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cat(&mut sb, "/data/inside.txt"), b"inside fcntl\n");
}

#[test]
fn vcpu_thread_opens_files_below_its_mount_roots_only() {
    let tree = Tree::new("open");
    let mut sb = Sandbox::builder().mount(tree.inside(), "/data").build().unwrap();
    assert_eq!(cat(&mut sb, "/data/inside.txt"), b"inside open\n");
    // Below the mount root: allowed.
    assert!(open_on_vcpu_thread(&mut sb, &tree.inside().join("inside.txt"), libc::O_RDONLY).unwrap() >= 0);
    assert!(open_on_vcpu_thread(&mut sb, &tree.inside(), libc::O_RDONLY | libc::O_DIRECTORY).unwrap() >= 0);
    let outside = [tree.outside_file(), "/etc/passwd".into(), "/proc/self/pagemap".into(), "/".into()];
    match hvsandbox::jail::landlock_abi() {
        Some(_) => {
            // Anywhere else: refused by Landlock, without poisoning.
            for path in &outside {
                assert_eq!(
                    open_on_vcpu_thread(&mut sb, path, libc::O_RDONLY).unwrap(),
                    -(libc::EACCES as i64),
                    "{path:?}"
                );
            }
            assert!(!sb.is_poisoned());
            assert_eq!(cat(&mut sb, "/data/inside.txt"), b"inside open\n");
        }
        None => {
            eprintln!("this kernel has no Landlock: checking the fallback (read-only opens anywhere)");
            assert!(open_on_vcpu_thread(&mut sb, &outside[0], libc::O_RDONLY).unwrap() >= 0);
        }
    }
    // Writing is refused by the filter either way.
    let err = open_on_vcpu_thread(&mut sb, &tree.inside().join("inside.txt"), libc::O_WRONLY).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JailViolation, "{err}");
    assert!(err.to_string().contains("openat"), "{err}");
}

#[test]
fn a_vcpu_thread_serves_only_sandboxes_with_its_mount_roots() {
    let (a, b) = (Tree::new("roots-a"), Tree::new("roots-b"));
    let landlock = hvsandbox::jail::landlock_abi().is_some();
    let a_file = a.inside().join("inside.txt");
    // Sandboxes with A's root, one after the other, mostly get a thread
    // already running (other tests may push it out of the idle list).
    let mut tids = Vec::new();
    for _ in 0..6 {
        let mut sb = Sandbox::builder().mount(a.inside(), "/a").build().unwrap();
        assert_eq!(cat(&mut sb, "/a/inside.txt"), b"inside roots-a\n");
        tids.push(sb.vcpu_thread_id());
    }
    tids.sort();
    tids.dedup();
    assert!(tids.len() < 6, "no vCPU thread was used twice: {tids:?}");
    // B's sandbox (built right after A's threads went idle) reads B, and
    // its thread cannot read A; nor can a sandbox's without mounts.
    for mounts in [vec![(b.inside(), "/b")], vec![]] {
        let mut builder = Sandbox::builder();
        for (host, guest) in &mounts {
            builder = builder.mount(host, guest);
        }
        let mut sb = builder.build().unwrap();
        if !mounts.is_empty() {
            assert_eq!(cat(&mut sb, "/b/inside.txt"), b"inside roots-b\n");
        }
        let opened = open_on_vcpu_thread(&mut sb, &a_file, libc::O_RDONLY).unwrap();
        if landlock {
            assert_eq!(opened, -(libc::EACCES as i64), "A's file from a thread of roots {mounts:?}");
        } else {
            assert!(opened >= 0);
        }
    }
    // Both roots at once; then A alone again.
    let mut sb = Sandbox::builder().mount(a.inside(), "/a").mount(b.inside(), "/b").build().unwrap();
    assert_eq!(cat(&mut sb, "/a/inside.txt"), b"inside roots-a\n");
    assert_eq!(cat(&mut sb, "/b/inside.txt"), b"inside roots-b\n");
    drop(sb);
    let mut sb = Sandbox::builder().mount(a.inside(), "/a").build().unwrap();
    assert_eq!(cat(&mut sb, "/a/inside.txt"), b"inside roots-a\n");
    let opened = open_on_vcpu_thread(&mut sb, &b.inside().join("inside.txt"), libc::O_RDONLY).unwrap();
    assert_eq!(opened < 0, landlock, "{opened}");
}

#[test]
fn a_mount_source_replaced_after_the_build_is_an_invalid_config() {
    let tree = Tree::new("replaced");
    let mut sb = Sandbox::builder().mount(tree.inside(), "/data").build().unwrap();
    assert_eq!(cat(&mut sb, "/data/inside.txt"), b"inside replaced\n");
    std::fs::rename(tree.inside(), tree.0.join("old")).unwrap();
    std::fs::create_dir(tree.inside()).unwrap();
    let err = sb.run(&Command::new(hvsandbox_tests::BUSYBOX).args(["cat", "/data/inside.txt"])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    assert!(err.to_string().contains("another directory"), "{err}");
    // The sandbox is not poisoned: with the directory back, runs work.
    std::fs::remove_dir(tree.inside()).unwrap();
    std::fs::rename(tree.0.join("old"), tree.inside()).unwrap();
    assert_eq!(cat(&mut sb, "/data/inside.txt"), b"inside replaced\n");
}

/// Runs test `name` of this binary alone in a child process with `env`;
/// returns its stderr.
fn run_child_test(name: &str, env: &[(&str, &str)]) -> String {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--ignored", "--nocapture", "--test-threads=1"]);
    cmd.env_remove("HVSANDBOX_SECCOMP");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "child {name} {env:?} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "child {name} ran no test:\n{stdout}");
    stderr
}

#[test]
fn hvsandbox_seccomp_can_only_make_the_filter_stricter() {
    const WARNING: &str = "ignoring HVSANDBOX_SECCOMP=";
    for value in ["off", "log", "enforce", "nonsense", ""] {
        let stderr = run_child_test("seccomp_env_child", &[("HVSANDBOX_SECCOMP", value)]);
        // Weaker than the code's enforce (or unknown): one warning.
        let warnings = stderr.matches(WARNING).count();
        assert_eq!(warnings, usize::from(value != "enforce"), "HVSANDBOX_SECCOMP={value}: {stderr}");
    }
    let stderr = run_child_test("seccomp_env_child", &[]);
    assert!(!stderr.contains(WARNING), "{stderr}");
}

/// Run by `hvsandbox_seccomp_can_only_make_the_filter_stricter` in a child
/// process with HVSANDBOX_SECCOMP set.
#[test]
#[ignore = "run in a child process"]
fn seccomp_env_child() {
    let env = std::env::var("HVSANDBOX_SECCOMP").ok();
    let (env_log, env_enforce) = (env.as_deref() == Some("log"), env.as_deref() == Some("enforce"));
    // SAFETY: getpid has no arguments.
    let pid = unsafe { libc::getpid() } as i64;
    // The code's enforce: never weakened.
    let mut sb = Sandbox::builder().build().unwrap();
    let err = sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JailViolation, "{err}");
    // The code's log: made enforcing by HVSANDBOX_SECCOMP=enforce only.
    let mut sb = Sandbox::builder().seccomp(SeccompMode::Log).build().unwrap();
    let r = sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid);
    if env_enforce {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::JailViolation);
    } else {
        assert_eq!(r.unwrap(), pid);
    }
    // The code's off: a filter where the environment asks for one.
    let mut sb = Sandbox::builder().seccomp(SeccompMode::Disabled).build().unwrap();
    let filtered = env_log || env_enforce;
    assert_eq!(status_field(sb.vcpu_thread_id(), "Seccomp"), if filtered { "2" } else { "0" });
    let r = sb.debug_syscall_on_vcpu_thread(libc::SYS_getpid);
    if env_enforce {
        assert_eq!(r.unwrap_err().kind(), ErrorKind::JailViolation);
    } else {
        assert_eq!(r.unwrap(), pid);
    }
}

#[test]
fn without_landlock_the_filter_still_keeps_opens_read_only() {
    run_child_test("no_landlock_child", &[]);
}

/// Run by `without_landlock_the_filter_still_keeps_opens_read_only` in a
/// child process: this thread (and the threads it starts) see a kernel
/// without Landlock, through a seccomp filter that fails its calls with
/// ENOSYS.
#[test]
#[ignore = "run in a child process"]
fn no_landlock_child() {
    hide_landlock();
    assert_eq!(hvsandbox::jail::landlock_abi(), None);
    let tree = Tree::new("no-landlock");
    let mut sb = Sandbox::builder().mount(tree.inside(), "/data").build().unwrap();
    assert_eq!(cat(&mut sb, "/data/inside.txt"), b"inside no-landlock\n");
    // The documented fallback: reading anywhere the user may ...
    assert!(open_on_vcpu_thread(&mut sb, &tree.outside_file(), libc::O_RDONLY).unwrap() >= 0);
    // ... but never writing, creating or truncating.
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_CREAT, libc::O_RDONLY | libc::O_TRUNC] {
        let mut sb = Sandbox::builder().build().unwrap();
        let err = open_on_vcpu_thread(&mut sb, &tree.outside_file(), flags).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::JailViolation, "{flags:#o}: {err}");
    }
    assert_eq!(std::fs::read(tree.outside_file()).unwrap(), b"outside\n");
}

/// Makes the landlock_* calls of this thread and the threads it starts
/// fail with ENOSYS, as on a kernel without Landlock.
fn hide_landlock() {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter { code: code as u16, jt: 0, jf: 0, k };
    let jump = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    let nr = libc::SYS_landlock_create_ruleset as u32;
    let mut prog = [
        stmt(load, 4),                 // arch
        jump(AUDIT_ARCH_X86_64, 0, 3), // other arch: allow
        stmt(load, 0),                 // system call number
        jump(nr, 2, 0),                // landlock_create_ruleset
        jump(nr + 1, 1, 0),            // landlock_add_rule
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
    ];
    // (landlock_restrict_self is never reached without a ruleset.)
    let fprog = libc::sock_fprog { len: prog.len() as u16, filter: prog.as_mut_ptr() };
    // SAFETY: prctl with constant arguments, affecting only this thread.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }, 0);
    // SAFETY: installs a well-formed filter program that lives for the
    // call (the kernel copies it); it affects only this thread and the
    // threads it starts.
    assert_eq!(unsafe { libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &fprog) }, 0);
}

#[test]
fn write_reaches_only_stderr_and_the_end_of_run_eventfd() {
    use std::os::fd::AsRawFd;
    let end_fd = hvsandbox::end_event_fd().unwrap().as_raw_fd();
    let mut sb = Sandbox::builder().build().unwrap();
    // A write of 8 bytes to the eventfd passes (a run's end, for event loops)...
    let one = 1u64;
    let args = [end_fd as u64, &one as *const u64 as u64, 8, 0, 0, 0];
    assert_eq!(sb.debug_syscall_with_args_on_vcpu_thread(libc::SYS_write, args).unwrap(), 8);
    // ...and one to any other descriptor (stdout here) is a violation.
    let args = [1, &one as *const u64 as u64, 0, 0, 0, 0];
    let err = sb.debug_syscall_with_args_on_vcpu_thread(libc::SYS_write, args).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JailViolation, "{err}");
}
