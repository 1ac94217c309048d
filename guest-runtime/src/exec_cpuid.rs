//! `cpuid` sites rewritten at an execve, from a file's first start in
//! this VM (its second, for a large file). A `cpuid` leaves the guest on
//! every KVM host, and the hypervisor answers it without the runtime
//! seeing it, so the lazy rewriter never learns of one (`cpuid.rs`);
//! only an entry snapshot's sweep (`eager.rs`) found them. But glibc
//! probes the CPU with ~44 of them in every process it starts (in its
//! loader, or in a static program's own start), ~12-25 µs each here.
//!
//! So each file that runs those probes in a new process (a dynamic
//! program's loader, or a static program) is scanned for `0f a2` byte
//! pairs at its first start (a file with more than `FIRST_START_MAX` of
//! code: at its second), read through the file cache rather than the
//! program's mappings; pairs not within 8 KiB of the start of a function
//! its table names are dropped. At that start and every later one, each
//! candidate that lies in the new process's executable mapping of the
//! file goes to `rewrite::rewrite_cpuid_ahead`. It proves the pair an
//! instruction from its function's start (a pair inside a longer
//! instruction is refused) and rewrites it as an entry snapshot's sweep
//! would: nothing of the process has run yet, the same moment. The list
//! kept with the file is then only the sites rewritten. About half of
//! glibc's sites take a form this allows, among them the loops' (the
//! rest need the fourth form, whose proof sweeps the whole program): a
//! cold `busybox true` makes 8 `cpuid` exits instead of 43.
//!
//! At every execve the program's and its loader's `syscall` sites that
//! earlier processes called are rewritten too (`rewrite::rewrite_seen_ahead`),
//! and all of it shares one flush.

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;

use crate::rt::Global;
use crate::vfs::{Node, NodeKind, NodeRef};

/// Files remembered (beyond, the oldest is forgotten).
const MAX_FILES: usize = 64;
/// Most candidates kept for one file (a file with more is left alone:
/// most would be bytes inside other instructions).
const MAX_CANDIDATES: usize = 512;
/// Most bytes of code scanned in one file.
const MAX_SCANNED: u64 = 64 << 20;
/// A file with at most this much code has its sites rewritten at its
/// first start: its scan (~0.1 ms a MiB here) and table cost less than the
/// ~35 of glibc's ~44 probes it saves (~25 µs each here). A larger one
/// waits for its second start, as the scan grows with it and the probes
/// do not (a large program is seldom glibc's static start alone).
const FIRST_START_MAX: u64 = 4 << 20;
/// Candidates further than this into their function are left alone: the
/// proof sweeps from the function's start, and a pair deep in a large
/// function (an interpreter's loop) is most likely inside another
/// instruction (glibc's probes lie in small functions).
const MAX_DEPTH: u64 = 8 << 10;

struct Seen {
    node: Weak<Node>,
    size: u64,
    mtime: (i64, u32),
    starts: u32,
    /// File offsets of its `0f a2` pairs in executable mappings, once
    /// scanned (None: not yet; an empty list: none, or too many); after
    /// the first rewriting, only those rewritten (a pair inside a longer
    /// instruction is refused every time: it is not tried again).
    candidates: Option<Rc<Vec<u64>>>,
    proven: bool,
}

static SEEN: Global<Vec<Seen>> = Global::new(Vec::new());

/// A process has just been started from `program` with its loader
/// `interp` (their code mapped in the current, fresh address space,
/// nothing of it run). The loader, or a static program (a dynamic one's
/// `cpuid` probes are its loader's; scanning a large program's code
/// would read all of it into the file cache), counts a start; from its
/// second on, its `cpuid` sites are rewritten.
pub fn started(program: &NodeRef, interp: Option<&NodeRef>) {
    // Nothing of the process runs meanwhile: one flush for all the pages
    // rewritten (it was one a page, three a start of glibc's static
    // programs for their `cpuid` sites alone).
    let probes = interp.unwrap_or(program);
    crate::mm::with_patch_flush_deferred(|| {
        crate::sitefind::with_sweeps_kept(|| {
            for node in core::iter::once(program).chain(interp) {
                let maps = exec_maps(node);
                if Rc::ptr_eq(node, probes) {
                    started_from(node, &maps);
                }
                // And the `syscall` sites earlier processes of it called.
                crate::rewrite::rewrite_seen_ahead(node, &maps);
            }
        })
    });
}

/// `node`'s executable mappings in the current (new) process: (start,
/// end, file offset).
fn exec_maps(node: &NodeRef) -> Vec<(u64, u64, u64)> {
    let mut maps = crate::mm::current().rewrite.mappings_of(Rc::as_ptr(node) as *const u8);
    maps.retain(|&(start, end, _)| crate::mm::user_access_ok(start, end - start, crate::mm::PROT_EXEC));
    maps
}

/// A start of `node`, whose executable mappings are `maps` (see
/// [`started`]); returns how many `cpuid` sites were rewritten.
fn started_from(node: &NodeRef, maps: &[(u64, u64, u64)]) -> usize {
    if !crate::rewrite::cpuid_enabled() {
        return 0;
    }
    let (size, mtime) = (node.size(), node.meta.borrow().mtime);
    let seen = SEEN.get();
    let same = |s: &Seen| core::ptr::eq(s.node.as_ptr(), Rc::as_ptr(node));
    let i = match seen.iter().position(|s| same(s) && s.size == size && s.mtime == mtime) {
        Some(i) => i,
        None => {
            seen.retain(|s| s.node.strong_count() > 0 && !same(s));
            if seen.len() >= MAX_FILES {
                seen.remove(0);
            }
            if seen.try_reserve(1).is_err() {
                return 0;
            }
            seen.push(Seen { node: Rc::downgrade(node), size, mtime, starts: 0, candidates: None, proven: false });
            seen.len() - 1
        }
    };
    seen[i].starts = seen[i].starts.saturating_add(1);
    let code: u64 = maps.iter().map(|&(start, end, _)| end - start).sum();
    if seen[i].starts < 2 && code > FIRST_START_MAX {
        return 0;
    }
    let cached = seen[i].candidates.clone();
    let candidates = match cached {
        Some(c) => c,
        None => {
            let c = Rc::new(scan(node, maps));
            // (SEEN may have been touched meanwhile: find the entry again.)
            if let Some(s) = SEEN.get().iter_mut().find(|s| same(s)) {
                s.candidates = Some(c.clone());
            }
            c
        }
    };
    let mut rewritten = Vec::new();
    for &off in candidates.iter() {
        let Some(site) = crate::sites::Sites::va_of(maps, off, 2) else { continue };
        if crate::rewrite::rewrite_cpuid_ahead(site) && rewritten.try_reserve(1).is_ok() {
            rewritten.push(off);
        }
    }
    let done = rewritten.len();
    if let Some(s) = SEEN.get().iter_mut().find(|s| same(s)).filter(|s| !s.proven) {
        s.candidates = Some(Rc::new(rewritten));
        s.proven = true;
    }
    done
}

/// The file offsets of the `0f a2` byte pairs in `maps`' parts of the
/// file (empty if there are more than `MAX_CANDIDATES`).
fn scan(node: &NodeRef, maps: &[(u64, u64, u64)]) -> Vec<u64> {
    let NodeKind::File(data) = &node.kind else { return Vec::new() };
    let mut found = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let mut scanned = 0;
    for &(start, end, off) in maps {
        let len = end - start;
        let mut at = 0u64;
        // A pair may straddle two reads: each read starts one byte back.
        while at < len && scanned < MAX_SCANNED {
            let want = (buf.len() as u64).min(len - at) as usize;
            let Ok(n) = data.borrow_mut().read_at(off + at, &mut buf[..want]) else { return Vec::new() };
            if n < 2 {
                break;
            }
            let mut full = false;
            cpuid_pairs(&buf[..n], |k| {
                if found.len() >= MAX_CANDIDATES || found.try_reserve(1).is_err() {
                    full = true;
                    return false;
                }
                found.push(off + at + k as u64);
                true
            });
            if full {
                return Vec::new();
            }
            scanned += n as u64;
            at += n as u64 - 1;
        }
    }
    found.sort_unstable();
    found.dedup();
    if found.is_empty() {
        // (No table to read: most programs not built with glibc.)
        return found;
    }
    // Only those in a function the file's table names, near its start.
    let Some(idx) = crate::sitefind::index(node) else { return Vec::new() };
    found.retain(|&off| {
        idx.vaddr_of(off).is_some_and(|seg| {
            let va = off - seg.offset + seg.vaddr;
            idx.function_start(va).is_some_and(|start| va - start <= MAX_DEPTH)
        })
    });
    found
}

/// Calls `f` with the index of each `0f a2` pair in `buf` (the `0f`),
/// in order, until it returns false. It runs over a loader's or a static
/// program's whole code at its first start (1.5 MiB for busybox), so 32
/// bytes at a time: a block with no `a2` byte (nearly all of them) costs
/// a few word operations, and one with some is looked at byte by byte.
fn cpuid_pairs(buf: &[u8], mut f: impl FnMut(usize) -> bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Nonzero if a byte of `w` is 0xa2 (those are the zero bytes of
    // `x`; a mark may also fall on a byte above one, never on a word
    // without one).
    let has_a2 = |w: &[u8]| {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let x = u64::from_le_bytes(word) ^ (0xa2 * ONES);
        x.wrapping_sub(ONES) & !x & HIGH
    };
    let mut look = |from: usize, to: usize| {
        for i in from.max(1)..to {
            if buf[i] == 0xa2 && buf[i - 1] == 0x0f && !f(i - 1) {
                return false;
            }
        }
        true
    };
    let blocks = buf.chunks_exact(32);
    let rest = blocks.remainder().len();
    for (b, block) in blocks.enumerate() {
        let (w, at) = (block.chunks_exact(8), b * 32);
        if w.fold(0, |any, w| any | has_a2(w)) != 0 && !look(at, at + 32) {
            return;
        }
    }
    look(buf.len() - rest, buf.len());
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    fn pairs(buf: &[u8]) -> Vec<usize> {
        let mut found = Vec::new();
        super::cpuid_pairs(buf, |i| {
            found.push(i);
            true
        });
        found
    }

    #[test]
    fn cpuid_pairs_are_found_wherever_they_lie_and_only_there() {
        // Every place in a buffer of a few words, and across word edges.
        for len in 2..40 {
            for at in 0..len - 1 {
                let mut buf = alloc::vec![0x90u8; len];
                buf[at] = 0x0f;
                buf[at + 1] = 0xa2;
                assert_eq!(pairs(&buf), [at], "len {len} at {at}");
            }
        }
        // A byte one above 0xa2 right after a real one (the word trick
        // may mark it), 0xa2 with no 0f before it, a 0f with no a2 after.
        let mut buf = alloc::vec![0u8; 24];
        buf[..4].copy_from_slice(&[0x0f, 0xa2, 0xa3, 0x0f]);
        buf[8..11].copy_from_slice(&[0xa2, 0x0f, 0xa3]);
        buf[15..18].copy_from_slice(&[0x0f, 0xa2, 0xa2]);
        assert_eq!(pairs(&buf), [0, 15]);
        // Compared with the byte-by-byte answer on varied bytes.
        let mut seed = 1u32;
        let buf: Vec<u8> = (0..4096)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                [0x0f, 0xa2, 0xa3, 0x01, 0x00][(seed >> 16) as usize % 5]
            })
            .collect();
        let slow: Vec<usize> = (0..buf.len() - 1).filter(|&i| buf[i] == 0x0f && buf[i + 1] == 0xa2).collect();
        assert!(slow.len() > 10);
        assert_eq!(pairs(&buf), slow);
        // `f` stops the scan.
        let mut seen = 0;
        super::cpuid_pairs(&[0x0f, 0xa2, 0x0f, 0xa2], |_| {
            seen += 1;
            false
        });
        assert_eq!(seen, 1);
    }
}
