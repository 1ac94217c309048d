//! The system-call table: Linux x86-64 numbers to handlers. Every pointer
//! the program passes is checked against its mappings before use; unknown
//! calls return -ENOSYS and are counted per number for the host.

use hvsandbox_abi as abi;

use crate::mm::{self, PROT_READ, PROT_WRITE};
use crate::rt::{boot, Global};
use crate::{hc, io, stack, time};

/// Registers saved by `syscall_entry`, lowest address first.
#[repr(C)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r9: u64,
    pub r8: u64,
    pub r10: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rax: u64,
    pub rflags: u64,
    pub rip: u64,
    pub rsp: u64,
}

const EPERM: i64 = 1;
const ENOENT: i64 = 2;
const ESRCH: i64 = 3;
const EBADF: i64 = 9;
const EAGAIN: i64 = 11;
const EFAULT: i64 = 14;
const EINVAL: i64 = 22;
const ENOTTY: i64 = 25;
const ESPIPE: i64 = 29;
const ERANGE: i64 = 34;
const ENOSYS: i64 = 38;

type SysResult = Result<u64, i64>;

struct Process {
    /// Signal dispositions (handler addresses), 1..=64.
    sigactions: [[u64; 4]; 65],
    sigmask: u64,
    clear_child_tid: u64,
    fs_closed: [bool; 3],
}

static PROC: Global<Process> =
    Global::new(Process { sigactions: [[0; 4]; 65], sigmask: 0, clear_child_tid: 0, fs_closed: [false; 3] });

fn stats() -> *mut abi::RuntimeStats {
    abi::phys_to_virt(abi::STATS_GPA) as *mut abi::RuntimeStats
}

fn count_syscall() {
    // SAFETY: the stats area is a fixed, mapped region of guest RAM that
    // only the runtime writes (the host reads it after the run).
    unsafe { (*stats()).syscalls += 1 };
}

fn count_unknown(nr: u64) {
    let s = stats();
    let slot = (nr as usize).min(abi::UNKNOWN_SLOTS - 1);
    // SAFETY: as in count_syscall; slot < UNKNOWN_SLOTS.
    unsafe {
        (*s).unknown_syscalls += 1;
        (*s).unknown_by_nr[slot] = (*s).unknown_by_nr[slot].saturating_add(1);
    }
}

/// Records the memory peak for the host, just before the run ends.
pub fn record_memory_peak() {
    // SAFETY: as in `count`.
    unsafe { (*stats()).frames_used_peak = mm::peak_bytes() / mm::PAGE };
}

// --- access to the program's memory ----------------------------------------

fn user_bytes(va: u64, len: u64) -> Result<&'static [u8], i64> {
    if !mm::user_access_ok(va, len, PROT_READ) {
        return Err(EFAULT);
    }
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: the whole range is mapped readable in the current address
    // space (checked above) and stays mapped for this system call.
    Ok(unsafe { core::slice::from_raw_parts(va as *const u8, len as usize) })
}

fn user_bytes_mut(va: u64, len: u64) -> Result<&'static mut [u8], i64> {
    if !mm::user_access_ok(va, len, PROT_WRITE) {
        return Err(EFAULT);
    }
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: the whole range is mapped writable (checked above); the
    // runtime holds no other reference into program memory meanwhile.
    Ok(unsafe { core::slice::from_raw_parts_mut(va as *mut u8, len as usize) })
}

fn put_user<const N: usize>(va: u64, bytes: [u8; N]) -> Result<(), i64> {
    user_bytes_mut(va, N as u64)?.copy_from_slice(&bytes);
    Ok(())
}

fn put_u64s(va: u64, words: &[u64]) -> Result<(), i64> {
    let out = user_bytes_mut(va, 8 * words.len() as u64)?;
    for (chunk, w) in out.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    Ok(())
}

fn get_u64(va: u64) -> Result<u64, i64> {
    let b = user_bytes(va, 8)?;
    Ok(u64::from_le_bytes(b.try_into().map_err(|_| EFAULT)?))
}

/// A NUL-terminated string of at most `max` bytes (without the NUL).
fn user_cstr(va: u64, max: u64) -> Result<&'static [u8], i64> {
    let mut len = 0u64;
    loop {
        // Check page by page so a string at the end of a mapping is fine.
        let page_left = mm::PAGE - ((va + len) & (mm::PAGE - 1));
        let chunk = user_bytes(va + len, page_left)?;
        if let Some(n) = chunk.iter().position(|&b| b == 0) {
            return user_bytes(va, len + n as u64);
        }
        len += page_left;
        if len > max {
            return Err(ERANGE);
        }
    }
}

// --- the table ---------------------------------------------------------------

/// Called by `syscall_entry` with the saved registers.
pub extern "C" fn dispatch(f: &mut Frame) {
    let nr = f.rax;
    let (a0, a1, a2, a3) = (f.rdi, f.rsi, f.rdx, f.r10);
    count_syscall();
    let r: SysResult = match nr {
        0 => sys_read(a0, a1, a2),
        1 => sys_write(a0, a1, a2),
        3 => sys_close(a0),
        5 => sys_fstat(a0, a1),
        8 | 17 | 18 => fd_check(a0).and(Err(ESPIPE)), // lseek, pread64, pwrite64
        7 => sys_poll(a0, a1, poll_timeout_ms(a2)),
        271 => match ppoll_timeout(a2) {
            Ok(t) => sys_poll(a0, a1, t),
            Err(e) => Err(e),
        },
        9 => sys_mmap(a0, a1, a2, a3, f.r8),
        10 => mm::mprotect(a0, a1, a2 as u32).map(|_| 0),
        11 => mm::munmap(a0, a1).map(|_| 0),
        12 => Ok(mm::brk(a0)),
        13 => sys_rt_sigaction(a0, a1, a2, a3),
        14 => sys_rt_sigprocmask(a0, a1, a2, a3),
        16 => fd_check(a0).and(Err(ENOTTY)), // ioctl: no terminals here
        19 => sys_readv(a0, a1, a2),
        20 => sys_writev(a0, a1, a2),
        2 | 257 => Err(ENOENT), // open, openat: no filesystem yet
        4 | 6 => Err(ENOENT),   // stat, lstat
        21 | 269 | 439 => Err(ENOENT), // access, faccessat, faccessat2
        24 => Ok(0),            // sched_yield
        28 => sys_madvise(a0, a1, a2),
        35 => sys_nanosleep(a0, a1),
        39 | 186 => Ok(1),      // getpid, gettid
        110 => Ok(0),           // getppid
        111 | 121 | 124 => Ok(1), // getpgrp, getpgid, getsid
        102 | 104 | 107 | 108 => Ok(stack::UID), // getuid, getgid, geteuid, getegid
        105 | 106 => same_id(a0),        // setuid, setgid: only to what we are
        117 | 119 => same_id(a0).and(same_id(a1)).and(same_id(a2)), // setresuid, setresgid
        118 | 120 => put_u32s(&[a0, a1, a2], stack::UID as u32).map(|_| 0), // getresuid, getresgid
        115 => Ok(0),                     // getgroups: none
        60 | 231 => sys_exit(a0),
        62 => sys_kill(a0, a1),
        200 => sys_kill(a0, a1),      // tkill
        234 => sys_kill(a1, a2),      // tgkill
        63 => sys_uname(a0),
        72 => sys_fcntl(a0, a1),
        79 => sys_getcwd(a0, a1),
        89 => sys_readlink(a0, a1, a2),
        267 => sys_readlink(a1, a2, a3),
        95 => Ok(0o022),              // umask
        96 => sys_gettimeofday(a0),
        97 => sys_prlimit(a0, 0, a1),
        302 => sys_prlimit(a1, a2, a3),
        99 => sys_sysinfo(a0),
        131 => Ok(0),                 // sigaltstack
        157 => sys_prctl(a0, a1),
        158 => sys_arch_prctl(a0, a1),
        201 => sys_time(a0),
        202 => sys_futex(a0, a1, a2),
        204 => sys_sched_getaffinity(a1, a2),
        218 => {
            PROC.get().clear_child_tid = a0;
            Ok(1)
        }
        228 => sys_clock_gettime(a0, a1),
        229 => sys_clock_getres(a1),
        230 => sys_clock_nanosleep(a0, a1, a2),
        262 => sys_newfstatat(a0, a1, a2, a3),
        273 => Ok(0),                 // set_robust_list
        318 => sys_getrandom(a0, a1),
        334 => Err(ENOSYS),           // rseq: glibc copes without it
        _ => {
            count_unknown(nr);
            Err(ENOSYS)
        }
    };
    f.rax = match r {
        Ok(v) => v,
        Err(e) => (-e) as u64,
    };
}

/// Changing to the id we already have is allowed (-1 means "unchanged").
fn same_id(id: u64) -> SysResult {
    if id == stack::UID || id as u32 == u32::MAX {
        Ok(0)
    } else {
        Err(EPERM)
    }
}

fn put_u32s(ptrs: &[u64], value: u32) -> Result<(), i64> {
    for &p in ptrs {
        put_user(p, value.to_le_bytes())?;
    }
    Ok(())
}

fn fd_check(fd: u64) -> SysResult {
    if fd < 3 && !PROC.get().fs_closed[fd as usize] {
        Ok(0)
    } else {
        Err(EBADF)
    }
}

fn sys_read(fd: u64, buf: u64, len: u64) -> SysResult {
    fd_check(fd)?;
    if fd != 0 {
        return Err(EBADF);
    }
    let out = user_bytes_mut(buf, len)?;
    Ok(io::read_stdin(out) as u64)
}

fn sys_write(fd: u64, buf: u64, len: u64) -> SysResult {
    fd_check(fd)?;
    if fd == 0 {
        return Err(EBADF);
    }
    let data = user_bytes(buf, len)?;
    io::write_stream(fd as usize, data);
    Ok(len)
}

const IOV_MAX: u64 = 1024;

fn iovecs(iov: u64, cnt: u64) -> Result<&'static [u8], i64> {
    if cnt > IOV_MAX {
        return Err(EINVAL);
    }
    user_bytes(iov, cnt * 16)
}

fn iov_entry(v: &[u8], i: usize) -> (u64, u64) {
    let base = u64::from_le_bytes(v[16 * i..16 * i + 8].try_into().unwrap_or([0; 8]));
    let len = u64::from_le_bytes(v[16 * i + 8..16 * i + 16].try_into().unwrap_or([0; 8]));
    (base, len)
}

fn sys_writev(fd: u64, iov: u64, cnt: u64) -> SysResult {
    fd_check(fd)?;
    if fd == 0 {
        return Err(EBADF);
    }
    let v = iovecs(iov, cnt)?;
    // Validate everything first: a bad vector writes nothing.
    let mut total = 0u64;
    for i in 0..cnt as usize {
        let (base, len) = iov_entry(v, i);
        user_bytes(base, len)?;
        total = total.checked_add(len).ok_or(EINVAL)?;
    }
    for i in 0..cnt as usize {
        let (base, len) = iov_entry(v, i);
        io::write_stream(fd as usize, user_bytes(base, len)?);
    }
    Ok(total)
}

fn sys_readv(fd: u64, iov: u64, cnt: u64) -> SysResult {
    fd_check(fd)?;
    if fd != 0 {
        return Err(EBADF);
    }
    let v = iovecs(iov, cnt)?;
    let mut total = 0u64;
    for i in 0..cnt as usize {
        let (base, len) = iov_entry(v, i);
        let out = user_bytes_mut(base, len)?;
        let n = io::read_stdin(out) as u64;
        total += n;
        if n < len {
            break;
        }
    }
    Ok(total)
}

const POLLIN: u16 = 0x1;
const POLLOUT: u16 = 0x4;
const POLLNVAL: u16 = 0x20;
const POLL_MAX_FDS: u64 = 4096;

fn poll_timeout_ms(ms: u64) -> Option<u64> {
    let ms = ms as i32;
    (ms >= 0).then(|| ms as u64 * 1_000_000)
}

fn ppoll_timeout(ts: u64) -> Result<Option<u64>, i64> {
    if ts == 0 {
        Ok(None)
    } else {
        read_timespec(ts).map(Some)
    }
}

/// poll on stdio: stdin always has data or end of input (the host holds
/// all of it), stdout and stderr always take more. Other fds are invalid.
fn sys_poll(fds: u64, nfds: u64, timeout_ns: Option<u64>) -> SysResult {
    if nfds > POLL_MAX_FDS {
        return Err(EINVAL);
    }
    let entries = user_bytes_mut(fds, nfds * 8)?;
    let mut ready = 0;
    for e in entries.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([e[0], e[1], e[2], e[3]]);
        let events = u16::from_le_bytes([e[4], e[5]]);
        let revents = if fd < 0 {
            0
        } else if fd_check(fd as u64).is_err() {
            POLLNVAL
        } else if fd == 0 {
            events & POLLIN
        } else {
            events & POLLOUT
        };
        e[6..8].copy_from_slice(&revents.to_le_bytes());
        if revents != 0 {
            ready += 1;
        }
    }
    if ready == 0 {
        // Nothing can ever become ready: wait out the timeout (an infinite
        // one ends at the run's deadline).
        hc::sleep_ns(timeout_ns.unwrap_or(u64::MAX));
    }
    Ok(ready)
}

fn sys_close(fd: u64) -> SysResult {
    fd_check(fd)?;
    PROC.get().fs_closed[fd as usize] = true;
    Ok(0)
}

/// struct stat for stdin/stdout/stderr: pipes, as when a parent captures
/// a child's streams.
fn stat_pipe(buf: u64, fd: u64) -> SysResult {
    let mut st = [0u8; 144];
    let mode: u32 = 0o010_000 | if fd == 0 { 0o400 } else { 0o200 } | 0o600;
    st[0..8].copy_from_slice(&0x0cu64.to_le_bytes()); // st_dev
    st[8..16].copy_from_slice(&(100 + fd).to_le_bytes()); // st_ino
    st[16..24].copy_from_slice(&1u64.to_le_bytes()); // st_nlink
    st[24..28].copy_from_slice(&mode.to_le_bytes()); // st_mode
    st[28..32].copy_from_slice(&(stack::UID as u32).to_le_bytes()); // st_uid
    st[32..36].copy_from_slice(&(stack::UID as u32).to_le_bytes()); // st_gid
    st[56..64].copy_from_slice(&4096u64.to_le_bytes()); // st_blksize
    put_user(buf, st)?;
    Ok(0)
}

fn sys_fstat(fd: u64, buf: u64) -> SysResult {
    fd_check(fd)?;
    stat_pipe(buf, fd)
}

const AT_EMPTY_PATH: u64 = 0x1000;

fn sys_newfstatat(dirfd: u64, path: u64, buf: u64, flags: u64) -> SysResult {
    let p = user_cstr(path, 4096)?;
    if p.is_empty() && flags & AT_EMPTY_PATH != 0 {
        fd_check(dirfd)?;
        return stat_pipe(buf, dirfd);
    }
    Err(ENOENT)
}

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

fn sys_mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64) -> SysResult {
    if flags & MAP_ANONYMOUS == 0 {
        // No files to map yet.
        let _ = fd;
        return Err(EBADF);
    }
    if flags & (MAP_SHARED | MAP_PRIVATE) == 0 {
        return Err(EINVAL);
    }
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    mm::mmap_anon(addr, len, prot as u32 & 7, fixed, flags & MAP_FIXED_NOREPLACE != 0)
}

const MADV_DONTNEED: u64 = 4;

fn sys_madvise(addr: u64, len: u64, advice: u64) -> SysResult {
    if advice == MADV_DONTNEED {
        mm::madvise_dontneed(addr, len)?;
    }
    Ok(0)
}

fn sys_rt_sigaction(sig: u64, act: u64, old: u64, size: u64) -> SysResult {
    if !(1..=64).contains(&sig) || size != 8 || sig == 9 || sig == 19 {
        return Err(EINVAL);
    }
    let p = PROC.get();
    let prev = p.sigactions[sig as usize];
    if act != 0 {
        let b = user_bytes(act, 32)?;
        let mut a = [0u64; 4];
        for (i, w) in a.iter_mut().enumerate() {
            *w = u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().map_err(|_| EFAULT)?);
        }
        p.sigactions[sig as usize] = a;
    }
    if old != 0 {
        put_u64s(old, &prev)?;
    }
    Ok(0)
}

fn sys_rt_sigprocmask(how: u64, set: u64, old: u64, size: u64) -> SysResult {
    if size != 8 {
        return Err(EINVAL);
    }
    let p = PROC.get();
    let prev = p.sigmask;
    if set != 0 {
        let s = get_u64(set)?;
        p.sigmask = match how {
            0 => prev | s,
            1 => prev & !s,
            2 => s,
            _ => return Err(EINVAL),
        };
    }
    if old != 0 {
        put_u64s(old, &[prev])?;
    }
    Ok(0)
}

/// Signals sent to ourselves: without handlers running yet, an ignored
/// signal is dropped and anything else takes its default action, which
/// for the signals programs raise (abort, kill) is to terminate.
fn sys_kill(pid: u64, sig: u64) -> SysResult {
    let pid = pid as i64;
    if !(pid == 1 || pid == 0 || pid == -1) {
        return Err(ESRCH);
    }
    if sig == 0 {
        return Ok(0);
    }
    if sig > 64 {
        return Err(EINVAL);
    }
    const SIG_IGN: u64 = 1;
    let handler = PROC.get().sigactions[sig as usize][0];
    let default_ignored = matches!(sig, 17 | 23 | 28); // SIGCHLD, SIGURG, SIGWINCH
    if handler == SIG_IGN || (handler == 0 && default_ignored) {
        return Ok(0);
    }
    finish(0, sig as i32)
}

fn finish(code: i32, signal: i32) -> ! {
    record_memory_peak();
    hc::exit(code, signal)
}

fn sys_exit(code: u64) -> SysResult {
    finish(code as i32, 0)
}

fn put_field(buf: &mut [u8; 390], idx: usize, s: &[u8]) {
    buf[65 * idx..65 * idx + s.len()].copy_from_slice(s);
}

fn sys_uname(buf: u64) -> SysResult {
    let mut u = [0u8; 390];
    put_field(&mut u, 0, b"Linux");
    put_field(&mut u, 1, b"hvsandbox");
    put_field(&mut u, 2, b"6.1.0-hvsandbox");
    put_field(&mut u, 3, b"#1 SMP");
    put_field(&mut u, 4, b"x86_64");
    put_field(&mut u, 5, b"(none)");
    put_user(buf, u)?;
    Ok(0)
}

fn sys_fcntl(fd: u64, cmd: u64) -> SysResult {
    fd_check(fd)?;
    match cmd {
        1 | 2 => Ok(0),                              // F_GETFD, F_SETFD
        3 => Ok(if fd == 0 { 0 } else { 1 }),        // F_GETFL: O_RDONLY / O_WRONLY
        4 => Ok(0),                                  // F_SETFL
        _ => Err(EINVAL),
    }
}

fn sys_getcwd(buf: u64, size: u64) -> SysResult {
    if size < 2 {
        return Err(ERANGE);
    }
    put_user(buf, *b"/\0")?;
    Ok(2)
}

fn sys_readlink(path: u64, buf: u64, size: u64) -> SysResult {
    let p = user_cstr(path, 4096)?;
    if p != b"/proc/self/exe" {
        return Err(ENOENT);
    }
    // The program's path is argv[0] as the host gave it.
    let b = boot();
    let args = crate::rt::phys_slice(b.args_gpa, b.args_len);
    let argv0 = &args[..args.iter().position(|&c| c == 0).unwrap_or(0)];
    let n = (argv0.len() as u64).min(size);
    user_bytes_mut(buf, n)?.copy_from_slice(&argv0[..n as usize]);
    Ok(n)
}

fn timespec(ns: u64) -> [u64; 2] {
    [ns / 1_000_000_000, ns % 1_000_000_000]
}

fn clock_ns(clock: u64) -> Result<u64, i64> {
    match clock {
        0 | 5 | 11 => Ok(time::realtime_ns()),          // REALTIME, _COARSE, TAI
        1 | 4 | 6 | 7 | 8 | 9 => Ok(time::monotonic_ns()), // MONOTONIC*, BOOTTIME*
        2 | 3 => Ok(time::elapsed_ns()),                // PROCESS/THREAD_CPUTIME
        _ => Err(EINVAL),
    }
}

fn sys_clock_gettime(clock: u64, ts: u64) -> SysResult {
    let ns = clock_ns(clock)?;
    put_u64s(ts, &timespec(ns))?;
    Ok(0)
}

fn sys_clock_getres(ts: u64) -> SysResult {
    if ts != 0 {
        put_u64s(ts, &[0, 1])?;
    }
    Ok(0)
}

fn sys_gettimeofday(tv: u64) -> SysResult {
    if tv != 0 {
        let ns = time::realtime_ns();
        put_u64s(tv, &[ns / 1_000_000_000, (ns % 1_000_000_000) / 1000])?;
    }
    Ok(0)
}

fn sys_time(t: u64) -> SysResult {
    let secs = time::realtime_ns() / 1_000_000_000;
    if t != 0 {
        put_u64s(t, &[secs])?;
    }
    Ok(secs)
}

fn read_timespec(ts: u64) -> Result<u64, i64> {
    let b = user_bytes(ts, 16)?;
    let sec = u64::from_le_bytes(b[0..8].try_into().map_err(|_| EFAULT)?);
    let nsec = u64::from_le_bytes(b[8..16].try_into().map_err(|_| EFAULT)?);
    if nsec >= 1_000_000_000 || sec > i64::MAX as u64 {
        return Err(EINVAL);
    }
    Ok(sec.saturating_mul(1_000_000_000).saturating_add(nsec))
}

fn sys_nanosleep(req: u64, _rem: u64) -> SysResult {
    let ns = read_timespec(req)?;
    hc::sleep_ns(ns);
    Ok(0)
}

const TIMER_ABSTIME: u64 = 1;

fn sys_clock_nanosleep(clock: u64, flags: u64, req: u64) -> SysResult {
    let mut ns = read_timespec(req)?;
    if flags & TIMER_ABSTIME != 0 {
        ns = ns.saturating_sub(clock_ns(clock)?);
    } else {
        clock_ns(clock)?;
    }
    hc::sleep_ns(ns);
    Ok(0)
}

const RLIM_INFINITY: u64 = u64::MAX;

fn sys_prlimit(resource: u64, _new: u64, old: u64) -> SysResult {
    let (cur, max) = match resource {
        3 => (stack::stack_size(), stack::stack_size()), // RLIMIT_STACK
        7 => (1024, 1024),                               // RLIMIT_NOFILE
        6 => (1, 1),                                     // RLIMIT_NPROC
        9 | 2 | 5 => (boot().mem_size, boot().mem_size), // RLIMIT_AS, DATA, RSS
        0..=15 => (RLIM_INFINITY, RLIM_INFINITY),
        _ => return Err(EINVAL),
    };
    if old != 0 {
        put_u64s(old, &[cur, max])?;
    }
    Ok(0)
}

fn sys_sysinfo(buf: u64) -> SysResult {
    let mut s = [0u8; 112];
    let (_, free) = mm::usage();
    let uptime = time::elapsed_ns() / 1_000_000_000;
    s[0..8].copy_from_slice(&uptime.to_le_bytes());
    s[32..40].copy_from_slice(&boot().mem_size.to_le_bytes()); // totalram
    s[40..48].copy_from_slice(&free.to_le_bytes()); // freeram
    s[80..82].copy_from_slice(&1u16.to_le_bytes()); // procs
    s[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    put_user(buf, s)?;
    Ok(0)
}

fn sys_prctl(option: u64, arg: u64) -> SysResult {
    match option {
        15 => Ok(0), // PR_SET_NAME
        16 => {
            // PR_GET_NAME
            let mut name = [0u8; 16];
            name[..4].copy_from_slice(b"prog");
            put_user(arg, name)?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

const ARCH_SET_GS: u64 = 0x1001;
const ARCH_SET_FS: u64 = 0x1002;
const ARCH_GET_FS: u64 = 0x1003;
const ARCH_GET_GS: u64 = 0x1004;

fn sys_arch_prctl(code: u64, addr: u64) -> SysResult {
    if (code == ARCH_SET_FS || code == ARCH_SET_GS) && addr >= abi::user::ADDR_LIMIT {
        return Err(EPERM);
    }
    // SAFETY: wrfsbase/rdfsbase/wrgsbase/rdgsbase work at CPL3 on this
    // host and CR4.FSGSBASE is set by the host for hardware KVM; the
    // runtime itself uses neither FS nor GS.
    unsafe {
        match code {
            ARCH_SET_FS => core::arch::asm!("wrfsbase {}", in(reg) addr, options(nostack)),
            ARCH_SET_GS => core::arch::asm!("wrgsbase {}", in(reg) addr, options(nostack)),
            ARCH_GET_FS | ARCH_GET_GS => {
                let v: u64;
                if code == ARCH_GET_FS {
                    core::arch::asm!("rdfsbase {}", out(reg) v, options(nostack));
                } else {
                    core::arch::asm!("rdgsbase {}", out(reg) v, options(nostack));
                }
                put_u64s(addr, &[v])?;
            }
            _ => return Err(EINVAL),
        }
    }
    Ok(0)
}

fn sys_futex(uaddr: u64, op: u64, val: u64) -> SysResult {
    const FUTEX_WAIT: u64 = 0;
    const FUTEX_WAKE: u64 = 1;
    let cur = user_bytes(uaddr, 4)?;
    match op & 0x7f {
        FUTEX_WAKE => Ok(0),
        FUTEX_WAIT => {
            // One thread: nobody could ever wake us.
            let v = u32::from_le_bytes(cur.try_into().map_err(|_| EFAULT)?);
            if v != val as u32 {
                Err(EAGAIN)
            } else {
                Err(EINVAL)
            }
        }
        _ => Err(ENOSYS),
    }
}

fn sys_sched_getaffinity(size: u64, mask: u64) -> SysResult {
    if size < 8 {
        return Err(EINVAL);
    }
    put_u64s(mask, &[1])?;
    Ok(8)
}

fn sys_getrandom(buf: u64, len: u64) -> SysResult {
    let len = len.min(32 << 20);
    let out = user_bytes_mut(buf, len)?;
    crate::random::fill(out);
    Ok(len)
}
