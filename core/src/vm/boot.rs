//! Boot: the vCPU set up to start at CPL3 (segments, control registers,
//! MSRs, CPUID), the privileged tables and the runtime written into guest
//! RAM, and the boot information that hands the runtime its program.

use std::sync::OnceLock;

use hvsandbox_abi as abi;
use kvm_bindings::{kvm_regs, kvm_segment, Msrs};

use super::image::{image_gpa, ProgramImage, NOT_LOADED};
use super::{KvmSystem, Vm, VmExit};
use crate::error::{Result, VmError};
use crate::isolation::{self, ResetState};
use crate::layout;

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

/// What the program starts with.
#[derive(Clone, Copy, Debug)]
pub struct BootParams<'a> {
    /// The program's ELF file.
    pub image: ProgramImage<'a>,
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
    /// The program file's inode number on the host, 0 if it is none's
    /// (see [`abi::BootInfo::image_ino`]).
    pub image_ino: u64,
}

impl Vm {
    pub(super) fn setup_vcpu(&mut self, system: &KvmSystem) -> Result<()> {
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
        if system.cpuid_page.get().is_none() {
            let _ = system.cpuid_page.set(Box::new(cpuid_page(&self.vcpu)?));
        }
        Ok(())
    }

    /// Writes the CPUID page ([`abi::CPUID_GPA`]) the runtime answers a
    /// rewritten `cpuid` from: done at boot, and by the caller when a
    /// snapshot from a file (taken on another host, perhaps) resumes.
    pub fn write_cpuid_page(&self) -> Result<()> {
        match self._system.cpuid_page.get() {
            Some(page) => self.write_obj(abi::CPUID_GPA, &**page),
            // Not read (cannot happen after setup_vcpu): no entries, so
            // every `cpuid` goes to the CPU.
            None => self.write_obj(abi::CPUID_GPA, &abi::cpuid::Table::default()),
        }
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

        let image_len = params.image.len();
        let image_gpa = image_gpa(self.mem_size, image_len)?;
        // (A loaded image serves one boot.)
        let loaded = self.loaded.swap(NOT_LOADED, std::sync::atomic::Ordering::SeqCst);
        match params.image {
            ProgramImage::Bytes(bytes) => self.write(image_gpa, bytes)?,
            ProgramImage::File { fd, len } => self.read_file_into(image_gpa, fd, 0, len)?,
            ProgramImage::Loaded { len } if len == loaded => {}
            ProgramImage::Loaded { .. } => {
                return Err(VmError::ImageRead(std::io::Error::other("no image of that length was loaded")))
            }
        }

        let info = abi::BootInfo {
            flags: if params.snapshot_at_entry { abi::BOOT_FLAG_SNAPSHOT_AT_ENTRY } else { abi::BOOT_FLAG_NONE }
                | rewrite_flag(),
            free_end: image_gpa,
            image_gpa,
            image_len,
            args_len,
            argc: params.argv.len() as u32,
            envc: params.envp.len() as u32,
            random_seed: params.random_seed,
            manifest_gpa,
            manifest_len,
            max_processes: params.max_processes,
            max_open_files: params.max_open_files,
            image_ino: params.image_ino,
            ..self.boot_info()
        };
        self.write_obj(abi::BOOT_INFO_GPA, &info)?;

        if self.waiting {
            // The runtime is set up and waits for this in hc::PROGRAM.
            self.waiting = false;
            return self.set_hypercall_result(0);
        }
        self.enter_runtime()
    }

    /// The boot information of a runtime without a program (yet): the
    /// memory layout, the clocks, no image, arguments or manifest.
    fn boot_info(&self) -> abi::BootInfo {
        let (_, tables_end) = layout::page_tables(self.mem_size);
        let (boot_tsc, realtime_ns) = tsc_and_realtime();
        abi::BootInfo {
            magic: abi::BOOT_MAGIC,
            abi_version: abi::ABI_VERSION,
            flags: rewrite_flag(),
            mem_size: self.mem_size,
            free_start: self.runtime_end(),
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
            image_ino: 0,
            _reserved: [0; 2],
        }
    }

    /// Where the runtime's image and bss end in guest RAM: its free frames
    /// start there, so a small run's frames share the huge page of the
    /// runtime's end instead of taking one more (the host zeroes each huge
    /// page the guest first touches: ~280 us measured).
    fn runtime_end(&self) -> u64 {
        let end = abi::RUNTIME_GPA + self.runtime.header.image_end.saturating_sub(abi::RUNTIME_VA);
        end.next_multiple_of(abi::PAGE_SIZE)
    }

    /// Points the vCPU at the runtime's entry with the boot information.
    fn enter_runtime(&mut self) -> Result<()> {
        self.write_cpuid_page()?;
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
        let info = abi::BootInfo { flags: abi::BOOT_FLAG_WAIT_PROGRAM | rewrite_flag(), ..self.boot_info() };
        self.write_obj(abi::BOOT_INFO_GPA, &info)?;
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
}

/// The MSRs every run starts with: those the runtime relies on, and the
/// others a program that took ring 0 in the guest could change to reach a
/// later run (any guest can: all of guest RAM, the IDT included, is
/// writable at CPL3 through the physmap). Set at creation and at every
/// reset.
pub(super) fn boot_msrs(h: &abi::RuntimeHeader) -> Result<Msrs> {
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

/// The CPUID page of a vCPU whose CPUID, XCR0 and control registers are
/// set: KVM's answers, with the bits it derives from that state (OSXSAVE,
/// the XSAVE sizes) as the guest will see them. Entries past the page's
/// room are left out (their leaves go to the CPU).
fn cpuid_page(vcpu: &kvm_ioctls::VcpuFd) -> Result<abi::cpuid::Table> {
    let got = vcpu.get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES).map_err(VmError::kvm("KVM_GET_CPUID2"))?;
    let mut t = abi::cpuid::Table { magic: abi::cpuid::MAGIC, ..Default::default() };
    for (slot, e) in t.entries.iter_mut().zip(got.as_slice()) {
        *slot = abi::cpuid::Entry {
            function: e.function,
            index: e.index,
            flags: if e.flags & kvm_bindings::KVM_CPUID_FLAG_SIGNIFCANT_INDEX != 0 {
                abi::cpuid::FLAG_INDEX
            } else {
                0
            },
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            _pad: 0,
        };
        t.count += 1;
    }
    t.basic_max = got.as_slice().iter().find(|e| e.function == 0).map_or(0, |e| e.eax);
    Ok(t)
}

/// Debug registers as at power-on: no breakpoints.
pub(super) fn boot_debugregs() -> kvm_bindings::kvm_debugregs {
    kvm_bindings::kvm_debugregs { dr6: 0xffff_0ff0, dr7: 0x400, ..Default::default() }
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

/// The host's word on system-call site rewriting, read once from the
/// environment: `HVSANDBOX_REWRITE=1` forces it on
/// (`BOOT_FLAG_REWRITE`), `=0` off (`BOOT_FLAG_NO_REWRITE`), `=cpuid`
/// `cpuid` sites only (`BOOT_FLAG_REWRITE_CPUID_ONLY`); otherwise
/// the runtime decides from what a `syscall` costs (no flag).
fn rewrite_flag() -> u32 {
    static FLAG: OnceLock<u32> = OnceLock::new();
    *FLAG.get_or_init(|| match std::env::var_os("HVSANDBOX_REWRITE") {
        Some(v) if v == "1" => abi::BOOT_FLAG_REWRITE,
        Some(v) if v == "0" => abi::BOOT_FLAG_NO_REWRITE,
        Some(v) if v == "cpuid" => abi::BOOT_FLAG_REWRITE_CPUID_ONLY,
        _ => abi::BOOT_FLAG_NONE,
    })
}
