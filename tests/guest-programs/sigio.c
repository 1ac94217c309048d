// O_ASYNC (signal-driven I/O), run natively and in the guest and
// compared: SIGIO to the owner when input arrives on a pipe or a socket,
// F_SETSIG's signal with si_code, si_band and si_fd, POLL_OUT when a full
// pipe is emptied, nothing without an owner or once O_ASYNC is cleared,
// FIOASYNC, and a process waiting in sigsuspend woken by another's write.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int count, last_sig, last_code, last_fd;
static volatile long last_band;

static void on_signal(int sig, siginfo_t *si, void *ctx) {
    (void)ctx;
    count++;
    last_sig = sig;
    last_code = si->si_code;
    last_fd = si->si_fd;
    last_band = si->si_band;
}

static void report(const char *what) {
    printf("%s: signals %d", what, count);
    if (count) printf(", sig %s, code %d", last_sig == SIGIO ? "SIGIO" : last_sig == SIGRTMIN ? "RTMIN" : "other",
                      last_code);
    printf("\n");
    count = 0;
}

static void async_on(int fd, int on) {
    fcntl(fd, F_SETOWN, on ? getpid() : 0);
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, on ? fl | O_ASYNC : fl & ~O_ASYNC);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct sigaction sa = {0};
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigaction(SIGIO, &sa, NULL);
    sigaction(SIGRTMIN, &sa, NULL);

    int p[2];
    pipe(p);
    async_on(p[0], 1);
    printf("F_GETFL has O_ASYNC: %s\n", fcntl(p[0], F_GETFL) & O_ASYNC ? "yes" : "no");
    report("before any input");
    write(p[1], "a", 1);
    report("after a write");
    write(p[1], "b", 1);
    report("after a second write");
    char buf[70000];
    read(p[0], buf, sizeof buf);
    report("after the read");

    fcntl(p[0], F_SETSIG, SIGRTMIN);
    write(p[1], "c", 1);
    report("with F_SETSIG");
    printf("si_fd is the descriptor: %s, si_band has POLLIN: %s\n", last_fd == p[0] ? "yes" : "no",
           last_band & POLLIN ? "yes" : "no");
    read(p[0], buf, sizeof buf);
    fcntl(p[0], F_SETSIG, 0);

    // No owner: nothing.
    fcntl(p[0], F_SETOWN, 0);
    write(p[1], "d", 1);
    report("without an owner");
    read(p[0], buf, sizeof buf);
    // O_ASYNC cleared: nothing.
    async_on(p[0], 0);
    fcntl(p[0], F_SETOWN, getpid());
    write(p[1], "e", 1);
    report("with O_ASYNC cleared");
    read(p[0], buf, sizeof buf);

    // The write end: room after a full pipe is emptied.
    int q[2];
    pipe(q);
    fcntl(q[1], F_SETFL, O_NONBLOCK);
    long filled = 0, n;
    while ((n = write(q[1], buf, sizeof buf)) > 0) filled += n;
    async_on(q[1], 1);
    fcntl(q[1], F_SETSIG, SIGRTMIN);
    report("write end full");
    while (filled > 0 && (n = read(q[0], buf, sizeof buf)) > 0) filled -= n;
    report("write end emptied");
    printf("POLL_OUT from the write end: %s\n", last_fd == q[1] ? "yes" : "no");

    // A socket, through FIOASYNC.
    int s[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    fcntl(s[0], F_SETOWN, getpid());
    int on = 1;
    printf("FIOASYNC: %d\n", ioctl(s[0], FIOASYNC, &on));
    write(s[1], "x", 1);
    report("socket input");
    recv(s[0], buf, sizeof buf, 0);

    // A directory notification with F_SETSIG says POLL_MSG and the
    // directory's descriptor.
    char dir[] = "/tmp/sigio-XXXXXX";
    mkdtemp(dir);
    int d = open(dir, O_RDONLY | O_DIRECTORY);
    fcntl(d, F_SETSIG, SIGRTMIN);
    fcntl(d, F_NOTIFY, DN_CREATE);
    char path[64];
    snprintf(path, sizeof path, "%s/new", dir);
    close(open(path, O_CREAT | O_WRONLY, 0600));
    int dir_fd = last_fd;
    report("directory notification");
    printf("its si_fd is the directory's: %s\n", dir_fd == d ? "yes" : "no");
    unlink(path);
    rmdir(dir);
    close(d);

    // Another process's write wakes a process in sigsuspend.
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGIO);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t c = fork();
    if (c == 0) {
        usleep(20000);
        write(p[1], "f", 1);
        _exit(0);
    }
    async_on(p[0], 1);
    while (!count) sigsuspend(&old);
    report("woken by another process's write");
    waitpid(c, NULL, 0);
    return 0;
}
