//! Mapping in the current space: backing and unbacking ranges
//! (`back_range`, `unback_range`, which frees the page tables it leaves
//! empty), the list of mappings (`vma_insert`, `vma_remove`, `vma_at`,
//! and the rewriter's hooks), anonymous and fixed mappings, munmap,
//! copies into the program's frames, and the pages of the runtime's own
//! heap and of the shared slots.

use hvsandbox_abi::pte::{HUGE as PTE_PS, PRESENT as PTE_P, WRITABLE as PTE_RW};
use hvsandbox_abi::user;

use crate::errno::{EEXIST, EINVAL, ENOMEM};
use crate::rt::{phys_ptr, Global};
use crate::vma::{self, Vma, PROT_EXEC, PROT_READ, PROT_WRITE};

use super::cow::{copy_frame, release_frame, unmap_huge, unshared_entry};
use super::frames::{alloc_frame, page_up, spare_frames, take_frame, FRAMES, HEAP_RESERVE, HUGE, PAGE};
use super::journal::{pt_write, table, ADDR_MASK, PTE_COW, PTE_FOREIGN, PTE_KEPT, PTE_NX, PTE_SHARED, PTE_SHM};
use super::pt::{free_table_frame, host_built, leaf_bits, pte, table_entry, USER_END, USER_SLOTS};
use super::space::{cur_pte, current};
use super::tlb::Stale;

/// Mappings up to this size are backed at once; larger ones (and the
/// stack below its top) page by page on first touch.
pub(super) const EAGER_MAX: u64 = 256 * 1024;

/// Backs `[start, end)` with zeroed frames (only pages already backed
/// unless `populate`), `prot` access. Pages already backed keep their
/// frame (a file-cache frame is copied if the new access allows writing;
/// a shared object's frame is copied when `populate`, which makes the
/// range private memory) and get `prot`. Returns the pages whose entries
/// need a flush.
pub(super) fn back_range(pml4: u64, start: u64, end: u64, prot: u32, populate: bool) -> Result<Stale, i64> {
    let mut stale = Stale::default();
    let mut va = start;
    while va < end {
        let e = if populate {
            pte(pml4, va, true).ok_or(ENOMEM)?
        } else {
            match pte(pml4, va, false) {
                Some(e) => e,
                None => {
                    // No table here: skip to the next 2 MiB boundary.
                    va = (va | 0x1f_ffff) + 1;
                    continue;
                }
            }
        };
        // SAFETY: e is a valid level-0 entry pointer.
        let old = unsafe { e.read_volatile() };
        if !populate && old & (PTE_P | PTE_KEPT) == 0 {
            va += PAGE;
            continue;
        }
        let mut shared = 0;
        let frame = if old & (PTE_P | PTE_KEPT) != 0 {
            let loses = old & PTE_RW != 0 && prot & PROT_WRITE == 0
                || old & PTE_NX == 0 && prot & PROT_EXEC == 0
                || leaf_bits(prot) & PTE_P == 0;
            if old & PTE_P != 0 && loses {
                stale.add(va);
            }
            if old & PTE_SHARED != 0 {
                if prot & PROT_WRITE != 0 {
                    if old & PTE_P != 0 {
                        stale.add(va);
                    }
                    copy_frame(old & ADDR_MASK).ok_or(ENOMEM)?
                } else {
                    shared = PTE_SHARED;
                    old & ADDR_MASK
                }
            } else if old & PTE_SHM != 0 {
                if populate {
                    if old & PTE_P != 0 {
                        stale.add(va);
                    }
                    copy_frame(old & ADDR_MASK).ok_or(ENOMEM)?
                } else {
                    shared = PTE_SHM;
                    old & ADDR_MASK
                }
            } else {
                // A copy-on-write frame stays read-only until written.
                shared = old & PTE_COW;
                old & ADDR_MASK
            }
        } else {
            alloc_frame().ok_or(ENOMEM)?
        };
        let bits = if shared & PTE_COW != 0 { (leaf_bits(prot) & !PTE_RW) | PTE_COW } else { leaf_bits(prot) | shared };
        // SAFETY: as above.
        unsafe { pt_write(e, frame | bits) };
        va += PAGE;
    }
    Ok(stale)
}

/// Unmaps `[start, end)` of the current space, freeing frames and the
/// page tables left empty. Returns what needs a flush: the pages that
/// were present, or everything if a page table was freed.
fn unback_range(start: u64, end: u64) -> Stale {
    let mut stale = unback_pages(start, end);
    stale.many |= free_empty_tables(start, end);
    stale
}

fn unback_pages(start: u64, end: u64) -> Stale {
    let mut stale = Stale::default();
    let mut va = start;
    while va < end {
        if va < USER_END && (va == start || va.is_multiple_of(HUGE)) {
            // Once per 2 MiB: the page-directory entry decides.
            // SAFETY: the current space's root; `va` is a program address.
            let pde = unsafe { table_entry(current().pml4, va, 1) }
                .ok()
                // SAFETY: a page-directory entry of that space.
                .map(|e| (e, unsafe { e.read_volatile() }))
                .filter(|&(_, v)| v & PTE_P != 0);
            match pde {
                None => {
                    // No table of pages here: skip to the next 2 MiB.
                    va = (va | (HUGE - 1)).saturating_add(1);
                    continue;
                }
                Some((e, v)) if v & PTE_PS != 0 && va.is_multiple_of(HUGE) && va.saturating_add(HUGE) <= end => {
                    // A whole 2 MiB page goes: its frames stay one block.
                    // SAFETY: as above; the flush follows (returned).
                    unsafe { pt_write(e, 0) };
                    unmap_huge(v);
                    stale.add(va);
                    va += HUGE;
                    continue;
                }
                Some(_) => {}
            }
        }
        if let Some(e) = cur_pte(va, false) {
            // SAFETY: valid level-0 entry pointer.
            let old = unsafe { e.read_volatile() };
            if old & (PTE_P | PTE_KEPT) != 0 {
                // SAFETY: as above.
                unsafe { pt_write(e, 0) };
                if old & PTE_FOREIGN == 0 {
                    release_frame(old);
                }
                if old & PTE_P != 0 {
                    stale.add(va);
                }
            }
        }
        va += PAGE;
    }
    stale
}

/// Frees the page tables of the current space under `[start, end)` that
/// map nothing any more, as Linux does at munmap, and clears the entries
/// that pointed at them. Without it, memory mapped and unmapped at ever
/// new addresses (MAP_FIXED, or mmap as it was, always below everything
/// mapped before) used up the page-table pool: a program mapping, filling
/// and unmapping 16 MiB at a time got SIGSEGV after ~120 rounds. Returns
/// whether a table was freed: a TLB flush is then due before its frame
/// is used again (a CPU may keep the entries that led to it).
pub(super) fn free_empty_tables(start: u64, end: u64) -> bool {
    let end = end.min(USER_END);
    let mut freed = false;
    // Tables of pages (2 MiB each), then directories (1 GiB), then the
    // level above them (512 GiB): each level sees the one below done.
    for level in 1..4u32 {
        let span = 1u64 << (12 + 9 * level);
        let mut at = start & !(span - 1);
        while at < end {
            let mut step = span;
            // SAFETY: the current space's root; `at` is below USER_END.
            match unsafe { table_entry(current().pml4, at, level) } {
                // Nothing mapped under an absent entry: skip what it covers.
                Err(absent) => step = 1 << (12 + 9 * absent),
                Ok(e) => {
                    // SAFETY: as above.
                    let v = unsafe { e.read_volatile() };
                    let below = v & ADDR_MASK;
                    // SAFETY: a present non-huge entry names a table frame.
                    let empty = v & PTE_P != 0
                        && v & PTE_PS == 0
                        && !host_built(below)
                        && (0..512).all(|i| unsafe { table(below).add(i).read_volatile() } == 0);
                    if empty {
                        // SAFETY: as above; the table is unreferenced now.
                        unsafe { pt_write(e, 0) };
                        free_table_frame(below);
                        freed = true;
                    }
                }
            }
            at = match (at & !(step - 1)).checked_add(step) {
                Some(next) => next,
                None => break,
            };
        }
    }
    freed
}

/// Copies `data` into the program's memory at `va` through the frames
/// (works whatever the page protection is). Shared frames are left alone;
/// a copy-on-write frame is copied first. False if a frame for such a
/// copy was short (the bytes there were left alone).
pub fn copy_to_frames(mut va: u64, mut data: &[u8]) -> bool {
    let mut stale = Stale::default();
    let mut whole = true;
    while !data.is_empty() {
        let off = va & (PAGE - 1);
        let n = ((PAGE - off) as usize).min(data.len());
        if let Some(e) = cur_pte(va, false) {
            // SAFETY: valid entry pointer.
            let mut v = unsafe { e.read_volatile() };
            if v & PTE_COW != 0 {
                // Shared with another space since a fork: a copy first.
                let writable = vma_at(va).is_some_and(|m| m.prot & PROT_WRITE != 0);
                match unshared_entry(v, writable) {
                    Some(new) => {
                        // SAFETY: as above; flushed below.
                        unsafe { pt_write(e, new) };
                        stale.add(va);
                        v = new;
                    }
                    None => {
                        whole = false;
                        v = 0;
                    }
                }
            }
            if v & (PTE_P | PTE_KEPT) != 0 && v & PTE_FOREIGN == 0 {
                let dst = (v & ADDR_MASK) + off;
                // SAFETY: dst..dst+n lies within one private frame of guest RAM.
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), phys_ptr(dst), n) };
            }
        }
        va += n as u64;
        data = &data[n..];
    }
    stale.flush();
    whole
}

/// What the system-call rewriter (`rewrite.rs`, a layer above) does when
/// a range is unmapped or replaced, and when its code must show its own
/// bytes again (made writable, or about to move).
type CodeHook = fn(u64, u64);
pub(super) static CODE_HOOKS: Global<Option<(CodeHook, CodeHook)>> = Global::new(None);

/// Registers the rewriter's hooks (see `CODE_HOOKS`).
pub fn on_code_change(unmapped: CodeHook, restore: CodeHook) {
    *CODE_HOOKS.get() = Some((unmapped, restore));
}

/// Removes `[start, end)` from the current space's mappings.
pub(super) fn vma_remove(start: u64, end: u64) -> Result<(), i64> {
    if let Some((unmapped, _)) = *CODE_HOOKS.get() {
        unmapped(start, end);
    }
    vma::remove(&mut current().vmas, start, end)
}

/// Adds a mapping to the current space (see `vma::insert`).
pub(super) fn vma_insert(v: Vma) -> Result<(), i64> {
    vma::insert(&mut current().vmas, v)
}

/// True if every byte of `[va, va + len)` is in a mapping allowing `prot`.
pub fn user_access_ok(va: u64, len: u64, prot: u32) -> bool {
    vma::access_ok(&current().vmas, va, len, prot)
}

pub(super) fn overlaps_any(start: u64, end: u64) -> bool {
    current().vmas.iter().any(|v| v.start < end && v.end > start)
}

pub(super) fn valid_user_range(start: u64, len: u64) -> Option<u64> {
    let end = start.checked_add(len)?;
    if start < user::MIN_ADDR || end > user::ADDR_LIMIT || !start.is_multiple_of(PAGE) {
        return None;
    }
    Some(end)
}

/// Maps `[start, start + len)` with `prot`, replacing whatever was there.
pub fn map_fixed(start: u64, len: u64, prot: u32) -> Result<(), i64> {
    let end = valid_user_range(start, len).ok_or(EINVAL)?;
    let mut stale = unback_range(start, end);
    vma_remove(start, end)?;
    let res = back_range(current().pml4, start, end, prot, len <= EAGER_MAX);
    if let Ok(more) = &res {
        // (None: nothing is left to narrow or copy after the unmapping.)
        stale.merge(more);
    }
    stale.flush();
    res?;
    vma_insert(Vma::private(start, end, prot))
}

/// Finds room for `len` bytes below the mmap top: the top of the highest
/// gap between mappings that fits, as Linux's top-down allocator, so the
/// address space of memory unmapped is used again.
pub(super) fn find_free(len: u64) -> Result<u64, i64> {
    let mm = current();
    let floor = mm.brk_start.max(user::MIN_ADDR) + user::BRK_MAX;
    let mut top = user::MMAP_TOP;
    // The mappings are sorted and disjoint: walk them down from the top.
    for v in mm.vmas.iter().rev() {
        if v.start >= top {
            continue;
        }
        if v.end <= top && top - v.end >= len {
            break;
        }
        top = v.start;
    }
    let start = top.checked_sub(len).ok_or(ENOMEM)?;
    if start < floor {
        return Err(ENOMEM);
    }
    Ok(start)
}

/// mmap of anonymous memory. `hint` is honoured with `fixed`, else the
/// runtime picks the address (mappings grow down from MMAP_TOP).
pub fn mmap_anon(hint: u64, len: u64, prot: u32, fixed: bool, noreplace: bool) -> Result<u64, i64> {
    if len == 0 {
        return Err(EINVAL);
    }
    let len = page_up(len);
    if len == 0 || len > user::ADDR_LIMIT {
        return Err(ENOMEM);
    }
    // Like Linux's heuristic overcommit: a mapping that could never be
    // backed is refused up front (the program sees ENOMEM, not a crash).
    if prot != 0 && len / PAGE > spare_frames() {
        return Err(ENOMEM);
    }
    if fixed {
        valid_user_range(hint, len).ok_or(EINVAL)?;
        if noreplace && overlaps_any(hint, hint + len) {
            return Err(EEXIST);
        }
        map_fixed(hint, len, prot)?;
        return Ok(hint);
    }
    let start = find_free(len)?;
    map_fixed(start, len, prot)?;
    Ok(start)
}

/// The range a new mapping of `len` bytes takes (`hint` if `fixed`, else
/// a free one), emptied of what was there: (start, end).
pub(super) fn make_room(hint: u64, len: u64, fixed: bool, noreplace: bool) -> Result<(u64, u64), i64> {
    let len = page_up(len);
    if len == 0 || len > user::ADDR_LIMIT {
        return Err(ENOMEM);
    }
    let start = if fixed {
        valid_user_range(hint, len).ok_or(EINVAL)?;
        if noreplace && overlaps_any(hint, hint + len) {
            return Err(EEXIST);
        }
        hint
    } else {
        find_free(len)?
    };
    let end = start + len;
    unback_range(start, end).flush();
    vma_remove(start, end)?;
    Ok((start, end))
}

/// Reserves `len` bytes of address space (PROT_NONE, no frames) and
/// returns where: for loading an interpreter at a base of our choosing.
pub fn reserve(len: u64) -> Result<u64, i64> {
    let len = page_up(len);
    let start = find_free(len)?;
    vma_insert(Vma::private(start, start + len, 0))?;
    Ok(start)
}

pub fn munmap(start: u64, len: u64) -> Result<(), i64> {
    if !start.is_multiple_of(PAGE) || len == 0 {
        return Err(EINVAL);
    }
    let end = start.checked_add(page_up(len)).ok_or(EINVAL)?;
    if end > user::ADDR_LIMIT {
        return Err(EINVAL);
    }
    unback_range(start, end).flush();
    vma_remove(start, end)
}

/// Whether some mapping of the current space covers `va`.
pub fn is_mapped(va: u64) -> bool {
    vma_at(va).is_some()
}

pub(super) fn vma_at(va: u64) -> Option<Vma> {
    current().vmas.iter().find(|v| v.start <= va && va < v.end).cloned()
}

/// Maps `[start, start + len)` with `prot`, keeping frames of pages that
/// are already backed (ELF segments may share a page).
pub fn map_keep(start: u64, len: u64, prot: u32) -> Result<(), i64> {
    let end = valid_user_range(start, len).ok_or(EINVAL)?;
    back_range(current().pml4, start, end, prot, true)?.flush();
    vma_remove(start, end)?;
    vma_insert(Vma::private(start, end, prot))
}

/// Records `[start, end)` as mapped with `prot` (its pages are already
/// backed, e.g. by [`map_shared_frame`](super::map_shared_frame)).
pub fn add_vma(start: u64, end: u64, prot: u32) -> Result<(), i64> {
    valid_user_range(start, end.saturating_sub(start)).ok_or(EINVAL)?;
    vma_remove(start, end)?;
    vma_insert(Vma::private(start, end, prot))
}

/// Backs `[start, end)` of the runtime's own heap range with fresh frames
/// (no VMA: the program cannot reach this range through its syscalls);
/// with `use_reserve`, the last frames of [`HEAP_RESERVE`] may go too.
/// Pages a failed earlier call left backed are kept.
pub fn map_runtime(start: u64, end: u64, use_reserve: bool) -> Result<(), i64> {
    let pml4 = FRAMES.get().boot_pml4;
    let mut va = start;
    while va < end {
        let e = pte(pml4, va, true).ok_or(ENOMEM)?;
        // SAFETY: e is a valid level-0 entry pointer.
        if unsafe { e.read_volatile() } & PTE_P == 0 {
            let frame = take_frame(if use_reserve { 0 } else { HEAP_RESERVE }).ok_or(ENOMEM)?;
            // SAFETY: as above; not present -> present needs no flush.
            unsafe { pt_write(e, frame | leaf_bits(PROT_READ | PROT_WRITE)) };
        }
        va += PAGE;
    }
    Ok(())
}

/// Maps page `va` of the top-level slots every address space shares onto
/// `frame` (owned by the runtime), readable (and executable with
/// `PROT_EXEC`) by programs but never writable: the vsyscall page. At
/// start only, before any address space copies the shared slots. False
/// if `va` is not in those slots or no table frame is left.
pub fn map_in_shared_slots(va: u64, frame: u64, prot: u32) -> bool {
    if ((va >> 39) & 0x1ff) < USER_SLOTS as u64 {
        return false;
    }
    let Some(e) = pte(FRAMES.get().boot_pml4, va, true) else { return false };
    // SAFETY: a level-0 entry of the boot tables; not present before.
    unsafe { pt_write(e, frame | leaf_bits(prot & !PROT_WRITE) | PTE_SHARED) };
    true
}
