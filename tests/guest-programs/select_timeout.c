/* select() that times out returns 0 with its sets emptied, as on Linux
   (they came back as given, the socket still marked: a caller took it for
   ready); one that finds the socket readable marks it. */
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

int main(void) {
    int s[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, s);
    one(s[0], 0);
    one(s[0], 20000);
    write(s[1], "x", 1);
    one(s[0], 20000);
    return 0;
}
