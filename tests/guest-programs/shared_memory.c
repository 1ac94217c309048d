#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#define FUTEX_WAIT 0
#define FUTEX_WAKE 1
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>
/* Shared memory as Linux has it: anonymous MAP_SHARED memory stays shared
 * with children (a counter under a process-shared semaphore and mutex),
 * files in /dev/shm and /tmp mapped by several processes, write()/read()
 * against stores through mappings, msync, ftruncate and SIGBUS past the
 * end, mprotect and munmap of part of a shared mapping, and a futex that
 * one process waits on and another wakes, through different mappings;
 * mremap of private and shared mappings (grow, shrink, move, a second
 * mapping of the same pages).
 * With the argument "leak", it maps, forks and unmaps many times and
 * prints how much free memory that cost (the guest test checks it). */

#define CHILDREN 4
#define ROUNDS 2000

static long futex(volatile int *addr, int op, int val) {
    return syscall(SYS_futex, addr, op, val, NULL, NULL, 0);
}

static int wait_child(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) return -1;
    if (WIFSIGNALED(st)) return 1000 + WTERMSIG(st);
    return WEXITSTATUS(st);
}

struct counters {
    sem_t sem;
    pthread_mutex_t mutex;
    long by_sem;
    long by_mutex;
    long atomic;
};

static void counter_test(void) {
    struct counters *c = mmap(NULL, sizeof *c, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED) {
        printf("anon: mmap failed %d\n", errno);
        return;
    }
    sem_init(&c->sem, 1, 1);
    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
    pthread_mutex_init(&c->mutex, &ma);
    int *private = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    *private = 1;
    pid_t kids[CHILDREN];
    for (int k = 0; k < CHILDREN; k++) {
        kids[k] = fork();
        if (kids[k] == 0) {
            for (int i = 0; i < ROUNDS; i++) {
                sem_wait(&c->sem);
                long v = c->by_sem;
                if (i % 97 == 0) sched_yield();
                c->by_sem = v + 1;
                sem_post(&c->sem);
                pthread_mutex_lock(&c->mutex);
                v = c->by_mutex;
                if (i % 89 == 0) sched_yield();
                c->by_mutex = v + 1;
                pthread_mutex_unlock(&c->mutex);
                __atomic_fetch_add(&c->atomic, 1, __ATOMIC_SEQ_CST);
            }
            *private = 2; /* the parent's copy stays 1 */
            _exit(0);
        }
    }
    int bad = 0;
    for (int k = 0; k < CHILDREN; k++) bad += wait_child(kids[k]) != 0;
    printf("anon: children=%d failed=%d by_sem=%ld by_mutex=%ld atomic=%ld private=%d\n", CHILDREN, bad, c->by_sem,
           c->by_mutex, c->atomic, *private);

    /* vfork shares everything anyway; the mapping stays shared after it. */
    pid_t v = vfork();
    if (v == 0) {
        c->atomic += 1;
        _exit(0);
    }
    wait_child(v);
    /* A child of a child still shares the page. */
    pid_t a = fork();
    if (a == 0) {
        pid_t b = fork();
        if (b == 0) {
            c->atomic += 10;
            _exit(0);
        }
        _exit(wait_child(b));
    }
    printf("anon: vfork and grandchild: atomic=%ld status=%d\n", c->atomic, wait_child(a));
    munmap(c, sizeof *c);
    munmap(private, 4096);
}

/* MAP_SHARED of /dev/zero is anonymous shared memory too. */
static void dev_zero_test(void) {
    int fd = open("/dev/zero", O_RDWR);
    int *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        printf("dev/zero: mmap failed %d\n", errno);
        return;
    }
    pid_t k = fork();
    if (k == 0) {
        p[0] = 42;
        p[1024] = 43;
        _exit(0);
    }
    int st = wait_child(k);
    printf("dev/zero: shared %d %d status=%d\n", p[0], p[1024], st);
    munmap(p, 8192);
}

static void shm_file_test(void) {
    char name[64];
    snprintf(name, sizeof name, "/hvs-shm-%d", (int)getpid());
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0) {
        printf("shm_open: failed %d\n", errno);
        return;
    }
    char path[80];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    struct stat st;
    printf("shm_open: in /dev/shm=%s\n", stat(path, &st) == 0 ? "yes" : "no");
    ftruncate(fd, 3 * 4096);
    char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    pid_t k = fork();
    if (k == 0) {
        /* The child maps the file again, by name, from page 1 on. */
        int cfd = shm_open(name, O_RDWR, 0);
        char *q = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, cfd, 4096);
        strcpy(q + 100, "written by the child at page 1 + 100");
        strcpy(p, "written through the inherited mapping");
        _exit(q == MAP_FAILED);
    }
    int s = wait_child(k);
    printf("shm: status=%d parent sees \"%s\" and \"%s\"\n", s, p + 4096 + 100, p);
    char buf[64] = {0};
    pread(fd, buf, 36, 4096 + 100);
    printf("shm: read() sees \"%s\"\n", buf);
    shm_unlink(name);
    printf("shm: after unlink open=%d mapping=\"%.7s\"\n", shm_open(name, O_RDWR, 0), p);
    munmap(p, 3 * 4096);
    close(fd);
}

static void coherence_test(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/hvs-coherent-%d", (int)getpid());
    int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0600);
    write(fd, "hello, file", 11);
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    printf("coherent: mapping sees \"%.11s\"\n", p);
    pwrite(fd, "HELLO", 5, 0);
    printf("coherent: after pwrite mapping sees \"%.11s\"\n", p);
    memcpy(p + 7, "FILE", 4);
    char buf[16] = {0};
    pread(fd, buf, 11, 0);
    printf("coherent: after store read sees \"%s\" msync=%d\n", buf, msync(p, 4096, MS_SYNC));
    /* Past the end of the file, in the mapping's second page: SIGBUS. */
    pid_t k = fork();
    if (k == 0) {
        p[4096] = 1;
        _exit(0);
    }
    printf("coherent: store past the end: status=%d\n", wait_child(k));
    /* Growing the file makes that page usable; the store shows in read. */
    ftruncate(fd, 8192);
    p[4096 + 5] = 'x';
    pread(fd, buf, 1, 4096 + 5);
    printf("coherent: after ftruncate grow store=%c size=%ld\n", buf[0], (long)lseek(fd, 0, SEEK_END));
    /* Shrinking zeroes the tail of the last page for read and mapping. */
    ftruncate(fd, 9);
    printf("coherent: after shrink mapping tail=%d,%d\n", p[8], p[9]);
    /* The page the parent stored into above is past the new end now. */
    k = fork();
    if (k == 0) {
        volatile char c = p[4096 + 5];
        (void)c;
        _exit(0);
    }
    printf("coherent: load past the new end: status=%d\n", wait_child(k));
    ftruncate(fd, 8192);
    printf("coherent: grown again reads %d\n", p[4096 + 5]);
    /* A private mapping of the same file: a copy on write. */
    char *q = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    q[0] = 'P';
    printf("coherent: private store leaves file \"%.5s\"\n", p);
    munmap(q, 4096);
    /* A shared mapping of a file opened read-only cannot be written. */
    int ro = open(path, O_RDONLY);
    void *r = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0);
    printf("coherent: rw map of read-only fd: %s\n", r == MAP_FAILED && errno == EACCES ? "EACCES" : "?");
    char *rr = mmap(NULL, 4096, PROT_READ, MAP_SHARED, ro, 0);
    int mp = mprotect(rr, 4096, PROT_READ | PROT_WRITE);
    printf("coherent: ro map %.5s mprotect rw: %s\n", rr, mp < 0 && errno == EACCES ? "EACCES" : "?");
    munmap(rr, 4096);
    close(ro);
    munmap(p, 8192);
    close(fd);
    unlink(path);
}

static void protect_test(void) {
    char *p = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    p[4096] = 'a';
    mprotect(p + 4096, 4096, PROT_READ);
    pid_t k = fork();
    if (k == 0) {
        p[4096] = 'b'; /* read-only now: SIGSEGV */
        _exit(0);
    }
    int s1 = wait_child(k);
    mprotect(p + 4096, 4096, PROT_READ | PROT_WRITE);
    /* Unmapping the first page leaves the rest shared. */
    munmap(p, 4096);
    k = fork();
    if (k == 0) {
        p[4096] = 'c';
        p[2 * 4096] = 'd';
        _exit(0);
    }
    int s2 = wait_child(k);
    printf("protect: read-only store status=%d; after mprotect rw status=%d sees %c%c\n", s1, s2, p[4096],
           p[2 * 4096]);
    munmap(p + 4096, 2 * 4096);
}

/* One process waits on a futex word in a file's page through its own
 * mapping; another wakes it through a different mapping of the file. */
static void futex_test(void) {
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/hvs-futex-%d", (int)getpid());
    int fd = open(path, O_CREAT | O_RDWR, 0600);
    ftruncate(fd, 2 * 4096);
    volatile int *w = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    w += 1024 + 3; /* page 1, byte 12 */
    pid_t k = fork();
    if (k == 0) {
        /* The child's own mapping of page 1 only, at another address. */
        volatile int *mine = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 4096);
        mine += 3;
        int waits = 0;
        while (*mine == 0) {
            futex(mine, FUTEX_WAIT, 0);
            waits++;
        }
        _exit(*mine == 7 ? 0 : 1);
    }
    usleep(50000);
    *w = 7;
    futex(w, FUTEX_WAKE, 1);
    printf("futex: waiter woken status=%d\n", wait_child(k));
    unlink(path);
    close(fd);
}

static const char *err(long r) {
    if (r != -1) return "ok";
    return errno == EINVAL ? "EINVAL" : errno == EFAULT ? "EFAULT" : errno == ENOMEM ? "ENOMEM" : "?";
}

static void mremap_test(void) {
    /* Private memory grows (wherever it fits) and keeps its bytes. */
    char *p = mmap(NULL, 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 'a', 2 * 4096);
    char *g = mremap(p, 2 * 4096, 64 * 4096, MREMAP_MAYMOVE);
    int zero = 1;
    for (int i = 2 * 4096; i < 64 * 4096; i++) zero &= g[i] == 0;
    g[63 * 4096] = 'z';
    printf("mremap: grown kept=%c%c new zero=%d\n", g[0], g[2 * 4096 - 1], zero);
    char *s = mremap(g, 64 * 4096, 4096, 0);
    printf("mremap: shrunk in place=%d\n", s == g);
    munmap(s, 4096);
    /* Something right after it: in place fails, moving works. */
    char *r = mmap(NULL, 3 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    r[0] = 'r';
    long no = (long)mremap(r, 4096, 2 * 4096, 0);
    printf("mremap: no room without MAYMOVE: %s\n", err(no));
    char *m = mremap(r, 4096, 2 * 4096, MREMAP_MAYMOVE);
    printf("mremap: moved=%d kept=%c old page gone=%d\n", m != r, m[0], msync(r, 4096, 0) == -1 && errno == ENOMEM);
    /* To a fixed place, replacing what was there. */
    char *t = mmap(NULL, 4 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *f = mremap(m, 2 * 4096, 4 * 4096, MREMAP_MAYMOVE | MREMAP_FIXED, t);
    f[3 * 4096] = 'w';
    printf("mremap: fixed at target=%d kept=%c writable=%c\n", f == t, f[0], f[3 * 4096]);
    munmap(f, 4 * 4096);
    munmap(r + 4096, 2 * 4096);
    printf("mremap: unaligned %s, unmapped %s\n", err((long)mremap(p + 1, 4096, 8192, MREMAP_MAYMOVE)),
           err((long)mremap(f, 4096, 8192, MREMAP_MAYMOVE)));

    /* A shared file mapping grows to show more of the file, and moves. */
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/hvs-mremap-%d", (int)getpid());
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    ftruncate(fd, 3 * 4096);
    pwrite(fd, "B", 1, 4096);
    pwrite(fd, "C", 1, 2 * 4096);
    char *a = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    char *guard = mmap(a + 4096, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    a[0] = 'A';
    char *b = mremap(a, 4096, 3 * 4096, MREMAP_MAYMOVE);
    b[2 * 4096 + 1] = 'c';
    char buf[2];
    pread(fd, buf, 2, 2 * 4096);
    printf("mremap: shared grown sees %c%c%c, read sees %.2s\n", b[0], b[4096], b[2 * 4096], buf);
    /* A second mapping of the same pages (old size 0). */
    char *d = mremap(b, 0, 4096, MREMAP_MAYMOVE);
    d[1] = '!';
    printf("mremap: duplicate differs=%d sees %c, original sees %c\n", d != b, d[0], b[1]);
    /* Growing anonymous shared memory past its size: SIGBUS there. */
    char *x = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    x[0] = 'x';
    char *y = mremap(x, 4096, 2 * 4096, MREMAP_MAYMOVE);
    pid_t k = fork();
    if (k == 0) {
        y[4096] = 1;
        _exit(0);
    }
    printf("mremap: anon shared kept=%c past its size status=%d\n", y[0], wait_child(k));
    if (guard != MAP_FAILED) munmap(guard, 4096);
    munmap(b, 3 * 4096);
    munmap(d, 4096);
    munmap(y, 2 * 4096);
    close(fd);
    unlink(path);
}

static void errors_test(void) {
    int fd = open("/dev/shm", O_RDONLY);
    printf("errors: map a directory %s\n",
           mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED && errno == ENODEV ? "ENODEV" : "?");
    close(fd);
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/hvs-errors-%d", (int)getpid());
    fd = open(path, O_CREAT | O_RDWR, 0600);
    ftruncate(fd, 4096);
    printf("errors: length 0 %s, offset unaligned %s\n",
           err((long)mmap(NULL, 0, PROT_READ, MAP_SHARED, fd, 0)),
           err((long)mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 100)));
    int wo = open(path, O_WRONLY);
    void *w = mmap(NULL, 4096, PROT_WRITE, MAP_SHARED, wo, 0);
    printf("errors: write-only fd %s\n", w == MAP_FAILED && errno == EACCES ? "EACCES" : "?");
    close(wo);
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    printf("errors: mremap to 0 %s, bad flags %s, fixed alone %s\n", err((long)mremap(p, 4096, 0, MREMAP_MAYMOVE)),
           err((long)mremap(p, 4096, 8192, 64)), err((long)mremap(p, 4096, 8192, MREMAP_FIXED, p + 8192)));
    printf("errors: msync unaligned %s, bad flags %s, both %s\n", err(msync(p + 1, 10, MS_SYNC)),
           err(msync(p, 4096, 64)), err(msync(p, 4096, MS_SYNC | MS_ASYNC)));
    /* A futex word in the page: a wait with the wrong value returns at once. */
    long r = syscall(SYS_futex, (int *)p, FUTEX_WAIT, 5, NULL, NULL, 0);
    printf("errors: futex wait mismatch %s\n", r == -1 && errno == EAGAIN ? "EAGAIN" : "?");
    munmap(p, 4096);
    printf("errors: msync unmapped %s\n", err(msync(p, 4096, MS_SYNC)));
    close(fd);
    unlink(path);
}

/* Many processes, one shared page: each child adds one. */
static void many_forks_test(void) {
    long *n = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    int bad = 0;
    for (int i = 0; i < 200; i++) {
        pid_t k = fork();
        if (k == 0) {
            *n += 1;
            _exit(0);
        }
        bad += wait_child(k) != 0;
    }
    printf("forks: 200 children counted %ld failed=%d\n", *n, bad);
    munmap(n, 4096);
}

static long free_kib(void) {
    struct sysinfo si;
    sysinfo(&si);
    return (long)(si.freeram * si.mem_unit / 1024);
}

static void leak_round(void) {
    char *p = mmap(NULL, 64 * 1024, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(p, 1, 64 * 1024);
    pid_t k = fork();
    if (k == 0) {
        p[5000] = 2;
        _exit(0);
    }
    wait_child(k);
    munmap(p, 64 * 1024);
    char path[64];
    snprintf(path, sizeof path, "/dev/shm/hvs-leak-%d", (int)getpid());
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    ftruncate(fd, 16 * 1024);
    char *q = mmap(NULL, 16 * 1024, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    q[0] = 1;
    unlink(path);
    close(fd);
    k = fork();
    if (k == 0) _exit(q[0] == 1 ? 0 : 1);
    wait_child(k);
    ftruncate(fd, 0);
    munmap(q, 16 * 1024);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "leak") == 0) {
        for (int i = 0; i < 20; i++) leak_round();
        long before = free_kib();
        for (int i = 0; i < 300; i++) leak_round();
        long after = free_kib();
        printf("leak: %ld KiB\n", before - after);
        return 0;
    }
    counter_test();
    dev_zero_test();
    shm_file_test();
    coherence_test();
    protect_test();
    futex_test();
    mremap_test();
    errors_test();
    many_forks_test();
    return 0;
}
