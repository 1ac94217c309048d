// madvise, run natively and in the guest and compared: the arguments it
// refuses, a range with a hole, DONTNEED, what a fork does with
// MADV_WIPEONFORK and MADV_DONTFORK (and their undoing), and glibc's
// arc4random, whose state lives in a MADV_WIPEONFORK page: a child must
// not draw the numbers its parent draws.
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096

static int advise(void *p, size_t len, int advice) {
    errno = 0;
    int r = madvise(p, len, advice);
    return r == 0 ? 0 : -errno;
}

// What a forked child reads at `p`: the byte, or -1 if it faults.
static int child_reads(volatile char *p) {
    pid_t c = fork();
    if (c == 0) {
        signal(SIGSEGV, SIG_DFL);
        _exit((unsigned char)*p);
    }
    int st;
    waitpid(c, &st, 0);
    if (WIFSIGNALED(st)) return -WTERMSIG(st);
    return WEXITSTATUS(st);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *m = mmap(NULL, 8 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("unaligned: %d\n", advise(m + 1, PAGE, MADV_NORMAL));
    printf("unknown advice: %d\n", advise(m, PAGE, 999));
    printf("hwpoison: %d\n", advise(m, PAGE, MADV_HWPOISON));
    printf("length 0: %d\n", advise(m, 0, MADV_DONTNEED));
    printf("hints: %d %d %d %d %d\n", advise(m, PAGE, MADV_RANDOM), advise(m, PAGE, MADV_SEQUENTIAL),
           advise(m, PAGE, MADV_WILLNEED), advise(m, PAGE, MADV_HUGEPAGE), advise(m, PAGE, MADV_NOHUGEPAGE));
    // A hole in the range: ENOMEM (the mapped parts still take it).
    munmap(m + 4 * PAGE, PAGE);
    memset(m, 7, 4 * PAGE);
    memset(m + 5 * PAGE, 7, 3 * PAGE);
    printf("range with a hole: %d\n", advise(m, 8 * PAGE, MADV_DONTNEED));
    printf("dropped around the hole: %d %d\n", m[0], m[5 * PAGE]);
    printf("remove on private memory: %d\n", advise(m, PAGE, MADV_REMOVE));
    // Past the program's half of the address space: nothing there for it.
    printf("upper half: %d %d\n", advise((void *)0xffff800000000000ull, 2 << 20, MADV_DONTNEED),
           advise((void *)0xffff800000200000ull, 64 * PAGE, MADV_DONTNEED));

    // MADV_WIPEONFORK: the child reads zero, the parent its own.
    m[0] = 42;
    m[PAGE] = 43;
    printf("wipeonfork: %d\n", advise(m, PAGE, MADV_WIPEONFORK));
    printf("child reads the wiped page: %d, the next: %d; parent: %d\n", child_reads(m), child_reads(m + PAGE), m[0]);
    printf("keeponfork: %d\n", advise(m, PAGE, MADV_KEEPONFORK));
    printf("child reads after keeponfork: %d\n", child_reads(m));
    char *shared = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    printf("wipeonfork on shared memory: %d\n", advise(shared, PAGE, MADV_WIPEONFORK));

    // MADV_DONTFORK: not in the child at all.
    printf("dontfork: %d\n", advise(m + PAGE, PAGE, MADV_DONTFORK));
    printf("child reads the page it does not have: %d, the one before: %d\n", child_reads(m + PAGE), child_reads(m));
    printf("dofork: %d\n", advise(m + PAGE, PAGE, MADV_DOFORK));
    printf("child reads after dofork: %d\n", child_reads(m + PAGE));

    // A large mapping (2 MiB pages) wiped in its middle.
    size_t big = 8 << 20;
    char *b = mmap(NULL, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(b, 5, big);
    char *mid = b + (3 << 20) + 3 * PAGE;
    printf("wipeonfork in a large mapping: %d\n", advise(mid, 5 * PAGE, MADV_WIPEONFORK));
    printf("child reads: before %d, first %d, last %d, after %d\n", child_reads(mid - 1), child_reads(mid),
           child_reads(mid + 5 * PAGE - 1), child_reads(mid + 5 * PAGE));

    // arc4random after fork: the child's numbers are its own.
    int fds[2];
    pipe(fds);
    unsigned parent_draw = arc4random();
    pid_t c = fork();
    if (c == 0) {
        unsigned child_draw = arc4random();
        write(fds[1], &child_draw, sizeof child_draw);
        _exit(0);
    }
    unsigned next = arc4random(), child_draw = 0;
    read(fds[0], &child_draw, sizeof child_draw);
    waitpid(c, NULL, 0);
    printf("arc4random: first draws differ: %s; child's is not the parent's next: %s\n",
           parent_draw != next ? "yes" : "no", child_draw != next ? "yes" : "no");
    return 0;
}
