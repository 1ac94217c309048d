/* Which blocking calls a signal handler interrupts, with and without
 * SA_RESTART: on Linux poll, ppoll, select, pselect, epoll_wait and
 * epoll_pwait always end with EINTR; read of a pipe and wait4 run again
 * with SA_RESTART and end with EINTR without it. A child sends SIGUSR1
 * every 20 ms until the parent's call has returned, and makes the call
 * able to finish (writes a byte, exits) only after 50 signals, so the
 * outcome does not depend on when the parent got to block. Prints one
 * line per case; the test compares it with the same program run natively. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t handled;
static void on_usr1(int sig) { (void)sig; handled++; }

static const char *ops[] = {"read", "poll", "ppoll", "select", "pselect", "epoll_wait", "epoll_pwait", "wait4"};

static void run(int op, int restart) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGUSR1, &sa, 0);
    int data[2], done[2];
    if (pipe(data) || pipe(done)) return;
    fcntl(done[0], F_SETFL, O_NONBLOCK);
    handled = 0;
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) {
        close(data[0]);
        for (int n = 1;; n++) {
            char c;
            if (read(done[0], &c, 1) == 1) _exit(0);
            kill(parent, SIGUSR1);
            usleep(20000);
            if (n == 50) {
                if (op == 7) _exit(0);
                if (write(data[1], "x", 1) != 1) _exit(1);
            }
        }
    }
    close(data[1]);
    long r = 0;
    int status = 0;
    struct pollfd p = {.fd = data[0], .events = POLLIN};
    fd_set set;
    FD_ZERO(&set);
    FD_SET(data[0], &set);
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLIN}, out;
    epoll_ctl(ep, EPOLL_CTL_ADD, data[0], &ev);
    char c;
    errno = 0;
    switch (op) {
    case 0: r = read(data[0], &c, 1); break;
    case 1: r = poll(&p, 1, -1); break;
    case 2: r = ppoll(&p, 1, 0, 0); break;
    case 3: r = select(data[0] + 1, &set, 0, 0, 0); break;
    case 4: r = pselect(data[0] + 1, &set, 0, 0, 0, 0); break;
    case 5: r = epoll_wait(ep, &out, 1, -1); break;
    case 6: r = epoll_pwait(ep, &out, 1, -1, 0); break;
    case 7: r = wait4(child, &status, 0, 0); break;
    }
    int err = errno;
    if (write(done[1], "d", 1) != 1) return;
    if (!(op == 7 && r == child)) waitpid(child, &status, 0);
    const char *ret = r == child && op == 7 ? "the child" : r == 1 ? "1" : r == -1 ? "-1" : "other";
    printf("%-11s %s: returned %s%s%s, handler ran: %s\n", ops[op], restart ? "SA_RESTART   " : "no SA_RESTART", ret,
           r == -1 ? " " : "", r == -1 ? (err == EINTR ? "EINTR" : "another errno") : "", handled > 0 ? "yes" : "no");
    close(ep);
    close(data[0]);
    close(done[0]);
    close(done[1]);
}

int main(void) {
    setvbuf(stdout, 0, _IOLBF, 0);
    for (int op = 0; op < 8; op++)
        for (int restart = 0; restart < 2; restart++) run(op, restart);
    return 0;
}
