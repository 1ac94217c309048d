//! `cpuid` without the hypervisor: on KVM every `cpuid` leaves the guest
//! (8.5 µs here, against 1.3 µs for the same instruction in this host's
//! own processes), and glibc's start-up runs it ~70 times (its CPU
//! feature and cache probes), ~0.6 ms of every warm busybox run. A
//! rewritten `cpuid` site (`rewrite.rs`, found ahead of time by
//! `eager.rs`) jumps to `cpuid_fast_entry` (main.rs), which answers from
//! the CPUID page the host writes (`abi::CPUID_GPA`: the vCPU's own
//! leaves as KVM would answer them) and leaves any leaf the page does not
//! hold to the CPU, so the result is always what the instruction gives.
//!
//! The entry's stub loads RBX with the address to go back to (RBX is one
//! of `cpuid`'s outputs, so the program loses nothing); the entry keeps
//! it and the program's RSP here while it works on the runtime stack. It
//! is runtime code, which the host never preempts and which cannot fault,
//! so one slot of each is enough.

/// What `cpuid` of `leaf`/`subleaf` gives this vCPU, for the runtime's
/// own questions: from the host's page where it has the leaf (no exit),
/// else from the CPU.
pub fn query(leaf: u32, subleaf: u32) -> [u32; 4] {
    #[cfg(not(test))]
    {
        use hvsandbox_abi as abi;
        // SAFETY: the CPUID page lies in guest RAM, mapped in full at
        // PHYS_BASE for the runtime's whole life, page aligned; every
        // byte pattern is a valid `Table` (plain u32s); nothing writes it
        // while the runtime runs (one vCPU; the host writes it only while
        // the vCPU is stopped).
        let t = unsafe { &*(crate::rt::phys_ptr(abi::CPUID_GPA) as *const abi::cpuid::Table) };
        if let Some(r) = abi::cpuid::lookup(t, leaf, subleaf) {
            return r;
        }
    }
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Where the rewritten site's `cpuid` goes back to (set by the entry).
#[no_mangle]
pub static mut CPUID_BACK: u64 = 0;
/// The program's RSP while the entry runs.
#[no_mangle]
pub static mut CPUID_RSP: u64 = 0;

/// The address of `cpuid_fast_entry`.
#[cfg(not(test))]
pub fn fast_entry() -> u64 {
    extern "C" {
        fn cpuid_fast_entry();
    }
    cpuid_fast_entry as unsafe extern "C" fn() as usize as u64
}

#[cfg(test)]
pub fn fast_entry() -> u64 {
    0
}
