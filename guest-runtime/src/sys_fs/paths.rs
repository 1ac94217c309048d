//! Calls on names in the tree: readlinkat, faccessat, mkdirat, unlinkat,
//! renameat2, linkat, mknodat, symlinkat (and their older forms: access,
//! mkdir, unlink, rmdir, rename, link, mknod, symlink, readlink).

use alloc::rc::Rc;

use crate::errno::*;
use crate::inotify;
use crate::uaccess::*;
use crate::vfs::{self, NodeRef};

use super::{
    parent_at, resolve_at, NodeOrFile, SysResult, AT_EMPTY_PATH, AT_REMOVEDIR, AT_SYMLINK_FOLLOW, AT_SYMLINK_NOFOLLOW,
};

pub fn sys_readlinkat(dirfd: u64, path: u64, buf: u64, size: u64) -> SysResult {
    if (size as i64) <= 0 {
        return Err(EINVAL);
    }
    let node = match resolve_at(dirfd, path, AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)? {
        NodeOrFile::Node(n) => n,
        NodeOrFile::File(f) => f.node().cloned().ok_or(EINVAL)?,
    };
    let target = vfs::readlink(&node)?;
    let n = (target.len() as u64).min(size);
    user_bytes_mut(buf, n)?.copy_from_slice(&target[..n as usize]);
    Ok(n)
}

pub fn sys_faccessat(dirfd: u64, path: u64, mode: u64, flags: u64) -> SysResult {
    if mode & !7 != 0 {
        return Err(EINVAL);
    }
    let node = match resolve_at(dirfd, path, flags & (AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH))? {
        NodeOrFile::Node(n) => n,
        NodeOrFile::File(f) => match f.node() {
            Some(n) => n.clone(),
            None => return Ok(0),
        },
    };
    if mode & 2 != 0 && node.readonly() {
        return Err(EROFS);
    }
    if vfs::permitted(&node, mode as u32) {
        Ok(0)
    } else {
        Err(EACCES)
    }
}

pub fn sys_mkdirat(dirfd: u64, path: u64, mode: u64) -> SysResult {
    let (dir, name) = parent_at(dirfd, path)?;
    // An existing name is EEXIST before any permission check, as on Linux
    // (`mkdir -p /tmp/a/` relies on it for `/tmp` in a root-owned `/`).
    if name == b"." || name == b".." || vfs::lookup(&dir, &name).is_ok() {
        return Err(EEXIST);
    }
    if !dir.readonly() && !vfs::permitted(&dir, 3) {
        return Err(EACCES);
    }
    let node = vfs::mkdir(&dir, &name, mode as u32 & !crate::task::umask())?;
    inotify::entry_event(&dir, &node, inotify::IN_CREATE, &name);
    Ok(0)
}

/// Whether the user may remove or rename `name` in `dir`, or make it:
/// write and search permission on the directory, as Linux asks (EROFS,
/// ENOENT for a missing name to remove, EEXIST for one to make come first,
/// from the call itself). `exists`: what the call needs of the name.
fn may_change(dir: &NodeRef, name: &[u8], exists: bool) -> Result<(), i64> {
    if !dir.readonly() && vfs::lookup(dir, name).is_ok() == exists && !vfs::permitted(dir, 3) {
        return Err(EACCES);
    }
    Ok(())
}

pub fn sys_unlinkat(dirfd: u64, path: u64, flags: u64) -> SysResult {
    if flags & !AT_REMOVEDIR != 0 {
        return Err(EINVAL);
    }
    let (dir, name) = parent_at(dirfd, path)?;
    may_change(&dir, &name, true)?;
    let node = inotify::active().then(|| vfs::lookup(&dir, &name).ok()).flatten();
    vfs::remove(&dir, &name, flags & AT_REMOVEDIR != 0)?;
    if let Some(node) = node {
        inotify::removed(&dir, &node, &name);
    }
    Ok(0)
}

pub fn sys_renameat2(od: u64, op: u64, nd: u64, np: u64, flags: u64) -> SysResult {
    const RENAME_NOREPLACE: u64 = 1;
    if flags & !RENAME_NOREPLACE != 0 {
        return Err(EINVAL);
    }
    let (odir, oname) = parent_at(od, op)?;
    let (ndir, nname) = parent_at(nd, np)?;
    may_change(&odir, &oname, true)?;
    if !ndir.readonly() && vfs::lookup(&odir, &oname).is_ok() && !vfs::permitted(&ndir, 3) {
        return Err(EACCES);
    }
    let nodes = inotify::active().then(|| (vfs::lookup(&odir, &oname).ok(), vfs::lookup(&ndir, &nname).ok()));
    vfs::rename(&odir, &oname, &ndir, &nname, flags & RENAME_NOREPLACE != 0)?;
    if let Some((Some(node), replaced)) = nodes {
        let replaced = replaced.filter(|r| !Rc::ptr_eq(r, &node));
        if !Rc::ptr_eq(&odir, &ndir) || oname != nname {
            inotify::moved(&odir, &oname, &ndir, &nname, &node, replaced.as_ref());
        }
    }
    Ok(0)
}

pub fn sys_linkat(od: u64, op: u64, nd: u64, np: u64, flags: u64) -> SysResult {
    let follow = if flags & AT_SYMLINK_FOLLOW != 0 { 0 } else { AT_SYMLINK_NOFOLLOW };
    let node = match resolve_at(od, op, follow | (flags & AT_EMPTY_PATH))? {
        NodeOrFile::Node(n) => n,
        NodeOrFile::File(f) => f.node().cloned().ok_or(EXDEV)?,
    };
    if node.is_dir() {
        return Err(EPERM);
    }
    if node.readonly() {
        return Err(EXDEV);
    }
    let (ndir, nname) = parent_at(nd, np)?;
    may_change(&ndir, &nname, false)?;
    vfs::link_into(&ndir, &nname, node.clone())?;
    node.meta.borrow_mut().nlink += 1;
    inotify::event(&node, inotify::IN_ATTRIB, &[], 0);
    inotify::entry_event(&ndir, &node, inotify::IN_CREATE, &nname);
    Ok(0)
}

/// mknod/mknodat: regular files and named pipes (devices need privilege).
pub fn sys_mknodat(dirfd: u64, path: u64, mode: u64) -> SysResult {
    let mode = mode as u32;
    let (dir, name) = parent_at(dirfd, path)?;
    if dir.readonly() {
        return Err(EROFS);
    }
    if !vfs::permitted(&dir, 3) {
        return Err(EACCES);
    }
    if vfs::lookup(&dir, &name).is_ok() {
        return Err(EEXIST);
    }
    let perm = mode & 0o7777 & !crate::task::umask();
    match mode & vfs::S_IFMT {
        0 | vfs::S_IFREG => vfs::create_file(&dir, &name, perm).map(|_| ())?,
        vfs::S_IFIFO => vfs::create_fifo(&dir, &name, perm)?,
        vfs::S_IFSOCK => vfs::create_socket_node(&dir, &name, perm).map(|_| ())?,
        vfs::S_IFCHR | 0o060_000 => return Err(EPERM),
        _ => return Err(EINVAL),
    }
    created_at(&dir, &name);
    Ok(0)
}

/// Tells the watches of `dir` that its entry `name` was just made.
fn created_at(dir: &NodeRef, name: &[u8]) {
    if let Some(node) = inotify::active().then(|| vfs::lookup(dir, name).ok()).flatten() {
        inotify::entry_event(dir, &node, inotify::IN_CREATE, name);
    }
}

pub fn sys_symlinkat(target: u64, nd: u64, np: u64) -> SysResult {
    let t = path_arg(target)?.to_vec();
    let (dir, name) = parent_at(nd, np)?;
    may_change(&dir, &name, false)?;
    vfs::symlink(&dir, &name, &t)?;
    created_at(&dir, &name);
    Ok(0)
}
