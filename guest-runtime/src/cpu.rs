//! The two things the runtime asks of the entry assembly (in the binary,
//! `main.rs`): a CR3 reload through the ring-0 trap, and the jump into a
//! fresh program. A host test build has neither.

#[cfg(not(test))]
extern "C" {
    fn tlb_flush();
    fn tlb_flush_page(va: u64);
    fn enter_program(entry: u64, stack: u64) -> !;
}

/// Loads CR3 from `mm::NEXT_CR3` (ring-0 `mov cr3` through the #BP trap:
/// four emulated instructions on this host, so callers batch): makes
/// removed or changed page mappings take effect, or switches to another
/// address space.
pub fn flush_tlb() {
    crate::stats::stat(|s| s.cr3_loads += 1);
    #[cfg(not(test))]
    // SAFETY: tlb_flush is the entry assembly's: an `int3` the #BP stub
    // turns into a CR3 reload; it clobbers only RAX and RCX, which an
    // extern "C" call may clobber anyway.
    unsafe {
        tlb_flush()
    }
}

/// Drops the TLB's entries for the page at `va` (ring-0 `invlpg` through
/// the #OF trap: as many emulated instructions as a CR3 reload on this
/// host, but KVM's shadow paging leaves its other tables as they are,
/// where a reload makes it write-protect every page table again, so that
/// the runtime's next write to each faults): for a change to one page's
/// entry (not for freed page tables).
pub fn flush_page(va: u64) {
    crate::stats::stat(|s| s.page_flushes += 1);
    #[cfg(not(test))]
    // SAFETY: tlb_flush_page is the entry assembly's: an `int 4` the #OF
    // stub turns into an `invlpg`; it clobbers only RAX and RCX, which
    // an extern "C" call may clobber anyway.
    unsafe {
        tlb_flush_page(va)
    }
    #[cfg(test)]
    let _ = va;
}

/// Starts the program at `entry` with its initial stack at `stack`.
#[cfg(not(test))]
pub fn jump_to_program(entry: u64, stack: u64) -> ! {
    // SAFETY: the caller has mapped the program and built a Linux initial
    // stack at `stack`; enter_program never returns.
    unsafe { enter_program(entry, stack) }
}

#[cfg(test)]
pub fn jump_to_program(_entry: u64, _stack: u64) -> ! {
    panic!("no program runs in a host test")
}
