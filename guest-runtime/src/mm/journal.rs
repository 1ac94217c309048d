//! Page-table entries at the lowest level: the software bits the runtime
//! adds to the hardware ones, `table` (a table frame through the physmap)
//! and `pt_write`, through which every write to a page table goes, with
//! its journal.
//!
//! A run from a snapshot is reset in place by the host. KVM's shadow page
//! tables follow every change the guest makes to its page tables, but not
//! the host's restore of them: a mapping a run added would outlive it. So in
//! such a run every page-table write is journaled, and before the run ends
//! the runtime writes the old values back itself (KVM sees those writes) and
//! reloads CR3. The host still compares every page-table page with the
//! snapshot and drops KVM's shadow tables when one differs in a way that
//! matters (a journal that overflowed, a run that ended otherwise, a guest
//! that lies): the journal only makes the common case cheap.

use hvsandbox_abi as abi;
use hvsandbox_abi::pte::{HUGE as PTE_PS, PRESENT as PTE_P, USER as PTE_US, WRITABLE as PTE_RW};

use crate::rt::{phys_ptr, Global};

use super::frames::FRAMES;
use super::tlb::{load_root, NEXT_CR3};

/// Software bit: a frame is kept behind a not-present entry (PROT_NONE).
pub(super) const PTE_KEPT: u64 = 1 << 9;
/// Software bit: the frame belongs to someone else (see the docs of `mm`).
pub(super) const PTE_SHARED: u64 = 1 << 10;
/// Software bit: the frame belongs to a shared object (see the docs of `mm`).
pub(super) const PTE_SHM: u64 = 1 << 11;
/// Frames this space does not own: never freed or zeroed through it.
pub(super) const PTE_FOREIGN: u64 = PTE_SHARED | PTE_SHM;
/// Software bit: a private frame that a fork left shared copy-on-write
/// (see `share_slot`): mapped read-only, copied on the first write unless
/// no other space holds it any more.
pub(super) const PTE_COW: u64 = 1 << 52;
pub(super) const ADDR_MASK: u64 = abi::pte::ADDR;
/// Write-through and cache-disable (the runtime never sets them).
const PTE_CACHE: u64 = (1 << 3) | (1 << 4);
pub(super) const PTE_NX: u64 = abi::pte::NO_EXECUTE;

const JOURNAL_MAX: usize = 32 * 1024;

struct Journal {
    on: bool,
    overflow: bool,
    len: usize,
    /// (guest-physical address of the entry, its value before the write).
    entries: [(u64, u64); JOURNAL_MAX],
}

static JOURNAL: Global<Journal> =
    Global::new(Journal { on: false, overflow: false, len: 0, entries: [(0, 0); JOURNAL_MAX] });

/// Writes a page-table entry (journaled in a run from a snapshot).
///
/// # Safety
/// `e` points at an entry of a page-table frame, through the physmap.
pub(super) unsafe fn pt_write(e: *mut u64, v: u64) {
    // SAFETY: the caller's promise.
    let old = unsafe { e.read_volatile() };
    if old == v {
        return;
    }
    let j = JOURNAL.get();
    if j.on {
        if j.len < JOURNAL_MAX {
            j.entries[j.len] = (e as u64 - abi::PHYS_BASE, old);
            j.len += 1;
        } else {
            j.overflow = true;
        }
    }
    // SAFETY: the caller's promise.
    unsafe { e.write_volatile(v) };
}

/// Starts journaling page-table writes: the guest was restored from a
/// snapshot (and will be reset to it after this run).
pub fn start_journal() {
    let j = JOURNAL.get();
    j.on = true;
    j.overflow = false;
    j.len = 0;
}

/// Puts every page table back as it was at the snapshot point, so that the host's reset finds them unchanged
/// (it leaves KVM's shadow tables alone then). Call last, before the final
/// hypercall: the program's mappings are gone afterwards.
pub fn undo_journal() {
    let j = JOURNAL.get();
    if !j.on || j.overflow || j.len == 0 {
        return;
    }
    j.on = false;
    // KVM's shadow entries are never more permissive than the guest's
    // current ones (the runtime flushes whenever it takes access away or
    // changes a frame). So when every entry goes back to a value that
    // grants at least what the current one does, for the same frame (say
    // the read-only page of a RELRO mprotect made writable again), the
    // shadow entries still grant no more than the restored ones, and the
    // ring-0 reload (~20 us here) is not needed: a write through a stale
    // read-only shadow entry faults and KVM takes up the restored entry.
    let needs_reload = j.entries[..j.len].iter().any(|&(gpa, old)| {
        // SAFETY: a page-table entry the journal saw written.
        let cur = unsafe { (phys_ptr(gpa) as *const u64).read_volatile() };
        !restores_without_reload(old, cur)
    });
    // With a reload, undo on the boot tables: the runtime's half of them
    // never changes in a run, while any other root (the snapshot's
    // included) may have been freed and reused as another table since the
    // snapshot point.
    let boot = FRAMES.get().boot_pml4;
    // SAFETY: single-threaded; the flush trap reads NEXT_CR3.
    if needs_reload && unsafe { NEXT_CR3 } != boot {
        load_root(boot);
    }
    for &(gpa, old) in j.entries[..j.len].iter().rev() {
        // SAFETY: as above.
        unsafe { (phys_ptr(gpa) as *mut u64).write_volatile(old) };
    }
    j.len = 0;
    if needs_reload {
        // The reload makes KVM take up the entries written back.
        crate::cpu::flush_tlb();
    }
}

/// Whether writing back `old` over the current entry `cur` needs no TLB
/// reload: `cur` maps nothing, or `old` maps the same frame (same page
/// size and cache bits) with at least its access.
fn restores_without_reload(old: u64, cur: u64) -> bool {
    const SAME: u64 = ADDR_MASK | PTE_PS | PTE_CACHE;
    if cur & PTE_P == 0 {
        return true;
    }
    old & PTE_P != 0
        && (old ^ cur) & SAME == 0
        && (cur & PTE_RW == 0 || old & PTE_RW != 0)
        && (cur & PTE_US == 0 || old & PTE_US != 0)
        && (old & PTE_NX == 0 || cur & PTE_NX != 0)
}

pub(super) fn table(gpa: u64) -> *mut u64 {
    phys_ptr(gpa) as *mut u64
}

#[cfg(test)]
mod journal_tests {
    use hvsandbox_abi::pte::{ACCESSED as PTE_A, DIRTY as PTE_D};

    use super::super::frames::PAGE;
    use super::*;

    const FRAME: u64 = 0x1234_5000;

    #[test]
    fn restoring_more_access_to_the_same_frame_needs_no_reload() {
        let ro = FRAME | PTE_P | PTE_US | PTE_A | PTE_D;
        let rw = ro | PTE_RW;
        // RELRO: the run made a page read-only; writable again.
        assert!(restores_without_reload(rw, ro));
        assert!(restores_without_reload(rw, rw));
        // Nothing mapped now: whatever comes back is new to KVM too.
        assert!(restores_without_reload(rw, 0));
        assert!(restores_without_reload(0, 0));
        assert!(restores_without_reload(ro | PTE_NX, PTE_KEPT | FRAME));
        // Execute access back (NX cleared).
        assert!(restores_without_reload(ro, ro | PTE_NX));
    }

    #[test]
    fn taking_access_away_or_moving_a_page_needs_a_reload() {
        let ro = FRAME | PTE_P | PTE_US | PTE_A | PTE_D;
        let rw = ro | PTE_RW;
        // A mapping the run added goes away.
        assert!(!restores_without_reload(0, rw));
        assert!(!restores_without_reload(PTE_KEPT | FRAME, rw));
        // Less access than now.
        assert!(!restores_without_reload(ro, rw));
        assert!(!restores_without_reload(rw & !PTE_US, rw));
        assert!(!restores_without_reload(ro | PTE_NX, ro));
        // Another frame (a copy-on-write copy going back to the shared one).
        assert!(!restores_without_reload(rw + PAGE, rw));
        // Another page size or caching.
        assert!(!restores_without_reload(rw | PTE_PS, rw));
        assert!(!restores_without_reload(rw | (1 << 4), rw));
    }
}
