//! Start-up: the first Rust code the host enters, which sets every layer
//! up, loads the program and jumps to it; and the entry from the
//! exception path for a fault of the program.

use hvsandbox_abi as abi;

use crate::rt::{after_strings, phys_slice, BOOT, RUN_ENV};
use crate::{elf, hc, mm, run};

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
    crate::time::init(info.tsc_khz, info.boot_tsc, info.boot_realtime_ns);
    if info.flags & abi::BOOT_FLAGS_REWRITE_DECIDED == 0 {
        // Once per boot (a snapshot keeps the answer).
        crate::rewrite::time_syscall(info.tsc_khz);
    }
    // The layers above the files register what the ones below call.
    crate::wait::register(crate::task::block, crate::task::wait_event);
    crate::wait::register_owner_signal(crate::signal::to_owner);
    crate::sigio::register(crate::sys_fs::poll_file);
    crate::inotify::set_dir_hook(crate::dnotify::dir_event);
    crate::sock::register(crate::sock_msg::write, crate::socket::restart_deadline);
    crate::vfs::set_proc_self(crate::vfs::ProcSelf {
        net: crate::procnet::file,
        sysfs: crate::sysfs::file,
        ..crate::procfs::hooks()
    });
    mm::init(&info);
    crate::vdso::init();
    crate::io::publish();
    crate::random::init(&info.random_seed);
    crate::vfs::init(&info);
    let info = if info.flags & abi::BOOT_FLAG_WAIT_PROGRAM != 0 { wait_for_program(&info) } else { info };
    crate::rewrite::set_enabled(info.flags);
    crate::vfs::apply_manifest(&info);
    let args = phys_slice(info.args_gpa, info.args_len);
    *RUN_ENV.get() = after_strings(args, info.argc as usize).to_vec();
    let argv0 = &args[..args.iter().position(|&c| c == 0).unwrap_or(0)];
    let exe_path = crate::vfs::absolute(&crate::vfs::boot_cwd(), argv0);
    let image = match crate::vfs::add_image(&exe_path, info.image_gpa, info.image_len, info.image_ino) {
        Ok(n) => n,
        Err(e) => run::fail_exec(elf::describe(e)),
    };
    let max_procs = info.max_processes;
    // `/proc/self/exe` shows the file's own path (no symlink in it).
    let shown = crate::vfs::real_path(&crate::vfs::root(), &exe_path).unwrap_or(exe_path);
    let (entry, mut sp) =
        match crate::process::start_init(&image, &shown, args, info.argc as usize, info.envc as usize, max_procs) {
            Ok(x) => x,
            Err(e) => run::fail_exec(elf::describe(e)),
        };
    let interp = elf::interpreter_node(&image);
    // The first start of these files (see `exec_cpuid`).
    crate::exec_cpuid::started(&image, interp.as_ref());
    if info.flags & abi::BOOT_FLAG_SNAPSHOT_AT_ENTRY != 0 {
        // Its sites, and a dynamic program's loader's (glibc's CPU probes
        // run there, in every run): runs from the snapshot start with
        // them fast.
        for node in core::iter::once(image.clone()).chain(interp) {
            crate::eager::rewrite_program(&node);
        }
        if let Some(resume) = crate::snapshot::snapshot_point() {
            // A restored entry snapshot: this run's argv/envp replace the
            // snapshot's on a fresh initial stack.
            if resume.argc > 0 {
                let loaded = crate::task::current_exe_loaded();
                match crate::stack::rebuild(&loaded, &resume.args, resume.argc, resume.envc) {
                    Ok(built) => {
                        sp = built.sp;
                        *crate::task::current_process().auxv.borrow_mut() = built.auxv;
                    }
                    Err(e) => run::fail_exec(e),
                }
            }
        }
    }
    crate::cpu::jump_to_program(entry, sp)
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
    crate::time::init(info.tsc_khz, info.boot_tsc, info.boot_realtime_ns);
    if info.flags & abi::BOOT_FLAGS_REWRITE_DECIDED == 0 {
        // Once per boot (a snapshot keeps the answer).
        crate::rewrite::time_syscall(info.tsc_khz);
    }
    crate::random::init(&info.random_seed);
    info
}

/// Entered at CPL3 on the runtime stack after the program took an
/// exception (see `exception_common`), with the program's registers saved
/// in `f` as for a system call; returns through the system-call exit path.
pub extern "C" fn program_fault(f: &mut crate::rt::Frame) {
    // SAFETY: written by the ring-0 handler just before it returned here;
    // nothing else runs concurrently on this one vCPU.
    let [vector, error, rip, cr2, rsp, rflags] =
        unsafe { core::ptr::addr_of!(crate::rt::PROGRAM_FAULT).read_volatile() };
    f.rip = rip;
    f.rsp = rsp;
    f.rflags = rflags;
    crate::signal::program_fault(f, vector, error, cr2);
}
