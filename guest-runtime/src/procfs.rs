//! What `/proc` shows (the filesystem asks through the hooks `start.rs`
//! registers): the sandbox's processes (`/proc/<pid>/...`), its one CPU,
//! its memory and its clock, in Linux's formats.

use alloc::rc::Rc;
use alloc::vec::Vec;

use hvsandbox_abi::user;

use crate::errno::{EINVAL, ESRCH};
use crate::mapnames::Named;
use crate::task::{clock_now, current, current_process, find_process, live_processes, Process, State, Task, SCHED};
use crate::timer::Clock;
use crate::vfs::{push_num, ProcSelf};

const PAGE: u64 = hvsandbox_abi::PAGE_SIZE;
/// The kernel release and host name the sandbox reports (uname, /proc).
pub const OS_RELEASE: &[u8] = b"6.1.0-hvsandbox";
pub const HOSTNAME: &[u8] = b"hvsandbox";
/// Linux's USER_HZ: the unit of the tick counts in `stat` files.
const HZ: u64 = 100;

/// The answers the filesystem registers for `/proc`.
pub fn hooks() -> ProcSelf {
    ProcSelf {
        current_pid: || current_process().pid,
        pids,
        exe: |pid| find_process(pid).map(|p| p.exe.borrow().clone()),
        fd_path,
        open_fds,
        file,
        cwd: |pid| find_process(pid).and_then(|p| crate::vfs::path_of(&p.cwd.borrow()).ok()),
        tids,
        thread_file,
        fdinfo,
        // (`procnet.rs` and `sysfs.rs`, above this layer, are registered
        // by start.rs.)
        net: |_| None,
        sysfs: |_| None,
        comm,
        set_comm,
    }
}

/// `/proc/.../comm`: thread `tid`'s name.
fn comm(tid: u32) -> Option<Vec<u8>> {
    let mut name = crate::task::find_task(tid)?.ctl.name();
    name.push(b'\n');
    Some(name)
}

/// Writing `/proc/.../comm`: the current process names one of its own
/// threads with the first 15 bytes (EINVAL for another process's, as on
/// Linux).
fn set_comm(tid: u32, name: &[u8]) -> Result<(), i64> {
    let t = crate::task::find_task(tid).ok_or(ESRCH)?;
    if !Rc::ptr_eq(&t.process.borrow(), &current_process()) {
        return Err(EINVAL);
    }
    t.ctl.set_name(name);
    Ok(())
}

/// `/proc/<pid>/fdinfo/N`: the position, the status flags (with
/// O_CLOEXEC, and O_LARGEFILE as a 64-bit Linux shows a file's), the
/// mount (0: the sandbox does not number them) and the inode.
fn fdinfo(pid: u32, fd: u32) -> Option<Vec<u8>> {
    const O_LARGEFILE: u32 = 0o100_000;
    let p = find_process(pid)?;
    let t = p.fds.borrow();
    let e = t.0.get(fd as usize)?.as_ref()?;
    let f = &e.file;
    let mut flags = f.flags.get();
    if e.cloexec {
        flags |= crate::file::O_CLOEXEC;
    }
    let ino = match &f.kind {
        crate::file::FileKind::Node(n) => {
            flags |= O_LARGEFILE;
            n.meta.borrow().ino
        }
        _ => 0,
    };
    let mut o = Out(Vec::new());
    o.s(b"pos:\t").n(f.offset.get()).s(b"\nflags:\t0");
    let mut oct = Vec::new();
    let mut v = flags;
    loop {
        oct.push(b'0' + (v & 7) as u8);
        v >>= 3;
        if v == 0 {
            break;
        }
    }
    oct.reverse();
    o.s(&oct).s(b"\nmnt_id:\t0\nino:\t").n(ino).s(b"\n");
    Some(o.0)
}

fn threads_of(p: &Process) -> Vec<Rc<Task>> {
    let mut v: Vec<Rc<Task>> = SCHED
        .get()
        .tasks
        .iter()
        .filter(|t| t.state.get() != State::Dead && core::ptr::eq(&**t.process.borrow(), p))
        .cloned()
        .collect();
    v.sort_unstable_by_key(|t| t.tid());
    v
}

fn tids(pid: u32) -> Vec<u32> {
    find_process(pid).map_or(Vec::new(), |p| threads_of(&p).iter().map(|t| t.tid()).collect())
}

/// `/proc/<pid>/task/<tid>/{comm,stat,status}`: the process's, with the
/// thread's id, state and CPU time.
fn thread_file(pid: u32, tid: u32, name: &[u8]) -> Option<Vec<u8>> {
    let p = find_process(pid)?;
    let t = threads_of(&p).into_iter().find(|t| t.tid() == tid)?;
    let mut o = Out(Vec::new());
    let cpu = clock_now(&p, Clock::ThreadCpu(tid)).unwrap_or(0);
    match name {
        b"stat" => pid_stat(&mut o, &p, tid, thread_state(&t), cpu),
        b"status" => status(&mut o, &p, tid, thread_state(&t)),
        _ => return None,
    }
    Some(o.0)
}

fn thread_state(t: &Task) -> &'static [u8] {
    if t.process.borrow().stopped.get() {
        b"T"
    } else if t.tid() == current().tid() {
        b"R"
    } else {
        b"S"
    }
}

fn pids() -> Vec<u32> {
    let mut v: Vec<u32> = live_processes().iter().map(|p| p.pid).collect();
    v.sort_unstable();
    v
}

fn fd_path(pid: u32, fd: u32) -> Option<Vec<u8>> {
    let p = find_process(pid)?;
    let t = p.fds.borrow();
    t.0.get(fd as usize)?.as_ref().map(|e| e.file.path.clone())
}

fn open_fds(pid: u32) -> Vec<u32> {
    let Some(p) = find_process(pid) else { return Vec::new() };
    let t = p.fds.borrow();
    t.0.iter().enumerate().filter(|(_, e)| e.is_some()).map(|(i, _)| i as u32).collect()
}

fn file(pid: Option<u32>, name: &[u8]) -> Option<Vec<u8>> {
    let mut o = Out(Vec::new());
    match pid {
        None => match name {
            b"cpuinfo" => cpuinfo(&mut o),
            b"meminfo" => meminfo(&mut o),
            b"stat" => stat(&mut o),
            b"uptime" => {
                let ns = crate::time::elapsed_ns();
                o.centis(ns);
                o.s(b" ");
                o.centis(0);
                o.s(b"\n");
            }
            b"loadavg" => {
                let ps = pids();
                o.s(b"0.00 0.00 0.00 1/").n(ps.len() as u64).s(b" ").n(*ps.last().unwrap_or(&1) as u64).s(b"\n");
            }
            b"version" => {
                o.s(b"Linux version ").s(OS_RELEASE).s(b" (").s(HOSTNAME).s(b") #1 SMP\n");
            }
            b"filesystems" => {
                o.s(b"nodev\tproc\nnodev\ttmpfs\nnodev\tdevpts\nnodev\thostfs\n");
            }
            b"mounts" => mounts(&mut o),
            b"sys/fs/file-max" => {
                o.n(i64::MAX as u64).s(b"\n");
            }
            b"sys/kernel/hostname" => {
                o.s(HOSTNAME).s(b"\n");
            }
            b"sys/kernel/osrelease" => {
                o.s(OS_RELEASE).s(b"\n");
            }
            b"sys/kernel/ostype" => {
                o.s(b"Linux\n");
            }
            b"sys/kernel/pid_max" => {
                o.n(4_194_304).s(b"\n");
            }
            // Made once, from fresh randomness, then kept.
            b"sys/kernel/random/boot_id" => uuid(&mut o, *BOOT_ID.get().get_or_insert_with(random16)),
            b"sys/kernel/random/uuid" => uuid(&mut o, random16()),
            b"sys/vm/overcommit_memory" => {
                o.s(b"0\n");
            }
            _ => return None,
        },
        Some(pid) => {
            let p = find_process(pid)?;
            match name {
                b"cmdline" => {
                    o.s(&p.cmdline.borrow());
                }
                b"environ" => {
                    o.s(&p.environ.borrow());
                }
                b"maps" => maps(&mut o, &p),
                b"stat" => {
                    let cpu = clock_now(&p, Clock::ProcessCpu).unwrap_or(0);
                    pid_stat(&mut o, &p, p.pid, state(&p), cpu)
                }
                b"statm" => {
                    let (size, rss) = memory(&p);
                    o.n(size / PAGE).s(b" ").n(rss / PAGE).s(b" 0 0 0 ").n(rss / PAGE).s(b" 0\n");
                }
                b"status" => status(&mut o, &p, p.pid, state(&p)),
                b"cgroup" => {
                    o.s(b"0::/\n");
                }
                b"limits" => limits(&mut o),
                b"auxv" => {
                    o.s(&p.auxv.borrow());
                }
                b"io" => {
                    let io = &p.io;
                    o.s(b"rchar: ").n(io.rchar.get()).s(b"\nwchar: ").n(io.wchar.get());
                    o.s(b"\nsyscr: ").n(io.syscr.get()).s(b"\nsyscw: ").n(io.syscw.get());
                    o.s(b"\nread_bytes: 0\nwrite_bytes: 0\ncancelled_write_bytes: 0\n");
                }
                b"mounts" => mounts(&mut o),
                b"mountinfo" => mountinfo(&mut o),
                b"oom_score_adj" => {
                    o.s(b"0\n");
                }
                _ => return None,
            }
        }
    }
    Some(o.0)
}

/// The limits a process has, as getrlimit/prlimit report them and
/// `/proc/<pid>/limits` shows them: (soft, hard), None for a resource
/// that does not exist.
pub fn rlimit(resource: u64) -> Option<(u64, u64)> {
    let boot = crate::rt::boot();
    Some(match resource {
        3 => (crate::stack::stack_size(), crate::stack::stack_size()), // RLIMIT_STACK
        7 => (crate::fds::max_fds() as u64, crate::fds::max_fds() as u64), // RLIMIT_NOFILE
        6 => (crate::task::process_limit() as u64, crate::task::process_limit() as u64), // RLIMIT_NPROC
        9 | 2 | 5 => (boot.mem_size, boot.mem_size),                   // RLIMIT_AS, DATA, RSS
        11 => (crate::sigqueue::MAX_QUEUED as u64, crate::sigqueue::MAX_QUEUED as u64), // RLIMIT_SIGPENDING
        0..=15 => (RLIM_INFINITY, RLIM_INFINITY),
        _ => return None,
    })
}

const RLIM_INFINITY: u64 = u64::MAX;

/// `/proc/<pid>/limits`, in Linux's columns.
fn limits(o: &mut Out) {
    const ROWS: [(&[u8], u64, &[u8]); 16] = [
        (b"Max cpu time", 0, b"seconds"),
        (b"Max file size", 1, b"bytes"),
        (b"Max data size", 2, b"bytes"),
        (b"Max stack size", 3, b"bytes"),
        (b"Max core file size", 4, b"bytes"),
        (b"Max resident set", 5, b"bytes"),
        (b"Max processes", 6, b"processes"),
        (b"Max open files", 7, b"files"),
        (b"Max locked memory", 8, b"bytes"),
        (b"Max address space", 9, b"bytes"),
        (b"Max file locks", 10, b"locks"),
        (b"Max pending signals", 11, b"signals"),
        (b"Max msgqueue size", 12, b"bytes"),
        (b"Max nice priority", 13, b""),
        (b"Max realtime priority", 14, b""),
        (b"Max realtime timeout", 15, b"us"),
    ];
    let value = |o: &mut Out, v: u64| {
        if v == RLIM_INFINITY {
            o.s(b"unlimited");
        } else {
            o.n(v);
        }
    };
    let start = o.0.len();
    o.s(b"Limit");
    o.pad_to(start, 26);
    o.s(b"Soft Limit");
    o.pad_to(start, 47);
    o.s(b"Hard Limit");
    o.pad_to(start, 68);
    o.s(b"Units     \n");
    for (name, resource, unit) in ROWS {
        let (soft, hard) = rlimit(resource).unwrap_or((RLIM_INFINITY, RLIM_INFINITY));
        let start = o.0.len();
        o.s(name);
        o.pad_to(start, 26);
        value(o, soft);
        o.pad_to(start, 47);
        value(o, hard);
        o.pad_to(start, 68);
        o.s(unit);
        o.pad_to(start, 78);
        o.s(b"\n");
    }
}

/// One mount: its point, source, type, options and device number (what
/// stat reports for the files in it).
type Mount = (Vec<u8>, &'static [u8], &'static [u8], &'static [u8], u64);

/// What is mounted where: the root (in memory), `/proc`, and each host
/// directory (read-only).
fn mount_list() -> Vec<Mount> {
    let mem = crate::vfs::root().meta.borrow().dev;
    let mut v: Vec<Mount> = alloc::vec![
        (b"/".to_vec(), b"rootfs", b"tmpfs", b"rw", mem),
        (b"/proc".to_vec(), b"proc", b"proc", b"rw,nosuid,nodev,noexec", mem),
        (b"/sys".to_vec(), b"sysfs", b"sysfs", b"ro,nosuid,nodev,noexec", mem),
        (b"/sys/fs/cgroup".to_vec(), b"cgroup2", b"cgroup2", b"ro,nosuid,nodev,noexec", mem),
    ];
    for p in crate::vfs::mount_points() {
        v.push((p, b"hostfs", b"hostfs", b"ro", crate::vfs::HOST_DEV));
    }
    v
}

/// `/proc/mounts` (and `/proc/<pid>/mounts`).
fn mounts(o: &mut Out) {
    for (point, source, fstype, opts, _) in mount_list() {
        o.s(source).s(b" ").s(&point).s(b" ").s(fstype).s(b" ").s(opts).s(b" 0 0\n");
    }
}

/// `/proc/<pid>/mountinfo`: id, parent, device, root, mount point,
/// options, `-`, type, source, options.
fn mountinfo(o: &mut Out) {
    for (i, (point, source, fstype, opts, dev)) in mount_list().into_iter().enumerate() {
        let parent = if i == 0 { 0 } else { 1 };
        let (major, minor) = ((dev >> 8) & 0xfff, (dev & 0xff) | ((dev >> 12) & 0xfff00));
        o.n(i as u64 + 1).s(b" ").n(parent).s(b" ").n(major).s(b":").n(minor).s(b" / ").s(&point).s(b" ").s(opts);
        o.s(b" - ").s(fstype).s(b" ").s(source).s(b" ").s(opts).s(b"\n");
    }
}

/// The boot's id (`/proc/sys/kernel/random/boot_id`), made at its
/// first read.
static BOOT_ID: crate::rt::Global<Option<[u8; 16]>> = crate::rt::Global::new(None);

fn random16() -> [u8; 16] {
    let mut b = [0u8; 16];
    crate::random::fill(&mut b);
    b
}

/// A version 4 UUID of random bytes `b`.
fn uuid(o: &mut Out, mut b: [u8; 16]) {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    for (i, byte) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            o.s(b"-");
        }
        o.hex(*byte as u64, 2);
    }
    o.s(b"\n");
}

/// A small formatter.
pub(crate) struct Out(pub(crate) Vec<u8>);

impl Out {
    pub(crate) fn s(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub(crate) fn n(&mut self, v: u64) -> &mut Self {
        push_num(&mut self.0, v);
        self
    }
    pub(crate) fn i(&mut self, v: i64) -> &mut Self {
        if v < 0 {
            self.0.push(b'-');
        }
        self.n(v.unsigned_abs())
    }
    /// Spaces up to column `width` of the line begun at `start`.
    pub(crate) fn pad_to(&mut self, start: usize, width: usize) -> &mut Self {
        while self.0.len() < start + width {
            self.0.push(b' ');
        }
        self
    }
    /// `v` right-aligned in `width` columns.
    pub(crate) fn n_right(&mut self, v: u64, width: usize) -> &mut Self {
        let mut digits = Vec::new();
        push_num(&mut digits, v);
        for _ in digits.len()..width {
            self.0.push(b' ');
        }
        self.s(&digits)
    }
    /// `v` in upper-case hex, zero-padded to `width` digits.
    pub(crate) fn hex_upper(&mut self, v: u64, width: usize) -> &mut Self {
        let from = self.0.len();
        self.hex(v, width);
        self.0[from..].make_ascii_uppercase();
        self
    }
    /// `v` in hex, zero-padded to `width` digits.
    pub(crate) fn hex(&mut self, v: u64, width: usize) -> &mut Self {
        let digits = (64 - v.leading_zeros() as usize).div_ceil(4).max(1);
        for _ in digits..width {
            self.0.push(b'0');
        }
        for k in (0..digits).rev() {
            self.0.push(b"0123456789abcdef"[(v >> (k * 4)) as usize & 15]);
        }
        self
    }
    /// Nanoseconds as seconds with two decimals.
    fn centis(&mut self, ns: u64) -> &mut Self {
        let c = ns / 10_000_000;
        self.n(c / 100).s(b".");
        if c % 100 < 10 {
            self.s(b"0");
        }
        self.n(c % 100)
    }
    /// A `Key:` label padded as Linux pads it, then `value kB`.
    fn kb(&mut self, key: &[u8], bytes: u64) -> &mut Self {
        self.s(key).n_right(bytes / 1024, 23usize.saturating_sub(key.len())).s(b" kB\n")
    }
}

/// The name of `p`'s thread `id`; for the process's own id, its main
/// thread's (or, once that one has exited, a running thread's).
fn name(p: &Process, id: u32) -> Vec<u8> {
    let threads = threads_of(p);
    let t = threads.iter().find(|t| t.tid() == id).or(threads.first());
    t.map_or_else(Vec::new, |t| t.ctl.name())
}

/// (mapped bytes, resident bytes): resident is what the sandbox uses,
/// at most what the process maps (frames are not counted per process).
fn memory(p: &Process) -> (u64, u64) {
    let size = crate::task::space_of(p).map_or(0, |s| s.get().vmas().iter().map(|v| v.end - v.start).sum());
    let total = crate::rt::boot().mem_size;
    let used = total.saturating_sub(crate::mm::spare_frames() * PAGE);
    (size, used.min(size))
}

fn state(p: &Process) -> &'static [u8] {
    if p.stopped.get() {
        b"T"
    } else if p.pid == current_process().pid {
        b"R"
    } else {
        b"S"
    }
}

fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    crate::cpuid::query(leaf, sub)
}

fn cpuinfo(o: &mut Out) {
    let v = cpuid(0, 0);
    let max = v[0];
    let mut vendor = Vec::new();
    for r in [v[1], v[3], v[2]] {
        vendor.extend_from_slice(&r.to_le_bytes());
    }
    let f1 = cpuid(1, 0);
    let f7 = if max >= 7 { cpuid(7, 0) } else { [0; 4] };
    let e1 = cpuid(0x8000_0001, 0);
    let family = (f1[0] >> 8) & 0xf;
    let family = if family == 0xf { family + ((f1[0] >> 20) & 0xff) } else { family };
    let model = ((f1[0] >> 4) & 0xf) | (((f1[0] >> 16) & 0xf) << 4);
    let mhz = crate::rt::boot().tsc_khz / 1000;
    o.s(b"processor\t: 0\nvendor_id\t: ").s(&vendor).s(b"\ncpu family\t: ").n(family as u64);
    o.s(b"\nmodel\t\t: ").n(model as u64).s(b"\nmodel name\t: hvsandbox virtual CPU\nstepping\t: ");
    o.n((f1[0] & 0xf) as u64).s(b"\ncpu MHz\t\t: ").n(mhz).s(b".000\ncache size\t: 0 KB\n");
    o.s(b"physical id\t: 0\nsiblings\t: 1\ncore id\t\t: 0\ncpu cores\t: 1\napicid\t\t: 0\n");
    o.s(b"fpu\t\t: yes\nfpu_exception\t: yes\ncpuid level\t: ").n(max as u64).s(b"\nwp\t\t: yes\nflags\t\t:");
    let flags: [(u32, u32, &[u8]); 31] = [
        (f1[3], 0, b"fpu"),
        (f1[3], 4, b"tsc"),
        (f1[3], 8, b"cx8"),
        (f1[3], 15, b"cmov"),
        (f1[3], 19, b"clflush"),
        (f1[3], 23, b"mmx"),
        (f1[3], 24, b"fxsr"),
        (f1[3], 25, b"sse"),
        (f1[3], 26, b"sse2"),
        (e1[3], 11, b"syscall"),
        (e1[3], 20, b"nx"),
        (e1[3], 29, b"lm"),
        (f1[2], 0, b"pni"),
        (f1[2], 1, b"pclmulqdq"),
        (f1[2], 9, b"ssse3"),
        (f1[2], 12, b"fma"),
        (f1[2], 13, b"cx16"),
        (f1[2], 19, b"sse4_1"),
        (f1[2], 20, b"sse4_2"),
        (f1[2], 22, b"movbe"),
        (f1[2], 23, b"popcnt"),
        (f1[2], 25, b"aes"),
        (f1[2], 26, b"xsave"),
        (f1[2], 28, b"avx"),
        (f1[2], 29, b"f16c"),
        (f1[2], 30, b"rdrand"),
        (f7[1], 3, b"bmi1"),
        (f7[1], 5, b"avx2"),
        (f7[1], 8, b"bmi2"),
        (f7[1], 16, b"avx512f"),
        (f7[1], 19, b"adx"),
    ];
    for (reg, bit, name) in flags {
        if reg >> bit & 1 != 0 {
            o.s(b" ").s(name);
        }
    }
    o.s(b"\nbogomips\t: ").n(mhz * 2).s(b".00\nclflush size\t: 64\ncache_alignment\t: 64\n");
    o.s(b"address sizes\t: 46 bits physical, 48 bits virtual\npower management:\n\n");
}

/// Consistent with sysinfo(2): the sandbox's memory and its free frames.
fn meminfo(o: &mut Out) {
    let total = crate::rt::boot().mem_size;
    let free = crate::mm::spare_frames() * PAGE;
    o.kb(b"MemTotal:", total).kb(b"MemFree:", free).kb(b"MemAvailable:", free);
    for key in [&b"Buffers:"[..], b"Cached:", b"SwapCached:", b"Active:", b"Inactive:"] {
        o.kb(key, 0);
    }
    for key in [&b"SwapTotal:"[..], b"SwapFree:", b"Dirty:", b"Writeback:", b"Shmem:"] {
        o.kb(key, 0);
    }
    let roots: Vec<u64> =
        live_processes().iter().filter_map(|p| p.space.borrow().as_ref().map(|s| s.get().pml4())).collect();
    o.kb(b"AnonHugePages:", crate::mm::huge_bytes_of(&roots, false))
        .kb(b"FilePmdMapped:", crate::mm::huge_bytes_of(&roots, true))
        .kb(b"Hugepagesize:", hvsandbox_abi::HUGE_PAGE_SIZE);
}

fn stat(o: &mut Out) {
    let ticks = crate::time::elapsed_ns() / (1_000_000_000 / HZ);
    for cpu in [&b"cpu "[..], b"cpu0"] {
        o.s(cpu).s(b" ").n(ticks).s(b" 0 0 0 0 0 0 0 0 0\n");
    }
    let boot_s = (crate::time::realtime_ns() - crate::time::elapsed_ns()) / 1_000_000_000;
    o.s(b"intr 0\nctxt 0\nbtime ").n(boot_s).s(b"\nprocesses ").n(pids().len() as u64);
    o.s(b"\nprocs_running 1\nprocs_blocked 0\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n");
}

/// `stat` of process `p` or of its thread `id`, with `state` and
/// `cpu_ns` of CPU time (user time: system time is not told apart).
fn pid_stat(o: &mut Out, p: &Process, id: u32, state: &[u8], cpu_ns: u64) {
    let (size, rss) = memory(p);
    let tick = 1_000_000_000 / HZ;
    let children = p.timers.children_cpu_ns.get() / tick;
    o.n(id as u64).s(b" (").s(&name(p, id)).s(b") ").s(state).s(b" ");
    o.n(p.ppid.get() as u64).s(b" ").n(p.pgid.get() as u64).s(b" ").n(p.sid.get() as u64);
    // tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime priority nice
    o.s(b" 0 -1 4194304 0 0 0 0 ").n(cpu_ns / tick).s(b" 0 ").n(children).s(b" 0 ");
    let nice = i64::from(p.nice.get());
    o.n((20 + nice) as u64).s(b" ");
    if nice < 0 {
        o.s(b"-");
    }
    o.n(nice.unsigned_abs()).s(b" ").n(p.threads.get() as u64);
    // itrealvalue starttime vsize rss rsslim
    o.s(b" 0 0 ").n(size).s(b" ").n(rss / PAGE).s(b" 18446744073709551615");
    // startcode endcode startstack kstkesp kstkeip signal blocked sigignore sigcatch wchan nswap cnswap
    o.s(b" 0 0 ").n(user::STACK_TOP).s(b" 0 0 0 0 0 0 0 0 0");
    // exit_signal processor rt_priority policy blkio guest_time cguest_time
    o.s(b" 17 0 0 0 0 0 0");
    // start_data end_data start_brk arg_start arg_end env_start env_end exit_code
    let (brk, _) = crate::task::space_of(p).map_or((0, 0), |s| s.get().brk_range());
    o.s(b" 0 0 ").n(brk).s(b" 0 0 0 0 0\n");
}

/// `status` of process `p` or of its thread `id`.
fn status(o: &mut Out, p: &Process, id: u32, state: &[u8]) {
    let (size, rss) = memory(p);
    let uid = crate::rt::UID;
    // The mask in octal, as Linux writes it (0022).
    let u = p.umask.get() & 0o777;
    let umask = [b'0', b'0' + (u >> 6) as u8, b'0' + (u >> 3 & 7) as u8, b'0' + (u & 7) as u8];
    o.s(b"Name:\t").s(&name(p, id)).s(b"\nUmask:\t").s(&umask);
    let st: &[u8] = match state {
        b"R" => b"R (running)",
        b"T" => b"T (stopped)",
        _ => b"S (sleeping)",
    };
    o.s(b"\nState:\t").s(st).s(b"\nTgid:\t").n(p.pid as u64).s(b"\nNgid:\t0\nPid:\t").n(id as u64);
    o.s(b"\nPPid:\t").n(p.ppid.get() as u64).s(b"\nTracerPid:\t0\n");
    for key in [&b"Uid:"[..], b"Gid:"] {
        o.s(key);
        for _ in 0..4 {
            o.s(b"\t").n(uid);
        }
        o.s(b"\n");
    }
    let fds = p.fds.borrow().0.len() as u64;
    o.s(b"FDSize:\t").n(fds.next_power_of_two().max(64)).s(b"\nGroups:\t\n");
    o.kb(b"VmPeak:", size).kb(b"VmSize:", size).kb(b"VmLck:", 0).kb(b"VmHWM:", rss).kb(b"VmRSS:", rss);
    o.kb(b"VmData:", size).kb(b"VmStk:", 0).kb(b"VmExe:", 0).kb(b"VmLib:", 0).kb(b"VmSwap:", 0);
    o.s(b"Threads:\t").n(p.threads.get() as u64).s(b"\nSigQ:\t0/").i(1024).s(b"\nSigPnd:\t");
    o.hex(0, 16).s(b"\nShdPnd:\t").hex(p.pending.get(), 16).s(b"\nSigBlk:\t").hex(0, 16);
    let (mut ign, mut cgt) = (0u64, 0u64);
    for (i, a) in p.sigactions.borrow().iter().enumerate().skip(1) {
        match a[0] {
            0 => {}
            1 => ign |= 1 << (i - 1),
            _ => cgt |= 1 << (i - 1),
        }
    }
    o.s(b"\nSigIgn:\t").hex(ign, 16).s(b"\nSigCgt:\t").hex(cgt, 16);
    // A program running as a user other than root has no capabilities.
    let caps = if uid == 0 { p.ctl.capbset.get() } else { 0 };
    o.s(b"\nCapInh:\t").hex(0, 16).s(b"\nCapPrm:\t").hex(caps, 16).s(b"\nCapEff:\t").hex(caps, 16);
    o.s(b"\nCapBnd:\t").hex(p.ctl.capbset.get(), 16).s(b"\nCapAmb:\t").hex(0, 16);
    let nnp = threads_of(p).iter().find(|t| t.tid() == id).is_some_and(|t| t.ctl.no_new_privs.get());
    o.s(b"\nNoNewPrivs:\t").n(nnp as u64).s(b"\nSeccomp:\t0\nSeccomp_filters:\t0");
    o.s(b"\nCpus_allowed:\t1\nCpus_allowed_list:\t0\nvoluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t0\n");
}

/// The current process mapped `[at, at + len)`: of file `fd` from
/// offset `off`, or anonymous memory (`file` None).
pub fn mapped(at: u64, len: u64, file: Option<(u64, u64)>) {
    let end = at.saturating_add(crate::mm::page_up(len));
    current_process().map_names.borrow_mut().remove(at, end);
    let Some((fd, offset)) = file else { return };
    let Ok(f) = crate::fds::get(fd) else { return };
    let Some(node) = f.node() else { return };
    named(at, end, offset, node, &f.path);
}

/// A program's (or its loader's) segments just loaded show file `node`
/// (named `path`): `ranges` as `elf::load` lists them.
pub fn name_segments(ranges: &[(u64, u64, u64)], node: &crate::vfs::NodeRef, path: &[u8]) {
    for &(start, end, offset) in ranges {
        named(start, end, offset, node, path);
    }
}

/// `[at, end)` of the current process shows file `node` (opened as
/// `path`) from `offset` on: an mmap, or a program's segment at exec.
pub fn named(at: u64, end: u64, offset: u64, node: &crate::vfs::NodeRef, path: &[u8]) {
    let p = current_process();
    let mut names = p.map_names.borrow_mut();
    if names.due_for_pruning() {
        // Names of ranges unmapped since go (munmap leaves them: a
        // mapping made over one replaces it, and maps shows only what
        // is mapped).
        let Some(space) = crate::task::space_of(&p) else { return };
        names.keep_within(space.get().vmas().iter().map(|v| (v.start, v.end)));
    }
    let (dev, ino) = {
        let m = node.meta.borrow();
        (m.dev, m.ino)
    };
    names.add(Named { start: at, end, offset, dev, ino, path: Rc::from(path) });
}

fn maps(o: &mut Out, p: &Process) {
    let Some(space) = crate::task::space_of(p) else { return };
    let space = space.get();
    let (brk_start, brk) = space.brk_range();
    let names = p.map_names.borrow();
    for v in space.vmas() {
        // A mapping shows as pieces where the files it shows change.
        for (start, end, file) in names.pieces(v.start, v.end) {
            let line = o.0.len();
            o.hex(start, 8).s(b"-").hex(end, 8).s(b" ");
            for (bit, c) in [(1, b'r'), (2, b'w'), (4, b'x')] {
                o.0.push(if v.prot & bit != 0 { c } else { b'-' });
            }
            let (off, dev, ino) = file.map_or((0, 0, 0), |n| (n.offset + (start - n.start), n.dev, n.ino));
            o.s(if v.shared.is_some() { b"s " } else { b"p " })
                .hex(off, 8)
                .s(b" ")
                .hex(dev >> 8 & 0xfff, 2)
                .s(b":")
                .hex(dev & 0xff, 2)
                .s(b" ")
                .n(ino)
                .s(b" ");
            let name: &[u8] = if let Some(n) = file {
                &n.path
            } else if let Some(name) = crate::vdso::name(start) {
                name
            } else if start < user::STACK_TOP && user::STACK_TOP <= end {
                b"[stack]"
            } else if brk > brk_start && start >= brk_start && end <= mm_page_up(brk) {
                b"[heap]"
            } else {
                b""
            };
            if !name.is_empty() {
                while o.0.len() - line < 73 {
                    o.0.push(b' ');
                }
                o.s(name);
            }
            o.s(b"\n");
        }
    }
    // The vsyscall page, in every process (as Linux lists it, last).
    let at = crate::vdso::VSYSCALL_VA;
    let start = o.0.len();
    o.hex(at, 8).s(b"-").hex(at + crate::mm::PAGE, 8).s(b" r-xp 00000000 00:00 0");
    while o.0.len() - start < 73 {
        o.0.push(b' ');
    }
    o.s(b"[vsyscall]\n");
}

fn mm_page_up(x: u64) -> u64 {
    crate::mm::page_up(x)
}
