/* Socket buffers filled until memory runs out: every call fails with an
 * errno (no crash), and once the sockets are closed a new pair works. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static int fds[4096];

int main(void) {
    static char chunk[65536];
    memset(chunk, 'z', sizeof chunk);
    int n = 0, err = 0;
    long total = 0;
    while (n + 2 <= 4096) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0) {
            err = errno;
            break;
        }
        fds[n++] = sv[0];
        fds[n++] = sv[1];
        ssize_t w;
        while ((w = write(sv[0], chunk, sizeof chunk)) > 0) total += w;
        if (errno != EAGAIN) {
            err = errno;
            break;
        }
    }
    printf("stopped: %s after many MiB=%d\n",
           err == ENOBUFS || err == ENOMEM ? "out of memory" : err == EMFILE ? "out of descriptors" : strerror(err),
           total > (16L << 20));
    for (int i = 0; i < n; i++) close(fds[i]);
    int sv[2];
    int ok = socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0 && write(sv[0], "again", 5) == 5;
    char b[8] = {0};
    ok = ok && read(sv[1], b, sizeof b) == 5 && strcmp(b, "again") == 0;
    printf("after: %d\n", ok);
    return 0;
}
