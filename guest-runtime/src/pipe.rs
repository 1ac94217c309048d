//! A pipe's buffer: what a pipe (and each direction of a socket pair)
//! holds, and who is still at its ends. The scheduler below the files
//! waits on it.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use core::cell::RefCell;

/// A pipe holds at most this much unread data.
pub const PIPE_CAPACITY: usize = 64 * 1024;

pub struct Pipe {
    pub buf: VecDeque<u8>,
    pub readers: u32,
    pub writers: u32,
    /// Opens of a named pipe so far, for reading and for writing: an
    /// opener waiting for the other side wakes when its count moves.
    pub opens: [u64; 2],
}

pub fn new_pipe_buffer() -> Rc<RefCell<Pipe>> {
    Rc::new(RefCell::new(Pipe { buf: VecDeque::new(), readers: 0, writers: 0, opens: [0; 2] }))
}
