/* sendfile from a file to a pipe, as on Linux: with an offset (it moves
   on, the file position does not), without (the position moves), count 0,
   and a negative offset (EINVAL). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <unistd.h>

int main(void) {
    char path[] = "/tmp/sendfileXXXXXX";
    int fd = mkstemp(path);
    write(fd, "0123456789abcdef", 16);
    lseek(fd, 0, SEEK_SET);
    int p[2];
    pipe(p);
    off_t off = 4;
    long a = sendfile(p[1], fd, &off, 6);
    char buf[32] = {0};
    read(p[0], buf, sizeof buf - 1);
    printf("with offset: %ld \"%s\", offset now %ld, position %ld\n", a, buf, (long)off, (long)lseek(fd, 0, SEEK_CUR));
    long b = sendfile(p[1], fd, NULL, 3);
    memset(buf, 0, sizeof buf);
    read(p[0], buf, sizeof buf - 1);
    printf("without: %ld \"%s\", position %ld\n", b, buf, (long)lseek(fd, 0, SEEK_CUR));
    off = 0;
    long c = sendfile(p[1], fd, &off, 0);
    off = -1;
    long d = sendfile(p[1], fd, &off, 4);
    printf("count 0: %ld; negative offset: %ld %s\n", c, d, d < 0 && errno == EINVAL ? "EINVAL" : strerror(errno));
    unlink(path);
    return 0;
}
