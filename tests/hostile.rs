//! The hostile guest corpus: programs in `tests/hostile/` that attack the
//! sandbox from inside (endless loops, memory and fork bombs, output
//! floods, huge argument lists, garbage written over the guest's own CPU
//! tables and runtime through the physmap, jumps into the runtime,
//! privileged instructions, stack overflows, forged hypercalls, syscall
//! storms). Each test checks the typed outcome (bounded by the sandbox's
//! own timeout, never by a wall-clock assertion: hosts of this kind differ
//! tenfold in the cost of a guest system call) and that the host is
//! unharmed: a new sandbox, and the same one unless the error poisoned it,
//! still run the musl hello.

use std::time::{Duration, Instant};

use hvsandbox::{Command, ErrorKind, ExitStatus, Output, Result, Sandbox};
use hvsandbox_abi as abi;
use hvsandbox_tests::{hostile, musl, sandbox, TempDir};

// The C programs in tests/hostile/ hard-code these ABI facts.
const _: () = {
    assert!(abi::PHYS_BASE == 0x7f00_0000_0000);
    assert!(abi::GDT_GPA == 0x1000 && abi::IDT_GPA == 0x2000 && abi::TSS_GPA == 0x3000);
    assert!(abi::HCALL_GPA == 0x4000 && abi::RING0_STACK_GPA == 0x5000 && abi::BOOT_INFO_GPA == 0xa000);
    assert!(abi::IST_STACK_GPA + abi::IST_STACK_SIZE == abi::BOOT_INFO_GPA);
    assert!(abi::STATS_GPA == 0xb000 && abi::STATS_SIZE == 0x2000);
    assert!(abi::PAGE_TABLES_GPA == 0x10_0000 && abi::PAGE_TABLES_MAX == 0x10_0000);
    assert!(abi::RUNTIME_GPA == 0x20_0000 && abi::RUNTIME_HEAP_VA == 0x7f80_0000_0000);
    assert!(abi::DOORBELL_VA == 0x7f10_0000_0000 && abi::HCALL_MAX_LEN == 1 << 20);
    assert!(abi::RUNTIME_MAGIC == 0x3130_5452_4253_5648);
    assert!(abi::hc::WRITE == 1 && abi::hc::EXEC_FAILED == 15 && abi::hc::LOG == 7 && abi::hc::SLEEP == 6);
    // out_buffers_gpa is the 7th u64 of RuntimeStats.
    assert!(std::mem::offset_of!(abi::RuntimeStats, out_buffers_gpa) == 48);
    // mem_size is the 3rd u64 of BootInfo.
    assert!(std::mem::offset_of!(abi::BootInfo, mem_size) == 16);
};

/// A 64 MiB sandbox with the given timeout.
fn sandbox_with_timeout(timeout: Duration) -> Sandbox {
    Sandbox::builder().memory_mib(64).timeout(timeout).build().expect("build sandbox")
}

/// How a run ended, for messages.
fn describe(r: &Result<Output>) -> String {
    match r {
        Ok(out) => format!(
            "{:?} fault={:?} stdout={:?} stderr={:?}",
            out.status,
            out.fault,
            String::from_utf8_lossy(&out.stdout[..out.stdout.len().min(300)]),
            String::from_utf8_lossy(&out.stderr[..out.stderr.len().min(300)])
        ),
        Err(e) => format!("Err({:?}: {e})", e.kind()),
    }
}

/// Runs `cmd` in `sb` and says how long it took (for messages and the
/// lower bound of [`assert_timeout`]; the sandbox's timeout bounds it).
fn run_timed(sb: &mut Sandbox, cmd: &Command) -> (Result<Output>, Duration) {
    let start = Instant::now();
    let r = sb.run(cmd);
    (r, start.elapsed())
}

fn hello_runs(sb: &mut Sandbox) {
    let out = sb.run(&Command::new(musl("hello"))).unwrap_or_else(|e| panic!("hello after an attack: {e}"));
    assert_eq!(out.status, ExitStatus::Code(0));
    assert_eq!(out.stdout_str(), "hello, world\n");
}

/// The host is unharmed by the run that gave `r` in `sb`: a new sandbox
/// runs hello; so does `sb`, unless `r` poisoned it (then it says so).
fn host_unharmed(sb: &mut Sandbox, r: &Result<Output>) {
    hello_runs(&mut sandbox());
    match r {
        Err(e) if e.poisons() => {
            let again = sb.run(&Command::new(musl("hello"))).unwrap_err();
            assert_eq!(again.kind(), ErrorKind::SandboxPoisoned, "{again}");
        }
        _ => hello_runs(sb),
    }
}

/// The run was stopped by its deadline: a Timeout, not early. (How late
/// depends on the host's load and speed: reported, not asserted.)
fn assert_timeout(r: &Result<Output>, took: Duration, limit: Duration, what: &str) {
    match r {
        Err(e) if e.kind() == ErrorKind::Timeout => {}
        _ => panic!("{what}: expected a timeout, got {}", describe(r)),
    }
    assert!(took >= limit, "{what}: stopped early, after {took:?}");
    eprintln!("{what}: stopped {:?} after its deadline", took - limit);
}

/// The attack stayed inside the guest: the program ended with a status, or
/// the guest was declared crashed or out of time — never a host-side
/// failure (Internal, JailViolation, a panic, a hang).
fn assert_contained(r: &Result<Output>, what: &str) {
    if let Err(e) = r {
        assert!(matches!(e.kind(), ErrorKind::GuestCrashed | ErrorKind::Timeout), "{what}: {}", describe(r));
    }
}

fn assert_crashed(r: &Result<Output>, what: &str) {
    match r {
        Err(e) if e.kind() == ErrorKind::GuestCrashed => {}
        _ => panic!("{what}: expected GuestCrashed, got {}", describe(r)),
    }
}

fn assert_status(r: &Result<Output>, status: ExitStatus, what: &str) -> Output {
    match r {
        Ok(out) if out.status == status => out.clone(),
        _ => panic!("{what}: expected {status:?}, got {}", describe(r)),
    }
}

// ---- endless loops -----------------------------------------------------

#[test]
fn infinite_loop_times_out_at_the_deadline() {
    let limit = Duration::from_millis(300);
    let mut sb = sandbox_with_timeout(limit);
    let (r, took) = run_timed(&mut sb, &Command::new(hostile("spin")).arg("loop"));
    assert_timeout(&r, took, limit, "jmp .");
    assert_eq!(r.as_ref().unwrap_err().partial_output().unwrap().stdout, b"spinning: loop\n");
    host_unharmed(&mut sb, &r);
}

#[test]
fn spinning_signal_handlers_and_endless_sleeps_time_out() {
    let limit = Duration::from_millis(300);
    let mut sb = sandbox_with_timeout(limit);
    for how in ["alrm", "usr1", "nested", "sleep", "pause"] {
        let (r, took) = run_timed(&mut sb, &Command::new(hostile("spin")).arg(how));
        assert_timeout(&r, took, limit, how);
        assert_eq!(r.as_ref().unwrap_err().partial_output().unwrap().stdout, format!("spinning: {how}\n").as_bytes());
        host_unharmed(&mut sb, &r);
    }
}

// ---- memory ------------------------------------------------------------

#[test]
fn memory_bomb_takes_memory_until_enomem() {
    let mut sb = sandbox();
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("membomb")).arg("grab"));
    let out = assert_status(&r, ExitStatus::Code(0), "grab");
    let text = out.stdout_str();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let steps = |line: &str, prefix: &str| -> u64 {
        let rest = line.strip_prefix(prefix).unwrap_or_else(|| panic!("{text}"));
        rest.split(' ').next().unwrap().parse().unwrap()
    };
    // Most of the 64 MiB, in 256 KiB steps, and never more than there is.
    let maps = steps(lines[0], "mmap_steps=");
    assert!((100..256).contains(&maps), "{text}");
    assert!(lines[0].ends_with(" errno=12 Out of memory"), "{text}");
    let brks = steps(lines[1], "brk_steps=");
    assert!((100..256).contains(&brks), "{text}");
    assert!(lines[1].ends_with(" brk_failed=1"), "{text}");
    assert_eq!(lines[2], "after giving back: mmap ok");
    assert!(out.stats.memory_used <= 64 << 20);
    host_unharmed(&mut sb, &r);
}

#[test]
fn memory_bomb_touching_more_than_ram_is_contained() {
    // 4 GiB mapped lazily in a 64 MiB guest, then every page written: the
    // run ends as out of memory — not a crash of the runtime, not a hang.
    let mut sb = sandbox();
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("membomb")).arg("touch"));
    match &r {
        Err(e) if e.kind() == ErrorKind::MemoryLimitExceeded => {
            assert_eq!(e.partial_output().unwrap().stdout, b"mapped 4096 MiB, touching\n");
        }
        _ => panic!("touch: expected MemoryLimitExceeded, got {}", describe(&r)),
    }
    host_unharmed(&mut sb, &r);

    // The same in a child process: the child dies of SIGKILL (as from Linux's
    // OOM killer), the parent goes on.
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("membomb")).arg("touch-child"));
    let out = assert_status(&r, ExitStatus::Code(0), "touch-child");
    assert!(out.stdout_str().ends_with("touching\nchild: signaled 9\n"), "{}", out.stdout_str());
    host_unharmed(&mut sb, &r);
}

// ---- processes ---------------------------------------------------------

#[test]
fn fork_bomb_stops_at_the_process_limit() {
    for (limit, mut sb) in
        [(64, sandbox()), (8, Sandbox::builder().max_processes(8).timeout(Duration::from_secs(10)).build().unwrap())]
    {
        let (r, _) = run_timed(&mut sb, &Command::new(hostile("forkbomb")));
        let out = assert_status(&r, ExitStatus::Code(0), "fork bomb");
        let text = out.stdout_str();
        let forks: u64 = text
            .strip_prefix("root: forks=")
            .and_then(|s| s.strip_suffix(" errno=11 Resource temporarily unavailable\n"))
            .unwrap_or_else(|| panic!("{text}"))
            .parse()
            .unwrap();
        assert!((1..limit).contains(&forks), "{text}");
        assert_eq!(out.stats.processes, limit - 1, "every slot but the first process's");
        host_unharmed(&mut sb, &r);
    }
}

// ---- output ------------------------------------------------------------

#[test]
fn stdout_and_stderr_flood_at_once_is_truncated_at_the_cap() {
    let cap = 256 * 1024;
    // 600k system calls: the timeout only guards against a hang.
    let mut sb = Sandbox::builder().max_output(cap).timeout(Duration::from_secs(300)).build().unwrap();
    // 64 MiB to each stream in alternating 64 KiB and 1 MiB writes, and
    // 300 KiB to each in 1-byte writes (600k syscalls).
    for (kib, size) in [("65536", "65536"), ("65536", "1048576"), ("300", "1")] {
        let (r, _) = run_timed(&mut sb, &Command::new(hostile("flood")).args([kib, size]));
        let out = assert_status(&r, ExitStatus::Code(0), "flood: every write is accepted in full");
        assert_eq!(out.stdout.len(), cap);
        assert_eq!(out.stderr.len(), cap);
        assert!(out.stdout.iter().all(|&b| b == b'o'), "stdout holds only stdout's bytes");
        assert!(out.stderr.iter().all(|&b| b == b'e'), "stderr holds only stderr's bytes");
        assert!(out.stdout_truncated && out.stderr_truncated);
        host_unharmed(&mut sb, &r);
    }
}

// ---- argument lists ----------------------------------------------------

#[test]
fn huge_argv_and_env_from_the_host_are_invalid_config() {
    let mut sb = sandbox();
    let hello = musl("hello");
    let big = "v".repeat(10 << 20);
    let commands = [
        ("100k args", Command::new(&hello).args((0..100_000).map(|i| format!("argument-{i}")))),
        ("10 MiB env var", Command::new(&hello).env("BIG", &big)),
        ("10 MiB arg", Command::new(&hello).arg(&big)),
        ("1M empty args", Command::new(&hello).args(std::iter::repeat_n("", 1_000_000))),
    ];
    for (what, cmd) in commands {
        let r = sb.run(&cmd);
        match &r {
            Err(e) => assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{what}: {e}"),
            Ok(_) => panic!("{what}: expected InvalidConfig, got {}", describe(&r)),
        }
        host_unharmed(&mut sb, &r);
    }
    // The same through the sandbox's own environment.
    let mut sb = Sandbox::builder().env("BIG", &big).build().unwrap();
    let r = sb.run(&Command::new(&hello));
    assert_eq!(r.as_ref().unwrap_err().kind(), ErrorKind::InvalidConfig, "{}", describe(&r));
}

#[test]
fn a_hundred_thousand_args_from_the_host_reach_the_program() {
    // 100k one-byte args fit in the argument area (and within Linux's
    // limits): the program gets them. Already 20k crash.
    let mut sb = sandbox();
    let cmd = Command::new(hostile("bigexec")).arg("child").args(std::iter::repeat_n("x", 100_000));
    let (r, _) = run_timed(&mut sb, &cmd);
    let out = assert_status(&r, ExitStatus::Code(0), "100k one-byte args");
    assert_eq!(out.stdout_str(), "exec'd: argc=100002 bytes=100000\n");
    host_unharmed(&mut sb, &r);
}

#[test]
fn guest_execve_with_huge_argv_is_e2big() {
    let (r, mut sb) = bigexec_in_guest(64);
    let out = assert_status(&r, ExitStatus::Code(0), "bigexec");
    assert_eq!(out.stdout_str(), format!("{E2BIG_LINES}exec'd: argc=3 bytes=65535\n"), "{}", out.stderr_str());
    host_unharmed(&mut sb, &r);
}

#[test]
fn guest_execve_with_a_mebibyte_of_arguments_runs() {
    let (r, mut sb) = bigexec_in_guest(1024);
    let out = assert_status(&r, ExitStatus::Code(0), "bigexec 1024");
    assert_eq!(out.stdout_str(), format!("{E2BIG_LINES}exec'd: argc=18 bytes={}\n", 16 * 65535));
    host_unharmed(&mut sb, &r);
}

/// What bigexec prints for its attempts that must fail.
const E2BIG_LINES: &str = "one 3 MiB arg: errno=7 Argument list too long\n\
                           48 args of 64 KiB: errno=7 Argument list too long\n\
                           300000 args: errno=7 Argument list too long\n\
                           3 MiB env var: errno=7 Argument list too long\n\
                           argv at 0x10: errno=14 Bad address\n";

/// Runs bigexec with itself at /bin/self in the guest, its last exec
/// passing `fit_kib` KiB of arguments.
fn bigexec_in_guest(fit_kib: u32) -> (Result<Output>, Sandbox) {
    let exe = hostile("bigexec");
    let mut sb = sandbox();
    let image = std::fs::read(&exe).unwrap();
    let cmd = Command::new(&exe).args(["/bin/self".to_string(), fit_kib.to_string()]);
    let cmd = cmd.file_with_mode("/bin/self", image, 0o755);
    let (r, _) = run_timed(&mut sb, &cmd);
    (r, sb)
}

// ---- garbage through the physmap -------------------------------------

/// Runs `physmap TARGET TRIGGER` in a fresh sandbox with a short timeout;
/// checks it ends promptly and the host is unharmed.
fn physmap(target: &str, trigger: &str) -> Result<Output> {
    let limit = Duration::from_millis(500);
    let mut sb = sandbox_with_timeout(limit);
    let (r, took) = run_timed(&mut sb, &Command::new(hostile("physmap")).args([target, trigger]));
    eprintln!("physmap {target} {trigger}: {} in {took:?}", describe(&r));
    assert_contained(&r, &format!("{target} {trigger}"));
    if let Err(e) = &r {
        if e.kind() == ErrorKind::Timeout {
            assert!(took >= limit, "{target} {trigger}: stopped early");
        }
    }
    host_unharmed(&mut sb, &r);
    r
}

#[test]
fn physmap_garbage_over_the_cpu_tables_crashes_only_the_guest() {
    // The CPU reads the GDT, IDT and TSS only when it takes an exception:
    // until then the program goes on; then the fault cannot be delivered
    // (a triple fault), which is the guest's crash.
    for target in ["gdt", "idt", "idt-zero", "tss"] {
        let _ = physmap(target, "syscall");
        for trigger in ["fault", "flush"] {
            assert_crashed(&physmap(target, trigger), &format!("{target} {trigger}"));
        }
    }
}

#[test]
fn physmap_garbage_over_page_tables_and_all_ram_is_contained() {
    for target in ["page-tables", "page-tables-zero", "all-ram"] {
        for trigger in ["syscall", "fault", "flush"] {
            let _ = physmap(target, trigger);
        }
    }
}

#[test]
fn physmap_garbage_over_the_runtime_is_contained() {
    for target in ["runtime-int3", "runtime-jmp-self", "runtime-data", "runtime-heap", "boot-info"] {
        for trigger in ["syscall", "fault"] {
            let _ = physmap(target, trigger);
        }
    }
    let _ = physmap("runtime-data", "spin");
}

#[test]
fn physmap_garbage_in_pages_the_host_reads_is_harmless() {
    // The hypercall block, the ring-0 stacks and the statistics pages: the
    // runtime rewrites what it uses, the host checks what it reads.
    for target in ["hcall", "ring0-stacks", "stats", "stats-out-buffers"] {
        let r = physmap(target, "syscall");
        let out = assert_status(&r, ExitStatus::Code(0), target);
        assert!(out.stdout_str().ends_with("after\n"), "{target}: {}", out.stdout_str());
        assert!(out.stats.unknown_syscalls.len() <= abi::UNKNOWN_SLOTS);
        let r = physmap(target, "fault");
        assert_status(&r, ExitStatus::Signal(libc::SIGILL), target);
    }
    // A stopped run makes the host salvage the guest's output buffers from
    // where the (garbage) statistics page says they are.
    for target in ["stats", "stats-out-buffers"] {
        let r = physmap(target, "spin");
        let e = r.as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout, "{target}: {e}");
        assert!(e.partial_output().unwrap().stdout.len() <= 64 << 10);
    }
}

// ---- jumps into the runtime ------------------------------------------

/// Runs `jump ARGS` in a fresh sandbox; checks promptness and the host.
fn jump(args: &[&str]) -> Result<Output> {
    let limit = Duration::from_millis(500);
    let mut sb = sandbox_with_timeout(limit);
    let (r, took) = run_timed(&mut sb, &Command::new(hostile("jump")).args(args));
    eprintln!("jump {args:?}: {} in {took:?}", describe(&r));
    assert_contained(&r, &format!("{args:?}"));
    host_unharmed(&mut sb, &r);
    r
}

#[test]
fn jumps_into_the_runtimes_code_are_contained() {
    let _ = jump(&["entry"]);
    let _ = jump(&["entry-junk"]);
    for off in ["0", "40", "1000", "5000", "10001", "20000"] {
        let _ = jump(&["text", off]);
    }
    for stub in ["0", "6", "8", "13", "14", "31"] {
        let _ = jump(&["stub", stub]);
    }
}

#[test]
fn syscall_entry_reached_by_a_jump_with_crafted_registers() {
    // At CPL3 a `syscall` changes only RIP and RFLAGS, so a jump to the
    // entry with RCX and R11 set is a system call: exit_group(7).
    assert_status(&jump(&["syscall-exit"]), ExitStatus::Code(7), "syscall-exit");
    // "Returning" to RCX = 0 is the program's own fault at address 0.
    for how in ["syscall-ret", "syscall-rsp"] {
        let out = assert_status(&jump(&[how]), ExitStatus::Signal(libc::SIGSEGV), how);
        let fault = out.fault.expect("fault details");
        assert_eq!((fault.vector, fault.rip, fault.address), (14, 0, Some(0)), "{how}");
    }
    // "Returning" into the runtime itself.
    let _ = jump(&["syscall-into"]);
    let _ = jump(&["syscall-into-entry"]);
}

// ---- privileged and trapping instructions ----------------------------

/// Runs `priv NAME` in `sb` and checks the status and the fault's vector.
fn instruction(sb: &mut Sandbox, name: &str, signal: i32, vector: u8) {
    let (r, _) = run_timed(sb, &Command::new(hostile("priv")).arg(name));
    let out = assert_status(&r, ExitStatus::Signal(signal), name);
    assert_eq!(out.stdout_str(), format!("executing {name}\n"));
    assert_eq!(out.fault.map(|f| f.vector), Some(vector), "{name}: {:?}", out.fault);
    host_unharmed(sb, &r);
}

#[test]
fn privileged_instructions_are_sigsegv() {
    let mut sb = sandbox();
    for name in [
        "hlt",
        "out",
        "in",
        "out-dx",
        "wrmsr",
        "rdmsr",
        "cli",
        "sti",
        "iopl-cli",
        "lgdt",
        "lidt",
        "ltr",
        "mov-cr3",
        "read-cr3",
        "mov-cr0",
        "invlpg",
        "wbinvd",
        "xsetbv",
        "swapgs",
        "sysret",
        "lret-kernel",
        "iret-kernel",
        "mov-ds-kernel",
    ] {
        instruction(&mut sb, name, libc::SIGSEGV, abi::vector::GENERAL_PROTECTION as u8);
    }
}

#[test]
fn trapping_instructions_are_their_linux_signals() {
    let mut sb = sandbox();
    instruction(&mut sb, "int3", libc::SIGTRAP, abi::vector::BREAKPOINT as u8);
    instruction(&mut sb, "int-3", libc::SIGTRAP, abi::vector::BREAKPOINT as u8);
    instruction(&mut sb, "ud2", libc::SIGILL, abi::vector::INVALID_OPCODE as u8);
    instruction(&mut sb, "div0", libc::SIGFPE, abi::vector::DIVIDE_ERROR as u8);
    instruction(&mut sb, "idiv-overflow", libc::SIGFPE, abi::vector::DIVIDE_ERROR as u8);
}

/// Runs `priv <name>`: it must end by a signal `signal_ok` accepts, or
/// survive (exit 0 after printing so), or — with `error_ok` — end with a
/// typed error other than a timeout; the host must be unharmed after.
fn priv_contained(sb: &mut Sandbox, name: &str, signal_ok: fn(i32) -> bool, error_ok: bool) {
    let (r, _) = run_timed(sb, &Command::new(hostile("priv")).arg(name));
    match &r {
        Ok(out) if out.status.signal().is_some_and(signal_ok) => {}
        Ok(out) if out.status == ExitStatus::Code(0) => assert!(out.stdout_str().ends_with("survived\n")),
        Err(e) if error_ok && e.kind() != ErrorKind::Timeout => {}
        _ => panic!("{name}: {}", describe(&r)),
    }
    host_unharmed(sb, &r);
}

#[test]
fn a_forged_tlb_flush_request_is_contained() {
    // The runtime asks ring 0 for a CR3 load with an int3 whose RCX is the
    // address after it. A program can forge that: it then only reloads
    // its own VM's CR3, and a bad value ends the run with a typed error or
    // a signal, never a hang or a harmed host.
    let mut sb = sandbox();
    for name in ["forged-flush-garbage", "forged-flush-zero"] {
        priv_contained(&mut sb, name, |_| true, true);
    }
    // An int3 whose RCX is not the address after it is the program's own.
    instruction(&mut sandbox(), "int3-rcx-elsewhere", libc::SIGTRAP, abi::vector::BREAKPOINT as u8);
}

#[test]
fn int_n_is_what_linux_gives() {
    let mut sb = sandbox();
    // A software "page fault": the IDT gate has DPL 0, so #GP.
    instruction(&mut sb, "int-14", libc::SIGSEGV, abi::vector::GENERAL_PROTECTION as u8);
    // int $0x80 with EAX = 1: exit(42) on a Linux with IA-32 emulation,
    // SIGSEGV without it.
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("priv")).arg("int80"));
    match &r {
        Ok(out) if out.status == ExitStatus::Code(42) || out.status == ExitStatus::Signal(libc::SIGSEGV) => {}
        _ => panic!("int80: {}", describe(&r)),
    }
}

#[test]
fn hypervisor_calls_from_the_program_are_contained() {
    // vmcall/vmmcall: #UD on bare metal, a no-op under KVM, #GP under PVM.
    let mut sb = sandbox();
    for name in ["vmcall", "vmmcall"] {
        priv_contained(&mut sb, name, |sig| sig == libc::SIGILL || sig == libc::SIGSEGV, false);
    }
}

// ---- stack overflow ----------------------------------------------------

#[test]
fn stack_overflow_is_sigsegv() {
    let mut sb = sandbox();
    for how in ["plain", "handler"] {
        let (r, _) = run_timed(&mut sb, &Command::new(hostile("recurse")).arg(how));
        let out = assert_status(&r, ExitStatus::Signal(libc::SIGSEGV), how);
        assert_eq!(out.stdout_str(), "recursing\n");
        assert_eq!(out.fault.map(|f| f.vector), Some(abi::vector::PAGE_FAULT as u8));
        host_unharmed(&mut sb, &r);
    }
}

#[test]
fn stack_overflow_handler_runs_on_the_alternate_stack() {
    let mut sb = sandbox();
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("recurse")).arg("altstack"));
    let out = assert_status(&r, ExitStatus::Code(42), "altstack");
    assert_eq!(out.stdout_str(), "recursing\ncaught SIGSEGV\n");
    host_unharmed(&mut sb, &r);
}

// ---- forged hypercalls -------------------------------------------------

#[test]
fn a_loop_of_malformed_hypercalls_is_answered_promptly() {
    let mut sb = sandbox();
    let (r, took) = run_timed(&mut sb, &Command::new(hostile("hypercall")).arg("loop"));
    let out = assert_status(&r, ExitStatus::Code(0), "loop");
    // 10000 = 833 * 12 + 4: the first four kinds come 834 times.
    assert_eq!(out.stdout_str(), "calls=10000 zero=3332 ebadf=5002 enametoolong=1666 other=0\n");
    assert!(out.stats.exits >= 10_000, "{} exits", out.stats.exits);
    eprintln!("10^4 forged hypercalls in {took:?}");
    host_unharmed(&mut sb, &r);
}

#[test]
fn forged_reads_into_frames_fill_only_what_the_file_has() {
    // FS_READ_FRAMES from CPL3: a bad handle is EBADF; the file's bytes go
    // into the frame named (the boot-information page, which the runtime
    // no longer reads); past the end of the file nothing is read.
    let dir = TempDir::new("frames");
    std::fs::write(dir.path("f.txt"), "contents\n").unwrap();
    let mut sb = Sandbox::builder().mount(&dir.0, "/mnt").timeout(Duration::from_secs(5)).build().unwrap();
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("hypercall")).arg("frames"));
    let out = assert_status(&r, ExitStatus::Code(0), "frames");
    let last = out.stdout_str().lines().last().unwrap_or_default().to_string();
    assert_eq!(last, "bad handle=-9 read=9 past the end=0: contents", "{}", out.stdout_str());
    host_unharmed(&mut sb, &r);
}

/// What a single forged hypercall must end in.
enum Expect {
    Crash,
    Status(ExitStatus),
    Kind(ErrorKind),
}

#[test]
fn single_malformed_hypercalls_end_only_their_own_run() {
    use Expect::*;
    let dir = std::env::temp_dir().join(format!("hvsandbox-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f.txt"), "contents\n").unwrap();
    let cases = [
        ("nr-0", Crash),
        ("nr-max", Crash),
        ("nr-1000", Crash),
        ("write-fd-3", Crash),
        ("write-past-ram", Crash),
        ("write-wrap", Crash),
        ("write-too-long", Crash),
        ("write-len-max", Crash),
        ("write-user-va", Crash),
        ("read-wild", Crash),
        ("fs-read-wild", Crash),
        ("fs-read-too-long", Crash),
        ("fs-lookup-wild-stat", Crash),
        ("fs-read-frames-wild-list", Crash),
        ("fs-read-frames-too-many", Crash),
        ("fs-read-frames-unaligned", Crash),
        ("fs-read-frames-past-ram", Crash),
        ("file-out-wild", Crash),
        ("program-fault-vector", Crash),
        ("forged-fault", Crash),
        ("forged-fault-ring0-stack", Crash),
        ("panic-wild", Crash),
        ("bell-4-bytes", Crash),
        ("bell-1-byte", Crash),
        ("bell-16-bytes", Crash),
        ("bell-offset", Crash),
        ("bell-read", Crash),
        ("bell-xchg", Crash),
        ("bell-rep-movs", Crash),
        // A store that runs off the doorbell's page faults in the guest.
        ("bell-last-byte", Status(ExitStatus::Signal(libc::SIGSEGV))),
        ("bell-page-end", Status(ExitStatus::Signal(libc::SIGSEGV))),
        // EXIT takes the low 8 bits of the code; a signal over 64 is none.
        ("exit-junk", Status(ExitStatus::Code(0x34))),
        ("exec-failed-wild", Kind(ErrorKind::InvalidProgram)),
    ];
    for (name, expect) in cases {
        let mut sb = Sandbox::builder().mount(&dir, "/mnt").timeout(Duration::from_secs(5)).build().unwrap();
        let (r, _) = run_timed(&mut sb, &Command::new(hostile("hypercall")).args(["one", name]));
        match expect {
            Crash => assert_crashed(&r, name),
            Status(status) => {
                assert_status(&r, status, name);
            }
            Kind(kind) => assert_eq!(r.as_ref().err().map(|e| e.kind()), Some(kind), "{name}: {}", describe(&r)),
        }
        host_unharmed(&mut sb, &r);
    }
    // A 32-byte AVX store to the doorbell: KVM cannot emulate it (or the
    // CPU has no AVX).
    let mut sb = sandbox();
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("hypercall")).args(["one", "bell-32-bytes"]));
    match &r {
        Ok(out) if out.status == ExitStatus::Signal(libc::SIGILL) => {}
        _ => assert_crashed(&r, "bell-32-bytes"),
    }
    host_unharmed(&mut sb, &r);
    // An endless host sleep ends at the deadline.
    let limit = Duration::from_millis(300);
    let mut sb = sandbox_with_timeout(limit);
    let (r, took) = run_timed(&mut sb, &Command::new(hostile("hypercall")).args(["one", "sleep-forever"]));
    assert_timeout(&r, took, limit, "sleep-forever");
    host_unharmed(&mut sb, &r);
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---- stdin and syscalls ------------------------------------------------

#[test]
fn reading_past_the_end_of_stdin_returns_zero() {
    let mut sb = sandbox();
    let input = vec![b'z'; 100_000];
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("stdin_eof")).stdin(&input));
    let out = assert_status(&r, ExitStatus::Code(0), "stdin_eof");
    assert_eq!(out.stdout_str(), "total=100000 zeros=10000 other=0 zero_len=0\n");
    // Without stdin: EOF at once.
    let (r, _) = run_timed(&mut sb, &Command::new(hostile("stdin_eof")));
    let out = assert_status(&r, ExitStatus::Code(0), "stdin_eof");
    assert_eq!(out.stdout_str(), "total=0 zeros=10000 other=0 zero_len=0\n");
    host_unharmed(&mut sb, &r);
}

#[test]
fn a_storm_of_a_million_syscalls_completes() {
    // A million system calls: the timeout only guards against a hang.
    let mut sb = Sandbox::builder().timeout(Duration::from_secs(300)).build().unwrap();
    let (r, took) = run_timed(&mut sb, &Command::new(hostile("storm")));
    let out = assert_status(&r, ExitStatus::Code(0), "storm");
    assert_eq!(out.stdout_str(), "calls=1000000 same=1 pid_positive=1\n");
    assert!(out.stats.syscalls >= 1_000_000, "{} syscalls", out.stats.syscalls);
    eprintln!("10^6 getpid in {took:?}");
    host_unharmed(&mut sb, &r);
}
