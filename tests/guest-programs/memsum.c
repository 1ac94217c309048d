/* Prints what a run from an entry snapshot starts with: hashes of its
   text, data and bss, its arguments and environment, the auxiliary
   vector's keys, where its heap and a new mapping start, then some work
   (heap, a file, a child). Runs that start from the same snapshot must
   print the same, whatever was done to the clone before (tests/prefault.rs). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

extern char __executable_start, etext, edata, end;
extern char **environ;

static uint64_t fnv(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

int main(int argc, char **argv) {
    printf("text %016llx\n", (unsigned long long)fnv(&__executable_start, &etext - &__executable_start, 1469598103934665603ull));
    printf("data+bss %016llx\n", (unsigned long long)fnv(&etext, &end - &etext, 1469598103934665603ull));
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < argc; i++) h = fnv(argv[i], strlen(argv[i]) + 1, h);
    for (char **e = environ; *e; e++) h = fnv(*e, strlen(*e) + 1, h);
    printf("args+env %016llx argc %d\n", (unsigned long long)h, argc);
    printf("auxv pagesz %lu hwcap %d random %d\n", getauxval(AT_PAGESZ), getauxval(AT_HWCAP) != 0,
           getauxval(AT_RANDOM) != 0);
    char *brk0 = sbrk(0);
    printf("brk - end: %ld\n", (long)(brk0 - &end));
    char *m = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    printf("mmap - brk: %ld\n", (long)(m - brk0));
    uint64_t z = 0;
    for (int i = 0; i < (1 << 20); i += 4096) z |= m[i];
    printf("new mapping zero: %d\n", z == 0);
    size_t total = 0;
    for (int i = 1; i <= 200; i++) {
        char *p = malloc(i * 97);
        memset(p, i, i * 97);
        total += p[i * 97 - 1];
        if (i % 3) free(p);
    }
    printf("heap sum %zu\n", total);
    int fd = open("/tmp/memsum", O_CREAT | O_RDWR | O_TRUNC, 0600);
    write(fd, "written\n", 8);
    char buf[16] = {0};
    pread(fd, buf, 8, 0);
    printf("file: %s", buf);
    close(fd);
    char *brk1 = sbrk(0);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        printf("child: brk same %d\n", sbrk(0) == brk1);
        fflush(stdout);
        _exit(7);
    }
    int st;
    waitpid(c, &st, 0);
    printf("child exit %d\n", WEXITSTATUS(st));
    return 0;
}
