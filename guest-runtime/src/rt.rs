//! Runtime start-up and the few pieces of global state.

use core::cell::UnsafeCell;

use hvsandbox_abi as abi;

use crate::{elf, hc, mm};

/// The program's RSP at the last `syscall` (written by the entry asm).
#[no_mangle]
pub static mut SAVED_USER_RSP: u64 = 0;

/// What the ring-0 handler saw when the program took an exception:
/// vector, error code, RIP, CR2, RSP, RFLAGS (written by the entry asm).
#[no_mangle]
pub static mut PROGRAM_FAULT: [u64; 6] = [0; 6];

/// The program's RCX and R11 at its last fault, and the address the fault
/// exit path jumps to (written by the entry asm).
#[no_mangle]
pub static mut FAULT_RCX: u64 = 0;
#[no_mangle]
pub static mut FAULT_R11: u64 = 0;
#[no_mangle]
pub static mut RESUME_RIP: u64 = 0;

/// Entered at CPL3 on the runtime stack after the program took an
/// exception (see `exception_common`), with the program's registers saved
/// in `f` as for a system call; returns through the system-call exit path.
pub extern "C" fn program_fault(f: &mut crate::syscalls::Frame) {
    // SAFETY: written by the ring-0 handler just before it returned here;
    // nothing else runs concurrently on this one vCPU.
    let [vector, error, rip, cr2, rsp, rflags] = unsafe { core::ptr::addr_of!(PROGRAM_FAULT).read_volatile() };
    f.rip = rip;
    f.rsp = rsp;
    f.rflags = rflags;
    crate::task::program_fault(f, vector, error, cr2);
}

/// Global state of the single-threaded runtime. The runtime runs one
/// thing at a time on one vCPU with no interrupts, so a `&mut` handed out
/// by [`Global::get`] is never aliased as long as callers do not hold one
/// across a call that takes the same global again.
pub struct Global<T>(UnsafeCell<T>);

// SAFETY: the runtime has exactly one thread of execution (one vCPU, no
// interrupts reach CPL3 code), so there is no concurrent access.
unsafe impl<T> Sync for Global<T> {}

impl<T> Global<T> {
    pub const fn new(v: T) -> Global<T> {
        Global(UnsafeCell::new(v))
    }
    #[allow(clippy::mut_from_ref)]
    pub fn get(&self) -> &mut T {
        // SAFETY: single thread of execution (see the type's docs); each
        // use is short and does not re-enter the same global.
        unsafe { &mut *self.0.get() }
    }
}

/// The boot information the host wrote (copied at start).
pub static BOOT: Global<Option<abi::BootInfo>> = Global::new(None);

pub fn boot() -> &'static abi::BootInfo {
    match BOOT.get() {
        Some(b) => b,
        None => hc::panic(b"boot info used before start"),
    }
}

/// The environment this run was given (`KEY=VALUE` strings, each ending
/// in NUL), as `/dev/hvsandbox/env` reads it: the boot environment, or a
/// restored run's.
pub static RUN_ENV: Global<alloc::vec::Vec<u8>> = Global::new(alloc::vec::Vec::new());

/// The strings after the first `skip` NUL-terminated ones.
fn after_strings(bytes: &[u8], skip: usize) -> &[u8] {
    let mut at = 0;
    for _ in 0..skip {
        match bytes[at..].iter().position(|&c| c == 0) {
            Some(i) => at += i + 1,
            None => return &[],
        }
    }
    &bytes[at..]
}

/// A pointer into guest RAM through the physmap.
pub fn phys_ptr(gpa: u64) -> *mut u8 {
    abi::phys_to_virt(gpa) as *mut u8
}

/// The bytes `[gpa, gpa + len)` of guest RAM, checked against its size.
pub fn phys_slice(gpa: u64, len: u64) -> &'static [u8] {
    let mem = boot().mem_size;
    match gpa.checked_add(len) {
        Some(end) if end <= mem => {}
        _ => hc::panic(b"physical range outside RAM"),
    }
    // SAFETY: the range lies inside guest RAM, which is mapped in full at
    // PHYS_BASE for the whole life of the runtime.
    unsafe { core::slice::from_raw_parts(phys_ptr(gpa), len as usize) }
}

/// Entered from `_start` on the runtime stack, at CPL3.
pub extern "C" fn rust_start(boot_va: u64) -> ! {
    if boot_va != abi::phys_to_virt(abi::BOOT_INFO_GPA) {
        hc::panic(b"unexpected boot info address");
    }
    // SAFETY: the host wrote a BootInfo at this physmap address, which is
    // mapped and suitably aligned (page aligned).
    let info = unsafe { core::ptr::read_volatile(boot_va as *const abi::BootInfo) };
    if info.magic != abi::BOOT_MAGIC || info.abi_version != abi::ABI_VERSION {
        hc::panic(b"bad boot info");
    }
    *BOOT.get() = Some(info);
    mm::init(&info);
    crate::io::publish();
    crate::random::init(&info.random_seed);
    crate::vfs::init(&info);
    let info = if info.flags & abi::BOOT_FLAG_WAIT_PROGRAM != 0 { wait_for_program(&info) } else { info };
    crate::vfs::apply_manifest(&info);
    let args = phys_slice(info.args_gpa, info.args_len);
    *RUN_ENV.get() = after_strings(args, info.argc as usize).to_vec();
    let argv0 = &args[..args.iter().position(|&c| c == 0).unwrap_or(0)];
    let exe_path = crate::vfs::absolute(&crate::vfs::boot_cwd(), argv0);
    let image = match crate::vfs::add_image(&exe_path, info.image_gpa, info.image_len) {
        Ok(n) => n,
        Err(e) => hc::fail_exec(elf::describe(e)),
    };
    let max_procs = info.max_processes;
    let (entry, mut sp) =
        match crate::task::start_init(&image, &exe_path, args, info.argc as usize, info.envc as usize, max_procs) {
            Ok(x) => x,
            Err(e) => hc::fail_exec(elf::describe(e)),
        };
    if info.flags & abi::BOOT_FLAG_SNAPSHOT_AT_ENTRY != 0 {
        if let Some(resume) = snapshot_point() {
            // A restored entry snapshot: this run's argv/envp replace the
            // snapshot's on a fresh initial stack.
            if resume.argc > 0 {
                let loaded = crate::task::current_exe_loaded();
                match crate::stack::rebuild(&loaded, &resume.args, resume.argc, resume.envc) {
                    Ok(new_sp) => sp = new_sp,
                    Err(e) => hc::fail_exec(e),
                }
            }
        }
    }
    crate::jump_to_program(entry, sp)
}

/// Set up before the program is known (the host does this part ahead of
/// the run): wait for it, then take the boot information that comes with
/// it. The memory layout must be the one we booted with.
fn wait_for_program(pre: &abi::BootInfo) -> abi::BootInfo {
    hc::call(abi::hc::PROGRAM, 0, 0, 0);
    // SAFETY: as in rust_start: the host rewrote the BootInfo page.
    let info = unsafe { core::ptr::read_volatile(abi::phys_to_virt(abi::BOOT_INFO_GPA) as *const abi::BootInfo) };
    let same_layout = info.magic == abi::BOOT_MAGIC
        && info.abi_version == abi::ABI_VERSION
        && info.mem_size == pre.mem_size
        && info.pml4_gpa == pre.pml4_gpa
        && info.page_tables_end == pre.page_tables_end
        && info.free_start == pre.free_start
        && info.flags & abi::BOOT_FLAG_WAIT_PROGRAM == 0;
    if !same_layout {
        hc::panic(b"the program came with another memory layout");
    }
    if !mm::set_free_end(info.free_end) || info.image_gpa < info.free_end {
        hc::panic(b"the program's image overlaps the runtime's frames");
    }
    *BOOT.get() = Some(info);
    crate::random::init(&info.random_seed);
    info
}

/// This run's inputs, for a guest restored from a snapshot.
pub struct Resume {
    pub argc: usize,
    pub envc: usize,
    /// argv then envp strings, NUL-terminated.
    pub args: alloc::vec::Vec<u8>,
}

/// Rings the snapshot doorbell. Returns None when this is not a snapshot
/// (go on), or the new run's inputs when the guest was restored: clocks,
/// randomness and files are already applied.
pub fn snapshot_point() -> Option<Resume> {
    // Heap room for what a restored run allocates, mapped now.
    crate::heap::reserve(1 << 20);
    crate::io::flush_all();
    crate::syscalls::record_memory_peak();
    let buf = match hc::call(abi::hc::SNAPSHOT, 0, 0, 0) {
        abi::hc::RESUMED_WITH_INFO => {
            // The host left this run's inputs in the resume area (no
            // hypercall needed); its length is bounded by the area.
            let area = phys_slice(abi::RESUME_GPA, abi::RESUME_MAX);
            let len = u64::from_le_bytes(area[..8].try_into().unwrap_or_default());
            if len > abi::RESUME_MAX - 8 {
                hc::panic(b"bad resume area");
            }
            area[8..8 + len as usize].to_vec()
        }
        abi::hc::RESUMED => fetch_resume_info(),
        _ => return None,
    };
    // The host resets this VM to the snapshot after the run.
    crate::mm::start_journal();
    let len = buf.len();
    let head = core::mem::size_of::<abi::ResumeInfo>();
    if len < head {
        hc::panic(b"short resume info");
    }
    // SAFETY: the buffer holds at least a ResumeInfo (plain integers).
    let info: abi::ResumeInfo = unsafe { core::ptr::read_unaligned(buf.as_ptr() as *const abi::ResumeInfo) };
    crate::time::rebase(info.tsc_khz, info.tsc, info.realtime_ns);
    crate::random::init(&info.random_seed);
    let args_end = head.saturating_add(info.args_len as usize);
    let man_end = args_end.saturating_add(info.manifest_len as usize);
    let stdin_end = man_end.saturating_add(info.stdin_len as usize);
    if stdin_end > len {
        hc::panic(b"bad resume info");
    }
    crate::vfs::apply_manifest_bytes(&buf[args_end..man_end]);
    *RUN_ENV.get() = after_strings(&buf[head..args_end], info.argc as usize).to_vec();
    // This run's stdin starts afresh (the snapshot's run may have read its
    // own to the end); small inputs came with the resume info.
    let whole = info.flags & abi::RESUME_STDIN_WHOLE != 0;
    crate::io::restart_stdin(&buf[man_end..stdin_end], whole);
    // The statistics count this run's work, not the snapshot's.
    crate::syscalls::stat(|s| {
        s.syscalls = 0;
        s.unknown_syscalls = 0;
        s.page_faults = 0;
        s.cr3_loads = 0;
        s.processes = 0;
        s.unknown_by_nr = [0; abi::UNKNOWN_SLOTS];
    });
    Some(Resume { argc: info.argc as usize, envc: info.envc as usize, args: buf[head..args_end].to_vec() })
}

/// Asks the host for this run's inputs (retrying with the size asked for).
fn fetch_resume_info() -> alloc::vec::Vec<u8> {
    let mut buf = alloc::vec![0u8; 4096];
    loop {
        let n = hc::call(abi::hc::RESUME_INFO, buf.as_mut_ptr() as u64, buf.len() as u64, 0);
        if (n as i64) < 0 {
            hc::panic(b"resume info refused");
        }
        let n = n as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return buf;
        }
        if n > 64 << 20 {
            hc::panic(b"resume info too large");
        }
        buf.resize(n, 0);
    }
}

/// A fixed-capacity byte buffer implementing `fmt::Write` (truncates).
pub struct FixedBuf<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> FixedBuf<N> {
    pub const fn new() -> Self {
        FixedBuf { buf: [0; N], len: 0 }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(N - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

impl<const N: usize> core::fmt::Write for FixedBuf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}
