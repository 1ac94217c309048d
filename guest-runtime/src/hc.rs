//! Hypercalls: the only way out of the VM. Arguments go in the hypercall
//! block, the number is written to the doorbell (an MMIO exit), the result
//! comes back in the block.

#[cfg(not(test))]
use core::sync::atomic::{compiler_fence, Ordering};

use hvsandbox_abi as abi;

#[cfg(not(test))]
fn block() -> *mut abi::Hypercall {
    abi::phys_to_virt(abi::HCALL_GPA) as *mut abi::Hypercall
}

/// Tells the host the page-table root now loaded (see
/// [`abi::Hypercall::cr3`]).
pub fn tell_cr3(root: u64) {
    #[cfg(not(test))]
    // SAFETY: the hypercall block is a fixed, mapped page of guest RAM;
    // the host reads it only while the vCPU is stopped.
    unsafe {
        core::ptr::addr_of_mut!((*block()).cr3).write_volatile(root)
    };
    #[cfg(test)]
    let _ = root;
}

/// Issues hypercall `nr` with up to three arguments.
pub fn call(nr: u64, a0: u64, a1: u64, a2: u64) -> u64 {
    call6(nr, [a0, a1, a2, 0, 0, 0])
}

/// Issues hypercall `nr` with six arguments.
#[cfg(not(test))]
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

/// A host test build has no VM to leave: a hypercall is a test failure.
#[cfg(test)]
pub fn call6(nr: u64, _args: [u64; 6]) -> u64 {
    panic!("hypercall {nr} in a host test")
}

/// The runtime failed: tell the host, which reports a crashed guest.
#[cfg(not(test))]
pub fn panic(msg: &[u8]) -> ! {
    call(abi::hc::PANIC, 0, msg.as_ptr() as u64, msg.len() as u64);
    loop {
        core::hint::spin_loop();
    }
}

/// In a host test, a runtime panic is a test failure.
#[cfg(test)]
pub fn panic(msg: &[u8]) -> ! {
    panic!("runtime panic: {}", alloc::string::String::from_utf8_lossy(msg))
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
