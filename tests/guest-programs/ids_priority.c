/* Calls on ids, priorities and limits that behave the same with or
   without privilege, natively and in the sandbox: the nice value a child
   sets (getpriority, /proc/self/stat) and the parent keeps its own;
   processes that do not exist (ESRCH); setreuid/setregid(-1, -1) change
   nothing and succeed; chown of a missing path (ENOENT), of a bad
   descriptor (EBADF), of a file to the ids it has (0), lchown of a
   dangling symlink (0). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *err(int r) { return r == 0 ? "0" : errno == ESRCH ? "ESRCH" : errno == ENOENT ? "ENOENT" : errno == EBADF ? "EBADF" : strerror(errno); }

static int stat_nice(void) {
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')') + 2;
    int nice = 0;
    /* state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime priority nice */
    for (int field = 3; field < 19; field++) p = strchr(p, ' ') + 1;
    sscanf(p, "%d", &nice);
    return nice;
}

int main(void) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        int r = setpriority(PRIO_PROCESS, 0, 5);
        errno = 0;
        int now = getpriority(PRIO_PROCESS, 0);
        printf("child: setpriority 5: %d, getpriority %d, /proc nice %d\n", r, now, stat_nice());
        fflush(stdout);
        _exit(0);
    }
    waitpid(pid, NULL, 0);
    errno = 0;
    printf("parent: getpriority %d, /proc nice %d\n", getpriority(PRIO_PROCESS, 0), stat_nice());
    errno = 0;
    int r = getpriority(PRIO_PROCESS, 999999);
    printf("no such process: getpriority %d %s, setpriority %s", r, errno == ESRCH ? "ESRCH" : "?",
           err(setpriority(PRIO_PROCESS, 999999, 1)));
    struct rlimit rl;
    printf(", prlimit %s\n", err(prlimit(999999, RLIMIT_NOFILE, NULL, &rl)));
    printf("setreuid(-1, -1) %s, setregid(-1, -1) %s\n", err(setreuid(-1, -1)), err(setregid(-1, -1)));
    char dir[] = "/tmp/idsXXXXXX";
    mkdtemp(dir);
    char file[64], link[64];
    snprintf(file, sizeof file, "%s/f", dir);
    snprintf(link, sizeof link, "%s/l", dir);
    int fd = open(file, O_CREAT | O_WRONLY, 0600);
    symlink("/nonexistent/target", link);
    printf("chown missing %s, fchown bad fd %s, chown own %s, fchown own %s, lchown dangling %s\n",
           err(chown("/nonexistent/x", -1, -1)), err(fchown(-1, -1, -1)), err(chown(file, getuid(), getgid())),
           err(fchown(fd, -1, -1)), err(lchown(link, -1, -1)));
    close(fd);
    unlink(file);
    unlink(link);
    rmdir(dir);
    return 0;
}
