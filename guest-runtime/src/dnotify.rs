//! Directory notifications (`fcntl(F_NOTIFY)`, "dnotify"): a
//! descriptor of a directory asks to be told of changes in it; each one
//! (as inotify sees it, `inotify.rs`, which hands every event here while
//! any is asked for) signals the descriptor's owner (F_SETOWN; SIGIO or
//! F_SETSIG's signal), as Linux's dnotify maps its events.

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;

use crate::errno::*;
use crate::file::OpenFile;
use crate::rt::Global;
use crate::vfs::{Errno, Node, NodeRef};

/// A directory notification: changes in `dir` of the kinds in `mask`
/// (`DN_*`) signal the owner of `file`, the description it was asked
/// through, once or (DN_MULTISHOT) each time, until that description
/// closes (dropped at the next event) or asks for nothing.
struct DirNotify {
    dir: Weak<Node>,
    file: Weak<OpenFile>,
    /// The descriptor it was asked through (the siginfo's si_fd).
    fd: u32,
    mask: u32,
}

static DIR_NOTIFY: Global<Vec<DirNotify>> = Global::new(Vec::new());

const DN_MULTISHOT: u32 = 0x8000_0000;
/// fcntl(F_NOTIFY) on `of`, a directory `dir`: adds `mask`'s kinds to
/// what it asks for (none: it asks for nothing more). As Linux, the
/// caller's process becomes the description's owner.
pub fn dir_notify(
    of: &Rc<OpenFile>,
    fd: u32,
    dir: &NodeRef,
    mask: u32,
    owner: crate::wait::Owner,
) -> Result<(), Errno> {
    let all = DIR_NOTIFY.get();
    let same = |d: &DirNotify| d.file.as_ptr() == Rc::as_ptr(of) && d.dir.as_ptr() == Rc::as_ptr(dir);
    let cancel = mask & !DN_MULTISHOT == 0;
    // Those of closed descriptors (or gone directories) go too: the list
    // stays as long as the live ones.
    all.retain(|d| d.file.strong_count() > 0 && d.dir.strong_count() > 0 && !(cancel && same(d)));
    if !cancel {
        of.owner.set(owner);
        if let Some(d) = all.iter_mut().find(|d| same(d)) {
            d.mask |= mask;
            d.fd = fd;
        } else if all.try_reserve(1).is_ok() {
            all.push(DirNotify { dir: Rc::downgrade(dir), file: Rc::downgrade(of), fd, mask });
        } else {
            crate::inotify::set_dir_notifications(all.len());
            return Err(ENOMEM);
        }
    }
    crate::inotify::set_dir_notifications(all.len());
    Ok(())
}

/// An event on `node` (`inotify`'s mask): the notifications on it that
/// ask for its kind signal their owners. (Registered with inotify at
/// start.)
pub fn dir_event(node: &NodeRef, mask: u32) {
    use crate::inotify::*;
    // Linux's dnotify: DN_CREATE takes a name moved in, DN_DELETE one
    // moved out, DN_RENAME any rename from the directory.
    let kind = match mask & !IN_ISDIR {
        m if m & IN_ACCESS != 0 => 0x1,
        m if m & IN_MODIFY != 0 => 0x2,
        m if m & (IN_CREATE | IN_MOVED_TO) != 0 => 0x4,
        m if m & (IN_DELETE | IN_MOVED_FROM) != 0 => 0x8,
        m if m & IN_DN_RENAME != 0 => 0x10,
        m if m & IN_ATTRIB != 0 => 0x20,
        _ => return,
    };
    let mut fire = Vec::new();
    let all = DIR_NOTIFY.get();
    all.retain(|d| {
        if d.file.strong_count() == 0 || d.dir.strong_count() == 0 {
            // Its description closed, or its directory is gone.
            return false;
        }
        if d.dir.as_ptr() != Rc::as_ptr(node) || d.mask & kind == 0 {
            return true;
        }
        if let Some(f) = d.file.upgrade() {
            fire.push((f, d.fd));
        }
        d.mask & DN_MULTISHOT != 0
    });
    crate::inotify::set_dir_notifications(all.len());
    for (f, fd) in fire {
        f.send_sigio(fd, crate::wait::POLL_MSG);
    }
}
