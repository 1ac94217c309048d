/* Takes ring 0 inside the guest: all of guest RAM (the IDT included) is
 * writable at CPL3 through the physmap, so the program points the #UD gate
 * at its own code and executes ud2. At ring 0 it changes vCPU state that
 * no page of memory holds, and reads it back:
 *   ring0 msr VALUE   write VALUE into KERNEL_GS_BASE, CSTAR and SYSENTER_ESP
 *   ring0 dr VALUE    write VALUE into DR0
 *   ring0 xcr0        clear XCR0's AVX bit
 *   ring0 get         only read
 * and prints "kernel_gs_base=.. cstar=.. sysenter_esp=.." (plus "dr0=.."
 * and "xcr0=.." for those two). A sandbox reset to its snapshot must not
 * let a later run see what an earlier one left. (A host may refuse to
 * emulate some of these at CPL0; the run then crashes.) The addresses are
 * those of hvsandbox-abi (checked by tests/hostile.rs). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PHYS_BASE 0x7f0000000000UL
#define IDT 0x2000UL
#define UD_VECTOR 6

uint64_t value;   /* what to write */
int op;           /* 0 = get, 1 = msr, 2 = dr, 3 = xcr0 */
int also;         /* also read DR0 (1) or XCR0 (2) */
uint64_t got[5];  /* KERNEL_GS_BASE, CSTAR, SYSENTER_ESP, DR0, XCR0 */

/* Runs at CPL0 on the ring-0 stack; the frame is rip, cs, rflags, rsp, ss. */
extern void ring0_entry(void);
__asm__(
    ".text\n"
    ".global ring0_entry\n"
    "ring0_entry:\n"
    "  push %rax\n push %rcx\n push %rdx\n"
    "  cmpl $1, op(%rip)\n jne 1f\n"
    "  mov value(%rip), %rax\n mov %rax, %rdx\n shr $32, %rdx\n mov $0xc0000102, %ecx\n wrmsr\n"
    "  mov value(%rip), %rax\n mov %rax, %rdx\n shr $32, %rdx\n mov $0xc0000083, %ecx\n wrmsr\n"
    "  mov value(%rip), %rax\n mov %rax, %rdx\n shr $32, %rdx\n mov $0x175, %ecx\n wrmsr\n"
    "1:\n"
    "  cmpl $2, op(%rip)\n jne 2f\n"
    "  mov value(%rip), %rax\n mov %rax, %dr0\n"
    "2:\n"
    "  cmpl $3, op(%rip)\n jne 3f\n"
    "  xor %ecx, %ecx\n xgetbv\n and $~4, %eax\n xsetbv\n"
    "3:\n"
    "  mov $0xc0000102, %ecx\n rdmsr\n shl $32, %rdx\n or %rdx, %rax\n mov %rax, got(%rip)\n"
    "  mov $0xc0000083, %ecx\n rdmsr\n shl $32, %rdx\n or %rdx, %rax\n mov %rax, got+8(%rip)\n"
    "  mov $0x175, %ecx\n rdmsr\n shl $32, %rdx\n or %rdx, %rax\n mov %rax, got+16(%rip)\n"
    "  cmpl $1, also(%rip)\n jne 4f\n"
    "  mov %dr0, %rax\n mov %rax, got+24(%rip)\n"
    "4:\n"
    "  cmpl $2, also(%rip)\n jne 5f\n"
    "  xor %ecx, %ecx\n xgetbv\n shl $32, %rdx\n or %rdx, %rax\n mov %rax, got+32(%rip)\n"
    "5:\n"
    "  pop %rdx\n pop %rcx\n pop %rax\n"
    "  addq $2, (%rsp)\n" /* past the ud2 */
    "  iretq\n");

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *what = argv[1];
    if (argc > 2) value = strtoull(argv[2], 0, 0);
    if (!strcmp(what, "msr")) op = 1;
    else if (!strcmp(what, "dr")) op = 2, also = 1;
    else if (!strcmp(what, "xcr0")) op = 3, also = 2;
    else if (!strcmp(what, "get-dr")) also = 1;
    else if (!strcmp(what, "get-xcr0")) also = 2;
    else if (strcmp(what, "get")) return 2;
    volatile uint8_t *gate = (volatile uint8_t *)(PHYS_BASE + IDT + 16 * UD_VECTOR);
    uint8_t saved[16];
    for (int i = 0; i < 16; i++) saved[i] = gate[i];
    uint64_t target = (uint64_t)ring0_entry;
    gate[0] = target & 0xff;
    gate[1] = (target >> 8) & 0xff;
    for (int i = 0; i < 2; i++) gate[6 + i] = (target >> (16 + 8 * i)) & 0xff;
    for (int i = 0; i < 4; i++) gate[8 + i] = (target >> (32 + 8 * i)) & 0xff;
    __asm__ volatile("ud2" ::: "memory");
    for (int i = 0; i < 16; i++) gate[i] = saved[i];
    printf("kernel_gs_base=%#llx cstar=%#llx sysenter_esp=%#llx", (unsigned long long)got[0],
           (unsigned long long)got[1], (unsigned long long)got[2]);
    if (also == 1) printf(" dr0=%#llx", (unsigned long long)got[3]);
    if (also == 2) printf(" xcr0=%#llx", (unsigned long long)got[4]);
    printf("\n");
    return 0;
}
