/* SO_SNDBUF and SO_RCVBUF bound a TCP connection's bytes in flight: a
   nonblocking writer to a peer that does not read gets EAGAIN after a
   few KiB with 4 KiB buffers (the listener's SO_RCVBUF passes to the
   socket it accepts), after more than 128 KiB with the defaults. The
   exact figures differ from Linux's (its buffers grow with use and count
   bookkeeping), so the program prints on which side of a bound they are.
   CPython's test_asyncio.test_sendfile relies on this: a peer that closes
   mid-way must make the sender fail. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void inflight(int small) {
    int l = socket(AF_INET, SOCK_STREAM, 0), v = 4096;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (small) setsockopt(l, SOL_SOCKET, SO_RCVBUF, &v, sizeof v);
    bind(l, (struct sockaddr *)&a, sizeof a);
    listen(l, 1);
    socklen_t al = sizeof a;
    getsockname(l, (struct sockaddr *)&a, &al);
    int c = socket(AF_INET, SOCK_STREAM, 0);
    connect(c, (struct sockaddr *)&a, sizeof a);
    int s = accept(l, 0, 0);
    /* After the connection is made, as asyncio does. */
    if (small) setsockopt(c, SOL_SOCKET, SO_SNDBUF, &v, sizeof v);
    fcntl(c, F_SETFL, O_NONBLOCK);
    static char buf[65536];
    long total = 0, n;
    while ((n = write(c, buf, sizeof buf)) > 0 && total < (64L << 20)) total += n;
    int werr = errno;
    int got = 0;
    socklen_t gl = sizeof got;
    getsockopt(s, SOL_SOCKET, SO_RCVBUF, &got, &gl);
    if (small) {
        printf("4 KiB buffers: in flight under 32 KiB %d, then %s; accepted socket's SO_RCVBUF %d\n", total > 0 && total < 32768,
               werr == EAGAIN ? "EAGAIN" : strerror(werr), got);
        /* The peer reads some and closes with the rest unread: the
           writer's next writes fail. */
        char r[1024];
        read(s, r, sizeof r);
        close(s);
        long w1 = write(c, buf, 1024), w2 = write(c, buf, 1024);
        printf("after the peer's close: a write %s\n", w1 < 0 || w2 < 0 ? "fails" : "succeeds");
    } else {
        printf("default buffers: in flight over 128 KiB %d, then %s\n", total > 131072, werr == EAGAIN ? "EAGAIN" : strerror(werr));
        close(s);
    }
    close(c);
    close(l);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    inflight(0);
    inflight(1);
    return 0;
}
