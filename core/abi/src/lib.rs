//! The host <-> guest contract of hvsandbox.
//!
//! Both the host VMM (`hvsandbox-core`) and the guest runtime
//! (`guest-runtime/`) depend on this crate, so every address, structure and
//! number that crosses the VM boundary is defined exactly once, here.
//!
//! # Guest memory map
//!
//! Guest RAM is one memslot at guest-physical address 0. The host maps *all*
//! of it, with 2 MiB pages, at [`PHYS_BASE`] in the guest's virtual address
//! space ("physmap"), user-accessible, so the runtime (which runs at CPL3)
//! can reach every frame, including its own page tables. The runtime is
//! linked to run from the physmap at [`RUNTIME_VA`].
//!
//! | guest-physical | what |
//! | --- | --- |
//! | `0x0000_0000` | null page, never used |
//! | [`GDT_GPA`] | GDT |
//! | [`IDT_GPA`] | IDT |
//! | [`TSS_GPA`] | 64-bit TSS |
//! | [`HCALL_GPA`] | hypercall argument block ([`Hypercall`]) |
//! | [`RING0_STACK_GPA`] .. +[`RING0_STACK_SIZE`] | ring-0 stack (RSP0) |
//! | [`IST_STACK_GPA`] .. +[`IST_STACK_SIZE`] | ring-0 stack for double faults (IST1) |
//! | [`BOOT_INFO_GPA`] | [`BootInfo`] |
//! | [`STATS_GPA`] | [`RuntimeStats`] written by the runtime |
//! | [`RESUME_GPA`] .. +[`RESUME_MAX`] | a restored run's inputs ([`hc::SNAPSHOT`]) |
//! | [`ARGS_GPA`] .. +[`ARGS_MAX`] | argv and envp strings |
//! | [`CPUID_GPA`] | the vCPU's CPUID leaves ([`cpuid::Table`]), written by the host |
//! | [`PAGE_TABLES_GPA`] .. +[`PAGE_TABLES_MAX`] | page tables built by the host |
//! | [`RUNTIME_GPA`] .. +[`RUNTIME_MAX`] | the runtime image (code, data, bss) |
//! | the runtime's end ([`BootInfo::free_start`]) .. | free frames, owned by the runtime |
//! | below the page-table pool | the program's ELF file, as bytes |
//! | [`pt_pool_start`] .. end of RAM | the runtime's page-table pool |
//!
//! The hypercall doorbell is [`DOORBELL_GPA`], outside RAM: a write there
//! leaves the guest with an MMIO exit. It is mapped at [`DOORBELL_VA`].
//!
//! One file of ~880 lines (~60 of them tests) on purpose: it is the
//! contract itself, read whole by whoever changes either side. Its parts
//! (the memory map, hypercall numbers, boot and resume records, the file
//! service's messages, page-table bits, CPUID and prefault tables) refer
//! to each other's constants; only the encoders with logic of their own
//! live apart (`fs_codec.rs`, `plain_data.rs`).
#![no_std]

mod fs_codec;
mod plain_data;

/// Version of this contract. Bump on any incompatible change; the host
/// refuses a runtime (and later a snapshot) with another version.
pub const ABI_VERSION: u32 = 6;

pub const PAGE_SIZE: u64 = 0x1000;
pub const HUGE_PAGE_SIZE: u64 = 0x20_0000;

/// Virtual address at which all of guest RAM is mapped (physmap).
pub const PHYS_BASE: u64 = 0x7f00_0000_0000;

pub const GDT_GPA: u64 = 0x1000;
pub const IDT_GPA: u64 = 0x2000;
pub const TSS_GPA: u64 = 0x3000;
pub const HCALL_GPA: u64 = 0x4000;
pub const RING0_STACK_GPA: u64 = 0x5000;
pub const RING0_STACK_SIZE: u64 = 0x3000;
pub const IST_STACK_GPA: u64 = 0x8000;
pub const IST_STACK_SIZE: u64 = 0x2000;
pub const BOOT_INFO_GPA: u64 = 0xa000;
pub const STATS_GPA: u64 = 0xb000;
/// Size of the [`RuntimeStats`] area (two pages).
pub const STATS_SIZE: u64 = 0x2000;
/// Where the host leaves a restored run's inputs, so that resuming costs
/// no hypercall: a little-endian u64 length, then that many bytes of
/// [`ResumeInfo`] and what follows it (see [`hc::SNAPSHOT`]).
pub const RESUME_GPA: u64 = 0xd000;
pub const RESUME_MAX: u64 = 0x3000;
pub const ARGS_GPA: u64 = 0x1_0000;
/// Maximum total size of argv + envp strings (with their NULs).
pub const ARGS_MAX: u64 = 0x4_0000;
/// The CPUID leaves of the vCPU ([`cpuid::Table`]), as KVM answers them,
/// written by the host at boot and when a snapshot from a file resumes:
/// the runtime answers a rewritten `cpuid` from here (see `cpuid`).
pub const CPUID_GPA: u64 = 0x5_0000;
pub const PAGE_TABLES_GPA: u64 = 0x10_0000;
pub const PAGE_TABLES_MAX: u64 = 0x10_0000;
pub const RUNTIME_GPA: u64 = 0x20_0000;
/// Maximum size of the runtime image including its bss.
pub const RUNTIME_MAX: u64 = 0x40_0000;
pub const RUNTIME_VA: u64 = PHYS_BASE + RUNTIME_GPA;
pub const IMAGE_GPA: u64 = RUNTIME_GPA + RUNTIME_MAX;

/// The doorbell: a guest-physical address with no memslot behind it.
pub const DOORBELL_GPA: u64 = 0x10_0000_0000;
/// Where the host maps the doorbell page in the guest's address space.
pub const DOORBELL_VA: u64 = 0x7f10_0000_0000;
/// The runtime's own heap (virtual; pages mapped on demand), in a
/// top-level slot of its own above the physmap, out of the program's reach.
pub const RUNTIME_HEAP_VA: u64 = 0x7f80_0000_0000;
pub const RUNTIME_HEAP_MAX: u64 = 0x40_0000_0000;

/// Smallest and largest guest RAM the host accepts (multiples of 2 MiB).
pub const MIN_MEMORY: u64 = 16 << 20;
pub const MAX_MEMORY: u64 = 16 << 30;

/// Selectors (see the GDT the host builds).
pub const KERNEL_CS: u16 = 0x10;
pub const KERNEL_DS: u16 = 0x18;
pub const USER_DS: u16 = 0x2b;
pub const USER_CS: u16 = 0x33;
pub const TSS_SEL: u16 = 0x40;

/// Guest virtual address of a guest-physical address through the physmap.
pub const fn phys_to_virt(gpa: u64) -> u64 {
    PHYS_BASE + gpa
}

/// Header at the very start of the runtime image: how the host finds the
/// runtime's entry points without parsing symbols.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RuntimeHeader {
    pub magic: u64,
    pub abi_version: u32,
    pub _pad: u32,
    /// Virtual address of `_start` (entered at CPL3, RDI = BootInfo VA).
    pub entry: u64,
    /// Virtual address of the `syscall` entry (LSTAR).
    pub syscall_entry: u64,
    /// Virtual address of exception stub 0; stub N is at `+ N * stride`.
    pub exception_stubs: u64,
    pub exception_stub_stride: u64,
    /// Top of the runtime's own CPL3 stack (initial RSP).
    pub stack_top: u64,
    /// End of the runtime's code (faults below it, from RUNTIME_VA, are the
    /// runtime's own: a crash of the runtime, not of the program).
    pub text_end: u64,
    /// End of the image including bss.
    pub image_end: u64,
    /// Virtual address where a preempted program enters the runtime (as
    /// a program fault does, with [`vector::HOST_PREEMPT`] in the record).
    pub preempt_entry: u64,
    /// Virtual address of the runtime's six-word fault record: vector,
    /// error code, RIP, CR2, RSP, RFLAGS.
    pub fault_record: u64,
}

pub const RUNTIME_MAGIC: u64 = u64::from_le_bytes(*b"HVSBRT01");
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"HVSBBOOT");

/// Everything the runtime needs to start the program. Written by the host
/// at [`BOOT_INFO_GPA`] before the first instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    pub magic: u64,
    pub abi_version: u32,
    pub flags: u32,
    /// Guest RAM size in bytes.
    pub mem_size: u64,
    /// Frames in `[free_start, free_end)` belong to the runtime's allocator.
    pub free_start: u64,
    pub free_end: u64,
    /// The program's ELF file, `image_len` bytes at guest-physical `image_gpa`.
    pub image_gpa: u64,
    pub image_len: u64,
    /// argv then envp, each string NUL-terminated, packed at `args_gpa`.
    pub args_gpa: u64,
    pub args_len: u64,
    pub argc: u32,
    pub envc: u32,
    /// TSC rate and a (tsc, realtime) pair for the guest's clocks.
    pub tsc_khz: u64,
    pub boot_tsc: u64,
    pub boot_realtime_ns: u64,
    /// Seed for the guest's getrandom / AT_RANDOM.
    pub random_seed: [u8; 32],
    /// Guest-physical address of the top-level page table (CR3).
    pub pml4_gpa: u64,
    /// First guest-physical address after the host-built page tables.
    pub page_tables_end: u64,
    /// The filesystem manifest ([`fs::ManifestEntry`] records), in the
    /// args region after argv/envp.
    pub manifest_gpa: u64,
    pub manifest_len: u64,
    /// Most processes alive at once in the guest (0: the runtime's default).
    pub max_processes: u32,
    /// Most open descriptors per guest process (0: the runtime's default).
    pub max_open_files: u32,
    /// The program file's inode number on the host (0: not a host file,
    /// e.g. bytes given to the sandbox): `/proc/<pid>/maps` and a stat of
    /// the guest's copy of it show the host file's identity.
    pub image_ino: u64,
    pub _reserved: [u64; 2],
}

pub const BOOT_FLAG_NONE: u32 = 0;
/// The host takes a snapshot right after the runtime has loaded the
/// program, before its first instruction (the runtime rings
/// [`hc::SNAPSHOT`] there).
pub const BOOT_FLAG_SNAPSHOT_AT_ENTRY: u32 = 1;
/// Boot without a program: the runtime sets itself up, then waits in
/// [`hc::PROGRAM`] for the host to supply one (a VM made ahead of its run
/// has done that part before the run is asked for).
pub const BOOT_FLAG_WAIT_PROGRAM: u32 = 2;
/// Rewrite system-call sites once they have run, so that later calls
/// enter the runtime by a jump, whatever a `syscall` costs here (the host
/// sets it when the environment has `HVSANDBOX_REWRITE=1`). With neither
/// this nor [`BOOT_FLAG_NO_REWRITE`], the runtime times a raw `syscall`
/// at boot and rewrites only where it is slow.
pub const BOOT_FLAG_REWRITE: u32 = 4;
/// Never rewrite system-call or `cpuid` sites (`HVSANDBOX_REWRITE=0`).
pub const BOOT_FLAG_NO_REWRITE: u32 = 8;
/// Rewrite `cpuid` sites (ahead of time, at an entry snapshot) but never
/// system-call sites, without timing a `syscall`
/// (`HVSANDBOX_REWRITE=cpuid`): what a host whose `syscall` is cheap gets
/// by default. A `cpuid` leaves the guest on every KVM host, so its sites
/// are rewritten unless [`BOOT_FLAG_NO_REWRITE`].
pub const BOOT_FLAG_REWRITE_CPUID_ONLY: u32 = 16;
/// The flags by which the host decides rewriting (the runtime then does
/// not time a `syscall`).
pub const BOOT_FLAGS_REWRITE_DECIDED: u32 = BOOT_FLAG_REWRITE | BOOT_FLAG_NO_REWRITE | BOOT_FLAG_REWRITE_CPUID_ONLY;

/// Counters the runtime keeps for the host to read after a run.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RuntimeStats {
    /// Total syscalls served in the guest.
    pub syscalls: u64,
    /// Syscalls answered with -ENOSYS.
    pub unknown_syscalls: u64,
    /// Physical frames handed out by the runtime's allocator (peak).
    pub frames_used_peak: u64,
    /// Page faults of the program the runtime served (first touches).
    pub page_faults: u64,
    /// Ring-0 trips for TLB flushes and address-space switches.
    pub cr3_loads: u64,
    /// Guest processes created (fork/vfork/clone without CLONE_THREAD).
    pub processes: u64,
    /// Guest-physical address of the runtime's `[OutBuffer; 2]` (stdout,
    /// stderr), so the host can take output still buffered in the guest
    /// when it stops a run (timeout, cancel). 0 = not published.
    pub out_buffers_gpa: u64,
    /// The runtime's tasks (threads of all processes) at the last system
    /// call, at least 2 while an alarm is set: with more than one, the host
    /// ends the time slice of a program that runs on.
    pub tasks: u64,
    /// Per-number count of syscalls answered -ENOSYS, numbers
    /// `0..UNKNOWN_SLOTS`; larger numbers count in the last slot.
    pub unknown_by_nr: [u32; UNKNOWN_SLOTS],
    /// System-call sites rewritten to enter the runtime by a jump (all
    /// processes of the run).
    pub rewritten_sites: u64,
    /// System calls that entered the runtime through the `syscall`
    /// instruction itself (the hypervisor's slow path) rather than a
    /// rewritten site's jump; all of them when rewriting is off.
    pub slow_syscalls: u64,
    /// The guest-physical address of the next frame the runtime's frame
    /// allocator has never handed out: its fresh frames are taken upward
    /// from there, so the host may fault in the host memory just above it
    /// ahead of the guest. The guest's word: a hint, bounded by the host.
    pub frame_frontier: u64,
    /// Ring-0 trips for one page's TLB flush (`invlpg`), where a change
    /// to a few pages' entries does without a CR3 load.
    pub page_flushes: u64,
}

pub const UNKNOWN_SLOTS: usize = 512;

/// Every page-table frame the guest runtime allocates comes from this pool
/// at the top of guest RAM (the host-built tables are at
/// [`PAGE_TABLES_GPA`]). Knowing where page tables can live lets the host
/// reset a VM without dropping KVM's shadow page tables when no page of
/// these ranges changed. The general frame allocator stops below it.
pub const fn pt_pool_size(mem_size: u64) -> u64 {
    let s = mem_size / 16;
    if s < (1 << 20) {
        1 << 20
    } else {
        s & !(PAGE_SIZE - 1)
    }
}

/// First guest-physical address of the page-table pool.
pub const fn pt_pool_start(mem_size: u64) -> u64 {
    mem_size - pt_pool_size(mem_size)
}

/// Whether `gpa` may hold a page table (host-built or from the pool).
pub const fn may_hold_page_table(gpa: u64, mem_size: u64) -> bool {
    (gpa >= PAGE_TABLES_GPA && gpa < PAGE_TABLES_GPA + PAGE_TABLES_MAX)
        || (gpa >= pt_pool_start(mem_size) && gpa < mem_size)
}

/// Size of the runtime's buffer for each output stream.
pub const OUT_BUF_SIZE: usize = 64 * 1024;

/// One output stream's buffer in the guest (see `out_buffers_gpa`).
#[repr(C)]
pub struct OutBuffer {
    /// Bytes buffered, at most OUT_BUF_SIZE (the host checks).
    pub len: u64,
    /// Nonzero once the host said the stream is full.
    pub discard: u64,
    /// Nonzero while the runtime changes `len`: the host, which may stop
    /// the vCPU anywhere, takes the bytes and clears `len` only when 0.
    pub writing: u64,
    pub data: [u8; OUT_BUF_SIZE],
}

/// Hypercall numbers: the value the guest writes to the doorbell.
pub mod hc {
    /// `args[0]` = fd (1 or 2), `args[1]` = guest VA of bytes, `args[2]` = len.
    /// Returns a bit set: [`super::WRITE_STREAM_FULL`] when the host will
    /// discard any further output on that stream.
    pub const WRITE: u64 = 1;
    /// `args[0]` = fd (0), `args[1]` = guest VA of buffer, `args[2]` = len.
    /// Never waits: returns the number of bytes read, 0 at end of input, or
    /// [`super::READ_NOTHING_YET`] when the input is still open but has no
    /// bytes now (the host sets [`super::HOST_FLAG_STDIN`] once it has).
    pub const READ: u64 = 2;
    /// `args[0]` = exit code (0..=255), `args[1]` = terminating signal or 0,
    /// `args[2]` = guest-physical address of the runtime's two
    /// [`super::OutBuffer`]s (stdout, stderr): the host takes what is still
    /// in them as the run's last output, so the runtime does not flush them
    /// first. Never returns.
    pub const EXIT: u64 = 3;
    /// Raised by the ring-0 exception handler. The exception frame
    /// ([`super::ExceptionFrame`]) is at the vCPU's RSP. Never returns.
    pub const FAULT: u64 = 4;
    /// The runtime hit an internal error: `args[1]` = VA of a message,
    /// `args[2]` = its length. Never returns.
    pub const PANIC: u64 = 5;
    /// Sleep `args[0]` nanoseconds on the host (bounded by the deadline);
    /// with `args[1]` = [`super::SLEEP_UNTIL_INPUT`], until input comes
    /// (then [`super::HOST_FLAG_STDIN`] is set) if that is sooner.
    pub const SLEEP: u64 = 6;
    /// Debug log line from the runtime: `args[1]` = VA, `args[2]` = len.
    pub const LOG: u64 = 7;
    /// The program (not the runtime) took an exception it has no handler
    /// for; the runtime has flushed its output. `args[0]` = vector,
    /// `args[1]` = error code, `args[2]` = RIP, `args[3]` = CR2 (page
    /// faults), `args[4]` = RSP. The run ends with the matching signal.
    /// Never returns.
    pub const PROGRAM_FAULT: u64 = 8;
    /// Look up one name in a host directory. `args[0]` = directory handle,
    /// `args[1]` = VA of the name, `args[2]` = its length (1..=NAME_MAX, no
    /// `/`, not `.` or `..`), `args[3]` = VA of a [`super::fs::Stat`] to
    /// fill. Symlinks are not followed. Returns the new handle or -errno.
    pub const FS_LOOKUP: u64 = 9;
    /// Read a host file. `args[0]` = handle, `args[1]` = file offset,
    /// `args[2]` = VA of the buffer, `args[3]` = length (≤ HCALL_MAX_LEN).
    /// Returns the bytes read (0 at end of file) or -errno.
    pub const FS_READ: u64 = 10;
    /// List a host directory. `args[0]` = handle, `args[1]` = index of the
    /// first entry, `args[2]` = VA of the buffer, `args[3]` = its length.
    /// Fills as many whole [`super::fs::Dirent`] records (never `.` or
    /// `..`) as fit and returns the bytes used (0 = no more entries) or
    /// -errno: a reply that leaves room for a record with the longest
    /// name (`dirent_size(NAME_MAX)`) holds the last entries.
    pub const FS_READDIR: u64 = 11;
    /// Read a host symlink's target. `args[0]` = handle, `args[1]` = VA of
    /// the buffer, `args[2]` = its length. Returns the length or -errno.
    pub const FS_READLINK: u64 = 12;
    /// Stat a handle. `args[0]` = handle, `args[1]` = VA of a
    /// [`super::fs::Stat`]. Returns 0 or -errno.
    pub const FS_STAT: u64 = 13;
    /// Send (part of) a file back to the host at exit. `args[0]` = VA of
    /// the guest path, `args[1]` = its length, `args[2]` = VA of the data,
    /// `args[3]` = its length (≤ HCALL_MAX_LEN), `args[4]` = offset of the
    /// data in the file, `args[5]` = file mode. Returns 0, or -ENOSPC
    /// when the host will take no more.
    pub const FILE_OUT: u64 = 14;
    /// The first program could not be started (e.g. its dynamic loader is
    /// not in the guest's filesystem): `args[0]` = errno, `args[1]` = VA of
    /// a message, `args[2]` = its length. Never returns.
    pub const EXEC_FAILED: u64 = 15;
    /// The guest ran out of memory serving the first process (`args[0]` =
    /// the address it was touching). Never returns.
    pub const OUT_OF_MEMORY: u64 = 16;
    /// The guest is at a snapshot point: the program's entry (with
    /// `BOOT_FLAG_SNAPSHOT_AT_ENTRY`) or a checkpoint the program asked for
    /// (`/dev/hvsandbox/checkpoint`). Returns 0 to go on as if nothing
    /// happened; in a restored snapshot, [`RESUMED_WITH_INFO`] when this
    /// run's inputs are at [`super::RESUME_GPA`], or [`RESUMED`] when they
    /// did not fit there: the guest fetches them with [`RESUME_INFO`].
    pub const SNAPSHOT: u64 = 17;
    /// [`SNAPSHOT`]'s result in a restored guest that asks for its inputs.
    pub const RESUMED: u64 = 1;
    /// [`SNAPSHOT`]'s result in a restored guest whose inputs wait at
    /// [`super::RESUME_GPA`].
    pub const RESUMED_WITH_INFO: u64 = 2;
    /// [`SNAPSHOT`]'s result in a clone being made ahead: read one byte of
    /// every present, user-accessible page of the current address space
    /// whose frame lies in the ranges at [`super::RESUME_GPA`] (a
    /// little-endian u64 byte length, then that many bytes of ranges, see
    /// [`super::prefault`]), so that the
    /// hypervisor builds its translations before the clone's first run;
    /// then ring [`PREFAULT_DONE`]. Nothing but the runtime's stack below
    /// the snapshot point may change. The host puts the vCPU back in the
    /// snapshot's state afterwards.
    pub const PREFAULT: u64 = 3;
    /// A restored guest asks for this run's inputs: `args[0]` = VA of a
    /// buffer, `args[1]` = its length. The host writes a
    /// [`super::ResumeInfo`] followed by its argv/envp strings and manifest,
    /// and returns the total length (if larger than the buffer, nothing is
    /// written: ask again with a larger one), or -errno.
    pub const RESUME_INFO: u64 = 18;
    /// A runtime booted with `BOOT_FLAG_WAIT_PROGRAM` is set up and waits
    /// for its program. The host writes the program, argv/envp, manifest
    /// and a new [`super::BootInfo`] (same memory layout; the image may
    /// only lie above the frames the runtime has used, which it checks) and
    /// returns 0.
    pub const PROGRAM: u64 = 19;
    /// The guest now has more than one task (or an alarm set): the host
    /// stops it every few milliseconds to end time slices, until it sees
    /// [`super::RuntimeStats::tasks`] at 1 again. No arguments; returns 0.
    pub const SLICES: u64 = 20;
    /// The pass [`PREFAULT`] asked for is done: `args[0]` = pages read.
    /// The host does not resume the vCPU from here.
    pub const PREFAULT_DONE: u64 = 21;
    /// Read a host file straight into frames of guest RAM: `args[0]` =
    /// handle, `args[1]` = file offset, `args[2]` = VA of a list of
    /// little-endian u64 guest-physical frame addresses (page aligned,
    /// inside RAM), `args[3]` = how many (≤ [`FS_READ_FRAMES_MAX`]). The
    /// file's bytes from the offset fill the frames in list order. Returns
    /// the bytes read (fewer at end of file; the rest of the frames is left
    /// as it was) or -errno. A list that is not mapped, too long, or names
    /// a frame outside RAM ends the run.
    pub const FS_READ_FRAMES: u64 = 22;
    /// Most frames one [`FS_READ_FRAMES`] fills (`HCALL_MAX_LEN` bytes).
    pub const FS_READ_FRAMES_MAX: u64 = super::HCALL_MAX_LEN / super::PAGE_SIZE;
    /// Look up several names, each in the directory the one before it
    /// found, in one call (as that many [`FS_LOOKUP`]s would): `args[0]` =
    /// directory handle, `args[1]` = VA of the names joined by `/`,
    /// `args[2]` = their length (1..=PATH_MAX), `args[3]` = VA of
    /// [`super::fs::WALK_RECORD`]-byte records to fill, `args[4]` = how
    /// many (at most [`super::fs::WALK_MAX`] are filled). Record i is
    /// name i's handle (little-endian u64) and then its
    /// [`super::fs::Stat`]. The walk stops after a name that is not a
    /// directory, at the first that fails, or when the records are full.
    /// Returns the records filled, plus the failing name's errno shifted
    /// left by 32 (0 if none failed); -errno for a bad call. A buffer that
    /// is not mapped ends the run.
    pub const FS_WALK: u64 = 23;
}

/// The frame ranges of [`hc::PREFAULT`]: each is a little-endian u32
/// first frame (guest-physical address / [`PAGE_SIZE`]) and a u32 count;
/// the host sends them sorted and disjoint, and the guest checks neither
/// (a bad list only makes it read more or fewer pages).
pub mod prefault {
    pub const RANGE_BYTES: usize = 8;
    /// How many ranges fit the resume area (after its length word).
    pub const MAX_RANGES: usize = (super::RESUME_MAX as usize - 8) / RANGE_BYTES;
    /// Starts a measuring run's report (see
    /// [`super::RESUME_MEASURE_TOUCHED`]), which holds at most
    /// `MAX_RANGES - 1` ranges.
    pub const TOUCHED_MAGIC: u64 = u64::from_le_bytes(*b"TOUCHED!");

    /// Range `i` of `bytes` (zero past the end).
    pub fn range(bytes: &[u8], i: usize) -> (u32, u32) {
        let at = i.saturating_mul(RANGE_BYTES);
        match bytes.get(at..at.saturating_add(RANGE_BYTES)) {
            Some(r) => (u32::from_le_bytes([r[0], r[1], r[2], r[3]]), u32::from_le_bytes([r[4], r[5], r[6], r[7]])),
            None => (0, 0),
        }
    }

    /// Writes `(first, count)` as range `i` of `bytes`; false if it does
    /// not fit.
    pub fn put(bytes: &mut [u8], i: usize, first: u32, count: u32) -> bool {
        let at = i.saturating_mul(RANGE_BYTES);
        match bytes.get_mut(at..at.saturating_add(RANGE_BYTES)) {
            Some(r) => {
                r[..4].copy_from_slice(&first.to_le_bytes());
                r[4..].copy_from_slice(&count.to_le_bytes());
                true
            }
            None => false,
        }
    }
}

/// The CPUID page ([`CPUID_GPA`]): the leaves the host gave the vCPU
/// (`KVM_GET_CPUID2` after the vCPU's control registers are set, so the
/// bits KVM derives from them — OSXSAVE, the XSAVE area's sizes — are as
/// the guest sees them). A `cpuid` whose leaf (and, where the entry says
/// its subleaf matters, subleaf) has an entry returns that entry's
/// registers; a subleaf missing from a basic leaf (up to `basic_max`)
/// that has entries by subleaf returns zeros, as KVM answers it (but for
/// leaves 0xB and 0x1F, whose ECX and EDX KVM fills in); any other
/// (out-of-range leaves) is left to the CPU. `count` beyond
/// [`cpuid::MAX_ENTRIES`] means none ([`cpuid::lookup`]).
pub mod cpuid {
    /// [`Table::magic`].
    pub const MAGIC: u32 = u32::from_le_bytes(*b"CPU1");
    /// [`Entry::flags`]: `ecx` selects among entries of this leaf.
    pub const FLAG_INDEX: u32 = 1;
    /// Entries that fit the page after the header.
    pub const MAX_ENTRIES: usize = 126;

    /// One leaf, 32 bytes (the runtime's lookup reads these offsets).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Entry {
        pub function: u32,
        pub index: u32,
        pub flags: u32,
        pub eax: u32,
        pub ebx: u32,
        pub ecx: u32,
        pub edx: u32,
        pub _pad: u32,
    }

    #[repr(C)]
    #[derive(Clone, Copy, Debug)]
    pub struct Table {
        pub magic: u32,
        pub count: u32,
        /// The highest basic leaf (leaf 0's EAX).
        pub basic_max: u32,
        pub _pad: u32,
        pub entries: [Entry; MAX_ENTRIES],
    }

    impl Default for Table {
        fn default() -> Table {
            Table { magic: 0, count: 0, basic_max: 0, _pad: 0, entries: [Entry::default(); MAX_ENTRIES] }
        }
    }

    const _: () = assert!(core::mem::size_of::<Entry>() == 32);
    const _: () = assert!(core::mem::size_of::<Table>() <= super::PAGE_SIZE as usize);

    /// What a `cpuid` of `leaf`/`subleaf` returns per `t`, if the table
    /// answers it (the runtime's assembly does the same lookup).
    pub fn lookup(t: &Table, leaf: u32, subleaf: u32) -> Option<[u32; 4]> {
        if t.magic != MAGIC || t.count as usize > MAX_ENTRIES {
            return None;
        }
        let mut by_subleaf = false;
        for e in &t.entries[..t.count as usize] {
            if e.function != leaf {
                continue;
            }
            if e.flags & FLAG_INDEX == 0 || e.index == subleaf {
                return Some([e.eax, e.ebx, e.ecx, e.edx]);
            }
            by_subleaf = true;
        }
        (by_subleaf && leaf <= t.basic_max && leaf != 0xb && leaf != 0x1f).then_some([0; 4])
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn a_missing_subleaf_of_a_basic_leaf_reads_zeros() {
            let mut t = Table { magic: MAGIC, count: 4, basic_max: 0xd, ..Table::default() };
            t.entries[0] = Entry { function: 0, eax: 0xd, ebx: 7, ..Entry::default() };
            t.entries[1] = Entry { function: 0xd, index: 0, flags: FLAG_INDEX, eax: 1, ..Entry::default() };
            t.entries[2] = Entry { function: 0xb, index: 0, flags: FLAG_INDEX, edx: 3, ..Entry::default() };
            t.entries[3] = Entry { function: 0x8000_0000, index: 5, flags: FLAG_INDEX, eax: 2, ..Entry::default() };
            assert_eq!(lookup(&t, 0, 9), Some([0xd, 7, 0, 0]), "a leaf without subleaves");
            assert_eq!(lookup(&t, 0xd, 0), Some([1, 0, 0, 0]));
            assert_eq!(lookup(&t, 0xd, 3), Some([0; 4]), "KVM's answer");
            assert_eq!(lookup(&t, 0xb, 1), None, "0xB's ECX and EDX are filled in: the CPU's");
            assert_eq!(lookup(&t, 0x8000_0000, 1), None, "not a basic leaf");
            assert_eq!(lookup(&t, 0x7, 0), None, "no entry at all");
            t.count = MAX_ENTRIES as u32 + 1;
            assert_eq!(lookup(&t, 0, 0), None, "a count beyond the page");
        }
    }
}

/// What a restored guest learns about the run it now serves (see
/// [`hc::RESUME_INFO`]); followed by `args_len` bytes of argv then envp
/// strings (NUL-terminated), `manifest_len` bytes of manifest and
/// `stdin_len` bytes of stdin.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResumeInfo {
    pub tsc_khz: u64,
    /// A (TSC, realtime) pair taken now, for the guest's clocks.
    pub tsc: u64,
    pub realtime_ns: u64,
    /// Fresh randomness for this run.
    pub random_seed: [u8; 32],
    /// Number of argv strings (0: keep the snapshot's) and envp strings.
    pub argc: u32,
    pub envc: u32,
    pub args_len: u64,
    pub manifest_len: u64,
    /// Bytes of this run's stdin that follow the manifest; with
    /// [`RESUME_STDIN_WHOLE`] in `flags` they are all of it (end of input
    /// after them), else stdin is read with [`hc::READ`] as usual.
    pub stdin_len: u64,
    pub flags: u64,
}

/// [`ResumeInfo::flags`]: the run's whole stdin came with it.
pub const RESUME_STDIN_WHOLE: u64 = 1;
/// [`ResumeInfo::flags`]: measure which pages this run touches. The guest
/// clears the accessed bit of the 4 KiB mappings of the program and of
/// its heap, and when process 1 ends it leaves the frames whose bit was
/// set again (by the CPU, in any process) at [`RESUME_GPA`]:
/// [`prefault::TOUCHED_MAGIC`], a little-endian u64 byte length, then
/// that many bytes of [`prefault`] ranges (the lowest that fit).
pub const RESUME_MEASURE_TOUCHED: u64 = 2;

/// The filesystem contract: how the host describes the guest's files and
/// mounts at boot, and the records of the FS hypercalls.
pub mod fs {
    /// A read-only host directory grafted at `path`; `handle` is its root.
    /// Its record carries the root's [`Stat`] (what FS_STAT would say of
    /// `handle`) after the path's padding: a run with mounts starts
    /// without asking for them.
    pub const ENTRY_MOUNT: u32 = 1;
    /// A file created at `path` with `mode`, its `size` bytes read from
    /// host `handle` (with FS_READ) at start; writable in the guest.
    pub const ENTRY_FILE: u32 = 2;
    /// An (empty, writable) directory created at `path`.
    pub const ENTRY_DIR: u32 = 3;
    /// Files at or under `path` are sent back with FILE_OUT at exit.
    pub const ENTRY_COLLECT: u32 = 4;
    /// The program's working directory (created if missing).
    pub const ENTRY_CWD: u32 = 5;

    /// One manifest record, followed by `path_len` bytes of absolute guest
    /// path, then padding to a multiple of 8 bytes (then, for an
    /// [`ENTRY_MOUNT`], its root's encoded [`Stat`]).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct ManifestEntry {
        pub kind: u32,
        pub mode: u32,
        pub handle: u64,
        pub size: u64,
        pub path_len: u32,
        pub _pad: u32,
    }

    /// Size of a record of `kind` with a path of `path_len` bytes, padding
    /// (and a mount's [`Stat`]) included.
    pub const fn entry_size(kind: u32, path_len: usize) -> usize {
        let stat = if kind == ENTRY_MOUNT { core::mem::size_of::<Stat>() } else { 0 };
        ((core::mem::size_of::<ManifestEntry>() + path_len + 7) & !7) + stat
    }

    /// File status as the host reports it for a handle.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Stat {
        /// `st_mode`: type and permission bits.
        pub mode: u32,
        pub nlink: u32,
        pub size: u64,
        pub ino: u64,
        pub mtime_sec: i64,
        pub mtime_nsec: u32,
        pub _pad: u32,
    }

    /// Header of one FS_READDIR record, followed by `name_len` bytes of
    /// name (no NUL); records are packed back to back (unaligned).
    #[repr(C, packed)]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Dirent {
        pub ino: u64,
        /// `DT_*` type (4 = dir, 8 = regular, 10 = symlink, 0 = unknown).
        pub dtype: u8,
        pub name_len: u8,
    }

    pub const NAME_MAX: usize = 255;
    pub const PATH_MAX: usize = 4096;
    /// Most names one [`super::hc::FS_WALK`] looks up.
    pub const WALK_MAX: usize = 16;
    /// One [`super::hc::FS_WALK`] record: a handle, then a [`Stat`].
    pub const WALK_RECORD: usize = 8 + core::mem::size_of::<Stat>();
    /// Root handle numbers start here; 0 is never a valid handle.
    pub const FIRST_HANDLE: u64 = 1;

    // The one encoder and decoder of each record above.
    pub use crate::fs_codec::*;
}

pub const WRITE_STREAM_FULL: u64 = 1;

/// [`hc::READ`]'s answer when the input is open but empty for now.
pub const READ_NOTHING_YET: u64 = u64::MAX;

/// [`hc::SLEEP`]'s `args[1]`: end the sleep when input comes.
pub const SLEEP_UNTIL_INPUT: u64 = 1;

/// [`Hypercall::host_flags`]: the host asks the runtime to send the output
/// it has buffered at its next chance (someone is reading it live).
pub const HOST_FLAG_FLUSH: u64 = 1;
/// [`Hypercall::host_flags`]: input came (or its end) since a read was told
/// [`READ_NOTHING_YET`]: a reader waiting for it should read again.
pub const HOST_FLAG_STDIN: u64 = 2;
/// [`Hypercall::host_flags`]: a time slice ended while the runtime was
/// busy; it lets another task run at its next system call's return.
pub const HOST_FLAG_YIELD: u64 = 4;

/// Maximum length of one hypercall buffer; the host rejects longer ones.
pub const HCALL_MAX_LEN: u64 = 1 << 20;

/// The hypercall argument block at [`HCALL_GPA`]. The guest fills `args`,
/// writes the number to the doorbell, and finds the result in `ret`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Hypercall {
    pub args: [u64; 6],
    pub ret: u64,
    /// Requests from the host ([`HOST_FLAG_FLUSH`], [`HOST_FLAG_STDIN`]),
    /// set only while the vCPU is stopped; the runtime clears the ones it
    /// has acted on.
    pub host_flags: u64,
    /// The root of the page tables the vCPU runs on, as the runtime last
    /// loaded it (0: not told): the host walks them to reach a buffer a
    /// hypercall names outside the physmap without asking KVM for CR3
    /// (an ioctl that costs more than the walk). Guest data: a wrong
    /// value only makes the walk find other guest memory or fail.
    pub cr3: u64,
}

/// What the ring-0 exception stubs push: the vector and an error code (0
/// where the CPU pushes none), then the CPU's own interrupt frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExceptionFrame {
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Exception vectors (x86).
/// x86-64 page-table entry bits both sides write (the host's initial
/// tables, the runtime's own), and where an entry keeps its frame.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// A 2 MiB (PD) or 1 GiB (PDPT) page rather than a table.
    pub const HUGE: u64 = 1 << 7;
    pub const NO_EXECUTE: u64 = 1 << 63;
    /// The frame (or next table) address bits.
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
}

/// The Linux signal a program gets for a CPU exception (`vector`), as
/// Linux maps them: both the host (a fault the runtime could not hand to
/// the program) and the runtime (one it can) report faults this way.
pub const fn signal_for_vector(vector: u64) -> u32 {
    match vector {
        vector::DIVIDE_ERROR | vector::X87_FP | vector::SIMD_FP => 8, // SIGFPE
        vector::DEBUG | vector::BREAKPOINT => 5,                      // SIGTRAP
        vector::INVALID_OPCODE => 4,                                  // SIGILL
        vector::ALIGNMENT_CHECK => 7,                                 // SIGBUS
        _ => 11,                                                      // SIGSEGV
    }
}

pub mod vector {
    /// Not a CPU vector: the host stopped the program to let another
    /// task run (a time slice ended).
    pub const HOST_PREEMPT: u64 = 256;
    pub const DIVIDE_ERROR: u64 = 0;
    pub const DEBUG: u64 = 1;
    pub const BREAKPOINT: u64 = 3;
    pub const OVERFLOW: u64 = 4;
    pub const BOUND_RANGE: u64 = 5;
    pub const INVALID_OPCODE: u64 = 6;
    pub const DEVICE_NOT_AVAILABLE: u64 = 7;
    pub const DOUBLE_FAULT: u64 = 8;
    pub const INVALID_TSS: u64 = 10;
    pub const SEGMENT_NOT_PRESENT: u64 = 11;
    pub const STACK_FAULT: u64 = 12;
    pub const GENERAL_PROTECTION: u64 = 13;
    pub const PAGE_FAULT: u64 = 14;
    pub const X87_FP: u64 = 16;
    pub const ALIGNMENT_CHECK: u64 = 17;
    pub const MACHINE_CHECK: u64 = 18;
    pub const SIMD_FP: u64 = 19;
}

/// Number of exception vectors with stubs (0..32).
pub const EXCEPTION_VECTORS: usize = 32;

/// Layout of the program's address space chosen by the runtime.
pub mod user {
    /// Top of the initial stack of the program.
    pub const STACK_TOP: u64 = 0x7eff_ffff_f000;
    /// Largest size of the program's stack mapping (the runtime maps
    /// `min(STACK_SIZE_MAX, memory / 8)`).
    pub const STACK_SIZE_MAX: u64 = 8 << 20;
    /// Program addresses are below this (the physmap starts there).
    pub const ADDR_LIMIT: u64 = super::PHYS_BASE;
    /// Base at which a static-PIE program is loaded.
    pub const PIE_BASE: u64 = 0x5555_5555_0000;
    /// Anonymous mappings are placed below this address, growing down.
    pub const MMAP_TOP: u64 = 0x7e00_0000_0000;
    /// The brk heap may grow at most this far.
    pub const BRK_MAX: u64 = 1 << 36;
    /// Lowest address a program may map.
    pub const MIN_ADDR: u64 = 0x1_0000;
}

// The layout's fixed facts, checked at compile time.
const _: () = {
    assert!(core::mem::size_of::<BootInfo>() as u64 <= PAGE_SIZE);
    assert!(core::mem::size_of::<RuntimeStats>() as u64 <= STATS_SIZE);
    assert!(IMAGE_GPA < MIN_MEMORY);
    assert!(DOORBELL_GPA >= MAX_MEMORY);
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exceptions_map_to_the_signals_linux_sends() {
        // SIGFPE 8, SIGTRAP 5, SIGILL 4, SIGBUS 7, SIGSEGV 11.
        let cases = [
            (vector::DIVIDE_ERROR, 8),
            (vector::X87_FP, 8),
            (vector::SIMD_FP, 8),
            (vector::DEBUG, 5),
            (vector::BREAKPOINT, 5),
            (vector::INVALID_OPCODE, 4),
            (vector::ALIGNMENT_CHECK, 7),
            (vector::PAGE_FAULT, 11),
            (vector::GENERAL_PROTECTION, 11),
            (vector::STACK_FAULT, 11),
            (31, 11),
        ];
        for (v, sig) in cases {
            assert_eq!(signal_for_vector(v), sig, "vector {v}");
        }
    }

    #[test]
    fn page_table_bits_are_the_architectures() {
        assert_eq!(pte::PRESENT | pte::WRITABLE | pte::USER | pte::ACCESSED | pte::DIRTY | pte::HUGE, 0xe7);
        assert_eq!(pte::ADDR & 0xfff, 0);
        assert_eq!(pte::ADDR >> 52, 0);
        assert_eq!(pte::NO_EXECUTE, 0x8000_0000_0000_0000);
    }

    #[test]
    fn regions_do_not_overlap() {
        let regions = [
            (GDT_GPA, PAGE_SIZE),
            (IDT_GPA, PAGE_SIZE),
            (TSS_GPA, PAGE_SIZE),
            (HCALL_GPA, PAGE_SIZE),
            (RING0_STACK_GPA, RING0_STACK_SIZE),
            (IST_STACK_GPA, IST_STACK_SIZE),
            (BOOT_INFO_GPA, PAGE_SIZE),
            (STATS_GPA, STATS_SIZE),
            (RESUME_GPA, RESUME_MAX),
            (ARGS_GPA, ARGS_MAX),
            (CPUID_GPA, PAGE_SIZE),
            (PAGE_TABLES_GPA, PAGE_TABLES_MAX),
            (RUNTIME_GPA, RUNTIME_MAX),
        ];
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                assert!(a.0 + a.1 <= b.0, "{a:x?} overlaps {b:x?}");
            }
        }
    }
}
