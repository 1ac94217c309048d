//! Lists of address ranges that each show a file from some offset on
//! (file mappings' names for /proc, the rewriter's record of code files):
//! cutting a hole in such a list.

use alloc::vec::Vec;

/// `[start, end)` of the address space, showing a file from `offset` on.
pub trait FileRange: Clone {
    fn span(&self) -> (u64, u64);
    fn offset(&self) -> u64;
    /// This range, narrowed to `[start, end)` (within it), with the file
    /// offset that goes with `start`.
    fn narrowed(&self, start: u64, end: u64, offset: u64) -> Self;
}

/// Removes `[start, end)` from `list` (sorted by start, kept so): ranges
/// inside it go, ranges across its edges keep their parts outside.
pub fn cut<T: FileRange>(list: &mut Vec<T>, start: u64, end: u64) {
    if !list.iter().any(|r| r.span().0 < end && r.span().1 > start) {
        return;
    }
    let mut out = Vec::with_capacity(list.len() + 1);
    for r in list.drain(..) {
        let (s, e) = r.span();
        if e <= start || s >= end {
            out.push(r);
            continue;
        }
        if s < start {
            out.push(r.narrowed(s, start, r.offset()));
        }
        if e > end {
            out.push(r.narrowed(end, e, r.offset() + (end - s)));
        }
    }
    out.sort_by_key(|r| r.span().0);
    *list = out;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[derive(Clone, Debug, PartialEq)]
    struct R(u64, u64, u64);

    impl FileRange for R {
        fn span(&self) -> (u64, u64) {
            (self.0, self.1)
        }
        fn offset(&self) -> u64 {
            self.2
        }
        fn narrowed(&self, start: u64, end: u64, offset: u64) -> R {
            R(start, end, offset)
        }
    }

    #[test]
    fn a_hole_keeps_the_parts_outside_with_their_offsets() {
        let mut l = vec![R(0x1000, 0x5000, 0), R(0x6000, 0x7000, 0x10000), R(0x8000, 0x9000, 0)];
        cut(&mut l, 0x2000, 0x6800);
        assert_eq!(l, vec![R(0x1000, 0x2000, 0), R(0x6800, 0x7000, 0x10800), R(0x8000, 0x9000, 0)]);
        cut(&mut l, 0x8000, 0x9000);
        cut(&mut l, 0xa000, 0xb000);
        assert_eq!(l, vec![R(0x1000, 0x2000, 0), R(0x6800, 0x7000, 0x10800)]);
        let mut one = vec![R(0x1000, 0x4000, 0x3000)];
        cut(&mut one, 0x2000, 0x3000);
        assert_eq!(one, vec![R(0x1000, 0x2000, 0x3000), R(0x3000, 0x4000, 0x5000)]);
    }
}
