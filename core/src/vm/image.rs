//! The program image: what a boot is given ([`ProgramImage`]) and where
//! it goes in guest RAM ([`image_gpa`]), for the boot (`boot.rs`) and for
//! a loader that writes it in ahead of the boot (`ram.rs`).

use std::os::fd::BorrowedFd;

use hvsandbox_abi as abi;

use crate::error::{Result, VmError};

/// A program file at least this large goes 2 MiB-aligned into guest RAM
/// (up to 2 MiB below the top of the free frames): the runtime can then
/// map the whole 2 MiB ranges of its read-only segments as 2 MiB pages,
/// which KVM maps with one fault each where 4 KiB pages take one per 8
/// (`node`'s 99 MB file: ~760 faults on its code and read-only data).
/// A smaller file has no such range.
const ALIGNED_IMAGE_MIN: u64 = 2 * abi::HUGE_PAGE_SIZE;

/// Where a program image of `len` bytes goes in guest RAM of `mem_size`
/// bytes: at the top of the free frames, below the page-table pool, so
/// that a runtime booted ahead of it (which allocates from the bottom)
/// need not know its size. At least 4 MiB are left to the runtime for
/// the program's memory.
pub(super) fn image_gpa(mem_size: u64, len: u64) -> Result<u64> {
    let mut gpa = abi::pt_pool_start(mem_size).saturating_sub(len) & !(abi::PAGE_SIZE - 1);
    if len >= ALIGNED_IMAGE_MIN {
        gpa &= !(abi::HUGE_PAGE_SIZE - 1);
    }
    if gpa < abi::IMAGE_GPA + (4 << 20) {
        return Err(VmError::ImageTooLarge { len, mem: mem_size });
    }
    Ok(gpa)
}

/// The program's ELF file, as [`Vm::boot`](super::Vm::boot) copies it into guest RAM.
#[derive(Clone, Copy, Debug)]
pub enum ProgramImage<'a> {
    /// The file's bytes, in memory.
    Bytes(&'a [u8]),
    /// The first `len` bytes of an open file, read straight into guest RAM
    /// (no copy of it in this process). A file shorter than `len` by then
    /// is a [`VmError::ImageRead`].
    File { fd: BorrowedFd<'a>, len: u64 },
    /// `len` bytes its [`RamLoader`](super::RamLoader) wrote into the VM's
    /// RAM already. A VM whose loader wrote no image of that length since
    /// its last boot is a [`VmError::ImageRead`].
    Loaded { len: u64 },
}

impl ProgramImage<'_> {
    pub fn len(&self) -> u64 {
        match self {
            ProgramImage::Bytes(b) => b.len() as u64,
            ProgramImage::File { len, .. } | ProgramImage::Loaded { len } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A RAM's `loaded` (`ram.rs`) when no image was loaded ahead of its boot.
pub(super) const NOT_LOADED: u64 = u64::MAX;
