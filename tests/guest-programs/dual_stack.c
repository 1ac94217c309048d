/* Several TCP sockets on one port, as Linux allows them: 0.0.0.0 and an
   IPV6_V6ONLY ::, each taking its own family's connections (asyncio's
   create_server binds both); a dual-stack :: refuses a later 0.0.0.0
   (EADDRINUSE) and takes IPv4 connections itself; 127.0.0.1 and
   127.0.0.2 apart. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* Binds socket `s` (SO_REUSEADDR: natively the port of a connection
   closed is in TIME_WAIT) to `a` and listens: the socket, or -errno. */
static int bind_listen(int s, const void *a, socklen_t n) {
    int on = 1;
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (bind(s, a, n) != 0) {
        int e = errno;
        close(s);
        return -e;
    }
    listen(s, 4);
    return s;
}

static int listener4(const char *ip, int port) {
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, ip, &a.sin_addr);
    return bind_listen(socket(AF_INET, SOCK_STREAM, 0), &a, sizeof a);
}

static int listener6(int port, int v6only) {
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = in6addr_any};
    return bind_listen(s, &a, sizeof a);
}

/* Connects to ip:port and tells which of the listeners took it. */
static const char *who(int family, const char *ip, int port, int l1, int l2) {
    int c = socket(family, SOCK_STREAM, 0);
    int ok;
    if (family == AF_INET) {
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
        inet_pton(AF_INET, ip, &a.sin_addr);
        ok = connect(c, (void *)&a, sizeof a);
    } else {
        struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port)};
        inet_pton(AF_INET6, ip, &a.sin6_addr);
        ok = connect(c, (void *)&a, sizeof a);
    }
    const char *r = "refused";
    if (ok == 0) {
        struct pollfd p[2] = {{.fd = l1, .events = POLLIN}, {.fd = l2, .events = POLLIN}};
        poll(p, 2, 1000);
        r = p[0].revents & POLLIN ? "first" : p[1].revents & POLLIN ? "second" : "nobody";
        for (int i = 0; i < 2; i++)
            if (p[i].revents & POLLIN) close(accept(p[i].fd, NULL, NULL));
    }
    close(c);
    return r;
}

static const char *err(int r) { return r >= 0 ? "ok" : r == -EADDRINUSE ? "EADDRINUSE" : strerror(-r); }

int main(void) {
    /* A free port: bound once, then let go. */
    int t = listener4("127.0.0.1", 0);
    struct sockaddr_in a;
    socklen_t n = sizeof a;
    getsockname(t, (void *)&a, &n);
    int port = ntohs(a.sin_port);
    close(t);

    int v4 = listener4("0.0.0.0", port);
    int v6 = listener6(port, 1);
    printf("0.0.0.0 and v6-only ::: %s, %s\n", err(v4), err(v6));
    const char *to4 = who(AF_INET, "127.0.0.1", port, v4, v6);
    const char *to6 = who(AF_INET6, "::1", port, v4, v6);
    printf("  to 127.0.0.1: %s; to ::1: %s\n", to4, to6);
    close(v4);
    close(v6);

    int dual = listener6(port, 0);
    int late = listener4("0.0.0.0", port);
    printf("dual-stack ::, then 0.0.0.0: %s, %s\n", err(dual), err(late));
    printf("  to 127.0.0.1: %s\n", who(AF_INET, "127.0.0.1", port, dual, -1));
    close(dual);

    int one = listener4("127.0.0.1", port);
    int two = listener4("127.0.0.2", port);
    int any = listener4("0.0.0.0", port);
    printf("127.0.0.1, 127.0.0.2, then 0.0.0.0: %s, %s, %s\n", err(one), err(two), err(any));
    printf("  to 127.0.0.2: %s\n", who(AF_INET, "127.0.0.2", port, one, two));
    return 0;
}
