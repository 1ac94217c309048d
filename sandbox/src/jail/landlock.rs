//! Landlock, through its three system calls (the structs and constants
//! below are those of `include/uapi/linux/landlock.h`; the libc crate has
//! the call numbers only). A jailed thread restricts itself to opening
//! files and listing directories below the directories it is handed (its
//! sandbox's mount roots) and nothing else by path; TCP bind/connect are
//! refused too where the kernel can. Rules bind to the directories'
//! inodes, not to their names, and a thread's restriction is permanent.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// `landlock_create_ruleset` flag: return the ABI version.
const CREATE_RULESET_VERSION: libc::c_uint = 1 << 0;
/// `landlock_add_rule` rule type: a file hierarchy.
const RULE_PATH_BENEATH: libc::c_int = 1;

/// `LANDLOCK_ACCESS_FS_READ_FILE`: open a file for reading.
const FS_READ_FILE: u64 = 1 << 2;
/// `LANDLOCK_ACCESS_FS_READ_DIR`: open a directory to list it.
const FS_READ_DIR: u64 = 1 << 3;

/// `struct landlock_ruleset_attr` up to `handled_access_net` (ABI 4); an
/// older kernel accepts the larger struct as long as the field it does
/// not know is zero.
#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
}

/// `struct landlock_path_beneath_attr` (packed in the kernel's header).
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Every filesystem right a kernel of Landlock ABI `abi` knows (rights
/// newer kernels add are left unhandled, so allowed).
fn fs_rights(abi: u32) -> u64 {
    match abi {
        1 => (1 << 13) - 1,     // EXECUTE ..= MAKE_SYM
        2 => (1 << 14) - 1,     // + REFER
        3 | 4 => (1 << 15) - 1, // + TRUNCATE
        _ => (1 << 16) - 1,     // + IOCTL_DEV (ABI 5)
    }
}

/// TCP bind and connect (ABI 4 on).
fn net_rights(abi: u32) -> u64 {
    if abi >= 4 {
        0b11
    } else {
        0
    }
}

/// The kernel's Landlock ABI version; `None` when the kernel lacks
/// Landlock or has it disabled (ENOSYS, EOPNOTSUPP). Asked once.
pub(super) fn abi() -> Option<u32> {
    static ABI: OnceLock<Option<u32>> = OnceLock::new();
    *ABI.get_or_init(|| {
        // SAFETY: with a null attribute and size 0 this flag only asks for
        // the version; nothing is read or written.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<RulesetAttr>(),
                0usize,
                CREATE_RULESET_VERSION,
            )
        };
        u32::try_from(v).ok().filter(|&v| v > 0)
    })
}

fn last_error(what: &'static str) -> (&'static str, std::io::Error) {
    (what, std::io::Error::last_os_error())
}

/// Restricts the calling thread for good: no file opened and no directory
/// listed by path, except below `roots`, where reading is allowed. Returns
/// `Ok(false)` without changing anything where the kernel has no Landlock.
/// The thread must have `no_new_privs` set.
pub(super) fn restrict_self(roots: &[BorrowedFd<'_>]) -> Result<bool, (&'static str, std::io::Error)> {
    let Some(abi) = abi() else { return Ok(false) };
    let attr = RulesetAttr { handled_access_fs: fs_rights(abi), handled_access_net: net_rights(abi) };
    // SAFETY: `attr` is a live, initialised struct of the size passed.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0).ok_or_else(|| last_error("landlock_create_ruleset"))?;
    // SAFETY: a new fd that nothing else owns.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd) };
    for root in roots {
        let rule = PathBeneathAttr { allowed_access: FS_READ_FILE | FS_READ_DIR, parent_fd: root.as_raw_fd() };
        // SAFETY: `rule` is a live, initialised struct; both fds are open
        // for the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                ruleset.as_raw_fd(),
                RULE_PATH_BENEATH,
                &rule as *const PathBeneathAttr,
                0u32,
            )
        };
        if r != 0 {
            return Err(last_error("landlock_add_rule"));
        }
    }
    // SAFETY: restricts only the calling thread, with a ruleset fd we own.
    if unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0u32) } != 0 {
        return Err(last_error("landlock_restrict_self"));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_grow_with_the_abi() {
        assert_eq!(fs_rights(1), 0x1fff);
        assert_eq!(fs_rights(3), 0x7fff);
        assert_eq!(fs_rights(7), 0xffff);
        assert_eq!(net_rights(3), 0);
        assert_eq!(net_rights(4), 3);
        assert_eq!(std::mem::size_of::<PathBeneathAttr>(), 12);
    }
}
