//! Code patching for the system-call rewriter (`rewrite.rs`): writing
//! over the program's code through a private frame (`patch_code`), with
//! the flushes put off for a batch (`with_patch_flush_deferred`), and the
//! stubs' mappings near the code (`map_near_below`). The hooks the
//! rewriter registers for unmapped and changed code are `map.rs`'s
//! (`on_code_change`): the mapping operations call them.

use hvsandbox_abi::pte::PRESENT as PTE_P;
use hvsandbox_abi::user;

use crate::rt::{phys_ptr, Global};
use crate::vma::{PROT_EXEC, PROT_READ, PROT_WRITE};

use super::cow::{copy_frame, unshared_entry};
use super::frames::{page_down, PAGE};
use super::journal::{pt_write, ADDR_MASK, PTE_COW, PTE_SHARED, PTE_SHM};
use super::map::{map_fixed, vma_at};
use super::space::{cur_pte, current};
use super::tlb::Stale;

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
