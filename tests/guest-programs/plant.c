#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
/* "plant": behind the runtime's back, writes page-table entries through
   the physmap (guest RAM at virtual 0x7f0000000000) that map the virtual
   address X onto a data frame, and reads X so that KVM shadows them.
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
