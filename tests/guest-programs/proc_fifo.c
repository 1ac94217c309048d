/* A named pipe opened O_RDWR (never waits; reads back what it wrote;
 * counts as a reader and a writer), /proc/<pid>/cwd,
 * /proc/<pid>/task/<tid>/{comm,stat,status} with a second thread, and
 * file names and offsets of file mappings in /proc/self/maps. Prints
 * only what Linux defines: the test compares it with a native run. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int pollbits(int fd) {
    struct pollfd p = {fd, POLLIN | POLLOUT, 0};
    poll(&p, 1, 0);
    return p.revents;
}

static void fifo(void) {
    char path[64];
    snprintf(path, sizeof path, "/tmp/rdwr-fifo-%d", (int)getpid());
    mkfifo(path, 0600);
    int fd = open(path, O_RDWR);
    printf("O_RDWR open: %s\n", fd >= 0 ? "ok" : strerror(errno));
    struct stat st;
    fstat(fd, &st);
    printf("fstat: fifo %d\n", S_ISFIFO(st.st_mode));
    printf("poll empty: in %d out %d hup %d\n", !!(pollbits(fd) & POLLIN), !!(pollbits(fd) & POLLOUT),
           !!(pollbits(fd) & POLLHUP));
    printf("write: %ld\n", (long)write(fd, "abc", 3));
    printf("poll with data: in %d out %d\n", !!(pollbits(fd) & POLLIN), !!(pollbits(fd) & POLLOUT));
    char buf[16] = {0};
    printf("read back: %ld %s\n", (long)read(fd, buf, sizeof buf), buf);
    /* It is a reader: a nonblocking writer may open; and a writer: a
     * reader's open does not wait. */
    int w = open(path, O_WRONLY | O_NONBLOCK);
    printf("nonblocking writer: %s\n", w >= 0 ? "ok" : strerror(errno));
    int r = open(path, O_RDONLY);
    printf("reader: %s\n", r >= 0 ? "ok" : strerror(errno));
    write(w, "xyz", 3);
    memset(buf, 0, sizeof buf);
    printf("reader reads: %ld %s\n", (long)read(r, buf, sizeof buf), buf);
    close(w);
    close(fd);
    /* The last writer gone: the reader sees the end. */
    printf("after writers closed: %ld\n", (long)read(r, buf, sizeof buf));
    close(r);
    /* Through a child: the O_RDWR end passes data both ways. */
    fd = open(path, O_RDWR);
    pid_t c = fork();
    if (c == 0) {
        write(fd, "from child", 10);
        _exit(0);
    }
    waitpid(c, 0, 0);
    memset(buf, 0, sizeof buf);
    printf("from a child: %ld %s\n", (long)read(fd, buf, sizeof buf), buf);
    close(fd);
    unlink(path);
}

static void cwd(void) {
    char link[256] = {0};
    chdir("/tmp");
    long n = readlink("/proc/self/cwd", link, sizeof link - 1);
    printf("/proc/self/cwd: %ld %s\n", n, link);
    struct stat st;
    printf("stat through it: dir %d\n", stat("/proc/self/cwd/", &st) == 0 && S_ISDIR(st.st_mode));
    mkdir("/tmp/cwd-sub", 0700);
    chdir("/tmp/cwd-sub");
    memset(link, 0, sizeof link);
    readlink("/proc/self/cwd", link, sizeof link - 1);
    printf("after chdir: %s\n", link);
    /* Another process's. */
    int p[2], q[2];
    pipe(p);
    pipe(q);
    pid_t c = fork();
    if (c == 0) {
        chdir("/");
        write(p[1], "x", 1);
        char x;
        read(q[0], &x, 1);
        _exit(0);
    }
    char x;
    read(p[0], &x, 1);
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cwd", (int)c);
    memset(link, 0, sizeof link);
    readlink(path, link, sizeof link - 1);
    printf("child's cwd: %s\n", link);
    write(q[1], "x", 1);
    waitpid(c, 0, 0);
    chdir("/tmp");
    rmdir("/tmp/cwd-sub");
}

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int started, done;
static pid_t thread_tid;

static void *worker(void *arg) {
    (void)arg;
    pthread_mutex_lock(&m);
    thread_tid = (pid_t)syscall(SYS_gettid);
    started = 1;
    pthread_cond_broadcast(&cv);
    while (!done) pthread_cond_wait(&cv, &m);
    pthread_mutex_unlock(&m);
    return 0;
}

static char *slurp(const char *path) {
    static char buf[4096];
    memset(buf, 0, sizeof buf);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return 0;
    long n = read(fd, buf, sizeof buf - 1);
    close(fd);
    return n >= 0 ? buf : 0;
}

static int count_tasks(void) {
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void tasks(void) {
    printf("tasks alone: %d\n", count_tasks());
    char own[64];
    snprintf(own, sizeof own, "/proc/self/task/%d", (int)getpid());
    struct stat st;
    printf("own task dir: %d\n", stat(own, &st) == 0 && S_ISDIR(st.st_mode));
    pthread_t t;
    pthread_create(&t, 0, worker, 0);
    pthread_mutex_lock(&m);
    while (!started) pthread_cond_wait(&cv, &m);
    pthread_mutex_unlock(&m);
    printf("tasks with a thread: %d\n", count_tasks());
    char path[128], comm[64];
    snprintf(comm, sizeof comm, "%s", slurp("/proc/self/comm"));
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)thread_tid);
    char *c = slurp(path);
    printf("thread comm = process comm: %d\n", c && !strcmp(c, comm));
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)getpid(), (int)thread_tid);
    c = slurp(path);
    printf("thread stat starts with its tid: %d\n", c && atoi(c) == thread_tid);
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)thread_tid);
    c = slurp(path);
    char want[64];
    snprintf(want, sizeof want, "\nPid:\t%d\n", (int)thread_tid);
    char tgid[64];
    snprintf(tgid, sizeof tgid, "\nTgid:\t%d\n", (int)getpid());
    printf("thread status: pid %d tgid %d\n", c && strstr(c, want) != 0, c && strstr(c, tgid) != 0);
    snprintf(path, sizeof path, "/proc/self/task/%d", 999999);
    int r = stat(path, &st);
    printf("no such thread: %d %s\n", r, errno == ENOENT ? "ENOENT" : "other");
    pthread_mutex_lock(&m);
    done = 1;
    pthread_cond_broadcast(&cv);
    pthread_mutex_unlock(&m);
    pthread_join(t, 0);
    printf("tasks after join: %d\n", count_tasks());
}

/* The /proc/self/maps line of address `a` (0: none), in `line`. */
static int maps_line(void *a, char *line, size_t size) {
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f) return 0;
    int found = 0;
    while (fgets(line, (int)size, f)) {
        unsigned long s, e;
        if (sscanf(line, "%lx-%lx", &s, &e) == 2 && s <= (unsigned long)a && (unsigned long)a < e) {
            found = 1;
            break;
        }
    }
    fclose(f);
    line[strcspn(line, "\n")] = 0;
    return found;
}

/* Field `k` (0-based, space-separated) of a maps line. */
static const char *field(const char *line, int k, char *out) {
    int n = 0;
    const char *p = line;
    while (k-- > 0) {
        p = strchr(p, ' ');
        if (!p) return "";
        while (*p == ' ') p++;
    }
    while (p[n] && p[n] != ' ') n++;
    memcpy(out, p, n);
    out[n] = 0;
    return out;
}

static void maps(void) {
    const char *path = "/tmp/maps-file";
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    char page[4096];
    memset(page, 'x', sizeof page);
    for (int i = 0; i < 4; i++) write(fd, page, sizeof page);
    char *m = mmap(0, 3 * 4096, PROT_READ, MAP_PRIVATE, fd, 4096);
    close(fd);
    char line[512], f[256];
    int found = maps_line(m, line, sizeof line);
    printf("maps: found %d offset %s perms %s\n", found, field(line, 2, f), field(line, 1, f + 128));
    printf("maps: name %s inode>0 %d\n", field(line, 5, f), atol(field(line, 4, f + 128)) > 0);
    munmap(m, 4096);
    found = maps_line(m + 4096, line, sizeof line);
    printf("after unmapping the first page: offset %s name %s\n", field(line, 2, f), field(line, 5, f + 128));
    munmap(m + 4096, 2 * 4096);
    printf("after unmapping all: found %d\n", maps_line(m + 4096, line, sizeof line) && strstr(line, path));
    char *anon = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    maps_line(anon, line, sizeof line);
    printf("anonymous: offset %s inode %s name \"%s\"\n", field(line, 2, f), field(line, 4, f + 64),
           field(line, 5, f + 128));
    unlink(path);
}

int main(void) {
    setvbuf(stdout, 0, _IOLBF, 0);
    fifo();
    cwd();
    tasks();
    maps();
    return 0;
}
