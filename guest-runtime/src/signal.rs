//! Signals delivered: the way out of every system call (switch task,
//! then run pending signals), handler frames and sigreturn, the program's
//! faults, and the signal system calls. (Posting a signal is `task.rs`'s
//! `send_signal`, which the scheduler's alarms need.)

use alloc::rc::Rc;
use alloc::vec::Vec;

use crate::errno::*;
use crate::mm;
use crate::rt::Frame;
use crate::task::*;
use crate::uaccess::*;
use crate::{hc, time};

use crate::process::exit_group;
use crate::sigqueue::{SI_TKILL, SI_USER};

/// Whether the host was asked for time slices since the task count last
/// dropped to one.
static SLICES_ASKED: crate::rt::Global<bool> = crate::rt::Global::new(false);

/// Called on the way out of every system call: if the current task can
/// no longer run, switch to one that can; then deliver pending signals.
pub fn syscall_exit(f: &mut Frame, nr: u64) {
    let s = SCHED.get();
    let asked = crate::io::host_requests();
    if asked & hvsandbox_abi::HOST_FLAG_STDIN != 0 {
        // Input came: poll/select waiters look again.
        crate::wait::notify();
    }
    if asked & hvsandbox_abi::HOST_FLAG_YIELD != 0 {
        // A time slice ended: another runnable task goes first.
        crate::task::request_yield();
    }
    // With more than one task, or a timer armed, the host ends the time
    // slice of a program that runs on.
    let tasks = if timers_armed() { s.tasks.len().max(2) } else { s.tasks.len() } as u64;
    crate::stats::stat(|st| st.tasks = tasks);
    // The host looks only when asked (a run with one task pays nothing);
    // it stops looking once it sees one task.
    let asked = SLICES_ASKED.get();
    if tasks > 1 && !*asked {
        hc::call(hvsandbox_abi::hc::SLICES, 0, 0, 0);
        *asked = true;
    } else if tasks <= 1 {
        *asked = false;
    }
    if NEXT_ALARM.get().is_some() {
        fire_due_alarms(time::monotonic_ns());
    }
    // O_ASYNC descriptors that became ready signal their owners.
    crate::sigio::check();
    if *CPU_TIMERS.get() {
        fire_cpu_timers();
    }
    let cur = current();
    if cur.state.get() == State::Blocked && cur.restart.get() {
        f.rip = f.rip.wrapping_sub(2);
        f.rax = nr;
    } else {
        // The call was not (or no longer) a re-executed timed wait.
        cur.restart_deadline.set(None);
    }
    let stopped = cur.process.borrow().stopped.get();
    if core::mem::take(YIELD.get()) && cur.state.get() == State::Runnable && !stopped {
        let me = s.current;
        if let Some(next) = pick(me, time::monotonic_ns(), false) {
            charge_cpu();
            save(&cur, f);
            s.current = next;
            load(&s.tasks[next], f);
        }
    } else if cur.state.get() != State::Runnable || stopped {
        // (A stopped process's thread waits, runnable, for a SIGCONT.)
        if cur.state.get() != State::Dead {
            save(&cur, f);
        }
        switch_to_next(f, s.current);
    }
    deliver_signals(f);
}

// --- signals -------------------------------------------------------------------------

/// Runs the current task's first deliverable signal: the default action
/// (terminate) or a handler frame on its stack.
pub fn deliver_signals(f: &mut Frame) {
    loop {
        let t = current();
        let pend = unblocked_pending(&t);
        if pend == 0 {
            // No handler ran: an interrupted wait just runs again.
            t.interrupted.set(None);
            return;
        }
        let sig = pend.trailing_zeros() + 1;
        let p = t.process.borrow().clone();
        let sent = crate::task::take_signal(&t, sig);
        let act = p.sigactions.borrow()[sig as usize];
        if sig != SIGKILL && act[0] == SIG_DFL && is_stop_signal(sig) {
            // A stop signal that was blocked when it came: stops now.
            stop_process(&p, sig);
            save(&t, f);
            switch_to_next(f, SCHED.get().current);
            continue;
        }
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
        // The siginfo it was sent with, or a timer's.
        let info = match sent {
            Some(info) => info,
            None => p.timers.take(sig, t.tid()).map_or_else(|| plain_info(sig), |q| crate::timer::siginfo(&q)),
        };
        if setup_frame_with(&t, f, sig, &act, &info).is_err() {
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

/// A siginfo that says only which signal it is (for SIGCHLD, also which
/// child ended and how).
pub fn plain_info(sig: u32) -> [u8; 128] {
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    if sig == SIGCHLD {
        if let Some((pid, code, status)) = child_exit(&current_process()) {
            info[8..12].copy_from_slice(&code.to_le_bytes());
            info[16..20].copy_from_slice(&pid.to_le_bytes());
            info[20..24].copy_from_slice(&(crate::rt::UID as u32).to_le_bytes());
            info[24..28].copy_from_slice(&status.to_le_bytes());
        }
    }
    info
}

/// A child of `p` that ended and is not reaped yet: (pid, CLD_EXITED or
/// CLD_KILLED, exit code or signal).
pub fn child_exit(p: &Process) -> Option<(u32, i32, i32)> {
    let ch = p.children.borrow();
    let c = ch.iter().find(|c| c.status.get().is_some())?;
    let st = c.status.get().unwrap_or(0);
    Some(if st & 0x7f == 0 { (c.pid, 1, ((st >> 8) & 0xff) as i32) } else { (c.pid, 2, (st & 0x7f) as i32) })
}

/// Builds a Linux rt_sigframe below the red zone, with the handler's
/// siginfo, and enters the handler.
pub fn setup_frame_with(t: &Task, f: &mut Frame, sig: u32, act: &[u64; 4], info: &[u8; 128]) -> Result<(), i64> {
    if let Some(restartable) = t.interrupted.take() {
        if let Some((_, done)) = t.write_done.take().filter(|&(_, done)| done > 0) {
            // A write to a pipe interrupted after part of it went in: it
            // ends with that count, as on Linux (SA_RESTART or not).
            f.rip = f.rip.wrapping_add(2);
            f.rax = done;
        } else if !restartable || act[1] & SA_RESTART == 0 {
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
    // The program's whole FPU and vector state, as Linux saves it: an
    // XSAVE image (AVX and AVX-512 included, which a handler's own code
    // would otherwise clobber) marked with FP_XSTATE_MAGIC1/2, or the
    // FXSAVE image without XSAVE; the program's XMM registers put in.
    let features = xsave_features();
    let fp_len = fpu_image_len(features);
    if fp_len + 4 > FPU_AREA_BYTES {
        return Err(EFAULT);
    }
    let img = SIGNAL_FPU.get();
    save_fpu(img);
    // SAFETY: the 256 bytes below the frame hold the program's XMM0-15.
    let xmm = unsafe { core::slice::from_raw_parts(xmm_area(f), 256) };
    img.0[160..416].copy_from_slice(xmm);
    let frame_fp_len = frame_fpu_len(features);
    if features != 0 {
        let sw = &mut img.0[464..512];
        sw.fill(0);
        sw[0..4].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
        sw[4..8].copy_from_slice(&(fp_len as u32 + 4).to_le_bytes());
        sw[8..16].copy_from_slice(&features.to_le_bytes());
        sw[16..20].copy_from_slice(&(fp_len as u32).to_le_bytes());
        img.0[fp_len..fp_len + 4].copy_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
    }

    const SA_ONSTACK: u64 = 0x0800_0000;
    let (alt_base, alt_size) = t.altstack.get();
    let on_alt = alt_size != 0 && f.rsp > alt_base && f.rsp <= alt_base + alt_size;
    let mut sp = if act[1] & SA_ONSTACK != 0 && alt_size != 0 && !on_alt {
        alt_base + alt_size
    } else {
        f.rsp.wrapping_sub(RED_ZONE_BYTES)
    };
    sp = (sp - frame_fp_len as u64) & !63;
    let fp_va = sp;
    sp -= SIGINFO_BYTES;
    let info_va = sp;
    sp -= UCONTEXT_BYTES;
    sp &= !15;
    let uc_va = sp;
    sp -= 8; // return address: rsp % 16 == 8 at handler entry
    let ret_va = sp;

    let mut uc = [0u8; UCONTEXT_BYTES as usize];
    let mut put = |off: usize, v: u64| uc[off..off + 8].copy_from_slice(&v.to_le_bytes());
    // uc_mcontext (struct sigcontext) starts at 40.
    let m = 40;
    // r8..r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags.
    let regs = [
        f.r8, f.r9, f.r10, f.r11, f.r12, f.r13, f.r14, f.r15, f.rdi, f.rsi, f.rbp, f.rbx, f.rdx, f.rax, f.rcx, f.rsp,
        f.rip, f.rflags,
    ];
    for (i, &v) in regs.iter().enumerate() {
        put(m + 8 * i, v);
    }
    put(m + 8 * 18, 0x2b_0000_0000_0033); // cs, gs, fs, ss
    put(m + 8 * 23, fp_va); // fpstate
    if features != 0 {
        put(0, UC_FP_XSTATE); // uc_flags
    }
    put(296, t.sigmask.get()); // uc_sigmask
    user_bytes_mut(fp_va, frame_fp_len as u64)?.copy_from_slice(&img.0[..frame_fp_len]);
    user_bytes_mut(info_va, SIGINFO_BYTES)?.copy_from_slice(info);
    user_bytes_mut(uc_va, UCONTEXT_BYTES)?.copy_from_slice(&uc);
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

/// Linux's marks of an XSAVE image in a signal frame: in the FXSAVE
/// area's software-reserved bytes, and right after the image.
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// `uc_flags`: the frame's FPU state is an XSAVE image.
const UC_FP_XSTATE: u64 = 1;
const FPU_AREA_BYTES: usize = core::mem::size_of::<FpuImage>();

/// The image a signal frame's FPU state is built in, and a returning
/// frame's is checked in (one vCPU, never used re-entrantly).
static SIGNAL_FPU: crate::rt::Global<FpuImage> = crate::rt::Global::new(FpuImage::new());

/// Loads the FPU and vector state a returning signal frame holds at
/// `fp_va`, when it is an XSAVE image as `setup_frame_with` writes it
/// (its marks, its length and its features as this vCPU's): copied in,
/// its header and MXCSR made valid for XRSTOR first (the frame is the
/// program's to change). Anything else keeps the current state.
fn restore_frame_xstate(fp_va: u64) -> Result<(), i64> {
    let features = xsave_features();
    if features == 0 {
        return Ok(());
    }
    let len = fpu_image_len(features);
    let sw = user_bytes(fp_va.checked_add(464).ok_or(EFAULT)?, 20)?;
    let word = |o: usize| u32::from_le_bytes(sw[o..o + 4].try_into().unwrap_or([0; 4]));
    let marked = word(0) == FP_XSTATE_MAGIC1
        && word(4) as usize == len + 4
        && u64::from_le_bytes(sw[8..16].try_into().unwrap_or([0; 8])) == features
        && word(16) as usize == len
        && len + 4 <= FPU_AREA_BYTES;
    if !marked || user_bytes(fp_va.checked_add(len as u64).ok_or(EFAULT)?, 4)? != FP_XSTATE_MAGIC2.to_le_bytes() {
        return Ok(());
    }
    let img = SIGNAL_FPU.get();
    img.0[..len].copy_from_slice(user_bytes(fp_va, len as u64)?);
    // MXCSR: reserved bits (per MXCSR_MASK, 0xffbf when it reads 0) clear.
    let mask = match u32::from_le_bytes(img.0[28..32].try_into().unwrap_or([0; 4])) {
        0 => 0xffbf,
        m => m,
    };
    let mxcsr = u32::from_le_bytes(img.0[24..28].try_into().unwrap_or([0x80, 0x1f, 0, 0])) & mask;
    img.0[24..28].copy_from_slice(&mxcsr.to_le_bytes());
    // The header: XSTATE_BV within the features, standard form (XCOMP_BV
    // zero), the reserved bytes zero; XRSTOR faults on anything else.
    let bv = u64::from_le_bytes(img.0[512..520].try_into().unwrap_or([0; 8])) & features;
    img.0[512..520].copy_from_slice(&bv.to_le_bytes());
    img.0[520..576].fill(0);
    restore_fpu(img);
    Ok(())
}

/// The program took an exception (see `rt::program_fault`): `f` holds its
/// registers. A handler for the signal runs if the program installed one;
/// otherwise the process dies of it — for process 1 that ends the run and
/// the host reports the fault.
pub fn program_fault(f: &mut Frame, mut vector: u64, mut error: u64, cr2: u64) {
    if vector == hvsandbox_abi::vector::HOST_PREEMPT {
        // The host ended this task's time slice: the same way out as a
        // system call that yields (alarms and signals are delivered too).
        crate::task::request_yield();
        syscall_exit(f, u64::MAX);
        return;
    }
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
    // fault, bit 0 of the error code clear): back it and retry; likewise
    // a write to a page a fork shares copy-on-write, and an instruction
    // fetch (bit 4) from a page made executable since the TLB saw it.
    let mut bus = false;
    if vector == 14 && (error & 1 == 0 || error & 0x12 != 0) {
        match mm::fault_in(cr2, error & 2 != 0, error & 0x10 != 0) {
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
            mm::Fault::Bus => bus = true,
        }
    }
    if let Some(at) = crate::rewrite::moved_from(f.rip) {
        f.rip = at;
    }
    const SIGBUS: u32 = 7;
    let sig = if bus { SIGBUS } else { hvsandbox_abi::signal_for_vector(vector) };
    let t = current();
    let p = t.process.borrow().clone();
    let act = p.sigactions.borrow()[sig as usize];
    let blocked = t.sigmask.get() & (1 << (sig - 1)) != 0;
    if act[0] > SIG_IGN && !blocked && setup_frame_with(&t, f, sig, &act, &fault_info(sig, vector, f.rip, cr2)).is_ok()
    {
        return;
    }
    // (A SIGBUS is no CPU exception the host knows: process 1 exits of it.)
    if p.pid == 1 && !bus {
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

/// The siginfo of a CPU exception, as Linux fills it: a page fault's
/// address and whether anything is mapped there (SEGV_ACCERR) or not
/// (SEGV_MAPERR; SIGBUS: BUS_ADRERR); the instruction's address for
/// SIGILL (ILL_ILLOPN) and SIGFPE (FPE_INTDIV); SI_KERNEL and no address
/// for the rest (a #GP, `int3`).
fn fault_info(sig: u32, vector: u64, rip: u64, cr2: u64) -> [u8; 128] {
    const SI_KERNEL: i32 = 0x80;
    let (code, addr) = match vector {
        14 if sig == 7 => (2, cr2),
        14 => (if mm::is_mapped(cr2) { 2 } else { 1 }, cr2),
        6 => (2, rip),
        0 => (1, rip),
        _ => (SI_KERNEL, 0),
    };
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    info[8..12].copy_from_slice(&code.to_le_bytes());
    info[16..24].copy_from_slice(&addr.to_le_bytes());
    info
}

/// rt_sigreturn: restores what `setup_frame_with` saved.
pub fn sys_rt_sigreturn(f: &mut Frame) -> SysResult {
    let t = current();
    let uc_va = f.rsp; // the handler's `ret` popped the return address
    let uc = user_bytes(uc_va, UCONTEXT_BYTES)?;
    let get = |off: usize| u64::from_le_bytes(uc[off..off + 8].try_into().unwrap_or([0; 8]));
    let m = 40;
    f.r8 = get(m);
    f.r9 = get(m + 8);
    f.r10 = get(m + 16);
    f.r11 = get(m + 24);
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
    f.rcx = get(m + 112);
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
        restore_frame_xstate(fp_va)?;
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
            crate::task::discard_signal(&p, sig as u32);
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
    let info = crate::task::sender_info(sig as u32, SI_USER);
    for p in targets {
        let _ = crate::task::send_signal_info(&p, None, sig as u32, Info::With(info));
    }
    Ok(0)
}

/// rt_sigqueueinfo(2) (`tid` None) and rt_tgsigqueueinfo(2): `sig` with
/// the caller's siginfo (sigqueue's value) to process `tgid` (or its
/// thread `tid`), queued even when it is already pending if real-time.
/// As Linux: another process may be sent only a siginfo whose si_code is
/// negative and not SI_TKILL (EPERM); a full queue is EAGAIN.
pub fn sys_rt_sigqueueinfo(tgid: u64, tid: Option<u64>, sig: u64, uinfo: u64) -> SysResult {
    if sig == 0 || sig > 64 {
        return Err(EINVAL);
    }
    let mut info = [0u8; 128];
    info.copy_from_slice(user_bytes(uinfo, 128)?);
    let (p, t) = match tid {
        None => (find_process(tgid as u32).ok_or(ESRCH)?, None),
        Some(tid) => {
            let t = u32::try_from(tid).ok().and_then(find_task).ok_or(ESRCH)?;
            let p = t.process.borrow().clone();
            if p.pid as u64 != tgid {
                return Err(ESRCH);
            }
            (p, Some(t))
        }
    };
    if !crate::sigqueue::caller_info_allowed(&info, Rc::ptr_eq(&p, &current_process())) {
        return Err(EPERM);
    }
    info[0..4].copy_from_slice(&(sig as u32).to_le_bytes());
    crate::task::send_signal_info(&p, t.as_ref(), sig as u32, Info::Queue(info))?;
    Ok(0)
}

pub fn sys_tgkill(tgid: u64, tid: u64, sig: u64) -> SysResult {
    if sig > 64 {
        return Err(EINVAL);
    }
    let t = u32::try_from(tid).ok().and_then(find_task).ok_or(ESRCH)?;
    let p = t.process.borrow().clone();
    if tgid as i64 != -1 && p.pid as u64 != tgid {
        return Err(ESRCH);
    }
    let info = crate::task::sender_info(sig as u32, SI_TKILL);
    let _ = crate::task::send_signal_info(&p, Some(&t), sig as u32, Info::With(info));
    Ok(0)
}

/// Sends `sig` to a descriptor's owner (`wait::signal_owner`): a thread,
/// a process, or every process of a group; nothing for one gone.
pub fn to_owner(owner: crate::wait::Owner, sig: u32, why: Option<crate::wait::Sigio>) {
    use crate::wait::{F_OWNER_PGRP, F_OWNER_TID};
    // F_SETSIG's siginfo: the signal, si_code, si_band (the poll bits of
    // si_code, as Linux's band_table) and si_fd; without one, the
    // kernel's own (SI_KERNEL), as Linux sends plain SIGIO and SIGURG.
    const SI_KERNEL: i32 = 0x80;
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&sig.to_le_bytes());
    info[8..12].copy_from_slice(&why.map_or(SI_KERNEL, |w| w.code).to_le_bytes());
    if let Some(w) = why {
        const BAND: [u64; 3] = [0x41, 0x304, 0x441];
        let band = BAND.get((w.code - 1) as usize).copied().unwrap_or(u64::MAX);
        info[16..24].copy_from_slice(&band.to_le_bytes());
        info[24..28].copy_from_slice(&w.fd.to_le_bytes());
    }
    let send = |p: &Rc<crate::task::Process>, t: Option<&Rc<crate::task::Task>>| {
        let _ = crate::task::send_signal_info(p, t, sig, crate::sigqueue::Info::With(info));
    };
    match owner.kind {
        F_OWNER_TID => {
            if let Some(t) = find_task(owner.id) {
                let p = t.process.borrow().clone();
                send(&p, Some(&t));
            }
        }
        F_OWNER_PGRP => {
            for p in live_processes().into_iter().filter(|p| p.pgid.get() == owner.id) {
                send(&p, None);
            }
        }
        _ => {
            if let Some(p) = find_process(owner.id) {
                send(&p, None);
            }
        }
    }
}

/// Raises `sig` in the current thread (e.g. SIGPIPE from a write).
pub fn raise(sig: u32) {
    let t = current();
    let p = t.process.borrow().clone();
    send_signal(&p, Some(&t), sig);
}
