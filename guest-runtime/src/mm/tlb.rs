//! The page-table root the CPU runs on and TLB flushes: `NEXT_CR3` (the
//! root the ring-0 flush trap loads), `load_root`, and `Stale`, the pages
//! whose entries a change left to flush, one by one or by a CR3 load.

use super::frames::page_down;

/// The CR3 value the ring-0 flush trap loads (the current space's root).
#[no_mangle]
pub static mut NEXT_CR3: u64 = 0;

/// Loads page-table root `root` into CR3 and tells the host (see
/// `abi::Hypercall::cr3`).
pub(super) fn load_root(root: u64) {
    // SAFETY: single-threaded; the flush trap reads NEXT_CR3.
    unsafe { NEXT_CR3 = root };
    crate::cpu::flush_tlb();
    crate::hc::tell_cr3(root);
}

/// Most pages whose TLB entries are dropped one by one
/// ([`crate::cpu::flush_page`]) rather than all by a CR3 load. Both take
/// the same emulated instructions here, but a CR3 load also makes KVM's
/// shadow paging write-protect every page table again, so that the
/// runtime's next write to each faults: a loop of one-page `mprotect`s
/// took 92 µs a round with CR3 loads and 49 µs with `invlpg`. For two
/// pages, two traps cost about what a CR3 load and its faults do (a shell
/// loop of fork and exec made ~13% more exits), so one it is.
const PAGE_FLUSH_MAX: u64 = 1;

/// The pages of the current space whose entries changed in a way the TLB
/// may not show yet (a present entry removed, narrowed or given another
/// frame): up to [`PAGE_FLUSH_MAX`] of them, flushed one by one, or
/// `many`, flushed by a CR3 load (also for freed page tables, whose
/// entries above them a CPU may cache).
#[derive(Default)]
pub(super) struct Stale {
    pages: [u64; PAGE_FLUSH_MAX as usize],
    n: usize,
    pub(super) many: bool,
}

impl Stale {
    /// Notes the page holding `va` (a 2 MiB page's entry is dropped by
    /// a flush of any address in it).
    pub(super) fn add(&mut self, va: u64) {
        let page = page_down(va);
        if self.many || self.pages[..self.n].contains(&page) {
            return;
        }
        match self.pages.get_mut(self.n) {
            Some(slot) => {
                *slot = page;
                self.n += 1;
            }
            None => self.many = true,
        }
    }

    /// Adds `other`'s pages.
    pub(super) fn merge(&mut self, other: &Stale) {
        self.many |= other.many;
        other.pages[..other.n].iter().for_each(|&page| self.add(page));
    }

    /// Makes the changes take effect.
    pub(super) fn flush(&self) {
        if self.many {
            crate::cpu::flush_tlb();
        } else {
            for &page in &self.pages[..self.n] {
                crate::cpu::flush_page(page);
            }
        }
    }
}
