/* readv into a good buffer, then an unmapped one: Linux returns the bytes
 * read into the first and keeps the rest in the pipe; a bad first buffer
 * is EFAULT. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int main(void) {
    int p[2];
    if (pipe(p)) return 1;
    if (write(p[1], "hello world", 11) != 11) return 2;
    char a[5];
    struct iovec iov[2] = {{a, sizeof a}, {(void *)8, 6}};
    ssize_t n = readv(p[0], iov, 2);
    printf("readv: %zd %.*s\n", n, n > 0 ? (int)n : 0, a);
    char rest[16] = {0};
    ssize_t m = read(p[0], rest, sizeof rest - 1);
    printf("rest: %zd %s\n", m, m > 0 ? rest : "");
    struct iovec bad[1] = {{(void *)8, 4}};
    if (write(p[1], "xy", 2) != 2) return 3;
    n = readv(p[0], bad, 1);
    printf("bad first: %zd %s\n", n, n < 0 ? strerror(errno) : "");
    return 0;
}
