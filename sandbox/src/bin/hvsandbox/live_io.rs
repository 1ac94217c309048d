//! A live run's stdio, for `run` (our own descriptors) and `serve` (a
//! client's): stdin copied to the program as fast as it reads it, and its
//! output written out as it is produced.

use std::os::fd::RawFd;
use std::time::Duration;

use hvsandbox::{Error, Output, Process, ProcessEvent, ProcessStdin};

/// The exit code of a run whose output's reader went away (a closed
/// pipe): the run is ended there, as SIGPIPE ends a native program, and
/// reported as a shell reports that (128 + SIGPIPE).
pub(crate) const EXIT_READER_GONE: u8 = 128 + libc::SIGPIPE as u8;

/// Hands each of `process`'s output chunks to `out` or `err` as it comes,
/// then what was left at its end; returns the run's result, and whether
/// a reader went away: `out` or `err` returned false (a closed pipe),
/// upon which the run was stopped and the rest of its output dropped.
pub(crate) fn pass_output(
    process: &mut Process,
    mut out: impl FnMut(&[u8]) -> bool,
    mut err: impl FnMut(&[u8]) -> bool,
) -> (Result<Output, Error>, bool) {
    let kill = process.kill_handle();
    let mut gone = false;
    let mut pass = |to: &mut dyn FnMut(&[u8]) -> bool, bytes: &[u8]| {
        if !gone && !bytes.is_empty() && !to(bytes) {
            gone = true;
            kill.kill();
        }
    };
    let result = loop {
        match process.next_event() {
            Some(ProcessEvent::Stdout(b)) => pass(&mut out, &b),
            Some(ProcessEvent::Stderr(b)) => pass(&mut err, &b),
            Some(ProcessEvent::Exited(result)) => {
                let rest = match &result {
                    Ok(o) => Some((&o.stdout, &o.stderr)),
                    Err(e) => e.partial_output().map(|p| (&p.stdout, &p.stderr)),
                };
                if let Some((o, e)) = rest {
                    pass(&mut out, o);
                    pass(&mut err, e);
                }
                break result;
            }
            None => break process.wait(),
        }
    };
    (result, gone)
}

/// The run's outcome when a reader went away during it: a run stopped
/// for that ends as if by SIGPIPE (None: as it ended on its own).
pub(crate) fn reader_gone_code(result: &Result<Output, Error>, gone: bool) -> Option<u8> {
    (gone && matches!(result, Err(Error::Cancelled { .. }))).then_some(EXIT_READER_GONE)
}

/// The chunk size of stdin's copy: half the input cap, at most 32 KiB.
pub(crate) fn stdin_chunk(max_input: u64) -> usize {
    usize::try_from(max_input / 2).unwrap_or(usize::MAX).clamp(1, 32 << 10)
}

/// Copies `from` to the program's stdin, `chunk` bytes at a time, as fast
/// as the program reads it; closes it at the end of `from`. With `stop`
/// (an eventfd), returns as soon as that is signalled instead of waiting
/// in read(2) on `from` for ever.
pub(crate) fn pump_stdin(from: RawFd, mut to: ProcessStdin, chunk: usize, stop: Option<RawFd>) {
    let mut buf = vec![0u8; chunk];
    loop {
        if let Some(stop) = stop {
            let mut fds = [
                libc::pollfd { fd: from, events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: stop, events: libc::POLLIN, revents: 0 },
            ];
            // SAFETY: `fds` is a live array of two pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 || fds[1].revents != 0 {
                return;
            }
        }
        // SAFETY: read into a live buffer of `buf.len()` bytes.
        let n = unsafe { libc::read(from, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            match std::io::Error::last_os_error().kind() {
                std::io::ErrorKind::Interrupted => continue,
                // A non-blocking descriptor another reader emptied after
                // poll: wait for more (a blocking one never says this).
                std::io::ErrorKind::WouldBlock if stop.is_some() => continue,
                _ => return,
            }
        }
        if n == 0 || std::io::Write::write_all(&mut to, &buf[..n as usize]).is_err() {
            return;
        }
    }
}

/// Writes all of `bytes` to `fd`, a descriptor we share with another
/// process and must not make non-blocking: each piece waits in poll(2)
/// for room first, at most a pipe's atomic size at a time (which then
/// fits without blocking), so `stop` is asked at least every tenth of a
/// second when the reader never reads; it ends the writing when true.
/// Errors end it too; returns false when the reader has gone (`EPIPE`).
pub(crate) fn write_out(fd: RawFd, mut bytes: &[u8], stop: &dyn Fn() -> bool) -> bool {
    const PIECE: usize = libc::PIPE_BUF;
    const SLICE: Duration = Duration::from_millis(100);
    while !bytes.is_empty() {
        if stop() {
            return true;
        }
        let mut pfd = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
        // SAFETY: `pfd` is one live pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, SLICE.as_millis() as i32) };
        if n == 0 || (n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted) {
            continue;
        }
        if n < 0 || pfd.revents & libc::POLLNVAL != 0 {
            return true;
        }
        let piece = &bytes[..bytes.len().min(PIECE)];
        // SAFETY: write from a live slice of `piece.len()` bytes.
        let w = unsafe { libc::write(fd, piece.as_ptr().cast(), piece.len()) };
        if w < 0 {
            let e = std::io::Error::last_os_error();
            // (WouldBlock: a non-blocking descriptor another writer filled
            // after poll; wait for room again.)
            if matches!(e.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) {
                continue;
            }
            return e.kind() != std::io::ErrorKind::BrokenPipe;
        }
        bytes = &bytes[w as usize..];
    }
    true
}

/// A client's pipe, FIFO or terminal reopened through `/proc/self/fd` as
/// an open file description of our own, non-blocking (`write`: for
/// writing), so that a read or write after poll(2) never waits because
/// another process sharing the client's took the bytes or the room
/// first; the client's own description stays as it is. None for anything
/// else (a file does not block; a socket is used as it is) or when it
/// cannot be reopened (a FIFO without a reader): the caller uses `fd`.
pub(crate) fn nonblocking_copy(fd: RawFd, write: bool) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is only looked at; `st` is a writable stat.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    if !matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFCHR) {
        return None;
    }
    let path = std::ffi::CString::new(format!("/proc/self/fd/{fd}")).ok()?;
    let access = if write { libc::O_WRONLY } else { libc::O_RDONLY };
    // SAFETY: open(2) of a NUL-terminated path; the new descriptor is
    // owned below at once.
    let new = unsafe { libc::open(path.as_ptr(), access | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) };
    // SAFETY: `new` is a descriptor nothing else owns.
    (new >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}
