//! Copy-on-write: the share counts of private frames, giving up an
//! entry's hold on its frames, and copies of frames and 2 MiB blocks.
//!
//! A fork whose private memory is large, or would not fit twice, shares
//! it copy-on-write (`fork_space`): both spaces map each frame read-only
//! with `PTE_COW`, and the frame's share count (how many more spaces hold
//! it) goes up. A write faults (`break_cow`, in `fault.rs`): the writer
//! gets a copy, or the frame itself once no other space holds it. Freeing
//! such an entry takes one off the count instead while it is not zero
//! (`release_frame`).

use hvsandbox_abi::pte::{PRESENT as PTE_P, WRITABLE as PTE_RW};

use crate::rt::phys_ptr;

use super::frames::{
    alloc_frame, free_frame, free_frames, free_huge_block, take_huge_block, FRAMES, GROWN_WINDOW_FLOOR, HUGE,
    HUGE_FRAMES, PAGE,
};
use super::journal::{ADDR_MASK, PTE_COW, PTE_FOREIGN};

/// A private copy of a shared frame.
pub(super) fn copy_frame(src: u64) -> Option<u64> {
    let f = alloc_frame()?;
    // SAFETY: two distinct whole frames of guest RAM.
    unsafe { core::ptr::copy_nonoverlapping(phys_ptr(src), phys_ptr(f), PAGE as usize) };
    Some(f)
}

/// The share count of private frame `gpa`: how many address spaces
/// beyond one map it copy-on-write. None for a frame without one (then
/// a fork copies it).
fn share_slot(gpa: u64) -> Option<*mut u16> {
    let f = FRAMES.get();
    (f.shares != 0 && gpa < f.share_end).then(|| phys_ptr(f.shares + gpa / PAGE * 2) as *mut u16)
}

pub(super) fn shares(gpa: u64) -> u16 {
    // SAFETY: a slot of the count array (frames the runtime keeps).
    share_slot(gpa).map_or(0, |c| unsafe { c.read() })
}

/// One more space holds frame `gpa`; false (nothing changed) if its
/// count cannot go up.
pub(super) fn share_frame(gpa: u64) -> bool {
    let Some(c) = share_slot(gpa) else { return false };
    // SAFETY: as in `shares`.
    unsafe {
        match c.read() {
            u16::MAX => return false,
            0 => FRAMES.get().cow_shared += 1,
            _ => {}
        }
        c.write(c.read() + 1);
    }
    true
}

/// Gives up the hold of a private (not foreign) leaf `entry` on its 4 KiB
/// frame: frees the frame unless another space shares it.
pub(super) fn release_frame(entry: u64) {
    let gpa = entry & ADDR_MASK;
    if entry & PTE_COW != 0 {
        if let Some(c) = share_slot(gpa) {
            // SAFETY: as in `shares`.
            unsafe {
                if c.read() > 0 {
                    c.write(c.read() - 1);
                    if c.read() == 0 {
                        FRAMES.get().cow_shared -= 1;
                    }
                    return;
                }
            }
        }
    }
    free_frame(gpa);
}

/// Whether no other space holds any frame of the 2 MiB block at `base`.
pub(super) fn block_unshared(base: u64) -> bool {
    (0..HUGE_FRAMES).all(|k| shares(base + k * PAGE) == 0)
}

/// Gives up a 2 MiB mapping's hold on its 512 frames: one block again
/// unless shared, else frame by frame (see `release_frame`).
pub(super) fn release_huge(entry: u64) {
    let base = entry & ADDR_MASK;
    if entry & PTE_COW == 0 || block_unshared(base) {
        free_huge_block(base);
    } else {
        for k in 0..HUGE_FRAMES {
            release_frame((base + k * PAGE) | PTE_COW);
        }
    }
}

/// A 2 MiB mapping `entry` of the program is gone (its entry cleared or
/// its space freed): its frames are released (unless they are a file's,
/// mapped in place) and the table frame kept for its split is no longer
/// kept.
pub(super) fn unmap_huge(entry: u64) {
    // A file's frames mapped in place are the file cache's.
    if entry & PTE_FOREIGN == 0 {
        release_huge(entry);
    }
    let f = FRAMES.get();
    f.huge_live = f.huge_live.saturating_sub(1);
}

/// A copy of the 2 MiB block at `src` in a block of its own (not zeroed
/// first: the copy fills it); None if no block is left.
pub(super) fn copy_huge_block(src: u64) -> Option<u64> {
    let block = take_huge_block(false)?;
    // SAFETY: two distinct 2 MiB blocks of guest RAM.
    unsafe { core::ptr::copy_nonoverlapping(phys_ptr(src), phys_ptr(block), HUGE as usize) };
    Some(block)
}

/// The entry a private copy-on-write 4 KiB entry `old` becomes so that
/// its space may write it: the frame itself if no other space holds it,
/// else a copy (None if no frame is left). `writable`: the mapping allows
/// writing now.
pub(super) fn unshared_entry(old: u64, writable: bool) -> Option<u64> {
    let frame = old & ADDR_MASK;
    let new = if shares(frame) == 0 {
        frame
    } else {
        let c = copy_frame(frame)?;
        release_frame(old);
        c
    };
    let rw = if writable && old & PTE_P != 0 { PTE_RW } else { 0 };
    Some(new | (old & !(ADDR_MASK | PTE_COW)) | rw)
}

/// Whether copies beyond the page written may be made: more frames are
/// free than copies of every shared frame would take, plus `extra` and
/// the grown-window floor.
pub(super) fn cow_room(extra: u64) -> bool {
    free_frames() > FRAMES.get().cow_shared + extra + GROWN_WINDOW_FLOOR
}
