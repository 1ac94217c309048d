//! Limits, each with its typed outcome: wall-clock and CPU time, memory,
//! output, processes, open files, input; and cancellation that never
//! reaches a later run.

use std::time::Duration;

use hvsandbox::{Command, ErrorKind, ExitStatus, Sandbox};
use hvsandbox_tests::{musl, sandbox, Killer, TempDir, BUSYBOX};

#[test]
fn cpu_time_limit_stops_spinning_but_not_sleeping() {
    let mut sb =
        Sandbox::builder().cpu_time(Duration::from_millis(200)).timeout(Duration::from_secs(10)).build().unwrap();
    // The CPU-time limit, not the 10 s deadline, stops it.
    let err = sb.run(&Command::new(musl("loop"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(matches!(err, hvsandbox::Error::Timeout { cpu: true, .. }), "{err:?}");
    assert!(err.to_string().contains("CPU-time limit"), "{err}");
    // Sleeping costs no CPU: a 600 ms sleep finishes under a 200 ms CPU limit.
    let out = sb.run(&Command::new(BUSYBOX).args(["sleep", "0.6"])).unwrap();
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(out.stats.wall >= Duration::from_millis(600));
    // Zero is not a limit.
    let e = Sandbox::builder().cpu_time(Duration::ZERO).build().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

#[test]
fn memory_limit_is_enomem_then_a_typed_error() {
    let mut sb = Sandbox::builder().memory_mib(32).build().unwrap();
    // One allocation larger than the sandbox: the program gets NULL.
    let out = sb.run(&Command::new(musl("malloc10m")).arg("40")).unwrap();
    assert_eq!(out.stdout_str(), "malloc failed\n");
    assert_eq!(out.status.code(), Some(1));
    // Mappings that each fit but together do not: touching them runs the
    // sandbox out of memory; for the first process that is a typed error
    // carrying what it printed so far.
    let err = sb.run(&Command::new(musl("oom"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::MemoryLimitExceeded, "{err}");
    assert_eq!(err.kind().code(), "MEMORY_LIMIT_EXCEEDED");
    let partial = err.partial_output().unwrap();
    assert!(partial.stdout.starts_with(b"start\ntouched 0\n"), "{:?}", String::from_utf8_lossy(&partial.stdout));
    // A child that runs out dies of SIGKILL, as with Linux's OOM killer,
    // and its parent goes on.
    let out = sb.run(&Command::new(musl("oom")).arg("child")).unwrap();
    assert!(out.stdout_str().ends_with("child signaled=1 sig=9\n"), "{}", out.stdout_str());
    assert_eq!(out.status.code(), Some(0));
    // Not poisoned.
    assert_eq!(sb.run(&Command::new(musl("hello"))).unwrap().stdout, b"hello, world\n");
}

/// Guests up to 4064 MiB get a local APIC in the kernel, whose registers
/// sit at guest-physical 0xfee00000; larger ones go without, so that none
/// of their RAM is hidden there. Shown with a program whose code the
/// runtime keeps at exactly that address: the program's file lies at the
/// top of RAM, below the page-table pool (its size a sixteenth of RAM), so
/// padding the file moves its code to where it must be. Its hash of its
/// own code must come out as in a small guest.
#[test]
fn guests_below_and_above_the_apic_page_run() {
    const APIC_PAGE: u64 = 0xfee0_0000;
    const MIB: u64 = 1 << 20;
    let elf = std::fs::read(musl("memsum")).unwrap();
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([elf[o], elf[o + 1]]));
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36) as usize, u16_at(0x38) as usize);
    // The file offset of the first executable LOAD segment.
    let code = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&ph| elf[ph..ph + 4] == 1u32.to_le_bytes() && elf[ph + 4] & 1 != 0)
        .map(|ph| u64_at(ph + 8))
        .expect("an executable segment");
    let mem = 4352 * MIB;
    let pool_start = mem - mem / 16;
    let mut padded = elf.clone();
    padded.resize((pool_start - (APIC_PAGE - code)) as usize, 0);
    let dir = TempDir::new("apic-page");
    let path = dir.0.join("memsum");
    std::fs::write(&path, &padded).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let run = |mib: u64| {
        let mut sb = Sandbox::builder().memory_bytes(mib * MIB).build().unwrap();
        let out = sb.run(&Command::new(&path).args(["memsum", "x"])).unwrap();
        assert_eq!(out.status, ExitStatus::Code(0), "{mib} MiB: {}", out.stderr_str());
        // (The data's hash, and the arguments', hold per-run values.)
        let hashes = ["text ", "heap sum "];
        out.stdout_str()
            .lines()
            .filter(|l| hashes.iter().any(|h| l.starts_with(h)))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let small = run(64);
    assert_eq!(small.len(), 2, "hash lines: {small:?}");
    assert_eq!(run(mem / MIB), small, "code and data at the APIC page's address");
    // Just below the APIC page: a guest with one.
    assert_eq!(run(4064), small, "4064 MiB");
}

#[test]
fn output_limit_truncates_or_fails_on_request() {
    let mut sb = Sandbox::builder().max_output(1000).build().unwrap();
    let out = sb.run(&Command::new(BUSYBOX).args(["seq", "10000"])).unwrap();
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.stdout_truncated);
    let mut sb = Sandbox::builder().max_output(1000).fail_on_output_limit(true).build().unwrap();
    let err = sb.run(&Command::new(BUSYBOX).args(["seq", "10000"])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutputLimitExceeded, "{err}");
    assert!(err.to_string().contains("stdout"), "{err}");
    let partial = err.partial_output().unwrap();
    assert_eq!(partial.stdout.len(), 1000);
    assert!(partial.stdout.starts_with(b"1\n2\n3\n"));
    // Under the limit nothing happens.
    assert_eq!(sb.run(&Command::new(BUSYBOX).args(["seq", "3"])).unwrap().stdout, b"1\n2\n3\n");
}

#[test]
fn open_file_limit_is_emfile() {
    let mut sb = Sandbox::builder().max_open_files(16).build().unwrap();
    let out = sb.run(&Command::new(musl("open_files"))).unwrap();
    assert_eq!(out.stdout_str(), "opened=13 error=No file descriptors available\n");
    let mut sb = sandbox();
    let out = sb.run(&Command::new(musl("open_files"))).unwrap();
    assert_eq!(out.stdout_str(), "opened=1021 error=No file descriptors available\n");
    for bad in [0, 2, 100_000] {
        assert_eq!(Sandbox::builder().max_open_files(bad).build().unwrap_err().kind(), ErrorKind::InvalidConfig);
    }
    assert_eq!(Sandbox::builder().max_processes(0).build().unwrap_err().kind(), ErrorKind::InvalidConfig);
}

#[test]
fn input_limit_is_checked_before_the_run() {
    let mut sb = Sandbox::builder().max_input(1000).build().unwrap();
    let err = sb.run(&Command::new(musl("cat")).stdin(vec![b'x'; 1001])).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
    let out = sb.run(&Command::new(musl("cat")).stdin(vec![b'x'; 1000])).unwrap();
    assert_eq!(out.stdout.len(), 1000);
}

#[test]
fn kills_never_reach_a_later_run() {
    // A killer fires at random moments around runs of a short program;
    // every run either completes normally or is Cancelled, and a kill
    // sent after a run ended never cancels the next one.
    let mut sb = sandbox();
    let handle = sb.interrupt_handle();
    let hello = musl("hello");
    let mut cancelled = 0;
    for i in 0..60u64 {
        let h = handle.clone();
        let delay = Duration::from_micros((i * 7919) % 3000);
        let killer = std::thread::spawn(move || {
            std::thread::sleep(delay);
            h.kill();
        });
        match sb.run(&Command::new(&hello)) {
            Ok(out) => assert_eq!(out.stdout, b"hello, world\n"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
                cancelled += 1;
            }
        }
        killer.join().unwrap();
        // The kill above has been delivered: this run must not see it.
        assert_eq!(sb.run(&Command::new(&hello)).unwrap().stdout, b"hello, world\n", "iteration {i}");
    }
    eprintln!("{cancelled} of 60 runs were cancelled mid-way");
    // A kill during a host-side hypercall (a guest sleep) stops the run too.
    let killer = Killer::start(handle.clone(), Duration::from_millis(100));
    let err = sb.run(&Command::new(BUSYBOX).args(["sleep", "5"])).unwrap_err();
    drop(killer);
    assert_eq!(err.kind(), ErrorKind::Cancelled);
}
