/* Takes ring 0 (as ring0.c does, through the #UD gate in guest RAM) and
 * leaves every piece of MSR state behind that it can, then reports what a
 * run sees:
 *   msrs dirty [LO HI]
 *       arms KVM's paravirtual features (steal time, kvmclock, the old
 *       kvmclock, async page faults, PV EOI) at two pages of this
 *       program's own data, then writes a changed value into every MSR of
 *       the swept ranges (within [LO, HI)) that reads at ring 0. Prints
 *       which paravirtual writes were refused and which MSRs took the
 *       change.
 *   msrs get
 *       prints the GPAs of the two pages, whether they still hold the
 *       pattern they were loaded with, and the value of every MSR of the
 *       swept ranges that reads at ring 0.
 * A run from the snapshot after a "dirty" run must print exactly what a
 * run from a fresh clone prints. Faults at ring 0 are caught by a #GP gate
 * of the program's own (rdmsr/wrmsr are 2 bytes: the handler skips them).
 * Addresses are those of hvsandbox-abi (checked by tests/hostile.rs). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PHYS_BASE 0x7f0000000000UL
#define IDT 0x2000UL
#define UD_VECTOR 6
#define GP_VECTOR 13

/* One ring-0 operation: 1 = rdmsr, 2 = wrmsr. */
struct op {
    uint32_t kind;
    uint32_t faulted;
    uint32_t index;
    uint32_t pad;
    uint64_t value;
};

struct op ops[512];
uint32_t nops;
uint64_t cr3;

/* Two pages of data the paravirtual features are pointed at. */
uint8_t pages[2][4096] __attribute__((aligned(4096))) = {{1}, {2}};

extern void ring0_entry(void);
extern void gp_entry(void);
__asm__(
    ".text\n"
    ".global ring0_entry\n"
    "ring0_entry:\n"
    "  push %rax\n push %rcx\n push %rdx\n push %rsi\n push %rdi\n"
    "  mov %cr3, %rax\n mov %rax, cr3(%rip)\n"
    "  lea ops(%rip), %rsi\n mov nops(%rip), %edi\n"
    "1: test %edi, %edi\n jz 4f\n"
    "  movl $0, 4(%rsi)\n mov 8(%rsi), %ecx\n"
    "  cmpl $1, (%rsi)\n jne 2f\n"
    "  xor %eax, %eax\n xor %edx, %edx\n"
    "  rdmsr\n"
    "  shl $32, %rdx\n or %rdx, %rax\n mov %rax, 16(%rsi)\n jmp 3f\n"
    "2: mov 16(%rsi), %rax\n mov %rax, %rdx\n shr $32, %rdx\n"
    "  wrmsr\n"
    "3: add $24, %rsi\n dec %edi\n jmp 1b\n"
    "4: pop %rdi\n pop %rsi\n pop %rdx\n pop %rcx\n pop %rax\n"
    "  addq $2, (%rsp)\n" /* past the ud2 */
    "  iretq\n"
    ".global gp_entry\n"
    "gp_entry:\n"
    "  add $8, %rsp\n"      /* the error code */
    "  movl $1, 4(%rsi)\n"  /* the current op faulted */
    "  addq $2, (%rsp)\n"   /* past the rdmsr/wrmsr */
    "  iretq\n");

static void set_gate(int vector, void (*handler)(void)) {
    volatile uint8_t *gate = (volatile uint8_t *)(PHYS_BASE + IDT + 16 * vector);
    volatile uint8_t *ud = (volatile uint8_t *)(PHYS_BASE + IDT + 16 * UD_VECTOR);
    uint64_t target = (uint64_t)handler;
    for (int i = 0; i < 16; i++) gate[i] = ud[i]; /* selector, type, DPL, IST 0 */
    gate[0] = target & 0xff;
    gate[1] = (target >> 8) & 0xff;
    for (int i = 0; i < 2; i++) gate[6 + i] = (target >> (16 + 8 * i)) & 0xff;
    for (int i = 0; i < 4; i++) gate[8 + i] = (target >> (32 + 8 * i)) & 0xff;
}

static void ring0(void) {
    uint8_t saved_ud[16], saved_gp[16];
    volatile uint8_t *ud = (volatile uint8_t *)(PHYS_BASE + IDT + 16 * UD_VECTOR);
    volatile uint8_t *gp = (volatile uint8_t *)(PHYS_BASE + IDT + 16 * GP_VECTOR);
    for (int i = 0; i < 16; i++) saved_ud[i] = ud[i], saved_gp[i] = gp[i];
    set_gate(GP_VECTOR, gp_entry);
    set_gate(UD_VECTOR, ring0_entry);
    __asm__ volatile("ud2" ::: "memory");
    for (int i = 0; i < 16; i++) ud[i] = saved_ud[i], gp[i] = saved_gp[i];
}

/* The guest-physical address of `va`, by walking the page tables. */
static uint64_t gpa_of(const void *va) {
    uint64_t v = (uint64_t)va, table = cr3 & 0x000ffffffffff000UL;
    for (int level = 3; level >= 0; level--) {
        uint64_t e = *(volatile uint64_t *)(PHYS_BASE + table + 8 * ((v >> (12 + 9 * level)) & 511));
        if (!(e & 1)) return 0;
        uint64_t addr = e & 0x000ffffffffff000UL;
        if (level > 0 && (e & 0x80)) return (addr & ~((1UL << (12 + 9 * level)) - 1)) + (v & ((1UL << (12 + 9 * level)) - 1));
        table = addr;
    }
    return table + (v & 0xfff);
}

/* The MSR ranges swept: the architectural ones, AMD's and Intel's
 * extended ones, and the hypervisor ranges (Hyper-V's, KVM's). IA32_TSC
 * (0x10) is left out: it counts on its own. */
static const uint32_t ranges[][2] = {
    {0, 0x2000}, {0xc0000000, 0xc0002000}, {0xc0010000, 0xc0012000}, {0x40000000, 0x40000100}, {0x4b564d00, 0x4b564e00},
};
#define MAX_READABLE 4096
static uint32_t list[MAX_READABLE];
static uint64_t values[MAX_READABLE];
static unsigned n;

/* Fills list/values with every MSR of the ranges (within [lo, hi)) that
 * rdmsr reads at ring 0. */
static void sweep(uint64_t lo, uint64_t hi) {
    n = 0;
    for (unsigned r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        uint64_t from = ranges[r][0] > lo ? ranges[r][0] : lo, to = ranges[r][1] < hi ? ranges[r][1] : hi;
        for (uint64_t base = from; base < to; base += 512) {
            nops = 0;
            for (uint64_t i = base; i < base + 512 && i < to; i++)
                if (i != 0x10) ops[nops++] = (struct op){.kind = 1, .index = (uint32_t)i};
            ring0();
            for (unsigned k = 0; k < nops; k++)
                if (!ops[k].faulted && n < MAX_READABLE) list[n] = ops[k].index, values[n++] = ops[k].value;
        }
    }
}

/* Not written by "dirty": changing these would end this run at once
 * (system calls, its TLS and the runtime's, the paging mode). */
static int keep(uint32_t i) {
    return i == 0xc0000080 || i == 0xc0000081 || i == 0xc0000082 || i == 0xc0000084 || i == 0xc0000100 ||
           i == 0xc0000101;
}

static int intact(int p) {
    for (int i = 0; i < 4096; i++)
        if (pages[p][i] != (i == 0 ? p + 1 : 0)) return 0;
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    nops = 0;
    ring0(); /* CR3 only */
    uint64_t gpa[2] = {gpa_of(pages[0]), gpa_of(pages[1])};
    if (!strcmp(argv[1], "get")) {
        /* The TSC as ring 0 reads it (through KVM's offset) against the
         * TSC this program reads: a run that moved the offset shows. */
        nops = 1;
        ops[0] = (struct op){.kind = 1, .index = 0x10};
        uint64_t tsc = __builtin_ia32_rdtsc();
        ring0();
        uint64_t diff = ops[0].value > tsc ? ops[0].value - tsc : tsc - ops[0].value;
        printf("pages=%#llx,%#llx intact=%d,%d tsc_offset_unchanged=%d\n", (unsigned long long)gpa[0],
               (unsigned long long)gpa[1], intact(0), intact(1), diff < (1UL << 36));
        sweep(0, ~0UL);
        for (unsigned i = 0; i < n; i++) printf("%#x=%#llx\n", list[i], (unsigned long long)values[i]);
        return 0;
    }
    if (strcmp(argv[1], "dirty")) return 2;
    uint64_t lo = argc > 3 ? strtoull(argv[2], 0, 0) : 0, hi = argc > 3 ? strtoull(argv[3], 0, 0) : ~0UL;
    /* The paravirtual features, each pointed at one of the pages. */
    static const struct { uint32_t index; int page; uint64_t flags; const char *name; } pv[] = {
        {0x4b564d03, 0, 1, "steal_time"}, {0x4b564d01, 1, 1, "system_time_new"}, {0x12, 1, 1, "system_time"},
        {0x11, 1, 0, "wall_clock"},       {0x4b564d00, 1, 0, "wall_clock_new"},  {0x4b564d02, 0, 1, "async_pf"},
        {0x4b564d04, 0, 1, "pv_eoi"},     {0x4b564d07, 0, 0, "async_pf_int"},
    };
    nops = 0;
    for (unsigned i = 0; i < sizeof pv / sizeof pv[0]; i++)
        ops[nops++] = (struct op){.kind = 2, .index = pv[i].index, .value = gpa[pv[i].page] + 0x800 + pv[i].flags};
    ring0();
    printf("pages=%#llx,%#llx\n", (unsigned long long)gpa[0], (unsigned long long)gpa[1]);
    for (unsigned i = 0; i < sizeof pv / sizeof pv[0]; i++) printf("%s=%s\n", pv[i].name, ops[i].faulted ? "refused" : "armed");
    fflush(stdout); /* an exit to the host and back: armed features write now */
    printf("after an exit: pages intact=%d,%d\n", intact(0), intact(1));
    /* Every other readable MSR in [lo, hi): the first of a few changes
     * that sticks. */
    sweep(lo, hi);
    static const uint64_t flips[] = {1, 1UL << 12, 1UL << 3, 1UL << 40, 0x1000};
    for (unsigned f = 0; f < sizeof flips / sizeof flips[0]; f++) {
        for (unsigned i = 0; i < n; i += 512) {
            nops = 0;
            for (unsigned k = i; k < n && k < i + 512; k++)
                if (!keep(list[k])) ops[nops++] = (struct op){.kind = 2, .index = list[k], .value = values[k] ^ flips[f]};
            ring0();
        }
    }
    /* Read them again. */
    static uint64_t now[MAX_READABLE];
    static int gone[MAX_READABLE];
    for (unsigned i = 0; i < n; i += 512) {
        nops = 0;
        for (unsigned k = i; k < n && k < i + 512; k++) ops[nops++] = (struct op){.kind = 1, .index = list[k]};
        ring0();
        for (unsigned k = 0; k < nops; k++) now[i + k] = ops[k].value, gone[i + k] = ops[k].faulted;
    }
    printf("changed:");
    for (unsigned i = 0; i < n; i++)
        if (!gone[i] && now[i] != values[i]) printf(" %#x", list[i]);
    printf("\n");
    /* Last, the TSC itself: 2^40 cycles ahead. */
    if (lo <= 0x10 && hi > 0x10) {
        nops = 1;
        ops[0] = (struct op){.kind = 1, .index = 0x10};
        ring0();
        ops[0] = (struct op){.kind = 2, .index = 0x10, .value = ops[0].value + (1UL << 40)};
        ring0();
        printf("tsc=%s\n", ops[0].faulted ? "refused" : "written");
    }
    return 0;
}
