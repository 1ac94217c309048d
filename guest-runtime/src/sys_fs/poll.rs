//! Readiness: poll (ppoll), select (pselect6), the epoll calls, and
//! `poll_file`, what a description is ready for, which SIGIO (`sigio.rs`)
//! asks too.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::fds::*;
use crate::file::{self, FileKind, OpenFile, *};
use crate::inotify;
use crate::uaccess::*;
use crate::vfs::{self, S_IFMT};

use super::SysResult;

const POLLIN: u16 = 0x1;
const POLLPRI: u16 = 0x2;
const POLLOUT: u16 = 0x4;
const POLLERR: u16 = 0x8;
const POLLHUP: u16 = 0x10;
const POLLNVAL: u16 = 0x20;
const POLL_MAX_FDS: u64 = 4096;

fn poll_one(fd: i32, events: u16) -> u16 {
    if fd < 0 {
        return 0;
    }
    let Ok(f) = crate::fds::get(fd as u64) else { return POLLNVAL };
    poll_file(&f, events)
}

/// What of `events` (and POLLERR, POLLHUP) holds for `f` now. (An epoll
/// descriptor's entries are descriptors of the current process.)
pub fn poll_file(f: &OpenFile, events: u16) -> u16 {
    let mut r = 0;
    match &f.kind {
        FileKind::PipeRead(p) => {
            let p = p.borrow();
            if !p.buf.is_empty() {
                r |= POLLIN;
            }
            if p.writers == 0 {
                r |= POLLHUP;
            }
        }
        FileKind::PipeWrite(p) => {
            let p = p.borrow();
            if p.readers == 0 {
                r |= POLLERR;
            } else if p.buf.len() < p.capacity {
                r |= POLLOUT;
            }
        }
        FileKind::Socket(s) => r |= s.poll(),
        FileKind::Stdin => {
            if crate::io::stdin_ready() {
                r |= POLLIN;
            }
        }
        FileKind::EventFd(count, _) => {
            if count.get() > 0 {
                r |= POLLIN;
            }
            if count.get() < u64::MAX - 1 {
                r |= POLLOUT;
            }
        }
        FileKind::FifoRdWr(p) => {
            // Itself a reader and a writer: never a hang-up.
            let p = p.borrow();
            if !p.buf.is_empty() {
                r |= POLLIN;
            }
            if p.buf.len() < p.capacity {
                r |= POLLOUT;
            }
        }
        FileKind::PtyMaster(_) | FileKind::PtySlave(_) => r = crate::sys_pty::poll(&f.kind),
        FileKind::SignalFd(mask) => {
            if crate::signalfd::readable(mask.get()) {
                r |= POLLIN;
            }
        }
        FileKind::Pidfd(p) => {
            if crate::pidfd::readable(p) {
                r |= POLLIN;
            }
        }
        FileKind::Inotify(i) => {
            if inotify::readable(i) {
                r |= POLLIN;
            }
        }
        FileKind::TimerFd(t) => {
            t.update(crate::timer::wall_now(t.clock));
            if t.ticks.get() > 0 {
                r |= POLLIN;
            }
        }
        FileKind::Epoll(list) => {
            let any = list.borrow().iter().any(|e| e.events != 0 && poll_one(e.fd, e.events as u16) != 0);
            if any {
                r |= POLLIN;
            }
        }
        _ => {
            if f.readable() {
                r |= POLLIN;
            }
            if f.writable() {
                r |= POLLOUT;
            }
        }
    }
    r & (events | POLLERR | POLLHUP)
}

pub fn sys_poll(fds: u64, nfds: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > POLL_MAX_FDS {
        return Err(EINVAL);
    }
    let entries = user_bytes_mut(fds, nfds * 8)?;
    let mut ready = 0;
    for e in entries.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let events = u16::from_le_bytes([e[4], e[5]]);
        let revents = poll_one(fd, events);
        e[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    if ready == 0 && timeout_ns != Some(0) {
        // Wait for activity of another task or the timeout (alone, the
        // host sleeps; an infinite wait ends at the run's deadline).
        return crate::task::wait_event(timeout_ns);
    }
    Ok(ready)
}

/// select/pselect6 over fd_set bitmaps.
pub fn sys_select(nfds: u64, rd: u64, wr: u64, ex: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > max_fds() as u64 {
        return Err(EINVAL);
    }
    let bytes = nfds.div_ceil(64) * 8;
    let load = |p: u64| -> Result<Option<Vec<u8>>, i64> {
        if p == 0 {
            Ok(None)
        } else {
            Ok(Some(user_bytes(p, bytes)?.to_vec()))
        }
    };
    let (r, w, x) = (load(rd)?, load(wr)?, load(ex)?);
    let mut out =
        [alloc::vec![0u8; bytes as usize], alloc::vec![0u8; bytes as usize], alloc::vec![0u8; bytes as usize]];
    let mut count = 0;
    for fd in 0..nfds as usize {
        let bit = |s: &Option<Vec<u8>>| s.as_ref().is_some_and(|s| s[fd / 8] & (1 << (fd % 8)) != 0);
        let (want_r, want_w, want_x) = (bit(&r), bit(&w), bit(&x));
        if !(want_r || want_w || want_x) {
            continue;
        }
        let ev = poll_one(fd as i32, POLLIN | POLLOUT | POLLPRI);
        if ev & POLLNVAL != 0 {
            return Err(EBADF);
        }
        // Exceptional: TCP urgent data.
        if want_x && ev & POLLPRI != 0 {
            out[2][fd / 8] |= 1 << (fd % 8);
            count += 1;
        }
        if want_r && ev & (POLLIN | POLLHUP | POLLERR) != 0 {
            out[0][fd / 8] |= 1 << (fd % 8);
            count += 1;
        }
        if want_w && ev & (POLLOUT | POLLERR) != 0 {
            out[1][fd / 8] |= 1 << (fd % 8);
            count += 1;
        }
    }
    if count == 0 && timeout_ns != Some(0) {
        // Blocked (Err), or the timeout is over: then, as on Linux, the
        // sets come back empty (they were left as given).
        crate::task::wait_event(timeout_ns)?;
    }
    for (p, o) in [(rd, &out[0]), (wr, &out[1]), (ex, &out[2])] {
        if p != 0 {
            user_bytes_mut(p, bytes)?.copy_from_slice(o);
        }
    }
    Ok(count)
}

pub fn sys_epoll_create1(flags: u64) -> SysResult {
    if flags & !(O_CLOEXEC as u64) != 0 {
        return Err(EINVAL);
    }
    let of = OpenFile::new(
        FileKind::Epoll(core::cell::RefCell::new(Vec::new())),
        O_RDWR,
        b"anon_inode:[eventpoll]".to_vec(),
    );
    crate::fds::install(of, flags & O_CLOEXEC as u64 != 0, 0)
}

pub fn sys_epoll_ctl(epfd: u64, op: u64, fd: u64, event: u64) -> SysResult {
    const ADD: u64 = 1;
    const DEL: u64 = 2;
    const MOD: u64 = 3;
    let ep = crate::fds::get(epfd)?;
    let FileKind::Epoll(list) = &ep.kind else { return Err(EINVAL) };
    let target = crate::fds::get(fd)?;
    if Rc::ptr_eq(&ep, &target) {
        return Err(EINVAL);
    }
    if matches!(target.kind, FileKind::Node(ref n) if n.mode() & S_IFMT == vfs::S_IFREG || n.is_dir()) {
        return Err(EPERM); // regular files are always ready: Linux refuses them
    }
    let (events, data) = if op == DEL {
        (0, 0)
    } else {
        let b = user_bytes(event, 12)?;
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]), u64::from_le_bytes(b[4..12].try_into().map_err(|_| EFAULT)?))
    };
    let mut list = list.borrow_mut();
    list.retain(|e| e.file.strong_count() > 0);
    let pos = list.iter().position(|e| e.fd == fd as i32 && e.file.upgrade().is_some_and(|f| Rc::ptr_eq(&f, &target)));
    match (op, pos) {
        (ADD, Some(_)) => Err(EEXIST),
        (ADD, None) => {
            if list.len() >= 65536 {
                return Err(ENOSPC);
            }
            if !crate::heap::has_room() {
                return Err(ENOMEM);
            }
            list.try_reserve(1).map_err(|_| ENOMEM)?;
            list.push(file::EpollEntry { fd: fd as i32, file: Rc::downgrade(&target), events, data, reported: (0, 0) });
            Ok(0)
        }
        (MOD, Some(i)) => {
            // (Re-armed: whatever is ready is reported again.)
            list[i].events = events;
            list[i].data = data;
            list[i].reported = (0, 0);
            Ok(0)
        }
        (DEL, Some(i)) => {
            list.remove(i);
            Ok(0)
        }
        (MOD | DEL, None) => Err(ENOENT),
        _ => Err(EINVAL),
    }
}

/// epoll_wait. An edge-triggered entry (EPOLLET) is reported when it has
/// events it did not have when last reported, or when anything a poller
/// may care about happened since (`wait::notify`: data came or went on
/// some file; Linux re-arms it on activity of its own file). That may
/// report an entry Linux would not (never one fewer), and an entry that
/// stays ready with nothing happening is not reported again: a program
/// waiting in epoll_wait sleeps instead of spinning.
pub fn sys_epoll_wait(epfd: u64, events: u64, max: u64, timeout_ns: Option<u64>) -> SysResult {
    const EPOLLONESHOT: u32 = 1 << 30;
    const EPOLLET: u32 = 1 << 31;
    if max == 0 || max > 65536 {
        return Err(EINVAL);
    }
    let ep = crate::fds::get(epfd)?;
    let FileKind::Epoll(list) = &ep.kind else { return Err(EINVAL) };
    let out = user_bytes_mut(events, max * 12)?;
    let mut n = 0usize;
    {
        let mut list = list.borrow_mut();
        list.retain(|e| e.file.strong_count() > 0);
        for e in list.iter_mut() {
            if n as u64 == max {
                break;
            }
            // The descriptor must still name the registered file.
            let same = crate::fds::get(e.fd as u64).ok().zip(e.file.upgrade()).is_some_and(|(a, b)| Rc::ptr_eq(&a, &b));
            if !same || e.events & 0xffff == 0 {
                continue;
            }
            let rev = poll_one(e.fd, e.events as u16) as u32 & (e.events | POLLERR as u32 | POLLHUP as u32);
            if e.events & EPOLLET != 0 {
                let now = crate::wait::event();
                let (last, then) = e.reported;
                if rev == 0 || (rev & !last == 0 && then == now) {
                    e.reported = (rev, then);
                    continue;
                }
                e.reported = (rev, now);
            }
            if rev != 0 {
                out[n * 12..n * 12 + 4].copy_from_slice(&rev.to_le_bytes());
                out[n * 12 + 4..n * 12 + 12].copy_from_slice(&e.data.to_le_bytes());
                n += 1;
                if e.events & EPOLLONESHOT != 0 {
                    e.events &= !0xffff;
                }
            }
        }
    }
    if n == 0 && timeout_ns != Some(0) {
        return crate::task::wait_event(timeout_ns);
    }
    Ok(n as u64)
}
