//! The heap's break (brk), and the pages a snapshot point backs ahead
//! above it (`ready_brk_arena`), so that a run from the snapshot grows
//! the heap without writing a page table.

use hvsandbox_abi::pte::{PRESENT as PTE_P, WRITABLE as PTE_RW};
use hvsandbox_abi::user;

use crate::vma::{Vma, PROT_READ, PROT_WRITE};

use super::frames::{alloc_frame, page_up, spare_frames, zero_frame, PAGE};
use super::journal::{pt_write, ADDR_MASK, PTE_FOREIGN, PTE_KEPT};
use super::map::{map_fixed, munmap, overlaps_any, vma_insert, vma_remove};
use super::pt::{leaf_bits, pte};
use super::space::{current, AddressSpace};

pub fn set_brk_start(at: u64) {
    let mm = current();
    mm.brk_start = page_up(at);
    mm.brk = mm.brk_start;
}

/// Pages backed ahead above the break of the current process at a
/// snapshot point: a run from the snapshot then grows its heap (glibc's
/// malloc takes 132 KiB at its first call) without writing a page table,
/// so its end has no mapping to take away and no ring-0 TLB reload to do.
const BRK_ARENA: u64 = 256 * 1024;

/// Backs up to [`BRK_ARENA`] bytes above the break of the current process
/// with zeroed, writable frames that no mapping owns yet. Unlike Linux,
/// the program can touch them before its break reaches them (they read
/// as zero); `brk` hands them out and takes them back (zeroed).
pub fn ready_brk_arena() {
    let mm = current();
    if mm.brk_start == 0 {
        return;
    }
    let start = page_up(mm.brk).max(mm.brk_ready);
    let end = (page_up(mm.brk) + BRK_ARENA).min(mm.brk_start + user::BRK_MAX);
    // Only where nothing is mapped, and never the last spare frames.
    if end <= start || overlaps_any(start, end) || (end - start) / PAGE * 4 > spare_frames() {
        return;
    }
    let mut va = start;
    while va < end {
        match pte(mm.pml4, va, true) {
            // SAFETY: a level-0 entry of the current space.
            Some(e) if unsafe { e.read_volatile() } & (PTE_P | PTE_KEPT) == 0 => match alloc_frame() {
                // SAFETY: as above; not present -> present needs no flush.
                Some(f) => unsafe { pt_write(e, f | leaf_bits(PROT_READ | PROT_WRITE)) },
                None => break,
            },
            _ => break,
        }
        va += PAGE;
    }
    mm.brk_ready = va;
}

/// Whether every page of `[start, end)` is one [`ready_brk_arena`] backed
/// and nothing has replaced since: below the ready end, present, writable
/// and private.
fn brk_pages_ready(mm: &AddressSpace, start: u64, end: u64) -> bool {
    if end > mm.brk_ready {
        return false;
    }
    let mut va = start;
    while va < end {
        match pte(mm.pml4, va, false) {
            Some(e) => {
                // SAFETY: a level-0 entry of the current space.
                let v = unsafe { e.read_volatile() };
                if v & (PTE_P | PTE_RW) != PTE_P | PTE_RW || v & PTE_FOREIGN != 0 {
                    return false;
                }
            }
            None => return false,
        }
        va += PAGE;
    }
    true
}

/// brk(2): returns the (new or unchanged) break.
pub fn brk(want: u64) -> u64 {
    let mm = current();
    let (start, cur) = (mm.brk_start, mm.brk);
    if want < start || want > start + user::BRK_MAX {
        return cur;
    }
    let old_top = page_up(cur);
    let new_top = page_up(want);
    if new_top > old_top && (new_top - old_top) / PAGE > spare_frames() {
        return cur;
    }
    // Like Linux, the heap keeps a page clear below the next mapping.
    let blocked = new_top > old_top && overlaps_any(old_top, new_top + PAGE);
    if new_top > old_top && !blocked && brk_pages_ready(mm, old_top, new_top) {
        // Pages a snapshot point backed ahead: no page-table write (and
        // so nothing for the run's end to undo with a TLB reload).
        if vma_remove(old_top, new_top)
            .and_then(|_| vma_insert(Vma::private(old_top, new_top, PROT_READ | PROT_WRITE)))
            .is_err()
        {
            return cur;
        }
    } else if new_top < old_top && brk_pages_ready(mm, new_top, old_top) {
        // Given back, they stay ready: zeroed, as Linux gives them again.
        let _ = vma_remove(new_top, old_top);
        let mut va = new_top;
        while va < old_top {
            if let Some(e) = pte(mm.pml4, va, false) {
                // SAFETY: a level-0 entry; brk_pages_ready saw it present
                // and private, so its frame is this process's own.
                zero_frame(unsafe { e.read_volatile() } & ADDR_MASK);
            }
            va += PAGE;
        }
    } else if new_top > old_top {
        if blocked {
            // (The mapping in the way stays.)
            return cur;
        }
        if map_fixed(old_top, new_top - old_top, PROT_READ | PROT_WRITE).is_err() {
            // Undo a partial mapping so the heap stays as it was.
            let _ = munmap(old_top, new_top - old_top);
            return cur;
        }
    } else if new_top < old_top {
        let _ = munmap(new_top, old_top - new_top);
    }
    current().brk = want;
    want
}
