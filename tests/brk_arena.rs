//! Runs from a snapshot keep Linux's heap and protection semantics with
//! issue 20's shortcuts: a snapshot point backs pages above the break
//! ahead (a run's heap then grows without a page-table write), and a run
//! that only gave access back (a RELRO-style mprotect undone) ends without
//! a TLB reload. Every mode is compared with a native run, over several
//! runs from the same snapshot (each reset in place), so what one run left
//! cannot show in the next.

use std::process::Command as Std;

use hvsandbox::{Command, ExitStatus};
use hvsandbox_tests::{from_entry_snapshot, musl};

fn native(mode: &str) -> String {
    let out = Std::new(musl("brk_arena")).arg(mode).output().unwrap();
    assert!(out.status.success(), "{mode} natively: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `mode` natively, then `rounds` times from one entry snapshot
/// (reset in place between), each run's output and status the same as the
/// native run's. Returns the native output.
fn same_in_every_run(mode: &str, rounds: usize) -> String {
    let expect = native(mode);
    let mut warm = from_entry_snapshot(&Command::new(musl("brk_arena")).arg(mode));
    warm.warm().unwrap();
    for round in 0..rounds {
        let out = warm.run(&Command::resume().arg(mode)).unwrap();
        assert_eq!(out.stdout_str(), expect, "{mode} round {round}");
        assert_eq!(out.status, ExitStatus::Code(0), "{mode} round {round}");
    }
    expect
}

#[test]
fn the_heap_from_an_entry_snapshot_grows_and_shrinks_as_on_linux() {
    let expect = same_in_every_run("grow", 3);
    assert!(expect.contains("zero again above it: 1") && expect.contains("big grow zero: 1"), "{expect}");
}

#[test]
fn what_a_run_leaves_in_its_heap_is_gone_in_the_next() {
    assert_eq!(same_in_every_run("secret", 4), "heap zero: 1\nfilled\n");
}

#[test]
fn a_forked_child_gets_the_heap_but_not_the_pages_above_the_break() {
    let expect = same_in_every_run("fork", 3);
    assert!(expect.contains("child sees parent heap: 1, grew: 1, new zero: 1"), "{expect}");
}

#[test]
fn a_mapping_above_the_break_still_blocks_it() {
    let expect = same_in_every_run("mapped", 3);
    assert!(expect.contains("grow into a mapping refused: 1") && expect.contains("zero there: 1"), "{expect}");
    // A cold run too: growing into a mapping used to unmap it.
    let cold = hvsandbox_tests::sandbox().run(&Command::new(musl("brk_arena")).arg("mapped")).unwrap();
    assert_eq!(cold.stdout_str(), expect);
}

#[test]
fn protections_a_run_changed_are_back_in_the_next() {
    // Taken away (the run ends without a TLB reload: the page's access
    // only comes back) and given (the run's end must reload).
    let relro = same_in_every_run("relro", 4);
    let lines = ["page starts as built: 1", "writable: 1", "read-only write faults: 1", "still readable: 1"];
    assert_eq!(relro.lines().collect::<Vec<_>>(), lines);
    let rodata = same_in_every_run("rodata", 4);
    assert_eq!(rodata.lines().collect::<Vec<_>>(), ["read-only: 1", "then writable: 1", "written: 1"]);
}
