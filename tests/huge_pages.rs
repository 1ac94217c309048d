//! Guest RAM from the host's hugetlb pool (`SandboxBuilder::huge_pages`,
//! `hvsandbox run --huge-pages`): a pool too small for the VM is a typed
//! error with `Require` and ordinary memory with `Prefer`; a VM from the
//! pool runs programs, its pages come from the pool while it lives and go
//! back when it is gone, also a VM that copies a snapshot.
//!
//! The pool is the host administrator's (`vm.nr_hugepages`); CI sets one
//! up (`.ci/run`). Where there is none, the test of a VM from the pool
//! says so and checks only the refusal. The pool's counters are
//! host-wide: one test does every step that reads them, so no other test
//! of this binary changes them meanwhile.

use std::io::Write;

use hvsandbox::{Command, ErrorKind, ExitStatus, HugePages, ProcessEvent, Sandbox, SnapshotPoint};
use hvsandbox_tests::{hvsandbox_bin, musl, BUSYBOX};

/// (HugePages_Free, HugePages_Rsvd) from /proc/meminfo.
fn pool() -> (u64, u64) {
    let info = std::fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in /proc/meminfo"))
    };
    (field("HugePages_Free:"), field("HugePages_Rsvd:"))
}

#[test]
fn huge_pages_come_from_the_pool_or_fail_typed() {
    // No VMs made ahead for later sandboxes: the pool's counters then
    // follow this test's VMs alone.
    hvsandbox::set_blank_vms(0);
    let (free, _) = pool();
    // More memory than the pool can give (its free pages are 2 MiB).
    let too_big = (free * 2 + 64).next_multiple_of(2);
    if too_big <= 16384 {
        let sb = |mode| Sandbox::builder().memory_mib(too_big).huge_pages(mode).build().unwrap();
        let err = sb(HugePages::Require).run(&Command::new(BUSYBOX).args(["echo", "hi"])).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{err}");
        assert!(err.to_string().contains("hugetlb pool"), "{err}");
        let out = sb(HugePages::Prefer).run(&Command::new(BUSYBOX).args(["echo", "hi"])).unwrap();
        assert_eq!(out.stdout_str(), "hi\n");
        // The CLI: exit 125 and the reason; `prefer` runs.
        let cli = |mode: &str| {
            std::process::Command::new(hvsandbox_bin())
                .args(["run", "--memory", &format!("{too_big}M"), "--huge-pages", mode, "--", BUSYBOX, "echo", "hi"])
                .output()
                .expect("run the CLI")
        };
        let out = cli("require");
        assert_eq!(out.status.code(), Some(125), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("hugetlb pool"), "{out:?}");
        let out = cli("prefer");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(out.stdout, b"hi\n");
        hvsandbox::wait_for_reaper();
    }

    // A 64 MiB VM takes 29 pages (2..60 MiB); the page-table pool and the
    // first 2 MiB stay ordinary pages.
    let (free, rsvd) = pool();
    if free < 29 {
        eprintln!("no hugetlb pool of 29 free pages here (HugePages_Free {free}): only the refusal was tested");
        return;
    }
    let mut sb = Sandbox::builder().memory_mib(64).huge_pages(HugePages::Require).build().unwrap();
    // Memory the program fills and sums, from the pool.
    let out = sb.run(&Command::new(musl("malloc10m")).arg("24")).unwrap();
    let sum: u64 = (0..24u64 << 20).map(|i| (i * 7 + 3) & 0xff).sum();
    assert_eq!(out.stdout_str(), format!("sum={sum}\n"));
    assert_eq!(out.status, ExitStatus::Code(0));

    drop(sb);

    // While a VM lives, the pool holds its pages: those the guest touched
    // given, the rest of its 29 reserved for it. A new sandbox's first
    // run is its only VM (a spare is made only after a run).
    let sh = ["sh", "-c", "echo ready; read x; echo got $x"];
    let sb = Sandbox::builder().memory_mib(64).huge_pages(HugePages::Require).build().unwrap();
    held_while_running(sb, &Command::new(BUSYBOX).args(sh));

    // A run from a snapshot whose memory is copied (the CLI's
    // --from-snapshot) copies it into the pool's pages.
    let mut sb = Sandbox::builder().memory_mib(64).build().unwrap();
    let snap = sb.snapshot(&Command::new(BUSYBOX).args(["busybox"]), SnapshotPoint::Entry).unwrap();
    drop(sb);
    snap.copy_memory(true);
    let sb = Sandbox::builder().huge_pages(HugePages::Require).build_from(&snap).unwrap();
    held_while_running(sb, &Command::resume().args(["busybox"].iter().chain(&sh)));
    // Its VM is put back to the snapshot after each run.
    let mut sb = Sandbox::builder().huge_pages(HugePages::Require).build_from(&snap).unwrap();
    let script = |s: &str| Command::resume().args(["busybox", "sh", "-c", s]);
    for _ in 0..3 {
        let out = sb.run(&script("cat /tmp/mark 2>/dev/null; echo run >/tmp/mark; cat /tmp/mark")).unwrap();
        assert_eq!(out.stdout_str(), "run\n", "a run sees nothing of the one before");
    }
    drop(sb);

    hvsandbox::wait_for_reaper();
    assert_eq!(pool(), (free, rsvd), "every page went back to the pool");
}

/// Spawns `cmd` (a shell that prints "ready", reads a line and prints it
/// back) in `sb`'s first run and checks, while it waits for its line, that
/// the pool holds the VM's 29 pages, some of them touched.
fn held_while_running(mut sb: Sandbox, cmd: &Command) {
    hvsandbox::wait_for_reaper();
    let (free0, rsvd0) = pool();
    let mut p = sb.spawn(cmd).unwrap();
    let mut seen = Vec::new();
    let mut during = None;
    let mut stdin = p.take_stdin();
    while let Some(ev) = p.next_event() {
        match ev {
            ProcessEvent::Stdout(b) => {
                seen.extend_from_slice(&b);
                if seen == b"ready\n" {
                    during = Some(pool());
                    stdin.take().unwrap().write_all(b"ok\n").unwrap();
                }
            }
            ProcessEvent::Stderr(_) => {}
            ProcessEvent::Exited(r) => assert_eq!(r.unwrap().status, ExitStatus::Code(0)),
        }
    }
    assert_eq!(seen, b"ready\ngot ok\n");
    let (during_free, during_rsvd) = during.unwrap();
    assert!(during_free < free0, "the guest touched pool pages: free {free0} -> {during_free}");
    assert_eq!(
        (free0 - during_free) + (during_rsvd - rsvd0),
        29,
        "touched and reserved pages of the VM: free {free0} -> {during_free}, reserved {rsvd0} -> {during_rsvd}"
    );
    drop(p);
    drop(sb);
    hvsandbox::wait_for_reaper();
    assert_eq!(pool(), (free0, rsvd0), "its pages went back to the pool");
}
