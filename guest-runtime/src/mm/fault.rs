//! Page faults of the program: `fault_in` backs the page and a window
//! around it (growing for memory filled in address order, up to 2 MiB
//! pages: `map_huge`), breaks copy-on-write (`break_cow`) and maps a
//! shared object's frames; `populate` backs a range before the runtime
//! touches it.

use hvsandbox_abi::pte::{ACCESSED as PTE_A, HUGE as PTE_PS, PRESENT as PTE_P, WRITABLE as PTE_RW};

use crate::vma::{Vma, PROT_EXEC, PROT_READ, PROT_WRITE};

use super::cow::{block_unshared, copy_huge_block, cow_room, release_huge, unshared_entry};
use super::frames::{
    alloc_frame, free_frames, page_down, spare_frames, take_huge_block, FRAMES, GROWN_WINDOW_FLOOR, HUGE, HUGE_FRAMES,
    PAGE,
};
use super::journal::{pt_write, ADDR_MASK, PTE_COW, PTE_KEPT, PTE_NX};
use super::map::vma_at;
use super::pt::{huge_page_room, leaf_bits, pd_entry, USER_END};
use super::shared::back_shared_page;
use super::space::{backed, cur_pte, current, leaf, AddressSpace, FaultStream, FAULT_STREAMS};
use super::tlb::Stale;

/// A page fault of the program at `va`: backs the page if it lies in a
/// mapping that allows the access and is not backed yet.
pub fn fault_in(va: u64, write: bool, exec: bool) -> Fault {
    let Some(v) = vma_at(va) else { return Fault::Refused };
    if v.prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0
        || (write && v.prot & PROT_WRITE == 0)
        || (exec && v.prot & PROT_EXEC == 0)
    {
        return Fault::Refused;
    }
    if exec {
        let l = leaf(page_down(va));
        if l & PTE_P != 0 {
            // Executable now (mprotect adds access without a flush): the
            // CPU went by an older TLB entry. Drop them all (rare), then
            // retry.
            if l & PTE_NX != 0 {
                return Fault::Refused;
            }
            crate::cpu::flush_tlb();
            return Fault::Backed;
        }
    }
    if v.shared.is_some() {
        return fault_in_shared(va, &v);
    }
    // A fault costs a trip through ring 0 (~100 µs here): back a window
    // of pages around the page, within the mapping.
    let page = page_down(va);
    let l = leaf(page);
    if write && l & PTE_P != 0 {
        // A write to a present page: copy-on-write, else retry it only if
        // writable now (a TLB entry older than the entry).
        if l & PTE_COW != 0 {
            return match break_cow(page, &v, true) {
                Some(_) => Fault::Backed,
                None => Fault::OutOfMemory,
            };
        }
        if l & PTE_RW == 0 {
            return Fault::Refused;
        }
        // Writable already: the CPU went by an older TLB entry. Drop them
        // all (rare) so that the retry sees the entry.
        crate::cpu::flush_tlb();
        return Fault::Backed;
    }
    if l & (PTE_P | PTE_PS) == PTE_P | PTE_PS {
        // In a 2 MiB page mapped since the access: retry it.
        return Fault::Backed;
    }
    let (mut start, mut end, grown, stream, down) = fault_window(current(), page);
    // Filling memory in order, at the largest window: the next aligned
    // 2 MiB (the one below, going down) goes in as one page, and the
    // pages up to it as before.
    if end - start == FAULT_AROUND_MAX {
        let at = if down { ((page + PAGE) & !(HUGE - 1)).wrapping_sub(HUGE) } else { page.next_multiple_of(HUGE) };
        if map_huge(at, &v) {
            let s = &mut current().fault_streams[stream];
            if down {
                s.lo = at;
                start = at + HUGE;
            } else {
                s.hi = at + HUGE;
                end = at;
            }
            if at <= page && page < at + HUGE {
                return Fault::Backed;
            }
        }
    }
    if !back_page(page, v.prot) {
        return if spare_frames() == 0 { Fault::OutOfMemory } else { Fault::Refused };
    }
    let (start, end) = (start.max(v.start), end.min(v.end));
    let mut at = start;
    while at < end {
        // A grown window backs more than the page only while frames are
        // plentiful: pages the program may never touch must not take the
        // last ones.
        if at != page && !backed(at) && ((grown && free_frames() < GROWN_WINDOW_FLOOR) || !back_page(at, v.prot)) {
            break;
        }
        at += PAGE;
    }
    Fault::Backed
}

/// The window a page fault at `page` backs: the aligned [`FAULT_AROUND`]
/// bytes around it, or, when the fault lands right where a recent
/// window ended (a program filling memory in address order), twice that
/// window from the page on, up to [`FAULT_AROUND_MAX`]; likewise right
/// below where one began (filling it downwards: glibc's memmove copies
/// backwards when the source ends where the target starts, as Python's
/// `bytearray * n` does). Returns the window, whether it grew past the
/// first size, its stream's slot and whether it goes down.
fn fault_window(space: &mut AddressSpace, page: u64) -> (u64, u64, bool, usize, bool) {
    let grow = |s: &FaultStream| (s.len * 2).min(FAULT_AROUND_MAX);
    let streams = &space.fault_streams;
    let (slot, start, len, down) = if let Some(i) = streams.iter().position(|s| s.len != 0 && s.hi == page) {
        (i, page, grow(&streams[i]), false)
    } else if let Some(i) = streams.iter().position(|s| s.len != 0 && s.lo == page + PAGE && s.lo >= grow(s)) {
        let len = grow(&streams[i]);
        (i, page + PAGE - len, len, true)
    } else {
        let i = space.fault_victim;
        space.fault_victim = (i + 1) % FAULT_STREAMS;
        (i, page & !(FAULT_AROUND - 1), FAULT_AROUND, false)
    };
    let end = start.saturating_add(len);
    space.fault_streams[slot] = FaultStream { lo: start, hi: end, len };
    (start, end, len > FAULT_AROUND, slot, down)
}

/// A fault in a shared mapping: the object's frame for the page, and for
/// its neighbours in the fault-around window that the object has.
fn fault_in_shared(va: u64, v: &Vma) -> Fault {
    let page = page_down(va);
    match back_shared_page(page, v) {
        Ok(true) => {}
        Ok(false) => {
            return if backed(page) { Fault::Refused } else { Fault::Bus };
        }
        Err(_) => return Fault::OutOfMemory,
    }
    let start = (va & !(FAULT_AROUND - 1)).max(v.start);
    let end = ((va | (FAULT_AROUND - 1)) + 1).min(v.end);
    let mut at = start;
    while at < end {
        if at != page && back_shared_page(at, v).is_err() {
            break;
        }
        at += PAGE;
    }
    Fault::Backed
}

/// What became of a program's page fault.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The page is backed now: retry the access.
    Backed,
    /// A real fault: the access is not allowed.
    Refused,
    /// Allowed, but guest memory is exhausted.
    OutOfMemory,
    /// A shared mapping's page past the end of its file (SIGBUS).
    Bus,
}

/// Bytes backed together on a page fault...
const FAULT_AROUND: u64 = 256 * 1024;
/// ...and at most, for faults in address order (`fault_window`): 256 KiB,
/// 512 KiB, 1 MiB, then 2 MiB a fault, so 64 MiB filled in order takes
/// ~35 faults instead of 256.
const FAULT_AROUND_MAX: u64 = 2 << 20;

fn back_page(va: u64, prot: u32) -> bool {
    let Some(e) = cur_pte(va, true) else { return false };
    // SAFETY: valid level-0 entry pointer.
    if unsafe { e.read_volatile() } & (PTE_P | PTE_KEPT) != 0 {
        return false;
    }
    let Some(f) = alloc_frame() else { return false };
    // SAFETY: as above; not present -> present needs no flush.
    unsafe { pt_write(e, f | leaf_bits(prot)) };
    true
}

/// Backs every not-yet-backed page of `[va, va + len)` (already checked to
/// lie in accessible mappings) before the runtime touches it.
pub fn populate(va: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let end = va.saturating_add(len);
    let mut at = page_down(va);
    while at < end {
        if !backed(at) {
            let Some(v) = vma_at(at) else { return false };
            let ok = if v.shared.is_some() { back_shared_page(at, &v) == Ok(true) } else { back_page(at, v.prot) };
            if !ok {
                return false;
            }
        }
        at += PAGE;
    }
    true
}

/// [`populate`] for a write by the runtime: copy-on-write pages are made
/// the current space's own too (`unshare_range`).
pub fn populate_write(va: u64, len: u64) -> bool {
    populate(va, len) && unshare_range(va, len)
}

/// Maps `[at, at + 2 MiB)` of the current space, which `v` (private,
/// accessible) covers and which has no page table yet, as one 2 MiB page
/// of fresh zeroed frames with `v`'s access, if frames are plentiful.
/// KVM then maps it with one fault (2 MiB host pages back guest RAM)
/// where 4 KiB pages took one per 8. False if not.
fn map_huge(at: u64, v: &Vma) -> bool {
    if !at.is_multiple_of(HUGE)
        || at < v.start
        || at.saturating_add(HUGE) > v.end
        || at >= USER_END
        || !huge_page_room()
    {
        return false;
    }
    let Some(e) = pd_entry(current().pml4, at) else { return false };
    // SAFETY: a page-directory entry of the current space.
    if unsafe { e.read_volatile() } != 0 {
        return false;
    }
    let Some(base) = take_huge_block(true) else { return false };
    FRAMES.get().huge_live += 1;
    // SAFETY: as above; not present -> present needs no flush.
    unsafe { pt_write(e, base | leaf_bits(v.prot) | PTE_PS) };
    true
}

/// Makes page `va` of the current space (mapped by `v`) the space's own
/// for a write: a 2 MiB page is copied whole while there is ample room
/// (`cow_room`), else split, as Linux does; a 4 KiB page gets
/// `unshared_entry`. With `window` and ample room, so do the
/// copy-on-write pages of the aligned 64 KiB around it, as a page fault
/// here costs ~100 page copies (flushing those touched since the fork:
/// their TLB entries may hold the old frame). Returns
/// whether it changed an entry the TLB may hold (the caller flushes,
/// unless a fault on `va` itself invalidated it); None when out of
/// frames.
fn break_cow(va: u64, v: &Vma, window: bool) -> Option<bool> {
    let writable = v.prot & PROT_WRITE != 0;
    let page = page_down(va);
    let l = leaf(page);
    if l & PTE_COW == 0 {
        return Some(false);
    }
    if l & PTE_PS != 0 {
        let base = l & ADDR_MASK;
        let rw = if writable { PTE_RW } else { 0 };
        let e = pd_entry(current().pml4, page)?;
        if block_unshared(base) {
            // SAFETY: the current space's page-directory entry for `page`.
            unsafe { pt_write(e, (l & !PTE_COW) | rw) };
            return Some(true);
        }
        if cow_room(HUGE_FRAMES) && huge_page_room() {
            if let Some(block) = copy_huge_block(base) {
                release_huge(l);
                // SAFETY: as above; the caller flushes (another frame).
                unsafe { pt_write(e, block | (l & !(ADDR_MASK | PTE_COW)) | rw) };
                return Some(true);
            }
        }
        // No room for a copy: 512 pages (the walk below splits it).
    }
    let e = cur_pte(page, false)?;
    // SAFETY: a level-0 entry pointer of the current space.
    let old = unsafe { e.read_volatile() };
    let new = unshared_entry(old, writable)?;
    // SAFETY: as above; the caller flushes.
    unsafe { pt_write(e, new) };
    if window && cow_room(0) {
        const COW_WINDOW: u64 = 64 * 1024;
        let start = (page & !(COW_WINDOW - 1)).max(v.start);
        let end = ((page | (COW_WINDOW - 1)) + 1).min(v.end);
        let mut at = start;
        // The pages whose old entries the CPU may hold (accessed since the
        // fork).
        let mut stale = Stale::default();
        while at < end {
            if let Some(e) = cur_pte(at, false).filter(|_| at != page) {
                // SAFETY: as above.
                let old = unsafe { e.read_volatile() };
                if old & (PTE_COW | PTE_P) == PTE_COW | PTE_P {
                    let Some(new) = unshared_entry(old, writable) else { break };
                    // SAFETY: as above; flushed below if accessed.
                    unsafe { pt_write(e, new) };
                    if old & PTE_A != 0 {
                        stale.add(at);
                    }
                }
            }
            at += PAGE;
        }
        stale.flush();
    }
    Some(true)
}

/// Makes every copy-on-write page of `[va, va + len)` (backed, in
/// writable mappings: the caller checked) the current space's own before
/// the runtime writes there through the program's addresses; flushes if
/// any changed. False when out of frames.
fn unshare_range(va: u64, len: u64) -> bool {
    if len == 0 {
        // Nothing to write (and `va` may be any value at all).
        return true;
    }
    let end = va.saturating_add(len);
    let mut at = page_down(va);
    let mut stale = Stale::default();
    while at < end {
        if leaf(at) & PTE_COW != 0 {
            let Some(v) = vma_at(at) else { return false };
            match break_cow(at, &v, false) {
                Some(true) => stale.add(at),
                Some(false) => {}
                None => {
                    stale.flush();
                    return false;
                }
            }
        }
        at = match at.checked_add(PAGE) {
            Some(next) => next,
            None => break,
        };
    }
    stale.flush();
    true
}
