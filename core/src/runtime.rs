//! The guest runtime image, built by build.rs and embedded in the library.

use hvsandbox_abi as abi;
use vm_memory::ByteValued;

use crate::error::{Result, VmError};

static IMAGE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/runtime.bin"));

/// The embedded guest runtime image (for identifying the build).
pub static RUNTIME_IMAGE: &[u8] = IMAGE;

/// The embedded runtime: its bytes and the header that says where its
/// entry points are.
#[derive(Clone, Copy, Debug)]
pub struct RuntimeImage {
    pub bytes: &'static [u8],
    pub header: abi::RuntimeHeader,
}

impl RuntimeImage {
    /// The runtime embedded at build time, validated.
    pub fn embedded() -> Result<RuntimeImage> {
        RuntimeImage::parse(IMAGE)
    }

    fn parse(bytes: &'static [u8]) -> Result<RuntimeImage> {
        let size = std::mem::size_of::<abi::RuntimeHeader>();
        if bytes.len() < size {
            return Err(VmError::RuntimeImage("shorter than its header"));
        }
        let mut header = abi::RuntimeHeader::zeroed();
        header.as_mut_slice().copy_from_slice(&bytes[..size]);
        if header.magic != abi::RUNTIME_MAGIC {
            return Err(VmError::RuntimeImage("bad magic"));
        }
        if header.abi_version != abi::ABI_VERSION {
            return Err(VmError::RuntimeImage("ABI version mismatch"));
        }
        let end = abi::RUNTIME_VA + abi::RUNTIME_MAX;
        let inside = |va: u64| (abi::RUNTIME_VA..end).contains(&va);
        if !(inside(header.entry)
            && inside(header.syscall_entry)
            && inside(header.exception_stubs)
            && header.stack_top > abi::RUNTIME_VA
            && header.stack_top <= end
            && header.image_end <= end
            && header.text_end <= header.image_end
            && inside(header.preempt_entry)
            && header.fault_record >= abi::RUNTIME_VA
            && header.fault_record % 8 == 0
            && header.fault_record.checked_add(48).is_some_and(|e| e <= header.image_end)
            && (bytes.len() as u64) <= header.image_end - abi::RUNTIME_VA)
        {
            return Err(VmError::RuntimeImage("entry points outside the runtime region"));
        }
        Ok(RuntimeImage { bytes, header })
    }

    /// True if `rip` lies in the runtime's code.
    pub fn contains_code(&self, rip: u64) -> bool {
        (abi::RUNTIME_VA..self.header.text_end).contains(&rip)
    }
}
