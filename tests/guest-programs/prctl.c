// prctl and thread names, run natively and in the guest and compared:
// names (prctl, pthread_setname_np on itself and on another thread, the
// comm files, stat and status), the name after execve, a parent-death
// signal, a child subreaper adopting an orphan, orphans going nowhere
// without one, and the flags prctl keeps (no_new_privs, dumpable,
// keepcaps, timer slack, THP, the bounding set).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Prints a file's text with its newlines shown as \n.
static void show(const char *label, const char *path) {
    char buf[256];
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        printf("%s: open errno %d\n", label, errno);
        return;
    }
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0) n = 0;
    buf[n] = 0;
    printf("%s: ", label);
    for (ssize_t i = 0; i < n; i++) {
        if (buf[i] == '\n') printf("\\n");
        else putchar(buf[i]);
    }
    printf("\n");
}

// The value of one line of /proc/self/status ("Name", "NoNewPrivs", ...).
static void status_line(const char *key) {
    char buf[4096];
    int fd = open("/proc/self/status", O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    size_t k = strlen(key);
    for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        if (strncmp(l, key, k) == 0 && l[k] == ':') {
            char *end = strchr(l, '\n');
            printf("status %.*s\n", (int)(end ? end - l : (long)strlen(l)), l);
            return;
        }
    }
    printf("status %s: missing\n", key);
}

static pthread_barrier_t bar;
static volatile pid_t worker_tid;

static void *worker(void *arg) {
    (void)arg;
    char name[16];
    prctl(PR_GET_NAME, name);
    printf("a new thread is named as its creator: %s\n", name);
    worker_tid = syscall(SYS_gettid);
    pthread_setname_np(pthread_self(), "worker-one");
    pthread_barrier_wait(&bar); // named
    pthread_barrier_wait(&bar); // renamed by main
    prctl(PR_GET_NAME, name);
    printf("the thread now calls itself: %s\n", name);
    return NULL;
}

static void names(void) {
    char name[32];
    printf("set name: %d\n", prctl(PR_SET_NAME, "a-very-long-thread-name"));
    memset(name, 'x', sizeof name);
    prctl(PR_GET_NAME, name);
    printf("get name: %s (%zu bytes)\n", name, strlen(name));
    show("comm", "/proc/self/comm");
    status_line("Name");
    char stat[512];
    int fd = open("/proc/self/stat", O_RDONLY);
    ssize_t n = read(fd, stat, sizeof stat - 1);
    close(fd);
    stat[n < 0 ? 0 : n] = 0;
    char *open_paren = strchr(stat, '('), *close_paren = strrchr(stat, ')');
    printf("stat name: %.*s\n", (int)(close_paren - open_paren + 1), open_paren);

    pthread_t t;
    pthread_barrier_init(&bar, NULL, 2);
    pthread_create(&t, NULL, worker, NULL);
    pthread_barrier_wait(&bar);
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)worker_tid);
    show("the thread's comm", path);
    memset(name, 0, sizeof name);
    printf("getname_np: %d %s\n", pthread_getname_np(t, name, sizeof name), name);
    printf("setname_np too long: %d\n", pthread_setname_np(t, "sixteen-letters!"));
    printf("setname_np: %d\n", pthread_setname_np(t, "renamed"));
    show("the thread's comm after", path);
    pthread_barrier_wait(&bar);
    pthread_join(t, NULL);
    show("main's comm is its own", "/proc/self/comm");

    // A write keeps what it writes, newline included, up to 15 bytes.
    fd = open("/proc/self/comm", O_WRONLY);
    printf("write comm: %zd\n", write(fd, "echoed\n", 7));
    close(fd);
    show("comm after a write", "/proc/self/comm");
    fd = open("/proc/self/comm", O_WRONLY);
    printf("write a long comm: %zd\n", write(fd, "0123456789abcdefghij", 20));
    close(fd);
    prctl(PR_GET_NAME, name);
    printf("get name after: %s\n", name);
    // Another process's comm is not ours to write.
    pid_t child = fork();
    if (child == 0) {
        pause();
        _exit(0);
    }
    snprintf(path, sizeof path, "/proc/%d/comm", (int)child);
    fd = open(path, O_WRONLY);
    errno = 0;
    ssize_t wrote = write(fd, "other", 5);
    printf("write another process's comm: %zd errno %d\n", wrote, errno);
    close(fd);
    show("the child's comm (inherited)", path);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
}

static void exec_name(const char *self) {
    pid_t child = fork();
    if (child == 0) {
        prctl(PR_SET_NAME, "before-exec");
        prctl(PR_SET_DUMPABLE, 0);
        execl(self, self, "after-exec", (char *)NULL);
        _exit(127);
    }
    int st;
    waitpid(child, &st, 0);
    printf("exec child exited %d\n", WEXITSTATUS(st));
}

static volatile sig_atomic_t got;
static void on_signal(int sig) { got = sig; }

// main → middle → child: the child asks for SIGUSR1 when its parent
// dies, then middle exits.
static void parent_death(int subreaper) {
    printf("subreaper %d: %d\n", subreaper, prctl(PR_SET_CHILD_SUBREAPER, subreaper));
    int is = -1;
    prctl(PR_GET_CHILD_SUBREAPER, &is);
    printf("get subreaper: %d\n", is);
    pid_t me = getpid();
    int ready[2], report[2];
    pipe(ready);
    pipe(report);
    pid_t middle = fork();
    if (middle == 0) {
        pid_t child = fork();
        if (child == 0) {
            signal(SIGUSR1, on_signal);
            sigset_t block, old;
            sigemptyset(&block);
            sigaddset(&block, SIGUSR1);
            sigprocmask(SIG_BLOCK, &block, &old);
            prctl(PR_SET_PDEATHSIG, SIGUSR1);
            int sig = 0;
            prctl(PR_GET_PDEATHSIG, &sig);
            pid_t parent = getppid();
            write(ready[1], "r", 1);
            while (!got) sigsuspend(&old);
            pid_t now = getppid();
            char line[160];
            int n = snprintf(line, sizeof line,
                             "  pdeathsig %d arrived: %d; parent changed: %s; adopted by main: %s\n", sig,
                             got, now != parent ? "yes" : "no",
                             subreaper ? (now == me ? "yes" : "no") : "(asked of wait)");
            write(report[1], line, n);
            _exit(7);
        }
        char c;
        read(ready[0], &c, 1);
        _exit(0);
    }
    close(ready[1]);
    close(report[1]);
    int st;
    waitpid(middle, &st, 0);
    char line[160];
    ssize_t n = read(report[0], line, sizeof line - 1);
    line[n < 0 ? 0 : n] = 0;
    printf("middle exited %d\n%s", WEXITSTATUS(st), line);
    // The orphan is main's child only if main is a subreaper.
    pid_t reaped = waitpid(-1, &st, 0);
    if (reaped > 0) printf("main reaped the orphan: exit %d\n", WEXITSTATUS(st));
    else printf("main has no other child: errno %d\n", errno);
    close(ready[0]);
    close(report[0]);
    prctl(PR_SET_CHILD_SUBREAPER, 0);
}

static void flags(void) {
    printf("no_new_privs: %d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    int r = prctl(PR_SET_NO_NEW_PRIVS, 2, 0, 0, 0);
    printf("set no_new_privs 2: %d errno %d\n", r, errno);
    printf("set no_new_privs: %d\n", prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));
    printf("no_new_privs: %d\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    status_line("NoNewPrivs");
    pid_t child = fork();
    if (child == 0) _exit(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    int st;
    waitpid(child, &st, 0);
    printf("a child keeps no_new_privs: %d\n", WEXITSTATUS(st));

    printf("dumpable: %d\n", prctl(PR_GET_DUMPABLE));
    printf("set dumpable 0: %d\n", prctl(PR_SET_DUMPABLE, 0));
    printf("dumpable: %d\n", prctl(PR_GET_DUMPABLE));
    r = prctl(PR_SET_DUMPABLE, 3);
    printf("set dumpable 3: %d errno %d\n", r, errno);
    prctl(PR_SET_DUMPABLE, 1);

    printf("keepcaps: %d\n", prctl(PR_GET_KEEPCAPS));
    printf("set keepcaps: %d\n", prctl(PR_SET_KEEPCAPS, 1));
    printf("keepcaps: %d\n", prctl(PR_GET_KEEPCAPS));

    int slack = prctl(PR_GET_TIMERSLACK);
    printf("set timer slack: %d\n", prctl(PR_SET_TIMERSLACK, 1000));
    printf("timer slack: %d\n", prctl(PR_GET_TIMERSLACK));
    prctl(PR_SET_TIMERSLACK, 0);
    printf("timer slack back to its default: %s\n", prctl(PR_GET_TIMERSLACK) == slack ? "yes" : "no");

    printf("thp disabled: %d\n", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));
    printf("disable thp: %d\n", prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0));
    printf("thp disabled: %d\n", prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0));

    printf("capbset has cap 0: %d, cap 40: %d\n", prctl(PR_CAPBSET_READ, 0), prctl(PR_CAPBSET_READ, 40));
    r = prctl(PR_CAPBSET_READ, 41);
    printf("capbset cap 41: %d errno %d\n", r, errno);
    printf("seccomp: %d\n", prctl(PR_GET_SECCOMP));
    int *tid_address = NULL;
    printf("tid address: %d, set: %s\n", prctl(PR_GET_TID_ADDRESS, &tid_address), tid_address ? "yes" : "no");
    r = prctl(PR_SET_PDEATHSIG, 65);
    printf("pdeathsig 65: %d errno %d\n", r, errno);
    r = prctl(0x7fff0000);
    printf("unknown option: %d errno %d\n", r, errno);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "after-exec") == 0) {
        char name[16];
        prctl(PR_GET_NAME, name);
        const char *base = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
        printf("after exec: named after the program: %s; dumpable again: %d\n",
               strncmp(name, base, 15) == 0 ? "yes" : "no", prctl(PR_GET_DUMPABLE));
        return 3;
    }
    names();
    exec_name(argv[0]);
    parent_death(1);
    parent_death(0);
    flags();
    return 0;
}
