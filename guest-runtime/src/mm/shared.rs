//! Mappings of frames the space does not own: a file's frames mapped in
//! place, read-only (`PTE_SHARED`: page by page, or as a 2 MiB page), or
//! else copied (`map_file`); and a shared object's (`PTE_SHM`:
//! MAP_SHARED, mapped as the program touches them).

use hvsandbox_abi::pte::{HUGE as PTE_PS, PRESENT as PTE_P};

use crate::errno::{EINVAL, ENOMEM};
use crate::vma::{self, Shared, Vma, PROT_EXEC, PROT_READ, PROT_WRITE};

use super::cow::copy_frame;
use super::frames::{free_frame, page_up, FRAMES, HUGE, PAGE};
use super::journal::{pt_write, ADDR_MASK, PTE_KEPT, PTE_SHARED, PTE_SHM};
use super::map::{make_room, munmap, valid_user_range, vma_at, vma_insert, vma_remove, EAGER_MAX};
use super::pt::{leaf_bits, pd_entry, pte, table_frames_free};
use super::space::{cur_pte, current, leaf, AddressSpace, CURRENT};

/// Maps page `va` onto `frame` owned by someone else (the file cache),
/// read-only. Returns false if the page is already backed.
pub fn map_shared_frame(va: u64, frame: u64, prot: u32) -> Result<bool, i64> {
    valid_user_range(va, PAGE).ok_or(EINVAL)?;
    let e = cur_pte(va, true).ok_or(ENOMEM)?;
    // SAFETY: valid level-0 entry pointer.
    if unsafe { e.read_volatile() } & (PTE_P | PTE_KEPT) != 0 {
        return Ok(false);
    }
    // SAFETY: as above; not-present -> present needs no flush.
    unsafe { pt_write(e, frame | leaf_bits(prot & !PROT_WRITE) | PTE_SHARED) };
    Ok(true)
}

/// Maps the 2 MiB at `va` of the current space (aligned, a program
/// address, no page table under it yet) to the 512 file frames from
/// `base` (aligned), read-only in place with `prot`, as one 2 MiB page:
/// KVM then maps it with one fault where 4 KiB pages take one per 8 (the
/// host lays a large program's file out 2 MiB-aligned). The frames stay
/// the file cache's, as [`map_shared_frame`]'s do; a change to part of
/// the range (`mprotect`, `munmap`, a rewritten site) splits it into
/// those 512 pages. False where it cannot (then map the pages one by
/// one): not aligned, writable, a table in the way, or no table frame to
/// keep for its split.
pub fn map_file_huge(va: u64, base: u64, prot: u32) -> bool {
    if !va.is_multiple_of(HUGE)
        || !base.is_multiple_of(HUGE)
        || valid_user_range(va, HUGE).is_none()
        || prot & PROT_WRITE != 0
        || prot & (PROT_READ | PROT_EXEC) == 0
        || table_frames_free() < FRAMES.get().huge_live + 8
    {
        return false;
    }
    let Some(e) = pd_entry(current().pml4, va) else { return false };
    // SAFETY: a page-directory entry of the current space.
    if unsafe { e.read_volatile() } != 0 {
        return false;
    }
    FRAMES.get().huge_live += 1;
    // SAFETY: as above; not present -> present needs no flush.
    unsafe { pt_write(e, base | leaf_bits(prot) | PTE_PS | PTE_SHARED) };
    true
}

/// Maps `len` bytes of a file: `frame(i)` gives the frame holding page
/// `i` of the mapping (None past the end of the file: zero pages, backed
/// on first touch). Without PROT_WRITE and with `in_place` the file's
/// frames are mapped in place (shared with the file cache); else each
/// page is a private copy.
pub fn map_file(
    hint: u64,
    len: u64,
    prot: u32,
    fixed: bool,
    noreplace: bool,
    in_place: bool,
    frame: &mut dyn FnMut(u64) -> Result<Option<u64>, i64>,
) -> Result<u64, i64> {
    if fixed && !noreplace && in_place && prot & PROT_WRITE == 0 && remap_in_place(hint, len, prot, frame)? {
        return Ok(hint);
    }
    let (start, end) = make_room(hint, len, fixed, noreplace)?;
    let len = end - start;
    vma_insert(Vma::private(start, end, prot))?;
    let mut va = start;
    let mut i = 0;
    let result = loop {
        if va >= end {
            break Ok(());
        }
        match frame(i) {
            Ok(None) => break Ok(()),
            Ok(Some(f)) => {
                let ok = if prot & PROT_WRITE == 0 && in_place {
                    map_shared_frame(va, f, prot).is_ok()
                } else {
                    match (copy_frame(f), cur_pte(va, true)) {
                        (Some(c), Some(e)) => {
                            // SAFETY: a level-0 entry just cleared above.
                            unsafe { pt_write(e, c | leaf_bits(prot)) };
                            true
                        }
                        (Some(c), None) => {
                            free_frame(c);
                            false
                        }
                        _ => false,
                    }
                };
                if !ok {
                    break Err(ENOMEM);
                }
            }
            Err(e) => break Err(e),
        }
        va += PAGE;
        i += 1;
    };
    if let Err(e) = result {
        let _ = munmap(start, len);
        return Err(e);
    }
    Ok(start)
}

/// A read-only mapping of a file's frames in place at `start` over pages
/// that map those very frames already, in one read-only private mapping
/// whose access `prot` includes: ld.so maps a library whole, read-only,
/// then each segment again at its place, so its code and read-only data
/// land on their own pages. Their entries only gain access, as an
/// mprotect's would: no flush (replaced, they cost one per segment, a
/// third of a `python3 -c`'s CR3 loads). Ok(false), nothing changed, if
/// any page is otherwise.
fn remap_in_place(
    start: u64,
    len: u64,
    prot: u32,
    frame: &mut dyn FnMut(u64) -> Result<Option<u64>, i64>,
) -> Result<bool, i64> {
    let len = page_up(len);
    let Some(end) = valid_user_range(start, len).filter(|_| len > 0) else { return Ok(false) };
    let Some(v) = vma_at(start) else { return Ok(false) };
    if end > v.end || v.shared.is_some() || v.prot & PROT_WRITE != 0 || v.prot & !prot != 0 {
        return Ok(false);
    }
    for (i, va) in (start..end).step_by(PAGE as usize).enumerate() {
        let old = leaf(va);
        if old & (PTE_P | PTE_PS | PTE_SHARED) != PTE_P | PTE_SHARED || frame(i as u64)? != Some(old & ADDR_MASK) {
            return Ok(false);
        }
    }
    vma_remove(start, end)?;
    vma_insert(Vma::private(start, end, prot))?;
    for va in (start..end).step_by(PAGE as usize) {
        if let Some(e) = cur_pte(va, false) {
            // SAFETY: a level-0 entry of the current space, present with a
            // file-cache frame (checked above); same frame, no access
            // lost: no flush needed.
            unsafe { pt_write(e, (e.read_volatile() & ADDR_MASK) | leaf_bits(prot) | PTE_SHARED) };
        }
    }
    Ok(true)
}

/// Maps `len` bytes of a shared object (MAP_SHARED) at `hint` if `fixed`,
/// else where there is room: the pages are the object's frames, mapped
/// as the program touches them (the first [`EAGER_MAX`] bytes at once).
pub fn map_shared(hint: u64, len: u64, prot: u32, fixed: bool, noreplace: bool, shared: Shared) -> Result<u64, i64> {
    // The object's pages past u64 offsets cannot exist.
    shared.pgoff.checked_add(page_up(len) / PAGE).ok_or(EINVAL)?;
    let (start, end) = make_room(hint, len, fixed, noreplace)?;
    let len = end - start;
    let v = Vma { start, end, prot, shared: Some(shared), on_fork: vma::OnFork::default() };
    vma_insert(v.clone())?;
    let mut va = start;
    while va < end.min(start + EAGER_MAX) {
        match back_shared_page(va, &v) {
            Ok(true) => {}
            // Past the object's end: a touch there is a SIGBUS.
            Ok(false) => break,
            Err(e) => {
                let _ = munmap(start, len);
                return Err(e);
            }
        }
        va += PAGE;
    }
    Ok(start)
}

/// Maps page `va` of shared mapping `v` onto the object's frame. Ok(false)
/// past the object's end or if the page is already backed.
pub(super) fn back_shared_page(va: u64, v: &Vma) -> Result<bool, i64> {
    let Some((obj, index)) = v.object_page(va) else { return Ok(false) };
    let e = cur_pte(va, true).ok_or(ENOMEM)?;
    // SAFETY: valid level-0 entry pointer.
    if unsafe { e.read_volatile() } & (PTE_P | PTE_KEPT) != 0 {
        return Ok(false);
    }
    let Some(frame) = obj.page(index)? else { return Ok(false) };
    // SAFETY: as above; not present -> present needs no flush.
    unsafe { pt_write(e, (frame & ADDR_MASK) | leaf_bits(v.prot) | PTE_SHM) };
    Ok(true)
}

/// Takes the pages of object `key` from page `first` on out of `space`'s
/// page tables (the object is cut short: a touch there is a SIGBUS, and
/// the object may free those frames afterwards).
pub fn drop_object_pages(space: &mut AddressSpace, key: usize, first: u64) {
    let mut flush = false;
    for v in &space.vmas {
        let Some(s) = &v.shared else { continue };
        if s.obj.key() != key {
            continue;
        }
        let skip = first.saturating_sub(s.pgoff);
        if skip >= (v.end - v.start) / PAGE {
            continue;
        }
        let mut va = v.start + skip * PAGE;
        while va < v.end {
            let Some(e) = pte(space.pml4, va, false) else {
                // No table here: on to the next 2 MiB boundary.
                va = (va | 0x1f_ffff) + 1;
                continue;
            };
            // SAFETY: valid level-0 entry pointer.
            let old = unsafe { e.read_volatile() };
            if old & PTE_SHM != 0 {
                // SAFETY: as above.
                unsafe { pt_write(e, 0) };
                flush |= old & PTE_P != 0;
            }
            va += PAGE;
        }
    }
    // Other spaces hold no TLB entries: loading their root flushes.
    if flush && core::ptr::eq(*CURRENT.get(), space) {
        crate::cpu::flush_tlb();
    }
}

/// The futex key of `va` when it lies in a shared mapping: the object
/// and the byte offset in it, the same in every process mapping it.
pub fn shared_key(va: u64) -> Option<(usize, u64)> {
    // Sorted and disjoint: the first mapping ending above `va`.
    let vmas = &current().vmas;
    let v = vmas.get(vmas.partition_point(|v| v.end <= va)).filter(|v| v.start <= va)?;
    let (obj, index) = v.object_page(va)?;
    Some((obj.key(), index.wrapping_mul(PAGE) + (va & (PAGE - 1))))
}
