//! The jail around each sandbox's vCPU thread — the thread that runs the
//! guest and serves its hypercalls, so the one a hostile guest could reach
//! through a VMM bug. Before its first `KVM_RUN` the thread:
//!
//! 1. drops every capability from its effective, permitted and inheritable
//!    sets (and, where allowed, the bounding set) with libcap-ng — /dev/kvm
//!    is already open, nothing else it does needs privilege;
//! 2. sets `no_new_privs`;
//! 3. where the kernel has Landlock, restricts itself for good to opening
//!    files and listing directories below its sandbox's mount roots — and
//!    nothing else by path (see [`landlock`]). A thread is reused only by
//!    sandboxes whose mount roots are exactly its own (`vcpu_thread`).
//!    Without Landlock, what holds is the filter's: opens are read-only
//!    (never creating, writing or truncating), and the thread can send
//!    nothing anywhere but into its own guest and to stderr — it has no
//!    socket, pipe-writing or process call — but it could read any file
//!    the process's user can read;
//! 4. installs the seccomp allow-list below (seccompiler): any other system
//!    call raises SIGSYS, whose handler records the call and fails it with
//!    EPERM; the thread then stops the run at once, reports
//!    [`crate::Error::JailViolation`] naming the call, and ends, leaving
//!    the sandbox poisoned. (Killing the thread inside the refused call
//!    could leave a lock of the process, the allocator's, held forever.)
//!
//! The list is data, one entry per system call with who needs it. Per-run
//! work that needs more (reading the program, opening mount roots, opening
//! the page map) is done on the caller's thread before the job reaches the
//! vCPU thread.
//!
//! `HVSANDBOX_SECCOMP` (`enforce`, `log`, `off`) can only make the filter
//! stricter than the program asked for (`enforce` turns a builder's `Log`
//! into `Enforce`); asking for less is ignored, with one warning on stderr
//! per process, so a stray variable in a service's environment cannot
//! switch the filter off.

mod landlock;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::OnceLock;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

use crate::error::{Error, Result};

/// What the vCPU thread's seccomp filter does with a call not on its list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SeccompMode {
    /// Stop the thread; the run fails with `JailViolation` (the default).
    #[default]
    Enforce,
    /// Allow the call but have the kernel log it (audit log / dmesg): for
    /// finding what a new code path needs.
    Log,
    /// No filter at all (capabilities are still dropped, Landlock still
    /// applies).
    Disabled,
}

impl SeccompMode {
    fn strictness(self) -> u8 {
        match self {
            SeccompMode::Disabled => 0,
            SeccompMode::Log => 1,
            SeccompMode::Enforce => 2,
        }
    }
}

/// Which arguments a call may have.
#[derive(Clone, Copy, Debug)]
enum Args {
    Any,
    /// ioctl: only these request numbers (argument 1).
    Requests(&'static [u64]),
    /// mmap/mprotect: never executable memory (argument 2 without PROT_EXEC).
    NoExec,
    /// openat: read-only, never creating or truncating (argument 2).
    ReadOnly,
    /// write: only to stderr and to the end-of-run eventfd (argument 0;
    /// see `end_notify.rs`).
    StderrOrEndFd,
    /// fcntl: only the commands in `FCNTL_COMMANDS` (argument 1).
    Fcntl,
}

/// One allowed system call.
#[derive(Clone, Copy, Debug)]
struct Allowed {
    name: &'static str,
    nr: i64,
    args: Args,
}

/// ioctl requests the vCPU thread issues: creating the VM and vCPU for each
/// run, setting them up, running, and reading registers for hypercalls;
/// and finding the pages a run wrote.
const IOCTL_REQUESTS: &[u64] = &[
    0xae00,     // KVM_GET_API_VERSION (first use of /dev/kvm)
    0xae01,     // KVM_CREATE_VM
    0xae03,     // KVM_CHECK_EXTENSION
    0xae04,     // KVM_GET_VCPU_MMAP_SIZE
    0xc008ae05, // KVM_GET_SUPPORTED_CPUID (first use of /dev/kvm)
    0xc004ae02, // KVM_GET_MSR_INDEX_LIST (first use of /dev/kvm: the MSRs a reset restores)
    0xae41,     // KVM_CREATE_VCPU
    0x4020ae46, // KVM_SET_USER_MEMORY_REGION
    0xae80,     // KVM_RUN
    0x8090ae81, // KVM_GET_REGS
    0x4090ae82, // KVM_SET_REGS
    0x8138ae83, // KVM_GET_SREGS
    0x4138ae84, // KVM_SET_SREGS
    0xc008ae88, // KVM_GET_MSRS
    0x4008ae89, // KVM_SET_MSRS
    0x4008ae90, // KVM_SET_CPUID2
    0xc008ae91, // KVM_GET_CPUID2 (first vCPU: the CPUID page, abi::CPUID_GPA)
    0x4068aea3, // KVM_ENABLE_CAP (vCPU: ENFORCE_PV_FEATURE_CPUID)
    0x4008ae9c, // KVM_X86_SETUP_MCE (one machine-check bank: fewer MSRs to restore)
    0x8040ae9f, // KVM_GET_VCPU_EVENTS (first vCPU: the events a reset restores)
    0x4040aea0, // KVM_SET_VCPU_EVENTS (reset, where KVM_RUN cannot sync them)
    0xaea3,     // KVM_GET_TSC_KHZ
    0x9000aea4, // KVM_GET_XSAVE (snapshots)
    0x5000aea5, // KVM_SET_XSAVE (runs from a snapshot)
    0x8188aea6, // KVM_GET_XCRS
    0x4188aea7, // KVM_SET_XCRS
    0x4080aea2, // KVM_SET_DEBUGREGS (runs from a snapshot)
    0xc0606610, // PAGEMAP_SCAN on /proc/self/pagemap (the pages a run wrote, for reset)
];

/// fcntl commands the vCPU thread issues (argument 1), with the one
/// argument 2 allowed when it matters.
const FCNTL_COMMANDS: &[(libc::c_int, Option<u64>)] = &[
    (libc::F_DUPFD_CLOEXEC, None), // Rust std's try_clone: a snapshot's memory fd for a new VM
    (libc::F_GETFL, None),         // mounts: glibc's fdopendir checks the fd is readable
    (libc::F_SETFD, Some(libc::FD_CLOEXEC as u64)), // mounts: glibc's fdopendir sets close-on-exec
];

/// The vCPU thread's allow-list: one line per call, with who needs it.
#[rustfmt::skip]
const VCPU_ALLOWLIST: &[Allowed] = &[
    Allowed { name: "ioctl", nr: libc::SYS_ioctl, args: Args::Requests(IOCTL_REQUESTS) }, // the requests above
    Allowed { name: "mmap", nr: libc::SYS_mmap, args: Args::NoExec },           // guest RAM, vCPU run area, allocator
    Allowed { name: "munmap", nr: libc::SYS_munmap, args: Args::Any },          // VM teardown, allocator
    Allowed { name: "mprotect", nr: libc::SYS_mprotect, args: Args::NoExec },   // allocator (glibc arenas)
    Allowed { name: "madvise", nr: libc::SYS_madvise, args: Args::Any },        // huge pages for guest RAM, allocator
    Allowed { name: "mremap", nr: libc::SYS_mremap, args: Args::Any },          // allocator (growing large buffers)
    Allowed { name: "brk", nr: libc::SYS_brk, args: Args::Any },                // allocator (main arena)
    Allowed { name: "futex", nr: libc::SYS_futex, args: Args::Any },            // job/result channels, locks
    Allowed { name: "sched_yield", nr: libc::SYS_sched_yield, args: Args::Any }, // channels' spin back-off under load (std mpsc)
    Allowed { name: "rt_sigreturn", nr: libc::SYS_rt_sigreturn, args: Args::Any }, // return from the kick handler
    Allowed { name: "rt_sigprocmask", nr: libc::SYS_rt_sigprocmask, args: Args::Any }, // thread exit (glibc)
    Allowed { name: "sigaltstack", nr: libc::SYS_sigaltstack, args: Args::Any }, // thread exit (Rust std)
    Allowed { name: "timer_settime", nr: libc::SYS_timer_settime, args: Args::Any }, // arming the run's deadline
    Allowed { name: "gettid", nr: libc::SYS_gettid, args: Args::Any },          // panic messages (Rust std)
    Allowed { name: "clock_gettime", nr: libc::SYS_clock_gettime, args: Args::Any }, // thread CPU time (no vDSO)
    Allowed { name: "clock_nanosleep", nr: libc::SYS_clock_nanosleep, args: Args::Any }, // guest sleep hypercall
    Allowed { name: "getrandom", nr: libc::SYS_getrandom, args: Args::Any },    // hash map seeds
    Allowed { name: "write", nr: libc::SYS_write, args: Args::StderrOrEndFd }, // HVSANDBOX_TRACE lines, panics; a run's end for event loops
    Allowed { name: "exit", nr: libc::SYS_exit, args: Args::Any },              // thread exit
    Allowed { name: "openat", nr: libc::SYS_openat, args: Args::ReadOnly },     // mounts: lookup (O_PATH), read
    Allowed { name: "newfstatat", nr: libc::SYS_newfstatat, args: Args::Any },  // mounts: stat, identity checks
    Allowed { name: "fstatfs", nr: libc::SYS_fstatfs, args: Args::Any },        // mounts: no kernel filesystems below
    Allowed { name: "close", nr: libc::SYS_close, args: Args::Any },            // mounts' fds, VM teardown
    Allowed { name: "pread64", nr: libc::SYS_pread64, args: Args::Any },        // mounts: file reads
    Allowed { name: "getdents64", nr: libc::SYS_getdents64, args: Args::Any },  // mounts: directory listings
    Allowed { name: "readlinkat", nr: libc::SYS_readlinkat, args: Args::Any },  // mounts: symlink targets
    Allowed { name: "fcntl", nr: libc::SYS_fcntl, args: Args::Fcntl },          // the commands above
];

/// Calls the vCPU thread may not make but that the C library makes on its
/// own, once per process, in whichever thread gets there first: they fail
/// like any refused call (EPERM, which glibc handles) but do not count as
/// a violation that would poison an innocent sandbox (see `on_sigsys`).
#[rustfmt::skip]
const QUIETLY_REFUSED: &[(&str, i64)] = &[
    ("read", libc::SYS_read),                           // glibc malloc counting CPUs (/sys/devices/system/cpu/online) for its arena limit
    ("sched_getaffinity", libc::SYS_sched_getaffinity), // the same count's fallback
];

/// How many system calls the vCPU thread may make.
pub const ALLOWLIST_LEN: usize = VCPU_ALLOWLIST.len();
const _: () = assert!(ALLOWLIST_LEN <= 27, "the vCPU thread's allow-list must stay at 27 calls or fewer");

/// The names of the calls on the vCPU thread's allow-list.
pub fn allowlist() -> Vec<&'static str> {
    VCPU_ALLOWLIST.iter().map(|a| a.name).collect()
}

fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(jail_error("seccomp condition"))
}

/// A condition on the low 32 bits of an argument (a C `int`).
fn cond32(arg: u8, value: u64) -> Result<SeccompCondition> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
        .map_err(jail_error("seccomp condition"))
}

fn rules_for(a: &Allowed) -> Result<Vec<SeccompRule>> {
    let rule = |c: Vec<SeccompCondition>| SeccompRule::new(c).map_err(jail_error("seccomp rule"));
    Ok(match a.args {
        Args::Any => Vec::new(),
        Args::Requests(list) => list.iter().map(|&r| rule(vec![cond32(1, r)?])).collect::<Result<_>>()?,
        Args::Fcntl => FCNTL_COMMANDS
            .iter()
            .map(|&(cmd, arg)| {
                let mut c = vec![cond32(1, cmd as u64)?];
                if let Some(arg) = arg {
                    c.push(cond32(2, arg)?);
                }
                rule(c)
            })
            .collect::<Result<_>>()?,
        Args::NoExec => vec![rule(vec![cond(2, SeccompCmpOp::MaskedEq(libc::PROT_EXEC as u64), 0)?])?],
        Args::ReadOnly => {
            let forbidden = (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64;
            vec![rule(vec![cond(2, SeccompCmpOp::MaskedEq(forbidden), 0)?])?]
        }
        Args::StderrOrEndFd => {
            let mut fds = vec![2];
            fds.extend(crate::end_notify::raw_fd().map(|fd| fd as u64));
            fds.into_iter().map(|fd| rule(vec![cond(0, SeccompCmpOp::Eq, fd)?])).collect::<Result<_>>()?
        }
    })
}

fn jail_error<E: std::error::Error + Send + Sync + 'static>(what: &'static str) -> impl Fn(E) -> Error {
    move |e| Error::Internal { context: format!("cannot build the jail: {what}"), source: Some(std::sync::Arc::new(e)) }
}

/// The compiled filter, built once per process.
fn program(mode: SeccompMode) -> Result<&'static BpfProgram> {
    static ENFORCE: OnceLock<BpfProgram> = OnceLock::new();
    static LOG: OnceLock<BpfProgram> = OnceLock::new();
    let (slot, mismatch) = match mode {
        SeccompMode::Log => (&LOG, SeccompAction::Log),
        _ => (&ENFORCE, SeccompAction::Trap),
    };
    if let Some(p) = slot.get() {
        return Ok(p);
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for a in VCPU_ALLOWLIST {
        rules.insert(a.nr, rules_for(a)?);
    }
    let filter = SeccompFilter::new(rules, mismatch, SeccompAction::Allow, TargetArch::x86_64)
        .map_err(jail_error("seccomp filter"))?;
    let bpf: BpfProgram = filter.try_into().map_err(jail_error("seccomp program"))?;
    Ok(slot.get_or_init(|| bpf))
}

thread_local! {
    /// Where this thread's SIGSYS handler records the refused call.
    static VIOLATION: Cell<*const AtomicI64> = const { Cell::new(std::ptr::null()) };
}

/// SIGSYS from the filter: record the call and make it fail with EPERM.
/// The thread is not killed where it stands — it may hold a lock the
/// rest of the process needs (the allocator's) — but its run is stopped
/// at the next check and the sandbox is poisoned (see `violation`).
extern "C" fn on_sigsys(_sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for SIGSYS; si_syscall is
    // the int at byte offset 24 of its union (asm-generic siginfo layout).
    let nr = unsafe { (info as *const u8).add(24).cast::<i32>().read_unaligned() };
    let quiet = QUIETLY_REFUSED.iter().any(|&(_, q)| q == nr as i64);
    let slot = VIOLATION.with(|v| v.get());
    if !slot.is_null() && !quiet {
        // SAFETY: the slot points into the sandbox's shared state, which
        // outlives its vCPU thread (the thread holds an Arc to it).
        unsafe {
            let _ = (*slot).compare_exchange(-1, nr as i64, Ordering::SeqCst, Ordering::SeqCst);
        }
    }
    // SAFETY: `ctx` is the ucontext_t of the interrupted thread; setting
    // RAX makes the refused call return -EPERM when the handler returns.
    unsafe {
        let uc = ctx.cast::<libc::ucontext_t>();
        (*uc).uc_mcontext.gregs[libc::REG_RAX as usize] = -(libc::EPERM as i64);
    }
}

fn install_sigsys_handler() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), i32>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        // SAFETY: a zeroed sigaction is valid; we fill the fields we use.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_sigsys as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO;
        // SAFETY: installs a handler for SIGSYS that only touches a
        // thread-local pointer, an atomic, and calls SYS_exit.
        if unsafe { libc::sigaction(libc::SIGSYS, &sa, std::ptr::null_mut()) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    r.map_err(|e| Error::Internal {
        context: "cannot install the SIGSYS handler".into(),
        source: Some(std::sync::Arc::new(std::io::Error::from_raw_os_error(e))),
    })
}

/// Drops this thread's capabilities (all of them).
fn drop_capabilities() -> Result<()> {
    capng::clear(capng::Set::BOTH);
    // The bounding set can only be changed with CAP_SETPCAP (root); without
    // it there is nothing to drop there anyway.
    if capng::apply(capng::Set::BOTH).is_err() {
        capng::clear(capng::Set::CAPS);
        capng::apply(capng::Set::CAPS)
            .map_err(|e| Error::Internal { context: format!("cannot drop capabilities: {e:?}"), source: None })?;
    }
    Ok(())
}

/// Puts the calling thread (a sandbox's vCPU thread) in the jail, able to
/// read files below `roots` only (where the kernel has Landlock). The
/// refused call, if any, is later found in `violation`.
pub(crate) fn enter(mode: SeccompMode, violation: &AtomicI64, roots: &[BorrowedFd<'_>]) -> Result<()> {
    // The caller keeps `violation` alive as long as this thread (it lives
    // in the sandbox's shared state, which the thread holds an Arc to).
    drop_capabilities()?;
    // SAFETY: prctl with constant arguments; affects only this thread.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(Error::Internal {
            context: "cannot set no_new_privs".into(),
            source: Some(std::sync::Arc::new(std::io::Error::last_os_error())),
        });
    }
    landlock::restrict_self(roots).map_err(|(call, e)| Error::Internal {
        context: format!("cannot build the jail: {call}"),
        source: Some(std::sync::Arc::new(e)),
    })?;
    if mode == SeccompMode::Disabled {
        return Ok(());
    }
    let bpf = program(mode)?;
    install_sigsys_handler()?;
    VIOLATION.with(|v| v.set(violation as *const AtomicI64));
    seccompiler::apply_filter(bpf).map_err(jail_error("seccomp install"))
}

/// Points the calling (jailed) thread's refused-call record at
/// `violation`: a vCPU thread serving its next sandbox. The caller keeps
/// `violation` alive until it rebinds again.
pub(crate) fn rebind(violation: &AtomicI64) {
    VIOLATION.with(|v| v.set(violation as *const AtomicI64));
}

/// The name of a refused call for messages.
pub(crate) fn describe(nr: i64) -> String {
    match crate::syscall_names::syscall_name(nr) {
        Some(n) => format!("{n} ({nr})"),
        None => format!("system call {nr}"),
    }
}

/// The mode a vCPU thread is jailed in: `configured`, or a stricter one
/// `HVSANDBOX_SECCOMP` asks for. A weaker or unknown value is ignored,
/// with one warning on stderr per process.
pub(crate) fn effective_mode(configured: SeccompMode) -> SeccompMode {
    let Some(value) = std::env::var_os("HVSANDBOX_SECCOMP") else { return configured };
    let asked = match value.as_bytes() {
        b"enforce" => Some(SeccompMode::Enforce),
        b"log" => Some(SeccompMode::Log),
        b"off" | b"disabled" => Some(SeccompMode::Disabled),
        _ => None,
    };
    match asked {
        Some(mode) if mode.strictness() >= configured.strictness() => mode,
        _ => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                eprintln!(
                    "hvsandbox: ignoring HVSANDBOX_SECCOMP={}: it can only make the vCPU thread's seccomp filter \
                     stricter (enforce > log > off) than the program set ({configured:?})",
                    value.to_string_lossy()
                );
            }
            configured
        }
    }
}

/// The Landlock ABI version of the running kernel, or `None` where it has
/// no Landlock (then reads by path are limited only by the filter: see the
/// module's documentation).
pub fn landlock_abi() -> Option<u32> {
    landlock::abi()
}

/// The host directories a sandbox's vCPU thread may read below (its mount
/// roots), opened on the caller's thread, and who they are.
pub(crate) struct MountRoots {
    fds: Vec<OwnedFd>,
    ids: RootIds,
}

/// The (device, inode) of each mount root, in the sandbox's mount order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RootIds(Vec<(u64, u64)>);

impl MountRoots {
    /// Opens each of `paths` (host directories) as a mount root.
    pub(crate) fn open<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<MountRoots> {
        let mut fds = Vec::new();
        let mut ids = Vec::new();
        for path in paths {
            let (fd, id) = open_dir(path)
                .map_err(|e| Error::InvalidConfig(format!("cannot open mount source {}: {e}", path.display())))?;
            ids.push(id);
            fds.push(fd);
        }
        Ok(MountRoots { fds, ids: RootIds(ids) })
    }

    pub(crate) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        self.fds.iter().map(|fd| fd.as_fd()).collect()
    }

    pub(crate) fn ids(&self) -> &RootIds {
        &self.ids
    }
}

impl RootIds {
    /// What tells vCPU threads apart for reuse: a thread restricted to
    /// these roots serves exactly the sandboxes with the same set. Where
    /// the kernel has no Landlock, every thread is alike (empty).
    pub(crate) fn reach(&self) -> Vec<(u64, u64)> {
        if landlock::abi().is_none() {
            return Vec::new();
        }
        let mut set = self.0.clone();
        set.sort_unstable();
        set.dedup();
        set
    }

    /// Fails when one of `paths` (in the same order) now names another
    /// directory than when the sandbox was built: the vCPU thread may
    /// read below the directories it was given, not below their names.
    pub(crate) fn check<'a>(&self, paths: impl IntoIterator<Item = &'a Path>) -> Result<()> {
        for (path, &id) in paths.into_iter().zip(&self.0) {
            let meta = std::fs::metadata(path)
                .map_err(|e| Error::InvalidConfig(format!("mount source {}: {e}", path.display())))?;
            if (meta.dev(), meta.ino()) != id {
                return Err(Error::InvalidConfig(format!(
                    "mount source {} is another directory than when the sandbox was built",
                    path.display()
                )));
            }
        }
        Ok(())
    }
}

/// Opens a directory as a handle (`O_PATH`), following symlinks as a
/// mount's source path does; returns it with its (device, inode).
fn open_dir(path: &Path) -> std::io::Result<(OwnedFd, (u64, u64))> {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is NUL-terminated; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a writable stat.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fd, (st.st_dev, st.st_ino)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_small_and_unique() {
        let mut names = allowlist();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ALLOWLIST_LEN);
        for a in VCPU_ALLOWLIST {
            assert_eq!(crate::syscall_names::syscall_name(a.nr), Some(a.name));
        }
    }

    #[test]
    fn filters_compile() {
        program(SeccompMode::Enforce).unwrap();
        program(SeccompMode::Log).unwrap();
    }

    #[test]
    fn mount_roots_are_known_by_identity() {
        let dir = std::env::temp_dir();
        let roots = MountRoots::open([dir.as_path(), dir.as_path()]).unwrap();
        assert_eq!(roots.fds().len(), 2);
        roots.ids().check([dir.as_path(), dir.as_path()]).unwrap();
        // The same directory twice is one root to tell threads apart by.
        let reach = roots.ids().reach();
        assert_eq!(reach.len(), usize::from(landlock_abi().is_some()));
        let other = MountRoots::open([Path::new("/")]).unwrap();
        let err = other.ids().check([dir.as_path()]).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidConfig);
        assert!(MountRoots::open([Path::new("/nonexistent-hvsandbox")]).is_err());
    }
}
