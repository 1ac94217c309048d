/* A syscall storm: argv[1] (default 10^6) getpid() calls in a loop, made
 * with the raw instruction so no libc caching can skip any. Prints the
 * count and whether every answer was the same pid; exits 0. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long first = -1, same = 0;
    for (long i = 0; i < n; i++) {
        long r;
        __asm__ volatile("syscall" : "=a"(r) : "a"((long)SYS_getpid) : "rcx", "r11", "memory");
        if (first < 0) first = r;
        same += r == first;
    }
    printf("calls=%ld same=%d pid_positive=%d\n", n, same == n, first > 0);
    return 0;
}
