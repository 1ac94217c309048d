/* Writes garbage over the guest's own machinery through the physmap (all
 * of guest RAM is mapped at PHYS_BASE + gpa and reachable at CPL3), then
 * pulls a trigger. argv[1] is the target, argv[2] the trigger:
 *   syscall  getpid and write "after\n" with raw syscalls, then exit 0
 *   fault    ud2 (a program fault: SIGILL if the fault path still works)
 *   flush    mmap + munmap a page (the runtime's ring-0 TLB flush)
 *   spin     loop until the deadline (the host then salvages output)
 * The addresses are those of hvsandbox-abi (checked by tests/hostile.rs). */
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PHYS_BASE 0x7f0000000000UL
#define P(gpa) ((volatile uint8_t *)(PHYS_BASE + (gpa)))
#define GDT 0x1000UL
#define IDT 0x2000UL
#define TSS 0x3000UL
#define HCALL 0x4000UL
#define RING0_STACKS 0x5000UL /* ring-0 stack and the IST stack: 0x5000..0xa000 */
#define BOOT_INFO 0xa000UL
#define STATS 0xb000UL
#define PAGE_TABLES 0x100000UL
#define RUNTIME 0x200000UL
#define RUNTIME_HEAP_VA 0x7f8000000000UL

/* RuntimeHeader and the start of BootInfo. */
struct header { uint64_t magic; uint32_t abi, pad; uint64_t entry, syscall_entry, stubs, stride, stack_top, text_end, image_end; };
struct boot { uint64_t magic; uint32_t abi, flags; uint64_t mem_size; };

static void fill(volatile uint8_t *p, uint64_t len, const char *pattern) {
    size_t n = strlen(pattern);
    for (uint64_t i = 0; i < len; i++) p[i] = (uint8_t)pattern[i % n];
}

static long raw(long nr, long a, long b, long c) {
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *target = argv[1], *trigger = argv[2];
    struct header h = *(const struct header *)P(RUNTIME);
    uint64_t mem = ((const struct boot *)P(BOOT_INFO))->mem_size;
    uint64_t text = h.text_end - (PHYS_BASE + RUNTIME), image = h.image_end - (PHYS_BASE + RUNTIME);
    const char *junk = "\xa5\x5a\xff\x00\x13\x37\xde\xad";
    printf("mem=%lu runtime text=%#lx image=%#lx\n", (unsigned long)mem, (unsigned long)text, (unsigned long)image);
    fflush(stdout);

    if (!strcmp(target, "gdt")) fill(P(GDT), 4096, junk);
    else if (!strcmp(target, "idt")) fill(P(IDT), 4096, junk);
    else if (!strcmp(target, "idt-zero")) memset((void *)P(IDT), 0, 4096);
    else if (!strcmp(target, "tss")) fill(P(TSS), 4096, junk);
    else if (!strcmp(target, "ring0-stacks")) fill(P(RING0_STACKS), 0x5000, junk);
    else if (!strcmp(target, "hcall")) fill(P(HCALL), 4096, junk);
    else if (!strcmp(target, "boot-info")) fill(P(BOOT_INFO), 4096, junk);
    else if (!strcmp(target, "stats")) fill(P(STATS), 0x2000, junk);
    else if (!strcmp(target, "stats-out-buffers")) {
        /* Point the host at "output buffers" that end past guest RAM. */
        volatile uint64_t *stats = (volatile uint64_t *)P(STATS);
        volatile uint64_t *buf = (volatile uint64_t *)P(mem - 16);
        buf[0] = 65536; /* len */
        buf[1] = 0;     /* discard */
        stats[6] = mem - 16; /* out_buffers_gpa */
    } else if (!strcmp(target, "page-tables")) fill(P(PAGE_TABLES), 0x100000, junk);
    else if (!strcmp(target, "page-tables-zero")) memset((void *)P(PAGE_TABLES), 0, 0x100000);
    else if (!strcmp(target, "runtime-int3")) memset((void *)P(RUNTIME), 0xcc, text);
    else if (!strcmp(target, "runtime-jmp-self")) fill(P(RUNTIME), text, "\xeb\xfe");
    else if (!strcmp(target, "runtime-data")) fill(P(RUNTIME) + text, image - text, junk);
    else if (!strcmp(target, "runtime-heap")) fill((volatile uint8_t *)RUNTIME_HEAP_VA, 65536, junk);
    else if (!strcmp(target, "all-ram")) fill(P(0x1000), mem - 0x1000, junk);
    else return 2;

    if (!strcmp(trigger, "syscall")) {
        raw(SYS_getpid, 0, 0, 0);
        raw(SYS_write, 1, (long)"after\n", 6);
        raw(SYS_exit_group, 0, 0, 0);
    } else if (!strcmp(trigger, "fault")) {
        __asm__ volatile("ud2");
    } else if (!strcmp(trigger, "flush")) {
        volatile char *p = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) {
            p[0] = 1;
            munmap((void *)p, 4096);
        }
        raw(SYS_write, 1, (long)"after\n", 6);
    } else if (!strcmp(trigger, "spin")) {
        for (;;) __asm__ volatile("" ::: "memory");
    }
    raw(SYS_exit_group, 0, 0, 0);
    return 0;
}
