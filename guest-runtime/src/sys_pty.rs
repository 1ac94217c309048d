//! Pseudo-terminals as the program sees them: opening /dev/ptmx,
//! /dev/pts/N and /dev/tty, the terminal ioctls (termios, window size,
//! the pty number and lock, TIOCGPTPEER, the controlling terminal and
//! its foreground process group), poll readiness and what fstat shows.
//! The line discipline is `pty.rs`.

use alloc::rc::Rc;

use crate::errno::*;
use crate::file::{FileKind, OpenFile, O_ACCMODE, O_CLOEXEC, O_NONBLOCK};
use crate::pty::{self, Pty};
use crate::task;
use crate::uaccess::*;
use crate::vfs::{self, Dev, NodeRef};

type SysResult = Result<u64, i64>;

const O_NOCTTY: u32 = 0o400;

/// A slave's device number: major 136 (UNIX98_PTY_SLAVE_MAJOR) and up.
pub fn slave_rdev(n: u32) -> u64 {
    let (major, minor) = (136 + (n as u64 >> 8), n as u64 & 0xff);
    (major << 8) | minor
}

fn slave_path(n: u32) -> alloc::vec::Vec<u8> {
    let mut p = b"/dev/pts/".to_vec();
    vfs::push_num(&mut p, n as u64);
    p
}

/// Posts `sig` to every process of group `id` (the line discipline's
/// ^C, ^\ and window-size changes) or, `leader`, to process `id` (a
/// hang-up's session leader).
fn signal_pgrp(id: u32, sig: u32, leader: bool) {
    for p in task::live_processes() {
        if (leader && p.pid == id) || (!leader && p.pgid.get() == id) {
            task::send_signal(&p, None, sig);
        }
    }
}

/// open(2) of /dev/ptmx (a new pseudo-terminal, locked), /dev/pts/N
/// (EIO while locked or once its master closed) or /dev/tty (ENXIO
/// without a controlling terminal).
pub fn open(dev: Dev, flags: u32) -> SysResult {
    let keep = O_ACCMODE | O_NONBLOCK;
    let cloexec = flags & O_CLOEXEC != 0;
    match dev {
        Dev::Ptmx => {
            pty::set_signal_hook(signal_pgrp);
            let p = Pty::new()?;
            vfs::pts_add(p.index)?;
            let of = OpenFile::new(FileKind::PtyMaster(p), flags & keep, b"/dev/ptmx".to_vec());
            crate::fds::install(of, cloexec, 0)
        }
        Dev::Pts(n) => {
            let p = pty::find(n).ok_or(EIO)?;
            if p.locked.get() || p.masters.get() == 0 {
                return Err(EIO);
            }
            open_slave(p, flags)
        }
        Dev::Tty => {
            let sid = task::current_process().sid.get();
            open_slave(pty::of_session(sid).ok_or(ENXIO)?, flags | O_NOCTTY)
        }
        _ => Err(ENXIO),
    }
}

fn open_slave(p: Rc<Pty>, flags: u32) -> SysResult {
    let me = task::current_process();
    // A session leader without a terminal gets this one, unless O_NOCTTY.
    if flags & O_NOCTTY == 0 && me.sid.get() == me.pid && p.sid.get() == 0 && pty::of_session(me.pid).is_none() {
        p.sid.set(me.pid);
        p.pgrp.set(me.pgid.get());
    }
    let path = slave_path(p.index);
    let of = OpenFile::new(FileKind::PtySlave(p), flags & (O_ACCMODE | O_NONBLOCK), path);
    crate::fds::install(of, flags & O_CLOEXEC != 0, 0)
}

/// The node fstat describes for a pseudo-terminal descriptor.
pub fn node_of(f: &OpenFile) -> Option<NodeRef> {
    let path = match &f.kind {
        FileKind::PtyMaster(_) => b"/dev/ptmx".to_vec(),
        FileKind::PtySlave(p) => slave_path(p.index),
        _ => return None,
    };
    vfs::resolve(&vfs::root(), &path, true).ok()
}

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;
const POLLHUP: u16 = 0x10;

/// poll(2) readiness of a pseudo-terminal descriptor.
pub fn poll(kind: &FileKind) -> u16 {
    let mut r = 0;
    match kind {
        FileKind::PtyMaster(p) => {
            if p.master_pending() > 0 {
                r |= POLLIN;
            }
            if p.slave_hung_up() {
                r |= POLLIN | POLLHUP;
            }
            if p.input_room() > 0 {
                r |= POLLOUT;
            }
        }
        FileKind::PtySlave(p) => {
            if p.slave_readable() {
                r |= POLLIN;
            }
            if p.masters.get() == 0 {
                r |= POLLHUP;
            } else if p.output_room() > 1 {
                r |= POLLOUT;
            }
        }
        _ => {}
    }
    r
}

const TCGETS: u64 = 0x5401;
const TCSETS: u64 = 0x5402;
const TCSETSW: u64 = 0x5403;
const TCSETSF: u64 = 0x5404;
const TCGETS2: u64 = 0x802c_542a;
const TCSETS2: u64 = 0x402c_542b;
const TCSETSW2: u64 = 0x402c_542c;
const TCSETSF2: u64 = 0x402c_542d;
const TCSBRK: u64 = 0x5409;
const TCXONC: u64 = 0x540a;
const TCFLSH: u64 = 0x540b;
const TIOCEXCL: u64 = 0x540c;
const TIOCNXCL: u64 = 0x540d;
const TIOCSCTTY: u64 = 0x540e;
const TIOCGPGRP: u64 = 0x540f;
const TIOCSPGRP: u64 = 0x5410;
const TIOCOUTQ: u64 = 0x5411;
const TIOCGWINSZ: u64 = 0x5413;
const TIOCSWINSZ: u64 = 0x5414;
const FIONREAD: u64 = 0x541b;
const TIOCPKT: u64 = 0x5420;
const TIOCNOTTY: u64 = 0x5422;
const TIOCSETD: u64 = 0x5423;
const TIOCGETD: u64 = 0x5424;
const TCSBRKP: u64 = 0x5425;
const TIOCGSID: u64 = 0x5429;
const TIOCGPTN: u64 = 0x8004_5430;
const TIOCSPTLCK: u64 = 0x4004_5431;
const TIOCGPTLCK: u64 = 0x8004_5439;
const TIOCGPTPEER: u64 = 0x5441;

fn get_i32(va: u64) -> Result<i32, i64> {
    get_u32(va).map(|v| v as i32)
}

fn put_u32(va: u64, v: u32) -> SysResult {
    put_user(va, v.to_le_bytes())?;
    Ok(0)
}

/// A terminal ioctl on a pseudo-terminal descriptor; None for other
/// descriptors (and for the requests every descriptor answers).
pub fn ioctl(f: &OpenFile, req: u64, arg: u64) -> Option<SysResult> {
    let (p, master) = match &f.kind {
        FileKind::PtyMaster(p) => (p, true),
        FileKind::PtySlave(p) => (p, false),
        _ => return None,
    };
    let me = task::current_process();
    let mine = p.sid.get() != 0 && p.sid.get() == me.sid.get();
    // The request is an unsigned int (a C library may sign-extend it).
    let req = req & 0xffff_ffff;
    Some(match req {
        TCGETS | TCGETS2 => {
            let len = if req == TCGETS { 36 } else { 44 };
            user_bytes_mut(arg, len)
                .map(|out| out.copy_from_slice(&p.termios.get().to_bytes()[..len as usize]))
                .map(|_| 0)
        }
        TCSETS | TCSETSW | TCSETSF | TCSETS2 | TCSETSW2 | TCSETSF2 => {
            let len = if req <= TCSETSF { 36 } else { 44 };
            user_bytes(arg, len).map(|b| {
                if req == TCSETSF || req == TCSETSF2 {
                    p.flush(true, false);
                }
                p.set_termios(p.termios.get().updated(b));
                crate::wait::notify();
                0
            })
        }
        TIOCGWINSZ => {
            let mut b = [0u8; 8];
            for (i, v) in p.winsize.get().iter().enumerate() {
                b[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
            }
            put_user(arg, b).map(|_| 0)
        }
        TIOCSWINSZ => user_bytes(arg, 8).map(|b| {
            let w = |i: usize| u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
            p.set_winsize([w(0), w(1), w(2), w(3)]);
            0
        }),
        FIONREAD => put_u32(arg, if master { p.master_pending() } else { p.slave_pending() } as u32),
        TIOCOUTQ => put_u32(arg, if master { 0 } else { p.master_pending() as u32 }),
        TCFLSH => match arg {
            // TCIFLUSH, TCOFLUSH, TCIOFLUSH: the master's input is the
            // slave's output.
            0..=2 => {
                let (i, o) = (arg != 1, arg != 0);
                if master {
                    p.flush(o, i)
                } else {
                    p.flush(i, o)
                }
                crate::wait::notify();
                Ok(0)
            }
            _ => Err(EINVAL),
        },
        // tcflow: TCOOFF and TCOON (suspending output is not modelled:
        // output always flows), TCIOFF and TCION.
        TCXONC => match arg {
            0 | 1 => Ok(0),
            2 | 3 => {
                p.send_flow_char(master, arg == 3);
                crate::wait::notify();
                Ok(0)
            }
            _ => Err(EINVAL),
        },
        TCSBRK | TCSBRKP | TIOCEXCL | TIOCNXCL => Ok(0),
        TIOCGETD => put_u32(arg, 0),
        TIOCSETD => get_i32(arg).and_then(|d| if d == 0 { Ok(0) } else { Err(EINVAL) }),
        TIOCGPTN if master => put_u32(arg, p.index),
        TIOCSPTLCK if master => get_i32(arg).map(|v| {
            p.locked.set(v != 0);
            0
        }),
        TIOCGPTLCK if master => put_u32(arg, p.locked.get() as u32),
        TIOCPKT if master => get_i32(arg).and_then(|v| if v == 0 { Ok(0) } else { Err(EINVAL) }),
        TIOCGPTPEER if master => {
            if p.locked.get() {
                Err(EIO)
            } else {
                open_slave(p.clone(), arg as u32)
            }
        }
        TIOCSCTTY => {
            if mine {
                Ok(0)
            } else if me.sid.get() != me.pid || p.sid.get() != 0 || pty::of_session(me.pid).is_some() {
                Err(EPERM)
            } else {
                p.sid.set(me.pid);
                p.pgrp.set(me.pgid.get());
                Ok(0)
            }
        }
        TIOCNOTTY => {
            if !mine {
                Err(ENOTTY)
            } else {
                if me.sid.get() == me.pid {
                    p.sid.set(0);
                    p.pgrp.set(0);
                }
                Ok(0)
            }
        }
        TIOCGPGRP if master || mine => put_u32(arg, p.pgrp.get()),
        TIOCSPGRP if mine => get_i32(arg).and_then(|g| {
            if g < 0 {
                return Err(EINVAL);
            }
            let exists = task::live_processes().iter().any(|q| q.pgid.get() == g as u32 && q.sid.get() == p.sid.get());
            if !exists {
                return Err(EPERM);
            }
            p.pgrp.set(g as u32);
            Ok(0)
        }),
        TIOCGSID if master || mine => {
            if p.sid.get() == 0 {
                Err(ENOTTY)
            } else {
                put_u32(arg, p.sid.get())
            }
        }
        // Every descriptor answers these (sys_ioctl).
        0x5421 | 0x5451 | 0x5450 => return None, // FIONBIO, FIOCLEX, FIONCLEX
        _ => Err(ENOTTY),
    })
}
