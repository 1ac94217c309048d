#include <stdio.h>
#include <stdlib.h>
/* Allocates a buffer of argv[1] MiB (default 10), touches every byte and
   prints a checksum; prints "malloc failed" and exits 1 if it gets NULL. */
int main(int argc, char **argv) {
    size_t n = (size_t)(argc > 1 ? atol(argv[1]) : 10) << 20;
    unsigned char *p = malloc(n);
    if (!p) { puts("malloc failed"); return 1; }
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 7 + 3);
    unsigned long long sum = 0;
    for (size_t i = 0; i < n; i++) sum += p[i];
    printf("sum=%llu\n", sum);
    free(p);
    return 0;
}
