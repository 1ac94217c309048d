//! The guest runtime under pressure and odd input: memory exhausted
//! through the filesystem, timed waits with other threads around, signals
//! interrupting blocking calls, interval timers, file and clock semantics,
//! `mkdir` of existing paths with a trailing slash, and entry points or
//! signal targets the CPU could not jump to. Where Linux defines the
//! answer, the same program runs natively and in the guest and the outputs
//! are compared.

use std::time::Duration;

use hvsandbox::{Command, ErrorKind, ExitStatus, Sandbox};
use hvsandbox_tests::{musl, program, same_as_native, Flavor, BUSYBOX};

fn sandbox_with_timeout(secs: u64) -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(secs)).build().expect("build sandbox")
}

#[test]
fn running_out_of_memory_through_the_filesystem_is_an_errno() {
    let out = sandbox_with_timeout(30).run(&Command::new(musl("fs_exhaust"))).unwrap();
    assert_eq!(
        out.stdout_str(),
        "data: ENOSPC (many MiB)\nfiles: full (many)\ndirs: full (many)\npipes: full\n\
         after: fd=ok write=1048576\n",
        "{}",
        out.stderr_str()
    );
    assert_eq!(out.status, ExitStatus::Code(0));
}

#[test]
fn timed_waits_time_out_with_other_threads_like_linux() {
    same_as_native(&mut sandbox_with_timeout(30), "timed_waits", &["poll threads=8 blocked ret=0 errno=0"]);
}

#[test]
fn signal_handlers_interrupt_blocking_calls_like_linux() {
    // poll/select/epoll_wait end with EINTR after a handler whatever its
    // flags; pipe reads and wait4 run again with SA_RESTART.
    let expect = [
        "poll        SA_RESTART   : returned -1 EINTR, handler ran: yes",
        "read        SA_RESTART   : returned 1, handler ran: yes",
        "read        no SA_RESTART: returned -1 EINTR, handler ran: yes",
    ];
    same_as_native(&mut sandbox_with_timeout(60), "eintr", &expect);
}

#[test]
fn alarm_and_interval_timers_work_like_linux() {
    let mut sb = sandbox_with_timeout(60);
    same_as_native(&mut sb, "itimers", &["read: -1 EINTR alarms=2", "child: signaled=1 sig=14"]);
    // timeout(1) ends a program that runs too long (busybox's execs it and
    // has a child send it SIGTERM).
    let args = ["timeout", "1", BUSYBOX, "sleep", "30"];
    let native = std::process::Command::new(BUSYBOX).args(args).status().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&native), Some(libc::SIGTERM));
    let out = sb.run(&Command::new(BUSYBOX).args(args)).unwrap();
    assert_eq!(out.status, ExitStatus::Signal(libc::SIGTERM), "{}", out.stderr_str());
}

#[test]
fn created_read_only_files_xattrs_and_clocks_behave_like_linux() {
    let mut sb = sandbox_with_timeout(30);
    let expect = ["create 0444 for writing: ok", "write to it: 4", "mode: 444", "getxattr: ENODATA", "listxattr: 0 ok"];
    same_as_native(&mut sb, "file_semantics", &expect);
    // Natively (as root) this would set the host's clock: the guest only.
    let out = sb.run(&Command::new(musl("file_semantics")).arg("settime")).unwrap();
    assert_eq!(out.stdout_str(), "clock_settime: EPERM\n");
}

#[test]
fn a_readv_into_a_bad_buffer_is_efault_and_the_pipe_keeps_its_bytes() {
    let expect = ["readv: -1 ", "rest: 11 hello world", "bad first: -1 Bad address"];
    same_as_native(&mut sandbox_with_timeout(30), "readv_fault", &expect);
}

#[test]
fn mkdir_of_an_existing_path_with_a_trailing_slash_is_eexist() {
    let script = "mkdir /tmp/ 2>&1; echo st=$?; mkdir -p /tmp/ && echo p=ok; \
                  mkdir /tmp/x && mkdir /tmp/x/ 2>&1; echo st=$?; \
                  mkdir /tmp/new/ && test -d /tmp/new && echo created; \
                  mkdir -p /tmp/a/b/ && test -d /tmp/a/b && echo nested; \
                  touch /tmp/f && mkdir /tmp/f/ 2>&1; echo st=$?";
    let out = sandbox_with_timeout(10).run(&Command::new(BUSYBOX).args(["sh", "-c", script])).unwrap();
    assert_eq!(
        out.stdout_str(),
        "mkdir: can't create directory '/tmp/': File exists\nst=1\np=ok\n\
         mkdir: can't create directory '/tmp/x/': File exists\nst=1\ncreated\nnested\n\
         mkdir: can't create directory '/tmp/f/': File exists\nst=1\n",
        "{}",
        out.stderr_str()
    );
}

/// `flavor`'s hello with its entry point (e_entry) replaced.
fn hello_with_entry(flavor: Flavor, entry: u64) -> Vec<u8> {
    let mut elf = std::fs::read(program("hello", flavor)).unwrap();
    elf[24..32].copy_from_slice(&entry.to_le_bytes());
    elf
}

#[test]
fn non_canonical_entry_point_is_an_invalid_program() {
    let dir = std::env::temp_dir().join(format!("hvsandbox-entry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut sb = sandbox_with_timeout(10);
    for (flavor, entry) in [
        (Flavor::MuslStatic, 0x0000_8000_0000_0000u64),
        (Flavor::MuslStatic, 0xdead_0000_0000_0000),
        (Flavor::MuslStaticPie, 0xdead_0000_0000_0000),
        (Flavor::MuslStaticPie, 0x0000_7fff_ffff_f000),
    ] {
        let path = dir.join(format!("hello-{flavor:?}-{entry:x}"));
        std::fs::write(&path, hello_with_entry(flavor, entry)).unwrap();
        let err = sb.run(&Command::new(&path)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{flavor:?} {entry:#x}: {err}");
    }
    // From inside the guest, execve fails (ENOEXEC: busybox sh then reads
    // the file as a script, which fails) and the shell goes on.
    let bad = hello_with_entry(Flavor::MuslStatic, 0xdead_0000_0000_0000);
    let out = sb
        .run(&Command::new(BUSYBOX).args(["sh", "-c", "/x/bad; echo st=$?"]).file_with_mode("/x/bad", bad, 0o755))
        .unwrap();
    assert_eq!(out.stdout_str(), "st=2\n", "{}", out.stderr_str());
    assert_eq!(out.status, ExitStatus::Code(0));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn non_canonical_signal_handler_or_sigreturn_target_is_sigsegv() {
    for how in ["handler", "return"] {
        let out = sandbox_with_timeout(10).run(&Command::new(musl("bad_handler")).arg(how)).unwrap();
        assert_eq!(out.stdout_str(), "raising\n", "{how}: {}", out.stderr_str());
        assert_eq!(out.status, ExitStatus::Signal(11), "{how}");
    }
}

#[test]
fn a_task_that_spins_does_not_starve_the_others() {
    // Without time slices both halves hang until the timeout.
    let mut sb = sandbox_with_timeout(60);
    same_as_native(
        &mut sb,
        "preempt",
        &["threads: flag seen", "processes: child exited 0", "alarm: delivered while spinning"],
    );
}

#[test]
fn proc_and_dev_fd_show_what_linux_shows() {
    // /proc/self/{stat,status,cmdline,environ,maps,fd}, /proc/<pid> of a
    // child, /proc/{cpuinfo,stat,meminfo,uptime} consistent with sysconf
    // and sysinfo, and /dev/fd/N, /dev/stdin of a pipe.
    let expect = [
        "self/stat: fields=52 pid=yes ppid=yes state=yes",
        "status: pid=yes ppid=yes uid=yes name=yes vmrss=yes threads=1",
        "status umask: 0027; root link: /; status owned by the process's user: yes",
        "maps: lines>3=yes bad=0 stack=yes code=yes mmap=yes",
        "maps: code names the program=yes data names it=yes",
        "fd: listed=6 null=/dev/null pipe=yes",
        "dev/fd: stat=0 fifo=yes open=yes read=7 through",
        "dev/stdin: open=yes read=6 stdin!",
        "proc: child listed=yes self listed=yes",
        "child/stat: fields=52 pid=yes ppid=yes state=yes",
        "reaped: ENOENT",
        "cpuinfo: processors==online=yes flags=yes",
        "meminfo: total==sysinfo=yes available<=total=yes",
    ];
    same_as_native(&mut sandbox_with_timeout(30), "procfs", &expect);
}

/// `/sys` holds what programs read to learn the machine and their limits:
/// one CPU (glibc's CPU count and `lscpu` read the lists), transparent
/// huge pages, and a cgroup v2 root whose `memory.max` is the sandbox's
/// memory (libuv, the JVM and .NET size themselves by it) and whose
/// `memory.current` is what the run uses; the files are read-only and
/// `/proc/mounts` lists both file systems. Before, there was no `/sys`.
#[test]
fn sys_states_the_cpus_and_the_memory_limit() {
    let mut sb = sandbox_with_timeout(10);
    let read = |sb: &mut Sandbox, path: &str| {
        let out = sb.run(&Command::new(BUSYBOX).args(["cat", path])).unwrap();
        assert_eq!(out.status, ExitStatus::Code(0), "{path}: {}", out.stderr_str());
        out.stdout_str().to_string()
    };
    for list in ["online", "possible", "present"] {
        assert_eq!(read(&mut sb, &format!("/sys/devices/system/cpu/{list}")), "0\n");
    }
    assert_eq!(read(&mut sb, "/sys/kernel/mm/transparent_hugepage/hpage_pmd_size"), "2097152\n");
    assert_eq!(read(&mut sb, "/sys/fs/cgroup/memory.max"), format!("{}\n", 64 << 20));
    assert_eq!(read(&mut sb, "/sys/fs/cgroup/cpu.max"), "max 100000\n");
    assert_eq!(read(&mut sb, "/sys/fs/cgroup/cgroup.procs"), "1\n");
    let used: u64 = read(&mut sb, "/sys/fs/cgroup/memory.current").trim().parse().unwrap();
    assert!(used > 0 && used < 64 << 20, "memory.current {used}");
    let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", "echo 1 > /sys/fs/cgroup/memory.max"])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(1), "a write must fail: {}", out.stderr_str());
    assert!(out.stderr_str().contains("Permission denied"), "{}", out.stderr_str());
    let mounts = read(&mut sb, "/proc/mounts");
    assert!(mounts.contains("sysfs /sys sysfs ro,nosuid,nodev,noexec 0 0\n"), "{mounts}");
    assert!(mounts.contains("cgroup2 /sys/fs/cgroup cgroup2 ro,nosuid,nodev,noexec 0 0\n"), "{mounts}");
}

/// Node reads the sandbox's memory limit from `/sys/fs/cgroup` (libuv's
/// `uv_get_constrained_memory`), as it reads a container's.
#[test]
fn node_sees_the_sandboxs_memory_limit() {
    const NODE: &str = "/usr/bin/node";
    if !std::path::Path::new(NODE).exists() {
        eprintln!("skipped: {NODE} does not exist on this host");
        return;
    }
    let mut sb = Sandbox::builder().host_system().memory_mib(512).timeout(Duration::from_secs(60)).build().unwrap();
    let out = sb.run(&Command::new(NODE).args(["-e", "console.log(process.constrainedMemory())"])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
    assert_eq!(out.stdout_str(), format!("{}\n", 512u64 << 20));
}

#[test]
fn named_pipes_join_two_processes_like_linux() {
    let expect = [
        "stat: fifo=yes mode=600",
        "nonblocking writer without reader: -1 ENXIO",
        "reader first: read 16 \"through the fifo\" eof=yes child=0",
        "writer first: read 16 \"through the fifo\" eof=yes child=0",
    ];
    same_as_native(&mut sandbox_with_timeout(30), "fifo", &expect);
}

/// Memory calls aimed past the program's part of the address space (the
/// runtime's half, non-canonical addresses, the vsyscall page) with any
/// length fail or do nothing, and the run ends with the program's own exit
/// (`mm_fuzz.c`, three seeds).
#[test]
fn memory_calls_at_the_runtimes_half_leave_it_standing() {
    hvsandbox_tests::fuzz_seeds(
        "mm_fuzz",
        "done 20000
",
    );
}

/// Pointers into the runtime's half of the address space (and
/// non-canonical, vsyscall-page, page-edge and null ones) given to 70-odd
/// system calls that read or write memory are refused, and the run ends
/// with the program's own exit (`ptr_fuzz.c`, three seeds).
#[test]
fn pointers_into_the_runtimes_half_are_refused() {
    hvsandbox_tests::fuzz_seeds(
        "ptr_fuzz",
        "done 20000
",
    );
}

/// Random file-system calls over a small set of paths and descriptors
/// (any open flags, offsets, lengths, renameat2 flags, xattrs, mmaps,
/// copies; in 64 MiB, so past the end of memory too) all return, and the
/// run ends with the program's own exit (`fs_fuzz.c`, three seeds).
#[test]
fn random_file_system_calls_leave_the_runtime_standing() {
    hvsandbox_tests::fuzz_seeds(
        "fs_fuzz",
        "done 20000
",
    );
}

/// Hostile signal calls (random handlers, flags, restorers, masks and
/// alternate stacks, signals with random siginfo to itself, forged frames
/// for rt_sigreturn) end only the children that make them; the parent
/// sees all 60 end and exits by itself (`sig_fuzz.c`, three seeds).
#[test]
fn hostile_signal_calls_end_only_their_process() {
    hvsandbox_tests::fuzz_seeds(
        "sig_fuzz",
        "done: 60 children
",
    );
}
