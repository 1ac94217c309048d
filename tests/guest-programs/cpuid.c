/* CPUID as the guest sees it, through one site that an entry snapshot's
 * rewriting turns into a jump to the runtime (tests/cpuid.rs).
 *
 * Prints every leaf and subleaf of a sweep (basic leaves to two past
 * the highest, extended leaves likewise, the hypervisor range, a few
 * far-out leaves) as "leaf.sub: eax ebx ecx edx"; then "checks: N bad":
 * around each `cpuid` every other register, the flags (CF ZF SF OF PF,
 * all set and all clear) and the 128-byte red zone below RSP must be as
 * they were; then "site: XX YY", the first byte of the `cpuid` and of
 * the instruction before it (0f 48 as written). With `checks` only the
 * checks line (compared with a native run; the values are the vCPU's).
 *
 * `forms`: three more sites whose instructions before them are short,
 * with no padding in reach (150 bytes of code on either side), so only
 * the fourth form (a run of several instructions moved to the stub) can
 * rewrite them; the second has a jump landing inside its run, and the
 * third is in a function with an indirect jump, so both must stay.
 * A fourth site follows a 10-byte RIP-relative store, which the third
 * form moves to the stub with its displacement adjusted (the store must
 * still land). Prints how many answers (or stores) differ from the first
 * site's, then "run: XX YY", "landed: XX YY", "indirect: XX YY" (each
 * site's first byte and its run's: 0f 4d as written) and "rip: XX YY"
 * (0f c7 as written); then the same for a `syscall` site (getpid) with
 * a run before it (0f 89 as written). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The code byte `off` bytes from `site` (a label in the code). */
static unsigned code_byte(const unsigned char *site, long off) {
    return *(volatile const unsigned char *)((uintptr_t)site + off);
}

struct probe_out {
    uint32_t r[4];
    uint8_t flags[8]; /* CF ZF SF OF PF after the cpuid, 0/1 each */
    uint64_t bad;     /* registers and red-zone words that changed */
};

/* cpuid_probe(leaf, subleaf, out, set_flags): puts sentinels in every
 * register it may and in the red zone, sets or clears the flags, runs
 * the `cpuid` at cpuid_site and checks them all. The instruction right
 * before the site is a 10-byte `movabs` (the rewriter's third form may
 * move it into the stub). CFI gives the rewriter the function's bounds. */
void cpuid_probe(uint32_t leaf, uint32_t sub, struct probe_out *out, uint64_t set_flags);
extern const unsigned char cpuid_site[];
__asm__(
    ".text\n"
    ".globl cpuid_probe\n"
    ".type cpuid_probe,@function\n"
    ".p2align 4\n"
    "cpuid_probe:\n"
    ".cfi_startproc\n"
    "    push %rbx\n"
    ".cfi_adjust_cfa_offset 8\n"
    "    push %rbp\n"
    ".cfi_adjust_cfa_offset 8\n"
    "    push %r12\n"
    ".cfi_adjust_cfa_offset 8\n"
    "    push %r13\n"
    ".cfi_adjust_cfa_offset 8\n"
    "    mov %rdx, %r12\n"
    "    mov %rcx, %r13\n"
    "    mov $0x202, %edx\n"
    "    mov $0xad7, %ebx\n" /* CF PF AF ZF SF OF, bit 1, IF */
    "    test %r13, %r13\n"
    "    cmovnz %rbx, %rdx\n"
    "    push %rdx\n"
    ".cfi_adjust_cfa_offset 8\n"
    "    popf\n"
    ".cfi_adjust_cfa_offset -8\n"
    /* From here to the checks nothing changes the flags. */
    "    mov %edi, %eax\n"
    "    mov %esi, %ecx\n"
    "    movabs $0x1111111111111111, %r8\n"
    "    movabs $0x2222222222222222, %r9\n"
    "    movabs $0x3333333333333333, %r10\n"
    "    movabs $0x4444444444444444, %r11\n"
    "    movabs $0x5555555555555555, %rsi\n"
    "    movabs $0x7777777777777777, %rbp\n"
    "    mov %rsi, -8(%rsp)\n"
    "    mov %rsi, -64(%rsp)\n"
    "    mov %rsi, -128(%rsp)\n"
    "    movabs $0x6666666666666666, %rdi\n"
    ".globl cpuid_site\n"
    "cpuid_site:\n"
    "    cpuid\n"
    "    mov %eax, 0(%r12)\n"
    "    mov %ebx, 4(%r12)\n"
    "    mov %ecx, 8(%r12)\n"
    "    mov %edx, 12(%r12)\n"
    "    setc 16(%r12)\n"
    "    setz 17(%r12)\n"
    "    sets 18(%r12)\n"
    "    seto 19(%r12)\n"
    "    setp 20(%r12)\n"
    "    xor %eax, %eax\n"
    "    movabs $0x5555555555555555, %rbx\n"
    "    cmp %rbx, -8(%rsp)\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    cmp %rbx, -64(%rsp)\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    cmp %rbx, -128(%rsp)\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    cmp %rbx, %rsi\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    movabs $0x1111111111111111, %rbx\n"
    "    cmp %rbx, %r8\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    movabs $0x2222222222222222, %rbx\n"
    "    cmp %rbx, %r9\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    movabs $0x3333333333333333, %rbx\n"
    "    cmp %rbx, %r10\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    movabs $0x4444444444444444, %rbx\n"
    "    cmp %rbx, %r11\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    movabs $0x6666666666666666, %rbx\n"
    "    cmp %rbx, %rdi\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    movabs $0x7777777777777777, %rbx\n"
    "    cmp %rbx, %rbp\n"
    "    setne %cl\n"
    "    add %cl, %al\n"
    "    mov %rax, 24(%r12)\n"
    "    pop %r13\n"
    ".cfi_adjust_cfa_offset -8\n"
    "    pop %r12\n"
    ".cfi_adjust_cfa_offset -8\n"
    "    pop %rbp\n"
    ".cfi_adjust_cfa_offset -8\n"
    "    pop %rbx\n"
    ".cfi_adjust_cfa_offset -8\n"
    "    ret\n"
    ".cfi_endproc\n"
    ".size cpuid_probe, .-cpuid_probe\n");

/* cpuid_run(leaf, subleaf, out): `mov %r8,%r9; mov %r9,%r11` (3 bytes
 * each) before the `cpuid`, 150 bytes of code on either side. */
void cpuid_run(uint32_t leaf, uint32_t sub, uint32_t out[4]);
/* cpuid_landed(leaf, subleaf, out, jump): the same, but with `jump` a
 * `jnz` lands on the run's second instruction. */
void cpuid_landed(uint32_t leaf, uint32_t sub, uint32_t out[4], uint64_t jump);
/* cpuid_indirect(leaf, subleaf, out): as cpuid_run, in a function that
 * also has an indirect jump (which could land anywhere in it). */
void cpuid_indirect(uint32_t leaf, uint32_t sub, uint32_t out[4]);
/* cpuid_rip(leaf, subleaf, out): a RIP-relative store right before the
 * `cpuid` (`movl $0x11223344, rip_word(%rip)`, 10 bytes): moved to the
 * stub, it must still store to rip_word. */
void cpuid_rip(uint32_t leaf, uint32_t sub, uint32_t out[4]);
uint32_t rip_word;
/* getpid_run(): getpid by a `syscall` with the same kind of run before
 * it (the fourth form serves system calls too). */
long getpid_run(void);
extern const unsigned char run_site[], landed_site[], getpid_site[], indirect_site[], rip_site[];
#define FILLER ".rept 50\n    lea 0(%r11), %r11\n.endr\n"
/* A function's start (saving RBX, which `cpuid` writes) and end. */
#define BEGIN(name)                                                      \
    ".globl " #name "\n.type " #name ",@function\n.p2align 4\n" #name \
    ":\n.cfi_startproc\n    push %rbx\n.cfi_adjust_cfa_offset 8\n"
#define END(name) ".cfi_endproc\n.size " #name ", .-" #name "\n"
#define STORE                    \
    "    mov %eax, 0(%r8)\n"     \
    "    mov %ebx, 4(%r8)\n"     \
    "    mov %ecx, 8(%r8)\n"     \
    "    mov %edx, 12(%r8)\n"    \
    "    pop %rbx\n"             \
    ".cfi_adjust_cfa_offset -8\n" \
    "    ret\n"
__asm__(
    ".text\n"
    BEGIN(cpuid_run)
    "    mov %rdx, %r8\n"
    "    mov %edi, %eax\n"
    "    mov %esi, %ecx\n"
    FILLER
    "    mov %r8, %r9\n"
    "    mov %r9, %r11\n"
    ".globl run_site\n"
    "run_site:\n"
    "    cpuid\n"
    FILLER
    STORE
    END(cpuid_run)
    BEGIN(cpuid_landed)
    "    mov %rcx, %r10\n"
    "    mov %rdx, %r8\n"
    "    mov %edi, %eax\n"
    "    mov %esi, %ecx\n"
    FILLER
    "    test %r10, %r10\n"
    "    jnz 1f\n"
    "    mov %r8, %r9\n"
    "1:\n"
    "    mov %r9, %r11\n"
    ".globl landed_site\n"
    "landed_site:\n"
    "    cpuid\n"
    FILLER
    STORE
    END(cpuid_landed)
    BEGIN(cpuid_indirect)
    "    mov %rdx, %r8\n"
    "    lea 1f(%rip), %rax\n"
    "    jmp *%rax\n"
    "1:\n"
    "    mov %edi, %eax\n"
    "    mov %esi, %ecx\n"
    FILLER
    "    mov %r8, %r9\n"
    "    mov %r9, %r11\n"
    ".globl indirect_site\n"
    "indirect_site:\n"
    "    cpuid\n"
    FILLER
    STORE
    END(cpuid_indirect)
    BEGIN(cpuid_rip)
    "    mov %rdx, %r8\n"
    "    mov %edi, %eax\n"
    "    mov %esi, %ecx\n"
    FILLER
    "    movl $0x11223344, rip_word(%rip)\n"
    ".globl rip_site\n"
    "rip_site:\n"
    "    cpuid\n"
    FILLER
    STORE
    END(cpuid_rip)
    ".globl getpid_run\n"
    ".type getpid_run,@function\n"
    ".p2align 4\n"
    "getpid_run:\n"
    ".cfi_startproc\n"
    "    mov $39, %edi\n"
    FILLER
    "    mov %edi, %eax\n"
    "    mov %r8, %r9\n"
    ".globl getpid_site\n"
    "getpid_site:\n"
    "    syscall\n"
    FILLER
    "    ret\n"
    ".cfi_endproc\n"
    ".size getpid_run, .-getpid_run\n");

static int forms(void) {
    static const uint32_t leaves[][2] = {{0, 0}, {1, 0}, {7, 0}, {0xd, 1}, {4, 2}, {0x80000001u, 0}, {0x12345678u, 0}};
    int differ = 0;
    for (unsigned i = 0; i < sizeof leaves / sizeof leaves[0]; i++) {
        struct probe_out o;
        uint32_t a[4], b[4], c[4], d[4], e[4];
        cpuid_probe(leaves[i][0], leaves[i][1], &o, 0);
        cpuid_run(leaves[i][0], leaves[i][1], a);
        cpuid_landed(leaves[i][0], leaves[i][1], b, 0);
        cpuid_landed(leaves[i][0], leaves[i][1], c, 1);
        cpuid_indirect(leaves[i][0], leaves[i][1], d);
        rip_word = 0;
        cpuid_rip(leaves[i][0], leaves[i][1], e);
        differ += rip_word != 0x11223344;
        /* (Leaf 1's and 0xb's APIC IDs move with the CPU natively.) */
        if (leaves[i][0] == 1)
            o.r[1] &= 0xffffff, a[1] &= 0xffffff, b[1] &= 0xffffff, c[1] &= 0xffffff, d[1] &= 0xffffff,
            e[1] &= 0xffffff;
        differ += memcmp(o.r, a, 16) != 0;
        differ += memcmp(o.r, b, 16) != 0;
        differ += memcmp(o.r, c, 16) != 0;
        differ += memcmp(o.r, d, 16) != 0;
        differ += memcmp(o.r, e, 16) != 0;
    }
    printf("forms: %d differ\n", differ);
    printf("run: %02x %02x\n", code_byte(run_site, 0), code_byte(run_site, -6));
    printf("landed: %02x %02x\n", code_byte(landed_site, 0), code_byte(landed_site, -6));
    printf("indirect: %02x %02x\n", code_byte(indirect_site, 0), code_byte(indirect_site, -6));
    printf("rip: %02x %02x\n", code_byte(rip_site, 0), code_byte(rip_site, -10));
    int same = 0;
    for (int i = 0; i < 10; i++)
        same += getpid_run() == getpid();
    printf("getpid: %d of 10 right, run: %02x %02x\n", same, code_byte(getpid_site, 0), code_byte(getpid_site, -5));
    return 0;
}

static int bad;
static int print_values = 1;

static void probe(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    for (int set = 0; set < 2; set++) {
        struct probe_out o;
        memset(&o, 0xee, sizeof o);
        memset(o.flags, 0, sizeof o.flags);
        cpuid_probe(leaf, sub, &o, set);
        for (int i = 0; i < 5; i++)
            bad += o.flags[i] != set;
        bad += o.bad != 0;
        /* (The two answers are not compared: natively, the APIC IDs of
         * leaves 1 and 0xb change when the process moves to another CPU.) */
        memcpy(r, o.r, 16);
    }
}

static void sweep_leaf(uint32_t leaf) {
    static const uint32_t many[] = {4, 7, 0xb, 0xd, 0xf, 0x10, 0x12, 0x14, 0x17, 0x18, 0x1d, 0x1f, 0x20, 0x24};
    uint32_t subs = 2;
    for (unsigned i = 0; i < sizeof many / sizeof many[0]; i++)
        if (many[i] == leaf)
            subs = 10;
    for (uint32_t sub = 0; sub < subs; sub++) {
        uint32_t r[4];
        probe(leaf, sub, r);
        if (print_values)
            printf("%x.%x: %08x %08x %08x %08x\n", leaf, sub, r[0], r[1], r[2], r[3]);
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "forms") == 0)
        return forms();
    print_values = !(argc > 1 && strcmp(argv[1], "checks") == 0);
    uint32_t r[4];
    probe(0, 0, r);
    uint32_t max = r[0] < 0x40 ? r[0] : 0x40;
    for (uint32_t leaf = 0; leaf <= max + 2; leaf++)
        sweep_leaf(leaf);
    probe(0x80000000u, 0, r);
    uint32_t ext = r[0] >= 0x80000000u && r[0] < 0x80000040u ? r[0] : 0x80000000u;
    for (uint32_t leaf = 0x80000000u; leaf <= ext + 2; leaf++)
        sweep_leaf(leaf);
    for (uint32_t leaf = 0x40000000u; leaf <= 0x40000002u; leaf++)
        sweep_leaf(leaf);
    sweep_leaf(0x12345678u);
    sweep_leaf(0xffffffffu);
    printf("checks: %d bad\n", bad);
    if (print_values)
        printf("site: %02x %02x\n", code_byte(cpuid_site, 0), code_byte(cpuid_site, -10));
    return 0;
}
