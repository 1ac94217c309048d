/* TCP urgent data as Linux keeps it without SO_OOBINLINE: send(MSG_OOB)
   sends its last byte outside the stream; the receiver's select reports
   an exceptional condition and poll POLLPRI until that byte is read with
   recv(MSG_OOB); a plain recv reads the bytes before it; with none there
   recv(MSG_OOB) is EINVAL. Local stream sockets have urgent data too
   (Linux 5.15 on); datagram sockets have none (EOPNOTSUPP). With
   SO_OOBINLINE the receiver reads the urgent byte in the stream. A read
   stops at the urgent mark; SIOCATMARK says when it is there. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/select.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *e(long r) {
    if (r >= 0) return "ok";
    return errno == EINVAL ? "EINVAL" : errno == EOPNOTSUPP ? "EOPNOTSUPP" : strerror(errno);
}

static int exceptional(int fd) {
    fd_set x;
    FD_ZERO(&x);
    FD_SET(fd, &x);
    struct timeval tv = {0, 100000};
    int n = select(fd + 1, 0, 0, &x, &tv);
    return n > 0 && FD_ISSET(fd, &x);
}

static int pri(int fd) {
    struct pollfd p = {fd, POLLPRI, 0};
    poll(&p, 1, 0);
    return !!(p.revents & POLLPRI);
}

int main(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(l, (struct sockaddr *)&sa, sizeof sa);
    listen(l, 1);
    socklen_t n = sizeof sa;
    getsockname(l, (struct sockaddr *)&sa, &n);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&sa, sizeof sa);
    int a = accept(l, 0, 0);

    printf("before: exceptional %d, pri %d\n", exceptional(a), pri(a));
    char none;
    long r = recv(a, &none, 1, MSG_OOB);
    printf("recv MSG_OOB with none: %s\n", e(r));
    long s = send(c, "abc", 3, MSG_OOB);
    printf("send MSG_OOB: %ld\n", s);
    usleep(20000);
    printf("after: exceptional %d, pri %d\n", exceptional(a), pri(a));
    char buf[8] = "";
    long got = recv(a, buf, sizeof buf, MSG_DONTWAIT);
    printf("plain recv: %ld \"%.*s\"\n", got, got > 0 ? (int)got : 0, buf);
    char u = 0;
    long p = recv(a, &u, 1, MSG_OOB | MSG_PEEK);
    printf("peek MSG_OOB: %ld '%c'\n", p, u);
    u = 0;
    long o = recv(a, &u, 1, MSG_OOB);
    printf("recv MSG_OOB: %ld '%c'\n", o, u);
    printf("read: exceptional %d, pri %d\n", exceptional(a), pri(a));
    r = recv(a, &none, 1, MSG_OOB);
    printf("recv MSG_OOB again: %s\n", e(r));

    /* The urgent mark: a read stops there; SIOCATMARK says when the
       reader has reached it. */
    int c3 = socket(AF_INET, SOCK_STREAM, 0);
    connect(c3, (struct sockaddr *)&sa, sizeof sa);
    int a3 = accept(l, 0, 0);
    int at = -1;
    ioctl(a3, SIOCATMARK, &at);
    printf("mark before: %d; ", at);
    send(c3, "xy", 2, 0);
    send(c3, "zw", 2, MSG_OOB);
    send(c3, "after", 5, 0);
    usleep(20000);
    got = recv(a3, buf, sizeof buf, MSG_DONTWAIT);
    printf("read to the mark: %ld \"%.*s\"; ", got, got > 0 ? (int)got : 0, buf);
    ioctl(a3, SIOCATMARK, &at);
    printf("at the mark %d; ", at);
    got = recv(a3, buf, sizeof buf, MSG_DONTWAIT);
    printf("then: %ld \"%.*s\"; ", got, got > 0 ? (int)got : 0, buf);
    ioctl(a3, SIOCATMARK, &at);
    printf("mark after %d\n", at);

    /* SO_OOBINLINE: the urgent byte stays in the stream (an FTP server's
       ABOR, sent whole with MSG_OOB, is read as a line). */
    int on = 1, c2 = socket(AF_INET, SOCK_STREAM, 0);
    connect(c2, (struct sockaddr *)&sa, sizeof sa);
    int a2 = accept(l, 0, 0);
    setsockopt(a2, SOL_SOCKET, SO_OOBINLINE, &on, sizeof on);
    s = send(c2, "ABOR\r\n", 6, MSG_OOB);
    usleep(20000);
    got = recv(a2, buf, sizeof buf, MSG_DONTWAIT);
    printf("inline: sent %ld, plain recv %ld \"%.4s\" ends with a newline %d\n", s, got, buf, got == 6 && buf[5] == '\n');
    r = recv(a2, &none, 1, MSG_OOB);
    printf("inline recv MSG_OOB: %s\n", e(r));

    int sp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    r = send(sp[0], "yx", 2, MSG_OOB);
    printf("unix send MSG_OOB: %ld\n", r);
    usleep(20000);
    printf("unix: exceptional %d\n", exceptional(sp[1]));
    u = 0;
    o = recv(sp[1], &u, 1, MSG_OOB);
    printf("unix recv MSG_OOB: %ld '%c'\n", o, u);
    got = recv(sp[1], buf, sizeof buf, MSG_DONTWAIT);
    printf("unix plain recv: %ld \"%.*s\"\n", got, got > 0 ? (int)got : 0, buf);
    int dg[2];
    socketpair(AF_UNIX, SOCK_DGRAM, 0, dg);
    r = send(dg[0], "x", 1, MSG_OOB);
    printf("datagram send MSG_OOB: %s\n", e(r));
    return 0;
}
