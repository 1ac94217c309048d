//! The siginfo of pending signals: a real-time signal (32 and up) is
//! queued once per sending, each delivered with its own and in order; a
//! standard one is pending once, with the siginfo of its first sending.
//! The scheduler (`task.rs`) keeps a queue per process and per thread
//! beside their pending bits, and asks this module to fill and empty it.

use alloc::collections::VecDeque;
use core::cell::RefCell;

use crate::errno::EAGAIN;

/// A pending signal's siginfo. A real-time signal (32 and up) is queued
/// once per sending, each delivered with its own, in order; a standard
/// one is pending once, with the siginfo of its first sending.
pub struct Queued {
    pub sig: u32,
    pub info: [u8; 128],
}

/// The first real-time signal (the kernel's SIGRTMIN).
pub const SIGRTMIN: u32 = 32;
/// Most siginfo kept pending per process or thread (Linux bounds them by
/// RLIMIT_SIGPENDING): past it, a sigqueue is EAGAIN and a kill's
/// real-time signal is pending once more without its own.
pub const MAX_QUEUED: usize = 1024;

/// What a signal being sent carries.
pub enum Info {
    /// Nothing of its own (an alarm, a fault's, a child's end): a
    /// real-time one is queued with a siginfo naming only the signal.
    Plain,
    /// Its siginfo (kill's, tgkill's).
    With([u8; 128]),
    /// sigqueue's siginfo: EAGAIN rather than lost when the queue is full.
    Queue([u8; 128]),
    /// A POSIX timer's: its timer keeps it (`timer.rs`).
    Timer,
}

/// si_code of kill(2) and of tkill(2)/tgkill(2).
pub const SI_USER: i32 = 0;
pub const SI_TKILL: i32 = -6;

/// Whether a caller's own siginfo (rt_sigqueueinfo's,
/// pidfd_send_signal's) may go to its target, as Linux checks it: any to
/// the caller's own process; to another only one whose si_code is
/// negative and not SI_TKILL, so it cannot pass for the kernel's or for
/// kill's.
pub fn caller_info_allowed(info: &[u8; 128], to_self: bool) -> bool {
    let code = i32::from_le_bytes([info[8], info[9], info[10], info[11]]);
    to_self || (code < 0 && code != SI_TKILL)
}

/// Queues what a sending of `sig` carries, `was` saying whether it was
/// pending already: EAGAIN for sigqueue's siginfo on a full queue.
pub fn push(queue: &RefCell<VecDeque<Queued>>, sig: u32, info: Info, was: bool) -> Result<(), i64> {
    let (info, must_keep) = match info {
        Info::Timer => (None, false),
        Info::With(i) => (Some(i), false),
        Info::Queue(i) => (Some(i), true),
        Info::Plain if sig >= SIGRTMIN => {
            let mut i = [0u8; 128];
            i[0..4].copy_from_slice(&sig.to_le_bytes());
            (Some(i), false)
        }
        Info::Plain => (None, false),
    };
    if let Some(info) = info.filter(|_| sig >= SIGRTMIN || !was) {
        let mut q = queue.borrow_mut();
        if q.len() >= MAX_QUEUED || q.try_reserve(1).is_err() {
            // (A kill's signal is still pending, without its own.)
            if must_keep {
                return Err(EAGAIN);
            }
        } else {
            q.push_back(Queued { sig, info });
        }
    }
    Ok(())
}

/// Takes the first queued siginfo of `sig`, if any, and whether another
/// instance of it stays queued.
pub fn take(queue: &RefCell<VecDeque<Queued>>, sig: u32) -> (Option<[u8; 128]>, bool) {
    let mut q = queue.borrow_mut();
    let info = q.iter().position(|e| e.sig == sig).and_then(|i| q.remove(i)).map(|e| e.info);
    (info, q.iter().any(|e| e.sig == sig))
}

/// Drops every queued instance of `sig`.
pub fn discard(queue: &RefCell<VecDeque<Queued>>, sig: u32) {
    queue.borrow_mut().retain(|e| e.sig != sig);
}
