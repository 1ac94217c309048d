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
//! One file of ~2,500 lines because the frame allocator, the page-table
//! writers with their journal, 2 MiB pages and their splits, copy-on-write
//! sharing and the mapping operations (mremap and shared mappings
//! included) share the private page-table access (`pt_write`, the
//! journal, the frames kept for splits, the share counts), which must not
//! leak out of this module. The list of mappings
//! itself is `vma.rs`; shared objects are `shm.rs`'s.

use alloc::boxed::Box;
use alloc::vec::Vec;

use hvsandbox_abi::pte::{
    ACCESSED as PTE_A, DIRTY as PTE_D, HUGE as PTE_PS, PRESENT as PTE_P, USER as PTE_US, WRITABLE as PTE_RW,
};
use hvsandbox_abi::{self as abi, user};

use crate::rt::{phys_ptr, Global};
pub use crate::vma::Shared;
use crate::vma::{self, Vma};

pub const PAGE: u64 = abi::PAGE_SIZE;

/// Software bit: a frame is kept behind a not-present entry (PROT_NONE).
const PTE_KEPT: u64 = 1 << 9;
/// Software bit: the frame belongs to someone else (see the module docs).
const PTE_SHARED: u64 = 1 << 10;
/// Software bit: the frame belongs to a shared object (see the module docs).
const PTE_SHM: u64 = 1 << 11;
/// Frames this space does not own: never freed or zeroed through it.
const PTE_FOREIGN: u64 = PTE_SHARED | PTE_SHM;
/// Software bit: a private frame that a fork left shared copy-on-write
/// (see `share_slot`): mapped read-only, copied on the first write unless
/// no other space holds it any more.
const PTE_COW: u64 = 1 << 52;
const ADDR_MASK: u64 = abi::pte::ADDR;
/// Write-through and cache-disable (the runtime never sets them).
const PTE_CACHE: u64 = (1 << 3) | (1 << 4);
const PTE_NX: u64 = abi::pte::NO_EXECUTE;

pub use crate::vma::{PROT_EXEC, PROT_READ, PROT_WRITE};

/// Errors of memory operations, as Linux errno values.
pub use crate::errno::{EEXIST, EFAULT, EINVAL, ENOMEM};

/// Top-level slots `USER_SLOTS..512` are shared by every address space.
const USER_SLOTS: usize = 254;
/// The end of the program's slots.
const USER_END: u64 = (USER_SLOTS as u64) << 39;
/// A 2 MiB page (`map_huge`), and its frames.
const HUGE: u64 = abi::HUGE_PAGE_SIZE;
const HUGE_FRAMES: u64 = HUGE / PAGE;

struct Frames {
    next_frame: u64,
    frame_end: u64,
    /// Freed frames, linked through their first word (as guest-physical
    /// addresses; 0 ends the list).
    free_list: u64,
    used: u64,
    peak: u64,
    boot_pml4: u64,
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
    pt_next: u64,
    pt_end: u64,
    pt_stack: u64,
    pt_listed: u64,
    /// Live 2 MiB mappings of the program (`map_huge`). As many table
    /// frames are kept free for their splits (`split_huge`), so that a
    /// split, which any change to one of their pages needs, never fails.
    huge_live: u64,
    /// Share counts of private frames (`share_slot`): one `u16` per frame
    /// below `share_end`, in frames taken at start (never-used: zero).
    shares: u64,
    share_end: u64,
    /// Frames whose share count is not zero: copies `break_cow` makes
    /// beyond the page written (a 2 MiB copy, a window) are only made
    /// while more frames than that are free, so that they never take
    /// what copies of pages actually written would need.
    cow_shared: u64,
}

static FRAMES: Global<Frames> = Global::new(Frames {
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

/// One process's memory: page tables and mappings.
pub struct AddressSpace {
    pml4: u64,
    vmas: Vec<Vma>,
    brk_start: u64,
    brk: u64,
    /// End of the pages above the break that a snapshot point backed
    /// ahead (zeroed, writable, no mapping of their own): the break grows
    /// into them without writing a page table (see [`ready_brk_arena`]).
    brk_ready: u64,
    /// Rewritten system-call sites and their stubs (`rewrite.rs`).
    pub rewrite: crate::sites::Sites,
    /// Where recent page faults' windows began and ended and how large
    /// they were, one slot per stream of faults in address order, up or
    /// down (see `fault_window`), and the slot a new stream takes next.
    fault_streams: [FaultStream; FAULT_STREAMS],
    fault_victim: usize,
    /// How its tables were built (for [`KEPT_LEAVES`]).
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

/// The address space the CPU runs on now.
static CURRENT: Global<*mut AddressSpace> = Global::new(core::ptr::null_mut());

/// The CR3 value the ring-0 flush trap loads (the current space's root).
#[no_mangle]
pub static mut NEXT_CR3: u64 = 0;

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
fn publish_frontier(next_frame: u64) {
    crate::stats::stat(|s| s.frame_frontier = next_frame);
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

/// Frames only the runtime's heap may take: program memory, file data and
/// the heap's large blocks stop this far short of the end, so that the
/// runtime's own bookkeeping can still grow (and calls fail with ENOMEM or
/// ENOSPC) once the program has used up the rest.
pub const HEAP_RESERVE: u64 = 256;

/// A zeroed frame for the program, file data or the heap's large blocks,
/// or None when only the heap's reserve is left.
fn alloc_frame() -> Option<u64> {
    take_frame(HEAP_RESERVE)
}

/// A zeroed frame, leaving at least `keep` frames free; None when there
/// are not that many.
fn take_frame(keep: u64) -> Option<u64> {
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

/// A zeroed frame for a page table, from the page-table pool only (the
/// host relies on page tables living there; see `abi::pt_pool_size`),
/// leaving the frames kept for splits of 2 MiB mappings.
fn alloc_table_frame() -> Option<u64> {
    let gpa = take_table_frame(FRAMES.get().huge_live)?;
    zero_table(gpa);
    Some(gpa)
}

/// Frames of the page-table pool free now.
fn table_frames_free() -> u64 {
    let f = FRAMES.get();
    (f.pt_end - f.pt_next) / PAGE + f.pt_listed
}

/// A frame of the page-table pool, not zeroed, leaving at least `keep`.
fn take_table_frame(keep: u64) -> Option<u64> {
    while table_frames_free() <= keep {
        if !free_oldest_kept() {
            return None;
        }
    }
    let f = FRAMES.get();
    let gpa = if f.pt_listed > 0 {
        f.pt_listed -= 1;
        // SAFETY: the stack's first `pt_listed` entries are freed table
        // frames; the stack lies in the pool's first frames.
        let gpa = unsafe { (phys_ptr(f.pt_stack) as *const u64).add(f.pt_listed as usize).read() };
        unshadow(gpa);
        gpa
    } else {
        let gpa = f.pt_next;
        f.pt_next += PAGE;
        gpa
    };
    f.used += 1;
    f.peak = f.peak.max(f.used);
    Some(gpa)
}

/// Freed tables of pages (the last level) kept with the 2 MiB range they
/// mapped, for a space built the same way (an execve's, or a fork's copy)
/// that maps the same range again: the frame is taken up for it and
/// cleared, and the new mappings written in.
/// KVM's shadow paging still has its shadow of that frame, with the
/// translations of the process before; when the new space's walk reaches
/// the table, KVM takes that shadow up and keeps every translation whose
/// entry came back the same (a program's code and read-only data: the file
/// cache's frames, ~20 faults of a busybox child; a subshell's pages of
/// the shell). A fresh or reused frame started with none. Only while an
/// execve maps its program ([`with_program_loading`]) or a fork copies
/// the parent's space (`fork_space`), each taking those a space built the
/// same way left ([`LeafKind`]): a fork's copy and the program an execve
/// maps at the same addresses are different pages. The oldest goes to
/// the pool beyond [`KEPT_LEAVES`], or when the pool is short.
const KEPT_LEAVES: usize = 16;

/// How a space's tables were built: by an execve mapping its program (or
/// at start), or by a fork copying its parent's.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    Program,
    ForkCopy,
}

struct KeptLeaves {
    /// (table frame, the 2 MiB-aligned address it mapped, how its space
    /// was built), oldest first.
    entries: [(u64, u64, LeafKind); KEPT_LEAVES],
    n: usize,
    /// The space being built now, if one may take kept leaves.
    building: Option<LeafKind>,
}

static KEPT: Global<KeptLeaves> =
    Global::new(KeptLeaves { entries: [(0, 0, LeafKind::Program); KEPT_LEAVES], n: 0, building: None });

/// A leaf table of a destroyed space built as `kind` that mapped `[va, va
/// + 2 MiB)`: kept (see [`KEPT_LEAVES`]), its entries as they were.
fn keep_leaf_table(pt: u64, va: u64, kind: LeafKind) {
    if host_built(pt) {
        return;
    }
    let k = KEPT.get();
    if k.n == KEPT_LEAVES {
        free_oldest_kept();
    }
    let k = KEPT.get();
    k.entries[k.n] = (pt, va, kind);
    k.n += 1;
}

/// Gives the oldest kept leaf table to the pool; false if none is kept.
fn free_oldest_kept() -> bool {
    let k = KEPT.get();
    if k.n == 0 {
        return false;
    }
    let (pt, _, _) = k.entries[0];
    k.entries.copy_within(1..k.n, 0);
    k.n -= 1;
    free_table_frame(pt);
    true
}

/// A kept leaf table that mapped the 2 MiB range holding `va` in a space
/// built the same way, cleared, for the table of that range in the space
/// being built (see [`KEPT_LEAVES`]), whose entry for it is not present
/// yet. It is reachable from no space, and no translation of the range
/// can be cached through an entry that was not present: clearing it
/// needs no flush.
fn reuse_leaf_table(va: u64) -> Option<u64> {
    let k = KEPT.get();
    let kind = k.building?;
    let base = va & !(HUGE - 1);
    let i = k.entries[..k.n].iter().rposition(|e| e.1 == base && e.2 == kind)?;
    let (pt, _, _) = k.entries[i];
    k.entries.copy_within(i + 1..k.n, i);
    k.n -= 1;
    zero_table(pt);
    Some(pt)
}

/// Runs `f`, an execve's mapping of its program into its new, empty
/// space: the leaf tables it needs may be kept ones of spaces an execve
/// built ([`KEPT_LEAVES`]).
pub fn with_program_loading<R>(f: impl FnOnce() -> R) -> R {
    with_leaves_of(LeafKind::Program, f)
}

/// Runs `f`, which builds a space as `kind`: its new leaf tables may be
/// kept ones of a space built the same way.
fn with_leaves_of<R>(kind: LeafKind, f: impl FnOnce() -> R) -> R {
    let outer = KEPT.get().building.replace(kind);
    let r = f();
    KEPT.get().building = outer;
    r
}

/// Makes KVM's shadow paging let go of the freed table frame `gpa` before
/// it is written again, with one exit. KVM keeps write-protecting a table
/// it shadowed after the runtime has freed it, so each write to one traps
/// and is emulated until KVM sees three in a row (its write-flooding
/// rule), or at once a write of less than 4 bytes (its misaligned-write
/// rule, which drops the shadow at that write). So the first write is
/// such a one, of the bytes already there. Elsewhere (a leaf table KVM
/// may leave unsynced, hardware paging) it is one ordinary write.
fn unshadow(gpa: u64) {
    let p = phys_ptr(gpa) as *mut u16;
    // SAFETY: a free table frame of the pool, reached through the
    // physmap; its first two bytes are written back unchanged.
    unsafe { p.write_volatile(p.read_volatile()) };
}

/// Clears a page-table frame entry by entry (the writes are journaled).
fn zero_table(gpa: u64) {
    for i in 0..512 {
        // SAFETY: `gpa` is a page-table frame; i < 512.
        unsafe { pt_write(table(gpa).add(i), 0) };
    }
}

/// Whether `gpa` is one of the tables the host built (`core`'s
/// `layout.rs`: the physmap's, and empty ones it links under the slots
/// most runs fill). They are not the pool's: never freed into it (nor
/// counted as used), and an empty one stays linked.
fn host_built(gpa: u64) -> bool {
    (abi::PAGE_TABLES_GPA..abi::PAGE_TABLES_GPA + abi::PAGE_TABLES_MAX).contains(&gpa)
}

fn free_table_frame(gpa: u64) {
    if host_built(gpa) {
        return;
    }
    let f = FRAMES.get();
    // SAFETY: the stack has room for every frame of the pool, so for
    // this one (no frame is freed twice); journaled as a table's entry.
    unsafe { pt_write((phys_ptr(f.pt_stack) as *mut u64).add(f.pt_listed as usize), gpa) };
    f.pt_listed += 1;
    f.used -= 1;
}

fn free_frame(gpa: u64) {
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
fn free_huge_block(base: u64) {
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

// --- the page-table journal ------------------------------------------------------
//
// A run from a snapshot is reset in place by the host. KVM's shadow page
// tables follow every change the guest makes to its page tables, but not
// the host's restore of them: a mapping a run added would outlive it. So in
// such a run every page-table write is journaled, and before the run ends
// the runtime writes the old values back itself (KVM sees those writes) and
// reloads CR3. The host still compares every page-table page with the
// snapshot and drops KVM's shadow tables when one differs in a way that
// matters (a journal that overflowed, a run that ended otherwise, a guest
// that lies): the journal only makes the common case cheap.

const JOURNAL_MAX: usize = 32 * 1024;

struct Journal {
    on: bool,
    overflow: bool,
    len: usize,
    /// (guest-physical address of the entry, its value before the write).
    entries: [(u64, u64); JOURNAL_MAX],
}

static JOURNAL: Global<Journal> =
    Global::new(Journal { on: false, overflow: false, len: 0, entries: [(0, 0); JOURNAL_MAX] });

/// Writes a page-table entry (journaled in a run from a snapshot).
///
/// # Safety
/// `e` points at an entry of a page-table frame, through the physmap.
unsafe fn pt_write(e: *mut u64, v: u64) {
    // SAFETY: the caller's promise.
    let old = unsafe { e.read_volatile() };
    if old == v {
        return;
    }
    let j = JOURNAL.get();
    if j.on {
        if j.len < JOURNAL_MAX {
            j.entries[j.len] = (e as u64 - abi::PHYS_BASE, old);
            j.len += 1;
        } else {
            j.overflow = true;
        }
    }
    // SAFETY: the caller's promise.
    unsafe { e.write_volatile(v) };
}

/// Starts journaling page-table writes: the guest was restored from a
/// snapshot (and will be reset to it after this run).
pub fn start_journal() {
    let j = JOURNAL.get();
    j.on = true;
    j.overflow = false;
    j.len = 0;
}

/// Puts every page table back as it was at the snapshot point, so that the host's reset finds them unchanged
/// (it leaves KVM's shadow tables alone then). Call last, before the final
/// hypercall: the program's mappings are gone afterwards.
pub fn undo_journal() {
    let j = JOURNAL.get();
    if !j.on || j.overflow || j.len == 0 {
        return;
    }
    j.on = false;
    // KVM's shadow entries are never more permissive than the guest's
    // current ones (the runtime flushes whenever it takes access away or
    // changes a frame). So when every entry goes back to a value that
    // grants at least what the current one does, for the same frame (say
    // the read-only page of a RELRO mprotect made writable again), the
    // shadow entries still grant no more than the restored ones, and the
    // ring-0 reload (~20 us here) is not needed: a write through a stale
    // read-only shadow entry faults and KVM takes up the restored entry.
    let needs_reload = j.entries[..j.len].iter().any(|&(gpa, old)| {
        // SAFETY: a page-table entry the journal saw written.
        let cur = unsafe { (phys_ptr(gpa) as *const u64).read_volatile() };
        !restores_without_reload(old, cur)
    });
    // With a reload, undo on the boot tables: the runtime's half of them
    // never changes in a run, while any other root (the snapshot's
    // included) may have been freed and reused as another table since the
    // snapshot point.
    let boot = FRAMES.get().boot_pml4;
    // SAFETY: single-threaded; the flush trap reads NEXT_CR3.
    if needs_reload && unsafe { NEXT_CR3 } != boot {
        load_root(boot);
    }
    for &(gpa, old) in j.entries[..j.len].iter().rev() {
        // SAFETY: as above.
        unsafe { (phys_ptr(gpa) as *mut u64).write_volatile(old) };
    }
    j.len = 0;
    if needs_reload {
        // The reload makes KVM take up the entries written back.
        crate::cpu::flush_tlb();
    }
}

/// Whether writing back `old` over the current entry `cur` needs no TLB
/// reload: `cur` maps nothing, or `old` maps the same frame (same page
/// size and cache bits) with at least its access.
fn restores_without_reload(old: u64, cur: u64) -> bool {
    const SAME: u64 = ADDR_MASK | PTE_PS | PTE_CACHE;
    if cur & PTE_P == 0 {
        return true;
    }
    old & PTE_P != 0
        && (old ^ cur) & SAME == 0
        && (cur & PTE_RW == 0 || old & PTE_RW != 0)
        && (cur & PTE_US == 0 || old & PTE_US != 0)
        && (old & PTE_NX == 0 || cur & PTE_NX != 0)
}

fn table(gpa: u64) -> *mut u64 {
    phys_ptr(gpa) as *mut u64
}

/// The level-0 entry for `va` under `pml4`, creating intermediate tables
/// if `create`.
fn pte(pml4: u64, va: u64, create: bool) -> Option<*mut u64> {
    let mut t = pml4;
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
            let f = match (level == 1).then(|| reuse_leaf_table(va)).flatten() {
                Some(f) => f,
                None => alloc_table_frame()?,
            };
            // SAFETY: as above; a not-present entry becomes present: no flush needed.
            unsafe { pt_write(e, f | PTE_P | PTE_RW | PTE_US | PTE_A) };
            t = f;
        } else if v & PTE_PS != 0 {
            // A 2 MiB mapping of the program becomes 512 pages, so that
            // the caller may change one; the physmap's stay as they are.
            if level != 1 || va >= USER_END {
                return None;
            }
            // SAFETY: e is the program's 2 MiB entry, read just now.
            t = unsafe { split_huge(e) };
        } else {
            t = v & ADDR_MASK;
        }
    }
    let idx = ((va >> 12) & 0x1ff) as usize;
    // SAFETY: t is a level-0 table frame, idx < 512.
    Some(unsafe { table(t).add(idx) })
}

/// Replaces the program's 2 MiB entry `*e` by a table of the same 512
/// pages, from the table frames kept for it, and returns the table. The
/// translations stay the same: no flush.
///
/// # Safety
/// `e` points at a present 2 MiB entry of a program's page directory.
unsafe fn split_huge(e: *mut u64) -> u64 {
    let f = FRAMES.get();
    let Some(pt) = take_table_frame(f.huge_live.saturating_sub(1)) else {
        crate::hc::panic(b"no table frame kept for a 2 MiB mapping");
    };
    f.huge_live = f.huge_live.saturating_sub(1);
    // SAFETY: the caller's promise.
    let v = unsafe { e.read_volatile() };
    let bits = v & !(ADDR_MASK | PTE_PS);
    for i in 0..HUGE_FRAMES {
        // SAFETY: pt is a table frame of our own; i < 512.
        unsafe { pt_write(table(pt).add(i as usize), ((v & ADDR_MASK) + i * PAGE) | bits) };
    }
    // SAFETY: the caller's promise; the entry now points at that table.
    unsafe { pt_write(e, pt | PTE_P | PTE_RW | PTE_US | PTE_A) };
    pt
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

/// Whether a new 2 MiB page may be made: frames are plentiful (the page
/// itself and 4 MiB beyond the heap's reserve) and the page-table pool
/// can keep a frame for its split.
fn huge_page_room() -> bool {
    free_frames() >= HUGE_FRAMES + GROWN_WINDOW_FLOOR && table_frames_free() >= FRAMES.get().huge_live + 8
}

/// The page-directory entry for `va` (a program address) under `pml4`,
/// making the tables above it; None if a table frame is short or a 1 GiB
/// page is in the way.
fn pd_entry(pml4: u64, va: u64) -> Option<*mut u64> {
    let mut t = pml4;
    for level in [3u32, 2] {
        let idx = ((va >> (12 + 9 * level)) & 0x1ff) as usize;
        // SAFETY: `t` is a page-table frame of the program's slots; idx < 512.
        let e = unsafe { table(t).add(idx) };
        // SAFETY: e points into that frame.
        let cur = unsafe { e.read_volatile() };
        if cur & PTE_P == 0 {
            let nt = alloc_table_frame()?;
            // SAFETY: as above; not present -> present needs no flush.
            unsafe { pt_write(e, nt | PTE_P | PTE_RW | PTE_US | PTE_A) };
            t = nt;
        } else if cur & PTE_PS != 0 {
            return None;
        } else {
            t = cur & ADDR_MASK;
        }
    }
    // SAFETY: `t` is a page directory; the index is < 512.
    Some(unsafe { table(t).add(((va >> 21) & 0x1ff) as usize) })
}

/// 512 frames, 2 MiB aligned: a freed 2 MiB page (zeroed now if `zero`),
/// or an aligned run of never-used (so zero) frames, those skipped to
/// align it going to the free list. None if neither is left.
fn take_huge_block(zero: bool) -> Option<u64> {
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

/// For a measuring run (`touched.rs`): marks the frames leaf `entry`
/// maps (a 2 MiB page's 512) as touched.
fn mark_touched(entry: u64) {
    let frames = if entry & PTE_PS != 0 { HUGE_FRAMES } else { 1 };
    for k in 0..frames {
        crate::touched::mark((entry & ADDR_MASK) / PAGE + k);
    }
}

/// Whether `va` of the current space is backed (a present or kept 4 KiB
/// entry, or a 2 MiB one), without changing any table.
fn backed(va: u64) -> bool {
    leaf(va) & (PTE_P | PTE_KEPT) != 0
}

/// The entry that maps `va` in the current space: a 4 KiB one, a 2 MiB
/// one (`PTE_PS` set), or 0. Changes no table.
fn leaf(va: u64) -> u64 {
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
    if prot & PROT_EXEC == 0 {
        // (EFER.NXE is on: data does not run, as on Linux.)
        bits |= PTE_NX;
    }
    bits
}

/// A private copy of a shared frame.
fn copy_frame(src: u64) -> Option<u64> {
    let f = alloc_frame()?;
    // SAFETY: two distinct whole frames of guest RAM.
    unsafe { core::ptr::copy_nonoverlapping(phys_ptr(src), phys_ptr(f), PAGE as usize) };
    Some(f)
}

// --- copy-on-write ------------------------------------------------------------
//
// A fork whose private memory is large, or would not fit twice, shares
// it copy-on-write (`fork_space`): both spaces map each frame read-only
// with `PTE_COW`, and the frame's share count (how many more spaces hold
// it) goes up. A write faults (`break_cow`): the writer gets a copy, or
// the frame itself once no other space holds it. Freeing such an entry
// takes one off the count instead while it is not zero (`release_frame`).

/// The share count of private frame `gpa`: how many address spaces
/// beyond one map it copy-on-write. None for a frame without one (then
/// a fork copies it).
fn share_slot(gpa: u64) -> Option<*mut u16> {
    let f = FRAMES.get();
    (f.shares != 0 && gpa < f.share_end).then(|| phys_ptr(f.shares + gpa / PAGE * 2) as *mut u16)
}

fn shares(gpa: u64) -> u16 {
    // SAFETY: a slot of the count array (frames the runtime keeps).
    share_slot(gpa).map_or(0, |c| unsafe { c.read() })
}

/// One more space holds frame `gpa`; false (nothing changed) if its
/// count cannot go up.
fn share_frame(gpa: u64) -> bool {
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
fn release_frame(entry: u64) {
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
fn block_unshared(base: u64) -> bool {
    (0..HUGE_FRAMES).all(|k| shares(base + k * PAGE) == 0)
}

/// Gives up a 2 MiB mapping's hold on its 512 frames: one block again
/// unless shared, else frame by frame (see `release_frame`).
fn release_huge(entry: u64) {
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
fn unmap_huge(entry: u64) {
    // A file's frames mapped in place are the file cache's.
    if entry & PTE_FOREIGN == 0 {
        release_huge(entry);
    }
    let f = FRAMES.get();
    f.huge_live = f.huge_live.saturating_sub(1);
}

/// A copy of the 2 MiB block at `src` in a block of its own (not zeroed
/// first: the copy fills it); None if no block is left.
fn copy_huge_block(src: u64) -> Option<u64> {
    let block = take_huge_block(false)?;
    // SAFETY: two distinct 2 MiB blocks of guest RAM.
    unsafe { core::ptr::copy_nonoverlapping(phys_ptr(src), phys_ptr(block), HUGE as usize) };
    Some(block)
}

/// Whether the 2 MiB at `va` meets the parent's ready pages above its
/// break (`ready`), which are not a fork's child's memory.
fn huge_meets(ready: &core::ops::Range<u64>, va: u64) -> bool {
    va < ready.end && ready.start < va + HUGE
}

/// The entry a private copy-on-write 4 KiB entry `old` becomes so that
/// its space may write it: the frame itself if no other space holds it,
/// else a copy (None if no frame is left). `writable`: the mapping allows
/// writing now.
fn unshared_entry(old: u64, writable: bool) -> Option<u64> {
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
fn cow_room(extra: u64) -> bool {
    free_frames() > FRAMES.get().cow_shared + extra + GROWN_WINDOW_FLOOR
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

// --- address spaces ------------------------------------------------------------

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

/// Loads page-table root `root` into CR3 and tells the host (see
/// `abi::Hypercall::cr3`).
fn load_root(root: u64) {
    // SAFETY: single-threaded; the flush trap reads NEXT_CR3.
    unsafe { NEXT_CR3 = root };
    crate::cpu::flush_tlb();
    crate::hc::tell_cr3(root);
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
/// (`entry`, mapped in place: see [`map_file_huge`]) at `va` as it is.
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

// --- mapping in the current space ----------------------------------------------

/// The level-0 entry of program address `va` in the current space (None
/// for the runtime's part of the address space, whatever the caller
/// passes).
fn cur_pte(va: u64, create: bool) -> Option<*mut u64> {
    if va >= USER_END {
        return None;
    }
    pte(current().pml4, va, create)
}

/// Mappings up to this size are backed at once; larger ones (and the
/// stack below its top) page by page on first touch.
const EAGER_MAX: u64 = 256 * 1024;

/// Backs `[start, end)` with zeroed frames (only pages already backed
/// unless `populate`), `prot` access. Pages already backed keep their
/// frame (a file-cache frame is copied if the new access allows writing;
/// a shared object's frame is copied when `populate`, which makes the
/// range private memory) and get `prot`. Returns the pages whose entries
/// need a flush.
fn back_range(pml4: u64, start: u64, end: u64, prot: u32, populate: bool) -> Result<Stale, i64> {
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

/// Most pages whose TLB entries are dropped one by one
/// ([`crate::cpu::flush_page`]) rather than all by a CR3 load. Both take
/// the same emulated instructions here, but a CR3 load also makes KVM's
/// shadow paging write-protect every page table again, so that the
/// runtime's next write to each faults: a loop of one-page `mprotect`s
/// took 92 µs a round with CR3 loads and 49 µs with `invlpg`. For two
/// pages, two traps cost about what a CR3 load and its faults do (a shell
/// loop of fork and exec made ~13% more exits), so one it is.
const PAGE_FLUSH_MAX: u64 = 1;

/// The pages of the current space whose entries changed in a way the TLB
/// may not show yet (a present entry removed, narrowed or given another
/// frame): up to [`PAGE_FLUSH_MAX`] of them, flushed one by one, or
/// `many`, flushed by a CR3 load (also for freed page tables, whose
/// entries above them a CPU may cache).
#[derive(Default)]
struct Stale {
    pages: [u64; PAGE_FLUSH_MAX as usize],
    n: usize,
    many: bool,
}

impl Stale {
    /// Notes the page holding `va` (a 2 MiB page's entry is dropped by
    /// a flush of any address in it).
    fn add(&mut self, va: u64) {
        let page = page_down(va);
        if self.many || self.pages[..self.n].contains(&page) {
            return;
        }
        match self.pages.get_mut(self.n) {
            Some(slot) => {
                *slot = page;
                self.n += 1;
            }
            None => self.many = true,
        }
    }

    /// Adds `other`'s pages.
    fn merge(&mut self, other: &Stale) {
        self.many |= other.many;
        other.pages[..other.n].iter().for_each(|&page| self.add(page));
    }

    /// Makes the changes take effect.
    fn flush(&self) {
        if self.many {
            crate::cpu::flush_tlb();
        } else {
            for &page in &self.pages[..self.n] {
                crate::cpu::flush_page(page);
            }
        }
    }
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
fn free_empty_tables(start: u64, end: u64) -> bool {
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

/// The entry at `level` (1: page directory, 2: the level above, 3: the
/// top) that leads to the table covering `va`; Err(l) if the entry at
/// level l above it is absent (or a 2 MiB page).
///
/// # Safety
/// `pml4` is the root of an address space and `va` lies in its program
/// slots.
unsafe fn table_entry(pml4: u64, va: u64, level: u32) -> Result<*mut u64, u32> {
    let mut t = pml4;
    let mut l = 3;
    loop {
        let idx = ((va >> (12 + 9 * l)) & 0x1ff) as usize;
        // SAFETY: `t` is a page-table frame (the caller's promise, then
        // present entries below it); idx < 512.
        let e = unsafe { table(t).add(idx) };
        if l == level {
            return Ok(e);
        }
        // SAFETY: as above.
        let v = unsafe { e.read_volatile() };
        if v & PTE_P == 0 || v & PTE_PS != 0 {
            return Err(l);
        }
        t = v & ADDR_MASK;
        l -= 1;
    }
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
static CODE_HOOKS: Global<Option<(CodeHook, CodeHook)>> = Global::new(None);

/// Registers the rewriter's hooks (see `CODE_HOOKS`).
pub fn on_code_change(unmapped: CodeHook, restore: CodeHook) {
    *CODE_HOOKS.get() = Some((unmapped, restore));
}

/// Set while code is patched ahead in a batch ([`with_patch_flush_deferred`]):
/// the pages whose patches have put off their flush.
static PATCH_FLUSH_DEFERRED: Global<Option<Stale>> = Global::new(None);

/// Runs `f`, in which [`patch_code`] puts off the flushes its frame
/// changes need, then flushes the pages it changed (or all, for many).
/// Only while nothing of the program runs (code patched ahead at an
/// execve): meanwhile the runtime's own reads of patched pages may still
/// see their old bytes, which are the program's own (the rewriter keeps
/// its changes in its list of sites, not only in the bytes).
pub fn with_patch_flush_deferred<R>(f: impl FnOnce() -> R) -> R {
    let outer = PATCH_FLUSH_DEFERRED.get().replace(Stale::default());
    let r = f();
    let inner = core::mem::replace(PATCH_FLUSH_DEFERRED.get(), outer);
    if let Some(inner) = inner {
        match PATCH_FLUSH_DEFERRED.get() {
            Some(outer) => outer.merge(&inner),
            None => inner.flush(),
        }
    }
    r
}

/// The flush a patch's frame change at page `va` needs: now, or at the
/// end of the batch it is part of.
fn patch_flush(va: u64) {
    match PATCH_FLUSH_DEFERRED.get() {
        Some(pending) => pending.add(va),
        None => crate::cpu::flush_page(page_down(va)),
    }
}

/// Whether `va` is in private code (`Vma::is_private_code`).
pub fn private_code(va: u64) -> bool {
    vma_at(va).is_some_and(|v| v.is_private_code())
}

/// Writes `bytes` over the program's code at `va` (within one page) for
/// the system-call rewriter: only in a private mapping; with `code_only`,
/// only one that is executable and not writable. A file-cache frame is
/// replaced by a private copy first (one flush), so no other process sees
/// the change. Returns false if the bytes were left alone.
pub fn patch_code(va: u64, bytes: &[u8], code_only: bool) -> bool {
    let off = va & (PAGE - 1);
    if off + bytes.len() as u64 > PAGE {
        return false;
    }
    let Some(v) = vma_at(va) else { return false };
    if v.shared.is_some() || code_only && !v.is_private_code() {
        return false;
    }
    let Some(e) = cur_pte(va, false) else { return false };
    // SAFETY: valid level-0 entry pointer.
    let old = unsafe { e.read_volatile() };
    if old & PTE_P == 0 || old & PTE_SHM != 0 {
        return false;
    }
    let frame = if old & PTE_COW != 0 {
        let Some(new) = unshared_entry(old, v.prot & PROT_WRITE != 0) else { return false };
        // SAFETY: as above; flushed now (maybe another frame).
        unsafe { pt_write(e, new) };
        patch_flush(va);
        new & ADDR_MASK
    } else if old & PTE_SHARED != 0 {
        let Some(f) = copy_frame(old & ADDR_MASK) else { return false };
        // SAFETY: as above; present -> present with another frame: flushed below.
        unsafe { pt_write(e, f | (old & !ADDR_MASK & !PTE_SHARED)) };
        patch_flush(va);
        f
    } else {
        old & ADDR_MASK
    };
    // SAFETY: off + len <= PAGE: within one private frame of guest RAM.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), phys_ptr(frame + off), bytes.len()) };
    true
}

/// Maps `len` bytes readable and executable (the rewriter's stubs) in the
/// highest free gap below `near`'s mapping no more than `reach` bytes
/// below `near`; returns its address.
pub fn map_near_below(near: u64, len: u64, reach: u64) -> Option<u64> {
    let mut top = vma_at(near)?.start;
    let start = loop {
        let start = top.checked_sub(len)?;
        if start < user::MIN_ADDR || near - start > reach {
            return None;
        }
        match current().vmas.iter().rev().find(|v| v.start < top && v.end > start) {
            None => break start,
            Some(v) => top = v.start,
        }
    };
    map_fixed(start, len, PROT_READ | PROT_EXEC).ok()?;
    Some(start)
}

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

// --- VMAs -----------------------------------------------------------------

/// Removes `[start, end)` from the current space's mappings.
fn vma_remove(start: u64, end: u64) -> Result<(), i64> {
    if let Some((unmapped, _)) = *CODE_HOOKS.get() {
        unmapped(start, end);
    }
    vma::remove(&mut current().vmas, start, end)
}

/// Adds a mapping to the current space (see `vma::insert`).
fn vma_insert(v: Vma) -> Result<(), i64> {
    vma::insert(&mut current().vmas, v)
}

/// True if every byte of `[va, va + len)` is in a mapping allowing `prot`.
pub fn user_access_ok(va: u64, len: u64, prot: u32) -> bool {
    vma::access_ok(&current().vmas, va, len, prot)
}

fn overlaps_any(start: u64, end: u64) -> bool {
    current().vmas.iter().any(|v| v.start < end && v.end > start)
}

fn valid_user_range(start: u64, len: u64) -> Option<u64> {
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
fn find_free(len: u64) -> Result<u64, i64> {
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
fn make_room(hint: u64, len: u64, fixed: bool, noreplace: bool) -> Result<(u64, u64), i64> {
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

/// Reserves `len` bytes of address space (PROT_NONE, no frames) and
/// returns where: for loading an interpreter at a base of our choosing.
pub fn reserve(len: u64) -> Result<u64, i64> {
    let len = page_up(len);
    let start = find_free(len)?;
    vma_insert(Vma::private(start, start + len, 0))?;
    Ok(start)
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
fn back_shared_page(va: u64, v: &Vma) -> Result<bool, i64> {
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

/// Whether some mapping of the current space covers `va`.
pub fn is_mapped(va: u64) -> bool {
    vma_at(va).is_some()
}

fn vma_at(va: u64) -> Option<Vma> {
    current().vmas.iter().find(|v| v.start <= va && va < v.end).cloned()
}

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

/// A stream of page faults in address order: its last window and size.
#[derive(Clone, Copy)]
struct FaultStream {
    lo: u64,
    hi: u64,
    len: u64,
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

/// Streams of page faults in address order followed at once: a program
/// filling several blocks in turn (as the non-temporal path of glibc's
/// memcpy of a very large block does with its quarters, on CPUs that
/// take it) keeps each stream's window growing.
const FAULT_STREAMS: usize = 4;
/// Bytes backed together on a page fault...
const FAULT_AROUND: u64 = 256 * 1024;
/// ...and at most, for faults in address order (`fault_window`): 256 KiB,
/// 512 KiB, 1 MiB, then 2 MiB a fault, so 64 MiB filled in order takes
/// ~35 faults instead of 256.
const FAULT_AROUND_MAX: u64 = 2 << 20;
/// Free frames below which a grown window backs no more than the
/// faulting page's first window would: 4 MiB beyond the heap's reserve.
const GROWN_WINDOW_FLOOR: u64 = HEAP_RESERVE + 1024;

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

/// MADV_DONTNEED on private anonymous memory: the pages read as zero again.
pub fn madvise_dontneed(start: u64, len: u64) -> Result<(), i64> {
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

pub const MADV_DONTNEED: u64 = 4;
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

// --- brk ------------------------------------------------------------------

pub fn set_brk_start(at: u64) {
    let mm = current();
    mm.brk_start = page_up(at);
    mm.brk = mm.brk_start;
}

/// Pages backed ahead above the break of the current process at a
/// snapshot point: a run from the snapshot then grows its heap (glibc's
/// malloc takes 132 KiB at its first call) without writing a page table,
/// so its end has no mapping to take away and no ring-0 TLB reload to do.
const BRK_ARENA: u64 = 256 * 1024;

/// Backs up to [`BRK_ARENA`] bytes above the break of the current process
/// with zeroed, writable frames that no mapping owns yet. Unlike Linux,
/// the program can touch them before its break reaches them (they read
/// as zero); `brk` hands them out and takes them back (zeroed).
pub fn ready_brk_arena() {
    let mm = current();
    if mm.brk_start == 0 {
        return;
    }
    let start = page_up(mm.brk).max(mm.brk_ready);
    let end = (page_up(mm.brk) + BRK_ARENA).min(mm.brk_start + user::BRK_MAX);
    // Only where nothing is mapped, and never the last spare frames.
    if end <= start || overlaps_any(start, end) || (end - start) / PAGE * 4 > spare_frames() {
        return;
    }
    let mut va = start;
    while va < end {
        match pte(mm.pml4, va, true) {
            // SAFETY: a level-0 entry of the current space.
            Some(e) if unsafe { e.read_volatile() } & (PTE_P | PTE_KEPT) == 0 => match alloc_frame() {
                // SAFETY: as above; not present -> present needs no flush.
                Some(f) => unsafe { pt_write(e, f | leaf_bits(PROT_READ | PROT_WRITE)) },
                None => break,
            },
            _ => break,
        }
        va += PAGE;
    }
    mm.brk_ready = va;
}

/// Whether every page of `[start, end)` is one [`ready_brk_arena`] backed
/// and nothing has replaced since: below the ready end, present, writable
/// and private.
fn brk_pages_ready(mm: &AddressSpace, start: u64, end: u64) -> bool {
    if end > mm.brk_ready {
        return false;
    }
    let mut va = start;
    while va < end {
        match pte(mm.pml4, va, false) {
            Some(e) => {
                // SAFETY: a level-0 entry of the current space.
                let v = unsafe { e.read_volatile() };
                if v & (PTE_P | PTE_RW) != PTE_P | PTE_RW || v & PTE_FOREIGN != 0 {
                    return false;
                }
            }
            None => return false,
        }
        va += PAGE;
    }
    true
}

/// brk(2): returns the (new or unchanged) break.
pub fn brk(want: u64) -> u64 {
    let mm = current();
    let (start, cur) = (mm.brk_start, mm.brk);
    if want < start || want > start + user::BRK_MAX {
        return cur;
    }
    let old_top = page_up(cur);
    let new_top = page_up(want);
    if new_top > old_top && (new_top - old_top) / PAGE > spare_frames() {
        return cur;
    }
    // Like Linux, the heap keeps a page clear below the next mapping.
    let blocked = new_top > old_top && overlaps_any(old_top, new_top + PAGE);
    if new_top > old_top && !blocked && brk_pages_ready(mm, old_top, new_top) {
        // Pages a snapshot point backed ahead: no page-table write (and
        // so nothing for the run's end to undo with a TLB reload).
        if vma_remove(old_top, new_top)
            .and_then(|_| vma_insert(Vma::private(old_top, new_top, PROT_READ | PROT_WRITE)))
            .is_err()
        {
            return cur;
        }
    } else if new_top < old_top && brk_pages_ready(mm, new_top, old_top) {
        // Given back, they stay ready: zeroed, as Linux gives them again.
        let _ = vma_remove(new_top, old_top);
        let mut va = new_top;
        while va < old_top {
            if let Some(e) = pte(mm.pml4, va, false) {
                // SAFETY: a level-0 entry; brk_pages_ready saw it present
                // and private, so its frame is this process's own.
                zero_frame(unsafe { e.read_volatile() } & ADDR_MASK);
            }
            va += PAGE;
        }
    } else if new_top > old_top {
        if blocked {
            // (The mapping in the way stays.)
            return cur;
        }
        if map_fixed(old_top, new_top - old_top, PROT_READ | PROT_WRITE).is_err() {
            // Undo a partial mapping so the heap stays as it was.
            let _ = munmap(old_top, new_top - old_top);
            return cur;
        }
    } else if new_top < old_top {
        let _ = munmap(new_top, old_top - new_top);
    }
    current().brk = want;
    want
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
/// backed, e.g. by [`map_shared_frame`]).
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

#[cfg(test)]
mod journal_tests {
    use super::*;

    const FRAME: u64 = 0x1234_5000;

    #[test]
    fn restoring_more_access_to_the_same_frame_needs_no_reload() {
        let ro = FRAME | PTE_P | PTE_US | PTE_A | PTE_D;
        let rw = ro | PTE_RW;
        // RELRO: the run made a page read-only; writable again.
        assert!(restores_without_reload(rw, ro));
        assert!(restores_without_reload(rw, rw));
        // Nothing mapped now: whatever comes back is new to KVM too.
        assert!(restores_without_reload(rw, 0));
        assert!(restores_without_reload(0, 0));
        assert!(restores_without_reload(ro | PTE_NX, PTE_KEPT | FRAME));
        // Execute access back (NX cleared).
        assert!(restores_without_reload(ro, ro | PTE_NX));
    }

    #[test]
    fn taking_access_away_or_moving_a_page_needs_a_reload() {
        let ro = FRAME | PTE_P | PTE_US | PTE_A | PTE_D;
        let rw = ro | PTE_RW;
        // A mapping the run added goes away.
        assert!(!restores_without_reload(0, rw));
        assert!(!restores_without_reload(PTE_KEPT | FRAME, rw));
        // Less access than now.
        assert!(!restores_without_reload(ro, rw));
        assert!(!restores_without_reload(rw & !PTE_US, rw));
        assert!(!restores_without_reload(ro | PTE_NX, ro));
        // Another frame (a copy-on-write copy going back to the shared one).
        assert!(!restores_without_reload(rw + PAGE, rw));
        // Another page size or caching.
        assert!(!restores_without_reload(rw | PTE_PS, rw));
        assert!(!restores_without_reload(rw | (1 << 4), rw));
    }
}
