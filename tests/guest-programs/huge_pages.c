/* Memory filled in address order, then changed in pieces. The runtime
 * maps such memory in 2 MiB pages and must split one for any change to
 * part of it: a fork's copy, mprotect, munmap, madvise(MADV_DONTNEED) and
 * mremap of a few pages. Prints what the program sees (the test compares
 * it with a native run); with "huge", first prints whether /proc/meminfo
 * counts 2 MiB pages after the fill (the guest's own check); with
 * "leak", how much free memory 40 rounds of it all cost; with "tables",
 * maps, touches and unmaps 16 MiB 400 times at a new fixed address and
 * 16 MiB more where mmap puts it, and says whether that moved; with "reuse", fills 32 MiB,
 * unmaps it and fills 32 MiB again, and says how much of the second
 * went in 2 MiB pages (in a 64 MiB guest most of it must come from the
 * first's freed pages); with "checkpoint", fills 16 MiB, reads
 * /dev/hvsandbox/checkpoint, and then maps and fills 4 MiB more and
 * changes parts of the first, printing what it sees (every run from the
 * snapshot must see the same); with "fork", fills 16 MiB and forks, and
 * says whether the child got 2 MiB pages of its own and the parent kept
 * its own whole; with "down" and "quarters", see fill_out_of_order. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#define MB (1UL << 20)
#define SIZE (16 * MB)

static sigjmp_buf jb;

static void on_segv(int sig) {
    (void)sig;
    siglongjmp(jb, 1);
}

static int write_faults(volatile unsigned char *p) {
    if (sigsetjmp(jb, 1) == 0) {
        *p = 1;
        return 0;
    }
    return 1;
}

static int read_faults(volatile unsigned char *p) {
    if (sigsetjmp(jb, 1) == 0) {
        (void)*p;
        return 0;
    }
    return 1;
}

static unsigned long sum(const unsigned char *p, size_t n) {
    unsigned long s = 0;
    for (size_t i = 0; i < n; i++) s += p[i];
    return s;
}

static unsigned char *filled(size_t n) {
    unsigned char *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        printf("mmap failed\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 3);
    return p;
}

static long meminfo_kib(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[128];
    long v = -1;
    size_t k = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, k)) v = atol(line + k);
    if (f) fclose(f);
    return v;
}

/* One round; prints only when `say`. */
static void round_trip(int say) {
    unsigned char *p = filled(SIZE);
    unsigned long whole = sum(p, SIZE);
    if (say) printf("filled: sum %lu\n", whole);

    pid_t k = fork();
    if (k == 0) {
        int same = sum(p, SIZE) == whole;
        p[3 * MB] = 0;
        _exit(same && p[3 * MB] == 0 ? 0 : 1);
    }
    int st;
    waitpid(k, &st, 0);
    if (say) printf("fork: child saw the same bytes: %d; parent's byte after the child's write: %d\n",
                    WIFEXITED(st) && WEXITSTATUS(st) == 0, p[3 * MB]);

    unsigned char *ro = p + 5 * MB + 4096;
    mprotect(ro, 4096, PROT_READ);
    int a = write_faults(ro), b = write_faults(ro - 4096), c = write_faults(ro + 4096);
    if (say) printf("mprotect: write to the read-only page faults %d, its neighbours %d %d; it reads %d\n", a, b, c, ro[1]);

    unsigned char *gone = p + 7 * MB + 3 * 4096;
    munmap(gone, 4096);
    a = read_faults(gone);
    if (say) printf("munmap: the page faults %d; its neighbours read %d %d\n", a, gone[-1], gone[4096]);

    madvise(p + 9 * MB, 65536, MADV_DONTNEED);
    if (say) printf("madvise: %lu in the dropped 64 KiB, %d after it\n", sum(p + 9 * MB, 65536), p[9 * MB + 65536]);

    unsigned char *q = mremap(p + 10 * MB, 4 * MB, 8 * MB, MREMAP_MAYMOVE);
    if (q == MAP_FAILED) {
        printf("mremap failed\n");
        exit(1);
    }
    if (say) printf("mremap: moved %lu, grown %lu, old place faults %d\n", sum(q, 4 * MB), sum(q + 4 * MB, 4 * MB),
                    q == p + 10 * MB ? 1 : read_faults(p + 10 * MB));

    munmap(p, SIZE);
    munmap(q, 8 * MB);
}

static long free_kib(void) {
    struct sysinfo si;
    sysinfo(&si);
    return (long)(si.freeram * si.mem_unit / 1024);
}

/* Fills 32 MiB downwards, from its last page to its first (glibc's
 * memmove copying backwards, as Python's bytearray * n has it do), or
 * else in four streams, a page of each quarter in turn (the
 * non-temporal path of glibc's memcpy of a very large block), and says
 * how much went in 2 MiB pages. */
static int fill_out_of_order(int down) {
    size_t len = 32 * MB, q = len / 4;
    unsigned char *p = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return 1;
    if (down)
        for (size_t off = len; off > 0; off -= 4096) memset(p + off - 4096, (int)(off / 4096 % 251), 4096);
    else
        for (size_t off = 0; off < q; off += 4096)
            for (int k = 0; k < 4; k++) memset(p + k * q + off, 1 + k, 4096);
    long huge = meminfo_kib("AnonHugePages:");
    printf("filled 32 MiB %s: %s, sum %lu\n", down ? "downwards" : "in 4 streams",
           huge >= 16 * 1024 ? "at least 16 MiB in 2 MiB pages" : "less", sum(p, len));
    munmap(p, len);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGSEGV, on_segv);
    if (argc > 1 && !strcmp(argv[1], "leak")) {
        round_trip(0);
        long before = free_kib();
        for (int i = 0; i < 40; i++) round_trip(0);
        printf("leak: %ld KiB\n", before - free_kib());
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "tables")) {
        /* A MAP_FIXED mapping at a new address each time needs new page
         * tables each time; a plain one gets the address just unmapped
         * (mmap's top-down first fit, as Linux's). */
        unsigned char *first = NULL;
        int moved = 0;
        for (int i = 0; i < 400; i++) {
            unsigned char *want = (unsigned char *)(0x100000000000UL + (unsigned long)i * 64 * MB);
            unsigned char *p = mmap(want, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            unsigned char *q = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p != want || q == MAP_FAILED) {
                printf("mmap failed in round %d\n", i);
                return 1;
            }
            for (size_t off = 0; off < SIZE; off += 2 * MB) p[off] = q[off] = 1;
            if (!first) first = q;
            moved += q != first;
            munmap(p, SIZE);
            munmap(q, SIZE);
        }
        printf("400 rounds; plain mappings moved %d times\n", moved);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "checkpoint")) {
        unsigned char *p = filled(SIZE);
        char buf[64];
        FILE *f = fopen("/dev/hvsandbox/checkpoint", "rb");
        if (f) {
            (void)!fread(buf, 1, sizeof buf, f);
            fclose(f);
        }
        printf("resumed: sum %lu, huge %s\n", sum(p, SIZE),
               meminfo_kib("AnonHugePages:") >= 8192 ? "at least 8 MiB" : "less");
        unsigned char *q = filled(4 * MB);
        p[MB] = 0;
        mprotect(p + 5 * MB, 4096, PROT_READ);
        munmap(p + 7 * MB, 3 * MB);
        madvise(p + 11 * MB, 65536, MADV_DONTNEED);
        unsigned long whole = sum(q, 4 * MB);
        pid_t k = fork();
        if (k < 0) {
            printf("fork failed\n");
            return 1;
        }
        /* The child sees the parent's changes: p[MB] is 3 less. */
        if (k == 0) _exit(sum(q, 4 * MB) == whole && sum(p, 4 * MB) + 3 == sum(q, 4 * MB) ? 0 : 1);
        int st;
        waitpid(k, &st, 0);
        printf("changed: sum %lu + %lu, child %d, unmapped faults %d, read-only faults %d\n", sum(p, 7 * MB),
               sum(p + 10 * MB, 6 * MB), WIFEXITED(st) ? WEXITSTATUS(st) : -1, read_faults(p + 8 * MB),
               write_faults(p + 5 * MB));
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "fork")) {
        unsigned char *p = filled(SIZE);
        unsigned long whole = sum(p, SIZE);
        long before = meminfo_kib("AnonHugePages:");
        pid_t k = fork();
        if (k == 0) {
            long both = meminfo_kib("AnonHugePages:");
            int same = sum(p, SIZE) == whole;
            p[0] ^= 1;
            _exit(same && before >= 8192 && both >= 2 * before ? 0 : 1);
        }
        int st;
        waitpid(k, &st, 0);
        printf("child: its own 2 MiB pages and the same bytes %s; parent: pages %s, bytes %s\n",
               WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "yes" : "no",
               meminfo_kib("AnonHugePages:") == before ? "whole" : "split", sum(p, SIZE) == whole ? "kept" : "changed");
        return 0;
    }
    if (argc > 1 && (!strcmp(argv[1], "down") || !strcmp(argv[1], "quarters"))) return fill_out_of_order(argv[1][0] == 'd');
    if (argc > 1 && !strcmp(argv[1], "reuse")) {
        unsigned char *p = filled(32 * MB);
        munmap(p, 32 * MB);
        p = filled(32 * MB);
        long huge = meminfo_kib("AnonHugePages:");
        printf("refilled 32 MiB: %s\n", huge >= 28 * 1024 ? "at least 28 MiB in 2 MiB pages" : "less");
        munmap(p, 32 * MB);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "huge")) {
        unsigned char *p = filled(SIZE);
        long huge = meminfo_kib("AnonHugePages:");
        printf("AnonHugePages after filling %lu MiB: %s\n", SIZE / MB, huge >= 8192 ? "at least 8 MiB" : "less");
        munmap(p, SIZE);
        printf("after unmapping it: %ld kB\n", meminfo_kib("AnonHugePages:"));
    }
    round_trip(1);
    printf("done\n");
    return 0;
}
