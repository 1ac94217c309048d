/* SO_LINGER as Linux keeps it (on/off and seconds), and a TCP close that
   lingers zero seconds resets the connection: the peer still reads what
   was sent, then ECONNRESET, and getpeername says ENOTCONN at once; an
   ordinary close is an end of input and leaves the peer's name. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *e(long r) {
    if (r >= 0) return "ok";
    return errno == ENOTCONN ? "ENOTCONN" : errno == ECONNRESET ? "ECONNRESET" : strerror(errno);
}

static void pair(int l, int *c, int *a) {
    struct sockaddr_in sa;
    socklen_t n = sizeof sa;
    getsockname(l, (struct sockaddr *)&sa, &n);
    *c = socket(AF_INET, SOCK_STREAM, 0);
    connect(*c, (struct sockaddr *)&sa, sizeof sa);
    *a = accept(l, 0, 0);
}

static void show_linger(int fd, const char *what) {
    struct linger lg;
    socklen_t n = sizeof lg;
    getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &n);
    printf("%s: on %d, %d s (len %u)\n", what, lg.l_onoff, lg.l_linger, (unsigned)n);
}

static void peer_side(int a, const char *what) {
    struct sockaddr_in sa;
    socklen_t n = sizeof sa;
    long g = getpeername(a, (struct sockaddr *)&sa, &n);
    printf("%s: getpeername %s\n", what, e(g));
    char buf[16];
    for (int i = 0; i < 3; i++) {
        long r = recv(a, buf, sizeof buf, 0);
        printf("%s: recv %ld %s\n", what, r, r < 0 ? e(r) : "");
    }
}

int main(void) {
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bind(l, (struct sockaddr *)&sa, sizeof sa);
    listen(l, 4);

    int c, a;
    pair(l, &c, &a);
    show_linger(c, "new");
    struct linger lg = {1, 5};
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    show_linger(c, "set 1, 5");
    lg.l_linger = 0;
    setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    show_linger(c, "set 1, 0");
    send(c, "hello", 5, 0);
    close(c);
    peer_side(a, "after an abortive close");
    close(a);

    pair(l, &c, &a);
    send(c, "hello", 5, 0);
    close(c);
    peer_side(a, "after a close");
    close(a);
    return 0;
}
