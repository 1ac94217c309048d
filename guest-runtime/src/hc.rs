//! Hypercalls: the only way out of the VM. Arguments go in the hypercall
//! block, the number is written to the doorbell (an MMIO exit), the result
//! comes back in the block.

use core::sync::atomic::{compiler_fence, Ordering};

use hvsandbox_abi as abi;

use crate::io;

fn block() -> *mut abi::Hypercall {
    abi::phys_to_virt(abi::HCALL_GPA) as *mut abi::Hypercall
}

/// Issues hypercall `nr` with up to three arguments.
pub fn call(nr: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    call6(nr, [a0, a1, a2, 0, 0, 0])
}

/// Issues hypercall `nr` with six arguments.
pub fn call6(nr: u64, args: [u64; 6]) -> u64 {
    let b = block();
    // SAFETY: the hypercall block is a fixed, mapped page of guest RAM
    // reserved for this purpose; volatile because the host reads and
    // writes it during the exit.
    unsafe {
        core::ptr::addr_of_mut!((*b).args).write_volatile(args);
        compiler_fence(Ordering::SeqCst);
        core::arch::asm!(
            "mov qword ptr [{db}], {nr}",
            db = in(reg) abi::DOORBELL_VA,
            nr = in(reg) nr,
            options(nostack, preserves_flags),
        );
        compiler_fence(Ordering::SeqCst);
        core::ptr::addr_of!((*b).ret).read_volatile()
    }
}

fn va(bytes: &[u8]) -> u64 {
    bytes.as_ptr() as u64
}

/// Ends the run. The host takes the output still buffered along with the
/// exit (one exit from the VM instead of a flush and then the exit).
pub fn exit(code: i32, signal: i32) -> ! {
    call(abi::hc::EXIT, (code & 0xff) as u64, signal as u64, io::out_buffers_gpa());
    loop {
        core::hint::spin_loop();
    }
}

/// The runtime failed: tell the host, which reports a crashed guest.
pub fn panic(msg: &[u8]) -> ! {
    call(abi::hc::PANIC, 0, va(msg), msg.len() as u64);
    loop {
        core::hint::spin_loop();
    }
}

/// The first program could not be started: the host reports why as a
/// typed error.
pub fn fail_exec(why: &str) -> ! {
    io::flush_all();
    call(abi::hc::EXEC_FAILED, 0, va(why.as_bytes()), why.len() as u64);
    loop {
        core::hint::spin_loop();
    }
}

/// Sleeps on the host.
pub fn sleep_ns(ns: u64) {
    call(abi::hc::SLEEP, ns, 0, 0);
}

/// Sleeps on the host while every task waits: the host ends the sleep
/// early when input comes that a reader was told was not there yet.
pub fn idle_ns(ns: u64) {
    call(abi::hc::SLEEP, ns, abi::SLEEP_UNTIL_INPUT, 0);
}
