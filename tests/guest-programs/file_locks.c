/* Advisory file locks as Linux keeps them: fcntl record locks belong to
   a process (a child does not inherit them and conflicts with them;
   closing any descriptor of the file drops them; F_SETLKW waits for
   them), read locks share, ranges split and merge, F_GETLK names the
   holder; open-file-description locks (F_OFD_*) belong to the open file
   (two opens in one process conflict); flock locks belong to the open
   file too, follow it through fork, and never meet record locks. A wait
   that would close a circle of processes waiting for each other's locks
   is EDEADLK. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static char path[] = "/tmp/locksXXXXXX";

static int lk(int fd, int cmd, short type, short whence, long start, long len) {
    struct flock f;
    memset(&f, 0, sizeof f);
    f.l_type = type;
    f.l_whence = whence;
    f.l_start = start;
    f.l_len = len;
    return fcntl(fd, cmd, &f) < 0 ? -errno : 0;
}

static const char *err(int r) {
    if (r == 0) return "ok";
    if (r == -EAGAIN) return "EAGAIN";
    if (r == -EACCES) return "EACCES";
    if (r == -EBADF) return "EBADF";
    if (r == -EINVAL) return "EINVAL";
    return "other";
}

/* What F_GETLK (or F_OFD_GETLK) says of [start, start+len) for a writer. */
static void query(const char *what, int fd, int cmd, long start, long len) {
    struct flock f;
    memset(&f, 0, sizeof f);
    f.l_type = F_WRLCK;
    f.l_start = start;
    f.l_len = len;
    if (fcntl(fd, cmd, &f) < 0) {
        printf("%s: getlk %s\n", what, err(-errno));
        return;
    }
    if (f.l_type == F_UNLCK) {
        printf("%s: free\n", what);
        return;
    }
    const char *who = f.l_pid == getppid() ? "parent" : f.l_pid == getpid() ? "me" : f.l_pid == -1 ? "-1" : "other";
    printf("%s: %s lock at %ld len %ld by %s\n", what, f.l_type == F_WRLCK ? "write" : "read", (long)f.l_start,
           (long)f.l_len, who);
}

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, 0);
}

/* Runs `child` in a forked process and waits for it. */
static void in_child(void (*child)(int), int fd) {
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        child(fd);
        fflush(stdout);
        _exit(0);
    }
    waitpid(pid, 0, 0);
}

static void child_sees_parents_locks(int fd) {
    query("child, bytes 0-99", fd, F_GETLK, 0, 100);
    query("child, bytes 40-59", fd, F_GETLK, 40, 20);
    query("child, bytes 100-", fd, F_GETLK, 100, 0);
    printf("child write 10-19: %s\n", err(lk(fd, F_SETLK, F_WRLCK, SEEK_SET, 10, 10)));
    printf("child read 0-9: %s\n", err(lk(fd, F_SETLK, F_RDLCK, SEEK_SET, 0, 10)));
    printf("child write 200-: %s\n", err(lk(fd, F_SETLK, F_WRLCK, SEEK_SET, 200, 0)));
}

static void child_sees_read_locks(int fd) {
    printf("child read 0-9: %s\n", err(lk(fd, F_SETLK, F_RDLCK, SEEK_SET, 0, 10)));
    printf("child write 5-5: %s\n", err(lk(fd, F_SETLK, F_WRLCK, SEEK_SET, 5, 1)));
    query("child, relative to the position", fd, F_GETLK, 0, 0);
}

static void child_tries_flock(int fd) {
    printf("child flock on the shared open file: %s\n", err(flock(fd, LOCK_EX | LOCK_NB) < 0 ? -errno : 0));
    int again = open(path, O_RDWR);
    printf("child flock on its own open: %s\n", err(flock(again, LOCK_SH | LOCK_NB) < 0 ? -errno : 0));
    printf("child record lock beside it: %s\n", err(lk(again, F_SETLK, F_WRLCK, SEEK_SET, 0, 0)));
    close(again);
}

int main(void) {
    int fd = mkstemp(path);
    if (fd < 0) return 1;
    if (write(fd, "0123456789", 10) != 10) return 1;

    /* A write lock on 0-99 with a hole at 40-59 cut out of it. */
    printf("write 0-99: %s\n", err(lk(fd, F_SETLK, F_WRLCK, SEEK_SET, 0, 100)));
    printf("unlock 40-59: %s\n", err(lk(fd, F_SETLK, F_UNLCK, SEEK_SET, 40, 20)));
    query("own lock", fd, F_GETLK, 0, 100);
    in_child(child_sees_parents_locks, fd);

    /* Closing any descriptor of the file drops the process's locks. */
    int other = open(path, O_RDONLY);
    close(other);
    in_child(child_sees_parents_locks, fd);

    /* Read locks share; the position and the end place a range. */
    lseek(fd, 5, SEEK_SET);
    printf("read 5-9 (SEEK_CUR): %s\n", err(lk(fd, F_SETLK, F_RDLCK, SEEK_CUR, 0, 5)));
    printf("read from the end back 2 (SEEK_END): %s\n", err(lk(fd, F_SETLK, F_RDLCK, SEEK_END, -2, 0)));
    in_child(child_sees_read_locks, fd);
    lk(fd, F_SETLK, F_UNLCK, SEEK_SET, 0, 0);

    /* F_SETLKW waits until the holder lets go (here: by closing). */
    int held = open(path, O_RDWR);
    lk(held, F_SETLK, F_WRLCK, SEEK_SET, 0, 1);
    int p[2];
    if (pipe(p) < 0) return 1;
    fflush(stdout);
    pid_t waiter = fork();
    if (waiter == 0) {
        close(p[0]);
        int r = lk(fd, F_SETLK, F_WRLCK, SEEK_SET, 0, 1);
        if (write(p[1], "x", 1) != 1) _exit(2);
        int w = lk(fd, F_SETLKW, F_WRLCK, SEEK_SET, 0, 1);
        printf("waiter: first %s, then waited: %s\n", err(r), err(w));
        fflush(stdout);
        _exit(0);
    }
    close(p[1]);
    char c;
    if (read(p[0], &c, 1) != 1) return 1;
    sleep_ms(50);
    printf("holder closes\n");
    fflush(stdout);
    close(held);
    waitpid(waiter, 0, 0);

    /* Two processes each waiting for the other's lock: EDEADLK. */
    int q[2];
    if (pipe(q) < 0) return 1;
    lk(fd, F_SETLK, F_WRLCK, SEEK_SET, 0, 1);
    fflush(stdout);
    waiter = fork();
    if (waiter == 0) {
        close(q[0]);
        lk(fd, F_SETLK, F_WRLCK, SEEK_SET, 1, 1);
        if (write(q[1], "x", 1) != 1) _exit(2);
        int w = lk(fd, F_SETLKW, F_WRLCK, SEEK_SET, 0, 1);
        printf("child waited for byte 0: %s\n", err(w));
        fflush(stdout);
        _exit(0);
    }
    close(q[1]);
    if (read(q[0], &c, 1) != 1) return 1;
    sleep_ms(50);
    int dl = lk(fd, F_SETLKW, F_WRLCK, SEEK_SET, 1, 1);
    printf("waiting for the waiting child's byte 1: %s\n", dl == -EDEADLK ? "EDEADLK" : err(dl));
    fflush(stdout);
    lk(fd, F_SETLK, F_UNLCK, SEEK_SET, 0, 1);
    waitpid(waiter, 0, 0);

    /* Open-file-description locks: per open, even in one process. */
    int a = open(path, O_RDWR), b = open(path, O_RDWR);
    printf("ofd write on a: %s\n", err(lk(a, F_OFD_SETLK, F_WRLCK, SEEK_SET, 0, 10)));
    printf("ofd write on b: %s\n", err(lk(b, F_OFD_SETLK, F_WRLCK, SEEK_SET, 5, 10)));
    printf("process lock beside it: %s\n", err(lk(b, F_SETLK, F_RDLCK, SEEK_SET, 0, 1)));
    query("ofd query on b", b, F_OFD_GETLK, 0, 0);
    query("process query", b, F_GETLK, 0, 0);
    close(a);
    printf("ofd write on b after a closed: %s\n", err(lk(b, F_OFD_SETLK, F_WRLCK, SEEK_SET, 5, 10)));
    close(b);

    /* flock: per open file, kept through fork, apart from record locks. */
    a = open(path, O_RDWR);
    b = open(path, O_RDWR);
    printf("flock ex on a: %s\n", err(flock(a, LOCK_EX) < 0 ? -errno : 0));
    printf("flock sh on b: %s\n", err(flock(b, LOCK_SH | LOCK_NB) < 0 ? -errno : 0));
    in_child(child_tries_flock, a);
    printf("flock sh on a (a conversion): %s\n", err(flock(a, LOCK_SH) < 0 ? -errno : 0));
    printf("flock sh on b: %s\n", err(flock(b, LOCK_SH | LOCK_NB) < 0 ? -errno : 0));
    printf("flock bad operation: %s\n", err(flock(b, 0) < 0 ? -errno : 0));

    /* Bad requests. */
    int ro = open(path, O_RDONLY);
    printf("write lock on a read-only descriptor: %s\n", err(lk(ro, F_SETLK, F_WRLCK, SEEK_SET, 0, 1)));
    printf("bad type: %s\n", err(lk(ro, F_SETLK, 7, SEEK_SET, 0, 1)));
    printf("bad whence: %s\n", err(lk(ro, F_SETLK, F_RDLCK, 9, 0, 1)));
    printf("before the start: %s\n", err(lk(ro, F_SETLK, F_RDLCK, SEEK_SET, -1, 1)));
    printf("getlk of F_UNLCK: %s\n", err(lk(ro, F_GETLK, F_UNLCK, SEEK_SET, 0, 1)));
    printf("negative length: %s\n", err(lk(ro, F_SETLK, F_RDLCK, SEEK_SET, 10, -5)));
    unlink(path);
    return 0;
}
