//! System-call site rewriting: where a `syscall` instruction costs the
//! host's hypervisor 1–20 µs, the same entry reached by a plain `jmp`
//! costs tens of cycles. So once a site has run a few times
//! (`HOT_AFTER`; the first site of a file waits for `INDEX_AFTER` calls,
//! as its file's tables must be read first), it is rewritten to jump to
//! the runtime. On unless the
//! host boots the runtime with `BOOT_FLAG_NO_REWRITE`; without
//! `BOOT_FLAG_REWRITE` (forced on) only where the boot found a raw
//! `syscall` slow (`time_syscall`).
//!
//! A site is rewritten only where the file mapped there says which
//! function holds it and a sweep of instruction lengths from that
//! function's start proves the bytes are the instructions they look like
//! (`sitefind.rs`): never bytes inside a longer instruction, never code
//! no file describes (JITs). Four forms:
//! - `mov eax, imm32; syscall` (`b8 imm32 0f 05`, the call's own number):
//!   the `mov` becomes `jmp rel32` to a stub that does what both did; the
//!   `syscall` after it stays, so anything that jumps to it, or re-runs
//!   it (a restarted call returns to RIP − 2), still works by the slow
//!   path.
//! - any other `syscall` (its number from a register, `xor eax, eax`):
//!   the two bytes become `jmp rel8` to 5 bytes of alignment padding
//!   between functions within reach (a gap several sites may share, one
//!   slot each), which become `jmp rel32` to the stub. The bytes after
//!   the `syscall` stay, so it returns where it did; a jump to the
//!   `syscall`, or a restart, takes the jump instead,
//!   which does what the `syscall` did. (Restoring a site leaves the
//!   padding's jump, so a task preempted on it still goes to the stub.)
//! - with no padding in reach: the instruction right before the
//!   `syscall`, if it has 5 bytes or more and does the same wherever it
//!   runs once copied (no control transfer; a RIP-relative operand gets
//!   its displacement moved: `x86len::movable`, `relocate`), is copied
//!   into the stub and its first 5 bytes become `jmp rel32` there. Its
//!   remaining bytes are never run (no instruction starts among them, so
//!   nothing jumps or returns there), and the `syscall` stays as in the
//!   first form. A fault in the moved instruction shows the program its
//!   own address (`moved_from`).
//! - only ahead of time (`eager.rs`, at an entry snapshot): a run of
//!   several short instructions before the site moves to the stub
//!   (`rewrite_run_ahead`).
//!
//! `cpuid` sites are rewritten the same ways (second, third and fourth
//! forms), ahead of time only: the hypervisor answers a `cpuid` without
//! the runtime seeing it. A `cpuid` leaves the guest on every KVM host,
//! so they are rewritten whatever a `syscall` costs, unless
//! `BOOT_FLAG_NO_REWRITE` (`BOOT_FLAG_REWRITE_CPUID_ONLY`: only they).
//! Their stubs set RBX (one of `cpuid`'s outputs) to the way back and
//! jump to `cpuid_fast_entry` (`cpuid.rs`).
//!
//! The stub sets RCX to the address after the `syscall` and jumps through
//! a pointer to `syscall_fast_entry` (main.rs), which moves to the
//! runtime stack before it touches memory (the red zone below the
//! program's RSP is left alone), puts RFLAGS in R11 as `syscall` does,
//! and joins the ordinary entry: the dispatcher, the table and the stats
//! see every call as before.
//!
//! Only private, executable, non-writable code is rewritten (file-cache
//! frames get a private copy first; shared mappings are left alone), and
//! only where a stub area is within ±2 GiB. Stub areas are mapped below
//! the code they serve. Code made writable again (mprotect) gets its
//! original bytes back, and so does code about to move (mremap) or be
//! unmapped; an unmapped stub area takes its sites' rewrites with it.
//!
//! The record of sites and areas (`sites.rs`) lives in the address space:
//! a fork copies it with the pages, an execve starts empty.

use crate::mm::{self, PAGE};
use crate::rt::{Frame, Global};
use crate::sitefind;
use crate::sites::{Area, Site, Sites, AREA_LEN, REFUSED};
use crate::vfs::NodeRef;

/// System-call sites are rewritten (lazily, and ahead at an entry).
static ENABLED: Global<bool> = Global::new(false);
/// `cpuid` sites are rewritten (ahead, at an entry): on every KVM host a
/// `cpuid` leaves the guest, so unless rewriting is forced off.
static CPUID_ON: Global<bool> = Global::new(false);

/// Set by `syscall_fast_entry` (a call that came through a stub); the
/// dispatcher clears it.
#[no_mangle]
pub static mut REWRITE_FAST_ENTRY: u8 = 0;

/// Bytes of one stub (an area's first slot holds the address of the fast
/// entry).
const STUB_LEN: u64 = 32;
/// Most bytes of the program's instructions a stub runs before its own
/// 13 (the third and fourth forms' moved instructions).
pub const MAX_MOVED: usize = STUB_LEN as usize - 13;
/// How far below a site its stub area may lie (a rel32 reaches 2 GiB).
const REACH: u64 = (1 << 31) - 2 * AREA_LEN;
/// A site is rewritten at its this-many-th slow call: rewriting costs a
/// page copy and a TLB flush (tens of µs) when the code is the file
/// cache's, and in a run from a snapshot the reset then restores that
/// page too, so a site called only a few times loses: at 2, a warm
/// pooled busybox `true` (about 20 calls) took 760 µs against 580 µs
/// with rewriting off; at 4 both are ~600 µs. (A refused site is not
/// looked at again until its code changes.)
const HOT_AFTER: u32 = 4;
/// The first site of a file must make this many slow calls before the
/// file's unwind table and symbols are read (once per file, ~0.1–0.5 ms
/// for a libc: more than a site called only a few times saves).
const INDEX_AFTER: u32 = 8;
/// rt_sigreturn, whose sites are never rewritten.
const RT_SIGRETURN: u64 = 15;
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

/// Times up to 4 raw `syscall` round trips (the entry returns at once
/// while `REWRITE_PROBE` is set) with the TSC: slow if each one is (the
/// first fast one ends it).
#[cfg(not(test))]
pub fn time_syscall(tsc_khz: u64) {
    // SAFETY: one vCPU; the entry reads the flag.
    unsafe { REWRITE_PROBE = 1 };
    let mut best = u64::MAX;
    for _ in 0..4 {
        // SAFETY: rdtsc and a `syscall` the entry answers by returning to
        // RCX with R11's flags (RAX clobbered); it touches no memory of ours.
        let cycles = unsafe {
            let t0 = core::arch::x86_64::_rdtsc();
            core::arch::asm!("syscall", inout("rax") 0u64 => _, out("rcx") _, out("r11") _);
            core::arch::x86_64::_rdtsc().wrapping_sub(t0)
        };
        best = best.min(cycles);
        if !slow(best, tsc_khz) {
            break;
        }
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
/// forced off, `cpuid` only, or system calls where a `syscall` is slow
/// and `cpuid` always).
pub fn set_enabled(flags: u32) {
    use hvsandbox_abi as abi;
    let off = flags & abi::BOOT_FLAG_NO_REWRITE != 0;
    let cpuid_only = flags & abi::BOOT_FLAG_REWRITE_CPUID_ONLY != 0;
    *ENABLED.get() = !off && !cpuid_only && (flags & abi::BOOT_FLAG_REWRITE != 0 || *SLOW_SYSCALL.get());
    *CPUID_ON.get() = !off;
    mm::on_code_change(range_unmapped, restore_range);
}

/// Whether any sites are rewritten in this VM (code mappings are then
/// recorded, and an entry snapshot sweeps the program).
pub fn any_enabled() -> bool {
    *ENABLED.get() || *CPUID_ON.get()
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
    if fast == 0 {
        crate::stats::stat(|st| st.slow_syscalls += 1);
    }
    if fast != 0 || !*ENABLED.get() {
        return;
    }
    let Some(sc) = f.rip.checked_sub(2) else { return };
    note_slow(sc, f.rax);
    let n = mm::current().rewrite.seen(sc);
    if n == REFUSED || n < HOT_AFTER {
        return;
    }
    match rewrite_site(sc, f.rax, n >= INDEX_AFTER) {
        Ok(true) | Err(sitefind::NotYet) => {}
        Ok(false) => mm::current().rewrite.refuse(sc),
    }
}

/// Rewrites the `syscall` at `sc` (the call it just made was number
/// `nr`): its `mov eax, imm32` if one comes right before it, else the
/// `syscall` itself with padding nearby. False if it was left alone;
/// `NotYet` if that needs its file's table read first, and `build` says
/// the site is not hot enough for that yet.
fn rewrite_site(sc: u64, nr: u64, build: bool) -> Result<bool, sitefind::NotYet> {
    if nr == RT_SIGRETURN {
        // Unwinders (libgcc, debuggers) know a signal frame by the bytes
        // of its restorer, `mov rax, 15; syscall`: they stay.
        return Ok(false);
    }
    let Some(place) = sitefind::function_of(sc, build)? else { return Ok(false) };
    Ok(rewrite_in(&place, sc, nr))
}

fn rewrite_in(place: &sitefind::Place, sc: u64, nr: u64) -> bool {
    if let Some(at) = sc.checked_sub(5).filter(|&at| at >= place.from && (at & (PAGE - 1)) <= PAGE - 5) {
        if place.instruction_at(at, 5) {
            // SAFETY: an instruction of a readable, backed mapping (checked
            // by instruction_at), within one page.
            let b = unsafe { core::ptr::read_unaligned(at as *const [u8; 5]) };
            if b[0] == 0xb8 && u64::from(u32::from_le_bytes([b[1], b[2], b[3], b[4]])) == nr {
                return patch(at, 5, b, &b, None, Kind::Syscall);
            }
        }
    }
    rewrite_two_byte(place, sc, Kind::Syscall)
}

/// The second and third forms, for the two-byte instruction at `sc` (a
/// `syscall` or a `cpuid`, per `kind`).
fn rewrite_two_byte(place: &sitefind::Place, sc: u64, kind: Kind) -> bool {
    if !place.instruction_at(sc, 2) {
        return false;
    }
    let taken: alloc::vec::Vec<_> = mm::current().rewrite.sites.iter().filter_map(|s| s.pad).collect();
    // (The two bytes become a jump only within one page.)
    let pad = if (sc & (PAGE - 1)) <= PAGE - 2 { place.padding_near(sc + 2, &taken) } else { None };
    if let Some(pad) = pad {
        // SAFETY: five bytes of padding in a readable, backed mapping,
        // within one page (checked by padding_near).
        let pad_orig = unsafe { core::ptr::read_unaligned(pad as *const [u8; 5]) };
        let [a, b] = kind.opcode();
        return patch(sc, 2, [a, b, 0, 0, 0], &[], Some((pad, pad_orig)), kind);
    }
    // No padding in reach: the instruction right before the site, if it
    // has 5 bytes or more and runs the same anywhere, moves to the stub
    // and its first 5 bytes become the jump there. Its other bytes are
    // never run (no instruction starts among them); the site's own
    // instruction stays for jumps to it and restarts.
    let Some((at, moved)) = place.instruction_before(sc) else { return false };
    let n = moved.len();
    if n < 5
        || !patchable_span(at, sc + 2)
        || crate::x86len::movable(moved).map(|m| m.0) != Some(n)
        || loads_rt_sigreturn(moved)
    {
        return false;
    }
    let orig = [moved[0], moved[1], moved[2], moved[3], moved[4]];
    patch(at, 5, orig, moved, None, kind)
}

/// Whether a jump may replace the first 5 bytes of the instructions in
/// `[at, end)` that a stub runs in their place (the third and fourth
/// forms): those bytes lie in one page, and all of the span in code
/// that cannot change unseen (private, executable, not writable), as a
/// change to any of it (`mprotect`, a mapping over it) puts the site's
/// bytes back. A span may cross into the next page: glibc 2.36 has a
/// `syscall` across one (`__open64_nocancel`, run ~28 times by every
/// process's `setlocale`).
fn patchable_span(at: u64, end: u64) -> bool {
    (at & (PAGE - 1)) + 5 <= PAGE && end > at && mm::private_code(at) && mm::private_code(end - 1)
}

/// What a rewritten site stands for: its stub enters the runtime as
/// that instruction would.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `syscall`: the stub sets RCX to the way back and jumps to
    /// `syscall_fast_entry` (the area's first pointer).
    Syscall,
    /// `cpuid`: the stub sets RBX to the way back and jumps to
    /// `cpuid_fast_entry` (the area's second pointer; see `cpuid.rs`).
    Cpuid,
}

impl Kind {
    fn opcode(self) -> [u8; 2] {
        match self {
            Kind::Syscall => [0x0f, 0x05],
            Kind::Cpuid => [0x0f, 0xa2],
        }
    }

    /// `lea r, [rip + rel32]`'s first three bytes (RCX or RBX).
    fn lea(self) -> [u8; 3] {
        match self {
            Kind::Syscall => [0x48, 0x8d, 0x0d],
            Kind::Cpuid => [0x48, 0x8d, 0x1d],
        }
    }

    /// Where in a stub area the entry's address is.
    fn slot(self) -> u64 {
        match self {
            Kind::Syscall => 0,
            Kind::Cpuid => 8,
        }
    }
}

/// Whether `ins` is `mov $15, %eax` or `mov $15, %rax`: a signal
/// restorer's bytes, which unwinders look for.
fn loads_rt_sigreturn(ins: &[u8]) -> bool {
    ins == [0xb8, 15, 0, 0, 0] || ins == [0x48, 0xc7, 0xc0, 15, 0, 0, 0]
}

/// Rewrites the `syscall` at `sc` before it has run (`eager.rs`): `nr` is
/// the number a `mov eax, imm32` right before it loads, if one does (the
/// first form); without one, the second form (padding). Never a site
/// that loads rt_sigreturn's number. False if it was left alone.
pub fn rewrite_ahead(sc: u64, nr: Option<u64>) -> bool {
    if !*ENABLED.get() || nr == Some(RT_SIGRETURN) {
        return false;
    }
    let Ok(Some(place)) = sitefind::function_of(sc, true) else { return false };
    // No number a `u32` immediate holds: only the second form matches.
    rewrite_in(&place, sc, nr.unwrap_or(u64::MAX))
}

/// Rewrites the `cpuid` at `site` before it has run (`eager.rs`), by the
/// second or third form: the runtime never sees a `cpuid` run (the
/// hypervisor answers it), so its sites are found only ahead. False if
/// it was left alone.
/// Whether `cpuid` sites are rewritten (see `CPUID_ON`).
pub fn cpuid_enabled() -> bool {
    *CPUID_ON.get()
}

pub fn rewrite_cpuid_ahead(site: u64) -> bool {
    if !*CPUID_ON.get() {
        return false;
    }
    let Ok(Some(place)) = sitefind::function_of(site, true) else { return false };
    rewrite_two_byte(&place, site, Kind::Cpuid)
}

/// The fourth form, only ahead of time (`eager.rs`, at the entry, before
/// anything of the program has run): the run of two or more
/// instructions from `start` to the `syscall` or `cpuid` at `site` (5 to
/// 19 bytes, each movable, in one page) moves to the stub, and its
/// first 5 bytes become the jump there. Done at run time this could
/// strand a task stopped between two of them (preempted, or in a signal
/// frame) inside the new jump; ahead of time none is, and the caller has
/// made sure no jump of the program lands inside the run. The site's own
/// instruction stays for jumps to it. False if it was left alone.
pub fn rewrite_run_ahead(start: u64, site: u64, cpuid: bool) -> bool {
    if !*(if cpuid { CPUID_ON.get() } else { ENABLED.get() }) {
        return false;
    }
    let Some(len) = site.checked_sub(start).filter(|n| (5..=MAX_MOVED as u64).contains(n)) else { return false };
    if !patchable_span(start, site + 2) {
        return false;
    }
    let Ok(Some(place)) = sitefind::function_of(site, true) else { return false };
    if sitefind::rewritten(start, site + 2) {
        // (Part of an earlier site: its bytes are a jump now.)
        return false;
    }
    let Some(moved) = sitefind::code_bytes(start, len) else { return false };
    let Some((first, _)) = crate::x86len::movable(moved) else { return false };
    if start < place.from || !place.instruction_at(start, first) || !place.instruction_at(site, 2) {
        return false;
    }
    let mut i = 0;
    while i < moved.len() {
        match crate::x86len::movable(&moved[i..]) {
            Some((n, _)) if !loads_rt_sigreturn(&moved[i..i + n]) => i += n,
            _ => return false,
        }
    }
    let kind = if cpuid { Kind::Cpuid } else { Kind::Syscall };
    // SAFETY: `site` holds a 2-byte instruction of a readable, backed
    // mapping (checked by instruction_at).
    if unsafe { core::ptr::read_unaligned(site as *const [u8; 2]) } != kind.opcode() {
        return false;
    }
    let orig = [moved[0], moved[1], moved[2], moved[3], moved[4]];
    patch(start, 5, orig, moved, None, kind)
}

/// Where the program's own code has the instruction a stub starts with,
/// for a fault at `rip` in it: a fault in an instruction the stub runs in
/// its place (the third form) shows the program the address it knows,
/// and a handler that returns runs the stub again.
pub fn moved_from(rip: u64) -> Option<u64> {
    let sites = &mm::current().rewrite.sites;
    let s = sites.iter().find(|s| s.pad.is_none() && s.stub <= rip && rip - s.stub < u64::from(s.moved))?;
    Some(s.at + (rip - s.stub))
}

/// `[start, end)` now shows `node`'s bytes from `offset` on, privately
/// (a program's segment, a file mapping).
pub fn file_mapped(start: u64, end: u64, offset: u64, node: &NodeRef) {
    if any_enabled() {
        mm::current().rewrite.code_mapped(start, end, offset, node.clone());
    }
}

/// The `syscall` sites of a file that made slow calls in this VM's
/// processes, as (file offset, the call's number): a later process of the
/// same file has them rewritten before its code runs
/// ([`rewrite_seen_ahead`]). A short-lived process's sites make one to
/// three calls each, too few for the lazy path (`HOT_AFTER`), and a
/// shell's children are such processes, ~24 slow calls a start.
struct SlowSites {
    file: alloc::rc::Weak<crate::vfs::Node>,
    sites: alloc::vec::Vec<(u64, u32)>,
}

static SLOW_SITES: Global<alloc::vec::Vec<SlowSites>> = Global::new(alloc::vec::Vec::new());
/// Files remembered (beyond, the oldest is forgotten).
const SLOW_FILES: usize = 32;
/// Sites remembered of one file.
const SLOW_PER_FILE: usize = 512;

/// Where `node`'s entry is in `files`.
fn slow_sites_of(files: &[SlowSites], node: &NodeRef) -> Option<usize> {
    files.iter().position(|f| core::ptr::eq(f.file.as_ptr(), alloc::rc::Rc::as_ptr(node)))
}

/// A slow call was made from the `syscall` at `sc` with number `nr`:
/// remembered with its file, if a file mapping holds it.
fn note_slow(sc: u64, nr: u64) {
    if nr == RT_SIGRETURN {
        return;
    }
    let Some((file, off)) = mm::current().rewrite.code_at(sc).map(|c| (c.file.clone(), c.offset + (sc - c.start)))
    else {
        return;
    };
    let Ok(node) = file.downcast::<crate::vfs::Node>() else { return };
    let files = SLOW_SITES.get();
    let i = match slow_sites_of(files, &node) {
        Some(i) => i,
        None => {
            files.retain(|f| f.file.strong_count() > 0);
            if files.len() >= SLOW_FILES {
                files.remove(0);
            }
            if files.try_reserve(1).is_err() {
                return;
            }
            files.push(SlowSites { file: alloc::rc::Rc::downgrade(&node), sites: alloc::vec::Vec::new() });
            files.len() - 1
        }
    };
    let sites = &mut files[i].sites;
    if sites.len() < SLOW_PER_FILE && !sites.iter().any(|s| s.0 == off) && sites.try_reserve(1).is_ok() {
        sites.push((off, nr as u32));
    }
}

/// Rewrites, before any of it runs, the `syscall` sites of `node` that
/// made slow calls in earlier processes, where `maps` (start, end, file
/// offset) show its code in the current one: at an execve for the
/// program and its loader, at an mmap for a library. Each must still be
/// a `syscall` instruction (the file may have changed) and is proven and
/// rewritten as the lazy path would. The caller batches the flush.
/// Returns how many were rewritten.
pub fn rewrite_seen_ahead(node: &NodeRef, maps: &[(u64, u64, u64)]) -> usize {
    if !*ENABLED.get() {
        return 0;
    }
    let files = SLOW_SITES.get();
    let Some(i) = slow_sites_of(files, node) else { return 0 };
    let sites = files[i].sites.clone();
    let mut done = 0;
    for (off, nr) in sites {
        let Some(sc) = Sites::va_of(maps, off, 2) else { continue };
        if sitefind::original_bytes(sc, 2).as_deref() == Some(&[0x0f, 0x05][..])
            && rewrite_ahead(sc, Some(u64::from(nr)))
        {
            done += 1;
        }
    }
    done
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
            let mut entries = [0u8; 16];
            entries[..8].copy_from_slice(&fast_entry().to_le_bytes());
            entries[8..].copy_from_slice(&crate::cpuid::fast_entry().to_le_bytes());
            if !mm::copy_to_frames(start, &entries) {
                return None;
            }
            s.areas.push(Area { start, used: STUB_LEN });
            s.areas.len() - 1
        }
    };
    let a = &mut s.areas[i];
    let stub = a.start + a.used;
    a.used += STUB_LEN;
    Some((a.start, stub))
}

/// Rewrites the site at `at` (see `Site`): `moved` is the instruction at
/// `at` its stub runs first (empty: the `syscall` or `cpuid` itself is
/// the site); false if it was left alone.
fn patch(at: u64, len: u8, orig: [u8; 5], moved: &[u8], pad: Option<(u64, [u8; 5])>, kind: Kind) -> bool {
    let mut s = core::mem::replace(&mut mm::current().rewrite, Sites::new());
    let site = Site { at, len, orig, stub: 0, pad, moved: moved.len() as u8 };
    let done = s.sites.len() < MAX_SITES && patch_in(&mut s, site, moved, kind);
    // Mapping a new stub area may have recorded nothing meanwhile (the
    // record was out), so this puts back the only copy.
    mm::current().rewrite = s;
    if done {
        crate::stats::stat(|st| st.rewritten_sites += 1);
    }
    done
}

/// The bytes of `jmp rel32` at `from` to `to`.
fn jmp32(from: u64, to: u64) -> Option<[u8; 5]> {
    let r = rel32(from + 5, to)?;
    Some([0xe9, r[0], r[1], r[2], r[3]])
}

/// What the site's bytes are once rewritten: a jump to its stub, or (a
/// `syscall` with padding) a jump to the padding, which jumps to the stub.
fn rewritten(site: &Site) -> Option<([u8; 5], Option<[u8; 5]>)> {
    match site.pad {
        None => Some((jmp32(site.at, site.stub)?, None)),
        Some((pad, _)) => {
            let d = i8::try_from(pad.wrapping_sub(site.at + 2) as i64).ok()?;
            Some(([0xeb, d as u8, 0, 0, 0], Some(jmp32(pad, site.stub)?)))
        }
    }
}

fn patch_in(s: &mut Sites, mut site: Site, moved: &[u8], kind: Kind) -> bool {
    // The moved instruction, then 13 bytes of ours.
    if moved.len() > MAX_MOVED {
        return false;
    }
    let near = site.pad.map_or(site.at, |(p, _)| p);
    let Some((area, stub)) = stub_for(s, near) else { return false };
    site.stub = stub;
    // [the moved instruction;] lea rcx|rbx, [rip + (site + 2)];
    // jmp [rip + area's entry]; int3...
    let mut code = [0xccu8; STUB_LEN as usize];
    let i = moved.len();
    code[..i].copy_from_slice(moved);
    let back_to = if i > 0 { site.at + i as u64 + 2 } else { site.at + u64::from(site.len) };
    code[i..i + 3].copy_from_slice(&kind.lea());
    let ok = (|| {
        // A RIP-relative operand of a moved instruction must point where
        // it did.
        if !crate::x86len::relocate(&mut code[..i], site.at, stub) {
            return None;
        }
        code[i + 3..i + 7].copy_from_slice(&rel32(stub + i as u64 + 7, back_to)?);
        code[i + 7..i + 9].copy_from_slice(&[0xff, 0x25]);
        code[i + 9..i + 13].copy_from_slice(&rel32(stub + i as u64 + 13, area + kind.slot())?);
        let (bytes, pad_jmp) = rewritten(&site)?;
        if !mm::copy_to_frames(stub, &code) {
            return None;
        }
        if let (Some((pad, orig)), Some(j)) = (site.pad, pad_jmp) {
            // The padding first: nothing runs it until the site jumps there.
            if !mm::patch_code(pad, &j, true) {
                return None;
            }
            if !mm::patch_code(site.at, &bytes[..2], true) {
                mm::patch_code(pad, &orig, false);
                return None;
            }
        } else if !mm::patch_code(site.at, &bytes, true) {
            return None;
        }
        Some(())
    })()
    .is_some();
    if ok {
        s.sites.push(site);
        return true;
    }
    if let Some(a) = s.areas.iter_mut().find(|a| a.start == area && a.used == stub - area + STUB_LEN) {
        // Not patched after all (writable or shared code): the slot is free again.
        a.used -= STUB_LEN;
    }
    false
}

/// Reads `N` bytes of the program at `va` if they are readable and backed.
fn read_code<const N: usize>(va: u64) -> Option<[u8; N]> {
    if !mm::user_access_ok(va, N as u64, mm::PROT_READ) || !mm::populate(va, N as u64) {
        return None;
    }
    // SAFETY: N bytes of a readable, backed mapping (checked above).
    Some(unsafe { core::ptr::read_unaligned(va as *const [u8; N]) })
}

/// Puts the original bytes back at `site` if they are still ours
/// (whatever the mapping is now). The padding keeps its jump to the stub:
/// a task stopped right there (preempted) still goes where it went.
fn restore(site: &Site) {
    let Some((bytes, _)) = rewritten(site) else { return };
    let n = usize::from(site.len);
    let ours = match n {
        5 => read_code::<5>(site.at) == Some(bytes),
        _ => read_code::<2>(site.at) == Some([bytes[0], bytes[1]]),
    };
    if ours {
        mm::patch_code(site.at, &site.orig[..n], false);
    }
}

/// `[start, end)` is made writable or moves: its sites get their bytes back.
pub fn restore_range(start: u64, end: u64) {
    if !any_enabled() {
        return;
    }
    mm::current().rewrite.code_removed(start, end);
    with_sites(|s| {
        s.sites.retain(|site| {
            let hit = site.touches(start, end);
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
    if !any_enabled() {
        return;
    }
    // (What stays mapped of a site's code gets its bytes back.)
    restore_range(start, end);
    with_sites(|s| {
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
