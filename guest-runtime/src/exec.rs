//! execve: the program (or the interpreter a `#!` line names) replaces
//! the process's image in a new address space.

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::mm;
use crate::rt::Frame;
use crate::task::*;
use crate::uaccess::*;
use crate::vfs::{self, NodeRef};
use crate::{elf, stack};

use crate::process::{clear_tid, exit_group, release_vfork, robust_exit};

// --- execve -----------------------------------------------------------------------------

pub const ARG_MAX: usize = 2 << 20;
pub const MAX_SHEBANG_DEPTH: u32 = 4;

pub fn read_strings(ptr: u64, out: &mut Vec<u8>, count: &mut usize) -> Result<(), i64> {
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
    const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
    const AT_EMPTY_PATH: u64 = 0x1000;
    let (node, p) = if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        // fexecve: the file `dirfd` has open (its path as opened).
        let file = crate::fds::get(dirfd)?;
        (file.node().cloned().ok_or(EACCES)?, file.path.clone())
    } else if p.first() == Some(&b'/') {
        (vfs::resolve(&vfs::root(), &p, flags & AT_SYMLINK_NOFOLLOW == 0)?, p)
    } else {
        let base = crate::fds::base_dir(dirfd)?;
        let node = vfs::resolve(&base, &p, flags & AT_SYMLINK_NOFOLLOW == 0)?;
        // Relative to a directory descriptor: named from there, as Linux
        // names it (`/dev/fd/N/path`, what a script's interpreter gets);
        // relative to the working directory (AT_FDCWD, -100): as given.
        let named = if dirfd as i32 == -100 {
            p
        } else {
            let mut n = b"/dev/fd/".to_vec();
            vfs::push_num(&mut n, dirfd as u32 as u64);
            n.push(b'/');
            n.extend_from_slice(&p);
            n
        };
        (node, named)
    };
    let comm_path = p.clone();
    exec(f, node, p, args, argc, envs, envc, &comm_path, 0)
}

#[allow(clippy::too_many_arguments)]
pub fn exec(
    f: &mut Frame,
    node: NodeRef,
    path: Vec<u8>,
    args: Vec<u8>,
    argc: usize,
    envs: Vec<u8>,
    envc: usize,
    comm_path: &[u8],
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
        return exec(f, inode, interp.to_vec(), new_args, new_argc, envs, envc, comm_path, depth + 1);
    }
    let img = elf::parse(&node)?;
    let interp = elf::parse_interp(&img)?;

    // Point of no return: a new address space.
    let me = current_process();
    let new_space = Space::new(mm::new_space()?);
    // As Linux: the robust futexes the process's threads hold die with
    // the old memory (other processes may share them); the other
    // threads' thread-id words are cleared as at their exit.
    for t in SCHED.get().tasks.iter().filter(|t| Rc::ptr_eq(&t.process.borrow(), &me) && t.state.get() != State::Dead) {
        robust_exit(t);
        if !Rc::ptr_eq(t, &current()) {
            clear_tid(t);
        }
    }
    mm::activate(new_space.get());
    let old = me.space.borrow_mut().replace(new_space);
    *me.cmdline.borrow_mut() = args.clone();
    *me.environ.borrow_mut() = envs.clone();
    let mut block = args;
    block.extend_from_slice(&envs);
    let cwd = me.cwd.borrow().clone();
    *me.exe.borrow_mut() = vfs::real_path(&cwd, &path).unwrap_or_else(|| vfs::absolute(&cwd, &path));
    me.map_names.borrow_mut().0.clear();
    me.ctl.exec();
    current().ctl.exec(comm_path);
    let exe = me.exe.borrow().clone();
    let mut named = elf::Named::default();
    // (The new space is current and empty: the program's leaf tables may
    // be those of a process before, see `mm::with_program_loading`.)
    let loaded = mm::with_program_loading(|| elf::load(&img, interp.as_ref(), &mut named));
    let result = loaded.and_then(|l| stack::build(&l, &block, argc, envc).map(|b| (l.entry, b)).map_err(|_| E2BIG));
    crate::procfs::name_segments(&named.program, &node, &exe);
    if let (Some(ld), Some(ld_path)) = (&interp, &img.interp) {
        crate::procfs::name_segments(&named.interp, ld.node(), ld_path);
    }
    drop(old);
    release_vfork(&me);
    let (entry, sp) = match result {
        Ok((entry, built)) => {
            *me.auxv.borrow_mut() = built.auxv;
            (entry, built.sp)
        }
        Err(_) => return exit_group(f, 0, SIGSEGV),
    };
    // Its `cpuid` sites (from a file's first start, or second if large) and the
    // `syscall` sites earlier processes called go fast.
    crate::exec_cpuid::started(&node, interp.as_ref().map(|i| i.node()));
    me.fds.borrow_mut().close_on_exec(me.pid);
    // POSIX timers do not survive exec; interval timers and alarms do.
    me.timers.exec();
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
    // The calling thread is the main thread now, with the process's id
    // (its own id is released, as Linux's de_thread does).
    cur.tid.set(me.pid);
    // As Linux's execve: no alternate signal stack (its address was the
    // old program's; a handler with SA_ONSTACK would run there), and no
    // thread-id address to clear at exit (glibc's fork sets one in the
    // old program's memory); the robust list went with the old memory
    // above (`robust_exit` forgets it).
    cur.altstack.set((0, 0));
    cur.clear_child_tid.set(0);
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

pub fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(s.len());
    let end = s.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &s[start..end]
}
