//! Address spaces: `AddressSpace` (a process's page tables and mappings),
//! the one the CPU runs on (`current`, `activate`) and its entries
//! (`cur_pte`, `leaf`), new ones, a fork's copy (`fork_space`: copied, or
//! shared copy-on-write), walks over every leaf (`each_leaf`,
//! `accessed_bits`, `huge_bytes_of`), and `destroy_space`.

use alloc::boxed::Box;
use alloc::vec::Vec;

use hvsandbox_abi as abi;
use hvsandbox_abi::pte::{ACCESSED as PTE_A, HUGE as PTE_PS, PRESENT as PTE_P, WRITABLE as PTE_RW};

use crate::errno::ENOMEM;
use crate::rt::Global;
use crate::vma::{self, Vma, PROT_WRITE};

use super::cow::{copy_frame, copy_huge_block, release_frame, share_frame, shares, unmap_huge};
use super::frames::{free_frame, free_frames, page_up, FRAMES, GROWN_WINDOW_FLOOR, HUGE, HUGE_FRAMES, PAGE};
use super::journal::{pt_write, table, ADDR_MASK, PTE_COW, PTE_FOREIGN, PTE_KEPT};
use super::pt::{
    alloc_table_frame, free_table_frame, huge_page_room, keep_leaf_table, pd_entry, pte, table_frames_free,
    with_leaves_of, LeafKind, USER_END, USER_SLOTS,
};
use super::tlb::{load_root, NEXT_CR3};

/// One process's memory: page tables and mappings.
pub struct AddressSpace {
    pub(super) pml4: u64,
    pub(super) vmas: Vec<Vma>,
    pub(super) brk_start: u64,
    pub(super) brk: u64,
    /// End of the pages above the break that a snapshot point backed
    /// ahead (zeroed, writable, no mapping of their own): the break grows
    /// into them without writing a page table (see
    /// [`ready_brk_arena`](super::ready_brk_arena)).
    pub(super) brk_ready: u64,
    /// Rewritten system-call sites and their stubs (`rewrite.rs`).
    pub rewrite: crate::sites::Sites,
    /// Where recent page faults' windows began and ended and how large
    /// they were, one slot per stream of faults in address order, up or
    /// down (see `fault_window`), and the slot a new stream takes next.
    pub(super) fault_streams: [FaultStream; FAULT_STREAMS],
    pub(super) fault_victim: usize,
    /// How its tables were built (for `KEPT_LEAVES`).
    built: LeafKind,
}

impl AddressSpace {
    /// Its mappings, in address order (`/proc/<pid>/maps`).
    pub fn vmas(&self) -> &[Vma] {
        &self.vmas
    }
    /// The frame of its top-level page table.
    pub fn pml4(&self) -> u64 {
        self.pml4
    }
    /// Where its heap (brk) starts and ends.
    pub fn brk_range(&self) -> (u64, u64) {
        (self.brk_start, self.brk)
    }
}

impl AddressSpace {
    fn empty(pml4: u64) -> AddressSpace {
        AddressSpace {
            pml4,
            vmas: Vec::new(),
            brk_start: 0,
            brk: 0,
            brk_ready: 0,
            rewrite: crate::sites::Sites::new(),
            fault_streams: [FaultStream { lo: 0, hi: 0, len: 0 }; FAULT_STREAMS],
            fault_victim: 0,
            built: LeafKind::Program,
        }
    }
}

/// A stream of page faults in address order: its last window and size.
#[derive(Clone, Copy)]
pub(super) struct FaultStream {
    pub(super) lo: u64,
    pub(super) hi: u64,
    pub(super) len: u64,
}

/// Streams of page faults in address order followed at once: a program
/// filling several blocks in turn (as the non-temporal path of glibc's
/// memcpy of a very large block does with its quarters, on CPUs that
/// take it) keeps each stream's window growing.
pub(super) const FAULT_STREAMS: usize = 4;

/// The address space the CPU runs on now.
pub(super) static CURRENT: Global<*mut AddressSpace> = Global::new(core::ptr::null_mut());

/// The address space of the first process: the boot page tables.
pub fn boot_space() -> Box<AddressSpace> {
    Box::new(AddressSpace::empty(FRAMES.get().boot_pml4))
}

/// A fresh, empty address space.
pub fn new_space() -> Result<Box<AddressSpace>, i64> {
    let pml4 = alloc_table_frame().ok_or(ENOMEM)?;
    let boot = FRAMES.get().boot_pml4;
    for i in USER_SLOTS..512 {
        // SAFETY: both are page-table frames; the shared slots are copied.
        unsafe { pt_write(table(pml4).add(i), table(boot).add(i).read_volatile()) };
    }
    Ok(Box::new(AddressSpace::empty(pml4)))
}

pub fn current() -> &'static mut AddressSpace {
    let p = *CURRENT.get();
    if p.is_null() {
        crate::hc::panic(b"no current address space");
    }
    // SAFETY: CURRENT points at the running process's boxed space, which
    // lives as long as it is current (see `activate`).
    unsafe { &mut *p }
}

/// Makes `space` the one the CPU runs on (a ring-0 CR3 load if it differs).
/// The caller keeps `space` alive while it is current.
pub fn activate(space: &mut AddressSpace) {
    *CURRENT.get() = space as *mut AddressSpace;
    // SAFETY: single-threaded; the flush trap reads NEXT_CR3.
    let changed = unsafe { NEXT_CR3 != space.pml4 };
    if changed {
        load_root(space.pml4);
    }
}

/// Whether `va` of the current space is backed (a present or kept 4 KiB
/// entry, or a 2 MiB one), without changing any table.
pub(super) fn backed(va: u64) -> bool {
    leaf(va) & (PTE_P | PTE_KEPT) != 0
}

/// The entry that maps `va` in the current space: a 4 KiB one, a 2 MiB
/// one (`PTE_PS` set), or 0. Changes no table.
pub(super) fn leaf(va: u64) -> u64 {
    let mut t = current().pml4;
    for level in (0..4).rev() {
        let idx = ((va >> (12 + 9 * level)) & 0x1ff) as usize;
        // SAFETY: `t` is a page-table frame; idx < 512.
        let v = unsafe { table(t).add(idx).read_volatile() };
        if level == 0 || v & (PTE_P | PTE_PS) == PTE_P | PTE_PS {
            return v;
        }
        if v & PTE_P == 0 {
            return 0;
        }
        t = v & ADDR_MASK;
    }
    0
}

/// The level-0 entry of program address `va` in the current space (None
/// for the runtime's part of the address space, whatever the caller
/// passes).
pub(super) fn cur_pte(va: u64, create: bool) -> Option<*mut u64> {
    if va >= USER_END {
        return None;
    }
    pte(current().pml4, va, create)
}

/// Private memory a fork copies at most (frames): beyond, or when a copy
/// would not leave frames plentiful, it shares it copy-on-write. Here a
/// page fault costs ~100 µs, a page copy under 1 µs: copying is cheaper
/// unless little of the memory is written again, which is likelier the
/// larger it is (a child that soon calls execve); and sharing lets a
/// parent using over half of the guest fork at all.
const FORK_COPY_MAX: u64 = 16384;

/// A copy of `src` for a forked child: private pages are copied, or
/// shared copy-on-write (see `FORK_COPY_MAX`); shared (file cache,
/// shared object) frames are mapped again.
pub fn fork_space(src: &AddressSpace) -> Result<Box<AddressSpace>, i64> {
    // The parent's ready pages above its break are not the child's memory.
    let ready = page_up(src.brk)..src.brk_ready;
    let mut private = 0;
    each_leaf(src.pml4, &mut (0..USER_SLOTS), &mut |va, _, entry| {
        if entry & (PTE_P | PTE_KEPT) != 0 && entry & PTE_FOREIGN == 0 && !ready.contains(&va) {
            private += if entry & PTE_PS != 0 { HUGE_FRAMES } else { 1 };
        }
    });
    let share = private > FORK_COPY_MAX || private + GROWN_WINDOW_FLOOR > free_frames();
    let mut dst = new_space()?;
    dst.vmas.try_reserve(src.vmas.len()).map_err(|_| ENOMEM)?;
    // MADV_DONTFORK's mappings are not the child's; MADV_WIPEONFORK's are,
    // with none of the parent's pages (zero-filled on touch).
    dst.vmas.extend(src.vmas.iter().filter(|v| !v.on_fork.skip).cloned());
    let special = src.vmas.iter().any(|v| v.on_fork != vma::OnFork::default());
    let copied = |va: u64| {
        let i = src.vmas.partition_point(|v| v.end <= va);
        !special || src.vmas.get(i).is_none_or(|v| v.start > va || v.on_fork == vma::OnFork::default())
    };
    dst.brk_start = src.brk_start;
    dst.brk = src.brk;
    dst.rewrite = src.rewrite.clone();
    dst.built = LeafKind::ForkCopy;
    let mut result = Ok(());
    let mut shared_any = false;
    let writable = |va: u64| {
        let i = src.vmas.partition_point(|v| v.end <= va);
        src.vmas.get(i).is_some_and(|v| v.start <= va && v.prot & PROT_WRITE != 0)
    };
    // (The child's space is not current, and its new leaf tables may be
    // those of an earlier fork's copy: see `KEPT_LEAVES`.)
    with_leaves_of(LeafKind::ForkCopy, || {
        each_leaf(src.pml4, &mut (0..USER_SLOTS), &mut |va, ep, entry| {
            if result.is_err() || entry & (PTE_P | PTE_KEPT) == 0 || ready.contains(&va) || !copied(va) {
                return;
            }
            if share && entry & PTE_FOREIGN == 0 {
                match share_entry(dst.pml4, va, ep, entry, &ready) {
                    Ok(true) => {
                        shared_any = true;
                        return;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        result = Err(e);
                        return;
                    }
                }
            }
            // A copy is the child's own: a copy-on-write entry of the parent's
            // becomes an ordinary one.
            let entry = if entry & PTE_COW != 0 {
                (entry & !PTE_COW) | if writable(va) && entry & PTE_P != 0 { PTE_RW } else { 0 }
            } else {
                entry
            };
            if entry & PTE_PS != 0 {
                result = if entry & PTE_FOREIGN != 0 {
                    fork_file_huge(dst.pml4, va, entry)
                } else {
                    fork_huge(dst.pml4, va, entry, &ready)
                };
                return;
            }
            let frame = entry & ADDR_MASK;
            let new = if entry & PTE_FOREIGN != 0 { Some(frame) } else { copy_frame(frame) };
            match (new, pte(dst.pml4, va, true)) {
                (Some(f), Some(e)) => {
                    // SAFETY: a level-0 entry of the new space, not present yet.
                    unsafe { pt_write(e, f | (entry & !ADDR_MASK)) };
                }
                (Some(f), None) => {
                    if entry & PTE_FOREIGN == 0 {
                        free_frame(f);
                    }
                    result = Err(ENOMEM);
                }
                _ => result = Err(ENOMEM),
            }
        })
    });
    if shared_any && core::ptr::eq(*CURRENT.get() as *const AddressSpace, src) {
        // The parent's pages lost write access.
        crate::cpu::flush_tlb();
    }
    if let Err(e) = result {
        destroy_space(dst);
        return Err(e);
    }
    Ok(dst)
}

/// A copy-on-write fork of the parent's private entry `entry` (at `ep`,
/// for `va`; 4 KiB or 2 MiB) into the child's `pml4`: both map the frames
/// read-only with `PTE_COW` and their counts go up. The accessed bit is
/// cleared in both (the parent's TLB is flushed after the fork; the
/// child's space has never run), so `break_cow` can tell pages touched
/// since. Ok(false): not shared (a count at its limit, or a 2 MiB page
/// over the parent's ready pages): the caller copies it.
fn share_entry(pml4: u64, va: u64, ep: *mut u64, entry: u64, ready: &core::ops::Range<u64>) -> Result<bool, i64> {
    let base = entry & ADDR_MASK;
    let shared = (entry & !(PTE_RW | PTE_A)) | PTE_COW;
    if entry & PTE_A != 0 {
        mark_touched(entry);
    }
    let e = if entry & PTE_PS != 0 {
        if huge_meets(ready, va) || (0..HUGE_FRAMES).any(|k| shares(base + k * PAGE) == u16::MAX) {
            return Ok(false);
        }
        // The child's split must find a table frame kept too.
        if table_frames_free() < FRAMES.get().huge_live + 2 {
            return Err(ENOMEM);
        }
        let e = pd_entry(pml4, va).ok_or(ENOMEM)?;
        for k in 0..HUGE_FRAMES {
            share_frame(base + k * PAGE);
        }
        FRAMES.get().huge_live += 1;
        e
    } else {
        let e = pte(pml4, va, true).ok_or(ENOMEM)?;
        if !share_frame(base) {
            return Ok(false);
        }
        e
    };
    // SAFETY: `e` is the child's entry, empty so far; `ep` the parent's
    // (its TLB is flushed after the fork).
    unsafe {
        pt_write(e, shared);
        pt_write(ep, shared);
    }
    Ok(true)
}

/// A fork's child maps the parent's 2 MiB page of a file's frames
/// (`entry`, mapped in place: see
/// [`map_file_huge`](super::map_file_huge)) at `va` as it is.
fn fork_file_huge(pml4: u64, va: u64, entry: u64) -> Result<(), i64> {
    // The child's split must find a table frame kept too.
    if table_frames_free() < FRAMES.get().huge_live + 2 {
        return Err(ENOMEM);
    }
    let e = pd_entry(pml4, va).ok_or(ENOMEM)?;
    FRAMES.get().huge_live += 1;
    // SAFETY: the child's page-directory entry, empty so far.
    unsafe { pt_write(e, entry) };
    Ok(())
}

/// A fork's copy of the parent's 2 MiB page `entry` at `va` into the
/// child's `pml4`: a 2 MiB page of its own while there is room, else its
/// 512 pages one by one (but the parent's ready pages above its break).
/// The parent's stays whole either way.
fn fork_huge(pml4: u64, va: u64, entry: u64, ready: &core::ops::Range<u64>) -> Result<(), i64> {
    let src = entry & ADDR_MASK;
    let bits = entry & !(ADDR_MASK | PTE_PS);
    if huge_page_room() && !huge_meets(ready, va) {
        // SAFETY: an entry pointer `pd_entry` made or found, read once.
        if let Some(e) = pd_entry(pml4, va).filter(|&e| unsafe { e.read_volatile() } == 0) {
            if let Some(block) = copy_huge_block(src) {
                FRAMES.get().huge_live += 1;
                // SAFETY: the child's page-directory entry, empty so far.
                unsafe { pt_write(e, block | bits | PTE_PS) };
                return Ok(());
            }
        }
    }
    for k in 0..HUGE_FRAMES {
        let page = va + k * PAGE;
        if ready.contains(&page) {
            continue;
        }
        let new = copy_frame(src + k * PAGE).ok_or(ENOMEM)?;
        let Some(e) = pte(pml4, page, true) else {
            free_frame(new);
            return Err(ENOMEM);
        };
        // SAFETY: a level-0 entry of the child's space, not present yet.
        unsafe { pt_write(e, new | bits) };
    }
    Ok(())
}

/// Whether the 2 MiB at `va` meets the parent's ready pages above its
/// break (`ready`), which are not a fork's child's memory.
fn huge_meets(ready: &core::ops::Range<u64>, va: u64) -> bool {
    va < ready.end && ready.start < va + HUGE
}

/// Calls `f(va, entry address, entry)` for every level-0 entry under the
/// top-level `slots`, and once for each of the program's 2 MiB mappings
/// (its entry, `PTE_PS` set); the physmap's are skipped.
fn each_leaf(pml4: u64, slots: &mut dyn Iterator<Item = usize>, f: &mut dyn FnMut(u64, *mut u64, u64)) {
    for i4 in slots {
        // SAFETY: page-table frames reached through the physmap; indexes < 512.
        let e4 = unsafe { table(pml4).add(i4).read_volatile() };
        if e4 & PTE_P == 0 {
            continue;
        }
        for i3 in 0..512 {
            // SAFETY: as above.
            let e3 = unsafe { table(e4 & ADDR_MASK).add(i3).read_volatile() };
            if e3 & PTE_P == 0 || e3 & PTE_PS != 0 {
                continue;
            }
            for i2 in 0..512 {
                // SAFETY: as above.
                let e2p = unsafe { table(e3 & ADDR_MASK).add(i2) };
                // SAFETY: e2p points into that table.
                let e2 = unsafe { e2p.read_volatile() };
                if e2 & PTE_P == 0 {
                    continue;
                }
                let pt = if e2 & PTE_PS == 0 {
                    e2 & ADDR_MASK
                } else {
                    if i4 < USER_SLOTS {
                        f(((i4 as u64) << 39) | ((i3 as u64) << 30) | ((i2 as u64) << 21), e2p, e2);
                    }
                    continue;
                };
                for i1 in 0..512 {
                    // SAFETY: as above.
                    let e1p = unsafe { table(pt).add(i1) };
                    // SAFETY: e1p points into that table.
                    let e1 = unsafe { e1p.read_volatile() };
                    let va = ((i4 as u64) << 39) | ((i3 as u64) << 30) | ((i2 as u64) << 21) | ((i1 as u64) << 12);
                    f(va, e1p, e1);
                }
            }
        }
    }
}

/// For a measuring run (`touched.rs`): marks the frames leaf `entry`
/// maps (a 2 MiB page's 512) as touched.
fn mark_touched(entry: u64) {
    let frames = if entry & PTE_PS != 0 { HUGE_FRAMES } else { 1 };
    for k in 0..frames {
        crate::touched::mark((entry & ADDR_MASK) / PAGE + k);
    }
}

/// For a measuring run (`touched.rs`): clears the accessed bit of every
/// present mapping of the current space's program slots and of the
/// runtime heap (`clear`), or marks the frames of those that have it (a
/// 2 MiB page's 512; it stays whole). The writes bypass the journal: the
/// host puts these tables back.
pub fn accessed_bits(clear: bool) {
    let heap_slot = ((abi::RUNTIME_HEAP_VA >> 39) & 0x1ff) as usize;
    let mut slots = (0..USER_SLOTS).chain(core::iter::once(heap_slot));
    each_leaf(current().pml4, &mut slots, &mut |_, e1p, e1| {
        if e1 & (PTE_P | PTE_A) != PTE_P | PTE_A {
            return;
        }
        if clear {
            // SAFETY: e1p is a leaf entry (4 KiB or 2 MiB) reached through
            // the physmap; only its accessed bit changes.
            unsafe { e1p.write_volatile(e1 & !PTE_A) };
        } else {
            mark_touched(e1);
        }
    });
}

/// Bytes of program memory in 2 MiB pages mapped by the address spaces
/// whose top-level tables are `roots`: its own memory (`/proc/meminfo`'s
/// AnonHugePages), or with `file` files' frames mapped in place
/// (FilePmdMapped). Each page once, however many spaces map it (a fork
/// shares them). Counts every mapping if the list of pages cannot be made.
pub fn huge_bytes_of(roots: &[u64], file: bool) -> u64 {
    let mut pages: Vec<u64> = Vec::new();
    let mut complete = true;
    for &pml4 in roots {
        each_leaf(pml4, &mut (0..USER_SLOTS), &mut |_, _, entry| {
            if entry & (PTE_P | PTE_PS) == PTE_P | PTE_PS && (entry & PTE_FOREIGN != 0) == file {
                complete &= pages.try_reserve(1).is_ok();
                if complete {
                    pages.push(entry & ADDR_MASK);
                }
            }
        });
    }
    if !complete {
        return FRAMES.get().huge_live * HUGE;
    }
    pages.sort_unstable();
    pages.dedup();
    pages.len() as u64 * HUGE
}

/// Frees an address space that is not current: its pages (except shared
/// frames) and its page tables.
#[allow(clippy::boxed_local)] // it is the box's owner that gives it up
pub fn destroy_space(space: Box<AddressSpace>) {
    let pml4 = space.pml4;
    // Only the boot tables' root stays in use; another is freed below and
    // cleared when it is used again, so its entries are left as they are
    // (each write to it would trap: KVM still shadows it). Unless the CPU
    // still runs on it (a process's own space at its exit, until the next
    // activation loads CR3): then it maps nothing of the program's half.
    // SAFETY: single-threaded; the flush trap reads NEXT_CR3.
    let loaded = unsafe { NEXT_CR3 } == pml4;
    let keep_root = pml4 == FRAMES.get().boot_pml4;
    for i4 in 0..USER_SLOTS {
        // SAFETY: page-table frames reached through the physmap; indexes < 512.
        let e4p = unsafe { table(pml4).add(i4) };
        // SAFETY: as above.
        let e4 = unsafe { e4p.read_volatile() };
        if e4 & PTE_P == 0 {
            continue;
        }
        for i3 in 0..512 {
            // SAFETY: as above.
            let e3 = unsafe { table(e4 & ADDR_MASK).add(i3).read_volatile() };
            if e3 & PTE_P == 0 || e3 & PTE_PS != 0 {
                continue;
            }
            for i2 in 0..512 {
                // SAFETY: as above.
                let e2 = unsafe { table(e3 & ADDR_MASK).add(i2).read_volatile() };
                if e2 & PTE_P == 0 {
                    continue;
                }
                if e2 & PTE_PS != 0 {
                    // A 2 MiB mapping: its frames, whole, and the table
                    // frame kept for its split.
                    if e2 & PTE_A != 0 {
                        mark_touched(e2);
                    }
                    unmap_huge(e2);
                    continue;
                }
                let pt = e2 & ADDR_MASK;
                for i1 in 0..512 {
                    // SAFETY: as above.
                    let e1 = unsafe { table(pt).add(i1).read_volatile() };
                    if e1 & (PTE_P | PTE_A) == PTE_P | PTE_A {
                        mark_touched(e1);
                    }
                    if e1 & (PTE_P | PTE_KEPT) != 0 && e1 & PTE_FOREIGN == 0 {
                        release_frame(e1);
                    }
                }
                let va = ((i4 as u64) << 39) | ((i3 as u64) << 30) | ((i2 as u64) << 21);
                keep_leaf_table(pt, va, space.built);
            }
            free_table_frame(e3 & ADDR_MASK);
        }
        free_table_frame(e4 & ADDR_MASK);
        if keep_root || loaded {
            // SAFETY: as above. No flush: the next activation loads CR3
            // (a space still loaded was the current one; see `Space`'s
            // drop), and the boot root's next load flushes.
            unsafe { pt_write(e4p, 0) };
        }
    }
    if !keep_root {
        free_table_frame(pml4);
    }
}
