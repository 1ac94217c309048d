//! Kernel filesystems below a mount. procfs, sysfs, cgroupfs, devtmpfs
//! and the like hold the host kernel's state, not data — with `/` mounted,
//! `proc/<pid>/mem` of the sandboxing process itself, other processes'
//! environments — so the file service does not enter them unless the
//! caller opted in for that mount.
//!
//! What an fd is on is told by `fstatfs` (the superblock's magic number;
//! it works on `O_PATH` fds, and for overlayfs it names overlayfs, whatever
//! device a file reports). devtmpfs shares tmpfs's magic: it is told apart
//! by its device number, one superblock made at boot, found in the
//! process's mount table. That table is read only on the caller's thread
//! (the vCPU thread may not open `/proc`: Landlock keeps it below its
//! mount roots) when a mount root is opened, again only when the kernel
//! says the table changed (`poll` on a `/proc/self/mountinfo` fd kept
//! open), so the vCPU thread only looks the device up. The file service
//! asks only when a name's device differs from its directory's (a mount
//! crossing, or overlayfs's per-file devices) and remembers the answer per
//! device for the run.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

use super::{last_errno, pread_full, Errno};

/// The kernel filesystems a mount does not enter unless opted in: their
/// type as `/proc/self/mountinfo` names it, and their `statfs` magic.
#[rustfmt::skip]
pub(crate) const KERNEL_FS: &[(&str, u64)] = &[
    ("proc", 0x9fa0),                // processes' memory, environments, fds; kernel tunables
    ("sysfs", 0x6265_6572),          // devices, drivers, firmware, kernel objects
    ("devtmpfs", TMPFS_MAGIC),       // the host's device nodes (told from tmpfs by its mount type)
    ("devpts", 0x1cd1),              // terminals
    ("cgroup", 0x0027_e0eb),         // control groups (v1), their processes and limits
    ("cpuset", 0x0027_e0eb),         // the v1 cpuset hierarchy mounted by its own name
    ("cgroup2", 0x6367_7270),        // control groups (v2)
    ("debugfs", 0x6462_6720),        // kernel debugging interfaces
    ("tracefs", 0x7472_6163),        // kernel tracing
    ("securityfs", 0x7363_6673),     // LSM policies, TPM event logs
    ("selinuxfs", 0xf97c_ff8c),      // SELinux policy
    ("smackfs", 0x4341_5d53),        // Smack policy
    ("bpf", 0xcafe_4a11),            // pinned BPF programs and maps
    ("configfs", 0x6265_6570),       // kernel object configuration
    ("pstore", 0x6165_676c),         // crash logs of earlier boots
    ("efivarfs", 0xde5e_81e4),       // firmware variables
    ("fusectl", 0x6573_5543),        // FUSE connections
    ("binfmt_misc", 0x4249_4e4d),    // binary format handlers
    ("mqueue", 0x1980_2202),         // POSIX message queues
    ("nsfs", 0x6e73_6673),           // namespace files bind-mounted somewhere
    ("rpc_pipefs", 0x6759_6969),     // NFS's kernel/user-space pipes
    ("nfsd", 0x6e66_7364),           // the NFS server's exports and state
    ("resctrl", 0x0765_5821),        // cache and memory bandwidth allocation
    ("autofs", 0x0187),              // automount points: entering one makes the host mount things
];

/// The magic of tmpfs, which devtmpfs shares.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Largest `/proc/self/mountinfo` read; a longer one is refused.
const MAX_MOUNTINFO: usize = 16 << 20;

/// The kernel filesystem (its name in [`KERNEL_FS`]) that a mount root
/// `fd` on device `dev` is on, if any. Reads the mount table if it
/// changed: caller's thread only.
pub(crate) fn of_root(fd: BorrowedFd<'_>, dev: u64) -> Result<Option<&'static str>, Errno> {
    refresh_devtmpfs()?;
    of_fd(fd, dev)
}

/// The kernel filesystem (its name in [`KERNEL_FS`]) that `fd` (any fd,
/// `O_PATH` too) on device `dev` is on, if any. Uses only `fstatfs` and
/// the devtmpfs devices [`of_root`] found: safe on the vCPU thread.
pub(crate) fn of_fd(fd: BorrowedFd<'_>, dev: u64) -> Result<Option<&'static str>, Errno> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call and `st` is a writable statfs.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_errno());
    }
    let magic = st.f_type as u64;
    if magic == TMPFS_MAGIC {
        let table = DEVTMPFS.lock().unwrap_or_else(|e| e.into_inner());
        // No table read yet: nothing says which tmpfs this is.
        let devices = &table.as_ref().ok_or(libc::EACCES)?.devices;
        return Ok(devices.contains(&dev).then_some("devtmpfs"));
    }
    Ok(KERNEL_FS.iter().find(|&&(_, m)| m == magic).map(|&(name, _)| name))
}

/// The devtmpfs devices of the process's mount table, and the table's fd
/// to learn of changes by.
struct DevTmpfs {
    mountinfo: OwnedFd,
    devices: Vec<u64>,
}

static DEVTMPFS: Mutex<Option<DevTmpfs>> = Mutex::new(None);

/// Reads the mount table's devtmpfs devices, the first time and whenever
/// the table changed since.
fn refresh_devtmpfs() -> Result<(), Errno> {
    let mut table = DEVTMPFS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = table.as_ref() {
        let mut p = libc::pollfd { fd: t.mountinfo.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        // SAFETY: one valid pollfd, no waiting.
        let n = unsafe { libc::poll(&mut p, 1, 0) };
        if n == 0 {
            return Ok(());
        }
    }
    let fd = match table.take() {
        Some(t) => t.mountinfo,
        None => open_proc(c"/proc/self/mountinfo")?,
    };
    let devices = devtmpfs_devices(&read_all(fd.as_fd(), MAX_MOUNTINFO)?);
    *table = Some(DevTmpfs { mountinfo: fd, devices });
    Ok(())
}

/// The devices (`makedev(major, minor)`) of the devtmpfs mounts in a
/// mountinfo file: lines of
/// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`
/// (paths have their spaces escaped, so fields split on spaces).
pub(crate) fn devtmpfs_devices(mountinfo: &[u8]) -> Vec<u64> {
    let mut out: Vec<u64> = mountinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            let fstype = fields.iter().skip(6).skip_while(|&&f| f != b"-").nth(1)?;
            if *fstype != b"devtmpfs" {
                return None;
            }
            let (major, minor) = std::str::from_utf8(fields.get(2)?).ok()?.split_once(':')?;
            Some(libc::makedev(major.parse().ok()?, minor.parse().ok()?))
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn open_proc(path: &std::ffi::CStr) -> Result<OwnedFd, Errno> {
    loop {
        // SAFETY: `path` is NUL-terminated; the result is checked below.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: openat returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        match last_errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// A whole procfs file of at most `max` bytes (longer is `EFBIG`), read
/// from its start.
fn read_all(fd: BorrowedFd<'_>, max: usize) -> Result<Vec<u8>, Errno> {
    let mut out = Vec::new();
    let mut chunk = 4096;
    loop {
        let at = out.len();
        if at >= max {
            return Err(libc::EFBIG);
        }
        chunk = chunk.min(max - at);
        out.resize(at + chunk, 0);
        let n = pread_full(fd, &mut out[at..], at as i64)?;
        out.truncate(at + n);
        if n < chunk {
            return Ok(out);
        }
        chunk = chunk.saturating_mul(2);
    }
}
