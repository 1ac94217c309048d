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
//!
//! ~1,000 lines in one file: the task and process records, the
//! scheduler, the per-task clocks and alarms it charges and fires at each
//! switch, and the signals it posts all work on the scheduler's state
//! (`Sched`). (What a pending signal carries is `sigqueue.rs`'s; a
//! process's I/O counts, `iocount.rs`'s.)

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell, UnsafeCell};

use crate::errno::*;
use crate::file::FdTable;
use crate::mm::{self, AddressSpace};
use crate::rt::Frame;
use crate::rt::Global;
use crate::vfs::NodeRef;
pub use crate::wait::{notify, SysResult, Wait, BLOCKED};
use crate::{elf, hc, time};

/// Default cap on live processes (zombies included), as RLIMIT_NPROC.
pub const DEFAULT_MAX_PROCS: u32 = 256;

pub const SIGKILL: u32 = 9;
pub const SIGSEGV: u32 = 11;
pub const SIGPIPE: u32 = 13;
pub const SIGCHLD: u32 = 17;
pub const SIGCONT: u32 = 18;
pub const SIGSTOP: u32 = 19;
pub const SIGTSTP: u32 = 20;
pub const SIGTTIN: u32 = 21;
pub const SIGTTOU: u32 = 22;

pub const SIG_DFL: u64 = 0;
pub const SIG_IGN: u64 = 1;
pub const SA_SIGINFO: u64 = 4;
pub const SA_RESTORER: u64 = 0x0400_0000;
pub const SA_NODEFER: u64 = 0x4000_0000;
pub const SA_RESETHAND: u64 = 0x8000_0000;
pub const SA_RESTART: u64 = 0x1000_0000;

/// Bytes of a task's XSAVE image: the standard layout of the components
/// in [`XSAVE_MASK`] ends at 2432 bytes on CPUs without MPX and at 2688
/// with it.
const FPU_AREA: usize = 3072;

/// The state components a task switch saves and restores (the CPU keeps
/// only those XCR0 enables): x87, SSE, AVX, and AVX-512's opmask,
/// ZMM_Hi256 and Hi16_ZMM. On hosts of this kind a CPL3 guest runs with
/// the host's XCR0, AVX-512 included, and a program's glibc then keeps
/// ymm16-31 and k0-7 live in its string functions: a task preempted there
/// and resumed after another task ran lost them when only x87, SSE and AVX
/// were saved (an occasional SIGSEGV in a pipeline's process under host
/// load). Not AMX: its tile data would need 8 KiB a task, and the host
/// traps its first use.
const XSAVE_MASK: u32 = 0xe7;

/// Saved user state of a task that is not running.
#[repr(C, align(64))]
pub struct Regs {
    /// The XSAVE/FXSAVE image (x87, MXCSR, XMM, YMM upper halves, the
    /// AVX-512 state).
    pub fpu: FpuImage,
    pub frame: Frame,
    /// XMM0-15 as `syscall_entry` saved them.
    pub xmm: [u8; 256],
    pub fs_base: u64,
}

/// An address space that may be shared (a vfork child borrows its
/// parent's until it execs or exits).
pub struct Space(UnsafeCell<Option<Box<AddressSpace>>>);

impl Space {
    pub fn new(b: Box<AddressSpace>) -> Rc<Space> {
        Rc::new(Space(UnsafeCell::new(Some(b))))
    }
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut AddressSpace {
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

/// A write call, (fd, buffer, length), and the bytes it has written.
pub type PartWritten = ((u64, u64, u64), u64);

pub struct Process {
    pub pid: u32,
    pub ppid: Cell<u32>,
    pub pgid: Cell<u32>,
    pub sid: Cell<u32>,
    pub space: RefCell<Option<Rc<Space>>>,
    pub fds: RefCell<FdTable>,
    pub cwd: RefCell<NodeRef>,
    pub umask: Cell<u32>,
    /// (handler, flags, restorer, mask) per signal 1..=64.
    pub sigactions: RefCell<[[u64; 4]; 65]>,
    /// Wait status once exited (a zombie until reaped).
    pub status: Cell<Option<u32>>,
    pub children: RefCell<Vec<Rc<Process>>>,
    pub exe: RefCell<Vec<u8>>,
    /// The arguments and environment it was started with, each string
    /// NUL-terminated (`/proc/<pid>/cmdline`, `environ`).
    pub cmdline: RefCell<Vec<u8>>,
    pub environ: RefCell<Vec<u8>>,
    pub threads: Cell<u32>,
    pub pending: Cell<u64>,
    /// The siginfo of signals pending for the process (see [`Queued`]).
    pub queued: RefCell<VecDeque<Queued>>,
    /// Its program's auxiliary vector (`/proc/<pid>/auxv`).
    pub auxv: RefCell<Vec<u8>>,
    /// Its read and write calls and bytes (`/proc/<pid>/io`).
    pub io: crate::iocount::IoCount,
    /// Set when a vfork child released its parent's address space.
    pub vfork_done: Cell<bool>,
    /// ITIMER_REAL: when SIGALRM is due (monotonic ns) and its interval
    /// (0: once).
    pub alarm: Cell<Option<(u64, u64)>>,
    /// CPU time, interval timers on it and POSIX timers (`timer.rs`).
    pub timers: crate::timer::ProcTimers,
    /// The files its mappings show (`/proc/<pid>/maps`).
    pub map_names: RefCell<crate::mapnames::Names>,
    /// Its nice value (-20..=19; setpriority, inherited by a fork). One
    /// vCPU runs the tasks in turn whatever it is.
    pub nice: Cell<i8>,
    /// An orphan the sandbox's init took: its parent id says 1, as an
    /// orphan's does under Linux's init, but it is no one's child here;
    /// it is reaped when it exits.
    pub init_child: Cell<bool>,
    /// The thread that created it (its parent's, or its parent's parent's
    /// with CLONE_PARENT): when that thread exits, its parent-death
    /// signal comes.
    pub parent_tid: Cell<u32>,
    /// What prctl sets on the whole process.
    pub ctl: crate::ctl::ProcCtl,
    /// Stopped by a stop signal (SIGSTOP, or SIGTSTP, SIGTTIN, SIGTTOU
    /// by default) until a SIGCONT or SIGKILL: its threads do not run.
    pub stopped: Cell<bool>,
    /// Its last stop or continuation, not yet told to a waiting parent:
    /// the wait status (`sig << 8 | 0x7f` stopped, `0xffff` continued;
    /// 0: none).
    pub job_report: Cell<u32>,
}

pub struct Task {
    /// Its thread id (the process id for a main thread; an exec from
    /// another thread makes it the main thread, with the process id).
    pub tid: Cell<u32>,
    pub process: RefCell<Rc<Process>>,
    pub regs: UnsafeCell<Box<Regs>>,
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
    /// A blocking write to a pipe larger than the pipe, part written:
    /// ((fd, buffer, length) of the call, bytes written so far). The call
    /// runs again as the reader makes room and goes on from there; a
    /// handler that interrupts it ends it with that count (`sys_fs`).
    pub write_done: Cell<Option<PartWritten>>,
    pub woken: Cell<bool>,
    pub sigmask: Cell<u64>,
    /// Mask to restore after a sigsuspend's handler runs.
    pub saved_mask: Cell<Option<u64>>,
    pub pending: Cell<u64>,
    /// The siginfo of signals pending for this thread (see [`Queued`]).
    pub queued: RefCell<VecDeque<Queued>>,
    pub clear_child_tid: Cell<u64>,
    /// set_robust_list: the head of the thread's list of robust futexes
    /// (0: none), walked when it exits (`process::robust_exit`).
    pub robust_list: Cell<u64>,
    /// Where a forked child writes its tid in its own memory
    /// (`CLONE_CHILD_SETTID`; 0: nowhere): when it first runs, its space
    /// then current, as Linux's `schedule_tail` does. (Written from the
    /// parent, it took two CR3 loads a fork.)
    pub set_child_tid: Cell<u64>,
    /// sigaltstack: (base, size); size 0 = none.
    pub altstack: Cell<(u64, u64)>,
    /// CPU time of this thread (ns; see [`charge_cpu`]).
    pub cpu_ns: Cell<u64>,
    /// Its name and what prctl sets on it.
    pub ctl: crate::ctl::TaskCtl,
}

impl Task {
    pub fn tid(&self) -> u32 {
        self.tid.get()
    }

    /// A runnable task of `process` that starts with `regs`: no signal
    /// mask, nothing pending, no alternate stack, no CPU time yet
    /// (`clone` then sets what a child inherits).
    pub fn new(tid: u32, process: Rc<Process>, regs: Box<Regs>) -> Task {
        Task {
            tid: Cell::new(tid),
            process: RefCell::new(process),
            regs: UnsafeCell::new(regs),
            state: Cell::new(State::Runnable),
            wait: RefCell::new(Wait::None),
            restart: Cell::new(false),
            wake_at: Cell::new(None),
            restart_deadline: Cell::new(None),
            interrupted: Cell::new(None),
            write_done: Cell::new(None),
            woken: Cell::new(false),
            sigmask: Cell::new(0),
            saved_mask: Cell::new(None),
            pending: Cell::new(0),
            queued: RefCell::new(VecDeque::new()),
            clear_child_tid: Cell::new(0),
            robust_list: Cell::new(0),
            set_child_tid: Cell::new(0),
            altstack: Cell::new((0, 0)),
            cpu_ns: Cell::new(0),
            ctl: Default::default(),
        }
    }
}

pub struct Sched {
    pub tasks: Vec<Rc<Task>>,
    pub current: usize,
    pub next_id: u32,
    pub procs: u32,
    pub max_procs: u32,
}

pub static SCHED: Global<Sched> =
    Global::new(Sched { tasks: Vec::new(), current: 0, next_id: 1, procs: 0, max_procs: DEFAULT_MAX_PROCS });

/// How process 1's program was loaded (to rebuild its initial stack for a
/// restored entry snapshot).
pub static INIT_LOADED: Global<Option<elf::Loaded>> = Global::new(None);

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

pub fn new_regs() -> Box<Regs> {
    Box::new(Regs { fpu: FpuImage::new(), frame: Frame::default(), xmm: [0; 256], fs_base: 0 })
}

pub fn space_key(p: &Process) -> usize {
    p.space.borrow().as_ref().map_or(0, |s| Rc::as_ptr(s) as usize)
}

pub fn space_of(p: &Process) -> Option<Rc<Space>> {
    p.space.borrow().clone()
}

// --- context switch ------------------------------------------------------------

pub fn xmm_area(f: &mut Frame) -> *mut u8 {
    // syscall_entry saves XMM0-15 in the 256 bytes just below the frame.
    (f as *mut Frame as *mut u8).wrapping_sub(256)
}

pub fn has_xsave() -> bool {
    // CPUID.1:ECX.OSXSAVE
    crate::cpuid::query(1, 0)[2] & (1 << 27) != 0
}

/// An FPU/vector state image (XSAVE or FXSAVE form), aligned for both.
#[repr(C, align(64))]
pub struct FpuImage(pub [u8; FPU_AREA]);

impl FpuImage {
    pub const fn new() -> FpuImage {
        FpuImage([0; FPU_AREA])
    }
}

/// The components [`save_fpu`] saves here: [`XSAVE_MASK`]'s that XCR0
/// enables (0 without XSAVE).
pub fn xsave_features() -> u64 {
    if !has_xsave() {
        return 0;
    }
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv of XCR0 is allowed at any CPL once CR4.OSXSAVE is set
    // (checked above); it only reads.
    unsafe {
        core::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    ((u64::from(hi) << 32) | u64::from(lo)) & u64::from(XSAVE_MASK)
}

/// Bytes of the image [`save_fpu`] writes: the standard XSAVE layout's
/// end for `features` (offsets and sizes from CPUID leaf 0xD), or the 512
/// of FXSAVE for none.
pub fn fpu_image_len(features: u64) -> usize {
    if features == 0 {
        return 512;
    }
    let mut end = 576; // legacy area and XSAVE header
    for i in 2..8 {
        if features & (1 << i) != 0 {
            let [size, offset, _, _] = crate::cpuid::query(0xd, i);
            end = end.max(offset as usize + size as usize);
        }
    }
    end
}

/// A Linux signal frame's parts besides its FPU state: the red zone it
/// leaves below the interrupted stack pointer, the siginfo, the ucontext.
pub const RED_ZONE_BYTES: u64 = 128;
pub const SIGINFO_BYTES: u64 = 128;
pub const UCONTEXT_BYTES: u64 = 304;

/// Bytes of a signal frame's FPU state for `features` (see
/// [`xsave_features`]): the XSAVE image and the FP_XSTATE_MAGIC2 word after
/// it, or the 512-byte FXSAVE image without XSAVE.
pub fn frame_fpu_len(features: u64) -> usize {
    if features != 0 {
        fpu_image_len(features) + 4
    } else {
        512
    }
}

/// The most stack a signal frame takes below the interrupted stack
/// pointer (or the top of an alternate stack): the red zone, the FPU
/// state and its alignment, the siginfo, the ucontext and the return
/// address, with their alignment.
pub fn signal_frame_bytes() -> usize {
    let parts = RED_ZONE_BYTES + SIGINFO_BYTES + UCONTEXT_BYTES + 8;
    parts as usize + frame_fpu_len(xsave_features()) + 63 + 15
}

/// Saves the current FPU/vector state into `img` (XSAVE of
/// [`XSAVE_MASK`], or FXSAVE without XSAVE).
pub fn save_fpu(img: &mut FpuImage) {
    // SAFETY: the image is 64-byte aligned and FPU_AREA bytes, enough for
    // the components saved.
    unsafe {
        if has_xsave() {
            core::arch::asm!("xsave64 [{}]", in(reg) img.0.as_mut_ptr(), in("eax") XSAVE_MASK, in("edx") 0u32, options(nostack, preserves_flags));
        } else {
            core::arch::asm!("fxsave64 [{}]", in(reg) img.0.as_mut_ptr(), options(nostack, preserves_flags));
        }
    }
}

/// Loads the FPU/vector state from `img`, which the caller made valid
/// for XRSTOR (or FXRSTOR without XSAVE): MXCSR's reserved bits clear,
/// an XSAVE header naming only [`XSAVE_MASK`]'s components, standard form.
pub fn restore_fpu(img: &FpuImage) {
    // SAFETY: as the caller guarantees, the image is valid; aligned above.
    unsafe {
        if has_xsave() {
            core::arch::asm!("xrstor64 [{}]", in(reg) img.0.as_ptr(), in("eax") XSAVE_MASK, in("edx") 0u32, options(nostack, preserves_flags));
        } else {
            core::arch::asm!("fxrstor64 [{}]", in(reg) img.0.as_ptr(), options(nostack, preserves_flags));
        }
    }
}

pub fn save(t: &Task, f: &mut Frame) {
    // SAFETY: the task's register box is only touched here, in `load`,
    // and by wakers writing the saved RAX, never concurrently.
    save_into(unsafe { &mut *t.regs.get() }, f);
}

/// Saves the running task's registers (`f`, the XMM registers below it,
/// the FS base, the FPU/vector state) into `r`.
pub fn save_into(r: &mut Regs, f: &mut Frame) {
    r.frame = *f;
    // SAFETY: the 256 bytes below the frame hold the saved XMM registers.
    unsafe { core::ptr::copy_nonoverlapping(xmm_area(f), r.xmm.as_mut_ptr(), 256) };
    // SAFETY: rdfsbase is enabled (CR4.FSGSBASE).
    unsafe { core::arch::asm!("rdfsbase {}", out(reg) r.fs_base, options(nostack, preserves_flags)) };
    save_fpu(&mut r.fpu);
}

pub fn load(t: &Task, f: &mut Frame) {
    // SAFETY: see `save`.
    let r = unsafe { &mut **t.regs.get() };
    *f = r.frame;
    // SAFETY: as in `save`.
    unsafe { core::ptr::copy_nonoverlapping(r.xmm.as_ptr(), xmm_area(f), 256) };
    // SAFETY: wrfsbase is enabled (CR4.FSGSBASE).
    unsafe { core::arch::asm!("wrfsbase {}", in(reg) r.fs_base, options(nostack, preserves_flags)) };
    if r.fpu.0[24..28] == [0; 4] {
        // A fresh task: default x87 control word and MXCSR.
        r.fpu.0[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
        r.fpu.0[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
    }
    // The image was written by `save_fpu` (or is the all-zero initial
    // image with a valid MXCSR set just above).
    restore_fpu(&r.fpu);
    let p = t.process.borrow().clone();
    if let Some(space) = space_of(&p) {
        mm::activate(space.get());
    }
    let at = t.set_child_tid.replace(0);
    if at != 0 {
        // A failed write is ignored, as on Linux.
        let _ = crate::uaccess::put_user(at, t.tid().to_le_bytes());
    }
}

/// Sets a blocked task's result (the saved RAX) and makes it runnable.
pub fn complete(t: &Task, result: Result<u64, i64>) {
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

pub fn unblocked_pending(t: &Task) -> u64 {
    let p = t.process.borrow();
    (t.pending.get() | p.pending.get()) & !t.sigmask.get()
        | ((t.pending.get() | p.pending.get()) & (1 << (SIGKILL - 1)))
}

/// How a blocked task goes on.
pub enum Wake {
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
pub fn ready(t: &Task, now: u64) -> Option<Wake> {
    let wait = t.wait.borrow();
    let restart = t.restart.get();
    if let Wait::SignalOf(set) = *wait {
        // A signal waited for is taken by the wait, not delivered.
        if (t.pending.get() | t.process.borrow().pending.get()) & set != 0 {
            return Some(Wake::Restart);
        }
    }
    let met = |cond: bool| cond.then_some(if restart { Wake::Restart } else { Wake::Complete(Ok(0)) });
    if unblocked_pending(t) != 0 && !matches!(*wait, Wait::Vfork(_)) {
        return Some(if restart { Wake::Interrupted } else { Wake::Complete(Err(EINTR)) });
    }
    if t.wake_at.get().is_some_and(|d| now >= d) {
        if restart && matches!(*wait, Wait::Event(_)) {
            // poll, select and epoll_wait run again and find their
            // deadline passed: each then answers as a time-out does
            // (select empties its sets; they were left as given).
            return Some(Wake::Restart);
        }
        return Some(Wake::Complete(match *wait {
            Wait::SignalOf(_) => Err(EAGAIN),
            Wait::Futex(..) => Err(ETIMEDOUT),
            // A socket's SO_RCVTIMEO/SO_SNDTIMEO.
            Wait::Until(_) => Err(crate::errno::EAGAIN),
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
        Wait::PipeWrite(pipe, need) => {
            let pipe = pipe.borrow();
            let room = pipe.capacity.saturating_sub(pipe.buf.len());
            met(room >= (*need).clamp(1, pipe.capacity) || pipe.readers == 0)
        }
        &Wait::Child(pid, options) => {
            let (any, found) = find_child(&p, pid, options);
            met(!any || found.is_some())
        }
        Wait::Futex(..) | Wait::Sleep | Wait::Signal => met(t.woken.get()),
        Wait::SignalOf(_) => None,
        Wait::Vfork(pid) => t.woken.get().then_some(Wake::Complete(Ok(*pid as u64))),
        Wait::Event(gen) => met(crate::wait::event() != *gen),
        Wait::Stdin => met(crate::io::stdin_ready()),
        Wait::FifoPeer(pipe, writer, seen) => {
            let pipe = pipe.borrow();
            let (open, opens) = if *writer { (pipe.writers, pipe.opens[1]) } else { (pipe.readers, pipe.opens[0]) };
            met(open > 0 || opens != *seen)
        }
        Wait::Until(cond) => met(cond()),
        Wait::FileLock(r) => met(r.blocker().is_none()),
    }
}

pub const ETIMEDOUT: i64 = 110;

// --- alarms (ITIMER_REAL) -------------------------------------------------------------
//
// No timer interrupts reach the guest: an alarm is noticed when a system
// call returns or when every task waits (the runtime then sleeps no later
// than the earliest alarm). A program that spins without system calls gets
// its SIGALRM at its next one.

pub const SIGALRM: u32 = 14;

/// The earliest alarm of any process (monotonic ns), if any.
pub static NEXT_ALARM: Global<Option<u64>> = Global::new(None);

/// Whether a timer on a CPU clock is armed in some process.
pub static CPU_TIMERS: Global<bool> = Global::new(false);

/// Whether a timer of any kind is armed (the host is then asked for time
/// slices, so one reaches a program that spins without system calls).
pub fn timers_armed() -> bool {
    NEXT_ALARM.get().is_some() || *CPU_TIMERS.get()
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC.
fn real_minus_mono() -> u64 {
    time::realtime_ns().saturating_sub(time::monotonic_ns())
}

pub fn recompute_next_alarm() {
    let off = real_minus_mono();
    let procs = live_processes();
    let alarms = procs.iter().filter_map(|p| p.alarm.get().map(|(d, _)| d));
    let posix = procs.iter().filter_map(|p| p.timers.next_wall(off));
    *NEXT_ALARM.get() = alarms.chain(posix).chain(crate::timer::timerfds_next(off)).min();
    *CPU_TIMERS.get() = procs.iter().any(|p| p.timers.cpu_armed());
}

/// Sends SIGALRM to every process whose alarm is due (re-arming interval
/// timers), the signals of due POSIX timers on wall clocks, and counts
/// timerfd expirations (waking their pollers).
pub fn fire_due_alarms(now: u64) {
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
        let fired = p.timers.expire(false, |c| clock_now(&p, c));
        post_timer_signals(&p, &fired);
    }
    if crate::timer::timerfds_fire(now, time::realtime_ns()) {
        notify();
    }
    recompute_next_alarm();
}

/// Posts the signals of CPU-time timers that expired (called on the way
/// out of system calls and time slices while one is armed).
pub fn fire_cpu_timers() {
    charge_cpu();
    for p in live_processes() {
        let fired = p.timers.expire(true, |c| clock_now(&p, c));
        post_timer_signals(&p, &fired);
    }
    *CPU_TIMERS.get() = live_processes().iter().any(|p| p.timers.cpu_armed());
}

fn post_timer_signals(p: &Rc<Process>, fired: &[crate::timer::Fired]) {
    for f in fired {
        let task = f.tid.and_then(find_task);
        if f.tid.is_some() && task.is_none() {
            continue; // its thread is gone
        }
        let pending = |sig: u32, tid: Option<u32>| {
            let bits = match tid.and_then(find_task) {
                Some(t) => t.pending.get(),
                None => p.pending.get(),
            };
            bits & (1u64 << (sig - 1)) != 0
        };
        if p.timers.merge(f, pending) {
            continue;
        }
        if send_signal_info(p, task.as_ref(), f.sig, Info::Timer).unwrap_or(false) {
            p.timers.queue(f);
        }
    }
}

// --- CPU time ------------------------------------------------------------------------
//
// The guest measures CPU time itself: the running task is charged the
// monotonic time since it was last charged, at every switch, before the
// runtime idles (idle time is nobody's) and when a CPU clock is read.
// Time in the runtime on a task's behalf counts as that task's (user and
// system time are not told apart).

/// Since when the current task's CPU time is not yet charged.
static CPU_SINCE: Global<u64> = Global::new(0);

/// Charges the current task (and its process) the time since the last
/// charge.
pub fn charge_cpu() {
    let now = time::monotonic_ns();
    let d = now.saturating_sub(core::mem::replace(CPU_SINCE.get(), now));
    let s = SCHED.get();
    if let Some(t) = s.tasks.get(s.current) {
        t.cpu_ns.set(t.cpu_ns.get().saturating_add(d));
        let p = t.process.borrow();
        p.timers.cpu_ns.set(p.timers.cpu_ns.get().saturating_add(d));
    }
}

/// Starts charging from now (the first task starts running).
pub fn start_cpu_clock() {
    *CPU_SINCE.get() = time::monotonic_ns();
}

/// Runs `f` (the runtime idling on the host) without charging anyone.
fn off_cpu<R>(f: impl FnOnce() -> R) -> R {
    charge_cpu();
    let r = f();
    start_cpu_clock();
    r
}

pub fn find_task(tid: u32) -> Option<Rc<Task>> {
    SCHED.get().tasks.iter().find(|t| t.tid() == tid && t.state.get() != State::Dead).cloned()
}

/// The value of clock `c` for process `p` (None: a thread that is gone).
pub fn clock_now(p: &Process, c: crate::timer::Clock) -> Option<u64> {
    use crate::timer::Clock;
    match c {
        Clock::Real => Some(time::realtime_ns()),
        Clock::Mono => Some(time::monotonic_ns()),
        Clock::ProcessCpu => {
            charge_cpu();
            Some(p.timers.cpu_ns.get())
        }
        Clock::ThreadCpu(tid) => {
            charge_cpu();
            find_task(tid).map(|t| t.cpu_ns.get())
        }
    }
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

pub static YIELD: Global<bool> = Global::new(false);

/// sched_yield: let another runnable task go first.
pub fn request_yield() {
    *YIELD.get() = true;
}

/// Index of a task that can run now, searching round-robin after `from`;
/// blocked tasks whose wait is over are woken on the way.
pub fn pick(from: usize, now: u64, include_from: bool) -> Option<usize> {
    let s = SCHED.get();
    let n = s.tasks.len();
    for k in 1..=n {
        let i = (from + k) % n;
        if i == from && !include_from {
            continue;
        }
        let t = &s.tasks[i];
        if t.process.borrow().stopped.get() {
            continue;
        }
        match t.state.get() {
            State::Runnable => return Some(i),
            State::Blocked => match ready(t, now) {
                Some(wake @ (Wake::Restart | Wake::Interrupted)) => {
                    if matches!(wake, Wake::Interrupted) {
                        // poll/select/epoll_wait never run again after a
                        // handler; pipe I/O and wait4 do with SA_RESTART.
                        let never = matches!(*t.wait.borrow(), Wait::Event(_) | Wait::SignalOf(_));
                        t.interrupted.set(Some(!never));
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

pub fn switch_to_next(f: &mut Frame, from: usize) {
    let s = SCHED.get();
    charge_cpu();
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
        off_cpu(|| hc::idle_ns(earliest.map_or(u64::MAX, |d| d.saturating_sub(now))));
        // The host ends the sleep early when input comes.
        if crate::io::host_requests() & hvsandbox_abi::HOST_FLAG_STDIN != 0 {
            notify();
            crate::sigio::check();
        }
    }
}

/// Drops dead tasks from the run list, keeping `current` valid.
pub fn reap_dead_tasks() {
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

// --- signals posted, processes found ------------------------------------------------

pub fn default_ignored(sig: u32) -> bool {
    matches!(sig, SIGCHLD | SIGCONT | 23 | 28) // SIGURG, SIGWINCH
}

pub use crate::sigqueue::Info;
use crate::sigqueue::Queued;

/// The siginfo kill(2) and tgkill(2) send: the signal, `code` (SI_USER,
/// SI_TKILL) and the sender's pid and uid.
pub fn sender_info(sig: u32, code: i32) -> [u8; 128] {
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    info[8..12].copy_from_slice(&code.to_le_bytes());
    info[16..20].copy_from_slice(&current_process().pid.to_le_bytes());
    info[20..24].copy_from_slice(&(crate::rt::UID as u32).to_le_bytes());
    info
}

/// Marks `sig` pending for process `p` (or, with `task`, for that thread)
/// unless it is ignored; a stopped-signal is treated as ignored. Returns
/// whether it was marked.
pub fn send_signal(p: &Rc<Process>, task: Option<&Rc<Task>>, sig: u32) -> bool {
    send_signal_info(p, task, sig, Info::Plain).unwrap_or(false)
}

/// [`send_signal`] with what the signal carries; EAGAIN when a sigqueue's
/// siginfo finds the queue full.
pub fn send_signal_info(p: &Rc<Process>, task: Option<&Rc<Task>>, sig: u32, info: Info) -> Result<bool, i64> {
    if sig == 0 || sig > 64 || p.status.get().is_some() {
        return Ok(false);
    }
    let stop = is_stop_signal(sig);
    if sig == SIGCONT {
        // Continues the process, whatever its action or mask; pending
        // stop signals go.
        for stop_sig in [SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU] {
            discard_signal(p, stop_sig);
        }
        continue_process(p, true);
    } else if stop {
        discard_signal(p, SIGCONT);
    } else if sig == SIGKILL {
        // A stopped process runs again, to die.
        continue_process(p, false);
    }
    let handler = p.sigactions.borrow()[sig as usize][0];
    let ignored = handler == SIG_IGN || (handler == SIG_DFL && default_ignored(sig));
    // A blocked signal is not ignored (its handler may change before it
    // is unblocked, and signalfd reads it), as on Linux: the target
    // thread's mask, or the process's first thread's.
    let first = || SCHED.get().tasks.iter().find(|t| Rc::ptr_eq(&t.process.borrow(), p)).cloned();
    let blocked = task.cloned().or_else(first).is_some_and(|t| t.sigmask.get() & (1u64 << (sig - 1)) != 0);
    if sig != SIGKILL && ignored && !blocked {
        return Ok(false);
    }
    if stop && handler == SIG_DFL && !blocked {
        // Its default action, now (SIGSTOP cannot be caught or blocked).
        stop_process(p, sig);
        return Ok(true);
    }
    let bit = 1u64 << (sig - 1);
    let (pending, queued) = match task {
        Some(t) => (&t.pending, &t.queued),
        None => (&p.pending, &p.queued),
    };
    let was = pending.get() & bit != 0;
    crate::sigqueue::push(queued, sig, info, was)?;
    pending.set(pending.get() | bit);
    notify();
    Ok(true)
}

/// Takes one pending instance of `sig` for `t` (the thread's, else its
/// process's): its siginfo, if one was kept (None: the caller builds
/// it). The signal stays pending while more instances are queued.
pub fn take_signal(t: &Task, sig: u32) -> Option<[u8; 128]> {
    let bit = 1u64 << (sig - 1);
    let p = t.process.borrow().clone();
    let (pending, queued) = if t.pending.get() & bit != 0 { (&t.pending, &t.queued) } else { (&p.pending, &p.queued) };
    let (info, more) = crate::sigqueue::take(queued, sig);
    if !more {
        pending.set(pending.get() & !bit);
    }
    info
}

/// Drops every pending instance of `sig` for `p` and its threads (its
/// action became SIG_IGN).
pub fn discard_signal(p: &Process, sig: u32) {
    let bit = 1u64 << (sig - 1);
    p.pending.set(p.pending.get() & !bit);
    crate::sigqueue::discard(&p.queued, sig);
    for t in SCHED.get().tasks.iter().filter(|t| core::ptr::eq(&**t.process.borrow(), p)) {
        t.pending.set(t.pending.get() & !bit);
        crate::sigqueue::discard(&t.queued, sig);
    }
}

/// SIGSTOP, SIGTSTP, SIGTTIN and SIGTTOU: by default they stop.
pub fn is_stop_signal(sig: u32) -> bool {
    matches!(sig, SIGSTOP | SIGTSTP | SIGTTIN | SIGTTOU)
}

/// Stops `p` (a stop signal's default action): its threads stop where
/// they are, and its parent is told (SIGCHLD with CLD_STOPPED unless it
/// asked for SA_NOCLDSTOP; wait4 with WUNTRACED). As on Linux, SIGTSTP,
/// SIGTTIN and SIGTTOU do not stop a process of an orphaned group.
pub fn stop_process(p: &Rc<Process>, sig: u32) {
    if p.stopped.get() || p.status.get().is_some() || (sig != SIGSTOP && orphaned_group(p.pgid.get())) {
        return;
    }
    p.stopped.set(true);
    p.job_report.set((sig << 8) | 0x7f);
    tell_parent_of_job(p, 5, sig); // CLD_STOPPED
    notify();
}

/// Continues a stopped `p` (SIGCONT; SIGKILL, without telling the parent
/// as `report` does: SIGCHLD with CLD_CONTINUED unless SA_NOCLDSTOP, and
/// wait4 with WCONTINUED).
pub fn continue_process(p: &Rc<Process>, report: bool) {
    if !p.stopped.replace(false) {
        return;
    }
    if report {
        p.job_report.set(0xffff);
        tell_parent_of_job(p, 6, SIGCONT); // CLD_CONTINUED
    }
    notify();
}

/// Whether process group `pgid` is orphaned: no member has a parent in
/// another group of the same session. The first process counts as having
/// one (whoever started the run, as a shell starts a job) while it stays
/// in its first session.
fn orphaned_group(pgid: u32) -> bool {
    !live_processes().iter().filter(|m| m.pgid.get() == pgid).any(|m| {
        (m.pid == 1 && m.sid.get() == 1)
            || (!m.init_child.get()
                && find_process(m.ppid.get()).is_some_and(|up| up.pgid.get() != pgid && up.sid.get() == m.sid.get()))
    })
}

fn tell_parent_of_job(p: &Process, code: i32, sig: u32) {
    const SA_NOCLDSTOP: u64 = 1;
    // (An orphan's parent is the sandbox's init, which needs no telling.)
    let Some(parent) = find_process(p.ppid.get()).filter(|_| !p.init_child.get()) else { return };
    if parent.sigactions.borrow()[SIGCHLD as usize][1] & SA_NOCLDSTOP != 0 {
        return;
    }
    let _ = send_signal_info(&parent, None, SIGCHLD, Info::With(child_siginfo(code, p.pid, sig)));
}

/// A SIGCHLD siginfo: `code` (CLD_EXITED, CLD_KILLED, CLD_STOPPED,
/// CLD_CONTINUED), the child `pid` and its user, and `status` (the exit
/// code or the signal).
pub fn child_siginfo(code: i32, pid: u32, status: u32) -> [u8; 128] {
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&SIGCHLD.to_le_bytes());
    info[8..12].copy_from_slice(&code.to_le_bytes());
    info[16..20].copy_from_slice(&pid.to_le_bytes());
    info[20..24].copy_from_slice(&(crate::rt::UID as u32).to_le_bytes());
    info[24..28].copy_from_slice(&status.to_le_bytes());
    info
}

/// What a waited-for child has to report.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ChildEvent {
    Exited,
    /// Stopped by this signal (WUNTRACED, WSTOPPED).
    Stopped(u32),
    /// Continued (WCONTINUED).
    Continued,
}

/// wait options (waitid's; wait4 always takes exits, WEXITED).
pub const WUNTRACED: u64 = 2;
pub const WEXITED: u64 = 4;
pub const WCONTINUED: u64 = 8;

/// wait4 / waitid: whether `p` has a child matching `pid` (-1 any, 0 its
/// group, < -1 that group, else that pid), and the first such child with
/// something to report under `options`: (WEXITED) its exit, (WUNTRACED)
/// a stop or (WCONTINUED) a continuation not told yet.
pub fn find_child(p: &Process, pid: i64, options: u64) -> (bool, Option<(Rc<Process>, ChildEvent)>) {
    let ch = p.children.borrow();
    let matches = |c: &Rc<Process>| match pid {
        -1 => true,
        0 => c.pgid.get() == p.pgid.get(),
        x if x > 0 => c.pid as i64 == x,
        x => c.pgid.get() as i64 == -x,
    };
    let any = ch.iter().any(matches);
    let event = |c: &Process| {
        let report = c.job_report.get();
        if c.status.get().is_some() {
            (options & WEXITED != 0).then_some(ChildEvent::Exited)
        } else if report & 0xff == 0x7f && options & WUNTRACED != 0 {
            Some(ChildEvent::Stopped(report >> 8))
        } else if report == 0xffff && options & WCONTINUED != 0 {
            Some(ChildEvent::Continued)
        } else {
            None
        }
    };
    let found = ch.iter().filter(|c| matches(c)).find_map(|c| event(c).map(|e| (c.clone(), e)));
    (any, found)
}

pub fn find_process(pid: u32) -> Option<Rc<Process>> {
    SCHED.get().tasks.iter().map(|t| t.process.borrow().clone()).find(|p| p.pid == pid && p.status.get().is_none())
}

pub fn live_processes() -> Vec<Rc<Process>> {
    let mut out: Vec<Rc<Process>> = Vec::new();
    for t in &SCHED.get().tasks {
        let p = t.process.borrow().clone();
        if p.status.get().is_none() && !out.iter().any(|q| Rc::ptr_eq(q, &p)) {
            out.push(p);
        }
    }
    out
}

// --- futex, sleep --------------------------------------------------------------------

/// What a futex at `addr` is known by: in a shared mapping the object
/// and the offset in it (so processes mapping it meet), else the address
/// space and the address.
pub fn futex_key(addr: u64) -> (usize, u64) {
    crate::mm::shared_key(addr).unwrap_or_else(|| (space_key(&current_process()), addr))
}

pub fn futex_wake(addr: u64, n: u64) -> u64 {
    let (key, addr) = futex_key(addr);
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

/// Sleeps `ns`: other tasks run meanwhile; alone, the host sleeps.
pub fn sleep(ns: u64) -> SysResult {
    let s = SCHED.get();
    let others = s.tasks.iter().enumerate().any(|(i, t)| i != s.current && t.state.get() != State::Dead);
    // With a timer armed the scheduler sleeps, so that it fires in time.
    if !others && !timers_armed() {
        off_cpu(|| hc::sleep_ns(ns));
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
    if !others && !timers_armed() {
        off_cpu(|| hc::idle_ns(deadline.map_or(u64::MAX, |d| d - now)));
        if crate::io::host_requests() & hvsandbox_abi::HOST_FLAG_STDIN != 0
            && deadline.is_none_or(|d| time::monotonic_ns() < d)
        {
            // Input came before the timeout: the call looks again.
            let seen = crate::wait::event();
            notify();
            return block(Wait::Event(seen), deadline, true);
        }
        return Ok(0);
    }
    block(Wait::Event(crate::wait::event()), deadline, true)
}

pub fn process_limit() -> u32 {
    SCHED.get().max_procs
}
