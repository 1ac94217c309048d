//! Eager system-call and `cpuid` site rewriting for an entry snapshot: at the entry
//! nothing of the program has run, so the lazy rewriter (`rewrite.rs`,
//! a site at its fourth slow call) would leave every run from the
//! snapshot to find its sites slow again (and the reset would undo what
//! it rewrote). Here, before the snapshot is taken, every function the
//! program file's table names (`fnindex.rs`) is swept with the length
//! decoder (`x86len.rs`) and each `syscall` found is rewritten the way
//! the lazy path would (`rewrite::rewrite_ahead`, which proves the site
//! again from its function's start): the snapshot then holds the
//! patched pages, so resets keep them. Each `cpuid` found is rewritten
//! too (`rewrite::rewrite_cpuid_ahead`, see `cpuid.rs`): the hypervisor
//! answers those without the runtime seeing them, so this sweep is the
//! only way to find them.
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

/// Rewrites the `syscall` sites of `node`'s code mapped in the current
/// address space (the program at its entry). Returns how many.
pub fn rewrite_program(node: &NodeRef) -> usize {
    if !crate::rewrite::enabled() {
        return 0;
    }
    let Some(idx) = sitefind::index(node) else { return 0 };
    let node_ptr = Rc::as_ptr(node) as *const u8;
    // (start, end, file offset) of the file's mappings.
    let maps: Vec<(u64, u64, u64)> = crate::mm::current()
        .rewrite
        .code
        .iter()
        .filter(|c| Rc::as_ptr(&c.file) as *const u8 == node_ptr)
        .map(|c| (c.start, c.end, c.offset))
        .collect();
    let mut budget = Budget { swept: 0, sites: 0, pages: Vec::new(), last_site: 0 };
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
        if !crate::mm::user_access_ok(at, len, crate::mm::PROT_EXEC) || budget.swept + len > MAX_SWEPT {
            continue;
        }
        budget.swept += len;
        for (sc, found) in sites_in(at, len) {
            if sc <= budget.last_site {
                // Looked at already (ranges overlap): rewritten, its
                // bytes now differ, or refused.
                continue;
            }
            if !budget.admit(sc) {
                return budget.sites;
            }
            let done = match found {
                Found::Syscall(nr) => crate::rewrite::rewrite_ahead(sc, nr),
                Found::Cpuid => crate::rewrite::rewrite_cpuid_ahead(sc),
            };
            if done {
                budget.sites += 1;
            }
        }
    }
    budget.sites
}

struct Budget {
    swept: u64,
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

/// A site a sweep found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Found {
    /// A `syscall`, with the number a `mov eax, imm32` right before it
    /// loads (None: not such a `mov`).
    Syscall(Option<u64>),
    /// A `cpuid`.
    Cpuid,
}

/// The `syscall` and `cpuid` instructions a sweep of `len` bytes from
/// `at` (a function's start) meets. `syscall`s after a load of
/// rt_sigreturn's number are left out. The sweep ends at the first byte
/// it cannot decode.
fn sites_in(at: u64, len: u64) -> Vec<(u64, Found)> {
    let mut out = Vec::new();
    let Some(code) = sitefind::code_bytes(at, len) else { return out };
    let mut i = 0;
    let mut prev: &[u8] = &[];
    while i < code.len() {
        let Some(n) = x86len::length(&code[i..]) else { break };
        let ins = &code[i..i + n];
        if ins == [0x0f, 0x05] && loaded_number(prev) != Some(Some(RT_SIGRETURN)) && out.try_reserve(1).is_ok() {
            let nr = loaded_number(prev).flatten().filter(|_| prev.first() == Some(&0xb8)).map(u64::from);
            out.push((at + i as u64, Found::Syscall(nr)));
        } else if ins == [0x0f, 0xa2] && out.try_reserve(1).is_ok() {
            out.push((at + i as u64, Found::Cpuid));
        }
        prev = ins;
        i += n;
    }
    out
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
    use super::loaded_number;

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
