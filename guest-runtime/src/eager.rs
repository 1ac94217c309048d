//! Eager system-call and `cpuid` site rewriting for an entry snapshot:
//! at the entry nothing of the program has run, so the lazy rewriter
//! (`rewrite.rs`, a site at its fourth slow call) would leave every run
//! from the snapshot to find its sites slow again (and the reset would
//! undo what it rewrote). Here, before the snapshot is taken, every
//! function the program file's table names (`fnindex.rs`) is swept with
//! the length decoder (`x86len.rs`) and each `syscall` found is
//! rewritten the way the lazy path would (`rewrite::rewrite_ahead`,
//! which proves the site again from its function's start): the snapshot
//! then holds the patched pages, so resets keep them. Each `cpuid` found
//! is rewritten too (`rewrite::rewrite_cpuid_ahead`, see `cpuid.rs`):
//! the hypervisor answers those without the runtime seeing them, so this
//! sweep is the only way to find them.
//!
//! A site those forms leave (short instructions before it, no padding in
//! reach) gets a fourth form that only this moment allows: the run of
//! instructions right before it moves to the stub (`move_runs`,
//! `rewrite::rewrite_run_ahead`). Moving several instructions is safe
//! only where no task can be stopped between them and no jump lands
//! among them: at the entry none has run, and the sweep notes where every
//! direct jump of the program lands (functions with an indirect jump
//! keep their sites as they are).
//!
//! Only the program's own file (its private code mappings at the entry;
//! a dynamic program's libraries are not mapped yet). A `syscall` right
//! after `mov eax, 15` / `mov rax, 15` (rt_sigreturn: unwinders know a
//! signal restorer by those bytes) is left alone; where the number comes
//! from elsewhere it cannot be known here, and such a site (the second
//! form, a jump to padding) is rewritten unless the instruction before it
//! loads 15. The work is bounded: functions, bytes swept, sites and the
//! pages they lie on.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::mm::PAGE;
use crate::sitefind;
use crate::vfs::NodeRef;
use crate::x86len;

/// Most bytes of one function swept (the lazy path's limit too).
const MAX_FUNCTION: u64 = 64 << 10;
/// Most bytes swept in all (bounds the once-per-snapshot cost for a
/// large program; busybox's functions are well under 1 MiB).
const MAX_SWEPT: u64 = 8 << 20;
/// Most sites rewritten, and most distinct pages they lie on (each page
/// of the file cache is copied once it is patched).
const MAX_SITES: usize = 2048;
const MAX_PAGES: usize = 256;

/// The rt_sigreturn number.
const RT_SIGRETURN: u32 = 15;

/// Rewrites the `syscall` and `cpuid` sites of `node`'s code mapped in
/// the current address space (the program or its loader at the entry).
/// Its table is read now, so every run from the snapshot finds it read.
/// Returns how many.
pub fn rewrite_program(node: &NodeRef) -> usize {
    if !crate::rewrite::any_enabled() {
        return 0;
    }
    let Some(idx) = sitefind::index(node) else { return 0 };
    // (start, end, file offset) of the file's mappings.
    let maps = crate::mm::current().rewrite.mappings_of(Rc::as_ptr(node) as *const u8);
    // The functions swept, in memory: (start, length).
    let mut functions = Vec::new();
    let mut swept = 0;
    for &(fstart, fend) in idx.ranges() {
        let Some(len) = fend.checked_sub(fstart).filter(|&n| n > 0 && n <= MAX_FUNCTION) else { continue };
        let Some(seg) = idx.segments.iter().find(|s| fstart >= s.vaddr && fend - s.vaddr <= s.filesz) else {
            continue;
        };
        let off = fstart - seg.vaddr + seg.offset;
        let Some(&(mstart, _, moff)) = maps.iter().find(|m| off >= m.2 && off - m.2 + len <= m.1 - m.0) else {
            continue;
        };
        let at = mstart + (off - moff);
        if !crate::mm::user_access_ok(at, len, crate::mm::PROT_EXEC) || swept + len > MAX_SWEPT {
            continue;
        }
        if functions.try_reserve(1).is_err() {
            break;
        }
        swept += len;
        functions.push((at, len));
    }
    let mut budget = Budget { sites: 0, pages: Vec::new(), last_site: 0 };
    // Sites the first three forms left, with the run of instructions
    // before them that could move instead (the fourth form), and where
    // the program's direct jumps land.
    let mut runs: Vec<(u64, Found)> = Vec::new();
    let mut targets = Targets::over(&functions);
    for &(at, len) in &functions {
        let (sites, sweep) = sites_in(at, len, &mut targets);
        if !sweep.whole {
            // Where the rest of this function jumps is not known: no run
            // anywhere may move.
            targets = None;
        }
        for found in sites {
            let sc = found.at;
            if sc <= budget.last_site {
                // Looked at already (ranges overlap): rewritten, its
                // bytes now differ, or refused.
                continue;
            }
            if !budget.admit(sc) {
                return budget.sites;
            }
            let done = match found.what {
                What::Syscall(nr) => crate::rewrite::rewrite_ahead(sc, nr),
                What::Cpuid => crate::rewrite::rewrite_cpuid_ahead(sc),
            };
            if done {
                budget.sites += 1;
            } else if let Some(run) = found.run.filter(|_| !sweep.indirect) {
                // (A function with a jump table may jump anywhere in itself.)
                if runs.try_reserve(1).is_ok() {
                    runs.push((run, found));
                }
            }
        }
    }
    budget.sites + targets.map_or(0, |t| move_runs(&t, &runs))
}

/// The fourth form for the sites in `runs` (each with the start of the
/// run of instructions before it): nothing of the program has run yet,
/// so no task is stopped inside a run, and only a jump could land inside
/// one (between its first instruction and the site), where the jump to
/// the stub now is. So a run any direct jump, conditional jump or call
/// of the swept functions lands inside (`targets`) stays as it is.
/// (Functions with an indirect jump were left out by the caller, and no
/// run moves if a function could not be swept to its end; code no table
/// describes is not swept, and jumps into the middle of a compiled
/// function from such code are not expected.)
fn move_runs(targets: &Targets, runs: &[(u64, Found)]) -> usize {
    let mut done = 0;
    for (start, found) in runs {
        if !targets.any_inside(*start, found.at)
            && crate::rewrite::rewrite_run_ahead(*start, found.at, found.what == What::Cpuid)
        {
            done += 1;
        }
    }
    done
}

/// Where the swept functions' direct jumps, conditional jumps and calls
/// land: one bit per byte of the span the functions cover.
struct Targets {
    lo: u64,
    bits: Vec<u64>,
}

/// Largest span of code the fourth form looks at (a bitmap of 2 MiB).
const MAX_TARGET_SPAN: u64 = 16 << 20;

impl Targets {
    /// The bitmap over `functions`' span (None: too wide, or no memory;
    /// then no run is moved).
    fn over(functions: &[(u64, u64)]) -> Option<Targets> {
        let lo = functions.iter().map(|f| f.0).min()?;
        let hi = functions.iter().map(|f| f.0 + f.1).max()?;
        if hi - lo > MAX_TARGET_SPAN {
            return None;
        }
        let words = usize::try_from((hi - lo).div_ceil(64)).ok()?;
        let mut bits = Vec::new();
        bits.try_reserve_exact(words).ok()?;
        bits.resize(words, 0);
        Some(Targets { lo, bits })
    }

    /// The word and bit of address `t` (None outside the span).
    fn bit(&self, t: u64) -> Option<(usize, u64)> {
        let i = usize::try_from(t.checked_sub(self.lo)?).ok()?;
        (i / 64 < self.bits.len()).then_some((i / 64, 1 << (i % 64)))
    }

    fn mark(&mut self, t: u64) {
        if let Some((w, b)) = self.bit(t) {
            self.bits[w] |= b;
        }
    }

    /// Whether a jump lands in `(start, end)`.
    fn any_inside(&self, start: u64, end: u64) -> bool {
        (start + 1..end).any(|t| self.bit(t).is_some_and(|(w, b)| self.bits[w] & b != 0))
    }
}

struct Budget {
    sites: usize,
    /// Pages holding rewritten sites (sorted).
    pages: Vec<u64>,
    /// The highest site looked at (overlapping ranges are swept again).
    last_site: u64,
}

impl Budget {
    /// Whether the site at `sc` (not looked at yet) may be rewritten
    /// within the limits; counts its page.
    fn admit(&mut self, sc: u64) -> bool {
        self.last_site = sc;
        let page = sc & !(PAGE - 1);
        if let Err(i) = self.pages.binary_search(&page) {
            if self.pages.len() >= MAX_PAGES || self.pages.try_reserve(1).is_err() {
                return false;
            }
            self.pages.insert(i, page);
        }
        self.sites < MAX_SITES
    }
}

/// What a site a sweep found is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    /// A `syscall`, with the number a `mov eax, imm32` right before it
    /// loads (None: not such a `mov`).
    Syscall(Option<u64>),
    /// A `cpuid`.
    Cpuid,
}

/// A site a sweep found.
#[derive(Clone, Copy, Debug)]
struct Found {
    at: u64,
    what: What,
    /// Where the shortest run of two or more instructions right before
    /// it starts that has 5 bytes or more, all movable (the fourth form's
    /// candidate).
    run: Option<u64>,
}

/// The `syscall` and `cpuid` instructions a sweep of `len` bytes from
/// `at` (a function's start) meets, and what it learnt of the function's
/// jumps; where its direct jumps land goes into `targets`. `syscall`s
/// after a load of rt_sigreturn's number are left out. The sweep ends at
/// the first byte it cannot decode.
fn sites_in(at: u64, len: u64, targets: &mut Option<Targets>) -> (Vec<Found>, Sweep) {
    let mut out = Vec::new();
    let mut indirect = false;
    let Some(code) = sitefind::original_bytes(at, len) else { return (out, Sweep { indirect, whole: false }) };
    let code = &code[..];
    let mut i = 0;
    // The last few instructions: (offset, length), newest last.
    let mut recent: [(usize, usize); 4] = [(0, 0); 4];
    let mut seen = 0usize;
    while i < code.len() {
        let Some(n) = x86len::length(&code[i..]) else { break };
        let ins = &code[i..i + n];
        match x86len::jump(ins, at + i as u64) {
            x86len::Jump::Indirect => indirect = true,
            x86len::Jump::To(t) => {
                if let Some(targets) = targets {
                    targets.mark(t);
                }
            }
            x86len::Jump::None => {}
        }
        let prev: &[u8] = if seen > 0 {
            let (o, l) = recent[3];
            &code[o..o + l]
        } else {
            &[]
        };
        let what = if ins == [0x0f, 0x05] && loaded_number(prev) != Some(Some(RT_SIGRETURN)) {
            Some(What::Syscall(loaded_number(prev).flatten().filter(|_| prev.first() == Some(&0xb8)).map(u64::from)))
        } else if ins == [0x0f, 0xa2] {
            Some(What::Cpuid)
        } else {
            None
        };
        if let Some(what) = what {
            if out.try_reserve(1).is_ok() {
                let run = run_before(code, &recent[4 - seen.min(4)..], i).map(|o| at + o as u64);
                out.push(Found { at: at + i as u64, what, run });
            }
        }
        recent.rotate_left(1);
        recent[3] = (i, n);
        seen += 1;
        i += n;
    }
    (out, Sweep { indirect, whole: i == code.len() })
}

/// What a sweep of one function learnt of its jumps.
#[derive(Clone, Copy)]
struct Sweep {
    /// It has an indirect jump (a jump table, a computed goto).
    indirect: bool,
    /// Every byte decoded (else where the rest jumps is not known).
    whole: bool,
}

/// The start of the shortest run of two or more of the `recent`
/// instructions (oldest first, the last ending at `site`) that has 5
/// bytes or more and at most `rewrite::MAX_MOVED`, each movable and none
/// a load of rt_sigreturn's number (`rewrite::rewrite_run_ahead` checks
/// the rest: one page, no rewritten bytes).
fn run_before(code: &[u8], recent: &[(usize, usize)], site: usize) -> Option<usize> {
    let mut start = site;
    for (k, &(o, l)) in recent.iter().rev().enumerate() {
        let ins = &code[o..o + l];
        if o + l != start
            || x86len::movable(ins).map(|m| m.0) != Some(l)
            || loaded_number(ins) == Some(Some(RT_SIGRETURN))
        {
            return None;
        }
        start = o;
        if site - start > crate::rewrite::MAX_MOVED {
            return None;
        }
        if k >= 1 && site - start >= 5 {
            return Some(start);
        }
    }
    None
}

/// What `ins` loads into EAX/RAX: Some(Some(n)) for an immediate `n`
/// (`mov eax, imm32`, `mov rax, imm32` in its two encodings), None if it
/// is no such `mov`.
fn loaded_number(ins: &[u8]) -> Option<Option<u32>> {
    let imm = |b: &[u8]| Some(Some(u32::from_le_bytes(b.try_into().ok()?)));
    match ins {
        [0xb8, rest @ ..] if rest.len() == 4 => imm(rest),
        [0xc7, 0xc0, rest @ ..] | [0x48, 0xc7, 0xc0, rest @ ..] if rest.len() == 4 => imm(rest),
        [0x48, 0xb8, rest @ ..] if rest.len() == 8 => {
            let v = u64::from_le_bytes(rest.try_into().ok()?);
            Some(u32::try_from(v).ok())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{loaded_number, run_before};

    /// The instructions of `code` up to `site` as a sweep sees them.
    fn recent(code: &[u8], site: usize) -> alloc::vec::Vec<(usize, usize)> {
        let mut out = alloc::vec::Vec::new();
        let mut i = 0;
        while i < site {
            let n = crate::x86len::length(&code[i..]).unwrap();
            out.push((i, n));
            i += n;
        }
        out
    }

    #[test]
    fn the_run_before_a_site_is_the_shortest_of_two_or_more_instructions_with_5_bytes() {
        // add esi, 1; mov eax, edi; mov ecx, esi; cpuid (glibc's leaf-4 loop)
        let code = [0x83, 0xc6, 0x01, 0x89, 0xf8, 0x89, 0xf1, 0x0f, 0xa2];
        assert_eq!(run_before(&code, &recent(&code, 7), 7), Some(0), "7 bytes in three");
        // mov r8, r9 (3); mov r9, r11 (3): two are enough.
        let code = [0x90, 0x4d, 0x89, 0xc1, 0x4d, 0x89, 0xcb, 0x0f, 0xa2];
        assert_eq!(run_before(&code, &recent(&code, 7), 7), Some(1));
        // A RIP-relative load moves too (its displacement with it).
        let code = [0x8b, 0x05, 1, 2, 3, 4, 0x89, 0xf1, 0x0f, 0xa2];
        assert_eq!(run_before(&code, &recent(&code, 8), 8), Some(0));
        // A call does not.
        let code = [0xe8, 1, 2, 3, 4, 0x89, 0xf1, 0x0f, 0xa2];
        assert_eq!(run_before(&code, &recent(&code, 7), 7), None);
        // mov eax, 15 (rt_sigreturn's number) is never moved.
        let code = [0xb8, 0x0f, 0, 0, 0, 0x89, 0xf1, 0x0f, 0x05];
        assert_eq!(run_before(&code, &recent(&code, 7), 7), None);
        // Too few bytes before the function's start.
        let code = [0x89, 0xf8, 0x0f, 0xa2];
        assert_eq!(run_before(&code, &recent(&code, 2), 2), None);
        // Two 10-byte movabs: the shortest run of two has 20 bytes, more
        // than a stub holds (one alone is the third form's).
        let mut code = alloc::vec![0x48, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 0x48, 0xb9, 1, 2, 3, 4, 5, 6, 7, 8];
        code.extend_from_slice(&[0x0f, 0xa2]);
        assert_eq!(run_before(&code, &recent(&code, 20), 20), None);
    }

    #[test]
    fn loads_of_a_number_into_eax_are_recognised() {
        assert_eq!(loaded_number(&[0xb8, 0x27, 0, 0, 0]), Some(Some(39)));
        assert_eq!(loaded_number(&[0x48, 0xc7, 0xc0, 0x0f, 0, 0, 0]), Some(Some(15)), "musl's and glibc's restorer");
        assert_eq!(loaded_number(&[0xc7, 0xc0, 0x0f, 0, 0, 0]), Some(Some(15)));
        assert_eq!(loaded_number(&[0x48, 0xb8, 0x0f, 0, 0, 0, 0, 0, 0, 0]), Some(Some(15)));
        assert_eq!(loaded_number(&[0x31, 0xc0]), None, "xor eax, eax");
        assert_eq!(loaded_number(&[0xb9, 0x0f, 0, 0, 0]), None, "mov ecx, 15");
        assert_eq!(loaded_number(&[]), None);
    }
}
