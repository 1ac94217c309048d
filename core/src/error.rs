//! Errors of the VMM mechanism.

/// What went wrong in the VMM layer. The sandbox layer maps these onto its
/// public, stable error kinds.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot open /dev/kvm: {0}")]
    KvmOpen(#[source] kvm_ioctls::Error),
    #[error("KVM API version {0} is not supported (need 12)")]
    KvmVersion(i32),
    #[error("KVM ioctl {op} failed: {source}")]
    Kvm {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("guest memory of {size} bytes: {reason}")]
    MemorySize { size: u64, reason: &'static str },
    #[error("cannot map guest memory: {0}")]
    MemoryMap(String),
    #[error("huge pages were required: {0}")]
    HugePages(String),
    #[error("guest memory access at {addr:#x}+{len:#x} is out of bounds")]
    GuestAccess { addr: u64, len: u64 },
    #[error("the embedded guest runtime image is invalid: {0}")]
    RuntimeImage(&'static str),
    #[error("program image of {len} bytes does not fit in guest memory of {mem} bytes")]
    ImageTooLarge { len: u64, mem: u64 },
    #[error("cannot read the program file: {0}")]
    ImageRead(#[source] std::io::Error),
    #[error("arguments and environment take {len} bytes; the limit is {max}")]
    ArgsTooLarge { len: u64, max: u64 },
    #[error("the filesystem manifest takes {len} bytes; {room} bytes are left after the arguments")]
    ManifestTooLarge { len: u64, room: u64 },
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("the runtime did not boot ahead of its program: {0}")]
    Preboot(String),
    #[error("a run changed MSR {0:#x}, which the host cannot restore: the VM cannot be reset")]
    Tainted(u32),
    #[error("cannot set up the vCPU timer: {0}")]
    Timer(#[source] std::io::Error),
}

impl VmError {
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
        move |source| VmError::Kvm { op, source }
    }
}

pub type Result<T, E = VmError> = std::result::Result<T, E>;
