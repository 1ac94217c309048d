/* A single busy task: argv[1] million loop iterations, no system calls
 * (what time slices cost a run with one task). */
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    long n = (argc > 1 ? atol(argv[1]) : 100) * 1000000L;
    volatile unsigned long x = 0;
    for (long i = 0; i < n; i++) x += i;
    printf("spun\n");
    return 0;
}
