//! What `/proc/<pid>/maps` names a file mapping by: the file's path, its
//! device and inode, and the file offset at the start of the range. Kept
//! per process beside the mappings (the memory layer knows ranges and
//! protections only): set by mmap of a file, replaced by any mapping
//! over it, emptied at exec. A range unmapped keeps its name until a
//! mapping replaces it or the list has doubled since it was last pruned
//! (then names of what is no longer mapped go); `/proc/<pid>/maps` shows
//! names of mapped ranges only.

use alloc::rc::Rc;
use alloc::vec::Vec;

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Named {
    pub start: u64,
    pub end: u64,
    /// File offset at `start`.
    pub offset: u64,
    pub dev: u64,
    pub ino: u64,
    pub path: Rc<[u8]>,
}

impl crate::filerange::FileRange for Named {
    fn span(&self) -> (u64, u64) {
        (self.start, self.end)
    }
    fn offset(&self) -> u64 {
        self.offset
    }
    fn narrowed(&self, start: u64, end: u64, offset: u64) -> Named {
        Named { start, end, offset, ..self.clone() }
    }
}

/// Most named ranges kept (beyond, new mappings go unnamed).
const MAX_NAMED: usize = 4096;

/// The list is pruned once it is this long (then at twice what is left).
const PRUNE_FIRST: usize = 64;

#[derive(Clone, Default)]
pub struct Names(pub Vec<Named>, usize);

impl Names {
    /// Forgets names in `[start, end)` (cutting ranges that stick out).
    pub fn remove(&mut self, start: u64, end: u64) {
        crate::filerange::cut(&mut self.0, start, end);
    }

    /// Whether it is time to forget names of what is no longer mapped.
    pub fn due_for_pruning(&self) -> bool {
        self.0.len() >= self.1.max(PRUNE_FIRST)
    }

    /// Forgets names (or their parts) outside the `ranges` given.
    pub fn keep_within(&mut self, ranges: impl Iterator<Item = (u64, u64)>) {
        let mut kept = Names::default();
        for (s, e) in ranges {
            for n in self.0.iter().filter(|n| n.end > s && n.start < e) {
                let start = n.start.max(s);
                let piece = Named { start, end: n.end.min(e), offset: n.offset + (start - n.start), ..n.clone() };
                if kept.0.try_reserve(1).is_ok() {
                    kept.0.push(piece);
                }
            }
        }
        kept.0.sort_by_key(|n| n.start);
        kept.1 = 2 * kept.0.len();
        *self = kept;
    }

    /// Names `[n.start, n.end)` (replacing what was there).
    pub fn add(&mut self, n: Named) {
        self.remove(n.start, n.end);
        if self.0.len() < MAX_NAMED && self.0.try_reserve(1).is_ok() {
            let at = self.0.partition_point(|x| x.start < n.start);
            self.0.insert(at, n);
        }
    }

    /// `[start, end)` cut where names begin and end: each piece with its
    /// name (None: not a file's).
    pub fn pieces(&self, start: u64, end: u64) -> Vec<(u64, u64, Option<&Named>)> {
        let mut out = Vec::new();
        let mut at = start;
        for n in self.0.iter().filter(|n| n.end > start && n.start < end) {
            if n.start > at {
                out.push((at, n.start, None));
            }
            let (s, e) = (n.start.max(at), n.end.min(end));
            out.push((s, e, Some(n)));
            at = e;
        }
        if at < end {
            out.push((at, end, None));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(start: u64, end: u64, offset: u64) -> Named {
        Named { start, end, offset, dev: 1, ino: 2, path: Rc::from(&b"/lib/x.so"[..]) }
    }

    #[test]
    fn ranges_are_cut_and_pieced() {
        let mut n = Names::default();
        n.add(named(0x1000, 0x5000, 0));
        n.remove(0x2000, 0x3000);
        assert_eq!(n.0, [named(0x1000, 0x2000, 0), named(0x3000, 0x5000, 0x2000)]);
        let p = n.pieces(0x0, 0x6000);
        let spans: Vec<(u64, u64, Option<u64>)> = p.iter().map(|&(s, e, m)| (s, e, m.map(|m| m.offset))).collect();
        assert_eq!(
            spans,
            [
                (0, 0x1000, None),
                (0x1000, 0x2000, Some(0)),
                (0x2000, 0x3000, None),
                (0x3000, 0x5000, Some(0x2000)),
                (0x5000, 0x6000, None)
            ]
        );
        n.add(named(0x4000, 0x8000, 0x10000));
        assert_eq!(n.0.len(), 3);
        assert_eq!(n.0[1], named(0x3000, 0x4000, 0x2000));
        assert_eq!(n.pieces(0x4000, 0x5000)[0].2.map(|m| m.offset), Some(0x10000));
        // Only what is still mapped keeps its name.
        n.keep_within([(0x1800, 0x3800)].into_iter());
        assert_eq!(n.0, [named(0x1800, 0x2000, 0x800), named(0x3000, 0x3800, 0x2000)]);
        assert!(!n.due_for_pruning());
        for i in 0..PRUNE_FIRST as u64 {
            n.add(named(0x10_0000 + i * 0x1000, 0x10_1000 + i * 0x1000, 0));
        }
        assert!(n.due_for_pruning());
        n.keep_within([(0x10_0000, 0x10_1000)].into_iter());
        assert_eq!(n.0.len(), 1);
        assert!(!n.due_for_pruning());
    }
}
