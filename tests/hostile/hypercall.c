/* Forges hypercalls straight to the host from CPL3: fills the argument
 * block (six u64 args, then u64 ret, at HCALL_VA) and stores a number to
 * the doorbell, as the runtime does. argv[1]:
 *   loop N   N (default 10000) requests the host must answer with an
 *            -errno or a no-op, cycling through bad handles, wild buffers
 *            behind bad handles, over-long names, buffers overlapping the
 *            argument block; prints how many answered what; exits 0
 *   one NAME a single malformed request that must end the run (see the
 *            table below); exits 99 if the host let it through. The fs-*
 *            requests expect a directory with a file f.txt mounted first
 *   frames   reads f.txt (as for fs-*) into the boot-information frame
 *            with FS_READ_FRAMES (the runtime copied that page at its
 *            start) and prints what the host answered and the frame holds
 * The addresses are those of hvsandbox-abi (checked by tests/hostile.rs). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PHYS_BASE 0x7f0000000000UL
#define HCALL_VA (PHYS_BASE + 0x4000UL)
#define RING0_STACK_VA (PHYS_BASE + 0x5000UL)
#define BOOT_INFO_VA (PHYS_BASE + 0xa000UL)
#define DOORBELL_VA 0x7f1000000000UL
#define MAX_LEN (1UL << 20)

enum { WRITE = 1, READ, EXIT, FAULT, PANIC, SLEEP, LOG, PROGRAM_FAULT, FS_LOOKUP, FS_READ, FS_READDIR, FS_READLINK,
       FS_STAT, FILE_OUT, EXEC_FAILED, FS_READ_FRAMES = 22 };
#define BOOT_INFO_GPA 0xa000UL
/* A frame list, in the argument block's page past the name and stat. */
#define LIST_VA (HCALL_VA + 2048)

static volatile uint64_t *const hc = (volatile uint64_t *)HCALL_VA;
static volatile uint64_t *const bell = (volatile uint64_t *)DOORBELL_VA;

static int64_t call(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5) {
    hc[0] = a0; hc[1] = a1; hc[2] = a2; hc[3] = a3; hc[4] = a4; hc[5] = a5;
    hc[6] = 0x5a5a5a5a5a5a5a5aUL;
    *bell = nr;
    return (int64_t)hc[6];
}

/* A name in the argument block's page, past the block itself. */
#define NAME_VA (HCALL_VA + 512)
#define STAT_VA (HCALL_VA + 1024)

/* Looks up "f.txt" in the directory mounted first (handle 1). */
static uint64_t lookup(void) {
    memcpy((void *)NAME_VA, "f.txt", 5);
    int64_t h = call(FS_LOOKUP, 1, NAME_VA, 5, STAT_VA, 0, 0);
    printf("lookup f.txt=%lld\n", (long long)h);
    fflush(stdout);
    return h;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    uint64_t mem = ((volatile uint64_t *)BOOT_INFO_VA)[2];
    const uint64_t wild = 0xdead00000000UL, ram_end = PHYS_BASE + mem;
    if (!strcmp(argv[1], "loop")) {
        long n = argc > 2 ? atol(argv[2]) : 10000;
        long zero = 0, ebadf = 0, enametoolong = 0, other = 0;
        for (long i = 0; i < n; i++) {
            int64_t r;
            switch (i % 12) {
            case 0: r = call(FS_STAT, 999, HCALL_VA, 0, 0, 0, 0); break;
            case 1: r = call(FS_STAT, UINT64_MAX, wild, 0, 0, 0, 0); break;
            case 2: r = call(FS_READ, 0, UINT64_MAX, wild, MAX_LEN, 0, 0); break;
            case 3: r = call(FS_READDIR, 12345, 0, ram_end - 8, MAX_LEN, 0, 0); break;
            case 4: r = call(FS_READLINK, 7, HCALL_VA, 56, 0, 0, 0); break;
            case 5: r = call(FS_LOOKUP, 1, wild, 1 << 30, wild, 0, 0); break;
            case 6: r = call(FS_LOOKUP, UINT64_MAX, HCALL_VA, 8, HCALL_VA, 0, 0); break;
            case 7: r = call(FILE_OUT, wild, UINT64_MAX, HCALL_VA, 56, 0, 0); break;
            case 8: r = call(LOG, wild, wild, UINT64_MAX, 0, 0, 0); break;
            case 9: r = call(SLEEP, 0, wild, 0, 0, 0, 0); break;
            case 10: r = call(WRITE, 1, HCALL_VA, 0, 0, 0, 0); break;
            default: r = call(READ, 0, HCALL_VA, 56, 0, 0, 0); break; /* no stdin: 0 */
            }
            if (r == 0) zero++;
            else if (r == -9) ebadf++;
            else if (r == -36) enametoolong++;
            else other++;
        }
        printf("calls=%ld zero=%ld ebadf=%ld enametoolong=%ld other=%ld\n", n, zero, ebadf, enametoolong, other);
        return 0;
    }
    if (!strcmp(argv[1], "frames")) {
        uint64_t *list = (uint64_t *)LIST_VA;
        list[0] = BOOT_INFO_GPA;
        int64_t bad = call(FS_READ_FRAMES, 999, 0, LIST_VA, 1, 0, 0);
        uint64_t h = lookup();
        int64_t read = call(FS_READ_FRAMES, h, 0, LIST_VA, 1, 0, 0);
        int64_t past = call(FS_READ_FRAMES, h, 100, LIST_VA, 1, 0, 0);
        printf("bad handle=%lld read=%lld past the end=%lld: %.9s", (long long)bad, (long long)read, (long long)past,
               (const char *)BOOT_INFO_VA);
        return 0;
    }
    if (strcmp(argv[1], "one") || argc < 3) return 2;
    const char *w = argv[2];
    printf("forging %s\n", w);
    fflush(stdout);
    if (!strcmp(w, "nr-0")) call(0, 0, 0, 0, 0, 0, 0);
    else if (!strcmp(w, "nr-max")) call(UINT64_MAX, 0, 0, 0, 0, 0, 0);
    else if (!strcmp(w, "nr-1000")) call(1000, 1, 2, 3, 4, 5, 6);
    else if (!strcmp(w, "write-fd-3")) call(WRITE, 3, HCALL_VA, 8, 0, 0, 0);
    else if (!strcmp(w, "write-past-ram")) call(WRITE, 1, ram_end - 8, 16, 0, 0, 0);
    else if (!strcmp(w, "write-wrap")) call(WRITE, 1, UINT64_MAX - 8, 100, 0, 0, 0);
    else if (!strcmp(w, "write-too-long")) call(WRITE, 1, HCALL_VA, MAX_LEN + 1, 0, 0, 0);
    else if (!strcmp(w, "write-len-max")) call(WRITE, 2, HCALL_VA, UINT64_MAX, 0, 0, 0);
    else if (!strcmp(w, "write-user-va")) call(WRITE, 1, (uint64_t)(uintptr_t)w, 4, 0, 0, 0);
    else if (!strcmp(w, "read-wild")) call(READ, 0, 0x1000, 16, 0, 0, 0);
    else if (!strcmp(w, "fs-read-wild")) call(FS_READ, lookup(), 0, wild, 16, 0, 0);
    else if (!strcmp(w, "fs-read-too-long")) call(FS_READ, lookup(), 0, HCALL_VA, MAX_LEN + 1, 0, 0);
    else if (!strcmp(w, "fs-read-frames-wild-list")) call(FS_READ_FRAMES, lookup(), 0, wild, 1, 0, 0);
    else if (!strcmp(w, "fs-read-frames-too-many")) call(FS_READ_FRAMES, lookup(), 0, LIST_VA, 257, 0, 0);
    else if (!strcmp(w, "fs-read-frames-unaligned")) {
        ((uint64_t *)LIST_VA)[0] = BOOT_INFO_GPA + 1;
        call(FS_READ_FRAMES, lookup(), 0, LIST_VA, 1, 0, 0);
    } else if (!strcmp(w, "fs-read-frames-past-ram")) {
        ((uint64_t *)LIST_VA)[0] = mem;
        call(FS_READ_FRAMES, lookup(), 0, LIST_VA, 1, 0, 0);
    }
    else if (!strcmp(w, "fs-lookup-wild-stat")) {
        memcpy((void *)NAME_VA, "f.txt", 5);
        call(FS_LOOKUP, 1, NAME_VA, 5, wild, 0, 0);
    }
    else if (!strcmp(w, "file-out-wild")) call(FILE_OUT, wild, 8, HCALL_VA, 8, 0, 0644);
    else if (!strcmp(w, "program-fault-vector")) call(PROGRAM_FAULT, 99, 0, 0, 0, 0, 0);
    else if (!strcmp(w, "forged-fault")) call(FAULT, 14, 0, 0, 0, 0, 0);
    else if (!strcmp(w, "forged-fault-ring0-stack")) {
        /* RSP inside the ring-0 stack, as a real exception leaves it; only
         * the code segment (CPL3) gives it away. */
        __asm__ volatile("mov %0, %%rsp; movq $4, (%1); 1: jmp 1b" ::"r"(RING0_STACK_VA + 0x2000), "r"(DOORBELL_VA)
                         : "memory");
    } else if (!strcmp(w, "panic-wild")) call(PANIC, 0, wild, UINT64_MAX, 0, 0, 0);
    else if (!strcmp(w, "bell-4-bytes")) *(volatile uint32_t *)DOORBELL_VA = WRITE;
    else if (!strcmp(w, "bell-1-byte")) *(volatile uint8_t *)DOORBELL_VA = WRITE;
    else if (!strcmp(w, "bell-16-bytes")) __asm__ volatile("pxor %%xmm0, %%xmm0; movdqu %%xmm0, (%0)" ::"r"(DOORBELL_VA) : "xmm0", "memory");
    else if (!strcmp(w, "bell-32-bytes")) __asm__ volatile("vpxor %%ymm0, %%ymm0, %%ymm0; vmovdqu %%ymm0, (%0)" ::"r"(DOORBELL_VA) : "xmm0", "memory");
    else if (!strcmp(w, "bell-offset")) *(volatile uint64_t *)(DOORBELL_VA + 8) = LOG;
    else if (!strcmp(w, "bell-last-byte")) *(volatile uint64_t *)(DOORBELL_VA + 4095) = LOG; /* crosses the page */
    else if (!strcmp(w, "bell-read")) (void)*(volatile uint64_t *)DOORBELL_VA;
    else if (!strcmp(w, "bell-xchg")) {
        uint64_t v = LOG;
        __asm__ volatile("xchg %0, (%1)" : "+r"(v) : "r"(DOORBELL_VA) : "memory");
    } else if (!strcmp(w, "bell-rep-movs")) {
        static uint64_t src[64];
        for (int i = 0; i < 64; i++) src[i] = LOG;
        __asm__ volatile("rep movsq" ::"S"(src), "D"(DOORBELL_VA), "c"(64) : "memory");
    } else if (!strcmp(w, "bell-page-end")) *(volatile uint64_t *)(DOORBELL_VA + 4096) = LOG;
    else if (!strcmp(w, "exit-junk")) call(EXIT, 0x1234, 1000, 0, 0, 0, 0);
    else if (!strcmp(w, "exec-failed-wild")) call(EXEC_FAILED, 2, wild, UINT64_MAX, 0, 0, 0);
    else if (!strcmp(w, "sleep-forever")) call(SLEEP, UINT64_MAX, 0, 0, 0, 0, 0);
    else return 2;
    printf("the host let it through: ret=%lld\n", (long long)hc[6]);
    return 99;
}
