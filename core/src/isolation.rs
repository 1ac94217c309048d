//! vCPU state beyond registers and memory that one run must not hand to
//! the next: model-specific registers, KVM's paravirtual features and
//! pending events.
//!
//! Inside the VM a program is as privileged as the runtime (all guest RAM,
//! the IDT included, is writable at CPL3 through the physmap, so it can
//! take ring 0), so the host restores rather than trusts:
//!
//! * KVM's paravirtual interface is hidden: the CPUID leaves
//!   `0x4000_0000..=0x4000_00ff` are not given to the vCPU and, where KVM
//!   has `KVM_CAP_ENFORCE_PV_FEATURE_CPUID`, writes to the paravirtual MSRs
//!   (steal time, kvmclock, async page faults, ...) fault instead of arming
//!   features that make KVM write into guest memory on every later entry.
//! * Every MSR that KVM lists (`KVM_GET_MSR_INDEX_LIST`), plus the
//!   architectural ones KVM emulates without listing them (MTRRs, ...), is
//!   read once from a freshly set-up vCPU and written back to that value
//!   at every reset, in one `KVM_SET_MSRS`. The vCPU gets one machine-check
//!   bank instead of 32 (four MSRs to restore instead of 128).
//! * Some state cannot be written back, only checked: MSRs the host can
//!   read but not write (PVM's own, `0x4b564d10..`, which a ring-0 guest
//!   can write) and the TSC offset (a guest write of `IA32_TSC` or
//!   `IA32_TSC_ADJUST` moves it, and KVM keeps `IA32_TSC_ADJUST` in step,
//!   while a host write of either would move the guest's clock instead).
//!   A reset reads them (one `KVM_GET_MSRS`) and, if one changed since the
//!   VM was made, fails: the caller then drops the VM for a new one.
//! * Pending exceptions, interrupts, NMIs and SMIs are cleared by writing
//!   the freshly set-up vCPU's events back.
//!
//! `tests/snapshots.rs` proves the set complete from the guest's side: a
//! ring-0 program sweeps whole MSR ranges (the architectural ones, AMD's
//! and Intel's extended ones, Hyper-V's and KVM's), writes a changed value
//! into every MSR it can read, and moves the TSC; the next run from the
//! same snapshot reads every one of them as a fresh clone does. The
//! unlisted MSRs below are those that sweep found.

use kvm_bindings::{kvm_enable_cap, kvm_msr_entry, kvm_vcpu_events, CpuId, Msrs, KVM_CAP_ENFORCE_PV_FEATURE_CPUID};
use std::os::fd::AsRawFd;

use kvm_ioctls::{Kvm, VcpuFd};

use crate::error::{Result, VmError};

/// `IA32_TSC`: not restored (see the module comment).
const MSR_IA32_TSC: u32 = 0x10;
/// `IA32_TSC_ADJUST`: restored and watched (see the module comment).
const MSR_IA32_TSC_ADJUST: u32 = 0x3b;

/// Architectural MSRs KVM emulates for a guest without listing them in
/// `KVM_GET_MSR_INDEX_LIST` (their state still outlives a run): the MTRRs
/// and the TSC_AUX that `rdtscp`/`rdpid` return. Those this host's KVM
/// refuses are dropped when the set is probed.
const UNLISTED_MSRS: &[u32] = &[
    0x2ff, // IA32_MTRR_DEF_TYPE
    0x250,
    0x258,
    0x259, // fixed-range MTRRs
    0x268,
    0x269,
    0x26a,
    0x26b,
    0x26c,
    0x26d,
    0x26e,
    0x26f, // fixed-range MTRRs
    0x200,
    0x201,
    0x202,
    0x203,
    0x204,
    0x205,
    0x206,
    0x207, // variable MTRRs 0-3
    0x208,
    0x209,
    0x20a,
    0x20b,
    0x20c,
    0x20d,
    0x20e,
    0x20f,       // variable MTRRs 4-7
    0xc001_0140, // OSVW_ID_LENGTH (AMD)
    0xc001_0141, // OSVW_STATUS (AMD)
    0x4b56_4d10,
    0x4b56_4d11,
    0x4b56_4d12,
    0x4b56_4d13, // PVM's own (read-only to the host: watched)
    0x400,
    0x401,
    0x402,
    0x403,       // machine-check bank 0 (the only bank: see `one_mce_bank`)
    0xc000_0103, // TSC_AUX
    0x1d9,       // DEBUGCTL
    0x48,        // SPEC_CTRL
    0xc000_0100, // FS_BASE (also in the segment registers)
    0xc000_0101, // GS_BASE
];

/// Whether a CPUID leaf belongs to KVM's paravirtual interface.
fn is_pv_leaf(function: u32) -> bool {
    (0x4000_0000..=0x4000_00ff).contains(&function)
}

/// `supported` without KVM's paravirtual leaves, as vCPU 0 sees it.
pub(crate) fn hide_pv_leaves(supported: &CpuId) -> Result<CpuId> {
    let kept: Vec<_> =
        supported.as_slice().iter().filter(|e| !is_pv_leaf(e.function)).map(|e| as_vcpu_zero(*e)).collect();
    CpuId::from_entries(&kept).map_err(|_| VmError::RuntimeImage("CPUID table too large"))
}

/// `e` with the APIC IDs of vCPU 0: KVM_GET_SUPPORTED_CPUID leaves those
/// of the host CPU the process asked on (leaf 1's EBX[31:24], leaves
/// 0xB/0x1F's EDX), so without this the guest's would depend on where
/// its host process ran (and differ between a snapshot's host process
/// and the one resuming it).
fn as_vcpu_zero(mut e: kvm_bindings::kvm_cpuid_entry2) -> kvm_bindings::kvm_cpuid_entry2 {
    match e.function {
        1 => e.ebx &= 0x00ff_ffff,
        0xb | 0x1f => e.edx = 0,
        _ => {}
    }
    e
}

/// Whether KVM can make the vCPU fault on paravirtual MSRs its CPUID does
/// not advertise.
pub(crate) fn can_enforce_pv_cpuid(kvm: &Kvm) -> bool {
    kvm.check_extension_raw(u64::from(KVM_CAP_ENFORCE_PV_FEATURE_CPUID)) > 0
}

/// Makes the vCPU honour its (paravirtual-free) CPUID: guest writes to
/// KVM's paravirtual MSRs then fault. Call after `KVM_SET_CPUID2`.
pub(crate) fn enforce_pv_cpuid(vcpu: &VcpuFd) -> Result<()> {
    let cap = kvm_enable_cap { cap: KVM_CAP_ENFORCE_PV_FEATURE_CPUID, args: [1, 0, 0, 0], ..Default::default() };
    vcpu.enable_cap(&cap).map_err(VmError::kvm("KVM_ENABLE_CAP(ENFORCE_PV_FEATURE_CPUID)"))
}

/// `KVM_X86_SETUP_MCE`: `_IOW(KVMIO, 0x9c, u64)` (not wrapped by kvm-ioctls).
const KVM_X86_SETUP_MCE: u64 = 0x4008_ae9c;

/// Gives the vCPU one machine-check bank instead of KVM's default 32: each
/// bank is four guest-writable MSRs that a reset would otherwise have to
/// restore (128 MSRs cost ~7 µs per reset, measured).
pub(crate) fn one_mce_bank(vcpu: &VcpuFd) -> Result<()> {
    let mcg_cap: u64 = 1; // one bank, no optional features
                          // SAFETY: KVM_X86_SETUP_MCE reads one u64 from the pointer, which
                          // points at a live local; the fd is a vCPU fd this VcpuFd owns.
    let r = unsafe { libc::ioctl(vcpu.as_raw_fd(), KVM_X86_SETUP_MCE as _, &mcg_cap as *const u64) };
    if r < 0 {
        return Err(VmError::Kvm { op: "KVM_X86_SETUP_MCE", source: kvm_ioctls::Error::last() });
    }
    Ok(())
}

/// The MSR indices a reset restores: KVM's list and [`UNLISTED_MSRS`],
/// without `IA32_TSC` and without repeats.
pub(crate) fn candidate_msrs(kvm: &Kvm) -> Result<Vec<u32>> {
    let listed = kvm.get_msr_index_list().map_err(VmError::kvm("KVM_GET_MSR_INDEX_LIST"))?;
    let mut all: Vec<u32> =
        listed.as_slice().iter().chain(UNLISTED_MSRS).copied().filter(|&i| i != MSR_IA32_TSC).collect();
    all.sort_unstable();
    all.dedup();
    Ok(all)
}

/// The state a reset writes back, read from a vCPU just after its set-up.
#[derive(Clone)]
pub(crate) struct ResetState {
    /// Every candidate MSR the host can both read and write, with its
    /// value on a freshly set-up vCPU.
    pub msrs: Msrs,
    /// The candidates the host can read but not write (PVM's own MSRs,
    /// which a ring-0 guest can write) and `IA32_TSC_ADJUST` (which shows
    /// a change of the TSC offset): a reset compares them with the VM's
    /// values at creation and, if one changed, the VM is not reused.
    pub watched: Vec<u32>,
    /// The freshly set-up vCPU's events (nothing pending).
    pub events: kvm_vcpu_events,
}

impl ResetState {
    /// Reads the candidate MSRs and events of `vcpu`, which must have just
    /// been set up and never run, and keeps the MSRs the host can write
    /// back (a set of the same values is a no-op for the vCPU).
    pub(crate) fn probe(vcpu: &VcpuFd, candidates: &[u32]) -> Result<ResetState> {
        let mut entries: Vec<kvm_msr_entry> =
            candidates.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect();
        // KVM_GET_MSRS / KVM_SET_MSRS stop at the first MSR they refuse and
        // return how many they did: drop that one and go on.
        let mut done = 0;
        while done < entries.len() {
            let mut batch = msrs(&entries[done..])?;
            let n = vcpu.get_msrs(&mut batch).map_err(VmError::kvm("KVM_GET_MSRS"))?;
            entries[done..done + n].copy_from_slice(&batch.as_slice()[..n]);
            done += n;
            if done < entries.len() {
                entries.remove(done);
            }
        }
        let mut done = 0;
        let mut watched = Vec::new();
        while done < entries.len() {
            let n = vcpu.set_msrs(&msrs(&entries[done..])?).map_err(VmError::kvm("KVM_SET_MSRS"))?;
            done += n;
            if done < entries.len() {
                watched.push(entries.remove(done).index);
            }
        }
        if entries.iter().any(|e| e.index == MSR_IA32_TSC_ADJUST) {
            watched.push(MSR_IA32_TSC_ADJUST);
        }
        let events = vcpu.get_vcpu_events().map_err(VmError::kvm("KVM_GET_VCPU_EVENTS"))?;
        Ok(ResetState { msrs: msrs(&entries)?, watched, events })
    }

    /// The watched MSRs' values on `vcpu` (read at a VM's creation, and
    /// compared at each reset by [`Self::watched_unchanged`]).
    pub(crate) fn read_watched(&self, vcpu: &VcpuFd) -> Result<Msrs> {
        let mut m =
            msrs(&self.watched.iter().map(|&index| kvm_msr_entry { index, ..Default::default() }).collect::<Vec<_>>())?;
        if !self.watched.is_empty() {
            let n = vcpu.get_msrs(&mut m).map_err(VmError::kvm("KVM_GET_MSRS"))?;
            if n != self.watched.len() {
                return Err(VmError::Kvm {
                    op: "KVM_GET_MSRS (watched)",
                    source: kvm_ioctls::Error::new(libc::EINVAL),
                });
            }
        }
        Ok(m)
    }

    /// Fails if a watched MSR of `vcpu` no longer has its value in
    /// `baseline`: the host cannot put it back, so the VM must not run
    /// another tenant's program.
    pub(crate) fn watched_unchanged(&self, vcpu: &VcpuFd, baseline: &Msrs) -> Result<()> {
        let now = self.read_watched(vcpu)?;
        match now.as_slice().iter().zip(baseline.as_slice()).find(|(a, b)| a.data != b.data) {
            None => Ok(()),
            Some((m, _)) => Err(VmError::Tainted(m.index)),
        }
    }

    /// Writes the MSRs back (the events go with the next `KVM_RUN` where
    /// the caller can, see [`Self::events`]).
    pub(crate) fn restore_msrs(&self, vcpu: &VcpuFd) -> Result<()> {
        let n = vcpu.set_msrs(&self.msrs).map_err(VmError::kvm("KVM_SET_MSRS"))?;
        if n != self.msrs.as_slice().len() {
            return Err(VmError::Kvm {
                op: "KVM_SET_MSRS (refused a restored MSR)",
                source: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
        Ok(())
    }
}

fn msrs(entries: &[kvm_msr_entry]) -> Result<Msrs> {
    Msrs::from_entries(entries).map_err(|_| VmError::RuntimeImage("too many MSRs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pv_leaves_are_the_kvm_range() {
        assert!(is_pv_leaf(0x4000_0000) && is_pv_leaf(0x4000_0001) && is_pv_leaf(0x4000_00ff));
        assert!(!is_pv_leaf(0x3fff_ffff) && !is_pv_leaf(0x4000_0100) && !is_pv_leaf(0) && !is_pv_leaf(0x8000_0001));
    }
}
