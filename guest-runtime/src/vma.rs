//! A space's mappings (VMAs): a sorted list of disjoint ranges with their
//! protection, split on removal and merged with equal neighbours on
//! insertion. Pure list operations; `mm.rs` keeps the page tables in step.

use alloc::vec::Vec;

use hvsandbox_abi::user;

use crate::errno::ENOMEM;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

/// Most mappings one address space may have (Linux: max_map_count).
pub const MAX_VMAS: usize = 16384;

#[derive(Clone, Copy)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
}

/// Removes `[start, end)` from the VMA list (splitting as needed).
pub fn remove(vmas: &mut Vec<Vma>, start: u64, end: u64) -> Result<(), i64> {
    let mut i = 0;
    while i < vmas.len() {
        let v = vmas[i];
        if v.end <= start || v.start >= end {
            i += 1;
            continue;
        }
        if v.start < start && v.end > end {
            // Split into two.
            if vmas.len() >= MAX_VMAS || vmas.try_reserve(1).is_err() {
                return Err(ENOMEM);
            }
            vmas[i] = Vma { end: start, ..v };
            vmas.insert(i + 1, Vma { start: end, ..v });
            return Ok(());
        }
        if v.start < start {
            vmas[i].end = start;
            i += 1;
        } else if v.end > end {
            vmas[i].start = end;
            i += 1;
        } else {
            vmas.remove(i);
        }
    }
    Ok(())
}

/// Inserts a VMA (the range must be free in the list), merging with an
/// adjacent one of the same protection.
pub fn insert(vmas: &mut Vec<Vma>, vma: Vma) -> Result<(), i64> {
    let pos = vmas.iter().position(|v| v.start >= vma.end).unwrap_or(vmas.len());
    if pos > 0 && vmas[pos - 1].end == vma.start && vmas[pos - 1].prot == vma.prot {
        vmas[pos - 1].end = vma.end;
        if pos < vmas.len() && vmas[pos].start == vma.end && vmas[pos].prot == vma.prot {
            vmas[pos - 1].end = vmas[pos].end;
            vmas.remove(pos);
        }
        return Ok(());
    }
    if pos < vmas.len() && vmas[pos].start == vma.end && vmas[pos].prot == vma.prot {
        vmas[pos].start = vma.start;
        return Ok(());
    }
    if vmas.len() >= MAX_VMAS || vmas.try_reserve(1).is_err() {
        return Err(ENOMEM);
    }
    vmas.insert(pos, vma);
    Ok(())
}

/// True if every byte of `[va, va + len)` is in a mapping allowing `prot`.
pub fn access_ok(vmas: &[Vma], va: u64, len: u64, prot: u32) -> bool {
    if len == 0 {
        return true;
    }
    let Some(end) = va.checked_add(len) else { return false };
    if end > user::ADDR_LIMIT {
        return false;
    }
    let mut at = va;
    for v in vmas {
        if v.end <= at {
            continue;
        }
        if v.start > at || v.prot & prot != prot || v.prot & (PROT_READ | PROT_WRITE) == 0 {
            return false;
        }
        at = v.end;
        if at >= end {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::PAGE;

    const RW: u32 = PROT_READ | PROT_WRITE;

    fn vma(start: u64, end: u64, prot: u32) -> Vma {
        Vma { start: start * PAGE, end: end * PAGE, prot }
    }

    fn ranges(v: &[Vma]) -> Vec<(u64, u64, u32)> {
        v.iter().map(|v| (v.start / PAGE, v.end / PAGE, v.prot)).collect()
    }

    #[test]
    fn insert_keeps_order_and_merges_equal_neighbours() {
        let mut v = Vec::new();
        insert(&mut v, vma(30, 40, RW)).unwrap();
        insert(&mut v, vma(10, 20, RW)).unwrap();
        assert_eq!(ranges(&v), [(10, 20, RW), (30, 40, RW)]);
        // Fills the gap: one mapping.
        insert(&mut v, vma(20, 30, RW)).unwrap();
        assert_eq!(ranges(&v), [(10, 40, RW)]);
        // Adjacent with another protection: not merged.
        insert(&mut v, vma(40, 50, PROT_READ)).unwrap();
        insert(&mut v, vma(5, 10, PROT_READ)).unwrap();
        assert_eq!(ranges(&v), [(5, 10, PROT_READ), (10, 40, RW), (40, 50, PROT_READ)]);
        // Merges with the following one only.
        insert(&mut v, vma(50, 60, PROT_READ)).unwrap();
        insert(&mut v, vma(0, 5, PROT_READ)).unwrap();
        assert_eq!(ranges(&v), [(0, 10, PROT_READ), (10, 40, RW), (40, 60, PROT_READ)]);
    }

    #[test]
    fn remove_splits_trims_and_drops() {
        let mut v = Vec::new();
        insert(&mut v, vma(10, 40, RW)).unwrap();
        insert(&mut v, vma(50, 60, PROT_READ)).unwrap();
        // A hole in the middle splits the mapping.
        remove(&mut v, 20 * PAGE, 25 * PAGE).unwrap();
        assert_eq!(ranges(&v), [(10, 20, RW), (25, 40, RW), (50, 60, PROT_READ)]);
        // Across two mappings: trims one's end and the other's start.
        remove(&mut v, 35 * PAGE, 55 * PAGE).unwrap();
        assert_eq!(ranges(&v), [(10, 20, RW), (25, 35, RW), (55, 60, PROT_READ)]);
        // Covering whole mappings drops them; nothing mapped is fine.
        remove(&mut v, 0, 36 * PAGE).unwrap();
        assert_eq!(ranges(&v), [(55, 60, PROT_READ)]);
        remove(&mut v, 0, 50 * PAGE).unwrap();
        assert_eq!(ranges(&v), [(55, 60, PROT_READ)]);
    }

    #[test]
    fn the_mapping_count_is_capped() {
        let mut v = Vec::new();
        for i in 0..MAX_VMAS as u64 {
            // Alternating protections: nothing merges.
            insert(&mut v, vma(2 * i + 16, 2 * i + 17, if i % 2 == 0 { RW } else { PROT_READ })).unwrap();
        }
        assert_eq!(insert(&mut v, vma(1 << 30, (1 << 30) + 1, RW)), Err(ENOMEM));
        // A split needs one more entry too.
        let first = v[0];
        assert_eq!(remove(&mut v, first.start, first.start), Ok(()));
        let mut one = alloc::vec![vma(16, 20, RW)];
        one.extend(v.iter().skip(1).take(MAX_VMAS - 1).map(|x| Vma {
            start: x.start + (8 << 20),
            end: x.end + (8 << 20),
            ..*x
        }));
        assert_eq!(one.len(), MAX_VMAS);
        assert_eq!(remove(&mut one, 17 * PAGE, 18 * PAGE), Err(ENOMEM));
        // Merging needs none.
        assert_eq!(insert(&mut one, vma(20, 21, RW)), Ok(()));
    }

    #[test]
    fn access_needs_every_byte_mapped_with_the_protection() {
        let mut v = Vec::new();
        insert(&mut v, vma(10, 20, RW)).unwrap();
        insert(&mut v, vma(20, 30, PROT_READ)).unwrap();
        insert(&mut v, vma(40, 50, 0)).unwrap();
        let at = |p: u64| p * PAGE;
        assert!(access_ok(&v, at(15), 10 * PAGE, PROT_READ), "across two mappings");
        assert!(!access_ok(&v, at(15), 10 * PAGE, PROT_WRITE), "the second is read-only");
        assert!(access_ok(&v, at(19), PAGE, PROT_WRITE));
        assert!(!access_ok(&v, at(29), 2 * PAGE, PROT_READ), "runs into the gap");
        assert!(!access_ok(&v, at(40), 1, PROT_READ), "PROT_NONE");
        assert!(!access_ok(&v, at(5), 1, PROT_READ), "unmapped");
        assert!(access_ok(&v, at(5), 0, PROT_READ), "nothing to access");
        assert!(!access_ok(&v, u64::MAX - 2, 8, PROT_READ), "wraps");
        assert!(!access_ok(&v, user::ADDR_LIMIT - 1, 2, PROT_READ), "past the user range");
    }
}
