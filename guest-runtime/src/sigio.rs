//! O_ASYNC ("signal-driven I/O"): a description with O_ASYNC set (F_SETFL
//! or FIOASYNC) signals its owner (F_SETOWN) when input arrives on it or
//! room to write comes — SIGIO, or F_SETSIG's signal with the descriptor
//! and POLL_IN/POLL_OUT in its siginfo (`OpenFile::send_sigio`), as
//! Linux's fasync does. Such descriptions are listed here; whenever
//! something may have changed (the wait layer's event count moved), each
//! is polled and compared with what it was: more bytes to read, or
//! readable or writable where it was not, is a signal.

use alloc::rc::{Rc, Weak};
use alloc::vec::Vec;

use crate::file::OpenFile;
use crate::rt::Global;
use crate::wait::{POLL_IN, POLL_OUT};

/// O_ASYNC, in a description's status flags.
pub const O_ASYNC: u32 = 0o20000;

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;

struct Async {
    file: Weak<OpenFile>,
    /// The descriptor it was set through (the siginfo's si_fd).
    fd: u32,
    /// What it was at the last look: bytes to read, readable, writable.
    input: usize,
    readable: bool,
    writable: bool,
}

struct State {
    list: Vec<Async>,
    /// The wait layer's event count at the last look.
    seen: u64,
    /// What the file layer says a description is ready for (`sys_fs`'s
    /// poll, registered at start).
    poll: fn(&OpenFile, u16) -> u16,
}

static STATE: Global<State> = Global::new(State { list: Vec::new(), seen: 0, poll: |_, _| 0 });

pub fn register(poll: fn(&OpenFile, u16) -> u16) {
    STATE.get().poll = poll;
}

/// O_ASYNC set (`on`) or cleared on `f`, open as `fd` (F_SETFL,
/// FIOASYNC): from now on it signals what changes after this moment.
pub fn set_async(f: &Rc<OpenFile>, fd: u32, on: bool) {
    let fl = f.flags.get();
    if (fl & O_ASYNC != 0) == on {
        return;
    }
    f.flags.set(if on { fl | O_ASYNC } else { fl & !O_ASYNC });
    let st = STATE.get();
    st.list.retain(|a| a.file.strong_count() > 0 && a.file.as_ptr() != Rc::as_ptr(f));
    if on && st.list.try_reserve(1).is_ok() {
        let (input, readable, writable) = look(st.poll, f);
        st.list.push(Async { file: Rc::downgrade(f), fd, input, readable, writable });
    }
}

/// Bytes to read (where the file layer counts them), whether `f` is
/// readable and whether writable.
fn look(poll: fn(&OpenFile, u16) -> u16, f: &OpenFile) -> (usize, bool, bool) {
    let ready = poll(f, POLLIN | POLLOUT);
    (f.read_ready().0, ready & POLLIN != 0, ready & POLLOUT != 0)
}

/// Signals the owners of the O_ASYNC descriptions that became readable
/// (or got more input) or writable since the last look. Called on the
/// way out of every system call and when input wakes an idle sandbox;
/// costs nothing while no description has O_ASYNC.
pub fn check() {
    let st = STATE.get();
    if st.list.is_empty() || crate::wait::event() == st.seen {
        return;
    }
    st.seen = crate::wait::event();
    let mut fire: Vec<(Rc<OpenFile>, u32, i32)> = Vec::new();
    st.list.retain_mut(|a| {
        let Some(f) = a.file.upgrade() else { return false };
        if f.flags.get() & O_ASYNC == 0 {
            return false;
        }
        let (input, readable, writable) = look(st.poll, &f);
        if readable && (input > a.input || !a.readable) {
            fire.push((f.clone(), a.fd, POLL_IN));
        }
        if writable && !a.writable {
            fire.push((f.clone(), a.fd, POLL_OUT));
        }
        (a.input, a.readable, a.writable) = (input, readable, writable);
        true
    });
    for (f, fd, code) in fire {
        f.send_sigio(fd, code);
    }
}
