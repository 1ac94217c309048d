//! Advisory file locks, as Linux keeps them:
//!
//! * record locks (`fcntl` F_SETLK/F_SETLKW/F_GETLK), owned by a process:
//!   its threads share them, a fork does not inherit them, and closing
//!   any descriptor of the file releases all of them on that file;
//! * open-file-description record locks (F_OFD_*), owned by the open file
//!   description: shared through dup and fork, released when its last
//!   descriptor goes; they and process record locks conflict with each
//!   other (one space);
//! * `flock` locks, whole-file, also owned by the description, in a space
//!   of their own (they never conflict with record locks).
//!
//! Two locks conflict when their owners differ, their byte ranges overlap
//! and one of them is a write lock. An owner's locks of one kind never
//! overlap: a new one replaces what it covers (splitting the rest) and
//! merges with its neighbours of the same kind.
//!
//! A leaf: callers give keys (a file's device and inode), owners and
//! ranges; blocking (`Wait::FileLock`), deadlock detection and the
//! system-call forms are `sys_fs`'s.

use alloc::vec::Vec;

use crate::errno::ENOLCK;
use crate::rt::Global;

/// Most locks held at once in the sandbox (ENOLCK past it).
const MAX_LOCKS: usize = 4096;

/// A file: its device and inode numbers.
pub type Key = (u64, u64);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Owner {
    /// A process (its pid): fcntl record locks.
    Process(u32),
    /// An open file description (its address): OFD and flock locks.
    Description(usize),
}

/// Record locks (fcntl, OFD) or whole-file locks (flock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Record,
    Flock,
}

/// One lock, held or asked for (what an F_SETLKW or a blocking flock
/// waits to take): bytes `start..=end` of a file (`end` u64::MAX: to
/// any end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lock {
    pub space: Space,
    pub key: Key,
    pub owner: Owner,
    pub start: u64,
    pub end: u64,
    pub write: bool,
}

static LOCKS: Global<Vec<Lock>> = Global::new(Vec::new());

impl Lock {
    /// The first lock of another owner in its way (one of them a write
    /// lock, their ranges overlapping), if any.
    pub fn blocker(&self) -> Option<Lock> {
        LOCKS.get().iter().copied().find(|l| {
            l.space == self.space
                && l.key == self.key
                && l.owner != self.owner
                && l.start <= self.end
                && self.start <= l.end
                && (self.write || l.write)
        })
    }

    /// Takes it (see [`set`]; the caller has checked it is free).
    pub fn take(&self) -> Result<(), i64> {
        set(self.space, self.key, self.owner, self.start, self.end, Some(self.write))
    }
}

/// Gives `owner` a lock on `start..=end` (`kind` Some(write)) or takes
/// its locks there away (None), whatever it held there before. Conflicts
/// are the caller's to check first. ENOLCK when the table is full.
pub fn set(space: Space, key: Key, owner: Owner, start: u64, end: u64, kind: Option<bool>) -> Result<(), i64> {
    let locks = LOCKS.get();
    let mine = |l: &Lock| l.space == space && l.key == key && l.owner == owner;
    // What is left of the owner's locks beside the range.
    let mut kept: Vec<Lock> = Vec::new();
    for l in locks.iter().filter(|l| mine(l) && l.start <= end && start <= l.end) {
        if l.start < start {
            kept.push(Lock { end: start - 1, ..*l });
        }
        if l.end > end {
            kept.push(Lock { start: end + 1, ..*l });
        }
    }
    let mut new = kind.map(|write| Lock { space, key, owner, start, end, write });
    if let Some(n) = new.as_mut() {
        // Neighbours of the same kind, touching or overlapping, merge in.
        loop {
            let mut grew = false;
            for l in locks.iter().chain(kept.iter()) {
                let touches = l.start <= n.end.saturating_add(1) && n.start <= l.end.saturating_add(1);
                if mine(l) && l.write == n.write && touches && (l.start < n.start || l.end > n.end) {
                    n.start = n.start.min(l.start);
                    n.end = n.end.max(l.end);
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        let n = *n;
        kept.retain(|l| !(l.write == n.write && l.start >= n.start && l.end <= n.end));
    }
    let gone = |l: &Lock| {
        mine(l)
            && ((l.start <= end && start <= l.end)
                || new.is_some_and(|n| l.write == n.write && l.start >= n.start && l.end <= n.end))
    };
    let after = locks.len() - locks.iter().filter(|l| gone(l)).count() + kept.len() + new.is_some() as usize;
    if after > MAX_LOCKS && after > locks.len() {
        return Err(ENOLCK);
    }
    locks.retain(|l| !gone(l));
    locks.extend(kept);
    locks.extend(new);
    Ok(())
}

/// The kind of lock `owner` holds on the whole of `key` (flock's):
/// Some(write), or None.
pub fn held(space: Space, key: Key, owner: Owner) -> Option<bool> {
    LOCKS.get().iter().find(|l| l.space == space && l.key == key && l.owner == owner).map(|l| l.write)
}

/// Releases every lock `owner` holds (a process ended, a description
/// lost its last descriptor).
pub fn release_owner(owner: Owner) {
    LOCKS.get().retain(|l| l.owner != owner);
}

/// Releases process `pid`'s record locks on file `key` (it closed a
/// descriptor of the file).
pub fn release_file(key: Key, pid: u32) {
    LOCKS.get().retain(|l| !(l.key == key && l.owner == Owner::Process(pid)));
}

/// Whether any lock is held (spares the look-ups on close when none is).
pub fn any() -> bool {
    !LOCKS.get().is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Key = (1, 7);
    const A: Owner = Owner::Process(2);
    const B: Owner = Owner::Process(3);

    fn conflict(space: Space, key: Key, owner: Owner, start: u64, end: u64, write: bool) -> Option<Lock> {
        Lock { space, key, owner, start, end, write }.blocker()
    }

    fn held(owner: Owner) -> Vec<(u64, u64, bool)> {
        let mut v: Vec<_> =
            LOCKS.get().iter().filter(|l| l.owner == owner).map(|l| (l.start, l.end, l.write)).collect();
        v.sort();
        v
    }

    /// One test: the table is global.
    #[test]
    fn ranges_split_merge_conflict_and_are_bounded_as_on_linux() {
        LOCKS.get().clear();
        // A write lock over 0..=99, then a read lock in its middle splits it.
        set(Space::Record, K, A, 0, 99, Some(true)).unwrap();
        set(Space::Record, K, A, 40, 59, Some(false)).unwrap();
        assert_eq!(held(A), [(0, 39, true), (40, 59, false), (60, 99, true)]);
        // Unlocking a range cuts it out; locking it again as write merges.
        set(Space::Record, K, A, 45, 49, None).unwrap();
        assert_eq!(held(A), [(0, 39, true), (40, 44, false), (50, 59, false), (60, 99, true)]);
        set(Space::Record, K, A, 40, 59, Some(true)).unwrap();
        assert_eq!(held(A), [(0, 99, true)]);
        // Another owner: readers share with readers only.
        assert!(conflict(Space::Record, K, B, 99, u64::MAX, false).is_some());
        assert!(conflict(Space::Record, K, B, 100, u64::MAX, true).is_none());
        assert!(conflict(Space::Record, K, A, 0, 10, true).is_none(), "an owner never conflicts with itself");
        assert!(conflict(Space::Flock, K, B, 0, u64::MAX, true).is_none(), "flock is a space of its own");
        assert!(conflict(Space::Record, (1, 8), B, 0, 10, true).is_none(), "another file");
        set(Space::Record, K, A, 0, 99, Some(false)).unwrap();
        assert!(conflict(Space::Record, K, B, 0, 10, false).is_none());
        assert!(conflict(Space::Record, K, B, 0, 10, true).is_some());
        // To the end of any file, and adjacent pieces merge.
        set(Space::Record, K, A, 100, u64::MAX, Some(false)).unwrap();
        assert_eq!(held(A), [(0, u64::MAX, false)]);
        release_file(K, 2);
        assert!(held(A).is_empty());
        set(Space::Flock, K, Owner::Description(64), 0, u64::MAX, Some(true)).unwrap();
        release_owner(Owner::Description(64));
        assert!(!any());

        // The table is bounded.
        for i in 0..MAX_LOCKS as u64 {
            set(Space::Record, K, A, 2 * i, 2 * i, Some(true)).unwrap();
        }
        assert_eq!(set(Space::Record, K, A, 2 * MAX_LOCKS as u64, 2 * MAX_LOCKS as u64, Some(true)), Err(ENOLCK));
        // Unlocking needs no room, nor does a lock that merges.
        set(Space::Record, K, A, 0, 0, None).unwrap();
        set(Space::Record, K, A, 3, 3, Some(true)).unwrap();
        LOCKS.get().clear();
    }
}
