//! Pipes and event counters: pipe2 (pipe), with `install_pair`, which
//! socketpair uses too; eventfd2 (eventfd).

use alloc::rc::Rc;

use crate::errno::*;
use crate::file::{self, FileKind, OpenFile, *};
use crate::uaccess::*;

use super::SysResult;

pub fn sys_pipe2(fds: u64, flags: u64) -> SysResult {
    if flags & !((O_CLOEXEC | O_NONBLOCK) as u64) != 0 {
        return Err(EINVAL);
    }
    user_bytes_mut(fds, 8)?;
    let (r, w) = file::new_pipe(flags as u32);
    install_pair(r, w, flags & O_CLOEXEC as u64 != 0, fds)
}

/// Installs two new descriptors and stores their numbers as `int[2]` at
/// `fds` (pipe2, socketpair).
pub fn install_pair(a: Rc<OpenFile>, b: Rc<OpenFile>, cloexec: bool, fds: u64) -> SysResult {
    let afd = crate::fds::install(a, cloexec, 0)?;
    let bfd = match crate::fds::install(b, cloexec, 0) {
        Ok(b) => b,
        Err(e) => {
            let _ = crate::fds::close(afd);
            return Err(e);
        }
    };
    let mut out = [0u8; 8];
    out[0..4].copy_from_slice(&(afd as u32).to_le_bytes());
    out[4..8].copy_from_slice(&(bfd as u32).to_le_bytes());
    put_user(fds, out)?;
    Ok(0)
}

pub fn sys_eventfd2(initval: u64, flags: u64) -> SysResult {
    const EFD_SEMAPHORE: u64 = 1;
    if flags & !(O_CLOEXEC as u64 | O_NONBLOCK as u64 | EFD_SEMAPHORE) != 0 {
        return Err(EINVAL);
    }
    let of = OpenFile::new(
        FileKind::EventFd(core::cell::Cell::new(initval & 0xffff_ffff), flags & EFD_SEMAPHORE != 0),
        O_RDWR | (flags as u32 & O_NONBLOCK),
        b"anon_inode:[eventfd]".to_vec(),
    );
    crate::fds::install(of, flags & O_CLOEXEC as u64 != 0, 0)
}
