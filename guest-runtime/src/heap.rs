//! The runtime's heap: size classes for small objects, page runs for large
//! ones, in arenas of never-used frames used through the physmap (see
//! [`ARENA_MAX`], [`ARENA_CHUNK`]) while frames are plentiful, else in a
//! virtual range of its own ([`abi::RUNTIME_HEAP_VA`]) backed on demand
//! by frames from the page allocator. Single-threaded (one vCPU).
//!
//! Allocation failure returns null, and the runtime cannot go on after an
//! infallible allocation fails, so the program must never drive it there:
//! - collections of guest-controlled size go through `try_reserve` and
//!   turn failure into ENOMEM; large blocks (page runs) never take the
//!   last [`mm::HEAP_RESERVE`] frames;
//! - everything that keeps small objects for the program (files,
//!   directories, pipes, descriptors, processes, cached host names) first
//!   asks [`has_room`], which says no well before that reserve is gone.
//!
//! So a program that exhausts memory gets ENOMEM/ENOSPC and the run goes on.

use core::alloc::{GlobalAlloc, Layout};

use hvsandbox_abi as abi;

use crate::mm;
use crate::rt::Global;

const PAGE: usize = abi::PAGE_SIZE as usize;
/// Object sizes of the small classes; each object is aligned to its size.
/// Larger blocks are page runs.
const CLASSES: [usize; 8] = [16, 32, 64, 128, 256, 512, 1024, 2048];

struct Heap {
    /// Heads of the free lists of the small classes (intrusive).
    small: [usize; CLASSES.len()],
    /// Free page runs: each starts with [`Run`] (intrusive list), in
    /// address order, and no two touch (`free_run` merges neighbours).
    runs: usize,
    /// Next never-used address of the current arena, and its end (0: no
    /// arena now); whether the first arena was asked for yet.
    arena_next: usize,
    arena_end: usize,
    arena_asked: bool,
    /// Next never-used address of the heap's own range.
    next: usize,
    /// Bytes on the small free lists.
    small_free: usize,
}

#[repr(C)]
struct Run {
    pages: usize,
    next: usize,
}

static HEAP: Global<Heap> = Global::new(Heap {
    small: [0; CLASSES.len()],
    runs: 0,
    arena_next: 0,
    arena_end: 0,
    arena_asked: false,
    next: abi::RUNTIME_HEAP_VA as usize,
    small_free: 0,
});

/// The most the heap's first blocks take of the frames its boot has made
/// the hypervisor map already (`mm::take_heap_arena`): about what a cold
/// `busybox true` uses (a `python3 -c` uses ~1.4 MiB).
const ARENA_MAX: u64 = 256 * 1024;

/// The size of each later arena (`mm::take_heap_chunk`; a larger block
/// gets one its size).
const ARENA_CHUNK: usize = 256 * 1024;

/// [`has_room`] says yes while at least this many frames are free...
const ROOM_FRAMES: u64 = mm::HEAP_RESERVE / 2;
/// ...or while this many are and the small free lists hold this much.
const FLOOR_FRAMES: u64 = mm::HEAP_RESERVE / 8;
const ROOM_SMALL_BYTES: usize = 64 * 1024;

/// Whether the heap may take more objects the program asks for (a file, a
/// directory, a pipe, a descriptor, a process): no once the heap has used
/// half of its reserve of frames (see the module docs). Small blocks freed
/// earlier (deleted files) count, down to a floor of free frames.
pub fn has_room() -> bool {
    let free = mm::free_frames();
    free >= ROOM_FRAMES || (free >= FLOOR_FRAMES && HEAP.get().small_free >= ROOM_SMALL_BYTES)
}

/// The heap's range is mapped in aligned groups of this many pages. On a
/// fault, KVM's shadow paging also maps the present neighbours of the page
/// within such a group; a heap mapped a page at a time as it grows faults
/// on every page (~15 µs each on current hosts; a cold busybox run
/// faulted on 15 heap pages, a `python3 -c` on ~65).
const GROUP_PAGES: usize = 8;

/// Maps `pages` fresh pages at the end of the heap range; the last
/// frames of the heap's reserve only for `small` (one page of small
/// objects). While frames are plentiful, the rest of the last group is
/// mapped too and kept as a free run.
fn grow(pages: usize, align: usize, small: bool) -> Option<usize> {
    let h = HEAP.get();
    if !h.arena_asked {
        h.arena_asked = true;
        if let Some((va, len)) = mm::take_heap_arena(ARENA_MAX) {
            (h.arena_next, h.arena_end) = (va as usize, (va + len) as usize);
        }
    }
    let align = align.max(PAGE);
    let bytes = pages.checked_mul(PAGE)?;
    if let Some(start) = from_arena(bytes, align) {
        return Some(start);
    }
    // A new arena, if frames are plentiful: the rest of the last one
    // becomes a free run.
    let rest = (h.arena_end - h.arena_next) / PAGE;
    if rest > 0 {
        // SAFETY: `arena_next..arena_end` is arena memory nothing has used;
        // it becomes a free run (as `dealloc` of a large block does).
        unsafe { free_run(h.arena_next, rest) };
    }
    (h.arena_next, h.arena_end) = (0, 0);
    let want = bytes.checked_add(align - PAGE)?.max(ARENA_CHUNK);
    if let Some((va, len)) = mm::take_heap_chunk(want as u64) {
        (h.arena_next, h.arena_end) = (va as usize, (va + len) as usize);
        if let Some(start) = from_arena(bytes, align) {
            return Some(start);
        }
    }
    // Else the heap's own range.
    let start = h.next.next_multiple_of(align);
    let end = start.checked_add(pages.checked_mul(PAGE)?)?;
    let limit = (abi::RUNTIME_HEAP_VA + abi::RUNTIME_HEAP_MAX) as usize;
    if end > limit {
        return None;
    }
    mm::map_runtime(start as u64, end as u64, small).ok()?;
    h.next = end;
    let group_end = end.next_multiple_of(GROUP_PAGES * PAGE).min(limit);
    let rest = (group_end - end) / PAGE;
    // Never from the reserve (see the module docs); a mapping cut short
    // leaves pages the next growth finds present and uses.
    if rest > 0
        && mm::free_frames() >= mm::HEAP_RESERVE + GROUP_PAGES as u64
        && mm::map_runtime(end as u64, group_end as u64, false).is_ok()
    {
        h.next = group_end;
        // SAFETY: `end..group_end` was just mapped for the heap and is
        // ours; it becomes a free run (as `dealloc` of a large block does).
        unsafe { free_run(end, rest) };
    }
    Some(start)
}

/// `bytes` (whole pages) aligned to `align` from the current arena, if
/// they fit: frames taken whole and never used, mapped (the physmap) and
/// zero.
fn from_arena(bytes: usize, align: usize) -> Option<usize> {
    let h = HEAP.get();
    if h.arena_end == 0 {
        return None;
    }
    let start = h.arena_next.next_multiple_of(align);
    let end = start.checked_add(bytes).filter(|&e| e <= h.arena_end)?;
    h.arena_next = end;
    Some(start)
}

/// Gives back `pages` pages at `va` as a free run, merged with the free
/// runs right before and after it. Without merging, runs freed in pieces
/// stayed pieces: a later larger block fitted none of them and grew the
/// heap (a page or two per fork, 6 MiB in the shared-memory leak test's
/// 300 rounds).
///
/// # Safety
/// `va..va + pages * PAGE` is mapped heap memory that nothing uses and no
/// free run or small object holds.
unsafe fn free_run(va: usize, pages: usize) {
    let h = HEAP.get();
    let end = va + pages * PAGE;
    let mut prev: *mut Run = core::ptr::null_mut();
    let mut link: *mut usize = &mut h.runs;
    // SAFETY: every run on the list is mapped heap memory starting with a
    // Run header we wrote; `va..end` is ours (the caller's contract) and
    // overlaps none of them.
    unsafe {
        while *link != 0 && *link < va {
            prev = *link as *mut Run;
            link = &mut (*prev).next;
        }
        let next = *link;
        let run = va as *mut Run;
        run.write(Run { pages, next });
        *link = va;
        if next == end {
            let after = next as *const Run;
            (*run).pages += (*after).pages;
            (*run).next = (*after).next;
        }
        if !prev.is_null() && prev as usize + (*prev).pages * PAGE == va {
            (*prev).pages += (*run).pages;
            (*prev).next = (*run).next;
        }
    }
}

fn alloc_pages(pages: usize, align: usize, small: bool) -> *mut u8 {
    let h = HEAP.get();
    if align <= PAGE {
        // First fit among the free runs (lowest address first), splitting
        // off the tail.
        let mut link: *mut usize = &mut h.runs;
        // SAFETY: every run on the list is mapped heap memory starting with
        // a Run header we wrote when it was freed.
        unsafe {
            while *link != 0 {
                let run = *link as *mut Run;
                if (*run).pages >= pages {
                    let rest = (*run).pages - pages;
                    if rest == 0 {
                        *link = (*run).next;
                    } else {
                        (*run).pages = rest;
                        return (run as *mut u8).add(rest * PAGE);
                    }
                    return run as *mut u8;
                }
                link = &mut (*run).next;
            }
        }
    }
    grow(pages, align, small).map_or(core::ptr::null_mut(), |va| va as *mut u8)
}

fn class_of(layout: &Layout) -> Option<usize> {
    let size = layout.size().max(layout.align());
    CLASSES.iter().position(|&c| c >= size)
}

pub struct RuntimeAllocator;

// SAFETY: the allocator hands out disjoint, mapped, suitably aligned
// blocks and takes them back only through dealloc with the same layout.
unsafe impl GlobalAlloc for RuntimeAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let h = HEAP.get();
        match class_of(&layout) {
            Some(c) => {
                if h.small[c] == 0 {
                    let page = alloc_pages(1, PAGE, true);
                    if page.is_null() {
                        return page;
                    }
                    h.small_free += PAGE;
                    let size = CLASSES[c];
                    for off in (0..PAGE).step_by(size).rev() {
                        // SAFETY: `page` is a fresh mapped page; each object
                        // slot holds the free-list link in its first word.
                        unsafe { (page.add(off) as *mut usize).write(h.small[c]) };
                        h.small[c] = page as usize + off;
                    }
                }
                let obj = h.small[c];
                // SAFETY: obj is a free object of this class holding its link.
                h.small[c] = unsafe { (obj as *const usize).read() };
                h.small_free -= CLASSES[c];
                obj as *mut u8
            }
            None => alloc_pages(layout.size().div_ceil(PAGE), layout.align(), false),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let h = HEAP.get();
        match class_of(&layout) {
            Some(c) => {
                // SAFETY: ptr was allocated from class c and is free now.
                unsafe { (ptr as *mut usize).write(h.small[c]) };
                h.small[c] = ptr as usize;
                h.small_free += CLASSES[c];
            }
            // SAFETY: ptr starts a run of whole mapped pages we handed out,
            // free now.
            None => unsafe { free_run(ptr as usize, layout.size().div_ceil(PAGE)) },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Same class or same number of pages: keep the block.
        // SAFETY: the caller guarantees a valid layout for new_size.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        let same = match (class_of(&layout), class_of(&new)) {
            (Some(a), Some(b)) => a == b,
            (None, None) => layout.size().div_ceil(PAGE) == new_size.div_ceil(PAGE),
            _ => false,
        };
        if same {
            return ptr;
        }
        // SAFETY: forwarding the caller's contract.
        let p = unsafe { self.alloc(new) };
        if !p.is_null() {
            // SAFETY: both blocks are valid for the smaller size; distinct.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        p
    }
}

/// Maps `bytes` of heap now and keeps them free for later use, so that
/// the runtime's allocations after a snapshot point do not change page
/// tables (which would make the host drop KVM's shadow tables on reset).
pub fn reserve(bytes: usize) {
    let pages = bytes.div_ceil(PAGE);
    let p = alloc_pages(pages, PAGE, false);
    if p.is_null() {
        return;
    }
    // SAFETY: a fresh run of `pages` mapped heap pages we own; it becomes
    // a free run (as `dealloc` of a large block does).
    unsafe { free_run(p as usize, pages) };
}
