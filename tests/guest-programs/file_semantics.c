/* File and clock semantics programs rely on, compared with native Linux
 * (run as a non-root user there would change nothing below):
 * - open(O_CREAT) of a new file with mode 0444 succeeds (permissions are
 *   checked only for a file that was there) and the file is read-only
 *   afterwards; so does O_CREAT|O_WRONLY with mode 0;
 * - extended attributes: none on a new file (get and remove: ENODATA,
 *   list: empty), a missing file is ENOENT, a bad fd EBADF;
 * - getcpu answers CPU and node numbers.
 * With the argument "settime" it only tries clock_settime, which is EPERM
 * for an unprivileged program (and in the guest); the test runs that in
 * the guest only (natively, as root, it would set the host's clock). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

static const char *err(long r) {
    if (r >= 0) return "ok";
    switch (errno) {
    case ENODATA: return "ENODATA";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOTSUP: return "ENOTSUP";
    default: return "other";
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "settime")) {
        struct timespec ts = {0, 0};
        errno = 0;
        long r = clock_settime(CLOCK_REALTIME, &ts);
        printf("clock_settime: %s\n", (r == -1 && errno == EPERM) ? "EPERM" : "other");
        return 0;
    }
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    char path[4096], missing[4096];
    snprintf(path, sizeof path, "%s/ro-%d", dir, getpid());
    snprintf(missing, sizeof missing, "%s/missing-%d", dir, getpid());

    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0444);
    printf("create 0444 for writing: %s\n", err(fd));
    long w = fd >= 0 ? write(fd, "data", 4) : -1;
    printf("write to it: %ld\n", w);
    if (fd >= 0) close(fd);
    struct stat st;
    stat(path, &st);
    printf("mode: %o\n", st.st_mode & 0777);

    char buf[64];
    long r;
    errno = 0; r = getxattr(path, "user.x", buf, sizeof buf);
    printf("getxattr: %s\n", err(r));
    errno = 0; r = lgetxattr(path, "user.x", buf, sizeof buf);
    printf("lgetxattr: %s\n", err(r));
    fd = open(path, O_RDONLY);
    errno = 0; r = fgetxattr(fd, "user.x", buf, sizeof buf);
    printf("fgetxattr: %s\n", err(r));
    errno = 0; r = listxattr(path, buf, sizeof buf);
    printf("listxattr: %ld %s\n", r, err(r));
    errno = 0; r = flistxattr(fd, buf, sizeof buf);
    printf("flistxattr: %ld %s\n", r, err(r));
    errno = 0; r = removexattr(path, "user.x");
    printf("removexattr: %s\n", err(r));
    errno = 0; r = getxattr(missing, "user.x", buf, sizeof buf);
    printf("getxattr missing: %s\n", err(r));
    errno = 0; r = fgetxattr(9999, "user.x", buf, sizeof buf);
    printf("fgetxattr bad fd: %s\n", err(r));
    close(fd);
    unlink(path);

    unsigned cpu = 99, node = 99;
    r = syscall(SYS_getcpu, &cpu, &node, 0);
    printf("getcpu: %ld cpu_ok=%d node_ok=%d\n", r, cpu < 1024, node < 1024);
    return 0;
}
