//! Clones made ahead (a pool's, `Sandbox::warm`) have their guest read the
//! pages a first run from the snapshot touched, so the hypervisor's
//! translations are built before the clone's first run (issue 20). The
//! pass must leave the clone exactly as the snapshot was: every run below
//! prints what a plain clone's first run printed. A pass that does not
//! finish is undone.
//!
//! Also here, for the same first-run cost: VMs that copy the snapshot's
//! memory instead of mapping it (`Snapshot::copy_memory`), and sandboxes
//! that do not reset ahead (`SandboxBuilder::reset_ahead`), run the same.

use std::sync::Mutex;
use std::time::Duration;

use hvsandbox::{prefault_counts, set_prefault_limit, Command, ExitStatus, Output, Sandbox, SandboxPool, Snapshot};
use hvsandbox_tests::{musl, TempDir};

/// The tests change the process-wide pass limit and read process-wide
/// counts: one at a time, and with the process-wide pool of clones made
/// ahead off (its background passes would add to the counts) unless a
/// test turns it on.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    hvsandbox::set_blank_vms(0);
    guard
}

fn resume() -> Command {
    Command::resume().args(["memsum", "x"])
}

/// An entry snapshot of `memsum`, whose first reset has been seen (so
/// clones made ahead from now on have pages to read), and what a plain
/// clone's first run printed.
fn learned_snapshot() -> (Snapshot, Output) {
    let mut sb = Sandbox::builder().memory_mib(64).build().unwrap();
    let snap =
        sb.snapshot(&Command::new(musl("memsum")).args(["memsum", "x"]), hvsandbox::SnapshotPoint::Entry).unwrap();
    let mut plain = Sandbox::from_snapshot(&snap).unwrap();
    let first = plain.run(&resume()).unwrap();
    assert_eq!(first.status, ExitStatus::Code(0), "{}", first.stderr_str());
    for line in ["file: written", "child: brk same 1", "child exit 7", "new mapping zero: 1"] {
        assert!(first.stdout_str().lines().any(|l| l == line), "{line}:\n{}", first.stdout_str());
    }
    // The reset after that run learns the pages it touched.
    let again = plain.run(&resume()).unwrap();
    assert_eq!(again.stdout_str(), first.stdout_str());
    (snap, first)
}

fn same_as(out: &Output, first: &Output, what: &str) {
    assert_eq!(out.stdout_str(), first.stdout_str(), "{what}: {}", out.stderr_str());
    assert_eq!(out.status, ExitStatus::Code(0), "{what}");
    assert_eq!(out.stats.syscalls, first.stats.syscalls, "{what}: system calls");
    assert_eq!(out.stats.page_faults, first.stats.page_faults, "{what}: guest page faults");
}

#[test]
fn a_clone_made_ahead_reads_what_a_first_run_touched_and_runs_the_same() {
    let _one = one_at_a_time();
    let (snap, first) = learned_snapshot();
    let before = prefault_counts();
    let mut ahead = Sandbox::from_snapshot(&snap).unwrap();
    ahead.warm().unwrap();
    let after = prefault_counts();
    assert_eq!(after.passes, before.passes + 1, "one pass for one clone made ahead");
    assert!(after.pages > before.pages + 10, "the pass read {} pages", after.pages - before.pages);
    assert_eq!(after.failures, before.failures);
    same_as(&ahead.run(&resume()).unwrap(), &first, "the first run after the pass");
    same_as(&ahead.run(&resume()).unwrap(), &first, "the run after a reset");

    // A pool's clones are made ahead the same way.
    let pool = SandboxPool::new(Sandbox::builder().memory_mib(64), &snap, 2).unwrap();
    for round in 0..3 {
        let mut sb = pool.get().unwrap();
        same_as(&sb.run(&resume()).unwrap(), &first, &format!("pooled run {round}"));
    }
    drop(pool);
    assert!(prefault_counts().passes > after.passes, "the pool's clones had passes");
    assert_eq!(prefault_counts().failures, before.failures, "no pass failed");
}

#[test]
fn a_pass_that_does_not_finish_is_undone_and_one_can_be_turned_off() {
    let _one = one_at_a_time();
    let (snap, first) = learned_snapshot();

    // 1 µs: the deadline kicks the vCPU out long before the pass is done.
    set_prefault_limit(Duration::from_micros(1));
    let before = prefault_counts();
    let mut cut = Sandbox::from_snapshot(&snap).unwrap();
    cut.warm().unwrap();
    let after = prefault_counts();
    set_prefault_limit(Duration::from_millis(250));
    assert_eq!((after.passes, after.failures), (before.passes, before.failures + 1), "the pass ran out of time");
    same_as(&cut.run(&resume()).unwrap(), &first, "a clone whose pass was undone");

    // Zero: no passes.
    set_prefault_limit(Duration::ZERO);
    let before = prefault_counts();
    let mut off = Sandbox::from_snapshot(&snap).unwrap();
    off.warm().unwrap();
    let after = prefault_counts();
    set_prefault_limit(Duration::from_millis(250));
    assert_eq!((after.passes, after.failures), (before.passes, before.failures), "no pass when turned off");
    same_as(&off.run(&resume()).unwrap(), &first, "a clone made ahead without a pass");
}

#[test]
fn the_process_wide_pool_makes_its_clones_with_a_pass() {
    let _one = one_at_a_time();
    let (snap, first) = learned_snapshot();
    let before = prefault_counts();
    hvsandbox::set_blank_vms(2);
    // Building a sandbox from the snapshot asks the background thread for
    // clones of it.
    let mut sb = Sandbox::from_snapshot(&snap).unwrap();
    let mut made = false;
    for _ in 0..1000 {
        if prefault_counts().passes >= before.passes + 2 {
            made = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(made, "the background thread made clones with a pass: {:?}", prefault_counts());
    for round in 0..3 {
        same_as(&sb.run(&resume()).unwrap(), &first, &format!("run {round} of a clone from the background"));
        sb = Sandbox::from_snapshot(&snap).unwrap();
    }
    drop(sb);
    hvsandbox::set_blank_vms(0);
    hvsandbox::wait_for_reaper();
    assert_eq!(prefault_counts().failures, before.failures, "no pass failed");
}

#[test]
fn a_run_that_wants_a_clone_in_its_pass_cuts_the_pass_short() {
    let _one = one_at_a_time();
    // A short program: the background thread is making the next clone
    // (most of that time in its pass) whenever the next sandbox is built.
    let mut sb = Sandbox::builder().memory_mib(64).build().unwrap();
    let snap = sb.snapshot(&Command::new(musl("hello")), hvsandbox::SnapshotPoint::Entry).unwrap();
    let mut plain = Sandbox::from_snapshot(&snap).unwrap();
    for _ in 0..2 {
        assert_eq!(plain.run(&Command::resume()).unwrap().stdout_str(), "hello, world\n");
    }
    let before = prefault_counts();
    hvsandbox::set_blank_vms(1);
    for round in 0..40 {
        let out = Sandbox::from_snapshot(&snap).unwrap().run(&Command::resume()).unwrap();
        assert_eq!(out.stdout_str(), "hello, world\n", "back-to-back clone {round}");
        assert_eq!(out.status, ExitStatus::Code(0), "back-to-back clone {round}");
    }
    hvsandbox::set_blank_vms(0);
    hvsandbox::wait_for_reaper();
    let after = prefault_counts();
    assert_eq!(after.failures, before.failures, "no pass failed: {before:?} -> {after:?}");
    eprintln!("back to back: {before:?} -> {after:?}");
    assert!(after.cut > before.cut, "some pass was cut short for a waiting run: {before:?} -> {after:?}");
}

#[test]
fn vms_that_copy_the_snapshots_memory_run_the_same() {
    let _one = one_at_a_time();
    let (snap, first) = learned_snapshot();
    snap.copy_memory(true);
    let mut copied = Sandbox::from_snapshot(&snap).unwrap();
    same_as(&copied.run(&resume()).unwrap(), &first, "a VM with a copy");
    same_as(&copied.run(&resume()).unwrap(), &first, "the same VM after its reset");
    let mut ahead = Sandbox::from_snapshot(&snap).unwrap();
    ahead.warm().unwrap();
    same_as(&ahead.run(&resume()).unwrap(), &first, "a copy made ahead, with its pass");

    // A snapshot file loaded here (its memory a sealed memory file): the
    // program's file stays a mapping, the rest is copied.
    let dir = TempDir::new("copy-memory");
    let path = dir.0.join("memsum.snap");
    snap.save(&path).unwrap();
    let loaded = Snapshot::load(&path).unwrap();
    loaded.copy_memory(true);
    let mut from_file = Sandbox::from_snapshot(&loaded).unwrap();
    for round in 0..2 {
        same_as(&from_file.run(&resume()).unwrap(), &first, &format!("run {round} from the file, copied"));
    }
    // And back to sharing.
    loaded.copy_memory(false);
    same_as(&Sandbox::from_snapshot(&loaded).unwrap().run(&resume()).unwrap(), &first, "shared again");
}

#[test]
fn a_sandbox_that_does_not_reset_ahead_makes_a_new_vm_for_its_next_run() {
    let _one = one_at_a_time();
    let (snap, first) = learned_snapshot();
    for copy in [false, true] {
        snap.copy_memory(copy);
        let mut once = Sandbox::builder().reset_ahead(false).build_from(&snap).unwrap();
        for round in 0..3 {
            same_as(&once.run(&resume()).unwrap(), &first, &format!("copy {copy}, run {round}"));
        }
    }
}
