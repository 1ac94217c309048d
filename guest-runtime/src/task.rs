//! Processes and threads on one vCPU, scheduled cooperatively.
//!
//! A task (thread) runs until it makes a system call that must wait (a
//! pipe with nothing to read, wait4, futex, sleep) or exits; then the
//! runtime saves its registers and resumes another runnable task by
//! rewriting the syscall frame it returns through. Nothing of a waiting
//! task lives on the runtime stack: a waiting call either re-executes
//! `syscall` when the task resumes ("restart": the frame's RIP is moved
//! back over the instruction) or has its result written into the saved
//! RAX by whoever wakes it ("complete"). A task that spins without system
//! calls keeps the vCPU until the run's deadline.
//!
//! Each process has its own address space (switching processes is one
//! ring-0 CR3 load), descriptor table, working directory and signal
//! dispositions; threads share them.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell, UnsafeCell};

use crate::errno::*;
use crate::file::{self, FdTable};
use crate::mm::{self, AddressSpace};
use crate::rt::Frame;
use crate::rt::Global;
use crate::uaccess::*;
use crate::vfs::{self, NodeRef};
use crate::{elf, hc, stack, time};

pub type SysResult = Result<u64, i64>;

/// Returned by a syscall handler that put the current task to sleep.
pub const BLOCKED: i64 = 100_000;

/// Default cap on live processes (zombies included), as RLIMIT_NPROC.
pub const DEFAULT_MAX_PROCS: u32 = 256;

pub const SIGKILL: u32 = 9;
pub const SIGSEGV: u32 = 11;
pub const SIGPIPE: u32 = 13;
pub const SIGCHLD: u32 = 17;
pub const SIGCONT: u32 = 18;
pub const SIGSTOP: u32 = 19;

const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const SA_SIGINFO: u64 = 4;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_RESETHAND: u64 = 0x8000_0000;
const SA_RESTART: u64 = 0x1000_0000;

/// Saved user state of a task that is not running.
#[repr(C, align(64))]
pub struct Regs {
    /// The XSAVE/FXSAVE image (x87, MXCSR, XMM, YMM upper halves).
    fpu: [u8; 1024],
    frame: Frame,
    /// XMM0-15 as `syscall_entry` saved them.
    xmm: [u8; 256],
    fs_base: u64,
}

/// An address space that may be shared (a vfork child borrows its
/// parent's until it execs or exits).
pub struct Space(UnsafeCell<Option<Box<AddressSpace>>>);

impl Space {
    fn new(b: Box<AddressSpace>) -> Rc<Space> {
        Rc::new(Space(UnsafeCell::new(Some(b))))
    }
    #[allow(clippy::mut_from_ref)]
    fn get(&self) -> &mut AddressSpace {
        // SAFETY: single-threaded runtime; the box lives until drop.
        match unsafe { &mut *self.0.get() } {
            Some(b) => b,
            None => hc::panic(b"address space used after release"),
        }
    }
}

impl Drop for Space {
    fn drop(&mut self) {
        if let Some(b) = self.0.get_mut().take() {
            // SAFETY: single-threaded; the flush trap reads it.
            let was_current = unsafe { mm::NEXT_CR3 } != 0 && core::ptr::eq(&*b, mm::current() as *const _);
            mm::destroy_space(b);
            if was_current {
                // Make the next activation reload CR3 even if the frame
                // of this root is reused for another space.
                // SAFETY: as above.
                unsafe { mm::NEXT_CR3 = 0 };
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Runnable,
    Blocked,
    Dead,
}

pub enum Wait {
    None,
    PipeRead(Rc<RefCell<file::Pipe>>),
    PipeWrite(Rc<RefCell<file::Pipe>>),
    Child,
    /// Woken by FUTEX_WAKE on (space, address).
    Futex(usize, u64),
    Sleep,
    /// A vfork parent, until the child execs or exits.
    Vfork(u32),
    /// poll/select: any change of pipe or process state.
    Event(u64),
    /// pause / sigsuspend.
    Signal,
}

pub struct Process {
    pub pid: u32,
    pub ppid: Cell<u32>,
    pub pgid: Cell<u32>,
    pub sid: Cell<u32>,
    space: RefCell<Option<Rc<Space>>>,
    pub fds: RefCell<FdTable>,
    pub cwd: RefCell<NodeRef>,
    pub umask: Cell<u32>,
    /// (handler, flags, restorer, mask) per signal 1..=64.
    pub sigactions: RefCell<[[u64; 4]; 65]>,
    /// Wait status once exited (a zombie until reaped).
    pub status: Cell<Option<u32>>,
    pub children: RefCell<Vec<Rc<Process>>>,
    pub exe: RefCell<Vec<u8>>,
    pub threads: Cell<u32>,
    pub pending: Cell<u64>,
    /// Set when a vfork child released its parent's address space.
    pub vfork_done: Cell<bool>,
    /// ITIMER_REAL: when SIGALRM is due (monotonic ns) and its interval
    /// (0: once).
    pub alarm: Cell<Option<(u64, u64)>>,
}

pub struct Task {
    pub tid: u32,
    pub process: RefCell<Rc<Process>>,
    regs: UnsafeCell<Box<Regs>>,
    pub state: Cell<State>,
    pub wait: RefCell<Wait>,
    pub restart: Cell<bool>,
    pub wake_at: Cell<Option<u64>>,
    /// The deadline of a timed wait woken to run again (poll, select,
    /// epoll_wait), for the call it re-executes: the timeout does not
    /// start over on every wake.
    pub restart_deadline: Cell<Option<u64>>,
    /// Woken from a wait that runs again because a signal came: whether
    /// the call may run again after a handler (with `SA_RESTART`) or
    /// always ends with `EINTR` then (poll, select, epoll_wait), as on
    /// Linux. Read when the handler's frame is built.
    pub interrupted: Cell<Option<bool>>,
    pub woken: Cell<bool>,
    pub sigmask: Cell<u64>,
    /// Mask to restore after a sigsuspend's handler runs.
    pub saved_mask: Cell<Option<u64>>,
    pub pending: Cell<u64>,
    pub clear_child_tid: Cell<u64>,
    /// sigaltstack: (base, size); size 0 = none.
    pub altstack: Cell<(u64, u64)>,
}

struct Sched {
    tasks: Vec<Rc<Task>>,
    current: usize,
    next_id: u32,
    procs: u32,
    max_procs: u32,
    /// Bumped whenever pipe or process state changes (wakes poll/select).
    event: u64,
    init: Option<Rc<Process>>,
}

static SCHED: Global<Sched> = Global::new(Sched {
    tasks: Vec::new(),
    current: 0,
    next_id: 1,
    procs: 0,
    max_procs: DEFAULT_MAX_PROCS,
    event: 0,
    init: None,
});

/// How process 1's program was loaded (to rebuild its initial stack for a
/// restored entry snapshot).
static INIT_LOADED: Global<Option<elf::Loaded>> = Global::new(None);

pub fn current_exe_loaded() -> elf::Loaded {
    match *INIT_LOADED.get() {
        Some(l) => l,
        None => hc::panic(b"no initial program"),
    }
}

pub fn current() -> Rc<Task> {
    let s = SCHED.get();
    match s.tasks.get(s.current) {
        Some(t) => t.clone(),
        None => hc::panic(b"no current task"),
    }
}

pub fn current_process() -> Rc<Process> {
    current().process.borrow().clone()
}

pub fn cwd() -> NodeRef {
    current_process().cwd.borrow().clone()
}

pub fn set_cwd(n: NodeRef) {
    *current_process().cwd.borrow_mut() = n;
}

pub fn current_exe() -> Vec<u8> {
    current_process().exe.borrow().clone()
}

/// Undoes a `block` whose caller decided to return what it has instead.
pub fn unblock_if(e: i64) {
    if e == BLOCKED {
        let t = current();
        t.state.set(State::Runnable);
        *t.wait.borrow_mut() = Wait::None;
        t.wake_at.set(None);
    }
}

pub fn umask() -> u32 {
    current_process().umask.get()
}

/// Something a poller may care about happened.
pub fn notify() {
    SCHED.get().event += 1;
}

fn new_regs() -> Box<Regs> {
    Box::new(Regs { fpu: [0; 1024], frame: Frame::default(), xmm: [0; 256], fs_base: 0 })
}

fn space_key(p: &Process) -> usize {
    p.space.borrow().as_ref().map_or(0, |s| Rc::as_ptr(s) as usize)
}

fn space_of(p: &Process) -> Option<Rc<Space>> {
    p.space.borrow().clone()
}

// --- start -------------------------------------------------------------------

/// Creates process 1 around the boot page tables and runs `image` in it.
/// Returns (entry, stack pointer) to jump to.
pub fn start_init(
    image: &NodeRef,
    exe_path: &[u8],
    args: &[u8],
    argc: usize,
    envc: usize,
    max_procs: u32,
) -> Result<(u64, u64), i64> {
    let s = SCHED.get();
    if max_procs > 0 {
        s.max_procs = max_procs;
    }
    let space = Space::new(mm::boot_space());
    mm::activate(space.get());
    let p = Rc::new(Process {
        pid: 1,
        ppid: Cell::new(0),
        pgid: Cell::new(1),
        sid: Cell::new(1),
        space: RefCell::new(Some(space)),
        fds: RefCell::new(FdTable::stdio()),
        cwd: RefCell::new(vfs::boot_cwd()),
        umask: Cell::new(0o022),
        sigactions: RefCell::new([[0; 4]; 65]),
        status: Cell::new(None),
        children: RefCell::new(Vec::new()),
        exe: RefCell::new(Vec::new()),
        threads: Cell::new(1),
        pending: Cell::new(0),
        vfork_done: Cell::new(false),
        alarm: Cell::new(None),
    });
    let t = Rc::new(Task {
        tid: 1,
        process: RefCell::new(p.clone()),
        regs: UnsafeCell::new(new_regs()),
        state: Cell::new(State::Runnable),
        wait: RefCell::new(Wait::None),
        restart: Cell::new(false),
        wake_at: Cell::new(None),
        restart_deadline: Cell::new(None),
        interrupted: Cell::new(None),
        woken: Cell::new(false),
        sigmask: Cell::new(0),
        saved_mask: Cell::new(None),
        pending: Cell::new(0),
        clear_child_tid: Cell::new(0),
        altstack: Cell::new((0, 0)),
    });
    s.tasks.push(t);
    s.current = 0;
    s.next_id = 2;
    s.procs = 1;
    s.init = Some(p.clone());
    *p.exe.borrow_mut() = exe_path.to_vec();
    let img = elf::parse(image)?;
    let interp = elf::parse_interp(&img)?;
    let loaded = elf::load(&img, interp.as_ref())?;
    let sp = stack::build(&loaded, args, argc, envc).map_err(|_| E2BIG)?;
    *INIT_LOADED.get() = Some(loaded);
    Ok((loaded.entry, sp))
}

// --- context switch ------------------------------------------------------------

fn xmm_area(f: &mut Frame) -> *mut u8 {
    // syscall_entry saves XMM0-15 in the 256 bytes just below the frame.
    (f as *mut Frame as *mut u8).wrapping_sub(256)
}

fn has_xsave() -> bool {
    // CPUID.1:ECX.OSXSAVE
    core::arch::x86_64::__cpuid(1).ecx & (1 << 27) != 0
}

fn save(t: &Task, f: &mut Frame) {
    // SAFETY: the task's register box is only touched here, in `load`,
    // and by wakers writing the saved RAX, never concurrently.
    let r = unsafe { &mut **t.regs.get() };
    r.frame = *f;
    // SAFETY: the 256 bytes below the frame hold the saved XMM registers.
    unsafe { core::ptr::copy_nonoverlapping(xmm_area(f), r.xmm.as_mut_ptr(), 256) };
    // SAFETY: rdfsbase is enabled (CR4.FSGSBASE); the save area is 64-byte
    // aligned and 1024 bytes, enough for x87+SSE+AVX.
    unsafe {
        core::arch::asm!("rdfsbase {}", out(reg) r.fs_base, options(nostack, preserves_flags));
        if has_xsave() {
            core::arch::asm!("xsave64 [{}]", in(reg) r.fpu.as_mut_ptr(), in("eax") 7u32, in("edx") 0u32, options(nostack, preserves_flags));
        } else {
            core::arch::asm!("fxsave64 [{}]", in(reg) r.fpu.as_mut_ptr(), options(nostack, preserves_flags));
        }
    }
}

fn load(t: &Task, f: &mut Frame) {
    // SAFETY: see `save`.
    let r = unsafe { &mut **t.regs.get() };
    *f = r.frame;
    // SAFETY: as in `save`.
    unsafe { core::ptr::copy_nonoverlapping(r.xmm.as_ptr(), xmm_area(f), 256) };
    // SAFETY: the image was written by xsave/fxsave (or is the all-zero
    // initial image with a valid MXCSR set below), 64-byte aligned.
    unsafe {
        core::arch::asm!("wrfsbase {}", in(reg) r.fs_base, options(nostack, preserves_flags));
        if r.fpu[24..28] == [0; 4] {
            // A fresh task: default x87 control word and MXCSR.
            r.fpu[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
            r.fpu[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
        }
        if has_xsave() {
            core::arch::asm!("xrstor64 [{}]", in(reg) r.fpu.as_ptr(), in("eax") 7u32, in("edx") 0u32, options(nostack, preserves_flags));
        } else {
            core::arch::asm!("fxrstor64 [{}]", in(reg) r.fpu.as_ptr(), options(nostack, preserves_flags));
        }
    }
    let p = t.process.borrow().clone();
    if let Some(space) = space_of(&p) {
        mm::activate(space.get());
    }
}

/// Sets a blocked task's result (the saved RAX) and makes it runnable.
fn complete(t: &Task, result: Result<u64, i64>) {
    // SAFETY: see `save`; the task is not running.
    let r = unsafe { &mut **t.regs.get() };
    r.frame.rax = match result {
        Ok(v) => v,
        Err(e) => (-e) as u64,
    };
    if t.restart.get() {
        // A call that was to run again (poll, epoll_wait, select with a
        // timeout) ends instead: `syscall_exit` moved RIP back onto the
        // `syscall` instruction; step over it again, or the program would
        // re-execute it with the result as the call number.
        r.frame.rip = r.frame.rip.wrapping_add(2);
    }
    t.restart.set(false);
    t.state.set(State::Runnable);
    *t.wait.borrow_mut() = Wait::None;
    t.wake_at.set(None);
}

/// Puts the current task to sleep; the handler returns `Err(BLOCKED)`.
/// With `restart`, the call runs again when the task wakes; otherwise the
/// waker (or the timeout) supplies its result.
pub fn block(wait: Wait, deadline: Option<u64>, restart: bool) -> SysResult {
    let t = current();
    *t.wait.borrow_mut() = wait;
    t.wake_at.set(deadline);
    t.restart.set(restart);
    t.woken.set(false);
    t.state.set(State::Blocked);
    Err(BLOCKED)
}

fn unblocked_pending(t: &Task) -> u64 {
    let p = t.process.borrow();
    (t.pending.get() | p.pending.get()) & !t.sigmask.get()
        | ((t.pending.get() | p.pending.get()) & (1 << (SIGKILL - 1)))
}

/// How a blocked task goes on.
enum Wake {
    /// Run the system call again.
    Restart,
    /// A signal came: run the system call again unless a handler runs
    /// first and the call is not to be restarted after it (see
    /// `Task::interrupted`).
    Interrupted,
    /// The call is over with this result.
    Complete(Result<u64, i64>),
}

/// Whether a blocked task can go on (or must, to handle a signal).
fn ready(t: &Task, now: u64) -> Option<Wake> {
    let wait = t.wait.borrow();
    let restart = t.restart.get();
    let met = |cond: bool| cond.then_some(if restart { Wake::Restart } else { Wake::Complete(Ok(0)) });
    if unblocked_pending(t) != 0 && !matches!(*wait, Wait::Vfork(_)) {
        return Some(if restart { Wake::Interrupted } else { Wake::Complete(Err(EINTR)) });
    }
    if t.wake_at.get().is_some_and(|d| now >= d) {
        return Some(Wake::Complete(match *wait {
            Wait::Futex(..) => Err(ETIMEDOUT),
            _ => Ok(0),
        }));
    }
    let p = t.process.borrow().clone();
    match &*wait {
        Wait::None => met(true),
        Wait::PipeRead(pipe) => {
            let pipe = pipe.borrow();
            met(!pipe.buf.is_empty() || pipe.writers == 0)
        }
        Wait::PipeWrite(pipe) => {
            let pipe = pipe.borrow();
            met(pipe.buf.len() < file::PIPE_CAPACITY || pipe.readers == 0)
        }
        Wait::Child => {
            let ch = p.children.borrow();
            met(ch.is_empty() || ch.iter().any(|c| c.status.get().is_some()))
        }
        Wait::Futex(..) | Wait::Sleep | Wait::Signal => met(t.woken.get()),
        Wait::Vfork(pid) => t.woken.get().then_some(Wake::Complete(Ok(*pid as u64))),
        Wait::Event(gen) => met(SCHED.get().event != *gen),
    }
}

const ETIMEDOUT: i64 = 110;

// --- alarms (ITIMER_REAL) -------------------------------------------------------------
//
// No timer interrupts reach the guest: an alarm is noticed when a system
// call returns or when every task waits (the runtime then sleeps no later
// than the earliest alarm). A program that spins without system calls gets
// its SIGALRM at its next one.

const SIGALRM: u32 = 14;

/// The earliest alarm of any process (monotonic ns), if any.
static NEXT_ALARM: Global<Option<u64>> = Global::new(None);

fn recompute_next_alarm() {
    *NEXT_ALARM.get() = live_processes().iter().filter_map(|p| p.alarm.get().map(|(d, _)| d)).min();
}

/// Sends SIGALRM to every process whose alarm is due (re-arming interval
/// timers).
fn fire_due_alarms(now: u64) {
    if NEXT_ALARM.get().is_none_or(|d| now < d) {
        return;
    }
    for p in live_processes() {
        if let Some((due, interval)) = p.alarm.get() {
            if now >= due {
                p.alarm.set((interval > 0).then(|| (now.saturating_add(interval), interval)));
                send_signal(&p, None, SIGALRM);
            }
        }
    }
    recompute_next_alarm();
}

/// Sets the current process's alarm (`value_ns` 0: none) and returns the
/// old one as (ns left, interval).
pub fn set_alarm(value_ns: u64, interval_ns: u64) -> (u64, u64) {
    let p = current_process();
    let now = time::monotonic_ns();
    let old = p.alarm.get().map_or((0, 0), |(due, iv)| (due.saturating_sub(now).max(1), iv));
    p.alarm.set((value_ns > 0).then(|| (now.saturating_add(value_ns), interval_ns)));
    recompute_next_alarm();
    old
}

/// The current process's alarm as (ns left, interval).
pub fn get_alarm() -> (u64, u64) {
    let now = time::monotonic_ns();
    current_process().alarm.get().map_or((0, 0), |(due, iv)| (due.saturating_sub(now).max(1), iv))
}

/// Called on the way out of every system call: if the current task can
/// no longer run, switch to one that can; then deliver pending signals.
pub fn syscall_exit(f: &mut Frame, nr: u64) {
    let s = SCHED.get();
    if NEXT_ALARM.get().is_some() {
        fire_due_alarms(time::monotonic_ns());
    }
    let cur = current();
    if cur.state.get() == State::Blocked && cur.restart.get() {
        f.rip = f.rip.wrapping_sub(2);
        f.rax = nr;
    } else {
        // The call was not (or no longer) a re-executed timed wait.
        cur.restart_deadline.set(None);
    }
    if core::mem::take(YIELD.get()) && cur.state.get() == State::Runnable {
        let me = s.current;
        if let Some(next) = pick(me, time::monotonic_ns(), false) {
            save(&cur, f);
            s.current = next;
            load(&s.tasks[next], f);
        }
    } else if cur.state.get() != State::Runnable {
        if cur.state.get() == State::Blocked {
            save(&cur, f);
        }
        switch_to_next(f, s.current);
    }
    deliver_signals(f);
}

static YIELD: Global<bool> = Global::new(false);

/// sched_yield: let another runnable task go first.
pub fn request_yield() {
    *YIELD.get() = true;
}

/// Index of a task that can run now, searching round-robin after `from`;
/// blocked tasks whose wait is over are woken on the way.
fn pick(from: usize, now: u64, include_from: bool) -> Option<usize> {
    let s = SCHED.get();
    let n = s.tasks.len();
    for k in 1..=n {
        let i = (from + k) % n;
        if i == from && !include_from {
            continue;
        }
        let t = &s.tasks[i];
        match t.state.get() {
            State::Runnable => return Some(i),
            State::Blocked => match ready(t, now) {
                Some(wake @ (Wake::Restart | Wake::Interrupted)) => {
                    if matches!(wake, Wake::Interrupted) {
                        // poll/select/epoll_wait never run again after a
                        // handler; pipe I/O and wait4 do with SA_RESTART.
                        t.interrupted.set(Some(!matches!(*t.wait.borrow(), Wait::Event(_))));
                    }
                    t.state.set(State::Runnable);
                    *t.wait.borrow_mut() = Wait::None;
                    t.restart_deadline.set(t.wake_at.take());
                    return Some(i);
                }
                Some(Wake::Complete(r)) => {
                    complete(t, r);
                    return Some(i);
                }
                None => {}
            },
            State::Dead => {}
        }
    }
    None
}

fn switch_to_next(f: &mut Frame, from: usize) {
    let s = SCHED.get();
    loop {
        reap_dead_tasks();
        let from = from.min(s.tasks.len().saturating_sub(1));
        let now = time::monotonic_ns();
        fire_due_alarms(now);
        if let Some(i) = pick(from, now, true) {
            s.current = i;
            load(&s.tasks[i], f);
            return;
        }
        // Nothing can run: sleep on the host until the earliest timeout
        // (none: everyone waits for everyone, as a deadlocked Linux
        // process would, until the run's deadline).
        let earliest = s
            .tasks
            .iter()
            .filter(|t| t.state.get() == State::Blocked)
            .filter_map(|t| t.wake_at.get())
            .chain(*NEXT_ALARM.get())
            .min();
        match earliest {
            Some(d) => hc::sleep_ns(d.saturating_sub(now)),
            None => hc::sleep_ns(u64::MAX),
        }
    }
}

/// Drops dead tasks from the run list, keeping `current` valid.
fn reap_dead_tasks() {
    let s = SCHED.get();
    let mut i = 0;
    while i < s.tasks.len() {
        if s.tasks[i].state.get() == State::Dead && i != s.current {
            s.tasks.remove(i);
            if i < s.current {
                s.current -= 1;
            }
        } else {
            i += 1;
        }
    }
}

// --- signals -------------------------------------------------------------------------

fn default_ignored(sig: u32) -> bool {
    matches!(sig, SIGCHLD | SIGCONT | 23 | 28) // SIGURG, SIGWINCH
}

/// Marks `sig` pending for process `p` (or, with `task`, for that thread)
/// unless it is ignored; a stopped-signal is treated as ignored.
pub fn send_signal(p: &Rc<Process>, task: Option<&Rc<Task>>, sig: u32) {
    if sig == 0 || sig > 64 || p.status.get().is_some() {
        return;
    }
    if sig == SIGSTOP || sig == 20 || sig == 21 || sig == 22 {
        return; // no job control here
    }
    let handler = p.sigactions.borrow()[sig as usize][0];
    if sig != SIGKILL && (handler == SIG_IGN || (handler == SIG_DFL && default_ignored(sig))) {
        return;
    }
    let bit = 1u64 << (sig - 1);
    match task {
        Some(t) => t.pending.set(t.pending.get() | bit),
        None => p.pending.set(p.pending.get() | bit),
    }
    notify();
}

/// Runs the current task's first deliverable signal: the default action
/// (terminate) or a handler frame on its stack.
fn deliver_signals(f: &mut Frame) {
    loop {
        let t = current();
        let pend = unblocked_pending(&t);
        if pend == 0 {
            // No handler ran: an interrupted wait just runs again.
            t.interrupted.set(None);
            return;
        }
        let sig = pend.trailing_zeros() + 1;
        let bit = 1u64 << (sig - 1);
        let p = t.process.borrow().clone();
        if t.pending.get() & bit != 0 {
            t.pending.set(t.pending.get() & !bit);
        } else {
            p.pending.set(p.pending.get() & !bit);
        }
        let act = p.sigactions.borrow()[sig as usize];
        if sig == SIGKILL || act[0] == SIG_DFL {
            if default_ignored(sig) {
                continue;
            }
            let _ = exit_group(f, 0, sig);
            switch_to_next(f, SCHED.get().current);
            continue;
        }
        if act[0] == SIG_IGN {
            continue;
        }
        if setup_frame(&t, f, sig, &act).is_err() {
            let _ = exit_group(f, 0, SIGSEGV);
            switch_to_next(f, SCHED.get().current);
            continue;
        }
        if act[1] & SA_RESETHAND != 0 {
            p.sigactions.borrow_mut()[sig as usize] = [0; 4];
        }
        return;
    }
}

/// Builds a Linux rt_sigframe below the red zone and enters the handler.
fn setup_frame(t: &Task, f: &mut Frame, sig: u32, act: &[u64; 4]) -> Result<(), i64> {
    if let Some(restartable) = t.interrupted.take() {
        if !restartable || act[1] & SA_RESTART == 0 {
            // The interrupted call ends with EINTR: past its `syscall`
            // (the frame is on it, to run it again), with that result.
            f.rip = f.rip.wrapping_add(2);
            f.rax = (-EINTR) as u64;
        }
    }
    // A handler outside the program's address range could not be jumped
    // to (the CPU faults on the runtime's return path): SIGSEGV instead.
    if act[1] & SA_RESTORER == 0 || act[0] >= hvsandbox_abi::user::ADDR_LIMIT {
        return Err(EFAULT);
    }
    // Full FPU state in FXSAVE form, with the program's XMM registers.
    let mut fx = [0u8; 512];
    let mut aligned = Aligned512([0; 512]);
    // SAFETY: fxsave64 writes 512 bytes into our 16-aligned buffer.
    unsafe { core::arch::asm!("fxsave64 [{}]", in(reg) aligned.0.as_mut_ptr(), options(nostack, preserves_flags)) };
    fx.copy_from_slice(&aligned.0);
    // SAFETY: the 256 bytes below the frame hold the program's XMM0-15.
    let xmm = unsafe { core::slice::from_raw_parts(xmm_area(f), 256) };
    fx[160..416].copy_from_slice(xmm);

    const SA_ONSTACK: u64 = 0x0800_0000;
    let (alt_base, alt_size) = t.altstack.get();
    let on_alt = alt_size != 0 && f.rsp > alt_base && f.rsp <= alt_base + alt_size;
    let mut sp = if act[1] & SA_ONSTACK != 0 && alt_size != 0 && !on_alt {
        alt_base + alt_size
    } else {
        f.rsp.wrapping_sub(128) // red zone
    };
    sp = (sp - 512) & !63;
    let fp_va = sp;
    sp -= 128;
    let info_va = sp;
    sp -= 304;
    sp &= !15;
    let uc_va = sp;
    sp -= 8; // return address: rsp % 16 == 8 at handler entry
    let ret_va = sp;

    let mut uc = [0u8; 304];
    let mut put = |off: usize, v: u64| uc[off..off + 8].copy_from_slice(&v.to_le_bytes());
    // uc_mcontext (struct sigcontext) starts at 40.
    let m = 40;
    // r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags (R11 and
    // RCX hold RFLAGS and RIP after `syscall`).
    let regs = [
        f.r8, f.r9, f.r10, f.rflags, f.r12, f.r13, f.r14, f.r15, f.rdi, f.rsi, f.rbp, f.rbx, f.rdx, f.rax, f.rip,
        f.rsp, f.rip, f.rflags,
    ];
    for (i, &v) in regs.iter().enumerate() {
        put(m + 8 * i, v);
    }
    put(m + 8 * 18, 0x2b_0000_0000_0033); // cs, gs, fs, ss
    put(m + 8 * 23, fp_va); // fpstate
    put(296, t.sigmask.get()); // uc_sigmask
    user_bytes_mut(fp_va, 512)?.copy_from_slice(&fx);
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    user_bytes_mut(info_va, 128)?.copy_from_slice(&info);
    user_bytes_mut(uc_va, 304)?.copy_from_slice(&uc);
    user_bytes_mut(ret_va, 8)?.copy_from_slice(&act[2].to_le_bytes());

    let mut mask = t.sigmask.get() | act[3];
    if act[1] & SA_NODEFER == 0 {
        mask |= 1 << (sig - 1);
    }
    if let Some(saved) = t.saved_mask.take() {
        // sigsuspend: the handler's frame restores the pre-suspend mask.
        user_bytes_mut(uc_va + 296, 8)?.copy_from_slice(&saved.to_le_bytes());
    }
    t.sigmask.set(mask & !((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))));
    // The handler's system calls come first; an interrupted wait starts
    // over when it returns.
    t.restart_deadline.set(None);
    f.rsp = ret_va;
    f.rip = act[0];
    f.rdi = sig as u64;
    f.rsi = if act[1] & SA_SIGINFO != 0 { info_va } else { 0 };
    f.rdx = if act[1] & SA_SIGINFO != 0 { uc_va } else { 0 };
    f.rax = 0;
    f.rflags &= !0x400; // DF clear for the handler
    Ok(())
}

#[repr(C, align(16))]
struct Aligned512([u8; 512]);

/// The program took an exception (see `rt::program_fault`): `f` holds its
/// registers. A handler for the signal runs if the program installed one;
/// otherwise the process dies of it — for process 1 that ends the run and
/// the host reports the fault.
pub fn program_fault(f: &mut Frame, mut vector: u64, mut error: u64, cr2: u64) {
    // `int N` (N other than 3 and 4) is a #GP with error code N*8+2 on
    // hardware (a DPL-0 gate); this host reports it as #UD.
    if vector == 6 {
        if let Ok(b) = user_bytes(f.rip, 2) {
            if b[0] == 0xcd {
                vector = 13;
                error = (b[1] as u64) << 3 | 2;
            }
        }
    }
    // A first touch of a page of a lazily backed mapping (not-present
    // fault, bit 0 of the error code clear): back it and retry.
    if vector == 14 && error & 1 == 0 {
        match mm::fault_in(cr2, error & 2 != 0) {
            mm::Fault::Backed => {
                crate::stats::stat(|s| s.page_faults += 1);
                return;
            }
            mm::Fault::OutOfMemory => {
                // As Linux's OOM killer would: the process dies of SIGKILL;
                // for process 1 the host reports the memory limit.
                if current_process().pid == 1 {
                    crate::io::flush_all();
                    crate::mm::record_memory_peak();
                    hc::call(hvsandbox_abi::hc::OUT_OF_MEMORY, cr2, 0, 0);
                }
                let _ = exit_group(f, 0, SIGKILL);
                switch_to_next(f, SCHED.get().current);
                deliver_signals(f);
                return;
            }
            mm::Fault::Refused => {}
        }
    }
    let sig = hvsandbox_abi::signal_for_vector(vector);
    let t = current();
    let p = t.process.borrow().clone();
    let act = p.sigactions.borrow()[sig as usize];
    let blocked = t.sigmask.get() & (1 << (sig - 1)) != 0;
    if act[0] > SIG_IGN && !blocked && setup_frame(&t, f, sig, &act).is_ok() {
        return;
    }
    if p.pid == 1 {
        crate::io::flush_all();
        crate::vfs::collect();
        crate::mm::record_memory_peak();
        hc::call6(hvsandbox_abi::hc::PROGRAM_FAULT, [vector, error, f.rip, cr2, f.rsp, 0]);
        loop {
            core::hint::spin_loop();
        }
    }
    let _ = exit_group(f, 0, sig);
    switch_to_next(f, SCHED.get().current);
    deliver_signals(f);
}

/// rt_sigreturn: restores what `setup_frame` saved.
pub fn sys_rt_sigreturn(f: &mut Frame) -> SysResult {
    let t = current();
    let uc_va = f.rsp; // the handler's `ret` popped the return address
    let uc = user_bytes(uc_va, 304)?;
    let get = |off: usize| u64::from_le_bytes(uc[off..off + 8].try_into().unwrap_or([0; 8]));
    let m = 40;
    f.r8 = get(m);
    f.r9 = get(m + 8);
    f.r10 = get(m + 16);
    f.r12 = get(m + 32);
    f.r13 = get(m + 40);
    f.r14 = get(m + 48);
    f.r15 = get(m + 56);
    f.rdi = get(m + 64);
    f.rsi = get(m + 72);
    f.rbp = get(m + 80);
    f.rbx = get(m + 88);
    f.rdx = get(m + 96);
    f.rax = get(m + 104);
    f.rsp = get(m + 120);
    f.rip = get(m + 128);
    if f.rip >= hvsandbox_abi::user::ADDR_LIMIT {
        // Linux's return to such an address faults: the process dies.
        return exit_group(f, 0, SIGSEGV);
    }
    // Only the arithmetic flags and DF come from the frame.
    f.rflags = (f.rflags & !0xcd5) | (get(m + 136) & 0xcd5);
    let fp_va = get(m + 8 * 23);
    let mask = get(296);
    t.sigmask.set(mask & !((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))));
    if fp_va != 0 {
        let fx = user_bytes(fp_va, 512)?;
        // SAFETY: the 256 bytes below the frame are the XMM save area.
        unsafe { core::ptr::copy_nonoverlapping(fx[160..416].as_ptr(), xmm_area(f), 256) };
        let mxcsr = u32::from_le_bytes(fx[24..28].try_into().unwrap_or([0x80, 0x1f, 0, 0])) & 0xffbf;
        // SAFETY: ldmxcsr of a value with the reserved bits cleared.
        unsafe { core::arch::asm!("ldmxcsr [{}]", in(reg) &mxcsr, options(nostack, preserves_flags)) };
    }
    // Return the restored RAX (the dispatcher writes it back).
    Ok(f.rax)
}

pub fn sys_sigprocmask(how: u64, set: u64, old: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let t = current();
    let prev = t.sigmask.get();
    if set != 0 {
        let s = get_u64(set)?;
        let new = match how {
            0 => prev | s,
            1 => prev & !s,
            2 => s,
            _ => return Err(EINVAL),
        };
        t.sigmask.set(new & !((1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1))));
    }
    if old != 0 {
        put_u64s(old, &[prev])?;
    }
    Ok(0)
}

pub fn sys_sigaction(sig: u64, act: u64, old: u64, size: u64) -> SysResult {
    if !(1..=64).contains(&sig) || size != 8 {
        return Err(EINVAL);
    }
    if act != 0 && (sig == SIGKILL as u64 || sig == SIGSTOP as u64) {
        return Err(EINVAL);
    }
    let p = current_process();
    let prev = p.sigactions.borrow()[sig as usize];
    if act != 0 {
        let b = user_bytes(act, 32)?;
        let mut a = [0u64; 4];
        for (i, w) in a.iter_mut().enumerate() {
            *w = u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().map_err(|_| EFAULT)?);
        }
        p.sigactions.borrow_mut()[sig as usize] = a;
        // Setting SIG_IGN discards a pending instance.
        if a[0] == SIG_IGN || (a[0] == SIG_DFL && default_ignored(sig as u32)) {
            let bit = !(1u64 << (sig - 1));
            p.pending.set(p.pending.get() & bit);
        }
    }
    if old != 0 {
        put_u64s(old, &prev)?;
    }
    Ok(0)
}

pub fn sys_sigpending(set: u64) -> SysResult {
    let t = current();
    let p = t.process.borrow();
    put_u64s(set, &[(t.pending.get() | p.pending.get()) & t.sigmask.get()])?;
    Ok(0)
}

pub fn sys_sigsuspend(mask: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let m = get_u64(mask)?;
    let t = current();
    t.saved_mask.set(Some(t.sigmask.get()));
    t.sigmask.set(m & !(1 << (SIGKILL - 1)));
    block(Wait::Signal, None, false)
}

/// sigaltstack(ss, old_ss): `stack_t` is {sp, flags (int), size}.
pub fn sys_sigaltstack(ss: u64, old: u64) -> SysResult {
    const SS_ONSTACK: u32 = 1;
    const SS_DISABLE: u32 = 2;
    const MINSIGSTKSZ: u64 = 2048;
    let t = current();
    let (base, size) = t.altstack.get();
    if old != 0 {
        let mut b = [0u8; 24];
        b[0..8].copy_from_slice(&base.to_le_bytes());
        let flags = if size == 0 { SS_DISABLE } else { 0 };
        b[8..12].copy_from_slice(&flags.to_le_bytes());
        b[16..24].copy_from_slice(&size.to_le_bytes());
        put_user(old, b)?;
    }
    if ss != 0 {
        let b = user_bytes(ss, 24)?;
        let sp = u64::from_le_bytes(b[0..8].try_into().map_err(|_| EFAULT)?);
        let flags = u32::from_le_bytes(b[8..12].try_into().map_err(|_| EFAULT)?);
        let sz = u64::from_le_bytes(b[16..24].try_into().map_err(|_| EFAULT)?);
        if flags & !(SS_DISABLE | SS_ONSTACK | (1 << 31)) != 0 {
            return Err(EINVAL);
        }
        if flags & SS_DISABLE != 0 {
            t.altstack.set((0, 0));
        } else {
            if sz < MINSIGSTKSZ {
                return Err(ENOMEM);
            }
            t.altstack.set((sp, sz));
        }
    }
    Ok(0)
}

pub fn sys_pause() -> SysResult {
    block(Wait::Signal, None, false)
}

fn find_process(pid: u32) -> Option<Rc<Process>> {
    SCHED.get().tasks.iter().map(|t| t.process.borrow().clone()).find(|p| p.pid == pid && p.status.get().is_none())
}

fn live_processes() -> Vec<Rc<Process>> {
    let mut out: Vec<Rc<Process>> = Vec::new();
    for t in &SCHED.get().tasks {
        let p = t.process.borrow().clone();
        if p.status.get().is_none() && !out.iter().any(|q| Rc::ptr_eq(q, &p)) {
            out.push(p);
        }
    }
    out
}

pub fn sys_kill(pid: u64, sig: u64) -> SysResult {
    if sig > 64 {
        return Err(EINVAL);
    }
    let pid = pid as i32;
    let me = current_process();
    let targets: Vec<Rc<Process>> = match pid {
        p if p > 0 => find_process(p as u32).into_iter().collect(),
        0 => live_processes().into_iter().filter(|p| p.pgid.get() == me.pgid.get()).collect(),
        -1 => live_processes().into_iter().filter(|p| p.pid != 1 || Rc::ptr_eq(p, &me)).collect(),
        p => live_processes().into_iter().filter(|q| q.pgid.get() == (-p) as u32).collect(),
    };
    if targets.is_empty() {
        return Err(ESRCH);
    }
    for p in targets {
        send_signal(&p, None, sig as u32);
    }
    Ok(0)
}

pub fn sys_tgkill(tgid: u64, tid: u64, sig: u64) -> SysResult {
    if sig > 64 {
        return Err(EINVAL);
    }
    let s = SCHED.get();
    let t = s.tasks.iter().find(|t| t.tid as u64 == tid && t.state.get() != State::Dead).cloned().ok_or(ESRCH)?;
    let p = t.process.borrow().clone();
    if tgid as i64 != -1 && p.pid as u64 != tgid {
        return Err(ESRCH);
    }
    send_signal(&p, Some(&t), sig as u32);
    Ok(0)
}

/// Raises `sig` in the current thread (e.g. SIGPIPE from a write).
pub fn raise(sig: u32) {
    let t = current();
    let p = t.process.borrow().clone();
    send_signal(&p, Some(&t), sig);
}

// --- processes -----------------------------------------------------------------------

const CLONE_VM: u64 = 0x100;
const CLONE_FS: u64 = 0x200;
const CLONE_FILES: u64 = 0x400;
const CLONE_SIGHAND: u64 = 0x800;
const CLONE_VFORK: u64 = 0x4000;
const CLONE_PARENT: u64 = 0x8000;
const CLONE_THREAD: u64 = 0x10000;
const CLONE_SETTLS: u64 = 0x80000;
const CLONE_PARENT_SETTID: u64 = 0x100000;
const CLONE_CHILD_CLEARTID: u64 = 0x200000;
const CLONE_CHILD_SETTID: u64 = 0x1000000;

/// clone/fork/vfork. `f` is the caller's frame (the child starts from a
/// copy of it with RAX = 0).
pub fn sys_clone(f: &mut Frame, flags: u64, stack: u64, ptid: u64, ctid: u64, tls: u64) -> SysResult {
    if !crate::heap::has_room() {
        return Err(ENOMEM);
    }
    let s = SCHED.get();
    let parent_task = current();
    let parent = current_process();
    let tid = s.next_id;
    let child_regs = {
        let mut r = new_regs();
        save_into(&mut r, f);
        r.frame.rax = 0;
        if stack != 0 {
            r.frame.rsp = stack;
        }
        if flags & CLONE_SETTLS != 0 {
            r.fs_base = tls;
        }
        r
    };

    let (process, is_thread) = if flags & CLONE_THREAD != 0 {
        if flags & (CLONE_VM | CLONE_SIGHAND) != (CLONE_VM | CLONE_SIGHAND) {
            return Err(EINVAL);
        }
        parent.threads.set(parent.threads.get() + 1);
        (parent.clone(), true)
    } else {
        if s.procs >= s.max_procs {
            return Err(EAGAIN);
        }
        let src = space_of(&parent).ok_or(ESRCH)?;
        let space = if flags & CLONE_VM != 0 { src } else { Space::new(mm::fork_space(src.get())?) };
        let fds = if flags & CLONE_FILES != 0 {
            // Shared tables are not supported: a copy is the closest.
            parent.fds.borrow().clone()
        } else {
            parent.fds.borrow().clone()
        };
        let _ = CLONE_FS;
        let ppid = if flags & CLONE_PARENT != 0 { parent.ppid.get() } else { parent.pid };
        let child = Rc::new(Process {
            pid: tid,
            ppid: Cell::new(ppid),
            pgid: Cell::new(parent.pgid.get()),
            sid: Cell::new(parent.sid.get()),
            space: RefCell::new(Some(space)),
            fds: RefCell::new(fds),
            cwd: RefCell::new(parent.cwd.borrow().clone()),
            umask: Cell::new(parent.umask.get()),
            sigactions: RefCell::new(*parent.sigactions.borrow()),
            status: Cell::new(None),
            children: RefCell::new(Vec::new()),
            exe: RefCell::new(parent.exe.borrow().clone()),
            threads: Cell::new(1),
            pending: Cell::new(0),
            vfork_done: Cell::new(false),
            // A child does not inherit its parent's alarm.
            alarm: Cell::new(None),
        });
        let adopter =
            if flags & CLONE_PARENT != 0 { find_process(ppid).unwrap_or(parent.clone()) } else { parent.clone() };
        adopter.children.borrow_mut().push(child.clone());
        s.procs += 1;
        crate::stats::stat(|st| st.processes += 1);
        (child, false)
    };
    let task = Rc::new(Task {
        tid,
        process: RefCell::new(process),
        regs: UnsafeCell::new(child_regs),
        state: Cell::new(State::Runnable),
        wait: RefCell::new(Wait::None),
        restart: Cell::new(false),
        wake_at: Cell::new(None),
        restart_deadline: Cell::new(None),
        interrupted: Cell::new(None),
        woken: Cell::new(false),
        sigmask: Cell::new(parent_task.sigmask.get()),
        saved_mask: Cell::new(None),
        pending: Cell::new(0),
        clear_child_tid: Cell::new(if flags & CLONE_CHILD_CLEARTID != 0 { ctid } else { 0 }),
        // A forked child keeps its parent's alternate stack; a thread has none.
        altstack: Cell::new(if is_thread { (0, 0) } else { parent_task.altstack.get() }),
    });
    s.next_id += 1;
    if flags & CLONE_PARENT_SETTID != 0 {
        put_user(ptid, tid.to_le_bytes())?;
    }
    if flags & CLONE_CHILD_SETTID != 0 && (is_thread || flags & CLONE_VM != 0) {
        put_user(ctid, tid.to_le_bytes())?;
    }
    // Run the child right after the parent (insert after current).
    s.tasks.insert(s.current + 1, task.clone());
    if flags & CLONE_CHILD_SETTID != 0 && !is_thread && flags & CLONE_VM == 0 {
        // The child's own copy of memory gets its tid when it first runs:
        // write it through the child's space now.
        let child = task.process.borrow().clone();
        if let (Some(cs), Some(ms)) = (space_of(&child), space_of(&parent)) {
            mm::activate(cs.get());
            let r = put_user(ctid, tid.to_le_bytes());
            mm::activate(ms.get());
            r?;
        }
    }
    notify();
    if flags & CLONE_VFORK != 0 && !is_thread {
        // The parent waits until the child execs or exits; the result it
        // then sees is the child's pid.
        return block(Wait::Vfork(tid), None, false);
    }
    Ok(tid as u64)
}

fn save_into(r: &mut Regs, f: &mut Frame) {
    r.frame = *f;
    // SAFETY: see `save`.
    unsafe {
        core::ptr::copy_nonoverlapping(xmm_area(f), r.xmm.as_mut_ptr(), 256);
        core::arch::asm!("rdfsbase {}", out(reg) r.fs_base, options(nostack, preserves_flags));
        if has_xsave() {
            core::arch::asm!("xsave64 [{}]", in(reg) r.fpu.as_mut_ptr(), in("eax") 7u32, in("edx") 0u32, options(nostack, preserves_flags));
        } else {
            core::arch::asm!("fxsave64 [{}]", in(reg) r.fpu.as_mut_ptr(), options(nostack, preserves_flags));
        }
    }
}

/// The parent of a vfork child may go on (the child exec'd or exited).
fn release_vfork(child: &Process) {
    if child.vfork_done.replace(true) {
        return;
    }
    for t in &SCHED.get().tasks {
        if t.state.get() == State::Blocked && matches!(&*t.wait.borrow(), Wait::Vfork(pid) if *pid == child.pid) {
            t.woken.set(true);
        }
    }
}

/// Ends the current thread (exit) — the whole process if it was the last.
pub fn exit_thread(f: &mut Frame, code: u64) -> SysResult {
    let t = current();
    let p = t.process.borrow().clone();
    if p.threads.get() <= 1 {
        return exit_group(f, code as u32 & 0xff, 0);
    }
    p.threads.set(p.threads.get() - 1);
    clear_tid(&t);
    t.state.set(State::Dead);
    Err(BLOCKED)
}

fn clear_tid(t: &Task) {
    let addr = t.clear_child_tid.get();
    if addr != 0 && put_user(addr, 0u32.to_le_bytes()).is_ok() {
        futex_wake(addr, 1);
    }
}

/// Ends the current process with `code` or, if `sig` != 0, as killed by it.
pub fn exit_group(_f: &mut Frame, code: u32, sig: u32) -> SysResult {
    let t = current();
    let p = t.process.borrow().clone();
    let status = if sig != 0 { sig & 0x7f } else { (code & 0xff) << 8 };
    if p.pid == 1 {
        crate::run::finish(code as i32, sig as i32);
    }
    let s = SCHED.get();
    for other in &s.tasks {
        if Rc::ptr_eq(&other.process.borrow(), &p) {
            if other.state.get() != State::Dead {
                clear_tid(other);
            }
            other.state.set(State::Dead);
        }
    }
    p.threads.set(0);
    // Close descriptors now: pipe ends wake their peers.
    *p.fds.borrow_mut() = FdTable::empty();
    release_vfork(&p);
    // Children go to process 1.
    if let Some(init) = s.init.clone() {
        let orphans: Vec<Rc<Process>> = p.children.borrow_mut().drain(..).collect();
        for c in orphans {
            c.ppid.set(1);
            init.children.borrow_mut().push(c);
        }
    }
    p.status.set(Some(status));
    // Release the address space (the current one: it stays mapped until
    // the switch, and nothing touches user memory of this process again).
    let old = p.space.borrow_mut().take();
    drop(old);
    // Tell the parent.
    if let Some(parent) = find_process(p.ppid.get()) {
        let ign = parent.sigactions.borrow()[SIGCHLD as usize][0] == SIG_IGN;
        if ign {
            // Auto-reap.
            parent.children.borrow_mut().retain(|c| !Rc::ptr_eq(c, &p));
            s.procs -= 1;
        } else {
            send_signal(&parent, None, SIGCHLD);
        }
    }
    notify();
    Err(BLOCKED)
}

/// wait4 / waitid: reaps a zombie child matching `pid` (-1 any, 0 own
/// group, < -1 that group).
fn find_child(p: &Process, pid: i64) -> (bool, Option<Rc<Process>>) {
    let ch = p.children.borrow();
    let matches = |c: &Rc<Process>| match pid {
        -1 => true,
        0 => c.pgid.get() == p.pgid.get(),
        x if x > 0 => c.pid as i64 == x,
        x => c.pgid.get() as i64 == -x,
    };
    let any = ch.iter().any(matches);
    let zombie = ch.iter().find(|c| matches(c) && c.status.get().is_some()).cloned();
    (any, zombie)
}

fn reap(p: &Process, c: &Rc<Process>) {
    p.children.borrow_mut().retain(|x| !Rc::ptr_eq(x, c));
    SCHED.get().procs -= 1;
}

const WNOHANG: u64 = 1;

pub fn sys_wait4(pid: u64, status: u64, options: u64, rusage: u64) -> SysResult {
    let p = current_process();
    let (any, zombie) = find_child(&p, pid as i32 as i64);
    if let Some(c) = zombie {
        if status != 0 {
            put_user(status, c.status.get().unwrap_or(0).to_le_bytes())?;
        }
        if rusage != 0 {
            user_bytes_mut(rusage, 144)?.fill(0);
        }
        reap(&p, &c);
        return Ok(c.pid as u64);
    }
    if !any {
        return Err(ECHILD);
    }
    if options & WNOHANG != 0 {
        return Ok(0);
    }
    block(Wait::Child, None, true)
}

pub fn sys_waitid(idtype: u64, id: u64, info: u64, options: u64) -> SysResult {
    const WEXITED: u64 = 4;
    const WNOWAIT: u64 = 0x0100_0000;
    let pid: i64 = match idtype {
        0 => -1,                  // P_ALL
        1 => id as i32 as i64,    // P_PID
        2 => -(id as i32 as i64), // P_PGID
        _ => return Err(EINVAL),
    };
    if options & WEXITED == 0 {
        return Err(EINVAL);
    }
    let p = current_process();
    let (any, zombie) = find_child(&p, pid);
    if let Some(c) = zombie {
        if info != 0 {
            let st = c.status.get().unwrap_or(0);
            let mut si = [0u8; 128];
            si[0..4].copy_from_slice(&SIGCHLD.to_le_bytes());
            let (code, val) = if st & 0x7f == 0 { (1i32, (st >> 8) & 0xff) } else { (2i32, st & 0x7f) };
            si[8..12].copy_from_slice(&code.to_le_bytes()); // CLD_EXITED / CLD_KILLED
            si[16..20].copy_from_slice(&c.pid.to_le_bytes());
            si[20..24].copy_from_slice(&(crate::rt::UID as u32).to_le_bytes());
            si[24..28].copy_from_slice(&val.to_le_bytes());
            user_bytes_mut(info, 128)?.copy_from_slice(&si);
        }
        if options & WNOWAIT == 0 {
            reap(&p, &c);
        }
        return Ok(0);
    }
    if !any {
        return Err(ECHILD);
    }
    if options & WNOHANG != 0 {
        if info != 0 {
            user_bytes_mut(info, 128)?.fill(0);
        }
        return Ok(0);
    }
    block(Wait::Child, None, true)
}

pub fn sys_getppid() -> SysResult {
    Ok(current_process().ppid.get() as u64)
}

pub fn sys_getpid() -> SysResult {
    Ok(current_process().pid as u64)
}

pub fn sys_gettid() -> SysResult {
    Ok(current().tid as u64)
}

pub fn sys_setpgid(pid: u64, pgid: u64) -> SysResult {
    let me = current_process();
    let target = if pid == 0 { me.clone() } else { find_process(pid as u32).ok_or(ESRCH)? };
    let pgid = if pgid == 0 { target.pid } else { pgid as u32 };
    target.pgid.set(pgid);
    Ok(0)
}

pub fn sys_getpgid(pid: u64) -> SysResult {
    let p = if pid == 0 { current_process() } else { find_process(pid as u32).ok_or(ESRCH)? };
    Ok(p.pgid.get() as u64)
}

pub fn sys_getsid(pid: u64) -> SysResult {
    let p = if pid == 0 { current_process() } else { find_process(pid as u32).ok_or(ESRCH)? };
    Ok(p.sid.get() as u64)
}

pub fn sys_setsid() -> SysResult {
    let p = current_process();
    if p.pgid.get() == p.pid {
        return Err(EPERM);
    }
    p.sid.set(p.pid);
    p.pgid.set(p.pid);
    Ok(p.pid as u64)
}

pub fn set_tid_address(addr: u64) -> SysResult {
    let t = current();
    t.clear_child_tid.set(addr);
    Ok(t.tid as u64)
}

// --- futex, sleep --------------------------------------------------------------------

pub fn futex_wake(addr: u64, n: u64) -> u64 {
    let key = space_key(&current_process());
    let mut woken = 0;
    for t in &SCHED.get().tasks {
        if woken >= n {
            break;
        }
        if t.state.get() != State::Blocked {
            continue;
        }
        let hit = matches!(&*t.wait.borrow(), Wait::Futex(k, a) if *k == key && *a == addr);
        if hit {
            complete(t, Ok(0));
            woken += 1;
        }
    }
    woken
}

pub fn sys_futex(uaddr: u64, op: u64, val: u64, timeout: u64, uaddr2: u64, _val3: u64) -> SysResult {
    const FUTEX_WAIT: u64 = 0;
    const FUTEX_WAKE: u64 = 1;
    const FUTEX_REQUEUE: u64 = 3;
    const FUTEX_CMP_REQUEUE: u64 = 4;
    const FUTEX_WAIT_BITSET: u64 = 9;
    const FUTEX_WAKE_BITSET: u64 = 10;
    const FUTEX_CLOCK_REALTIME: u64 = 256;
    if !uaddr.is_multiple_of(4) {
        return Err(EINVAL);
    }
    let cmd = op & 0x7f;
    match cmd {
        FUTEX_WAKE | FUTEX_WAKE_BITSET => {
            user_bytes(uaddr, 4)?;
            Ok(futex_wake(uaddr, val))
        }
        FUTEX_WAIT | FUTEX_WAIT_BITSET => {
            let cur = u32::from_le_bytes(user_bytes(uaddr, 4)?.try_into().map_err(|_| EFAULT)?);
            if cur != val as u32 {
                return Err(EAGAIN);
            }
            let deadline = if timeout != 0 {
                let ns = read_timespec(timeout)?;
                Some(if cmd == FUTEX_WAIT_BITSET {
                    // Absolute, on the given clock.
                    let now = if op & FUTEX_CLOCK_REALTIME != 0 { time::realtime_ns() } else { time::monotonic_ns() };
                    time::monotonic_ns() + ns.saturating_sub(now)
                } else {
                    time::monotonic_ns().saturating_add(ns)
                })
            } else {
                None
            };
            let key = space_key(&current_process());
            block(Wait::Futex(key, uaddr), deadline, false)
        }
        FUTEX_REQUEUE | FUTEX_CMP_REQUEUE => {
            if cmd == FUTEX_CMP_REQUEUE {
                let cur = u32::from_le_bytes(user_bytes(uaddr, 4)?.try_into().map_err(|_| EFAULT)?);
                if cur != _val3 as u32 {
                    return Err(EAGAIN);
                }
            }
            let woken = futex_wake(uaddr, val);
            let key = space_key(&current_process());
            let mut moved = 0;
            for t in &SCHED.get().tasks {
                if moved >= timeout {
                    break;
                }
                let mut w = t.wait.borrow_mut();
                if let Wait::Futex(k, a) = &mut *w {
                    if *k == key && *a == uaddr {
                        *a = uaddr2;
                        moved += 1;
                    }
                }
            }
            Ok(woken + moved)
        }
        _ => Err(ENOSYS),
    }
}

pub fn read_timespec(ts: u64) -> Result<u64, i64> {
    let b = user_bytes(ts, 16)?;
    let sec = u64::from_le_bytes(b[0..8].try_into().map_err(|_| EFAULT)?);
    let nsec = u64::from_le_bytes(b[8..16].try_into().map_err(|_| EFAULT)?);
    if nsec >= 1_000_000_000 || sec > i64::MAX as u64 {
        return Err(EINVAL);
    }
    Ok(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
}

/// Sleeps `ns`: other tasks run meanwhile; alone, the host sleeps.
pub fn sleep(ns: u64) -> SysResult {
    let s = SCHED.get();
    let others = s.tasks.iter().enumerate().any(|(i, t)| i != s.current && t.state.get() != State::Dead);
    if !others {
        hc::sleep_ns(ns);
        return Ok(0);
    }
    block(Wait::Sleep, Some(time::monotonic_ns().saturating_add(ns)), false)
}

/// Waits for pipe/process activity or the timeout (poll/select with
/// nothing ready). Returns 0 at the timeout.
pub fn wait_event(timeout_ns: Option<u64>) -> SysResult {
    let now = time::monotonic_ns();
    // A call run again after a wake keeps the deadline it started with.
    let deadline = current().restart_deadline.take().or_else(|| timeout_ns.map(|ns| now.saturating_add(ns)));
    if deadline.is_some_and(|d| now >= d) {
        return Ok(0);
    }
    let s = SCHED.get();
    let others = s.tasks.iter().enumerate().any(|(i, t)| i != s.current && t.state.get() != State::Dead);
    if !others {
        hc::sleep_ns(deadline.map_or(u64::MAX, |d| d - now));
        return Ok(0);
    }
    block(Wait::Event(s.event), deadline, true)
}

// --- execve -----------------------------------------------------------------------------

const ARG_MAX: usize = 2 << 20;
const MAX_SHEBANG_DEPTH: u32 = 4;

fn read_strings(ptr: u64, out: &mut Vec<u8>, count: &mut usize) -> Result<(), i64> {
    if ptr == 0 {
        return Ok(());
    }
    for i in 0..(1 << 16) {
        let p = get_u64(ptr + 8 * i)?;
        if p == 0 {
            return Ok(());
        }
        let s = user_cstr(p, ARG_MAX as u64).map_err(|e| if e == ERANGE { E2BIG } else { e })?;
        if out.len() + s.len() + 1 > ARG_MAX {
            return Err(E2BIG);
        }
        out.try_reserve(s.len() + 1).map_err(|_| ENOMEM)?;
        out.extend_from_slice(s);
        out.push(0);
        *count += 1;
    }
    Err(E2BIG)
}

pub fn sys_execve(f: &mut Frame, dirfd: u64, path: u64, argv: u64, envp: u64, flags: u64) -> SysResult {
    if !crate::heap::has_room() {
        return Err(ENOMEM);
    }
    let p = user_cstr(path, 4096).map_err(|e| if e == ERANGE { ENAMETOOLONG } else { e })?.to_vec();
    let mut args = Vec::new();
    let mut argc = 0;
    read_strings(argv, &mut args, &mut argc)?;
    let mut envs = Vec::new();
    let mut envc = 0;
    read_strings(envp, &mut envs, &mut envc)?;
    let base = if p.first() == Some(&b'/') { vfs::root() } else { crate::sys_fs::base_dir(dirfd)? };
    let node = if p.is_empty() && flags & 0x1000 != 0 {
        crate::file::get(dirfd)?.node().cloned().ok_or(EACCES)?
    } else {
        vfs::resolve(&base, &p, flags & 0x100 == 0)?
    };
    exec(f, node, p, args, argc, envs, envc, 0)
}

#[allow(clippy::too_many_arguments)]
fn exec(
    f: &mut Frame,
    node: NodeRef,
    path: Vec<u8>,
    args: Vec<u8>,
    argc: usize,
    envs: Vec<u8>,
    envc: usize,
    depth: u32,
) -> SysResult {
    if node.is_dir() {
        return Err(EACCES);
    }
    if !matches!(node.kind, vfs::NodeKind::File(_)) || !vfs::permitted(&node, 1) {
        return Err(EACCES);
    }
    // "#!interpreter [arg]" scripts.
    let mut head = [0u8; 256];
    let n = match &node.kind {
        vfs::NodeKind::File(d) => d.borrow_mut().read_at(0, &mut head)?,
        _ => 0,
    };
    if n >= 2 && &head[..2] == b"#!" {
        if depth >= MAX_SHEBANG_DEPTH {
            return Err(ELOOP);
        }
        let line_end = head[..n].iter().position(|&c| c == b'\n').unwrap_or(n);
        let line = &head[2..line_end];
        let line = trim(line);
        let (interp, arg) = match line.iter().position(|&c| c == b' ' || c == b'\t') {
            Some(i) => (&line[..i], Some(trim(&line[i..]))),
            None => (line, None),
        };
        if interp.is_empty() {
            return Err(ENOEXEC);
        }
        let mut new_args = Vec::new();
        new_args.extend_from_slice(interp);
        new_args.push(0);
        let mut new_argc = 1;
        if let Some(a) = arg.filter(|a| !a.is_empty()) {
            new_args.extend_from_slice(a);
            new_args.push(0);
            new_argc += 1;
        }
        new_args.extend_from_slice(&path);
        new_args.push(0);
        new_argc += 1;
        // Skip the old argv[0].
        let skip = args.iter().position(|&c| c == 0).map_or(args.len(), |i| i + 1);
        if argc > 0 {
            new_args.extend_from_slice(&args[skip..]);
            new_argc += argc - 1;
        }
        let inode = vfs::resolve(&vfs::root(), interp, true)?;
        return exec(f, inode, interp.to_vec(), new_args, new_argc, envs, envc, depth + 1);
    }
    let img = elf::parse(&node)?;
    let interp = elf::parse_interp(&img)?;

    // Point of no return: a new address space.
    let me = current_process();
    let new_space = Space::new(mm::new_space()?);
    mm::activate(new_space.get());
    let old = me.space.borrow_mut().replace(new_space);
    let mut block = args;
    block.extend_from_slice(&envs);
    let result = elf::load(&img, interp.as_ref())
        .and_then(|l| stack::build(&l, &block, argc, envc).map(|sp| (l.entry, sp)).map_err(|_| E2BIG));
    drop(old);
    release_vfork(&me);
    let (entry, sp) = match result {
        Ok(x) => x,
        Err(_) => return exit_group(f, 0, SIGSEGV),
    };
    *me.exe.borrow_mut() = vfs::absolute(&me.cwd.borrow().clone(), &path);
    me.fds.borrow_mut().close_on_exec();
    // Handlers do not survive exec; ignored signals do.
    for a in me.sigactions.borrow_mut().iter_mut() {
        if a[0] != SIG_IGN {
            *a = [0; 4];
        }
    }
    // Other threads end.
    let s = SCHED.get();
    let cur = current();
    for t in &s.tasks {
        if !Rc::ptr_eq(t, &cur) && Rc::ptr_eq(&t.process.borrow(), &me) {
            t.state.set(State::Dead);
        }
    }
    me.threads.set(1);
    *f = Frame::default();
    f.rip = entry;
    f.rsp = sp;
    f.rflags = 0x202;
    // SAFETY: the 256 bytes below the frame are the XMM save area.
    unsafe { core::ptr::write_bytes(xmm_area(f), 0, 256) };
    // SAFETY: wrfsbase is enabled; a fresh program starts with FS = 0.
    unsafe { core::arch::asm!("wrfsbase {}", in(reg) 0u64, options(nostack, preserves_flags)) };
    Ok(0)
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}

pub fn process_limit() -> u32 {
    SCHED.get().max_procs
}
