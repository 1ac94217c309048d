//! Guest RAM from the host's hugetlb pool (`vm.nr_hugepages`), where the
//! caller asks for it.
//!
//! Why: fresh anonymous memory is a fresh VM's most variable cost on
//! hosts that are themselves VMs and hand freed memory back to their own
//! hypervisor (free page reporting). Measured on such a host (16 MiB
//! touched a page at a time by a fresh process, a second after the last
//! run): 4 KiB pages 8.3 ms, transparent huge pages 14–36 ms, hugetlb
//! pages 1.4–1.6 ms. The pool's pages stay backed, so a fault costs only
//! the zeroing of 2 MiB.
//!
//! Only the middle of RAM is taken from the pool: the first 2 MiB (the
//! host-built tables, stacks and boot information, of which a run touches
//! a few dozen pages) and the page-table pool at the top stay 4 KiB pages,
//! as without hugetlb. A VM that copies a snapshot into its RAM can be
//! backed so too; one that maps a snapshot copy-on-write cannot (its RAM
//! is the snapshot's file).

use std::ffi::c_void;

use hvsandbox_abi as abi;

use crate::error::{Result, VmError};

/// Whether a fresh VM's RAM comes from the host's hugetlb pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum HugePages {
    /// Ordinary anonymous memory (transparent huge pages where the host
    /// has them): the default.
    #[default]
    Off,
    /// From the pool when it can hold the VM's RAM now, else as `Off`.
    Prefer,
    /// From the pool, or the VM is not made
    /// ([`VmError::HugePages`]).
    Require,
}

impl HugePages {
    /// The setting's name, as the CLI and the bindings spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            HugePages::Off => "off",
            HugePages::Prefer => "prefer",
            HugePages::Require => "require",
        }
    }

    /// The setting named `s` (`off`, `prefer`, `require`).
    pub fn parse(s: &str) -> Option<HugePages> {
        match s {
            "off" => Some(HugePages::Off),
            "prefer" => Some(HugePages::Prefer),
            "require" => Some(HugePages::Require),
            _ => None,
        }
    }
}

/// The part of guest RAM of `mem_size` bytes hugetlb pages back: whole
/// 2 MiB pages from the end of the first 2 MiB to the page-table pool.
pub(super) fn huge_range(mem_size: u64) -> Option<(u64, u64)> {
    let start = abi::HUGE_PAGE_SIZE;
    let end = abi::pt_pool_start(mem_size) / abi::HUGE_PAGE_SIZE * abi::HUGE_PAGE_SIZE;
    (start < end).then_some((start, end))
}

/// Puts hugetlb pages under guest RAM `[start, end)` of the mapping at
/// `host_addr` (ordinary anonymous memory the caller owns, nothing in it
/// yet). The pool's pages are reserved for the whole range now (no
/// `MAP_NORESERVE`), so a fault can never find the pool empty (which
/// would be SIGBUS for the host process); a pool that cannot hold the
/// range fails here. The pages are moved into place with `mremap`, which
/// either replaces the range whole or leaves it as it was. Returns
/// whether the range is backed so; `Require` turns a failure into an
/// error.
pub(super) fn back(host_addr: u64, start: u64, end: u64, mode: HugePages) -> Result<bool> {
    if mode == HugePages::Off {
        return Ok(false);
    }
    let failed = |why: String| match mode {
        HugePages::Require => Err(VmError::HugePages(why)),
        _ => Ok(false),
    };
    let len = (end - start) as usize;
    let target = host_addr + start;
    if !target.is_multiple_of(abi::HUGE_PAGE_SIZE) {
        return failed(format!("guest RAM is mapped at {host_addr:#x}, not on a 2 MiB boundary"));
    }
    // SAFETY: a new private anonymous mapping at an address the kernel
    // picks; nothing else refers to it.
    let pages = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    if pages == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        return failed(format!(
            "the host's hugetlb pool cannot hold {} MiB of guest RAM ({e}; see vm.nr_hugepages and HugePages_Free \
             in /proc/meminfo)",
            len >> 20
        ));
    }
    // SAFETY: moves the mapping made above (exactly `len` bytes) over
    // `[target, target + len)`, which lies inside guest RAM's mapping that
    // the caller owns and nothing has used yet; on failure both stay.
    let moved =
        unsafe { libc::mremap(pages, len, len, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, target as *mut c_void) };
    if moved == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        // SAFETY: the mapping made above, not moved.
        unsafe { libc::munmap(pages, len) };
        return failed(format!("cannot place hugetlb pages under guest RAM: {e}"));
    }
    // A child the host process forks (a Python program using the binding,
    // say) gets no copy: a copy-on-write fault of a hugetlb page in it can
    // find the pool empty. Advice; the guest's memory is not the child's
    // business.
    // SAFETY: advice on the range just placed, inside the mapping.
    unsafe { libc::madvise(target as *mut c_void, len, libc::MADV_DONTFORK) };
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in [HugePages::Off, HugePages::Prefer, HugePages::Require] {
            assert_eq!(HugePages::parse(m.as_str()), Some(m));
        }
        assert_eq!(HugePages::parse("on"), None);
        assert_eq!(HugePages::default(), HugePages::Off);
    }

    #[test]
    fn the_range_is_whole_huge_pages_between_the_tables_and_the_pool() {
        // 64 MiB: the pool is the top 4 MiB.
        assert_eq!(huge_range(64 << 20), Some((2 << 20, 60 << 20)));
        // 100 MiB: the pool starts at 93.75 MiB; the range stops at 92.
        assert_eq!(huge_range(100 << 20), Some((2 << 20, 92 << 20)));
        // 16 MiB: pool 1 MiB, range 2..14 MiB.
        assert_eq!(huge_range(16 << 20), Some((2 << 20, 14 << 20)));
    }

    #[test]
    fn off_leaves_the_memory_alone() {
        assert!(!back(0x1000, 2 << 20, 4 << 20, HugePages::Off).unwrap());
    }

    #[test]
    fn a_misaligned_mapping_is_refused_or_skipped() {
        assert!(!back(0x1000, 2 << 20, 4 << 20, HugePages::Prefer).unwrap());
        assert!(matches!(back(0x1000, 2 << 20, 4 << 20, HugePages::Require), Err(VmError::HugePages(_))));
    }
}
