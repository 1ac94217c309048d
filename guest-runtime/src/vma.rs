//! A space's mappings (VMAs): a sorted list of disjoint ranges with their
//! protection, split on removal and merged with equal neighbours on
//! insertion. Pure list operations; `mm.rs` keeps the page tables in step.
//!
//! A shared mapping (MAP_SHARED) names the object whose pages it shows
//! (a file's data; an anonymous shared mapping is an unnamed file) and
//! the page of the object at its start: its pages are the object's
//! frames, the same in every process that maps it.

use alloc::rc::Rc;
use alloc::vec::Vec;

use hvsandbox_abi::user;

use crate::errno::ENOMEM;

pub const PROT_READ: u32 = 1;
pub const PROT_WRITE: u32 = 2;
pub const PROT_EXEC: u32 = 4;

/// Most mappings one address space may have (Linux: max_map_count).
pub const MAX_VMAS: usize = 16384;

#[derive(Clone)]
pub struct Vma {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    /// What a shared mapping shows; None for private memory.
    pub shared: Option<Shared>,
    /// What a fork does with it (madvise).
    pub on_fork: OnFork,
}

/// What a fork does with a mapping: by default the child has the same
/// (a copy of private memory).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct OnFork {
    /// MADV_DONTFORK: the child has nothing there.
    pub skip: bool,
    /// MADV_WIPEONFORK: the child's is zero-filled.
    pub wipe: bool,
}

/// The object behind a shared mapping. It owns its frames: they stay
/// valid while a mapping holds the object (page-table entries never
/// outlive the mapping that made them).
pub trait SharedObject {
    /// The frame holding page `index` (allocated if it is a hole), None
    /// past the object's end (the access is a SIGBUS), or an errno.
    fn page(&self, index: u64) -> Result<Option<u64>, i64>;
    /// The same for every mapping of the same object (futex keys).
    fn key(&self) -> usize;
}

#[derive(Clone)]
pub struct Shared {
    pub obj: Rc<dyn SharedObject>,
    /// The object's page at the mapping's start.
    pub pgoff: u64,
    /// The file was opened for writing: PROT_WRITE may be added.
    pub may_write: bool,
}

impl Vma {
    pub fn private(start: u64, end: u64, prot: u32) -> Vma {
        Vma { start, end, prot, shared: None, on_fork: OnFork::default() }
    }

    /// Private, executable and not writable: code only an mprotect or a
    /// new mapping changes.
    pub fn is_private_code(&self) -> bool {
        self.shared.is_none() && self.prot & PROT_EXEC != 0 && self.prot & PROT_WRITE == 0
    }

    /// The part of this mapping from `at` on (`at` within it).
    fn from(&self, at: u64) -> Vma {
        let mut v = self.clone();
        if let Some(s) = &mut v.shared {
            s.pgoff += (at - self.start) / PAGE;
        }
        v.start = at;
        v
    }

    /// The object's page shown at `va` (within the mapping).
    pub fn object_page(&self, va: u64) -> Option<(&Rc<dyn SharedObject>, u64)> {
        let s = self.shared.as_ref()?;
        Some((&s.obj, s.pgoff + (va - self.start) / PAGE))
    }

    /// Whether `next`, starting where this one ends, can be one mapping
    /// with it.
    fn joins(&self, next: &Vma) -> bool {
        if self.end != next.start || self.prot != next.prot || self.on_fork != next.on_fork {
            return false;
        }
        match (&self.shared, &next.shared) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                Rc::ptr_eq(&a.obj, &b.obj)
                    && a.may_write == b.may_write
                    && a.pgoff + (self.end - self.start) / PAGE == b.pgoff
            }
            _ => false,
        }
    }
}

const PAGE: u64 = hvsandbox_abi::PAGE_SIZE;

/// Removes `[start, end)` from the VMA list (splitting as needed).
pub fn remove(vmas: &mut Vec<Vma>, start: u64, end: u64) -> Result<(), i64> {
    let mut i = 0;
    while i < vmas.len() {
        let (vs, ve) = (vmas[i].start, vmas[i].end);
        if ve <= start || vs >= end {
            i += 1;
            continue;
        }
        if vs < start && ve > end {
            // Split into two.
            if vmas.len() >= MAX_VMAS || vmas.try_reserve(1).is_err() {
                return Err(ENOMEM);
            }
            let tail = vmas[i].from(end);
            vmas[i].end = start;
            vmas.insert(i + 1, tail);
            return Ok(());
        }
        if vs < start {
            vmas[i].end = start;
            i += 1;
        } else if ve > end {
            vmas[i] = vmas[i].from(end);
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
    if pos > 0 && vmas[pos - 1].joins(&vma) {
        vmas[pos - 1].end = vma.end;
        if pos < vmas.len() && vma.joins(&vmas[pos]) {
            vmas[pos - 1].end = vmas[pos].end;
            vmas.remove(pos);
        }
        return Ok(());
    }
    if pos < vmas.len() && vma.joins(&vmas[pos]) {
        let end = vmas[pos].end;
        vmas[pos] = Vma { end, ..vma };
        return Ok(());
    }
    if vmas.len() >= MAX_VMAS || vmas.try_reserve(1).is_err() {
        return Err(ENOMEM);
    }
    vmas.insert(pos, vma);
    Ok(())
}

/// Splits the mapping containing `at` (strictly inside it) in two.
fn split_at(vmas: &mut Vec<Vma>, at: u64) -> Result<(), i64> {
    let Some(i) = vmas.iter().position(|v| v.start < at && at < v.end) else { return Ok(()) };
    if vmas.len() >= MAX_VMAS || vmas.try_reserve(1).is_err() {
        return Err(ENOMEM);
    }
    let tail = vmas[i].from(at);
    vmas[i].end = at;
    vmas.insert(i + 1, tail);
    Ok(())
}

/// Gives every mapping in `[start, end)` protection `prot`, keeping what
/// each maps (mprotect); neighbours that become equal are merged. On
/// ENOMEM (too many mappings) nothing has changed protection.
pub fn protect(vmas: &mut Vec<Vma>, start: u64, end: u64, prot: u32) -> Result<(), i64> {
    update(vmas, start, end, |v| v.prot = prot)
}

/// Changes every mapping in `[start, end)` with `change`, splitting those
/// across its edges; neighbours that become equal are merged. On ENOMEM
/// (too many mappings) nothing has changed.
pub fn update(vmas: &mut Vec<Vma>, start: u64, end: u64, change: impl Fn(&mut Vma)) -> Result<(), i64> {
    split_at(vmas, start)?;
    split_at(vmas, end)?;
    for v in vmas.iter_mut().filter(|v| v.start >= start && v.end <= end) {
        change(v);
    }
    let mut i = 1;
    while i < vmas.len() {
        if vmas[i - 1].joins(&vmas[i]) {
            vmas[i - 1].end = vmas[i].end;
            vmas.remove(i);
        } else {
            i += 1;
        }
    }
    Ok(())
}

/// True if every page of `[start, end)` is in some mapping.
pub fn all_mapped(vmas: &[Vma], start: u64, end: u64) -> bool {
    let mut at = start;
    for v in vmas {
        if at >= end {
            break;
        }
        if v.end <= at {
            continue;
        }
        if v.start > at {
            return false;
        }
        at = v.end;
    }
    at >= end
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

    const RW: u32 = PROT_READ | PROT_WRITE;

    fn vma(start: u64, end: u64, prot: u32) -> Vma {
        Vma::private(start * PAGE, end * PAGE, prot)
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
    fn fork_advice_splits_and_merges_back_and_holes_show() {
        let mut v = alloc::vec![vma(10, 40, RW), vma(50, 60, RW)];
        update(&mut v, 20 * PAGE, 30 * PAGE, |m| m.on_fork.wipe = true).unwrap();
        assert_eq!(ranges(&v), [(10, 20, RW), (20, 30, RW), (30, 40, RW), (50, 60, RW)]);
        assert!(v[1].on_fork.wipe && !v[0].on_fork.wipe && !v[2].on_fork.wipe);
        // Undone: one mapping again.
        update(&mut v, 20 * PAGE, 30 * PAGE, |m| m.on_fork.wipe = false).unwrap();
        assert_eq!(ranges(&v), [(10, 40, RW), (50, 60, RW)]);
        assert!(all_mapped(&v, 10 * PAGE, 40 * PAGE));
        assert!(!all_mapped(&v, 30 * PAGE, 55 * PAGE), "40..50 is a hole");
        assert!(!all_mapped(&v, 55 * PAGE, 61 * PAGE), "past the end");
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
        let first = v[0].clone();
        assert_eq!(remove(&mut v, first.start, first.start), Ok(()));
        let mut one = alloc::vec![vma(16, 20, RW)];
        one.extend(v.iter().skip(1).take(MAX_VMAS - 1).map(|x| Vma {
            start: x.start + (8 << 20),
            end: x.end + (8 << 20),
            ..x.clone()
        }));
        assert_eq!(one.len(), MAX_VMAS);
        assert_eq!(remove(&mut one, 17 * PAGE, 18 * PAGE), Err(ENOMEM));
        // Merging needs none.
        assert_eq!(insert(&mut one, vma(20, 21, RW)), Ok(()));
    }

    struct Obj;
    impl SharedObject for Obj {
        fn page(&self, index: u64) -> Result<Option<u64>, i64> {
            Ok(Some(index))
        }
        fn key(&self) -> usize {
            7
        }
    }

    fn shared(start: u64, end: u64, obj: &Rc<dyn SharedObject>, pgoff: u64) -> Vma {
        Vma { shared: Some(Shared { obj: obj.clone(), pgoff, may_write: true }), ..vma(start, end, RW) }
    }

    fn pgoffs(v: &[Vma]) -> Vec<(u64, u64, u32, Option<u64>)> {
        v.iter().map(|v| (v.start / PAGE, v.end / PAGE, v.prot, v.shared.as_ref().map(|s| s.pgoff))).collect()
    }

    #[test]
    fn shared_mappings_keep_their_object_offsets_when_cut() {
        let obj: Rc<dyn SharedObject> = Rc::new(Obj);
        let mut v = Vec::new();
        insert(&mut v, shared(10, 20, &obj, 100)).unwrap();
        // A hole: the tail shows the object's page 100 + 5.
        remove(&mut v, 12 * PAGE, 15 * PAGE).unwrap();
        assert_eq!(pgoffs(&v), [(10, 12, RW, Some(100)), (15, 20, RW, Some(105))]);
        assert_eq!(v[1].object_page(16 * PAGE).map(|(_, i)| i), Some(106));
        // Trimming the start moves the offset too.
        remove(&mut v, 15 * PAGE, 16 * PAGE).unwrap();
        assert_eq!(pgoffs(&v), [(10, 12, RW, Some(100)), (16, 20, RW, Some(106))]);
        // mprotect of the middle splits in three, keeping offsets, and
        // merges back when the protection is equal again.
        protect(&mut v, 17 * PAGE, 18 * PAGE, PROT_READ).unwrap();
        assert_eq!(
            pgoffs(&v),
            [(10, 12, RW, Some(100)), (16, 17, RW, Some(106)), (17, 18, PROT_READ, Some(107)), (18, 20, RW, Some(108))]
        );
        protect(&mut v, 17 * PAGE, 18 * PAGE, RW).unwrap();
        assert_eq!(pgoffs(&v), [(10, 12, RW, Some(100)), (16, 20, RW, Some(106))]);
        // Refilling the hole with the right pages of the same object merges;
        // other pages, another object or private memory do not.
        insert(&mut v, shared(12, 16, &obj, 102)).unwrap();
        assert_eq!(pgoffs(&v), [(10, 20, RW, Some(100))]);
        let other: Rc<dyn SharedObject> = Rc::new(Obj);
        insert(&mut v, shared(20, 21, &other, 110)).unwrap();
        insert(&mut v, shared(21, 22, &obj, 112)).unwrap();
        insert(&mut v, vma(22, 23, RW)).unwrap();
        insert(&mut v, shared(9, 10, &obj, 0)).unwrap();
        assert_eq!(v.len(), 5);
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
