/* Executes one privileged or trapping instruction, named by argv[1], at
 * CPL3. If the instruction does not fault, prints "survived" and exits 0. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv) {
    const char *n = argc > 1 ? argv[1] : "";
    printf("executing %s\n", n);
    fflush(stdout);
    if (!strcmp(n, "forged-flush-garbage")) {
        /* The runtime's TLB-flush request (int3 with RCX = the address
         * after it, RAX = the CR3 to load), forged with a CR3 that points
         * at no page table. */
        __asm__ volatile("lea 1f(%%rip), %%rcx\n int3\n 1:" ::"a"(0xdeadbeef000ull) : "rcx", "memory");
    } else if (!strcmp(n, "forged-flush-zero")) {
        __asm__ volatile("lea 1f(%%rip), %%rcx\n int3\n 1:" ::"a"(0ull) : "rcx", "memory");
    } else if (!strcmp(n, "int3-rcx-elsewhere")) {
        /* A program's own int3 with RCX pointing just past another int3:
         * still SIGTRAP. */
        __asm__ volatile("lea 1f(%%rip), %%rcx\n int3\n nop\n 1:" ::"a"(0ull) : "rcx", "memory");
    } else if (!strcmp(n, "hlt")) {
        __asm__ volatile("hlt");
    } else if (!strcmp(n, "out")) {
        __asm__ volatile("outb %%al, $0x80" ::"a"(0));
    } else if (!strcmp(n, "in")) {
        uint8_t v;
        __asm__ volatile("inb $0x60, %0" : "=a"(v));
    } else if (!strcmp(n, "out-dx")) {
        __asm__ volatile("outl %%eax, %%dx" ::"a"(0), "d"(0xcf8));
    } else if (!strcmp(n, "wrmsr")) {
        /* LSTAR: the syscall entry. */
        __asm__ volatile("wrmsr" ::"c"(0xc0000082), "a"(0), "d"(0));
    } else if (!strcmp(n, "rdmsr")) {
        uint32_t lo, hi;
        __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(0xc0000082));
    } else if (!strcmp(n, "cli")) {
        __asm__ volatile("cli");
    } else if (!strcmp(n, "sti")) {
        __asm__ volatile("sti");
    } else if (!strcmp(n, "iopl-cli")) {
        /* Try to raise IOPL through popf (ignored at CPL3), then cli. */
        __asm__ volatile("pushfq; orq $0x3000, (%%rsp); popfq; cli" ::: "memory", "cc");
    } else if (!strcmp(n, "lgdt") || !strcmp(n, "lidt")) {
        struct __attribute__((packed)) { uint16_t limit; uint64_t base; } d = {0xffff, 0};
        if (n[1] == 'g')
            __asm__ volatile("lgdt %0" ::"m"(d));
        else
            __asm__ volatile("lidt %0" ::"m"(d));
    } else if (!strcmp(n, "ltr")) {
        __asm__ volatile("ltr %w0" ::"r"(0x40));
    } else if (!strcmp(n, "mov-cr3")) {
        __asm__ volatile("mov %0, %%cr3" ::"r"(0UL) : "memory");
    } else if (!strcmp(n, "read-cr3")) {
        uint64_t v;
        __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    } else if (!strcmp(n, "mov-cr0")) {
        __asm__ volatile("mov %0, %%cr0" ::"r"(0UL) : "memory");
    } else if (!strcmp(n, "invlpg")) {
        __asm__ volatile("invlpg (%0)" ::"r"(0x400000UL) : "memory");
    } else if (!strcmp(n, "wbinvd")) {
        __asm__ volatile("wbinvd");
    } else if (!strcmp(n, "xsetbv")) {
        __asm__ volatile("xsetbv" ::"c"(0), "a"(1), "d"(0));
    } else if (!strcmp(n, "swapgs")) {
        __asm__ volatile("swapgs");
    } else if (!strcmp(n, "sysret")) {
        __asm__ volatile("sysretq");
    } else if (!strcmp(n, "int80")) {
        /* i386 exit(42) on a Linux with IA-32 emulation. */
        __asm__ volatile("int $0x80" ::"a"(1), "b"(42));
    } else if (!strcmp(n, "int3")) {
        __asm__ volatile("int3");
    } else if (!strcmp(n, "int-3")) {
        __asm__ volatile(".byte 0xcd, 0x03"); /* int $3, the two-byte form */
    } else if (!strcmp(n, "int-14")) {
        __asm__ volatile("int $14"); /* a software "page fault" */
    } else if (!strcmp(n, "ud2")) {
        __asm__ volatile("ud2");
    } else if (!strcmp(n, "div0")) {
        /* In asm: a C division by a known zero is folded away. */
        int64_t q;
        __asm__ volatile("cqo; idivq %2" : "=a"(q) : "a"(1L), "r"(0L) : "rdx");
    } else if (!strcmp(n, "idiv-overflow")) {
        int64_t q;
        __asm__ volatile("cqo; idivq %2" : "=a"(q) : "a"(INT64_MIN), "r"(-1L) : "rdx");
    } else if (!strcmp(n, "lret-kernel")) {
        /* A far return to the kernel's code segment (0x10). */
        __asm__ volatile("pushq $0x10; leaq 1f(%%rip), %%rax; pushq %%rax; lretq; 1:" ::: "rax", "memory");
    } else if (!strcmp(n, "iret-kernel")) {
        /* An iretq to ring 0: SS 0x18, CS 0x10. */
        __asm__ volatile("movq %%rsp, %%rax; pushq $0x18; pushq %%rax; pushfq; pushq $0x10;"
                         "leaq 1f(%%rip), %%rax; pushq %%rax; iretq; 1:" ::: "rax", "memory");
    } else if (!strcmp(n, "mov-ds-kernel")) {
        __asm__ volatile("movw $0x18, %%ax; movw %%ax, %%ds" ::: "rax");
    } else if (!strcmp(n, "vmcall")) {
        __asm__ volatile("vmcall" ::"a"(0) : "memory");
    } else if (!strcmp(n, "vmmcall")) {
        __asm__ volatile("vmmcall" ::"a"(0) : "memory");
    } else {
        printf("unknown instruction\n");
        return 2;
    }
    printf("survived\n");
    return 0;
}
