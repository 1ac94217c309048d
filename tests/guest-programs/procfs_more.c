/* More of /proc as Linux shows it (tests/fs.rs runs this natively and in
 * the guest and compares): /proc/self/auxv holds the vector the program
 * started with (what getauxval reads), /proc/self/io counts read and
 * write calls and their bytes, and /proc/self/fdinfo/N shows a
 * descriptor's position and flags (a file, a pipe's two ends, a socket,
 * with O_CLOEXEC). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned long long field(const char *text, const char *name) {
    const char *p = strstr(text, name);
    return p ? strtoull(p + strlen(name), NULL, 10) : ~0ULL;
}

static void read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY);
    ssize_t n = read(fd, buf, size - 1);
    buf[n < 0 ? 0 : n] = 0;
    close(fd);
}

static void fdinfo(const char *what, int fd) {
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    read_file(path, buf, sizeof buf);
    char *pos = strstr(buf, "pos:"), *flags = strstr(buf, "flags:");
    char *end = flags ? strchr(flags, '\n') : NULL;
    if (end) *end = 0;
    char *pend = pos ? strchr(pos, '\n') : NULL;
    if (pend) *pend = 0;
    printf("%s: %s, %s, has mnt_id %d ino %d\n", what, pos ? pos : "?", flags ? flags : "?",
           end && strstr(end + 1, "mnt_id:") != NULL, end && strstr(end + 1, "ino:") != NULL);
}

int main(void) {
    /* auxv */
    unsigned long v[64] = {0};
    int fd = open("/proc/self/auxv", O_RDONLY);
    ssize_t n = read(fd, v, sizeof v);
    close(fd);
    int pairs = (int)(n / 16), ends = pairs > 0 && v[2 * (pairs - 1)] == 0;
    int same = 0, keys = 0;
    for (int i = 0; i < pairs - 1; i++) {
        unsigned long k = v[2 * i];
        if (k == AT_PAGESZ || k == AT_PHDR || k == AT_ENTRY || k == AT_RANDOM || k == AT_SYSINFO_EHDR || k == AT_UID) {
            keys++;
            same += getauxval(k) == v[2 * i + 1];
        }
    }
    printf("auxv: whole pairs %d, ends with AT_NULL %d, %d of %d keys as getauxval\n", n % 16 == 0, ends, same, keys);

    /* io: the calls between two readings. */
    char a[1024], b[1024], data[100] = {0};
    int p[2];
    pipe(p);
    read_file("/proc/self/io", a, sizeof a);
    write(p[1], data, sizeof data);
    read(p[0], data, sizeof data);
    read_file("/proc/self/io", b, sizeof b);
    printf("io: syscr +%llu rchar +%llu (less the first reading), syscw +%llu wchar +%llu\n",
           field(b, "syscr: ") - field(a, "syscr: "), field(b, "rchar: ") - field(a, "rchar: ") - strlen(a),
           field(b, "syscw: ") - field(a, "syscw: "), field(b, "wchar: ") - field(a, "wchar: "));
    printf("io: read_bytes line %d, cancelled_write_bytes line %d\n", strstr(b, "\nread_bytes: ") != NULL,
           strstr(b, "\ncancelled_write_bytes: ") != NULL);

    /* fdinfo */
    char path[] = "/tmp/fdinfo-XXXXXX";
    int f = mkstemp(path);
    write(f, "0123456789", 10);
    lseek(f, 4, SEEK_SET);
    fdinfo("mkstemp file at 4", f);
    int g = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    fdinfo("O_WRONLY|O_APPEND|O_CLOEXEC", g);
    fdinfo("pipe read end", p[0]);
    fdinfo("pipe write end", p[1]);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
    fdinfo("nonblocking socket", s);
    unlink(path);
    return 0;
}
