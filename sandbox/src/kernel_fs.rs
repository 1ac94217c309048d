//! Kernel filesystems below a mount. procfs, sysfs, cgroupfs, devtmpfs
//! and the like hold the host kernel's state, not data — with `/` mounted,
//! `proc/<pid>/mem` of the sandboxing process itself, other processes'
//! environments — so the file service does not enter them unless the
//! caller opted in for that mount.
//!
//! Two ways to tell, for the two threads that ask:
//!
//! * A mount root is opened on the caller's thread, which may call
//!   `fstatfs`: the superblock's magic number says ([`of_root`]).
//! * A name the guest looks up is opened on the vCPU thread, whose
//!   seccomp list has no `fstatfs` (and stays short): there the fd's mount
//!   is found in `/proc/self/fdinfo/<fd>` (`mnt_id`) and its type in
//!   `/proc/self/mountinfo` ([`of_mount`]), with `openat`/`pread64`/`close`
//!   only. That costs two procfs reads, so the file service asks only when
//!   a name's device differs from its directory's (a mount crossing, or
//!   overlayfs's per-file devices) and remembers the answer per device for
//!   the run.
//!
//! A mount that is not in this process's table (one of another mount
//! namespace, or detached since) is refused: nothing says what it is.

use std::collections::BTreeMap;
use std::ffi::CString;
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
];

/// The magic of tmpfs, which devtmpfs shares.
const TMPFS_MAGIC: u64 = 0x0102_1994;

/// Largest `/proc/self/mountinfo` read; a longer one is refused.
const MAX_MOUNTINFO: usize = 16 << 20;

/// The kernel filesystem (its name in [`KERNEL_FS`]) that a mount root
/// `fd` on device `dev` is on, if any. Calls `fstatfs`: caller's thread only.
pub(crate) fn of_root(fd: BorrowedFd<'_>, dev: u64) -> Result<Option<&'static str>, Errno> {
    // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open for the call and `st` is a writable statfs.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last_errno());
    }
    let magic = st.f_type as u64;
    if magic == TMPFS_MAGIC {
        return is_devtmpfs(fd, dev).map(|yes| yes.then_some("devtmpfs"));
    }
    Ok(KERNEL_FS.iter().find(|&&(_, m)| m == magic).map(|&(name, _)| name))
}

/// Whether tmpfs device `dev` (of `fd`) is devtmpfs. devtmpfs is one
/// superblock made at boot and never freed, so its device number is never
/// another tmpfs's: the answer for a device holds for the life of the
/// process, and is kept.
fn is_devtmpfs(fd: BorrowedFd<'_>, dev: u64) -> Result<bool, Errno> {
    static KNOWN: Mutex<BTreeMap<u64, bool>> = Mutex::new(BTreeMap::new());
    let known = || KNOWN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&yes) = known().get(&dev) {
        return Ok(yes);
    }
    let yes = of_mount(fd)? == Some("devtmpfs");
    let mut known = known();
    if known.len() >= 4096 {
        known.clear(); // bounded: plain tmpfs devices come and go
    }
    known.insert(dev, yes);
    Ok(yes)
}

/// The kernel filesystem (its name in [`KERNEL_FS`]) of the mount `fd`
/// (any fd, `O_PATH` too) is on, if any, from the process's mount table.
/// Uses only `openat`, `pread64` and `close`: safe on the vCPU thread.
pub(crate) fn of_mount(fd: BorrowedFd<'_>) -> Result<Option<&'static str>, Errno> {
    let path = CString::new(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).map_err(|_| libc::EINVAL)?;
    let fdinfo = read_proc(&path, 4096)?;
    let id = mount_id(&fdinfo).ok_or(libc::EACCES)?;
    let mountinfo = read_proc(c"/proc/self/mountinfo", MAX_MOUNTINFO)?;
    let fstype = mount_type(&mountinfo, id).ok_or(libc::EACCES)?;
    Ok(kernel_fs_named(fstype))
}

/// The [`KERNEL_FS`] entry named `fstype`.
pub(crate) fn kernel_fs_named(fstype: &[u8]) -> Option<&'static str> {
    KERNEL_FS.iter().find(|&&(name, _)| name.as_bytes() == fstype).map(|&(name, _)| name)
}

/// A whole procfs file of at most `max` bytes (longer is `EFBIG`).
fn read_proc(path: &std::ffi::CStr, max: usize) -> Result<Vec<u8>, Errno> {
    let fd = loop {
        // SAFETY: `path` is NUL-terminated; the result is checked below.
        let fd = unsafe { libc::openat(libc::AT_FDCWD, path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: openat returned a new fd that nothing else owns.
            break unsafe { OwnedFd::from_raw_fd(fd) };
        }
        match last_errno() {
            libc::EINTR => continue,
            e => return Err(e),
        }
    };
    let mut out = Vec::new();
    let mut chunk = 4096;
    loop {
        let at = out.len();
        if at >= max {
            return Err(libc::EFBIG);
        }
        chunk = chunk.min(max - at);
        out.resize(at + chunk, 0);
        let n = pread_full(fd.as_fd(), &mut out[at..], at as i64)?;
        out.truncate(at + n);
        if n < chunk {
            return Ok(out);
        }
        chunk = chunk.saturating_mul(2);
    }
}

/// The `mnt_id:` field of an fdinfo file.
pub(crate) fn mount_id(fdinfo: &[u8]) -> Option<u64> {
    let line = fdinfo.split(|&b| b == b'\n').find_map(|l| l.strip_prefix(b"mnt_id:"))?;
    std::str::from_utf8(line).ok()?.trim().parse().ok()
}

/// The filesystem type of mount `id` in a mountinfo file: lines of
/// `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`
/// (paths have their spaces escaped, so fields split on spaces).
pub(crate) fn mount_type(mountinfo: &[u8], id: u64) -> Option<&[u8]> {
    let id = id.to_string();
    mountinfo.split(|&b| b == b'\n').find_map(|line| {
        let mut fields = line.split(|&b| b == b' ');
        if fields.next()? != id.as_bytes() {
            return None;
        }
        fields.skip(5).skip_while(|&f| f != b"-").nth(1)
    })
}
