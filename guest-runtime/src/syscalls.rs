//! The system-call table: Linux x86-64 numbers to handlers. Every pointer
//! the program passes is checked against its mappings before use; unknown
//! calls return -ENOSYS and are counted per number for the host.

use hvsandbox_abi as abi;

use crate::errno::*;
use crate::mm;
use crate::rt::{boot, Frame};
use crate::uaccess::*;
use crate::{sock_msg, socket, sys_fs, task, time};

const AT_FDCWD: u64 = -100i64 as u64;

use sys_fs::SysResult;

use crate::sys_timer;

// --- the table ---------------------------------------------------------------

/// Called by `syscall_entry` with the saved registers.
pub extern "C" fn dispatch(f: &mut Frame) {
    let nr = f.rax;
    let (a0, a1, a2, a3) = (f.rdi, f.rsi, f.rdx, f.r10);
    crate::stats::count_syscall();
    crate::rewrite::on_syscall(f);
    let a4 = f.r8;
    let a5 = f.r9;
    let r: SysResult = match nr {
        0 => sys_fs::sys_read(a0, a1, a2),
        1 => sys_fs::sys_write(a0, a1, a2),
        2 => sys_fs::sys_openat(AT_FDCWD, a0, a1, a2),
        257 => sys_fs::sys_openat(a0, a1, a2, a3),
        85 => sys_fs::sys_openat(AT_FDCWD, a0, 0o1101, a1), // creat
        3 => sys_fs::sys_close(a0),
        4 => sys_fs::sys_newfstatat(AT_FDCWD, a0, a1, 0),
        5 => sys_fs::sys_fstat(a0, a1),
        6 => sys_fs::sys_newfstatat(AT_FDCWD, a0, a1, 0x100),
        262 => sys_fs::sys_newfstatat(a0, a1, a2, a3),
        332 => sys_fs::sys_statx(a0, a1, a2, a3, a4),
        8 => sys_fs::sys_lseek(a0, a1, a2),
        17 => sys_fs::sys_pread(a0, a1, a2, a3),
        18 => sys_fs::sys_pwrite(a0, a1, a2, a3),
        19 => sys_fs::sys_readv(a0, a1, a2, None),
        20 => sys_fs::sys_writev(a0, a1, a2, None),
        295 => sys_fs::sys_readv(a0, a1, a2, Some(a3)),
        296 => sys_fs::sys_writev(a0, a1, a2, Some(a3)),
        7 => sys_fs::sys_poll(a0, a1, poll_timeout_ms(a2)),
        271 => match ppoll_timeout(a2) {
            Ok(t) => sys_fs::sys_poll(a0, a1, t),
            Err(e) => Err(e),
        },
        23 => match timeval_timeout(a4) {
            Ok(t) => sys_fs::sys_select(a0, a1, a2, a3, t),
            Err(e) => Err(e),
        },
        270 => match ppoll_timeout(a4) {
            Ok(t) => sys_fs::sys_select(a0, a1, a2, a3, t),
            Err(e) => Err(e),
        },
        16 => sys_fs::sys_ioctl(a0, a1, a2),
        21 => sys_fs::sys_faccessat(AT_FDCWD, a0, a1, 0),
        269 => sys_fs::sys_faccessat(a0, a1, a2, 0),
        439 => sys_fs::sys_faccessat(a0, a1, a2, a3),
        22 => sys_fs::sys_pipe2(a0, 0),
        293 => sys_fs::sys_pipe2(a0, a1),
        32 => sys_fs::sys_dup(a0),
        33 => sys_fs::sys_dup3(a0, a1, 0, true),
        292 => sys_fs::sys_dup3(a0, a1, a2, false),
        40 => sys_fs::sys_sendfile(a0, a1, a2, a3),
        72 => sys_fs::sys_fcntl(a0, a1, a2),
        73 => sys_fs::sys_flock(a0, a1),
        74 | 75 => sys_fs::sys_fsync(a0), // fsync, fdatasync
        162 => Ok(0),                     // sync
        306 => sys_fs::sys_fsync(a0),     // syncfs
        221 => sys_fs::sys_fsync(a0),     // fadvise64
        76 => sys_fs::sys_truncate(a0, a1),
        77 => sys_fs::sys_ftruncate(a0, a1),
        285 => sys_fs::sys_fallocate(a0, a1, a2, a3),
        217 => sys_fs::sys_getdents64(a0, a1, a2),
        79 => sys_fs::sys_getcwd(a0, a1),
        80 => sys_fs::sys_chdir(a0),
        81 => sys_fs::sys_fchdir(a0),
        82 => sys_fs::sys_renameat2(AT_FDCWD, a0, AT_FDCWD, a1, 0),
        264 => sys_fs::sys_renameat2(a0, a1, a2, a3, 0),
        316 => sys_fs::sys_renameat2(a0, a1, a2, a3, a4),
        83 => sys_fs::sys_mkdirat(AT_FDCWD, a0, a1),
        258 => sys_fs::sys_mkdirat(a0, a1, a2),
        84 => sys_fs::sys_unlinkat(AT_FDCWD, a0, 0x200),
        87 => sys_fs::sys_unlinkat(AT_FDCWD, a0, 0),
        263 => sys_fs::sys_unlinkat(a0, a1, a2),
        86 => sys_fs::sys_linkat(AT_FDCWD, a0, AT_FDCWD, a1, 0),
        265 => sys_fs::sys_linkat(a0, a1, a2, a3, a4),
        88 => sys_fs::sys_symlinkat(a0, AT_FDCWD, a1),
        266 => sys_fs::sys_symlinkat(a0, a1, a2),
        89 => sys_fs::sys_readlinkat(AT_FDCWD, a0, a1, a2),
        267 => sys_fs::sys_readlinkat(a0, a1, a2, a3),
        90 => sys_fs::sys_fchmodat(AT_FDCWD, a0, a1, None),
        91 => sys_fs::sys_fchmodat(0, 0, a1, Some(a0)),
        268 => sys_fs::sys_fchmodat(a0, a1, a2, None),
        92 | 94 => sys_fs::sys_chown(AT_FDCWD, a0, None, a1, a2, if nr == 94 { 0x100 } else { 0 }), // chown, lchown
        93 => sys_fs::sys_chown(0, 0, Some(a0), a1, a2, 0),                                         // fchown
        260 => sys_fs::sys_chown(a0, a1, None, a2, a3, a4),                                         // fchownat
        95 => sys_fs::sys_umask(a0),
        280 => sys_fs::sys_utimensat(a0, a1, a2, a3),
        137 => sys_fs::sys_statfs_path(a0, a1),
        138 => sys_fs::sys_fstatfs(a0, a1),
        319 => sys_fs::sys_memfd_create(a0, a1),
        213 | 291 => sys_fs::sys_epoll_create1(if nr == 291 { a0 } else { 0 }),
        233 => sys_fs::sys_epoll_ctl(a0, a1, a2, a3),
        232 | 281 => sys_fs::sys_epoll_wait(a0, a1, a2, poll_timeout_ms(a3)),
        284 => sys_fs::sys_eventfd2(a0, 0),
        290 => sys_fs::sys_eventfd2(a0, a1),
        253 => crate::sys_notify::sys_inotify_init1(0),
        294 => crate::sys_notify::sys_inotify_init1(a0),
        254 => crate::sys_notify::sys_inotify_add_watch(a0, a1, a2),
        255 => crate::sys_notify::sys_inotify_rm_watch(a0, a1),
        435 => Err(ENOSYS), // clone3: libc falls back to clone
        41 => socket::sys_socket(a0, a1, a2),
        53 => socket::sys_socketpair(a0, a1, a2, a3),
        44 => sock_msg::sys_sendto(a0, a1, a2, a3, a4, a5),
        45 => sock_msg::sys_recvfrom(a0, a1, a2, a3, a4, a5),
        46 => sock_msg::sys_sendmsg(a0, a1, a2),
        47 => sock_msg::sys_recvmsg(a0, a1, a2),
        299 => sock_msg::sys_recvmmsg(a0, a1, a2, a3),
        307 => sock_msg::sys_sendmmsg(a0, a1, a2, a3),
        49 => socket::sys_bind(a0, a1, a2),
        50 => socket::sys_listen(a0, a1),
        42 => socket::sys_connect(a0, a1, a2),
        43 => socket::sys_accept4(a0, a1, a2, 0),
        288 => socket::sys_accept4(a0, a1, a2, a3),
        48 => socket::sys_shutdown(a0, a1),
        51 => socket::sys_getsockname(a0, a1, a2),
        52 => socket::sys_getpeername(a0, a1, a2),
        54 => socket::sys_setsockopt(a0, a1, a2, a3, a4),
        55 => socket::sys_getsockopt(a0, a1, a2, a3, a4),
        133 => sys_fs::sys_mknodat(-100i64 as u64, a0, a1),
        259 => sys_fs::sys_mknodat(a0, a1, a2),
        9 => mmap_named(a0, a1, a2, a3, a4, a5),
        10 => mm::mprotect(a0, a1, a2 as u32).map(|_| 0),
        11 => mm::munmap(a0, a1).map(|_| 0),
        26 => mm::msync(a0, a1, a2).map(|_| 0),
        25 => mm::mremap(a0, a1, a2, a3, a4),
        12 => Ok(mm::brk(a0)),
        13 => crate::signal::sys_sigaction(a0, a1, a2, a3),
        14 => crate::signal::sys_sigprocmask(a0, a1, a2, a3),
        15 => crate::signal::sys_rt_sigreturn(f),
        34 => crate::signal::sys_pause(),
        127 => crate::signal::sys_sigpending(a0),
        130 => crate::signal::sys_sigsuspend(a0, a1),
        24 => {
            task::request_yield();
            Ok(0)
        }
        28 => sys_madvise(a0, a1, a2),
        35 => sys_nanosleep(a0, a1),
        39 => crate::process::sys_getpid(),
        186 => crate::process::sys_gettid(),
        110 => crate::process::sys_getppid(),
        109 => crate::process::sys_setpgid(a0, a1),
        112 => crate::process::sys_setsid(),
        111 => crate::process::sys_getpgid(0),
        121 => crate::process::sys_getpgid(a0),
        124 => crate::process::sys_getsid(a0),
        102 | 104 | 107 | 108 => Ok(crate::rt::UID), // getuid, getgid, geteuid, getegid
        105 | 106 => same_id(a0),                    // setuid, setgid: only to what we are
        113 | 114 => same_id(a0).and(same_id(a1)),   // setreuid, setregid
        117 | 119 => same_id(a0).and(same_id(a1)).and(same_id(a2)), // setresuid, setresgid
        118 | 120 => put_u32s(&[a0, a1, a2], crate::rt::UID as u32).map(|_| 0), // getresuid, getresgid
        115 => Ok(0),                                // getgroups: none
        60 => crate::process::exit_thread(f, a0),
        231 => crate::process::exit_group(f, a0 as u32 & 0xff, 0),
        56 => crate::process::sys_clone(f, a0, a1, a2, a3, a4),
        57 => crate::process::sys_clone(f, SIGCHLD, 0, 0, 0, 0), // fork
        58 => crate::process::sys_clone(f, CLONE_VM | CLONE_VFORK | SIGCHLD, 0, 0, 0, 0), // vfork
        59 => crate::exec::sys_execve(f, AT_FDCWD, a0, a1, a2, 0),
        322 => crate::exec::sys_execve(f, a0, a1, a2, a3, a4),
        61 => crate::process::sys_wait4(a0, a1, a2, a3),
        247 => crate::process::sys_waitid(a0, a1, a2, a3),
        62 => crate::signal::sys_kill(a0, a1),
        200 => crate::signal::sys_tgkill(u64::MAX, a0, a1), // tkill
        234 => crate::signal::sys_tgkill(a0, a1, a2),
        129 => crate::signal::sys_rt_sigqueueinfo(a0, None, a1, a2),
        297 => crate::signal::sys_rt_sigqueueinfo(a0, Some(a1), a2, a3),
        63 => sys_uname(a0),
        96 => sys_gettimeofday(a0, a1),
        97 => sys_prlimit(0, a0, 0, a1),
        302 => sys_prlimit(a0, a1, a2, a3),
        99 => sys_sysinfo(a0),
        98 => sys_timer::sys_getrusage(a0, a1),
        37 => sys_alarm(a0),
        38 => sys_timer::sys_setitimer(a0, a1, a2),
        36 => sys_timer::sys_getitimer(a0, a1),
        222 => sys_timer::sys_timer_create(a0, a1, a2),
        223 => sys_timer::sys_timer_settime(a0, a1, a2, a3),
        224 => sys_timer::sys_timer_gettime(a0, a1),
        225 => sys_timer::sys_timer_getoverrun(a0),
        226 => sys_timer::sys_timer_delete(a0),
        283 => sys_timer::sys_timerfd_create(a0, a1),
        282 => crate::signalfd::sys_signalfd4(a0, a1, a2, 0),
        289 => crate::signalfd::sys_signalfd4(a0, a1, a2, a3),
        128 => crate::signalfd::sys_rt_sigtimedwait(a0, a1, a2, a3),
        286 => sys_timer::sys_timerfd_settime(a0, a1, a2, a3),
        287 => sys_timer::sys_timerfd_gettime(a0, a1),
        140 => sys_getpriority(a0, a1),
        141 => sys_setpriority(a0, a1, a2),
        100 => sys_timer::sys_times(a0),
        131 => crate::signal::sys_sigaltstack(a0, a1),
        157 => crate::prctl::sys_prctl(a0, a1, a2, a3, a4),
        158 => sys_arch_prctl(a0, a1),
        201 => sys_time(a0),
        202 => crate::futex::sys_futex(a0, a1, a2, a3, a4, a5),
        204 => live(a0).and_then(|_| sys_sched_getaffinity(a1, a2)),
        203 => live(a0).and_then(|_| sys_sched_setaffinity(a1, a2)),
        // The scheduler: SCHED_OTHER only (the real-time policies need
        // CAP_SYS_NICE), one vCPU, 10 ms time slices.
        142 => live(a0).and_then(|_| if get_u32(a1)? == 0 { Ok(0) } else { Err(EINVAL) }), // sched_setparam
        143 => live(a0).and_then(|_| put_user(a1, 0u32.to_le_bytes()).map(|_| 0)),         // sched_getparam
        144 => live(a0).and_then(|_| sys_sched_setscheduler(a1, a2)),
        145 => live(a0).map(|_| 0), // sched_getscheduler: SCHED_OTHER
        146 => sched_priority_bound(a0, 99),
        147 => sched_priority_bound(a0, 1),
        148 => live(a0).and_then(|_| put_u64s(a1, &[0, 10_000_000]).map(|_| 0)), // sched_rr_get_interval
        116 => Err(EPERM),                                                       // setgroups: no CAP_SETGID
        218 => crate::process::set_tid_address(a0),
        228 => sys_clock_gettime(a0, a1),
        227 => Err(EPERM),       // clock_settime: the guest's clocks are the host's
        170 | 171 => Err(EPERM), // sethostname, setdomainname: no CAP_SYS_ADMIN
        434 => crate::pidfd::sys_pidfd_open(a0, a1),
        424 => crate::pidfd::sys_pidfd_send_signal(a0, a1, a2, a3),
        188..=199 => sys_fs::sys_xattr(nr, a0, a1),
        309 => sys_getcpu(a0, a1),
        229 => sys_clock_getres(a1),
        230 => sys_clock_nanosleep(a0, a1, a2),
        273 => crate::process::set_robust_list(a0, a1),
        274 => crate::process::get_robust_list(a0, a1, a2),
        318 => sys_getrandom(a0, a1),
        334 => Err(ENOSYS), // rseq: glibc copes without it
        _ => {
            crate::stats::count_unknown(nr);
            Err(ENOSYS)
        }
    };
    match r {
        Ok(v) => f.rax = v,
        Err(task::BLOCKED) => {}
        Err(e) => f.rax = (-e) as u64,
    }
    if r != Err(task::BLOCKED) {
        task::current_process().io.count(nr, &r);
    }
    crate::signal::syscall_exit(f, nr);
}

const SIGCHLD: u64 = 17;
const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;

/// Changing to the id we already have is allowed (-1 means "unchanged").
fn same_id(id: u64) -> SysResult {
    if id == crate::rt::UID || id as u32 == u32::MAX {
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

fn poll_timeout_ms(ms: u64) -> Option<u64> {
    let ms = ms as i32;
    (ms >= 0).then(|| ms as u64 * 1_000_000)
}

fn timeval_timeout(tv: u64) -> Result<Option<u64>, i64> {
    if tv == 0 {
        return Ok(None);
    }
    let b = user_bytes(tv, 16)?;
    let sec = u64::from_le_bytes(b[0..8].try_into().map_err(|_| EFAULT)?);
    let usec = u64::from_le_bytes(b[8..16].try_into().map_err(|_| EFAULT)?);
    if (sec as i64) < 0 || usec >= 1_000_000 {
        return Err(EINVAL);
    }
    Ok(Some(sec.saturating_mul(1_000_000_000).saturating_add(usec * 1000)))
}

fn ppoll_timeout(ts: u64) -> Result<Option<u64>, i64> {
    if ts == 0 {
        Ok(None)
    } else {
        read_timespec(ts).map(Some)
    }
}

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;

fn sys_mmap(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, off: u64) -> SysResult {
    // MAP_SHARED_VALIDATE (both bits) is MAP_SHARED that checks its
    // flags: every flag known here is fine.
    let kind = match flags & (MAP_SHARED | MAP_PRIVATE) {
        0 => return Err(EINVAL),
        MAP_PRIVATE => MAP_PRIVATE,
        _ => MAP_SHARED,
    };
    let fixed = flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0;
    let noreplace = flags & MAP_FIXED_NOREPLACE != 0;
    if flags & MAP_ANONYMOUS == 0 {
        return sys_fs::mmap_file(addr, len, prot as u32 & 7, kind == MAP_SHARED, fixed, noreplace, fd, off);
    }
    if kind == MAP_SHARED {
        return crate::shm::map_anon(addr, len, prot as u32 & 7, fixed, noreplace);
    }
    mm::mmap_anon(addr, len, prot as u32 & 7, fixed, noreplace)
}

/// mmap, then what /proc/<pid>/maps names the new mapping by.
fn mmap_named(addr: u64, len: u64, prot: u64, flags: u64, fd: u64, off: u64) -> SysResult {
    let r = sys_mmap(addr, len, prot, flags, fd, off);
    if let Ok(at) = r {
        crate::procfs::mapped(at, len, (flags & MAP_ANONYMOUS == 0).then_some((fd, off)));
        if flags & (MAP_ANONYMOUS | MAP_SHARED) == 0 {
            // Where the rewriter finds the functions of code mapped here.
            if let Some(node) = crate::fds::get(fd).ok().as_ref().and_then(|f| f.node()) {
                let end = at.saturating_add(mm::page_up(len));
                crate::rewrite::file_mapped(at, end, off, node);
                if prot & u64::from(mm::PROT_EXEC) != 0 {
                    // A library's code, not run yet in this process: the
                    // sites earlier processes called are rewritten now,
                    // with one flush.
                    mm::with_patch_flush_deferred(|| crate::rewrite::rewrite_seen_ahead(node, &[(at, end, off)]));
                }
            }
        }
    }
    r
}

/// madvise(2): the advice Linux knows (EINVAL for any other, and for
/// MADV_HWPOISON and MADV_SOFT_OFFLINE, as a kernel without memory-failure
/// support says), for a page-aligned start; its effects are
/// `mm::madvise`'s.
fn sys_madvise(addr: u64, len: u64, advice: u64) -> SysResult {
    if !addr.is_multiple_of(mm::PAGE) || !matches!(advice, 0..=4 | 8..=25) {
        return Err(EINVAL);
    }
    let end = addr.checked_add(len.checked_next_multiple_of(mm::PAGE).ok_or(EINVAL)?).ok_or(EINVAL)?;
    if end == addr {
        return Ok(0);
    }
    mm::madvise(addr, end, advice)?;
    Ok(0)
}

fn put_field(buf: &mut [u8; 390], idx: usize, s: &[u8]) {
    buf[65 * idx..65 * idx + s.len()].copy_from_slice(s);
}

fn sys_uname(buf: u64) -> SysResult {
    let mut u = [0u8; 390];
    put_field(&mut u, 0, b"Linux");
    put_field(&mut u, 1, crate::procfs::HOSTNAME);
    put_field(&mut u, 2, crate::procfs::OS_RELEASE);
    put_field(&mut u, 3, b"#1 SMP");
    put_field(&mut u, 4, b"x86_64");
    put_field(&mut u, 5, b"(none)");
    put_user(buf, u)?;
    Ok(0)
}

/// alarm(2): SIGALRM in `secs` seconds (0: cancel); the seconds that
/// were left of the previous alarm.
fn sys_alarm(secs: u64) -> SysResult {
    let (left, _) = task::set_alarm(secs.min(u32::MAX as u64) * 1_000_000_000, 0);
    Ok(left.div_ceil(1_000_000_000))
}

fn timespec(ns: u64) -> [u64; 2] {
    [ns / 1_000_000_000, ns % 1_000_000_000]
}

fn clock_ns(clock: u64) -> Result<u64, i64> {
    match clock {
        0 | 5 | 11 => Ok(time::realtime_ns()),             // REALTIME, _COARSE, TAI
        1 | 4 | 6 | 7 | 8 | 9 => Ok(time::monotonic_ns()), // MONOTONIC*, BOOTTIME*
        _ if sys_timer::is_cpu_clock(clock) => sys_timer::cpu_clock_ns(clock), // PROCESS/THREAD_CPUTIME
        _ => Err(EINVAL),
    }
}

/// getcpu(2): one CPU, one NUMA node.
fn sys_getcpu(cpu: u64, node: u64) -> SysResult {
    for va in [cpu, node] {
        if va != 0 {
            user_bytes_mut(va, 4)?.copy_from_slice(&0u32.to_le_bytes());
        }
    }
    Ok(0)
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

/// gettimeofday(2); the time zone is UTC, no DST (as the vDSO says).
fn sys_gettimeofday(tv: u64, tz: u64) -> SysResult {
    if tv != 0 {
        let ns = time::realtime_ns();
        put_u64s(tv, &[ns / 1_000_000_000, (ns % 1_000_000_000) / 1000])?;
    }
    if tz != 0 {
        user_bytes_mut(tz, 8)?.fill(0);
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

fn sys_nanosleep(req: u64, _rem: u64) -> SysResult {
    let ns = read_timespec(req)?;
    task::sleep(ns)
}

const TIMER_ABSTIME: u64 = 1;

fn sys_clock_nanosleep(clock: u64, flags: u64, req: u64) -> SysResult {
    let mut ns = read_timespec(req)?;
    if flags & TIMER_ABSTIME != 0 {
        ns = ns.saturating_sub(clock_ns(clock)?);
    } else {
        clock_ns(clock)?;
    }
    task::sleep(ns)
}

/// The processes `which` (PRIO_PROCESS, PRIO_PGRP, PRIO_USER) and `who`
/// (0: the caller's) name; ESRCH if none, EINVAL for another `which`.
fn priority_targets(which: u64, who: u64) -> Result<alloc::vec::Vec<alloc::rc::Rc<task::Process>>, i64> {
    let me = task::current_process();
    let who = who as u32;
    let all = task::live_processes().into_iter().filter(|p| p.status.get().is_none());
    let found: alloc::vec::Vec<_> = match which {
        0 => all.filter(|p| p.pid == if who == 0 { me.pid } else { who }).collect(),
        1 => all.filter(|p| p.pgid.get() == if who == 0 { me.pgid.get() } else { who }).collect(),
        2 if who == 0 || u64::from(who) == crate::rt::UID => all.collect(),
        2 => alloc::vec::Vec::new(),
        _ => return Err(EINVAL),
    };
    if found.is_empty() {
        return Err(ESRCH);
    }
    Ok(found)
}

/// getpriority: 20 - nice (the raw call's form), the highest priority of
/// the processes named.
fn sys_getpriority(which: u64, who: u64) -> SysResult {
    let nice = priority_targets(which, who)?.iter().map(|p| p.nice.get()).min().unwrap_or(0);
    Ok((20 - i64::from(nice)) as u64)
}

/// setpriority: a nice value in -20..=19 (clamped, as Linux does); lower
/// than a process has is EACCES (the sandbox has no CAP_SYS_NICE).
fn sys_setpriority(which: u64, who: u64, prio: u64) -> SysResult {
    let nice = (prio as i32).clamp(-20, 19) as i8;
    let targets = priority_targets(which, who)?;
    if targets.iter().any(|p| nice < p.nice.get()) {
        return Err(EACCES);
    }
    for p in targets {
        p.nice.set(nice);
    }
    Ok(0)
}

/// prlimit64 (getrlimit/setrlimit with pid 0): the limits the sandbox
/// enforces; setting one is accepted and changes nothing. ESRCH for a
/// process that does not exist.
fn sys_prlimit(pid: u64, resource: u64, _new: u64, old: u64) -> SysResult {
    live(pid)?;
    let (cur, max) = crate::procfs::rlimit(resource).ok_or(EINVAL)?;
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
    let procs = task::live_processes().len() as u16;
    s[80..82].copy_from_slice(&procs.to_le_bytes()); // procs
    s[104..108].copy_from_slice(&1u32.to_le_bytes()); // mem_unit
    put_user(buf, s)?;
    Ok(0)
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

/// Ok for the caller (0) or a live process, ESRCH otherwise.
fn live(pid: u64) -> SysResult {
    if pid == 0 || task::find_process(pid as u32).is_some_and(|p| p.status.get().is_none()) {
        Ok(0)
    } else {
        Err(ESRCH)
    }
}

/// sched_get_priority_max/min: `rt` for SCHED_FIFO and SCHED_RR, 0 for
/// SCHED_OTHER, SCHED_BATCH and SCHED_IDLE.
fn sched_priority_bound(policy: u64, rt: u64) -> SysResult {
    match policy {
        1 | 2 => Ok(rt),
        0 | 3 | 5 => Ok(0),
        _ => Err(EINVAL),
    }
}

/// sched_setscheduler: the non-real-time policies with priority 0 (no
/// effect here); SCHED_FIFO and SCHED_RR need CAP_SYS_NICE (EPERM).
fn sys_sched_setscheduler(policy: u64, param: u64) -> SysResult {
    const SCHED_RESET_ON_FORK: u64 = 0x4000_0000;
    let prio = get_u32(param)?;
    match policy & !SCHED_RESET_ON_FORK {
        0 | 3 | 5 if prio == 0 => Ok(0),
        1 | 2 if (1..=99).contains(&prio) => Err(EPERM),
        _ => Err(EINVAL),
    }
}

/// sched_setaffinity: any mask with CPU 0, the only one (EINVAL without).
fn sys_sched_setaffinity(size: u64, mask: u64) -> SysResult {
    if size == 0 {
        return Err(EINVAL);
    }
    if user_bytes(mask, 1)?[0] & 1 == 0 {
        return Err(EINVAL);
    }
    Ok(0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_timeouts_in_ms_are_ints() {
        assert_eq!(poll_timeout_ms(0), Some(0));
        assert_eq!(poll_timeout_ms(1500), Some(1_500_000_000));
        // Any negative int waits forever, whatever the upper bits say.
        assert_eq!(poll_timeout_ms(-1i64 as u64), None);
        assert_eq!(poll_timeout_ms(0xffff_ffff), None);
        assert_eq!(poll_timeout_ms(0x1_0000_0005), Some(5_000_000));
    }

    #[test]
    fn only_the_ids_we_have_may_be_set() {
        assert_eq!(same_id(crate::rt::UID), Ok(0));
        assert_eq!(same_id(u32::MAX as u64), Ok(0), "-1: unchanged");
        assert_eq!(same_id(0), Err(EPERM));
    }
}
