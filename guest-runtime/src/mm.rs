//! Memory: a frame allocator over the guest RAM the host left free, the
//! program's page tables (written through the physmap, at CPL3), and the
//! list of the program's mappings (VMAs).
//!
//! Mappings are backed eagerly: fresh frames come from never-used guest
//! RAM, which is already zero and costs the host nothing until touched, so
//! mapping a page is just a page-table write. Adding a mapping needs no
//! TLB flush; removing or downgrading one does (batched, one per call).

use hvsandbox_abi::{self as abi, user};

use crate::rt::{phys_ptr, Global};

pub const PAGE: u64 = abi::PAGE_SIZE;

const PTE_P: u64 = 1;
const PTE_RW: u64 = 1 << 1;
const PTE_US: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
/// Software bit: a frame is kept behind a not-present entry (PROT_NONE).
const PTE_KEPT: u64 = 1 << 9;
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

/// Errors of memory operations, as Linux errno values.
pub use crate::errno::{EEXIST, EINVAL, ENOMEM};

const MAX_VMAS: usize = 1024;

#[derive(Clone, Copy)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
}

struct Mm {
    pml4: u64,
    next_frame: u64,
    frame_end: u64,
    /// Freed frames, linked through their first word (as guest-physical
    /// addresses; 0 ends the list).
    free_list: u64,
    used: u64,
    peak: u64,
    vmas: [Vma; MAX_VMAS],
    nvmas: usize,
    brk_start: u64,
    brk: u64,
    mmap_next: u64,
}

static MM: Global<Mm> = Global::new(Mm {
    pml4: 0,
    next_frame: 0,
    frame_end: 0,
    free_list: 0,
    used: 0,
    peak: 0,
    vmas: [Vma { start: 0, end: 0, prot: 0 }; MAX_VMAS],
    nvmas: 0,
    brk_start: 0,
    brk: 0,
    mmap_next: user::MMAP_TOP,
});

pub fn init(info: &abi::BootInfo) {
    let mm = MM.get();
    mm.pml4 = info.pml4_gpa;
    mm.next_frame = info.free_start.next_multiple_of(PAGE);
    mm.frame_end = info.free_end.min(info.mem_size) & !(PAGE - 1);
}

pub fn page_up(x: u64) -> u64 {
    x.wrapping_add(PAGE - 1) & !(PAGE - 1)
}
pub fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

fn zero_frame(gpa: u64) {
    // SAFETY: `gpa` is a whole frame of guest RAM owned by the allocator.
    unsafe { core::ptr::write_bytes(phys_ptr(gpa), 0, PAGE as usize) };
}

/// A zeroed frame, or None when guest memory is exhausted.
fn alloc_frame() -> Option<u64> {
    let mm = MM.get();
    let gpa = if mm.free_list != 0 {
        let gpa = mm.free_list;
        // SAFETY: free frames hold the next link in their first word.
        mm.free_list = unsafe { (phys_ptr(gpa) as *const u64).read() };
        zero_frame(gpa);
        gpa
    } else if mm.next_frame + PAGE <= mm.frame_end {
        // Never used since boot: already zero.
        let gpa = mm.next_frame;
        mm.next_frame += PAGE;
        gpa
    } else {
        return None;
    };
    mm.used += 1;
    mm.peak = mm.peak.max(mm.used);
    Some(gpa)
}

fn free_frame(gpa: u64) {
    let mm = MM.get();
    // SAFETY: the frame is no longer mapped anywhere; its first word
    // becomes the free-list link.
    unsafe { (phys_ptr(gpa) as *mut u64).write(mm.free_list) };
    mm.free_list = gpa;
    mm.used -= 1;
}

/// Bytes of guest memory in use by the program (peak), and free now.
pub fn usage() -> (u64, u64) {
    let mm = MM.get();
    let mut free_count = (mm.frame_end - mm.next_frame) / PAGE;
    let mut f = mm.free_list;
    while f != 0 && free_count < (1 << 40) {
        free_count += 1;
        // SAFETY: free frames hold the next link in their first word.
        f = unsafe { (phys_ptr(f) as *const u64).read() };
    }
    (mm.peak * PAGE, free_count * PAGE)
}

fn table(gpa: u64) -> *mut u64 {
    phys_ptr(gpa) as *mut u64
}

/// The level-0 entry for `va`, creating intermediate tables if `create`.
fn pte(va: u64, create: bool) -> Option<*mut u64> {
    let mut t = MM.get().pml4;
    for level in (1..4).rev() {
        let idx = ((va >> (12 + 9 * level)) & 0x1ff) as usize;
        // SAFETY: `t` is a page-table frame (host-built or ours) and idx < 512.
        let e = unsafe { table(t).add(idx) };
        // SAFETY: e points into that frame.
        let v = unsafe { e.read_volatile() };
        if v & PTE_P == 0 {
            if !create {
                return None;
            }
            let f = alloc_frame()?;
            // SAFETY: as above; a not-present entry becomes present: no flush needed.
            unsafe { e.write_volatile(f | PTE_P | PTE_RW | PTE_US | PTE_A) };
            t = f;
        } else {
            if v & PTE_PS != 0 {
                // Huge pages are the physmap's, never the program's.
                return None;
            }
            t = v & ADDR_MASK;
        }
    }
    let idx = ((va >> 12) & 0x1ff) as usize;
    // SAFETY: t is a level-0 table frame, idx < 512.
    Some(unsafe { table(t).add(idx) })
}

fn leaf_bits(prot: u32) -> u64 {
    let mut bits = PTE_US | PTE_A | PTE_D;
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
        bits |= PTE_P;
    } else {
        bits |= PTE_KEPT;
    }
    if prot & PROT_WRITE != 0 {
        bits |= PTE_RW;
    }
    bits
}

/// Backs `[start, end)` with zeroed frames, `prot` access. Pages already
/// backed keep their frame and get `prot`. Returns whether a flush is
/// needed (a present entry lost access).
fn back_range(start: u64, end: u64, prot: u32) -> Result<bool, i64> {
    let mut flush = false;
    let mut va = start;
    while va < end {
        let e = pte(va, true).ok_or(ENOMEM)?;
        // SAFETY: e is a valid level-0 entry pointer.
        let old = unsafe { e.read_volatile() };
        let frame = if old & (PTE_P | PTE_KEPT) != 0 {
            if old & PTE_P != 0 && (old & PTE_RW != 0 && prot & PROT_WRITE == 0 || leaf_bits(prot) & PTE_P == 0) {
                flush = true;
            }
            old & ADDR_MASK
        } else {
            alloc_frame().ok_or(ENOMEM)?
        };
        // SAFETY: as above.
        unsafe { e.write_volatile(frame | leaf_bits(prot)) };
        va += PAGE;
    }
    Ok(flush)
}

/// Unmaps `[start, end)`, freeing frames. Returns whether a flush is needed.
fn unback_range(start: u64, end: u64) -> bool {
    let mut flush = false;
    let mut va = start;
    while va < end {
        if let Some(e) = pte(va, false) {
            // SAFETY: valid level-0 entry pointer.
            let old = unsafe { e.read_volatile() };
            if old & (PTE_P | PTE_KEPT) != 0 {
                // SAFETY: as above.
                unsafe { e.write_volatile(0) };
                free_frame(old & ADDR_MASK);
                flush |= old & PTE_P != 0;
            }
        }
        va += PAGE;
    }
    flush
}

/// Copies `data` into the program's memory at `va` through the frames
/// (works whatever the page protection is). `src_gpa` is where `data`
/// itself lies in RAM: pages mapped in place onto it are skipped.
pub fn copy_to_frames(mut va: u64, mut data: &[u8], mut src_gpa: u64) {
    while !data.is_empty() {
        let off = va & (PAGE - 1);
        let n = ((PAGE - off) as usize).min(data.len());
        if let Some(e) = pte(va, false) {
            // SAFETY: valid entry pointer.
            let v = unsafe { e.read_volatile() };
            let dst = (v & ADDR_MASK) + off;
            if v & (PTE_P | PTE_KEPT) != 0 && dst != src_gpa {
                // SAFETY: dst..dst+n lies within one frame of guest RAM,
                // which is not the frame the bytes come from.
                unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), phys_ptr(dst), n) };
            }
        }
        va += n as u64;
        src_gpa += n as u64;
        data = &data[n..];
    }
}

// --- VMAs -----------------------------------------------------------------

fn vmas() -> &'static mut Mm {
    MM.get()
}

/// Removes `[start, end)` from the VMA list (splitting as needed).
fn vma_remove(start: u64, end: u64) -> Result<(), i64> {
    let mm = vmas();
    let mut i = 0;
    while i < mm.nvmas {
        let v = mm.vmas[i];
        if v.end <= start || v.start >= end {
            i += 1;
            continue;
        }
        if v.start < start && v.end > end {
            // Split into two.
            if mm.nvmas == MAX_VMAS {
                return Err(ENOMEM);
            }
            mm.vmas.copy_within(i + 1..mm.nvmas, i + 2);
            mm.nvmas += 1;
            mm.vmas[i] = Vma { end: start, ..v };
            mm.vmas[i + 1] = Vma { start: end, ..v };
            return Ok(());
        }
        if v.start < start {
            mm.vmas[i].end = start;
            i += 1;
        } else if v.end > end {
            mm.vmas[i].start = end;
            i += 1;
        } else {
            mm.vmas.copy_within(i + 1..mm.nvmas, i);
            mm.nvmas -= 1;
        }
    }
    Ok(())
}

/// Inserts a VMA (the range must be free in the list).
fn vma_insert(vma: Vma) -> Result<(), i64> {
    let mm = vmas();
    if mm.nvmas == MAX_VMAS {
        return Err(ENOMEM);
    }
    let pos = mm.vmas[..mm.nvmas].iter().position(|v| v.start >= vma.end).unwrap_or(mm.nvmas);
    mm.vmas.copy_within(pos..mm.nvmas, pos + 1);
    mm.vmas[pos] = vma;
    mm.nvmas += 1;
    Ok(())
}

fn overlaps_any(start: u64, end: u64) -> bool {
    let mm = vmas();
    mm.vmas[..mm.nvmas].iter().any(|v| v.start < end && v.end > start)
}

fn valid_user_range(start: u64, len: u64) -> Option<u64> {
    let end = start.checked_add(len)?;
    if start < user::MIN_ADDR || end > user::ADDR_LIMIT || !start.is_multiple_of(PAGE) {
        return None;
    }
    Some(end)
}

/// True if every byte of `[va, va + len)` is in a mapping allowing `prot`.
pub fn user_access_ok(va: u64, len: u64, prot: u32) -> bool {
    if len == 0 {
        return true;
    }
    let Some(end) = va.checked_add(len) else { return false };
    if end > user::ADDR_LIMIT {
        return false;
    }
    let mm = vmas();
    let mut at = va;
    for v in &mm.vmas[..mm.nvmas] {
        if v.end <= at {
            continue;
        }
        if v.start > at || v.prot & prot != prot || v.prot & (PROT_READ | PROT_WRITE) == 0 {
            return false;
        }
        at = v.end;
        if at >= end {
            return true;
        }
    }
    false
}

/// Maps `[start, start + len)` with `prot`, replacing whatever was there.
pub fn map_fixed(start: u64, len: u64, prot: u32) -> Result<(), i64> {
    let end = valid_user_range(start, len).ok_or(EINVAL)?;
    let mut flush = unback_range(start, end);
    vma_remove(start, end)?;
    let res = back_range(start, end, prot);
    if let Ok(f) = res {
        flush |= f;
    }
    if flush {
        crate::flush_tlb();
    }
    res?;
    vma_insert(Vma { start, end, prot })
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
    if fixed {
        valid_user_range(hint, len).ok_or(EINVAL)?;
        if noreplace && overlaps_any(hint, hint + len) {
            return Err(EEXIST);
        }
        map_fixed(hint, len, prot)?;
        return Ok(hint);
    }
    let mm = vmas();
    let start = mm.mmap_next.checked_sub(len).ok_or(ENOMEM)?;
    if start < mm.brk_start.max(user::MIN_ADDR) + user::BRK_MAX {
        return Err(ENOMEM);
    }
    map_fixed(start, len, prot)?;
    vmas().mmap_next = start;
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
    if unback_range(start, end) {
        crate::flush_tlb();
    }
    vma_remove(start, end)
}

pub fn mprotect(start: u64, len: u64, prot: u32) -> Result<(), i64> {
    if !start.is_multiple_of(PAGE) {
        return Err(EINVAL);
    }
    let end = start.checked_add(page_up(len)).ok_or(ENOMEM)?;
    if len == 0 {
        return Ok(());
    }
    // Every page of the range must be mapped (Linux: ENOMEM otherwise).
    let mm = vmas();
    let mut at = start;
    for v in &mm.vmas[..mm.nvmas] {
        if v.end <= at {
            continue;
        }
        if v.start > at {
            return Err(ENOMEM);
        }
        at = v.end;
        if at >= end {
            break;
        }
    }
    if at < end {
        return Err(ENOMEM);
    }
    let res = back_range(start, end, prot);
    if let Ok(true) = res {
        crate::flush_tlb();
    }
    res?;
    vma_remove(start, end)?;
    vma_insert(Vma { start, end, prot })
}

/// MADV_DONTNEED on private anonymous memory: the pages read as zero again.
pub fn madvise_dontneed(start: u64, len: u64) -> Result<(), i64> {
    if !start.is_multiple_of(PAGE) {
        return Err(EINVAL);
    }
    let end = start.checked_add(page_up(len)).ok_or(EINVAL)?;
    let mut va = start;
    while va < end {
        if let Some(e) = pte(va, false) {
            // SAFETY: valid entry pointer.
            let v = unsafe { e.read_volatile() };
            if v & (PTE_P | PTE_KEPT) != 0 {
                zero_frame(v & ADDR_MASK);
            }
        }
        va += PAGE;
    }
    Ok(())
}

// --- brk ------------------------------------------------------------------

pub fn set_brk_start(at: u64) {
    let mm = vmas();
    mm.brk_start = page_up(at);
    mm.brk = mm.brk_start;
}

/// brk(2): returns the (new or unchanged) break.
pub fn brk(want: u64) -> u64 {
    let mm = vmas();
    let (start, cur) = (mm.brk_start, mm.brk);
    if want < start || want > start + user::BRK_MAX {
        return cur;
    }
    let old_top = page_up(cur);
    let new_top = page_up(want);
    if new_top > old_top {
        if overlaps_any(old_top, new_top) || map_fixed(old_top, new_top - old_top, PROT_READ | PROT_WRITE).is_err()
        {
            // Undo a partial mapping so the heap stays as it was.
            let _ = munmap(old_top, new_top - old_top);
            return cur;
        }
        merge_brk_vma(start, new_top);
    } else if new_top < old_top {
        let _ = munmap(new_top, old_top - new_top);
    }
    vmas().brk = want;
    want
}

/// Keeps the heap as one VMA so the list does not grow with every brk.
fn merge_brk_vma(start: u64, top: u64) {
    let mm = vmas();
    let n = mm.nvmas;
    let heap: usize = mm.vmas[..n].iter().filter(|v| v.start >= start && v.end <= top).count();
    if heap > 1 {
        let _ = vma_remove(start, top);
        let _ = vma_insert(Vma { start, end: top, prot: PROT_READ | PROT_WRITE });
    }
}

/// Frames in use right now and at the peak, for the host's statistics.
pub fn peak_bytes() -> u64 {
    MM.get().peak * PAGE
}

/// Maps `[start, start + len)` with `prot`, keeping frames of pages that
/// are already backed (ELF segments may share a page).
pub fn map_keep(start: u64, len: u64, prot: u32) -> Result<(), i64> {
    let end = valid_user_range(start, len).ok_or(EINVAL)?;
    if back_range(start, end, prot)? {
        crate::flush_tlb();
    }
    vma_remove(start, end)?;
    vma_insert(Vma { start, end, prot })
}

/// Maps `npages` pages at `va` onto the existing frames starting at
/// `frame` (part of the program image the host placed in RAM, which is a
/// private copy for this run, so the program may own it outright). Pages
/// already backed are left alone.
pub fn map_image_frames(va: u64, frame: u64, npages: u64, prot: u32) -> Result<(), i64> {
    let end = valid_user_range(va, npages * PAGE).ok_or(EINVAL)?;
    let image_end = crate::rt::boot().free_start;
    if !frame.is_multiple_of(PAGE) || frame < abi::IMAGE_GPA || frame + npages * PAGE > image_end {
        return Err(EINVAL);
    }
    for i in 0..npages {
        let e = pte(va + i * PAGE, true).ok_or(ENOMEM)?;
        // SAFETY: valid level-0 entry pointer.
        if unsafe { e.read_volatile() } & (PTE_P | PTE_KEPT) == 0 {
            // SAFETY: as above; not-present -> present needs no flush.
            unsafe { e.write_volatile((frame + i * PAGE) | leaf_bits(prot)) };
            let mm = MM.get();
            mm.used += 1;
            mm.peak = mm.peak.max(mm.used);
        }
    }
    vma_remove(va, end)?;
    vma_insert(Vma { start: va, end, prot })
}

/// Backs `[start, end)` of the runtime's own heap range with fresh frames
/// (no VMA: the program cannot reach this range through its syscalls).
pub fn map_runtime(start: u64, end: u64) -> Result<(), i64> {
    back_range(start, end, PROT_READ | PROT_WRITE).map(|_| ())
}

/// A zeroed frame for the runtime's own use (file data, caches), or None
/// when guest memory is exhausted.
pub fn alloc_data_frame() -> Option<u64> {
    alloc_frame()
}

/// Returns a frame from [`alloc_data_frame`].
pub fn free_data_frame(gpa: u64) {
    free_frame(gpa)
}
