/* execve with argument lists too large to pass, each of which must fail
 * with E2BIG (or EFAULT) while the program stays, then one that fits.
 *   bigexec PATH [KIB]  PATH is this program inside the guest; the last
 *                       exec passes KIB (default 64) KiB of arguments in
 *                       64 KiB strings. Prints one line per attempt.
 *   bigexec child ARGS  (the exec'd copy) prints its argc and the total
 *                       length of its arguments after argv[1]. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void try(const char *what, const char *path, char **av, char **ev) {
    execve(path, av, ev);
    printf("%s: errno=%d %s\n", what, errno, strerror(errno));
    fflush(stdout); /* a successful exec drops what stdio holds */
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "child")) {
        size_t total = 0;
        for (int i = 2; i < argc; i++) total += strlen(argv[i]);
        printf("exec'd: argc=%d bytes=%zu\n", argc, total);
        return 0;
    }
    if (argc < 2) return 2;
    const char *self = argv[1];
    long fit_kib = argc > 2 ? atol(argv[2]) : 64;
    char *env[] = {0};

    /* One 3 MiB argument. */
    char *big = malloc(3 << 20);
    memset(big, 'a', (3 << 20) - 1);
    big[(3 << 20) - 1] = 0;
    char *k64 = big + (3 << 20) - 1 - 65535; /* a 64 KiB string with its NUL */
    char *one[] = {(char *)self, "child", big, 0};
    try("one 3 MiB arg", self, one, env);

    /* 48 args of 64 KiB each (3 MiB in all). */
    char *many[51] = {(char *)self, "child"};
    for (int i = 2; i < 50; i++) many[i] = k64;
    many[50] = 0;
    try("48 args of 64 KiB", self, many, env);

    /* 300000 one-byte args: 3 MB with their pointers, as Linux counts. */
    char **lots = malloc(300003 * sizeof *lots);
    lots[0] = (char *)self;
    lots[1] = "child";
    for (int i = 2; i <= 300001; i++) lots[i] = "x";
    lots[300002] = 0;
    try("300000 args", self, lots, env);

    /* A 3 MiB environment string. */
    char *envbig[] = {big, 0};
    char *plain[] = {(char *)self, "child", 0};
    try("3 MiB env var", self, plain, envbig);

    /* An argv pointer to nowhere. */
    try("argv at 0x10", self, (char **)0x10, env);

    /* Fits: fit_kib KiB of arguments. */
    long n = fit_kib / 64;
    char **fits = malloc((n + 3) * sizeof *fits);
    fits[0] = (char *)self;
    fits[1] = "child";
    for (long i = 0; i < n; i++) fits[2 + i] = k64;
    fits[n + 2] = 0;
    try("arguments that fit", self, fits, env);
    return 1;
}
