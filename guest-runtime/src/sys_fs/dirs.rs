//! Directories: getdents64 (a directory's listing) and the working
//! directory (getcwd, chdir, fchdir).

use crate::errno::*;
use crate::file::*;
use crate::inotify;
use crate::uaccess::*;
use crate::vfs;

use super::SysResult;

pub fn sys_getdents64(fd: u64, buf: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let node = f.node().filter(|n| n.is_dir()).ok_or(ENOTDIR)?.clone();
    if f.flags.get() & O_PATH != 0 {
        return Err(EBADF);
    }
    let out = user_bytes_mut(buf, len)?;
    let mut listing = f.listing.borrow_mut();
    if listing.is_none() {
        *listing = Some(vfs::list(&node)?);
    }
    let entries = listing.as_ref().ok_or(EIO)?;
    let mut idx = f.offset.get() as usize;
    let mut pos = 0usize;
    while let Some((name, ino, dtype)) = entries.get(idx) {
        let reclen = (19usize + name.len() + 1).next_multiple_of(8);
        if pos + reclen > out.len() {
            if pos == 0 {
                return Err(EINVAL);
            }
            break;
        }
        let rec = &mut out[pos..pos + reclen];
        rec.fill(0);
        rec[0..8].copy_from_slice(&ino.to_le_bytes());
        rec[8..16].copy_from_slice(&((idx + 1) as u64).to_le_bytes());
        rec[16..18].copy_from_slice(&(reclen as u16).to_le_bytes());
        rec[18] = *dtype;
        rec[19..19 + name.len()].copy_from_slice(name);
        pos += reclen;
        idx += 1;
    }
    f.offset.set(idx as u64);
    drop(listing);
    f.notify(inotify::IN_ACCESS);
    Ok(pos as u64)
}

pub fn sys_getcwd(buf: u64, size: u64) -> SysResult {
    let mut p = vfs::path_of(&crate::task::cwd())?;
    p.push(0);
    if (p.len() as u64) > size {
        return Err(ERANGE);
    }
    user_bytes_mut(buf, p.len() as u64)?.copy_from_slice(&p);
    Ok(p.len() as u64)
}

pub fn sys_chdir(path: u64) -> SysResult {
    let p = path_arg(path)?;
    let n = vfs::resolve(&crate::task::cwd(), p, true)?;
    if !n.is_dir() {
        return Err(ENOTDIR);
    }
    if !vfs::permitted(&n, 1) {
        return Err(EACCES);
    }
    crate::task::set_cwd(n);
    Ok(0)
}

pub fn sys_fchdir(fd: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let n = f.node().filter(|n| n.is_dir()).ok_or(ENOTDIR)?.clone();
    crate::task::set_cwd(n);
    Ok(0)
}
