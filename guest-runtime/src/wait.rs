//! What the layers below the scheduler need of it: why a task waits
//! ([`Wait`]), to put the current task to sleep ([`block`],
//! [`wait_event`]) and to wake pollers ([`notify`]). The scheduler
//! (`task.rs`, above the files) registers its `block` and `wait_event`
//! at start; the event counter pollers wait on lives here.

use alloc::rc::Rc;
use core::cell::RefCell;

use crate::pipe::Pipe;
use crate::rt::Global;

pub type SysResult = Result<u64, i64>;

/// Returned by a syscall handler that put the current task to sleep.
pub const BLOCKED: i64 = 100_000;

pub enum Wait {
    None,
    PipeRead(Rc<RefCell<Pipe>>),
    /// Room for this many bytes (at most the pipe's capacity), or no
    /// reader left.
    PipeWrite(Rc<RefCell<Pipe>>, usize),
    /// wait4/waitid: until a child that the pid selector (-1 any, 0 the
    /// caller's group, -g group g, else that pid) picks has something to
    /// report under the options (WUNTRACED, WCONTINUED), or none is left.
    Child(i64, u64),
    /// Woken by FUTEX_WAKE on (space, address).
    Futex(usize, u64),
    Sleep,
    /// A vfork parent, until the child execs or exits.
    Vfork(u32),
    /// poll/select: any change of pipe or process state.
    Event(u64),
    /// pause / sigsuspend.
    Signal,
    /// rt_sigtimedwait: until a signal of the set is pending.
    SignalOf(u64),
    /// A read of stdin with nothing there yet.
    Stdin,
    /// Opening a named pipe: until the other side (`true`: a writer)
    /// has it open or has opened it since the count was `seen`.
    FifoPeer(Rc<RefCell<Pipe>>, bool, u64),
    /// A file lock (`locks.rs`): until no other owner's is in its way.
    FileLock(crate::locks::Lock),
    /// A socket's condition (`sock.rs`): until it holds.
    Until(Rc<dyn Fn() -> bool>),
}

/// Bumped whenever pipe or process state changes (wakes poll/select).
static EVENT: Global<u64> = Global::new(0);

/// Something a poller may care about happened.
pub fn notify() {
    *EVENT.get() += 1;
}

/// The event count (see [`Wait::Event`]).
pub fn event() -> u64 {
    *EVENT.get()
}

/// The scheduler's entry points, registered at start.
struct Scheduler {
    block: fn(Wait, Option<u64>, bool) -> SysResult,
    wait_event: fn(Option<u64>) -> SysResult,
}

fn unregistered_block(_: Wait, _: Option<u64>, _: bool) -> SysResult {
    crate::hc::panic(b"block before the scheduler started")
}

fn unregistered_wait_event(_: Option<u64>) -> SysResult {
    crate::hc::panic(b"wait before the scheduler started")
}

static SCHEDULER: Global<Scheduler> =
    Global::new(Scheduler { block: unregistered_block, wait_event: unregistered_wait_event });

/// Registers the scheduler's `block` and `wait_event`.
pub fn register(block: fn(Wait, Option<u64>, bool) -> SysResult, wait_event: fn(Option<u64>) -> SysResult) {
    *SCHEDULER.get() = Scheduler { block, wait_event };
}

/// Puts the current task to sleep (see `task::block`).
pub fn block(wait: Wait, deadline: Option<u64>, restart: bool) -> SysResult {
    (SCHEDULER.get().block)(wait, deadline, restart)
}

/// Waits for pipe/process activity or the timeout (see `task::wait_event`).
pub fn wait_event(timeout_ns: Option<u64>) -> SysResult {
    (SCHEDULER.get().wait_event)(timeout_ns)
}

/// Who gets the signals a descriptor sends (F_SETOWN, F_SETOWN_EX:
/// SIGIO or F_SETSIG's signal for dnotify, SIGURG for a socket's urgent
/// data): a thread, a process or a process group; `id` 0 is nobody.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// F_OWNER_TID (0), F_OWNER_PID (1) or F_OWNER_PGRP (2).
    pub kind: u32,
    pub id: u32,
}

pub const F_OWNER_TID: u32 = 0;
pub const F_OWNER_PID: u32 = 1;
pub const F_OWNER_PGRP: u32 = 2;

/// Why a descriptor signals its owner with F_SETSIG's signal, for the
/// siginfo: the descriptor and `si_code` (one of the `POLL_*`).
#[derive(Clone, Copy, Debug)]
pub struct Sigio {
    pub fd: u32,
    pub code: i32,
}

/// Input came (`si_code` of a descriptor's signal).
pub const POLL_IN: i32 = 1;
/// Room to write came.
pub const POLL_OUT: i32 = 2;
/// A directory changed (dnotify).
pub const POLL_MSG: i32 = 3;

/// Posts a signal to an owner (registered by the signal layer at start).
static OWNER_SIGNAL: Global<fn(Owner, u32, Option<Sigio>)> = Global::new(|_, _, _| {});

pub fn register_owner_signal(f: fn(Owner, u32, Option<Sigio>)) {
    *OWNER_SIGNAL.get() = f;
}

/// Sends `sig` to `owner` (nothing when there is none), with a siginfo
/// naming the descriptor and why if `why` says.
pub fn signal_owner(owner: Owner, sig: u32, why: Option<Sigio>) {
    if owner.id != 0 {
        (OWNER_SIGNAL.get())(owner, sig, why);
    }
}
