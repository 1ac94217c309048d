/* Changes to a few pages' mappings take effect at once: for 1 to 6
 * pages (the runtime drops one page's TLB entries with invlpg, more
 * by a CR3 reload), each round takes write access away (writes fault),
 * gives it back, takes all access away (reads fault), unmaps (reads
 * fault) and maps anew (fresh zero pages, not the old bytes); and a
 * forked child that read some pages and then wrote one (copy-on-write of
 * a window of pages) never sees the parent's later writes to the others.
 * Prints the counts, which a native run must match. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096
#define N 16
static sigjmp_buf jb;
static void on_segv(int s) { (void)s; siglongjmp(jb, 1); }

/* 1 if writing (or reading) byte `p` faults. */
static int faults(volatile char *p, int write) {
    if (sigsetjmp(jb, 1)) return 1;
    if (write) *p = 7; else (void)*p;
    return 0;
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_segv;
    sa.sa_flags = SA_NODEFER;
    sigaction(SIGSEGV, &sa, 0);
    char *r = mmap(0, N * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (r == MAP_FAILED) return 1;
    for (int k = 1; k <= 6; k++) {
        long wf = 0, rf = 0, uf = 0, stale = 0, ok = 0;
        for (int round = 0; round < 50; round++) {
            for (int i = 0; i < N; i++) r[i * PG + 5] = (char)(k + round + i);
            mprotect(r, k * PG, PROT_READ);
            for (int i = 0; i <= k; i++) wf += faults(r + i * PG + 5, 1);
            mprotect(r, k * PG, PROT_READ | PROT_WRITE);
            for (int i = 0; i < k; i++) ok += !faults(r + i * PG + 5, 1);
            mprotect(r, k * PG, PROT_NONE);
            for (int i = 0; i <= k; i++) rf += faults(r + i * PG + 5, 0);
            mprotect(r, k * PG, PROT_READ | PROT_WRITE);
            for (int i = 0; i < k; i++) r[i * PG + 9] = 42;
            munmap(r, k * PG);
            for (int i = 0; i <= k; i++) uf += faults(r + i * PG + 9, 0);
            if (mmap(r, k * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != r) return 2;
            for (int i = 0; i < k; i++) stale += r[i * PG + 9] != 0;
        }
        printf("%d pages: write faults %ld, writes %ld, read faults %ld, unmapped faults %ld, stale %ld\n", k, wf, ok,
               rf, uf, stale);
    }
    for (int k = 1; k <= 6; k++) {
        long seen = 0;
        for (int round = 0; round < 20; round++) {
            for (int i = 0; i < N; i++) r[i * PG] = 1;
            int to[2], back[2];
            if (pipe(to) || pipe(back)) return 3;
            pid_t c = fork();
            if (c == 0) {
                long sum = 0;
                for (int i = 1; i <= k; i++) sum += r[i * PG];
                r[0] = 2;
                char b;
                if (write(back[1], "r", 1) != 1 || read(to[0], &b, 1) != 1) _exit(4);
                for (int i = 1; i <= k; i++) sum += r[i * PG] != 1;
                _exit(sum == k ? 0 : 5);
            }
            char b;
            if (read(back[0], &b, 1) != 1) return 6;
            for (int i = 0; i < N; i++) r[i * PG] = 9;
            if (write(to[1], "w", 1) != 1) return 7;
            int st;
            waitpid(c, &st, 0);
            seen += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
            close(to[0]); close(to[1]); close(back[0]); close(back[1]);
        }
        printf("fork after reading %d pages: children that saw the parent's writes %ld\n", k, seen);
    }
    puts("done");
    return 0;
}
