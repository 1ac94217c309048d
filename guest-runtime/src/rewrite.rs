//! System-call site rewriting (off unless the host boots the runtime with
//! `BOOT_FLAG_REWRITE`): on this host a `syscall` instruction costs the
//! hypervisor 1–20 µs, while the same entry reached by a plain `jmp`
//! costs tens of cycles. So once a site has run a second time
//! (`HOT_AFTER`), it is rewritten to jump to the runtime.
//!
//! Only the common sequence `mov eax, imm32; syscall` (`b8 imm32 0f 05`)
//! is rewritten, and only its `mov`: the five bytes become `jmp rel32` to
//! a stub of the same length, and the `syscall` after them stays as it
//! was, so anything that jumps to it (or re-runs it: a restarted call
//! returns to RIP − 2) still works by the slow path. The stub does what
//! the two instructions did — `mov eax, imm32`, RCX = the address after
//! the `syscall` — and jumps through a pointer to `syscall_fast_entry`
//! (main.rs), which moves to the runtime stack before it touches memory
//! (the red zone below the program's RSP is left alone), puts RFLAGS in
//! R11 as `syscall` does, and joins the ordinary entry: the dispatcher,
//! the table and the stats see every call as before.
//!
//! A site is rewritten only when the entry knows it exactly (RIP − 2 of a
//! call that came by `syscall`), the five bytes before it read `b8` and
//! the call's own number, all seven bytes lie in one page of a private,
//! executable, non-writable mapping (file-cache frames get a private copy
//! first; shared mappings and writable code — JITs — are left alone), and
//! a stub area is within ±2 GiB. Stub areas are mapped below the code
//! they serve. Code made writable again (mprotect) gets its original bytes
//! back, and so does code about to move (mremap); an unmapped stub area
//! takes its sites' patches with it.
//!
//! The record of sites and areas (`sites.rs`) lives in the address space:
//! a fork copies it with the pages, an execve starts empty.

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;

use crate::fnindex::{self, FnIndex};
use crate::mm::{self, PAGE};
use crate::rt::{Frame, Global};
use crate::sites::{Area, Site, Sites, AREA_LEN, REFUSED};
use crate::vfs::{Node, NodeKind, NodeRef};
use crate::x86len;

static ENABLED: Global<bool> = Global::new(false);

/// Set by `syscall_fast_entry` (a call that came through a stub); the
/// dispatcher clears it.
#[no_mangle]
pub static mut REWRITE_FAST_ENTRY: u8 = 0;

/// Bytes of one stub (an area's first slot holds the address of the fast
/// entry).
const STUB_LEN: u64 = 32;
/// How far below a site its stub area may lie (a rel32 reaches 2 GiB).
const REACH: u64 = (1 << 31) - 2 * AREA_LEN;
/// A site is rewritten at its this-many-th slow call: rewriting costs a
/// page copy and a TLB flush (tens of µs) when the code is the file
/// cache's, more than a one-off call saves.
const HOT_AFTER: u32 = 2;
/// Most sites rewritten per address space (bounds the record).
const MAX_SITES: usize = 65536;

/// Set while the boot times `syscall`: the entry returns at once.
#[no_mangle]
pub static mut REWRITE_PROBE: u8 = 0;

/// Rewriting pays where a raw `syscall` round trip costs more than this
/// (ns): a rewritten call costs ~0.1 µs, rewriting a site tens of µs (a
/// page copy, a TLB flush, the first look at its file's unwind table), so
/// below it a site needs thousands of calls to repay it; on hosts whose
/// hypervisor handles `syscall` natively the round trip is ~0.1 µs.
const WORTH_ABOVE_NS: u64 = 500;

/// Whether a raw `syscall` is slow here (timed once, at boot: a snapshot
/// keeps the answer).
static SLOW_SYSCALL: Global<bool> = Global::new(false);

/// Times a few raw `syscall` round trips (the entry returns at once while
/// `REWRITE_PROBE` is set) with the TSC; the fastest decides.
#[cfg(not(test))]
pub fn time_syscall(tsc_khz: u64) {
    // SAFETY: one vCPU; the entry reads the flag.
    unsafe { REWRITE_PROBE = 1 };
    let mut best = u64::MAX;
    for _ in 0..5 {
        // SAFETY: rdtsc and a `syscall` the entry answers by returning to
        // RCX with R11's flags (RAX clobbered); it touches no memory of ours.
        let cycles = unsafe {
            let t0 = core::arch::x86_64::_rdtsc();
            core::arch::asm!("syscall", inout("rax") 0u64 => _, out("rcx") _, out("r11") _);
            core::arch::x86_64::_rdtsc().wrapping_sub(t0)
        };
        best = best.min(cycles);
    }
    // SAFETY: as above.
    unsafe { REWRITE_PROBE = 0 };
    *SLOW_SYSCALL.get() = slow(best, tsc_khz);
}

#[cfg(test)]
pub fn time_syscall(_tsc_khz: u64) {}

/// Whether `cycles` of a TSC at `tsc_khz` (0: unknown, take 3 GHz) are
/// more than `WORTH_ABOVE_NS`.
fn slow(cycles: u64, tsc_khz: u64) -> bool {
    let khz = if tsc_khz == 0 { 3_000_000 } else { tsc_khz };
    cycles.saturating_mul(1_000_000) / khz > WORTH_ABOVE_NS
}

/// Turns rewriting on or off (at start, from the boot flags: forced on,
/// forced off, or where a `syscall` is slow).
pub fn set_enabled(flags: u32) {
    use hvsandbox_abi as abi;
    *ENABLED.get() =
        flags & abi::BOOT_FLAG_REWRITE != 0 || flags & abi::BOOT_FLAG_NO_REWRITE == 0 && *SLOW_SYSCALL.get();
    mm::on_code_change(range_unmapped, restore_range);
}

#[cfg(not(test))]
fn fast_entry() -> u64 {
    extern "C" {
        fn syscall_fast_entry();
    }
    syscall_fast_entry as unsafe extern "C" fn() as usize as u64
}

#[cfg(test)]
fn fast_entry() -> u64 {
    0
}

/// Called by the dispatcher at every system call, before it is served:
/// rewrites the site of a call that came by `syscall`, if it can.
pub fn on_syscall(f: &Frame) {
    // SAFETY: written only by the entry assembly, on this one vCPU.
    let fast = unsafe { core::mem::replace(&mut *core::ptr::addr_of_mut!(REWRITE_FAST_ENTRY), 0) };
    if fast != 0 || !*ENABLED.get() {
        return;
    }
    let Some(at) = f.rip.checked_sub(7) else { return };
    if (at & (PAGE - 1)) > PAGE - 7 || !mm::user_access_ok(at, 7, mm::PROT_READ | mm::PROT_EXEC) {
        return;
    }
    // SAFETY: the seven bytes lie in one page of a readable mapping, the
    // page the program just ran its `syscall` from (so it is backed).
    let b = unsafe { core::ptr::read_unaligned(at as *const [u8; 7]) };
    let imm = [b[1], b[2], b[3], b[4]];
    if b[0] != 0xb8 || b[5] != 0x0f || b[6] != 0x05 || u64::from(u32::from_le_bytes(imm)) != f.rax {
        return;
    }
    let rec = &mut mm::current().rewrite;
    let n = rec.seen(at);
    if n == REFUSED || n < HOT_AFTER {
        return;
    }
    if !at_boundary(at) || !patch(at, imm) {
        mm::current().rewrite.refuse(at);
    }
}

/// Most bytes swept from a function's start to a site.
const MAX_SWEEP: u64 = 64 << 10;

/// Whether `at` is the start of an instruction (so that the `b8` there is
/// an opcode, not a byte inside a longer instruction before it): the
/// file mapped there knows where the function holding `at` starts (its
/// unwind table or symbols), and a sweep of instruction lengths from that
/// start lands on `at` and reads a 5-byte instruction there. Code that is
/// no file's (JIT), or that no table covers, is not rewritten.
fn at_boundary(at: u64) -> bool {
    let Some(code) = mm::current().rewrite.code_at(at).cloned() else { return false };
    let file_off = at - code.start + code.offset;
    let Some(idx) = index_of(&code.node) else { return false };
    let Some(seg) = idx.vaddr_of(file_off) else { return false };
    let va = file_off - seg.offset + seg.vaddr;
    let Some(start) = idx.function_start(va).filter(|&s| s >= seg.vaddr) else { return false };
    let back = va - start;
    if back > MAX_SWEEP || back > at - code.start {
        return false;
    }
    let from = at - back;
    let len = back + 7;
    if !mm::user_access_ok(from, len, mm::PROT_READ | mm::PROT_EXEC) || !mm::populate(from, len) {
        return false;
    }
    // SAFETY: `[from, at + 7)` lies in readable mappings whose pages are
    // backed (checked above); nothing changes them while it is read.
    let bytes = unsafe { core::slice::from_raw_parts(from as *const u8, len as usize) };
    x86len::reaches(bytes, back as usize) && x86len::length(&bytes[back as usize..]) == Some(5)
}

/// The function index of a file, built once per file (and kept while the
/// file lives and is unchanged), whichever process maps it.
fn index_of(node: &NodeRef) -> Option<Rc<FnIndex>> {
    let (size, mtime) = (node.size(), node.meta.borrow().mtime);
    let cache = INDEXES.get();
    let same = |c: &Cached| core::ptr::eq(c.node.as_ptr(), Rc::as_ptr(node));
    if let Some(c) = cache.iter().find(|c| same(c) && c.size == size && c.mtime == mtime) {
        return c.index.clone();
    }
    cache.retain(|c| c.node.strong_count() > 0 && !same(c));
    let index = build_index(node).map(Rc::new);
    let cache = INDEXES.get();
    if cache.len() >= MAX_INDEXES {
        cache.remove(0);
    }
    cache.push(Cached { node: Rc::downgrade(node), size, mtime, index: index.clone() });
    index
}

fn build_index(node: &NodeRef) -> Option<FnIndex> {
    let NodeKind::File(data) = &node.kind else { return None };
    fnindex::build(&mut |off, buf| data.borrow_mut().read_at(off, buf).unwrap_or(0))
}

struct Cached {
    node: Weak<Node>,
    size: u64,
    mtime: (i64, u32),
    /// None: the file has no table (not looked at again).
    index: Option<Rc<FnIndex>>,
}

/// Files whose index is kept.
const MAX_INDEXES: usize = 32;
static INDEXES: Global<Vec<Cached>> = Global::new(Vec::new());

/// `[start, end)` now shows `node`'s bytes from `offset` on, privately
/// (a program's segment, a file mapping).
pub fn file_mapped(start: u64, end: u64, offset: u64, node: &NodeRef) {
    if *ENABLED.get() {
        mm::current().rewrite.code_mapped(start, end, offset, node);
    }
}

/// A private mmap of file `fd` from `offset` made `[at, at + len)`.
pub fn fd_mapped(at: u64, len: u64, fd: u64, offset: u64) {
    if !*ENABLED.get() {
        return;
    }
    let Ok(f) = crate::fds::get(fd) else { return };
    if let Some(node) = f.node() {
        mm::current().rewrite.code_mapped(at, at.saturating_add(mm::page_up(len)), offset, node);
    }
}

fn rel32(from: u64, to: u64) -> Option<[u8; 4]> {
    let d = to.wrapping_sub(from) as i64;
    i32::try_from(d).ok().map(i32::to_le_bytes)
}

/// A stub slot within reach of `at`, in an existing area or a new one.
fn stub_for(s: &mut Sites, at: u64) -> Option<(u64, u64)> {
    let fits = |a: &Area| a.used + STUB_LEN <= AREA_LEN && a.start < at && at - a.start <= REACH;
    let i = match s.areas.iter().position(fits) {
        Some(i) => i,
        None => {
            let start = mm::map_near_below(at, AREA_LEN, REACH)?;
            mm::copy_to_frames(start, &fast_entry().to_le_bytes());
            s.areas.push(Area { start, used: STUB_LEN });
            s.areas.len() - 1
        }
    };
    let a = &mut s.areas[i];
    let stub = a.start + a.used;
    a.used += STUB_LEN;
    Some((a.start, stub))
}

/// Rewrites the site at `at`; false if it was left alone.
fn patch(at: u64, imm: [u8; 4]) -> bool {
    let mut s = core::mem::replace(&mut mm::current().rewrite, Sites::new());
    let done = s.sites.len() < MAX_SITES && patch_in(&mut s, at, imm);
    // Mapping a new stub area may have recorded nothing meanwhile (the
    // record was out), so this puts back the only copy.
    mm::current().rewrite = s;
    if done {
        crate::stats::stat(|st| st.rewritten_sites += 1);
    }
    done
}

fn patch_in(s: &mut Sites, at: u64, imm: [u8; 4]) -> bool {
    let Some((area, stub)) = stub_for(s, at) else { return false };
    // mov eax, imm32; lea rcx, [rip + (at + 7)]; jmp [rip + area]; int3...
    let mut code = [0xccu8; STUB_LEN as usize];
    code[0] = 0xb8;
    code[1..5].copy_from_slice(&imm);
    code[5..8].copy_from_slice(&[0x48, 0x8d, 0x0d]);
    let (Some(back), Some(entry), Some(jump)) = (rel32(stub + 12, at + 7), rel32(stub + 18, area), rel32(at + 5, stub))
    else {
        return false; // (not reached: the area is within REACH below the site)
    };
    code[8..12].copy_from_slice(&back);
    code[12..14].copy_from_slice(&[0xff, 0x25]);
    code[14..18].copy_from_slice(&entry);
    mm::copy_to_frames(stub, &code);
    let jmp = [0xe9, jump[0], jump[1], jump[2], jump[3]];
    if mm::patch_code(at, &jmp, true) {
        s.sites.push(Site { at, imm, stub });
        return true;
    }
    if let Some(a) = s.areas.iter_mut().find(|a| a.start == area && a.used == stub - area + STUB_LEN) {
        // Not patched after all (writable or shared code): the slot is free again.
        a.used -= STUB_LEN;
    }
    false
}

/// Puts the original `mov eax, imm32` back at `site` if the bytes there
/// are still our jump (whatever the mapping is now).
fn restore(site: &Site) {
    let Some(jump) = rel32(site.at + 5, site.stub) else { return };
    let jmp = [0xe9, jump[0], jump[1], jump[2], jump[3]];
    if !mm::user_access_ok(site.at, 5, mm::PROT_READ) || !mm::populate(site.at, 5) {
        return;
    }
    // SAFETY: five bytes of a readable, backed mapping (checked above).
    let now = unsafe { core::ptr::read_unaligned(site.at as *const [u8; 5]) };
    if now == jmp {
        let i = site.imm;
        mm::patch_code(site.at, &[0xb8, i[0], i[1], i[2], i[3]], false);
    }
}

/// `[start, end)` is made writable or moves: its sites get their bytes back.
pub fn restore_range(start: u64, end: u64) {
    mm::current().rewrite.code_removed(start, end);
    with_sites(|s| {
        s.sites.retain(|site| {
            let hit = site.at < end && site.at + 5 > start;
            if hit {
                restore(site);
            }
            !hit
        })
    });
}

/// `[start, end)` is being unmapped or replaced: sites whose code is in
/// it are forgotten, sites whose stub area is in it get their bytes back.
pub fn range_unmapped(start: u64, end: u64) {
    mm::current().rewrite.code_removed(start, end);
    with_sites(|s| {
        s.sites.retain(|site| !(site.at < end && site.at + 5 > start));
        let gone = |a: &Area| a.start < end && a.start + AREA_LEN > start;
        if !s.areas.iter().any(gone) {
            return;
        }
        s.sites.retain(|site| {
            let lost = s.areas.iter().any(|a| gone(a) && a.start <= site.stub && site.stub < a.start + AREA_LEN);
            if lost {
                restore(site);
            }
            !lost
        });
        s.areas.retain(|a| !gone(a));
    });
}

/// Runs `f` on the current space's record (taken out meanwhile, so that
/// `f` may change mappings).
fn with_sites(f: impl FnOnce(&mut Sites)) {
    let rec = &mut mm::current().rewrite;
    if rec.sites.is_empty() && rec.areas.is_empty() {
        return;
    }
    let mut s = core::mem::replace(rec, Sites::new());
    f(&mut s);
    mm::current().rewrite = s;
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_syscall_is_slow_above_half_a_microsecond() {
        assert!(!super::slow(1000, 2_500_000), "0.4 µs");
        assert!(super::slow(1500, 2_500_000), "0.6 µs");
        assert!(super::slow(32_000, 2_500_000), "12.8 µs");
        assert!(!super::slow(1400, 0), "unknown rate: 3 GHz");
        assert!(!super::slow(u64::MAX, 1) || super::slow(u64::MAX, 1));
    }
}
