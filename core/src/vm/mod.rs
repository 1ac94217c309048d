//! One micro-VM: a KVM VM with one vCPU and one RAM slot, set up so the
//! vCPU starts in 64-bit mode at CPL3 at the guest runtime's entry.
//!
//! `Vm` and its creation live here; its methods are grouped by concern:
//! `boot` (vCPU set-up, privileged tables, boot information), `run` (the
//! run loop and its exits), `memory` (guest memory access and page walks)
//! and `reset` (vCPU state and guest RAM put back to a snapshot's).

use std::os::fd::BorrowedFd;
use std::sync::{Arc, Mutex, OnceLock};

use hvsandbox_abi as abi;
use kvm_bindings::{kvm_userspace_memory_region, CpuId, Msrs, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;

use crate::error::{Result, VmError};
use crate::isolation::{self, ResetState};
use crate::runtime::RuntimeImage;

/// The whole pages of `len` bytes at guest-physical `at`, when they lie
/// in guest RAM of `mem_size` bytes above its first 2 MiB (the host-built
/// tables): a range the guest gave, checked.
fn whole_pages_of(at: u64, len: u64, mem_size: u64) -> Option<(u64, u64)> {
    let start = at.checked_next_multiple_of(abi::PAGE_SIZE)?;
    let end = at.checked_add(len)? / abi::PAGE_SIZE * abi::PAGE_SIZE;
    (start < end && end <= mem_size && start >= abi::HUGE_PAGE_SIZE).then_some((start, end))
}

/// Bytes of the page-table pool a fresh VM's host memory has present
/// before the guest runs: a busybox run takes ~17 table frames, a
/// `python3 -c` ~30.
const POOL_FRAMES_AHEAD: usize = 32 * abi::PAGE_SIZE as usize;

/// Where a local APIC's registers appear in guest-physical memory.
const APIC_MMIO_BASE: u64 = 0xfee0_0000;

mod boot;
mod hugetlb;
mod image;
mod memory;
mod prefault;
mod ram;
mod reset;
mod run;

pub use boot::BootParams;
pub use hugetlb::HugePages;
pub use image::ProgramImage;
pub use prefault::FrameRanges;
use ram::Ram;
pub use ram::{FreshRam, RamLoader, RamWarmer};
pub use reset::{VcpuState, MAX_WRITTEN};
pub use run::VmExit;

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
    /// The CPUID page every guest gets ([`abi::CPUID_GPA`]), read from
    /// the first vCPU set up.
    cpuid_page: OnceLock<Box<abi::cpuid::Table>>,
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
    let sys = Arc::new(KvmSystem {
        kvm,
        cpuid,
        sync_regs,
        sync_events,
        enforce_pv,
        msr_candidates,
        reset: OnceLock::new(),
        cpuid_page: OnceLock::new(),
    });
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
    /// The MSRs every run starts with ([`boot::boot_msrs`]).
    msrs: Msrs,
    /// The values at creation of the MSRs a reset cannot restore, only
    /// check ([`ResetState::watched`]).
    watched: Msrs,
    /// Booted ahead of its program ([`Vm::preboot`]): the runtime waits in
    /// `hc::PROGRAM`.
    waiting: bool,
    /// Hugetlb pages back the middle of RAM ([`HugePages`]).
    huge_backed: bool,
    _system: Arc<KvmSystem>,
    /// Held while the VM lives: a [`RamWarmer`] knows it by this.
    alive: Arc<()>,
    /// The length of the image a [`RamLoader`] wrote into its RAM, until
    /// a boot takes it up ([`ProgramImage::Loaded`]).
    loaded: Arc<std::sync::atomic::AtomicU64>,
}

impl Vm {
    /// Creates the VM, its RAM (`mem_size` bytes, a multiple of 2 MiB),
    /// the privileged tables and the runtime image, and sets the vCPU up
    /// to enter the runtime at CPL3.
    pub fn new(mem_size: u64) -> Result<Vm> {
        Self::with_huge_pages(mem_size, HugePages::Off)
    }

    /// As [`Vm::new`], with RAM from the host's hugetlb pool as `huge`
    /// says ([`HugePages`]).
    pub fn with_huge_pages(mem_size: u64, huge: HugePages) -> Result<Vm> {
        Self::with_ram(FreshRam::new(mem_size, huge)?)
    }

    /// As [`Vm::with_huge_pages`], over RAM made ahead (perhaps on another
    /// thread): only KVM's side is made here.
    pub fn with_ram(ram: FreshRam) -> Result<Vm> {
        Self::create_with(ram.ram)
    }

    /// A VM whose RAM is a private (copy-on-write) mapping of `memory`, a
    /// snapshot's memory file of `mem_size` bytes: no copy is made, and
    /// clones of one snapshot share its unchanged pages. Restore the vCPU
    /// with [`Vm::restore_vcpu`] before running.
    pub fn from_snapshot_memory(memory: BorrowedFd<'_>, mem_size: u64) -> Result<Vm> {
        Self::create(mem_size, Some(memory), HugePages::Off)
    }

    /// A VM whose RAM (`mem_size` bytes) is anonymous and zero, with no
    /// tables and no runtime image: for a snapshot's pages, which the
    /// caller writes in ([`Vm::write_bytes`]) before it restores the vCPU
    /// ([`Vm::restore_vcpu`]).
    /// `huge`: RAM from the host's hugetlb pool ([`HugePages`]).
    pub fn for_snapshot_pages(mem_size: u64, huge: HugePages) -> Result<Vm> {
        Self::create(mem_size, None, huge)
    }

    /// A VM whose RAM is anonymous memory (huge pages where the host
    /// gives them) holding a copy of `memory`'s data, a snapshot's memory
    /// file of `mem_size` bytes whose holes read as zeros. Mapped instead
    /// ([`Vm::from_snapshot_memory`]), the file's 4 KiB pages make every
    /// page a fresh VM's guest touches a hypervisor fault of its own, even
    /// through the runtime's 2 MiB physmap; copied, a fresh VM takes about
    /// as few faults as a booted one.
    /// `data` lists the ranges of `memory` that hold data, in bytes
    /// (found on a thread that may `lseek`: the vCPU threads' jail does
    /// not let them); the rest of RAM starts zero. Resets may still map
    /// `memory` ([`Vm::reset_memory`]).
    /// `huge`: RAM from the host's hugetlb pool ([`HugePages`]); the
    /// program's file is then copied too (a 4 KiB mapping cannot replace
    /// part of a 2 MiB page, and copying into the pool's pages is cheap).
    pub fn from_snapshot_copy(
        memory: BorrowedFd<'_>,
        mem_size: u64,
        data: &[(u64, u64)],
        huge: HugePages,
    ) -> Result<Vm> {
        let this = Self::create(mem_size, None, huge)?;
        let copy = |gpa: u64, len: u64| {
            this.read_file_into(gpa, memory, gpa, len)
                .map_err(|e| VmError::Snapshot(format!("cannot read snapshot memory: {e}")))
        };
        // The program's file, as the runtime keeps it in RAM, stays a
        // mapping: the program reaches it through 4 KiB pages anyway, and
        // copying it (megabytes) cost more than it saved (measured). Where
        // it lies is the guest's word (its boot information, copied first):
        // a range that is not whole pages inside RAM is copied like the rest.
        copy(abi::BOOT_INFO_GPA, std::mem::size_of::<abi::BootInfo>() as u64)?;
        let info: abi::BootInfo = this.read_obj(abi::BOOT_INFO_GPA)?;
        let image = whole_pages_of(info.image_gpa, info.image_len, mem_size).filter(|_| !this.huge_backed);
        if let Some((start, end)) = image {
            this.map_snapshot_range(start, end - start, memory)?;
        }
        for &(start, end) in data {
            if start >= end || end > mem_size {
                return Err(VmError::Snapshot(format!("data range {start:#x}..{end:#x} outside guest RAM")));
            }
            let pieces = match image {
                Some((i0, i1)) => [(start, end.min(i0)), (start.max(i1), end)],
                None => [(start, end), (0, 0)],
            };
            for (a, b) in pieces.into_iter().filter(|(a, b)| a < b) {
                copy(a, b - a)?;
            }
        }
        Ok(this)
    }

    fn create(mem_size: u64, backing: Option<BorrowedFd<'_>>, huge: HugePages) -> Result<Vm> {
        Self::create_with(Ram::map(mem_size, backing, huge)?)
    }

    /// The VM and its vCPU, over `ram`.
    fn create_with(ram: Ram) -> Result<Vm> {
        let Ram { memory, mem_size, host_addr, huge_backed, loaded } = ram;
        let runtime = runtime()?;
        let system = kvm_system()?;
        let vm = retry_eintr(|| system.kvm.create_vm()).map_err(VmError::kvm("KVM_CREATE_VM"))?;
        // SAFETY: the slot describes `mem_size` bytes of an anonymous
        // mapping owned by `memory`, which outlives the VM (field order).
        unsafe { vm.set_user_memory_region(ram_slot(host_addr, mem_size)) }
            .map_err(VmError::kvm("KVM_SET_USER_MEMORY_REGION"))?;

        // A local APIC in the kernel (no PIC or I/O APIC: a split irqchip).
        // The guest never uses it, but a vCPU without one turns on a static
        // key of the host kernel (`kvm_has_noapic_vcpu`) while it lives: the
        // kernel patches its text on every CPU when the first such vCPU on
        // the host is made and again when the last goes, ~0.3 ms of each
        // fresh process's VM (measured, `perf`). The APIC's own key is only
        // turned off a second after its last user, so back-to-back VMs
        // patch nothing. Its registers are MMIO at 0xfee00000 and would
        // hide guest RAM there: guests that large go without. Where KVM
        // lacks split irqchips, the VM simply has none.
        if mem_size <= APIC_MMIO_BASE {
            let cap = kvm_bindings::kvm_enable_cap { cap: kvm_bindings::KVM_CAP_SPLIT_IRQCHIP, ..Default::default() };
            let _ = vm.enable_cap(&cap);
        }
        let vcpu = retry_eintr(|| vm.create_vcpu(0)).map_err(VmError::kvm("KVM_CREATE_VCPU"))?;
        let msrs = boot::boot_msrs(&runtime.header)?;
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
            huge_backed,
            _system: system.clone(),
            alive: Arc::new(()),
            loaded,
        };
        this.setup_vcpu(&system)?;
        this.watched = this.reset_state()?.read_watched(&this.vcpu)?;
        Ok(this)
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
}

/// Guest RAM's memory slot (slot 0 at guest-physical 0), `memory_size`
/// bytes mapped at `host_addr` in this process; size 0 deletes it.
fn ram_slot(host_addr: u64, memory_size: u64) -> kvm_userspace_memory_region {
    kvm_userspace_memory_region { slot: 0, flags: 0, guest_phys_addr: 0, memory_size, userspace_addr: host_addr }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_given_range_is_used_only_as_whole_pages_inside_ram() {
        const MIB: u64 = 1 << 20;
        let mem = 64 * MIB;
        assert_eq!(whole_pages_of(60 * MIB + 100, 8192, mem), Some((60 * MIB + 4096, 60 * MIB + 8192)));
        assert_eq!(whole_pages_of(60 * MIB, 4 * MIB, mem), Some((60 * MIB, 64 * MIB)));
        // Less than a whole page, past the end of RAM, in the first 2 MiB,
        // or overflowing: none.
        assert_eq!(whole_pages_of(60 * MIB + 1, 4096, mem), None);
        assert_eq!(whole_pages_of(62 * MIB, 4 * MIB, mem), None);
        assert_eq!(whole_pages_of(MIB, 4 * MIB, mem), None);
        assert_eq!(whole_pages_of(u64::MAX - 4095, 8192, mem), None);
        assert_eq!(whole_pages_of(u64::MAX - 10, 5, mem), None);
        assert_eq!(whole_pages_of(0, 0, mem), None);
    }
}
