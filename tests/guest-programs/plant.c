#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
/* "plant": behind the runtime's back, writes page-table entries through
   the physmap (guest RAM at virtual 0x7f0000000000) that map the virtual
   address X onto a data frame, and reads X so that KVM shadows them.
   "map": maps X the ordinary way (mmap), and grows the heap (brk).
   "churn": the same after mapping, touching and unmapping 16 MiB at X six
   times (more page-table writes than the runtime journals).
   "probe": reads X, which the snapshot never mapped: it must fault. */
#define PHYS 0x7f0000000000ull
#define X 0x600000000000ull
static sigjmp_buf env;
/* A page of data the snapshot maps read-write. */
static volatile uint64_t page[512] __attribute__((aligned(4096))) = {42};
static void on_segv(int sig) { (void)sig; siglongjmp(env, 1); }
static volatile uint64_t *table(uint64_t gpa) { return (volatile uint64_t *)(PHYS + gpa); }
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "plant")) {
        /* Tables in ordinary frames near the end of the general area, and
           a data frame holding a marker. */
        uint64_t pdpt = 0x2000000, pd = 0x2001000, pt = 0x2002000, data = 0x2003000;
        memset((void *)(PHYS + pdpt), 0, 4096 * 3);
        *(volatile uint64_t *)(PHYS + data) = 0x1122334455667788ull;
        uint64_t flags = 0x67; /* P RW US A D */
        table(pt)[(X >> 12) & 511] = data | flags;
        table(pd)[(X >> 21) & 511] = pt | 0x27;
        table(pdpt)[(X >> 30) & 511] = pd | 0x27;
        table(0x100000)[(X >> 39) & 511] = pdpt | 0x27; /* the boot PML4 */
        printf("planted %llx\n", (unsigned long long)*(volatile uint64_t *)X);
        return 0;
    }
    if (argc > 1 && (!strcmp(argv[1], "map") || !strcmp(argv[1], "churn"))) {
        int rounds = !strcmp(argv[1], "churn") ? 6 : 0;
        for (int r = 0; r < rounds; r++) {
            size_t len = 16 << 20;
            volatile uint8_t *p = mmap((void *)X, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (p == MAP_FAILED) { printf("mmap failed\n"); return 1; }
            for (size_t i = 0; i < len; i += 4096) p[i] = 1;
            munmap((void *)p, len);
        }
        volatile uint64_t *p = mmap((void *)X, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (p == MAP_FAILED) { printf("mmap failed\n"); return 1; }
        *p = 0x1122334455667788ull;
        /* musl's sbrk refuses to grow: ask brk directly. */
        char *b = (char *)syscall(SYS_brk, 0);
        if ((char *)syscall(SYS_brk, b + (1 << 20)) != b + (1 << 20)) { printf("brk failed\n"); return 1; }
        memset(b, 1, 1 << 20);
        printf("mapped %llx\n", (unsigned long long)*p);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "narrow")) {
        /* Take access away from a mapping the snapshot has: read-only,
           then gone. */
        mprotect((void *)page, 4096, PROT_READ);
        munmap((void *)page, 4096);
        printf("narrowed\n");
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "use")) {
        /* The snapshot's mapping must be whole again: read and write it. */
        page[1] = page[0] + 1;
        printf("page %llu %llu\n", (unsigned long long)page[0], (unsigned long long)page[1]);
        return 0;
    }
    signal(SIGSEGV, on_segv);
    if (sigsetjmp(env, 1) == 0) {
        uint64_t v = *(volatile uint64_t *)X;
        printf("mapped %llx\n", (unsigned long long)v);
    } else {
        printf("unmapped\n");
    }
    return 0;
}
