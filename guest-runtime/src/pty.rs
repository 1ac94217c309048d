//! Pseudo-terminals: a master and a slave side around a line discipline
//! (Linux's N_TTY, the parts programs that need a terminal use):
//! canonical mode with echo, erase (ERASE, WERASE, KILL) and end of file,
//! raw mode, input and output newline translation, and ^C/^\ as signals
//! to the foreground process group. Below the files: `file.rs` reads and
//! writes through it, `sys_pty.rs` opens them and serves the ioctls; the
//! signals go out through a hook it registers.

use alloc::collections::VecDeque;
use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::errno::*;
use crate::rt::Global;

/// Bytes a side holds unread (a writer beyond it waits).
pub const CAPACITY: usize = 64 * 1024;
/// Longest line canonical mode edits (Linux's N_TTY_BUF_SIZE).
pub const MAX_LINE: usize = 4096;
/// Most lines (or ends of file) queued for the slave.
pub const MAX_CHUNKS: usize = 4096;
/// Most pseudo-terminals open at once (/dev/ptmx beyond: ENOSPC).
pub const MAX_PTYS: usize = 256;

// termios flags (x86-64 Linux).
pub const ICRNL: u32 = 0x100;
pub const INLCR: u32 = 0x40;
pub const IGNCR: u32 = 0x80;
pub const ISTRIP: u32 = 0x20;
pub const IXON: u32 = 0x400;
pub const OPOST: u32 = 0x1;
pub const ONLCR: u32 = 0x4;
pub const OCRNL: u32 = 0x8;
pub const ISIG: u32 = 0x1;
pub const ICANON: u32 = 0x2;
pub const ECHO: u32 = 0x8;
pub const ECHOE: u32 = 0x10;
pub const ECHOK: u32 = 0x20;
pub const ECHONL: u32 = 0x40;
pub const NOFLSH: u32 = 0x80;
pub const ECHOCTL: u32 = 0x200;
pub const ECHOKE: u32 = 0x800;
pub const IEXTEN: u32 = 0x8000;

// c_cc indexes.
pub const VINTR: usize = 0;
pub const VQUIT: usize = 1;
pub const VERASE: usize = 2;
pub const VKILL: usize = 3;
pub const VEOF: usize = 4;
pub const VMIN: usize = 6;
pub const VSTART: usize = 8;
pub const VSTOP: usize = 9;
pub const VSUSP: usize = 10;
pub const VEOL: usize = 11;
pub const VWERASE: usize = 14;
pub const VEOL2: usize = 16;
pub const NCCS: usize = 19;

pub const SIGHUP: u32 = 1;
pub const SIGINT: u32 = 2;
pub const SIGQUIT: u32 = 3;
pub const SIGCONT: u32 = 18;
pub const SIGWINCH: u32 = 28;

/// The kernel's `struct termios` (TCGETS/TCSETS: 36 bytes; with the
/// speeds, `termios2`: 44).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Termios {
    pub iflag: u32,
    pub oflag: u32,
    pub cflag: u32,
    pub lflag: u32,
    pub line: u8,
    pub cc: [u8; NCCS],
    pub ispeed: u32,
    pub ospeed: u32,
}

impl Termios {
    /// A new pty's settings, as Linux gives them (tty_std_termios).
    pub fn standard() -> Termios {
        let mut cc = [0u8; NCCS];
        let init: [u8; 17] = [3, 0x1c, 0x7f, 0x15, 4, 0, 1, 0, 0x11, 0x13, 0x1a, 0, 0x12, 0xf, 0x17, 0x16, 0];
        cc[..17].copy_from_slice(&init);
        Termios {
            iflag: ICRNL | IXON,
            oflag: OPOST | ONLCR,
            cflag: 0o17 | 0o60 | 0o200, // B38400 | CS8 | CREAD
            lflag: ISIG | ICANON | ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE | IEXTEN,
            line: 0,
            cc,
            ispeed: 38400,
            ospeed: 38400,
        }
    }

    pub fn to_bytes(self) -> [u8; 44] {
        let mut b = [0u8; 44];
        for (i, v) in [self.iflag, self.oflag, self.cflag, self.lflag].iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[16] = self.line;
        b[17..17 + NCCS].copy_from_slice(&self.cc);
        b[36..40].copy_from_slice(&self.ispeed.to_le_bytes());
        b[40..44].copy_from_slice(&self.ospeed.to_le_bytes());
        b
    }

    /// These settings changed to 36 (termios) or 44 (termios2) bytes; the
    /// speeds stay unless given.
    pub fn updated(&self, b: &[u8]) -> Termios {
        let w = |i: usize| u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        let mut cc = [0u8; NCCS];
        cc.copy_from_slice(&b[17..17 + NCCS]);
        let (ispeed, ospeed) = if b.len() >= 44 { (w(9), w(10)) } else { (self.ispeed, self.ospeed) };
        Termios { iflag: w(0), oflag: w(1), cflag: w(2), lflag: w(3), line: b[16], cc, ispeed, ospeed }
    }

    fn is(&self, c: u8, idx: usize) -> bool {
        self.cc[idx] != 0 && c == self.cc[idx]
    }
}

/// What a read of the slave finds in canonical mode: lines, the last
/// one possibly an end of file (an empty line that reads as 0).
pub struct Pty {
    pub index: u32,
    pub locked: Cell<bool>,
    pub termios: Cell<Termios>,
    /// rows, cols, xpixel, ypixel.
    pub winsize: Cell<[u16; 4]>,
    /// Input the slave may read: chunks (in canonical mode, whole lines;
    /// an empty chunk is an end of file).
    input: RefCell<VecDeque<Vec<u8>>>,
    /// The line being edited (canonical mode).
    line: RefCell<Vec<u8>>,
    /// What the master reads: the slave's output and the echo.
    output: RefCell<VecDeque<u8>>,
    pub masters: Cell<u32>,
    pub slaves: Cell<u32>,
    /// The slave was opened at least once (its last close is a hang-up).
    pub slave_opened: Cell<bool>,
    /// The session it is the controlling terminal of (0: none) and its
    /// foreground process group.
    pub sid: Cell<u32>,
    pub pgrp: Cell<u32>,
}

/// Live pseudo-terminals by index.
static PTYS: Global<Vec<Weak<Pty>>> = Global::new(Vec::new());

/// Posts a signal to a process group, or with `true` to the process of
/// that id only (registered by `sys_pty.rs`).
pub type SignalHook = fn(u32, u32, bool);

static SIGNAL: Global<SignalHook> = Global::new(|_, _, _| {});

pub fn set_signal_hook(f: SignalHook) {
    *SIGNAL.get() = f;
}

/// A live pseudo-terminal by index.
pub fn find(index: u32) -> Option<Rc<Pty>> {
    PTYS.get().iter().filter_map(|w| w.upgrade()).find(|p| p.index == index)
}

/// The pseudo-terminal that is session `sid`'s controlling terminal.
pub fn of_session(sid: u32) -> Option<Rc<Pty>> {
    PTYS.get().iter().filter_map(|w| w.upgrade()).find(|p| p.sid.get() == sid && p.masters.get() > 0)
}

impl Pty {
    /// A new pseudo-terminal with the lowest free index (locked, as
    /// /dev/ptmx gives it).
    pub fn new() -> Result<Rc<Pty>, i64> {
        let all = PTYS.get();
        all.retain(|w| w.strong_count() > 0);
        if all.len() >= MAX_PTYS {
            return Err(ENOSPC);
        }
        let mut index = 0;
        while all.iter().filter_map(|w| w.upgrade()).any(|p| p.index == index) {
            index += 1;
        }
        let p = Rc::new(Pty {
            index,
            locked: Cell::new(true),
            termios: Cell::new(Termios::standard()),
            winsize: Cell::new([0; 4]),
            input: RefCell::new(VecDeque::new()),
            line: RefCell::new(Vec::new()),
            output: RefCell::new(VecDeque::new()),
            masters: Cell::new(0),
            slaves: Cell::new(0),
            slave_opened: Cell::new(false),
            sid: Cell::new(0),
            pgrp: Cell::new(0),
        });
        all.try_reserve(1).map_err(|_| ENOMEM)?;
        all.push(Rc::downgrade(&p));
        Ok(p)
    }

    fn input_len(&self) -> usize {
        self.input.borrow().iter().map(|c| c.len()).sum::<usize>() + self.line.borrow().len()
    }

    /// Room for the master's writes.
    pub fn input_room(&self) -> usize {
        if self.input.borrow().len() >= MAX_CHUNKS {
            return 0;
        }
        CAPACITY.saturating_sub(self.input_len())
    }

    /// Whether a read of the slave would not wait.
    pub fn slave_readable(&self) -> bool {
        let t = self.termios.get();
        let any = !self.input.borrow().is_empty();
        any || self.masters.get() == 0 || (t.lflag & ICANON == 0 && t.cc[VMIN] == 0)
    }

    /// Bytes the slave can read now (FIONREAD).
    pub fn slave_pending(&self) -> usize {
        self.input.borrow().iter().map(|c| c.len()).sum()
    }

    pub fn master_pending(&self) -> usize {
        self.output.borrow().len()
    }

    /// The slave side is gone (it was opened and every descriptor closed).
    pub fn slave_hung_up(&self) -> bool {
        self.slave_opened.get() && self.slaves.get() == 0
    }

    /// Output room (the slave's writes and the echo).
    pub fn output_room(&self) -> usize {
        CAPACITY.saturating_sub(self.output.borrow().len())
    }

    /// Queues output for the master, with output processing (`post`).
    fn emit(&self, data: &[u8], post: bool) {
        let t = self.termios.get();
        let mut out = self.output.borrow_mut();
        for &c in data {
            if out.len() >= CAPACITY {
                break;
            }
            if post && t.oflag & OPOST != 0 {
                if c == b'\n' && t.oflag & ONLCR != 0 {
                    out.push_back(b'\r');
                } else if c == b'\r' && t.oflag & OCRNL != 0 {
                    out.push_back(b'\n');
                    continue;
                }
            }
            out.push_back(c);
        }
    }

    /// tcflow's TCIOFF (`start` false) or TCION from side `master`: the
    /// STOP or START character (VSTOP, VSTART; none if disabled) goes to
    /// the other side as is.
    pub fn send_flow_char(&self, master: bool, start: bool) {
        let c = self.termios.get().cc[if start { VSTART } else { VSTOP }];
        if c == 0 {
            return;
        }
        if master {
            self.master_write(&[c]);
        } else {
            self.emit(&[c], false);
        }
    }

    /// Echoes one input byte: control characters as ^X with ECHOCTL.
    fn echo(&self, c: u8) {
        let t = self.termios.get();
        if t.lflag & ECHOCTL != 0 && (c < 0x20 && c != b'\t' && c != b'\n') || (c == 0x7f && t.lflag & ECHOCTL != 0) {
            self.emit(&[b'^', c ^ 0x40], false);
        } else {
            self.emit(&[c], true);
        }
    }

    /// Erases the last byte of the line being edited (echoing the erase).
    fn erase_one(&self) -> bool {
        let t = self.termios.get();
        let Some(c) = self.line.borrow_mut().pop() else { return false };
        if t.lflag & ECHO != 0 && t.lflag & ECHOE != 0 {
            let ctl = t.lflag & ECHOCTL != 0 && (c < 0x20 && c != b'\t' || c == 0x7f);
            for _ in 0..if ctl { 2 } else { 1 } {
                self.emit(b"\x08 \x08", false);
            }
        }
        true
    }

    fn push_input(&self, chunk: Vec<u8>) {
        let mut input = self.input.borrow_mut();
        if input.try_reserve(1).is_ok() {
            input.push_back(chunk);
        }
    }

    /// The master writes: input processing, signals, echo and line
    /// editing. Returns how much was taken (0: no room now).
    pub fn master_write(&self, data: &[u8]) -> usize {
        let mut taken = 0;
        for &byte in data {
            if self.input_room() == 0 {
                break;
            }
            taken += 1;
            let t = self.termios.get();
            let mut c = byte;
            if t.iflag & ISTRIP != 0 {
                c &= 0x7f;
            }
            if c == b'\r' {
                if t.iflag & IGNCR != 0 {
                    continue;
                }
                if t.iflag & ICRNL != 0 {
                    c = b'\n';
                }
            } else if c == b'\n' && t.iflag & INLCR != 0 {
                c = b'\r';
            }
            if t.lflag & ISIG != 0 && (t.is(c, VINTR) || t.is(c, VQUIT) || t.is(c, VSUSP)) {
                let sig = if t.is(c, VINTR) {
                    SIGINT
                } else if t.is(c, VQUIT) {
                    SIGQUIT
                } else {
                    20 // SIGTSTP
                };
                if t.lflag & NOFLSH == 0 {
                    self.line.borrow_mut().clear();
                    self.input.borrow_mut().clear();
                }
                if t.lflag & ECHO != 0 {
                    self.echo(c);
                }
                if self.pgrp.get() != 0 {
                    (SIGNAL.get())(self.pgrp.get(), sig, false);
                }
                continue;
            }
            if t.lflag & ICANON == 0 {
                if t.lflag & ECHO != 0 {
                    self.echo(c);
                }
                let mut input = self.input.borrow_mut();
                match input.back_mut() {
                    Some(last) if !last.is_empty() && last.len() < 4096 => last.push(c),
                    _ => {
                        drop(input);
                        self.push_input(alloc::vec![c]);
                    }
                }
                continue;
            }
            // Canonical mode: edit the line.
            if t.is(c, VERASE) {
                self.erase_one();
                continue;
            }
            if t.is(c, VWERASE) && t.lflag & IEXTEN != 0 {
                while self.line.borrow().last().is_some_and(|&b| b == b' ' || b == b'\t') {
                    self.erase_one();
                }
                while self.line.borrow().last().is_some_and(|&b| b != b' ' && b != b'\t') {
                    self.erase_one();
                }
                continue;
            }
            if t.is(c, VKILL) {
                if t.lflag & ECHO != 0 && t.lflag & ECHOKE != 0 && t.lflag & ECHOE != 0 {
                    while self.erase_one() {}
                } else {
                    self.line.borrow_mut().clear();
                    if t.lflag & ECHO != 0 {
                        self.echo(c);
                        if t.lflag & ECHOK != 0 {
                            self.emit(b"\n", true);
                        }
                    }
                }
                continue;
            }
            if t.is(c, VEOF) {
                // The line so far, without a newline; alone, end of file.
                let line = core::mem::take(&mut *self.line.borrow_mut());
                self.push_input(line);
                continue;
            }
            let end = c == b'\n' || t.is(c, VEOL) || t.is(c, VEOL2);
            if t.lflag & ECHO != 0 || (c == b'\n' && t.lflag & ECHONL != 0) {
                self.echo(c);
            }
            let mut line = self.line.borrow_mut();
            if line.len() < MAX_LINE - 1 || end {
                line.push(c);
            }
            if end {
                let l = core::mem::take(&mut *line);
                drop(line);
                self.push_input(l);
            }
        }
        taken
    }

    /// The slave reads: one line at most in canonical mode (0 at an end
    /// of file), whatever there is otherwise. None: nothing yet (wait).
    pub fn slave_read(&self, out: &mut [u8]) -> Option<usize> {
        let t = self.termios.get();
        let mut input = self.input.borrow_mut();
        if input.is_empty() {
            if self.masters.get() == 0 || (t.lflag & ICANON == 0 && t.cc[VMIN] == 0) {
                return Some(0);
            }
            return None;
        }
        if t.lflag & ICANON != 0 {
            let Some(front) = input.front_mut() else { return Some(0) };
            let n = out.len().min(front.len());
            out[..n].copy_from_slice(&front[..n]);
            front.drain(..n);
            if front.is_empty() {
                input.pop_front();
            }
            return Some(n);
        }
        let mut n = 0;
        while n < out.len() {
            let Some(front) = input.front_mut() else { break };
            let k = (out.len() - n).min(front.len());
            out[n..n + k].copy_from_slice(&front[..k]);
            front.drain(..k);
            n += k;
            if front.is_empty() {
                input.pop_front();
            }
        }
        Some(n)
    }

    /// The slave writes (output processing). Err(EIO) once the master is
    /// gone; Ok(0): no room now.
    pub fn slave_write(&self, data: &[u8]) -> Result<usize, i64> {
        if self.masters.get() == 0 {
            return Err(EIO);
        }
        let t = self.termios.get();
        // Each byte may become two: take what surely fits.
        let room = self.output_room();
        let per = if t.oflag & OPOST != 0 && t.oflag & ONLCR != 0 { 2 } else { 1 };
        let n = data.len().min(room / per);
        self.emit(&data[..n], true);
        Ok(n)
    }

    /// The master reads what the slave wrote (and the echo). None:
    /// nothing yet; Err(EIO): nothing, and the slave hung up.
    pub fn master_read(&self, out: &mut [u8]) -> Result<Option<usize>, i64> {
        let mut o = self.output.borrow_mut();
        if o.is_empty() {
            return if self.slave_hung_up() { Err(EIO) } else { Ok(None) };
        }
        let n = out.len().min(o.len());
        for (d, s) in out.iter_mut().zip(o.drain(..n)) {
            *d = s;
        }
        Ok(Some(n))
    }

    /// TCSETSF / TCFLSH: drops unread input (`input`) and/or output.
    pub fn flush(&self, input: bool, output: bool) {
        if input {
            self.input.borrow_mut().clear();
            self.line.borrow_mut().clear();
        }
        if output {
            self.output.borrow_mut().clear();
        }
    }

    /// New settings; leaving canonical mode makes the line being edited
    /// readable.
    pub fn set_termios(&self, t: Termios) {
        let was = self.termios.replace(t);
        if was.lflag & ICANON != 0 && t.lflag & ICANON == 0 {
            let line = core::mem::take(&mut *self.line.borrow_mut());
            if !line.is_empty() {
                self.push_input(line);
            }
        }
    }

    /// TIOCSWINSZ: a change tells the foreground process group.
    pub fn set_winsize(&self, w: [u16; 4]) {
        if self.winsize.replace(w) != w && self.pgrp.get() != 0 {
            (SIGNAL.get())(self.pgrp.get(), SIGWINCH, false);
        }
    }

    /// The master side closed: the session leader that has this as its
    /// terminal gets SIGHUP and SIGCONT and the session loses it.
    pub fn hang_up(&self) {
        let sid = self.sid.replace(0);
        self.pgrp.set(0);
        if sid != 0 {
            (SIGNAL.get())(sid, SIGHUP, true);
            (SIGNAL.get())(sid, SIGCONT, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pty() -> Rc<Pty> {
        let p = Pty::new().unwrap();
        p.masters.set(1);
        p.slaves.set(1);
        p.slave_opened.set(true);
        p
    }

    fn read_master(p: &Pty) -> Vec<u8> {
        let mut b = [0u8; 256];
        let n = p.master_read(&mut b).unwrap().unwrap_or(0);
        b[..n].to_vec()
    }

    fn read_slave(p: &Pty) -> Option<Vec<u8>> {
        let mut b = [0u8; 256];
        p.slave_read(&mut b).map(|n| b[..n].to_vec())
    }

    #[test]
    fn canonical_mode_edits_lines_and_echoes() {
        let p = pty();
        assert_eq!(p.master_write(b"helo\x7flo wrld\x17world\r"), 19);
        assert_eq!(read_slave(&p).unwrap(), b"hello world\n");
        assert_eq!(read_slave(&p), None, "nothing more yet");
        let echo = read_master(&p);
        assert!(echo.starts_with(b"helo\x08 \x08lo wrld\x08 \x08"), "{:?}", core::str::from_utf8(&echo));
        assert!(echo.ends_with(b"world\r\n"));
        // A partial line is not readable; ^U kills it; ^D alone is EOF.
        p.master_write(b"junk\x15ok\x04");
        assert_eq!(read_slave(&p).unwrap(), b"ok");
        p.master_write(b"\x04");
        assert_eq!(read_slave(&p).unwrap(), b"", "end of file");
        assert_eq!(read_slave(&p), None);
    }

    #[test]
    fn raw_mode_passes_bytes_and_output_keeps_newlines() {
        let p = pty();
        let mut t = p.termios.get();
        t.lflag &= !(ICANON | ECHO | ISIG);
        t.iflag &= !ICRNL;
        t.oflag &= !OPOST;
        p.set_termios(t);
        p.master_write(b"a\r\x03\x7f");
        assert_eq!(read_slave(&p).unwrap(), b"a\r\x03\x7f");
        assert_eq!(read_master(&p), b"", "no echo");
        assert_eq!(p.slave_write(b"x\ny"), Ok(3));
        assert_eq!(read_master(&p), b"x\ny");
        t.oflag |= OPOST;
        p.set_termios(t);
        p.slave_write(b"x\ny").unwrap();
        assert_eq!(read_master(&p), b"x\r\ny");
    }

    #[test]
    fn interrupt_signals_the_foreground_group_and_hangups_show() {
        static GOT: Global<(u32, u32)> = Global::new((0, 0));
        set_signal_hook(|g, s, _| *GOT.get() = (g, s));
        let p = pty();
        p.pgrp.set(7);
        p.master_write(b"partial\x03");
        assert_eq!(*GOT.get(), (7, SIGINT));
        assert!(read_master(&p).ends_with(b"^C"));
        assert_eq!(read_slave(&p), None, "the line was flushed");
        p.slaves.set(0);
        assert_eq!(p.master_read(&mut [0; 4]), Err(EIO));
        p.masters.set(0);
        assert_eq!(read_slave(&p).unwrap(), b"", "hung up: end of file");
        assert_eq!(p.slave_write(b"x"), Err(EIO));
    }

    #[test]
    fn queued_ends_of_file_are_bounded() {
        let p = pty();
        let eofs = [4u8; MAX_CHUNKS + 10];
        assert_eq!(p.master_write(&eofs), MAX_CHUNKS, "then no room");
        assert_eq!(p.input_room(), 0);
        assert_eq!(read_slave(&p).unwrap(), b"");
        assert!(p.input_room() > 0);
    }

    #[test]
    fn termios_round_trips() {
        let t = Termios::standard();
        assert_eq!(t.updated(&t.to_bytes()), t);
        assert_eq!(t.updated(&t.to_bytes()[..36]), t);
    }
}
