//! Processes: the first one, clone/fork/vfork, exit, wait4/waitid and
//! the process ids (the task table and scheduler are `task.rs`).

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use crate::errno::*;
use crate::file::FdTable;
use crate::mm;
use crate::rt::Frame;
use crate::task::*;
use crate::uaccess::*;
use crate::vfs::{self, NodeRef};
use crate::{elf, stack};

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
        cmdline: RefCell::new(Vec::new()),
        environ: RefCell::new(Vec::new()),
        threads: Cell::new(1),
        pending: Cell::new(0),
        queued: RefCell::new(alloc::collections::VecDeque::new()),
        auxv: RefCell::new(Vec::new()),
        io: Default::default(),
        vfork_done: Cell::new(false),
        alarm: Cell::new(None),
        timers: Default::default(),
        map_names: Default::default(),
        nice: Cell::new(0),
        init_child: Cell::new(false),
        parent_tid: Cell::new(0),
        ctl: Default::default(),
        stopped: Cell::new(false),
        job_report: Cell::new(0),
    });
    let t = Task::new(1, p.clone(), new_regs());
    t.ctl.exec(exe_path);
    let t = Rc::new(t);
    s.tasks.push(t);
    s.current = 0;
    s.next_id = 2;
    s.procs = 1;
    start_cpu_clock();
    *p.exe.borrow_mut() = exe_path.to_vec();
    let envs = crate::rt::after_strings(args, argc);
    *p.cmdline.borrow_mut() = args[..args.len() - envs.len()].to_vec();
    *p.environ.borrow_mut() = envs[..envs.len() - crate::rt::after_strings(envs, envc).len()].to_vec();
    let img = elf::parse(image)?;
    let interp = elf::parse_interp(&img)?;
    let mut named = elf::Named::default();
    let loaded = elf::load(&img, interp.as_ref(), &mut named)?;
    crate::procfs::name_segments(&named.program, image, exe_path);
    if let (Some(ld), Some(ld_path)) = (&interp, &img.interp) {
        crate::procfs::name_segments(&named.interp, ld.node(), ld_path);
    }
    let built = stack::build(&loaded, args, argc, envc).map_err(|_| E2BIG)?;
    *current_process().auxv.borrow_mut() = built.auxv;
    *INIT_LOADED.get() = Some(loaded);
    Ok((loaded.entry, built.sp))
}

// --- processes -----------------------------------------------------------------------

pub const CLONE_VM: u64 = 0x100;
pub const CLONE_FS: u64 = 0x200;
pub const CLONE_FILES: u64 = 0x400;
pub const CLONE_SIGHAND: u64 = 0x800;
pub const CLONE_VFORK: u64 = 0x4000;
pub const CLONE_PARENT: u64 = 0x8000;
pub const CLONE_THREAD: u64 = 0x10000;
/// A pidfd for the child, its number written where `ptid` points.
pub const CLONE_PIDFD: u64 = 0x1000;
pub const CLONE_SETTLS: u64 = 0x80000;
pub const CLONE_PARENT_SETTID: u64 = 0x100000;
pub const CLONE_CHILD_CLEARTID: u64 = 0x200000;
pub const CLONE_CHILD_SETTID: u64 = 0x1000000;

/// clone/fork/vfork. `f` is the caller's frame (the child starts from a
/// copy of it with RAX = 0).
pub fn sys_clone(f: &mut Frame, flags: u64, stack: u64, ptid: u64, ctid: u64, tls: u64) -> SysResult {
    if !crate::heap::has_room() {
        return Err(ENOMEM);
    }
    if flags & CLONE_PIDFD != 0 {
        // As Linux: not for a thread, and not with the tid at the same place.
        if flags & (CLONE_THREAD | CLONE_PARENT_SETTID) != 0 {
            return Err(EINVAL);
        }
        user_bytes_mut(ptid, 4)?;
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
        // The first process has no parent here (as Linux refuses it to a
        // namespace's init).
        if flags & CLONE_PARENT != 0 && parent.ppid.get() == 0 {
            return Err(EINVAL);
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
            cmdline: RefCell::new(parent.cmdline.borrow().clone()),
            environ: RefCell::new(parent.environ.borrow().clone()),
            threads: Cell::new(1),
            pending: Cell::new(0),
            queued: RefCell::new(alloc::collections::VecDeque::new()),
            auxv: RefCell::new(parent.auxv.borrow().clone()),
            io: Default::default(),
            vfork_done: Cell::new(false),
            // A child does not inherit its parent's alarm.
            alarm: Cell::new(None),
            timers: Default::default(),
            map_names: RefCell::new(parent.map_names.borrow().clone()),
            nice: Cell::new(parent.nice.get()),
            init_child: Cell::new(parent.init_child.get() && flags & CLONE_PARENT != 0),
            parent_tid: Cell::new(if flags & CLONE_PARENT != 0 { parent.parent_tid.get() } else { parent_task.tid() }),
            ctl: parent.ctl.inherit(),
            stopped: Cell::new(false),
            job_report: Cell::new(0),
        });
        if flags & CLONE_PIDFD != 0 {
            // Before the child is anyone's (a full table fails the clone
            // with nothing to undo); its copy of the table has no pidfd.
            let fd = crate::pidfd::install(&child, false)?;
            put_user(ptid, (fd as u32).to_le_bytes())?;
        }
        // With CLONE_PARENT the caller's parent's child (the init's, for
        // an orphan: no one's here).
        let adopter = if flags & CLONE_PARENT == 0 {
            Some(parent.clone())
        } else if parent.init_child.get() {
            None
        } else {
            find_process(ppid)
        };
        if let Some(a) = adopter {
            a.children.borrow_mut().push(child.clone());
        }
        s.procs += 1;
        crate::stats::stat(|st| st.processes += 1);
        (child, false)
    };
    let mut task = Task::new(tid, process, child_regs);
    task.ctl = parent_task.ctl.inherit();
    let task = Rc::new(task);
    task.sigmask.set(parent_task.sigmask.get());
    if flags & CLONE_CHILD_CLEARTID != 0 {
        task.clear_child_tid.set(ctid);
    }
    // A forked child keeps its parent's alternate stack; a thread has none.
    if !is_thread {
        task.altstack.set(parent_task.altstack.get());
    }
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
        // The child's own copy of memory gets its tid when it first runs
        // (`task::load`).
        task.set_child_tid.set(ctid);
    }
    notify();
    if flags & CLONE_VFORK != 0 && !is_thread {
        // The parent waits until the child execs or exits; the result it
        // then sees is the child's pid.
        return block(Wait::Vfork(tid), None, false);
    }
    Ok(tid as u64)
}

/// The parent of a vfork child may go on (the child exec'd or exited).
pub fn release_vfork(child: &Process) {
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
    // The children this thread created: their parent-death signals, and
    // another thread of the process is their parent thread now.
    let heir = live_thread(&p, t.tid()).unwrap_or(p.pid);
    for c in p.children.borrow().iter().filter(|c| c.parent_tid.get() == t.tid()) {
        parent_died(c);
        c.parent_tid.set(heir);
    }
    robust_exit(&t);
    clear_tid(&t);
    t.state.set(State::Dead);
    Err(BLOCKED)
}

/// The size of `struct robust_list_head`: the list's first entry, the
/// offset from an entry to its futex word, the entry being changed.
const ROBUST_HEAD: u64 = 24;
/// Most entries walked (Linux's ROBUST_LIST_LIMIT): a list the program
/// made circular or long ends there.
const ROBUST_MAX: usize = 2048;

pub fn set_robust_list(head: u64, len: u64) -> SysResult {
    if len != ROBUST_HEAD {
        return Err(EINVAL);
    }
    current().robust_list.set(head);
    Ok(0)
}

pub fn get_robust_list(tid: u64, head_ptr: u64, len_ptr: u64) -> SysResult {
    let t = if tid == 0 { current() } else { u32::try_from(tid).ok().and_then(find_task).ok_or(ESRCH)? };
    put_user(head_ptr, t.robust_list.get().to_le_bytes())?;
    put_user(len_ptr, ROBUST_HEAD.to_le_bytes())?;
    Ok(0)
}

/// Thread `t` (of the current address space) ends: each robust futex on
/// its list that it still holds is marked FUTEX_OWNER_DIED, and a waiter
/// woken, so the next locker gets EOWNERDEAD instead of waiting forever.
/// The list is the program's: every read is checked, the walk bounded.
pub fn robust_exit(t: &Task) {
    let head = t.robust_list.replace(0);
    if head == 0 {
        return;
    }
    let (Ok(first), Ok(offset), Ok(pending)) = (get_u64(head), get_u64(head + 8), get_u64(head + 16)) else {
        return;
    };
    let word_of = |entry: u64| (entry & !1).wrapping_add(offset);
    let mut entry = first;
    for _ in 0..ROBUST_MAX {
        if entry == head || entry & !1 == 0 {
            break;
        }
        // The next entry first: marking this one may let another thread
        // take it off the list.
        let Ok(next) = get_u64(entry & !1) else { break };
        if entry & !1 != pending & !1 {
            owner_died(word_of(entry), t.tid());
        }
        entry = next;
    }
    if pending & !1 != 0 {
        owner_died(word_of(pending), t.tid());
    }
}

/// Marks the futex word at `addr` held by thread `tid` as its owner's
/// death, keeping the waiters bit, and wakes one waiter if there is one.
fn owner_died(addr: u64, tid: u32) {
    const FUTEX_WAITERS: u32 = 0x8000_0000;
    const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
    const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
    let Ok(word) = get_u32(addr) else { return };
    if word & FUTEX_TID_MASK != tid {
        return;
    }
    if put_user(addr, ((word & FUTEX_WAITERS) | FUTEX_OWNER_DIED).to_le_bytes()).is_ok() && word & FUTEX_WAITERS != 0 {
        futex_wake(addr, 1);
    }
}

pub fn clear_tid(t: &Task) {
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
                robust_exit(other);
                clear_tid(other);
            }
            other.state.set(State::Dead);
        }
    }
    p.threads.set(0);
    // Close descriptors now: pipe ends wake their peers.
    *p.fds.borrow_mut() = FdTable::empty();
    crate::locks::release_owner(crate::locks::Owner::Process(p.pid));
    release_vfork(&p);
    // Its children get their parent-death signals and a new parent.
    let orphans: Vec<Rc<Process>> = p.children.borrow_mut().drain(..).collect();
    for c in &orphans {
        parent_died(c);
    }
    adopt(&p, orphans);
    p.status.set(Some(status));
    // Release the address space (the current one: it stays mapped until
    // the switch, and nothing touches user memory of this process again).
    let old = p.space.borrow_mut().take();
    drop(old);
    match find_process(p.ppid.get()).filter(|_| !p.init_child.get()) {
        Some(parent) => tell_parent(&parent, &p),
        // An orphan no subreaper took: reaped now, as by an init.
        None => s.procs -= 1,
    }
    notify();
    Err(BLOCKED)
}

/// `parent` learns that its child `c` exited: SIGCHLD, or `c` is reaped
/// now if the parent ignores SIGCHLD.
fn tell_parent(parent: &Rc<Process>, c: &Rc<Process>) {
    if parent.sigactions.borrow()[SIGCHLD as usize][0] == SIG_IGN {
        parent.children.borrow_mut().retain(|x| !Rc::ptr_eq(x, c));
        SCHED.get().procs -= 1;
    } else {
        let (code, status) = exit_code(c.status.get().unwrap_or(0));
        let info = crate::sigqueue::Info::With(child_siginfo(code, c.pid, status));
        let _ = send_signal_info(parent, None, SIGCHLD, info);
    }
}

/// A wait status's SIGCHLD code and status: (CLD_EXITED, the exit code)
/// or (CLD_KILLED, the signal).
fn exit_code(st: u32) -> (i32, u32) {
    if st & 0x7f == 0 {
        (1, (st >> 8) & 0xff)
    } else {
        (2, st & 0x7f)
    }
}

/// The thread that created `c` exited: the signals `c`'s threads asked
/// for with PR_SET_PDEATHSIG, to the process.
fn parent_died(c: &Rc<Process>) {
    if c.status.get().is_some() {
        return;
    }
    let sigs: Vec<u32> = SCHED
        .get()
        .tasks
        .iter()
        .filter(|t| t.state.get() != State::Dead && Rc::ptr_eq(&t.process.borrow(), c))
        .map(|t| t.ctl.pdeathsig.get() as u32)
        .filter(|&sig| sig != 0)
        .collect();
    for sig in sigs {
        send_signal(c, None, sig);
    }
}

/// A live thread of `p` other than `but` (its main thread if that one
/// lives), or None.
fn live_thread(p: &Rc<Process>, but: u32) -> Option<u32> {
    let mut live = SCHED
        .get()
        .tasks
        .iter()
        .filter(|t| t.tid() != but && t.state.get() != State::Dead && Rc::ptr_eq(&t.process.borrow(), p));
    let first = live.next()?.tid();
    Some(if live.any(|t| t.tid() == p.pid) { p.pid } else { first })
}

/// The children of exited process `p` go to its nearest living ancestor
/// that is a child subreaper (PR_SET_CHILD_SUBREAPER), as on Linux.
/// Without one they go to the sandbox's init, which is not the program
/// (process 1 runs the program as `subprocess` runs a child, not as an
/// init): their parent id says 1, as under Linux's init, and each is
/// reaped when it exits, so orphans never pile up as zombies against the
/// process limit.
fn adopt(p: &Process, orphans: Vec<Rc<Process>>) {
    let s = SCHED.get();
    let mut reaper = None;
    // (An orphan's ancestors are the init's: none is a subreaper.)
    let mut pid = if p.init_child.get() { 0 } else { p.ppid.get() };
    for _ in 0..=s.procs {
        let Some(a) = find_process(pid) else { break };
        if a.ctl.subreaper.get() {
            reaper = Some(a);
            break;
        }
        if a.init_child.get() {
            break;
        }
        pid = a.ppid.get();
    }
    for c in orphans {
        match &reaper {
            Some(r) => {
                c.ppid.set(r.pid);
                c.parent_tid.set(live_thread(r, 0).unwrap_or(r.pid));
                r.children.borrow_mut().push(c.clone());
                if c.status.get().is_some() {
                    tell_parent(r, &c);
                }
            }
            None => {
                c.ppid.set(1);
                c.init_child.set(true);
                if c.status.get().is_some() {
                    s.procs -= 1;
                }
            }
        }
    }
}

pub fn reap(p: &Process, c: &Rc<Process>) {
    let t = &p.timers;
    let child = c.timers.cpu_ns.get().saturating_add(c.timers.children_cpu_ns.get());
    t.children_cpu_ns.set(t.children_cpu_ns.get().saturating_add(child));
    p.children.borrow_mut().retain(|x| !Rc::ptr_eq(x, c));
    SCHED.get().procs -= 1;
}

pub const WNOHANG: u64 = 1;

pub fn sys_wait4(pid: u64, status: u64, options: u64, rusage: u64) -> SysResult {
    const WNOTHREAD: u64 = 0x2000_0000;
    const WALL: u64 = 0x4000_0000;
    const WCLONE: u64 = 0x8000_0000;
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WNOTHREAD | WALL | WCLONE) != 0 {
        return Err(EINVAL);
    }
    let p = current_process();
    let pid = pid as i32 as i64;
    let options = options | WEXITED;
    let (any, found) = find_child(&p, pid, options);
    if let Some((c, event)) = found {
        let st = match event {
            ChildEvent::Exited => c.status.get().unwrap_or(0),
            _ => c.job_report.take(),
        };
        if status != 0 {
            put_user(status, st.to_le_bytes())?;
        }
        if rusage != 0 {
            // The child's CPU time (and its reaped children's) as user time.
            let us = c.timers.cpu_ns.get().saturating_add(c.timers.children_cpu_ns.get()) / 1000;
            let r = user_bytes_mut(rusage, 144)?;
            r.fill(0);
            r[0..8].copy_from_slice(&(us / 1_000_000).to_le_bytes());
            r[8..16].copy_from_slice(&(us % 1_000_000).to_le_bytes());
        }
        if event == ChildEvent::Exited {
            reap(&p, &c);
        }
        return Ok(c.pid as u64);
    }
    if !any {
        return Err(ECHILD);
    }
    if options & WNOHANG != 0 {
        return Ok(0);
    }
    block(Wait::Child(pid, options), None, true)
}

pub fn sys_waitid(idtype: u64, id: u64, info: u64, options: u64) -> SysResult {
    const WSTOPPED: u64 = 2;
    const WNOWAIT: u64 = 0x0100_0000;
    let pid: i64 = match idtype {
        0 => -1,                                   // P_ALL
        1 => id as i32 as i64,                     // P_PID
        2 => -(id as i32 as i64),                  // P_PGID
        3 => i64::from(crate::pidfd::pid_of(id)?), // P_PIDFD
        _ => return Err(EINVAL),
    };
    if options & (WEXITED | WSTOPPED | WCONTINUED) == 0 {
        return Err(EINVAL);
    }
    let p = current_process();
    // (WSTOPPED is WUNTRACED.)
    let (any, found) = find_child(&p, pid, options);
    if let Some((c, event)) = found {
        if info != 0 {
            let (code, val) = match event {
                ChildEvent::Exited => exit_code(c.status.get().unwrap_or(0)),
                ChildEvent::Stopped(sig) => (5, sig),  // CLD_STOPPED
                ChildEvent::Continued => (6, SIGCONT), // CLD_CONTINUED
            };
            user_bytes_mut(info, 128)?.copy_from_slice(&child_siginfo(code, c.pid, val));
        }
        if options & WNOWAIT == 0 {
            if event == ChildEvent::Exited {
                reap(&p, &c);
            } else {
                c.job_report.set(0);
            }
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
    block(Wait::Child(pid, options), None, true)
}

pub fn sys_getppid() -> SysResult {
    Ok(current_process().ppid.get() as u64)
}

pub fn sys_getpid() -> SysResult {
    Ok(current_process().pid as u64)
}

pub fn sys_gettid() -> SysResult {
    Ok(current().tid() as u64)
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
    Ok(t.tid() as u64)
}
