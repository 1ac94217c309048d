#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
/* "write K1 K2": puts the 16-byte secret (K1, K2 as hex u64s) everywhere it
   can: heap, a big mmap, its stack, a file in /tmp and in /, the
   environment, a pipe, then exits. "scan K1 K2": reads all of guest RAM
   through the physmap (virtual 0x7f0000000000 + physical) and every file it
   can think of, looking for the secret, and prints what it found. The scan
   never holds the secret itself in memory: it compares a keyed hash. */
#define PHYS 0x7f0000000000ull
static uint64_t mix(uint64_t x) { x ^= x >> 31; x *= 0x9e3779b97f4a7c15ull; x ^= x >> 29; return x; }
static uint64_t parse(const char *s) { return strtoull(s, 0, 16); }
int main(int argc, char **argv) {
    if (argc < 4) return 2;
    uint64_t k1 = parse(argv[2]), k2 = parse(argv[3]);
    if (!strcmp(argv[1], "write")) {
        uint64_t secret[2] = {k1, k2};
        size_t n = 8 << 20;
        uint64_t *heap = malloc(n);
        for (size_t i = 0; i < n / 8; i += 2) { heap[i] = k1; heap[i + 1] = k2; }
        uint64_t *m = mmap(0, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        for (size_t i = 0; i < n / 8; i += 2) { m[i] = k1; m[i + 1] = k2; }
        volatile uint64_t stack[512];
        for (int i = 0; i < 512; i += 2) { stack[i] = k1; stack[i + 1] = k2; }
        int fd = open("/tmp/secret", O_CREAT | O_WRONLY, 0600); write(fd, secret, 16); close(fd);
        fd = open("/secret", O_CREAT | O_WRONLY, 0600); write(fd, secret, 16); close(fd);
        char env[64]; snprintf(env, sizeof env, "SECRET=%016llx%016llx", (unsigned long long)k1, (unsigned long long)k2);
        putenv(env);
        int p[2]; pipe(p); write(p[1], secret, 16);
        printf("written\n");
        return 0;
    }
    /* scan */
    uint64_t h1 = mix(k1), h2 = mix(k2);
    uint64_t mem = strtoull(argv[4], 0, 0);
    long hits = 0;
    for (uint64_t a = 0; a + 16 <= mem; a += 8) {
        volatile uint64_t *w = (volatile uint64_t *)(PHYS + a);
        if (mix(w[0]) == h1 && mix(w[1]) == h2) hits++;
    }
    int files = 0;
    const char *paths[] = {"/tmp/secret", "/secret"};
    for (int i = 0; i < 2; i++) if (access(paths[i], F_OK) == 0) files++;
    printf("hits=%ld files=%d env=%s\n", hits, files, getenv("SECRET") ? "set" : "unset");
    return 0;
}
