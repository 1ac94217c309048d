/* fork of a parent whose memory is larger than what is left free: the
 * runtime must share it copy-on-write (an eager copy gets ENOMEM in a
 * 64 MiB guest). `cow_fork [MiB]` fills that much in order (2 MiB pages
 * in the guest) plus 4 MiB touched page by page from the top down (4 KiB
 * pages), forks, and has the child and the parent each check and change
 * the memory every way the runtime must not share a change through: a
 * write by the program, a read(2) into it (the runtime writes), a signal
 * frame on a shared stack, mprotect, madvise(MADV_DONTNEED), munmap, and
 * a grandchild. Prints what each sees; the test compares it with a
 * native run. `cow_fork leak [MiB]`: 30 rounds of fork, writes in both,
 * exit; prints how much free memory they cost. `cow_fork checkpoint
 * [MiB]`: reads /dev/hvsandbox/checkpoint after the fill (a snapshot
 * point; natively it does not exist), then goes on as the first.
 * `cow_fork more [MiB]`: see more(); `cow_fork oom [MiB]`: see oom();
 * `cow_fork huge [MiB]`: see huge(). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>

#define MB (1UL << 20)
#define PG 4096UL

static unsigned char *big, *small;
static size_t big_len, small_len = 4 * MB;
static volatile int handled;

static unsigned long sum(const unsigned char *p, size_t n) {
    unsigned long s = 0;
    for (size_t i = 0; i < n; i += 64) s += p[i] * (i / 64 % 7 + 1);
    return s;
}

static void fill(void) {
    for (size_t i = 0; i < big_len; i += 64) big[i] = (unsigned char)(i / 64 * 13);
    /* Top down, one page apart first: no fault window fills it in order. */
    for (size_t p = small_len / PG; p-- > 0;) small[p * PG] = (unsigned char)p;
    for (size_t i = 0; i < small_len; i += 64) small[i] = (unsigned char)(i / 64 * 5);
}

static void report(const char *who) {
    printf("%s: big %lu small %lu\n", who, sum(big, big_len), sum(small, small_len));
    fflush(stdout);
}

/* After the child's munmap: its sums skip the pieces it unmapped. */
static void report_holes(const char *who) {
    unsigned long b = sum(big, 8 * MB) + sum(big + 10 * MB, big_len - 10 * MB);
    unsigned long s = sum(small, 3 * MB) + sum(small + 3 * MB + 8 * PG, small_len - 3 * MB - 8 * PG);
    printf("%s: big %lu small %lu\n", who, b, s);
    fflush(stdout);
}

static void on_usr1(int sig) {
    (void)sig;
    handled++;
}

static void child(void) {
    report("child before");
    /* Writes of its own, every 7th page of each. */
    for (size_t i = 0; i < big_len; i += 7 * PG) big[i] ^= 0xff;
    for (size_t i = 0; i < small_len; i += 7 * PG) small[i] ^= 0x55;
    report("child wrote");
    /* The runtime writes into shared pages: read(2) from a pipe. */
    int fds[2];
    if (pipe(fds) != 0) exit(2);
    memset(big + 3 * MB + 100, 'x', 20000);
    if (write(fds[1], big + 3 * MB + 100, 20000) != 20000) exit(3);
    if (read(fds[0], big + 9 * MB + 5, 20000) != 20000) exit(4);
    if (read(fds[1 - 1], small, 0) != 0) exit(5);
    if (write(fds[1], "hello", 5) != 5 || read(fds[0], small + 2 * MB + 4090, 5) != 5) exit(6);
    report("child read");
    /* A signal frame on the (shared) stack. */
    signal(SIGUSR1, on_usr1);
    raise(SIGUSR1);
    printf("child handled %d\n", handled);
    /* mprotect read-only, then writable again, then a write. */
    if (mprotect(big + 4 * MB, 2 * MB, PROT_READ) != 0) exit(7);
    if (mprotect(big + 4 * MB, 2 * MB, PROT_READ | PROT_WRITE) != 0) exit(8);
    big[4 * MB + 123] = 7;
    /* madvise: zero pages for the child only. */
    if (madvise(big + 6 * MB, 64 * 1024, MADV_DONTNEED) != 0) exit(9);
    if (madvise(small + MB, 64 * 1024, MADV_DONTNEED) != 0) exit(10);
    printf("child zeroed %lu %lu\n", sum(big + 6 * MB, 64 * 1024), sum(small + MB, 64 * 1024));
    /* munmap a piece; the parent keeps its own. */
    if (munmap(big + 8 * MB, 2 * MB) != 0 || munmap(small + 3 * MB, 8 * PG) != 0) exit(11);
    report_holes("child changed");
    /* A grandchild changes more; the child sees none of it. */
    pid_t g = fork();
    if (g < 0) {
        printf("grandchild fork failed\n");
        exit(12);
    }
    if (g == 0) {
        memset(big, 0x11, 1 * MB);
        memset(small, 0x22, 64 * 1024);
        report_holes("grandchild");
        _exit(0);
    }
    int st;
    waitpid(g, &st, 0);
    report_holes("child after grandchild");
    fflush(stdout);
    _exit(0);
}

/* More ways a shared page is changed: moved by mremap, kept behind
 * PROT_NONE across a fork and made writable again, replaced by
 * MAP_FIXED, shared three generations deep, and outliving its first
 * owner: a process P forks C and exits without waiting, and C reports
 * through a pipe that this process (which waits for P) reads to its end. */
static void more(void) {
    int fds[2];
    if (pipe(fds) != 0) exit(2);
    if (mprotect(small + 2 * MB, MB, PROT_NONE) != 0) exit(3);
    pid_t parent = fork();
    if (parent == 0) {
        pid_t p = fork();
        if (p < 0) {
            printf("fork failed\n");
            _exit(1);
        }
        if (p == 0) {
            /* C: PROT_NONE back to writable, then a write. */
            if (mprotect(small + 2 * MB, MB, PROT_READ | PROT_WRITE) != 0) _exit(4);
            small[2 * MB + 64] = 0x33;
            /* Move 8 MiB of the shared memory, then write to it. */
            unsigned char *moved = mremap(big + 16 * MB, 8 * MB, 8 * MB, MREMAP_MAYMOVE | MREMAP_FIXED, big + 24 * MB);
            if (moved == MAP_FAILED) _exit(5);
            moved[64 * 193] ^= 0x77;
            /* MAP_FIXED over shared memory: fresh zero pages. */
            if (mmap(big, MB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != big) _exit(6);
            unsigned long z = sum(big, MB);
            /* Two generations more, each writing, each waited for. */
            pid_t g = fork();
            if (g == 0) {
                pid_t gg = fork();
                if (gg == 0) {
                    big[2 * MB] = 9;
                    small[0] = 9;
                    _exit(0);
                }
                big[2 * MB + PG] = 8;
                waitpid(gg, 0, 0);
                _exit(0);
            }
            waitpid(g, 0, 0);
            /* P has exited by now: C holds what they shared alone. */
            while (getppid() == parent) usleep(1000);
            char line[200];
            int n = snprintf(line, sizeof line, "C: zero %lu, moved %lu, small %lu, big %lu\n", z, sum(moved, 8 * MB),
                             sum(small, small_len), sum(big + MB, 15 * MB));
            if (write(fds[1], line, n) != n) _exit(7);
            _exit(0);
        }
        /* P writes too, prints its sums and exits without waiting. */
        if (mprotect(small + 2 * MB, MB, PROT_READ | PROT_WRITE) != 0) _exit(8);
        small[2 * MB + 128] = 0x45;
        big[17 * MB] ^= 1;
        printf("P: small %lu, big %lu\n", sum(small, small_len), sum(big, big_len));
        fflush(stdout);
        _exit(0);
    }
    close(fds[1]);
    int st;
    waitpid(parent, &st, 0);
    char buf[256];
    ssize_t n, got = 0;
    while ((n = read(fds[0], buf + got, sizeof buf - 1 - got)) > 0) got += n;
    buf[got] = 0;
    printf("P status %d; %s", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), buf);
    exit(0);
}

/* Three children each write every page of the shared memory: in a
 * guest too small for one whole copy, each dies of SIGKILL when memory
 * runs out (as of Linux's OOM killer), and the parent keeps its memory. */
static void oom(void) {
    pid_t k[3];
    for (int i = 0; i < 3; i++) {
        k[i] = fork();
        if (k[i] < 0) {
            printf("fork failed\n");
            exit(1);
        }
        if (k[i] == 0) {
            for (size_t j = 0; j < big_len; j += PG) big[j] = (unsigned char)(2 + i);
            _exit(0);
        }
    }
    for (int i = 0; i < 3; i++) {
        int st;
        waitpid(k[i], &st, 0);
        printf("child %d: %s %d\n", i, WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    }
    report("parent after");
    exit(0);
}

static long meminfo_kib(const char *key) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, strlen(key))) v = strtol(line + strlen(key), 0, 10);
    if (f) fclose(f);
    return v;
}

/* /proc/meminfo's AnonHugePages counts each 2 MiB page once, however many
 * processes map it: the same after a fork shares them, about the same
 * after the child's write (its mapping of one is split, or that one is
 * copied whole), and the same once the child is gone. */
static void huge(void) {
    long before = meminfo_kib("AnonHugePages:");
    pid_t k = fork();
    if (k == 0) {
        long shared = meminfo_kib("AnonHugePages:");
        big[0] ^= 1;
        long written = meminfo_kib("AnonHugePages:");
        printf("2 MiB pages: %s; shared: %s; the child's write: %s\n", before >= 16 * 1024 ? "16 MiB or more" : "fewer",
               shared == before ? "counted once" : "counted again",
               written == before || written == before + 2048 ? "one page at most" : "more");
        exit(0);
    }
    int st;
    waitpid(k, &st, 0);
    printf("child status %d; after it: %s\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1,
           meminfo_kib("AnonHugePages:") == before ? "as before" : "changed");
    exit(0);
}

static long free_kib(void) {
    struct sysinfo si;
    sysinfo(&si);
    return (long)(si.freeram * si.mem_unit / 1024);
}

int main(int argc, char **argv) {
    int leak = argc > 1 && strcmp(argv[1], "leak") == 0;
    int checkpoint = argc > 1 && strcmp(argv[1], "checkpoint") == 0;
    int more_ways = argc > 1 && strcmp(argv[1], "more") == 0;
    int oom_mode = argc > 1 && strcmp(argv[1], "oom") == 0;
    int huge_mode = argc > 1 && strcmp(argv[1], "huge") == 0;
    int mode = leak || checkpoint || more_ways || oom_mode || huge_mode;
    const char *mib = argc > 1 + mode ? argv[1 + mode] : "40";
    big_len = strtoul(mib, 0, 10) * MB;
    big = mmap(0, big_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    small = mmap(0, small_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (big == MAP_FAILED || small == MAP_FAILED) {
        printf("mmap failed\n");
        return 1;
    }
    fill();
    if (checkpoint) {
        char buf[64];
        FILE *f = fopen("/dev/hvsandbox/checkpoint", "rb");
        if (f) {
            (void)!fread(buf, 1, sizeof buf, f);
            fclose(f);
        }
    }
    if (leak) {
        long before = 0;
        for (int round = 0; round < 31; round++) {
            if (round == 1) before = free_kib();
            pid_t p = fork();
            if (p < 0) {
                printf("fork failed in round %d\n", round);
                return 1;
            }
            if (p == 0) {
                for (size_t i = round * PG; i < big_len; i += 64 * PG) big[i]++;
                small[round * PG] = 1;
                _exit(0);
            }
            for (size_t i = round * 3 * PG; i < big_len; i += 128 * PG) big[i]++;
            small[round * 2 * PG] = 2;
            int st;
            waitpid(p, &st, 0);
            if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                printf("child failed in round %d\n", round);
                return 1;
            }
        }
        printf("leak: %ld KiB\n", before - free_kib());
        return 0;
    }
    if (huge_mode) huge();
    report("parent before");
    if (more_ways) more();
    if (oom_mode) oom();
    pid_t p = fork();
    if (p < 0) {
        printf("fork failed\n");
        return 1;
    }
    if (p == 0) child();
    int st;
    waitpid(p, &st, 0);
    printf("child status %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
    report("parent after child");
    for (size_t i = PG; i < big_len; i += 3 * PG) big[i] += 1;
    report("parent wrote");
    return 0;
}
