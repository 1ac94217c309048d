// execve from a thread other than the main one, run natively and in the
// guest and compared: as on Linux, the calling thread becomes the main
// thread of the new program (its thread id is the process id), the
// other threads are gone, the parent's wait sees the same process, and
// the new program's threads get ids of their own.
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char *self;

static void *execer(void *arg) {
    (void)arg;
    printf("exec from a thread that is not main: %s\n", syscall(SYS_gettid) != getpid() ? "yes" : "no");
    execl(self, self, "after", (char *)NULL);
    printf("execl failed\n");
    return NULL;
}

static void *idle(void *arg) {
    (void)arg;
    for (;;) pause();
    return NULL;
}

static void *worker(void *arg) {
    *(long *)arg = syscall(SYS_gettid);
    return NULL;
}

static int threads(void) {
    int n = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    if (d) closedir(d);
    return n;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    self = argv[0];
    if (argc > 1) {
        pid_t pid = getpid();
        printf("after exec: tid is the pid: %s\n", syscall(SYS_gettid) == pid ? "yes" : "no");
        printf("after exec: threads %d\n", threads());
        char path[64];
        snprintf(path, sizeof path, "/proc/self/task/%d", (int)pid);
        printf("after exec: /proc/self/task/<pid> exists: %s\n", access(path, F_OK) == 0 ? "yes" : "no");
        long tid = 0;
        pthread_t t;
        pthread_create(&t, NULL, worker, &tid);
        pthread_join(t, NULL);
        printf("a new thread's id is its own: %s\n", tid != pid && tid > 0 ? "yes" : "no");
        return 5;
    }
    pid_t child = fork();
    if (child == 0) {
        pthread_t a, b;
        pthread_create(&a, NULL, idle, NULL);
        pthread_create(&b, NULL, execer, NULL);
        for (;;) pause();
    }
    int st;
    pid_t got = waitpid(child, &st, 0);
    printf("parent waited for the same process: %s, exit %d\n", got == child ? "yes" : "no", WEXITSTATUS(st));
    return 0;
}
