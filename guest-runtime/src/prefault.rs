//! Prefaulting a clone made ahead ([`abi::hc::PREFAULT`]): the host names
//! the guest frames a first run from this snapshot touched; the runtime
//! reads one byte through every present, user-accessible mapping of them
//! in the current address space (the program's pages, the runtime's heap,
//! the physmap), so the hypervisor builds its shadow translations now,
//! while the clone waits in a pool, rather than one exit at a time during
//! the clone's first run.
//!
//! Only reads: nothing changes but this function's own stack, below the
//! snapshot point's frame, which the snapshot holds as dead.

use hvsandbox_abi::pte::{HUGE as PTE_PS, PRESENT as PTE_P, USER as PTE_US};
use hvsandbox_abi::{self as abi, prefault};

use crate::rt::{boot, phys_ptr};

/// Page tables visited at most (a snapshot's tables are the runtime's, but
/// a snapshot file is not trusted: this bounds a table that loops).
const MAX_TABLES: usize = 1 << 14;

/// Frame ranges from the resume area, searched by frame.
struct Ranges<'a> {
    bytes: &'a [u8],
    len: usize,
}

impl Ranges<'_> {
    /// Calls `touch(frame)` for every frame of `[lo, hi)` in some range.
    fn each_in(&self, lo: u64, hi: u64, touch: &mut impl FnMut(u64)) {
        // The first range that ends above `lo`.
        let (mut a, mut b) = (0, self.len);
        while a < b {
            let m = (a + b) / 2;
            let (first, count) = prefault::range(self.bytes, m);
            if first as u64 + count as u64 <= lo {
                a = m + 1;
            } else {
                b = m;
            }
        }
        for i in a..self.len {
            let (first, count) = prefault::range(self.bytes, i);
            let (first, end) = (first as u64, first as u64 + count as u64);
            if first >= hi {
                break;
            }
            for f in first.max(lo)..end.min(hi) {
                touch(f);
            }
        }
    }
}

/// Reads every present user page of the current address space whose
/// frame is in the ranges left at [`abi::RESUME_GPA`]; returns how many.
pub fn touch_named_frames() -> u64 {
    let area = crate::rt::phys_slice(abi::RESUME_GPA, abi::RESUME_MAX);
    let len = u64::from_le_bytes(area[..8].try_into().unwrap_or_default()).min(abi::RESUME_MAX - 8);
    let bytes = &area[8..8 + len as usize];
    let ranges = Ranges { bytes, len: bytes.len() / prefault::RANGE_BYTES };
    let frames = boot().mem_size / abi::PAGE_SIZE;
    let physmap_frames = (boot().free_start / abi::PAGE_SIZE, abi::pt_pool_start(boot().mem_size) / abi::PAGE_SIZE);
    let mut walk = Walk { ranges, frames, physmap_frames, tables: 0, touched: 0 };
    walk.table(crate::mm::current().pml4(), 3, 0);
    walk.touched
}

struct Walk<'a> {
    ranges: Ranges<'a>,
    frames: u64,
    /// Frames read through the physmap: below the first and from the
    /// second (see [`Walk::table`]).
    physmap_frames: (u64, u64),
    tables: usize,
    touched: u64,
}

impl Walk<'_> {
    /// Walks the table at frame address `t`, of `level` (3 = PML4), mapping
    /// from virtual address `base`.
    fn table(&mut self, t: u64, level: u32, base: u64) {
        self.tables += 1;
        if self.tables > MAX_TABLES || t / abi::PAGE_SIZE >= self.frames {
            return;
        }
        let span = 1u64 << (12 + 9 * level);
        for i in 0..512u64 {
            // SAFETY: `t` is a frame of guest RAM (checked above), mapped in
            // full at the physmap; i < 512 entries of 8 bytes.
            let e = unsafe { (phys_ptr(t) as *const u64).add(i as usize).read_volatile() };
            if e & (PTE_P | PTE_US) != PTE_P | PTE_US {
                continue;
            }
            let mut va = base + i * span;
            if level == 3 && i >= 256 {
                // Canonical form of the upper half (never used here).
                va |= 0xffff_0000_0000_0000;
            }
            let frame = (e & abi::pte::ADDR) / abi::PAGE_SIZE;
            if level == 0 || (level < 3 && e & PTE_PS != 0) {
                // A leaf: a 4 KiB page, or 2 MiB / 1 GiB of contiguous frames.
                let pages = span / abi::PAGE_SIZE;
                let hi = (frame + pages).min(self.frames);
                let touched = &mut self.touched;
                let mut touch = |f: u64| {
                    let at = va + (f - frame) * abi::PAGE_SIZE;
                    // SAFETY: `at` is mapped present and user-accessible in
                    // the current address space (the entry above), so a read
                    // at CPL3 cannot fault; the byte read is discarded.
                    unsafe { core::ptr::read_volatile(at as *const u8) };
                    *touched += 1;
                };
                if (abi::PHYS_BASE..abi::PHYS_BASE + self.frames * abi::PAGE_SIZE).contains(&va) {
                    // The physmap: only the frames the runtime itself reaches
                    // through it (its tables and image, and page tables); the
                    // program's and the heap's frames are read through their
                    // own mappings.
                    let (low_end, pool) = self.physmap_frames;
                    self.ranges.each_in(frame, hi.min(low_end), &mut touch);
                    self.ranges.each_in(frame.max(pool), hi, &mut touch);
                } else {
                    self.ranges.each_in(frame, hi, &mut touch);
                }
            } else {
                self.table(e & abi::pte::ADDR, level - 1, va);
            }
        }
    }
}
