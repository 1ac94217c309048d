#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <unistd.h>
/* What /proc and /dev/fd show, printed as checks that hold both natively
 * and in the sandbox (counts, formats, consistency; no host values). */
extern char **environ;

/* Initialized data: in the program's writable segment, from its file. */
static volatile int initialized = 1;
static char buf[1 << 16];

static long slurp(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -errno;
    long n = 0, r;
    while ((r = read(fd, buf + n, sizeof buf - 1 - n)) > 0) n += r;
    close(fd);
    buf[n] = 0;
    return n;
}

static const char *yes(int c) { return c ? "yes" : "no"; }

static long field(const char *key) {
    char *p = strstr(buf, key);
    return p ? strtol(p + strlen(key), NULL, 10) : -1;
}

static void pid_stat(const char *path, int pid, int ppid) {
    slurp(path);
    char *close_paren = strrchr(buf, ')');
    int fields = 2;
    for (char *p = close_paren + 1; *p; p++)
        if (*p == ' ') fields++;
    char state = close_paren[2];
    long spid = strtol(buf, NULL, 10);
    long sppid = strtol(close_paren + 4, NULL, 10);
    printf("%s: fields=%d pid=%s ppid=%s state=%s\n", path[6] == 's' ? "self/stat" : "child/stat", fields,
           yes(spid == pid), yes(sppid == ppid), yes(state == 'R' || state == 'S'));
}

int main(int argc, char **argv) {
    char path[64];
    /* /proc/self/stat and status */
    pid_stat("/proc/self/stat", getpid(), getppid());
    char base[16] = {0};
    strncpy(base, strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0], 15);
    slurp("/proc/self/status");
    printf("status: pid=%s ppid=%s uid=%s name=%s vmrss=%s threads=%ld\n", yes(field("\nPid:") == getpid()),
           yes(field("\nPPid:") == getppid()), yes(field("\nUid:") == (long)getuid()),
           yes(strncmp(buf + 6, base, strlen(base)) == 0 && buf[6 + strlen(base)] == '\n'), yes(strstr(buf, "\nVmRSS:") != NULL), field("\nThreads:"));
    /* The mask in octal, the root link, the files the process's user's. */
    mode_t old_mask = umask(027);
    slurp("/proc/self/status");
    umask(old_mask);
    char root[16] = "";
    readlink("/proc/self/root", root, sizeof root - 1);
    struct stat st_status;
    stat("/proc/self/status", &st_status);
    printf("status umask: %s; root link: %s; status owned by the process's user: %s\n",
           strstr(buf, "\nUmask:\t0027\n") ? "0027" : "?", root, yes(st_status.st_uid == getuid()));
    /* cmdline and environ: the strings the program was given */
    long n = slurp("/proc/self/cmdline");
    long want = 0;
    for (int i = 0; i < argc; i++) want += strlen(argv[i]) + 1;
    printf("cmdline: len=%s argv0=%s\n", yes(n == want), yes(strcmp(buf, argv[0]) == 0));
    n = slurp("/proc/self/environ");
    want = 0;
    for (char **e = environ; *e; e++) want += strlen(*e) + 1;
    printf("environ: len=%s first=%s\n", yes(n == want), yes(!environ[0] || strcmp(buf, environ[0]) == 0));
    /* maps: every line parses; the stack, code and a fresh mapping are there */
    void *m = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* The program's code and data lines name its file, as exe does. */
    char exe[256] = "";
    struct stat exe_st = {0};
    readlink("/proc/self/exe", exe, sizeof exe - 1);
    stat("/proc/self/exe", &exe_st);
    slurp("/proc/self/maps");
    int lines = 0, bad = 0, stack = 0, code = 0, anon = 0, code_named = 0, data_named = 0;
    unsigned long here = (unsigned long)&lines, fn = (unsigned long)&main, mm = (unsigned long)m;
    unsigned long data = (unsigned long)&initialized;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        unsigned long s, e, off, ino;
        unsigned maj, mi;
        char perms[5];
        int name_at = 0;
        lines++;
        if (sscanf(line, "%lx-%lx %4s %lx %x:%x %lu %n", &s, &e, perms, &off, &maj, &mi, &ino, &name_at) != 7 ||
            s >= e)
            bad++;
        int ours = name_at > 0 && strcmp(line + name_at, exe) == 0 && ino == exe_st.st_ino;
        if (s <= here && here < e) stack = strstr(line, "[stack]") != NULL && perms[1] == 'w';
        if (s <= fn && fn < e) code = perms[0] == 'r' && perms[2] == 'x', code_named = ours;
        if (s <= data && data < e) data_named = ours && perms[1] == 'w';
        if (s <= mm && mm + (1 << 20) <= e) anon = strncmp(perms, "rw-p", 4) == 0;
    }
    printf("maps: lines>3=%s bad=%d stack=%s code=%s mmap=%s\n", yes(lines > 3), bad, yes(stack), yes(code), yes(anon));
    printf("maps: code names the program=%s data names it=%s\n", yes(code_named), yes(data_named));
    /* /proc/self/fd lists the descriptors; links name files and pipes */
    int p[2];
    pipe(p);
    int null = open("/dev/null", O_RDONLY);
    DIR *d = opendir("/proc/self/fd");
    int seen = 0;
    for (struct dirent *e; (e = readdir(d));) {
        int fd = atoi(e->d_name);
        if (e->d_name[0] != '.' && (fd <= 2 || fd == p[0] || fd == p[1] || fd == null)) seen++;
    }
    closedir(d);
    char link[256] = {0};
    snprintf(path, sizeof path, "/proc/self/fd/%d", null);
    readlink(path, link, sizeof link - 1);
    char plink[256] = {0};
    snprintf(path, sizeof path, "/proc/self/fd/%d", p[0]);
    readlink(path, plink, sizeof plink - 1);
    printf("fd: listed=%d null=%s pipe=%s\n", seen, link, yes(strncmp(plink, "pipe:[", 6) == 0));
    /* /dev/fd/N of a pipe opens the pipe; stat shows a FIFO */
    write(p[1], "through", 7);
    snprintf(path, sizeof path, "/dev/fd/%d", p[0]);
    struct stat st;
    int sr = stat(path, &st);
    int again = open(path, O_RDONLY);
    char got[16] = {0};
    long r = again >= 0 ? read(again, got, sizeof got - 1) : -1;
    printf("dev/fd: stat=%d fifo=%s open=%s read=%ld %s\n", sr, yes(S_ISFIFO(st.st_mode)), yes(again >= 0), r, got);
    close(again);
    /* /dev/stdin when stdin is a pipe */
    int saved = dup(0);
    dup2(p[0], 0);
    write(p[1], "stdin!", 6);
    int in = open("/dev/stdin", O_RDONLY);
    memset(got, 0, sizeof got);
    r = in >= 0 ? read(in, got, sizeof got - 1) : -1;
    printf("dev/stdin: open=%s read=%ld %s\n", yes(in >= 0), r, got);
    close(in);
    dup2(saved, 0);
    /* /proc/<pid> of a child: listed, its stat names us as parent; gone once reaped */
    int go[2];
    pipe(go);
    pid_t child = fork();
    if (child == 0) {
        char c;
        close(go[1]);
        read(go[0], &c, 1);
        _exit(0);
    }
    close(go[0]);
    usleep(20000);
    d = opendir("/proc");
    int listed = 0, self_listed = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (atoi(e->d_name) == child) listed = 1;
        if (atoi(e->d_name) == getpid()) self_listed = 1;
    }
    closedir(d);
    printf("proc: child listed=%s self listed=%s\n", yes(listed), yes(self_listed));
    snprintf(path, sizeof path, "/proc/%d/stat", child);
    pid_stat(path, child, getpid());
    close(go[1]);
    waitpid(child, NULL, 0);
    snprintf(path, sizeof path, "/proc/%d/stat", child);
    printf("reaped: %s\n", slurp(path) == -ENOENT ? "ENOENT" : "still there");
    /* cpuinfo, stat: as many CPUs as sysconf says are online */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    slurp("/proc/cpuinfo");
    int procs = 0;
    for (char *q = buf; (q = strstr(q, "processor\t:")); q++) procs++;
    printf("cpuinfo: processors==online=%s flags=%s\n", yes(procs == cpus), yes(strstr(buf, "\nflags\t\t:") != NULL));
    slurp("/proc/stat");
    int cpun = 0;
    for (char *q = buf; (q = strstr(q, "\ncpu")); q++) cpun++;
    printf("stat: cpu line=%s cpuN==online=%s btime=%s\n", yes(strncmp(buf, "cpu ", 4) == 0), yes(cpun == cpus),
           yes(field("\nbtime ") > 1000000000));
    /* meminfo agrees with sysinfo */
    struct sysinfo si;
    sysinfo(&si);
    slurp("/proc/meminfo");
    long total = field("MemTotal:"), avail = field("\nMemAvailable:");
    printf("meminfo: total==sysinfo=%s available<=total=%s\n",
           yes((unsigned long long)total * 1024 == (unsigned long long)si.totalram * si.mem_unit),
           yes(avail >= 0 && avail <= total));
    slurp("/proc/uptime");
    double up = 0, idle = 0;
    int parsed = sscanf(buf, "%lf %lf", &up, &idle);
    printf("uptime: parsed=%d positive=%s\n", parsed, yes(up > 0 && idle >= 0));
    return 0;
}
