//! A pipe's buffer: what a pipe (and each direction of a socket pair)
//! holds, and who is still at its ends. The scheduler below the files
//! waits on it.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use core::cell::RefCell;

/// A new pipe holds at most this much unread data (F_SETPIPE_SZ changes
/// it, as on Linux).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// The most F_SETPIPE_SZ gives (Linux's /proc/sys/fs/pipe-max-size for a
/// process without CAP_SYS_RESOURCE).
pub const PIPE_MAX_CAPACITY: usize = 1 << 20;

pub struct Pipe {
    pub buf: VecDeque<u8>,
    /// Unread data it holds at most.
    pub capacity: usize,
    pub readers: u32,
    pub writers: u32,
    /// Opens of a named pipe so far, for reading and for writing: an
    /// opener waiting for the other side wakes when its count moves.
    pub opens: [u64; 2],
}

pub fn new_pipe_buffer() -> Rc<RefCell<Pipe>> {
    Rc::new(RefCell::new(Pipe { buf: VecDeque::new(), capacity: PIPE_CAPACITY, readers: 0, writers: 0, opens: [0; 2] }))
}
