/* A connected pair of local stream sockets across fork: both directions,
 * shutdown, non-blocking reads, poll, a closed peer, and what is refused. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) { perror("socketpair"); return 1; }
    struct stat st;
    fstat(sv[0], &st);
    printf("socket=%d\n", S_ISSOCK(st.st_mode));
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        char buf[64];
        ssize_t n = recv(sv[1], buf, sizeof buf, 0);
        buf[n] = 0;
        char reply[80];
        snprintf(reply, sizeof reply, "child got %s", buf);
        send(sv[1], reply, strlen(reply), 0);
        shutdown(sv[1], SHUT_WR);
        /* Wait for the parent to close its end. */
        n = recv(sv[1], buf, sizeof buf, 0);
        _exit(n == 0 ? 0 : 3);
    }
    close(sv[1]);
    char buf[64];
    /* Nothing yet: a non-blocking read would block. */
    ssize_t n = recv(sv[0], buf, sizeof buf, MSG_DONTWAIT);
    printf("dontwait=%zd errno_eagain=%d\n", n, n < 0 && errno == EAGAIN);
    send(sv[0], "hello", 5, 0);
    struct pollfd p = {sv[0], POLLIN, 0};
    poll(&p, 1, 1000);
    printf("pollin=%d\n", (p.revents & POLLIN) != 0);
    n = recv(sv[0], buf, sizeof buf - 1, MSG_PEEK);
    buf[n] = 0;
    printf("peek=%s\n", buf);
    n = recv(sv[0], buf, sizeof buf - 1, 0);
    buf[n] = 0;
    printf("read=%s\n", buf);
    n = recv(sv[0], buf, sizeof buf, 0);
    printf("eof=%zd\n", n);
    close(sv[0]);
    int status;
    waitpid(pid, &status, 0);
    printf("child=%d\n", WEXITSTATUS(status));
    /* A peer that is gone: EPIPE (no SIGPIPE with MSG_NOSIGNAL). */
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    close(sv[1]);
    n = send(sv[0], "x", 1, MSG_NOSIGNAL);
    printf("epipe=%d\n", n < 0 && errno == EPIPE);
    int t = 0;
    socklen_t tl = sizeof t;
    getsockopt(sv[0], SOL_SOCKET, SO_TYPE, &t, &tl);
    printf("so_type=%d\n", t == SOCK_STREAM);
    /* IP sockets exist (in the guest: loopback between its own processes). */
    printf("inet=%d\n", socket(AF_INET, SOCK_STREAM, 0) >= 0);
    printf("notsock=%d\n", shutdown(1, SHUT_WR) < 0 && errno == ENOTSOCK);
    return 0;
}
