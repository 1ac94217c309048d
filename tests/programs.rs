//! Real programs in sandboxes: musl C programs (static and static-PIE), a
//! static Rust program and Debian's busybox, through the public API.

use std::time::{Duration, Instant};

use hvsandbox::{Command, ErrorKind, ExitStatus, Sandbox};
use hvsandbox_tests::{leak_kib, musl, program, same_as_native, same_as_native_with, sandbox, Flavor, Killer, BUSYBOX};

#[test]
fn hello_world_and_exit_code() {
    let mut sb = sandbox();
    let out = sb.run(&Command::new(musl("hello"))).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello, world\n");
    assert!(out.stderr.is_empty());
    assert!(!out.truncated());
    assert!(out.stats.syscalls > 0);
    assert!(out.stats.wall > Duration::ZERO);

    for code in [0, 1, 42, 255] {
        let out = sb.run(&Command::new(musl("exit_code")).arg(code.to_string())).unwrap();
        assert_eq!(out.status.code(), Some(code), "exit {code}");
        assert_eq!(out.status.shell_code(), code);
    }
}

#[test]
fn static_pie_hello() {
    let out = sandbox().run(&Command::new(program("hello", Flavor::MuslStaticPie))).unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"hello, world\n");
}

#[test]
fn argv_and_env_round_trip() {
    let mut sb = Sandbox::builder().env("BASE", "from-sandbox").build().unwrap();
    let exe = musl("args_env");
    let weird = "sp ace\ttab \u{e9}\u{1f600} $HOME 'q' \"dq\"";
    let out = sb
        .run(&Command::new(&exe).args(["one", "", weird, "--flag=x"]).env("GREETING", "hi there").env("EMPTY", ""))
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "argc=5");
    assert_eq!(lines[1], format!("argv[0]={}", exe.display()));
    assert_eq!(lines[2], "argv[1]=one");
    assert_eq!(lines[3], "argv[2]=");
    assert_eq!(lines[4], format!("argv[3]={weird}"));
    assert_eq!(lines[5], "argv[4]=--flag=x");
    let env: Vec<&str> = lines[6..].to_vec();
    assert_eq!(env, ["env:BASE=from-sandbox", "env:GREETING=hi there", "env:EMPTY="]);

    // env_clear drops the sandbox's variables.
    let out = sb.run(&Command::new(musl("args_env")).env_clear().env("ONLY", "1")).unwrap();
    let text = out.stdout_str();
    let env: Vec<&str> = text.lines().filter(|l| l.starts_with("env:")).collect();
    assert_eq!(env, ["env:ONLY=1"]);
}

#[test]
fn stdin_to_stdout() {
    let mut sb = sandbox();
    // Larger than one host read chunk and not a multiple of the page size.
    let input: Vec<u8> = (0..300_001u32).map(|i| (i % 251) as u8).collect();
    let out = sb.run(&Command::new(musl("cat")).stdin(&input)).unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout.len(), input.len());
    assert!(out.stdout == input, "stdout differs from stdin");
    assert_eq!(out.stderr_str(), "300001\n");

    // No stdin: the program sees end of file at once.
    let out = sb.run(&Command::new(musl("cat"))).unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty());
    assert_eq!(out.stderr_str(), "0\n");
}

#[test]
fn ten_mib_malloc_touched() {
    let out = sandbox().run(&Command::new(musl("malloc10m"))).unwrap();
    assert_eq!(out.status.code(), Some(0));
    // Sum of (i*7+3) mod 256 over 10 MiB: every 256 consecutive values of i
    // cover each byte value once (7 is odd), so sum = 40960 * (0+..+255).
    assert_eq!(out.stdout_str(), format!("sum={}\n", 40960u64 * 255 * 256 / 2));
    assert!(out.stats.memory_used >= 10 << 20, "memory_used {}", out.stats.memory_used);
}

#[test]
fn memory_filled_in_address_order_takes_few_faults() {
    // A fault right where the last fault's window ended backs twice as
    // much (256 KiB up to 2 MiB): 10 MiB filled in order takes ~9 guest
    // page faults, where windows of 256 KiB took 41.
    let out = sandbox().run(&Command::new(musl("malloc10m"))).unwrap();
    assert_eq!(out.stdout_str(), format!("sum={}\n", 40960u64 * 255 * 256 / 2));
    assert!(out.stats.page_faults <= 16, "{} page faults", out.stats.page_faults);
    // Growing windows stop short of the last frames: whatever a 32 MiB
    // sandbox lets a program allocate, it can fill.
    let mut sb = Sandbox::builder().memory_mib(32).build().unwrap();
    let (mut filled, mut refused) = (0, 0);
    for mib in 16..=32u64 {
        let out = sb.run(&Command::new(musl("malloc10m")).arg(mib.to_string())).unwrap();
        if out.stdout_str() == "malloc failed\n" {
            refused += 1;
        } else {
            assert_eq!(out.stdout_str(), format!("sum={}\n", 4096 * mib * 255 * 256 / 2), "{mib} MiB");
            assert_eq!(out.status, ExitStatus::Code(0));
            filled += 1;
        }
    }
    assert!(filled > 0 && refused > 0, "{filled} filled, {refused} refused");
}

#[test]
fn a_large_programs_read_only_data_goes_in_2_mib_pages_of_its_file_that_split_for_any_change() {
    // The host lays a large program's file out 2 MiB-aligned, and the
    // runtime maps the whole 2 MiB ranges of its read-only segments as
    // 2 MiB pages of the file's own frames (one KVM fault each). The
    // program sees what it sees natively: the bytes, a page made
    // inaccessible and given back, a page unmapped, a write refused, and
    // forked children, one of which exits while the pages are whole
    // (the file's frames must not go back to the allocator with it).
    // Position-independent too: such a large program goes at a 2 MiB
    // boundary.
    for prog in [musl("file_huge"), program("file_huge", Flavor::MuslStaticPie)] {
        let native = std::process::Command::new(&prog).output().unwrap();
        assert!(native.status.success(), "{native:?}");
        let native = String::from_utf8(native.stdout).unwrap();
        assert!(native.starts_with("sum ") && native.contains("\nchild before the changes: sum "), "{native}");
        let out = sandbox().run(&Command::new(&prog).arg("meminfo")).unwrap();
        assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
        let text = out.stdout_str();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first(), Some(&"FilePmdMapped at start: at least 2 MiB"), "{}: {text}", prog.display());
        assert_eq!(lines.last(), Some(&"FilePmdMapped after the changes: less"), "{text}");
        assert_eq!(lines[1..lines.len() - 1].join("\n") + "\n", native);
    }
}

#[test]
fn memory_filled_in_order_goes_in_2_mib_pages_that_split_for_any_change() {
    // The runtime maps memory a program fills in order in 2 MiB pages
    // (one KVM fault each) and splits one into 512 pages for any change
    // to part of it: the program sees what it sees natively.
    let native = std::process::Command::new(musl("huge_pages")).output().unwrap();
    assert!(native.status.success(), "{native:?}");
    let native = String::from_utf8(native.stdout).unwrap();
    let out = sandbox().run(&Command::new(musl("huge_pages")).arg("huge")).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0), "{}", out.stderr_str());
    let text = out.stdout_str();
    let mut lines = text.splitn(3, '\n');
    assert_eq!(lines.next(), Some("AnonHugePages after filling 16 MiB: at least 8 MiB"));
    assert_eq!(lines.next(), Some("after unmapping it: 0 kB"));
    assert_eq!(lines.next(), Some(native.as_str()));
    // A fork gives the child 2 MiB pages of its own, copies, and leaves
    // the parent's whole.
    let out = sandbox().run(&Command::new(musl("huge_pages")).arg("fork")).unwrap();
    assert_eq!(
        out.stdout_str(),
        "child: its own 2 MiB pages and the same bytes yes; parent: pages whole, bytes kept\n",
        "{}",
        out.stderr_str()
    );
    // So does memory filled in four interleaved streams (glibc's memcpy
    // of a large block).
    let out = sandbox().run(&Command::new(musl("huge_pages")).arg("quarters")).unwrap();
    assert_eq!(
        out.stdout_str(),
        format!(
            "filled 32 MiB in 4 streams: at least 16 MiB in 2 MiB pages, sum {}\n",
            (1 + 2 + 3 + 4) * 8 * 1024 * 1024
        ),
        "{}",
        out.stderr_str()
    );
    // And memory filled downwards (glibc's memmove copying backwards).
    let native = std::process::Command::new(musl("huge_pages")).arg("down").output().unwrap();
    let sum = String::from_utf8(native.stdout).unwrap().rsplit_once(", ").unwrap().1.to_string();
    let out = sandbox().run(&Command::new(musl("huge_pages")).arg("down")).unwrap();
    assert_eq!(
        out.stdout_str(),
        format!("filled 32 MiB downwards: at least 16 MiB in 2 MiB pages, {sum}"),
        "{}",
        out.stderr_str()
    );
    // Freed 2 MiB pages stay whole for the next fill.
    let out = sandbox().run(&Command::new(musl("huge_pages")).arg("reuse")).unwrap();
    assert_eq!(out.stdout_str(), "refilled 32 MiB: at least 28 MiB in 2 MiB pages\n", "{}", out.stderr_str());
    // And gives every frame back (40 rounds of it all).
    let mut sb = Sandbox::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let out = sb.run(&Command::new(musl("huge_pages")).arg("leak")).unwrap();
    let kib = leak_kib(&out);
    // The runtime's own bookkeeping settles a little; one round's pages
    // leaked would be ~40 MiB.
    assert!(kib <= 256, "free memory went down by {kib} KiB");
}

/// A file mapped as ld.so maps a library (whole, read-only, then a part
/// again at its place with more access: the runtime keeps those pages'
/// entries and only widens them) reads and runs as natively; mappings
/// over others from another offset, or over a private copy, show the new
/// contents at once.
#[test]
fn file_mappings_made_again_over_themselves_read_and_run_as_natively() {
    same_as_native(
        &mut sandbox(),
        "remap_file",
        &[
            "whole: a b c d",
            "code: 42, then c",
            "other offset: d",
            "private write: z, file a",
            "read-only again: a",
            "code again: 42",
            "code moved: 42, d",
        ],
    );
}

/// Changes to one to six pages' mappings take effect at once, as
/// natively (the runtime drops one page's TLB entries with `invlpg`, more
/// with a CR3 reload): access taken away faults, given
/// back works, an unmapped page faults and one mapped anew reads zero;
/// and a forked child whose copy-on-write window took pages it had read
/// never sees the parent's later writes to them.
#[test]
fn a_few_pages_changed_take_effect_at_once_as_natively() {
    let mut expect: Vec<String> = (1..=6)
        .map(|k| {
            let n = 50 * k;
            format!("{k} pages: write faults {n}, writes {n}, read faults {n}, unmapped faults {n}, stale 0")
        })
        .collect();
    expect.extend((1..=6).map(|k| format!("fork after reading {k} pages: children that saw the parent's writes 0")));
    expect.push("done".into());
    let expect: Vec<&str> = expect.iter().map(String::as_str).collect();
    same_as_native(&mut sandbox(), "tlb_small", &expect);
}

/// Data does not run: pages without PROT_EXEC (read-only, read-write, the
/// stack, the data segment) fault at the jump, as on Linux with NX;
/// mprotect gives and takes execution (taken away: the old TLB entry must
/// not let it run; given back without a flush: the fault is retried).
#[test]
fn memory_that_is_not_executable_does_not_run() {
    same_as_native(
        &mut sandbox(),
        "no_execute",
        &[
            "read-write: SIGSEGV at it",
            "read-only: SIGSEGV at it",
            "made executable: ran 42",
            "executable taken away: SIGSEGV at it",
            "given back, run here: 84",
            "read-write-execute: ran 42",
            "on the stack: SIGSEGV at it",
            "in the data segment: SIGSEGV at it",
            "stack made executable (0): ran 42, deeper: ran 42",
        ],
    );
    // A program that asks for an executable stack gets one.
    same_as_native(&mut sandbox(), "exec_stack", &["nested function through its trampoline: 42"]);
}

/// A pipe's capacity is read and set with fcntl as on Linux, and a pipe
/// holds exactly that much.
#[test]
fn a_pipes_capacity_is_what_fcntl_says_and_sets() {
    same_as_native(
        &mut sandbox(),
        "pipe_size",
        &[
            "new: 65536",
            "set 100000: 131072, now 131072 (read end 131072)",
            "holds: 131072",
            "shrink while full: -1 EBUSY",
            "set 0 when empty: 4096; holds 4096",
            "4000, then 200: 4000 -1 EAGAIN, then 96: 96",
            "blocking write of 60000 behind 30000: whole, read 90000",
            "blocking write of 200000 into 65536: whole, read 200000",
            "interrupted (SA_RESTART 0): 65536",
            "interrupted (SA_RESTART 1): 65536",
            "socket: -1 EBADF",
        ],
    );
}

/// Advisory file locks behave as on Linux: fcntl record locks per
/// process (released by any close of the file, waited for by F_SETLKW,
/// EDEADLK for a wait that would close a circle),
/// open-file-description locks per open, flock per open and apart from
/// record locks (sqlite3 relies on these between its processes).
#[test]
fn file_locks_are_kept_and_conflict_as_natively() {
    same_as_native(
        &mut sandbox(),
        "file_locks",
        &[
            "child, bytes 0-99: write lock at 0 len 40 by parent",
            "child write 10-19: EAGAIN",
            "child write 10-19: ok",
            "child write 5-5: EAGAIN",
            "child, relative to the position: read lock at 5 len 0 by parent",
            "waiter: first EAGAIN, then waited: ok",
            "waiting for the waiting child's byte 1: EDEADLK",
            "child waited for byte 0: ok",
            "ofd write on b: EAGAIN",
            "ofd query on b: write lock at 0 len 10 by -1",
            "ofd write on b after a closed: ok",
            "flock sh on b: EAGAIN",
            "child flock on the shared open file: ok",
            "child flock on its own open: EAGAIN",
            "child record lock beside it: ok",
            "flock sh on b: ok",
            "write lock on a read-only descriptor: EBADF",
        ],
    );
}

/// A thread or process that dies holding a robust mutex leaves it to the
/// next locker with EOWNERDEAD (the runtime walks the dead thread's
/// robust list), a waiting locker included, across processes for one in
/// shared memory, and so does one that execs another program; as
/// natively.
#[test]
fn a_robust_mutex_outlives_its_dead_holder() {
    same_as_native(
        &mut sandbox(),
        "robust_mutex",
        &[
            "thread died holding it: lock EOWNERDEAD, consistent 0, again 0",
            "process died holding it: lock EOWNERDEAD, consistent 0, again 0",
            "waiting when it died: lock EOWNERDEAD, consistent 0, again 0",
            "its holder exec'd: lock EOWNERDEAD, consistent 0, again 0",
            "not made consistent: EOWNERDEAD, then ENOTRECOVERABLE",
            "get_robust_list: 0, head set, len 24",
        ],
    );
}

/// An execve resets the alternate signal stack (a handler with
/// SA_ONSTACK in the new program ran at the old program's address and
/// died of SIGSEGV) and keeps ignored signals and the signal mask.
#[test]
fn an_exec_resets_the_alternate_signal_stack() {
    same_as_native(
        &mut sandbox(),
        "exec_reset",
        &["child: alternate stack none, handler ran 1, SIGUSR2 ignored, SIGWINCH blocked", "parent: child exited 0"],
    );
}

/// A forked child's `CLONE_CHILD_SETTID` write lands in its own memory
/// when it first runs (the runtime no longer switches to the child's
/// space at the fork to make it), and an address it cannot write is
/// skipped, as on Linux.
#[test]
fn a_forked_childs_tid_is_written_in_its_own_memory() {
    same_as_native(
        &mut sandbox(),
        "clone_settid",
        &["child saw its tid: yes; the parent's copy: unchanged", "bad address: child exit 7"],
    );
}

#[test]
fn a_fork_of_a_parent_larger_than_free_memory_shares_it_copy_on_write() {
    // 40 MiB filled (2 MiB pages) plus 4 MiB touched from the top down
    // (4 KiB pages) in a 64 MiB guest: an eager copy cannot fit (fork
    // failed with ENOMEM), so the runtime shares the memory copy-on-write.
    // The child, its child and the parent each change it every way a
    // change must stay their own (writes, read(2) into it, a signal
    // frame, mprotect, madvise, munmap) and see what they see natively.
    let expect = ["child status 0", "child handled 1", "child zeroed 0 0"];
    let native = same_as_native(&mut sandbox(), "cow_fork", &expect);
    assert!(native.contains("grandchild: big"), "{native}");
    // More ways: mremap, PROT_NONE across the fork, MAP_FIXED, three
    // generations, and a child that outlives the parent it shares with.
    let native = same_as_native_with(&mut sandbox(), "cow_fork", &["more"], &[]);
    assert!(native.contains("P status 0; C: zero 0, moved"), "{native}");
    // Children that each write all of it in a guest too small for one
    // copy die of SIGKILL (the OOM killer's way); the parent keeps its
    // memory as it was.
    let out = sandbox().run(&Command::new(musl("cow_fork")).arg("oom")).unwrap();
    let before = native.lines().next().unwrap();
    let after = before.replace("parent before", "parent after");
    assert_eq!(
        out.stdout_str(),
        format!("{before}\nchild 0: signal 9\nchild 1: signal 9\nchild 2: signal 9\n{after}\n"),
        "{}",
        out.stderr_str()
    );
    assert_eq!(out.status, ExitStatus::Code(0));
    // /proc/meminfo's AnonHugePages counts a 2 MiB page both share once
    // (it counted each process's mapping).
    let out = sandbox().run(&Command::new(musl("cow_fork")).arg("huge")).unwrap();
    assert_eq!(
        out.stdout_str(),
        "2 MiB pages: 16 MiB or more; shared: counted once; the child's write: one page at most\n\
         child status 0; after it: as before\n",
        "{}",
        out.stderr_str()
    );
    // 30 rounds of it give every frame back: a copy each side made, and
    // frames both held, once neither does.
    let mut sb = Sandbox::builder().memory_mib(64).timeout(Duration::from_secs(60)).build().unwrap();
    let out = sb.run(&Command::new(musl("cow_fork")).args(["leak", "40"])).unwrap();
    let kib = leak_kib(&out);
    // One round's copies kept would be ~1 MiB; the shared 40 MiB kept, 40.
    assert!(kib <= 256, "free memory went down by {kib} KiB");
}

#[test]
fn page_tables_go_with_the_memory_they_mapped() {
    // 16 MiB mapped, touched and unmapped 400 times, each time at a new
    // fixed address: the tables under it are freed at each munmap. They
    // were not, and the page-table pool ran out after ~120 rounds
    // (SIGSEGV). And 16 MiB more mapped where mmap likes: the address
    // just unmapped, every time, as natively (it used to move down).
    let native = std::process::Command::new(musl("huge_pages")).arg("tables").output().unwrap();
    let expect = "400 rounds; plain mappings moved 0 times\n";
    assert_eq!(String::from_utf8_lossy(&native.stdout), expect);
    let out = sandbox().run(&Command::new(musl("huge_pages")).arg("tables")).unwrap();
    assert_eq!(out.stdout_str(), expect, "{}", out.stderr_str());
    assert_eq!(out.status, ExitStatus::Code(0));
}

#[test]
fn malloc_beyond_memory_fails_inside_the_guest() {
    // 100 MiB cannot fit in a 64 MiB guest: the program gets NULL (ENOMEM
    // from mmap), not a crash, and the sandbox stays usable.
    let mut sb = sandbox();
    let out = sb.run(&Command::new(musl("malloc10m")).arg("100")).unwrap();
    assert_eq!(out.stdout_str(), "malloc failed\n");
    assert_eq!(out.status.code(), Some(1));
    let out = sb.run(&Command::new(musl("malloc10m")).arg("1")).unwrap();
    assert_eq!(out.stdout_str(), format!("sum={}\n", 4096u64 * 255 * 256 / 2));
}

#[test]
fn segfault_is_sigsegv() {
    let mut sb = sandbox();
    let out = sb.run(&Command::new(musl("segv"))).unwrap();
    assert_eq!(out.status, ExitStatus::Signal(libc::SIGSEGV));
    assert_eq!(out.status.shell_code(), 128 + 11);
    assert_eq!(out.stdout, b"before the fault\n", "output before the fault is kept");
    let fault = out.fault.expect("fault details");
    assert_eq!(fault.vector, 14, "page fault");
    assert_eq!(fault.address, Some(0));
    // The sandbox is usable after a program's fault.
    let out = sb.run(&Command::new(musl("hello"))).unwrap();
    assert_eq!(out.stdout, b"hello, world\n");
}

#[test]
fn infinite_loop_times_out_at_the_deadline() {
    let limit = Duration::from_millis(300);
    let mut sb = Sandbox::builder().timeout(limit).build().unwrap();
    let start = Instant::now();
    let err = sb.run(&Command::new(musl("loop"))).unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(took >= limit, "stopped early: {took:?}");
    eprintln!("stopped {:?} after the deadline", took - limit);
    // A timeout does not poison the sandbox.
    let out = sb.run(&Command::new(musl("hello"))).unwrap();
    assert_eq!(out.stdout, b"hello, world\n");
}

#[test]
fn output_flood_is_truncated_at_the_cap() {
    let cap = 256 * 1024;
    let mut sb = Sandbox::builder().max_output(cap).build().unwrap();
    let out = sb.run(&Command::new(musl("flood")).args(["4", "2"])).unwrap();
    assert_eq!(out.status.code(), Some(0), "writes past the cap still succeed for the program");
    assert_eq!(out.stdout.len(), cap);
    assert_eq!(out.stderr.len(), cap);
    assert!(out.stdout.iter().all(|&b| b == b'x'));
    assert!(out.stderr.iter().all(|&b| b == b'y'));
    assert!(out.stdout_truncated && out.stderr_truncated && out.truncated());

    // Under the cap nothing is flagged.
    let out = sb.run(&Command::new(musl("flood")).args(["0", "0"])).unwrap();
    assert!(!out.truncated());
}

#[test]
fn default_output_cap_is_one_mib() {
    let out = sandbox().run(&Command::new(musl("flood")).args(["3", "0"])).unwrap();
    assert_eq!(out.stdout.len(), hvsandbox::DEFAULT_MAX_OUTPUT);
    assert_eq!(hvsandbox::DEFAULT_MAX_OUTPUT, 1 << 20);
    assert!(out.stdout_truncated && !out.stderr_truncated);
}

#[test]
fn unknown_syscall_is_enosys_and_counted() {
    let out = sandbox().run(&Command::new(musl("enosys"))).unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout_str(), "ret=-1 errno=ENOSYS\n");
    assert_eq!(out.stats.unknown_syscalls.get(&500), Some(&1), "{:?}", out.stats.unknown_syscalls);
}

#[test]
fn not_an_elf_is_invalid_program() {
    let dir = std::env::temp_dir().join(format!("hvsandbox-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let mut sb = sandbox();
    let err = sb.run(&Command::new(&script)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");
    assert!(err.to_string().contains("ELF"), "{err}");

    let err = sb.run(&Command::new(dir.join("does-not-exist"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");

    let err = sb.run(&Command::from_image("empty", Vec::new())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");

    // A dynamic executable is refused with a clear message (for now).
    let err = sb.run(&Command::new("/bin/true")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidProgram, "{err}");
    assert!(err.to_string().contains("dynamic"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // None of this poisoned the sandbox.
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn invalid_config_is_typed() {
    for mib in [0, 8, 15, 17, 1 << 20] {
        let err = Sandbox::builder().memory_mib(mib).build().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{mib} MiB: {err}");
    }
    let err = Sandbox::builder().timeout(Duration::ZERO).build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    let err = Sandbox::builder().env("A=B", "x").build().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn time_identity_and_randomness() {
    let out = sandbox().run(&Command::new(musl("sysinfo"))).unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", out.stderr_str());
    let text = out.stdout_str();
    let field = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_string()
    };
    let host_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    for f in ["realtime", "gettimeofday", "time"] {
        let t: i64 = field(f).parse().unwrap();
        assert!((t - host_now).abs() <= 5, "{f}={t}, host {host_now}");
    }
    let slept: i64 = field("slept_ms").parse().unwrap();
    assert!((20..2000).contains(&slept), "slept {slept} ms for a 20 ms nanosleep");
    assert_eq!(field("sysname"), "Linux machine=x86_64");
    assert_eq!(field("uid"), "1000 euid=1000 gid=1000 pid_positive=1");
    assert_eq!(field("getrandom"), "16,16 differ=1");
    assert_eq!(field("pagesize"), "4096");
    assert_eq!(field("isatty"), "0");
}

#[test]
fn rust_static_program() {
    let rust = program("rust_hello", Flavor::RustStatic);
    let mut sb = sandbox();
    let out = sb.run(&Command::new(&rust).args(["a", "b c"]).env("GREETING", "hej").stdin("b a b\nc")).unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", out.stderr_str());
    assert_eq!(
        out.stdout_str(),
        "hello from rust, args=[\"a\", \"b c\"]\ngreeting=hej\nwords=[(\"a\", 1), (\"b\", 2), (\"c\", 1)]\nsum=49995000\n"
    );
    let out = sb.run(&Command::new(&rust).arg("fail")).unwrap();
    assert_eq!(out.status.code(), Some(9));
}

fn busybox(sb: &mut Sandbox, args: &[&str], stdin: &str) -> (i32, String) {
    let out = sb.run(&Command::new(BUSYBOX).args(args).stdin(stdin)).unwrap();
    assert_eq!(out.stderr_str(), "", "busybox {args:?} wrote to stderr");
    (out.status.shell_code(), out.stdout_str())
}

#[test]
fn debian_busybox_applets() {
    let mut sb = sandbox();
    assert_eq!(busybox(&mut sb, &["echo", "hello", "busybox"], ""), (0, "hello busybox\n".into()));
    assert_eq!(busybox(&mut sb, &["seq", "3"], ""), (0, "1\n2\n3\n".into()));
    assert_eq!(busybox(&mut sb, &["printf", "%s-%d\\n", "x", "42"], ""), (0, "x-42\n".into()));
    let (code, wc) = busybox(&mut sb, &["wc"], "one two\nthree\n");
    assert_eq!(code, 0);
    assert_eq!(wc.split_whitespace().collect::<Vec<_>>(), ["2", "3", "14"]);
    assert_eq!(busybox(&mut sb, &["wc", "-l"], "a\nb\nc\n").1.trim(), "3");
    assert_eq!(busybox(&mut sb, &["sort", "-r"], "b\nc\na\n"), (0, "c\nb\na\n".into()));
    assert_eq!(busybox(&mut sb, &["tr", "a-z", "A-Z"], "shout\n"), (0, "SHOUT\n".into()));
    assert_eq!(busybox(&mut sb, &["false"], ""), (1, String::new()));
}

#[test]
fn interrupt_handle_cancels_only_the_current_run() {
    let mut sb = sandbox();
    let handle = sb.interrupt_handle();
    // A kill while idle does not cancel the next run.
    handle.kill();
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");

    let killer = Killer::start(handle.clone(), Duration::from_millis(100));
    let err = sb.run(&Command::new(musl("loop"))).unwrap_err();
    drop(killer);
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{err}");
    // The next run is unaffected.
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

#[test]
fn sandboxes_are_send_and_many_can_run_in_parallel() {
    // What users hold (and bindings wrap) can move between threads and be
    // shared: owned types, no lifetimes.
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<hvsandbox::InterruptHandle>();
    assert_send_sync::<Sandbox>();
    assert_send_sync::<hvsandbox::Error>();
    assert_send_sync::<Command>();
    assert_send_sync::<hvsandbox::Output>();
    assert_send_sync::<hvsandbox::Snapshot>();
    assert_send_sync::<hvsandbox::SandboxPool>();
    assert_send_sync::<hvsandbox::PooledSandbox>();
    assert_send_sync::<hvsandbox::SandboxBuilder>();

    let hello = musl("hello");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let hello = hello.clone();
            std::thread::spawn(move || {
                let mut sb = sandbox();
                for _ in 0..10 {
                    assert_eq!(sb.run(&Command::new(&hello)).unwrap().stdout, b"hello, world\n");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn stopped_runs_keep_their_output() {
    // Timeout and cancel: what the program wrote (still buffered in the
    // guest) comes back with the error, as with subprocess.TimeoutExpired.
    // How soon the program gets to print depends on the host, so the stop
    // comes later and later until the program had printed: what comes back
    // is then exactly what it wrote (and before, nothing).
    let mut delay = Duration::from_millis(100);
    let mut seen = (false, false);
    while !(seen.0 && seen.1) {
        assert!(delay < Duration::from_secs(60), "the program never got to print");
        if !seen.0 {
            let mut sb = Sandbox::builder().timeout(delay).build().unwrap();
            let err = sb.run(&Command::new(musl("print_then_loop"))).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout);
            let partial = err.partial_output().expect("partial output");
            if !partial.stdout.is_empty() {
                assert_eq!(partial.stdout, b"partial line\n");
                assert_eq!(partial.stderr, b"err line\n");
                seen.0 = true;
            }
        }
        if !seen.1 {
            let mut sb = sandbox();
            let killer = Killer::start(sb.interrupt_handle(), delay);
            let err = sb.run(&Command::new(musl("print_then_loop"))).unwrap_err();
            drop(killer);
            assert_eq!(err.kind(), ErrorKind::Cancelled);
            let partial = err.partial_output().expect("partial output");
            if !partial.stdout.is_empty() {
                assert_eq!(partial.stdout, b"partial line\n");
                seen.1 = true;
            }
        }
        delay *= 2;
    }
    let mut sb = sandbox();
    // Other errors carry none.
    let err = sb.run(&Command::from_image("x", b"not elf".to_vec())).unwrap_err();
    assert!(err.partial_output().is_none());
}

#[test]
fn a_reused_sandbox_runs_any_program_on_its_vm_made_ahead() {
    // With a moment between runs, a sandbox makes the next run's VM and
    // boots its runtime as far as it goes without a program; each run then
    // hands over its own program, arguments, environment and files.
    let mut sb =
        Sandbox::builder().memory_mib(32).env("BASE", "1").file("/data/in.txt", "file data\n").build().unwrap();
    let pause = || std::thread::sleep(Duration::from_millis(20));
    for round in 0..3 {
        pause();
        let out = sb.run(&Command::new(musl("hello"))).unwrap();
        assert_eq!(out.stdout, b"hello, world\n", "round {round}");
        pause();
        let out = sb.run(&Command::new(musl("args_env")).arg(format!("r{round}")).env("X", "y")).unwrap();
        assert_eq!(out.stdout_str().lines().nth(2), Some(format!("argv[1]=r{round}").as_str()));
        assert!(out.stdout_str().contains("env:BASE=1\nenv:X=y\n"), "{}", out.stdout_str());
        pause();
        let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", "cat /data/in.txt; echo $0"])).unwrap();
        assert_eq!(out.stdout_str(), "file data\nsh\n", "{}", out.stderr_str());
        pause();
        // A program too large for the guest's memory is a configuration error, as before.
        let big = std::fs::read(BUSYBOX).unwrap().repeat(16);
        let err = sb.run(&Command::from_image("big", big)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    }
}
