//! hvsandbox guest runtime, the binary: the entry assembly, the panic
//! handler, the global allocator and the C memory functions — what a
//! freestanding image needs and a host test build must not have. The
//! runtime itself is the library (`lib.rs`).
//!
//! The host enters `_start` at CPL3 with RDI pointing at the boot-info
//! page. Program `syscall`s land in `syscall_entry` (LSTAR) and are served
//! here; the runtime leaves the VM only through hypercalls (a write to the
//! doorbell) to move output and input or to finish.
#![no_std]
#![no_main]
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use core::arch::global_asm;

use hvsandbox_abi as abi;
use hvsandbox_guest_runtime::entry;

// The header the host reads to find the entry points (see abi::RuntimeHeader).
global_asm!(
    ".section .header, \"a\"",
    ".quad {magic}",
    ".long {version}, 0",
    ".quad _start",
    ".quad syscall_entry",
    ".quad exception_stubs",
    ".quad 16",
    ".quad runtime_stack_top",
    ".quad __text_end",
    ".quad __image_end",
    ".quad program_fault_entry",
    ".quad PROGRAM_FAULT",
    magic = const abi::RUNTIME_MAGIC,
    version = const abi::ABI_VERSION,
);

// The runtime's own stack, used at start and for every system call.
global_asm!(
    ".section .bss.stack, \"aw\", @nobits",
    ".balign 4096",
    "runtime_stack:",
    ".skip 65536",
    "runtime_stack_top:",
);

// Entry, system-call entry, exception stubs and the TLB-flush trap.
//
// syscall_entry: on this host `syscall` stays at CPL3 and switches nothing
// but RIP/RFLAGS, so we first move off the program's stack (its red zone
// lies below RSP), save every register (Linux preserves all but RCX/R11
// and RAX) and xmm0-15, and call the dispatcher with a pointer to the
// frame. To return at CPL3 we `popfq` on our own stack and then `pop rsp`
// and `jmp rcx`, which change no flags. On hardware KVM `syscall` lands at
// CPL0: the same frame is popped and we return with `sysretq`.
global_asm!(
    ".section .text.entry, \"ax\"",
    ".global _start",
    "_start:",
    "    and rsp, -16",
    "    call {start}",
    "    ud2",
    "",
    ".global syscall_entry",
    ".balign 16",
    "syscall_entry:",
    "    cmp byte ptr [rip + {probe}], 0",
    "    jne syscall_probe",
    "    mov [rip + {saved_rsp}], rsp",
    "    lea rsp, [rip + runtime_stack_top]",
    "syscall_entry_switched:",
    "    push qword ptr [rip + {saved_rsp}]",
    "    push rcx",
    "    push r11",
    "    push rax",
    // After `syscall` RCX and R11 hold RIP and RFLAGS (Linux returns them so).
    "    push rcx",
    "    push r11",
    "    push rdi",
    "    push rsi",
    "    push rdx",
    "    push r10",
    "    push r8",
    "    push r9",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    cld",
    "    sub rsp, 256",
    "    movaps [rsp + 0x00], xmm0",
    "    movaps [rsp + 0x10], xmm1",
    "    movaps [rsp + 0x20], xmm2",
    "    movaps [rsp + 0x30], xmm3",
    "    movaps [rsp + 0x40], xmm4",
    "    movaps [rsp + 0x50], xmm5",
    "    movaps [rsp + 0x60], xmm6",
    "    movaps [rsp + 0x70], xmm7",
    "    movaps [rsp + 0x80], xmm8",
    "    movaps [rsp + 0x90], xmm9",
    "    movaps [rsp + 0xa0], xmm10",
    "    movaps [rsp + 0xb0], xmm11",
    "    movaps [rsp + 0xc0], xmm12",
    "    movaps [rsp + 0xd0], xmm13",
    "    movaps [rsp + 0xe0], xmm14",
    "    movaps [rsp + 0xf0], xmm15",
    "    lea rdi, [rsp + 256]",
    "    call {dispatch}",
    "    movaps xmm0, [rsp + 0x00]",
    "    movaps xmm1, [rsp + 0x10]",
    "    movaps xmm2, [rsp + 0x20]",
    "    movaps xmm3, [rsp + 0x30]",
    "    movaps xmm4, [rsp + 0x40]",
    "    movaps xmm5, [rsp + 0x50]",
    "    movaps xmm6, [rsp + 0x60]",
    "    movaps xmm7, [rsp + 0x70]",
    "    movaps xmm8, [rsp + 0x80]",
    "    movaps xmm9, [rsp + 0x90]",
    "    movaps xmm10, [rsp + 0xa0]",
    "    movaps xmm11, [rsp + 0xb0]",
    "    movaps xmm12, [rsp + 0xc0]",
    "    movaps xmm13, [rsp + 0xd0]",
    "    movaps xmm14, [rsp + 0xe0]",
    "    movaps xmm15, [rsp + 0xf0]",
    "    add rsp, 256",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    pop r9",
    "    pop r8",
    "    pop r10",
    "    pop rdx",
    "    pop rsi",
    "    pop rdi",
    // Every frame leaves here (a system call's, a fault's, a preempted
    // task's): every register is restored, and RSP and RIP come from
    // memory, so RCX and R11 keep the values in the frame.
    "frame_exit:",
    // Stack now: [r11] [rcx] [rax] [rflags] [rip] [user rsp].
    "    mov rax, cs",
    "    test eax, 3",
    "    jz 2f",
    "    mov rax, [rsp + 32]",
    "    mov [rip + {resume_rip}], rax",
    "    mov rax, [rsp + 40]",
    "    mov [rip + {resume_rsp}], rax",
    "    pop r11",
    "    pop rcx",
    "    pop rax",
    "    popfq",
    "    mov rsp, [rip + {resume_rsp}]",
    "    jmp qword ptr [rip + {resume_rip}]",
    "2:",
    "    add rsp, 16",
    "    pop rax",
    "    mov r11, [rsp]",
    "    mov rcx, [rsp + 8]",
    "    mov rsp, [rsp + 16]",
    "    sysretq",
    "",
    // A rewritten site's stub jumps here (rewrite.rs) with RAX and RCX as
    // after a `syscall`: move off the program's stack first, then R11 =
    // RFLAGS (on our stack), and go on as the `syscall` entry does.
    ".global syscall_fast_entry",
    ".balign 16",
    "syscall_fast_entry:",
    "    mov [rip + {saved_rsp}], rsp",
    "    lea rsp, [rip + runtime_stack_top]",
    "    pushfq",
    "    pop r11",
    "    mov byte ptr [rip + {fast}], 1",
    "    jmp syscall_entry_switched",
    "",
    // The boot times a raw `syscall` (rewrite.rs): straight back, RAX
    // clobbered (at CPL3 on the runtime's own stack, or by `sysretq`).
    "syscall_probe:",
    "    mov rax, cs",
    "    test eax, 3",
    "    jz 1f",
    "    push r11",
    "    popfq",
    "    jmp rcx",
    "1:",
    "    sysretq",
    "",
    // Jump from CPL3 into a fresh program: RDI = entry, RSI = stack.
    ".global enter_program",
    "enter_program:",
    "    mov rsp, rsi",
    "    mov rcx, rdi",
    "    xor eax, eax",
    "    xor ebx, ebx",
    "    xor edx, edx",
    "    xor esi, esi",
    "    xor edi, edi",
    "    xor ebp, ebp",
    "    xor r8d, r8d",
    "    xor r9d, r9d",
    "    xor r10d, r10d",
    "    xor r11d, r11d",
    "    xor r12d, r12d",
    "    xor r13d, r13d",
    "    xor r14d, r14d",
    "    xor r15d, r15d",
    "    jmp rcx",
    "",
    // A request to flush the TLB (mov cr3), the only way to make removed
    // mappings take effect: an `int3` with RCX = the address after it and
    // RAX = the CR3 to load. The #BP stub recognises it by RCX = the
    // pushed RIP and loads CR3 in two instructions more (ring 0 is
    // emulated here, ~1-2 us an instruction). A program's own `int3`
    // (RCX is almost never the address after it) still raises SIGTRAP;
    // one that forges the pair only reloads its own VM's CR3.
    // RAX and RCX are caller-saved: `tlb_flush` is an extern "C" function.
    ".global tlb_flush",
    "tlb_flush:",
    "    mov rax, [rip + {next_cr3}]",
    "    lea rcx, [rip + 1f]",
    "    int3",
    "1:",
    "    ret",
    "",
    // A request to drop one page's TLB entries (invlpg): an `int 4` (the
    // #OF gate, reachable from CPL3 as on Linux) with RCX = the address
    // after it and RAX = the page (RDI, the argument). The #OF stub
    // recognises it as the #BP stub does its request; a program's own
    // `int 4` still raises its signal, and one that forges the pair only
    // drops TLB entries. Unlike a CR3 reload, KVM's shadow paging then
    // leaves the other page tables as they are.
    ".global tlb_flush_page",
    "tlb_flush_page:",
    "    mov rax, rdi",
    "    lea rcx, [rip + 1f]",
    "    int 4",
    "1:",
    "    ret",
    "",
    // Exception stubs, 16 bytes apart: push an error code where the CPU
    // pushes none, push the vector, go to the common ring-0 handler.
    ".macro STUB vec, err",
    "  .balign 16",
    "  .if \\err == 0",
    "  push 0",
    "  .endif",
    "  push \\vec",
    "  jmp exception_common",
    ".endm",
    ".balign 16",
    ".global exception_stubs",
    "exception_stubs:",
    "STUB 0, 0", "STUB 1, 0", "STUB 2, 0",
    // #BP: a TLB flush request from `tlb_flush` (4 emulated instructions
    // in all), or a program's `int3` for the common handler. 15 bytes.
    "  .balign 16",
    "  cmp rcx, [rsp]",
    "  jne.d32 bp_not_flush",
    "  mov cr3, rax",
    "  iretq",
    // #OF: a page's TLB flush request from `tlb_flush_page`, or a
    // program's `int 4` for the common handler. 15 bytes.
    "  .balign 16",
    "  cmp rcx, [rsp]",
    "  jne.d32 of_not_flush",
    "  invlpg [rax]",
    "  iretq",
    "STUB 5, 0", "STUB 6, 0", "STUB 7, 0",
    "  .balign 16",
    "  push 8",
    "  jmp exception_crash",
    "STUB 9, 0", "STUB 10, 1", "STUB 11, 1",
    "STUB 12, 1", "STUB 13, 1",
    // #PF: its address (CR2) too, which only ring 0 may read.
    "  .balign 16",
    "  push 14",
    "  jmp page_fault_common",
    "STUB 15, 0",
    "STUB 16, 0", "STUB 17, 1", "STUB 18, 0", "STUB 19, 0",
    "STUB 20, 0", "STUB 21, 1", "STUB 22, 0", "STUB 23, 0",
    "STUB 24, 0", "STUB 25, 0", "STUB 26, 0", "STUB 27, 0",
    "STUB 28, 0", "STUB 29, 1", "STUB 30, 1", "STUB 31, 0",
    "",
    // Ring 0 (emulated on this host, ~2 µs an instruction: as few as
    // possible). Stack: vector, error, rip, cs, rflags, rsp, ss.
    "of_not_flush:",
    "    push 0",
    "    push 4",
    "    jmp exception_common",
    "bp_not_flush:",
    "    push 0",
    "    push 3",
    "exception_common:",
    // An exception of CPL3 code goes back to CPL3 at exception_entry, on
    // the runtime stack with RFLAGS 0x2 (TF, DF, AC clear): CR2 goes into
    // the fault record (only ring 0 may read it) and the CPU's frame stays
    // where it is (TSS.RSP0 - 56: every exception from CPL3 starts there),
    // for exception_entry to read at CPL3, where each instruction is not
    // emulated. 4 instructions (8 for a page fault, which saves CR2):
    // the `iretq` takes a frame kept ready in memory (exception_iret),
    // not one pushed here (each push emulated too). The runtime's own
    // faults are told apart at CPL3 too. An exception in ring 0 itself is
    // a crash of the runtime, reported to the host with the frame on
    // this stack.
    "    test byte ptr [rsp + 24], 3",
    "    jz exception_crash",
    "    lea rsp, [rip + exception_iret]",
    "    iretq",
    "page_fault_common:",
    "    test byte ptr [rsp + 24], 3",
    "    jz exception_crash",
    "    push rax",
    "    mov rax, cr2",
    "    mov [rip + {record} + 24], rax",
    "    pop rax",
    "    lea rsp, [rip + exception_iret]",
    "    iretq",
    // #DF runs on its own stack (IST1): always a crash.
    "exception_crash:",
    "    movabs rax, {doorbell}",
    "    mov qword ptr [rax], {fault}",
    "5:",
    "    jmp 5b",
    "",
    // The frame the ring-0 handlers' `iretq` takes: exception_entry at
    // CPL3, on the runtime stack, RFLAGS 0x2.
    ".balign 8",
    "exception_iret:",
    "    .quad exception_entry",
    "    .quad {user_cs}",
    "    .quad 2",
    "    .quad runtime_stack_top",
    "    .quad {user_ds}",
    "",
    "exception_entry:",
    // CPL3, on the runtime stack; every register is the program's (or the
    // runtime's, if it faulted). Copy the CPU's frame into the fault
    // record (CR2 is there already) before anything can raise another
    // exception (a TLB flush's `int3`) over it.
    "    push rax",
    "    push rbx",
    "    push rcx",
    "    movabs rax, {ring0_frame}",
    "    lea rbx, [rip + {record}]",
    "    mov rcx, [rax]",
    "    mov [rbx], rcx",
    "    mov rcx, [rax + 8]",
    "    mov [rbx + 8], rcx",
    "    mov rcx, [rax + 32]",
    "    mov [rbx + 40], rcx",
    "    mov rcx, [rax + 40]",
    "    mov [rbx + 32], rcx",
    "    mov rcx, [rax + 16]",
    "    mov [rbx + 16], rcx",
    // A fault at a RIP inside the runtime's code is the runtime's own: a
    // crash, reported to the host (which reads the frame where the CPU
    // left it, and takes it as the runtime's only for a RIP there too).
    // Anything else is the program's.
    "    movabs rax, {runtime_va}",
    "    cmp rcx, rax",
    "    jb 7f",
    "    lea rax, [rip + __text_end]",
    "    cmp rcx, rax",
    "    jb 8f",
    "7:",
    "    pop rcx",
    "    pop rbx",
    "    pop rax",
    "    jmp program_fault_entry",
    "8:",
    "    movabs rax, {doorbell}",
    "    mov qword ptr [rax], {fault}",
    "9:",
    "    jmp 9b",
    "",
    "program_fault_entry:",
    // On the runtime stack (set by the ring-0 handler); every register but
    // RIP/RSP/RFLAGS (in PROGRAM_FAULT) is still the program's. Build the
    // same frame as syscall_entry (RCX and R11, which a `syscall` clobbers
    // but a fault does not, go aside) and leave through fault_restore.
    "    push 0",
    "    push 0",
    "    push 0",
    "    push rax",
    "    push rcx",
    "    push r11",
    "    push rdi",
    "    push rsi",
    "    push rdx",
    "    push r10",
    "    push r8",
    "    push r9",
    "    push rbx",
    "    push rbp",
    "    push r12",
    "    push r13",
    "    push r14",
    "    push r15",
    "    cld",
    "    sub rsp, 256",
    "    movaps [rsp + 0x00], xmm0",
    "    movaps [rsp + 0x10], xmm1",
    "    movaps [rsp + 0x20], xmm2",
    "    movaps [rsp + 0x30], xmm3",
    "    movaps [rsp + 0x40], xmm4",
    "    movaps [rsp + 0x50], xmm5",
    "    movaps [rsp + 0x60], xmm6",
    "    movaps [rsp + 0x70], xmm7",
    "    movaps [rsp + 0x80], xmm8",
    "    movaps [rsp + 0x90], xmm9",
    "    movaps [rsp + 0xa0], xmm10",
    "    movaps [rsp + 0xb0], xmm11",
    "    movaps [rsp + 0xc0], xmm12",
    "    movaps [rsp + 0xd0], xmm13",
    "    movaps [rsp + 0xe0], xmm14",
    "    movaps [rsp + 0xf0], xmm15",
    "    lea rdi, [rsp + 256]",
    "    call {program_fault}",
    // Like the syscall exit, but every register is restored and the jump
    // goes through memory, so RCX and R11 keep the program's values.
    "    movaps xmm0, [rsp + 0x00]",
    "    movaps xmm1, [rsp + 0x10]",
    "    movaps xmm2, [rsp + 0x20]",
    "    movaps xmm3, [rsp + 0x30]",
    "    movaps xmm4, [rsp + 0x40]",
    "    movaps xmm5, [rsp + 0x50]",
    "    movaps xmm6, [rsp + 0x60]",
    "    movaps xmm7, [rsp + 0x70]",
    "    movaps xmm8, [rsp + 0x80]",
    "    movaps xmm9, [rsp + 0x90]",
    "    movaps xmm10, [rsp + 0xa0]",
    "    movaps xmm11, [rsp + 0xb0]",
    "    movaps xmm12, [rsp + 0xc0]",
    "    movaps xmm13, [rsp + 0xd0]",
    "    movaps xmm14, [rsp + 0xe0]",
    "    movaps xmm15, [rsp + 0xf0]",
    "    add rsp, 256",
    "    pop r15",
    "    pop r14",
    "    pop r13",
    "    pop r12",
    "    pop rbp",
    "    pop rbx",
    "    pop r9",
    "    pop r8",
    "    pop r10",
    "    pop rdx",
    "    pop rsi",
    "    pop rdi",
    "    jmp frame_exit",
    start = sym entry::rust_start,
    dispatch = sym entry::dispatch,
    saved_rsp = sym entry::SAVED_USER_RSP,
    fast = sym entry::REWRITE_FAST_ENTRY,
    probe = sym entry::REWRITE_PROBE,
    doorbell = const abi::DOORBELL_VA,
    fault = const abi::hc::FAULT,
    runtime_va = const abi::RUNTIME_VA,
    record = sym entry::PROGRAM_FAULT,
    program_fault = sym entry::program_fault,
    next_cr3 = sym entry::NEXT_CR3,
    resume_rip = sym entry::RESUME_RIP,
    resume_rsp = sym entry::RESUME_RSP,
    user_ds = const abi::USER_DS,
    user_cs = const abi::USER_CS,
    ring0_frame = const abi::PHYS_BASE + abi::RING0_STACK_GPA + abi::RING0_STACK_SIZE
        - core::mem::size_of::<abi::ExceptionFrame>() as u64,
);

// A rewritten `cpuid` site's stub jumps here (cpuid.rs, rewrite.rs) with
// EAX/ECX the leaf and subleaf and RBX the address after the `cpuid`.
// The answer comes from the host's CPUID page as `abi::cpuid::lookup`
// reads it, else from the CPU; every other register, RFLAGS and the
// program's stack (its red zone) are left as they were. Runtime code: never preempted, cannot
// fault, so the way back and the program's RSP wait in globals.
global_asm!(
    ".section .text.entry, \"ax\"",
    ".global cpuid_fast_entry",
    ".balign 16",
    "cpuid_fast_entry:",
    "    mov [rip + {back}], rbx",
    "    mov [rip + {saved}], rsp",
    "    lea rsp, [rip + runtime_stack_top]",
    "    pushfq",
    "    push rsi",
    "    push rdi",
    "    movabs rsi, {page}",
    "    cmp dword ptr [rsi], {magic}",
    "    jne 3f",
    "    mov edi, [rsi + 4]",
    "    cmp edi, {max}",
    "    ja 3f",
    "    add rsi, 16",
    // EDX (an output): whether the leaf has entries by subleaf.
    "    xor edx, edx",
    "1:",
    "    test edi, edi",
    "    jz 6f",
    "    cmp eax, [rsi]",
    "    jne 2f",
    "    test byte ptr [rsi + 8], {flag_index}",
    "    jz 4f",
    "    cmp ecx, [rsi + 4]",
    "    je 4f",
    "    mov edx, 1",
    "2:",
    "    add rsi, 32",
    "    dec edi",
    "    jmp 1b",
    // Not in the table: zeros for a subleaf a basic leaf lacks, as KVM
    // answers (not 0xB and 0x1F: KVM fills in their ECX and EDX).
    "6:",
    "    test edx, edx",
    "    jz 3f",
    "    cmp eax, 0xb",
    "    je 3f",
    "    cmp eax, 0x1f",
    "    je 3f",
    "    movabs rsi, {page}",
    "    cmp eax, [rsi + 8]",
    "    ja 3f",
    "    xor eax, eax",
    "    xor ebx, ebx",
    "    xor ecx, ecx",
    "    xor edx, edx",
    "    jmp 5f",
    "3:",
    "    cpuid",
    "    jmp 5f",
    "4:",
    "    mov eax, [rsi + 12]",
    "    mov ebx, [rsi + 16]",
    "    mov ecx, [rsi + 20]",
    "    mov edx, [rsi + 24]",
    "5:",
    "    pop rdi",
    "    pop rsi",
    "    popfq",
    "    mov rsp, [rip + {saved}]",
    "    jmp qword ptr [rip + {back}]",
    back = sym entry::CPUID_BACK,
    saved = sym entry::CPUID_RSP,
    page = const abi::PHYS_BASE + abi::CPUID_GPA,
    magic = const abi::cpuid::MAGIC,
    max = const abi::cpuid::MAX_ENTRIES,
    flag_index = const abi::cpuid::FLAG_INDEX,
);

#[global_allocator]
static ALLOCATOR: entry::RuntimeAllocator = entry::RuntimeAllocator;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let mut msg = entry::FixedBuf::<256>::new();
    let _ = core::fmt::write(&mut msg, format_args!("{info}"));
    entry::runtime_panic(msg.as_bytes())
}

#[no_mangle]
extern "C" fn rust_eh_personality() {}

// The freestanding core library calls these; they are written with string
// instructions so the compiler cannot turn them back into calls to
// themselves.

/// # Safety
/// As C's memcpy: valid, non-overlapping ranges of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid for n bytes.
    unsafe {
        core::arch::asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
            options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// As C's memmove: valid ranges of `n` bytes, possibly overlapping.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: forward copy is correct when dst is below src or the
        // ranges do not overlap; validity is the caller's guarantee.
        unsafe { memcpy(dst, src, n) };
    } else {
        // SAFETY: copy backwards from the last byte (DF set, then cleared
        // again as the ABI requires).
        unsafe {
            core::arch::asm!("std", "rep movsb", "cld",
                inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
                options(nostack));
        }
    }
    dst
}

/// # Safety
/// As C's memset: a valid range of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid for n bytes.
    unsafe {
        core::arch::asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
            options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// As C's memcmp: valid ranges of `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and both ranges are valid for n bytes.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// # Safety
/// As memcmp.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}
