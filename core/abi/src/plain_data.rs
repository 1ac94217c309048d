//! The records the host copies in and out of guest memory are plain data:
//! checked here at compile time to have no padding and, with the
//! `vm-memory` feature (the host's; the guest runtime builds without it),
//! given `vm-memory`'s `ByteValued`, so the host reads and writes them
//! through `vm-memory` instead of hand-written byte views.

use crate::cpuid::{Entry as CpuidEntry, Table as CpuidTable};
use crate::fs::{Dirent, ManifestEntry, Stat};
use crate::{BootInfo, ExceptionFrame, Hypercall, ResumeInfo, RuntimeHeader, RuntimeStats};

/// Fails to compile unless `$t` has exactly the fields listed (the pattern
/// is exhaustive), each of the type listed, and its size is the sum of
/// theirs: it has no padding, which `ByteValued` forbids (padding bytes
/// are uninitialised memory).
macro_rules! no_padding {
    ($t:ident { $($f:ident: $ft:ty),* $(,)? }) => {
        const _: () = {
            #[allow(dead_code)]
            fn fields(v: $t) {
                let $t { $($f),* } = v;
                $(let _: $ft = $f;)*
            }
            assert!(core::mem::size_of::<$t>() == 0 $(+ core::mem::size_of::<$ft>())*, "padding");
        };
    };
}

no_padding!(RuntimeHeader {
    magic: u64,
    abi_version: u32,
    _pad: u32,
    entry: u64,
    syscall_entry: u64,
    exception_stubs: u64,
    exception_stub_stride: u64,
    stack_top: u64,
    text_end: u64,
    image_end: u64,
    preempt_entry: u64,
    fault_record: u64,
});
no_padding!(BootInfo {
    magic: u64,
    abi_version: u32,
    flags: u32,
    mem_size: u64,
    free_start: u64,
    free_end: u64,
    image_gpa: u64,
    image_len: u64,
    args_gpa: u64,
    args_len: u64,
    argc: u32,
    envc: u32,
    tsc_khz: u64,
    boot_tsc: u64,
    boot_realtime_ns: u64,
    random_seed: [u8; 32],
    pml4_gpa: u64,
    page_tables_end: u64,
    manifest_gpa: u64,
    manifest_len: u64,
    max_processes: u32,
    max_open_files: u32,
    image_ino: u64,
    _reserved: [u64; 2],
});
no_padding!(RuntimeStats {
    syscalls: u64,
    unknown_syscalls: u64,
    frames_used_peak: u64,
    page_faults: u64,
    cr3_loads: u64,
    processes: u64,
    out_buffers_gpa: u64,
    tasks: u64,
    unknown_by_nr: [u32; crate::UNKNOWN_SLOTS],
    rewritten_sites: u64,
    slow_syscalls: u64,
    frame_frontier: u64,
    page_flushes: u64,
});
no_padding!(ResumeInfo {
    tsc_khz: u64,
    tsc: u64,
    realtime_ns: u64,
    random_seed: [u8; 32],
    argc: u32,
    envc: u32,
    args_len: u64,
    manifest_len: u64,
    stdin_len: u64,
    flags: u64,
});
no_padding!(Hypercall { args: [u64; 6], ret: u64, host_flags: u64, cr3: u64 });
no_padding!(ExceptionFrame { vector: u64, error_code: u64, rip: u64, cs: u64, rflags: u64, rsp: u64, ss: u64 });
no_padding!(ManifestEntry { kind: u32, mode: u32, handle: u64, size: u64, path_len: u32, _pad: u32 });
no_padding!(Stat { mode: u32, nlink: u32, size: u64, ino: u64, mtime_sec: i64, mtime_nsec: u32, _pad: u32 });
no_padding!(Dirent { ino: u64, dtype: u8, name_len: u8 });
no_padding!(CpuidEntry { function: u32, index: u32, flags: u32, eax: u32, ebx: u32, ecx: u32, edx: u32, _pad: u32 });
no_padding!(CpuidTable {
    magic: u32,
    count: u32,
    basic_max: u32,
    _pad: u32,
    entries: [CpuidEntry; crate::cpuid::MAX_ENTRIES]
});

#[cfg(feature = "vm-memory")]
mod byte_valued {
    use super::*;
    use vm_memory::ByteValued;

    // SAFETY: repr(C), Copy; its fields are u64 and u32 and it has no
    // padding (checked above), so every byte pattern is a valid value.
    unsafe impl ByteValued for RuntimeHeader {}
    // SAFETY: repr(C), Copy; its fields are u64, u32 and arrays of u8 and
    // u64 and it has no padding (checked above), so every byte pattern is
    // a valid value.
    unsafe impl ByteValued for BootInfo {}
    // SAFETY: repr(C), Copy; its fields are u64 and arrays of u64 and u32
    // and it has no padding (checked above), so every byte pattern is a
    // valid value.
    unsafe impl ByteValued for RuntimeStats {}
    // SAFETY: repr(C), Copy; its fields are u64, u32 and an array of u8
    // and it has no padding (checked above), so every byte pattern is a
    // valid value.
    unsafe impl ByteValued for ResumeInfo {}
    // SAFETY: repr(C), Copy; its fields are u64 and an array of u64 and it
    // has no padding (checked above), so every byte pattern is a valid
    // value.
    unsafe impl ByteValued for Hypercall {}
    // SAFETY: repr(C), Copy; its fields are all u64 and it has no padding
    // (checked above), so every byte pattern is a valid value.
    unsafe impl ByteValued for ExceptionFrame {}
    // SAFETY: repr(C), Copy; its fields are u32 and u64 and it has no
    // padding (checked above), so every byte pattern is a valid value.
    unsafe impl ByteValued for ManifestEntry {}
    // SAFETY: repr(C), Copy; its fields are u32, u64 and i64 and it has no
    // padding (checked above), so every byte pattern is a valid value.
    unsafe impl ByteValued for Stat {}
    // SAFETY: repr(C, packed), Copy; its fields are a u64 and two u8 and
    // it has no padding (checked above), so every byte pattern is a valid
    // value.
    unsafe impl ByteValued for Dirent {}
    // SAFETY: repr(C), Copy; its fields are all u32 and it has no padding
    // (checked above), so every byte pattern is a valid value.
    unsafe impl ByteValued for CpuidEntry {}
    // SAFETY: repr(C), Copy; its fields are u32, an array of u32 and an
    // array of CpuidEntry (itself plain data) and it has no padding
    // (checked above), so every byte pattern is a valid value.
    unsafe impl ByteValued for CpuidTable {}
}
