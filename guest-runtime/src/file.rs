//! Open files and the descriptor table: the host's stdio streams, files
//! and directories of the guest filesystem, devices and pipes.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::errno::*;
use crate::io;
use crate::pipe::new_pipe_buffer;
pub use crate::pipe::Pipe;
use crate::rt::Global;
use crate::vfs::{self, Dev, Errno, NodeKind, NodeRef};

pub const O_ACCMODE: u32 = 3;
pub const O_RDONLY: u32 = 0;
pub const O_WRONLY: u32 = 1;
pub const O_RDWR: u32 = 2;
pub const O_CREAT: u32 = 0o100;
pub const O_EXCL: u32 = 0o200;
pub const O_TRUNC: u32 = 0o1000;
pub const O_APPEND: u32 = 0o2000;
pub const O_NONBLOCK: u32 = 0o4000;
pub const O_DIRECTORY: u32 = 0o200_000;
pub const O_NOFOLLOW: u32 = 0o400_000;
pub const O_CLOEXEC: u32 = 0o2_000_000;
pub const O_PATH: u32 = 0o10_000_000;
pub const O_TMPFILE: u32 = 0o20_000_000;

pub use crate::sock::Socket;

pub enum FileKind {
    Stdin,
    Stdout,
    Stderr,
    Node(NodeRef),
    PipeRead(Rc<RefCell<Pipe>>),
    PipeWrite(Rc<RefCell<Pipe>>),
    /// A socket (`sock.rs`; its system calls in `socket.rs`).
    Socket(Socket),
    /// An epoll instance: its interest list.
    Epoll(RefCell<Vec<EpollEntry>>),
    /// An eventfd: its counter, and whether it counts as a semaphore.
    EventFd(Cell<u64>, bool),
    /// A named pipe opened O_RDWR: reads and writes the same pipe (and
    /// counts as both a reader and a writer).
    FifoRdWr(Rc<RefCell<Pipe>>),
    /// A timerfd: its timer and the expirations not yet read.
    TimerFd(Rc<crate::timer::TimerFd>),
    /// A pseudo-terminal's master side (/dev/ptmx) and slave side
    /// (/dev/pts/N).
    PtyMaster(Rc<crate::pty::Pty>),
    PtySlave(Rc<crate::pty::Pty>),
    /// A signalfd: the signals it reads.
    SignalFd(Cell<u64>),
    /// A pidfd: the process it names (`pidfd.rs`).
    Pidfd(PidRef),
    /// An inotify descriptor: its watches and queued events
    /// (`inotify.rs`).
    Inotify(Rc<crate::inotify::Inotify>),
}

/// What a pidfd names: a process (held weakly: a pidfd keeps no process
/// alive; the type is the process layer's, above this one) and its pid.
pub struct PidRef {
    pub pid: u32,
    pub process: alloc::rc::Weak<dyn core::any::Any>,
}

/// Takes pending signals of a set as signalfd records (`signalfd.rs`,
/// above the files, registers it with its first descriptor).
pub type SignalFdRead = fn(u64, &mut [u8]) -> Option<usize>;

static SIGNALFD_READ: Global<SignalFdRead> = Global::new(|_, _| None);

pub fn set_signalfd_read(f: SignalFdRead) {
    *SIGNALFD_READ.get() = f;
}

pub struct EpollEntry {
    pub fd: i32,
    pub file: alloc::rc::Weak<OpenFile>,
    pub events: u32,
    pub data: u64,
    /// For EPOLLET: the events it last reported, and the count of
    /// `wait::notify` then (a ready entry is reported again only with
    /// events it did not have, or after something happened since).
    pub reported: (u32, u64),
}

pub struct OpenFile {
    pub kind: FileKind,
    /// Status flags (access mode, O_APPEND, O_NONBLOCK, O_PATH).
    pub flags: Cell<u32>,
    pub offset: Cell<u64>,
    /// Absolute path at open time (for /proc/self/fd).
    pub path: Vec<u8>,
    /// Directory listing taken at the first getdents.
    pub listing: RefCell<Option<Vec<vfs::DirEntry>>>,
    /// What reads of a checkpoint device return (set at its first read).
    pub checkpoint: RefCell<Option<Vec<u8>>>,
    /// Who gets its signals (F_SETOWN), and which for directory
    /// notifications (F_SETSIG; 0: SIGIO).
    pub owner: Cell<crate::wait::Owner>,
    pub sig: Cell<u32>,
}

/// Linux's SIGIO, a descriptor's signal without F_SETSIG.
pub const SIGIO: u32 = 29;

impl OpenFile {
    /// Tells the owner (F_SETOWN) of this description, open as `fd`, of
    /// input, room or a change (`code`, one of `wait::POLL_*`): plain
    /// SIGIO, or F_SETSIG's signal with a siginfo naming `fd` and `code`,
    /// as Linux's `send_sigio`.
    pub fn send_sigio(&self, fd: u32, code: i32) {
        match self.sig.get() {
            0 => crate::wait::signal_owner(self.owner.get(), SIGIO, None),
            sig => crate::wait::signal_owner(self.owner.get(), sig, Some(crate::wait::Sigio { fd, code })),
        }
    }
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        if matches!(self.kind, FileKind::Node(_)) {
            self.notify(if self.writable() {
                crate::inotify::IN_CLOSE_WRITE
            } else {
                crate::inotify::IN_CLOSE_NOWRITE
            });
        }
        if crate::locks::any() {
            crate::locks::release_owner(crate::locks::Owner::Description(self as *const OpenFile as usize));
        }
        match &self.kind {
            FileKind::FifoRdWr(p) => {
                let mut p = p.borrow_mut();
                p.readers -= 1;
                p.writers -= 1;
            }
            FileKind::PtyMaster(p) => {
                p.masters.set(p.masters.get() - 1);
                if p.masters.get() == 0 {
                    vfs::pts_remove(p.index);
                    p.hang_up();
                }
            }
            FileKind::PtySlave(p) => p.slaves.set(p.slaves.get() - 1),
            FileKind::PipeRead(p) => p.borrow_mut().readers -= 1,
            FileKind::PipeWrite(p) => p.borrow_mut().writers -= 1,
            _ => return,
        }
        crate::wait::notify();
    }
}

impl OpenFile {
    pub fn new(kind: FileKind, flags: u32, path: Vec<u8>) -> Rc<OpenFile> {
        match &kind {
            FileKind::FifoRdWr(p) => {
                let mut p = p.borrow_mut();
                p.readers += 1;
                p.writers += 1;
            }
            FileKind::PtyMaster(p) => p.masters.set(p.masters.get() + 1),
            FileKind::PtySlave(p) => {
                p.slaves.set(p.slaves.get() + 1);
                p.slave_opened.set(true);
            }
            FileKind::PipeRead(p) => p.borrow_mut().readers += 1,
            FileKind::PipeWrite(p) => p.borrow_mut().writers += 1,
            _ => {}
        }
        Rc::new(OpenFile {
            kind,
            flags: Cell::new(flags),
            offset: Cell::new(0),
            path,
            listing: RefCell::new(None),
            checkpoint: RefCell::new(None),
            owner: Cell::new(crate::wait::Owner::default()),
            sig: Cell::new(0),
        })
    }

    /// Tells the inotify watches on this description's file, and on the
    /// directory it was opened in (found again by its path, if that still
    /// names it or it has no name left: Linux's open file keeps its last
    /// name and directory), that `mask` happened to it. Nothing for a
    /// description opened with O_PATH, or while nothing is watched.
    pub fn notify(&self, mask: u32) {
        if !crate::inotify::active() || self.flags.get() & O_PATH != 0 {
            return;
        }
        let FileKind::Node(node) = &self.kind else { return };
        crate::inotify::child_event_at(vfs::resolve_parent(&vfs::root(), &self.path).ok(), node, mask);
    }

    pub fn readable(&self) -> bool {
        let f = self.flags.get();
        f & O_PATH == 0 && f & O_ACCMODE != O_WRONLY
    }
    pub fn writable(&self) -> bool {
        let f = self.flags.get();
        f & O_PATH == 0 && matches!(f & O_ACCMODE, O_WRONLY | O_RDWR)
    }

    /// The file a lock taken through this description is on: its device
    /// and inode (None: a pipe, a socket or another file without one,
    /// whose locks are not kept).
    pub fn lock_key(&self) -> Option<crate::locks::Key> {
        let m = self.node()?.meta.borrow();
        Some((m.dev, m.ino))
    }

    /// Its process `pid` closed a descriptor of it: POSIX has the
    /// process's record locks on the file go.
    pub fn closed_by(&self, pid: u32) {
        if crate::locks::any() {
            if let Some(key) = self.lock_key() {
                crate::locks::release_file(key, pid);
            }
        }
    }

    pub fn node(&self) -> Option<&NodeRef> {
        match &self.kind {
            FileKind::Node(n) => Some(n),
            _ => None,
        }
    }

    /// Reads at the file offset (or at `at` for pread).
    pub fn read(&self, out: &mut [u8], at: Option<u64>) -> Result<usize, Errno> {
        if !self.readable() {
            return Err(EBADF);
        }
        match &self.kind {
            FileKind::Stdin => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                match io::read_stdin(out) {
                    Some(n) => Ok(n),
                    None if self.flags.get() & O_NONBLOCK != 0 => Err(EAGAIN),
                    None => {
                        crate::wait::block(crate::wait::Wait::Stdin, None, true)?;
                        Ok(0)
                    }
                }
            }
            FileKind::Stdout | FileKind::Stderr | FileKind::PipeWrite(_) => Err(EBADF),
            FileKind::Epoll(_) => Err(EINVAL),
            FileKind::EventFd(count, semaphore) => {
                if out.len() < 8 {
                    return Err(EINVAL);
                }
                let c = count.get();
                if c == 0 {
                    if self.flags.get() & O_NONBLOCK != 0 {
                        return Err(EAGAIN);
                    }
                    crate::wait::wait_event(None)?;
                    return Err(EAGAIN);
                }
                let v = if *semaphore { 1 } else { c };
                count.set(c - v);
                out[..8].copy_from_slice(&v.to_le_bytes());
                crate::wait::notify();
                Ok(8)
            }
            FileKind::TimerFd(t) => {
                if out.len() < 8 {
                    return Err(EINVAL);
                }
                t.update(crate::timer::wall_now(t.clock));
                let n = t.ticks.replace(0);
                if n == 0 {
                    if self.flags.get() & O_NONBLOCK != 0 {
                        return Err(EAGAIN);
                    }
                    crate::wait::wait_event(None)?;
                    return Err(EAGAIN);
                }
                out[..8].copy_from_slice(&n.to_le_bytes());
                Ok(8)
            }
            FileKind::FifoRdWr(p) => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                pipe_read(p, out, self.flags.get() & O_NONBLOCK != 0, false)
            }
            FileKind::PtyMaster(p) => {
                let r = p.master_read(out)?;
                self.done_or_wait(r)
            }
            FileKind::PtySlave(p) => {
                let r = p.slave_read(out);
                self.done_or_wait(r)
            }
            FileKind::SignalFd(mask) => {
                if out.len() < 128 {
                    return Err(EINVAL);
                }
                let r = (SIGNALFD_READ.get())(mask.get(), out);
                self.done_or_wait(r)
            }
            FileKind::Pidfd(_) => Err(EINVAL),
            FileKind::Inotify(i) => {
                let r = match crate::inotify::read(i, out) {
                    Some(r) => Some(r?),
                    None => None,
                };
                self.done_or_wait(r)
            }
            FileKind::PipeRead(p) => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                pipe_read(p, out, self.flags.get() & O_NONBLOCK != 0, false)
            }
            FileKind::Socket(s) => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                s.read(out, self.flags.get() & O_NONBLOCK != 0)
            }
            FileKind::Node(node) => match &node.kind {
                NodeKind::File(f) => {
                    let off = at.unwrap_or(self.offset.get());
                    let n = f.borrow_mut().read_at(off, out)?;
                    if at.is_none() {
                        self.offset.set(off + n as u64);
                    }
                    if n > 0 {
                        self.notify(crate::inotify::IN_ACCESS);
                    }
                    Ok(n)
                }
                NodeKind::Dir(_) | NodeKind::ProcFd(_) | NodeKind::Proc(_) => Err(EISDIR),
                NodeKind::Symlink(_) => Err(EINVAL),
                NodeKind::Dev(Dev::Null) | NodeKind::Dev(Dev::Fifo) | NodeKind::Dev(Dev::Socket) => Ok(0),
                NodeKind::Dev(Dev::Zero) | NodeKind::Dev(Dev::Full) => {
                    out.fill(0);
                    Ok(out.len())
                }
                NodeKind::Dev(Dev::Random) => {
                    crate::random::fill(out);
                    Ok(out.len())
                }
                NodeKind::Dev(Dev::Env) => Ok(self.read_from(crate::rt::RUN_ENV.get(), out, at)),
                &NodeKind::Dev(Dev::Comm(tid)) => Ok(self.read_from(&vfs::comm(tid)?, out, at)),
                &NodeKind::Dev(Dev::Sys(i)) => Ok(self.read_from(&vfs::sysfs(i)?, out, at)),
                // (Opened, these are pseudo-terminals.)
                NodeKind::Dev(Dev::Ptmx | Dev::Pts(_) | Dev::Tty) => Ok(0),
                NodeKind::Dev(Dev::Checkpoint) => {
                    // The first read is the snapshot point; in a restored
                    // run it then reads this run's arguments (each ending
                    // in NUL), otherwise nothing.
                    let mut data = self.checkpoint.borrow_mut();
                    if data.is_none() {
                        let args = crate::snapshot::snapshot_point().map(|r| {
                            let mut a = r.args;
                            // Keep argv only (envp follows it).
                            let mut seen = 0;
                            let end = a.iter().position(|&c| {
                                seen += (c == 0) as usize;
                                seen == r.argc && c == 0
                            });
                            a.truncate(end.map_or(if r.argc == 0 { 0 } else { a.len() }, |e| e + 1));
                            a
                        });
                        *data = Some(args.unwrap_or_default());
                    }
                    Ok(self.read_from(data.as_deref().unwrap_or(&[]), out, at))
                }
            },
        }
    }

    /// A pseudo-terminal transfer: `Some(n)` moved n bytes (wake the
    /// other side); None must wait (EAGAIN when nonblocking; otherwise
    /// the call runs again after the next change).
    fn done_or_wait(&self, r: Option<usize>) -> Result<usize, Errno> {
        match r {
            Some(n) => {
                crate::wait::notify();
                Ok(n)
            }
            None if self.flags.get() & O_NONBLOCK != 0 => Err(EAGAIN),
            None => {
                crate::wait::wait_event(None)?;
                Err(EAGAIN)
            }
        }
    }

    /// Reads fixed contents `d` at the file offset (or at `at`).
    fn read_from(&self, d: &[u8], out: &mut [u8], at: Option<u64>) -> usize {
        let pos = (at.unwrap_or(self.offset.get()) as usize).min(d.len());
        let n = out.len().min(d.len() - pos);
        out[..n].copy_from_slice(&d[pos..pos + n]);
        if at.is_none() {
            self.offset.set((pos + n) as u64);
        }
        n
    }

    /// Writes at the file offset (or at `at` for pwrite).
    pub fn write(&self, data: &[u8], at: Option<u64>) -> Result<usize, Errno> {
        if !self.writable() {
            return Err(EBADF);
        }
        match &self.kind {
            FileKind::Stdout | FileKind::Stderr => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                io::write_stream(if matches!(self.kind, FileKind::Stdout) { 1 } else { 2 }, data);
                Ok(data.len())
            }
            FileKind::Stdin | FileKind::PipeRead(_) => Err(EBADF),
            FileKind::Epoll(_)
            | FileKind::TimerFd(_)
            | FileKind::SignalFd(_)
            | FileKind::Pidfd(_)
            | FileKind::Inotify(_) => Err(EINVAL),
            FileKind::EventFd(count, _) => {
                let Some(b) = data.get(..8) else { return Err(EINVAL) };
                let add = u64::from_le_bytes(b.try_into().map_err(|_| EINVAL)?);
                if add == u64::MAX {
                    return Err(EINVAL);
                }
                let c = count.get();
                if c.checked_add(add).is_none_or(|n| n == u64::MAX) {
                    return Err(EAGAIN);
                }
                count.set(c + add);
                crate::wait::notify();
                Ok(8)
            }
            FileKind::FifoRdWr(p) => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                pipe_write(p, data, self.flags.get() & O_NONBLOCK != 0)
            }
            FileKind::PtyMaster(p) => {
                let n = p.master_write(data);
                self.done_or_wait((n > 0 || data.is_empty()).then_some(n))
            }
            FileKind::PtySlave(p) => {
                let n = p.slave_write(data)?;
                self.done_or_wait((n > 0 || data.is_empty()).then_some(n))
            }
            FileKind::PipeWrite(p) => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                pipe_write(p, data, self.flags.get() & O_NONBLOCK != 0)
            }
            FileKind::Socket(s) => {
                if at.is_some() {
                    return Err(ESPIPE);
                }
                crate::sock::write(s, data, self.flags.get() & O_NONBLOCK != 0)
            }
            FileKind::Node(node) => match &node.kind {
                NodeKind::File(f) => {
                    let mut f = f.borrow_mut();
                    let off = match at {
                        Some(a) => a,
                        None if self.flags.get() & O_APPEND != 0 => f.size,
                        None => self.offset.get(),
                    };
                    let n = f.write_at(off, data)?;
                    drop(f);
                    node.touch();
                    if at.is_none() {
                        self.offset.set(off + n as u64);
                    }
                    if n > 0 {
                        self.notify(crate::inotify::IN_MODIFY);
                    }
                    Ok(n)
                }
                NodeKind::Dev(Dev::Full) => Err(ENOSPC),
                &NodeKind::Dev(Dev::Comm(tid)) => vfs::set_comm(tid, data).map(|_| data.len()),
                NodeKind::Dev(_) => Ok(data.len()),
                NodeKind::Dir(_) | NodeKind::ProcFd(_) | NodeKind::Proc(_) => Err(EISDIR),
                NodeKind::Symlink(_) => Err(EINVAL),
            },
        }
    }

    /// Bytes ready to read without blocking (FIONREAD), and whether a read
    /// would not block.
    pub fn read_ready(&self) -> (usize, bool) {
        match &self.kind {
            FileKind::PipeRead(p) => {
                let p = p.borrow();
                (p.buf.len(), !p.buf.is_empty() || p.writers == 0)
            }
            FileKind::Socket(s) => s.read_ready(),
            FileKind::Node(n) => match &n.kind {
                NodeKind::File(f) => (f.borrow().size.saturating_sub(self.offset.get()) as usize, true),
                _ => (0, true),
            },
            FileKind::FifoRdWr(p) => {
                let p = p.borrow();
                (p.buf.len(), !p.buf.is_empty())
            }
            FileKind::Inotify(i) => (crate::inotify::pending_bytes(i), crate::inotify::readable(i)),
            _ => (0, true),
        }
    }
}

#[derive(Clone)]
pub struct Fd {
    pub file: Rc<OpenFile>,
    pub cloexec: bool,
}

/// A process's descriptor table.
#[derive(Clone, Default)]
pub struct FdTable(pub Vec<Option<Fd>>);

impl FdTable {
    pub fn empty() -> FdTable {
        FdTable(Vec::new())
    }

    /// stdin, stdout and stderr as descriptors 0, 1, 2.
    pub fn stdio() -> FdTable {
        FdTable(alloc::vec![
            Some(Fd { file: OpenFile::new(FileKind::Stdin, O_RDONLY, b"pipe:[0]".to_vec()), cloexec: false }),
            Some(Fd { file: OpenFile::new(FileKind::Stdout, O_WRONLY, b"pipe:[1]".to_vec()), cloexec: false }),
            Some(Fd { file: OpenFile::new(FileKind::Stderr, O_WRONLY, b"pipe:[2]".to_vec()), cloexec: false }),
        ])
    }

    /// Closes the close-on-exec descriptors of process `pid`.
    pub fn close_on_exec(&mut self, pid: u32) {
        for e in self.0.iter_mut() {
            if e.as_ref().is_some_and(|f| f.cloexec) {
                if let Some(fd) = e.take() {
                    fd.file.closed_by(pid);
                }
            }
        }
    }
}

/// Reads from a pipe (or a socket's incoming pipe): what is there, 0 at
/// end of input, EAGAIN or a wait when empty. `peek` leaves the bytes.
pub fn pipe_read(p: &Rc<RefCell<Pipe>>, out: &mut [u8], nonblock: bool, peek: bool) -> Result<usize, Errno> {
    let mut pb = p.borrow_mut();
    if pb.buf.is_empty() {
        if pb.writers == 0 || out.is_empty() {
            return Ok(0);
        }
        if nonblock {
            return Err(EAGAIN);
        }
        drop(pb);
        crate::wait::block(crate::wait::Wait::PipeRead(p.clone()), None, true)?;
        return Ok(0);
    }
    let n = out.len().min(pb.buf.len());
    if peek {
        for (o, b) in out.iter_mut().zip(pb.buf.iter()) {
            *o = *b;
        }
        return Ok(n);
    }
    for (o, b) in out.iter_mut().zip(pb.buf.drain(..n)) {
        *o = b;
    }
    crate::wait::notify();
    Ok(n)
}

/// Writes to a pipe: EPIPE with no reader; else as Linux (POSIX) does, a
/// write of at most `PIPE_BUF` bytes all at once (EAGAIN or a wait until
/// it fits); a blocking one of at most the pipe's capacity waits until it
/// all fits; a larger one writes what fits (a wait when full), and
/// `sys_fs::rw::write_whole` calls it again for the rest. A larger
/// nonblocking write takes what fits (EAGAIN when full).
pub fn pipe_write(p: &Rc<RefCell<Pipe>>, data: &[u8], nonblock: bool) -> Result<usize, Errno> {
    const PIPE_BUF: usize = 4096;
    if data.is_empty() {
        return Ok(0);
    }
    let mut pb = p.borrow_mut();
    if pb.readers == 0 {
        return Err(EPIPE);
    }
    let room = pb.capacity.saturating_sub(pb.buf.len());
    let whole = if nonblock { data.len() <= PIPE_BUF } else { data.len() <= pb.capacity };
    let need = if whole { data.len() } else { 1 };
    if room < need {
        if nonblock {
            return Err(EAGAIN);
        }
        drop(pb);
        crate::wait::block(crate::wait::Wait::PipeWrite(p.clone(), need), None, true)?;
        return Ok(0);
    }
    let n = data.len().min(room);
    // As Linux when it cannot get a page for the pipe: ENOMEM.
    pb.buf.try_reserve(n).map_err(|_| ENOMEM)?;
    pb.buf.extend(&data[..n]);
    crate::wait::notify();
    Ok(n)
}

/// The name /proc/self/fd shows for an anonymous pipe or socket:
/// `kind:[N]`, N counting up.
fn anon_name(kind: &[u8]) -> Vec<u8> {
    static NEXT: Global<u64> = Global::new(1000);
    let id = NEXT.get();
    *id += 1;
    let mut name = kind.to_vec();
    name.extend_from_slice(b":[");
    vfs::push_num(&mut name, *id);
    name.push(b']');
    name
}

/// The N of a socket's or pipe's name `socket:[N]`, `pipe:[N]` (its
/// inode number, as fstat and /proc/net say); 0 for another name (a
/// named pipe's path).
pub fn anon_number(name: &[u8]) -> u64 {
    let Some(rest) = name.strip_prefix(b"socket:[").or_else(|| name.strip_prefix(b"pipe:[")) else { return 0 };
    let Some(digits) = rest.strip_suffix(b"]").filter(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit)) else {
        return 0;
    };
    digits.iter().fold(0u64, |n, &d| n.saturating_mul(10).saturating_add(u64::from(d - b'0')))
}

/// An open socket, named `socket:[N]` for /proc/self/fd.
pub fn socket_file(s: Socket, flags: u32) -> Rc<OpenFile> {
    OpenFile::new(FileKind::Socket(s), O_RDWR | (flags & O_NONBLOCK), anon_name(b"socket"))
}

/// A new pipe: (read end, write end).
pub fn new_pipe(flags: u32) -> (Rc<OpenFile>, Rc<OpenFile>) {
    let p = new_pipe_buffer();
    let name = anon_name(b"pipe");
    let nb = flags & O_NONBLOCK;
    (
        OpenFile::new(FileKind::PipeRead(p.clone()), O_RDONLY | nb, name.clone()),
        OpenFile::new(FileKind::PipeWrite(p), O_WRONLY | nb, name),
    )
}

// --- named pipes --------------------------------------------------------------------

/// A named pipe's buffer (while anyone has it open or waits to) and the
/// openers waiting for the other side: (task id, its open end, whether it
/// waits for a writer, the other side's open count it saw).
struct Fifo {
    node: alloc::rc::Weak<vfs::Node>,
    pipe: Rc<RefCell<Pipe>>,
    waiting: Vec<(u32, Rc<OpenFile>, u64)>,
}

static FIFOS: Global<Vec<Fifo>> = Global::new(Vec::new());

/// Opens named pipe `node` for task `tid`, as Linux does: a reader waits
/// for a writer and a writer for a reader unless O_NONBLOCK (then a
/// writer without a reader gets ENXIO); O_RDWR does not wait. A waiting
/// opener is counted at once (the other side's open goes on) and keeps
/// its end here across the system call's restart. (One that gives up
/// on a signal without SA_RESTART stays counted until it opens again.)
pub fn open_fifo(node: &vfs::NodeRef, tid: u32, flags: u32, path: Vec<u8>) -> Result<Rc<OpenFile>, Errno> {
    let fifos = FIFOS.get();
    fifos.retain(|f| f.node.strong_count() > 0 && (!f.waiting.is_empty() || Rc::strong_count(&f.pipe) > 1));
    let at = match fifos.iter().position(|f| f.node.upgrade().is_some_and(|n| Rc::ptr_eq(&n, node))) {
        Some(i) => i,
        None => {
            fifos.try_reserve(1).map_err(|_| ENOMEM)?;
            fifos.push(Fifo { node: Rc::downgrade(node), pipe: new_pipe_buffer(), waiting: Vec::new() });
            fifos.len() - 1
        }
    };
    let f = &mut fifos[at];
    let p = f.pipe.clone();
    let nonblock = flags & O_NONBLOCK != 0;
    let keep = O_ACCMODE | O_NONBLOCK;
    let acc = flags & O_ACCMODE;
    if acc == O_RDWR {
        // Linux's O_RDWR never waits: it is a reader and a writer itself.
        let r = OpenFile::new(FileKind::FifoRdWr(p.clone()), flags & keep, path);
        let mut pb = p.borrow_mut();
        pb.opens[0] += 1;
        pb.opens[1] += 1;
        drop(pb);
        crate::wait::notify();
        return Ok(r);
    }
    let reader = acc == O_RDONLY;
    let side = if reader { 1 } else { 0 };
    let (file, seen) = match f.waiting.iter().position(|w| w.0 == tid) {
        Some(i) => {
            let (_, file, seen) = f.waiting.remove(i);
            (file, seen)
        }
        None => {
            if !reader && nonblock && p.borrow().readers == 0 {
                return Err(ENXIO);
            }
            let kind = if reader { FileKind::PipeRead(p.clone()) } else { FileKind::PipeWrite(p.clone()) };
            let file = OpenFile::new(kind, flags & keep, path);
            p.borrow_mut().opens[if reader { 0 } else { 1 }] += 1;
            crate::wait::notify();
            let seen = p.borrow().opens[side];
            (file, seen)
        }
    };
    let (others, opens) = {
        let pb = p.borrow();
        (if reader { pb.writers } else { pb.readers }, pb.opens[side])
    };
    if others > 0 || opens != seen || nonblock {
        return Ok(file);
    }
    f.waiting.try_reserve(1).map_err(|_| ENOMEM)?;
    f.waiting.push((tid, file, seen));
    crate::wait::block(crate::wait::Wait::FifoPeer(p, reader, seen), None, true)?;
    Err(crate::wait::BLOCKED)
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_socket_and_pipe_names_carry_an_inode() {
        assert_eq!(super::anon_number(b"socket:[1001]"), 1001);
        assert_eq!(super::anon_number(b"pipe:[7]"), 7);
        for name in [&b"/tmp/fifo[12]"[..], b"socket:[]", b"socket:[12", b"pipe:[1a]", b"anon_inode:[pidfd]", b""] {
            assert_eq!(super::anon_number(name), 0, "{:?}", core::str::from_utf8(name));
        }
    }
}
