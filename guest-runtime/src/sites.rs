//! The record of one address space's rewritten system-call sites and the
//! stub areas they jump to: data only, kept in the address space (so a
//! fork copies it and an execve starts empty); `rewrite.rs` acts on it.

use alloc::vec::Vec;

use alloc::rc::Rc;
use core::any::Any;

use hvsandbox_abi::PAGE_SIZE as PAGE;

/// Bytes of one stub area.
pub const AREA_LEN: u64 = 16 * PAGE;

/// A stub area: `used` bytes of it are taken.
#[derive(Clone, Copy)]
pub struct Area {
    pub start: u64,
    pub used: u64,
}

/// A rewritten site: `len` bytes at `at` (the start of the instructions
/// moved before a `syscall` or `cpuid`, or that instruction itself) now
/// jump to `stub`; `orig` holds what they were (the stub runs the moved
/// instructions first).
#[derive(Clone, Copy)]
pub struct Site {
    pub at: u64,
    pub len: u8,
    pub orig: [u8; 5],
    pub stub: u64,
    /// A rewritten `syscall` jumps (rel8) to padding nearby, where a `jmp
    /// rel32` to the stub now is: its address and original bytes.
    pub pad: Option<(u64, [u8; 5])>,
    /// Bytes of the program's instructions at `at` the stub starts with
    /// (copied in order: a fault at `stub + k` is one at `at + k`).
    pub moved: u8,
}

impl Site {
    /// Whether any byte it changed, or stands in for, lies in `[start,
    /// end)`: the bytes it changed, and with moved instructions those and
    /// the two-byte `syscall` or `cpuid` after them (the stub returns
    /// past it, so it must stay as it was, whichever page it is in).
    pub fn touches(&self, start: u64, end: u64) -> bool {
        let hit = |a: u64, n: u64| a < end && a + n > start;
        let span = if self.moved > 0 { u64::from(self.moved) + 2 } else { u64::from(self.len) };
        hit(self.at, span) || self.pad.is_some_and(|(p, _)| hit(p, 5))
    }
}

/// A private mapping of a file: `[start, end)` shows its bytes from
/// `offset` on (where the rewriter finds the function a site is in).
/// `file` is the file's node (`vfs::Node`; unnamed here, as this record
/// lives in the memory layer, below the filesystem).
#[derive(Clone)]
pub struct Code {
    pub start: u64,
    pub end: u64,
    pub offset: u64,
    pub file: Rc<dyn Any>,
}

impl crate::filerange::FileRange for Code {
    fn span(&self) -> (u64, u64) {
        (self.start, self.end)
    }
    fn offset(&self) -> u64 {
        self.offset
    }
    fn narrowed(&self, start: u64, end: u64, offset: u64) -> Code {
        Code { start, end, offset, file: self.file.clone() }
    }
}

/// Most file mappings remembered (beyond, sites in new ones stay slow).
const MAX_CODE: usize = 1024;

/// A `seen` count that marks a site the rewriter has refused.
pub const REFUSED: u32 = u32::MAX;

/// Slots of the table of sites seen but not rewritten yet.
pub const HOT_SLOTS: usize = 256;

/// One address space's rewritten sites.
#[derive(Clone)]
pub struct Sites {
    pub areas: Vec<Area>,
    pub sites: Vec<Site>,
    /// File mappings, by address (see `Code`).
    pub code: Vec<Code>,
    /// Sites seen by the slow path, by address hash: (address, times).
    pub seen: [(u64, u32); HOT_SLOTS],
}

impl Sites {
    pub const fn new() -> Sites {
        Sites { areas: Vec::new(), sites: Vec::new(), code: Vec::new(), seen: [(0, 0); HOT_SLOTS] }
    }

    /// `[start, end)` now shows `node`'s bytes from `offset` on.
    pub fn code_mapped(&mut self, start: u64, end: u64, offset: u64, file: Rc<dyn Any>) {
        self.code_removed(start, end);
        if self.code.len() < MAX_CODE && self.code.try_reserve(1).is_ok() {
            let i = self.code.partition_point(|c| c.start < start);
            self.code.insert(i, Code { start, end, offset, file });
        }
    }

    /// `[start, end)` no longer shows what it did: its file mappings are
    /// cut out (pieces outside it stay), and its sites are unknown again.
    pub fn code_removed(&mut self, start: u64, end: u64) {
        for slot in self.seen.iter_mut().filter(|s| s.0 >= start && s.0 < end) {
            *slot = (0, 0);
        }
        crate::filerange::cut(&mut self.code, start, end);
    }

    /// The mappings of the file whose node `file` points at, in address
    /// order: (start, end, file offset).
    pub fn mappings_of(&self, file: *const u8) -> Vec<(u64, u64, u64)> {
        self.code
            .iter()
            .filter(|c| Rc::as_ptr(&c.file) as *const u8 == file)
            .map(|c| (c.start, c.end, c.offset))
            .collect()
    }

    /// The address where file offset `off` (with `len` bytes after it) is
    /// in one of `maps` (start, end, file offset), as [`Sites::mappings_of`]
    /// lists them.
    pub fn va_of(maps: &[(u64, u64, u64)], off: u64, len: u64) -> Option<u64> {
        maps.iter().find(|m| off >= m.2 && off + len - m.2 <= m.1 - m.0).map(|m| m.0 + (off - m.2))
    }

    /// The file mapping holding `va`.
    pub fn code_at(&self, va: u64) -> Option<&Code> {
        let i = self.code.partition_point(|c| c.start <= va);
        self.code[..i].last().filter(|c| va < c.end)
    }

    /// Marks `at` as a site not to rewrite (until its code changes).
    pub fn refuse(&mut self, at: u64) {
        self.seen[slot_of(at)] = (at, REFUSED);
    }

    /// Counts one more slow call from `at`; returns how many it has made
    /// (as far as the table remembers: another site in the slot resets it).
    pub fn seen(&mut self, at: u64) -> u32 {
        let slot = &mut self.seen[slot_of(at)];
        if slot.0 == at {
            slot.1 = slot.1.saturating_add(1);
        } else {
            *slot = (at, 1);
        }
        slot.1
    }
}

fn slot_of(at: u64) -> usize {
    (at ^ at >> 6 ^ at >> 12) as usize % HOT_SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_mappings_are_cut_where_memory_changes() {
        let mut s = Sites::new();
        let file: Rc<dyn Any> = Rc::new(1u8);
        s.code_mapped(0x1000, 0x5000, 0x10000, file.clone());
        s.code_mapped(0x8000, 0x9000, 0, file);
        assert_eq!(s.code_at(0x2345).map(|c| (c.start, c.offset)), Some((0x1000, 0x10000)));
        assert!(s.code_at(0x5000).is_none() && s.code_at(0xfff).is_none());
        // A hole in the middle leaves two pieces, offsets kept.
        s.code_removed(0x2000, 0x3000);
        let pieces: Vec<_> = s.code.iter().map(|c| (c.start, c.end, c.offset)).collect();
        assert_eq!(pieces, [(0x1000, 0x2000, 0x10000), (0x3000, 0x5000, 0x12000), (0x8000, 0x9000, 0)]);
        assert!(s.code_at(0x2800).is_none());
        // A refused site is known again once its code changes.
        assert_eq!((s.seen(0x3010), s.seen(0x3010)), (1, 2));
        s.refuse(0x3010);
        assert_eq!(s.seen(0x3010), REFUSED);
        s.code_removed(0x3000, 0x4000);
        assert_eq!(s.seen(0x3010), 1);
    }
}
