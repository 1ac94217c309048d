/* A descriptor's signals as Linux sends them (tests/fs.rs runs this
 * natively and in the guest and compares): its owner (F_SETOWN,
 * F_SETOWN_EX and their F_GET forms, ESRCH for nobody there), the signal
 * its notifications use (F_SETSIG), directory notifications (F_NOTIFY:
 * one-shot and DN_MULTISHOT, each kind of change, cancelled, ENOTDIR on a
 * file) and SIGURG to the owner of a TCP socket that urgent data reaches.
 * Counts are read after each call (a signal arrives as the call that
 * sent it returns). */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static volatile int counts[65];

static void on_signal(int sig) { counts[sig]++; }

static char dir[64];

static const char *at(const char *name) {
    static char path[2][128];
    static int which;
    which ^= 1;
    snprintf(path[which], sizeof path[which], "%s/%s", dir, name);
    return path[which];
}

static void step(const char *what, int sig) {
    printf("%s: %d\n", what, counts[sig]);
}

int main(void) {
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGIO, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGURG, &sa, NULL);
    strcpy(dir, "/tmp/dnotify-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    int d = open(dir, O_RDONLY | O_DIRECTORY);

    /* The owner. */
    int r = fcntl(d, F_GETOWN);
    printf("owner at first: %d\n", r);
    r = fcntl(d, F_SETOWN, getpid());
    int got = fcntl(d, F_GETOWN);
    printf("F_SETOWN self: %d, F_GETOWN is self: %d\n", r, got == getpid());
    r = fcntl(d, F_SETOWN, -getpgrp());
    got = fcntl(d, F_GETOWN);
    printf("F_SETOWN -pgrp: %d, F_GETOWN is -pgrp: %d\n", r, got == -getpgrp());
    errno = 0;
    r = fcntl(d, F_SETOWN, 3999999);
    printf("F_SETOWN nobody: %d errno %d\n", r, errno);
    struct f_owner_ex ex = {F_OWNER_TID, getpid()}, back = {0};
    r = fcntl(d, F_SETOWN_EX, &ex);
    fcntl(d, F_GETOWN_EX, &back);
    printf("F_SETOWN_EX tid: %d, back: type %d is self %d\n", r, back.type, back.pid == getpid());
    ex.type = 7;
    errno = 0;
    r = fcntl(d, F_SETOWN_EX, &ex);
    printf("F_SETOWN_EX bad type: %d errno %d\n", r, errno);
    r = fcntl(d, F_GETSIG);
    printf("F_GETSIG at first: %d\n", r);
    errno = 0;
    r = fcntl(d, F_SETSIG, 65);
    printf("F_SETSIG 65: %d errno %d\n", r, errno);

    /* One-shot directory notification, SIGIO. */
    r = fcntl(d, F_NOTIFY, DN_CREATE);
    printf("F_NOTIFY create: %d\n", r);
    got = fcntl(d, F_GETOWN);
    printf("owner now self: %d\n", got == getpid());
    close(open(at("a"), O_CREAT | O_WRONLY, 0600));
    step("create a, SIGIO", SIGIO);
    close(open(at("b"), O_CREAT | O_WRONLY, 0600));
    step("create b (one-shot: no more)", SIGIO);

    /* Every kind, each time, with F_SETSIG's signal (a standard one: a
     * rename sends three, which Linux queues for a real-time signal and
     * the sandbox does not). */
    fcntl(d, F_SETSIG, SIGUSR1);
    r = fcntl(d, F_NOTIFY, DN_ACCESS | DN_MODIFY | DN_CREATE | DN_DELETE | DN_RENAME | DN_ATTRIB | DN_MULTISHOT);
    printf("F_NOTIFY all, multishot: %d\n", r);
    int s = SIGUSR1;
    close(open(at("c"), O_CREAT | O_WRONLY, 0600));
    step("create c", s);
    int fd = open(at("c"), O_WRONLY);
    write(fd, "x", 1);
    close(fd);
    step("write c", s);
    char buf[4];
    fd = open(at("c"), O_RDONLY);
    read(fd, buf, sizeof buf);
    close(fd);
    step("read c", s);
    chmod(at("c"), 0644);
    step("chmod c", s);
    rename(at("c"), at("e"));
    step("rename c e", s);
    unlink(at("e"));
    step("unlink e", s);

    /* Nothing more asked for: no more signals. */
    r = fcntl(d, F_NOTIFY, DN_MULTISHOT);
    printf("F_NOTIFY nothing: %d\n", r);
    close(open(at("f"), O_CREAT | O_WRONLY, 0600));
    step("create f after", s);
    fd = open(at("f"), O_RDONLY);
    errno = 0;
    r = fcntl(fd, F_NOTIFY, DN_CREATE);
    printf("F_NOTIFY on a file: %d errno %d\n", r, errno);
    close(fd);
    unlink(at("a"));
    unlink(at("b"));
    unlink(at("f"));
    close(d);
    r = rmdir(dir);
    printf("rmdir: %d\n", r);

    /* SIGURG to the owner of the socket urgent data reaches. */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    bind(l, (struct sockaddr *)&addr, sizeof addr);
    listen(l, 1);
    getsockname(l, (struct sockaddr *)&addr, &len);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&addr, sizeof addr);
    int a = accept(l, NULL, NULL);
    send(c, "u", 1, MSG_OOB);
    usleep(20000);
    step("urgent data, no owner: SIGURG", SIGURG);
    r = fcntl(a, F_SETOWN, getpid());
    printf("F_SETOWN on the socket: %d\n", r);
    send(c, "v", 1, MSG_OOB);
    usleep(20000);
    step("urgent data to the owner: SIGURG", SIGURG);
    close(a);
    close(c);
    close(l);
    return 0;
}
