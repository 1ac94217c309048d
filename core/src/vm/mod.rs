//! One micro-VM: a KVM VM with one vCPU and one RAM slot, set up so the
//! vCPU starts in 64-bit mode at CPL3 at the guest runtime's entry.

use std::sync::{Arc, Mutex, OnceLock};

use hvsandbox_abi as abi;
use kvm_bindings::{kvm_regs, kvm_segment, kvm_userspace_memory_region, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use std::os::fd::{AsRawFd, BorrowedFd};

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use crate::error::{Result, VmError};
use crate::isolation::{self, ResetState};
use crate::kick;
use crate::layout;
use crate::runtime::RuntimeImage;

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_SYSENTER_CS: u32 = 0x174;
const MSR_SYSENTER_ESP: u32 = 0x175;
const MSR_SYSENTER_EIP: u32 = 0x176;
const MSR_PAT: u32 = 0x277;
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// syscall: CS = 0x10 (kernel), sysret: CS = 0x20 + 16 | 3, SS = 0x20 + 8 | 3.
const STAR: u64 = 0x0023_0010_0000_0000;
/// Flags cleared on `syscall` on hardware KVM: TF, DF, IF, IOPL, AC, NT.
const SFMASK: u64 = 0x4_7700;

const CR0: u64 = 0x8001_0033;
const CR4: u64 = 0x5_0620;
const EFER: u64 = 0xd01;

/// The process-wide handle to /dev/kvm and the CPUID it supports, opened
/// once (opening costs ~22 µs, the CPUID query more).
struct KvmSystem {
    kvm: Kvm,
    /// The CPUID every vCPU gets: what KVM supports, without its
    /// paravirtual leaves ([`isolation`]).
    cpuid: CpuId,
    /// KVM_CAP_SYNC_REGS covers the general and segment registers.
    sync_regs: bool,
    /// ... and the vCPU events.
    sync_events: bool,
    /// KVM_CAP_ENFORCE_PV_FEATURE_CPUID is there.
    enforce_pv: bool,
    /// The MSRs a reset restores, if the host can read them.
    msr_candidates: Vec<u32>,
    /// What a reset writes back, read from the first vCPU set up.
    reset: OnceLock<ResetState>,
}

fn kvm_system() -> Result<Arc<KvmSystem>> {
    static SYSTEM: Mutex<Option<Arc<KvmSystem>>> = Mutex::new(None);
    let mut slot = SYSTEM.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sys) = slot.as_ref() {
        return Ok(sys.clone());
    }
    let kvm = Kvm::new().map_err(VmError::KvmOpen)?;
    let version = kvm.get_api_version();
    if version != 12 {
        return Err(VmError::KvmVersion(version));
    }
    let supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(VmError::kvm("KVM_GET_SUPPORTED_CPUID"))?;
    let cpuid = isolation::hide_pv_leaves(&supported)?;
    let sync = kvm.check_extension_int(kvm_ioctls::Cap::SyncRegs);
    // KVM_SYNC_X86_REGS | KVM_SYNC_X86_SREGS, KVM_SYNC_X86_EVENTS
    let (sync_regs, sync_events) = (sync & 0x3 == 0x3, sync & 0x7 == 0x7);
    let enforce_pv = isolation::can_enforce_pv_cpuid(&kvm);
    let msr_candidates = isolation::candidate_msrs(&kvm)?;
    let sys =
        Arc::new(KvmSystem { kvm, cpuid, sync_regs, sync_events, enforce_pv, msr_candidates, reset: OnceLock::new() });
    *slot = Some(sys.clone());
    Ok(sys)
}

/// The embedded runtime, validated once.
pub fn runtime() -> Result<&'static RuntimeImage> {
    static RUNTIME: OnceLock<std::result::Result<RuntimeImage, &'static str>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            RuntimeImage::embedded().map_err(|e| match e {
                VmError::RuntimeImage(why) => why,
                _ => "invalid",
            })
        })
        .as_ref()
        .map_err(|why| VmError::RuntimeImage(why))
}

/// Checks that KVM can be opened, without creating a VM.
pub fn probe_kvm() -> Result<()> {
    kvm_system().map(|_| ())
}

/// What the program starts with.
#[derive(Clone, Copy, Debug)]
pub struct BootParams<'a> {
    /// The program's ELF file.
    pub image: &'a [u8],
    pub argv: &'a [Vec<u8>],
    pub envp: &'a [Vec<u8>],
    pub random_seed: [u8; 32],
    /// The encoded filesystem manifest ([`abi::fs::ManifestEntry`]
    /// records), placed after argv/envp in the args region; may be empty.
    pub manifest: &'a [u8],
    /// Limits the guest runtime enforces (0: its defaults).
    pub max_processes: u32,
    pub max_open_files: u32,
    /// Ask the runtime to stop for a snapshot right before the program's
    /// first instruction.
    pub snapshot_at_entry: bool,
}

/// Why the vCPU stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmExit {
    /// The guest rang the doorbell with this hypercall number; the
    /// arguments are in the hypercall block ([`Vm::hypercall_args`]).
    Hypercall(u64),
    /// The ring-0 exception handler reported a fault.
    Fault { frame: abi::ExceptionFrame, cr2: u64 },
    /// Triple fault: the guest's own fault handling failed.
    Shutdown,
    /// KVM_RUN was interrupted by a kick (or the caller's stop check).
    Interrupted,
    /// KVM could not execute the guest (e.g. an instruction it cannot
    /// emulate at CPL0).
    InternalError { suberror: u32 },
    /// Anything else the guest did that a well-behaved runtime never does
    /// (MMIO to another address, port I/O, ...).
    Unexpected(String),
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
    const P: u64 = 1;
    const RW: u64 = 1 << 1;
    const US: u64 = 1 << 2;
    const PS: u64 = 1 << 7;
    const NX: u64 = 1 << 63;
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    now.chunks_exact(8).zip(was.chunks_exact(8)).all(|(n, w)| {
        let n = u64::from_le_bytes(n.try_into().unwrap_or_default());
        let w = u64::from_le_bytes(w.try_into().unwrap_or_default());
        if n == w || n & P == 0 {
            return true;
        }
        w & P != 0
            && n & ADDR == w & ADDR
            && n & PS == w & PS
            && n & (RW | US) & !w == 0
            && (w & NX == 0 || n & NX != 0)
    })
}

/// Most page indexes [`Vm::reset_memory_by_copy`] reports.
pub const MAX_WRITTEN: usize = 4096;

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
    if !SCAN_WORKS.load(std::sync::atomic::Ordering::Relaxed) {
        return Ok(false);
    }
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
            category_inverted: PAGE_IS_FILE,
            category_mask: PAGE_IS_FILE,
            category_anyof_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
            return_mask: PAGE_IS_PRESENT | PAGE_IS_SWAPPED,
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
    const PAGE: usize = abi::PAGE_SIZE as usize;
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

/// A VM with one vCPU, ready to run the runtime at CPL3.
///
/// Field order is drop order: the vCPU and VM go before the memory that
/// backs them.
pub struct Vm {
    vcpu: VcpuFd,
    _vm: VmFd,
    memory: GuestMemoryMmap,
    mem_size: u64,
    /// Where `memory` is mapped in this process.
    host_addr: u64,
    runtime: &'static RuntimeImage,
    /// The MSRs every run starts with ([`boot_msrs`]).
    msrs: Msrs,
    /// The values at creation of the MSRs a reset cannot restore, only
    /// check ([`ResetState::watched`]).
    watched: Msrs,
    /// Booted ahead of its program ([`Vm::preboot`]): the runtime waits in
    /// `hc::PROGRAM`.
    waiting: bool,
    _system: Arc<KvmSystem>,
}

impl Vm {
    /// Creates the VM, its RAM (`mem_size` bytes, a multiple of 2 MiB),
    /// the privileged tables and the runtime image, and sets the vCPU up
    /// to enter the runtime at CPL3.
    pub fn new(mem_size: u64) -> Result<Vm> {
        let mut this = Self::create(mem_size, None)?;
        this.write_tables()?;
        Ok(this)
    }

    /// A VM whose RAM is a private (copy-on-write) mapping of `memory`, a
    /// snapshot's memory file of `mem_size` bytes: no copy is made, and
    /// clones of one snapshot share its unchanged pages. Restore the vCPU
    /// with [`Vm::restore_vcpu`] before running.
    pub fn from_snapshot_memory(memory: BorrowedFd<'_>, mem_size: u64) -> Result<Vm> {
        Self::create(mem_size, Some(memory))
    }

    fn create(mem_size: u64, backing: Option<BorrowedFd<'_>>) -> Result<Vm> {
        if !mem_size.is_multiple_of(abi::HUGE_PAGE_SIZE) {
            return Err(VmError::MemorySize { size: mem_size, reason: "not a multiple of 2 MiB" });
        }
        if !(abi::MIN_MEMORY..=abi::MAX_MEMORY).contains(&mem_size) {
            return Err(VmError::MemorySize { size: mem_size, reason: "outside 16 MiB ..= 16 GiB" });
        }
        let runtime = runtime()?;
        let system = kvm_system()?;
        let vm = retry_eintr(|| system.kvm.create_vm()).map_err(VmError::kvm("KVM_CREATE_VM"))?;

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
        // the host has THP off, nothing changes.
        // SAFETY: advice on a mapping we own, covering exactly its length.
        unsafe { libc::madvise(region.as_ptr().cast(), mem_size as usize, libc::MADV_HUGEPAGE) };
        let region = GuestRegionMmap::new(region, GuestAddress(0))
            .ok_or_else(|| VmError::MemoryMap("region overflows".into()))?;
        let memory = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| VmError::MemoryMap(e.to_string()))?;
        let slot = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem_size,
            userspace_addr: host_addr,
        };
        // SAFETY: the slot describes `mem_size` bytes of an anonymous
        // mapping owned by `memory`, which outlives the VM (field order).
        unsafe { vm.set_user_memory_region(slot) }.map_err(VmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;

        let vcpu = retry_eintr(|| vm.create_vcpu(0)).map_err(VmError::kvm("KVM_CREATE_VCPU"))?;
        let msrs = boot_msrs(&runtime.header)?;
        let mut this = Vm {
            vcpu,
            _vm: vm,
            memory,
            mem_size,
            host_addr,
            runtime,
            msrs,
            watched: Msrs::new(0).map_err(|_| VmError::RuntimeImage("MSR list"))?,
            waiting: false,
            _system: system.clone(),
        };
        this.setup_vcpu(&system)?;
        this.watched = this.reset_state()?.read_watched(&this.vcpu)?;
        Ok(this)
    }

    /// Lets a vCPU stopped at an MMIO exit finish that instruction without
    /// running any further (KVM_RUN with immediate_exit set), so that its
    /// registers describe a clean point to snapshot.
    pub fn complete_pending_exit(&mut self) -> Result<()> {
        let run = self.vcpu.get_kvm_run();
        run.immediate_exit = 1;
        let r = self.vcpu.run().map(|_| ());
        let run = self.vcpu.get_kvm_run();
        run.immediate_exit = 0;
        match r {
            Err(e) if e.errno() == libc::EINTR => Ok(()),
            Err(e) => Err(VmError::kvm("KVM_RUN")(e)),
            Ok(()) => Err(VmError::Snapshot("the vCPU ran on while completing its exit".into())),
        }
    }

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

    fn reset_state(&self) -> Result<&ResetState> {
        // Set by the first vCPU's set-up, which every Vm went through.
        self._system.reset.get().ok_or(VmError::RuntimeImage("no vCPU was set up"))
    }

    /// Throws away every change a run made to guest RAM by mapping the
    /// snapshot's memory file afresh, and drops KVM's shadow translations
    /// of the old contents (the memory slot is deleted and re-added).
    pub fn reset_memory(&mut self, memory: BorrowedFd<'_>) -> Result<()> {
        let host_addr = self.host_memory().0 as u64;
        self.without_memory_slot(|vm| vm.remap(host_addr, memory))
    }

    /// Deletes the guest RAM memory slot (which drops every shadow
    /// translation KVM built from it), runs `f`, and adds the slot again.
    fn without_memory_slot<T>(&mut self, f: impl FnOnce(&mut Vm) -> Result<T>) -> Result<T> {
        let mut slot = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: 0,
            userspace_addr: self.host_addr,
        };
        // SAFETY: deleting slot 0 (size 0); the vCPU is not running.
        unsafe { self._vm.set_user_memory_region(slot) }.map_err(VmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        let result = f(self);
        slot.memory_size = self.mem_size;
        // SAFETY: the slot describes the guest RAM mapping again (same
        // address and size, owned by `self.memory`).
        unsafe { self._vm.set_user_memory_region(slot) }.map_err(VmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;
        result
    }

    fn remap(&mut self, host_addr: u64, memory: BorrowedFd<'_>) -> Result<()> {
        // SAFETY: replaces exactly the guest RAM mapping (same address and
        // size, owned by `self.memory`) with a fresh private mapping of
        // the snapshot file.
        let p = unsafe {
            libc::mmap(
                host_addr as *mut libc::c_void,
                self.mem_size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED | libc::MAP_NORESERVE,
                memory.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED || p as u64 != host_addr {
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
        let (base, len) = self.host_memory();
        if snapshot.len() != len {
            return Err(VmError::Snapshot("snapshot memory of another size".into()));
        }
        let (copied, tables_changed) = Self::copy_back(base, len, snapshot, pagemap, written)?;
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

    /// Copies the snapshot back into every page the guest wrote; returns
    /// how many, and whether any page that may hold a page table differed.
    fn copy_back(
        base: *const u8,
        len: usize,
        snapshot: &[u8],
        pagemap: BorrowedFd<'_>,
        mut written: Option<&mut Vec<u32>>,
    ) -> Result<(usize, bool)> {
        const PAGE: usize = abi::PAGE_SIZE as usize;
        let mem = len as u64;
        let mut copied = 0;
        let mut tables_changed = false;
        let mut restore = |at: usize| {
            // SAFETY: `at..at+PAGE` lies in guest RAM (our mapping) and in
            // `snapshot` (same length, checked by the caller); the vCPU is
            // stopped.
            let (now, was) = unsafe {
                (
                    std::slice::from_raw_parts(base.add(at), PAGE),
                    std::slice::from_raw_parts(snapshot.as_ptr().add(at), PAGE),
                )
            };
            if abi::may_hold_page_table(at as u64, mem) {
                if now == was {
                    return;
                }
                tables_changed |= !only_narrowed(now, was);
            }
            // SAFETY: as above; the two ranges do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(was.as_ptr(), base.add(at).cast_mut(), PAGE) };
            copied += 1;
        };
        let mut each = |at: usize| {
            if let Some(w) = written.as_deref_mut().filter(|w| w.len() < MAX_WRITTEN) {
                w.push((at / PAGE) as u32);
            }
            restore(at);
        };
        let scanned = written_pages_scan(base as u64, len, pagemap, &mut |from, to| {
            for at in (from..to).step_by(PAGE) {
                each(at);
            }
        })?;
        if !scanned {
            written_pages_read(base as u64, len, pagemap, &mut each)?;
        }
        Ok((copied, tables_changed))
    }

    /// Writes each of `pages` (indexes into guest RAM) with what it holds,
    /// from the host: for a VM that maps a snapshot copy-on-write, the
    /// private copies its run would make one fault at a time are made now
    /// (off the run's path).
    pub fn touch_pages(&mut self, pages: &[u32]) {
        let (base, len) = self.host_memory();
        let base = base.cast_mut();
        for &page in pages {
            let at = page as usize * abi::PAGE_SIZE as usize;
            if at < len {
                // SAFETY: `at` lies in guest RAM (our mapping); the vCPU is
                // stopped (`&mut self`); the byte is written back unchanged.
                unsafe {
                    let v = base.add(at).read_volatile();
                    base.add(at).write_volatile(v);
                }
            }
        }
    }

    /// Where guest RAM is mapped in this process, and its size.
    pub fn host_memory(&self) -> (*const u8, usize) {
        (self.host_addr as *const u8, self.mem_size as usize)
    }

    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

    pub fn runtime(&self) -> &'static RuntimeImage {
        self.runtime
    }

    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    fn write(&self, gpa: u64, bytes: &[u8]) -> Result<()> {
        self.memory
            .write_slice(bytes, GuestAddress(gpa))
            .map_err(|_| VmError::GuestAccess { addr: gpa, len: bytes.len() as u64 })
    }

    fn write_tables(&mut self) -> Result<()> {
        let (tables, tables_end) = layout::page_tables(self.mem_size);
        debug_assert!(tables_end <= abi::PAGE_TABLES_GPA + abi::PAGE_TABLES_MAX);
        for page in tables.iter().chain([layout::gdt(), layout::tss()].iter()) {
            self.write(page.gpa, page.bytes())?;
        }
        let h = &self.runtime.header;
        let idt = layout::idt(h.exception_stubs, h.exception_stub_stride);
        self.write(idt.gpa, idt.bytes())?;
        self.write(abi::RUNTIME_GPA, self.runtime.bytes)?;
        Ok(())
    }

    fn setup_vcpu(&mut self, system: &KvmSystem) -> Result<()> {
        self.vcpu.set_cpuid2(&system.cpuid).map_err(VmError::kvm("KVM_SET_CPUID2"))?;
        if system.enforce_pv {
            isolation::enforce_pv_cpuid(&self.vcpu)?;
        }
        isolation::one_mce_bank(&self.vcpu)?;
        // XCR0 = x87 | SSE | AVX so programs may use AVX on hardware KVM
        // (on this host CPL3 sees the host's XCR0 anyway). Best effort: a
        // host without AVX refuses it and programs fall back to SSE.
        if let Ok(mut xcrs) = self.vcpu.get_xcrs() {
            xcrs.nr_xcrs = 1;
            xcrs.xcrs[0].xcr = 0;
            xcrs.xcrs[0].value = 0x7;
            let _ = self.vcpu.set_xcrs(&xcrs);
        }

        let n = self.vcpu.set_msrs(&self.msrs).map_err(VmError::kvm("KVM_SET_MSRS"))?;
        if n != self.msrs.as_slice().len() {
            return Err(VmError::Kvm { op: "KVM_SET_MSRS (partial)", source: kvm_ioctls::Error::new(libc::EINVAL) });
        }

        let mut sregs = self.vcpu.get_sregs().map_err(VmError::kvm("KVM_GET_SREGS"))?;
        let code = kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector: abi::USER_CS,
            type_: 0xb,
            present: 1,
            dpl: 3,
            db: 0,
            s: 1,
            l: 1,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        let data = kvm_segment { selector: abi::USER_DS, type_: 0x3, db: 1, l: 0, ..code };
        sregs.cs = code;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.tr = kvm_segment {
            base: abi::phys_to_virt(abi::TSS_GPA),
            limit: layout::TSS_LIMIT,
            selector: abi::TSS_SEL,
            type_: layout::TSS_TYPE_BUSY,
            present: 1,
            dpl: 0,
            db: 0,
            s: 0,
            l: 0,
            g: 0,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.ldt = kvm_segment { unusable: 1, present: 0, ..sregs.ldt };
        sregs.gdt.base = abi::phys_to_virt(abi::GDT_GPA);
        sregs.gdt.limit = layout::GDT_SIZE - 1;
        sregs.idt.base = abi::phys_to_virt(abi::IDT_GPA);
        sregs.idt.limit = layout::IDT_SIZE - 1;
        sregs.cr0 = CR0;
        sregs.cr3 = abi::PAGE_TABLES_GPA;
        sregs.cr4 = CR4;
        sregs.efer = EFER;
        self.vcpu.set_sregs(&sregs).map_err(VmError::kvm("KVM_SET_SREGS"))?;
        if system.reset.get().is_none() {
            // The first vCPU of the process, just set up: what every reset
            // restores ([`isolation`]).
            let _ = system.reset.set(ResetState::probe(&self.vcpu, &system.msr_candidates)?);
        }
        Ok(())
    }

    /// Writes the boot-info page, argv/envp and the program image, and
    /// points the vCPU at the runtime's entry.
    pub fn boot(&mut self, params: &BootParams<'_>) -> Result<()> {
        let args_len: u64 = params.argv.iter().chain(params.envp).map(|s| s.len() as u64 + 1).sum();
        if args_len > abi::ARGS_MAX {
            return Err(VmError::ArgsTooLarge { len: args_len, max: abi::ARGS_MAX });
        }
        // The manifest follows the strings, 8-byte aligned, in the same
        // bounded region.
        let manifest_off = args_len.next_multiple_of(8);
        let manifest_len = params.manifest.len() as u64;
        let total = manifest_off.saturating_add(manifest_len);
        if !params.manifest.is_empty() && total > abi::ARGS_MAX {
            let room = abi::ARGS_MAX.saturating_sub(manifest_off);
            return Err(VmError::ManifestTooLarge { len: manifest_len, room });
        }
        let mut args = Vec::with_capacity(total as usize);
        for s in params.argv.iter().chain(params.envp) {
            args.extend_from_slice(s);
            args.push(0);
        }
        let manifest_gpa = if params.manifest.is_empty() {
            0
        } else {
            args.resize(manifest_off as usize, 0);
            args.extend_from_slice(params.manifest);
            abi::ARGS_GPA + manifest_off
        };
        self.write(abi::ARGS_GPA, &args)?;

        // The image goes at the top of the free frames, below the
        // page-table pool, so that a runtime booted ahead of it (which
        // allocates from the bottom) need not know its size.
        let image_len = params.image.len() as u64;
        let image_gpa = abi::pt_pool_start(self.mem_size).saturating_sub(image_len) & !(abi::PAGE_SIZE - 1);
        // Leave the runtime at least 4 MiB for the program's memory.
        if image_gpa < abi::IMAGE_GPA + (4 << 20) {
            return Err(VmError::ImageTooLarge { len: image_len, mem: self.mem_size });
        }
        self.write(image_gpa, params.image)?;

        let (_, tables_end) = layout::page_tables(self.mem_size);
        let (boot_tsc, realtime_ns) = tsc_and_realtime();
        let info = abi::BootInfo {
            magic: abi::BOOT_MAGIC,
            abi_version: abi::ABI_VERSION,
            flags: if params.snapshot_at_entry { abi::BOOT_FLAG_SNAPSHOT_AT_ENTRY } else { abi::BOOT_FLAG_NONE },
            mem_size: self.mem_size,
            free_start: abi::IMAGE_GPA,
            free_end: image_gpa,
            image_gpa,
            image_len,
            args_gpa: abi::ARGS_GPA,
            args_len,
            argc: params.argv.len() as u32,
            envc: params.envp.len() as u32,
            tsc_khz: self.tsc_khz(),
            boot_tsc,
            boot_realtime_ns: realtime_ns,
            random_seed: params.random_seed,
            pml4_gpa: abi::PAGE_TABLES_GPA,
            page_tables_end: tables_end,
            manifest_gpa,
            manifest_len,
            max_processes: params.max_processes,
            max_open_files: params.max_open_files,
            _reserved: [0; 3],
        };
        // SAFETY: BootInfo is repr(C) plain data; viewing it as bytes for
        // the copy is sound for its full size.
        let bytes = unsafe {
            std::slice::from_raw_parts((&info as *const abi::BootInfo).cast::<u8>(), std::mem::size_of_val(&info))
        };
        self.write(abi::BOOT_INFO_GPA, bytes)?;

        if self.waiting {
            // The runtime is set up and waits for this in hc::PROGRAM.
            self.waiting = false;
            return self.set_hypercall_result(0);
        }
        self.enter_runtime()
    }

    /// Points the vCPU at the runtime's entry with the boot information.
    fn enter_runtime(&mut self) -> Result<()> {
        let h = &self.runtime.header;
        let regs = kvm_regs {
            rip: h.entry,
            rsp: h.stack_top,
            rflags: 0x2,
            rdi: abi::phys_to_virt(abi::BOOT_INFO_GPA),
            ..Default::default()
        };
        self.vcpu.set_regs(&regs).map_err(VmError::kvm("KVM_SET_REGS"))?;
        Ok(())
    }

    /// Boots the runtime before its program is known, up to where it waits
    /// for one (`hc::PROGRAM`): the part of a cold start that does not
    /// depend on the program, done ahead of the run (for a VM made while
    /// its sandbox is idle). [`Vm::boot`] then hands the program over.
    pub fn preboot(&mut self) -> Result<()> {
        let (_, tables_end) = layout::page_tables(self.mem_size);
        let (boot_tsc, realtime_ns) = tsc_and_realtime();
        let info = abi::BootInfo {
            magic: abi::BOOT_MAGIC,
            abi_version: abi::ABI_VERSION,
            flags: abi::BOOT_FLAG_WAIT_PROGRAM,
            mem_size: self.mem_size,
            free_start: abi::IMAGE_GPA,
            free_end: abi::pt_pool_start(self.mem_size),
            image_gpa: 0,
            image_len: 0,
            args_gpa: abi::ARGS_GPA,
            args_len: 0,
            argc: 0,
            envc: 0,
            tsc_khz: self.tsc_khz(),
            boot_tsc,
            boot_realtime_ns: realtime_ns,
            random_seed: [0; 32],
            pml4_gpa: abi::PAGE_TABLES_GPA,
            page_tables_end: tables_end,
            manifest_gpa: 0,
            manifest_len: 0,
            max_processes: 0,
            max_open_files: 0,
            _reserved: [0; 3],
        };
        // SAFETY: BootInfo is repr(C) plain data; viewing it as bytes for
        // the copy is sound for its full size.
        let bytes = unsafe {
            std::slice::from_raw_parts((&info as *const abi::BootInfo).cast::<u8>(), std::mem::size_of_val(&info))
        };
        self.write(abi::BOOT_INFO_GPA, bytes)?;
        // Fault in the host memory the program's image will be copied to
        // (the top of the free frames; one huge page where the host has
        // them), as the runtime's boot does for the memory it touches.
        let top = abi::pt_pool_start(self.mem_size);
        self.write(top - abi::PAGE_SIZE, &[0])?;
        self.enter_runtime()?;
        // Only the runtime's own code runs here (no program yet); a kick
        // meant for a run is no reason to give up.
        for _ in 0..100 {
            match self.run(|| false)? {
                VmExit::Hypercall(abi::hc::PROGRAM) => {
                    self.waiting = true;
                    return Ok(());
                }
                VmExit::Interrupted => continue,
                other => return Err(VmError::Preboot(format!("{other:?}"))),
            }
        }
        Err(VmError::Preboot("interrupted".into()))
    }

    /// The TSC rate the guest's clocks use, kHz (0 if KVM cannot say).
    pub fn tsc_khz_value(&self) -> u64 {
        self.tsc_khz()
    }

    fn tsc_khz(&self) -> u64 {
        static KHZ: OnceLock<u64> = OnceLock::new();
        *KHZ.get_or_init(|| self.vcpu.get_tsc_khz().map(u64::from).unwrap_or(0))
    }

    /// Runs the vCPU until it exits. `should_stop` is checked after the
    /// kick handler is armed for this thread and before entering the
    /// guest, so a kick can never fall between the check and `KVM_RUN`.
    pub fn run(&mut self, should_stop: impl Fn() -> bool) -> Result<VmExit> {
        let run = self.vcpu.get_kvm_run();
        let immediate_exit = std::ptr::addr_of_mut!(run.immediate_exit);
        kick::bind_immediate_exit(immediate_exit);
        let result = if should_stop() { Ok(VmExit::Interrupted) } else { self.run_once() };
        kick::bind_immediate_exit(std::ptr::null_mut());
        result
    }

    fn run_once(&mut self) -> Result<VmExit> {
        let exit = match self.vcpu.run() {
            Ok(VcpuExit::MmioWrite(addr, data)) => {
                if addr == abi::DOORBELL_GPA && data.len() == 8 {
                    let nr = u64::from_le_bytes(data.try_into().expect("8 bytes"));
                    VmExit::Hypercall(nr)
                } else {
                    VmExit::Unexpected(format!("MMIO write of {} bytes to {addr:#x}", data.len()))
                }
            }
            Ok(VcpuExit::MmioRead(addr, _)) => VmExit::Unexpected(format!("MMIO read from {addr:#x}")),
            Ok(VcpuExit::Shutdown) => VmExit::Shutdown,
            Ok(VcpuExit::InternalError) => {
                // SAFETY: exit_reason INTERNAL_ERROR selects the
                // `internal` member of the kvm_run union.
                let suberror = unsafe { self.vcpu.get_kvm_run().__bindgen_anon_1.internal.suberror };
                VmExit::InternalError { suberror }
            }
            Ok(VcpuExit::IoOut(port, _)) | Ok(VcpuExit::IoIn(port, _)) => {
                VmExit::Unexpected(format!("port I/O to {port:#x}"))
            }
            Ok(other) => VmExit::Unexpected(format!("{other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.vcpu.set_kvm_immediate_exit(0);
                VmExit::Interrupted
            }
            Err(source) => return Err(VmError::Kvm { op: "KVM_RUN", source }),
        };
        if exit == VmExit::Hypercall(abi::hc::FAULT) {
            return self.fault();
        }
        Ok(exit)
    }

    /// Reads the exception frame the ring-0 stub left on its stack. The
    /// stack pointer comes from the guest: it must lie inside one of the
    /// two ring-0 stacks, or the report itself is hostile.
    fn fault(&mut self) -> Result<VmExit> {
        let regs = self.vcpu.get_regs().map_err(VmError::kvm("KVM_GET_REGS"))?;
        let sregs = self.vcpu.get_sregs().map_err(VmError::kvm("KVM_GET_SREGS"))?;
        let size = std::mem::size_of::<abi::ExceptionFrame>() as u64;
        let stacks = [(abi::RING0_STACK_GPA, abi::RING0_STACK_SIZE), (abi::IST_STACK_GPA, abi::IST_STACK_SIZE)];
        let gpa = regs.rsp.wrapping_sub(abi::PHYS_BASE);
        let inside = stacks.iter().any(|&(base, len)| gpa >= base && gpa.saturating_add(size) <= base + len);
        if !inside || (sregs.cs.selector & 3) != 0 {
            return Ok(VmExit::Unexpected(format!("fault report with a bad stack {:#x}", regs.rsp)));
        }
        let frame: abi::ExceptionFrame = self.read_obj(gpa)?;
        Ok(VmExit::Fault { frame, cr2: sregs.cr2 })
    }

    /// Reads a plain-data value at a guest-physical address.
    pub fn read_obj<T: Copy + Default>(&self, gpa: u64) -> Result<T> {
        let mut value = T::default();
        let len = std::mem::size_of::<T>();
        // SAFETY: `value` is a live T; we overwrite its bytes with guest
        // bytes. Callers use this only for repr(C) integer structs (ABI
        // types), valid for any bit pattern.
        let bytes = unsafe { std::slice::from_raw_parts_mut((&mut value as *mut T).cast::<u8>(), len) };
        self.memory
            .read_slice(bytes, GuestAddress(gpa))
            .map_err(|_| VmError::GuestAccess { addr: gpa, len: len as u64 })?;
        Ok(value)
    }

    /// The arguments of the current hypercall.
    pub fn hypercall_args(&self) -> Result<abi::Hypercall> {
        self.read_obj(abi::HCALL_GPA)
    }

    /// Sets the result the guest finds after its hypercall returns.
    pub fn set_hypercall_result(&self, ret: u64) -> Result<()> {
        let off = std::mem::offset_of!(abi::Hypercall, ret) as u64;
        self.write(abi::HCALL_GPA + off, &ret.to_le_bytes())
    }

    /// Translates a guest buffer `[va, va + len)` given by the runtime in
    /// the physmap into a guest-physical address, checking it lies
    /// entirely inside RAM and is at most `max` bytes long.
    pub fn physmap_range(&self, va: u64, len: u64, max: u64) -> Result<u64> {
        let bad = VmError::GuestAccess { addr: va, len };
        if len > max {
            return Err(bad);
        }
        let gpa = va.checked_sub(abi::PHYS_BASE).ok_or(VmError::GuestAccess { addr: va, len })?;
        match gpa.checked_add(len) {
            Some(end) if end <= self.mem_size => Ok(gpa),
            _ => Err(bad),
        }
    }

    /// Translates guest-virtual `va` through the guest's current page
    /// tables (CR3 `cr3`): the guest-physical address and the bytes left in
    /// its page. The tables are guest data: every entry is read with a
    /// bounds check and the result must lie in RAM.
    fn translate(&self, cr3: u64, va: u64) -> Option<(u64, u64)> {
        const PRESENT: u64 = 1;
        const HUGE: u64 = 0x80;
        const ADDR: u64 = 0x000f_ffff_ffff_f000;
        if ((va as i64) << 16 >> 16) as u64 != va {
            return None; // not canonical
        }
        let mut table = cr3 & ADDR;
        for level in (0..4u32).rev() {
            let shift = 12 + 9 * level;
            let entry: u64 = self.read_obj(table + ((va >> shift) & 0x1ff) * 8).ok()?;
            if entry & PRESENT == 0 {
                return None;
            }
            if level == 0 || ((level == 1 || level == 2) && entry & HUGE != 0) {
                let size = 1u64 << shift;
                let gpa = (entry & ADDR & !(size - 1)) + (va & (size - 1));
                let left = size - (va & (size - 1));
                return (gpa < self.mem_size).then_some((gpa, left.min(self.mem_size - gpa)));
            }
            table = entry & ADDR;
        }
        None
    }

    /// Calls `f(gpa, offset, len)` for each guest-physical piece of the
    /// guest-virtual buffer `[va, va + len)`: one piece when it lies in the
    /// physmap, else one per page of the guest's current page tables.
    fn for_each_piece(&self, va: u64, len: u64, mut f: impl FnMut(u64, usize, usize) -> Result<()>) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        if let Ok(gpa) = self.physmap_range(va, len, len) {
            return f(gpa, 0, len as usize);
        }
        let cr3 = self.vcpu.get_sregs().map_err(VmError::kvm("KVM_GET_SREGS"))?.cr3;
        let mut done = 0u64;
        while done < len {
            let at = va.checked_add(done).ok_or(VmError::GuestAccess { addr: va, len })?;
            let (gpa, left) = self.translate(cr3, at).ok_or(VmError::GuestAccess { addr: at, len: len - done })?;
            let n = left.min(len - done);
            f(gpa, done as usize, n as usize).map_err(|_| VmError::GuestAccess { addr: at, len: n })?;
            done += n;
        }
        Ok(())
    }

    /// Copies the guest buffer at guest-virtual `va` (in the physmap or
    /// anywhere the guest's page tables map) into `buf`. A buffer that is
    /// not entirely mapped is a [`VmError::GuestAccess`].
    pub fn read_virt(&self, va: u64, buf: &mut [u8]) -> Result<()> {
        let len = buf.len() as u64;
        self.for_each_piece(va, len, |gpa, off, n| self.read_bytes(gpa, &mut buf[off..off + n]))
    }

    /// Copies `buf` into the guest buffer at guest-virtual `va` (see
    /// [`Vm::read_virt`]).
    pub fn write_virt(&self, va: u64, buf: &[u8]) -> Result<()> {
        self.for_each_piece(va, buf.len() as u64, |gpa, off, n| self.write(gpa, &buf[off..off + n]))
    }

    /// Copies guest bytes (a range checked by [`Vm::physmap_range`]).
    pub fn read_bytes(&self, gpa: u64, buf: &mut [u8]) -> Result<()> {
        self.memory
            .read_slice(buf, GuestAddress(gpa))
            .map_err(|_| VmError::GuestAccess { addr: gpa, len: buf.len() as u64 })
    }

    /// Copies bytes into guest memory.
    pub fn write_bytes(&self, gpa: u64, buf: &[u8]) -> Result<()> {
        self.write(gpa, buf)
    }

    /// The runtime's counters.
    pub fn runtime_stats(&self) -> Result<abi::RuntimeStats> {
        let mut stats = abi::RuntimeStats {
            syscalls: 0,
            unknown_syscalls: 0,
            frames_used_peak: 0,
            page_faults: 0,
            cr3_loads: 0,
            processes: 0,
            out_buffers_gpa: 0,
            _reserved: [0; 1],
            unknown_by_nr: [0; abi::UNKNOWN_SLOTS],
        };
        let len = std::mem::size_of::<abi::RuntimeStats>();
        // SAFETY: RuntimeStats is repr(C) integers, valid for any bytes;
        // the slice covers exactly the struct.
        let bytes = unsafe { std::slice::from_raw_parts_mut((&mut stats as *mut abi::RuntimeStats).cast::<u8>(), len) };
        self.read_bytes(abi::STATS_GPA, bytes)?;
        Ok(stats)
    }
}

/// The MSRs every run starts with: those the runtime relies on, and the
/// others a program that took ring 0 in the guest could change to reach a
/// later run (any guest can: all of guest RAM, the IDT included, is
/// writable at CPL3 through the physmap). Set at creation and at every
/// reset.
fn boot_msrs(h: &abi::RuntimeHeader) -> Result<Msrs> {
    Msrs::from_entries(&[
        msr(MSR_STAR, STAR),
        msr(MSR_LSTAR, h.syscall_entry),
        msr(MSR_CSTAR, 0),
        msr(MSR_SFMASK, SFMASK),
        msr(MSR_KERNEL_GS_BASE, 0),
        msr(MSR_SYSENTER_CS, 0),
        msr(MSR_SYSENTER_ESP, 0),
        msr(MSR_SYSENTER_EIP, 0),
        msr(MSR_PAT, PAT_DEFAULT),
    ])
    .map_err(|_| VmError::RuntimeImage("too many MSRs"))
}

/// Debug registers as at power-on: no breakpoints.
fn boot_debugregs() -> kvm_bindings::kvm_debugregs {
    kvm_bindings::kvm_debugregs { dr6: 0xffff_0ff0, dr7: 0x400, ..Default::default() }
}

/// Retries a KVM call that a signal (a kick meant for the run) interrupted.
fn retry_eintr<T>(mut f: impl FnMut() -> Result<T, kvm_ioctls::Error>) -> Result<T, kvm_ioctls::Error> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if e.errno() == libc::EINTR && tries < 100 => tries += 1,
            r => return r,
        }
    }
}

fn msr(index: u32, data: u64) -> kvm_bindings::kvm_msr_entry {
    kvm_bindings::kvm_msr_entry { index, data, ..Default::default() }
}

/// A (TSC, CLOCK_REALTIME) pair read back to back, for the guest's clocks.
fn tsc_and_realtime() -> (u64, u64) {
    // SAFETY: rdtsc has no preconditions on x86_64.
    let tsc = unsafe { core::arch::x86_64::_rdtsc() };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (tsc, now.as_nanos() as u64)
}
