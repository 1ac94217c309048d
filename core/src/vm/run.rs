//! The run loop: one `KVM_RUN` at a time, its exit decoded into a
//! [`VmExit`], with the kick that can interrupt it.

use hvsandbox_abi as abi;
use kvm_ioctls::VcpuExit;

use super::Vm;
use crate::error::{Result, VmError};
use crate::kick;

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

impl Vm {
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

    /// Ends the program's time slice, if the vCPU stopped in the
    /// program's own code (below the runtime's half of the address space):
    /// enters the runtime as a program fault does, with
    /// [`abi::vector::HOST_PREEMPT`] and the program's RIP, RSP and RFLAGS
    /// in the runtime's fault record; every other register stays the
    /// program's. Returns false (nothing done) when the vCPU is in the
    /// runtime or an event is being delivered to it.
    pub fn preempt(&mut self) -> Result<bool> {
        let mut regs = self.vcpu.get_regs().map_err(VmError::kvm("KVM_GET_REGS"))?;
        if regs.rip >= abi::PHYS_BASE {
            return Ok(false);
        }
        // Stopped while an exception (a page fault, say) or interrupt is on
        // its way in: its frame would name the runtime's entry instead of
        // the program's instruction. Leave it to be delivered.
        let ev = self.vcpu.get_vcpu_events().map_err(VmError::kvm("KVM_GET_VCPU_EVENTS"))?;
        if ev.exception.injected != 0 || ev.exception.pending != 0 || ev.interrupt.injected != 0 || ev.nmi.injected != 0
        {
            return Ok(false);
        }
        let h = self.runtime.header;
        let record = [abi::vector::HOST_PREEMPT, 0, regs.rip, 0, regs.rsp, regs.rflags];
        let mut bytes = [0u8; 48];
        for (chunk, v) in bytes.chunks_exact_mut(8).zip(record) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        self.write(h.fault_record - abi::PHYS_BASE, &bytes)?;
        regs.rip = h.preempt_entry;
        regs.rsp = h.stack_top;
        // TF, DF and AC cleared, as for a fault (whose runtime RFLAGS are 0x2).
        regs.rflags &= !(0x100 | 0x400 | 0x40000);
        self.vcpu.set_regs(&regs).map_err(VmError::kvm("KVM_SET_REGS"))?;
        Ok(true)
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
        // From ring 0 (an exception in the ring-0 handler, a double fault)
        // the frame is at RSP; from CPL3 (the runtime's own fault, told
        // apart there) it is where the CPU put it for an exception from
        // CPL3: at the top of the ring-0 stack.
        let gpa = if sregs.cs.selector & 3 == 0 {
            regs.rsp.wrapping_sub(abi::PHYS_BASE)
        } else {
            abi::RING0_STACK_GPA + abi::RING0_STACK_SIZE - size
        };
        let stacks = [(abi::RING0_STACK_GPA, abi::RING0_STACK_SIZE), (abi::IST_STACK_GPA, abi::IST_STACK_SIZE)];
        let inside = stacks.iter().any(|&(base, len)| gpa >= base && gpa.saturating_add(size) <= base + len);
        if !inside {
            return Ok(VmExit::Unexpected(format!("fault report with a bad stack {:#x}", regs.rsp)));
        }
        let frame: abi::ExceptionFrame = self.read_obj(gpa)?;
        // From CPL3 only the runtime reports a fault, and only its own: a
        // program that writes the doorbell (it can reach it) is refused.
        if sregs.cs.selector & 3 != 0 && !self.runtime.contains_code(frame.rip) {
            return Ok(VmExit::Unexpected(format!(
                "fault report from CPL3 that names no fault of the runtime (RIP {:#x})",
                frame.rip
            )));
        }
        Ok(VmExit::Fault { frame, cr2: sregs.cr2 })
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
}
