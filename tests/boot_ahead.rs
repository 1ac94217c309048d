//! A sandbox that boots ahead makes its first VM on a thread of its own,
//! which then keeps that VM's RAM warm while it lives: the thread ends
//! with the VM. (A test binary of its own: it counts the process's
//! threads, which other tests' sandboxes would change.)

use std::time::Duration;

use hvsandbox::{Command, Sandbox};
use hvsandbox_tests::BUSYBOX;

/// Threads of this process named `name`.
fn threads_named(name: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

#[test]
fn the_vm_thread_of_a_sandbox_that_boots_ahead_ends_with_its_vm() {
    for round in 0..3 {
        let mut sb = Sandbox::builder().memory_mib(64).boot_ahead(true).build().unwrap();
        // While the VM lives, its thread does (warming its RAM). (A new
        // thread takes its name once it runs: wait for that.)
        let named = (0..500).any(|_| {
            threads_named("hvsandbox-vm") == 1 || {
                std::thread::sleep(Duration::from_millis(10));
                false
            }
        });
        assert!(named, "round {round}: no one VM thread while the sandbox lives");
        if round > 0 {
            let out = sb.run(&Command::new(BUSYBOX).args(["echo", "ran"])).unwrap();
            assert_eq!(out.stdout, b"ran\n");
        }
        drop(sb);
        hvsandbox::wait_for_reaper();
        // It looks at most every 20 ms; one that outlived its VM would
        // look for good.
        let gone = (0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            threads_named("hvsandbox-vm") == 0
        });
        assert!(gone, "round {round}: the VM thread outlived its sandbox");
    }
}

#[test]
fn a_run_that_comes_before_its_vm_is_made_has_its_program_loaded_meanwhile() {
    for round in 0..3 {
        // The run comes at once, before the VM made ahead is ready (~1 ms
        // here): the program's image goes into that VM's RAM while KVM's
        // side is made, and the runtime boots with it.
        let mut sb = Sandbox::builder().memory_mib(64).boot_ahead(true).build().unwrap();
        let said = format!("round {round}");
        let out = sb.run(&Command::new(BUSYBOX).args(["echo", &said])).unwrap();
        assert_eq!(out.stdout, format!("{said}\n").as_bytes());
        assert_eq!(out.status.code(), Some(0));
        // The next run gets a VM of its own.
        let out = sb.run(&Command::new(BUSYBOX).args(["sh", "-c", "echo again; exit 3"])).unwrap();
        assert_eq!((out.stdout.as_slice(), out.status.code()), (&b"again\n"[..], Some(3)));
    }
    // A program too large for the guest's memory is refused on this path
    // as on any other, with the same typed error.
    let big = "/usr/bin/node";
    if std::fs::metadata(big).is_ok_and(|m| m.len() > 16 << 20) {
        let mut sb = Sandbox::builder().memory_mib(16).boot_ahead(true).build().unwrap();
        let err = sb.run(&Command::new(big).args(["-e", "0"])).unwrap_err();
        assert_eq!(err.kind(), hvsandbox::ErrorKind::InvalidConfig, "{err}");
        // The sandbox still runs what fits.
        let out = sb.run(&Command::new(BUSYBOX).args(["echo", "fits"])).unwrap();
        assert_eq!(out.stdout, b"fits\n");
    }
}
