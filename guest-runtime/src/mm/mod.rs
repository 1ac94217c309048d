//! Memory: a frame allocator over the guest RAM the host left free, and
//! address spaces — page tables (written through the physmap, at CPL3)
//! plus the list of mappings (VMAs) — one per guest process.
//!
//! Mappings are backed eagerly: fresh frames come from never-used guest
//! RAM, which is already zero and costs the host nothing until touched, so
//! mapping a page is just a page-table write. Adding a mapping needs no
//! TLB flush; removing or downgrading one does (batched, one per call).
//!
//! Every address space shares the top-level slots of the physmap and the
//! runtime heap with the boot tables; the slots below belong to the
//! program. Pages marked `PTE_SHARED` map frames owned by someone else
//! (the file cache: program text mapped in place); they are never freed
//! or written through the mapping — a write mapping gets its own copy.
//! Pages marked `PTE_SHM` map a frame of a shared object (MAP_SHARED,
//! see `vma.rs`): writable, the same frame in every process mapping it
//! (a fork maps it again rather than copying it), owned by the object,
//! which outlives the mapping.
//!
//! Memory a program fills in order goes in 2 MiB pages (`map_huge`),
//! which become 512 pages (`split_huge`) before any change to part of one;
//! unmapping frees the page tables it leaves empty. A fork of a large
//! parent shares its private frames copy-on-write (`PTE_COW`, with a
//! share count per frame).
//!
//! The parts are private submodules, listed from the bottom layer up:
//! each uses only those listed before it. The page-table access they
//! share (`pt_write` and the journal, the frames kept for splits, the
//! share counts) is `pub(super)`, so it does not leave `mm`; this file
//! re-exports what the rest of the runtime calls, and sets the allocator
//! up (`init`).
//! - `frames`: the frame allocator: frames and 2 MiB blocks, the heap's
//!   reserve, usage and the peak, the runtime heap's arenas.
//! - `tlb`: the root the CPU runs on (`NEXT_CR3`, `load_root`) and the
//!   flushes a change to entries needs (`Stale`).
//! - `journal`: the entry bits, `pt_write` (every write to a page table)
//!   and the journal that undoes a run's writes before a snapshot reset.
//! - `pt`: the page-table pool, the leaf tables kept for reuse
//!   (`KEPT_LEAVES`, `with_program_loading`), and the walks that find or
//!   make entries (`pte`, `pd_entry`, `split_huge`, `table_entry`).
//! - `cow`: share counts of copy-on-write frames; frame and block copies.
//! - `space`: `AddressSpace`, the current one, new spaces, fork and
//!   destroy.
//! - `map`: backing and unbacking ranges, the list of mappings, anonymous
//!   and fixed mappings, munmap, the runtime's own pages.
//! - `shared`: a file's frames mapped in place, and shared objects.
//! - `change`: mprotect, msync, mremap, madvise.
//! - `brk`: the break, and the pages kept ready above it.
//! - `fault`: page faults (fault-around windows, 2 MiB pages,
//!   copy-on-write breaks) and `populate`.
//! - `patch`: the system-call rewriter's code patches and stubs.
//!
//! The list of mappings itself is `vma.rs`; shared objects are `shm.rs`'s.

mod brk;
mod change;
mod cow;
mod fault;
mod frames;
mod journal;
mod map;
mod patch;
mod pt;
mod shared;
mod space;
mod tlb;

use hvsandbox_abi as abi;

use frames::{publish_frontier, FRAMES};
use pt::pte;

pub use crate::vma::Shared;
pub use crate::vma::{PROT_EXEC, PROT_READ, PROT_WRITE};
pub use brk::{brk, ready_brk_arena, set_brk_start};
pub use change::{madvise, mprotect, mremap, msync};
pub use fault::{fault_in, populate, populate_write, Fault};
#[cfg(test)]
pub use frames::test_free_frames;
pub use frames::{
    alloc_data_frame, count_foreign_frames, free_data_frame, free_frames, page_down, page_up, peak_bytes,
    record_memory_peak, set_free_end, spare_frames, take_heap_arena, take_heap_chunk, usage, HEAP_RESERVE, PAGE,
};
pub use journal::{start_journal, undo_journal};
pub use map::{
    add_vma, copy_to_frames, is_mapped, map_fixed, map_in_shared_slots, map_keep, map_runtime, mmap_anon, munmap,
    on_code_change, reserve, user_access_ok,
};
pub use patch::{map_near_below, patch_code, private_code, with_patch_flush_deferred};
pub use pt::with_program_loading;
pub use shared::{drop_object_pages, map_file, map_file_huge, map_shared, map_shared_frame, shared_key};
pub use space::{
    accessed_bits, activate, boot_space, current, destroy_space, fork_space, huge_bytes_of, new_space, AddressSpace,
};
pub use tlb::NEXT_CR3;

pub fn init(info: &abi::BootInfo) {
    let f = FRAMES.get();
    f.boot_pml4 = info.pml4_gpa;
    f.next_frame = info.free_start.next_multiple_of(PAGE);
    f.pt_next = abi::pt_pool_start(info.mem_size);
    f.pt_end = info.mem_size;
    f.frame_end = info.free_end.min(f.pt_next) & !(PAGE - 1);
    // The stack of freed table frames: room for every frame of the pool.
    let pool_frames = (f.pt_end - f.pt_next) / PAGE;
    f.pt_stack = f.pt_next;
    f.pt_next += (pool_frames * 8).div_ceil(PAGE) * PAGE;
    // The share counts of copy-on-write frames: 2 bytes a frame (0.05% of
    // guest RAM), untouched (so free for the host) until a fork shares.
    let count_frames = (f.frame_end / PAGE * 2).div_ceil(PAGE);
    if f.next_frame + (count_frames + HEAP_RESERVE) * PAGE <= f.frame_end {
        f.shares = f.next_frame;
        f.share_end = f.frame_end;
        f.next_frame += count_frames * PAGE;
        f.used += count_frames;
        f.peak = f.used;
    }
    publish_frontier(f.next_frame);
    // SAFETY: single-threaded runtime; the flush trap reads it.
    unsafe { NEXT_CR3 = info.pml4_gpa };
    crate::hc::tell_cr3(info.pml4_gpa);
    // The runtime heap's top-level entry must exist before any address
    // space copies the shared slots.
    let _ = pte(info.pml4_gpa, abi::RUNTIME_HEAP_VA, true);
}
