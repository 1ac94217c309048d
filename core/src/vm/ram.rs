//! Guest RAM: the host mapping behind a VM, made apart from the VM itself
//! so that a fresh VM's RAM can be made, and filled with the privileged
//! tables and the runtime image, on another thread while KVM's side is
//! set up ([`FreshRam`], [`Vm::with_ram`](super::Vm::with_ram)).

use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use hvsandbox_abi as abi;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use super::image::{image_gpa, ProgramImage, NOT_LOADED};
use super::memory::{read_file_to, write_to};
use super::{hugetlb, runtime, HugePages, Vm, POOL_FRAMES_AHEAD};
use crate::error::{Result, VmError};
use crate::layout;

/// A VM's RAM: `mem_size` bytes mapped at `host_addr`.
pub(super) struct Ram {
    pub(super) memory: GuestMemoryMmap,
    pub(super) mem_size: u64,
    pub(super) host_addr: u64,
    /// Hugetlb pages back the middle of RAM ([`HugePages`]).
    pub(super) huge_backed: bool,
    /// The length of the program image a [`RamLoader`] wrote in, for the
    /// boot that finds it there ([`NOT_LOADED`]: none).
    pub(super) loaded: Arc<AtomicU64>,
}

impl Ram {
    /// Maps `mem_size` bytes (a multiple of 2 MiB): anonymous and zero, or
    /// a private mapping of `backing` (a snapshot's memory file).
    pub(super) fn map(mem_size: u64, backing: Option<BorrowedFd<'_>>, huge: HugePages) -> Result<Ram> {
        if !mem_size.is_multiple_of(abi::HUGE_PAGE_SIZE) {
            return Err(VmError::MemorySize { size: mem_size, reason: "not a multiple of 2 MiB" });
        }
        if !(abi::MIN_MEMORY..=abi::MAX_MEMORY).contains(&mem_size) {
            return Err(VmError::MemorySize { size: mem_size, reason: "outside 16 MiB ..= 16 GiB" });
        }
        let region = match backing {
            None => MmapRegion::<()>::build(
                None,
                mem_size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE,
            ),
            Some(fd) => {
                let file = std::fs::File::from(fd.try_clone_to_owned().map_err(|e| VmError::MemoryMap(e.to_string()))?);
                MmapRegion::<()>::build(
                    Some(vm_memory::FileOffset::new(file, 0)),
                    mem_size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_NORESERVE,
                )
            }
        }
        .map_err(|e| VmError::MemoryMap(e.to_string()))?;
        let host_addr = region.as_ptr() as u64;
        // Transparent huge pages for guest RAM: the guest's first touch of
        // a frame costs one host fault per 2 MiB instead of per 4 KiB
        // (measured: busybox echo cold 3.0 -> 2.1 ms). Advice only: where
        // the host has THP off, nothing changes. But not the first 2 MiB
        // (the CPU tables, hypercall block, stacks, boot info, arguments
        // and the host-built page tables): a run touches a few dozen of
        // its pages, and zeroing a huge page costs ~280 us of host CPU
        // (measured), more than faulting those pages one by one.
        // Nor the page-table pool at the top (`abi::pt_pool_start`): a run
        // uses a handful of its frames (busybox: 15 pages), KVM reads them
        // first (the host maps the huge zero page) and the guest's first
        // write then costs a whole huge page (one of the three a CLI
        // `busybox true` had zeroed, measured with /proc/vmstat).
        let low = abi::HUGE_PAGE_SIZE as usize;
        let pool = abi::pt_pool_start(mem_size) as usize;
        // SAFETY: advice on parts of a mapping we own, within its length
        // (at least 16 MiB; the pool lies above the first 2 MiB).
        unsafe {
            libc::madvise(region.as_ptr().cast(), low, libc::MADV_NOHUGEPAGE);
            libc::madvise(region.as_ptr().add(low).cast(), pool - low, libc::MADV_HUGEPAGE);
            libc::madvise(region.as_ptr().add(pool).cast(), mem_size as usize - pool, libc::MADV_NOHUGEPAGE);
        }
        // Or the pool's pages in the middle, where asked (after the advice,
        // which they replace): see `hugetlb`.
        let huge_backed = match (backing, hugetlb::huge_range(mem_size)) {
            (None, Some((start, end))) => hugetlb::back(host_addr, start, end, huge)?,
            _ => false,
        };
        // The pool's first frames, which the runtime takes in order, are
        // made present now in fresh RAM. The runtime reads a new table
        // frame before it writes it (it zeroes it entry by entry): on a
        // page the host has not allocated, KVM then maps the host's zero
        // page for the read, faults again for the write and once more
        // after the copy, three faults of ~15 µs here where a present page
        // takes one (a cold busybox `true`: 50 of its ~240 faults were the
        // pool's 17 frames). Advice only; a snapshot's RAM has the frames
        // it used already.
        if backing.is_none() {
            let len = POOL_FRAMES_AHEAD.min(mem_size as usize - pool);
            // SAFETY: as above; the range lies inside the mapping.
            unsafe { libc::madvise(region.as_ptr().add(pool).cast(), len, libc::MADV_POPULATE_WRITE) };
        }
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| VmError::MemoryMap("region overflows".into()))?;
        let memory = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| VmError::MemoryMap(e.to_string()))?;
        Ok(Ram { memory, mem_size, host_addr, huge_backed, loaded: Arc::new(AtomicU64::new(NOT_LOADED)) })
    }

    fn write(&self, gpa: u64, bytes: &[u8]) -> Result<()> {
        super::memory::write_to(&self.memory, gpa, bytes)
    }
}

/// A fresh VM's RAM, ready for its VM: zero, with the privileged tables
/// and the runtime image written in, and the host memory its boot touches
/// first faulted in. Made on any thread (it needs no KVM), and then given
/// to [`Vm::with_ram`](super::Vm::with_ram) on the VM's.
pub struct FreshRam {
    pub(super) ram: Ram,
}

impl FreshRam {
    /// `mem_size` bytes (a multiple of 2 MiB between 16 MiB and 16 GiB),
    /// with the hugetlb pool's pages as `huge` says.
    pub fn new(mem_size: u64, huge: HugePages) -> Result<FreshRam> {
        let ram = Ram::map(mem_size, None, huge)?;
        let runtime = runtime()?;
        let (tables, tables_end) = layout::page_tables(mem_size);
        debug_assert!(tables_end <= abi::PAGE_TABLES_GPA + abi::PAGE_TABLES_MAX);
        for page in tables.iter().chain([layout::gdt(), layout::tss()].iter()) {
            ram.write(page.gpa, &page.bytes())?;
        }
        let h = &runtime.header;
        let idt = layout::idt(h.exception_stubs, h.exception_stub_stride);
        ram.write(idt.gpa, &idt.bytes())?;
        ram.write(abi::RUNTIME_GPA, runtime.bytes)?;
        // The host memory the program's image is copied to (the top of the
        // free frames; one huge page where the host has them), faulted in
        // as the runtime's boot does for the memory it touches.
        ram.write(abi::pt_pool_start(mem_size) - abi::PAGE_SIZE, &[0])?;
        Ok(FreshRam { ram })
    }

    /// A loader of the program's image into this RAM, for another thread
    /// while this one makes the VM (see [`RamLoader`]).
    pub fn loader(&self) -> RamLoader {
        RamLoader {
            memory: self.ram.memory.clone(),
            host_addr: self.ram.host_addr,
            mem_size: self.ram.mem_size,
            loaded: self.ram.loaded.clone(),
        }
    }
}

/// Writes a program's image into a [`FreshRam`] where
/// [`Vm::boot`](super::Vm::boot) puts one, from another thread while the first makes
/// the VM over that RAM (KVM's VM and vCPU take ~1 ms here, the image's
/// copy ~0.3 ms for busybox's 2 MB): the boot is then given
/// [`ProgramImage::Loaded`] and copies nothing. It keeps the RAM mapped
/// until it is dropped.
pub struct RamLoader {
    memory: GuestMemoryMmap,
    host_addr: u64,
    mem_size: u64,
    loaded: Arc<AtomicU64>,
}

impl RamLoader {
    /// Writes `image` in (not an image loaded already).
    pub fn load(&self, image: &ProgramImage<'_>) -> Result<()> {
        let len = image.len();
        let gpa = image_gpa(self.mem_size, len)?;
        match *image {
            ProgramImage::Bytes(bytes) => write_to(&self.memory, gpa, bytes)?,
            ProgramImage::File { fd, len } => {
                read_file_to(&self.memory, self.host_addr, self.mem_size, (gpa, fd, 0, len))?
            }
            ProgramImage::Loaded { .. } => {
                return Err(VmError::ImageRead(std::io::Error::other("an image loaded already cannot be loaded")))
            }
        }
        self.loaded.store(len, Ordering::SeqCst);
        Ok(())
    }
}

/// How close the guest's frame frontier must come to a 2 MiB block for
/// a [`RamWarmer`] to fault it in: near enough that the guest will most
/// likely take it soon (a run that ends short of it does not wait for a
/// block it never needed), far enough to be ahead of it.
const WARM_LEAD: u64 = 512 << 10;

/// Faults in the host memory of a VM's RAM just above the guest's frame
/// frontier ([`abi::RuntimeStats::frame_frontier`]) ahead of the guest,
/// from another thread while the vCPU runs: a fresh huge page's first
/// touch takes ~0.3 ms, and up to ~15 ms on a host that has handed its
/// free memory back to its hypervisor, and the vCPU would wait for it.
/// It keeps the VM's RAM mapped until it is dropped.
pub struct RamWarmer {
    memory: GuestMemoryMmap,
    host_addr: u64,
    /// The next block it may fault in, and where blocks stop (the
    /// page-table pool, which is not in huge pages).
    next: u64,
    limit: u64,
    vm: Weak<()>,
}

impl Vm {
    /// A warmer of this VM's RAM (see [`RamWarmer`]); None where there is
    /// nothing to warm: RAM from the hugetlb pool is there already.
    pub fn ram_warmer(&self) -> Option<RamWarmer> {
        (!self.huge_backed).then(|| RamWarmer {
            memory: self.memory.clone(),
            host_addr: self.host_addr,
            // The first 2 MiB and the runtime's own block are in use.
            next: 2 * abi::HUGE_PAGE_SIZE,
            limit: abi::pt_pool_start(self.mem_size),
            vm: Arc::downgrade(&self.alive),
        })
    }
}

impl RamWarmer {
    /// Whether its VM still lives.
    pub fn vm_alive(&self) -> bool {
        self.vm.strong_count() > 0
    }

    /// Faults in the next block if the guest's frontier has come within
    /// 512 KiB of it; returns whether it did (look again soon).
    pub fn step(&mut self) -> bool {
        let at = abi::STATS_GPA + std::mem::offset_of!(abi::RuntimeStats, frame_frontier) as u64;
        let frontier = self.memory.read_obj::<u64>(GuestAddress(at)).unwrap_or(0);
        let Some(block) = block_to_warm(frontier, self.next, self.limit) else { return false };
        // SAFETY: advice on a 2 MiB block inside the RAM mapping, which
        // `memory` keeps mapped; it only faults pages in (their contents
        // stay as they are).
        unsafe {
            libc::madvise(
                (self.host_addr + block) as *mut libc::c_void,
                abi::HUGE_PAGE_SIZE as usize,
                libc::MADV_POPULATE_WRITE,
            )
        };
        self.next = block + abi::HUGE_PAGE_SIZE;
        true
    }
}

/// The block (guest-physical) to fault in when the guest's frontier is
/// at `frontier` (the guest's word, any value), `next` is the first block
/// not faulted in yet and blocks stop at `limit`: `next`, once the
/// frontier is within [`WARM_LEAD`] of it.
fn block_to_warm(frontier: u64, next: u64, limit: u64) -> Option<u64> {
    (frontier.saturating_add(WARM_LEAD) >= next && next.saturating_add(abi::HUGE_PAGE_SIZE) <= limit).then_some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB2: u64 = abi::HUGE_PAGE_SIZE;

    #[test]
    fn blocks_are_warmed_just_ahead_of_the_frontier_and_never_past_ram() {
        let limit = 10 * MB2;
        // A frontier well inside the runtime's block: nothing yet.
        assert_eq!(block_to_warm(MB2 + 0x10_0000, 2 * MB2, limit), None);
        // Within the lead of the next block: that block.
        assert_eq!(block_to_warm(2 * MB2 - WARM_LEAD, 2 * MB2, limit), Some(2 * MB2));
        assert_eq!(block_to_warm(3 * MB2 + 5, 2 * MB2, limit), Some(2 * MB2));
        // Blocks stop at the limit, whatever the guest says.
        assert_eq!(block_to_warm(u64::MAX, 9 * MB2, limit), Some(9 * MB2));
        assert_eq!(block_to_warm(u64::MAX, 10 * MB2, limit), None);
        assert_eq!(block_to_warm(u64::MAX, u64::MAX - 5, limit), None);
        assert_eq!(block_to_warm(0, 2 * MB2, limit), None);
    }
}
