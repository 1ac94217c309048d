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

use crate::mm::{self, PAGE};
use crate::rt::{Frame, Global};
use crate::sites::{Area, Site, Sites, AREA_LEN};

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

/// Turns rewriting on or off (at start, from the boot flags).
pub fn set_enabled(on: bool) {
    *ENABLED.get() = on;
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
    if mm::current().rewrite.seen(at) >= HOT_AFTER {
        patch(at, imm);
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

fn patch(at: u64, imm: [u8; 4]) {
    let mut s = core::mem::replace(&mut mm::current().rewrite, Sites::new());
    if s.sites.len() < MAX_SITES {
        patch_in(&mut s, at, imm);
    }
    // Mapping a new stub area may have recorded nothing meanwhile (the
    // record was out), so this puts back the only copy.
    mm::current().rewrite = s;
}

fn patch_in(s: &mut Sites, at: u64, imm: [u8; 4]) {
    let Some((area, stub)) = stub_for(s, at) else { return };
    // mov eax, imm32; lea rcx, [rip + (at + 7)]; jmp [rip + area]; int3...
    let mut code = [0xccu8; STUB_LEN as usize];
    code[0] = 0xb8;
    code[1..5].copy_from_slice(&imm);
    code[5..8].copy_from_slice(&[0x48, 0x8d, 0x0d]);
    let (Some(back), Some(entry), Some(jump)) = (rel32(stub + 12, at + 7), rel32(stub + 18, area), rel32(at + 5, stub))
    else {
        return; // (not reached: the area is within REACH below the site)
    };
    code[8..12].copy_from_slice(&back);
    code[12..14].copy_from_slice(&[0xff, 0x25]);
    code[14..18].copy_from_slice(&entry);
    mm::copy_to_frames(stub, &code);
    let jmp = [0xe9, jump[0], jump[1], jump[2], jump[3]];
    if mm::patch_code(at, &jmp, true) {
        s.sites.push(Site { at, imm, stub });
    } else if let Some(a) = s.areas.iter_mut().find(|a| a.start == area && a.used == stub - area + STUB_LEN) {
        // Not patched after all (writable or shared code): the slot is free again.
        a.used -= STUB_LEN;
    }
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
