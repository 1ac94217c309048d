/* A pipe's capacity (fcntl F_GETPIPE_SZ / F_SETPIPE_SZ), as on Linux: 64
   KiB new; a request rounds up to a power of two pages; a pipe takes
   exactly that much before a nonblocking write gets EAGAIN; it cannot
   shrink below what it holds (EBUSY); sockets have no pipe size. Writes
   as POSIX has them: one of at most PIPE_BUF bytes all or nothing
   (EAGAIN), a blocking one whole (it waits for the reader). */
#include <signal.h>
#include <sys/time.h>
#include <sys/wait.h>
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static char buf[1 << 18];

static void on_alarm(int sig) { (void)sig; }

/* Bytes a nonblocking write loop gets into `fd` until EAGAIN. */
static long fill(int fd) {
    long n = 0;
    for (;;) {
        ssize_t w = write(fd, buf, 4096);
        if (w < 0) return errno == EAGAIN ? n : -errno;
        n += w;
    }
}

int main(void) {
    int p[2];
    pipe2(p, O_NONBLOCK);
    printf("new: %d\n", fcntl(p[1], F_GETPIPE_SZ));
    int set = fcntl(p[1], F_SETPIPE_SZ, 100000);
    int now = fcntl(p[1], F_GETPIPE_SZ);
    printf("set 100000: %d, now %d (read end %d)\n", set, now, fcntl(p[0], F_GETPIPE_SZ));
    printf("holds: %ld\n", fill(p[1]));
    int r = fcntl(p[1], F_SETPIPE_SZ, 4096);
    printf("shrink while full: %d %s\n", r, r < 0 && errno == EBUSY ? "EBUSY" : "?");
    while (read(p[0], buf, sizeof buf) > 0) {
    }
    set = fcntl(p[1], F_SETPIPE_SZ, 0);
    printf("set 0 when empty: %d; holds %ld\n", set, fill(p[1]));
    while (read(p[0], buf, sizeof buf) > 0) {
    }
    /* All or nothing for at most PIPE_BUF bytes. */
    long a = write(p[1], buf, 4000);
    long b = write(p[1], buf, 200);
    int e = errno;
    long c = write(p[1], buf, 96);
    printf("4000, then 200: %ld %ld %s, then 96: %ld\n", a, b, b < 0 && e == EAGAIN ? "EAGAIN" : "?", c);
    close(p[0]);
    close(p[1]);
    /* A blocking write of more than the room left: whole, once the
       reader (the parent, after a pause) has made room. */
    pipe(p);
    write(p[1], buf, 30000);
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        long w = write(p[1], buf, 60000);
        _exit(w == 60000 ? 0 : 1);
    }
    close(p[1]);
    usleep(20000);
    long got = 0;
    for (long n; (n = read(p[0], buf, sizeof buf)) > 0;) got += n;
    int st = 0;
    waitpid(child, &st, 0);
    printf("blocking write of 60000 behind 30000: %s, read %ld\n",
           WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "whole" : "short", got);
    /* Larger than the pipe: whole too, the reader taking it bit by bit. */
    pipe(p);
    child = fork();
    if (child == 0) {
        close(p[0]);
        long w = write(p[1], buf, 200000);
        _exit(w == 200000 ? 0 : 1);
    }
    close(p[1]);
    got = 0;
    for (long n; (n = read(p[0], buf, 5000)) > 0;) got += n;
    waitpid(child, &st, 0);
    printf("blocking write of 200000 into 65536: %s, read %ld\n",
           WIFEXITED(st) && WEXITSTATUS(st) == 0 ? "whole" : "short", got);
    close(p[0]);
    /* Interrupted by a handler once part of it is in: that count, with
       SA_RESTART or without. */
    for (int restart = 0; restart < 2; restart++) {
        pipe(p);
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_alarm;
        sa.sa_flags = restart ? SA_RESTART : 0;
        sigaction(SIGALRM, &sa, NULL);
        struct itimerval it = {{0, 0}, {0, 50000}};
        setitimer(ITIMER_REAL, &it, NULL);
        long w = write(p[1], buf, 200000);
        printf("interrupted (SA_RESTART %d): %ld\n", restart, w);
        close(p[0]);
        close(p[1]);
    }
    int s[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    r = fcntl(s[0], F_GETPIPE_SZ);
    printf("socket: %d %s\n", r, r < 0 && errno == EBADF ? "EBADF" : "?");
    return 0;
}
