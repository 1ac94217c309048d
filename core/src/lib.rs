//! hvsandbox-core: the VMM mechanism of hvsandbox.
//!
//! It knows KVM, guest memory and the privileged structures that let the
//! guest start at CPL3; it knows nothing about programs, limits or the
//! public API (that is the `hvsandbox` crate's job).

pub mod error;
mod isolation;
pub mod kick;
pub mod layout;
pub mod runtime;
pub mod vm;

pub use error::{Result, VmError};
pub use hvsandbox_abi as abi;
pub use kick::{thread_cpu_time, DeadlineTimer, ThreadKicker};
pub use runtime::RuntimeImage;
pub use vm::{
    probe_kvm, BootParams, FrameRanges, FreshRam, HugePages, ProgramImage, RamLoader, RamWarmer, VcpuState, Vm, VmExit,
};
/// The trait of the ABI records that may be viewed as bytes (`as_slice`)
/// and read from guest memory ([`Vm::read_obj`]).
pub use vm_memory::ByteValued;
