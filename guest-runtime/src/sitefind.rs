//! Where a system-call site lies in its program, for the rewriter
//! (`rewrite.rs`): the function holding it (from the file mapped there:
//! its unwind table or symbols, `fnindex.rs`), whether an address is the
//! start of an instruction (a sweep of instruction lengths from the
//! function's start, `x86len.rs`), and padding between functions where a
//! jump can go. Code that is no file's (JIT), or that no table covers, is
//! never rewritten.

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;

use crate::fnindex::{self, FnIndex};
use crate::mm;
use crate::rt::Global;
use crate::sites::Code;
use crate::vfs::{Node, NodeKind, NodeRef};
use crate::x86len;

/// Most bytes swept from a function's start to a site.
const MAX_SWEEP: u64 = 64 << 10;
/// Longest gap between functions looked at for padding.
const MAX_GAP: u64 = 4096;

/// The function holding a site, in the program's memory.
pub struct Place {
    /// Its start (an instruction boundary).
    pub from: u64,
    /// The mapping of the file (`[lo, hi)`) it lies in.
    lo: u64,
    hi: u64,
    /// Memory address minus the file's virtual address.
    delta: u64,
    idx: Rc<FnIndex>,
}

/// The function holding `at`, if the file mapped there says where it
/// starts (no more than `MAX_SWEEP` bytes before, in the same mapping).
/// Without `build`, a file whose table has not been read yet is left for
/// later (`NotYet`).
pub fn function_of(at: u64, build: bool) -> Result<Option<Place>, NotYet> {
    let Some(code) = mm::current().rewrite.code_at(at).cloned() else { return Ok(None) };
    let Ok(node) = Rc::downcast::<Node>(code.file.clone()) else { return Ok(None) };
    let Some(idx) = index_of(&node, build)? else { return Ok(None) };
    Ok(place_in(at, &code, idx))
}

/// The table of `node`, read now if it was not (None: it has none).
pub fn index(node: &NodeRef) -> Option<Rc<FnIndex>> {
    index_of(node, true).ok().flatten()
}

/// The answer of `function_of` for a file whose table is not read yet.
pub struct NotYet;

fn place_in(at: u64, code: &Code, idx: Rc<FnIndex>) -> Option<Place> {
    let file_off = at - code.start + code.offset;
    let seg = idx.vaddr_of(file_off)?;
    let va = file_off - seg.offset + seg.vaddr;
    let start = idx.function_start(va).filter(|&s| s >= seg.vaddr)?;
    let back = va - start;
    if back > MAX_SWEEP || back > at - code.start {
        return None;
    }
    // The segment's part of the mapping.
    let delta = at.wrapping_sub(va);
    let lo = code.start.max(seg.vaddr.wrapping_add(delta));
    let hi = code.end.min(seg.vaddr.wrapping_add(seg.filesz).wrapping_add(delta));
    Some(Place { from: at - back, lo, hi, delta, idx })
}

/// `[va, va + len)` of the program's memory, if readable code (backed).
pub(crate) fn code_bytes(va: u64, len: u64) -> Option<&'static [u8]> {
    if !mm::user_access_ok(va, len, mm::PROT_READ | mm::PROT_EXEC) || !mm::populate(va, len) {
        return None;
    }
    // SAFETY: `[va, va + len)` lies in readable mappings whose pages are
    // backed (checked above); the caller uses it before anything changes
    // the mappings.
    Some(unsafe { core::slice::from_raw_parts(va as *const u8, len as usize) })
}

/// `[va, va + len)` of the program's code as it was before any site in
/// it was rewritten (the bytes each site and its padding slot replaced
/// put back), so that a sweep of instruction lengths meets the program's
/// own instructions: a moved instruction longer than the jump that
/// replaced it leaves bytes that would otherwise read as others.
pub(crate) fn original_bytes(va: u64, len: u64) -> Option<Vec<u8>> {
    let now = code_bytes(va, len)?;
    let mut v = Vec::new();
    v.try_reserve_exact(now.len()).ok()?;
    v.extend_from_slice(now);
    let end = va + len;
    let mut put = |at: u64, bytes: &[u8]| {
        for (k, &b) in bytes.iter().enumerate() {
            let a = at + k as u64;
            if a >= va && a < end {
                v[(a - va) as usize] = b;
            }
        }
    };
    for s in &mm::current().rewrite.sites {
        put(s.at, &s.orig[..usize::from(s.len).min(5)]);
        if let Some((p, orig)) = s.pad {
            put(p, &orig);
        }
    }
    Some(v)
}

/// Whether `[a, b)` holds bytes a rewritten site changed, or left never
/// to run (the rest of the instructions it moved).
pub(crate) fn rewritten(a: u64, b: u64) -> bool {
    mm::current().rewrite.sites.iter().any(|s| {
        let n = u64::from(s.len.max(s.moved));
        (s.at < b && a < s.at + n) || s.pad.is_some_and(|(p, _)| p < b && a < p + 5)
    })
}

/// The instruction starts one sweep from a function's start found (over
/// its original bytes), kept for the next proof in the same function
/// while a batch of rewrites made ahead runs ([`with_sweeps_kept`]).
struct Sweep {
    /// The address space's top-level table and the function's start.
    space: u64,
    from: u64,
    /// Offsets from `from` of the instructions found, in order.
    starts: Vec<u32>,
    /// Where the sweep stopped: the offset after the last instruction
    /// found (where bytes that decode as none start, if `stuck`).
    end: u64,
    stuck: bool,
}

impl Sweep {
    fn new(space: u64, from: u64) -> Sweep {
        Sweep { space, from, starts: Vec::new(), end: 0, stuck: false }
    }

    /// Goes on from `end` until offset `upto` is reached, over `bytes`
    /// (the function's, from offset `end`; a kept sweep passes 15 more
    /// past `upto` where it has them). Bytes that run out stop it as
    /// undecodable ones would: its answers then say no, as a sweep over
    /// exactly the bytes to `upto` does for an instruction across it.
    fn extend(&mut self, bytes: &[u8], upto: u64) {
        let mut i = 0usize;
        while !self.stuck && self.end + (i as u64) < upto {
            match x86len::length(&bytes[i..]) {
                Some(n) if self.starts.try_reserve(1).is_ok() => {
                    self.starts.push((self.end + i as u64) as u32);
                    i += n;
                }
                _ => self.stuck = true,
            }
        }
        self.end += i as u64;
    }

    /// Whether an instruction of `len` bytes starts at offset `back`: a
    /// sweep from the start lands on it, and it ends `len` bytes on (the
    /// sweep reaches that far).
    fn instruction_at(&self, back: u64, len: usize) -> bool {
        let Ok(k) = self.starts.binary_search(&(back as u32)) else { return false };
        // It has `len` bytes if the next one starts, or the sweep
        // stopped, `len` bytes on.
        self.starts.get(k + 1).map_or(self.end, |&n| u64::from(n)) == back + len as u64
    }

    /// The offset of the instruction that ends at offset `back`, if the
    /// sweep from the start lands there (the sweep reaches that far).
    fn instruction_before(&self, back: u64) -> Option<u64> {
        let k = match self.starts.binary_search(&(back as u32)) {
            Ok(k) => k,
            Err(k) if k == self.starts.len() && self.end == back => k,
            Err(_) => return None,
        };
        Some(u64::from(*self.starts.get(k.checked_sub(1)?)?))
    }
}

/// `Some` while a batch keeps sweeps; then the last one made.
static SWEEP: Global<Option<Option<Sweep>>> = Global::new(None);

/// Runs `f`, a batch of rewrites made ahead (at an execve, before any of
/// the program runs), keeping each function's sweep of instruction
/// lengths for the next site in it: glibc's `cpuid` candidates lie a few
/// to a function (29 in a static busybox), and each proof swept its
/// function from the start, once or twice. Nothing of the program runs
/// and no mapping changes meanwhile, and a sweep reads the bytes as they
/// were before any rewriting, so a kept sweep finds what a new one would.
pub fn with_sweeps_kept<R>(f: impl FnOnce() -> R) -> R {
    let outer = SWEEP.get().replace(None);
    let r = f();
    *SWEEP.get() = outer;
    r
}

impl Place {
    /// Whether an instruction of `len` bytes starts at `at` (a sweep from
    /// the function's start, over its own bytes, lands on it) and no
    /// rewritten site has changed it.
    pub fn instruction_at(&self, at: u64, len: usize) -> bool {
        let Some(back) = at.checked_sub(self.from) else { return false };
        self.with_sweep(back + len as u64, |s| s.instruction_at(back, len)).unwrap_or(false)
            && !rewritten(at, at + len as u64)
    }

    /// The instruction that ends at `at` (start and bytes, at most 15),
    /// found by a sweep from the function's start; None if a rewritten
    /// site has changed it.
    pub fn instruction_before(&self, at: u64) -> Option<(u64, &'static [u8])> {
        let back = at.checked_sub(self.from)?;
        let start = self.from + self.with_sweep(back, |s| s.instruction_before(back))??;
        if rewritten(start, at) {
            return None;
        }
        Some((start, code_bytes(start, at - start)?))
    }

    /// Runs `f` on a sweep from this function's start that reaches
    /// offset `upto` (or stops short where the bytes decode as no
    /// instruction). While a batch keeps sweeps ([`with_sweeps_kept`]),
    /// the kept one, extended over the bytes to `upto` and the longest
    /// instruction's more (within the mapping); else a new one over the
    /// bytes to `upto` alone. None if the bytes cannot be read.
    fn with_sweep<R>(&self, upto: u64, f: impl FnOnce(&Sweep) -> R) -> Option<R> {
        let Some(slot) = SWEEP.get().as_mut() else {
            let mut fresh = Sweep::new(0, self.from);
            fresh.extend(&original_bytes(self.from, upto)?, upto);
            return Some(f(&fresh));
        };
        let space = mm::current().pml4();
        if !matches!(slot, Some(s) if s.space == space && s.from == self.from) {
            *slot = Some(Sweep::new(space, self.from));
        }
        let s = slot.as_mut()?;
        if s.end < upto && !s.stuck {
            // From where it stopped to `upto`, and the longest
            // instruction's more (within the mapping).
            let want = (upto + 15).min(self.hi.checked_sub(self.from)?);
            let bytes = original_bytes(self.from + s.end, want.checked_sub(s.end)?)?;
            s.extend(&bytes, upto);
        }
        Some(f(s))
    }

    /// A 5-byte slot of padding between two functions (alignment filler,
    /// never run) that a `jmp rel8` ending at `end` reaches: a gap no
    /// function's range covers, of the same mapping, made only of nops
    /// and int3 but for the slots other sites took there (`taken`: their
    /// addresses and original bytes), and a slot of it none of them
    /// overlaps.
    pub fn padding_near(&self, end: u64, taken: &[(u64, [u8; 5])]) -> Option<u64> {
        let lo = end.saturating_sub(128).max(self.lo);
        let hi = end.saturating_add(127).min(self.hi.saturating_sub(5));
        for (gs, ge) in self.idx.gaps_between(lo.wrapping_sub(self.delta), hi.wrapping_sub(self.delta) + 5) {
            let (gs, ge) = (gs.wrapping_add(self.delta), ge.wrapping_add(self.delta));
            if gs < self.lo || ge > self.hi || ge - gs > MAX_GAP {
                continue;
            }
            let free = |slot: u64| {
                slot + 5 <= ge
                    && (slot & (mm::PAGE - 1)) <= mm::PAGE - 5
                    && !taken.iter().any(|&(t, _)| t < slot + 5 && slot < t + 5)
            };
            let Some(slot) = (gs.max(lo)..=hi.min(ge.saturating_sub(5))).find(|&s| free(s)) else { continue };
            // The gap as it was before any site took a slot of it.
            let Some(now) = code_bytes(gs, ge - gs) else { continue };
            let mut was = now.to_vec();
            for &(t, orig) in taken {
                for (i, b) in orig.iter().enumerate() {
                    if let Some(x) = (t + i as u64).checked_sub(gs).and_then(|o| was.get_mut(o as usize)) {
                        *x = *b;
                    }
                }
            }
            if all_filler(&was) {
                return Some(slot);
            }
        }
        None
    }
}

/// Whether `b` decodes as nothing but nops and int3.
pub(crate) fn all_filler(b: &[u8]) -> bool {
    let mut i = 0;
    while i < b.len() {
        let Some(n) = x86len::length(&b[i..]) else { return false };
        let ins = &b[i..i + n];
        let body = ins.iter().position(|&c| c != 0x66 && c != 0x2e).map_or(&[][..], |p| &ins[p..]);
        let nop = matches!(body, [0x90] | [0xcc]) || body.starts_with(&[0x0f, 0x1f]) && (body[2] >> 3) & 7 == 0;
        if !nop {
            return false;
        }
        i += n;
    }
    true
}

/// The function index of a file, built once per file (and kept while the
/// file lives and is unchanged), whichever process maps it; without
/// `build`, only one built before.
fn index_of(node: &NodeRef, build: bool) -> Result<Option<Rc<FnIndex>>, NotYet> {
    let (size, mtime) = (node.size(), node.meta.borrow().mtime);
    let cache = INDEXES.get();
    let same = |c: &Cached| core::ptr::eq(c.node.as_ptr(), Rc::as_ptr(node));
    if let Some(c) = cache.iter().find(|c| same(c) && c.size == size && c.mtime == mtime) {
        return Ok(c.index.clone());
    }
    if !build {
        return Err(NotYet);
    }
    cache.retain(|c| c.node.strong_count() > 0 && !same(c));
    let index = build_index(node).map(Rc::new);
    let cache = INDEXES.get();
    if cache.len() >= MAX_INDEXES {
        cache.remove(0);
    }
    cache.push(Cached { node: Rc::downgrade(node), size, mtime, index: index.clone() });
    Ok(index)
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

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use super::Sweep;
    use crate::x86len;

    /// What `Place::instruction_at` and `instruction_before` answered
    /// before sweeps were kept, over `code` (the bytes from the function's
    /// start): the reference.
    fn fresh_at(code: &[u8], back: usize, len: usize) -> bool {
        let bytes = &code[..(back + len).min(code.len())];
        bytes.len() == back + len && x86len::reaches(bytes, back) && x86len::length(&bytes[back..]) == Some(len)
    }

    fn fresh_before(code: &[u8], back: usize) -> Option<u64> {
        let bytes = code.get(..back)?;
        let (mut i, mut last) = (0, None);
        while i < bytes.len() {
            last = Some(i);
            i += x86len::length(&bytes[i..])?;
        }
        last.filter(|_| i == bytes.len()).map(|l| l as u64)
    }

    /// A sweep kept and extended as `Place::with_sweep` does in a batch,
    /// reaching `upto`.
    fn kept(sweep: &mut Sweep, code: &[u8], upto: u64) {
        if sweep.end < upto && !sweep.stuck {
            let want = ((upto + 15) as usize).min(code.len());
            sweep.extend(&code[(sweep.end as usize).min(want)..want], upto);
        }
    }

    #[test]
    fn a_kept_sweep_answers_as_a_fresh_one_would() {
        // Real code (this test's own binary), and bytes that stop decoding.
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let mut seed = 7u32;
        let mut junk: Vec<u8> = (0..3000)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (seed >> 16) as u8
            })
            .collect();
        junk[..6].copy_from_slice(&[0x55, 0x48, 0x89, 0xe5, 0x0f, 0x0b]);
        let mut functions: Vec<&[u8]> = (0..40).map(|k| &exe[exe.len() / 3 + k * 3001..][..2500]).collect();
        functions.push(&junk);
        functions.push(&exe[exe.len() / 2..][..20]);
        for code in functions {
            // Asked in increasing order (as the candidates of a file come),
            // and once more in decreasing order over the same sweep.
            let mut sweep = Sweep::new(0, 0);
            let order: Vec<usize> = (0..code.len()).chain((0..code.len()).rev()).collect();
            for back in order {
                for len in [2usize, 5] {
                    kept(&mut sweep, code, (back + len) as u64);
                    let want = fresh_at(code, back, len);
                    assert_eq!(sweep.instruction_at(back as u64, len), want, "at {back} len {len}");
                    // A new sweep over the bytes to `back + len` alone.
                    let upto = back + len;
                    if upto <= code.len() {
                        let mut fresh = Sweep::new(0, 0);
                        fresh.extend(&code[..upto], upto as u64);
                        assert_eq!(fresh.instruction_at(back as u64, len), want, "fresh at {back} len {len}");
                    }
                }
                kept(&mut sweep, code, back as u64);
                let want = fresh_before(code, back);
                assert_eq!(sweep.instruction_before(back as u64), want, "before {back}");
                let mut fresh = Sweep::new(0, 0);
                fresh.extend(&code[..back], back as u64);
                assert_eq!(fresh.instruction_before(back as u64), want, "fresh before {back}");
            }
        }
    }

    #[test]
    fn padding_is_nops_and_int3_only() {
        use super::all_filler;
        assert!(all_filler(&[0xcc, 0xcc, 0x90]));
        assert!(all_filler(&[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0, 0x0f, 0x1f, 0x40, 0x00]));
        assert!(all_filler(&[0x66, 0x90]));
        assert!(!all_filler(&[0x00, 0x00]), "add [rax], al");
        assert!(!all_filler(&[0xe9, 1, 2, 3, 4]), "a jump (a slot taken)");
        assert!(!all_filler(&[0x0f, 0x18, 0x08]), "prefetch");
    }
}
