/* The heap break and page protections in runs from a snapshot (issue 20):
 * a snapshot point backs pages above the break ahead, and the end of a
 * run restores page tables without a TLB reload where that is safe. Each
 * mode prints what Linux gives, so the test compares with a native run.
 *   grow      grow the break, check new pages read zero, fill, shrink,
 *             grow again (zero again), report
 *   secret    grow, say whether the new pages are zero, then fill them
 *             (a later run from the same snapshot must see zero again)
 *   fork      grow and fill; a child sees the parent's heap, grows its
 *             own break past the parent's (zero), the parent keeps its own
 *   mapped    a mapping just above the break blocks growing into it; once
 *             unmapped the break grows there, zeroed
 *   relro     a writable page is written and made read-only (a write
 *             faults); the run ends so
 *   rodata    a read-only page is made writable and written; the run
 *             ends so */
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL

static uintptr_t brk_(uintptr_t to) { return (uintptr_t)syscall(SYS_brk, to); }
static uintptr_t up(uintptr_t a) { return (a + PAGE - 1) & ~(PAGE - 1); }

static int all(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

static sigjmp_buf jump;
static void on_segv(int sig) { siglongjmp(jump, 1); }

/* Whether writing v at p faults, found in this process (no fork, so the
 * run changes no page table but the protections). */
static int write_faults(volatile unsigned char *p, unsigned char v) {
    struct sigaction sa = {0};
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, 0);
    if (sigsetjmp(jump, 1)) return 1;
    *p = v;
    return 0;
}

static unsigned char page[PAGE] __attribute__((aligned(4096))) = {1};
static const unsigned char rodata[2 * PAGE] __attribute__((aligned(4096))) = {7};

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "grow";
    uintptr_t b0 = up(brk_(0));
    if (brk_(b0) != b0) {
        printf("brk to a page boundary failed\n");
        return 1;
    }
    if (!strcmp(mode, "grow")) {
        size_t n = 200 * 1024;
        if (brk_(b0 + n) != b0 + n) return printf("grow failed\n"), 1;
        unsigned char *p = (unsigned char *)b0;
        printf("new pages zero: %d\n", all(p, n, 0));
        memset(p, 0x5a, n);
        if (brk_(b0 + 2 * PAGE) != b0 + 2 * PAGE) return printf("shrink failed\n"), 1;
        if (brk_(b0 + n) != b0 + n) return printf("regrow failed\n"), 1;
        printf("kept below the shrink: %d\n", all(p, 2 * PAGE, 0x5a));
        printf("zero again above it: %d\n", all(p + 2 * PAGE, n - 2 * PAGE, 0));
        /* Far beyond any pages made ready ahead. */
        size_t big = 4 << 20;
        if (brk_(b0 + big) != b0 + big) return printf("big grow failed\n"), 1;
        printf("big grow zero: %d\n", all(p + n, big - n, 0));
        memset(p, 1, big);
        brk_(b0);
        printf("done\n");
    } else if (!strcmp(mode, "secret")) {
        size_t n = 160 * 1024;
        if (brk_(b0 + n) != b0 + n) return printf("grow failed\n"), 1;
        printf("heap zero: %d\n", all((unsigned char *)b0, n, 0));
        memset((void *)b0, 0x77, n);
        printf("filled\n");
    } else if (!strcmp(mode, "fork")) {
        size_t n = 64 * 1024;
        if (brk_(b0 + n) != b0 + n) return printf("grow failed\n"), 1;
        memset((void *)b0, 0x33, n);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            int seen = all((unsigned char *)b0, n, 0x33);
            memset((void *)b0, 0x44, n);
            int grew = brk_(b0 + 2 * n) == b0 + 2 * n;
            printf("child sees parent heap: %d, grew: %d, new zero: %d\n", seen, grew,
                   all((unsigned char *)b0 + n, n, 0));
            fflush(stdout);
            _exit(0);
        }
        waitpid(pid, 0, 0);
        printf("parent heap kept: %d\n", all((unsigned char *)b0, n, 0x33));
        printf("parent break unchanged: %d\n", brk_(0) == b0 + n);
    } else if (!strcmp(mode, "mapped")) {
        void *m = mmap((void *)(b0 + 16 * PAGE), 4 * PAGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        if (m == MAP_FAILED) return printf("mmap failed\n"), 1;
        memset(m, 0x66, 4 * PAGE);
        printf("grow into a mapping refused: %d\n", brk_(b0 + 32 * PAGE) == b0);
        printf("grow below it: %d\n", brk_(b0 + 16 * PAGE) == b0 + 16 * PAGE);
        munmap(m, 4 * PAGE);
        printf("grow over the unmapped: %d\n", brk_(b0 + 32 * PAGE) == b0 + 32 * PAGE);
        printf("zero there: %d\n", all((unsigned char *)b0 + 16 * PAGE, 16 * PAGE, 0));
    } else if (!strcmp(mode, "relro")) {
        /* Ends with the page read-only: the next run must find it as the
         * snapshot has it, writable. */
        printf("page starts as built: %d\n", page[0] == 1 && all(page + 1, PAGE - 1, 0));
        printf("writable: %d\n", !write_faults(page, 0x21));
        if (mprotect(page, PAGE, PROT_READ)) return printf("mprotect failed\n"), 1;
        printf("read-only write faults: %d\n", write_faults(page, 0x22));
        printf("still readable: %d\n", page[0] == 0x21);
    } else if (!strcmp(mode, "rodata")) {
        /* Ends with a read-only page made writable: the next run must find
         * it read-only again. */
        volatile unsigned char *r = (volatile unsigned char *)rodata + PAGE;
        printf("read-only: %d\n", write_faults(r, 1));
        if (mprotect((void *)(rodata + PAGE), PAGE, PROT_READ | PROT_WRITE)) return printf("mprotect failed\n"), 1;
        printf("then writable: %d\n", !write_faults(r, 2));
        printf("written: %d\n", *r == 2);
    }
    return 0;
}
