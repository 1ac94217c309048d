// The vDSO as programs find it: through getauxval(AT_SYSINFO_EHDR),
// symbols resolved by parsing the image as Go's runtime does (GNU hash)
// and as musl does (SysV hash, with versions), the values checked against
// the system calls. Modes (argv[1]):
//   (none)      the checks below, one line each (same output natively)
//   loop N      N calls each of the libc clock functions, for the syscall count
//   vsyscall    calls through the legacy page at 0xffffffffff600000, the
//               last with a bad pointer (dies of SIGSEGV)
//   checkpoint  clocks before and after a snapshot point
//   threads     the same while another thread reads the clocks all along
//   exec        (internal) the image after execve
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef int (*cgt_fn)(clockid_t, struct timespec *);
typedef int (*gtod_fn)(struct timeval *, void *);
typedef long (*time_fn)(long *);
typedef int (*getcpu_fn)(unsigned *, unsigned *, void *);
typedef int (*getres_fn)(clockid_t, struct timespec *);

struct vdso {
    uintptr_t load; // load offset: base + p_offset - p_vaddr of the first PT_LOAD
    const char *strtab;
    const Elf64_Sym *symtab;
    const uint32_t *hash, *gnuhash;
    const uint16_t *versym;
    const Elf64_Verdef *verdef;
};

static int parse(uintptr_t base, struct vdso *v) {
    memset(v, 0, sizeof *v);
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)base;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64) return -1;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(base + eh->e_phoff);
    const Elf64_Dyn *dyn = NULL;
    int found_load = 0;
    for (int i = 0; i < eh->e_phnum; i++) {
        if (ph[i].p_type == PT_LOAD && !found_load) {
            found_load = 1;
            v->load = base + ph[i].p_offset - ph[i].p_vaddr;
        } else if (ph[i].p_type == PT_DYNAMIC) {
            dyn = (const Elf64_Dyn *)(base + ph[i].p_offset);
        }
    }
    if (!found_load || !dyn) return -2;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        uintptr_t p = v->load + dyn->d_un.d_ptr;
        switch (dyn->d_tag) {
        case DT_STRTAB: v->strtab = (const char *)p; break;
        case DT_SYMTAB: v->symtab = (const Elf64_Sym *)p; break;
        case DT_HASH: v->hash = (const uint32_t *)p; break;
        case DT_GNU_HASH: v->gnuhash = (const uint32_t *)p; break;
        case DT_VERSYM: v->versym = (const uint16_t *)p; break;
        case DT_VERDEF: v->verdef = (const Elf64_Verdef *)p; break;
        }
    }
    if (!v->strtab || !v->symtab || !v->hash || !v->gnuhash || !v->versym || !v->verdef) return -3;
    return 0;
}

static uint32_t elf_hash(const char *s) {
    uint32_t h = 0;
    for (; *s; s++) {
        h = (h << 4) + (unsigned char)*s;
        uint32_t g = h & 0xf0000000;
        if (g) h ^= g >> 24;
        h &= ~g;
    }
    return h;
}

static uint32_t gnu_hash(const char *s) {
    uint32_t h = 5381;
    for (; *s; s++) h = h * 33 + (unsigned char)*s;
    return h;
}

// The version index whose name is `ver`, as Go's vdsoFindVersion.
static int find_version(const struct vdso *v, const char *ver) {
    const Elf64_Verdef *d = v->verdef;
    for (;;) {
        if (!(d->vd_flags & VER_FLG_BASE)) {
            const Elf64_Verdaux *aux = (const Elf64_Verdaux *)((const char *)d + d->vd_aux);
            if (d->vd_hash == elf_hash(ver) && strcmp(v->strtab + aux->vda_name, ver) == 0)
                return d->vd_ndx & 0x7fff;
        }
        if (d->vd_next == 0) return -1;
        d = (const Elf64_Verdef *)((const char *)d + d->vd_next);
    }
}

static int sym_ok(const struct vdso *v, uint32_t i, const char *name, int ver) {
    const Elf64_Sym *s = &v->symtab[i];
    if (ELF64_ST_TYPE(s->st_info) != STT_FUNC) return 0;
    if (ELF64_ST_BIND(s->st_info) != STB_GLOBAL && ELF64_ST_BIND(s->st_info) != STB_WEAK) return 0;
    if (s->st_shndx == SHN_UNDEF) return 0;
    if (strcmp(v->strtab + s->st_name, name) != 0) return 0;
    return (v->versym[i] & 0x7fff) == ver;
}

// Go's way: the GNU hash table's buckets and chains.
static void *lookup_gnu(const struct vdso *v, const char *name, int ver) {
    const uint32_t *h = v->gnuhash;
    uint32_t nbucket = h[0], symoffset = h[1], bloom_size = h[2];
    const uint32_t *buckets = h + 4 + bloom_size * 2; // 64-bit bloom words
    const uint32_t *chains = buckets + nbucket;
    uint32_t hash = gnu_hash(name);
    uint32_t i = buckets[hash % nbucket];
    if (i < symoffset) return NULL;
    for (;; i++) {
        uint32_t ch = chains[i - symoffset];
        if ((ch | 1) == (hash | 1) && sym_ok(v, i, name, ver)) return (void *)(v->load + v->symtab[i].st_value);
        if (ch & 1) return NULL;
    }
}

// musl's way: every symbol the SysV hash table counts.
static void *lookup_sysv(const struct vdso *v, const char *name, int ver) {
    uint32_t nsym = v->hash[1];
    for (uint32_t i = 0; i < nsym; i++)
        if (sym_ok(v, i, name, ver)) return (void *)(v->load + v->symtab[i].st_value);
    return NULL;
}

static int64_t ns_of(struct timespec t) { return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec; }

static int64_t sys_ns(clockid_t c) {
    struct timespec t;
    if (syscall(SYS_clock_gettime, c, &t) != 0) return -1;
    return ns_of(t);
}

static struct {
    cgt_fn cgt;
    gtod_fn gtod;
    time_fn time;
    getcpu_fn getcpu;
    getres_fn getres;
} fn;

static int resolve(void) {
    uintptr_t base = getauxval(AT_SYSINFO_EHDR);
    if (!base) {
        printf("AT_SYSINFO_EHDR: missing\n");
        return -1;
    }
    struct vdso v;
    int r = parse(base, &v);
    if (r) {
        printf("parse: failed %d\n", r);
        return -1;
    }
    int ver = find_version(&v, "LINUX_2.6");
    printf("version LINUX_2.6: %s\n", ver > 0 ? "found" : "missing");
    const char *names[] = {"__vdso_clock_gettime", "__vdso_gettimeofday", "__vdso_time", "__vdso_getcpu",
                           "__vdso_clock_getres"};
    void *found[5];
    int all = 1;
    for (int i = 0; i < 5; i++) {
        void *g = lookup_gnu(&v, names[i], ver), *s = lookup_sysv(&v, names[i], ver);
        found[i] = g;
        if (!g || g != s) {
            printf("%s: gnu=%p sysv=%p\n", names[i], g, s);
            all = 0;
        }
    }
    printf("symbols: %s\n", all ? "all five, both hash tables agree" : "MISSING");
    printf("wrong version: %s\n", lookup_gnu(&v, "__vdso_clock_gettime", ver + 7) ? "found" : "not found");
    if (!all) return -1;
    fn.cgt = (cgt_fn)found[0];
    fn.gtod = (gtod_fn)found[1];
    fn.time = (time_fn)found[2];
    fn.getcpu = (getcpu_fn)found[3];
    fn.getres = (getres_fn)found[4];
    return 0;
}

// Monotonic (and boottime) never go back, over vDSO reads mixed with
// system calls; realtime agrees with the system call's.
static void check_clocks(const char *what) {
    const clockid_t clocks[] = {CLOCK_MONOTONIC, CLOCK_BOOTTIME, CLOCK_MONOTONIC_RAW};
    for (unsigned c = 0; c < sizeof clocks / sizeof clocks[0]; c++) {
        int64_t last = 0;
        int back = 0, errors = 0;
        for (int i = 0; i < 20000; i++) {
            int64_t now;
            if (i % 3 == 2) {
                now = sys_ns(clocks[c]);
            } else {
                struct timespec t;
                if (fn.cgt(clocks[c], &t) != 0) errors++;
                now = ns_of(t);
            }
            if (now < last) back++;
            last = now;
        }
        if (clocks[c] == CLOCK_MONOTONIC_RAW) continue; // its own base natively
        printf("%s clock %d: %d went back, %d errors\n", what, (int)clocks[c], back, errors);
    }
    int64_t worst = 0;
    for (int i = 0; i < 1000; i++) {
        struct timespec t;
        int64_t a = sys_ns(CLOCK_REALTIME);
        fn.cgt(CLOCK_REALTIME, &t);
        int64_t b = sys_ns(CLOCK_REALTIME);
        // The vDSO's read lies between two system calls' (10 ms slack for
        // a time slice in between).
        int64_t off = ns_of(t) < a ? a - ns_of(t) : ns_of(t) > b ? ns_of(t) - b : 0;
        if (off > worst) worst = off;
    }
    printf("%s realtime between syscalls: %s\n", what, worst < 10000000 ? "yes" : "NO");
}

static void check_rest(void) {
    struct timespec ts;
    struct timeval tv;
    fn.cgt(CLOCK_REALTIME, &ts);
    int r = fn.gtod(&tv, NULL);
    long t = -1, t2 = fn.time(&t);
    int64_t gap = ((int64_t)tv.tv_sec * 1000000 + tv.tv_usec) - ns_of(ts) / 1000;
    printf("gettimeofday: ret=%d consistent=%s\n", r, gap >= 0 && gap < 1000000 ? "yes" : "no");
    printf("time: same=%s consistent=%s\n", t == t2 ? "yes" : "no",
           t2 >= tv.tv_sec && t2 <= tv.tv_sec + 1 ? "yes" : "no");
    struct timezone tz = {123, 456};
    r = fn.gtod(&tv, &tz);
    printf("gettimeofday with tz: ret=%d tz=%d,%d\n", r, tz.tz_minuteswest, tz.tz_dsttime);
    tz.tz_minuteswest = 77;
    r = syscall(SYS_gettimeofday, &tv, &tz);
    printf("gettimeofday syscall with tz: ret=%d tz=%d,%d\n", r, tz.tz_minuteswest, tz.tz_dsttime);
    r = fn.gtod(NULL, NULL);
    printf("gettimeofday(NULL, NULL): ret=%d\n", r);
    printf("time(NULL): %s\n", fn.time(NULL) >= t2 ? "ok" : "back");
    unsigned cpu = 9999, node = 9999;
    r = fn.getcpu(&cpu, &node, NULL);
    printf("getcpu: ret=%d cpu=%s node=%s\n", r, cpu < 4096 ? "ok" : "bad", node < 64 ? "ok" : "bad");
    struct timespec res = {-1, -1};
    r = fn.getres(CLOCK_MONOTONIC, &res);
    printf("getres monotonic: ret=%d res=%s\n", r, res.tv_sec == 0 && res.tv_nsec > 0 ? "ok" : "bad");
    r = fn.getres(CLOCK_MONOTONIC, NULL);
    printf("getres NULL: ret=%d\n", r);
    // Clocks the vDSO leaves to the system call.
    r = fn.cgt(CLOCK_PROCESS_CPUTIME_ID, &ts);
    printf("cputime clock: ret=%d\n", r);
    r = fn.cgt(100, &ts);
    printf("unknown clock: ret=%d\n", r);
}

static void check_maps(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int vdso = 0, vvar = 0, vsys = 0;
    uintptr_t base = getauxval(AT_SYSINFO_EHDR);
    while (f && fgets(line, sizeof line, f)) {
        unsigned long start = strtoul(line, NULL, 16);
        if (strstr(line, "[vdso]")) vdso += start == base;
        if (strstr(line, "[vvar]")) vvar++;
        if (strstr(line, "[vsyscall]")) vsys++;
    }
    if (f) fclose(f);
    printf("maps: vdso=%s vvar=%s\n", vdso == 1 ? "at AT_SYSINFO_EHDR" : "no", vvar >= 1 ? "yes" : "no");
}

static int child_ok(void) {
    struct timespec t;
    return fn.cgt(CLOCK_MONOTONIC, &t) == 0 && t.tv_sec > 0;
}

static void loop(long n) {
    struct timespec ts;
    struct timeval tv;
    long sum = 0;
    for (long i = 0; i < n; i++) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        sum += ts.tv_nsec & 1;
        clock_gettime(CLOCK_REALTIME, &ts);
        gettimeofday(&tv, NULL);
        sum += time(NULL) & 1;
    }
    printf("loop: %ld rounds\n", n + (sum & 0));
}

static void vsyscall(void) {
    gtod_fn g = (gtod_fn)0xffffffffff600000UL;
    time_fn t = (time_fn)0xffffffffff600400UL;
    getcpu_fn c = (getcpu_fn)0xffffffffff600800UL;
    struct timeval tv;
    struct timespec ts;
    int r = g(&tv, NULL);
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t gap = ns_of(ts) / 1000 - ((int64_t)tv.tv_sec * 1000000 + tv.tv_usec);
    printf("vsyscall gettimeofday: ret=%d consistent=%s\n", r, gap >= 0 && gap < 1000000 ? "yes" : "no");
    long out = 0, secs = t(&out);
    printf("vsyscall time: same=%s consistent=%s\n", out == secs ? "yes" : "no",
           secs >= ts.tv_sec && secs <= ts.tv_sec + 1 ? "yes" : "no");
    unsigned cpu = 9999;
    r = c(&cpu, NULL, NULL);
    printf("vsyscall getcpu: ret=%d cpu=%s\n", r, cpu < 4096 ? "ok" : "bad");
    struct timezone tz = {77, 77};
    r = g(&tv, &tz);
    printf("vsyscall gettimeofday with tz: ret=%d tz=%d,%d\n", r, tz.tz_minuteswest, tz.tz_dsttime);
    printf("realtime_s=%lld\n", (long long)ts.tv_sec);
    fflush(stdout);
    // A bad pointer faults in the page, as in any function: SIGSEGV.
    g((struct timeval *)16, NULL);
    printf("bad pointer: no fault\n");
}

static void checkpoint(void) {
    struct timespec m0, r0, m1, r1;
    fn.cgt(CLOCK_MONOTONIC, &m0);
    fn.cgt(CLOCK_REALTIME, &r0);
    int fd = open("/dev/hvsandbox/checkpoint", O_RDONLY);
    char buf[256];
    if (fd >= 0) {
        while (read(fd, buf, sizeof buf) > 0) {
        }
        close(fd);
    }
    int64_t sys_m = sys_ns(CLOCK_MONOTONIC);
    fn.cgt(CLOCK_MONOTONIC, &m1);
    int64_t sys_m2 = sys_ns(CLOCK_MONOTONIC);
    fn.cgt(CLOCK_REALTIME, &r1);
    printf("monotonic after the checkpoint: %s\n",
           ns_of(m0) <= sys_m && sys_m <= ns_of(m1) && ns_of(m1) <= sys_m2 ? "not before it" : "WENT BACK");
    printf("realtime moved_ms=%lld\n", (long long)((ns_of(r1) - ns_of(r0)) / 1000000));
    printf("realtime_s=%lld\n", (long long)r1.tv_sec);
    check_clocks("resumed");
}

static volatile int stop;
static long reads, back;

// Reads the vDSO's monotonic clock until told to stop (time slices stop
// it anywhere, inside the vDSO too, and a snapshot may be taken then).
static void *reader(void *arg) {
    (void)arg;
    int64_t last = 0;
    while (!stop) {
        struct timespec t;
        fn.cgt(CLOCK_MONOTONIC, &t);
        if (ns_of(t) < last) back++;
        last = ns_of(t);
        reads++;
    }
    return NULL;
}

static void threads(void) {
    pthread_t th;
    pthread_create(&th, NULL, reader, NULL);
    struct timespec pause = {0, 50000000};
    nanosleep(&pause, NULL);
    checkpoint();
    nanosleep(&pause, NULL);
    stop = 1;
    pthread_join(th, NULL);
    printf("reader thread: reads>1000=%s went back %ld times\n", reads > 1000 ? "yes" : "no", back);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc > 2 && strcmp(argv[1], "loop") == 0) {
        loop(atol(argv[2]));
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "vsyscall") == 0) {
        vsyscall();
        return 0;
    }
    if (resolve() != 0) return 1;
    if (argc > 1 && strcmp(argv[1], "checkpoint") == 0) {
        checkpoint();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "threads") == 0) {
        threads();
        return 0;
    }
    if (argc > 1 && strcmp(argv[1], "exec") == 0) return child_ok() ? 0 : 3;
    check_clocks("first");
    check_rest();
    check_maps();
    pid_t pid = fork();
    if (pid == 0) _exit(child_ok() ? 0 : 3);
    int st = 0;
    waitpid(pid, &st, 0);
    printf("fork child: %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "failed");
    pid = fork();
    if (pid == 0) {
        execl("/proc/self/exe", argv[0], "exec", (char *)NULL);
        _exit(4);
    }
    waitpid(pid, &st, 0);
    printf("exec child: %s\n", WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "failed");
    // A child that makes its vDSO writable and wrecks it, then unmaps it,
    // does it to its own copy; the parent's (and a new child's) still works.
    pid = fork();
    if (pid == 0) {
        void *page = (void *)((uintptr_t)fn.cgt & ~(uintptr_t)0xfff);
        if (mprotect(page, 4096, PROT_READ | PROT_WRITE | PROT_EXEC) != 0) _exit(5);
        memset(page, 0xcc, 4096);
        if (munmap(page, 4096) != 0) _exit(6);
        _exit(0);
    }
    waitpid(pid, &st, 0);
    // (Linux may refuse the mprotect: a sealed vDSO; either way it exits.)
    printf("wrecking child: %s\n", WIFEXITED(st) ? "exited" : "killed");
    pid = fork();
    if (pid == 0) _exit(child_ok() ? 0 : 3);
    waitpid(pid, &st, 0);
    printf("after it: parent %s, new child %s\n", child_ok() ? "ok" : "broken",
           WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "ok" : "broken");
    return 0;
}
