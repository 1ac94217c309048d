//! Reset: the vCPU put back in a saved state, and guest RAM put back to a
//! snapshot's, either by mapping its memory file afresh or by copying it
//! back into just the pages a run wrote (found with `PAGEMAP_SCAN`, or the
//! pagemap read page by page), with KVM's shadow page tables dropped (the
//! memory slot deleted and re-added) only when they could be stale.

use std::os::fd::{AsRawFd, BorrowedFd};

use hvsandbox_abi as abi;
use kvm_ioctls::SyncReg;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::{boot::boot_debugregs, ram_slot, Vm};
use crate::error::{Result, VmError};
use crate::isolation::ResetState;
use crate::layout::{PTE_ADDR, PTE_NX, PTE_P, PTE_PS, PTE_RW, PTE_US};

const PAGE: usize = abi::PAGE_SIZE as usize;

/// Most page indexes [`Vm::reset_memory_by_copy`] reports.
pub const MAX_WRITTEN: usize = 4096;

/// A vCPU's architectural state, as a snapshot keeps it.
pub struct VcpuState {
    pub regs: kvm_bindings::kvm_regs,
    pub sregs: kvm_bindings::kvm_sregs,
    pub xsave: kvm_bindings::kvm_xsave,
    pub xcrs: kvm_bindings::kvm_xcrs,
}

impl Clone for VcpuState {
    fn clone(&self) -> Self {
        VcpuState {
            regs: self.regs,
            sregs: self.sregs,
            // SAFETY: kvm_xsave is plain old data (an array of u32s and,
            // in newer headers, a zero-length trailer); a bitwise copy is
            // a valid value.
            xsave: unsafe { std::ptr::read(&self.xsave) },
            xcrs: self.xcrs,
        }
    }
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState").field("rip", &self.regs.rip).field("rsp", &self.regs.rsp).finish()
    }
}

impl Vm {
    /// The vCPU's state (general, segment, FPU/SSE/AVX and XCR registers).
    pub fn save_vcpu(&self) -> Result<VcpuState> {
        Ok(VcpuState {
            regs: self.vcpu.get_regs().map_err(VmError::kvm("KVM_GET_REGS"))?,
            sregs: self.vcpu.get_sregs().map_err(VmError::kvm("KVM_GET_SREGS"))?,
            xsave: self.vcpu.get_xsave().map_err(VmError::kvm("KVM_GET_XSAVE"))?,
            xcrs: self.vcpu.get_xcrs().map_err(VmError::kvm("KVM_GET_XCRS"))?,
        })
    }

    /// Puts the vCPU back in a saved state.
    ///
    /// Everything a run can change is put back, including what only a
    /// program that took ring 0 in the guest can reach (MSRs, debug
    /// registers, XCR0): inside the VM the program is as privileged as the
    /// runtime, so the host restores rather than trusts.
    pub fn restore_vcpu(&mut self, state: &VcpuState) -> Result<()> {
        let _ = self.vcpu.set_xcrs(&state.xcrs);
        let reset = self.reset_state()?;
        reset.watched_unchanged(&self.vcpu, &self.watched)?;
        reset.restore_msrs(&self.vcpu)?;
        if !self._system.sync_events {
            self.vcpu.set_vcpu_events(&reset.events).map_err(VmError::kvm("KVM_SET_VCPU_EVENTS"))?;
        }
        self.vcpu.set_debug_regs(&boot_debugregs()).map_err(VmError::kvm("KVM_SET_DEBUGREGS"))?;
        // SAFETY: the xsave area came from KVM_GET_XSAVE (or a validated
        // snapshot file) for a vCPU with the same CPUID.
        unsafe { self.vcpu.set_xsave(&state.xsave) }.map_err(VmError::kvm("KVM_SET_XSAVE"))?;
        if !self._system.sync_regs {
            self.vcpu.set_sregs(&state.sregs).map_err(VmError::kvm("KVM_SET_SREGS"))?;
            self.vcpu.set_regs(&state.regs).map_err(VmError::kvm("KVM_SET_REGS"))?;
            return Ok(());
        }
        // The general and segment registers go in with the next KVM_RUN
        // (KVM_CAP_SYNC_REGS): two ioctls fewer.
        let events = reset.events;
        let sync = self.vcpu.sync_regs_mut();
        sync.regs = state.regs;
        sync.sregs = state.sregs;
        self.vcpu.set_sync_dirty_reg(SyncReg::Register);
        self.vcpu.set_sync_dirty_reg(SyncReg::SystemRegister);
        if self._system.sync_events {
            self.vcpu.sync_regs_mut().events = events;
            self.vcpu.set_sync_dirty_reg(SyncReg::VcpuEvents);
        }
        Ok(())
    }

    pub(super) fn reset_state(&self) -> Result<&ResetState> {
        // Set by the first vCPU's set-up, which every Vm went through.
        self._system.reset.get().ok_or(VmError::RuntimeImage("no vCPU was set up"))
    }

    /// Throws away every change a run made to guest RAM by mapping the
    /// snapshot's memory file afresh, and drops KVM's shadow translations
    /// of the old contents (the memory slot is deleted and re-added).
    pub fn reset_memory(&mut self, memory: BorrowedFd<'_>) -> Result<()> {
        self.without_memory_slot(|vm| vm.map_snapshot_range(0, vm.mem_size, memory))
    }

    /// Deletes the guest RAM memory slot (which drops every shadow
    /// translation KVM built from it), runs `f`, and adds the slot again.
    fn without_memory_slot<T>(&mut self, f: impl FnOnce(&mut Vm) -> Result<T>) -> Result<T> {
        // SAFETY: deleting slot 0 (size 0); the vCPU is not running.
        unsafe { self._vm.set_user_memory_region(ram_slot(self.host_addr, 0)) }
            .map_err(VmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        let result = f(self);
        // SAFETY: the slot describes the guest RAM mapping again (same
        // address and size, owned by `self.memory`).
        unsafe { self._vm.set_user_memory_region(ram_slot(self.host_addr, self.mem_size)) }
            .map_err(VmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        result
    }

    /// Replaces guest RAM `[gpa, gpa + len)` with a fresh private mapping
    /// of the same range of the snapshot's memory file.
    pub(super) fn map_snapshot_range(&self, gpa: u64, len: u64, memory: BorrowedFd<'_>) -> Result<()> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.mem_size => {}
            _ => return Err(VmError::GuestAccess { addr: gpa, len }),
        }
        let at = self.host_addr + gpa;
        // SAFETY: replaces part or all of the guest RAM mapping (inside it,
        // checked above; owned by `self.memory`) with a private mapping of
        // the snapshot file; the vCPU is not running.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                memory.as_raw_fd(),
                gpa as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED || p as u64 != at {
            return Err(VmError::MemoryMap(std::io::Error::last_os_error().to_string()));
        }
        Ok(())
    }

    /// Like [`Vm::reset_memory`], but keeps the run's private pages and
    /// copies the snapshot's contents back into them (found with
    /// `pagemap`: a page the guest wrote is anonymous in the private file
    /// mapping), so the next run's writes to them are not copy-on-write
    /// faults again. `snapshot` is the snapshot file mapped read-only,
    /// `pagemap` an open `/proc/self/pagemap`. Returns the pages copied.
    /// With `written`, the indexes of the pages the run wrote are pushed
    /// there too (at most [`MAX_WRITTEN`]).
    pub fn reset_memory_by_copy(
        &mut self,
        snapshot: &[u8],
        pagemap: BorrowedFd<'_>,
        written: Option<&mut Vec<u32>>,
    ) -> Result<usize> {
        if snapshot.len() != self.mem_size as usize {
            return Err(VmError::Snapshot("snapshot memory of another size".into()));
        }
        let (copied, tables_changed) = copy_back(&self.memory, self.host_addr, snapshot, pagemap, written)?;
        // KVM's shadow page tables mirror the guest's page tables as the
        // guest wrote them; a page-table page changed behind its back
        // (restored above) would leave stale translations. Page tables
        // live only in the host-built range and the runtime's pool, so
        // only a change there needs them all dropped (memory slot
        // replaced); otherwise they still describe the restored memory.
        if tables_changed {
            self.without_memory_slot(|_| Ok(()))?;
        }
        Ok(copied)
    }

    /// Writes each of `pages` (indexes into guest RAM) with what it holds,
    /// from the host: for a VM that maps a snapshot copy-on-write, the
    /// private copies its run would make one fault at a time are made now
    /// (off the run's path).
    pub fn touch_pages(&mut self, pages: &[u32]) {
        for &page in pages {
            let at = GuestAddress(page as u64 * abi::PAGE_SIZE);
            // Pages outside guest RAM are skipped.
            if let Ok(v) = self.memory.read_obj::<u8>(at) {
                let _ = self.memory.write_obj(v, at);
            }
        }
    }
}

/// Copies `snapshot` back into every page of guest RAM (`memory`, mapped
/// at `host_addr`, as long as `snapshot`) that the guest wrote; returns
/// how many, and whether any page that may hold a page table differed.
fn copy_back(
    memory: &GuestMemoryMmap,
    host_addr: u64,
    snapshot: &[u8],
    pagemap: BorrowedFd<'_>,
    mut written: Option<&mut Vec<u32>>,
) -> Result<(usize, bool)> {
    let len = snapshot.len();
    let mut copied = 0;
    let mut tables_changed = false;
    let mut failed = None;
    let mut restore = |at: usize| -> Result<()> {
        let gpa = GuestAddress(at as u64);
        let bad = || VmError::GuestAccess { addr: at as u64, len: PAGE as u64 };
        let was = snapshot.get(at..at + PAGE).ok_or_else(bad)?;
        if abi::may_hold_page_table(at as u64, len as u64) {
            let mut now = [0u8; PAGE];
            memory.read_slice(&mut now, gpa).map_err(|_| bad())?;
            if now == was {
                return Ok(());
            }
            tables_changed |= !only_narrowed(&now, was);
        }
        memory.write_slice(was, gpa).map_err(|_| bad())?;
        copied += 1;
        Ok(())
    };
    let mut each = |at: usize| {
        if let Some(w) = written.as_deref_mut().filter(|w| w.len() < MAX_WRITTEN) {
            w.push((at / PAGE) as u32);
        }
        if failed.is_none() {
            failed = restore(at).err();
        }
    };
    let scanned = written_pages_scan(host_addr, len, pagemap, &mut |from, to| {
        for at in (from..to).step_by(PAGE) {
            each(at);
        }
    })?;
    if !scanned {
        written_pages_read(host_addr, len, pagemap, &mut each)?;
    }
    match failed {
        Some(e) => Err(e),
        None => Ok((copied, tables_changed)),
    }
}

/// Whether every entry of a page-table page that differs between `now`
/// (as the run left it) and `was` (the snapshot) only gives *less* than
/// the snapshot: not present, or the same frame with no permission the
/// snapshot entry lacks. Restoring such a page behind KVM's back is safe:
/// a shadow entry KVM may still hold from `now` allows no access that the
/// restored entry does not, and anything missing is refilled from the
/// guest's tables on the next fault. Anything else (a new or moved mapping,
/// a wider permission) needs the shadow tables dropped.
fn only_narrowed(now: &[u8], was: &[u8]) -> bool {
    now.chunks_exact(8).zip(was.chunks_exact(8)).all(|(n, w)| {
        let n = u64::from_le_bytes(n.try_into().unwrap_or_default());
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        if n == w || n & PTE_P == 0 {
            return true;
        }
        w & PTE_P != 0
            && n & PTE_ADDR == w & PTE_ADDR
            && n & PTE_PS == w & PTE_PS
            && n & (PTE_RW | PTE_US) & !w == 0
            && (w & PTE_NX == 0 || n & PTE_NX != 0)
    })
}

/// `PAGEMAP_SCAN` (Linux 6.7): `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
const PAGE_IS_FILE: u64 = 1 << 2;
const PAGE_IS_PRESENT: u64 = 1 << 3;
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// `struct pm_scan_arg` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PageRegion {
    start: u64,
    end: u64,
    categories: u64,
}

/// Whether this kernel has `PAGEMAP_SCAN` (cleared at the first refusal).
static SCAN_WORKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Calls `f(from, to)` (offsets into the mapping at `addr`) for every run
/// of pages of this private file mapping that were written (their page is
/// anonymous now: present or swapped, and not the file's). Asks the kernel
/// for just those ranges with `PAGEMAP_SCAN`; returns false, having called
/// nothing, when the kernel lacks it.
fn written_pages_scan(addr: u64, len: usize, pagemap: BorrowedFd<'_>, f: &mut dyn FnMut(usize, usize)) -> Result<bool> {
    pages_scan(addr, len, pagemap, Pages::Written, f)
}

/// Which pages [`pages_scan`] reports.
#[derive(Clone, Copy)]
pub(super) enum Pages {
    /// Written (anonymous in a private file mapping).
    Written,
    /// Present in the host's page tables: the file's or written.
    Present,
}

/// Calls `f(from, to)` for every run of `which` pages of the mapping at
/// `addr` with `PAGEMAP_SCAN`; returns false, having called nothing, when
/// the kernel lacks it.
pub(super) fn pages_scan(
    addr: u64,
    len: usize,
    pagemap: BorrowedFd<'_>,
    which: Pages,
    f: &mut dyn FnMut(usize, usize),
) -> Result<bool> {
    if !SCAN_WORKS.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(false);
    }
    // Written: present or swapped, and not the file's page.
    let (not_file, present) = match which {
        Pages::Written => (PAGE_IS_FILE, PAGE_IS_PRESENT | PAGE_IS_SWAPPED),
        Pages::Present => (0, PAGE_IS_PRESENT),
    };
    let mut regions = [PageRegion::default(); 64];
    let end = addr + len as u64;
    let mut from = addr;
    while from < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: from,
            end,
            vec: regions.as_mut_ptr() as u64,
            vec_len: regions.len() as u64,
            category_inverted: not_file,
            category_mask: not_file,
            category_anyof_mask: present,
            return_mask: present,
            ..PmScanArg::default()
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len`
        // regions into our buffer and `walk_end` into `arg`.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg as *mut PmScanArg) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if from == addr && matches!(e.raw_os_error(), Some(libc::ENOTTY | libc::EINVAL | libc::EPERM)) {
                SCAN_WORKS.store(false, std::sync::atomic::Ordering::Relaxed);
                return Ok(false);
            }
            return Err(VmError::Snapshot(format!("PAGEMAP_SCAN: {e}")));
        }
        for r in &regions[..(n as usize).min(regions.len())] {
            let (a, b) = (r.start.clamp(addr, end), r.end.clamp(addr, end));
            if a < b {
                f((a - addr) as usize, (b - addr) as usize);
            }
        }
        if arg.walk_end <= from {
            return Err(VmError::Snapshot("PAGEMAP_SCAN made no progress".into()));
        }
        from = arg.walk_end;
    }
    Ok(true)
}

/// The same as [`written_pages_scan`] by reading every page's pagemap
/// entry (older kernels): calls `f(offset)` for each written page.
fn written_pages_read(addr: u64, len: usize, pagemap: BorrowedFd<'_>, f: &mut dyn FnMut(usize)) -> Result<()> {
    const CHUNK: usize = 4096;
    let pages = len / PAGE;
    let mut entries = vec![0u64; CHUNK];
    let mut first = 0;
    while first < pages {
        let n = CHUNK.min(pages - first);
        let off = ((addr as usize / PAGE) + first) * 8;
        // SAFETY: pread into our buffer of n u64 entries.
        let got = unsafe { libc::pread(pagemap.as_raw_fd(), entries.as_mut_ptr().cast(), n * 8, off as libc::off_t) };
        if got != (n * 8) as isize {
            return Err(VmError::Snapshot(format!("pagemap read: {}", std::io::Error::last_os_error())));
        }
        for (i, &e) in entries[..n].iter().enumerate() {
            // Present or swapped, and not a page of the file: written.
            if e & (3 << 62) != 0 && e & (1 << 61) == 0 {
                f((first + i) * PAGE);
            }
        }
        first += n;
    }
    Ok(())
}
