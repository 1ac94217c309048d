//! The current process's descriptor table: looking descriptors up,
//! installing and closing them, and the directory a `*at` call starts
//! from.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::file::{Fd, OpenFile};
use crate::vfs::{Errno, NodeRef};

const AT_FDCWD: i32 = -100;

/// Most descriptors a process may hold (RLIMIT_NOFILE), from the host.
pub fn max_fds() -> usize {
    match crate::rt::boot().max_open_files {
        0 => 1024,
        n => (n as usize).clamp(3, 65536),
    }
}
fn with_table<T>(f: impl FnOnce(&mut Vec<Option<Fd>>) -> T) -> T {
    let p = crate::task::current_process();
    let mut t = p.fds.borrow_mut();
    f(&mut t.0)
}

pub fn get(fd: u64) -> Result<Rc<OpenFile>, Errno> {
    with_table(|t| t.get(fd as usize).and_then(|e| e.as_ref()).map(|e| e.file.clone()).ok_or(EBADF))
}

pub fn cloexec(fd: u64) -> Result<bool, Errno> {
    with_table(|t| t.get(fd as usize).and_then(|e| e.as_ref()).map(|e| e.cloexec).ok_or(EBADF))
}

pub fn set_cloexec(fd: u64, on: bool) -> Result<(), Errno> {
    with_table(|t| {
        let e = t.get_mut(fd as usize).and_then(|e| e.as_mut()).ok_or(EBADF)?;
        e.cloexec = on;
        Ok(())
    })
}

/// Installs `file` at the lowest free descriptor `>= min`.
/// ENOMEM when the runtime's heap is short (see `heap::has_room`).
pub fn install(file: Rc<OpenFile>, cloexec: bool, min: usize) -> Result<u64, Errno> {
    if !crate::heap::has_room() {
        return Err(ENOMEM);
    }
    with_table(|t| {
        let slot = (min..max_fds()).find(|&i| t.get(i).is_none_or(|e| e.is_none())).ok_or(EMFILE)?;
        if t.len() <= slot {
            t.try_reserve(slot + 1 - t.len()).map_err(|_| ENOMEM)?;
            t.resize(slot + 1, None);
        }
        t[slot] = Some(Fd { file, cloexec });
        Ok(slot as u64)
    })
}

/// Puts `file` at exactly `fd`, closing what was there.
pub fn install_at(fd: u64, file: Rc<OpenFile>, cloexec: bool) -> Result<u64, Errno> {
    let fd_us = fd as usize;
    if fd_us >= max_fds() {
        return Err(EBADF);
    }
    let old = with_table(|t| {
        if t.len() <= fd_us {
            t.try_reserve(fd_us + 1 - t.len()).map_err(|_| ENOMEM)?;
            t.resize(fd_us + 1, None);
        }
        Ok::<_, Errno>(t[fd_us].replace(Fd { file, cloexec }))
    })?;
    // Dropped outside the table borrow (a pipe end's drop may wake others).
    if let Some(old) = old {
        old.file.closed_by(crate::task::current_process().pid);
    }
    Ok(fd)
}

pub fn close(fd: u64) -> Result<(), Errno> {
    let e = with_table(|t| t.get_mut(fd as usize).and_then(|e| e.take()).ok_or(EBADF))?;
    e.file.closed_by(crate::task::current_process().pid);
    drop(e);
    Ok(())
}

/// The directory a `*at` call starts from.
pub fn base_dir(dirfd: u64) -> Result<NodeRef, i64> {
    if dirfd as i32 == AT_FDCWD {
        return Ok(crate::task::cwd());
    }
    let f = get(dirfd)?;
    match f.node() {
        Some(n) if n.is_dir() => Ok(n.clone()),
        _ => Err(ENOTDIR),
    }
}
