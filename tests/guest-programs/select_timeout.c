/* select() that times out returns 0 with its sets emptied, as on Linux
   (they came back as given, the socket still marked: a caller took it for
   ready), also while another thread runs (its wait then ends another
   way); one that finds the socket readable marks it. poll() that times
   out reports no events. */
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <unistd.h>

static void one(int fd, long usec) {
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    struct timeval tv = {0, usec};
    int n = select(fd + 1, &r, NULL, NULL, &tv);
    printf("select, timeout %ld us: %d, marked %d\n", usec, n, FD_ISSET(fd, &r) ? 1 : 0);
}

static volatile int stop;

static void *other(void *arg) {
    (void)arg;
    while (!stop) usleep(1000);
    return 0;
}

int main(void) {
    int s[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    one(s[0], 0);
    one(s[0], 20000);
    pthread_t t;
    pthread_create(&t, 0, other, 0);
    printf("with another thread:\n");
    one(s[0], 20000);
    struct pollfd p = {s[0], POLLIN, 0};
    int n = poll(&p, 1, 20);
    printf("poll, timeout 20 ms: %d, revents %d\n", n, p.revents);
    stop = 1;
    pthread_join(t, 0);
    write(s[1], "x", 1);
    one(s[0], 20000);
    return 0;
}
