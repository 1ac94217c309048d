//! Changes to mappings already there: mprotect, msync, mremap (which
//! moves page-table entries, so the frames go along uncopied) and madvise.

use alloc::vec::Vec;

use hvsandbox_abi::pte::PRESENT as PTE_P;
use hvsandbox_abi::user;

use crate::errno::{EFAULT, EINVAL, ENOMEM};
use crate::vma::{self, Shared, Vma, PROT_EXEC, PROT_READ, PROT_WRITE};

use super::cow::{release_frame, shares};
use super::frames::{page_up, spare_frames, zero_frame, HUGE, PAGE};
use super::journal::{pt_write, ADDR_MASK, PTE_COW, PTE_FOREIGN, PTE_KEPT};
use super::map::{
    back_range, find_free, free_empty_tables, munmap, overlaps_any, valid_user_range, vma_at, vma_insert, vma_remove,
    CODE_HOOKS,
};
use super::shared::map_shared;
use super::space::{cur_pte, current};

pub fn mprotect(start: u64, len: u64, prot: u32) -> Result<(), i64> {
    const PROT_SEM: u32 = 0x8;
    const PROT_GROWSDOWN: u32 = 0x0100_0000;
    const PROT_GROWSUP: u32 = 0x0200_0000;
    let rwx = PROT_READ | PROT_WRITE | PROT_EXEC;
    if !start.is_multiple_of(PAGE)
        || prot & !(rwx | PROT_SEM | PROT_GROWSDOWN | PROT_GROWSUP) != 0
        || prot & (PROT_GROWSDOWN | PROT_GROWSUP) == PROT_GROWSDOWN | PROT_GROWSUP
    {
        return Err(EINVAL);
    }
    let end = start.checked_add(page_up(len)).ok_or(ENOMEM)?;
    // PROT_GROWSDOWN: down to the start of the mapping (a stack), as
    // glibc asks when a library needs an executable stack.
    let start = match vma_at(start) {
        Some(v) if prot & PROT_GROWSDOWN != 0 && len != 0 => v.start,
        _ => start,
    };
    let prot = prot & rwx;
    if len == 0 {
        return Ok(());
    }
    // Every page of the range must be mapped (Linux: ENOMEM otherwise).
    let mut at = start;
    for v in &current().vmas {
        if v.end <= at {
            continue;
        }
        if v.start > at {
            return Err(ENOMEM);
        }
        // A shared mapping of a file opened read-only stays read-only.
        if prot & PROT_WRITE != 0 && v.shared.as_ref().is_some_and(|s| !s.may_write) {
            return Err(crate::errno::EACCES);
        }
        at = v.end;
        if at >= end {
            break;
        }
    }
    if at < end {
        return Err(ENOMEM);
    }
    if prot & PROT_WRITE != 0 || prot & PROT_EXEC == 0 {
        // Code made writable shows its own bytes again (a JIT may edit
        // it); so does code that may no longer run, as a rewritten site
        // there must fault where it would have (its `syscall` may lie in
        // the next page, after the jump: see `Site::touches`).
        if let Some((_, restore)) = *CODE_HOOKS.get() {
            restore(start, end);
        }
    }
    vma::protect(&mut current().vmas, start, end, prot)?;
    let res = back_range(current().pml4, start, end, prot, false);
    if let Ok(stale) = &res {
        stale.flush();
    }
    res.map(|_| ())
}

/// msync(2): shared mappings show the object's frames themselves, so
/// there is nothing to write back; only the arguments are checked.
pub fn msync(start: u64, len: u64, flags: u64) -> Result<(), i64> {
    const MS_ASYNC: u64 = 1;
    const MS_INVALIDATE: u64 = 2;
    const MS_SYNC: u64 = 4;
    if !start.is_multiple_of(PAGE) || flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0 {
        return Err(EINVAL);
    }
    if flags & MS_ASYNC != 0 && flags & MS_SYNC != 0 {
        return Err(EINVAL);
    }
    let end = start.checked_add(page_up(len)).ok_or(ENOMEM)?;
    if !vma::all_mapped(&current().vmas, start, end) {
        return Err(ENOMEM);
    }
    Ok(())
}

/// mremap(2): shrinks a mapping in place, grows it in place when the
/// pages after it are free, else (with MREMAP_MAYMOVE) moves it: its
/// page-table entries move, so its frames, private or shared, go along
/// uncopied. MREMAP_FIXED moves it to `new_addr`. An `old_size` of 0 on
/// a shared mapping maps the same pages again. The old range must lie in
/// one mapping (EFAULT otherwise, as Linux).
pub fn mremap(old: u64, old_size: u64, new_size: u64, flags: u64, new_addr: u64) -> Result<u64, i64> {
    const MAYMOVE: u64 = 1;
    const FIXED: u64 = 2;
    if flags & !(MAYMOVE | FIXED) != 0 || !old.is_multiple_of(PAGE) || (flags & FIXED != 0 && flags & MAYMOVE == 0) {
        return Err(EINVAL);
    }
    let old_len = page_up(old_size);
    let new_len = page_up(new_size);
    if new_len == 0 || old_len > user::ADDR_LIMIT || new_len > user::ADDR_LIMIT {
        return Err(if new_len == 0 { EINVAL } else { ENOMEM });
    }
    let fixed = flags & FIXED != 0;
    if fixed {
        let end = valid_user_range(new_addr, new_len).ok_or(EINVAL)?;
        if new_addr < old.saturating_add(old_len.max(PAGE)) && old < end {
            return Err(EINVAL);
        }
    }
    let v = vma_at(old).ok_or(EFAULT)?;
    if let Some((_, restore)) = *CODE_HOOKS.get() {
        // Rewritten code jumps relative to where it is: not if it moves.
        restore(old, old.saturating_add(old_len));
    }
    if old_len == 0 {
        // A second mapping of the same pages: shared mappings only.
        let Some(shared) = v.shared.clone() else { return Err(EINVAL) };
        if flags & MAYMOVE == 0 {
            return Err(ENOMEM);
        }
        let shared = Shared { pgoff: shared.pgoff + (old - v.start) / PAGE, ..shared };
        return map_shared(new_addr, new_len, v.prot, fixed, false, shared);
    }
    if old + old_len > v.end {
        return Err(EFAULT);
    }
    let growth = new_len.saturating_sub(old_len);
    if v.shared.is_none() && v.prot != 0 && growth / PAGE > spare_frames() {
        return Err(ENOMEM);
    }
    if !fixed {
        if new_len <= old_len {
            if new_len < old_len {
                munmap(old + new_len, old_len - new_len)?;
            }
            return Ok(old);
        }
        let fits = old.checked_add(new_len).is_some_and(|e| e <= user::ADDR_LIMIT);
        if fits && !overlaps_any(old + old_len, old + new_len) {
            let tail = Vma { start: old + old_len, end: old + new_len, ..v.clone() };
            let tail = match &v.shared {
                Some(s) => {
                    Vma { shared: Some(Shared { pgoff: s.pgoff + (tail.start - v.start) / PAGE, ..s.clone() }), ..tail }
                }
                None => tail,
            };
            vma_insert(tail)?;
            return Ok(old);
        }
        if flags & MAYMOVE == 0 {
            return Err(ENOMEM);
        }
    }
    let keep = old_len.min(new_len);
    let dst = if fixed {
        munmap(new_addr, new_len)?;
        new_addr
    } else {
        find_free(new_len)?
    };
    // The part that moves, as a mapping of its own at `dst`.
    let moved = Vma {
        start: dst,
        end: dst + new_len,
        prot: v.prot,
        shared: v.shared.as_ref().map(|s| Shared { pgoff: s.pgoff + (old - v.start) / PAGE, ..s.clone() }),
        on_fork: v.on_fork,
    };
    // Room in the list for a split of the old mapping and the new one.
    let vmas = &mut current().vmas;
    if vmas.len() + 2 > vma::MAX_VMAS || vmas.try_reserve(2).is_err() {
        return Err(ENOMEM);
    }
    move_entries(old, dst, keep)?;
    if new_len < old_len {
        let _ = munmap(old + keep, old_len - keep);
    }
    vma_remove(old, old + keep)?;
    vma_insert(moved)?;
    crate::cpu::flush_tlb();
    Ok(dst)
}

/// Moves the page-table entries of `[from, from + len)` to `to` (a free
/// range); on failure (no page-table frame) moves back what moved.
fn move_entries(from: u64, to: u64, len: u64) -> Result<(), i64> {
    let mut off = 0;
    while off < len {
        let moved = match cur_pte(from + off, false) {
            None => true,
            Some(e) => {
                // SAFETY: valid level-0 entry pointer.
                let v = unsafe { e.read_volatile() };
                if v & (PTE_P | PTE_KEPT) == 0 {
                    true
                } else if let Some(d) = cur_pte(to + off, true) {
                    // SAFETY: valid level-0 entry pointers; the source entry
                    // may be re-read by `cur_pte` creating a table: it was
                    // read above and is written only here.
                    unsafe {
                        pt_write(d, v);
                        pt_write(e, 0);
                    }
                    true
                } else {
                    false
                }
            }
        };
        if !moved {
            if off > 0 {
                let _ = move_entries(to, from, off);
            }
            crate::cpu::flush_tlb();
            return Err(ENOMEM);
        }
        off += PAGE;
    }
    // The caller flushes: the source's entries are gone.
    free_empty_tables(from, from + len);
    Ok(())
}

/// MADV_DONTNEED on private anonymous memory: the pages read as zero again.
pub(super) fn madvise_dontneed(start: u64, len: u64) -> Result<(), i64> {
    if !start.is_multiple_of(PAGE) {
        return Err(EINVAL);
    }
    let end = start.checked_add(page_up(len)).ok_or(EINVAL)?;
    // Only pages of the program's mappings: page-table entries outside
    // them (the brk pages kept ready, nothing at all) are not its to drop.
    let ranges: Vec<(u64, u64)> = current()
        .vmas
        .iter()
        .filter(|v| v.end > start && v.start < end)
        .map(|v| (v.start.max(start), v.end.min(end)))
        .collect();
    let mut flush = false;
    for va in ranges.into_iter().flat_map(|(from, to)| (from..to).step_by(PAGE as usize)) {
        if let Some(e) = cur_pte(va, false) {
            // SAFETY: valid entry pointer.
            let v = unsafe { e.read_volatile() };
            if v & (PTE_P | PTE_KEPT) != 0 && v & PTE_FOREIGN == 0 {
                if v & PTE_COW != 0 && shares(v & ADDR_MASK) != 0 {
                    // Another space's too: this one lets go (a zero page
                    // on the next touch).
                    // SAFETY: as above; flushed below.
                    unsafe { pt_write(e, 0) };
                    release_frame(v);
                    flush |= v & PTE_P != 0;
                } else {
                    zero_frame(v & ADDR_MASK);
                }
            }
        }
    }
    if flush {
        crate::cpu::flush_tlb();
    }
    Ok(())
}

/// madvise's fork advice: `change` for the mappings in `[start, end)` of
/// the current space. A 2 MiB page across
/// an edge becomes 512 pages first: a fork treats a 2 MiB entry as one
/// mapping's.
fn set_on_fork(start: u64, end: u64, change: impl Fn(&mut vma::OnFork)) -> Result<(), i64> {
    for edge in [start, end] {
        if !edge.is_multiple_of(HUGE) {
            let _ = cur_pte(edge, false);
        }
    }
    vma::update(&mut current().vmas, start, end, |v| change(&mut v.on_fork))
}

pub(super) const MADV_DONTNEED: u64 = 4;
const MADV_REMOVE: u64 = 9;
const MADV_DONTFORK: u64 = 10;
const MADV_DOFORK: u64 = 11;
const MADV_WIPEONFORK: u64 = 18;
const MADV_KEEPONFORK: u64 = 19;
const MADV_DONTNEED_LOCKED: u64 = 24;

/// What madvise does to `[start, end)` of the current space (page-aligned,
/// the advice one Linux knows): DONTNEED drops private pages (zero on the
/// next touch); DONTFORK/DOFORK and WIPEONFORK/KEEPONFORK set what a fork
/// does (WIPEONFORK is for private memory only); REMOVE is for shared
/// mappings only. The rest are hints that change nothing a program can
/// see. As on Linux, the advice applies to the mapped parts of the range
/// and a range with holes is ENOMEM.
pub fn madvise(start: u64, end: u64, advice: u64) -> Result<(), i64> {
    let vmas = &current().vmas;
    let mapped = vma::all_mapped(vmas, start, end);
    let within = || vmas.iter().filter(move |v| v.end > start && v.start < end);
    match advice {
        MADV_DONTNEED | MADV_DONTNEED_LOCKED => madvise_dontneed(start, end - start)?,
        MADV_WIPEONFORK if within().any(|v| v.shared.is_some()) => return Err(EINVAL),
        MADV_REMOVE if within().any(|v| v.shared.is_none()) => return Err(EINVAL),
        MADV_DONTFORK | MADV_DOFORK => set_on_fork(start, end, |f| f.skip = advice == MADV_DONTFORK)?,
        MADV_WIPEONFORK | MADV_KEEPONFORK => set_on_fork(start, end, |f| f.wipe = advice == MADV_WIPEONFORK)?,
        _ => {}
    }
    if mapped {
        Ok(())
    } else {
        Err(ENOMEM)
    }
}
