//! Page tables: the pool their frames come from (see
//! `abi::pt_pool_size`), with the frames kept for splits of 2 MiB
//! mappings and the leaf tables kept for a space built the same way
//! ([`KEPT_LEAVES`]); and the walks that find or make entries: `pte` (a
//! 4 KiB page's, splitting a 2 MiB page in the way), `pd_entry` (a 2 MiB
//! page's), `table_entry`, and a leaf's bits for an access (`leaf_bits`).

use hvsandbox_abi as abi;
use hvsandbox_abi::pte::{
    ACCESSED as PTE_A, DIRTY as PTE_D, HUGE as PTE_PS, PRESENT as PTE_P, USER as PTE_US, WRITABLE as PTE_RW,
};

use crate::rt::{phys_ptr, Global};
use crate::vma::{PROT_EXEC, PROT_READ, PROT_WRITE};

use super::frames::{free_frames, FRAMES, GROWN_WINDOW_FLOOR, HUGE, HUGE_FRAMES, PAGE};
use super::journal::{pt_write, table, ADDR_MASK, PTE_KEPT, PTE_NX};

/// Top-level slots `USER_SLOTS..512` are shared by every address space.
pub(super) const USER_SLOTS: usize = 254;
/// The end of the program's slots.
pub(super) const USER_END: u64 = (USER_SLOTS as u64) << 39;

/// A zeroed frame for a page table, from the page-table pool only (the
/// host relies on page tables living there; see `abi::pt_pool_size`),
/// leaving the frames kept for splits of 2 MiB mappings.
pub(super) fn alloc_table_frame() -> Option<u64> {
    let gpa = take_table_frame(FRAMES.get().huge_live)?;
    zero_table(gpa);
    Some(gpa)
}

/// Frames of the page-table pool free now.
pub(super) fn table_frames_free() -> u64 {
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
pub(super) enum LeafKind {
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
pub(super) fn keep_leaf_table(pt: u64, va: u64, kind: LeafKind) {
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
pub(super) fn with_leaves_of<R>(kind: LeafKind, f: impl FnOnce() -> R) -> R {
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
pub(super) fn host_built(gpa: u64) -> bool {
    (abi::PAGE_TABLES_GPA..abi::PAGE_TABLES_GPA + abi::PAGE_TABLES_MAX).contains(&gpa)
}

pub(super) fn free_table_frame(gpa: u64) {
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

/// The level-0 entry for `va` under `pml4`, creating intermediate tables
/// if `create`.
pub(super) fn pte(pml4: u64, va: u64, create: bool) -> Option<*mut u64> {
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

/// Whether a new 2 MiB page may be made: frames are plentiful (the page
/// itself and 4 MiB beyond the heap's reserve) and the page-table pool
/// can keep a frame for its split.
pub(super) fn huge_page_room() -> bool {
    free_frames() >= HUGE_FRAMES + GROWN_WINDOW_FLOOR && table_frames_free() >= FRAMES.get().huge_live + 8
}

/// The page-directory entry for `va` (a program address) under `pml4`,
/// making the tables above it; None if a table frame is short or a 1 GiB
/// page is in the way.
pub(super) fn pd_entry(pml4: u64, va: u64) -> Option<*mut u64> {
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

pub(super) fn leaf_bits(prot: u32) -> u64 {
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

/// The entry at `level` (1: page directory, 2: the level above, 3: the
/// top) that leads to the table covering `va`; Err(l) if the entry at
/// level l above it is absent (or a 2 MiB page).
///
/// # Safety
/// `pml4` is the root of an address space and `va` lies in its program
/// slots.
pub(super) unsafe fn table_entry(pml4: u64, va: u64, level: u32) -> Result<*mut u64, u32> {
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
