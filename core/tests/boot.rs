//! Boots the embedded runtime on tiny hand-assembled programs and checks
//! what the VMM sees: hypercalls, faults, and hostile doorbell use.

use hvsandbox_core::{abi, BootParams, FreshRam, HugePages, ProgramImage, Vm, VmExit};

/// A minimal static ELF executable whose code is `code`, loaded at 0x400000.
fn elf(code: &[u8]) -> Vec<u8> {
    let base = 0x40_0000u64;
    let code_off = 64 + 56;
    let total = (code_off + code.len()) as u64;
    let mut e = Vec::new();
    e.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e.extend_from_slice(&1u32.to_le_bytes());
    e.extend_from_slice(&(base + code_off as u64).to_le_bytes()); // entry
    e.extend_from_slice(&64u64.to_le_bytes()); // phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // shoff
    e.extend_from_slice(&0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, 0, 0] {
        e.extend_from_slice(&v.to_le_bytes());
    }
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // R X
    e.extend_from_slice(&0u64.to_le_bytes()); // offset
    e.extend_from_slice(&base.to_le_bytes()); // vaddr
    e.extend_from_slice(&base.to_le_bytes()); // paddr
    e.extend_from_slice(&total.to_le_bytes()); // filesz
    e.extend_from_slice(&total.to_le_bytes()); // memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // align
    e.extend_from_slice(code);
    e
}

/// `mov edi, code; mov eax, 231; syscall` (exit_group).
fn exit_code(code: u8) -> Vec<u8> {
    vec![0xbf, code, 0, 0, 0, 0xb8, 231, 0, 0, 0, 0x0f, 0x05]
}

fn boot(code: &[u8]) -> Vm {
    boot_on(Vm::new(32 << 20).expect("create VM"), code)
}

/// Boots `code` on `vm`.
fn boot_on(mut vm: Vm, code: &[u8]) -> Vm {
    let image = elf(code);
    let argv = [b"prog".to_vec()];
    vm.boot(&params(ProgramImage::Bytes(&image), &argv)).expect("boot");
    vm
}

fn run(vm: &mut Vm) -> VmExit {
    for _ in 0..100 {
        match vm.run(|| false).expect("KVM_RUN") {
            VmExit::Interrupted => continue,
            other => return other,
        }
    }
    panic!("the guest kept being interrupted");
}

#[test]
fn program_exit_code_reaches_the_host() {
    let mut vm = boot(&exit_code(42));
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));
    let args = vm.hypercall_args().unwrap().args;
    assert_eq!((args[0], args[1]), (42, 0));
    let stats = vm.runtime_stats().unwrap();
    assert_eq!(stats.syscalls, 1);
}

#[test]
fn unknown_syscall_is_enosys_and_counted() {
    // mov eax, 500; syscall; neg eax (-> 38); mov edi, eax; mov eax, 231; syscall
    let code = [0xb8, 0xf4, 1, 0, 0, 0x0f, 0x05, 0xf7, 0xd8, 0x89, 0xc7, 0xb8, 231, 0, 0, 0, 0x0f, 0x05];
    let mut vm = boot(&code);
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));
    assert_eq!(vm.hypercall_args().unwrap().args[0], 38);
    let stats = vm.runtime_stats().unwrap();
    assert_eq!(stats.unknown_syscalls, 1);
    assert_eq!(stats.unknown_by_nr[500], 1);
    assert_eq!(stats.unknown_by_nr.iter().map(|&n| n as u64).sum::<u64>(), 1);
}

#[test]
fn null_write_is_a_page_fault_with_its_address() {
    // mov qword ptr [0x10], rax
    let code = [0x48, 0x89, 0x04, 0x25, 0x10, 0, 0, 0];
    let mut vm = boot(&code);
    // The ring-0 handler hands the program's fault back to the runtime at
    // CPL3, which reports it with a hypercall.
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::PROGRAM_FAULT));
    let [vector, _error, rip, cr2, rsp, _] = vm.hypercall_args().unwrap().args;
    assert_eq!(vector, abi::vector::PAGE_FAULT);
    assert_eq!(cr2, 0x10);
    assert_eq!(rip, 0x40_0078);
    assert!(rsp > abi::user::STACK_TOP - abi::user::STACK_SIZE_MAX && rsp < abi::user::STACK_TOP, "{rsp:#x}");
}

#[test]
fn privileged_instruction_is_general_protection() {
    let mut vm = boot(&[0xf4]); // hlt
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::PROGRAM_FAULT));
    assert_eq!(vm.hypercall_args().unwrap().args[0], abi::vector::GENERAL_PROTECTION);
}

#[test]
fn a_fault_of_the_runtime_at_cpl3_reaches_the_host_as_its_own() {
    // The program jumps into the runtime's #BP stub (ring-0 code) with RCX
    // equal to the word at its RSP, as a TLB-flush request has it: the
    // stub's `mov cr3, rax` at CPL3 is a #GP in the runtime's own code.
    // That is a crash of the runtime, reported with the CPU's frame, not
    // a fault handed to the program.
    // movabs rax, RUNTIME_VA + 32 (the header's exception_stubs);
    // mov rax, [rax]; add rax, 48; mov rcx, [rsp]; jmp rax
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&(abi::RUNTIME_VA + 32).to_le_bytes());
    code.extend_from_slice(&[0x48, 0x8b, 0x00, 0x48, 0x83, 0xc0, 48, 0x48, 0x8b, 0x0c, 0x24, 0xff, 0xe0]);
    let mut vm = boot(&code);
    match run(&mut vm) {
        VmExit::Fault { frame, .. } => {
            assert_eq!(frame.vector, abi::vector::GENERAL_PROTECTION, "{frame:?}");
            assert!(vm.runtime().contains_code(frame.rip), "{frame:?}");
            assert_eq!(frame.cs & 3, 3, "{frame:?}");
        }
        other => panic!("expected the runtime's fault, got {other:?}"),
    }
}

#[test]
fn program_ringing_the_doorbell_with_garbage_is_seen_as_such() {
    // movabs rax, DOORBELL_VA; mov qword ptr [rax], 0x1234
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&abi::DOORBELL_VA.to_le_bytes());
    code.extend_from_slice(&[0x48, 0xc7, 0x00, 0x34, 0x12, 0, 0]);
    let mut vm = boot(&code);
    assert_eq!(run(&mut vm), VmExit::Hypercall(0x1234));
}

#[test]
fn faked_fault_report_with_a_wild_stack_is_rejected() {
    // A program at CPL3 claims a fault: mov qword ptr [DOORBELL], FAULT.
    let mut code = vec![0x48, 0xb8];
    code.extend_from_slice(&abi::DOORBELL_VA.to_le_bytes());
    code.extend_from_slice(&[0x48, 0xc7, 0x00, abi::hc::FAULT as u8, 0, 0, 0]);
    let mut vm = boot(&code);
    match run(&mut vm) {
        VmExit::Unexpected(why) => assert!(why.contains("names no fault of the runtime"), "{why}"),
        other => panic!("expected the forged report to be refused, got {other:?}"),
    }
}

#[test]
fn kick_before_entry_interrupts_a_tight_loop() {
    let mut vm = boot(&[0xeb, 0xfe]); // jmp $
                                      // `should_stop` true: the run returns at once without entering.
    assert_eq!(vm.run(|| true).unwrap(), VmExit::Interrupted);
    // A kick from another thread while it spins.
    let kicker = hvsandbox_core::ThreadKicker::current();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        kicker.kick();
    });
    hvsandbox_core::kick::install_kick_handler();
    assert_eq!(vm.run(|| false).unwrap(), VmExit::Interrupted);
    t.join().unwrap();
}

#[test]
fn memory_sizes_are_checked() {
    assert!(Vm::new(3 << 20).is_err());
    assert!(Vm::new((16 << 20) + 4096).is_err());
    assert!(Vm::new(abi::MAX_MEMORY * 2).is_err());
    assert!(FreshRam::new(3 << 20, HugePages::Off).is_err());
    assert!(FreshRam::new(abi::MAX_MEMORY * 2, HugePages::Off).is_err());
}

#[test]
fn ram_made_on_another_thread_boots_a_vm_as_its_own_would() {
    // The RAM (tables and runtime written in) is made on one thread and
    // the VM over it on another, as a sandbox that boots ahead makes them.
    let ram = std::thread::spawn(|| FreshRam::new(32 << 20, HugePages::Off).unwrap()).join().unwrap();
    let mut vm = boot_on(Vm::with_ram(ram).unwrap(), &exit_code(9));
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));
    let args = vm.hypercall_args().unwrap().args;
    assert_eq!((args[0], args[1]), (9, 0));
    let stats = vm.runtime_stats().unwrap();
    assert_eq!(stats.syscalls, 1);
    // The runtime says where its never-used frames start: past its own
    // image, below the page-table pool, page-aligned.
    let frontier = stats.frame_frontier;
    assert!(frontier > abi::RUNTIME_GPA && frontier < abi::pt_pool_start(32 << 20), "{frontier:#x}");
    assert_eq!(frontier % abi::PAGE_SIZE, 0);
    // The warmer faults in at most the huge page right above the frontier
    // (once), and knows when the VM is gone.
    let mut warmer = vm.ram_warmer().expect("RAM not from the hugetlb pool");
    let warmed = (0..16).take_while(|_| warmer.step()).count();
    assert!(warmed <= 1, "{warmed} blocks warmed at frontier {frontier:#x}");
    assert!(!warmer.step());
    assert!(warmer.vm_alive());
    drop(vm);
    assert!(!warmer.vm_alive());
}

/// Boot parameters for `image` with no arguments beyond argv[0].
fn params<'a>(image: ProgramImage<'a>, argv: &'a [Vec<u8>]) -> BootParams<'a> {
    BootParams {
        image,
        argv,
        envp: &[],
        random_seed: [7; 32],
        manifest: &[],
        max_processes: 0,
        max_open_files: 0,
        snapshot_at_entry: false,
        image_ino: 0,
    }
}

#[test]
fn an_image_loaded_into_fresh_ram_while_its_vm_is_made_boots_once() {
    // As a sandbox that boots ahead does: the RAM is made on one thread,
    // which then makes the VM over it, while another reads the program's
    // file into that RAM.
    let image = elf(&exit_code(23));
    let path = std::env::temp_dir().join(format!("hvsandbox-loaded-{}", std::process::id()));
    std::fs::write(&path, &image).unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let ram = FreshRam::new(32 << 20, HugePages::Off).unwrap();
    let loader = ram.loader();
    let making = std::thread::spawn(move || Vm::with_ram(ram).unwrap());
    let len = image.len() as u64;
    {
        use std::os::fd::AsFd;
        loader.load(&ProgramImage::File { fd: file.as_fd(), len }).unwrap();
        // A file shorter than asked for is refused (and loads nothing).
        let short = loader.load(&ProgramImage::File { fd: file.as_fd(), len: len + 1 });
        assert!(matches!(short, Err(hvsandbox_core::VmError::ImageRead(_))), "{short:?}");
    }
    let mut vm = making.join().unwrap();
    let argv = [b"prog".to_vec()];
    // The boot must be told the length loaded.
    let wrong = vm.boot(&params(ProgramImage::Loaded { len: len + 8 }, &argv));
    assert!(matches!(wrong, Err(hvsandbox_core::VmError::ImageRead(_))), "{wrong:?}");
    // (A refused boot used the load up: it is loaded again.)
    loader.load(&ProgramImage::Bytes(&image)).unwrap();
    vm.boot(&params(ProgramImage::Loaded { len }, &argv)).unwrap();
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));
    let args = vm.hypercall_args().unwrap().args;
    assert_eq!((args[0], args[1]), (23, 0));
    // One load serves one boot.
    let again = vm.boot(&params(ProgramImage::Loaded { len }, &argv));
    assert!(matches!(again, Err(hvsandbox_core::VmError::ImageRead(_))), "{again:?}");
    // A loaded image cannot be loaded.
    assert!(loader.load(&ProgramImage::Loaded { len }).is_err());
}

/// Reads a u64 field of the BootInfo the host wrote.
fn boot_info_u64(vm: &Vm, offset: usize) -> u64 {
    let mut b = [0u8; 8];
    vm.read_bytes(abi::BOOT_INFO_GPA + offset as u64, &mut b).unwrap();
    u64::from_le_bytes(b)
}

#[test]
fn manifest_follows_the_arguments_aligned() {
    let image = elf(&exit_code(0));
    let argv = [b"prog".to_vec(), b"x".to_vec()]; // 7 bytes of strings
    let envp = [b"A=1".to_vec()]; // 4 more: 11
    let manifest: Vec<u8> = (0..40u8).collect();
    let mut vm = Vm::new(32 << 20).unwrap();
    let params = BootParams {
        envp: &envp,
        random_seed: [1; 32],
        manifest: &manifest,
        ..params(ProgramImage::Bytes(&image), &argv)
    };
    vm.boot(&params).unwrap();
    let gpa = boot_info_u64(&vm, std::mem::offset_of!(abi::BootInfo, manifest_gpa));
    let len = boot_info_u64(&vm, std::mem::offset_of!(abi::BootInfo, manifest_len));
    assert_eq!((gpa, len), (abi::ARGS_GPA + 16, 40));
    let mut back = vec![0u8; 40];
    vm.read_bytes(gpa, &mut back).unwrap();
    assert_eq!(back, manifest);
    // The runtime still boots the program.
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));

    // No manifest: 0/0.
    let mut vm = Vm::new(32 << 20).unwrap();
    vm.boot(&BootParams { manifest: &[], ..params }).unwrap();
    assert_eq!(boot_info_u64(&vm, std::mem::offset_of!(abi::BootInfo, manifest_gpa)), 0);
    assert_eq!(boot_info_u64(&vm, std::mem::offset_of!(abi::BootInfo, manifest_len)), 0);
}

#[test]
fn manifest_past_the_args_region_is_refused() {
    let image = elf(&exit_code(0));
    let argv = [vec![b'a'; 1000]];
    let manifest = vec![0u8; abi::ARGS_MAX as usize - 1000];
    let mut vm = Vm::new(32 << 20).unwrap();
    let params = BootParams { random_seed: [1; 32], manifest: &manifest, ..params(ProgramImage::Bytes(&image), &argv) };
    match vm.boot(&params) {
        Err(hvsandbox_core::VmError::ManifestTooLarge { len, room }) => {
            assert_eq!(len, abi::ARGS_MAX - 1000);
            assert_eq!(room, abi::ARGS_MAX - 1008);
        }
        other => panic!("expected ManifestTooLarge, got {other:?}"),
    }
    // Exactly filling the region is fine.
    let manifest = vec![0u8; abi::ARGS_MAX as usize - 1008];
    vm.boot(&BootParams { manifest: &manifest, ..params }).unwrap();
}

#[test]
fn guest_virtual_buffers_are_translated_through_the_page_tables() {
    let mut vm = boot(&exit_code(0));
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));
    // The program's image, mapped by the runtime at 0x400000.
    let mut head = [0u8; 4];
    vm.read_virt(0x40_0000, &mut head).unwrap();
    assert_eq!(&head, b"\x7fELF");
    // Across a page boundary of the physmap, and a write read back.
    let va = abi::phys_to_virt(abi::ARGS_GPA + 0x1000 - 3);
    vm.write_virt(va, b"abcdef").unwrap();
    let mut back = [0u8; 6];
    vm.read_virt(va, &mut back).unwrap();
    assert_eq!(&back, b"abcdef");
    // Unmapped, non-canonical, or running off the end of the physmap.
    for va in [0x100, 0x8000_0000_0000, abi::phys_to_virt(vm.mem_size() - 2)] {
        assert!(matches!(vm.read_virt(va, &mut back), Err(hvsandbox_core::VmError::GuestAccess { .. })), "{va:#x}");
    }
    // Nothing to copy: nothing to check.
    vm.read_virt(0x100, &mut []).unwrap();
}

/// A temporary file holding `bytes`, removed on drop.
struct TempFile(std::path::PathBuf, std::fs::File);

impl TempFile {
    fn new(tag: &str, bytes: &[u8]) -> TempFile {
        let path = std::env::temp_dir().join(format!("hvsb-core-{tag}-{}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        TempFile(path, file)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn boot_file(vm: &mut Vm, fd: std::os::fd::BorrowedFd<'_>, len: u64) -> hvsandbox_core::Result<()> {
    let argv = [b"prog".to_vec()];
    vm.boot(&BootParams { random_seed: [3; 32], ..params(ProgramImage::File { fd, len }, &argv) })
}

#[test]
fn a_program_file_is_read_straight_into_guest_ram() {
    use std::os::fd::AsFd;
    let image = elf(&exit_code(9));
    let file = TempFile::new("image", &image);
    let mut vm = Vm::new(32 << 20).unwrap();
    boot_file(&mut vm, file.1.as_fd(), image.len() as u64).unwrap();
    let gpa = boot_info_u64(&vm, std::mem::offset_of!(abi::BootInfo, image_gpa));
    let mut back = vec![0u8; image.len()];
    vm.read_bytes(gpa, &mut back).unwrap();
    assert_eq!(back, image);
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));
    assert_eq!(vm.hypercall_args().unwrap().args[0], 9);

    // Booted ahead of its program, the same.
    let mut vm = Vm::new(32 << 20).unwrap();
    vm.preboot().unwrap();
    boot_file(&mut vm, file.1.as_fd(), image.len() as u64).unwrap();
    assert_eq!(run(&mut vm), VmExit::Hypercall(abi::hc::EXIT));
    assert_eq!(vm.hypercall_args().unwrap().args[0], 9);
}

#[test]
fn a_program_file_shorter_than_said_is_a_read_error() {
    use std::os::fd::AsFd;
    let image = elf(&exit_code(0));
    let file = TempFile::new("short", &image);
    let mut vm = Vm::new(32 << 20).unwrap();
    // The file "got shorter" since its length was taken.
    match boot_file(&mut vm, file.1.as_fd(), image.len() as u64 + 4096) {
        Err(hvsandbox_core::VmError::ImageRead(e)) => assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof),
        other => panic!("expected ImageRead, got {other:?}"),
    }
    // A descriptor that cannot be read (a directory).
    let dir = std::fs::File::open(std::env::temp_dir()).unwrap();
    assert!(matches!(boot_file(&mut vm, dir.as_fd(), 4096), Err(hvsandbox_core::VmError::ImageRead(_))));
    // Larger than guest memory: refused before anything is read.
    assert!(matches!(boot_file(&mut vm, file.1.as_fd(), 64 << 20), Err(hvsandbox_core::VmError::ImageTooLarge { .. })));
}

#[test]
fn free_frames_start_right_after_the_runtime() {
    let vm = boot(&exit_code(0));
    let start = boot_info_u64(&vm, std::mem::offset_of!(abi::BootInfo, free_start));
    let rt = vm.runtime();
    let end = abi::RUNTIME_GPA + (rt.header.image_end - abi::RUNTIME_VA);
    // Page-aligned, past the runtime's bss, in the runtime's region (so a
    // small run's frames share its last huge page).
    assert_eq!(start, end.next_multiple_of(abi::PAGE_SIZE));
    assert!(start >= abi::RUNTIME_GPA + rt.bytes.len() as u64);
    assert!(start <= abi::IMAGE_GPA);
}

/// The `VmFlags` line of this process's mapping that holds `addr`.
fn vm_flags_at(addr: u64) -> String {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((lo, hi)) = range.split_once('-') {
                if let (Ok(lo), Ok(hi)) = (u64::from_str_radix(lo, 16), u64::from_str_radix(hi, 16)) {
                    inside = (lo..hi).contains(&addr);
                    continue;
                }
            }
        }
        if inside {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_string();
            }
        }
    }
    panic!("no mapping holds {addr:#x}")
}

#[test]
fn guest_ram_has_huge_pages_only_where_runs_fill_them() {
    // A run touches a few pages of the first 2 MiB and of the page-table
    // pool: small pages there (the host would zero a whole huge page for
    // each); huge pages for the runtime, the program and its memory.
    let vm = boot(&exit_code(0));
    let (host, len) = vm.host_memory();
    let host = host as u64;
    let mem = len as u64;
    let flags = |gpa: u64| vm_flags_at(host + gpa).split(' ').map(str::to_string).collect::<Vec<_>>();
    assert!(flags(0).contains(&"nh".to_string()), "{:?}", flags(0));
    assert!(flags(abi::RUNTIME_GPA).contains(&"hg".to_string()), "{:?}", flags(abi::RUNTIME_GPA));
    assert!(flags(abi::pt_pool_start(mem) - abi::PAGE_SIZE).contains(&"hg".to_string()));
    assert!(flags(abi::pt_pool_start(mem)).contains(&"nh".to_string()), "{:?}", flags(abi::pt_pool_start(mem)));
    assert!(flags(mem - abi::PAGE_SIZE).contains(&"nh".to_string()));
}
