//! inotify: descriptors that report changes to the files and directories
//! they watch (`inotify_init1`, `inotify_add_watch`, `inotify_rm_watch`,
//! then `read`, `poll` and `epoll` on the descriptor), as Linux's do:
//! file watchers (Node's `fs.watch`, Python's watchdog, `tail -F`, build
//! tools) use them.
//!
//! The system calls that change the tree, open, read, write or close
//! files say what happened here ([`child_event`], [`event`], [`gone`]);
//! each watch on the node (or on its directory, with the entry's name)
//! queues the event for its descriptor. Changes the guest makes are
//! reported; the host's changes to a mounted directory are not (a mount
//! is read-only in the guest, and the host is not watched).

use alloc::collections::VecDeque;
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::errno::*;
use crate::rt::Global;
use crate::vfs::{Errno, Node, NodeRef};

pub const IN_ACCESS: u32 = 0x1;
pub const IN_MODIFY: u32 = 0x2;
pub const IN_ATTRIB: u32 = 0x4;
pub const IN_CLOSE_WRITE: u32 = 0x8;
pub const IN_CLOSE_NOWRITE: u32 = 0x10;
pub const IN_OPEN: u32 = 0x20;
pub const IN_MOVED_FROM: u32 = 0x40;
pub const IN_MOVED_TO: u32 = 0x80;
pub const IN_CREATE: u32 = 0x100;
pub const IN_DELETE: u32 = 0x200;
pub const IN_DELETE_SELF: u32 = 0x400;
pub const IN_MOVE_SELF: u32 = 0x800;
const IN_ALL_EVENTS: u32 = 0xfff;
const IN_Q_OVERFLOW: u32 = 0x4000;
const IN_IGNORED: u32 = 0x8000;
const IN_ONLYDIR: u32 = 0x0100_0000;
const IN_DONT_FOLLOW: u32 = 0x0200_0000;
const IN_EXCL_UNLINK: u32 = 0x0400_0000;
const IN_MASK_CREATE: u32 = 0x1000_0000;
const IN_MASK_ADD: u32 = 0x2000_0000;
pub const IN_ISDIR: u32 = 0x4000_0000;
const IN_ONESHOT: u32 = 0x8000_0000;
/// The flags a watch's mask may hold beside its events.
const WATCH_FLAGS: u32 = IN_ONLYDIR | IN_DONT_FOLLOW | IN_EXCL_UNLINK | IN_MASK_CREATE | IN_MASK_ADD | IN_ONESHOT;

/// Linux's defaults (`/proc/sys/fs/inotify/max_queued_events`,
/// `max_user_watches`, `max_user_instances`).
const MAX_QUEUED: usize = 16384;
const MAX_WATCHES: usize = 8192;
const MAX_INSTANCES: usize = 128;
/// `struct inotify_event`'s size before its name.
const EVENT_HEAD: usize = 16;
/// Longest name an event carries (NAME_MAX).
const NAME_MAX: usize = 255;

/// One inotify descriptor's watches and queued events.
pub struct Inotify {
    watches: RefCell<Vec<Watch>>,
    queue: RefCell<VecDeque<Event>>,
    next_wd: Cell<i32>,
}

struct Watch {
    wd: i32,
    node: Weak<Node>,
    mask: u32,
}

#[derive(PartialEq, Eq)]
struct Event {
    wd: i32,
    mask: u32,
    cookie: u32,
    name: Vec<u8>,
}

impl Event {
    /// IN_Q_OVERFLOW: events were lost.
    fn overflow() -> Event {
        Event { wd: -1, mask: IN_Q_OVERFLOW, cookie: 0, name: Vec::new() }
    }

    /// Bytes it takes in a read: the head, then the name with its NUL,
    /// padded to a multiple of the head's size.
    fn size(&self) -> usize {
        EVENT_HEAD + self.name_len()
    }

    fn name_len(&self) -> usize {
        if self.name.is_empty() {
            0
        } else {
            (self.name.len() + 1).next_multiple_of(EVENT_HEAD)
        }
    }
}

/// Every inotify descriptor (held weakly: a closed one drops out).
static INSTANCES: Global<Vec<Weak<Inotify>>> = Global::new(Vec::new());
/// Watches alive in all instances: none, and events cost nothing.
static WATCHES: Global<usize> = Global::new(0);
/// The cookie the next rename's two events share.
static COOKIE: Global<u32> = Global::new(0);

/// A new instance (EMFILE past Linux's per-user limit).
pub fn new_instance() -> Result<Rc<Inotify>, Errno> {
    let all = INSTANCES.get();
    all.retain(|i| i.strong_count() > 0);
    if all.len() >= MAX_INSTANCES {
        return Err(EMFILE);
    }
    all.try_reserve(1).map_err(|_| ENOMEM)?;
    let i = Rc::new(Inotify {
        watches: RefCell::new(Vec::new()),
        queue: RefCell::new(VecDeque::new()),
        next_wd: Cell::new(1),
    });
    all.push(Rc::downgrade(&i));
    Ok(i)
}

impl Drop for Inotify {
    fn drop(&mut self) {
        let n = self.watches.borrow().len();
        let w = WATCHES.get();
        *w = w.saturating_sub(n);
    }
}

/// The live instances (a list of their own: delivering an event may end
/// watches).
fn instances() -> Vec<Rc<Inotify>> {
    INSTANCES.get().iter().filter_map(Weak::upgrade).collect()
}

/// Whether any watch or directory notification exists (callers skip
/// finding names when none does).
pub fn active() -> bool {
    *WATCHES.get() > 0 || *DIR_HOOKED.get() > 0
}

/// Directory notifications (`fcntl(F_NOTIFY)`, kept by `dnotify.rs`):
/// while any is registered, every event also goes to the hook it
/// registers at start.
static DIR_HOOKED: Global<usize> = Global::new(0);
static DIR_HOOK: Global<fn(&NodeRef, u32)> = Global::new(|_, _| {});

/// Registers the directory-notification hook.
pub fn set_dir_hook(f: fn(&NodeRef, u32)) {
    *DIR_HOOK.get() = f;
}

/// How many directory notifications are registered now.
pub fn set_dir_notifications(n: usize) {
    *DIR_HOOKED.get() = n;
}

/// Given to the directory hook only: a rename, told to the old
/// directory (Linux's FS_RENAME; never queued for a watch).
pub const IN_DN_RENAME: u32 = 0x1000_0000;

/// inotify_add_watch on `node`: its watch descriptor (the same one again
/// for a node already watched).
pub fn add_watch(ino: &Inotify, node: &NodeRef, mask: u32) -> Result<u64, Errno> {
    if mask & IN_ALL_EVENTS == 0 || mask & !(IN_ALL_EVENTS | WATCH_FLAGS) != 0 {
        return Err(EINVAL);
    }
    if mask & IN_MASK_ADD != 0 && mask & IN_MASK_CREATE != 0 {
        return Err(EINVAL);
    }
    if mask & IN_ONLYDIR != 0 && !node.is_dir() {
        return Err(ENOTDIR);
    }
    let kept = mask & (IN_ALL_EVENTS | IN_ONESHOT | IN_EXCL_UNLINK);
    let mut watches = ino.watches.borrow_mut();
    if let Some(w) = watches.iter_mut().find(|w| w.node.as_ptr() == Rc::as_ptr(node)) {
        if mask & IN_MASK_CREATE != 0 {
            return Err(EEXIST);
        }
        w.mask = if mask & IN_MASK_ADD != 0 { w.mask | kept } else { kept };
        return Ok(w.wd as u64);
    }
    if *WATCHES.get() >= MAX_WATCHES {
        return Err(ENOSPC);
    }
    watches.try_reserve(1).map_err(|_| ENOMEM)?;
    let wd = ino.next_wd.get();
    ino.next_wd.set(wd.checked_add(1).ok_or(ENOSPC)?);
    watches.push(Watch { wd, node: Rc::downgrade(node), mask: kept });
    *WATCHES.get() += 1;
    Ok(wd as u64)
}

/// inotify_rm_watch: the watch goes, and its descriptor reads IN_IGNORED.
pub fn rm_watch(ino: &Inotify, wd: i32) -> Result<u64, Errno> {
    let mut watches = ino.watches.borrow_mut();
    let at = watches.iter().position(|w| w.wd == wd).ok_or(EINVAL)?;
    watches.remove(at);
    drop(watches);
    *WATCHES.get() -= 1;
    queue(ino, wd, IN_IGNORED, 0, &[]);
    Ok(0)
}

fn queue(ino: &Inotify, wd: i32, mask: u32, cookie: u32, name: &[u8]) {
    let mut owned = Vec::new();
    let e = match owned.try_reserve_exact(name.len()) {
        Ok(()) => {
            owned.extend_from_slice(name);
            Event { wd, mask, cookie, name: owned }
        }
        // No memory for it: the queue overflows, as when full.
        Err(_) => Event::overflow(),
    };
    let mut q = ino.queue.borrow_mut();
    // As Linux: an event the same as the last one unread is merged.
    if q.back() == Some(&e) {
        return;
    }
    if q.len() >= MAX_QUEUED || q.try_reserve(1).is_err() {
        let overflow = Event::overflow();
        if q.back() != Some(&overflow) {
            // (Room for it is kept: the bound counts events before it.)
            if q.try_reserve(1).is_ok() {
                q.push_back(overflow);
            }
        }
        return;
    }
    q.push_back(e);
    drop(q);
    crate::wait::notify();
}

/// `mask` happened to `node` itself (`name` empty) or to its entry
/// `name` (`node` is then the directory): every watch on `node` that asks
/// for it queues it. `cookie` ties a rename's two events.
pub fn event(node: &NodeRef, mask: u32, name: &[u8], cookie: u32) {
    deliver(node, mask, name, cookie, false);
}

/// [`event`]; `of_unlinked`: it is a directory's event about an entry
/// that no longer has a name (open, unlinked), which a watch with
/// IN_EXCL_UNLINK does not want.
fn deliver(node: &NodeRef, mask: u32, name: &[u8], cookie: u32, of_unlinked: bool) {
    if !active() {
        return;
    }
    let name = &name[..name.len().min(NAME_MAX)];
    for ino in instances() {
        let mut hits = Vec::new();
        let mut ended = Vec::new();
        for w in ino.watches.borrow().iter() {
            if of_unlinked && w.mask & IN_EXCL_UNLINK != 0 {
                continue;
            }
            if w.node.as_ptr() == Rc::as_ptr(node) && w.mask & mask & IN_ALL_EVENTS != 0 {
                hits.push(w.wd);
                if w.mask & IN_ONESHOT != 0 {
                    ended.push(w.wd);
                }
            }
        }
        for wd in hits {
            queue(&ino, wd, mask, cookie, name);
        }
        for wd in ended {
            let _ = rm_watch(&ino, wd);
        }
    }
    if *DIR_HOOKED.get() > 0 {
        (DIR_HOOK.get())(node, mask);
    }
}

/// Whether `child` is a file whose every name is gone (open, unlinked).
fn has_no_name(child: &NodeRef) -> bool {
    !child.is_dir() && child.meta.borrow().nlink == 0
}

/// `mask` happened to `child`, reached as `name` in `dir` (None: its
/// directory is not known): the child's watches get it, and so do its
/// directory's, with the name (as Linux's fsnotify reports an event on a
/// file to a watch on its parent).
pub fn child_event(dir: Option<&NodeRef>, child: &NodeRef, mask: u32, name: &[u8]) {
    if !active() {
        return;
    }
    let mask = if child.is_dir() { mask | IN_ISDIR } else { mask };
    if let Some(dir) = dir.filter(|d| !Rc::ptr_eq(d, child)) {
        let unlinked = has_no_name(child);
        deliver(dir, mask, name, 0, unlinked);
    }
    event(child, mask, &[], 0);
}

/// [`child_event`] for `child` reached as `name` in `dir` (`at`: where a
/// path or an open file's path leads, if found): the directory's watches
/// are told only if that name still names `child`, or `child` has no name
/// left (an open file keeps its last name and directory, as on Linux).
pub fn child_event_at(at: Option<(NodeRef, Vec<u8>)>, child: &NodeRef, mask: u32) {
    let unlinked = has_no_name(child);
    let at = at.filter(|(dir, name)| unlinked || crate::vfs::lookup(dir, name).is_ok_and(|n| Rc::ptr_eq(&n, child)));
    match at {
        Some((dir, name)) => child_event(Some(&dir), child, mask, &name),
        None => child_event(None, child, mask, &[]),
    }
}

/// An entry of `dir` appeared (`IN_CREATE`) or went (`IN_DELETE`).
pub fn entry_event(dir: &NodeRef, child: &NodeRef, mask: u32, name: &[u8]) {
    if active() {
        event(dir, if child.is_dir() { mask | IN_ISDIR } else { mask }, name, 0);
    }
}

/// A rename of `node` from `oname` in `odir` to `nname` in `ndir`,
/// over `replaced` (a node that had the new name), in Linux's order.
pub fn moved(odir: &NodeRef, oname: &[u8], ndir: &NodeRef, nname: &[u8], node: &NodeRef, replaced: Option<&NodeRef>) {
    if !active() {
        return;
    }
    let c = COOKIE.get();
    *c = c.wrapping_add(1);
    let cookie = *c;
    let isdir = if node.is_dir() { IN_ISDIR } else { 0 };
    // (Linux's FS_RENAME, to the old directory, comes first.)
    if *DIR_HOOKED.get() > 0 {
        (DIR_HOOK.get())(odir, IN_DN_RENAME);
    }
    event(odir, IN_MOVED_FROM | isdir, oname, cookie);
    event(ndir, IN_MOVED_TO | isdir, nname, cookie);
    if let Some(r) = replaced {
        event(r, IN_ATTRIB, &[], 0);
    }
    event(node, IN_MOVE_SELF, &[], 0);
    if let Some(r) = replaced {
        if r.is_dir() || r.meta.borrow().nlink == 0 {
            gone(r);
        }
    }
}

/// `node` was removed as `name` from `dir`, in Linux's order: a file's
/// watches see its link count change; a node with no name left (a file)
/// or removed (a directory) is gone; then the directory's watches see
/// the name go. (Linux reports a file still open as gone only at its
/// last close; here it is gone with its last name.)
pub fn removed(dir: &NodeRef, node: &NodeRef, name: &[u8]) {
    if !active() {
        return;
    }
    if !node.is_dir() {
        event(node, IN_ATTRIB, &[], 0);
    }
    if node.is_dir() || node.meta.borrow().nlink == 0 {
        gone(node);
    }
    entry_event(dir, node, IN_DELETE, name);
}

/// `node` is gone: `IN_DELETE_SELF`, then each watch on it ends
/// (`IN_IGNORED`).
fn gone(node: &NodeRef) {
    event(node, IN_DELETE_SELF, &[], 0);
    for ino in instances() {
        let wds: Vec<i32> =
            ino.watches.borrow().iter().filter(|w| w.node.as_ptr() == Rc::as_ptr(node)).map(|w| w.wd).collect();
        for wd in wds {
            let _ = rm_watch(&ino, wd);
        }
    }
}

/// Whether a read would return events.
pub fn readable(ino: &Inotify) -> bool {
    !ino.queue.borrow().is_empty()
}

/// Bytes the queued events take (FIONREAD).
pub fn pending_bytes(ino: &Inotify) -> usize {
    ino.queue.borrow().iter().map(Event::size).sum()
}

/// Reads whole events into `out`: None with none queued, EINVAL when the
/// first does not fit.
pub fn read(ino: &Inotify, out: &mut [u8]) -> Option<Result<usize, Errno>> {
    let mut q = ino.queue.borrow_mut();
    if q.is_empty() {
        return None;
    }
    let mut at = 0;
    while let Some(e) = q.front() {
        let size = e.size();
        if at + size > out.len() {
            break;
        }
        let rec = &mut out[at..at + size];
        rec.fill(0);
        rec[0..4].copy_from_slice(&e.wd.to_le_bytes());
        rec[4..8].copy_from_slice(&e.mask.to_le_bytes());
        rec[8..12].copy_from_slice(&e.cookie.to_le_bytes());
        rec[12..16].copy_from_slice(&(e.name_len() as u32).to_le_bytes());
        rec[EVENT_HEAD..EVENT_HEAD + e.name.len()].copy_from_slice(&e.name);
        at += size;
        q.pop_front();
    }
    Some(if at == 0 { Err(EINVAL) } else { Ok(at) })
}

/// Flags of inotify_add_watch's path lookup: whether to follow a final
/// symbolic link.
pub fn follows(mask: u32) -> bool {
    mask & IN_DONT_FOLLOW == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_packed_as_linux_packs_them() {
        let e = Event { wd: 3, mask: IN_CREATE, cookie: 0, name: b"abc".to_vec() };
        assert_eq!(e.size(), 32);
        let e = Event { wd: 3, mask: IN_CREATE, cookie: 0, name: [b'x'; 15].to_vec() };
        assert_eq!(e.size(), 32, "15 bytes and a NUL fill one block");
        let e = Event { wd: 3, mask: IN_CREATE, cookie: 0, name: [b'x'; 16].to_vec() };
        assert_eq!(e.size(), 48);
        assert_eq!(Event { wd: 1, mask: IN_IGNORED, cookie: 0, name: Vec::new() }.size(), 16);
    }
}
