// Maps a file the way ld.so maps a library (whole and read-only, then a
// part again at its place with more access), and the ways a mapping over
// another must not keep the old contents (the same place from another
// offset, a private copy written, read-only again over that copy), and
// prints what each mapping reads.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PG 4096

int main(void) {
    char path[] = "/tmp/remap_fileXXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return 1;
    static unsigned char buf[4 * PG];
    for (int i = 0; i < 4; i++) memset(buf + i * PG, 'a' + i, PG);
    // Page 2 starts with code: mov eax, 42; ret.
    static const unsigned char code[] = {0xb8, 42, 0, 0, 0, 0xc3};
    memcpy(buf + 2 * PG, code, sizeof code);
    if (write(fd, buf, sizeof buf) != sizeof buf) return 2;

    unsigned char *m = mmap(NULL, 4 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) return 3;
    printf("whole: %c %c %c %c\n", m[10], m[PG + 10], m[2 * PG + 10], m[3 * PG + 10]);

    // ld.so's second step: the code at its place, executable.
    unsigned char *t = mmap(m + 2 * PG, PG, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd, 2 * PG);
    if (t != m + 2 * PG) return 4;
    int (*f)(void) = (int (*)(void))(void *)t;
    printf("code: %d, then %c\n", f(), t[10]);

    // The same place from another offset: the new contents.
    unsigned char *o = mmap(m + PG, PG, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 3 * PG);
    printf("other offset: %c\n", o[10]);

    // A private writable copy over the first page: written, the file not.
    unsigned char *w = mmap(m, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
    w[10] = 'z';
    unsigned char c = 0;
    if (pread(fd, &c, 1, 10) != 1) return 5;
    printf("private write: %c, file %c\n", w[10], c);

    // Read-only again over the written copy: the file's byte.
    unsigned char *r = mmap(m, PG, PROT_READ, MAP_PRIVATE | MAP_FIXED, fd, 0);
    printf("read-only again: %c\n", r[10]);

    // Executable again over the executable page, then over a page that
    // held other data: each the file's bytes at its offset.
    t = mmap(m + 2 * PG, PG, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd, 2 * PG);
    printf("code again: %d\n", f());
    unsigned char *x = mmap(m + PG, PG, PROT_READ | PROT_EXEC, MAP_PRIVATE | MAP_FIXED, fd, 2 * PG);
    int (*g)(void) = (int (*)(void))(void *)x;
    printf("code moved: %d, %c\n", g(), m[3 * PG + 10]);
    unlink(path);
    return 0;
}
