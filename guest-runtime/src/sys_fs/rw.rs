//! Reading and writing: read, write, pread64, pwrite64, readv and writev
//! (preadv, pwritev), lseek, sendfile.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::file::{self, FileKind, OpenFile, *};
use crate::uaccess::*;

use super::SysResult;

pub fn sys_read(fd: u64, buf: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let out = user_bytes_mut(buf, len)?;
    f.read(out, None).map(|n| n as u64)
}

pub fn sys_write(fd: u64, buf: u64, len: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let data = user_bytes(buf, len)?;
    if let FileKind::PipeWrite(p) | FileKind::FifoRdWr(p) = &f.kind {
        if f.flags.get() & O_NONBLOCK == 0 && data.len() > p.borrow().capacity {
            return write_whole(&f, p, data, (fd, buf, len));
        }
    }
    write_checked(&f, data, None)
}

/// A blocking write to a pipe larger than the pipe: it returns when all
/// of it is in, as on Linux (the reader making room bit by bit), or when
/// a handler interrupts it, with the count written (see
/// `Task::write_done`). The call runs again at each wake; `key` tells it
/// from another call.
fn write_whole(f: &OpenFile, p: &Rc<core::cell::RefCell<file::Pipe>>, data: &[u8], key: (u64, u64, u64)) -> SysResult {
    let t = crate::task::current();
    let done = match t.write_done.take() {
        Some((k, done)) if k == key => done,
        _ => 0,
    };
    let rest = &data[(done as usize).min(data.len())..];
    match f.write(rest, None) {
        Ok(n) if n as u64 + done >= data.len() as u64 => Ok(data.len() as u64),
        Ok(n) => {
            t.write_done.set(Some((key, done + n as u64)));
            crate::wait::block(crate::wait::Wait::PipeWrite(p.clone(), 1), None, true)
        }
        Err(crate::wait::BLOCKED) => {
            t.write_done.set(Some((key, done)));
            Err(crate::wait::BLOCKED)
        }
        Err(e) if done > 0 => {
            // (The reader went: part of it is in; SIGPIPE as for EPIPE.)
            if e == EPIPE {
                crate::signal::raise(crate::task::SIGPIPE);
            }
            Ok(done)
        }
        Err(EPIPE) => {
            crate::signal::raise(crate::task::SIGPIPE);
            Err(EPIPE)
        }
        Err(e) => Err(e),
    }
}

/// A write; EPIPE also raises SIGPIPE, as Linux does.
fn write_checked(f: &OpenFile, data: &[u8], at: Option<u64>) -> SysResult {
    match f.write(data, at) {
        Err(EPIPE) => {
            crate::signal::raise(crate::task::SIGPIPE);
            Err(EPIPE)
        }
        r => r.map(|n| n as u64),
    }
}

fn offset_arg(off: u64) -> Result<u64, i64> {
    if (off as i64) < 0 {
        Err(EINVAL)
    } else {
        Ok(off)
    }
}

pub fn sys_pread(fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let out = user_bytes_mut(buf, len)?;
    f.read(out, Some(offset_arg(off)?)).map(|n| n as u64)
}

pub fn sys_pwrite(fd: u64, buf: u64, len: u64, off: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let data = user_bytes(buf, len)?;
    write_checked(&f, data, Some(offset_arg(off)?))
}

const IOV_MAX: u64 = 1024;

fn iovecs(iov: u64, cnt: u64) -> Result<Vec<(u64, u64)>, i64> {
    if cnt > IOV_MAX {
        return Err(EINVAL);
    }
    let v = user_bytes(iov, cnt * 16)?;
    let mut out = Vec::new();
    let mut total = 0u64;
    for c in v.chunks_exact(16) {
        let base = u64::from_le_bytes(c[0..8].try_into().map_err(|_| EFAULT)?);
        let len = u64::from_le_bytes(c[8..16].try_into().map_err(|_| EFAULT)?);
        total = total.checked_add(len).filter(|&t| t <= i64::MAX as u64).ok_or(EINVAL)?;
        out.push((base, len));
    }
    Ok(out)
}

/// Moves each piece of a vector in turn with `one(base, len, offset)`,
/// which returns the bytes it moved: stops after a short piece; an error
/// after some bytes ends the call with those bytes (as Linux), an error
/// on the first piece is the call's.
fn each_piece(
    v: Vec<(u64, u64)>,
    at: Option<u64>,
    mut one: impl FnMut(u64, u64, Option<u64>) -> SysResult,
) -> SysResult {
    let mut total = 0u64;
    for (base, len) in v {
        let n = match one(base, len, at.map(|a| a + total)) {
            Ok(n) => n,
            Err(e) if total == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        };
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

pub fn sys_readv(fd: u64, iov: u64, cnt: u64, at: Option<u64>) -> SysResult {
    let f = crate::fds::get(fd)?;
    let v = iovecs(iov, cnt)?;
    // Validate everything first, as writev: a bad vector reads nothing, so
    // a pipe keeps its bytes (Linux's pipes too answer EFAULT and keep them).
    for &(base, len) in &v {
        user_bytes_mut(base, len)?;
    }
    each_piece(v, at, |base, len, at| Ok(f.read(user_bytes_mut(base, len)?, at)? as u64))
}

pub fn sys_writev(fd: u64, iov: u64, cnt: u64, at: Option<u64>) -> SysResult {
    let f = crate::fds::get(fd)?;
    let v = iovecs(iov, cnt)?;
    // Validate everything first: a bad vector writes nothing.
    for &(base, len) in &v {
        user_bytes(base, len)?;
    }
    each_piece(v, at, |base, len, at| write_checked(&f, user_bytes(base, len)?, at))
}

pub fn sys_lseek(fd: u64, off: u64, whence: u64) -> SysResult {
    let f = crate::fds::get(fd)?;
    let node = match &f.kind {
        FileKind::Node(n) => n.clone(),
        _ => return Err(ESPIPE),
    };
    let size = node.size() as i64;
    let cur = f.offset.get() as i64;
    let off = off as i64;
    let new = match whence {
        0 => Some(off),
        1 => cur.checked_add(off),
        2 => size.checked_add(off),
        3 => (off < size).then_some(off),  // SEEK_DATA: no holes reported
        4 => (off < size).then_some(size), // SEEK_HOLE: the end
        _ => return Err(EINVAL),
    };
    let new = match new {
        Some(n) if n >= 0 => n,
        None if whence >= 3 => return Err(ENXIO),
        _ => return Err(EINVAL),
    };
    if node.is_dir() {
        // rewinddir / seekdir: the listing is taken again from the start.
        *f.listing.borrow_mut() = None;
    }
    f.offset.set(new as u64);
    Ok(new as u64)
}

pub fn sys_sendfile(out_fd: u64, in_fd: u64, offp: u64, count: u64) -> SysResult {
    let out = crate::fds::get(out_fd)?;
    let inp = crate::fds::get(in_fd)?;
    // (A negative offset is EINVAL, as on Linux.)
    let mut pos = if offp != 0 { Some(offset_arg(get_u64(offp)?)?) } else { None };
    let mut buf = Vec::new();
    buf.try_reserve(64 * 1024).map_err(|_| ENOMEM)?;
    buf.resize(64 * 1024, 0);
    let mut total = 0u64;
    while total < count {
        let want = ((count - total) as usize).min(buf.len());
        let n = match inp.read(&mut buf[..want], pos) {
            Ok(n) => n,
            Err(e) if total == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        };
        if n == 0 {
            break;
        }
        let w = match write_checked(&out, &buf[..n], None) {
            Ok(w) => w as usize,
            Err(e) if total == 0 => return Err(e),
            Err(e) => {
                crate::task::unblock_if(e);
                break;
            }
        };
        total += w as u64;
        if let Some(p) = pos.as_mut() {
            *p += w as u64;
        }
        if w < n {
            break;
        }
    }
    if let Some(p) = pos {
        put_u64s(offp, &[p])?;
    }
    Ok(total)
}
