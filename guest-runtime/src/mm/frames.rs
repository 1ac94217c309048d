//! The frame allocator: the guest RAM the host left free, handed out a
//! 4 KiB frame or a 2 MiB block at a time (freed ones, or never-used ones,
//! which are zero and cost the host nothing until touched), with the
//! heap's reserve held back; usage and the peak, and the runtime heap's
//! arenas taken at the frontier. `Frames` also holds the state of the
//! page-table pool (`pt.rs`) and of the share counts (`cow.rs`).

use hvsandbox_abi as abi;

use crate::rt::{phys_ptr, Global};

pub const PAGE: u64 = abi::PAGE_SIZE;

/// A 2 MiB page (`map_huge`), and its frames.
pub(super) const HUGE: u64 = abi::HUGE_PAGE_SIZE;
pub(super) const HUGE_FRAMES: u64 = HUGE / PAGE;

pub(super) struct Frames {
    pub(super) next_frame: u64,
    pub(super) frame_end: u64,
    /// Freed frames, linked through their first word (as guest-physical
    /// addresses; 0 ends the list).
    free_list: u64,
    pub(super) used: u64,
    pub(super) peak: u64,
    pub(super) boot_pml4: u64,
    /// Frames on the free list.
    listed: u64,
    /// Freed 2 MiB pages, whole (linked through their first word), for
    /// `map_huge` to use again; the frame allocator breaks one up only
    /// when no other frame is left. And how many.
    huge_free: u64,
    huge_listed: u64,
    /// The page-table pool (see `abi::pt_pool_size`): next never-used
    /// frame, end; the freed table frames, a stack of `pt_listed` in the
    /// pool's first frames (`pt_stack`). Not a list linked through the
    /// freed tables themselves: KVM's shadow paging still write-protects
    /// a table it shadowed after the runtime has let it go, so each link
    /// written into one was an exit of its own, on top of those its
    /// clearing at reuse takes (a shell's 20 children of `busybox true`:
    /// 1383 -> 1337 emulated instructions).
    pub(super) pt_next: u64,
    pub(super) pt_end: u64,
    pub(super) pt_stack: u64,
    pub(super) pt_listed: u64,
    /// Live 2 MiB mappings of the program (`map_huge`). As many table
    /// frames are kept free for their splits (`split_huge`), so that a
    /// split, which any change to one of their pages needs, never fails.
    pub(super) huge_live: u64,
    /// Share counts of private frames (`share_slot`): one `u16` per frame
    /// below `share_end`, in frames taken at start (never-used: zero).
    pub(super) shares: u64,
    pub(super) share_end: u64,
    /// Frames whose share count is not zero: copies `break_cow` makes
    /// beyond the page written (a 2 MiB copy, a window) are only made
    /// while more frames than that are free, so that they never take
    /// what copies of pages actually written would need.
    pub(super) cow_shared: u64,
}

pub(super) static FRAMES: Global<Frames> = Global::new(Frames {
    next_frame: 0,
    frame_end: 0,
    free_list: 0,
    used: 0,
    peak: 0,
    boot_pml4: 0,
    listed: 0,
    huge_free: 0,
    huge_listed: 0,
    pt_next: 0,
    pt_end: 0,
    pt_stack: 0,
    pt_listed: 0,
    huge_live: 0,
    shares: 0,
    share_end: 0,
    cow_shared: 0,
});

/// The program has arrived (see `abi::hc::PROGRAM`): its image lies at
/// `free_end` and above, so the allocator stops there. False if frames
/// already handed out reach that far.
pub fn set_free_end(free_end: u64) -> bool {
    let f = FRAMES.get();
    let end = free_end.min(f.pt_next) & !(PAGE - 1);
    if end < f.next_frame || end > f.frame_end {
        return false;
    }
    f.frame_end = end;
    true
}

/// Tells the host where never-used frames now start (see
/// `abi::RuntimeStats::frame_frontier`): it may fault in the host memory
/// above it ahead of the guest.
pub(super) fn publish_frontier(next_frame: u64) {
    crate::stats::stat(|s| s.frame_frontier = next_frame);
}

pub fn page_up(x: u64) -> u64 {
    x.wrapping_add(PAGE - 1) & !(PAGE - 1)
}
pub fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

pub(super) fn zero_frame(gpa: u64) {
    // SAFETY: `gpa` is a whole frame of guest RAM owned by the allocator.
    unsafe { core::ptr::write_bytes(phys_ptr(gpa), 0, PAGE as usize) };
}

/// Frames only the runtime's heap may take: program memory, file data and
/// the heap's large blocks stop this far short of the end, so that the
/// runtime's own bookkeeping can still grow (and calls fail with ENOMEM or
/// ENOSPC) once the program has used up the rest.
pub const HEAP_RESERVE: u64 = 256;

/// Free frames below which a grown window backs no more than the
/// faulting page's first window would: 4 MiB beyond the heap's reserve.
pub(super) const GROWN_WINDOW_FLOOR: u64 = HEAP_RESERVE + 1024;

/// A zeroed frame for the program, file data or the heap's large blocks,
/// or None when only the heap's reserve is left.
pub(super) fn alloc_frame() -> Option<u64> {
    take_frame(HEAP_RESERVE)
}

/// A zeroed frame, leaving at least `keep` frames free; None when there
/// are not that many.
pub(super) fn take_frame(keep: u64) -> Option<u64> {
    if free_frames() <= keep {
        return None;
    }
    let f = FRAMES.get();
    if f.free_list == 0 && f.next_frame + PAGE > f.frame_end && f.huge_free != 0 {
        break_huge_block();
    }
    let gpa = if f.free_list != 0 {
        let gpa = f.free_list;
        // SAFETY: free frames hold the next link in their first word.
        f.free_list = unsafe { (phys_ptr(gpa) as *const u64).read() };
        f.listed -= 1;
        zero_frame(gpa);
        gpa
    } else if f.next_frame + PAGE <= f.frame_end {
        // Never used since boot: already zero.
        let gpa = f.next_frame;
        f.next_frame += PAGE;
        publish_frontier(f.next_frame);
        gpa
    } else {
        return None;
    };
    f.used += 1;
    f.peak = f.peak.max(f.used);
    Some(gpa)
}

pub(super) fn free_frame(gpa: u64) {
    list_free(gpa);
    FRAMES.get().used -= 1;
}

/// Puts a frame no longer in use on the free list (it counts as free
/// from now on).
fn list_free(gpa: u64) {
    let f = FRAMES.get();
    // SAFETY: the frame is unmapped and unused; its first word becomes
    // the free-list link.
    unsafe { (phys_ptr(gpa) as *mut u64).write(f.free_list) };
    f.free_list = gpa;
    f.listed += 1;
}

/// Gives back the 512 frames of a 2 MiB page at `base`, whole.
pub(super) fn free_huge_block(base: u64) {
    let f = FRAMES.get();
    // SAFETY: the block is no longer mapped anywhere; its first word
    // becomes the link.
    unsafe { (phys_ptr(base) as *mut u64).write(f.huge_free) };
    f.huge_free = base;
    f.huge_listed += 1;
    f.used -= HUGE_FRAMES;
}

/// Puts the frames of one freed 2 MiB block on the free list.
fn break_huge_block() {
    let f = FRAMES.get();
    let base = f.huge_free;
    // SAFETY: a freed block holds the next link in its first word.
    f.huge_free = unsafe { (phys_ptr(base) as *const u64).read() };
    f.huge_listed -= 1;
    for k in (0..HUGE_FRAMES).rev() {
        list_free(base + k * PAGE);
    }
}

/// 512 frames, 2 MiB aligned: a freed 2 MiB page (zeroed now if `zero`),
/// or an aligned run of never-used (so zero) frames, those skipped to
/// align it going to the free list. None if neither is left.
pub(super) fn take_huge_block(zero: bool) -> Option<u64> {
    let f = FRAMES.get();
    let base = if f.huge_free != 0 {
        let base = f.huge_free;
        // SAFETY: a freed block holds the next link in its first word.
        f.huge_free = unsafe { (phys_ptr(base) as *const u64).read() };
        f.huge_listed -= 1;
        if zero {
            // SAFETY: the block is ours, 2 MiB of guest RAM through the physmap.
            unsafe { core::ptr::write_bytes(phys_ptr(base), 0, HUGE as usize) };
        }
        base
    } else {
        let base = f.next_frame.next_multiple_of(HUGE);
        if base.saturating_add(HUGE) > f.frame_end {
            return None;
        }
        while f.next_frame < base {
            // A never-used frame skipped to align the block.
            list_free(f.next_frame);
            f.next_frame += PAGE;
        }
        f.next_frame = base + HUGE;
        publish_frontier(f.next_frame);
        base
    };
    f.used += HUGE_FRAMES;
    f.peak = f.peak.max(f.used);
    Some(base)
}

/// A host test's allocator: `n` frames free, none of which it may hand
/// out (they would be guest RAM).
#[cfg(test)]
pub fn test_free_frames(n: u64) {
    let f = FRAMES.get();
    (f.next_frame, f.frame_end, f.free_list, f.listed) = (0, n * PAGE, 0, 0);
    (f.huge_free, f.huge_listed) = (0, 0);
}

/// Frames free right now.
pub fn free_frames() -> u64 {
    let f = FRAMES.get();
    (f.frame_end - f.next_frame) / PAGE + f.listed + f.huge_listed * HUGE_FRAMES
}

/// Frames the program and file data may still take (all but the heap's
/// reserve).
pub fn spare_frames() -> u64 {
    free_frames().saturating_sub(HEAP_RESERVE)
}

/// Bytes of guest memory in use at the peak, and free now for the program.
pub fn usage() -> (u64, u64) {
    (FRAMES.get().peak * PAGE, spare_frames() * PAGE)
}

/// Frames in use at the peak, for the host's statistics.
pub fn peak_bytes() -> u64 {
    FRAMES.get().peak * PAGE
}

/// Records the memory peak for the host, just before the run ends.
pub fn record_memory_peak() {
    crate::stats::stat(|s| s.frames_used_peak = peak_bytes() / PAGE);
}

/// Never-used frames for the runtime heap's first blocks, taken at its
/// first growth: up to `max` bytes from the allocator's frontier to the
/// end of the 2 MiB block the frontier lies in (at start, the runtime
/// image's own block, which its boot has made the hypervisor map whole),
/// used through the physmap. The heap's own range maps 4 KiB pages, and
/// its first touch of each group of them costs a fault of the hypervisor
/// (~25 µs on current hosts; a cold `busybox true` made 8). Returns the
/// frames' physmap address and length; None if the frontier is at a
/// block's start or frames are short.
pub fn take_heap_arena(max: u64) -> Option<(u64, u64)> {
    let start = FRAMES.get().next_frame;
    take_frames_at_frontier(start.saturating_add(max).min(start.next_multiple_of(HUGE)))
}

/// Never-used frames for a later arena of the runtime heap: `len` bytes
/// (whole pages) from the allocator's frontier, used through the physmap,
/// which the hypervisor maps a 2 MiB block at a time, where the heap's
/// own range takes a fault per 8 pages (a `python3 -c` uses ~1.4 MiB of
/// heap: ~40 faults). Only while frames are plentiful (twice the heap's
/// reserve left after them); None otherwise.
pub fn take_heap_chunk(len: u64) -> Option<(u64, u64)> {
    let start = FRAMES.get().next_frame;
    take_frames_at_frontier(start.saturating_add(len))
}

/// Takes the never-used frames from the allocator's frontier up to `end`
/// (within RAM's frames; whole pages) if frames stay plentiful; returns
/// their physmap address and length.
fn take_frames_at_frontier(end: u64) -> Option<(u64, u64)> {
    let f = FRAMES.get();
    let start = f.next_frame;
    let end = end.min(f.frame_end) & !(PAGE - 1);
    let frames = end.checked_sub(start)? / PAGE;
    if frames == 0 || free_frames() < frames + 2 * HEAP_RESERVE {
        return None;
    }
    f.next_frame = end;
    publish_frontier(end);
    f.used += frames;
    f.peak = f.peak.max(f.used);
    Some((phys_ptr(start) as u64, end - start))
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

/// Counts a frame the runtime did not allocate (the program image the
/// host placed) as in use.
pub fn count_foreign_frames(n: u64) {
    let f = FRAMES.get();
    f.used += n;
    f.peak = f.peak.max(f.used);
}
